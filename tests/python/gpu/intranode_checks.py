#!/usr/bin/env python3
"""Normal-mode (intranode) dispatch/combine: exact checks over the option matrix, DeepEP's tests/test_intranode.py
for uccl.ep. One rank of a multi-rank run (tests/python/gpu/test_intranode_gpu.py runs it through pytest;
bench/test_intranode.py prints the figures and takes the same flags):

    python scripts/launch.py --nproc 8 -- tests/python/gpu/intranode_checks.py --num-tokens 4096 --hidden 7168 \
        --num-topk 8 --num-experts 256
    UCCL_EP_NORMAL_MNNVL=1 python scripts/launch.py --nproc 12 --ranks-per-node 4 -- \
        tests/python/gpu/intranode_checks.py ... --expect-nodes 3 --expect-mnnvl

Inputs: every rank sends rows that carry their source rank and token index in their first 128 channels (exact
through BF16 and FP8; ll_reference.encode_rows) and random normal values elsewhere; top-k ids are random with
some -1 entries; ranks send different token counts (--same-tokens turns that off). Every rank all-gathers the
inputs and checks against the global reference (bench/intranode_reference.py):
  - the Buffer's topology (rank 0 prints it; --expect-nodes / --expect-mnnvl make it a check);
  - get_dispatch_layout: counts per rank and expert, is_token_in_rank, no per-node counts on one NVLink domain;
  - dispatch, for BF16 (also with strided rows) and FP8 (float scales row- and column-major, UE8M0 packed), with
    and without top-k, expert_alignment, num_worst_tokens, async_finish / previous_event /
    allocate_on_comm_stream: the rows between consecutive prefix-matrix entries come from the right source rank,
    every row is the right (source rank, token) and equals its source bit for bit (scales too), the handle
    (prefix matrix, send_pos, recv_src_idx), the per-expert list, recv_topk_idx (range, histogram, values),
    recv_topk_weights; with num_worst_tokens the exact result on the prefix and -1 padding;
  - the cached dispatch (handle given) reproduces the rows;
  - combine with none, one and two biases: each rank's "expert" returns its rows scaled by 1 + rank/8 (so a copy
    taken from the wrong rank shows), weights scaled by 1 + rank/4; DeepEP's thresholds: calc_diff <= 5e-6 for
    the rows, <= 1e-9 for the weights.
A failed check raises AssertionError naming the rank and the case, so the launcher fails; rank 0 prints "all
checks passed" at the end.
"""
import argparse
import itertools
import os
import sys
from dataclasses import dataclass
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The pure-torch references stay in bench/: the fault benches, the figures and other CPU tests use them too.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "bench"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import internode_reference as iref  # noqa: E402
import intranode_reference as ref  # noqa: E402
import ll_reference as llref  # noqa: E402
from rank_group import Dist, all_gather_tensor, dist_env, fail, import_ep, join_group, log0, topology_line, \
    watch_buffer  # noqa: E402

COMBINE_DIFF = 5e-6
WEIGHTS_DIFF = 1e-9
# The dtype FP8 data is sent in; the CPU stand-in (tests/python/test_intranode_fake.py) sets torch.uint8.
FP8_DTYPE = getattr(torch, "float8_e4m3fn", None)
X_MODES = ("bf16", "bf16_strided", "fp8", "fp8_colmajor", "fp8_ue8m0")
PADDING_VALUE = 1000.0  # combine input rows beyond the receive count (num_worst_tokens): must not show up


# ---------------------------------------------------------------------------------------------------------------
# Arguments and the case matrix (CPU only; tested in tests/python/test_intranode_reference.py)
# ---------------------------------------------------------------------------------------------------------------
def int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The shape and check flags; bench/test_intranode.py adds its own (bench/bench_flags.py) to the same parser."""
    p = argparse.ArgumentParser(description="uccl.ep normal-mode (intranode) dispatch/combine: the checks "
                                "(tests/python/gpu/intranode_checks.py) and the tuning sweep (bench/test_intranode.py) "
                                "take the same flags. Run under scripts/launch.py or torchrun (reads RANK, WORLD_SIZE, "
                                "LOCAL_RANK).")
    p.add_argument("--num-tokens", type=int, default=4096, help="tokens per rank (rank r sends fewer unless "
                   "--same-tokens)")
    p.add_argument("--hidden", type=int, default=7168)
    p.add_argument("--num-topk", type=int, default=8)
    p.add_argument("--num-experts", type=int, default=256)
    p.add_argument("--num-masked", type=int, default=10, help="top-k entries set to -1 per rank")
    p.add_argument("--same-tokens", action="store_true", help="every rank sends --num-tokens tokens")
    p.add_argument("--quick", action="store_true", help="a reduced case matrix")
    p.add_argument("--num-sms", type=int_list, default=[24], help="comma list of SM counts (even); the first is "
                   "used for the checks and as Buffer.num_sms")
    p.add_argument("--chunks", type=int_list, default=[4, 8, 12, 16, 20, 24, 28, 32],
                   help="comma list of num_max_nvl_chunked_send_tokens to sweep")
    p.add_argument("--nvl-bytes", type=int, default=int(1e9), help="num_nvl_bytes of the Buffer")
    p.add_argument("--rdma-bytes", type=int, default=0, help="num_rdma_bytes of the Buffer (across nodes)")
    p.add_argument("--dispatch-only", action="store_true", help="check dispatch (and cached dispatch) only: combine "
                   "across nodes is not written yet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bench-warmup", type=int, default=5)
    p.add_argument("--bench-iters", type=int, default=20)
    p.add_argument("--copy-mb", type=int, default=256, help="MiB per copy_ of the copy-rate reference")
    p.add_argument("--expect-nodes", type=int, default=0, help="fail unless Buffer.topology reports this many nodes")
    p.add_argument("--expect-mnnvl", action="store_true", help="fail unless Buffer.topology reports one NVLink "
                   "domain across the nodes (UCCL_EP_NORMAL_MNNVL=1)")
    return p


def check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> argparse.Namespace:
    """p.error for values no run can take; returns a."""
    if a.hidden % 128 or a.hidden < 128:
        p.error(f"--hidden must be a positive multiple of 128, got {a.hidden}")
    if a.num_tokens < 1 or not 1 <= a.num_topk <= min(16, a.num_experts):
        p.error("need --num-tokens >= 1 and 1 <= --num-topk <= min(16, --num-experts)")
    if any(s % 2 for s in a.num_sms):
        p.error(f"--num-sms must be even, got {a.num_sms}")
    if max(a.chunks) >= 256:
        p.error("--chunks must stay below the ring size 256")
    if a.nvl_bytes <= 0 or a.nvl_bytes % 128:
        p.error(f"--nvl-bytes must be a positive multiple of 128, got {a.nvl_bytes}")
    if a.bench_iters < 1 or a.bench_warmup < 0 or a.copy_mb < 1:
        p.error("need --bench-iters >= 1, --bench-warmup >= 0, --copy-mb >= 1")
    if a.expect_nodes < 0:
        p.error(f"--expect-nodes must not be negative, got {a.expect_nodes}")
    return a


def parse_args(argv=None):
    p = build_parser()
    return check_args(p, p.parse_args(argv))


def tokens_for(args, rank: int) -> int:
    """Tokens rank `rank` sends: fewer on higher ranks, so a kernel that assumes equal counts fails."""
    if args.same_tokens:
        return args.num_tokens
    return max(1, args.num_tokens - (rank % 4) * max(1, args.num_tokens // 64))


@dataclass(frozen=True)
class Case:
    x_mode: str
    with_topk: bool
    async_finish: bool
    previous: bool
    alloc_on_comm: bool
    expert_alignment: int
    worst: bool
    num_biases: int
    chunk: int  # num_max_nvl_chunked_send_tokens; 0: the default config

    def __str__(self):
        flags = [n for n, on in (("topk", self.with_topk), ("async", self.async_finish),
                                 ("previous", self.previous), ("alloc_on_comm", self.alloc_on_comm),
                                 ("worst", self.worst)) if on]
        return (f"{'+'.join([self.x_mode] + flags)}, align {self.expert_alignment}, bias {self.num_biases}, "
                f"chunk {self.chunk or 'default'}")


STREAM_MODES = ((False, False, False), (True, False, False), (False, True, False), (True, True, True))


def x_modes(hidden: int, have_fp8: bool) -> List[str]:
    return [m for m in X_MODES if (have_fp8 or not m.startswith("fp8")) and (m != "fp8_ue8m0" or hidden % 512 == 0)]


def cases(hidden: int, quick: bool, have_fp8: bool = True) -> List[Case]:
    """Every x mode with and without top-k under each stream mode (full), or each mode once (quick); alignment,
    num_worst_tokens, biases and the config rotate through the list."""
    modes = x_modes(hidden, have_fp8)
    if quick:
        combos = [(m, i % 2 == 1, STREAM_MODES[i % len(STREAM_MODES)]) for i, m in enumerate(modes)]
        combos.append((modes[-1], True, STREAM_MODES[3]))
    else:
        combos = list(itertools.product(modes, (False, True), STREAM_MODES))
    out = []
    for i, (mode, topk, (async_finish, previous, alloc)) in enumerate(combos):
        worst = i % 4 == 2 or (quick and i == len(combos) - 1)  # quick: once with top-k too
        out.append(Case(mode, topk, async_finish, previous, alloc, expert_alignment=(1, 4, 128)[i % 3],
                        worst=worst, num_biases=i % 3, chunk=(0, 4, 8, 12, 32)[i % 5]))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------------
def gather_rows(t: torch.Tensor, counts: List[int]) -> List[torch.Tensor]:
    """Every rank's t [T_r, ...] (T_r = counts[r]): padded to the largest count for the all_gather."""
    pad = max(counts) - t.size(0)
    if pad:
        t = torch.cat([t, torch.zeros((pad,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)])
    return [g[:c] for g, c in zip(all_gather_tensor(t), counts)]


@dataclass
class Variant:
    """One x mode: the dispatch argument, this rank's rows as float (what an FP8 dispatch delivers) and every
    rank's exact row bytes and scales (flattened over ranks, `offsets` where each rank starts)."""

    arg: object
    deq: torch.Tensor
    all_bytes: torch.Tensor
    all_scales: Optional[torch.Tensor]
    offsets: torch.Tensor


class Checker:
    def __init__(self, args, ep, buffer, d: Dist, device):
        self.args, self.ep, self.buffer, self.d, self.device = args, ep, buffer, d, device
        watch_buffer(buffer)  # a failed check first surfaces what the kernels recorded
        self.R, self.E, self.rank = d.world, args.num_experts, d.rank
        self.epr = self.E // self.R
        self.T = tokens_for(args, d.rank)
        self.variants = {}
        topo = buffer.topology
        # Across nodes (no NVLink domain spans them): the node size, else 0. Written here rather than taken from
        # uccl.ep.buffer.internode_node_size, so that the checks hold that rule to its own statement.
        self.internode_ranks_per_node = (topo.ranks_per_node if topo.num_nodes > 1 and not topo.nvl_domain_spans_nodes
                                         else 0)

    def setup(self, seed: int):
        a, dev = self.args, self.device
        gen = torch.Generator().manual_seed(seed * 100003 + self.rank)
        x, idx, w = llref.make_inputs(self.rank, self.T, a.hidden, self.E, a.num_topk, gen, a.num_masked)
        self.x, self.topk_idx, self.topk_weights = x.to(dev), idx.to(dev), w.to(dev)
        self.biases = [torch.randn(self.T, a.hidden, generator=gen).to(torch.bfloat16).to(dev) for _ in range(2)]
        self.counts = [int(c) for c in all_gather_tensor(torch.tensor([self.T], device=dev))]
        self.all_idx = gather_rows(self.topk_idx, self.counts)
        self.all_w = gather_rows(self.topk_weights, self.counts)
        self.ref_layout = ref.layout(self.topk_idx, self.E, self.R)
        all_in_rank = [ref.token_ranks(i, self.E, self.R) for i in self.all_idx]
        self.all_in_rank = all_in_rank  # every rank's is_token_in_rank (bench/test_internode.py counts routes)
        self.expected = ref.dispatch_expected(all_in_rank, self.rank, self.E, self.all_idx, self.all_w)
        self.worst_rows = sum(self.counts)  # every token of every rank could come here
        P = self.internode_ranks_per_node
        if P:  # the records this rank forwards: tokens of its peers on other nodes that go to its node
            self.expected_forward = int(iref.route(all_in_rank, P).rdma_received[self.rank])
        self.variants = {}  # built from the previous inputs, if any

    def variant(self, mode: str) -> Variant:
        if mode in self.variants:
            return self.variants[mode]
        x, T, H = self.x, self.T, self.args.hidden
        scales = None
        if mode.startswith("bf16"):
            data, deq = x, x.float()
            if mode == "bf16_strided":  # rows 64 channels apart from their neighbours' ends
                data = torch.zeros(T, H + 64, dtype=torch.bfloat16, device=self.device)[:, :H]
                data.copy_(x)
            arg = data
        else:
            f = ref.cast_rows_fp8(x, ue8m0=mode == "fp8_ue8m0")
            data, scales, deq = f.codes.view(FP8_DTYPE), f.scales, f.dequantize()
            if mode != "fp8":  # column-major scales, as DeepGEMM wants them
                scales = scales.t().contiguous().t()
            arg = (data, scales)
        same = {"bf16_strided": "bf16", "fp8_colmajor": "fp8"}.get(mode)
        if same in self.variants:  # the same bytes as a variant gathered already
            v = self.variants[same]
            all_bytes, all_scales, offsets = v.all_bytes, v.all_scales, v.offsets
        else:
            all_bytes = torch.cat(gather_rows(ref.row_bytes(data), self.counts))
            all_scales = None if scales is None else torch.cat(gather_rows(scales.contiguous(), self.counts))
            offsets = torch.tensor([0] + list(itertools.accumulate(self.counts))[:-1], device=self.device)
        self.variants[mode] = Variant(arg, deq, all_bytes, all_scales, offsets)
        return self.variants[mode]

    def config(self, chunk: int):
        return None if chunk == 0 else self.ep.Config(self.args.num_sms[0], chunk, 256)

    # -- layout ----------------------------------------------------------------------------------------------
    def check_layout(self):
        want = self.ref_layout
        for async_finish, previous in ((False, False), (True, True)):
            ctx = f"get_dispatch_layout(async={async_finish}, previous={previous})"
            kw = dict(async_finish=async_finish)
            if previous:
                kw.update(previous_event=self.buffer.capture(), allocate_on_comm_stream=True)
            per_rank, per_node, per_expert, in_rank, event = self.buffer.get_dispatch_layout(self.topk_idx, self.E,
                                                                                            **kw)
            if async_finish:
                event.current_stream_wait()
            P = self.internode_ranks_per_node
            if not P and per_node is not None:
                fail(ctx, f"num_tokens_per_rdma_rank must be None on one NVLink domain, got {per_node.tolist()}")
            if P:
                want_node = iref.token_nodes(want.is_token_in_rank, P).sum(dim=0).int()
                if per_node is None or not torch.equal(per_node, want_node):
                    fail(ctx, f"num_tokens_per_rdma_rank {None if per_node is None else per_node.tolist()}, "
                              f"expected {want_node.tolist()}")
            for name, got, exp in (("num_tokens_per_rank", per_rank, want.tokens_per_rank),
                                   ("num_tokens_per_expert", per_expert, want.tokens_per_expert),
                                   ("is_token_in_rank", in_rank, want.is_token_in_rank)):
                if got.dtype != exp.dtype or tuple(got.shape) != tuple(exp.shape):
                    fail(ctx, f"{name}: {got.dtype} {tuple(got.shape)}, expected {exp.dtype} {tuple(exp.shape)}")
                if not torch.equal(got, exp):
                    bad = (got != exp).nonzero()[0].tolist()
                    fail(ctx, f"{name}{bad}: got {got[tuple(bad)].item()}, expected {exp[tuple(bad)].item()}")
        self.layout = (per_rank, per_expert, in_rank)

    def check_bad_expert_id(self) -> str:
        """An expert id out of range in get_dispatch_layout: found by the layout kernel (no host read), raised by the
        next call as ArgumentError naming the entry, the id and the rank; the call after it gives the right layout."""
        ctx = "get_dispatch_layout with an expert id out of range"
        bad = self.topk_idx.clone()
        bad[0, 0] = self.E
        self.buffer.get_dispatch_layout(bad, self.E)
        torch.cuda.synchronize()
        want = f"topk_idx[0][0] holds expert id {self.E}"
        try:
            self.buffer.get_dispatch_layout(self.topk_idx, self.E)
        except ValueError as e:
            if want not in str(e) or f"rank {self.rank}" not in str(e):
                fail(ctx, f"the error does not say '{want}' and 'rank {self.rank}': {e}")
        else:
            fail(ctx, "the next call did not raise")
        self.check_layout()  # usable after it: the layout is right again
        return f"  ok {ctx}: the next call raised naming the entry; the buffer stays usable"

    # -- dispatch --------------------------------------------------------------------------------------------
    def stream_kwargs(self, case: Case) -> dict:
        kw = dict(async_finish=case.async_finish)
        if case.previous:
            kw["previous_event"] = self.buffer.capture()
        if case.alloc_on_comm:
            kw["allocate_on_comm_stream"] = True
        return kw

    def dispatch(self, case: Case, v: Variant):
        per_rank, per_expert, in_rank = self.layout
        kw = dict(x=v.arg, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank, num_tokens_per_expert=per_expert,
                  expert_alignment=case.expert_alignment, num_worst_tokens=self.worst_rows if case.worst else 0,
                  config=self.config(case.chunk), **self.stream_kwargs(case))
        if case.with_topk:
            kw.update(topk_idx=self.topk_idx, topk_weights=self.topk_weights)
        out = self.buffer.dispatch(**kw)
        if case.async_finish:
            out[5].current_stream_wait()
        return out

    @staticmethod
    def split(recv, fp8: bool, ctx: str):
        if fp8:
            if not isinstance(recv, tuple) or len(recv) != 2:
                fail(ctx, f"recv_x: expected (data, scales) for FP8 x, got {type(recv).__name__}")
            return recv
        if not isinstance(recv, torch.Tensor):
            fail(ctx, f"recv_x: expected a tensor for BF16 x, got {type(recv).__name__}")
        return recv, None

    def check_rows(self, v: Variant, data, scales, n: int, ctx: str):
        """Rows [0, n): source rank and token of each, the prefix blocks, then every byte (and scale)."""
        exp = self.expected
        r, t, ok = llref.decode_rows(ref.head_as_float(data[:n], None if scales is None else scales[:n]))
        bad = (~ok | (r != exp.src_rank) | (t != exp.src_token)).nonzero()
        if bad.numel():
            i = int(bad[0])
            got = f"(rank {int(r[i])}, token {int(t[i])})" if bool(ok[i]) else "an undecodable row"
            fail(ctx, f"row {i}: got {got}, expected (rank {int(exp.src_rank[i])}, token {int(exp.src_token[i])}); "
                      f"{int(bad.numel())} of {n} rows differ")
        prefix = exp.rank_prefix_matrix
        for s in range(self.R):  # DeepEP's check: the block of source s holds rank-s rows only
            blk = exp.block(s)
            if bool((r[blk] != s).any()):
                fail(ctx, f"rows [{blk.start}, {blk.stop}) between prefix[{s - 1}][{self.rank}] and "
                          f"prefix[{s}][{self.rank}] ({prefix[:, self.rank].tolist()}) are not all from rank {s}")
        src = v.offsets[exp.src_rank] + exp.src_token
        got, want = ref.row_bytes(data[:n]), v.all_bytes[src]
        if not torch.equal(got, want):
            i = int((got != want).any(dim=1).nonzero()[0])
            fail(ctx, f"row {i} (rank {int(exp.src_rank[i])}, token {int(exp.src_token[i])}): its bytes differ from "
                      f"the source row")
        if scales is not None:
            if not torch.equal(scales[:n], v.all_scales[src]):
                i = int((scales[:n] != v.all_scales[src]).any(dim=1).nonzero()[0])
                fail(ctx, f"row {i}: scales {scales[i].tolist()[:4]}..., expected {v.all_scales[src][i].tolist()[:4]}...")

    def check_dispatch(self, case: Case, v: Variant, out, ctx: str):
        recv, ridx, rw, per_expert, handle, _ = out
        exp, n, fp8 = self.expected, self.expected.num_recv, case.x_mode.startswith("fp8")
        worst = self.worst_rows if case.worst else 0
        rows = worst or n
        data, scales = self.split(recv, fp8, ctx)
        want_dtype = v.arg[0].dtype if fp8 else torch.bfloat16
        if data.dtype != want_dtype or tuple(data.shape) != (rows, self.args.hidden):
            fail(ctx, f"recv_x: {data.dtype} {tuple(data.shape)}, expected {want_dtype} {(rows, self.args.hidden)}")
        if fp8:
            sw = v.arg[1]
            if scales.dtype != sw.dtype or tuple(scales.shape) != (rows, sw.size(1)):
                fail(ctx, f"recv scales: {scales.dtype} {tuple(scales.shape)}, expected {sw.dtype} {(rows, sw.size(1))}")
        # The handle: callers index it. Across nodes it has 9 elements, the receive prefix sum fourth from the end.
        P = self.internode_ranks_per_node
        if not isinstance(handle, tuple) or len(handle) != (9 if P else 6):
            fail(ctx, f"handle: expected a {9 if P else 6}-tuple, got {type(handle).__name__} of "
                      f"{len(handle) if isinstance(handle, tuple) else '?'}")
        prefix, send_pos, hrows, src_idx, h_in_rank = handle[:5]
        h_worst = handle[-1]
        if P:
            gbl, fwd_pos, fwd_src = handle[5:8]
            if not torch.equal(gbl, exp.rank_prefix_matrix[:, self.rank].contiguous()):
                fail(ctx, f"handle[5] (recv_gbl_rank_prefix_sum) {gbl.tolist()}, expected column {self.rank} of the "
                          f"prefix matrix {exp.rank_prefix_matrix[:, self.rank].tolist()}")
            if fwd_pos.dim() != 2 or fwd_pos.size(1) != P + 1 or fwd_src.shape != (fwd_pos.size(0),):
                fail(ctx, f"handle[6:8] (forward map): {tuple(fwd_pos.shape)} and {tuple(fwd_src.shape)}, expected "
                          f"[F, {P + 1}] and [F]")
            if not worst and fwd_pos.size(0) != self.expected_forward:
                fail(ctx, f"handle[6] (forward map) has {fwd_pos.size(0)} rows, expected the {self.expected_forward} "
                          f"records this rank forwards")
        if not torch.equal(prefix, exp.rank_prefix_matrix):
            fail(ctx, f"handle[0] (rank prefix matrix) {prefix.tolist()}, expected {exp.rank_prefix_matrix.tolist()}")
        if not torch.equal(send_pos, exp.send_pos[self.rank]):
            i = int((send_pos != exp.send_pos[self.rank]).any(dim=1).nonzero()[0])
            fail(ctx, f"handle[1] (send_pos) row {i}: {send_pos[i].tolist()}, expected {exp.send_pos[self.rank][i].tolist()}")
        if hrows != rows or h_worst != worst or not torch.equal(h_in_rank, self.layout[2]):
            fail(ctx, f"handle[2] = {hrows}, handle[5] = {h_worst}, handle[4] equal to is_token_in_rank: "
                      f"{torch.equal(h_in_rank, self.layout[2])}; expected {rows}, {worst}, True")
        if src_idx.dtype != torch.int32 or tuple(src_idx.shape) != (rows,):
            fail(ctx, f"handle[3] (recv_src_idx): {src_idx.dtype} {tuple(src_idx.shape)}, expected int32 {(rows,)}")
        if not torch.equal(src_idx[:n].long(), exp.src_token):
            i = int((src_idx[:n].long() != exp.src_token).nonzero()[0])
            fail(ctx, f"recv_src_idx[{i}] = {int(src_idx[i])}, expected {int(exp.src_token[i])}")
        if bool((src_idx[n:] != -1).any()):
            fail(ctx, f"recv_src_idx padding rows [{n}, {rows}) must be -1")
        want_list = [] if worst else exp.per_expert_list(case.expert_alignment)
        if per_expert != want_list:
            fail(ctx, f"num_recv_tokens_per_expert_list {per_expert}, expected {want_list}")
        self.check_rows(v, data, scales, n, ctx)
        if not case.with_topk:
            if ridx is not None or rw is not None:
                fail(ctx, "recv_topk_idx / recv_topk_weights must be None without top-k")
            return
        K = self.args.num_topk
        if ridx.dtype != torch.int64 or tuple(ridx.shape) != (rows, K) or rw.dtype != torch.float32 \
                or tuple(rw.shape) != (rows, K):
            fail(ctx, f"recv_topk_idx {ridx.dtype} {tuple(ridx.shape)} / recv_topk_weights {rw.dtype} "
                      f"{tuple(rw.shape)}, expected int64 / float32 {(rows, K)}")
        if not bool(((ridx == -1) | ((ridx >= 0) & (ridx < self.epr))).all()):
            fail(ctx, f"recv_topk_idx holds ids outside [-1, {self.epr}): {ridx[(ridx < -1) | (ridx >= self.epr)][:8].tolist()}")
        for e in range(self.epr):
            c, want = int((ridx == e).sum()), int(exp.tokens_per_expert[e])
            if c != want:
                fail(ctx, f"recv_topk_idx names local expert {e} {c} times, expected {want}")
        if not torch.equal(ridx[:n], exp.recv_topk_idx):
            i = int((ridx[:n] != exp.recv_topk_idx).any(dim=1).nonzero()[0])
            fail(ctx, f"recv_topk_idx row {i}: {ridx[i].tolist()}, expected {exp.recv_topk_idx[i].tolist()}")
        if not torch.equal(rw[:n], exp.recv_topk_weights):
            i = int((rw[:n] != exp.recv_topk_weights).any(dim=1).nonzero()[0])
            fail(ctx, f"recv_topk_weights row {i}: {rw[i].tolist()}, expected {exp.recv_topk_weights[i].tolist()} "
                      f"(zero where recv_topk_idx is -1)")
        if bool((ridx[n:] != -1).any()) or bool((rw[n:] != 0).any()):
            fail(ctx, f"padding rows [{n}, {rows}): recv_topk_idx must be -1 and recv_topk_weights 0")

    def check_cached(self, case: Case, v: Variant, first, handle, ctx: str):
        kw = dict(x=v.arg, handle=handle, config=self.config(case.chunk), **self.stream_kwargs(case))
        if case.worst:
            kw["num_worst_tokens"] = self.worst_rows  # DeepEP callers pass it again; the handle has it too
        out = self.buffer.dispatch(**kw)
        if not isinstance(out, tuple) or len(out) != 6 or any(o is not None for o in out[1:5]):
            fail(ctx, "a cached dispatch returns (recv_x, None, None, None, None, event)")
        if case.async_finish:
            out[5].current_stream_wait()
        fp8 = case.x_mode.startswith("fp8")
        data, scales = self.split(out[0], fp8, ctx)
        data0, scales0 = self.split(first, fp8, ctx)
        n = self.expected.num_recv
        if data.shape != data0.shape or not torch.equal(ref.row_bytes(data[:n]), ref.row_bytes(data0[:n])):
            fail(ctx, f"recv_x {tuple(data.shape)} differs from the first dispatch's "
                      f"{tuple(data0.shape)} in shape or bytes")
        if fp8 and not torch.equal(scales[:n], scales0[:n]):
            fail(ctx, "scales differ from the first dispatch's")

    # -- combine ---------------------------------------------------------------------------------------------
    def expert_output(self, data, scales, n: int, rows: int) -> torch.Tensor:
        """What this rank's expert returns: the received rows as float, times 1 + rank/8, in BF16; padding rows
        hold PADDING_VALUE."""
        y = torch.full((rows, self.args.hidden), PADDING_VALUE, dtype=torch.bfloat16, device=self.device)
        step = 4096
        for b in range(0, n, step):
            e = min(n, b + step)
            rows_f = data[b:e].float() if scales is None else \
                llref.dequantize(ref.e4m3_to_float(data[b:e].contiguous().view(torch.uint8)), scales[b:e])
            y[b:e] = (rows_f * (1 + self.rank / 8)).to(torch.bfloat16)
        return y

    def check_combine(self, case: Case, v: Variant, out, ctx: str):
        recv, ridx, rw, _, handle, _ = out
        data, scales = self.split(recv, case.x_mode.startswith("fp8"), ctx)
        n = self.expected.num_recv
        y = self.expert_output(data, scales, n, data.size(0))
        w_in = rw * (1 + self.rank / 4) if case.with_topk else None
        biases = self.biases[:case.num_biases]
        bias = None if not biases else biases[0] if len(biases) == 1 else tuple(biases)
        combined, cw, event = self.buffer.combine(y, handle, topk_weights=w_in, bias=bias,
                                                  config=self.config(case.chunk), **self.stream_kwargs(case))
        if case.async_finish:
            event.current_stream_wait()
        shape = (self.T, self.args.hidden)
        if not isinstance(combined, torch.Tensor) or combined.dtype != torch.bfloat16 or tuple(combined.shape) != shape:
            fail(ctx, f"combined_x: expected BF16 {shape}, got {getattr(combined, 'dtype', type(combined))} "
                      f"{tuple(getattr(combined, 'shape', ()))}")
        if not bool(torch.isfinite(combined.float()).all()):
            fail(ctx, "combined_x holds NaN or Inf")
        in_rank = self.layout[2]
        want = ref.combine_expected(in_rank, lambda r: (v.deq * (1 + r / 8)).to(torch.bfloat16), biases)
        diff = llref.calc_diff(combined.float(), want)
        if not diff <= COMBINE_DIFF:
            t = int((combined.float() - want).abs().amax(dim=1).argmax())
            fail(ctx, f"calc_diff {diff:.3g} > {COMBINE_DIFF} (worst token {t}, sent to ranks "
                      f"{in_rank[t].nonzero().flatten().tolist()})")
        if not case.with_topk:
            if cw is not None:
                fail(ctx, "combined_topk_weights must be None without topk_weights")
            return diff
        want_w = ref.combine_weights_expected(in_rank, self.topk_idx, self.topk_weights, self.E, lambda r: 1 + r / 4)
        if cw is None or cw.dtype != torch.float32 or tuple(cw.shape) != tuple(want_w.shape):
            fail(ctx, f"combined_topk_weights: expected float32 {tuple(want_w.shape)}, got "
                      f"{None if cw is None else (cw.dtype, tuple(cw.shape))}")
        wdiff = llref.calc_diff(cw, want_w)
        if not wdiff <= WEIGHTS_DIFF:
            t = int((cw - want_w).abs().amax(dim=1).argmax())
            fail(ctx, f"combined_topk_weights: calc_diff {wdiff:.3g} > {WEIGHTS_DIFF} (token {t}: "
                      f"{cw[t].tolist()}, expected {want_w[t].tolist()})")
        return diff

    # -- CUDA graph ------------------------------------------------------------------------------------------
    def check_cuda_graph(self) -> str:
        """A dispatch with num_worst_tokens (no host wait) and the combine of its rows, captured in one CUDA graph and
        replayed twice: every replay gives the rows, top-k and sums the same calls give when run eagerly."""
        ctx = "CUDA graph of dispatch(num_worst_tokens) + combine"
        if self.device.type != "cuda":  # the CPU stand-in of tests/python/test_intranode_fake.py
            return f"  ({ctx}: needs a CUDA device, not run on {self.device})"
        per_rank, per_expert, in_rank = self.layout
        v = self.variant("bf16")
        kw = dict(num_tokens_per_rank=per_rank, is_token_in_rank=in_rank, num_tokens_per_expert=per_expert,
                  topk_idx=self.topk_idx, topk_weights=self.topk_weights, num_worst_tokens=self.worst_rows)
        x = v.arg.clone()

        def step():
            recv, ridx, rw, _, handle, _ = self.buffer.dispatch(x, **kw)
            combined, cw, _ = self.buffer.combine(recv, handle, topk_weights=rw)
            return recv, ridx, rw, combined, cw

        eager = [t.clone() for t in step()]
        torch.cuda.synchronize()
        dist.barrier()
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # capture on a side stream, as torch.cuda.graph does
            step()  # warm-up on the capture stream (allocations of the caching allocator)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        dist.barrier()
        with torch.cuda.graph(graph):
            captured = step()
        for replay in range(2):
            x.copy_(v.arg)
            torch.cuda.synchronize()
            dist.barrier()  # every rank replays the same calls together
            graph.replay()
            torch.cuda.synchronize()
            n = self.expected.num_recv  # recv_x rows beyond it are padding nobody writes
            for name, got, want in zip(("recv_x", "recv_topk_idx", "recv_topk_weights", "combined_x",
                                        "combined_topk_weights"), (captured[0][:n],) + captured[1:],
                                       (eager[0][:n],) + tuple(eager[1:])):
                if not torch.equal(got, want):
                    bad = (got != want).nonzero()[0].tolist()
                    fail(ctx, f"replay {replay}: {name}{bad} = {got[tuple(bad)].item()}, eager gave "
                              f"{want[tuple(bad)].item()}")
        return f"  ok {ctx}: {eager[0].size(0)} rows (num_worst_tokens), 2 replays equal the eager calls"

    def run_case(self, i: int, case: Case) -> str:
        ctx = f"case {i} ({case})"
        v = self.variant(case.x_mode)
        out = self.dispatch(case, v)
        self.check_dispatch(case, v, out, ctx + ", dispatch")
        self.check_cached(case, v, out[0], out[4], ctx + ", cached dispatch")
        if self.args.dispatch_only:
            return f"  ok {ctx}: {self.expected.num_recv} rows here (dispatch and cached dispatch)"
        diff = self.check_combine(case, v, out, ctx + ", combine")
        return f"  ok {ctx}: {self.expected.num_recv} rows here, combine calc_diff {diff:.2e}"


def run_checks(args, chk: Checker, d: Dist):
    chk.check_layout()
    log0(d, "  ok get_dispatch_layout")
    log0(d, chk.check_bad_expert_id())
    have_fp8 = FP8_DTYPE is not None
    if not have_fp8:
        log0(d, f"  (FP8 cases skipped: torch {torch.__version__} has no float8_e4m3fn)")
    todo = cases(args.hidden, args.quick, have_fp8)
    log0(d, f"checks: {len(todo)} cases")
    for i, case in enumerate(todo):
        log0(d, chk.run_case(i, case))
    if not args.dispatch_only:
        log0(d, chk.check_cuda_graph())


def check_topology(args, d: Dist, buffer):
    """What the Buffer decided about nodes and NVLink domains: this rank and the group size always (when the
    Buffer reports a topology), the node count and one NVLink domain across nodes when asked to."""
    topo = getattr(buffer, "topology", None)
    expecting = args.expect_nodes or args.expect_mnnvl
    if topo is None:
        if expecting:
            fail("Buffer.topology", "--expect-nodes / --expect-mnnvl given, but this Buffer has no topology attribute")
        return
    if (topo.rank, topo.num_ranks) != (d.rank, d.world):
        fail("Buffer.topology", f"rank {topo.rank} of {topo.num_ranks}, expected {d.rank} of {d.world} "
                                f"({topo.describe()})")
    if args.expect_nodes and topo.num_nodes != args.expect_nodes:
        fail("Buffer.topology", f"num_nodes {topo.num_nodes}, expected {args.expect_nodes} ({topo.describe()})")
    if args.expect_mnnvl and not topo.nvl_domain_spans_nodes:
        fail("Buffer.topology", f"nvl_domain_spans_nodes is false, expected one NVLink domain across the nodes "
                                f"({topo.describe()})")


# ---------------------------------------------------------------------------------------------------------------
def start(args, purpose: str):
    """Joins the process group and builds the normal-mode Buffer args ask for; rank 0 says what runs where and
    the Buffer's topology. Returns (Dist, Checker over the Buffer). The bench starts here too."""
    d = dist_env()
    backend, device = join_group(d)
    if args.num_experts % d.world:
        raise ValueError(f"--num-experts {args.num_experts} is not a multiple of the {d.world} ranks")
    ep = import_ep()
    log0(d, f"uccl.ep normal mode {purpose}: {d.world} ranks, backend {backend}, tokens {args.num_tokens}, hidden "
            f"{args.hidden}, topk {args.num_topk}, experts {args.num_experts}, num_nvl_bytes {args.nvl_bytes}")
    buffer = ep.Buffer(dist.group.WORLD, num_nvl_bytes=args.nvl_bytes, num_rdma_bytes=args.rdma_bytes)
    log0(d, topology_line(buffer))
    return d, Checker(args, ep, buffer, d, device)


def run_all(args, d: Dist, chk: Checker):
    """The topology, the inputs, every check, then rank 0's "all checks passed" once every rank got there."""
    check_topology(args, d, chk.buffer)
    chk.ep.Buffer.set_num_sms(args.num_sms[0])
    chk.setup(args.seed)
    run_checks(args, chk, d)
    dist.barrier()
    log0(d, "all checks passed")


def main(argv=None):
    args = parse_args(argv)
    d, chk = start(args, "checks")
    run_all(args, d, chk)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
