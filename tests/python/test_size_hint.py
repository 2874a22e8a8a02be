"""The low-latency size hint and layout through _C, against an independent reading of ll_layout.hpp's comment:
two halves, each a receive region (dispatch messages and combine rows share it) and a send region, each region
[E][M] slots of max(message, row), every region start and the half rounded up to 128; a message = 16-byte header +
max(BF16 row, FP8 row + one float per 128 channels), a row = max(BF16 row, 168 bytes of logfmt per 128 channels),
both rounded up to 16. The hint is no larger than DeepEP's for the same shape, and rejects what a call rejects."""
import pytest

import uccl.ep as ep
from uccl.ep import _validate as V
from uccl.ep import config as C


def up(v, a):
    return -(-v // a) * a


def expected_layout(M, hidden, R, E):
    msg = up(16 + max(2 * hidden, hidden + hidden // 128 * 4), 16)
    row = up(max(2 * hidden, hidden // 128 * (8 + 160)), 16)
    region = E * M * max(msg, row)
    send = up(region, 128)
    half = up(send + region, 128)
    return dict(msg_bytes=msg, row_bytes=row, dispatch_recv_off=0, combine_recv_off=0, send_off=send,
                half_bytes=half, total_bytes=2 * half, experts_per_rank=E // R, combine_flag_index=E,
                signals_per_half=2 * E)


def deep_ep_hint(M, hidden, E):
    """DeepEP's get_low_latency_rdma_size_hint (csrc/config.hpp): per half a send buffer of max(M * msg,
    E * M * combine_msg) and a receive buffer of max(E * M * msg, E * M * combine_msg), msg = 16 + max(BF16 row,
    FP8 row + a float per 128 channels), combine_msg = BF16 row + 4 bytes of min/max per 128 channels (logfmt);
    two halves, two signal buffers of E ints rounded up to 128 (newer versions hold more), then 128 more."""
    scales = hidden // 128
    msg = 16 + max(2 * hidden, hidden + scales * 4)
    combine_msg = 2 * hidden + scales * 4
    send = max(M * msg, E * M * combine_msg)
    recv = max(E * M * msg, E * M * combine_msg)
    total = 2 * (send + recv + up(E * 4, 128))
    return (total + 128) // 128 * 128


CASES = [(128, 7168, 8, 256), (1, 128, 1, 1), (256, 4096, 16, 128), (1024, 8192, 2, 128), (37, 1152, 3, 6),
         (64, 2048, 32, 1024), (128, 7168, 1, 64)]


@pytest.mark.parametrize("M, hidden, R, E", CASES)
def test_hint_matches_independent_formula(native, M, hidden, R, E):
    exp = expected_layout(M, hidden, R, E)
    assert native.get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank=M, hidden=hidden, num_ranks=R,
                                                 num_experts=E) == exp["total_bytes"]
    assert ep.get_low_latency_rdma_size_hint(M, hidden, R, E) == exp["total_bytes"]
    assert ep.Buffer.get_low_latency_rdma_size_hint(M, hidden, R, E) == exp["total_bytes"]
    layout = native.low_latency_layout(num_max_dispatch_tokens_per_rank=M, hidden=hidden, num_ranks=R, num_experts=E)
    for k, v in exp.items():
        assert getattr(layout, k) == v, k
    assert (layout.num_ranks, layout.num_experts, layout.max_tokens, layout.hidden) == (R, E, M, hidden)
    assert layout.total_bytes % 128 == 0


def test_hint_is_monotonic_and_aligned(native):
    base = (64, 2048, 8, 64)
    def hint(M, hidden, R, E):
        return native.get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank=M, hidden=hidden, num_ranks=R,
                                                     num_experts=E)

    assert hint(*base) % 128 == 0
    for i, bigger in enumerate([128, 4096, 16, 128]):
        args = list(base)
        args[i] = bigger
        assert hint(*args) >= hint(*base), args
        assert hint(*args) % 128 == 0
    for M in range(1, 200, 17):
        for hidden in range(128, 2048, 384):
            assert hint(M, hidden, 4, 16) < hint(M + 1, hidden, 4, 16)
            assert hint(M, hidden, 4, 16) < hint(M, hidden + 128, 4, 16)


def test_receive_views_coincide_and_regions_do_not_overlap(native):
    for M, hidden, R, E in CASES:
        layout = native.low_latency_layout(num_max_dispatch_tokens_per_rank=M, hidden=hidden, num_ranks=R,
                                           num_experts=E)
        # dispatch_recv [E_local][R][M] messages and combine_recv [E][M] rows: one region, by design.
        assert layout.dispatch_recv_off == layout.combine_recv_off == 0
        recv_end = max(E * M * layout.msg_bytes, E * M * layout.row_bytes)
        assert recv_end <= layout.send_off < recv_end + 128 and layout.send_off % 128 == 0
        send_end = layout.send_off + max(E * M * layout.msg_bytes, E * M * layout.row_bytes)
        assert send_end <= layout.half_bytes < send_end + 128


@pytest.mark.parametrize("R", [2, 8, 16])
def test_hint_for_deepseek_decode_is_no_larger_than_deep_eps(R):
    hint = ep.Buffer.get_low_latency_rdma_size_hint(128, 7168, R, 288)
    assert hint == 2116288512
    assert hint <= deep_ep_hint(128, 7168, 288) == 2146961792
    assert hint <= 2 ** 31


@pytest.mark.parametrize("hidden", [2048, 2560, 3072, 4096, 5120, 6144, 7168, 8192])  # DeepEP's low-latency sizes
def test_hint_is_no_larger_than_deep_eps(hidden):
    for M in (1, 7, 128, 1024):
        for R in (1, 2, 8, 16, 32):
            for E in (R, 8 * R, 36 * R):
                assert ep.get_low_latency_rdma_size_hint(M, hidden, R, E) <= deep_ep_hint(M, hidden, E), (M, R, E)


@pytest.mark.parametrize("bad, name", [((0, 7168, 8, 256), "num_max_dispatch_tokens_per_rank"),
                                       ((1025, 7168, 8, 256), "num_max_dispatch_tokens_per_rank"),
                                       ((128, 0, 8, 256), "hidden"), ((128, 100, 8, 256), "hidden"),
                                       ((128, 16384, 8, 256), "hidden"), ((128, 7168 + 64, 8, 256), "hidden"),
                                       ((128, 7168, 0, 256), "num_ranks"), ((128, 7168, 8, -1), "num_experts"),
                                       ((128, 7168, 16, 289), "num_experts"),
                                       ((128, 7168, 2, 514), "num_experts / num_ranks")])
def test_hint_rejects_what_a_call_rejects(native, bad, name):
    kwargs = dict(zip(("num_max_dispatch_tokens_per_rank", "hidden", "num_ranks", "num_experts"), bad))
    with pytest.raises(native.ArgumentError) as e:
        native.get_low_latency_rdma_size_hint(**kwargs)
    assert isinstance(e.value, ValueError)
    assert "get_low_latency_rdma_size_hint" in str(e.value) and name in str(e.value), str(e.value)
    for hint in (ep.get_low_latency_rdma_size_hint, ep.Buffer.get_low_latency_rdma_size_hint):
        with pytest.raises(ep.ArgumentError, match=name.replace("/", ".")):
            hint(*bad)
    with pytest.raises(native.ArgumentError, match=name.replace("/", ".")):
        native.low_latency_layout(**kwargs)


LIMITS = dict(kMaxTopk=16, kChannelsPerScale=128, kUe8m0ChannelsPerInt=512, kRowAlign=16, kBufferSizeUnit=128,
              kMaxExpertsPerRank=256, kMaxTokensPerRank=1024, kMinHidden=128, kMaxHidden=8192, kMaxNormalExperts=8192,
              kMaxNvlRanks=1024, kHeaderBytes=16, kLogfmtGroupBytes=168)


def test_limits_come_from_native_only(native):
    for name, value in LIMITS.items():
        assert getattr(native, name) == value, name
        for module in (V, C):  # Python defines no limit: a second definition could drift from the kernels'
            assert not hasattr(module, name), (module.__name__, name)


@pytest.mark.parametrize("fn, kwargs", [
    ("get_nvl_buffer_size_hint", dict(num_sms=20, num_max_nvl_chunked_recv_tokens=256, hidden_bytes=2 ** 62,
                                      num_ranks=8)),
    ("get_rdma_buffer_size_hint", dict(num_sms=2 ** 30, num_max_rdma_chunked_recv_tokens=2 ** 30,
                                       hidden_bytes=2 ** 40, num_ranks=2 ** 20, num_ranks_per_node=1)),
])
def test_size_hints_raise_instead_of_wrapping(native, fn, kwargs):
    with pytest.raises(native.ArgumentError, match="overflows 64 bits"):
        getattr(native, fn)(**kwargs)
