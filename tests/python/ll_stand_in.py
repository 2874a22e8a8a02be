"""The low-latency calls of uccl.ep.Buffer on the CPU: a stand-in for the low-latency surface of `_C.Runtime`
(FakeLowLatencyRuntime) and a Buffer over it (make_ll_buffer), CPU tensors standing in for CUDA ones. Used by
test_ll_host_path.py and by bench/host_time.py (host time per call without a GPU).

The stand-in takes its fields (by position, as Buffer passes them, or by keyword) through uccl.ep._C's
LowLatencyDispatchCall / LowLatencyCombineCall, the very table the real Runtime parses them with, so a name Buffer gets wrong fails here as it would on the device; and, like the
runtime, it raises a recorded error before it launches. It launches nothing.
"""
import threading

import torch

from test_intranode_fake import install_fake_cuda


class FakeLowLatencyRuntime:
    """The low-latency surface of `_C.Runtime` that Buffer uses, with a call log (`log=False`: none, for timing).
    `recorded` is what the next call (or check_errors) raises, once; `hook_error` what the next hook raises after its
    receive half; `clean_error` what the next clean's barrier raises."""

    def __init__(self, native, num_ranks: int, log: bool = True):
        self.native, self.R, self.log = native, num_ranks, log
        self.calls, self.recorded, self.hook_error, self.clean_error = [], None, None, None

    def _raise_recorded(self):
        error, self.recorded = self.recorded, None
        if error is not None:
            raise error

    def check_errors(self):
        if self.log:
            self.calls.append(("check_errors",))
        self._raise_recorded()

    def low_latency_layout(self, *, num_max_dispatch_tokens_per_rank, hidden, num_experts):
        if self.log:
            self.calls.append(("low_latency_layout", (num_max_dispatch_tokens_per_rank, hidden, num_experts)))
        return self.native.low_latency_layout(num_max_dispatch_tokens_per_rank=num_max_dispatch_tokens_per_rank,
                                              hidden=hidden, num_ranks=self.R, num_experts=num_experts)

    def _launch(self, name, call):
        self._raise_recorded()  # the runtime raises what was recorded before it launches
        if self.log:
            self.calls.append((name, call, call.return_recv_hook))
        if not call.return_recv_hook:
            return None

        def hook(stream):
            if self.log:
                self.calls.append((name + " hook", stream))
            error, self.hook_error = self.hook_error, None
            if error is not None:  # the runtime raises a rejected id after launching the receive half
                raise error

        return hook

    def low_latency_dispatch(self, *fields, **keywords):
        return self._launch("low_latency_dispatch", self.native.LowLatencyDispatchCall(*fields, **keywords))

    def low_latency_combine(self, *fields, **keywords):
        return self._launch("low_latency_combine", self.native.LowLatencyCombineCall(*fields, **keywords))

    def clean_low_latency_buffer(self, *, num_max_dispatch_tokens_per_rank, hidden, num_experts, stream):
        """The clean: `clean_error` is what its barrier raises, once (a rank that did not join, named), as the runtime
        raises it at the clean itself once the barrier is over."""
        self.low_latency_layout(num_max_dispatch_tokens_per_rank=num_max_dispatch_tokens_per_rank, hidden=hidden,
                                num_experts=num_experts)
        if self.log:
            self.calls.append(("clean_low_latency_buffer", (num_max_dispatch_tokens_per_rank, hidden, num_experts),
                               stream))
        error, self.clean_error = self.clean_error, None
        if error is not None:
            raise error


def make_ll_buffer(native, setattr_=setattr, num_ranks: int = 2, log: bool = True):
    """(Buffer, FakeLowLatencyRuntime): rank 0 of `num_ranks`, on fake torch.cuda streams (setattr_:
    monkeypatch.setattr in tests, setattr for good in a script). CPU tensors pass the device checks."""
    from uccl.ep import Buffer
    from uccl.ep import _validate as V
    install_fake_cuda(setattr_)
    setattr_(V, "check_device", lambda *args, **kwargs: None)  # CPU tensors stand in for CUDA ones
    rt = FakeLowLatencyRuntime(native, num_ranks, log)
    b = Buffer.__new__(Buffer)
    b.__dict__.update(_runtime=rt, rank=0, group_size=num_ranks, num_nvl_bytes=0, num_rdma_bytes=1 << 30,
                      low_latency_mode=True, explicitly_destroy=False, group=None, comm=None,
                      device=torch.device("cpu"), _comm_stream=torch.cuda.Stream(name="comm"),
                      _call_lock=threading.Lock())
    return b, rt
