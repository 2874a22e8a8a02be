"""bench/ll_reference.py on the CPU: the low-latency layout against brute force and hand-computed cases, the
combine reference, the FP8 scale / e4m3 / UE8M0 arithmetic, calc_diff and the row encoding."""
import os
import struct
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))

import ll_reference as ref  # noqa: E402


def random_topk(gen, tokens, k, experts, masked):
    scores = torch.rand(tokens, experts, generator=gen)
    idx = torch.topk(scores, k, dim=1).indices.long()
    if masked:
        pos = torch.randperm(tokens * k, generator=gen)[:masked]
        idx.view(-1)[pos] = -1
    return idx


@pytest.mark.parametrize("seed", range(12))
def test_layout_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    R = int(torch.randint(1, 6, (1,), generator=gen))
    epr = int(torch.randint(1, 5, (1,), generator=gen))
    E = R * epr
    K = int(torch.randint(1, min(E, 8) + 1, (1,), generator=gen))
    M = 9
    all_idx = []
    for _ in range(R):
        T = int(torch.randint(0, M + 1, (1,), generator=gen))  # ranks may send different counts, even none
        all_idx.append(random_topk(gen, T, K, E, masked=min(T * K, 5)))
    for rank in range(R):
        exp = ref.expected_layout(all_idx, E, R, rank, M)
        brute = ref.brute_force_layout(all_idx, E, R, rank)
        assert exp.recv_count.dtype == torch.int32 and exp.recv_count.tolist() == [len(b) for b in brute]
        for e in range(epr):
            got = list(zip(exp.src_rank[e].tolist(), exp.src_token[e].tolist()))
            assert got == brute[e]  # the exact order: source rank, then token
            for s in range(R):
                assert int(exp.counts[e, s]) == sum(1 for (r, _) in brute[e] if r == s)
        assert torch.equal(exp.begins, torch.cumsum(exp.counts, 1) - exp.counts)
        # The reference's own layout_range and src_info pass the checker.
        src_info = torch.full((epr, R * M), -7, dtype=torch.int32)
        for e in range(epr):
            src_info[e, :exp.src_token[e].numel()] = exp.src_token[e].int()
        ref.check_layout_range(exp.layout_range(), src_info, exp.recv_count, exp)
        # Slot rule: token t's slot at expert e is the number of earlier tokens at its source that chose e.
        for s in range(R):
            for e in range(epr):
                toks = exp.src_token[e][exp.src_rank[e] == s].tolist()
                for slot, t in enumerate(toks):
                    earlier = (all_idx[s][:t] == rank * epr + e).any(dim=1).sum()
                    assert int(earlier) == slot


def test_layout_hand_computed():
    # 2 ranks, 4 experts (2 per rank), top-2.
    r0 = torch.tensor([[0, 2], [1, -1], [3, 0]])
    r1 = torch.tensor([[2, 3], [-1, -1], [0, 1], [1, 2]])
    exp0 = ref.expected_layout([r0, r1], 4, 2, 0)
    assert exp0.recv_count.tolist() == [3, 3]
    assert list(zip(exp0.src_rank[0].tolist(), exp0.src_token[0].tolist())) == [(0, 0), (0, 2), (1, 2)]
    assert list(zip(exp0.src_rank[1].tolist(), exp0.src_token[1].tolist())) == [(0, 1), (1, 2), (1, 3)]
    assert exp0.counts.tolist() == [[2, 1], [1, 2]]
    assert exp0.begins.tolist() == [[0, 2], [0, 1]]
    assert exp0.layout_range().tolist() == [[2, (2 << 32) | 1], [1, (1 << 32) | 2]]
    exp1 = ref.expected_layout([r0, r1], 4, 2, 1)
    assert exp1.recv_count.tolist() == [3, 2]
    assert list(zip(exp1.src_rank[0].tolist(), exp1.src_token[0].tolist())) == [(0, 0), (1, 0), (1, 3)]
    assert list(zip(exp1.src_rank[1].tolist(), exp1.src_token[1].tolist())) == [(0, 2), (1, 0)]


def test_layout_rejects_bad_input():
    with pytest.raises(ValueError, match="selects an expert twice"):
        ref.expected_layout([torch.tensor([[1, 1]])], 4, 1, 0)
    with pytest.raises(ValueError, match=r"\[-1, 4\)"):
        ref.expected_layout([torch.tensor([[4, 0]])], 4, 1, 0)
    with pytest.raises(ValueError, match="num_max_dispatch_tokens_per_rank"):
        ref.expected_layout([torch.zeros(3, 1, dtype=torch.long)], 4, 1, 0, max_tokens=2)
    with pytest.raises(ValueError, match="multiple"):
        ref.expected_layout([torch.zeros(1, 1, dtype=torch.long)] * 3, 4, 3, 0)
    # Two -1 in a row are not a duplicate.
    ref.expected_layout([torch.tensor([[-1, -1]])], 4, 1, 0)


def test_check_layout_range_catches_errors():
    r0 = torch.tensor([[0, 1], [1, -1], [0, -1]])
    r1 = torch.tensor([[1, 0], [0, -1]])
    exp = ref.expected_layout([r0, r1], 4, 2, 0)
    M = 3
    src_info = torch.zeros(2, 2 * M, dtype=torch.int32)
    for e in range(2):
        src_info[e, :exp.src_token[e].numel()] = exp.src_token[e].int()
    good = exp.layout_range()
    ref.check_layout_range(good, src_info, exp.recv_count, exp, "ok")

    bad_count = good.clone()
    bad_count[0, 1] += 1
    with pytest.raises(AssertionError, match="local expert 0, source 1: layout_range count"):
        ref.check_layout_range(bad_count, src_info, exp.recv_count, exp, "fp8")
    bad_begin = good.clone()
    bad_begin[1, 1] += 1 << 32
    with pytest.raises(AssertionError, match="local expert 1, source 1: layout_range begin"):
        ref.check_layout_range(bad_begin, src_info, exp.recv_count, exp)
    swapped = src_info.clone()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    with pytest.raises(AssertionError, match="rank 0, combo x: local expert 0, source 0: src_info"):
        ref.check_layout_range(good, swapped, exp.recv_count, exp, "combo x")
    with pytest.raises(AssertionError, match="recv_count"):
        ref.check_layout_range(good, src_info, exp.recv_count + 1, exp)


def test_weighted_combine():
    y = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    idx = torch.tensor([[0, -1, 3], [-1, -1, -1]])
    w = torch.tensor([[0.5, 7.0, 0.25], [1.0, 1.0, 1.0]])
    out = ref.weighted_combine(y, idx, w)
    assert out.tolist() == [[0.75, 1.5], [0.0, 0.0]]
    # Per-k rows: the general form, brute force.
    gen = torch.Generator().manual_seed(3)
    yk = torch.randn(5, 3, 4, generator=gen)
    idx = random_topk(gen, 5, 3, 8, masked=4)
    w = torch.rand(5, 3, generator=gen)
    want = torch.zeros(5, 4)
    for t in range(5):
        for k in range(3):
            if idx[t, k] >= 0:
                want[t] += w[t, k] * yk[t, k]
    assert torch.allclose(ref.weighted_combine(yk, idx, w), want)


def test_fp8_scales():
    x = torch.zeros(2, 256)
    x[0, :128] = torch.linspace(-3, 2, 128)  # amax 3
    x[0, 128:] = 1e-6  # amax below the floor
    x[1, 5] = 448.0
    x[1, 200] = -0.001
    s = ref.fp8_scales(x)
    assert s.shape == (2, 2)
    assert torch.allclose(s, torch.tensor([[3 / 448, 1e-4 / 448], [1.0, 0.001 / 448]]))
    r = ref.fp8_scales(x, round_scale=True)
    # 2**ceil(log2(s)): 3/448 = 0.0067 -> 2**-7; 1e-4/448 -> 2**-22; 1 -> 1; 0.001/448 = 2.2e-6 -> 2**-18
    assert r.tolist() == [[2.0 ** -7, 2.0 ** -22], [1.0, 2.0 ** -18]]
    assert bool((r >= s).all())
    with pytest.raises(ValueError):
        ref.fp8_scales(torch.zeros(1, 100))


def test_e4m3_rounding_hand_values():
    v = torch.tensor([0.0, 1.0, 1.0625, 1.0626, 1.1875, 17.0, 18.0, 448.0, 500.0, -3.3, 2.0 ** -9, 2.0 ** -10,
                      3 * 2.0 ** -11, 2.0 ** -6 * 1.0625, 240.0, 232.0])
    want = [0.0, 1.0, 1.0, 1.125, 1.25, 16.0, 18.0, 448.0, 448.0, -3.25, 2.0 ** -9, 0.0,
            2.0 ** -9, 2.0 ** -6, 240.0, 224.0]
    # 1.0625 is a tie between 1 and 1.125: even mantissa (1.0). 1.1875 ties 1.125/1.25 -> 1.25 (even).
    # 17 ties 16/18 -> 16 (even). 2**-10 ties 0/2**-9 -> 0. 3*2**-11 = 1.5 * 2**-10 -> nearer 2**-9.
    # 232 ties 224/240 -> 224 (mantissa 0b110 even).
    assert ref.round_to_e4m3(v).tolist() == want
    # Every small integer up to 16 is exact.
    ints = torch.arange(-16, 17).float()
    assert torch.equal(ref.round_to_e4m3(ints), ints)


def e4m3_grid():
    """Every finite non-negative float8_e4m3fn value with its mantissa LSB, decoded from the bits."""
    vals = []
    for e in range(16):
        for m in range(8):
            if e == 15 and m == 7:
                continue  # NaN
            v = m * 2.0 ** -9 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
            vals.append((v, m & 1))
    return vals


def test_e4m3_rounding_against_the_bit_grid():
    grid = e4m3_grid()
    assert max(v for v, _ in grid) == 448.0 and len(grid) == 127
    values = sorted(v for v, _ in grid)
    mids = [(a + b) / 2 for a, b in zip(values, values[1:])]  # every tie
    gen = torch.Generator().manual_seed(2)
    rnd = (torch.rand(3000, generator=gen) * 2 - 1) * torch.logspace(-4, 2.65, 3000)
    samples = torch.tensor(values + mids + [-m for m in mids]).float()
    samples = torch.cat([samples, rnd])
    got = ref.round_to_e4m3(samples).tolist()
    for v, g in zip(samples.tolist(), got):
        a = abs(v)
        best = min(grid, key=lambda p: (abs(p[0] - a), p[1]))  # nearest; on a tie the even mantissa
        assert g == (best[0] if v >= 0 else -best[0]), (v, g, best)


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="torch has no float8 dtype")
def test_e4m3_rounding_matches_torch_float8():
    gen = torch.Generator().manual_seed(0)
    v = torch.cat([torch.randn(100000, generator=gen) * 50, torch.randn(10000, generator=gen) * 0.01]).clamp(-448, 448)
    assert torch.equal(ref.round_to_e4m3(v), v.to(torch.float8_e4m3fn).float())


def test_cast_roundtrip_error_and_exact_groups():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 512, generator=gen)
    for rs in (False, True):
        q, s = ref.cast_to_fp8(x, rs)
        assert q.abs().max() <= 448
        # q is on the e4m3 grid.
        assert torch.equal(ref.round_to_e4m3(q), q)
        back = ref.dequantize(q, s)
        d = ref.calc_diff(back, x)
        assert 0 < d < 9e-4
    # A constant group of a small integer survives exactly under power-of-two scales.
    c = torch.zeros(1, 128) + 13.0
    assert torch.equal(ref.fp8_roundtrip(c, round_scale=True), c)


def float_bits(f):
    return struct.unpack("<I", struct.pack("<f", f))[0]


def test_ue8m0_packing():
    scales = torch.tensor([[2.0 ** -7, 1.0, 2.0 ** 3, 2.0 ** -126, 0.5, 2.0 ** 10, 2.0 ** -20, 4.0]])
    b = ref.ue8m0_bytes(scales)
    assert b.tolist() == [[120, 127, 130, 1, 126, 137, 107, 129]]
    assert b.tolist()[0] == [(float_bits(f) >> 23) & 0xFF for f in scales[0].tolist()]
    p = ref.pack_ue8m0(scales)
    assert p.dtype == torch.int32 and p.shape == (1, 2)
    want0 = 120 | 127 << 8 | 130 << 16 | 1 << 24
    want1 = 126 | 137 << 8 | 107 << 16 | 129 << 24
    assert p[0, 0].item() == want0
    assert p[0, 1].item() & 0xFFFFFFFF == want1 and p[0, 1].item() < 0  # top byte >= 128: negative int32
    assert struct.pack("<i", p[0, 1].item()) == bytes([126, 137, 107, 129])  # little-endian byte order
    assert torch.equal(ref.unpack_ue8m0(p), scales)
    # Round-scaled scales of random data round-trip through the packing.
    x = torch.randn(3, 1024) * torch.logspace(-3, 3, 1024)
    s = ref.fp8_scales(x, round_scale=True)
    assert torch.equal(ref.unpack_ue8m0(ref.pack_ue8m0(s)), s)
    q, _ = ref.cast_to_fp8(x, round_scale=True)
    assert torch.equal(ref.dequantize(q, ref.pack_ue8m0(s)), ref.dequantize(q, s))
    with pytest.raises(ValueError, match="multiple of 4"):
        ref.pack_ue8m0(torch.ones(1, 6))


def test_calc_diff():
    x = torch.randn(100, 64)
    assert ref.calc_diff(x, x) == pytest.approx(0.0, abs=1e-12)
    assert ref.calc_diff(x, -x) == pytest.approx(2.0)
    assert ref.calc_diff(torch.zeros(3), torch.zeros(3)) == 0.0
    assert ref.calc_diff(x, torch.zeros_like(x)) == pytest.approx(1.0)
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0])
    assert ref.calc_diff(a, b) == pytest.approx(1 - 2 * 7 / 15)


@pytest.mark.parametrize("hidden", [128, 512, 7168])
def test_row_encoding_survives_casts(hidden):
    gen = torch.Generator().manual_seed(hidden)
    for rank in (0, 1, 14, 15, 16, 239, 1000, 2 ** 31 - 1):
        x = torch.randn(40, hidden, generator=gen).to(torch.bfloat16)
        ref.encode_rows(x, rank)
        variants = [x.float()]
        for rs in (False, True):
            variants.append(ref.fp8_roundtrip(x, rs))
        if hidden % 512 == 0:
            q, s = ref.cast_to_fp8(x, True)
            variants.append(ref.dequantize(q, ref.pack_ue8m0(s)))
        for v in variants:
            r, t, ok = ref.decode_rows(v.to(torch.bfloat16))
            assert bool(ok.all())
            assert r.tolist() == [rank] * 40 and t.tolist() == list(range(40))
    # Garbage is not read as a row.
    _, _, ok = ref.decode_rows(torch.zeros(2, hidden))
    assert not bool(ok.any())
    _, _, ok = ref.decode_rows(torch.randn(5, hidden, generator=gen))
    assert not bool(ok.any())
    # Half of one row and half of another fail the check word.
    a = ref.encode_rows(torch.zeros(2, hidden), 3)
    b = ref.encode_rows(torch.zeros(2, hidden), 5)
    mixed = torch.cat([a[:, :40], b[:, 40:]], dim=1)
    assert not bool(ref.decode_rows(mixed)[2].any())
    with pytest.raises(ValueError):
        ref.encode_rows(torch.zeros(1, 64), 0)


def test_make_inputs_and_bytes():
    gen = torch.Generator().manual_seed(5)
    x, idx, w = ref.make_inputs(3, 128, 512, 288, 8, gen)
    assert x.dtype == torch.bfloat16 and x.shape == (128, 512)
    assert idx.dtype == torch.int64 and int((idx == -1).sum()) == 10
    ref.check_topk_idx(idx, 288)
    assert bool((w > 0).all())
    r, t, ok = ref.decode_rows(x)
    assert bool(ok.all()) and set(r.tolist()) == {3} and t.tolist() == list(range(128))
    d, c = ref.dispatch_bytes(idx, 7168)
    assert d == (128 * 8 - 10) * (7168 + 56 * 4 + 16) and c == (128 * 8 - 10) * 7168 * 2
