"""The low-latency size hint and layout through _C, against an independent reading of ll_layout.hpp's comment:
two halves, each dispatch_recv [E][M] messages, combine_recv [E][M] rows, send [E][M] max(message, row),
every region start and the half rounded up to 128; a message = 16-byte header + max(BF16 row, FP8 row + one
float per 128 channels), a row = max(BF16 row, 168 bytes of logfmt per 128 channels), both rounded up to 16."""
import pytest

import uccl.ep as ep
from uccl.ep import _validate as V


def up(v, a):
    return -(-v // a) * a


def expected_layout(M, hidden, R, E):
    msg = up(16 + max(2 * hidden, hidden + hidden // 128 * 4), 16)
    row = up(max(2 * hidden, hidden // 128 * (8 + 160)), 16)
    slots = E * M
    combine_recv = up(slots * msg, 128)
    send = up(combine_recv + slots * row, 128)
    half = up(send + slots * max(msg, row), 128)
    return dict(msg_bytes=msg, row_bytes=row, dispatch_recv_off=0, combine_recv_off=combine_recv, send_off=send,
                half_bytes=half, total_bytes=2 * half, experts_per_rank=E // R, combine_flag_index=E,
                signals_per_half=2 * E)


CASES = [(128, 7168, 8, 256), (1, 128, 1, 1), (256, 4096, 16, 128), (1024, 8192, 2, 128), (37, 1152, 3, 6),
         (64, 2048, 32, 1024), (128, 7168, 1, 64)]


@pytest.mark.parametrize("M, hidden, R, E", CASES)
def test_hint_matches_independent_formula(native, M, hidden, R, E):
    exp = expected_layout(M, hidden, R, E)
    assert native.get_low_latency_rdma_size_hint(M, hidden, R, E) == exp["total_bytes"]
    assert ep.get_low_latency_rdma_size_hint(M, hidden, R, E) == exp["total_bytes"]
    assert ep.Buffer.get_low_latency_rdma_size_hint(M, hidden, R, E) == exp["total_bytes"]
    layout = native.ll_layout(M, hidden, R, E)
    for k, v in exp.items():
        assert layout[k] == v, k
    assert layout["total_bytes"] % 128 == 0


def test_hint_is_monotonic_and_aligned(native):
    base = (64, 2048, 8, 64)
    hint = native.get_low_latency_rdma_size_hint
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


def test_hint_rejects_nonpositive(native):
    for bad in [(0, 7168, 8, 256), (128, 0, 8, 256), (128, 7168, 0, 256), (128, 7168, 8, -1)]:
        with pytest.raises(ValueError, match="positive"):
            native.get_low_latency_rdma_size_hint(*bad)


def test_limits_match_native(native):
    assert native.kMaxTopk == V.kMaxTopk == 16
    assert native.kMaxExpertsPerRank == V.kMaxExpertsPerRank
    assert native.kMaxTokensPerRank == V.kMaxTokensPerRank
    assert native.kMinHidden == V.kMinHidden
    assert native.kMaxHidden == V.kMaxHidden
    assert native.kChannelsPerScale == V.kChannelsPerScale
    assert native.kHeaderBytes == 16
