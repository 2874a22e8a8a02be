"""bench/ll_reference.py on the CPU: the low-latency layout against brute force and hand-computed cases, the
combine reference, the FP8 scale / e4m3 / UE8M0 arithmetic, calc_diff and the row encoding."""
import os
import struct
import sys
import types

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.path.insert(0, os.path.join(REPO, "tests", "python", "gpu"))

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


# ---------------------------------------------------------------------------------------------------------------
# tests/python/gpu/low_latency_checks.py and bench/test_low_latency.py on the CPU: argument parsing, options, and
# the whole check + benchmark flow run by scripts/launch.py against a pure-torch stand-in for Buffer's low-latency
# calls (gloo, 2 ranks). The stand-in follows api.md; FAKE_BUG makes it wrong in one way, and the checks must then
# fail naming rank and expert.
# ---------------------------------------------------------------------------------------------------------------
LAUNCH = os.path.join(REPO, "scripts", "launch.py")
BENCH = os.path.join(REPO, "bench", "test_low_latency.py")


def import_bench():
    import test_low_latency as bench  # bench/ is on sys.path
    return bench


def import_checks():
    import low_latency_checks as checks  # tests/python/gpu/ is on sys.path
    return checks


def test_bench_help_and_args():
    import subprocess
    r = subprocess.run([sys.executable, BENCH, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--num-experts" in r.stdout and "--quick" in r.stdout
    checks = import_checks()
    a = checks.parse_args([])
    assert (a.num_tokens, a.hidden, a.num_topk, a.num_experts, a.quick) == (128, 7168, 8, 288, False)
    assert not import_bench().parse_args([]).no_bench
    with pytest.raises(SystemExit):
        checks.parse_args(["--hidden", "100"])
    with pytest.raises(SystemExit):
        checks.parse_args(["--num-topk", "9", "--num-experts", "8"])


def test_bench_option_matrix_and_backend():
    checks = import_checks()
    import rank_group
    full = checks.dispatch_options(7168, quick=False)
    assert len(full) == 4 * 3 * 2 and len(set(full)) == len(full)
    assert not any(o.return_recv_hook and o.async_finish for o in full)
    assert not any(o.use_ue8m0 and not (o.use_fp8 and o.round_scale) for o in full)
    assert not any(o.round_scale and not o.use_fp8 for o in full)
    assert not any(o.use_ue8m0 for o in checks.dispatch_options(640, quick=False))  # 640 % 512 != 0
    assert len(checks.combine_options(False)) == 8 and len(checks.combine_options(True)) == 3
    quick = checks.dispatch_options(7168, quick=True)
    assert {o.use_fp8 for o in quick} == {False, True} and any(o.use_ue8m0 for o in quick)
    assert any(o.return_recv_hook for o in quick) and any(o.async_finish for o in quick)
    assert str(quick[0]) == "dispatch(with_stats)"
    assert checks.combine_threshold(quick[0], checks.CombineOptions(False, False, False)) == 1e-5
    assert checks.combine_threshold(quick[0], checks.CombineOptions(True, False, False)) == 9e-4
    assert checks.combine_threshold(quick[1], checks.CombineOptions(False, False, False)) == 9e-4

    d = rank_group.dist_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"})
    assert (d.rank, d.world, d.local_rank, d.local_world) == (1, 4, 1, 4)
    with pytest.raises(RuntimeError):
        rank_group.dist_env({})
    assert rank_group.choose_backend(d, 8, {}) == "nccl"
    assert rank_group.choose_backend(d, 1, {}) == "gloo"  # 4 ranks on one GPU
    assert rank_group.choose_backend(d, 0, {}) == "gloo"
    assert rank_group.choose_backend(d, 8, {"UCCL_EP_BENCH_BACKEND": "gloo"}) == "gloo"
    assert rank_group.choose_backend(d, 1, {"UCCL_EP_LAUNCHER": "1", "UCCL_EP_SHARED_GPU": "0"}) == "nccl"
    assert rank_group.choose_backend(d, 1, {"UCCL_EP_LAUNCHER": "1", "UCCL_EP_SHARED_GPU": "1"}) == "gloo"


def test_bench_summary_lines():
    bench = import_bench()
    keys = ("dispatch_us", "combine_us", "pair_us", "loop_us", "hook_dispatch_send_us", "hook_dispatch_recv_us",
            "hook_combine_send_us", "hook_combine_recv_us", "dispatch_gbs", "combine_gbs", "gpu_dispatch_us",
            "gpu_combine_us", "gpu_hook_dispatch_send_us", "gpu_hook_dispatch_recv_us", "gpu_hook_combine_send_us",
            "gpu_hook_combine_recv_us", "host_dispatch_us", "host_combine_us")
    results = [dict({k: float(i + 1) for k in keys}, rank=i, world=2) for i in range(2)]
    assert bench.summary_line(results[0]).startswith("rank 0/2: dispatch 1.0 us 1.00 GB/s")
    head, sep, row = bench.aggregate_lines(results, import_checks().parse_args([]), 2)
    assert head.count("|") == sep.count("|") == row.count("|")
    assert row.startswith("| 2 (2) | 128, 7168, 8, 288 | 1.5 / 2.0 | 1.50 / 1.00 |")
    assert row.endswith("| 1.5 / 1.5 | 1.5+1.5 / 1.5+1.5 | 1.5 / 1.5 |")


class FakeEvent:
    def __init__(self, *args, **kwargs):
        self.t = None

    def record(self, stream=None):
        import time
        self.t = time.perf_counter()

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


class FakeOverlap:
    def current_stream_wait(self):
        pass


class FakeLowLatencyBuffer:
    """Buffer.low_latency_dispatch / low_latency_combine / get_next_low_latency_combine_buffer in pure torch on
    the CPU: every call all-gathers what it needs over the default (gloo) group. Received data lands only when
    the hook runs, as with the real receive half."""

    def __init__(self, num_experts, M, hidden, bug=""):
        import torch.distributed as dist
        self.dist, self.R, self.rank = dist, dist.get_world_size(), dist.get_rank()
        self.E, self.M, self.H, self.bug = num_experts, M, hidden, bug
        self.epr = num_experts // self.R
        # Two halves of the combine send area, rows padded as the real one's are (strided view).
        self.areas = [torch.zeros(self.epr, self.R * M, hidden + 64, dtype=torch.bfloat16) for _ in range(2)]
        self.half = 0
        # As the real kernels do: the first top-k entry outside [-1, E) is recorded and skipped; the next call (or
        # the hook, after its receive half) raises it. `kernels`: the kernel names a call "launches".
        self.recorded, self.kernels = None, []
        if os.environ.get("FAKE_FLOOR") == "1":
            self._runtime = FakeFloorRuntime(self.R, self.rank)

    def _all_gather(self, obj):
        out = [None] * self.R
        self.dist.all_gather_object(out, obj)
        return out

    def _barrier(self, call: str = ""):
        self.dist.barrier()

    def raise_recorded(self):
        error, self.recorded = self.recorded, None
        if error is not None:
            raise error

    def accept_ids(self, topk_idx, step):
        """topk_idx with entries outside [-1, E) as -1, the first recorded; raises what an earlier call recorded."""
        self.raise_recorded()
        bad = ((topk_idx < -1) | (topk_idx >= self.E)).nonzero()
        if len(bad) and self.recorded is None and self.bug != "silent-id":
            t, k = (int(v) for v in bad[0])
            self.recorded = ValueError(f"{step} (send) on rank {self.rank}: topk_idx[{t}][{k}] holds expert id "
                                       f"{int(topk_idx[t, k])}; expected -1 (no expert) or an id in [0, num_experts)")
        return topk_idx.masked_fill((topk_idx < -1) | (topk_idx >= self.E), -1)

    def kernels_during(self, run):
        start = len(self.kernels)
        run()
        return self.kernels[start:]

    def gather(self, t):
        raw = t.contiguous().view(torch.uint8)
        outs = [torch.empty_like(raw) for _ in range(self.R)]
        self.dist.all_gather(outs, raw)
        return [o.view(t.dtype) for o in outs]

    def finish(self, recv, async_finish, return_recv_hook, kernel):
        assert not (async_finish and return_recv_hook)
        self.kernels.append(kernel)
        if return_recv_hook:
            def hook():
                self.kernels.append(kernel + (" recv" if self.bug == "two-kernels" else ""))
                recv()
                self.raise_recorded()
            return (FakeOverlap() if async_finish else None), hook
        recv()
        return (FakeOverlap() if async_finish else None), None

    def low_latency_dispatch(self, x, topk_idx, M, num_experts, cumulative_local_expert_recv_stats=None,
                             dispatch_wait_recv_cost_stats=None, use_fp8=True, round_scale=False, use_ue8m0=False,
                             async_finish=False, return_recv_hook=False):
        assert use_ue8m0 <= round_scale and x.dtype == torch.bfloat16
        R, epr, H = self.R, self.epr, self.H
        topk_idx = self.accept_ids(topk_idx, "low-latency dispatch")
        all_x, all_idx = self.gather(x), self.gather(topk_idx)
        exp = ref.expected_layout(all_idx, num_experts, R, self.rank, M)
        shape = (epr, R * M, H)
        data = torch.randn(shape).to(torch.float32 if use_fp8 else torch.bfloat16)  # garbage beyond the counts
        scales = None
        if use_fp8:
            g = H // (512 if use_ue8m0 else 128)
            scales = torch.zeros(epr, g, R * M, dtype=torch.int32 if use_ue8m0 else torch.float32).transpose(1, 2)
        recv_count = torch.full((epr,), -1, dtype=torch.int32)
        src_info = torch.full((epr, R * M), -1, dtype=torch.int32)
        layout_range = torch.full((epr, R), -1, dtype=torch.int64)
        self.half ^= 1

        def recv():
            counts = exp.recv_count.clone()
            if self.bug == "count" and self.rank == 1:
                counts[0] += 1
            recv_count.copy_(counts)
            layout_range.copy_(exp.layout_range())
            for e in range(epr):
                n = int(exp.recv_count[e])
                rows = torch.stack([all_x[s][t] for s, t in zip(exp.src_rank[e].tolist(), exp.src_token[e].tolist())]) \
                    if n else torch.zeros(0, H, dtype=torch.bfloat16)
                tokens = exp.src_token[e].int()
                if self.bug == "swap" and self.rank == 1 and e == 1 and n >= 2:
                    rows = rows[[1, 0] + list(range(2, n))]
                if use_fp8:
                    q, s = ref.cast_to_fp8(rows, round_scale)
                    data[e, :n] = q
                    scales[e, :n] = ref.pack_ue8m0(s) if use_ue8m0 else s
                else:
                    data[e, :n] = rows
                src_info[e, :n] = tokens
            if cumulative_local_expert_recv_stats is not None:
                cumulative_local_expert_recv_stats.add_(exp.recv_count)
            if dispatch_wait_recv_cost_stats is not None:
                dispatch_wait_recv_cost_stats.add_(torch.randint(1, 100, (R,)))

        event, hook = self.finish(recv, async_finish, return_recv_hook, "fake::dispatch(Context, DispatchArgs, Phase)")
        handle = (src_info, layout_range, M, self.H, num_experts)
        return ((data, scales) if use_fp8 else data), recv_count, handle, event, hook

    def get_next_low_latency_combine_buffer(self, handle):
        return self.areas[self.half][:, :, :self.H]

    def low_latency_combine(self, x, topk_idx, topk_weights, handle, use_logfmt=False, zero_copy=False,
                            async_finish=False, return_recv_hook=False, out=None, combine_wait_recv_cost_stats=None):
        topk_idx = self.accept_ids(topk_idx, "low-latency combine")
        y = self.areas[self.half][:, :, :self.H] if zero_copy else x
        self.half ^= 1
        y = y.clone()
        all_y, all_info, all_range = self.gather(y), self.gather(handle[0]), self.gather(handle[1])
        combined = out if out is not None else torch.empty(topk_idx.shape[0], self.H, dtype=torch.bfloat16)

        def recv():
            acc = torch.zeros(topk_idx.shape[0], self.H)
            for t in range(topk_idx.shape[0]):
                for k in range(topk_idx.shape[1]):
                    e = int(topk_idx[t, k])
                    if e < 0:
                        continue
                    owner, le = divmod(e, self.epr)
                    lr = int(all_range[owner][le, self.rank])
                    b, c = lr >> 32, lr & 0xFFFFFFFF
                    j = int((all_info[owner][le, b:b + c] == t).nonzero()[0])
                    acc[t] += float(topk_weights[t, k]) * all_y[owner][le, b + j].float()
            if self.bug == "combine" and self.rank == 0:
                acc[[0, 1]] = acc[[1, 0]]
            combined.copy_(acc.to(torch.bfloat16))
            if combine_wait_recv_cost_stats is not None:
                combine_wait_recv_cost_stats.add_(torch.randint(1, 100, (self.R,)))

        event, hook = self.finish(recv, async_finish, return_recv_hook, "fake::combine(Context, CombineArgs, Phase)")
        return combined, event, hook


class FakeFloorRuntime:
    """The transport-floor part of _C.Runtime for FakeLowLatencyBuffer: real plans (_C.low_latency_floor_plan, one
    rank per node), runs that take a time from the plan's size, and a check of the collective order."""

    def __init__(self, R, rank):
        sys.path.insert(0, os.path.join(REPO, "python"))
        import uccl.ep as ep
        self.native, self.R, self.rank, self.state = ep._C, R, rank, "new"

    def transport_name(self):
        return "fake/loopback"

    def check_errors(self):
        pass

    def transport_floor_info(self):
        assert self.state == "new"
        self.state = "opened"
        return b"rank%d" % self.rank

    def transport_floor_connect(self, infos):
        assert self.state == "opened" and infos == [b"rank%d" % r for r in range(self.R)]
        self.state = "connected"

    def low_latency_floor_plan(self, num_max_dispatch_tokens_per_rank, hidden, num_experts, call, counts):
        layout = self.native.low_latency_layout(num_max_dispatch_tokens_per_rank, hidden, self.R, num_experts)
        return self.native.low_latency_floor_plan(layout=layout, call=call, rank=self.rank, counts=counts,
                                                  proxy_peers=[p != self.rank for p in range(self.R)], num_rings=2,
                                                  num_threads=1)

    def transport_floor_run(self, plan):
        assert self.state == "connected" and plan.expect
        return types.SimpleNamespace(seconds=1e-6 * (10 + len(plan.ops)), sends_seconds=1e-6)

    def transport_floor_close(self):
        assert self.state == "connected"
        self.state = "closed"


def fake_rank_main(argv):
    """One rank of the low-latency checks, then of the bench, against FakeLowLatencyBuffer (run through
    scripts/launch.py)."""
    import torch.distributed as dist
    import rank_group
    checks, bench = import_checks(), import_bench()
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.Event = FakeEvent
    checks.FP8_DTYPES = checks.FP8_DTYPES + (torch.float32,)  # the stand-in's FP8 values travel as float32
    checks.capture_graph = lambda fn: fn  # "replay" runs the calls again
    args = bench.parse_args(argv)  # the checks' flags and the bench's
    d = rank_group.dist_env()
    dist.init_process_group("gloo", init_method="env://", rank=d.rank, world_size=d.world)
    buf = FakeLowLatencyBuffer(args.num_experts, args.num_tokens, args.hidden, os.environ.get("FAKE_BUG", ""))
    checks.launched_kernel_names = buf.kernels_during  # no profiler on the CPU: the names the stand-in "launched"

    def kernel_launches(body, iters):  # the bench's profiler section: 1 us per launch the stand-in made, in order
        names = buf.kernels_during(lambda: [body() for _ in range(iters)])
        return {kind: [1.0 for n in names if f"::{kind}(" in n] for kind in ("dispatch", "combine")}
    bench.kernel_launches = kernel_launches
    chk = checks.Checker(args, None, buf, d, torch.device("cpu"))
    checks.run_all(args, d, chk)
    bench.run_all(args, d, chk, d.local_world)
    dist.barrier()
    dist.destroy_process_group()


def run_fake_bench(bug, *bench_args, floor=False):
    import subprocess
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", FAKE_BUG=bug, FAKE_FLOOR="1" if floor else "0")
    cmd = [sys.executable, LAUNCH, "--nproc", "2", "--timeout", "300", "--", os.path.abspath(__file__), "--fake-rank",
           "--num-tokens", "8", "--hidden", "512", "--num-topk", "3", "--num-experts", "8", "--num-masked", "3",
           "--bench-iters", "3", "--bench-warmup", "1", "--graph-replays", "2", *bench_args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)


def test_bench_flow_against_fake_buffer():
    r = run_fake_bench("")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "[rank 0] all checks passed" in r.stdout
    assert "[rank 0] checks: 24 dispatch x 8 combine option combinations" in r.stdout
    assert "ok two calls outstanding" in r.stdout and "ok CUDA graph: 2 replays" in r.stdout
    assert "ok kernel names" in r.stdout and "ok bad expert ids" in r.stdout
    assert "[rank 1] rank 1/2: dispatch" in r.stdout
    assert "[rank 0] | 2 (2) | 8, 512, 3, 8 |" in r.stdout
    assert "GPU (profiler): dispatch 1.0 combine 1.0 us, hook send+recv 1.0+1.0 / 1.0+1.0 us" in r.stdout


def test_bench_writes_its_figures_as_json_against_fake_buffer(tmp_path):
    import bench_json
    path = tmp_path / "ll.json"
    r = run_fake_bench("", "--only", "kernel-names", "--use-logfmt", "--json", str(path))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert f"[rank 0] figures written to {path}" in r.stdout
    records = bench_json.read(str(path))
    assert [(x["call"], x["dtype"]) for x in records] == [("dispatch", "fp8"), ("combine", "logfmt"),
                                                          ("dispatch+combine", "fp8+logfmt")]
    for x in records:
        assert (x["bench"], x["mode"], x["num_ranks"], x["ranks_per_node"]) == ("test_low_latency", "low_latency", 2, 2)
        assert (x["tokens"], x["hidden"], x["topk"], x["experts"]) == (8, 512, 3, 8)
        assert x["params"]["use_logfmt"] is True and x["latency_us"] > 0
    assert records[1]["figures"]["gpu_us"] == 1.0  # the stand-in's profiler: 1 us a launch


def test_bench_prints_the_transport_floor_against_fake_buffer(native):
    r = run_fake_bench("", "--only", "kernel-names", "--nvlink-us", "1.5,2.5", floor=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "[rank 1] rank 1/2: dispatch" in r.stdout and " | floor: dispatch 1" in r.stdout
    assert "[rank 0] transport floor over fake/loopback" in r.stdout
    assert "[rank 0] | dispatch | " in r.stdout and " | 1.5 | " in r.stdout
    assert "[rank 0] | combine | " in r.stdout and " | 2.5 | " in r.stdout


@pytest.mark.parametrize("bug,message", [
    ("swap", "[rank 1] dispatch(bf16) #0, local expert 1 (global 5): row 0: from (rank"),
    ("count", "[rank 1] dispatch(bf16) #0: recv_count"),
    ("combine", "[rank 0] dispatch(bf16) #0 + combine(plain): calc_diff"),
    ("silent-id", "[rank 0] bad expert id 8 in dispatch: expected ArgumentError naming expert id 8 on rank 0"),
    ("two-kernels", "kernel names: expected one kernel name holding 'dispatch'"),
])
def test_bench_catches_a_wrong_buffer(bug, message):
    r = run_fake_bench(bug, "--no-bench")
    assert r.returncode != 0
    assert message in r.stdout, r.stdout[-4000:]
    assert "launch.py: failed: rank" in r.stderr


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--fake-rank":
    fake_rank_main(sys.argv[2:])
