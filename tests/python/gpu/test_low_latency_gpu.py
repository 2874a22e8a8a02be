"""Low-latency dispatch/combine checked across ranks on real GPUs: tests/python/gpu/low_latency_checks.py run
through scripts/launch.py, on one node (CUDA IPC) and on emulated nodes (GPU -> ring -> proxy -> libfabric shm),
with DeepEP's decode shape: 128 tokens per rank, hidden 7168, top-8 of 288 experts. Skipped, with the reason,
without a GPU or a CUDA build of uccl.ep._C."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rank_cases import RankCase, assert_passed, run_ranks  # noqa: E402

pytestmark = pytest.mark.gpu

SHAPE = ("--num-tokens", "128", "--hidden", "7168", "--num-topk", "8", "--num-experts", "288")
# Emulated nodes talk through the proxies; shm keeps the transport on this host without a NIC, and one proxy
# thread per rank keeps 4 ranks' proxies, kernels and Python from oversubscribing the CPUs.
PROXIED = {"UCCL_EP_TRANSPORT": "shm", "UCCL_EP_NUM_PROXY_THREADS": "1"}

CASES = {
    # The full option matrix (24 dispatch x 8 combine variants) where calls take microseconds.
    "two_ranks_on_one_node": RankCase(2, 2, SHAPE),
    "two_ranks_on_a_gpu_each": RankCase(2, 2, SHAPE + ("--quick",), own_gpus=True),
    # The proxy path takes milliseconds a call: the reduced matrix.
    "two_ranks_as_two_nodes_through_the_proxy": RankCase(2, 1, SHAPE + ("--quick",), env=PROXIED),
    "four_ranks_as_two_nodes_of_two": RankCase(4, 2, SHAPE + ("--quick",), env=PROXIED),
}


@pytest.mark.parametrize("name", list(CASES))
def test_low_latency_checks_pass(name):
    assert_passed(run_ranks("low_latency_checks.py", CASES[name]))


# One group of checks on its own (low_latency_checks.py --only), on one node and through the proxy: what the full
# runs above include too, here as a case of its own so a failure names it.
ONLY_CASES = {
    f"{group}_{where}": RankCase(2, rpn, SHAPE + ("--only", group), env=env)
    for group in ("bad-expert-ids", "kernel-names")
    for where, rpn, env in (("one_node", 2, {}), ("through_the_proxy", 1, PROXIED))
}


@pytest.mark.parametrize("name", list(ONLY_CASES))
def test_low_latency_check_group_passes(name):
    """bad-expert-ids: a top-k id outside [-1, num_experts) makes the next call raise ArgumentError naming the id
    and the rank, and the buffer works afterwards. kernel-names: one kernel named *dispatch*, one *combine*."""
    assert_passed(run_ranks("low_latency_checks.py", ONLY_CASES[name]))



def test_the_bench_prints_the_transport_floor_between_emulated_nodes():
    """bench/test_low_latency.py on two emulated nodes: the transport floor of both calls (the same writes and signals
    through the Buffer's own transport and RDMA buffer, from the CPU) beside the measured calls, with the ratio to
    floor + the NVLink-path time given."""
    from rank_cases import REPO
    bench = os.path.join(REPO, "bench", "test_low_latency.py")
    case = RankCase(2, 1, ("--num-tokens", "32", "--hidden", "1024", "--num-topk", "4", "--num-experts", "16",
                           "--bench-warmup", "2", "--bench-iters", "5", "--nvlink-us", "10,20"), env=PROXIED)
    run = run_ranks(bench, case)
    tail = f"\n--- stdout (end) ---\n{run.stdout[-6000:]}\n--- stderr (end) ---\n{run.stderr[-3000:]}"
    assert run.returncode == 0, tail
    assert "[rank 0] transport floor over fabric/shm" in run.stdout, tail
    assert "[rank 1] rank 1/2: dispatch" in run.stdout and " | floor: dispatch " in run.stdout, tail
    assert "[rank 0] | dispatch | " in run.stdout and "[rank 0] | combine | " in run.stdout, tail
