"""`Buffer`: DeepEP's `deep_ep.Buffer` over the uccl-ep runtime (uccl.ep._C.Runtime).

The runtime owns the limits, layouts, value checks, the topology and the low-latency buffer halves; this file
checks what only torch can see (_validate.py), allocates every output tensor, picks streams, builds each call's
argument struct by name (`_C.DispatchArgs(x=..., ...)`; a low-latency call passes the same fields as keywords of
its one runtime call: the Python argument names all the way down) and wraps device memory into tensors. A value the runtime rejects raises `uccl.ep.ArgumentError` (a ValueError) before any
kernel runs.

Streams: a call runs on the buffer's comm stream after that stream waits for the current one (for the low-latency
calls the runtime makes both waits, with an event of its own). With async_finish the call returns an EventOverlap
recorded on the comm stream that keeps inputs and outputs alive; without it the current stream waits for the comm
stream before the call returns, so a low-latency call without async_finish runs on the current stream itself: the
same order, without the four event calls (a few us of host time per call). With return_recv_hook only the send phase runs now; hook() runs the receive phase
on the stream current at hook time.

Low-latency halves: the RDMA buffer has two halves; the runtime picks the half of each dispatch and combine and
flips it, so two calls may be outstanding.

Threads: a Buffer serves one thread at a time. A call that starts while another thread is inside a call on the same
Buffer raises RuntimeError instead of racing it (the two would interleave their launches and the halves they use).
"""
import contextlib
import functools
import threading
from typing import Optional, Tuple, Union

import torch

from . import ArgumentError
from . import _validate as V
from ._native import limit, native
from .config import Config, default_combine_config, default_dispatch_config
from .utils import EventHandle, EventOverlap

def _one_thread(method):
    """Runs `method` with the Buffer's call lock held; a second thread that arrives meanwhile gets RuntimeError."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        lock = self._call_lock
        if lock is None:  # a Buffer whose constructor did not get that far
            return method(self, *args, **kwargs)
        if not lock.acquire(False):  # positional: a keyword costs here, on every call
            raise RuntimeError(f"Buffer.{method.__name__}: another thread is inside a call on this Buffer; a Buffer "
                               f"serves one thread at a time (serialize the calls, or use one Buffer per thread)")
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release()

    return call


_CTOR_ARGS = ("group", "num_nvl_bytes", "num_rdma_bytes", "low_latency_mode", "num_qps_per_rank",
              "allow_nvlink_for_low_latency_mode", "allow_mnnvl", "use_fabric", "explicitly_destroy",
              "enable_shrink", "comm")


def _ptr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


class _DeviceMemory:
    """`nbytes` of device memory at `ptr` as a 1-D uint8 array for torch.as_tensor (CUDA array interface).
    Holds `owner` so the memory outlives every tensor made from it."""

    def __init__(self, ptr: int, nbytes: int, owner):
        self.owner = owner
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr, False), "version": 2,
                                         "strides": None}


def _wrap_device_memory(ptr: int, nbytes: int, owner, device: torch.device) -> torch.Tensor:
    if nbytes == 0:
        return torch.empty(0, dtype=torch.uint8, device=device)
    return torch.as_tensor(_DeviceMemory(ptr, nbytes, owner), device=device)


def _as_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"Buffer: {name} must be a bool, got {type(value).__name__}")
    return value


def _as_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Buffer: {name} must be an int, got {type(value).__name__}")
    return value


_Tensor, _BF16, _F32, _I32, _I64 = torch.Tensor, torch.bfloat16, torch.float32, torch.int32, torch.int64

# The current stream of a device as a cudaStream_t int: torch.cuda.current_stream(index).cuda_stream without building a
# Stream object (torch's own accessor where this torch has one). The CPU tests replace it with their stand-in.
_current_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
    lambda index: torch.cuda.current_stream(index).cuda_stream)


def _ll_streams(st, async_finish: bool) -> dict:
    """The stream keywords of a low-latency runtime call. Without async_finish, when every earlier low-latency launch
    is ordered before the current stream: the current stream itself, the order the comm stream and its two waits
    would give (the runtime skips the waits when the two streams are one). Otherwise the comm stream, after the
    current stream (the runtime's wait) and after the stream of the earlier launches (here, when that is a third one):
    two low-latency kernels of one Buffer never run at once."""
    current = _current_stream(st.device_index)
    last = st.last_stream
    if not async_finish and (last is None or last == current):
        st.last_stream = current
        return {"stream": current, "caller_stream": current, "caller_waits": True}
    comm = st.comm_stream
    if last is not None and last != comm and last != current:
        _stream_waits(comm, last, st.device_index)
    st.last_stream = comm if async_finish else current
    return {"stream": comm, "caller_stream": current, "caller_waits": not async_finish}


def _stream_waits(waiter: int, waited: int, device_index: int) -> None:
    """The stream `waiter` waits for the work queued so far on `waited` (raw cudaStream_t values)."""
    ev = torch.cuda.Event()
    ev.record(torch.cuda.ExternalStream(waited, device=device_index))
    torch.cuda.ExternalStream(waiter, device=device_index).wait_event(ev)


# torch's allocation entry without argument parsing or dispatch, empty_strided(size, stride, dtype) on the current CUDA
# device (what the code torch.compile generates allocates with; "saves ~2us on every allocation" says its source), and
# the current device's index. None where this torch lacks them (then torch.empty_strided allocates).
_fast_empty = getattr(getattr(getattr(torch._C, "_dynamo", None), "guards", None), "_empty_strided_cuda", None)
_cuda_device = getattr(torch._C, "_cuda_getDevice", None)
if _cuda_device is None:
    _fast_empty = None


def _empty_on(device: torch.device):
    """empty(size, stride, dtype) -> a new tensor on `device`, through torch's public entry."""
    def empty(size: tuple, stride: tuple, dtype: torch.dtype) -> torch.Tensor:
        return torch.empty_strided(size, stride, dtype=dtype, device=device)

    return empty


def _contiguous_strides(size: tuple) -> tuple:
    strides, step = [], 1
    for n in reversed(size):
        strides.insert(0, step)
        step *= max(n, 1)
    return tuple(strides)


def _fits(t, dtype: torch.dtype, size: tuple, device_index: int) -> bool:
    """`t` is a plain contiguous tensor of this dtype and size on this device (no message: see the callers)."""
    return (type(t) is _Tensor and t.dtype is dtype and t.shape == size and t.is_contiguous()
            and t.get_device() == device_index)


class _DispatchPlan:
    """What low_latency_dispatch's outputs are for one (M, hidden, num_experts, use_fp8, use_ue8m0), from the runtime's
    layout (api.md gives the shapes): made once per size tuple, after the runtime accepted the sizes."""

    __slots__ = ("experts_per_rank", "hidden", "recv_x", "scales", "recv_count", "src_info", "layout_range",
                 "stats_size", "wait_size")

    def __init__(self, experts_per_rank: int, num_ranks: int, max_tokens: int, hidden: int, use_fp8: bool,
                 use_ue8m0: bool):
        E, RM = experts_per_rank, num_ranks * max_tokens
        self.experts_per_rank, self.hidden = E, hidden
        # Each output as (size, stride, dtype).
        self.recv_x = _contiguous((E, RM, hidden), torch.float8_e4m3fn if use_fp8 else _BF16)
        self.scales = None
        if use_fp8:  # [E, RM, groups] stored column-major in the last two dims: the kernel writes [E, groups, RM]
            if use_ue8m0:
                groups, dtype = hidden // limit("kUe8m0ChannelsPerInt"), _I32
            else:
                groups, dtype = hidden // limit("kChannelsPerScale"), _F32
            self.scales = ((E, RM, groups), (groups * RM, 1, RM), dtype)
        self.recv_count, self.src_info = _contiguous((E,), _I32), _contiguous((E, RM), _I32)
        self.layout_range = _contiguous((E, num_ranks), _I64)
        self.stats_size, self.wait_size = (E,), (num_ranks,)


def _contiguous(size: tuple, dtype: torch.dtype) -> tuple:
    return size, _contiguous_strides(size), dtype


class _CombinePlan:
    """low_latency_combine's expected input sizes for one handle's (M, hidden, num_experts)."""

    __slots__ = ("experts_per_rank", "x_size", "src_info_size", "layout_range_size", "wait_size")

    def __init__(self, experts_per_rank: int, num_ranks: int, max_tokens: int, hidden: int):
        E, RM = experts_per_rank, num_ranks * max_tokens
        self.experts_per_rank = E
        self.x_size, self.src_info_size, self.layout_range_size = (E, RM, hidden), (E, RM), (E, num_ranks)
        self.wait_size = (num_ranks,)


class _LowLatencyState:
    """Per Buffer: the device index and comm stream the low-latency calls use, and their plans by size tuple. A size
    tuple enters only after the runtime accepted it; the runtime's answer cannot change for the Buffer's life.

    `made` holds the handles of the last two dispatches (two calls may be outstanding): their src_info and
    layout_range are tensors this Buffer allocated with the plan's shapes, so a combine given one of them (the same
    tuple object) skips re-reading those two tensors' metadata. Any other handle gets every check."""

    __slots__ = ("device_index", "comm_stream", "dispatch", "combine", "made", "fast_empty", "empty", "last_stream")

    def __init__(self, device: torch.device, comm_stream: int):
        self.device_index = device.index if device.type == "cuda" else -1
        self.comm_stream = comm_stream
        self.last_stream = None  # a stream ordered after every low-latency launch so far (None: none yet)
        self.dispatch, self.combine = {}, {}
        self.made = (None, None)
        # Outputs come from _fast_empty while the buffer's device is the current one, else from torch's public entry.
        self.fast_empty = _fast_empty if self.device_index >= 0 else None
        self.empty = _empty_on(device)

    def allocator(self):
        """empty(size, stride, dtype) on the buffer's device, the cheapest one that is right now."""
        fast = self.fast_empty
        return fast if fast is not None and _cuda_device() == self.device_index else self.empty


class Buffer:
    """Communication buffers for expert-parallel dispatch and combine (DeepEP's `Buffer`, same signature)."""

    num_sms: int = 20
    _call_lock: Optional[threading.Lock] = None  # set first thing in __init__
    _ll: Optional[_LowLatencyState] = None  # made by the first low-latency call
    # Expert ids outside [-1, num_experts) are found on the GPU: get_dispatch_layout's kernel and the low-latency
    # kernels skip such an entry and record it, and the next call (or the receive hook) raises ArgumentError naming
    # the entry, the id and the rank; no call reads device memory from the host for it. True adds a host check
    # before each normal-mode call that takes topk_idx (raising before anything is launched, at the cost of a
    # device-to-host read that waits for the work queued before it); it is skipped inside CUDA-graph capture.
    validate_expert_ids: bool = False

    def __init__(self, group=None, num_nvl_bytes: int = 0, num_rdma_bytes: int = 0, low_latency_mode: bool = False,
                 num_qps_per_rank: int = 24, allow_nvlink_for_low_latency_mode: bool = True,
                 allow_mnnvl: bool = False, use_fabric: bool = False, explicitly_destroy: bool = False,
                 enable_shrink: bool = False, comm=None, **unknown):
        self._runtime = None
        self._call_lock = threading.Lock()
        # ---- the type checks come before anything touches CUDA or the group; the values are the runtime's ----
        if unknown:
            raise TypeError(f"Buffer() got unexpected keyword argument(s) {sorted(unknown)}; accepted: "
                            f"{', '.join(_CTOR_ARGS)}")
        if (group is None) == (comm is None):
            raise TypeError("Buffer: pass exactly one of group (a torch.distributed process group) and comm "
                            "(an mpi4py communicator)")
        self.num_nvl_bytes = _as_int("num_nvl_bytes", num_nvl_bytes)
        self.num_rdma_bytes = _as_int("num_rdma_bytes", num_rdma_bytes)
        self.low_latency_mode = _as_bool("low_latency_mode", low_latency_mode)
        # A hint DeepEP's signature carries; the runtime sizes its queue pairs itself, so nothing keeps it.
        if isinstance(num_qps_per_rank, bool) or not isinstance(num_qps_per_rank, int) or num_qps_per_rank <= 0:
            raise ValueError(f"Buffer: num_qps_per_rank must be a positive int (a hint), got {num_qps_per_rank!r}")
        flags = dict(allow_nvlink_for_low_latency_mode=allow_nvlink_for_low_latency_mode, allow_mnnvl=allow_mnnvl,
                     use_fabric=use_fabric, enable_shrink=enable_shrink)
        for name, value in flags.items():
            _as_bool(name, value)
        self.explicitly_destroy = _as_bool("explicitly_destroy", explicitly_destroy)
        self.group, self.comm = group, comm

        # ---- the native module and a device ----------------------------------------------------------------
        _C = native()
        if not _C.has_cuda() or not hasattr(_C, "Runtime"):
            raise RuntimeError("Buffer: uccl.ep._C was built without CUDA; rebuild with the CUDA toolkit present")
        if not torch.cuda.is_available():
            raise RuntimeError("Buffer: no CUDA device is available to this process")
        self.device = torch.device("cuda", torch.cuda.current_device())

        # ---- group: the runtime decides the topology from every rank's host identity ------------------------
        if group is not None:
            self.rank, self.group_size = int(group.rank()), int(group.size())
        else:
            self.rank, self.group_size = int(comm.Get_rank()), int(comm.Get_size())
        host_ids = [str(h) for h in self._all_gather(_C.local_host_id())]
        self._runtime = _C.Runtime(rank=self.rank, num_ranks=self.group_size, device=self.device.index,
                                   host_ids=host_ids, num_nvl_bytes=self.num_nvl_bytes,
                                   num_rdma_bytes=self.num_rdma_bytes, low_latency_mode=self.low_latency_mode,
                                   **flags)
        infos = self._all_gather(bytes(self._runtime.local_info()))
        self._runtime.connect(infos=[bytes(i) for i in infos])
        self._comm_stream = torch.cuda.Stream(device=self.device)
        # Every rank's memory is zeroed and mapped before any rank's first kernel can write to it.
        torch.cuda.synchronize(self.device)
        self._barrier()

    # ---- life cycle -------------------------------------------------------------------------------------------
    def _all_gather(self, obj) -> list:
        if self.group is not None:
            import torch.distributed as dist
            out = [None] * self.group_size
            dist.all_gather_object(out, obj, group=self.group)
            return out
        return list(self.comm.allgather(obj))

    def _barrier(self) -> None:
        if self.group is not None:
            import torch.distributed as dist
            dist.barrier(group=self.group)
        else:
            self.comm.Barrier()

    def _rt(self, call: str):
        """The runtime, after raising any failure a kernel or proxy recorded since the last call."""
        if self._runtime is None:
            raise RuntimeError(f"{call}: the buffer was destroyed")
        self._runtime.check_errors()
        return self._runtime

    @_one_thread
    def destroy(self) -> None:
        """Collective: frees the buffer on every rank. Required (and only allowed) with explicitly_destroy=True."""
        if not self.explicitly_destroy:
            raise RuntimeError("Buffer.destroy: the buffer was built with explicitly_destroy=False; it is freed "
                               "when garbage-collected")
        if self._runtime is None:
            return
        torch.cuda.synchronize(self.device)
        self._barrier()  # no peer may still be writing into this rank's memory
        self._runtime.destroy()
        self._runtime = None

    def __del__(self):
        runtime = getattr(self, "_runtime", None)
        if runtime is not None:
            try:
                runtime.destroy()
            except Exception:
                pass

    @property
    def topology(self):
        """The runtime's `_C.Topology`: node size and count, the NVLink domain, and where each came from."""
        return self._rt("topology").topology()

    @property
    def normal_path(self) -> str:
        """Which normal-mode kernels run and why: 'pipelined (one GPU per rank)', or 'staged (...)' where ranks
        share a GPU or UCCL_EP_NORMAL_PATH=staged (src/kernels/intranode.hpp)."""
        return self._rt("normal_path").normal_path()

    # ---- static helpers ---------------------------------------------------------------------------------------
    @classmethod
    def set_num_sms(cls, new_num_sms: int) -> None:
        if isinstance(new_num_sms, bool) or not isinstance(new_num_sms, int) or new_num_sms <= 0 or new_num_sms % 2:
            raise ValueError(f"Buffer.set_num_sms: expected a positive even number of SMs, got {new_num_sms!r}")
        cls.num_sms = new_num_sms

    @staticmethod
    def capture() -> EventOverlap:
        """An EventOverlap of an event recorded on the current stream now."""
        return EventOverlap(EventHandle())

    @staticmethod
    def get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank: int, hidden: int, num_ranks: int,
                                       num_experts: int) -> int:
        """Bytes of RDMA buffer low-latency mode needs for these sizes (both halves; a multiple of 128). Raises
        ArgumentError (a ValueError) naming the argument for sizes low_latency_dispatch would reject."""
        return int(native().get_low_latency_rdma_size_hint(
            num_max_dispatch_tokens_per_rank=num_max_dispatch_tokens_per_rank, hidden=hidden, num_ranks=num_ranks,
            num_experts=num_experts))

    @staticmethod
    def get_dispatch_config(num_ranks: int) -> Config:
        return default_dispatch_config(num_ranks, Buffer.num_sms)

    @staticmethod
    def get_combine_config(num_ranks: int) -> Config:
        return default_combine_config(num_ranks, Buffer.num_sms)

    @staticmethod
    def is_sm90_compiled() -> bool:
        try:
            return bool(native().has_cuda())
        except ImportError:
            return False

    def get_comm_stream(self) -> torch.cuda.Stream:
        return self._comm_stream

    @_one_thread
    def get_local_buffer_tensor(self, dtype: torch.dtype, size: Optional[Union[torch.Size, tuple]] = None,
                                offset: int = 0, use_rdma_buffer: bool = False) -> torch.Tensor:
        """This rank's NVLink buffer (or RDMA buffer) from byte `offset` as a tensor of `dtype` and `size`
        (1-D to the end of the buffer when None). The tensor aliases the buffer; it does not own it.

        `offset` must be a multiple of dtype's element size (the buffers start 128-byte aligned, so the tensor is
        then aligned to its elements; torch needs no more). An offset that is negative, misaligned or past the end,
        a negative dimension, or a size that does not fit from `offset` raises ArgumentError (a ValueError) naming
        the argument, before the buffer is touched."""
        call = "get_local_buffer_tensor"
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"{call}: dtype must be a torch.dtype, got {type(dtype).__name__}")
        which = "RDMA" if use_rdma_buffer else "NVLink"
        total = self.num_rdma_bytes if use_rdma_buffer else self.num_nvl_bytes
        elem = torch.empty(0, dtype=dtype).element_size()
        V.check_int(call, "offset", offset)
        if offset < 0 or offset > total:
            raise ArgumentError(f"{call}: offset {offset} is outside the {which} buffer of {total} bytes "
                                f"(expected 0 <= offset <= {total})")
        if offset % elem:
            raise ArgumentError(f"{call}: offset {offset} is not a multiple of the {elem}-byte element size of "
                                f"{dtype}: the tensor would be misaligned")
        if size is None:
            size = ((total - offset) // elem,)
        if isinstance(size, int) or not isinstance(size, (tuple, list, torch.Size)):
            raise TypeError(f"{call}: size must be a tuple of ints (or None), got {type(size).__name__}")
        for i, n in enumerate(size):
            V.check_int(call, f"size[{i}]", n)
            if n < 0:
                raise ArgumentError(f"{call}: size[{i}] must be >= 0, got {n} (size {tuple(size)})")
        size = torch.Size(size)
        nbytes = size.numel() * elem
        if nbytes > total - offset:
            raise ArgumentError(f"{call}: size {tuple(size)} of {dtype} ({nbytes} bytes) at offset {offset} exceeds "
                                f"the {which} buffer of {total} bytes ({total - offset} bytes from the offset)")
        rt = self._rt(call)
        base = rt.rdma_buffer_ptr() if use_rdma_buffer else rt.nvl_buffer_ptr()
        raw = _wrap_device_memory(base + offset, nbytes, rt, self.device)
        return raw.view(dtype).view(size)

    # ---- low-latency mode ---------------------------------------------------------------------------------
    # Host time per call is part of the decode step's latency, so each call does the least it can (issue 11): the
    # sizes the runtime accepted, and what they imply (output shapes, the layout's experts_per_rank), are kept per size
    # tuple (_LowLatencyState); the tensor checks run first as plain metadata comparisons, and only when one of them
    # fails do the checks of _validate.py run, which raise the message (same checks, same order, same words); every
    # value crosses into the runtime in one call by keyword, which also checks recorded errors, orders the comm stream
    # after the current one and back (an event in the runtime, nothing waits on the host) and launches. Nothing reads
    # tensor data on the host: the kernels check the expert ids.
    def _check_expert_ids(self, call: str, topk_idx: torch.Tensor, num_experts: int) -> None:
        # Normal mode only: the low-latency kernels check the ids on the GPU (no host read on their call path).
        # A device-to-host read: skipped while a CUDA graph is being captured, and when the caller turned it off.
        if self.validate_expert_ids and not torch.cuda.is_current_stream_capturing():
            V.check_expert_ids(call, "topk_idx", topk_idx, num_experts)

    def _check_devices(self, call: str, **tensors) -> None:
        for name, t in tensors.items():
            if t is not None:
                V.check_device(call, name, t, self.device)

    def _ll_layout(self, rt, max_tokens: int, hidden: int, num_experts: int):
        """The runtime's layout for these sizes: ArgumentError for sizes it rejects, before anything is allocated."""
        return rt.low_latency_layout(num_max_dispatch_tokens_per_rank=max_tokens, hidden=hidden,
                                     num_experts=num_experts)

    def _device_index(self) -> int:
        """The buffer's CUDA device index; -1 for the CPU (what Tensor.get_device() says of a CPU tensor)."""
        return self.device.index if self.device.type == "cuda" else -1

    def _low_latency_state(self) -> "_LowLatencyState":
        st = self._ll
        if st is None:
            st = self._ll = _LowLatencyState(self.device, self._comm_stream.cuda_stream)
        return st

    def _ll_keep(self, call: str, native_hook, async_finish: bool, tensors: tuple) -> tuple:
        """(event, hook) of a low-latency call that returns an event to wait on or a receive hook: either keeps the
        call's tensors (None entries skipped) alive until the work that uses them is done."""
        keep = tuple(t for t in tensors if t is not None)
        event = EventOverlap(EventHandle(self._comm_stream), extra_tensors=keep) if async_finish else EventOverlap(None)
        return event, (None if native_hook is None else _RecvHook(self, native_hook, keep, call))

    def _ll_dispatch_plan(self, rt, st, x, topk_idx, M, num_experts, cumulative_local_expert_recv_stats,
                          dispatch_wait_recv_cost_stats, use_fp8, use_ue8m0, async_finish, return_recv_hook):
        """Every check of low_latency_dispatch with its message (the fast path found something to say), then the
        plan for these sizes (kept when the sizes are plain ints)."""
        call = "low_latency_dispatch"
        R = self.group_size
        _, hidden = V.check_ll_dispatch(x, topk_idx, M, num_experts, use_fp8, async_finish, return_recv_hook, call=call)
        self._check_devices(call, x=x, topk_idx=topk_idx,
                            cumulative_local_expert_recv_stats=cumulative_local_expert_recv_stats,
                            dispatch_wait_recv_cost_stats=dispatch_wait_recv_cost_stats)
        key = (M, hidden, num_experts, use_fp8, use_ue8m0)
        plan = st.dispatch.get(key) if type(M) is int and type(num_experts) is int else None
        if plan is None:
            layout = self._ll_layout(rt, M, hidden, num_experts)
            plan = _DispatchPlan(layout.experts_per_rank, R, M, hidden, use_fp8, use_ue8m0)
            if type(M) is int and type(num_experts) is int:
                st.dispatch[key] = plan
        V.check_ll_dispatch_stats(call, plan.experts_per_rank, R, cumulative_local_expert_recv_stats,
                                  dispatch_wait_recv_cost_stats)
        return plan

    @_one_thread
    def low_latency_dispatch(self, x: torch.Tensor, topk_idx: torch.Tensor, num_max_dispatch_tokens_per_rank: int,
                             num_experts: int, cumulative_local_expert_recv_stats: Optional[torch.Tensor] = None,
                             dispatch_wait_recv_cost_stats: Optional[torch.Tensor] = None, use_fp8: bool = True,
                             round_scale: bool = False, use_ue8m0: bool = False, async_finish: bool = False,
                             return_recv_hook: bool = False):
        """Sends each token to the ranks of its top-k experts (decode). See api.md for shapes and the handle.

        Returns (recv_x or (recv_x, recv_scales), recv_count, handle, event, hook).

        The buffer has two halves and each low-latency call (dispatch or combine) flips to the other, so at most two
        calls may be outstanding: call k + 2 reuses call k's half. With return_recv_hook=True, run call k's hook on
        every rank before any rank issues call k + 2 (as in DeepEP)."""
        rt = self._runtime
        if rt is None:
            raise RuntimeError("low_latency_dispatch: the buffer was destroyed")
        st = self._ll or self._low_latency_state()
        M, E = num_max_dispatch_tokens_per_rank, num_experts
        use_fp8, use_ue8m0 = bool(use_fp8), bool(use_ue8m0)
        cum, wait = cumulative_local_expert_recv_stats, dispatch_wait_recv_cost_stats
        plan = None
        if type(x) is _Tensor and type(topk_idx) is _Tensor and type(M) is int and type(E) is int:
            dev, xs, ks = st.device_index, x.shape, topk_idx.shape
            if (len(xs) == 2 and len(ks) == 2 and xs[0] == ks[0] and x.dtype is _BF16 and topk_idx.dtype is _I64
                    and x.is_contiguous() and topk_idx.is_contiguous() and x.get_device() == dev
                    and topk_idx.get_device() == dev and not (async_finish and return_recv_hook)):
                plan = st.dispatch.get((M, xs[1], E, use_fp8, use_ue8m0))
                if plan is not None and not ((cum is None or _fits(cum, _I32, plan.stats_size, dev))
                                             and (wait is None or _fits(wait, _I64, plan.wait_size, dev))):
                    plan = None
        if plan is None:
            plan = self._ll_dispatch_plan(rt, st, x, topk_idx, M, E, cum, wait, use_fp8, use_ue8m0, async_finish,
                                          return_recv_hook)

        empty = st.allocator()
        recv_x = empty(*plan.recv_x)
        scales = None if plan.scales is None else empty(*plan.scales)
        recv_count, src_info, layout_range = empty(*plan.recv_count), empty(*plan.src_info), empty(*plan.layout_range)
        num_tokens, num_topk = topk_idx.shape
        native_hook = rt.low_latency_dispatch(
            x=x.data_ptr(), num_tokens=num_tokens, topk_idx=topk_idx.data_ptr(), num_topk=num_topk,
            recv_x=recv_x.data_ptr(), recv_x_scales=0 if scales is None else scales.data_ptr(),
            recv_count=recv_count.data_ptr(), src_info=src_info.data_ptr(), layout_range=layout_range.data_ptr(),
            cumulative_local_expert_recv_stats=0 if cum is None else cum.data_ptr(),
            dispatch_wait_recv_cost_stats=0 if wait is None else wait.data_ptr(), use_fp8=use_fp8,
            round_scale=bool(round_scale), use_ue8m0=use_ue8m0, num_max_dispatch_tokens_per_rank=M,
            hidden=plan.hidden, num_experts=E, return_recv_hook=bool(return_recv_hook),
            **_ll_streams(st, async_finish))

        if async_finish or native_hook is not None:
            event, hook = self._ll_keep("low_latency_dispatch", native_hook, async_finish,
                                        (x, topk_idx, recv_x, scales, recv_count, src_info, layout_range, cum, wait))
        else:
            event, hook = EventOverlap(None), None
        handle = (src_info, layout_range, M, plan.hidden, E)
        st.made = (st.made[1], handle)
        return (recv_x, scales) if use_fp8 else recv_x, recv_count, handle, event, hook

    def _ll_combine_plan(self, rt, st, x, topk_idx, topk_weights, handle, zero_copy, async_finish, return_recv_hook,
                         out, combine_wait_recv_cost_stats):
        """Every check of low_latency_combine with its message, then the plan for the handle's sizes."""
        call = "low_latency_combine"
        R = self.group_size
        M, hidden, num_experts = V.check_ll_handle(call, handle)
        key = (M, hidden, num_experts)
        plan = st.combine.get(key) if type(M) is int and type(hidden) is int and type(num_experts) is int else None
        if plan is None:
            layout = self._ll_layout(rt, M, hidden, num_experts)
            plan = _CombinePlan(layout.experts_per_rank, R, M, hidden)
            if type(M) is int and type(hidden) is int and type(num_experts) is int:
                st.combine[key] = plan
        V.check_ll_combine(x, topk_idx, topk_weights, handle, plan.experts_per_rank, R, zero_copy, async_finish,
                           return_recv_hook, out, combine_wait_recv_cost_stats, call=call)
        self._check_devices(call, x=None if zero_copy else x, topk_idx=topk_idx, topk_weights=topk_weights,
                            src_info=handle[0], layout_range=handle[1], out=out,
                            combine_wait_recv_cost_stats=combine_wait_recv_cost_stats)
        return plan

    @_one_thread
    def low_latency_combine(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor, handle: tuple,
                            use_logfmt: bool = False, zero_copy: bool = False, async_finish: bool = False,
                            return_recv_hook: bool = False, out: Optional[torch.Tensor] = None,
                            combine_wait_recv_cost_stats: Optional[torch.Tensor] = None):
        """Sends expert outputs back and reduces them with the top-k weights. Returns (combined_x, event, hook).

        Same contract as low_latency_dispatch: at most two low-latency calls outstanding, and with
        return_recv_hook=True call k's hook runs on every rank before any rank issues call k + 2 (the rows a combine
        receives overwrite the messages of the dispatch that used the same half two calls earlier)."""
        rt = self._runtime
        if rt is None:
            raise RuntimeError("low_latency_combine: the buffer was destroyed")
        st = self._ll or self._low_latency_state()
        wait = combine_wait_recv_cost_stats
        plan = None
        if type(handle) is tuple and len(handle) == 5 and type(topk_idx) is _Tensor:
            src_info, layout_range, M, hidden, E = handle
            if type(M) is int and type(hidden) is int and type(E) is int:
                plan = st.combine.get((M, hidden, E))
            if plan is not None:
                dev, ks, made = st.device_index, topk_idx.shape, st.made
                if not (len(ks) == 2 and topk_idx.dtype is _I64 and topk_idx.is_contiguous()
                        and topk_idx.get_device() == dev and _fits(topk_weights, _F32, ks, dev)
                        and (handle is made[1] or handle is made[0]
                             or (_fits(src_info, _I32, plan.src_info_size, dev)
                                 and _fits(layout_range, _I64, plan.layout_range_size, dev)))
                        and (zero_copy or _fits(x, _BF16, plan.x_size, dev))
                        and (out is None or _fits(out, _BF16, (ks[0], hidden), dev))
                        and (wait is None or _fits(wait, _I64, plan.wait_size, dev))
                        and not (async_finish and return_recv_hook)):
                    plan = None
        if plan is None:
            plan = self._ll_combine_plan(rt, st, x, topk_idx, topk_weights, handle, zero_copy, async_finish,
                                         return_recv_hook, out, wait)
        src_info, layout_range, M, hidden, E = handle

        num_tokens, num_topk = topk_idx.shape
        combined = out if out is not None else st.allocator()((num_tokens, hidden), (hidden, 1), _BF16)
        native_hook = rt.low_latency_combine(
            x=0 if zero_copy else x.data_ptr(), topk_idx=topk_idx.data_ptr(), topk_weights=topk_weights.data_ptr(),
            num_tokens=num_tokens, num_topk=num_topk, src_info=src_info.data_ptr(),
            layout_range=layout_range.data_ptr(), combined_x=combined.data_ptr(),
            combine_wait_recv_cost_stats=0 if wait is None else wait.data_ptr(), use_logfmt=bool(use_logfmt),
            zero_copy=bool(zero_copy), num_max_dispatch_tokens_per_rank=M, hidden=hidden, num_experts=E,
            return_recv_hook=bool(return_recv_hook), **_ll_streams(st, async_finish))

        if async_finish or native_hook is not None:
            event, hook = self._ll_keep("low_latency_combine", native_hook, async_finish,
                                        (None if zero_copy else x, topk_idx, topk_weights, src_info, layout_range,
                                         combined, wait))
        else:
            event, hook = EventOverlap(None), None
        return combined, event, hook

    @_one_thread
    def get_next_low_latency_combine_buffer(self, handle: tuple) -> torch.Tensor:
        """The send area the next low_latency_combine reads with zero_copy=True: BF16 [E_local, R*M, hidden]
        (rows strided by the layout's row size). Write expert outputs here, then combine with zero_copy=True."""
        call = "get_next_low_latency_combine_buffer"
        rt = self._rt(call)
        R = self.group_size
        M, hidden, num_experts = V.check_ll_handle(call, handle)
        layout = self._ll_layout(rt, M, hidden, num_experts)
        V.check_ll_handle_tensors(call, handle, layout.experts_per_rank, R)
        row_bytes, E_local = layout.row_bytes, layout.experts_per_rank
        ptr = rt.get_next_low_latency_combine_buffer(num_max_dispatch_tokens_per_rank=M, hidden=hidden,
                                                     num_experts=num_experts)
        raw = _wrap_device_memory(ptr, E_local * R * M * row_bytes, rt, self.device)
        row_elems = row_bytes // 2
        return raw.view(torch.bfloat16).as_strided((E_local, R * M, hidden), (R * M * row_elems, row_elems, 1))

    @_one_thread
    def clean_low_latency_buffer(self, num_max_dispatch_tokens_per_rank: int, hidden: int, num_experts: int) -> None:
        """Collective: resets the low-latency signal words and scratch (both halves) on the current stream."""
        call = "clean_low_latency_buffer"
        rt = self._rt(call)
        for name, value in (("num_max_dispatch_tokens_per_rank", num_max_dispatch_tokens_per_rank),
                            ("hidden", hidden), ("num_experts", num_experts)):
            V.check_int(call, name, value)
        rt.clean_low_latency_buffer(num_max_dispatch_tokens_per_rank=num_max_dispatch_tokens_per_rank, hidden=hidden,
                                    num_experts=num_experts,
                                    stream=torch.cuda.current_stream(self.device).cuda_stream)

    # ---- normal mode (training, prefill) ---------------------------------------------------------------------
    def _normal_streams(self, previous_event) -> tuple:
        """(current, comm): the comm stream ordered after previous_event, else after the current stream."""
        current = torch.cuda.current_stream(self.device)
        comm = self._comm_stream
        event = V.event_of(previous_event)
        if event is not None:
            comm.wait_event(event)
        else:
            comm.wait_stream(current)
        return current, comm

    @staticmethod
    def _allocating_on(comm, allocate_on_comm_stream: bool):
        """Where outputs are allocated: on the comm stream when asked (the caller then owns them via the event)."""
        return torch.cuda.stream(comm) if allocate_on_comm_stream else contextlib.nullcontext()

    def _normal_finish(self, current, comm, async_finish: bool, allocate_on_comm_stream: bool, outputs: tuple,
                       inputs: tuple) -> EventOverlap:
        if allocate_on_comm_stream:
            # Outputs belong to the comm stream's pool; the caller uses (and frees) them on its own stream.
            for t in outputs:
                if t is not None and t.is_cuda:
                    t.record_stream(current)
        if async_finish:
            keep = tuple(t for t in inputs + outputs if t is not None)
            return EventOverlap(EventHandle(comm), extra_tensors=keep)
        current.wait_stream(comm)
        return EventOverlap(None)

    @_one_thread
    def get_dispatch_layout(self, topk_idx: torch.Tensor, num_experts: int,
                            previous_event: Optional[EventOverlap] = None, async_finish: bool = False,
                            allocate_on_comm_stream: bool = False):
        """Per rank, per node and per expert token counts and the [T, R] token-to-rank map for topk_idx.

        Returns (num_tokens_per_rank [R] int32, num_tokens_per_rdma_rank [nodes] int32 or None when every rank is
        an NVLink peer, num_tokens_per_expert [E] int32, is_token_in_rank [T, R] bool, event)."""
        call = "get_dispatch_layout"
        R = self.group_size
        num_tokens, num_topk = V.check_dispatch_layout(topk_idx, num_experts, previous_event, async_finish,
                                                       allocate_on_comm_stream, call=call)
        V.check_on_device(call, "topk_idx", topk_idx, self.device)
        rt = self._rt(call)
        _C = native()
        args = _C.DispatchLayoutArgs(topk_idx=topk_idx.data_ptr(), num_tokens=num_tokens, num_topk=num_topk,
                                     num_experts=num_experts)
        # The runtime's check, before num_experts sizes an allocation (the launch does not repeat it).
        rt.check_dispatch_layout(args=args)
        self._check_expert_ids(call, topk_idx, num_experts)
        topology = rt.topology()

        current, comm = self._normal_streams(previous_event)
        dev = self.device
        with self._allocating_on(comm, allocate_on_comm_stream):
            per_rank = torch.empty((R,), dtype=torch.int32, device=dev)
            per_node = None
            if topology.nvl_domain_size < R:  # ranks outside the NVLink domain: counts per node too
                per_node = torch.empty((topology.num_nodes,), dtype=torch.int32, device=dev)
            per_expert = torch.empty((num_experts,), dtype=torch.int32, device=dev)
            in_rank = torch.empty((num_tokens, R), dtype=torch.bool, device=dev)
        args.num_tokens_per_rank = per_rank.data_ptr()
        args.num_tokens_per_rdma_rank = _ptr(per_node)
        args.num_tokens_per_expert = per_expert.data_ptr()
        args.is_token_in_rank = in_rank.data_ptr()
        rt.get_dispatch_layout(args=args, stream=comm.cuda_stream)
        event = self._normal_finish(current, comm, async_finish, allocate_on_comm_stream,
                                    (per_rank, per_node, per_expert, in_rank), (topk_idx,))
        return per_rank, per_node, per_expert, in_rank, event

    @_one_thread
    def dispatch(self, x: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]], handle: Optional[tuple] = None,
                 num_tokens_per_rank: Optional[torch.Tensor] = None,
                 num_tokens_per_rdma_rank: Optional[torch.Tensor] = None,
                 is_token_in_rank: Optional[torch.Tensor] = None, num_tokens_per_expert: Optional[torch.Tensor] = None,
                 topk_idx: Optional[torch.Tensor] = None, topk_weights: Optional[torch.Tensor] = None,
                 expert_alignment: int = 1, num_worst_tokens: int = 0, config: Optional[Config] = None,
                 previous_event: Optional[EventOverlap] = None, async_finish: bool = False,
                 allocate_on_comm_stream: bool = False):
        """Sends each token to every rank in its is_token_in_rank row (training, prefill). See api.md.

        Returns (recv_x or (recv_x, recv_scales), recv_topk_idx, recv_topk_weights, num_recv_tokens_per_expert_list,
        handle, event); a cached dispatch (handle given) returns (recv_x, None, None, None, None, event).
        handle = (rank_prefix_matrix [R, R] int32, send_pos [T, R] int32, receive rows, recv_src_idx int32,
        is_token_in_rank [T, R] bool, num_worst_tokens)."""
        call = "dispatch"
        R = self.group_size
        a = V.check_normal_dispatch(x, handle, num_tokens_per_rank, num_tokens_per_rdma_rank, is_token_in_rank,
                                    num_tokens_per_expert, topk_idx, topk_weights, expert_alignment,
                                    num_worst_tokens, config, previous_event, async_finish, allocate_on_comm_stream,
                                    num_ranks=R, call=call)
        xs = a.x
        tensors = dict(x=xs.data, scales=xs.scales, topk_idx=topk_idx, topk_weights=topk_weights,
                       num_tokens_per_rank=num_tokens_per_rank, is_token_in_rank=a.is_token_in_rank,
                       num_tokens_per_expert=num_tokens_per_expert)
        if a.cached:
            tensors.update(rank_prefix_matrix=a.handle.rank_prefix_matrix)
        for name, t in tensors.items():
            V.check_on_device(call, name, t, self.device)
        rt = self._rt(call)
        _C = native()
        config = self.get_dispatch_config(R) if config is None else config
        K, E = a.num_topk, a.num_experts  # a cached dispatch counts no experts: E = 0
        if topk_idx is not None:
            self._check_expert_ids(call, topk_idx, E)

        current, comm = self._normal_streams(previous_event)
        alloc = functools.partial(self._allocating_on, comm, allocate_on_comm_stream)
        dev, stream = self.device, comm.cuda_stream
        if a.cached:
            h = a.handle
            prefix, send_pos, rows = h.rank_prefix_matrix, None, h.num_recv_rows
        else:
            with alloc():
                prefix = torch.empty((R, R), dtype=torch.int32, device=dev)
                send_pos = torch.empty((xs.num_tokens, R), dtype=torch.int32, device=dev)
        worst = a.num_worst_tokens
        args = _C.DispatchArgs(
            x=xs.data.data_ptr(), x_row_stride=xs.row_stride_bytes, hidden_bytes=xs.hidden_bytes,
            x_scales=_ptr(xs.scales), num_scales=xs.num_scales, x_scales_token_stride=xs.scale_strides[0],
            x_scales_col_stride=xs.scale_strides[1], topk_idx=_ptr(topk_idx), topk_weights=_ptr(topk_weights),
            num_topk=K, is_token_in_rank=a.is_token_in_rank.data_ptr(),
            num_tokens_per_expert=_ptr(None if a.cached else num_tokens_per_expert), num_tokens=xs.num_tokens,
            num_experts=E, num_worst_tokens=worst, rank_prefix_matrix=prefix.data_ptr(), send_pos=_ptr(send_pos))
        # Checks the sizes and that the call fits num_nvl_bytes (ArgumentError) before its send half launches.
        rt.dispatch_send(args=args, cached=a.cached, num_sms=config.num_sms, stream=stream)
        per_expert_list = None if a.cached else []
        if not a.cached and worst == 0:  # the output size is the receive count: wait for it on the host
            num_recv, per_expert = rt.dispatch_wait_counts()
            rows = int(num_recv)
            per_expert_list = V.align_counts(per_expert, expert_alignment)
        elif not a.cached:
            rows = worst
        with alloc():
            recv_x = torch.empty((rows, xs.hidden), dtype=xs.data.dtype, device=dev)
            recv_scales = None if xs.scales is None else torch.empty((rows, xs.num_scales), dtype=xs.scales.dtype,
                                                                     device=dev)
            recv_topk_idx = None if topk_idx is None else torch.empty((rows, K), dtype=torch.int64, device=dev)
            recv_topk_weights = None if topk_idx is None else torch.empty((rows, K), dtype=torch.float32, device=dev)
            # A cached dispatch returns no source indices (the handle has them).
            recv_src_idx = None if a.cached else torch.empty((rows,), dtype=torch.int32, device=dev)
        outputs = _C.DispatchOutputs(recv_x=recv_x.data_ptr(), recv_x_scales=_ptr(recv_scales),
                                     recv_topk_idx=_ptr(recv_topk_idx), recv_topk_weights=_ptr(recv_topk_weights),
                                     recv_src_idx=_ptr(recv_src_idx), num_recv_tokens=rows)
        rt.dispatch_recv(outputs=outputs, num_sms=config.num_sms,
                         num_max_nvl_chunked_send_tokens=config.num_max_nvl_chunked_send_tokens, stream=stream)
        produced = (recv_x, recv_scales, recv_topk_idx, recv_topk_weights, recv_src_idx)
        produced += () if a.cached else (prefix, send_pos)
        event = self._normal_finish(current, comm, async_finish, allocate_on_comm_stream, produced,
                                    tuple(tensors.values()))
        recv = recv_x if recv_scales is None else (recv_x, recv_scales)
        if a.cached:
            return recv, None, None, None, None, event
        handle = (prefix, send_pos, rows, recv_src_idx, a.is_token_in_rank, worst)
        return recv, recv_topk_idx, recv_topk_weights, per_expert_list, handle, event

    @_one_thread
    def combine(self, x: torch.Tensor, handle: tuple, topk_weights: Optional[torch.Tensor] = None,
                bias: Union[torch.Tensor, Tuple[Optional[torch.Tensor], Optional[torch.Tensor]], None] = None,
                config: Optional[Config] = None, previous_event: Optional[EventOverlap] = None,
                async_finish: bool = False, allocate_on_comm_stream: bool = False):
        """Sends the dispatched rows back and sums, per token, the copies from every rank it went to (no
        weights), plus up to two BF16 biases. Returns (combined_x [T, hidden] BF16, combined_topk_weights [T, K]
        float32 or None, event)."""
        call = "combine"
        R = self.group_size
        h, hidden, K, bias0, bias1 = V.check_normal_combine(x, handle, topk_weights, bias, config, previous_event,
                                                            async_finish, allocate_on_comm_stream, num_ranks=R,
                                                            call=call)
        inputs = dict(x=x, topk_weights=topk_weights, bias0=bias0, bias1=bias1, send_pos=h.send_pos,
                      rank_prefix_matrix=h.rank_prefix_matrix)
        for name, t in inputs.items():
            V.check_on_device(call, name, t, self.device)
        rt = self._rt(call)
        _C = native()
        config = self.get_combine_config(R) if config is None else config
        rows, T = x.size(0), h.num_tokens

        current, comm = self._normal_streams(previous_event)
        with self._allocating_on(comm, allocate_on_comm_stream):
            combined = torch.empty((T, hidden), dtype=torch.bfloat16, device=self.device)
            combined_weights = None
            if topk_weights is not None:
                combined_weights = torch.empty((T, K), dtype=torch.float32, device=self.device)
        args = _C.CombineArgs(x=x.data_ptr(), topk_weights=_ptr(topk_weights), bias_0=_ptr(bias0), bias_1=_ptr(bias1),
                              send_pos=h.send_pos.data_ptr(), rank_prefix_matrix=h.rank_prefix_matrix.data_ptr(),
                              num_tokens=T, num_recv_tokens=rows, hidden=hidden, num_topk=K,
                              combined_x=combined.data_ptr(), combined_topk_weights=_ptr(combined_weights))
        # Checks the sizes and that the rows fit num_nvl_bytes (ArgumentError) before anything launches.
        rt.combine(args=args, num_sms=config.num_sms,
                   num_max_nvl_chunked_send_tokens=config.num_max_nvl_chunked_send_tokens, stream=comm.cuda_stream)
        event = self._normal_finish(current, comm, async_finish, allocate_on_comm_stream,
                                    (combined, combined_weights), tuple(inputs.values()))
        return combined, combined_weights, event

    # ---- elastic (enable_shrink; the runtime raises UcclError without it) -----------------------------------
    @_one_thread
    def _run_receive_hook(self, hook: "_RecvHook") -> None:
        """A receive hook runs under the Buffer's call lock like any call."""
        hook.run()

    @_one_thread
    def low_latency_update_mask_buffer(self, rank_to_mask: int, mask: bool = False) -> None:
        """mask=True masks `rank_to_mask` (its experts are skipped); mask=False unmasks it."""
        call = "low_latency_update_mask_buffer"
        rt = self._rt(call)
        V.check_int(call, "rank_to_mask", rank_to_mask)
        rt.low_latency_update_mask_buffer(rank_to_mask=rank_to_mask, mask=bool(mask),
                                          stream=torch.cuda.current_stream(self.device).cuda_stream)

    @_one_thread
    def low_latency_query_mask_buffer(self, mask_status: torch.Tensor) -> None:
        """Copies the mask into `mask_status` (int32 [R], 1 = masked) on the current stream."""
        call = "low_latency_query_mask_buffer"
        rt = self._rt(call)
        V.check_mask_status(call, mask_status, self.group_size)
        V.check_device(call, "mask_status", mask_status, self.device)
        rt.low_latency_query_mask_buffer(mask_status=mask_status.data_ptr(),
                                         stream=torch.cuda.current_stream(self.device).cuda_stream)

    @_one_thread
    def low_latency_clean_mask_buffer(self) -> None:
        call = "low_latency_clean_mask_buffer"
        self._rt(call).low_latency_clean_mask_buffer(stream=torch.cuda.current_stream(self.device).cuda_stream)


class _RecvHook:
    """The receive half of a low-latency call (return_recv_hook=True): runs on the stream current when called.
    Holds the call's tensors, which the receive kernels still read and write."""

    __slots__ = ("_buffer", "_native_hook", "_tensors", "_ran", "_call")

    def __init__(self, buffer: Buffer, native_hook, tensors: tuple, call: str = "low-latency"):
        self._buffer, self._native_hook, self._tensors = buffer, native_hook, tensors
        self._ran, self._call = False, call

    def __call__(self) -> None:
        self._buffer._run_receive_hook(self)

    def run(self) -> None:
        # A second run would read the half again after a later call may have reused it: refuse it.
        if self._ran:
            raise RuntimeError(f"{self._call} receive hook: this hook already ran; each call's hook runs once "
                               f"(nothing was launched)")
        buf = self._buffer
        if buf._runtime is None:
            raise RuntimeError(f"{self._call} receive hook: the buffer was destroyed")
        # The native hook raises what was recorded: a fatal error before the receive half launches, a top-k entry
        # the send half rejected (ArgumentError) after it, so the half is consumed either way and runs only once.
        self._ran = True
        st = buf._ll
        self._native_hook(_current_stream(buf._device_index() if st is None else st.device_index))


def initialize_uccl(scratch, num_rdma_bytes: int, rank: int, num_ranks: int, group=None, num_experts: int = 0):
    """Compatibility with code written against the UCCL-EP README: `Buffer` creates and connects the proxies
    itself, so this only checks its arguments and returns empty (proxies, workers) lists for destroy_uccl."""
    V.check_int("initialize_uccl", "num_rdma_bytes", num_rdma_bytes, 0)
    V.check_int("initialize_uccl", "num_ranks", num_ranks, 1)
    V.check_int("initialize_uccl", "rank", rank, 0, num_ranks - 1)
    V.check_int("initialize_uccl", "num_experts", num_experts, 0)
    if scratch is not None and not isinstance(scratch, torch.Tensor):
        raise TypeError(f"initialize_uccl: scratch must be a torch.Tensor or None, got {type(scratch).__name__}")
    return [], []


def destroy_uccl(proxies, workers) -> None:
    """Counterpart of initialize_uccl; the Buffer stops its proxies in destroy() / when collected."""
    if not isinstance(proxies, (list, tuple)) or not isinstance(workers, (list, tuple)):
        raise TypeError("destroy_uccl: expected the (proxies, workers) lists returned by initialize_uccl")
