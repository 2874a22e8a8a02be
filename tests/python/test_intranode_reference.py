"""bench/intranode_reference.py on the CPU (layout, dispatch and combine references against brute force and hand
cases, FP8 e4m3 bytes, the encoded rows through every x mode), and the CPU-only parts of
tests/python/gpu/intranode_checks.py (arguments, the case matrix) and bench/test_intranode.py (the report)."""
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.path.insert(0, os.path.join(REPO, "tests", "python", "gpu"))

import intranode_reference as ref  # noqa: E402
import ll_reference as llref  # noqa: E402


def random_topk(gen, tokens, k, experts, masked):
    idx = torch.stack([torch.randperm(experts, generator=gen)[:k] for _ in range(tokens)]) if tokens else \
        torch.zeros(0, k, dtype=torch.int64)
    if masked and tokens:
        pos = torch.randperm(tokens * k, generator=gen)[:masked]
        idx.view(-1)[pos] = -1
    return idx


# ---------------------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------------------
def test_layout_hand_case():
    idx = torch.tensor([[0, 5, -1], [3, 2, 1], [-1, -1, -1], [7, 6, 4]])
    lay = ref.layout(idx, 8, 4, ranks_per_node=2)
    assert lay.is_token_in_rank.tolist() == [[True, False, True, False], [True, True, False, False],
                                             [False] * 4, [False, False, True, True]]
    assert lay.tokens_per_rank.tolist() == [2, 1, 2, 1] and lay.tokens_per_rank.dtype == torch.int32
    assert lay.tokens_per_expert.tolist() == [1] * 8 and lay.tokens_per_expert.dtype == torch.int32
    assert lay.tokens_per_node.tolist() == [2, 2]
    assert ref.layout(idx, 8, 4).tokens_per_node is None
    assert ref.layout(idx, 8, 4, ranks_per_node=4).tokens_per_node is None
    with pytest.raises(ValueError, match="multiple"):
        ref.layout(idx, 9, 4)


@pytest.mark.parametrize("seed", range(8))
def test_layout_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    R = int(torch.randint(1, 7, (1,), generator=gen))
    E = R * int(torch.randint(1, 5, (1,), generator=gen))
    K = int(torch.randint(1, min(E, 6) + 1, (1,), generator=gen))
    T = int(torch.randint(0, 20, (1,), generator=gen))
    rpn = int(torch.randint(1, R + 1, (1,), generator=gen))
    idx = random_topk(gen, T, K, E, masked=min(T * K, 7))
    lay = ref.layout(idx, E, R, ranks_per_node=rpn)
    epr = E // R
    in_rank = [[any(e >= 0 and e // epr == r for e in row) for r in range(R)] for row in idx.tolist()]
    assert lay.is_token_in_rank.tolist() == in_rank and lay.is_token_in_rank.is_contiguous()
    assert lay.tokens_per_rank.tolist() == [sum(row[r] for row in in_rank) for r in range(R)]
    assert lay.tokens_per_expert.tolist() == [sum(row.count(e) for row in idx.tolist()) for e in range(E)]
    if rpn < R:
        nodes = (R + rpn - 1) // rpn
        want = [sum(any(row[n * rpn:(n + 1) * rpn]) for row in in_rank) for n in range(nodes)]
        assert lay.tokens_per_node.tolist() == want


# ---------------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------------
def test_send_positions_and_prefix_hand_case():
    a = torch.tensor([[True, False], [True, True], [False, True]])
    b = torch.tensor([[False, True], [True, True]])
    assert ref.send_positions(a).tolist() == [[0, -1], [1, 0], [-1, 1]]
    assert ref.prefix_matrix([a, b]).tolist() == [[2, 2], [3, 4]]
    exp = ref.dispatch_expected([a, b], 1, 4, all_tokens_per_expert=[torch.tensor([1, 2, 3, 4])] * 2)
    assert list(zip(exp.src_rank.tolist(), exp.src_token.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 1)]
    assert exp.block(0) == slice(0, 2) and exp.block(1) == slice(2, 4)
    assert exp.tokens_per_expert.tolist() == [6, 8] and exp.per_expert_list(4) == [8, 8]
    assert exp.recv_topk_idx is None and exp.recv_topk_weights is None
    with pytest.raises(ValueError, match="per-expert"):
        ref.dispatch_expected([a, b], 0, 4)


@pytest.mark.parametrize("seed", range(8))
def test_dispatch_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    R = int(torch.randint(1, 6, (1,), generator=gen))
    epr = int(torch.randint(1, 4, (1,), generator=gen))
    E = R * epr
    K = int(torch.randint(1, min(E, 5) + 1, (1,), generator=gen))
    all_idx, all_w = [], []
    for _ in range(R):
        T = int(torch.randint(0, 12, (1,), generator=gen))  # ranks send different counts, even none
        all_idx.append(random_topk(gen, T, K, E, masked=min(T * K, 4)))
        all_w.append(torch.rand(T, K, generator=gen))
    all_in_rank = [ref.token_ranks(i, E, R) for i in all_idx]
    for rank in range(R):
        exp = ref.dispatch_expected(all_in_rank, rank, E, all_idx, all_w)
        rows = ref.brute_force_rows(all_in_rank, rank)
        assert list(zip(exp.src_rank.tolist(), exp.src_token.tolist())) == rows
        assert exp.num_recv == len(rows) == int(exp.rank_prefix_matrix[-1, rank])
        for s in range(R):
            blk = exp.block(s)
            assert all(r == s for r in exp.src_rank[blk].tolist())
            assert blk.stop - blk.start == int(all_in_rank[s][:, rank].sum())
        for i, (s, t) in enumerate(rows):
            # send_pos of the source says where the row lands among the rows from that source
            assert int(exp.send_pos[s][t, rank]) == i - exp.block(s).start
            for k in range(K):
                e = int(all_idx[s][t, k])
                local = e - rank * epr if e >= 0 and e // epr == rank else -1
                assert int(exp.recv_topk_idx[i, k]) == local
                assert float(exp.recv_topk_weights[i, k]) == (float(all_w[s][t, k]) if local >= 0 else 0.0)
        want = [sum(int((i == rank * epr + e).sum()) for i in all_idx) for e in range(epr)]
        assert exp.tokens_per_expert.tolist() == want
        assert [int((exp.recv_topk_idx == e).sum()) for e in range(epr)] == want  # distinct experts per token


# ---------------------------------------------------------------------------------------------------------------
# Combine
# ---------------------------------------------------------------------------------------------------------------
def test_combine_hand_case():
    in_rank = torch.tensor([[True, True], [False, True], [False, False]])
    returned = {0: torch.full((3, 2), 1.0), 1: torch.full((3, 2), 10.0)}
    bias = torch.ones(3, 2, dtype=torch.bfloat16)
    out = ref.combine_expected(in_rank, lambda r: returned[r], [bias, None])
    assert out.tolist() == [[12.0, 12.0], [11.0, 11.0], [1.0, 1.0]]
    with pytest.raises(ValueError):
        ref.combine_expected(torch.zeros(2, 2, dtype=torch.bool), lambda r: None)
    idx = torch.tensor([[0, 3], [2, -1], [-1, -1]])
    w = torch.tensor([[0.5, 0.25], [2.0, 9.0], [1.0, 1.0]])
    in_rank = ref.token_ranks(idx, 4, 2)
    got = ref.combine_weights_expected(in_rank, idx, w, 4, lambda r: 1 + r)
    assert got.tolist() == [[0.5, 0.5], [4.0, 0.0], [0.0, 0.0]]


# ---------------------------------------------------------------------------------------------------------------
# FP8 bytes and the row encoding
# ---------------------------------------------------------------------------------------------------------------
def test_e4m3_codes_round_trip():
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    v = ref.e4m3_to_float(codes)
    nan = torch.isnan(v)
    assert nan.nonzero().flatten().tolist() == [0x7F, 0xFF]
    assert torch.equal(ref.float_to_e4m3(v[~nan]), codes[~nan])
    assert float(v[0x7E]) == 448.0 and float(v[0x01]) == 2.0 ** -9 and float(v[0x08]) == 2.0 ** -6
    assert float(v[0x38]) == 1.0 and float(v[0xB8]) == -1.0
    # Values between codes round to nearest (even), like the cast; beyond the range they saturate.
    assert ref.float_to_e4m3(torch.tensor([1.0625, 1.1875, 1000.0, -1e-9])).tolist() == [0x38, 0x3A, 0x7E, 0x80]


@pytest.mark.skipif(getattr(torch, "float8_e4m3fn", None) is None, reason="torch has no float8_e4m3fn")
def test_e4m3_codes_match_torch():
    v = torch.randn(4096) * 50
    assert torch.equal(ref.float_to_e4m3(v), v.to(torch.float8_e4m3fn).view(torch.uint8))
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    a, b = ref.e4m3_to_float(codes), codes.view(torch.float8_e4m3fn).float()
    assert torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a[~torch.isnan(a)], b[~torch.isnan(b)])


@pytest.mark.parametrize("ue8m0", [False, True])
def test_fp8_rows_decode(ue8m0):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(9, 1024, generator=gen).to(torch.bfloat16)
    llref.encode_rows(x, 5)
    f = ref.cast_rows_fp8(x, ue8m0)
    assert f.codes.dtype == torch.uint8 and f.scales.dtype == (torch.int32 if ue8m0 else torch.float32)
    assert f.scales.shape == (9, 2 if ue8m0 else 8)
    assert llref.calc_diff(f.dequantize(), x.float()) < 1e-3
    for scales in (f.scales, f.scales.t().contiguous().t()):
        r, t, ok = llref.decode_rows(ref.head_as_float(f.codes, scales))
        assert bool(ok.all()) and set(r.tolist()) == {5} and t.tolist() == list(range(9))
    r, t, ok = llref.decode_rows(ref.head_as_float(x, None))
    assert bool(ok.all()) and t.tolist() == list(range(9))
    assert ref.row_bytes(x).shape == (9, 2048) and torch.equal(ref.row_bytes(x).view(torch.bfloat16), x)


# ---------------------------------------------------------------------------------------------------------------
# tests/python/gpu/intranode_checks.py: arguments, cases; bench/test_intranode.py: report
# ---------------------------------------------------------------------------------------------------------------
BENCH = os.path.join(REPO, "bench", "test_intranode.py")


def import_bench():
    import test_intranode as bench  # bench/ is on sys.path
    return bench


def import_checks():
    import intranode_checks as checks  # tests/python/gpu/ is on sys.path
    return checks


def test_bench_help_and_args():
    r = subprocess.run([sys.executable, BENCH, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--num-experts" in r.stdout and "--skip-bench" in r.stdout
    checks = import_checks()
    a = checks.parse_args([])
    assert (a.num_tokens, a.hidden, a.num_topk, a.num_experts, a.num_sms, a.nvl_bytes) == (4096, 7168, 8, 256, [24],
                                                                                           int(1e9))
    assert a.chunks == [4, 8, 12, 16, 20, 24, 28, 32] and not a.quick and not import_bench().parse_args([]).no_bench
    assert checks.parse_args(["--num-sms", "16,24", "--chunks", "6"]).num_sms == [16, 24]
    for bad in (["--hidden", "100"], ["--num-topk", "17", "--num-experts", "64"], ["--num-sms", "23"],
                ["--chunks", "4,x"], ["--chunks", "300"], ["--nvl-bytes", "100"], ["--num-sms", "0"]):
        with pytest.raises(SystemExit):
            checks.parse_args(bad)


def test_bench_tokens_per_rank():
    checks = import_checks()
    a = checks.parse_args(["--num-tokens", "4096"])
    assert [checks.tokens_for(a, r) for r in range(6)] == [4096, 4032, 3968, 3904, 4096, 4032]
    assert checks.tokens_for(checks.parse_args(["--num-tokens", "2"]), 3) == 1
    assert checks.tokens_for(checks.parse_args(["--same-tokens"]), 3) == 4096


def test_bench_case_matrix():
    checks = import_checks()
    full = checks.cases(7168, quick=False)
    assert len(full) == 5 * 2 * 4 and len(set(full)) == len(full)
    assert {c.x_mode for c in full} == set(checks.X_MODES)
    assert all(c.previous and c.async_finish for c in full if c.alloc_on_comm)
    for mode in checks.X_MODES:
        for topk in (False, True):
            sub = [c for c in full if c.x_mode == mode and c.with_topk == topk]
            assert {(c.async_finish, c.previous, c.alloc_on_comm) for c in sub} == set(checks.STREAM_MODES)
    assert any(c.worst and c.with_topk for c in full) and any(c.worst and not c.with_topk for c in full)
    assert {c.expert_alignment for c in full} == {1, 4, 128} and {c.num_biases for c in full} == {0, 1, 2}
    assert {c.chunk for c in full} == {0, 4, 8, 12, 32}
    quick = checks.cases(7168, quick=True)
    assert {c.x_mode for c in quick} == set(checks.X_MODES) and len(quick) == 6
    assert any(c.worst and c.with_topk for c in quick) and any(c.worst and not c.with_topk for c in quick)
    assert any(c.alloc_on_comm for c in quick) and {c.num_biases for c in quick} == {0, 1, 2}
    assert not any(c.x_mode == "fp8_ue8m0" for c in checks.cases(640, quick=False))  # 640 % 512 != 0
    assert {c.x_mode for c in checks.cases(7168, quick=False, have_fp8=False)} == {"bf16", "bf16_strided"}
    assert str(full[0]) == "bf16, align 1, bias 0, chunk default"
    assert str(quick[3]) == "fp8_colmajor+topk+async+previous+alloc_on_comm, align 1, bias 0, chunk 12"


def test_bench_report():
    bench = import_bench()
    from rank_group import Dist
    args = import_checks().parse_args(["--num-tokens", "64", "--hidden", "256", "--num-topk", "2", "--num-experts", "8"])
    d = Dist(rank=0, world=2, local_rank=0, local_world=2)

    def result(scale, peer=0.0):
        times = {(24, 4): (2e-3 * scale, 1e6), (24, 8): (1e-3 * scale, 1e6), "default": (4e-3, 1e6)}
        return {"copy_gbs": 100.0, "peer_copy_gbs": peer, ("dispatch", "BF16"): times, ("combine", "BF16"): dict(times)}

    # With the GPU-to-GPU reference (rank 0's figure), every figure is also given as a fraction of it.
    lines, _ = bench.report(args, [result(1.0, peer=2.5), result(2.0)], d)
    assert "[copy] GPU-to-GPU copy_ (each GPU to the next, all at once): 2.5 GB/s per GPU" in lines
    assert "[tuning] dispatch BF16 SMs 24, chunk 4: 0.38 GB/s per rank (mean, 0.004 of copy, 0.150 of GPU-to-GPU " \
        "copy), slowest rank 4000.0 us" in lines
    assert lines[-2].endswith("| 100.0 | 0.007 | 2.5 | 0.300 |")

    lines, rows = bench.report(args, [result(1.0), result(2.0)], d)
    assert not any("GPU-to-GPU" in line for line in lines[:-4])
    assert "[copy] device-to-device copy_: 100.0 GB/s per rank" in lines[0]
    assert "[tuning] dispatch BF16 SMs 24, chunk 4: 0.38 GB/s per rank (mean, 0.004 of copy), slowest rank 4000.0 us" \
        in lines
    assert "[tuning] best dispatch BF16: SMs 24, chunk 8: 0.75 GB/s per rank, 0.007 of the copy rate" in lines
    head, sep, row = lines[-4:-1]
    assert head.count("|") == sep.count("|") == row.count("|")
    assert row == ("| dispatch | BF16 | 2 | 64 x 256, top-2 of 8 | SMs 24, chunk 8 | 0.75 / 0.50 | 2000.0 | 100.0 | 0.007 | "
                   "- | - |")
    assert lines[-1].startswith("| combine | BF16 | 2 |")
    assert bench.best_config([{(2, 4): (3, 1), (2, 8): (1, 1), "default": (0, 1)},
                              {(2, 4): (3, 1), (2, 8): (5, 1), "default": (0, 1)}]) == (2, 4)

    # The same rows as --json records: one per (call, dtype) at its best config, the copy rate as reference.
    import bench_json
    records = bench.json_records(args, rows, ranks_per_node=1)
    assert [(x["call"], x["dtype"]) for x in records] == [("dispatch", "bf16"), ("combine", "bf16")]
    for x in records:
        bench_json.validate(x)
        assert (x["bench"], x["mode"], x["num_ranks"], x["ranks_per_node"]) == ("test_intranode", "normal", 2, 1)
        assert (x["tokens"], x["hidden"], x["topk"], x["experts"]) == (64, 256, 2, 8)
        assert x["params"]["num_sms"] == 24 and x["params"]["chunk"] == 8
        assert x["latency_us"] == pytest.approx(2000.0) and x["bandwidth_gbs"] == pytest.approx(0.75)
        assert x["figures"] == {"bandwidth_gbs_min": pytest.approx(0.5)}
        assert x["reference"] == bench_json.reference("device-to-device copy_", bandwidth_gbs=100.0)
