#!/usr/bin/env python3
"""Low-latency dispatch/combine: exact correctness checks over every option combination, DeepEP's
tests/test_low_latency.py for uccl.ep. One rank of a multi-rank run (tests/python/gpu/test_low_latency_gpu.py runs
it through pytest; bench/test_low_latency.py prints the figures and takes the same flags):

    python scripts/launch.py --nproc 8 -- tests/python/gpu/low_latency_checks.py --num-tokens 128 --hidden 7168 \
        --num-topk 8 --num-experts 288
    torchrun --nproc_per_node 8 tests/python/gpu/low_latency_checks.py ...

Every rank sends rows that carry their source rank and token index in their first 128 channels (signs of +-1,
exact through BF16 and FP8; see ll_reference.encode_rows) and random normal values elsewhere, so each received
row is checked exactly: recv_count, the (source rank, token) of every row in uccl-ep's order (source rank,
then token), src_info, layout_range, the FP8 scales, the statistics tensors. Combine is checked against the
top-k-weighted sum of what the (identity) experts returned, with DeepEP's calc_diff thresholds:
1e-5 for a BF16 dispatch with the plain BF16 combine, 9e-4 once FP8 or the 10-bit log format (use_logfmt) is in
the path (logfmt keeps about 1% relative precision per value; calc_diff of such errors is ~1e-5 to 1e-4).
Then two calls outstanding at once, and dispatch + combine captured in a CUDA graph and replayed on new inputs.
Any failed check raises AssertionError naming the rank, the local expert and the option combination, so the
launcher fails; rank 0 prints "all checks passed" at the end.
"""
import argparse
import itertools
import os
import sys
from dataclasses import dataclass
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The pure-torch references stay in bench/: the fault benches and the figures use them too.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "bench"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import ll_floor  # noqa: E402
import ll_reference as ref  # noqa: E402
from rank_group import Dist, all_gather_tensor, dist_env, fail, import_ep, join_group, log0, topology_line, \
    watch_buffer  # noqa: E402

BF16_DIFF = 1e-5
FP8_DIFF = 9e-4
LOGFMT_DIFF = 9e-4
# Element types an FP8 dispatch may return (e4m3fnuz on AMD MI300).
FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e4m3fnuz") if hasattr(torch, n))


# ---------------------------------------------------------------------------------------------------------------
# Arguments and options (CPU only; tested in tests/python/test_ll_reference.py)
# ---------------------------------------------------------------------------------------------------------------
ONLY = {
    "kernel-names": "one kernel named *dispatch* and one named *combine*, launched again by the receive hooks",
    "bad-expert-ids": "a top-k id outside [-1, num_experts) is skipped, the next call raises naming it and the "
                      "rank, and the buffer works afterwards",
}


def build_parser() -> argparse.ArgumentParser:
    """The shape and check flags; bench/test_low_latency.py adds its own (bench/bench_flags.py) to the same parser."""
    p = argparse.ArgumentParser(description="uccl.ep low-latency dispatch/combine: the checks "
                                "(tests/python/gpu/low_latency_checks.py) and the figures (bench/test_low_latency.py) "
                                "take the same flags. Run under scripts/launch.py or torchrun (reads RANK, WORLD_SIZE, "
                                "LOCAL_RANK).")
    p.add_argument("--num-tokens", type=int, default=128, help="tokens per rank (also num_max_dispatch_tokens_per_rank)")
    p.add_argument("--hidden", type=int, default=7168)
    p.add_argument("--num-topk", type=int, default=8)
    p.add_argument("--num-experts", type=int, default=288)
    p.add_argument("--num-masked", type=int, default=10, help="top-k entries set to -1 per rank")
    p.add_argument("--quick", action="store_true", help="a reduced option matrix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bench-warmup", type=int, default=10)
    p.add_argument("--bench-iters", type=int, default=50)
    p.add_argument("--graph-replays", type=int, default=4)
    p.add_argument("--nvlink-us", default=None, metavar="DISPATCH,COMBINE",
                   help="bench: the NVLink-path time of each call in us (this bench with every rank on one node), for "
                   "the ratio measured / (transport floor + NVLink-path time) between emulated nodes")
    p.add_argument("--no-floor", action="store_true", help="bench: skip the transport floor between emulated nodes")
    p.add_argument("--only", choices=ONLY, default=None,
                   help="run one group of checks: " + "; ".join(f"{k}: {v}" for k, v in ONLY.items()))
    return p


def check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> argparse.Namespace:
    """p.error for values no run can take; returns a."""
    if a.hidden % 128 or a.hidden < 128:
        p.error(f"--hidden must be a positive multiple of 128, got {a.hidden}")
    if a.num_tokens < 1 or a.num_topk < 1 or a.num_topk > a.num_experts:
        p.error("need --num-tokens >= 1 and 1 <= --num-topk <= --num-experts")
    if a.bench_iters < 1 or a.bench_warmup < 0:
        p.error("need --bench-iters >= 1 and --bench-warmup >= 0")
    try:
        ll_floor.parse_nvlink_us(a.nvlink_us)
    except ValueError as e:
        p.error(str(e))
    return a


def parse_args(argv=None):
    p = build_parser()
    return check_args(p, p.parse_args(argv))


@dataclass(frozen=True)
class DispatchOptions:
    use_fp8: bool
    round_scale: bool
    use_ue8m0: bool
    return_recv_hook: bool
    async_finish: bool
    with_stats: bool

    def __str__(self):
        on = [n for n in ("use_fp8", "round_scale", "use_ue8m0", "return_recv_hook", "async_finish", "with_stats")
              if getattr(self, n)]
        return "dispatch(" + (",".join(on) or "bf16") + ")"


@dataclass(frozen=True)
class CombineOptions:
    use_logfmt: bool
    zero_copy: bool
    with_out: bool

    def __str__(self):
        on = [n for n in ("use_logfmt", "zero_copy", "with_out") if getattr(self, n)]
        return "combine(" + (",".join(on) or "plain") + ")"


def fp8_modes(hidden: int):
    """(use_fp8, round_scale, use_ue8m0) combinations: UE8M0 needs FP8, round_scale and hidden % 512 == 0."""
    modes = [(False, False, False)]
    for rs in (False, True):
        modes.append((True, rs, False))
        if rs and hidden % 512 == 0:
            modes.append((True, True, True))
    return modes


def dispatch_options(hidden: int, quick: bool) -> List[DispatchOptions]:
    if quick:
        fp8 = fp8_modes(hidden)
        return [DispatchOptions(*fp8[0], return_recv_hook=False, async_finish=False, with_stats=True),
                DispatchOptions(*fp8[1], return_recv_hook=True, async_finish=False, with_stats=False),
                DispatchOptions(*fp8[-1], return_recv_hook=False, async_finish=True, with_stats=True)]
    out = []
    for mode in fp8_modes(hidden):
        for hook, async_finish in ((False, False), (False, True), (True, False)):
            for stats in (False, True):
                out.append(DispatchOptions(*mode, return_recv_hook=hook, async_finish=async_finish, with_stats=stats))
    return out


def combine_options(quick: bool) -> List[CombineOptions]:
    if quick:
        return [CombineOptions(False, False, False), CombineOptions(False, True, True), CombineOptions(True, False, True)]
    return [CombineOptions(*c) for c in itertools.product((False, True), repeat=3)]


def combine_threshold(d: DispatchOptions, c: CombineOptions) -> float:
    if d.use_fp8:
        return FP8_DIFF
    return LOGFMT_DIFF if c.use_logfmt else BF16_DIFF


# ---------------------------------------------------------------------------------------------------------------
# GPU part
# ---------------------------------------------------------------------------------------------------------------
class Checker:
    def __init__(self, args, ep, buffer, d: Dist, device):
        self.args, self.ep, self.buffer, self.d, self.device = args, ep, buffer, d, device
        watch_buffer(buffer)
        self.R, self.E, self.M = d.world, args.num_experts, args.num_tokens
        self.E_local = self.E // self.R
        self.cum_stats = torch.zeros(self.E_local, dtype=torch.int32, device=device)
        self.cum_expected = torch.zeros(self.E_local, dtype=torch.int64)
        self.wait_stats = torch.zeros(self.R, dtype=torch.int64, device=device)
        self.wait_prev = torch.zeros(self.R, dtype=torch.int64)
        self.cwait_stats = torch.zeros(self.R, dtype=torch.int64, device=device)
        self.cwait_prev = torch.zeros(self.R, dtype=torch.int64)
        self.inputs = {}

    def add_inputs(self, name, seed):
        """x, topk_idx, topk_weights on the GPU, every rank's x and topk_idx, and the expected layout here."""
        a = self.args
        gen = torch.Generator().manual_seed(seed * 100003 + self.d.rank)
        x, idx, w = ref.make_inputs(self.d.rank, a.num_tokens, a.hidden, self.E, a.num_topk, gen, a.num_masked)
        return self.set_inputs(name, x.to(self.device), idx.to(self.device), w.to(self.device))

    def set_inputs(self, name, x, idx, w):
        """Collective: inputs `name` from this rank's x, topk_idx and topk_weights (on the GPU)."""
        all_x = torch.stack(all_gather_tensor(x)).float()  # [R, T, hidden]
        all_idx = [i.cpu() for i in all_gather_tensor(idx)]
        exp = ref.expected_layout(all_idx, self.E, self.R, self.d.rank, self.M)
        self.inputs[name] = dict(x=x, topk_idx=idx, topk_weights=w, all_x=all_x, expected=exp, scales={})
        return self.inputs[name]

    def ref_scales(self, inp, round_scale):
        if round_scale not in inp["scales"]:
            inp["scales"][round_scale] = ref.fp8_scales(inp["all_x"], round_scale)  # [R, T, hidden/128]
        return inp["scales"][round_scale]

    # -- dispatch ------------------------------------------------------------------------------------------------
    def dispatch(self, inp, o: DispatchOptions):
        return self.buffer.low_latency_dispatch(
            inp["x"], inp["topk_idx"], self.M, self.E,
            cumulative_local_expert_recv_stats=self.cum_stats if o.with_stats else None,
            dispatch_wait_recv_cost_stats=self.wait_stats if o.with_stats else None,
            use_fp8=o.use_fp8, round_scale=o.round_scale, use_ue8m0=o.use_ue8m0,
            async_finish=o.async_finish, return_recv_hook=o.return_recv_hook)

    @staticmethod
    def finish(o, event, hook):
        if o.return_recv_hook:
            if hook is None:
                raise AssertionError("return_recv_hook=True returned no hook")
            hook()
        elif o.async_finish:
            event.current_stream_wait()

    def split_recv(self, recv_x, o: DispatchOptions, ctx):
        """(data, scales or None) after checking dtypes, shapes and the scales' column-major layout."""
        shape = (self.E_local, self.R * self.M, self.args.hidden)
        if not o.use_fp8:
            if not isinstance(recv_x, torch.Tensor) or recv_x.dtype != torch.bfloat16 or tuple(recv_x.shape) != shape:
                fail(ctx, f"recv_x: expected BF16 {shape}, got {getattr(recv_x, 'dtype', type(recv_x))} "
                          f"{tuple(getattr(recv_x, 'shape', ()))}")
            return recv_x, None
        data, scales = recv_x
        if data.dtype not in FP8_DTYPES or tuple(data.shape) != shape:
            fail(ctx, f"recv_x[0]: expected FP8 {shape}, got {data.dtype} {tuple(data.shape)}")
        groups = self.args.hidden // (512 if o.use_ue8m0 else 128)
        sdtype = torch.int32 if o.use_ue8m0 else torch.float32
        if scales.dtype != sdtype or tuple(scales.shape) != shape[:2] + (groups,):
            fail(ctx, f"scales: expected {sdtype} {shape[:2] + (groups,)}, got {scales.dtype} {tuple(scales.shape)}")
        if scales.stride(-2) != 1:
            fail(ctx, f"scales: expected column-major in the last two dims, strides {scales.stride()}")
        return data, scales

    @staticmethod
    def rows_of(data, scales, e, n):
        """Rows [0, n) of local expert e as float32, and their float scales (FP8)."""
        if scales is None:
            return data[e, :n].float(), None
        s = scales[e, :n]
        s = ref.unpack_ue8m0(s) if s.dtype == torch.int32 else s.float()
        return ref.dequantize(data[e, :n], s), s

    def check_dispatch(self, inp, o: DispatchOptions, out, ctx):
        recv_x, recv_count, handle, event, hook = out
        torch.cuda.synchronize()
        exp = inp["expected"]
        if len(handle) != 5 or handle[2:] != (self.M, self.args.hidden, self.E):
            fail(ctx, f"handle: expected (src_info, layout_range, {self.M}, {self.args.hidden}, {self.E}), got "
                      f"{[type(h).__name__ for h in handle]} {handle[2:]}")
        src_info, layout_range = handle[0], handle[1]
        count = recv_count.cpu().long()
        if recv_count.dtype != torch.int32 or not torch.equal(count, exp.recv_count.long()):
            fail(ctx, f"recv_count {count.tolist()} ({recv_count.dtype}), expected {exp.recv_count.tolist()}")
        try:
            ref.check_layout_range(layout_range, src_info, recv_count, exp, context=ctx)
        except AssertionError as e:
            raise AssertionError(f"[rank {self.d.rank}] {e}") from None
        data, scales = self.split_recv(recv_x, o, ctx)
        # What the identity expert returns: the received rows in BF16; NaN beyond recv_count, which combine
        # must never read.
        y = torch.full(data.shape, float("nan"), dtype=torch.bfloat16, device=self.device)
        all_x = inp["all_x"]
        src_info_c = src_info.cpu().long()
        for e in range(self.E_local):
            n = int(count[e])
            if n == 0:
                continue
            where = f"{ctx}, local expert {e} (global {self.d.rank * self.E_local + e})"
            rows, got_scales = self.rows_of(data, scales, e, n)
            y[e, :n] = rows.to(torch.bfloat16)
            r, t, ok = ref.decode_rows(rows)
            if not bool(ok.all()):
                bad = int((~ok).nonzero()[0])
                fail(where, f"row {bad} of {n} is not a well-formed row (first channels "
                            f"{rows[bad, :12].tolist()}); src_info says token {int(src_info_c[e, bad])}")
            r, t = r.cpu(), t.cpu()
            if not (torch.equal(r, exp.src_rank[e]) and torch.equal(t, exp.src_token[e])):
                i = int(((r != exp.src_rank[e]) | (t != exp.src_token[e])).nonzero()[0])
                fail(where, f"row {i}: from (rank {int(r[i])}, token {int(t[i])}), expected (rank "
                            f"{int(exp.src_rank[e][i])}, token {int(exp.src_token[e][i])}) (order: source rank, token)")
            if not torch.equal(src_info_c[e, :n], t):
                fail(where, "src_info does not name the token each row carries")
            src_rows = all_x[exp.src_rank[e].to(all_x.device), exp.src_token[e].to(all_x.device)]
            if not o.use_fp8:
                if not torch.equal(rows, src_rows):
                    fail(where, "BF16 rows differ from the source rows")
                continue
            # FP8: scales as the reference computes them, and values close to the source.
            want = self.ref_scales(inp, o.round_scale)[exp.src_rank[e].to(all_x.device), exp.src_token[e].to(all_x.device)]
            got = got_scales
            same = torch.equal(got, want) if o.round_scale else torch.allclose(got, want, rtol=1e-6, atol=0)
            if not same:
                j = int((got - want).abs().flatten().argmax())
                fail(where, f"FP8 scales differ from amax/448{' rounded up to a power of two' if o.round_scale else ''}"
                            f": got {got.flatten()[j].item()}, expected {want.flatten()[j].item()}")
            diff = ref.calc_diff(rows, src_rows)
            if not diff < FP8_DIFF:
                fail(where, f"FP8 rows: calc_diff {diff:.3g} against the source rows (limit {FP8_DIFF})")
            cast = ref.round_to_e4m3((src_rows.view(n, -1, 128).double() / want.unsqueeze(-1).double()).float()).view(n, -1)
            qdiff = ref.calc_diff(rows, ref.dequantize(cast, want))
            if not qdiff < 1e-6:
                expect = ref.dequantize(cast, want)
                bad = ((rows - expect).abs() > 1e-6 * expect.abs().clamp(min=1e-30)).nonzero()[:4].tolist()
                detail = "; ".join(
                    f"[{i},{c}] source {src_rows[i, c].item():.9g} / scale {want[i, c // 128].item():.9g} "
                    f"(got scale {got[i, c // 128].item():.9g}) -> got {rows[i, c].item():.9g}, "
                    f"expected {expect[i, c].item():.9g}" for i, c in bad)
                fail(where, f"FP8 rows: calc_diff {qdiff:.3g} against the reference e4m3 cast (limit 1e-6): {detail}")
        if o.with_stats:
            self.cum_expected += count
            got = self.cum_stats.cpu().long()
            if not torch.equal(got, self.cum_expected):
                fail(ctx, f"cumulative_local_expert_recv_stats {got.tolist()}, expected {self.cum_expected.tolist()}")
            w = self.wait_stats.cpu()
            if bool((w < self.wait_prev).any()):
                fail(ctx, f"dispatch_wait_recv_cost_stats went down: {self.wait_prev.tolist()} -> {w.tolist()}")
            self.wait_prev = w
        return y

    # -- combine -------------------------------------------------------------------------------------------------
    def combine(self, inp, y, handle, d: DispatchOptions, c: CombineOptions, with_stats: bool, out=None):
        x = y
        if c.zero_copy:
            buf = self.buffer.get_next_low_latency_combine_buffer(handle)
            buf.copy_(y)
        return self.buffer.low_latency_combine(
            x, inp["topk_idx"], inp["topk_weights"], handle, use_logfmt=c.use_logfmt, zero_copy=c.zero_copy,
            async_finish=d.async_finish, return_recv_hook=d.return_recv_hook, out=out,
            combine_wait_recv_cost_stats=self.cwait_stats if with_stats else None)

    def combine_reference(self, inp, d: DispatchOptions):
        x = inp["x"]
        sent = x.float() if not d.use_fp8 else ref.fp8_roundtrip(x, d.round_scale)
        y = sent.to(torch.bfloat16).float()  # the identity expert returns the row it got, in BF16
        return ref.weighted_combine(y, inp["topk_idx"], inp["topk_weights"])

    def check_combine(self, inp, d, c, result, want, out, with_stats, ctx) -> float:
        combined, event, hook = result
        torch.cuda.synchronize()
        shape = (self.args.num_tokens, self.args.hidden)
        if combined.dtype != torch.bfloat16 or tuple(combined.shape) != shape:
            fail(ctx, f"combined_x: expected BF16 {shape}, got {combined.dtype} {tuple(combined.shape)}")
        if out is not None and combined.data_ptr() != out.data_ptr():
            fail(ctx, "combined_x is not the `out` tensor")
        if bool(torch.isnan(combined).any()) or bool(torch.isinf(combined).any()):
            fail(ctx, "combined_x holds NaN or Inf")
        diff = ref.calc_diff(combined.float(), want)
        limit = combine_threshold(d, c)
        if not diff <= limit:
            t = int((combined.float() - want).abs().amax(dim=1).argmax())
            fail(ctx, f"calc_diff {diff:.3g} > {limit} (worst token {t}: topk {inp['topk_idx'][t].tolist()})")
        masked = (inp["topk_idx"] < 0).all(dim=1)
        if bool(masked.any()) and bool(combined[masked].float().abs().amax() > 0):
            fail(ctx, "a token with every top-k entry -1 combined to non-zero")
        if with_stats:
            w = self.cwait_stats.cpu()
            if bool((w < self.cwait_prev).any()):
                fail(ctx, f"combine_wait_recv_cost_stats went down: {self.cwait_prev.tolist()} -> {w.tolist()}")
            self.cwait_prev = w
        return diff


def run_checks(args, chk: Checker, d: Dist):
    inp = chk.add_inputs("main", args.seed)
    dopts, copts = dispatch_options(args.hidden, args.quick), combine_options(args.quick)
    log0(d, f"checks: {len(dopts)} dispatch x {len(copts)} combine option combinations")
    for n, do in enumerate(dopts):
        ctx = f"{do} #{n}"
        out = chk.dispatch(inp, do)
        chk.finish(do, out[3], out[4])
        y = chk.check_dispatch(inp, do, out, ctx)
        want = chk.combine_reference(inp, do)
        diffs = []
        for m, co in enumerate(copts):
            cctx = f"{ctx} + {co}"
            o = torch.empty(args.num_tokens, args.hidden, dtype=torch.bfloat16, device=chk.device) if co.with_out else None
            stats = do.with_stats != (m % 2 == 1)  # combine stats on half of the runs
            res = chk.combine(inp, y, out[2], do, co, stats, out=o)
            chk.finish(do, res[1], res[2])
            diffs.append(chk.check_combine(inp, do, co, res, want, o, stats, cctx))
        log0(d, f"  ok {ctx}: recv {int(out[1].sum())} rows; combine calc_diff max {max(diffs):.2e}")
    if bool((chk.wait_stats <= 0).all()):
        fail("dispatch_wait_recv_cost_stats", f"no positive entry after every run: {chk.wait_stats.tolist()}")
    if bool((chk.cwait_stats <= 0).all()):
        fail("combine_wait_recv_cost_stats", f"no positive entry after every run: {chk.cwait_stats.tolist()}")

    # Two calls outstanding: both dispatches sent before either is received, then both combines likewise. The
    # combines reuse the dispatches' halves (call k + 2 reuses call k's), so every rank runs both receive hooks
    # before any rank sends a combine: the barrier after the checks (which synchronize) is that contract.
    inp2 = chk.add_inputs("second", args.seed + 1)
    d1 = DispatchOptions(False, False, False, True, False, False)
    fp8 = fp8_modes(args.hidden)[-1]
    d2 = DispatchOptions(*fp8, return_recv_hook=True, async_finish=False, with_stats=False)
    o1, o2 = chk.dispatch(inp, d1), chk.dispatch(inp2, d2)
    o1[4]()
    o2[4]()
    y1 = chk.check_dispatch(inp, d1, o1, f"two outstanding, first {d1}")
    y2 = chk.check_dispatch(inp2, d2, o2, f"two outstanding, second {d2}")
    dist.barrier()
    plain = CombineOptions(False, False, False)
    c1 = chk.combine(inp, y1, o1[2], d1, plain, False)
    c2 = chk.combine(inp2, y2, o2[2], d2, plain, False)
    c1[2]()
    c2[2]()
    chk.check_combine(inp, d1, plain, c1, chk.combine_reference(inp, d1), None, False, "two outstanding, first combine")
    chk.check_combine(inp2, d2, plain, c2, chk.combine_reference(inp2, d2), None, False,
                      "two outstanding, second combine")
    log0(d, "  ok two calls outstanding (hooks)")

    check_cuda_graph(args, chk, inp, d)
    check_kernel_names(args, chk, d)
    check_bad_expert_ids(args, chk, d)


def capture_graph(fn):
    """Captures fn into a CUDA graph; returns its replay."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def check_cuda_graph(args, chk: Checker, inp, d: Dist):
    """Dispatch + combine captured once, replayed with new x values written into the captured input."""
    opts = DispatchOptions(False, False, False, False, False, False)
    static_x = inp["x"].clone()
    out = torch.empty(args.num_tokens, args.hidden, dtype=torch.bfloat16, device=chk.device)
    g_inp = dict(inp, x=static_x)

    def step():
        recv_x, _, handle, _, _ = chk.buffer.low_latency_dispatch(static_x, inp["topk_idx"], chk.M, chk.E,
                                                                 use_fp8=False, async_finish=False,
                                                                 return_recv_hook=False)
        chk.buffer.low_latency_combine(recv_x, inp["topk_idx"], inp["topk_weights"], handle, out=out)

    step()  # eager warm-up
    torch.cuda.synchronize()
    dist.barrier()
    replay = capture_graph(step)
    torch.cuda.synchronize()
    gen = torch.Generator().manual_seed(args.seed * 7919 + d.rank + 17)
    for i in range(args.graph_replays):
        new_x = torch.randn(args.num_tokens, args.hidden, generator=gen).to(torch.bfloat16)
        ref.encode_rows(new_x, d.rank)
        static_x.copy_(new_x.to(chk.device))
        torch.cuda.synchronize()
        dist.barrier()
        replay()
        torch.cuda.synchronize()
        want = chk.combine_reference(g_inp, opts)
        chk.check_combine(g_inp, opts, CombineOptions(False, False, True), (out, None, None), want, out, False,
                          f"CUDA graph replay {i}")
    dist.barrier()
    log0(d, f"  ok CUDA graph: {args.graph_replays} replays")


BF16_PLAIN = DispatchOptions(False, False, False, return_recv_hook=False, async_finish=False, with_stats=False)
BF16_HOOK = DispatchOptions(False, False, False, return_recv_hook=True, async_finish=False, with_stats=False)
PLAIN_COMBINE = CombineOptions(False, False, False)


def launched_kernel_names(run) -> List[str]:
    """The names of the GPU kernels run() launches, from the torch profiler (memory copies and sets left out)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return [e.name for e in prof.events()
            if str(getattr(e, "device_type", "")).endswith("CUDA") and e.name and not e.name.startswith("Mem")]


def check_kernel_names(args, chk: Checker, d: Dist):
    """Profilers find each call by name: among the kernels a dispatch and a combine launch, exactly one name holds
    "dispatch" and one "combine" (never both), and with return_recv_hook the hook launches the same kernel again."""
    inp = chk.add_inputs("kernel names", args.seed + 3)
    torch.cuda.synchronize()
    dist.barrier()

    def calls():
        for o in (BF16_PLAIN, BF16_HOOK):
            out = chk.dispatch(inp, o)
            chk.finish(o, out[3], out[4])
            res = chk.combine(inp, out[0], out[2], o, PLAIN_COMBINE, False)
            chk.finish(o, res[1], res[2])

    names = launched_kernel_names(calls)
    for word, other in (("dispatch", "combine"), ("combine", "dispatch")):
        found = sorted({n for n in names if word in n})
        if len(found) != 1 or other in found[0]:
            fail("kernel names", f"expected one kernel name holding {word!r} (without {other!r}), got {found} "
                                 f"among {sorted(set(names))}")
        launches = sum(1 for n in names if n == found[0])
        if launches != 3:  # once without the hook, twice (send, then the hook's receive) with it
            fail("kernel names", f"{found[0]} launched {launches} times for a call without and one with "
                                 f"return_recv_hook, expected 3")
    dist.barrier()
    log0(d, "  ok kernel names: one dispatch and one combine kernel, the hooks launch them again")


def expect_rejected(chk: Checker, d: Dist, call, bad_id: int, token: int, step: str, ctx: str):
    """call() must raise uccl.ep.ArgumentError naming the step, this rank, the entry and the id."""
    try:
        call()
    except ValueError as e:  # uccl.ep.ArgumentError is a ValueError
        if chk.ep is not None and not isinstance(e, chk.ep.ArgumentError):
            fail(ctx, f"expected uccl.ep.ArgumentError, got {type(e).__name__}: {e}")
        msg = str(e)
        for want in (step, f"on rank {d.rank}:", f"topk_idx[{token}][0]", f"expert id {bad_id};"):
            if want not in msg:
                fail(ctx, f"the ArgumentError does not say {want!r}: {msg}")
        return
    fail(ctx, f"expected ArgumentError naming expert id {bad_id} on rank {d.rank}; nothing was raised")


def check_bad_expert_ids(args, chk: Checker, d: Dist):
    """Every rank plants one bad top-k entry (token rank % T, column 0) in a dispatch, in a combine, and in a
    dispatch whose receive half runs through the hook. The kernel skips it: the call's results equal those with -1
    in its place. The next call (or the hook) raises ArgumentError naming the id, the entry and the rank, before it
    launches anything (the hook after its receive half), and the buffer then works: a clean dispatch and combine
    are checked exactly."""
    base = chk.add_inputs("bad ids", args.seed + 2)
    token = d.rank % args.num_tokens
    idx = base["topk_idx"].clone()
    idx[token, 0] = -1
    clean = chk.set_inputs("bad ids, clean", base["x"], idx, base["topk_weights"])
    high, low = chk.E + d.rank, -2 - d.rank  # above and below [-1, num_experts)

    def planted(bad_id):
        t = clean["topk_idx"].clone()
        t[token, 0] = bad_id
        return dict(clean, topk_idx=t)

    def clean_round_trip(ctx):
        out = chk.dispatch(clean, BF16_PLAIN)
        y = chk.check_dispatch(clean, BF16_PLAIN, out, f"{ctx}: dispatch")
        res = chk.combine(clean, y, out[2], BF16_PLAIN, PLAIN_COMBINE, False)
        chk.check_combine(clean, BF16_PLAIN, PLAIN_COMBINE, res, chk.combine_reference(clean, BF16_PLAIN), None,
                          False, f"{ctx}: combine")
        return y, out

    def next_call_raises(bad_id, step, ctx):
        torch.cuda.synchronize()  # the bad call's kernel has recorded the entry
        dist.barrier()
        expect_rejected(chk, d, lambda: chk.dispatch(clean, BF16_PLAIN), bad_id, token, step, ctx)
        dist.barrier()

    # 1. dispatch: the bad entry is skipped, the next call raises, the buffer works.
    ctx = f"bad expert id {high} in dispatch"
    out = chk.dispatch(planted(high), BF16_PLAIN)
    chk.check_dispatch(clean, BF16_PLAIN, out, ctx)
    next_call_raises(high, "low-latency dispatch", ctx)
    clean_round_trip(f"{ctx}, then")

    # 2. combine: likewise.
    ctx = f"bad expert id {low} in combine"
    y, out = clean_round_trip(f"{ctx}, before")
    res = chk.combine(planted(low), y, out[2], BF16_PLAIN, PLAIN_COMBINE, False)
    chk.check_combine(clean, BF16_PLAIN, PLAIN_COMBINE, res, chk.combine_reference(clean, BF16_PLAIN), None, False,
                      ctx)
    next_call_raises(low, "low-latency combine", ctx)
    clean_round_trip(f"{ctx}, then")

    # 3. dispatch with a hook: the hook raises after its receive half ran, whose results are right.
    ctx = f"bad expert id {high} in dispatch, receive hook"
    out = chk.dispatch(planted(high), BF16_HOOK)
    torch.cuda.synchronize()
    dist.barrier()
    expect_rejected(chk, d, out[4], high, token, "low-latency dispatch", ctx)
    y = chk.check_dispatch(clean, BF16_HOOK, out, ctx)
    res = chk.combine(clean, y, out[2], BF16_PLAIN, PLAIN_COMBINE, False)
    chk.check_combine(clean, BF16_PLAIN, PLAIN_COMBINE, res, chk.combine_reference(clean, BF16_PLAIN), None, False,
                      f"{ctx}, then combine")
    clean_round_trip(f"{ctx}, then")
    dist.barrier()
    log0(d, "  ok bad expert ids: skipped, raised at the next call naming the id and the rank, buffer usable")




# ---------------------------------------------------------------------------------------------------------------
def start(args, purpose: str):
    """Joins the process group and builds the low-latency Buffer args ask for; rank 0 says what runs where and
    the Buffer's topology. Returns (Dist, Checker over the Buffer, ranks per node). The bench starts here too."""
    d = dist_env()
    backend, device = join_group(d)
    if args.num_experts % d.world:
        raise ValueError(f"--num-experts {args.num_experts} is not a multiple of the {d.world} ranks")
    ep = import_ep()
    R, E, M, H = d.world, args.num_experts, args.num_tokens, args.hidden
    num_rdma_bytes = ep.Buffer.get_low_latency_rdma_size_hint(M, H, R, E)
    buffer = ep.Buffer(dist.group.WORLD, num_rdma_bytes=num_rdma_bytes, low_latency_mode=True,
                       num_qps_per_rank=E // R, allow_nvlink_for_low_latency_mode=True)
    # The runtime decides the node size; a CPU stand-in of the Buffer may have no topology: the launcher's then.
    topology = getattr(buffer, "topology", None)
    ranks_per_node = topology.ranks_per_node if topology is not None else d.local_world
    log0(d, f"uccl.ep low-latency {purpose}: {R} ranks ({ranks_per_node} per node), backend {backend}, tokens {M}, "
            f"hidden {H}, topk {args.num_topk}, experts {E}")
    log0(d, topology_line(buffer))
    return d, Checker(args, ep, buffer, d, device), ranks_per_node


def run_all(args, d: Dist, chk: Checker):
    """Every check (or the group --only names), then rank 0's "all checks passed" once every rank got there."""
    only = getattr(args, "only", None)
    if only == "kernel-names":
        check_kernel_names(args, chk, d)
    elif only == "bad-expert-ids":
        check_bad_expert_ids(args, chk, d)
    else:
        run_checks(args, chk, d)
    dist.barrier()
    log0(d, "all checks passed")


def main(argv=None):
    args = parse_args(argv)
    d, chk, _ = start(args, "checks")
    run_all(args, d, chk)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
