"""Normal mode across nodes (src/kernels/internode.hpp) checked on real GPUs: tests/python/gpu/intranode_checks.py
(the same checks as within a node; the handle has 9 elements there) and intranode_handle_checks.py (forged handles)
run through scripts/launch.py across emulated nodes (UCCL_EP_RANKS_PER_NODE), the network part through the proxies
over shm or tcp. The reduced case matrix (--quick) keeps each run short. Skipped, with the reason, without a GPU or a CUDA build of uccl.ep._C."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rank_cases import RankCase, assert_passed, run_ranks  # noqa: E402

pytestmark = pytest.mark.gpu

SHAPE = ("--num-tokens", "512", "--hidden", "7168", "--num-topk", "8", "--num-experts", "256", "--quick",
         "--rdma-bytes", "1000000000")


def across(nproc: int, ranks_per_node: int, transport: str, *extra: str, timeout_s: int = 240,
           env=None) -> RankCase:
    return RankCase(nproc, ranks_per_node, SHAPE + ("--expect-nodes", str(nproc // ranks_per_node)) + extra,
                    env=dict(env or {}, UCCL_EP_TRANSPORT=transport), timeout_s=timeout_s)


# The in-flight caps the NICs that fail under load get (README: Broadcom Thor-2): one write in flight per ring and
# 1.5 MB per proxy thread; the normal-mode rings take UCCL_IB_MAX_INFLIGHT_NORMAL.
THOR2_CAPS = {"UCCL_IB_MAX_INFLIGHT_NORMAL": "1", "UCCL_IB_MAX_INFLIGHT_BYTES": "1572864"}


CASES = {
    "two_nodes_of_one_over_shm": across(2, 1, "shm"),
    "two_nodes_of_one_over_tcp": across(2, 1, "tcp"),
    "two_nodes_of_two_over_shm": across(4, 2, "shm"),
    "two_nodes_of_two_over_tcp": across(4, 2, "tcp"),
    "two_nodes_of_two_over_tcp_with_thor2_caps": across(4, 2, "tcp", env=THOR2_CAPS),
    "two_nodes_of_four_over_shm": across(8, 4, "shm", "--num-tokens", "256"),
    "two_nodes_of_four_over_tcp": across(8, 4, "tcp", "--num-tokens", "256"),
    "four_nodes_of_four_over_shm": across(16, 4, "shm", "--num-tokens", "128", "--nvl-bytes", "400000000",
                                          "--rdma-bytes", "400000000", timeout_s=300),
    "four_nodes_of_four_over_tcp": across(16, 4, "tcp", "--num-tokens", "128", "--nvl-bytes", "400000000",
                                          "--rdma-bytes", "400000000", timeout_s=300),
}


@pytest.mark.parametrize("name", list(CASES))
def test_internode_checks_pass(name):
    assert_passed(run_ranks("intranode_checks.py", CASES[name]))


# Forged handles across nodes (tests/python/gpu/intranode_handle_checks.py): every forgery raises naming its entry and
# the Buffer stays usable; a combine whose matrix rank 0 forged alone voids the call (src/kernels/internode_combine.cu:
# no rank waits into a timeout, and no address comes from the forged matrix), and every rank that lost rows to it
# names rank 0.
HANDLE_SHAPE = ("--num-tokens", "256", "--hidden", "2048", "--num-topk", "8", "--num-experts", "64",
                "--rdma-bytes", "500000000")
HANDLE_CASES = {
    "two_nodes_of_one": RankCase(2, 1, HANDLE_SHAPE, env={"UCCL_EP_TRANSPORT": "shm", "UCCL_EP_TIMEOUT_SECS": "5"}),
    "two_nodes_of_two": RankCase(4, 2, HANDLE_SHAPE, env={"UCCL_EP_TRANSPORT": "shm", "UCCL_EP_TIMEOUT_SECS": "5"}),
}


@pytest.mark.parametrize("name", list(HANDLE_CASES))
def test_forged_handles_across_nodes_raise_naming_the_entry_and_the_buffer_stays_usable(name):
    assert_passed(run_ranks("intranode_handle_checks.py", HANDLE_CASES[name]))
