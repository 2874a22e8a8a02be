"""The intranode correctness checks (intranode_checks() below) on the CPU, through the real uccl.ep.Buffer: a
stand-in for the native runtime's normal-mode calls (FakeNormalRuntime) and for the few torch.cuda pieces Buffer
touches (streams, events), run by scripts/launch.py with 2 and 3 ranks over gloo. The stand-in follows the
interface of `_C.Runtime`: keyword arguments, argument structs of uccl.ep._C, _C's own size checks, pointers into
CPU memory read and written through ctypes, every call collective across ranks (gloo all_gathers stand in for
NVLink). So Buffer's argument names, allocation and handle layout are exercised, not only the checks.
FAKE_BUG=<name> makes the stand-in wrong in one way on one rank; the checks must then fail naming that rank.
Needs uccl.ep._C (its CPU-only build is enough) for the argument structs and the size checks.

Also the seam the other CPU tests use: install_fake_cuda, FakeNormalRuntime (with a call log), make_buffer.
"""
import contextlib
import ctypes
import os
import subprocess
import sys
import time
import types
from typing import Optional

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _p in (os.path.join(REPO, "bench"), os.path.join(REPO, "tests", "python", "gpu"), os.path.join(REPO, "python")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

LAUNCH = os.path.join(REPO, "scripts", "launch.py")


# ---------------------------------------------------------------------------------------------------------------
# torch.cuda stand-ins: streams and events that log what Buffer asks of them
# ---------------------------------------------------------------------------------------------------------------
class FakeEvent:
    def __init__(self, *args, **kwargs):
        self.t, self.stream = None, None

    def record(self, stream=None):
        self.t, self.stream = time.perf_counter(), stream

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3

    def synchronize(self):
        pass


class FakeStream:
    """A stream that logs (op, other) pairs: ("wait_stream", s), ("wait_event", e)."""

    cuda_stream = 0

    def __init__(self, *args, name="stream", **kwargs):
        self.name, self.log = name, []

    def wait_stream(self, other):
        self.log.append(("wait_stream", other))

    def wait_event(self, event):
        self.log.append(("wait_event", event))

    def synchronize(self):
        pass

    def __repr__(self):
        return f"FakeStream({self.name})"


class FakeCuda:
    """The state behind the patched torch.cuda functions: the current stream and the `torch.cuda.stream(s)`
    context stack (so a test sees where Buffer allocated)."""

    def __init__(self):
        self.default = FakeStream(name="current")
        self.stack = [self.default]

    def current_stream(self, device=None):
        return self.stack[-1]

    @contextlib.contextmanager
    def stream(self, s):
        self.stack.append(s)
        try:
            yield
        finally:
            self.stack.pop()


def install_fake_cuda(setattr_=setattr) -> FakeCuda:
    """Points torch.cuda's stream/event functions at stand-ins (setattr_: monkeypatch.setattr in tests), and
    uccl.ep._low_latency's current-stream accessor (the low-latency calls' raw handle) at the same current stream."""
    from uccl.ep import _low_latency as ll_module
    fc = FakeCuda()
    for name, value in (("Event", FakeEvent), ("Stream", FakeStream), ("current_stream", fc.current_stream),
                        ("stream", fc.stream), ("synchronize", lambda *a, **k: None),
                        ("is_current_stream_capturing", lambda: False)):
        setattr_(torch.cuda, name, value)
    setattr_(ll_module, "_current_stream", lambda device_index: fc.current_stream().cuda_stream)
    return fc


# ---------------------------------------------------------------------------------------------------------------
# The runtime stand-in
# ---------------------------------------------------------------------------------------------------------------
def memory(ptr: int, dtype: torch.dtype, shape, strides=None) -> torch.Tensor:
    """A tensor aliasing `ptr` (CPU memory) with this dtype, shape and element strides (contiguous by default)."""
    shape = tuple(int(s) for s in shape)
    numel = 1
    for s in shape:
        numel *= s
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    if ptr == 0:
        raise RuntimeError(f"fake runtime: null pointer for a {dtype} {list(shape)} tensor")
    if strides is None:
        strides, acc = [], 1
        for s in reversed(shape):
            strides.insert(0, acc)
            acc *= s
    elem = torch.empty(0, dtype=dtype).element_size()
    extent = 1 + sum((s - 1) * st for s, st in zip(shape, strides))
    raw = (ctypes.c_uint8 * (extent * elem)).from_address(ptr)
    return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).as_strided(shape, tuple(strides))


def fields(struct) -> dict:
    """An argument struct of uccl.ep._C as {field: value}, for the call log."""
    return {name: getattr(struct, name) for name in type(struct).fields()}


class FakeTopology:
    """The attributes and methods of `_C.Topology` for a stand-in runtime: ranks_per_node consecutive ranks per
    node, the NVLink domain one node."""

    def __init__(self, rank: int, num_ranks: int, ranks_per_node: int):
        self.rank, self.num_ranks, self.ranks_per_node = rank, num_ranks, ranks_per_node
        self.num_nodes = (num_ranks + ranks_per_node - 1) // ranks_per_node
        self.ranks_per_node_source = self.nvl_domain_source = "stand-in"
        self.nvl_domain_spans_nodes = False
        self.nvl_domain_size = ranks_per_node

    def node_of(self, rank: int) -> int:
        return rank // self.ranks_per_node

    def describe(self) -> str:
        return (f"rank {self.rank} of {self.num_ranks}: {self.num_nodes} node(s) of {self.ranks_per_node} "
                f"({self.ranks_per_node_source}), NVLink domain of {self.nvl_domain_size} ({self.nvl_domain_source})")

    __repr__ = describe


class FakeNormalRuntime:
    """`_C.Runtime`'s normal-mode calls in plain torch on the CPU, written independently of
    bench/intranode_reference.py (loops over ranks, no shared helpers). Same interface as the real one: keyword
    arguments only, argument structs of uccl.ep._C; its checks are _C's own (normal_layout_check,
    normal_dispatch_bytes, normal_combine_bytes), called where the real runtime calls them. `gather(obj)` returns
    every rank's obj (dist.all_gather_object; [obj] on one rank). `calls` logs (name, {argument: value}) of every
    call, argument structs as {field: value}."""

    def __init__(self, rank: int, num_ranks: int, num_nvl_bytes: int = 1 << 30, bug: str = "", gather=None,
                 ranks_per_node: Optional[int] = None):
        self.rank, self.R, self.num_nvl_bytes, self.bug = rank, num_ranks, num_nvl_bytes, bug
        self.gather = gather if gather is not None else (lambda obj: [obj])
        self._topology = FakeTopology(rank, num_ranks, num_ranks if ranks_per_node is None else ranks_per_node)
        self.calls = []
        self._sent = None
        self._host = None

    def _log(self, name, **kwargs):
        self.calls.append((name, {k: fields(v) if hasattr(type(v), "fields") else v for k, v in kwargs.items()}))

    def bug_here(self, name: str, rank: int = 1) -> bool:
        return self.bug == name and self.rank == rank % self.R

    @staticmethod
    def _C():
        from uccl.ep._native import native
        return native()

    # -- queries ------------------------------------------------------------------------------------------
    def check_errors(self):
        """As the runtime: a bad expert id the layout kernel recorded, or a bad handle entry the normal-mode kernels
        recorded (the first of either), raises ArgumentError once, then clears."""
        self._log("check_errors")
        bad, self._bad_expert = getattr(self, "_bad_expert", None), None
        handle_error, self._handle_error = getattr(self, "_handle_error", None), None
        if bad is not None:
            t, k, e = bad
            raise self._C().ArgumentError(f"get_dispatch_layout on rank {self.rank}: topk_idx[{t}][{k}] holds expert "
                                          f"id {e}; expected -1 (no expert) or an id in [0, num_experts). The call "
                                          f"skipped that entry and went on")
        if handle_error is not None:
            raise self._C().ArgumentError(handle_error)

    # -- handle checks: the kernels' rules and words, from _C ---------------------------------------------------
    def _record_handle(self, op: int, field: int, peer: int, value: int = 0, row: int = -1, col: int = -1):
        """As a kernel's recordError: the first record stays."""
        if getattr(self, "_handle_error", None) is not None:
            return
        C = self._C()
        detail = (field << 32) | (value & 0xFFFFFFFF)
        is_arg, text = C.kernel_error_text(code=C.kBadHandle, op=op, peer=peer, detail=detail, token=row,
                                           topk_col=col, rank=self.rank, num_ranks=self.R)
        assert is_arg, text
        self._handle_error = text

    def _reject_prefix(self, op: int, entry) -> bool:
        """Records a rejected rank_prefix_matrix entry (row, col, value); whether there was one."""
        if entry is None:
            return False
        row, col, value = entry
        self._record_handle(op, self._C().kHandleRankPrefixMatrix, self.rank, value, row, col)
        return True

    def _voided_by_peers(self, op: int, rejected, rows_from) -> bool:
        """rejected[s]: rank s voided the call. A rank that takes rows from one records it (kHandleOfPeer)."""
        lost = [s for s in range(self.R) if s != self.rank and rejected[s] and rows_from(s) > 0]
        for s in lost:
            self._record_handle(op, self._C().kHandleOfPeer, s)
        return bool(lost)

    def destroy(self):
        pass

    def topology(self):
        self._log("topology")
        return self._topology

    def _check_normal_mode(self, call: str) -> None:
        """What the runtime refuses before it checks any argument: UcclError."""
        if self.num_nvl_bytes == 0:
            raise self._C().UcclError(f"{call}: normal mode needs an NVLink buffer; the buffer was built with "
                                      f"num_nvl_bytes=0")
        if self.R % self._topology.ranks_per_node:
            raise self._C().UcclError(f"{call}: normal mode across nodes needs whole nodes")

    @property
    def _internode(self) -> int:
        """Across nodes (no NVLink domain spans them): the node size, else 0."""
        t = self._topology
        return t.ranks_per_node if t.nvl_domain_size < self.R else 0

    def _forward_map(self, sources) -> tuple:
        """As the forwarders (src/kernels/internode.hpp): the records this rank forwards, by source node, then the
        source's token order; per record the token's position among the source's tokens to each rank of this node
        (-1 where it skips that rank), the source node, and the source's token index."""
        P = self._internode
        own, local = divmod(self.rank, P)
        rows, tokens = [], []
        for a in range(self.R // P):
            if a == own:
                continue
            in_rank = sources[a * P + local]["in_rank"][:, own * P:(own + 1) * P]
            seen = [0] * P
            for t in range(in_rank.size(0)):
                if not bool(in_rank[t].any()):
                    continue
                row = []
                for m in range(P):
                    row.append(seen[m] if bool(in_rank[t, m]) else -1)
                    seen[m] += int(bool(in_rank[t, m]))
                rows.append(row + [a])
                tokens.append(t)
        return rows, tokens

    def _check_fits(self, call: str, need: int) -> None:
        if need > self.num_nvl_bytes:
            raise self._C().ArgumentError(f"{call}: num_nvl_bytes = {self.num_nvl_bytes}; this call needs {need} "
                                          f"bytes")

    # -- layout -------------------------------------------------------------------------------------------
    def check_dispatch_layout(self, *, args):
        """As the runtime: the checks once, before the outputs are sized; the launch skips them for these sizes."""
        self._log("check_dispatch_layout", args=args)
        self._C().normal_layout_check(num_ranks=self.R, args=args)
        self._checked_layout = (args.num_tokens, args.num_topk, args.num_experts)

    def get_dispatch_layout(self, *, args, stream):
        self.check_errors()  # as the runtime: a recorded failure raises before the launch
        self._log("get_dispatch_layout", args=args, stream=stream)
        if getattr(self, "_checked_layout", None) != (args.num_tokens, args.num_topk, args.num_experts):
            self.check_dispatch_layout(args=args)
        R, T, E = self.R, args.num_tokens, args.num_experts
        epr = E // R
        idx = memory(args.topk_idx, torch.int64, (T, args.num_topk))
        in_rank = torch.zeros(T, R, dtype=torch.bool)
        per_expert = torch.zeros(E, dtype=torch.int32)
        for t in range(T):
            for k, e in enumerate(idx[t].tolist()):
                if (e < -1 or e >= E) and getattr(self, "_bad_expert", None) is None:
                    self._bad_expert = (t, k, e)  # the kernel records the first bad entry and skips it
                if 0 <= e < E:
                    in_rank[t, e // epr] = True
                    per_expert[e] += 1
        if self.bug_here("layout") and T:
            in_rank[0, 0] = not bool(in_rank[0, 0])
        memory(args.is_token_in_rank, torch.bool, (T, R)).copy_(in_rank)
        memory(args.num_tokens_per_rank, torch.int32, (R,)).copy_(in_rank.sum(0).int())
        memory(args.num_tokens_per_expert, torch.int32, (E,)).copy_(per_expert)
        topo = self._topology
        if args.num_tokens_per_rdma_rank:
            rpn = topo.ranks_per_node
            memory(args.num_tokens_per_rdma_rank, torch.int32, (topo.num_nodes,)).copy_(
                torch.stack([in_rank[:, n * rpn:(n + 1) * rpn].any(1).sum() for n in range(topo.num_nodes)]).int())

    # -- dispatch -----------------------------------------------------------------------------------------
    def dispatch_send(self, *, args, cached, num_sms, stream, num_max_rdma_chunked_send_tokens=0,
                      num_max_rdma_chunked_recv_tokens=0):
        self._log("dispatch_send", args=args, cached=cached, num_sms=num_sms, stream=stream)
        self._check_normal_mode("dispatch")
        self._check_fits("dispatch", int(self._C().normal_dispatch_bytes(num_ranks=self.R, args=args, cached=cached)))
        if cached and ((args.send_pos and not self._internode) or args.num_tokens_per_expert):
            raise RuntimeError("fake runtime: a cached dispatch takes no num_tokens_per_expert, nor send_pos within one "
                               "NVLink domain")
        R, T, K, S = self.R, args.num_tokens, args.num_topk, args.num_scales
        strides = (args.x_scales_token_stride, args.x_scales_col_stride)
        if self.bug_here("scales"):  # reads scales as if they were row-major
            strides = (S, 1)
        E = args.num_experts
        mine = dict(x=memory(args.x, torch.uint8, (T, args.hidden_bytes), (args.x_row_stride, 1)).clone(),
                    scales=memory(args.x_scales, torch.int32, (T, S), strides).clone() if S else None,
                    idx=memory(args.topk_idx, torch.int64, (T, K)).clone() if K else None,
                    w=memory(args.topk_weights, torch.float32, (T, K)).clone() if K else None,
                    in_rank=memory(args.is_token_in_rank, torch.bool, (T, R)).clone(),
                    tpe=memory(args.num_tokens_per_expert, torch.int32, (E,)).clone() if not cached else None)
        sources = self.gather(mine)
        counts = torch.stack([s["in_rank"].sum(0) for s in sources])  # [source, destination]
        prefix = torch.cumsum(counts, 0).int()
        voided = False
        self._cached_prefix = args.rank_prefix_matrix
        if cached:
            # The kernels' rules (intranode_handle.hpp) before anything moves; a bad entry voids the call everywhere.
            given = memory(args.rank_prefix_matrix, torch.int32, (R, R)).clone()
            flat, planned = given.flatten().tolist(), mine["in_rank"].sum(0).tolist()
            C = self._C()
            entries = (C.dispatch_prefix_entries(rank_prefix_matrix=flat, num_ranks=R, rank=self.rank, col=r,
                                                 planned=int(planned[r])) for r in range(R))
            bad = next((e for e in entries if e is not None), None)
            rejected = self.gather(bad is not None)  # the peers learn of a void before they would wait
            voided = self._reject_prefix(C.kOpCachedDispatch, bad)
            if not voided and not any(rejected) and not torch.equal(given, prefix):
                raise RuntimeError(f"fake runtime, rank {self.rank}: cached dispatch with a prefix matrix that meets "
                                   f"the rules but does not match is_token_in_rank")
        if not cached:
            written = prefix.clone()
            if self.bug_here("prefix"):
                written[0, self.rank] += 1
            memory(args.rank_prefix_matrix, torch.int32, (R, R)).copy_(written)
            if self._internode:
                if not args.recv_gbl_rank_prefix_sum:
                    raise RuntimeError("fake runtime: across nodes the handle's recv_gbl_rank_prefix_sum is an output")
                memory(args.recv_gbl_rank_prefix_sum, torch.int32, (R,)).copy_(prefix[:, self.rank])
        if not cached or self._internode:  # across nodes every record carries its positions: cached calls too
            pos = torch.full((T, R), -1, dtype=torch.int32)
            for r in range(R):
                n = 0
                for t in range(T):
                    if bool(mine["in_rank"][t, r]):
                        pos[t, r] = n
                        n += 1
            memory(args.send_pos, torch.int32, (T, R)).copy_(pos)
        # The call's layout, kept for dispatch_recv as the real runtime keeps it.
        self._sent = dict(sources=sources, hidden_bytes=args.hidden_bytes, S=S, K=K, E=E, cached=cached,
                          worst=args.num_worst_tokens, voided=voided, rejected=rejected if cached else None,
                          forward=self._forward_map(sources) if self._internode else ([], []))
        self._forward_rows = len(self._sent["forward"][1]) + (1 if self.bug_here("forward") else 0)
        self._host = None
        if not cached and args.num_worst_tokens == 0:
            epr = E // R
            per_expert = [sum(int(s["tpe"][self.rank * epr + e]) for s in sources) for e in range(epr)]
            self._host = (int(prefix[R - 1, self.rank]), per_expert)

    def dispatch_wait_counts(self):
        self._log("dispatch_wait_counts")
        if self._host is None:
            raise self._C().UcclError(f"fake runtime, rank {self.rank}: dispatch_wait_counts without a non-cached "
                                      f"dispatch_send without num_worst_tokens before it")
        num_recv, per_expert = self._host
        self._host = None
        if self.bug_here("count") and per_expert:
            per_expert = [per_expert[0] + 1] + per_expert[1:]
        return num_recv, per_expert

    def dispatch_forward_count(self):
        self._log("dispatch_forward_count")
        return self._forward_rows if self._internode else 0

    def dispatch_recv(self, *, outputs, num_sms, num_max_nvl_chunked_send_tokens, stream):
        self._log("dispatch_recv", outputs=outputs, num_sms=num_sms,
                  num_max_nvl_chunked_send_tokens=num_max_nvl_chunked_send_tokens, stream=stream)
        st, self._sent = self._sent, None
        if st is None:
            raise self._C().UcclError(f"fake runtime, rank {self.rank}: dispatch_recv without dispatch_send")
        hidden_bytes, num_scales, K, E = st["hidden_bytes"], st["S"], st["K"], st["E"]
        rows = outputs.num_recv_tokens
        if st["voided"]:
            return
        fwd_rows, fwd_tokens = st["forward"]
        if self._internode and outputs.num_forward:
            if len(fwd_rows) > outputs.num_forward:
                raise RuntimeError(f"fake runtime, rank {self.rank}: {len(fwd_rows)} records forwarded, the forward "
                                   f"map holds {outputs.num_forward}")
            if fwd_rows:
                P = self._internode
                memory(outputs.forward_positions, torch.int32, (outputs.num_forward, P + 1))[:len(fwd_rows)] = \
                    torch.tensor(fwd_rows, dtype=torch.int32)
                memory(outputs.forward_source_token, torch.int32, (outputs.num_forward,))[:len(fwd_tokens)] = \
                    torch.tensor(fwd_tokens, dtype=torch.int32)
        if st["cached"]:  # as the unpack kernel: the end of this rank's column, then the sources that voided the call
            C = self._C()
            given = memory(self._cached_prefix, torch.int32, (self.R, self.R))
            end = C.dispatch_receive_end(rank_prefix_matrix=given.flatten().tolist(), num_ranks=self.R, rank=self.rank,
                                         out_rows=rows, worst_tokens=st["worst"] > 0)
            me = self.rank
            def rows_from(s):
                return int(given[s, me]) - (int(given[s - 1, me]) if s else 0)

            if self._reject_prefix(C.kOpCachedDispatch, end) or self._voided_by_peers(
                    C.kOpCachedDispatch, st["rejected"], rows_from):
                return
        if rows and (outputs.recv_x % 16):
            raise RuntimeError(f"fake runtime: dispatch: recv_x at {outputs.recv_x:#x} is not 16-byte aligned")
        if K and not outputs.recv_topk_idx:
            raise RuntimeError("fake runtime: dispatch: top-k ids were sent but recv_topk_idx is null")
        R = self.R
        epr = E // R if E else 0
        xs, scs, ids, ws, src = [], [], [], [], []
        for s in st["sources"]:
            for t in range(s["x"].size(0)):
                if not bool(s["in_rank"][t, self.rank]):
                    continue
                xs.append(s["x"][t])
                src.append(t)
                if num_scales:
                    scs.append(s["scales"][t])
                if K:
                    local = [e - self.rank * epr if e >= 0 and e // epr == self.rank else -1
                             for e in s["idx"][t].tolist()]
                    ids.append(local)
                    keep_all = self.bug_here("weights")
                    ws.append([w if (i >= 0 or keep_all) else 0.0 for w, i in zip(s["w"][t].tolist(), local)])
        n = len(xs)
        if n > rows:
            raise RuntimeError(f"fake runtime, rank {self.rank}: {n} rows received, the outputs hold {rows}")
        if self.bug_here("swap") and n >= 2 and not st["cached"]:
            xs[0], xs[1] = xs[1], xs[0]
        if self.bug_here("cached") and n >= 2 and st["cached"]:
            xs[0], xs[1] = xs[1], xs[0]
        if n:
            memory(outputs.recv_x, torch.uint8, (rows, hidden_bytes))[:n] = torch.stack(xs)
            if outputs.recv_src_idx:
                memory(outputs.recv_src_idx, torch.int32, (rows,))[:n] = torch.tensor(src, dtype=torch.int32)
            if num_scales:
                memory(outputs.recv_x_scales, torch.int32, (rows, num_scales))[:n] = torch.stack(scs)
            if K:
                memory(outputs.recv_topk_idx, torch.int64, (rows, K))[:n] = torch.tensor(ids, dtype=torch.int64)
                memory(outputs.recv_topk_weights, torch.float32, (rows, K))[:n] = torch.tensor(ws, dtype=torch.float32)
        if st["worst"] and rows > n:
            if outputs.recv_src_idx:
                memory(outputs.recv_src_idx, torch.int32, (rows,))[n:] = 0 if self.bug_here("worst") else -1
            if K:
                memory(outputs.recv_topk_idx, torch.int64, (rows, K))[n:] = -1
                memory(outputs.recv_topk_weights, torch.float32, (rows, K))[n:] = 0

    # -- combine ------------------------------------------------------------------------------------------
    def combine(self, *, args, num_sms, num_max_nvl_chunked_send_tokens, stream, num_max_rdma_chunked_send_tokens=0,
                num_max_rdma_chunked_recv_tokens=0):
        self._log("combine", args=args, num_sms=num_sms,
                  num_max_nvl_chunked_send_tokens=num_max_nvl_chunked_send_tokens, stream=stream)
        self._check_normal_mode("combine")
        self._check_fits("combine", int(self._C().normal_combine_bytes(num_ranks=self.R, args=args)))
        R, T, K, hidden, rows = self.R, args.num_tokens, args.num_topk, args.hidden, args.num_recv_tokens
        mine = dict(x=memory(args.x, torch.bfloat16, (rows, hidden)).clone(),
                    w=memory(args.topk_weights, torch.float32, (rows, K)).clone() if K else None)
        pos = memory(args.send_pos, torch.int32, (T, R))
        prefix = memory(args.rank_prefix_matrix, torch.int32, (R, R))
        # The kernels' rules (intranode_handle.hpp): a bad matrix entry voids the call everywhere.
        C = self._C()
        flat = prefix.flatten().tolist()
        rows_checked = (C.combine_prefix_row(rank_prefix_matrix=flat, num_ranks=R, rank=self.rank, row=s,
                                             num_recv_tokens=rows, num_tokens=T) for s in range(R))
        bad = None if self.bug_here("trust_handle") else next((e for e in rows_checked if e is not None), None)
        mine["rejected"] = bad is not None
        holders = self.gather(mine)

        def sent_to(r):
            return int(prefix[self.rank, r]) - (int(prefix[self.rank - 1, r]) if self.rank else 0)

        if self._reject_prefix(C.kOpCombine, bad) or self._voided_by_peers(
                C.kOpCombine, [h["rejected"] for h in holders], sent_to):
            return
        acc = torch.zeros(T, hidden)
        acc_w = torch.zeros(T, K)
        for t in range(T):
            for r in range(R):
                p = int(pos[t, r])
                if p != -1 and not C.send_pos_ok(pos=p, sent_to=sent_to(r)):
                    self._record_handle(C.kOpCombine, C.kHandleSendPos, self.rank, p, t, r)
                    continue
                if p < 0:
                    continue
                row = (int(prefix[self.rank - 1, r]) if self.rank else 0) + p
                acc[t] += holders[r]["x"][row].float()
                if K:
                    acc_w[t] += holders[r]["w"][row]
        if args.bias_0:
            acc += memory(args.bias_0, torch.bfloat16, (T, hidden)).float()
        if args.bias_1 and not self.bug_here("bias", 0):
            acc += memory(args.bias_1, torch.bfloat16, (T, hidden)).float()
        if self.bug_here("combine", 0) and T >= 2:
            acc[[0, 1]] = acc[[1, 0]]
        memory(args.combined_x, torch.bfloat16, (T, hidden)).copy_(acc.to(torch.bfloat16))
        if args.combined_topk_weights:
            memory(args.combined_topk_weights, torch.float32, (T, K)).copy_(acc_w)


def make_buffer(runtime, group=None):
    """A uccl.ep.Buffer over `runtime` on the CPU, as the constructor would leave it (the constructor itself
    needs CUDA). Needs install_fake_cuda first."""
    from uccl.ep import Buffer
    from uccl.ep.buffer import internode_node_size
    b = Buffer.__new__(Buffer)
    b.__dict__.update(_runtime=runtime, rank=runtime.rank, group_size=runtime.R, num_nvl_bytes=runtime.num_nvl_bytes,
                      num_rdma_bytes=0, low_latency_mode=False, explicitly_destroy=False, group=group, comm=None,
                      device=torch.device("cpu"), _comm_stream=torch.cuda.Stream(name="comm"),
                      _internode_node_size=internode_node_size(runtime._topology))
    return b


def intranode_checks():
    """The intranode correctness checks: parse_args(argv), Checker(args, ep, buf, d, device), run_checks(args,
    chk, d), FP8_DTYPE, from tests/python/gpu/intranode_checks.py (the GPU test runs the same module)."""
    import intranode_checks as checks
    return checks


# ---------------------------------------------------------------------------------------------------------------
# One rank of the checks against the stand-in (run through scripts/launch.py)
# ---------------------------------------------------------------------------------------------------------------
def fake_rank_main(argv):
    """One rank: intranode_checks' run_checks, or with --handle-checks first intranode_handle_checks' forgeries."""
    import torch.distributed as dist
    handle_checks = "--handle-checks" in argv
    argv = [a for a in argv if a != "--handle-checks"]
    install_fake_cuda()
    import uccl.ep as ep
    from uccl.ep import _validate as V
    checks = intranode_checks()
    checks.FP8_DTYPE = torch.uint8  # torch 1.13 has no float8: FP8 codes travel as uint8
    V.FP8_DTYPES = V.FP8_DTYPES + (torch.uint8,)
    args = checks.parse_args(argv)
    env = os.environ
    d = types.SimpleNamespace(rank=int(env["RANK"]), world=int(env["WORLD_SIZE"]),
                              local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
                              local_world=int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])))
    dist.init_process_group("gloo", init_method="env://", rank=d.rank, world_size=d.world)

    def gather(obj):
        out = [None] * d.world
        dist.all_gather_object(out, obj)
        return out

    rpn = int(env["UCCL_EP_RANKS_PER_NODE"]) if env.get("UCCL_EP_RANKS_PER_NODE") else None  # launch.py's
    rt = FakeNormalRuntime(d.rank, d.world, args.nvl_bytes, os.environ.get("FAKE_BUG", ""), gather=gather,
                           ranks_per_node=rpn)
    chk = checks.Checker(args, ep, make_buffer(rt, dist.group.WORLD), d, torch.device("cpu"))
    chk.setup(args.seed)
    if handle_checks:
        import intranode_handle_checks
        chk.check_layout()
        intranode_handle_checks.HandleChecks(chk).run(d)
    else:
        checks.run_checks(args, chk, d)
    dist.barrier()
    if d.rank == 0:
        print("all checks passed", flush=True)
    dist.destroy_process_group()


def run_fake_checks(nproc: int, bug: str, *check_args, ranks_per_node: int = 0):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", FAKE_BUG=bug)
    nodes = ["--ranks-per-node", str(ranks_per_node)] if ranks_per_node else []
    cmd = [sys.executable, LAUNCH, "--nproc", str(nproc), *nodes, "--timeout", "300", "--", os.path.abspath(__file__),
           "--fake-rank", "--num-tokens", "12", "--hidden", "512", "--num-topk", "3", "--num-experts", str(4 * nproc),
           "--num-masked", "4", *check_args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)


def test_checks_pass_against_the_stand_in_two_ranks(native):
    r = run_fake_checks(2, "")
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-4000:]
    assert "[rank 0]   ok get_dispatch_layout" in out
    assert "[rank 0] checks: 40 cases" in out
    assert "[rank 0] all checks passed" in out


def test_checks_pass_against_the_stand_in_three_ranks(native):
    r = run_fake_checks(3, "", "--quick")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "[rank 0] checks: 6 cases" in r.stdout and "[rank 0] all checks passed" in r.stdout


@pytest.mark.parametrize("nproc, ranks_per_node", [(2, 1), (4, 2)])
def test_checks_pass_against_the_stand_in_across_nodes(native, nproc, ranks_per_node):
    """Across emulated nodes (no NVLink domain spans them) the handle has 9 elements: the checks find the receive
    prefix sum fourth from the end and a forward map with a row per record this rank forwards (src/kernels/
    internode.hpp), and the rest of the calls as within one node."""
    r = run_fake_checks(nproc, "", "--quick", "--expect-nodes", str(nproc // ranks_per_node),
                        ranks_per_node=ranks_per_node)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "[rank 0] checks: 6 cases" in r.stdout and "[rank 0] all checks passed" in r.stdout


def test_checks_catch_a_wrong_forward_map(native):
    r = run_fake_checks(2, "forward", "--quick", ranks_per_node=1)
    assert r.returncode != 0, r.stdout[-3000:]
    assert "handle[6] (forward map) has" in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.parametrize("nproc", [2, 3])
def test_forged_handle_checks_pass_against_the_stand_in(native, nproc):
    """tests/python/gpu/intranode_handle_checks.py against the stand-in, which applies the kernels' handle rules and
    words through _C: each forgery raises at the next call naming the entry, and honest calls pass after it."""
    r = run_fake_checks(nproc, "", "--handle-checks")
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-4000:]
    for what in ("combine, rank_prefix_matrix entry past the receive count", "combine, send_pos entry -2",
                 "cached dispatch, rank_prefix_matrix column end past the rows",
                 "combine with rank 0's rank_prefix_matrix forged", "combine with recv_src_idx forged"):
        assert f"[rank 0]   ok {what}" in out, out[-4000:]
    assert "[rank 0] all checks passed" in out


def test_forged_handle_checks_catch_a_runtime_that_trusts_the_matrix(native):
    r = run_fake_checks(2, "trust_handle", "--handle-checks")
    assert r.returncode != 0, r.stdout[-3000:]
    # Rank 1 only hears of rank 0's void, not of its own entry.
    assert ("[rank 1] combine, rank_prefix_matrix entry past the receive count: the error does not say "
            "['handle[0] (rank_prefix_matrix)[1][1] holds" in r.stdout), r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.parametrize("bug,message", [
    ("layout", "[rank 1] get_dispatch_layout(async=False, previous=False): num_tokens_per_rank"),
    ("swap", "[rank 1] case 0 (bf16, align 1, bias 0, chunk default), dispatch: row 0: got (rank"),
    ("count", "[rank 1] case 0 (bf16, align 1, bias 0, chunk default), dispatch: num_recv_tokens_per_expert_list"),
    ("prefix", "[rank 1] case 0 (bf16, align 1, bias 0, chunk default), dispatch: handle[0] (rank prefix matrix)"),
    ("weights", "[rank 1] case 1 (bf16_strided+topk+async, align 4, bias 1, chunk 4), dispatch: recv_topk_weights row"),
    # Rank 1 sends wrong scales, so whichever rank checks first names itself.
    ("scales", "] case 3 (fp8_colmajor+topk+async+previous+alloc_on_comm, align 1, bias 0, chunk 12), dispatch: row"),
    ("worst", "[rank 1] case 2 (fp8+previous+worst, align 128, bias 2, chunk 8), dispatch: recv_src_idx padding"),
    ("cached", "[rank 1] case 0 (bf16, align 1, bias 0, chunk default), cached dispatch: recv_x"),
    ("combine", "[rank 0] case 0 (bf16, align 1, bias 0, chunk default), combine: calc_diff"),
    ("bias", "[rank 0] case 2 (fp8+previous+worst, align 128, bias 2, chunk 8), combine: calc_diff"),
])
def test_checks_catch_a_wrong_runtime(native, bug, message):
    r = run_fake_checks(2, bug, "--quick")
    assert r.returncode != 0, r.stdout[-3000:]
    assert message in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]
    assert "launch.py: failed: rank" in r.stderr


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--fake-rank":
    fake_rank_main(sys.argv[2:])
