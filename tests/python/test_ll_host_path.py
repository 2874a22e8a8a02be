"""The low-latency calls on the host: uccl.ep.Buffer's low_latency_dispatch / low_latency_combine (and their receive
hooks) over a stand-in runtime on the CPU. Their call path reads no tensor data on the host (no aminmax, tolist, item,
cpu): the kernels check the expert ids and the runtime raises what they recorded at the next call. So every torch
function that reads data back is made to fail here, and the calls must still reach the runtime, bad ids included.
"""
import types

import pytest
import torch

from uccl.ep import _validate as V
from test_intranode_fake import install_fake_cuda

H, K, E, M = 128, 2, 8, 8


class FakeLowLatencyRuntime:
    """The low-latency surface of `_C.Runtime` Buffer uses: keyword arguments, the real layouts and argument
    structs of uccl.ep._C, a call log. `recorded` is what check_errors (and a hook) raise next, once."""

    def __init__(self, native, num_ranks: int):
        self.native, self.R = native, num_ranks
        self.calls, self.recorded, self.hook_error = [], None, None

    def check_errors(self):
        self.calls.append(("check_errors",))
        error, self.recorded = self.recorded, None
        if error is not None:
            raise error

    def low_latency_layout(self, *, num_max_dispatch_tokens_per_rank, hidden, num_experts):
        return self.native.low_latency_layout(num_max_dispatch_tokens_per_rank=num_max_dispatch_tokens_per_rank,
                                              hidden=hidden, num_ranks=self.R, num_experts=num_experts)

    def _launch(self, name, args, return_recv_hook):
        self.calls.append((name, args, return_recv_hook))
        if not return_recv_hook:
            return None

        def hook(stream):
            self.calls.append((name + " hook", stream))
            error, self.hook_error = self.hook_error, None
            if error is not None:  # the runtime raises a rejected id after launching the receive half
                raise error

        return hook

    def low_latency_dispatch(self, *, args, num_max_dispatch_tokens_per_rank, hidden, num_experts, return_recv_hook,
                             stream):
        return self._launch("low_latency_dispatch", args, return_recv_hook)

    def low_latency_combine(self, *, args, num_max_dispatch_tokens_per_rank, hidden, num_experts, return_recv_hook,
                            stream):
        return self._launch("low_latency_combine", args, return_recv_hook)


def _refuse(what):
    def refused(*args, **kwargs):
        raise AssertionError(f"the low-latency call path read tensor data on the host ({what})")

    return refused


@pytest.fixture
def no_host_reads(monkeypatch):
    """Every way Buffer could read a tensor's data back to the host fails the test."""
    for name in ("aminmax", "min", "max", "any", "all"):
        monkeypatch.setattr(torch, name, _refuse(f"torch.{name}"))
    for name in ("aminmax", "min", "max", "any", "all", "tolist", "item", "cpu", "numpy", "__bool__", "__int__",
                 "__index__", "__float__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, _refuse(f"Tensor.{name}"))


@pytest.fixture
def ll_buffer(native, monkeypatch):
    """A uccl.ep.Buffer (rank 0 of 2) over FakeLowLatencyRuntime, CPU tensors standing in for CUDA ones."""
    from uccl.ep import Buffer
    install_fake_cuda(monkeypatch.setattr)
    monkeypatch.setattr(V, "check_device", lambda *args, **kwargs: None)  # CPU tensors stand in for CUDA ones
    rt = FakeLowLatencyRuntime(native, 2)
    b = Buffer.__new__(Buffer)
    b.__dict__.update(_runtime=rt, rank=0, group_size=2, num_nvl_bytes=0, num_rdma_bytes=1 << 30,
                      low_latency_mode=True, explicitly_destroy=False, group=None, comm=None,
                      device=torch.device("cpu"), _comm_stream=torch.cuda.Stream(name="comm"))
    return b, rt


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


@pytest.mark.parametrize("bad_id", [None, E, 1 << 40, -2])
@pytest.mark.parametrize("hook", [False, True])
def test_low_latency_calls_read_no_tensor_data_on_the_host(ll_buffer, no_host_reads, bad_id, hook):
    """Good and bad expert ids alike reach the runtime untouched: the kernels, not Python, check them."""
    buf, rt = ll_buffer
    x, idx, w = inputs(bad_id)
    recv_x, recv_count, handle, event, recv_hook = dispatch(buf, x, idx, return_recv_hook=hook)
    if hook:
        recv_hook()
    combined, event, recv_hook = combine(buf, handle, idx, w, return_recv_hook=hook)
    if hook:
        recv_hook()
    launched = [c for c in rt.calls if c[0] != "check_errors"]
    assert [c[0] for c in launched] == (
        ["low_latency_dispatch", "low_latency_dispatch hook", "low_latency_combine", "low_latency_combine hook"]
        if hook else ["low_latency_dispatch", "low_latency_combine"])
    assert launched[0][1].topk_idx == idx.data_ptr() and launched[0][1].num_topk == K
    assert combined.shape == (M, H)


def test_a_rejected_id_raises_at_the_next_call_and_the_buffer_goes_on(ll_buffer, native, no_host_reads):
    buf, rt = ll_buffer
    x, idx, w = inputs()
    rt.recorded = native.ArgumentError("low-latency dispatch (send) on rank 0: topk_idx[3][1] holds expert id 8; "
                                       "expected -1 (no expert) or an id in [0, num_experts)")
    with pytest.raises(ValueError, match=r"on rank 0: topk_idx\[3\]\[1\] holds expert id 8;"):
        dispatch(buf, x, idx)
    assert not [c for c in rt.calls if c[0] != "check_errors"]  # raised before anything launched
    dispatch(buf, x, idx)  # the runtime cleared it: the buffer goes on
    assert [c[0] for c in rt.calls if c[0] != "check_errors"] == ["low_latency_dispatch"]


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


def test_the_hook_does_not_check_errors_before_its_native_half(ll_buffer):
    """A pending rejected id must not keep the receive half from running (the native hook raises it afterwards):
    the hook leaves the check to the runtime."""
    buf, rt = ll_buffer
    x, idx, w = inputs()
    *_, hook = dispatch(buf, x, idx, return_recv_hook=True)
    rt.recorded = types.SimpleNamespace()  # check_errors would raise TypeError on it
    hook()
    assert rt.calls[-1][0] == "low_latency_dispatch hook"


def test_the_host_check_of_expert_ids_is_opt_in():
    from uccl.ep import Buffer
    assert Buffer.validate_expert_ids is False
