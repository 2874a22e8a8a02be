"""Normal-mode (intranode) dispatch/combine checked across ranks on real GPUs: tests/python/gpu/intranode_checks.py
run through scripts/launch.py with 2, 4 and 8 ranks on one node, and 12 ranks as 3 emulated nodes of 4 that
UCCL_EP_NORMAL_MNNVL=1 makes one NVLink domain (the Buffer's reported topology must say so). The reduced case
matrix (--quick: every x mode once, top-k, stream options, num_worst_tokens, biases, cached dispatch) keeps each
run short. Skipped, with the reason, without a GPU or a CUDA build of uccl.ep._C."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rank_cases import RankCase, assert_passed, run_ranks  # noqa: E402

pytestmark = pytest.mark.gpu

SHAPE = ("--num-tokens", "1024", "--hidden", "7168", "--num-topk", "8", "--quick")
EXPERTS_256 = ("--num-experts", "256")
MNNVL = RankCase(12, 4, SHAPE + ("--num-experts", "264", "--expect-nodes", "3", "--expect-mnnvl"),
                 env={"UCCL_EP_NORMAL_MNNVL": "1"}, timeout_s=240)

CASES = {
    "two_ranks_on_one_node": RankCase(2, 2, SHAPE + EXPERTS_256),
    "four_ranks_on_one_node": RankCase(4, 4, SHAPE + EXPERTS_256),
    "eight_ranks_on_one_node": RankCase(8, 8, SHAPE + EXPERTS_256),
    "eight_ranks_on_a_gpu_each": RankCase(8, 8, SHAPE + EXPERTS_256, own_gpus=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_intranode_checks_pass(name):
    assert_passed(run_ranks("intranode_checks.py", CASES[name]))


def test_twelve_ranks_as_three_nodes_are_one_mnnvl_domain():
    run = run_ranks("intranode_checks.py", MNNVL)
    assert_passed(run)
    # The check script already failed unless num_nodes == 3 and nvl_domain_spans_nodes; the line is for the log.
    topology = [line for line in run.stdout.splitlines() if line.startswith("[rank 0] topology: ")]
    assert topology, "rank 0 printed no 'topology:' line"
    print(topology[0])


HANDLE_SHAPE = ("--num-tokens", "512", "--hidden", "2048", "--num-topk", "8", "--num-experts", "64")
HANDLE_CASES = {
    # One GPU per rank where there are enough: the pipelined path (one transfer kernel, chunk flags).
    "pipelined": RankCase(2, 2, HANDLE_SHAPE, own_gpus=True),
    # The staged path (push, arrive, reduce kernels), which ranks sharing a GPU take.
    "staged": RankCase(2, 2, HANDLE_SHAPE, env={"UCCL_EP_NORMAL_PATH": "staged"}),
    "staged_three_ranks": RankCase(3, 3, HANDLE_SHAPE[:-1] + ("66",), env={"UCCL_EP_NORMAL_PATH": "staged"}),
}


@pytest.mark.parametrize("name", list(HANDLE_CASES))
def test_forged_handles_raise_naming_the_entry_and_the_buffer_stays_usable(name):
    assert_passed(run_ranks("intranode_handle_checks.py", HANDLE_CASES[name]))
