"""bench/test_intranode.py on the CPU, through the real uccl.ep.Buffer: a stand-in for the native runtime's
normal-mode calls (FakeNormalRuntime) and for the few torch.cuda pieces Buffer touches (streams, events), run by
scripts/launch.py with 2 and 3 ranks over gloo. The stand-in follows the interface of `_C.Runtime`: integers only,
pointers into CPU memory read and written through ctypes, every call collective across ranks (gloo all_gathers
stand in for NVLink). So Buffer's argument order, allocation and handle layout are exercised, not only the bench.
FAKE_BUG=<name> makes the stand-in wrong in one way on one rank; the bench must then fail naming that rank.

Also the seam the other CPU tests use: install_fake_cuda, FakeNormalRuntime (with a call log), make_buffer.
"""
import contextlib
import ctypes
import os
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _p in (os.path.join(REPO, "bench"), os.path.join(REPO, "python")):
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
    """Points torch.cuda's stream/event functions at stand-ins (setattr_: monkeypatch.setattr in tests)."""
    fc = FakeCuda()
    for name, value in (("Event", FakeEvent), ("Stream", FakeStream), ("current_stream", fc.current_stream),
                        ("stream", fc.stream), ("synchronize", lambda *a, **k: None),
                        ("is_current_stream_capturing", lambda: False)):
        setattr_(torch.cuda, name, value)
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


class FakeNormalRuntime:
    """`_C.Runtime`'s normal-mode calls in plain torch on the CPU, written independently of
    bench/intranode_reference.py (loops over ranks, no shared helpers). `gather(obj)` returns every rank's obj
    (dist.all_gather_object; [obj] on one rank). `calls` logs (name, args) of every call."""

    def __init__(self, rank: int, num_ranks: int, bug: str = "", gather=None, single_domain: bool = True,
                 num_nodes: int = 1):
        self.rank, self.R, self.bug = rank, num_ranks, bug
        self.gather = gather if gather is not None else (lambda obj: [obj])
        self.single_domain, self.nodes = single_domain, num_nodes
        self.calls = []
        self._sent = None
        self._host = None

    def _log(self, name, *args):
        self.calls.append((name, args))

    def bug_here(self, name: str, rank: int = 1) -> bool:
        return self.bug == name and self.rank == rank % self.R

    # -- queries ------------------------------------------------------------------------------------------
    def check_errors(self):
        self._log("check_errors")

    def destroy(self):
        pass

    def normal_single_domain(self):
        self._log("normal_single_domain")
        return self.single_domain

    def num_nodes(self):
        self._log("num_nodes")
        return self.nodes

    # -- the argument checks of src/runtime/buffer.cpp (so a call the real runtime refuses fails here too) -----
    def _check_layout(self, call, num_experts, num_topk, *row_bytes):
        if num_experts < 0 or num_experts % self.R or num_experts > 8192:
            raise RuntimeError(f"fake runtime: {call}: num_experts = {num_experts} (expected a multiple of the "
                               f"{self.R} ranks, at most 8192; 0 when the call counts no experts)")
        if not 0 <= num_topk <= 16:
            raise RuntimeError(f"fake runtime: {call}: num_topk = {num_topk} (expected 0 to 16)")
        if any(b % 16 for b in row_bytes):
            raise RuntimeError(f"fake runtime: {call}: a row of {row_bytes} bytes is not a multiple of 16")

    @staticmethod
    def _check_aligned(call, ptr, stride, what):
        if ptr % 16 or stride % 16:
            raise RuntimeError(f"fake runtime: {call}: {what} must start on a 16-byte boundary with rows a multiple of "
                               f"16 bytes apart (address {ptr:#x}, row stride {stride})")

    def _data_off(self, num_experts):
        a = lambda v: (v + 127) // 128 * 128  # noqa: E731
        return a(a(a(4096 + self.R * 8) + self.R * 4) + num_experts * 4)

    def normal_dispatch_bytes(self, num_tokens, hidden_bytes, scale_bytes, num_topk, num_experts):
        self._log("normal_dispatch_bytes", num_tokens, hidden_bytes, scale_bytes, num_topk, num_experts)
        self._check_layout("dispatch", num_experts, num_topk, hidden_bytes)
        stride = (hidden_bytes + scale_bytes + num_topk * 12 + 15) // 16 * 16
        lists = (self._data_off(num_experts) + self.R * num_tokens * 4 + 127) // 128 * 128
        return lists + num_tokens * stride

    def normal_combine_bytes(self, num_recv_rows, hidden, num_topk, num_experts):
        self._log("normal_combine_bytes", num_recv_rows, hidden, num_topk, num_experts)
        self._check_layout("combine", num_experts, num_topk, hidden * 2)
        return self._data_off(num_experts) + num_recv_rows * ((hidden * 2 + num_topk * 4 + 15) // 16 * 16)

    # -- layout -------------------------------------------------------------------------------------------
    def normal_layout(self, topk_idx, num_tokens, num_topk, num_experts, tokens_per_rank, tokens_per_node,
                      tokens_per_expert, is_token_in_rank, stream):
        self._log("normal_layout", topk_idx, num_tokens, num_topk, num_experts, tokens_per_rank, tokens_per_node,
                  tokens_per_expert, is_token_in_rank, stream)
        self._check_layout("get_dispatch_layout", num_experts, num_topk)
        if num_experts == 0:
            raise RuntimeError("fake runtime: get_dispatch_layout: num_experts must be positive")
        R, T = self.R, num_tokens
        epr = num_experts // R
        idx = memory(topk_idx, torch.int64, (T, num_topk))
        in_rank = torch.zeros(T, R, dtype=torch.bool)
        per_expert = torch.zeros(num_experts, dtype=torch.int32)
        for t in range(T):
            for e in idx[t].tolist():
                if e >= 0:
                    in_rank[t, e // epr] = True
                    per_expert[e] += 1
        if self.bug_here("layout") and T:
            in_rank[0, 0] = not bool(in_rank[0, 0])
        memory(is_token_in_rank, torch.bool, (T, R)).copy_(in_rank)
        memory(tokens_per_rank, torch.int32, (R,)).copy_(in_rank.sum(0).int())
        memory(tokens_per_expert, torch.int32, (num_experts,)).copy_(per_expert)
        if tokens_per_node:
            rpn = R // self.nodes
            memory(tokens_per_node, torch.int32, (self.nodes,)).copy_(
                torch.stack([in_rank[:, n * rpn:(n + 1) * rpn].any(1).sum() for n in range(self.nodes)]).int())

    # -- dispatch -----------------------------------------------------------------------------------------
    def normal_dispatch_send(self, x, x_row_stride, scales, num_scales, scale_token_stride, scale_col_stride,
                             topk_idx, topk_weights, is_token_in_rank, tokens_per_expert, num_tokens, hidden_bytes,
                             num_topk, num_experts, rank_prefix_matrix, send_pos, cached, report_to_host, num_sms,
                             stream):
        self._log("normal_dispatch_send", x, x_row_stride, scales, num_scales, scale_token_stride,
                  scale_col_stride, topk_idx, topk_weights, is_token_in_rank, tokens_per_expert, num_tokens,
                  hidden_bytes, num_topk, num_experts, rank_prefix_matrix, send_pos, cached, report_to_host,
                  num_sms, stream)
        self._check_layout("dispatch", num_experts, num_topk, hidden_bytes)
        if topk_idx and num_experts == 0:
            raise RuntimeError("fake runtime: dispatch: top-k ids need num_experts > 0")
        if num_tokens:
            self._check_aligned("dispatch", x, x_row_stride, "x")
        if cached and (send_pos or tokens_per_expert or report_to_host):
            raise RuntimeError("fake runtime: a cached dispatch takes no send_pos, tokens_per_expert or report")
        R, T, K, S = self.R, num_tokens, num_topk, num_scales
        strides = (scale_token_stride, scale_col_stride)
        if self.bug_here("scales"):  # reads scales as if they were row-major
            strides = (S, 1)
        mine = dict(x=memory(x, torch.uint8, (T, hidden_bytes), (x_row_stride, 1)).clone(),
                    scales=memory(scales, torch.int32, (T, S), strides).clone() if S else None,
                    idx=memory(topk_idx, torch.int64, (T, K)).clone() if K else None,
                    w=memory(topk_weights, torch.float32, (T, K)).clone() if K else None,
                    in_rank=memory(is_token_in_rank, torch.bool, (T, R)).clone(),
                    tpe=memory(tokens_per_expert, torch.int32, (num_experts,)).clone() if tokens_per_expert else None)
        sources = self.gather(mine)
        counts = torch.stack([s["in_rank"].sum(0) for s in sources])  # [source, destination]
        prefix = torch.cumsum(counts, 0).int()
        if cached:
            given = memory(rank_prefix_matrix, torch.int32, (R, R)).clone()
            if not torch.equal(given, prefix):
                raise RuntimeError(f"fake runtime, rank {self.rank}: cached dispatch with a prefix matrix that does "
                                   f"not match is_token_in_rank")
        else:
            written = prefix.clone()
            if self.bug_here("prefix"):
                written[0, self.rank] += 1
            memory(rank_prefix_matrix, torch.int32, (R, R)).copy_(written)
            pos = torch.full((T, R), -1, dtype=torch.int32)
            for r in range(R):
                n = 0
                for t in range(T):
                    if bool(mine["in_rank"][t, r]):
                        pos[t, r] = n
                        n += 1
            memory(send_pos, torch.int32, (T, R)).copy_(pos)
        self._sent = dict(sources=sources, hidden_bytes=hidden_bytes, S=S, K=K, E=num_experts, cached=cached)
        if report_to_host:
            epr = num_experts // R
            per_expert = [sum(int(s["tpe"][self.rank * epr + e]) for s in sources) for e in range(epr)]
            self._host = (int(prefix[R - 1, self.rank]), per_expert)

    def normal_dispatch_wait(self, num_experts):
        self._log("normal_dispatch_wait", num_experts)
        if self._host is None:
            raise RuntimeError(f"fake runtime, rank {self.rank}: normal_dispatch_wait without a reporting send")
        num_recv, per_expert = self._host
        self._host = None
        if self.bug_here("count") and per_expert:
            per_expert = [per_expert[0] + 1] + per_expert[1:]
        return num_recv, per_expert

    def normal_dispatch_recv(self, hidden_bytes, num_scales, num_topk, num_experts, rank_prefix_matrix, recv_x,
                             recv_scales, recv_topk_idx, recv_topk_weights, recv_src_idx, num_out_rows, worst,
                             num_sms, send_tokens, stream):
        self._log("normal_dispatch_recv", hidden_bytes, num_scales, num_topk, num_experts, rank_prefix_matrix,
                  recv_x, recv_scales, recv_topk_idx, recv_topk_weights, recv_src_idx, num_out_rows, worst, num_sms,
                  send_tokens, stream)
        self._check_layout("dispatch", num_experts, num_topk, hidden_bytes)
        if recv_topk_idx and num_experts == 0:
            raise RuntimeError("fake runtime: dispatch: local expert ids need num_experts > 0")
        if num_out_rows:
            self._check_aligned("dispatch", recv_x, hidden_bytes, "recv_x")
        st, self._sent = self._sent, None
        if st is None or (st["hidden_bytes"], st["S"], st["K"], st["E"]) != (hidden_bytes, num_scales, num_topk,
                                                                           num_experts):
            raise RuntimeError(f"fake runtime, rank {self.rank}: normal_dispatch_recv does not match the send "
                               f"before it")
        R, K, rows = self.R, num_topk, num_out_rows
        epr = num_experts // R
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
            memory(recv_x, torch.uint8, (rows, hidden_bytes))[:n] = torch.stack(xs)
            if recv_src_idx:
                memory(recv_src_idx, torch.int32, (rows,))[:n] = torch.tensor(src, dtype=torch.int32)
            if num_scales:
                memory(recv_scales, torch.int32, (rows, num_scales))[:n] = torch.stack(scs)
            if K and recv_topk_idx:
                memory(recv_topk_idx, torch.int64, (rows, K))[:n] = torch.tensor(ids, dtype=torch.int64)
                memory(recv_topk_weights, torch.float32, (rows, K))[:n] = torch.tensor(ws, dtype=torch.float32)
        if worst and rows > n:
            if recv_src_idx:
                memory(recv_src_idx, torch.int32, (rows,))[n:] = 0 if self.bug_here("worst") else -1
            if K and recv_topk_idx:
                memory(recv_topk_idx, torch.int64, (rows, K))[n:] = -1
                memory(recv_topk_weights, torch.float32, (rows, K))[n:] = 0

    # -- combine ------------------------------------------------------------------------------------------
    def normal_combine(self, x, topk_weights, bias0, bias1, send_pos, rank_prefix_matrix, num_tokens,
                       num_recv_rows, hidden, num_topk, num_experts, out, out_weights, num_sms, send_tokens, stream):
        self._log("normal_combine", x, topk_weights, bias0, bias1, send_pos, rank_prefix_matrix, num_tokens,
                  num_recv_rows, hidden, num_topk, num_experts, out, out_weights, num_sms, send_tokens, stream)
        self._check_layout("combine", num_experts, num_topk, hidden * 2)
        if num_recv_rows:
            self._check_aligned("combine", x, hidden * 2, "x")
        if num_tokens:
            self._check_aligned("combine", out, hidden * 2, "the output")
        R, T, K = self.R, num_tokens, num_topk
        mine = dict(x=memory(x, torch.bfloat16, (num_recv_rows, hidden)).clone(),
                    w=memory(topk_weights, torch.float32, (num_recv_rows, K)).clone() if K else None)
        holders = self.gather(mine)
        pos = memory(send_pos, torch.int32, (T, R))
        prefix = memory(rank_prefix_matrix, torch.int32, (R, R))
        acc = torch.zeros(T, hidden)
        acc_w = torch.zeros(T, K)
        for t in range(T):
            for r in range(R):
                p = int(pos[t, r])
                if p < 0:
                    continue
                row = (int(prefix[self.rank - 1, r]) if self.rank else 0) + p
                acc[t] += holders[r]["x"][row].float()
                if K:
                    acc_w[t] += holders[r]["w"][row]
        if bias0:
            acc += memory(bias0, torch.bfloat16, (T, hidden)).float()
        if bias1 and not self.bug_here("bias", 0):
            acc += memory(bias1, torch.bfloat16, (T, hidden)).float()
        if self.bug_here("combine", 0) and T >= 2:
            acc[[0, 1]] = acc[[1, 0]]
        memory(out, torch.bfloat16, (T, hidden)).copy_(acc.to(torch.bfloat16))
        if out_weights:
            memory(out_weights, torch.float32, (T, K)).copy_(acc_w)


def make_buffer(runtime, num_nvl_bytes: int = 1 << 30, group=None):
    """A uccl.ep.Buffer over `runtime` on the CPU, as the constructor would leave it (the constructor itself
    needs CUDA). Needs install_fake_cuda first."""
    from uccl.ep import Buffer
    b = Buffer.__new__(Buffer)
    b.__dict__.update(_runtime=runtime, rank=runtime.rank, group_size=runtime.R, ranks_per_node=runtime.R,
                      num_nvl_bytes=num_nvl_bytes, num_rdma_bytes=0, low_latency_mode=False, num_qps_per_rank=24,
                      allow_nvlink_for_low_latency_mode=True, allow_mnnvl=False, use_fabric=False,
                      explicitly_destroy=False, enable_shrink=False, group=group, comm=None, _ll_half=0,
                      _destroyed=False, device=torch.device("cpu"), _comm_stream=torch.cuda.Stream(name="comm"))
    return b


# ---------------------------------------------------------------------------------------------------------------
# One rank of the bench against the stand-in (run through scripts/launch.py)
# ---------------------------------------------------------------------------------------------------------------
def fake_rank_main(argv):
    import torch.distributed as dist
    install_fake_cuda()
    import test_intranode as bench
    import test_low_latency as ll
    import uccl.ep as ep
    from uccl.ep import _validate as V
    bench.FP8_DTYPE = torch.uint8  # torch 1.13 has no float8: FP8 codes travel as uint8
    V.FP8_DTYPES = V.FP8_DTYPES + (torch.uint8,)
    args = bench.parse_args(argv)
    d = ll.dist_env()
    dist.init_process_group("gloo", init_method="env://", rank=d.rank, world_size=d.world)

    def gather(obj):
        out = [None] * d.world
        dist.all_gather_object(out, obj)
        return out

    rt = FakeNormalRuntime(d.rank, d.world, os.environ.get("FAKE_BUG", ""), gather=gather)
    buf = make_buffer(rt, args.nvl_bytes, dist.group.WORLD)
    bench.run_all(args, d, bench.Checker(args, ep, buf, d, torch.device("cpu")))
    dist.barrier()
    dist.destroy_process_group()


def run_fake_bench(nproc: int, bug: str, *bench_args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", FAKE_BUG=bug)
    cmd = [sys.executable, LAUNCH, "--nproc", str(nproc), "--timeout", "300", "--", os.path.abspath(__file__),
           "--fake-rank", "--num-tokens", "12", "--hidden", "512", "--num-topk", "3", "--num-experts", str(4 * nproc),
           "--num-masked", "4", "--num-sms", "2,4", "--chunks", "4,8", "--bench-iters", "2", "--bench-warmup", "1",
           "--copy-mb", "1", *bench_args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)


def test_bench_passes_against_the_stand_in_two_ranks():
    r = run_fake_bench(2, "")
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-4000:]
    assert "[rank 0]   ok get_dispatch_layout" in out
    assert "[rank 0] checks: 40 cases" in out
    assert "[rank 0] all checks passed" in out
    assert "[rank 0] [tuning] best dispatch FP8: SMs" in out and "[rank 0] [tuning] best combine BF16" in out
    assert "[rank 0] | dispatch | BF16 | 2 | 12 x 512, top-3 of 8 |" in out
    assert "[rank 0] | combine | BF16 | 2 |" in out


def test_bench_passes_against_the_stand_in_three_ranks():
    r = run_fake_bench(3, "", "--quick", "--skip-bench")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "[rank 0] checks: 6 cases" in r.stdout and "[rank 0] all checks passed" in r.stdout


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
def test_bench_catches_a_wrong_runtime(bug, message):
    r = run_fake_bench(2, bug, "--quick", "--skip-bench")
    assert r.returncode != 0, r.stdout[-3000:]
    assert message in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]
    assert "launch.py: failed: rank" in r.stderr


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--fake-rank":
    fake_rank_main(sys.argv[2:])
