"""Normal-mode faults on real GPUs (issue 12, item 5): bench/test_intranode_faults.py run through scripts/launch.py
with UCCL_EP_TIMEOUT_SECS=3. The last rank stays away from a dispatch or a combine, or SIGKILLs itself before it
(launch.py --expect-killed); every other rank's call raises uccl.ep.TimeoutError naming it within the timeout. Within
one node (the NVLink side) and across emulated nodes (the network side through the proxies over libfabric shm and
tcp; at 2 x 2 the victim's node peer and the other node's ranks both wait for it). Skipped, with the reason, without
a GPU or a CUDA build of uccl.ep._C."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rank_cases import REPO, RankCase, assert_passed, run_ranks  # noqa: E402

pytestmark = pytest.mark.gpu

SCRIPT = os.path.join(REPO, "bench", "test_intranode_faults.py")
# gloo for the process group: a killed rank's survivors leave without a collective, and no NCCL communicator of
# theirs watches the dead rank.
TIMEOUT = {"UCCL_EP_TIMEOUT_SECS": "3", "UCCL_EP_BENCH_BACKEND": "gloo"}


def case(nproc: int, ranks_per_node: int, phase: str, kill: bool = False, transport: str = "shm") -> RankCase:
    env = dict(TIMEOUT, UCCL_EP_TRANSPORT=transport) if ranks_per_node < nproc else TIMEOUT
    return RankCase(nproc, ranks_per_node, ("--phase", phase) + (("--kill",) if kill else ()), env=env, timeout_s=90,
                    expect_killed=(nproc - 1,) if kill else ())


CASES = {
    "one_node_absent_from_dispatch": case(4, 4, "dispatch"),
    "one_node_absent_from_combine": case(4, 4, "combine"),
    "one_node_killed_before_combine": case(4, 4, "combine", kill=True),
    "two_nodes_of_one_absent_from_dispatch": case(2, 1, "dispatch"),
    "two_nodes_of_one_absent_from_combine": case(2, 1, "combine"),
    "two_nodes_of_one_killed_before_combine": case(2, 1, "combine", kill=True),
    "two_nodes_of_two_absent_from_dispatch": case(4, 2, "dispatch"),
    "two_nodes_of_two_absent_from_combine": case(4, 2, "combine"),
    "two_nodes_of_two_killed_before_dispatch": case(4, 2, "dispatch", kill=True),
    "two_nodes_of_two_killed_before_combine": case(4, 2, "combine", kill=True),
    "two_nodes_of_two_absent_from_combine_over_tcp": case(4, 2, "combine", transport="tcp"),
    "two_nodes_of_two_killed_before_combine_over_tcp": case(4, 2, "combine", kill=True, transport="tcp"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_normal_fault_checks_pass(name):
    assert_passed(run_ranks(SCRIPT, CASES[name]))
