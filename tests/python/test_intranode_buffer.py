"""Buffer's normal-mode calls on the CPU, over the stand-in runtime of test_intranode_fake.py (which logs every
native call): each bad input the torch side sees raises ValueError / TypeError naming the argument before any native
call, each value the runtime owns raises ArgumentError from _C's own check before anything launches, and the buffer
works afterwards; the handle layout; expert_alignment; the exact native calls and their arguments by name; streams,
events and where outputs are allocated. Needs uccl.ep._C (its CPU-only build is enough)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))

import intranode_reference as ref  # noqa: E402
from test_intranode_fake import FakeNormalRuntime, install_fake_cuda, make_buffer  # noqa: E402
from uccl.ep import Config, EventOverlap  # noqa: E402
from uccl.ep import _validate as V  # noqa: E402

H, K = 256, 4
LAUNCHES = {"get_dispatch_layout", "dispatch_send", "dispatch_wait_counts", "dispatch_recv", "combine"}


@pytest.fixture
def fc(native, monkeypatch):
    fake = install_fake_cuda(monkeypatch.setattr)
    monkeypatch.setattr(V, "FP8_DTYPES", V.FP8_DTYPES + (torch.uint8,))  # FP8 codes as uint8 (torch 1.13)
    return fake


def twin_buffer(R=2, E=8, **rt_kwargs):
    """Rank 0 of R ranks whose every peer sends exactly what this rank sends (gather returns R copies): enough
    for layout and dispatch in one process. R=1 is a real one-rank group (combine too)."""
    rt = FakeNormalRuntime(0, R, gather=lambda obj: [obj] * R, **rt_kwargs)
    return make_buffer(rt), rt


def inputs(T=6, E=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=gen).to(torch.bfloat16)
    idx = torch.stack([torch.randperm(E, generator=gen)[:K] for _ in range(T)])
    idx[0, 1] = -1
    w = torch.rand(T, K, generator=gen)
    return x, idx, w


def launched(rt):
    return [name for name, _ in rt.calls if name in LAUNCHES]


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------
def test_layout_matches_reference(fc):
    buf, rt = twin_buffer(R=2, E=8)
    x, idx, w = inputs()
    per_rank, per_node, per_expert, in_rank, event = buf.get_dispatch_layout(idx, 8)
    want = ref.layout(idx, 8, 2)
    assert per_node is None and isinstance(event, EventOverlap) and event.event is None
    assert torch.equal(per_rank, want.tokens_per_rank) and torch.equal(per_expert, want.tokens_per_expert)
    assert torch.equal(in_rank, want.is_token_in_rank)
    name, kw = [c for c in rt.calls if c[0] == "get_dispatch_layout"][0]
    assert kw == dict(stream=0, args=dict(topk_idx=idx.data_ptr(), num_tokens=6, num_topk=K, num_experts=8,
                                          num_tokens_per_rank=per_rank.data_ptr(), num_tokens_per_rdma_rank=0,
                                          num_tokens_per_expert=per_expert.data_ptr(),
                                          is_token_in_rank=in_rank.data_ptr()))


def test_layout_node_counts_outside_one_domain(fc, native):
    buf, rt = twin_buffer(R=2, E=8, ranks_per_node=1)
    _, idx, _ = inputs()
    _, per_node, _, in_rank, _ = buf.get_dispatch_layout(idx, 8)
    assert per_node.dtype == torch.int32 and per_node.tolist() == in_rank.sum(0).tolist()  # one rank per node
    assert buf.topology.nvl_domain_size == 1 and buf.topology.num_nodes == 2
    # Dispatch across nodes: the handle has 9 elements, DeepEP's recv_gbl_rank_prefix_sum fourth from the end (the
    # prefix matrix's column of this rank) and the forward map before num_worst_tokens.
    per_rank, _, per_expert, in_rank, _ = buf.get_dispatch_layout(idx, 8)
    *_, handle, _ = buf.dispatch(torch.zeros(6, H, dtype=torch.bfloat16), num_tokens_per_rank=per_rank,
                                 is_token_in_rank=in_rank, num_tokens_per_expert=per_expert)
    assert len(handle) == 9 and handle[-1] == 0
    assert torch.equal(handle[-4], handle[0][:, rt.rank]) and handle[-4].dtype == torch.int32
    assert handle[6].shape == (handle[7].size(0), 2) and handle[6].dtype == torch.int32  # one rank per node + node
    assert "dispatch_forward_count" in [c for c, _ in rt.calls]


def layout_args(buf, idx, E):
    per_rank, _, per_expert, in_rank, _ = buf.get_dispatch_layout(idx, E)
    return dict(num_tokens_per_rank=per_rank, is_token_in_rank=in_rank, num_tokens_per_expert=per_expert)


@pytest.mark.parametrize("alignment", [1, 3, 16])
def test_dispatch_result_and_handle(fc, alignment):
    buf, rt = twin_buffer(R=2, E=8)
    x, idx, w = inputs()
    lay = layout_args(buf, idx, 8)
    recv, ridx, rw, per_expert, handle, event = buf.dispatch(x, topk_idx=idx, topk_weights=w,
                                                             expert_alignment=alignment, **lay)
    exp = ref.dispatch_expected([lay["is_token_in_rank"]] * 2, 0, 8, [idx] * 2, [w] * 2)
    assert per_expert == exp.per_expert_list(alignment)
    assert per_expert == [(c + alignment - 1) // alignment * alignment for c in exp.tokens_per_expert.tolist()]
    assert isinstance(handle, tuple) and len(handle) == 6
    prefix, send_pos, rows, src_idx, in_rank, worst = handle
    assert prefix.dtype == torch.int32 and torch.equal(prefix, exp.rank_prefix_matrix)
    assert send_pos.dtype == torch.int32 and torch.equal(send_pos, exp.send_pos[0])
    assert rows == exp.num_recv == recv.size(0) and worst == 0 and in_rank is lay["is_token_in_rank"]
    assert torch.equal(src_idx.long(), exp.src_token)
    assert torch.equal(recv, x[exp.src_token]) and torch.equal(ridx, exp.recv_topk_idx)
    assert torch.equal(rw, exp.recv_topk_weights)


def test_worst_tokens_and_cached(fc):
    buf, rt = twin_buffer(R=2, E=8)
    x, idx, w = inputs()
    lay = layout_args(buf, idx, 8)
    W = 20
    recv, ridx, rw, per_expert, handle, _ = buf.dispatch(x, topk_idx=idx, topk_weights=w, num_worst_tokens=W, **lay)
    n = int(lay["is_token_in_rank"][:, 0].sum()) * 2
    assert per_expert == [] and recv.shape == (W, H) and handle[2] == W and handle[5] == W
    assert bool((handle[3][n:] == -1).all()) and bool((ridx[n:] == -1).all()) and bool((rw[n:] == 0).all())
    assert "dispatch_wait_counts" not in launched(rt)
    cached = buf.dispatch(x, handle=handle)
    assert cached[1:5] == (None, None, None, None) and torch.equal(cached[0][:n], recv[:n])
    assert cached[0].shape == (W, H)


def test_one_rank_round_trip_with_fp8_and_biases(fc):
    buf, rt = twin_buffer(R=1, E=4)
    x, idx, w = inputs(E=4)
    f = ref.cast_rows_fp8(x)
    scales = f.scales.t().contiguous().t()  # column-major
    lay = layout_args(buf, idx, 4)
    (rx, rs), ridx, rw, per_expert, handle, _ = buf.dispatch((f.codes, scales), topk_idx=idx, topk_weights=w, **lay)
    assert torch.equal(rx, f.codes) and torch.equal(rs, f.scales) and rs.is_contiguous()
    b0, b1 = torch.ones(6, H, dtype=torch.bfloat16), torch.full((6, H), 2.0, dtype=torch.bfloat16)
    y = x.clone()
    for bias, add in ((None, 0.0), (b0, 1.0), ((b0, b1), 3.0), ((None, b1), 2.0)):
        combined, cw, _ = buf.combine(y, handle, topk_weights=rw, bias=bias)
        assert torch.equal(combined, (x.float() + add).to(torch.bfloat16))
        assert torch.equal(cw, torch.where(idx >= 0, w, torch.zeros(())))
    combined, cw, _ = buf.combine(y, handle)
    assert cw is None and torch.equal(combined, x)


# ---------------------------------------------------------------------------------------------------------------
# The native calls, in order, with their arguments
# ---------------------------------------------------------------------------------------------------------------
def test_native_calls_of_a_dispatch_and_combine(fc):
    buf, rt = twin_buffer(R=2, E=8)
    x, idx, w = inputs()
    lay = layout_args(buf, idx, 8)
    wide = torch.zeros(6, H + 64, dtype=torch.bfloat16)[:, :H]  # rows 2 * (H + 64) bytes apart
    wide.copy_(x)
    cfg = Config(6, 10, 256)
    rt.calls.clear()
    recv, ridx, rw, _, handle, _ = buf.dispatch(wide, topk_idx=idx, topk_weights=w, config=cfg, **lay)
    assert [n for n, _ in rt.calls] == ["check_errors", "dispatch_send", "dispatch_wait_counts", "dispatch_recv"]
    kw = dict(rt.calls)
    prefix, send_pos, n = handle[0], handle[1], handle[2]
    assert kw["dispatch_send"] == dict(cached=False, num_sms=6, stream=0, args=dict(
        x=wide.data_ptr(), x_row_stride=(H + 64) * 2, hidden_bytes=H * 2, x_scales=0, num_scales=0,
        x_scales_token_stride=0, x_scales_col_stride=0, topk_idx=idx.data_ptr(), topk_weights=w.data_ptr(),
        num_topk=K, is_token_in_rank=lay["is_token_in_rank"].data_ptr(),
        num_tokens_per_expert=lay["num_tokens_per_expert"].data_ptr(), num_tokens=6, num_experts=8,
        num_worst_tokens=0, rank_prefix_matrix=prefix.data_ptr(), send_pos=send_pos.data_ptr(),
        recv_gbl_rank_prefix_sum=0))
    assert kw["dispatch_wait_counts"] == {}
    assert kw["dispatch_recv"] == dict(num_sms=6, num_max_nvl_chunked_send_tokens=10, stream=0, outputs=dict(
        recv_x=recv.data_ptr(), recv_x_scales=0, recv_topk_idx=ridx.data_ptr(), recv_topk_weights=rw.data_ptr(),
        recv_src_idx=handle[3].data_ptr(), num_recv_tokens=n, forward_positions=0,
        forward_source_token=0, num_forward=0))

    rt.calls.clear()
    cached = buf.dispatch(x, handle=handle)[0]
    kw = dict(rt.calls)
    default = buf.get_dispatch_config(2)
    # No top-k; the handle has no expert count, so the call counts none (num_experts 0)
    assert kw["dispatch_send"] == dict(cached=True, num_sms=default.num_sms, stream=0, args=dict(
        x=x.data_ptr(), x_row_stride=H * 2, hidden_bytes=H * 2, x_scales=0, num_scales=0, x_scales_token_stride=0,
        x_scales_col_stride=0, topk_idx=0, topk_weights=0, num_topk=0, is_token_in_rank=handle[4].data_ptr(),
        num_tokens_per_expert=0, num_tokens=6, num_experts=0, num_worst_tokens=0,
        rank_prefix_matrix=prefix.data_ptr(), send_pos=0, recv_gbl_rank_prefix_sum=0))
    assert kw["dispatch_recv"] == dict(
        num_sms=default.num_sms, num_max_nvl_chunked_send_tokens=default.num_max_nvl_chunked_send_tokens, stream=0,
        outputs=dict(recv_x=cached.data_ptr(), recv_x_scales=0, recv_topk_idx=0, recv_topk_weights=0, recv_src_idx=0,
                     num_recv_tokens=n, forward_positions=0, forward_source_token=0, num_forward=0))
    assert "dispatch_wait_counts" not in kw

    rt.calls.clear()
    y = torch.zeros(n, H, dtype=torch.bfloat16)
    bias = torch.zeros(6, H, dtype=torch.bfloat16)
    out, out_w, _ = buf.combine(y, handle, topk_weights=rw, bias=(None, bias), config=cfg)
    assert [c for c, _ in rt.calls] == ["check_errors", "combine"]
    assert dict(rt.calls)["combine"] == dict(num_sms=6, num_max_nvl_chunked_send_tokens=10, stream=0, args=dict(
        x=y.data_ptr(), topk_weights=rw.data_ptr(), bias_0=0, bias_1=bias.data_ptr(), send_pos=send_pos.data_ptr(),
        rank_prefix_matrix=prefix.data_ptr(), num_tokens=6, num_recv_tokens=n, hidden=H, num_topk=K,
        combined_x=out.data_ptr(), combined_topk_weights=out_w.data_ptr(), is_token_in_rank=0, forward_positions=0,
        forward_source_token=0, num_forward=0))


def test_fp8_scale_strides_reach_the_runtime(fc):
    buf, rt = twin_buffer(R=2, E=8)
    _, idx, _ = inputs(T=5)
    x = torch.randn(5, 1024).to(torch.bfloat16)
    lay = layout_args(buf, idx, 8)
    f = ref.cast_rows_fp8(x, ue8m0=True)
    scales = f.scales.t().contiguous().t()  # int32 [5, 2], column-major
    rt.calls.clear()
    (rx, rs), _, _, _, _, _ = buf.dispatch((f.codes, scales), **lay)
    send = dict(rt.calls)["dispatch_send"]["args"]
    assert (send["x_row_stride"], send["hidden_bytes"], send["x_scales"], send["num_scales"],
            send["x_scales_token_stride"], send["x_scales_col_stride"]) == (1024, 1024, scales.data_ptr(), 2, 1, 5)
    assert (send["num_topk"], send["num_experts"]) == (0, 8)
    n = int(lay["is_token_in_rank"][:, 0].sum())
    assert rs.dtype == torch.int32 and rs.is_contiguous() and torch.equal(rs[:n], f.scales[lay["is_token_in_rank"][:, 0]])


# ---------------------------------------------------------------------------------------------------------------
# Streams and events
# ---------------------------------------------------------------------------------------------------------------
def watch_allocations(fc, monkeypatch) -> list:
    """The stream current at each torch.empty that buffer.py makes (the stand-in runtime's own are not seen)."""
    import uccl.ep.buffer as buffer_module
    seen = []

    class Torch:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def empty(*a, **k):
            seen.append(fc.current_stream())
            return torch.empty(*a, **k)

    monkeypatch.setattr(buffer_module, "torch", Torch())
    return seen


def test_streams_synchronous_call(fc):
    buf, rt = twin_buffer()
    _, idx, _ = inputs()
    comm, current = buf._comm_stream, fc.default
    buf.get_dispatch_layout(idx, 8)
    assert comm.log == [("wait_stream", current)] and current.log == [("wait_stream", comm)]


def test_streams_previous_event_async_and_allocation(fc, monkeypatch):
    buf, rt = twin_buffer()
    x, idx, w = inputs()
    lay = layout_args(buf, idx, 8)
    comm, current = buf._comm_stream, fc.default
    comm.log.clear()
    current.log.clear()
    allocated_on = watch_allocations(fc, monkeypatch)
    prev = buf.capture()
    recv, ridx, rw, _, handle, event = buf.dispatch(x, topk_idx=idx, topk_weights=w, previous_event=prev,
                                                    async_finish=True, allocate_on_comm_stream=True, **lay)
    assert comm.log == [("wait_event", prev.event.event)]
    assert current.log == []  # async: the caller waits through the event
    assert event.event.event.stream is comm
    assert allocated_on and all(s is comm for s in allocated_on)
    kept = {t.data_ptr() for t in event.extra_tensors}
    assert {x.data_ptr(), idx.data_ptr(), recv.data_ptr(), handle[0].data_ptr(), handle[3].data_ptr()} <= kept
    event.current_stream_wait()
    assert current.log == [("wait_event", event.event.event)]


def test_async_without_previous_allocates_on_current(fc, monkeypatch):
    buf, rt = twin_buffer()
    _, idx, _ = inputs()
    comm, current = buf._comm_stream, fc.default
    allocated_on = watch_allocations(fc, monkeypatch)
    _, _, _, _, event = buf.get_dispatch_layout(idx, 8, async_finish=True)
    assert allocated_on and all(s is current for s in allocated_on)
    assert comm.log == [("wait_stream", current)] and current.log == []
    assert event.event is not None and len(event.extra_tensors) == 4  # topk_idx and three outputs


# ---------------------------------------------------------------------------------------------------------------
# Bad input: raised before any native call; the buffer works afterwards
# ---------------------------------------------------------------------------------------------------------------
R4, E4, T4 = 4, 16, 6


def good_dispatch(**over):
    x, idx, w = inputs(T=T4, E=E4)
    in_rank = ref.token_ranks(idx, E4, R4)
    kw = dict(x=x, num_tokens_per_rank=in_rank.sum(0).int(), is_token_in_rank=in_rank,
              num_tokens_per_expert=ref.layout(idx, E4, R4).tokens_per_expert, topk_idx=idx, topk_weights=w)
    kw.update(over)
    return kw


def good_handle(T=T4, rows=9, worst=0):
    return (torch.zeros(R4, R4, dtype=torch.int32), torch.zeros(T, R4, dtype=torch.int32), rows,
            torch.zeros(rows, dtype=torch.int32), torch.zeros(T, R4, dtype=torch.bool), worst)


def fp8(T=T4, hidden=H, scale_dtype=torch.float32, group=128):
    return torch.zeros(T, hidden, dtype=torch.uint8), torch.zeros(T, hidden // group, dtype=scale_dtype)


def prev_event():
    return EventOverlap(torch.cuda.Event())


DISPATCH_BAD = [
    (dict(x=torch.zeros(T4, H)), ValueError, ["x must have dtype torch.bfloat16", "torch.float32"]),
    (dict(x=torch.zeros(T4, H, dtype=torch.uint8)), ValueError, ["x must have dtype", "needs its scales"]),
    (dict(x=torch.zeros(T4, H, 2, dtype=torch.bfloat16)), ValueError, ["x must have 2 dimensions"]),
    (dict(x=[torch.zeros(T4, H, dtype=torch.bfloat16)]), TypeError, ["2-tuple"]),
    (dict(x="x"), TypeError, ["x must be a torch.Tensor"]),
    (dict(x=torch.zeros(H, T4, dtype=torch.bfloat16).t()), ValueError, ["each row must be contiguous"]),
    (dict(x=torch.zeros(T4, 2 * H, dtype=torch.bfloat16).as_strided((T4, H), (H // 2, 1))), ValueError,
     ["rows must not overlap", f"row stride of {H // 2}"]),
    (dict(x=torch.zeros(7, H, dtype=torch.bfloat16)), ValueError, ["is_token_in_rank", f"[7, {R4}]"]),
    (dict(x=(torch.zeros(T4, H, dtype=torch.bfloat16), torch.zeros(T4, 2))), ValueError, ["x[0] must have an FP8"]),
    (dict(x=(torch.zeros(T4, H, dtype=torch.uint8), [1.0])), TypeError, ["x[1] (scales) must be a torch.Tensor"]),
    (dict(x=fp8(scale_dtype=torch.float64)), ValueError, ["scales", "torch.float32 or torch.int32"]),
    (dict(x=fp8(group=64)), ValueError, [f"[{T4}, {H // 128}]", f"[{T4}, {H // 64}]"]),
    (dict(x=fp8(hidden=384, scale_dtype=torch.int32, group=128)), ValueError, ["multiple of 512", "hidden=384"]),
    (dict(x=(torch.zeros(T4, 512, dtype=torch.uint8), torch.zeros(T4, 4, dtype=torch.int32))), ValueError,
     ["int32 (four packed UE8M0 exponents) scales", f"[{T4}, 1]"]),
    (dict(topk_weights=None), ValueError, ["pass both topk_idx and topk_weights"]),
    (dict(topk_idx=None), ValueError, ["pass both topk_idx and topk_weights"]),
    (dict(topk_idx=torch.zeros(T4, K, dtype=torch.int32)), ValueError, ["topk_idx", "torch.int64"]),
    (dict(topk_idx=torch.zeros(T4 + 1, K, dtype=torch.int64)), ValueError, ["topk_idx", "one row per token"]),
    (dict(topk_idx=torch.zeros(K, T4, dtype=torch.int64).t()), ValueError, ["topk_idx", "contiguous"]),
    (dict(topk_weights=torch.zeros(T4, K, dtype=torch.float64)), ValueError, ["topk_weights", "torch.float32"]),
    (dict(topk_weights=torch.zeros(T4, K + 1)), ValueError, ["topk_weights", f"[{T4}, {K}]"]),
    (dict(num_tokens_per_rank=None), ValueError, ["get_dispatch_layout", "num_tokens_per_rank is None"]),
    (dict(is_token_in_rank=None, num_tokens_per_expert=None), ValueError,
     ["is_token_in_rank, num_tokens_per_expert are None"]),
    (dict(num_tokens_per_rank=torch.zeros(R4 + 1, dtype=torch.int32)), ValueError, ["num_tokens_per_rank", f"[{R4}]"]),
    (dict(num_tokens_per_rdma_rank=torch.zeros(2)), ValueError, ["num_tokens_per_rdma_rank", "torch.int32"]),
    (dict(is_token_in_rank=torch.zeros(T4, R4, dtype=torch.int32)), ValueError, ["is_token_in_rank", "torch.bool"]),
    (dict(num_tokens_per_expert=torch.zeros(E4, dtype=torch.int64)), ValueError, ["num_tokens_per_expert", "int32"]),
    (dict(expert_alignment=0), ValueError, ["expert_alignment must be >= 1"]),
    (dict(expert_alignment=2.0), TypeError, ["expert_alignment must be an int"]),
    (dict(num_worst_tokens=-1), ValueError, ["num_worst_tokens must be >= 0"]),
    (dict(config=(24, 8, 256)), TypeError, ["config must be a uccl.ep.Config"]),
    (dict(async_finish=1), TypeError, ["async_finish must be a bool"]),
    (dict(previous_event="event"), TypeError, ["previous_event must be an EventOverlap"]),
    (dict(allocate_on_comm_stream=True, async_finish=True), ValueError, ["allocate_on_comm_stream=True needs"]),
    (dict(allocate_on_comm_stream=True, previous_event=EventOverlap(None), async_finish=True), ValueError,
     ["allocate_on_comm_stream=True needs"]),
    # cached
    (dict(handle=good_handle()), ValueError, ["cached dispatch", "no topk_idx / topk_weights"]),
    (dict(handle=good_handle()[:5], topk_idx=None, topk_weights=None), TypeError, ["6-tuple"]),
    (dict(handle=good_handle(T=T4 + 1), topk_idx=None, topk_weights=None), ValueError,
     [f"x has {T4} tokens but the handle was made for {T4 + 1}"]),
    (dict(handle=good_handle()[:2] + (8,) + good_handle()[3:], topk_idx=None, topk_weights=None), ValueError,
     ["handle[3] (recv_src_idx)", "[8]"]),
    (dict(handle=(torch.zeros(R4, R4, dtype=torch.int64),) + good_handle()[1:], topk_idx=None, topk_weights=None),
     ValueError, ["handle[0] (rank_prefix_matrix)", "torch.int32"]),
    (dict(handle=good_handle()[:5] + (3,), topk_idx=None, topk_weights=None), ValueError,
     ["handle[5] (num_worst_tokens=3)"]),
    (dict(handle=good_handle(rows=9, worst=9), num_worst_tokens=5, topk_idx=None, topk_weights=None), ValueError,
     ["num_worst_tokens=5 differs from the handle's (9)"]),
]


def assert_rejected(call: str, run, exc, words):
    """run(buffer) raises exc with a message starting with `call:` and holding every word, before any native call."""
    rt = FakeNormalRuntime(0, R4)
    buf = make_buffer(rt)
    with pytest.raises(exc) as e:
        run(buf)
    msg = str(e.value)
    assert msg.startswith(f"{call}:"), msg
    for w in words:
        assert w in msg, (w, msg)
    assert rt.calls == []


@pytest.mark.parametrize("over, exc, words", DISPATCH_BAD)
def test_dispatch_rejects_before_any_native_call(fc, over, exc, words):
    assert_rejected("dispatch", lambda buf: buf.dispatch(**good_dispatch(**over)), exc, words)


COMBINE_BAD = [
    (dict(x=torch.zeros(9, H)), ValueError, ["x must have dtype torch.bfloat16"]),
    (dict(x=torch.zeros(8, H, dtype=torch.bfloat16)), ValueError, ["one row per row the dispatch returned (9"]),
    (dict(x=torch.zeros(H, 9, dtype=torch.bfloat16).t()), ValueError, ["x must be contiguous"]),
    (dict(handle=good_handle()[:4]), TypeError, ["6-tuple"]),
    (dict(handle=None), TypeError, ["6-tuple"]),
    (dict(handle=good_handle()[:1] + (torch.zeros(T4, R4 + 1, dtype=torch.int32),) + good_handle()[2:]), ValueError,
     ["handle[1] (send_pos)", f"['*', {R4}]"]),
    (dict(handle=good_handle()[:4] + (torch.zeros(T4 + 1, R4, dtype=torch.bool), 0)), ValueError,
     ["handle[4] (is_token_in_rank)", f"[{T4}, {R4}]"]),
    (dict(handle=good_handle()[:2] + (-1,) + good_handle()[3:]), ValueError, ["handle[2] (num_recv_tokens)"]),
    (dict(topk_weights=torch.zeros(9, K, dtype=torch.float64)), ValueError, ["topk_weights", "torch.float32"]),
    (dict(topk_weights=torch.zeros(8, K)), ValueError, ["topk_weights", "one row per row of x (9)"]),
    (dict(topk_weights=torch.zeros(K, 9).t()), ValueError, ["topk_weights must be contiguous"]),
    (dict(bias=torch.zeros(T4, H)), ValueError, ["bias must have dtype torch.bfloat16"]),
    (dict(bias=torch.zeros(T4 + 1, H, dtype=torch.bfloat16)), ValueError, ["bias must have shape", f"[{T4}, {H}]"]),
    (dict(bias=(None, torch.zeros(T4, H - 8, dtype=torch.bfloat16))), ValueError, ["bias[1] must have shape"]),
    (dict(bias=(torch.zeros(T4, H, dtype=torch.bfloat16),) * 3), TypeError, ["2-tuple"]),
    (dict(bias="b"), TypeError, ["bias must be None, a tensor or a 2-tuple"]),
    (dict(config=Config(), async_finish=None), TypeError, ["async_finish must be a bool"]),
    (dict(allocate_on_comm_stream=True), ValueError, ["allocate_on_comm_stream=True needs"]),
]


@pytest.mark.parametrize("over, exc, words", COMBINE_BAD)
def test_combine_rejects_before_any_native_call(fc, over, exc, words):
    kw = dict(x=torch.zeros(9, H, dtype=torch.bfloat16), handle=good_handle())
    kw.update(over)
    assert_rejected("combine", lambda buf: buf.combine(**kw), exc, words)


LAYOUT_BAD = [
    (dict(topk_idx=torch.zeros(T4, K, dtype=torch.int32)), ValueError, ["topk_idx", "torch.int64"]),
    (dict(topk_idx=torch.zeros(T4, dtype=torch.int64)), ValueError, ["topk_idx must have 2 dimensions"]),
    (dict(topk_idx=[[0]]), TypeError, ["topk_idx must be a torch.Tensor"]),
    (dict(num_experts=16.0), TypeError, ["num_experts must be an int"]),
    (dict(num_experts=None), TypeError, ["num_experts must be an int"]),
    (dict(allocate_on_comm_stream=True, async_finish=True), ValueError, ["allocate_on_comm_stream=True needs"]),
]


@pytest.mark.parametrize("over, exc, words", LAYOUT_BAD)
def test_layout_rejects_before_any_native_call(fc, over, exc, words):
    kw = dict(topk_idx=torch.zeros(T4, K, dtype=torch.int64), num_experts=E4)
    kw.update(over)
    assert_rejected("get_dispatch_layout", lambda buf: buf.get_dispatch_layout(**kw), exc, words)


# ---------------------------------------------------------------------------------------------------------------
# Values the runtime owns: ArgumentError from _C's check (the same one the launch runs), before anything launches
# ---------------------------------------------------------------------------------------------------------------
def assert_runtime_rejects(native, run, words, allowed_calls):
    """run(buffer) raises _C.ArgumentError (a ValueError) naming the argument; no call beyond `allowed_calls`
    reached the runtime (the one that raised is the last)."""
    rt = FakeNormalRuntime(0, R4)
    buf = make_buffer(rt)
    with pytest.raises(native.ArgumentError) as e:
        run(buf)
    assert isinstance(e.value, ValueError)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert {n for n, _ in rt.calls} <= set(allowed_calls), rt.calls
    return rt


DISPATCH_RUNTIME_BAD = [
    (dict(x=torch.zeros(T4, 100, dtype=torch.bfloat16)), ["hidden_bytes", "200", "16"]),
    (dict(x=torch.zeros(T4, H + 4, dtype=torch.bfloat16)[:, :H]), ["x_row_stride", str((H + 4) * 2), "16"]),
    (dict(x=torch.zeros(T4, 2 * H, dtype=torch.bfloat16)[:, 4:4 + H]), ["x", "16"]),
    (dict(topk_idx=torch.zeros(T4, 17, dtype=torch.int64), topk_weights=torch.zeros(T4, 17)), ["num_topk", "17",
                                                                                                "16"]),
    (dict(num_tokens_per_expert=torch.zeros(18, dtype=torch.int32)), ["num_experts", "18", f"{R4}"]),
    (dict(num_tokens_per_expert=torch.zeros(8196, dtype=torch.int32)), ["num_experts", "8196", "8192"]),
]


@pytest.mark.parametrize("over, words", DISPATCH_RUNTIME_BAD)
def test_dispatch_values_are_the_runtimes(fc, native, over, words):
    kw = good_dispatch(**over)
    kw["topk_idx"] = kw["topk_idx"].clamp(max=kw["num_tokens_per_expert"].numel() - 1)
    rt = assert_runtime_rejects(native, lambda buf: buf.dispatch(**kw), words, {"check_errors", "dispatch_send"})
    assert [n for n, _ in rt.calls][-1] == "dispatch_send"


@pytest.mark.parametrize("over, words", [
    (dict(x=torch.zeros(9, 4, dtype=torch.bfloat16), bias=None), ["hidden", "4", "16"]),
    (dict(topk_weights=torch.zeros(9, 17)), ["num_topk", "17", "16"]),
])
def test_combine_values_are_the_runtimes(fc, native, over, words):
    kw = dict(x=torch.zeros(9, H, dtype=torch.bfloat16), handle=good_handle())
    kw.update(over)
    assert_runtime_rejects(native, lambda buf: buf.combine(**kw), words, {"check_errors", "combine"})


@pytest.mark.parametrize("over, words", [
    (dict(topk_idx=torch.zeros(T4, 0, dtype=torch.int64)), ["num_topk", "0", "16"]),
    (dict(topk_idx=torch.zeros(T4, 17, dtype=torch.int64)), ["num_topk", "17", "16"]),
    (dict(num_experts=18), ["num_experts", "18", f"{R4}"]),
    (dict(num_experts=0), ["num_experts", "0"]),
    (dict(num_experts=-4), ["num_experts", "-4"]),
])
def test_layout_values_are_the_runtimes_and_come_before_allocation(fc, native, monkeypatch, over, words):
    kw = dict(topk_idx=torch.zeros(T4, K, dtype=torch.int64), num_experts=E4)
    kw.update(over)
    allocated_on = watch_allocations(fc, monkeypatch)
    assert_runtime_rejects(native, lambda buf: buf.get_dispatch_layout(**kw), words, {"check_errors", "check_dispatch_layout"})
    assert allocated_on == []  # num_experts sizes an output: checked before it does


def test_runtime_checks_take_argument_structs(native):
    """The module-level checks the runtime's launches run, called directly as a stand-in calls them."""
    args = native.DispatchArgs(x=0, x_row_stride=H * 2, hidden_bytes=H * 2, num_topk=K, topk_idx=0, num_tokens=0,
                               num_experts=E4)
    assert native.normal_dispatch_bytes(num_ranks=R4, args=args, cached=False) > 0
    args.num_experts = 0
    with pytest.raises(native.ArgumentError, match="num_experts"):
        native.normal_dispatch_bytes(num_ranks=R4, args=args, cached=False)
    assert native.normal_dispatch_bytes(num_ranks=R4, args=args, cached=True) > 0  # a cached dispatch counts none
    comb = native.CombineArgs(num_tokens=0, num_recv_tokens=0, hidden=H, num_topk=K)
    assert native.normal_combine_bytes(num_ranks=R4, args=comb) > 0
    comb.num_topk = 17
    with pytest.raises(native.ArgumentError, match="num_topk"):
        native.normal_combine_bytes(num_ranks=R4, args=comb)
    lay = native.DispatchLayoutArgs(num_tokens=T4, num_topk=K, num_experts=E4)
    native.normal_layout_check(num_ranks=R4, args=lay)
    lay.num_tokens = -1
    with pytest.raises(native.ArgumentError, match="num_tokens"):
        native.normal_layout_check(num_ranks=R4, args=lay)


def test_device_mismatch_is_named(fc):
    buf, rt = twin_buffer()
    buf.device = torch.device("meta")  # any device the CPU tensors are not on
    with pytest.raises(ValueError, match=r"x must be on meta \(the buffer's device\), got a tensor on cpu"):
        buf.dispatch(**good_dispatch(num_tokens_per_rank=torch.zeros(2, dtype=torch.int32),
                                     is_token_in_rank=torch.zeros(T4, 2, dtype=torch.bool),
                                     num_tokens_per_expert=torch.zeros(8, dtype=torch.int32), topk_idx=None,
                                     topk_weights=None))
    with pytest.raises(ValueError, match="topk_idx must be on meta"):
        buf.get_dispatch_layout(torch.zeros(T4, K, dtype=torch.int64), 8)
    assert rt.calls == []


def test_no_nvl_buffer_and_destroyed_buffer(fc, native):
    """Normal mode without an NVLink buffer is the runtime's UcclError (a RuntimeError); the layout needs none."""
    rt = FakeNormalRuntime(0, 2, num_nvl_bytes=0, gather=lambda o: [o, o])
    buf = make_buffer(rt)
    kw = good_dispatch(num_tokens_per_rank=torch.zeros(2, dtype=torch.int32),
                       is_token_in_rank=torch.zeros(T4, 2, dtype=torch.bool),
                       num_tokens_per_expert=torch.zeros(8, dtype=torch.int32), topk_idx=None, topk_weights=None)
    with pytest.raises(native.UcclError, match="num_nvl_bytes=0"):
        buf.dispatch(**kw)
    with pytest.raises(native.UcclError, match="num_nvl_bytes=0"):
        buf.combine(torch.zeros(9, H, dtype=torch.bfloat16), (
            torch.zeros(2, 2, dtype=torch.int32), torch.zeros(T4, 2, dtype=torch.int32), 9,
            torch.zeros(9, dtype=torch.int32), torch.zeros(T4, 2, dtype=torch.bool), 0))
    assert issubclass(native.UcclError, RuntimeError)
    assert "dispatch_recv" not in launched(rt)
    buf.get_dispatch_layout(torch.zeros(T4, K, dtype=torch.int64), 8)  # the layout needs no NVLink buffer
    buf._runtime = None
    with pytest.raises(RuntimeError, match="destroyed"):
        buf.get_dispatch_layout(torch.zeros(T4, K, dtype=torch.int64), 8)


def test_buffer_too_small_is_the_runtimes_and_the_buffer_stays_usable(fc, native):
    buf, rt = twin_buffer(R=2, E=8)
    x, idx, w = inputs()
    lay = layout_args(buf, idx, 8)
    rt.calls.clear()
    buf.dispatch(x, topk_idx=idx, topk_weights=w, **lay)
    sent = native.DispatchArgs(**dict(rt.calls)["dispatch_send"]["args"])
    need = native.normal_dispatch_bytes(num_ranks=2, args=sent, cached=False)
    rt.num_nvl_bytes = need // 128 * 128 - 128
    rt.calls.clear()
    with pytest.raises(native.ArgumentError) as e:
        buf.dispatch(x, topk_idx=idx, topk_weights=w, **lay)
    assert "num_nvl_bytes" in str(e.value) and str(need) in str(e.value)
    assert launched(rt) == ["dispatch_send"]  # the send refused: nothing after it ran
    rt.num_nvl_bytes = 1 << 30
    recv, _, _, _, handle, _ = buf.dispatch(x, topk_idx=idx, topk_weights=w, **lay)
    rt.num_nvl_bytes = 128
    with pytest.raises(native.ArgumentError, match="num_nvl_bytes"):
        buf.combine(recv, handle)
    assert launched(rt)[-2:] == ["dispatch_recv", "combine"]


def test_expert_ids_checked_on_the_host_before_launch_when_asked(fc):
    buf, rt = twin_buffer(R=2, E=8)
    buf.validate_expert_ids = True  # opt-in: a host read before each call that takes topk_idx
    x, idx, w = inputs()
    lay = layout_args(buf, idx, 8)
    bad = idx.clone()
    bad[2, 0] = 8
    rt.calls.clear()
    with pytest.raises(ValueError, match=r"expert ids in \[-1, 8\]; expected ids in \[-1, 8\)"):
        buf.dispatch(x, topk_idx=bad, topk_weights=w, **lay)
    with pytest.raises(ValueError, match="get_dispatch_layout: topk_idx holds expert ids"):
        buf.get_dispatch_layout(bad - 10, 8)
    assert not launched(rt)
    buf.validate_expert_ids = False  # the caller vouches for the ids: no host read
    buf.get_dispatch_layout(idx, 8)


def test_a_bad_expert_id_is_found_by_the_layout_kernel_and_raised_by_the_next_call(fc):
    """By default no host read: get_dispatch_layout launches, its kernel records the first entry out of range and
    skips it, and the next call raises ArgumentError naming the entry and the id before it launches anything; the
    call after that runs."""
    from uccl.ep import Buffer
    assert Buffer.validate_expert_ids is False
    buf, rt = twin_buffer(R=2, E=8)
    x, idx, w = inputs()
    bad = idx.clone()
    bad[2, 1] = 8
    rt.calls.clear()
    buf.get_dispatch_layout(bad, 8)  # no host check: the layout is launched
    assert launched(rt) == ["get_dispatch_layout"]
    with pytest.raises(ValueError, match=r"topk_idx\[2\]\[1\] holds expert id 8"):
        buf.get_dispatch_layout(idx, 8)
    assert launched(rt) == ["get_dispatch_layout"]  # the raising call launched nothing
    lay = layout_args(buf, idx, 8)
    buf.dispatch(x, topk_idx=idx, topk_weights=w, **lay)


def test_bad_call_leaves_the_buffer_usable(fc):
    buf, rt = twin_buffer(R=1, E=4)
    x, idx, w = inputs(E=4)
    lay = layout_args(buf, idx, 4)
    with pytest.raises(ValueError):
        buf.dispatch(x, topk_idx=idx, **lay)
    recv, _, _, _, handle, _ = buf.dispatch(x, **lay)
    with pytest.raises(ValueError):
        buf.combine(recv[:-1], handle)
    combined, _, _ = buf.combine(recv, handle)
    assert torch.equal(combined, x)


# ---------------------------------------------------------------------------------------------------------------
# _validate helpers
# ---------------------------------------------------------------------------------------------------------------
def test_align_counts_and_event_of():
    assert V.align_counts([0, 1, 4, 5], 4) == [0, 4, 4, 8]
    assert V.align_counts(torch.tensor([3, 7]).tolist(), 1) == [3, 7]
    assert V.event_of(None) is None and V.event_of(EventOverlap(None)) is None

    class Handle:
        event = "ev"
    assert V.event_of(EventOverlap(Handle())) == "ev"


def test_normal_x_sizes():
    x = torch.zeros(5, H + 32, dtype=torch.bfloat16)[:, :H]
    nx = V.check_dispatch_x("dispatch", x)
    assert (nx.num_tokens, nx.hidden, nx.hidden_bytes, nx.row_stride_bytes, nx.num_scales) == (5, H, 2 * H,
                                                                                              2 * (H + 32), 0)
    one = V.check_dispatch_x("dispatch", torch.zeros(1, H, dtype=torch.bfloat16))
    assert one.row_stride_bytes == 2 * H
    empty = V.check_dispatch_x("dispatch", torch.zeros(0, H, dtype=torch.bfloat16))
    assert empty.num_tokens == 0
