"""Low-latency faults on real GPUs (issue 14, items 5 and 6): tests/python/gpu/ll_fault_checks.py run through
scripts/launch.py with UCCL_EP_TIMEOUT_SECS=3. The last rank skips a clean_low_latency_buffer, or kills itself
with SIGKILL (launch.py --expect-killed), on one node (NVLink) and on emulated nodes of one rank (the proxies over
libfabric shm). Three ranks share the GPUs under MPS where the case needs two survivors. Skipped, with the reason,
without a GPU or a CUDA build of uccl.ep._C."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rank_cases import RankCase, assert_passed, run_ranks  # noqa: E402

pytestmark = pytest.mark.gpu

# gloo for the process group in every case: after a rank died the survivors build a group without it, which a CPU
# backend does without touching the dead rank's communicator.
TIMEOUT = {"UCCL_EP_TIMEOUT_SECS": "3", "UCCL_EP_BENCH_BACKEND": "gloo"}
# As in test_low_latency_gpu.py: shm keeps the proxies' transport on this host; one proxy thread per rank.
PROXIED = dict(TIMEOUT, UCCL_EP_TRANSPORT="shm", UCCL_EP_NUM_PROXY_THREADS="1")

CASES = {
    # clean_low_latency_buffer is a barrier: a rank that skips it is named (TimeoutError), or masked with shrink.
    "a_skipped_clean_one_node": RankCase(2, 2, ("--case", "clean-skip"), env=TIMEOUT),
    "a_skipped_clean_through_the_proxy": RankCase(2, 1, ("--case", "clean-skip"), env=PROXIED),
    "a_skipped_clean_among_three_one_node": RankCase(3, 3, ("--case", "clean-skip"), env=TIMEOUT),
    # A SIGKILLed rank: named by the survivors' next dispatch, who then destroy and rebuild without it.
    "a_killed_rank_then_a_rebuilt_buffer_one_node": RankCase(3, 3, ("--case", "kill-then-rebuild"), env=TIMEOUT,
                                                             expect_killed=(2,)),
    # A SIGKILLed rank under enable_shrink: masked, the survivors' dispatch/combine complete.
    "a_killed_rank_masked_one_node": RankCase(3, 3, ("--case", "kill-under-shrink"), env=TIMEOUT,
                                              expect_killed=(2,)),
    "a_killed_rank_masked_through_the_proxy": RankCase(3, 1, ("--case", "kill-under-shrink"), env=PROXIED,
                                                       expect_killed=(2,)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_low_latency_fault_checks_pass(name):
    assert_passed(run_ranks("ll_fault_checks.py", CASES[name]))
