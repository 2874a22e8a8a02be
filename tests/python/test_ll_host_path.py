"""The low-latency calls on the host: uccl.ep.Buffer's low_latency_dispatch / low_latency_combine (and their receive
hooks) over a stand-in runtime on the CPU (ll_stand_in.py).

Their call path reads no tensor data on the host and waits for nothing (no aminmax, tolist, item, cpu, no stream,
event or device synchronize): the kernels check the expert ids, the runtime raises what they recorded at the next
call, and stream order is an event the runtime records. So every torch function that reads data back or
synchronizes is made to fail here, and the calls must still reach the runtime, bad ids included; a test shows that
the spies do catch a read and a sync put into the path.

The calls check their arguments the cheap way once the sizes are known (metadata comparisons, no _validate.py call,
no layout query); any argument that fails them takes the full checks, which raise the same message as before.
"""
import types

import pytest
import torch

from uccl.ep import _validate as V
from uccl.ep import _low_latency as ll_module
from ll_stand_in import make_ll_buffer
from test_intranode_fake import FakeEvent, FakeStream

H, K, E, M = 128, 2, 8, 8
CHECK_DEVICE = V.check_device  # the stand-in replaces it; one test puts it back


def _refuse(what):
    def refused(*args, **kwargs):
        raise AssertionError(f"the low-latency call path read tensor data on the host or synchronized ({what})")

    return refused


@pytest.fixture
def ll_buffer(native, monkeypatch):
    """A uccl.ep.Buffer (rank 0 of 2) over FakeLowLatencyRuntime, CPU tensors standing in for CUDA ones."""
    return make_ll_buffer(native, monkeypatch.setattr)


@pytest.fixture
def no_host_reads(ll_buffer, monkeypatch):
    """Every way Buffer could read a tensor's data back to the host, or wait for the device, fails the test."""
    for name in ("aminmax", "min", "max", "any", "all", "nonzero"):
        monkeypatch.setattr(torch, name, _refuse(f"torch.{name}"))
    for name in ("aminmax", "min", "max", "any", "all", "tolist", "item", "cpu", "numpy", "to", "copy_", "__bool__",
                 "__int__", "__index__", "__float__", "nonzero", "__repr__", "__str__", "__format__"):
        monkeypatch.setattr(torch.Tensor, name, _refuse(f"Tensor.{name}"))
    monkeypatch.setattr(torch.cuda, "synchronize", _refuse("torch.cuda.synchronize"))
    for cls in (FakeStream, FakeEvent):  # torch.cuda.Stream / Event here
        monkeypatch.setattr(cls, "synchronize", _refuse(f"{cls.__name__}.synchronize"))
    monkeypatch.setattr(FakeStream, "wait_stream", _refuse("a Python stream wait (the runtime orders the streams)"))


def inputs(bad_id=None):
    x = torch.zeros(M, H, dtype=torch.bfloat16)
    idx = torch.tensor([[t % E, (t + 1) % E] for t in range(M)], dtype=torch.int64)
    if bad_id is not None:
        idx[3, 1] = bad_id
    return x, idx, torch.ones(M, K)


def dispatch(buf, x, idx, **kwargs):
    return buf.low_latency_dispatch(x, idx, M, E, use_fp8=False, **kwargs)


def combine(buf, handle, idx, w, **kwargs):
    y = torch.zeros(E // 2, 2 * M, H, dtype=torch.bfloat16)
    return buf.low_latency_combine(y, idx, w, handle, **kwargs)


def launched(rt):
    return [c for c in rt.calls if c[0] not in ("check_errors", "low_latency_layout")]


@pytest.mark.parametrize("bad_id", [None, E, 1 << 40, -2])
@pytest.mark.parametrize("finish", ["sync", "hook", "async"])
def test_low_latency_calls_read_no_tensor_data_on_the_host(ll_buffer, no_host_reads, bad_id, finish):
    """Good and bad expert ids alike reach the runtime untouched: the kernels, not Python, check them. Twice: the
    first call with these sizes takes the full checks, the second the cheap ones."""
    buf, rt = ll_buffer
    hook = finish == "hook"
    for _ in range(2):
        rt.calls.clear()
        x, idx, w = inputs(bad_id)
        recv_x, recv_count, handle, event, recv_hook = dispatch(buf, x, idx, return_recv_hook=hook,
                                                                async_finish=finish == "async")
        if hook:
            recv_hook()
        combined, event, recv_hook = combine(buf, handle, idx, w, return_recv_hook=hook,
                                             async_finish=finish == "async")
        if hook:
            recv_hook()
        assert [c[0] for c in launched(rt)] == (
            ["low_latency_dispatch", "low_latency_dispatch hook", "low_latency_combine", "low_latency_combine hook"]
            if hook else ["low_latency_dispatch", "low_latency_combine"])
        call = launched(rt)[0][1]
        assert call.topk_idx == idx.data_ptr() and call.num_topk == K and call.caller_waits == (finish != "async")
        assert combined.shape == (M, H)
        assert (event.event is not None) == (finish == "async")


@pytest.mark.parametrize("inject", ["sync in the stream lookup", "read in a tensor check"])
def test_the_spies_catch_a_read_or_a_sync_in_the_path(ll_buffer, no_host_reads, monkeypatch, inject):
    """The test above can fail: a synchronize or a data read put into the call path is caught."""
    buf, rt = ll_buffer
    x, idx, w = inputs()
    *_, handle, _, _ = dispatch(buf, x, idx)
    combine(buf, handle, idx, w)  # the sizes are known: the next combine takes the cheap checks
    if inject == "sync in the stream lookup":
        stream_of = ll_module._current_stream
        monkeypatch.setattr(ll_module, "_current_stream",
                            lambda index: (torch.cuda.synchronize(), stream_of(index))[1])
    else:
        fits = ll_module._fits
        monkeypatch.setattr(ll_module, "_fits", lambda t, *a: (t.tolist(), fits(t, *a))[1])
    with pytest.raises(AssertionError, match="read tensor data on the host or synchronized"):
        combine(buf, handle, idx, w)


def test_the_second_call_with_the_same_sizes_takes_no_full_check(ll_buffer, monkeypatch):
    """Once the runtime accepted the sizes, a call with good arguments asks no layout and runs no _validate.py
    check; sizes it has not seen take them again."""
    buf, rt = ll_buffer
    x, idx, w = inputs()
    stats = torch.zeros(E // 2, dtype=torch.int32)
    *_, handle, _, _ = dispatch(buf, x, idx, cumulative_local_expert_recv_stats=stats)
    combine(buf, handle, idx, w)
    assert [c[0] for c in rt.calls].count("low_latency_layout") == 2
    checks = [n for n in dir(V) if n.startswith("check_")]
    for name in checks:
        monkeypatch.setattr(V, name, _refuse(f"V.{name} on a call whose sizes are known"))
    rt.calls.clear()
    for _ in range(2):
        *_, handle, _, _ = dispatch(buf, x, idx, cumulative_local_expert_recv_stats=stats)
        combine(buf, handle, idx, w, out=torch.empty(M, H, dtype=torch.bfloat16))
    assert "low_latency_layout" not in [c[0] for c in rt.calls]
    monkeypatch.undo()
    buf2, rt2 = make_ll_buffer(rt.native, monkeypatch.setattr)
    buf2.low_latency_dispatch(x, idx, 2 * M, E, use_fp8=False)  # other sizes: the runtime is asked again
    assert [c[0] for c in rt2.calls].count("low_latency_layout") == 1


def _bf16(*shape):
    return torch.zeros(*shape, dtype=torch.bfloat16)


DISPATCH_BAD = [
    # (overrides of the good call, exception, words of the message)
    (dict(x=torch.zeros(M, H)), ValueError, "x must have dtype torch.bfloat16"),
    (dict(x=_bf16(M, H, 1)), ValueError, "x must have 2 dimensions"),
    (dict(x=_bf16(H, M).t()), ValueError, "x must be contiguous"),
    (dict(x=[[0.0] * H] * M), TypeError, "x must be a torch.Tensor"),
    (dict(topk_idx=torch.zeros(M, K, dtype=torch.int32)), ValueError, "topk_idx must have dtype torch.int64"),
    (dict(topk_idx=torch.zeros(M - 1, K, dtype=torch.int64)), ValueError, "topk_idx must have one row per token"),
    (dict(topk_idx=torch.zeros(K, M, dtype=torch.int64).t()), ValueError, "topk_idx must be contiguous"),
    (dict(num_max_dispatch_tokens_per_rank=float(M)), TypeError, "num_max_dispatch_tokens_per_rank must be an int"),
    (dict(num_experts=True), TypeError, "num_experts must be an int"),
    (dict(num_experts=E + 1), ValueError, "num_experts (9) must be a positive multiple of"),
    (dict(cumulative_local_expert_recv_stats=torch.zeros(E, dtype=torch.int32)), ValueError,
     "cumulative_local_expert_recv_stats must have shape [4]"),
    (dict(cumulative_local_expert_recv_stats=torch.zeros(E // 2, dtype=torch.int64)), ValueError,
     "cumulative_local_expert_recv_stats must have dtype torch.int32"),
    (dict(dispatch_wait_recv_cost_stats=torch.zeros(3, dtype=torch.int64)), ValueError,
     "dispatch_wait_recv_cost_stats must have shape [2]"),
    (dict(async_finish=True, return_recv_hook=True), ValueError, "exclude each other"),
]


@pytest.mark.parametrize("over, exc, words", DISPATCH_BAD)
def test_bad_dispatch_arguments_raise_before_anything_runs_after_good_calls(ll_buffer, over, exc, words):
    """The cheap checks that pass good calls send every bad argument to the full checks and their message."""
    buf, rt = ll_buffer
    x, idx, w = inputs()
    good = dict(x=x, topk_idx=idx, num_max_dispatch_tokens_per_rank=M, num_experts=E, use_fp8=False)
    buf.low_latency_dispatch(**good)
    rt.calls.clear()
    with pytest.raises(exc) as e:
        buf.low_latency_dispatch(**{**good, **over})
    assert words in str(e.value) and str(e.value).startswith(("low_latency_dispatch:", "low-latency mode:"))
    assert not launched(rt)
    buf.low_latency_dispatch(**good)  # the buffer goes on


def _good_combine(buf):
    x, idx, w = inputs()
    *_, handle, _, _ = dispatch(buf, x, idx)
    return dict(x=_bf16(E // 2, 2 * M, H), topk_idx=idx, topk_weights=w, handle=handle)


COMBINE_BAD = [
    (lambda g: dict(x=_bf16(E // 2, 2 * M, H + 1)), ValueError, "x must have shape [4, 16, 128]"),
    (lambda g: dict(x=_bf16(E // 2, H, 2 * M).transpose(1, 2)), ValueError, "x must be contiguous"),
    (lambda g: dict(topk_weights=g["topk_weights"].double()), ValueError, "topk_weights must have dtype torch.float32"),
    (lambda g: dict(topk_weights=torch.ones(M, K + 1)), ValueError, f"topk_weights must have shape [{M}, {K}]"),
    (lambda g: dict(topk_idx=g["topk_idx"].int()), ValueError, "topk_idx must have dtype torch.int64"),
    (lambda g: dict(handle=(g["handle"][0].long(),) + g["handle"][1:]), ValueError,
     "handle[0] (src_info) must have dtype torch.int32"),
    (lambda g: dict(handle=(g["handle"][0], g["handle"][1][:1]) + g["handle"][2:]), ValueError,
     "handle[1] (layout_range) must have shape [4, 2]"),
    (lambda g: dict(handle=g["handle"][:4]), TypeError, "handle must be the 5-tuple"),
    (lambda g: dict(handle=g["handle"][:2] + (float(M),) + g["handle"][3:]), TypeError,
     "handle[2] (num_max_dispatch_tokens_per_rank) must be an int"),
    (lambda g: dict(out=_bf16(M, H + 128)), ValueError, f"out must have shape [{M}, {H}]"),
    (lambda g: dict(combine_wait_recv_cost_stats=torch.zeros(2, dtype=torch.int32)), ValueError,
     "combine_wait_recv_cost_stats must have dtype torch.int64"),
    (lambda g: dict(async_finish=True, return_recv_hook=True), ValueError, "exclude each other"),
]


@pytest.mark.parametrize("over, exc, words", COMBINE_BAD)
def test_bad_combine_arguments_raise_before_anything_runs_after_good_calls(ll_buffer, over, exc, words):
    buf, rt = ll_buffer
    good = _good_combine(buf)
    buf.low_latency_combine(**good)
    rt.calls.clear()
    with pytest.raises(exc) as e:
        buf.low_latency_combine(**{**good, **over(good)})
    assert words in str(e.value) and str(e.value).startswith("low_latency_combine:")
    assert not launched(rt)
    buf.low_latency_combine(**good)


def test_tensors_off_the_buffers_device_raise_after_good_calls(ll_buffer, monkeypatch):
    """On a device other than the buffer's, the cheap device comparison sends the call to check_device's message
    (the CPU tensors here are off 'device 0'; the stand-in otherwise lets CPU tensors pass)."""
    buf, rt = ll_buffer
    x, idx, w = inputs()
    good = _good_combine(buf)
    monkeypatch.setattr(V, "check_device", CHECK_DEVICE)
    buf._ll.device_index = 0
    with pytest.raises(ValueError, match="low_latency_dispatch: x must be a CUDA tensor"):
        dispatch(buf, x, idx)
    with pytest.raises(ValueError, match="low_latency_combine: x must be a CUDA tensor"):
        buf.low_latency_combine(**good)
    assert [c[0] for c in launched(rt)] == ["low_latency_dispatch"]  # _good_combine's dispatch only


def test_a_tensor_subclass_takes_the_full_checks_and_passes(ll_buffer):
    buf, rt = ll_buffer
    x, idx, w = inputs()
    dispatch(buf, torch.nn.Parameter(x, requires_grad=False), idx)
    dispatch(buf, torch.nn.Parameter(x, requires_grad=False), idx)
    assert [c[0] for c in launched(rt)] == ["low_latency_dispatch"] * 2


def test_a_rejected_id_raises_at_the_next_call_and_the_buffer_goes_on(ll_buffer, native, no_host_reads):
    buf, rt = ll_buffer
    x, idx, w = inputs()
    rt.recorded = native.ArgumentError("low-latency dispatch (send) on rank 0: topk_idx[3][1] holds expert id 8; "
                                       "expected -1 (no expert) or an id in [0, num_experts)")
    with pytest.raises(ValueError, match=r"on rank 0: topk_idx\[3\]\[1\] holds expert id 8;"):
        dispatch(buf, x, idx)
    assert not launched(rt)  # raised before anything launched
    dispatch(buf, x, idx)  # the runtime cleared it: the buffer goes on
    assert [c[0] for c in launched(rt)] == ["low_latency_dispatch"]


def test_a_hook_that_raises_after_its_receive_half_is_spent(ll_buffer, native, no_host_reads):
    """The runtime raises a rejected id from the hook after launching the receive half: the hook must not run
    that half again."""
    buf, rt = ll_buffer
    x, idx, w = inputs(bad_id=E)
    *_, hook = dispatch(buf, x, idx, return_recv_hook=True)
    rt.hook_error = native.ArgumentError("low-latency dispatch (send) on rank 0: topk_idx[3][1] holds expert id 8")
    with pytest.raises(ValueError, match="expert id 8"):
        hook()
    with pytest.raises(RuntimeError, match="already ran"):
        hook()
    assert [c[0] for c in rt.calls].count("low_latency_dispatch hook") == 1


def test_the_clean_passes_its_sizes_and_the_current_stream_and_raises_the_barriers_timeout(ll_buffer, native):
    """clean_low_latency_buffer is a barrier in the runtime: Buffer hands it the sizes and the current stream, and a
    rank that did not join surfaces as uccl.ep.TimeoutError from the clean itself, naming the rank; the next clean
    goes to the runtime again."""
    import uccl.ep as ep
    buf, rt = ll_buffer
    buf.clean_low_latency_buffer(M, H, E)
    (name, sizes, stream), = launched(rt)
    assert (name, sizes) == ("clean_low_latency_buffer", (M, H, E))
    assert stream == torch.cuda.current_stream().cuda_stream
    rt.clean_error = native.TimeoutError("clean_low_latency_buffer on rank 0: rank 1 over NVLink did not join this "
                                      "barrier (clean call 2 of this Buffer) within UCCL_EP_TIMEOUT_SECS=3s")
    with pytest.raises(ep.TimeoutError, match=r"rank 1 over NVLink did not join this barrier \(clean call 2"):
        buf.clean_low_latency_buffer(M, H, E)
    with pytest.raises(TypeError, match="hidden"):
        buf.clean_low_latency_buffer(M, float(H), E)
    assert [c[0] for c in launched(rt)] == ["clean_low_latency_buffer"] * 2  # the bad size reached no runtime
    buf.clean_low_latency_buffer(M, H, E)  # the stand-in's barrier passes again


def test_the_hook_does_not_check_errors_before_its_native_half(ll_buffer):
    """A pending rejected id must not keep the receive half from running (the native hook raises it afterwards):
    the hook leaves the check to the runtime."""
    buf, rt = ll_buffer
    x, idx, w = inputs()
    *_, hook = dispatch(buf, x, idx, return_recv_hook=True)
    rt.recorded = types.SimpleNamespace()  # check_errors would raise TypeError on it
    hook()
    assert rt.calls[-1][0] == "low_latency_dispatch hook"


@pytest.mark.parametrize("ue8m0", [False, True])
@pytest.mark.parametrize("allocator", ["torch.empty_strided", "torch's fast entry"])
def test_outputs_keep_the_api_layout_from_either_allocator(ll_buffer, monkeypatch, ue8m0, allocator):
    """api.md's shapes, dtypes and strides (scales column-major in the last two dims), from torch's public entry and
    from the fast one (used while the buffer's device is the current one; a stand-in of it here)."""
    buf, rt = ll_buffer
    if not hasattr(torch, "float8_e4m3fn"):
        monkeypatch.setattr(torch, "float8_e4m3fn", torch.uint8, raising=False)  # FP8 codes as bytes (torch 1.13)
    fast = []
    st = buf._low_latency_state()
    if allocator != "torch.empty_strided":
        def fast_empty(size, stride, dtype):
            fast.append(size)
            return torch.empty_strided(size, stride, dtype=dtype)

        monkeypatch.setattr(st, "fast_empty", fast_empty)
        monkeypatch.setattr(ll_module, "_cuda_device", lambda: st.device_index)
    x, idx, w = inputs()
    hidden = 512
    x = _bf16(M, hidden)
    (recv_x, scales), recv_count, handle, _, _ = buf.low_latency_dispatch(x, idx, M, E, use_fp8=True,
                                                                          round_scale=ue8m0, use_ue8m0=ue8m0)
    El, RM, groups = E // 2, 2 * M, hidden // (512 if ue8m0 else 128)
    assert (recv_x.shape, recv_x.dtype, recv_x.is_contiguous()) == ((El, RM, hidden), torch.float8_e4m3fn, True)
    assert (scales.shape, scales.stride()) == ((El, RM, groups), (groups * RM, 1, RM))
    assert scales.dtype == (torch.int32 if ue8m0 else torch.float32) and scales.transpose(1, 2).is_contiguous()
    assert (recv_count.shape, recv_count.dtype) == ((El,), torch.int32)
    src_info, layout_range = handle[0], handle[1]
    assert (src_info.shape, src_info.dtype, src_info.is_contiguous()) == ((El, RM), torch.int32, True)
    assert (layout_range.shape, layout_range.dtype, layout_range.is_contiguous()) == ((El, 2), torch.int64, True)
    assert handle[2:] == (M, hidden, E)
    combined, _, _ = buf.low_latency_combine(_bf16(El, RM, hidden), idx, w, handle)
    assert (combined.shape, combined.dtype, combined.is_contiguous()) == ((M, hidden), torch.bfloat16, True)
    assert len(fast) == (0 if allocator == "torch.empty_strided" else 6)
    monkeypatch.setattr(ll_module, "_cuda_device", lambda: st.device_index + 1)  # another device is current
    buf.low_latency_dispatch(x, idx, M, E, use_fp8=True)
    assert len(fast) == (0 if allocator == "torch.empty_strided" else 6)  # torch's public entry, on the buffer's


@pytest.mark.parametrize("hook", [False, True])
def test_every_field_crosses_by_position_into_its_place_in_the_runtimes_table(ll_buffer, monkeypatch, hook):
    """Buffer passes the runtime's fields by position: parsed through the runtime's own table (the stand-in uses
    it), each lands in the field of its name, with the value Buffer means."""
    buf, rt = ll_buffer
    if not hasattr(torch, "float8_e4m3fn"):
        monkeypatch.setattr(torch, "float8_e4m3fn", torch.uint8, raising=False)  # FP8 codes as bytes (torch 1.13)
    x, idx, w = inputs()
    cum = torch.zeros(E // 2, dtype=torch.int32)
    wait = torch.zeros(2, dtype=torch.int64)
    (recv_x, scales), recv_count, handle, _, dh = buf.low_latency_dispatch(
        x, idx, M, E, cumulative_local_expert_recv_stats=cum, dispatch_wait_recv_cost_stats=wait, use_fp8=True,
        round_scale=True, use_ue8m0=True, return_recv_hook=hook)
    d = launched(rt)[0][1]
    src_info, layout_range = handle[0], handle[1]
    expect = dict(x=x.data_ptr(), num_tokens=M, topk_idx=idx.data_ptr(), num_topk=K, recv_x=recv_x.data_ptr(),
                  recv_x_scales=scales.data_ptr(), recv_count=recv_count.data_ptr(), src_info=src_info.data_ptr(),
                  layout_range=layout_range.data_ptr(), cumulative_local_expert_recv_stats=cum.data_ptr(),
                  dispatch_wait_recv_cost_stats=wait.data_ptr(), use_fp8=True, round_scale=True, use_ue8m0=True,
                  num_max_dispatch_tokens_per_rank=M, hidden=H, num_experts=E, return_recv_hook=hook,
                  caller_waits=True)
    assert {k: getattr(d, k) for k in expect} == expect
    assert d.stream == d.caller_stream == ll_module._current_stream(buf._ll.device_index)
    assert set(expect) | {"stream", "caller_stream"} == set(type(d).fields())
    if hook:
        dh()
    y = torch.zeros(E // 2, 2 * M, H, dtype=torch.bfloat16)
    out = torch.empty(M, H, dtype=torch.bfloat16)
    cwait = torch.zeros(2, dtype=torch.int64)
    combined, _, ch = buf.low_latency_combine(y, idx, w, handle, use_logfmt=True, out=out,
                                              combine_wait_recv_cost_stats=cwait, return_recv_hook=hook)
    c = [call for call in launched(rt) if call[0] == "low_latency_combine"][0][1]
    expect = dict(x=y.data_ptr(), topk_idx=idx.data_ptr(), topk_weights=w.data_ptr(), num_tokens=M, num_topk=K,
                  src_info=src_info.data_ptr(), layout_range=layout_range.data_ptr(), combined_x=out.data_ptr(),
                  combine_wait_recv_cost_stats=cwait.data_ptr(), use_logfmt=True, zero_copy=False,
                  num_max_dispatch_tokens_per_rank=M, hidden=H, num_experts=E, return_recv_hook=hook,
                  caller_waits=True)
    assert {k: getattr(c, k) for k in expect} == expect
    assert set(expect) | {"stream", "caller_stream"} == set(type(c).fields())
    if hook:
        ch()


def test_the_runtime_tables_take_every_field_by_position_or_by_keyword_not_both(native):
    names = native.LowLatencyDispatchCall.fields()
    values = list(range(1, len(names) + 1))
    by_position = native.LowLatencyDispatchCall(*values)
    by_keyword = native.LowLatencyDispatchCall(**dict(zip(names, values)))
    assert [getattr(by_position, n) for n in names] == [getattr(by_keyword, n) for n in names]
    with pytest.raises(TypeError, match="by position"):
        native.LowLatencyDispatchCall(*values[:-1])
    with pytest.raises(TypeError, match="not both"):
        native.LowLatencyDispatchCall(*values, x=1)


def test_the_host_check_of_expert_ids_is_opt_in():
    from uccl.ep import Buffer
    assert Buffer.validate_expert_ids is False



def test_the_host_time_bench_runs_on_the_stand_in(native):
    """bench/host_time.py (the figures of issue 11's host budget without a GPU) prints one median per call."""
    import os
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, os.path.join(repo, "bench", "host_time.py"), "--iters", "20", "--warmup", "2",
                        "--num-tokens", "4", "--hidden", "512", "--profile"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("host time per low-latency call (stand-in)"))
    for call in ("dispatch", "combine", "dispatch send (hook)", "dispatch hook()", "combine send (hook)",
                 "combine hook()"):
        assert f" {call} " in line, line
    assert "low_latency_dispatch" in r.stdout  # the profile names the calls


def test_low_latency_calls_take_the_current_stream_unless_ordering_needs_the_comm_stream(ll_buffer, monkeypatch):
    """Without async_finish a call runs on the current stream (the runtime then makes no waits); with it, on the comm
    stream. A call after an async one, or from another stream than the earlier calls', goes through the comm stream,
    which waits for the earlier calls' stream too: two low-latency kernels of one Buffer never run at once."""
    buf, rt = ll_buffer
    current = {"s": 11}
    monkeypatch.setattr(ll_module, "_current_stream", lambda index: current["s"])
    waits = []
    monkeypatch.setattr(ll_module, "_stream_waits", lambda waiter, waited, index: waits.append((waiter, waited)))
    buf._comm_stream.cuda_stream = 99  # the comm stream's handle, before the first call reads it
    x, idx, w = inputs()

    def streams(**kwargs):
        rt.calls.clear()
        dispatch(buf, x, idx, **kwargs)
        c = launched(rt)[0][1]
        return c.stream, c.caller_stream, c.caller_waits

    assert streams() == (11, 11, True)
    assert streams(async_finish=True) == (99, 11, False)
    assert streams() == (99, 11, True)  # after an async call: ordered behind it on the comm stream
    assert streams() == (11, 11, True)
    assert waits == []
    current["s"] = 22  # another caller stream than the earlier calls'
    assert streams() == (99, 22, True) and waits == [(99, 11)]
    assert streams() == (22, 22, True) and waits == [(99, 11)]
