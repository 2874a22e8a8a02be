"""`Buffer`: DeepEP's `deep_ep.Buffer` over the uccl-ep runtime (uccl.ep._C.Runtime).

The C++ side takes integers only: this file allocates every output tensor, validates every argument
(_validate.py) before anything is launched, picks streams and wraps device memory into tensors.

Streams: a call runs on the buffer's comm stream after that stream waits for the current one. With
async_finish the call returns an EventOverlap recorded on the comm stream that keeps inputs and outputs alive;
without it the current stream waits for the comm stream before the call returns. With return_recv_hook only
the send phase runs now; hook() runs the receive phase on the stream current at hook time.

Low-latency halves: the RDMA buffer has two halves. Every low-latency dispatch and every combine uses the half
`_ll_half` and then flips it, so two calls may be outstanding; get_next_low_latency_combine_buffer returns the
send area of the half the next combine will use.
"""
import contextlib
import functools
import socket
from typing import Callable, Optional, Tuple, Union

import torch

from . import _validate as V
from . import utils
from .config import Config, default_combine_config, default_dispatch_config
from .utils import EventHandle, EventOverlap

_PHASE_SEND, _PHASE_RECV, _PHASE_BOTH = 1, 2, 3

_CTOR_ARGS = ("group", "num_nvl_bytes", "num_rdma_bytes", "low_latency_mode", "num_qps_per_rank",
              "allow_nvlink_for_low_latency_mode", "allow_mnnvl", "use_fabric", "explicitly_destroy",
              "enable_shrink", "comm")


def _native():
    """uccl.ep._C, or ImportError saying how to get it (the package imports without it)."""
    from . import _C, _C_import_error
    if _C is None:
        raise ImportError(f"uccl.ep: the native module uccl.ep._C is not available ({_C_import_error}); install "
                          f"the package (pip install .) or point UCCL_EP_BUILD_DIR at a CMake build directory")
    return _C


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


def _as_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Buffer: {name} must be an int, got {type(value).__name__}")
    if value < 0 or value % 128 != 0:
        raise ValueError(f"Buffer: {name} must be a non-negative multiple of 128 bytes, got {value}")
    return value


class Buffer:
    """Communication buffers for expert-parallel dispatch and combine (DeepEP's `Buffer`, same signature)."""

    num_sms: int = 20
    # Low-latency calls check that every expert id lies in [-1, num_experts). The check reads topk_idx on the
    # host, which makes the CPU wait for the work queued before it; set False (on the class or an instance) to
    # skip it once the caller's ids are known to be good. It is always skipped inside CUDA-graph capture.
    validate_expert_ids: bool = True

    def __init__(self, group=None, num_nvl_bytes: int = 0, num_rdma_bytes: int = 0, low_latency_mode: bool = False,
                 num_qps_per_rank: int = 24, allow_nvlink_for_low_latency_mode: bool = True,
                 allow_mnnvl: bool = False, use_fabric: bool = False, explicitly_destroy: bool = False,
                 enable_shrink: bool = False, comm=None, **unknown):
        self._runtime = None
        # ---- every argument check comes before anything touches CUDA or the group -------------------------
        if unknown:
            raise TypeError(f"Buffer() got unexpected keyword argument(s) {sorted(unknown)}; accepted: "
                            f"{', '.join(_CTOR_ARGS)}")
        if (group is None) == (comm is None):
            raise TypeError("Buffer: pass exactly one of group (a torch.distributed process group) and comm "
                            "(an mpi4py communicator)")
        self.num_nvl_bytes = _as_size("num_nvl_bytes", num_nvl_bytes)
        self.num_rdma_bytes = _as_size("num_rdma_bytes", num_rdma_bytes)
        self.low_latency_mode = _as_bool("low_latency_mode", low_latency_mode)
        if isinstance(num_qps_per_rank, bool) or not isinstance(num_qps_per_rank, int) or num_qps_per_rank <= 0:
            raise ValueError(f"Buffer: num_qps_per_rank must be a positive int (a hint), got {num_qps_per_rank!r}")
        self.num_qps_per_rank = num_qps_per_rank
        self.allow_nvlink_for_low_latency_mode = _as_bool("allow_nvlink_for_low_latency_mode",
                                                          allow_nvlink_for_low_latency_mode)
        self.allow_mnnvl = _as_bool("allow_mnnvl", allow_mnnvl)
        self.use_fabric = _as_bool("use_fabric", use_fabric)
        self.explicitly_destroy = _as_bool("explicitly_destroy", explicitly_destroy)
        self.enable_shrink = _as_bool("enable_shrink", enable_shrink)
        if self.low_latency_mode and self.num_rdma_bytes == 0:
            raise ValueError("Buffer: low_latency_mode=True needs num_rdma_bytes > 0 (see "
                             "Buffer.get_low_latency_rdma_size_hint)")
        self.group, self.comm = group, comm
        self._ll_half = 0
        self._destroyed = False

        # ---- group: rank, size, node size ---------------------------------------------------------------
        if group is not None:
            self.rank, self.group_size = int(group.rank()), int(group.size())
        else:
            self.rank, self.group_size = int(comm.Get_rank()), int(comm.Get_size())
        self.ranks_per_node = utils.ranks_per_node_from_env(self.group_size)
        if self.ranks_per_node is None:
            self.ranks_per_node = utils.ranks_per_node_from_hosts(self._all_gather(socket.gethostname()), self.rank)

        # ---- CUDA from here on ----------------------------------------------------------------------------
        _C = _native()
        if not _C.has_cuda() or not hasattr(_C, "Runtime"):
            raise RuntimeError("Buffer: uccl.ep._C was built without CUDA; rebuild with the CUDA toolkit present")
        if not torch.cuda.is_available():
            raise RuntimeError("Buffer: no CUDA device is available to this process")
        self.device = torch.device("cuda", torch.cuda.current_device())
        self._runtime = _C.Runtime(self.rank, self.group_size, self.ranks_per_node, self.device.index,
                                   self.num_nvl_bytes, self.num_rdma_bytes, self.low_latency_mode,
                                   self.allow_nvlink_for_low_latency_mode, self.enable_shrink)
        infos = self._all_gather(bytes(self._runtime.local_info()))
        self._runtime.connect([bytes(i) for i in infos])
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
        """Bytes of RDMA buffer low-latency mode needs for these sizes (both halves; a multiple of 128)."""
        return int(_native().get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank, hidden, num_ranks,
                                                            num_experts))

    @staticmethod
    def get_dispatch_config(num_ranks: int) -> Config:
        return default_dispatch_config(num_ranks, Buffer.num_sms)

    @staticmethod
    def get_combine_config(num_ranks: int) -> Config:
        return default_combine_config(num_ranks, Buffer.num_sms)

    @staticmethod
    def is_sm90_compiled() -> bool:
        try:
            return bool(_native().has_cuda())
        except ImportError:
            return False

    def get_comm_stream(self) -> torch.cuda.Stream:
        return self._comm_stream

    def get_local_buffer_tensor(self, dtype: torch.dtype, size: Optional[Union[torch.Size, tuple]] = None,
                                offset: int = 0, use_rdma_buffer: bool = False) -> torch.Tensor:
        """This rank's NVLink buffer (or RDMA buffer) from byte `offset` as a tensor of `dtype` and `size`
        (1-D to the end of the buffer when None). The tensor aliases the buffer; it does not own it."""
        rt = self._rt("get_local_buffer_tensor")
        total = self.num_rdma_bytes if use_rdma_buffer else self.num_nvl_bytes
        elem = torch.empty(0, dtype=dtype).element_size()
        V.check_int("get_local_buffer_tensor", "offset", offset, 0, total)
        if size is None:
            size = ((total - offset) // elem,)
        size = torch.Size(size)
        nbytes = size.numel() * elem
        if offset + nbytes > total:
            raise ValueError(f"get_local_buffer_tensor: {nbytes} bytes at offset {offset} exceed the "
                             f"{'RDMA' if use_rdma_buffer else 'NVLink'} buffer of {total} bytes")
        base = rt.rdma_buffer_ptr() if use_rdma_buffer else rt.nvl_buffer_ptr()
        raw = _wrap_device_memory(base + offset, nbytes, rt, self.device)
        return raw.view(dtype).view(size)

    # ---- low-latency mode ---------------------------------------------------------------------------------
    def _ll_layout(self, max_tokens: int, hidden: int, num_experts: int) -> dict:
        """The low-latency layout for these sizes (cached: decode calls repeat the same few sizes)."""
        cache = self.__dict__.setdefault("_ll_layouts", {})
        key = (max_tokens, hidden, num_experts)
        if key not in cache:
            cache[key] = _native().ll_layout(max_tokens, hidden, self.group_size, num_experts)
        return cache[key]

    def _ll_check_fits(self, call: str, max_tokens: int, hidden: int, num_experts: int) -> None:
        required = self._ll_layout(max_tokens, hidden, num_experts)["total_bytes"]
        V.check_ll_buffer_size(call, required, self.num_rdma_bytes, max_tokens, hidden, self.group_size, num_experts)

    def _check_expert_ids(self, call: str, topk_idx: torch.Tensor, num_experts: int) -> None:
        # A device-to-host read: skipped while a CUDA graph is being captured, and when the caller turned it off.
        if self.validate_expert_ids and not torch.cuda.is_current_stream_capturing():
            V.check_expert_ids(call, "topk_idx", topk_idx, num_experts)

    def _check_devices(self, call: str, **tensors) -> None:
        for name, t in tensors.items():
            if t is not None:
                V.check_device(call, name, t, self.device)

    def _launch(self, launch: Callable[[int, int], None], return_recv_hook: bool, async_finish: bool,
                keep_alive: tuple):
        """Runs `launch(phase, stream)` on the comm stream after the current stream; returns (event, hook)."""
        current = torch.cuda.current_stream(self.device)
        comm = self._comm_stream
        comm.wait_stream(current)
        launch(_PHASE_SEND if return_recv_hook else _PHASE_BOTH, comm.cuda_stream)
        if async_finish:
            event = EventOverlap(EventHandle(comm), extra_tensors=keep_alive)
        else:
            current.wait_stream(comm)
            event = EventOverlap(None)
        hook = None
        if return_recv_hook:
            def hook():
                self._rt("hook")
                launch(_PHASE_RECV, torch.cuda.current_stream(self.device).cuda_stream)
        return event, hook

    def low_latency_dispatch(self, x: torch.Tensor, topk_idx: torch.Tensor, num_max_dispatch_tokens_per_rank: int,
                             num_experts: int, cumulative_local_expert_recv_stats: Optional[torch.Tensor] = None,
                             dispatch_wait_recv_cost_stats: Optional[torch.Tensor] = None, use_fp8: bool = True,
                             round_scale: bool = False, use_ue8m0: bool = False, async_finish: bool = False,
                             return_recv_hook: bool = False):
        """Sends each token to the ranks of its top-k experts (decode). See api.md for shapes and the handle.

        Returns (recv_x or (recv_x, recv_scales), recv_count, handle, event, hook)."""
        call = "low_latency_dispatch"
        rt = self._rt(call)
        V.check_low_latency_mode(call, self.low_latency_mode)
        R, M = self.group_size, num_max_dispatch_tokens_per_rank
        V.check_ll_dispatch(x, topk_idx, M, num_experts, R, cumulative_local_expert_recv_stats,
                            dispatch_wait_recv_cost_stats, use_fp8, round_scale, use_ue8m0, async_finish,
                            return_recv_hook, call=call)
        self._check_devices(call, x=x, topk_idx=topk_idx,
                            cumulative_local_expert_recv_stats=cumulative_local_expert_recv_stats,
                            dispatch_wait_recv_cost_stats=dispatch_wait_recv_cost_stats)
        num_tokens, hidden = x.shape
        self._ll_check_fits(call, M, hidden, num_experts)
        self._check_expert_ids(call, topk_idx, num_experts)

        E_local, dev = num_experts // R, self.device
        recv_x = torch.empty((E_local, R * M, hidden), dtype=torch.float8_e4m3fn if use_fp8 else torch.bfloat16,
                             device=dev)
        scales = None
        if use_fp8:
            # Column-major in the last two dims: the kernel writes [E_local, groups, R*M].
            if use_ue8m0:
                scales = torch.empty((E_local, hidden // 512, R * M), dtype=torch.int32, device=dev).transpose(1, 2)
            else:
                scales = torch.empty((E_local, hidden // 128, R * M), dtype=torch.float32, device=dev).transpose(1, 2)
        recv_count = torch.empty((E_local,), dtype=torch.int32, device=dev)
        src_info = torch.empty((E_local, R * M), dtype=torch.int32, device=dev)
        layout_range = torch.empty((E_local, R), dtype=torch.int64, device=dev)
        half = self._ll_half
        num_topk = topk_idx.size(1)

        def launch(phase: int, stream: int) -> None:
            rt.ll_dispatch(half, M, hidden, num_experts, phase, stream, x.data_ptr(), num_tokens, topk_idx.data_ptr(),
                           num_topk, recv_x.data_ptr(), _ptr(scales), recv_count.data_ptr(), src_info.data_ptr(),
                           layout_range.data_ptr(), _ptr(cumulative_local_expert_recv_stats),
                           _ptr(dispatch_wait_recv_cost_stats), use_fp8, round_scale, use_ue8m0)

        keep = (x, topk_idx, recv_x, scales, recv_count, src_info, layout_range, cumulative_local_expert_recv_stats,
                dispatch_wait_recv_cost_stats)
        event, hook = self._launch(launch, return_recv_hook, async_finish, tuple(t for t in keep if t is not None))
        self._ll_half ^= 1  # only once the launch went through: every rank flips in step
        handle = (src_info, layout_range, M, hidden, num_experts)
        return (recv_x, scales) if use_fp8 else recv_x, recv_count, handle, event, hook

    def low_latency_combine(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor, handle: tuple,
                            use_logfmt: bool = False, zero_copy: bool = False, async_finish: bool = False,
                            return_recv_hook: bool = False, out: Optional[torch.Tensor] = None,
                            combine_wait_recv_cost_stats: Optional[torch.Tensor] = None):
        """Sends expert outputs back and reduces them with the top-k weights. Returns (combined_x, event, hook)."""
        call = "low_latency_combine"
        rt = self._rt(call)
        V.check_low_latency_mode(call, self.low_latency_mode)
        R = self.group_size
        M, hidden, num_experts = V.check_ll_combine(x, topk_idx, topk_weights, handle, R, zero_copy, async_finish,
                                                    return_recv_hook, out, combine_wait_recv_cost_stats, call=call)
        src_info, layout_range = handle[0], handle[1]
        self._check_devices(call, x=None if zero_copy else x, topk_idx=topk_idx, topk_weights=topk_weights,
                            src_info=src_info, layout_range=layout_range, out=out,
                            combine_wait_recv_cost_stats=combine_wait_recv_cost_stats)
        self._ll_check_fits(call, M, hidden, num_experts)
        self._check_expert_ids(call, topk_idx, num_experts)

        num_tokens, num_topk = topk_idx.shape
        combined = out if out is not None else torch.empty((num_tokens, hidden), dtype=torch.bfloat16,
                                                           device=self.device)
        half = self._ll_half
        x_ptr = 0 if zero_copy else x.data_ptr()

        def launch(phase: int, stream: int) -> None:
            rt.ll_combine(half, M, hidden, num_experts, phase, stream, x_ptr, topk_idx.data_ptr(),
                          topk_weights.data_ptr(), num_tokens, num_topk, src_info.data_ptr(), layout_range.data_ptr(),
                          combined.data_ptr(), _ptr(combine_wait_recv_cost_stats), use_logfmt, zero_copy)

        keep = (None if zero_copy else x, topk_idx, topk_weights, src_info, layout_range, combined,
                combine_wait_recv_cost_stats)
        event, hook = self._launch(launch, return_recv_hook, async_finish, tuple(t for t in keep if t is not None))
        self._ll_half ^= 1
        return combined, event, hook

    def get_next_low_latency_combine_buffer(self, handle: tuple) -> torch.Tensor:
        """The send area the next low_latency_combine reads with zero_copy=True: BF16 [E_local, R*M, hidden]
        (rows strided by the layout's row size). Write expert outputs here, then combine with zero_copy=True."""
        call = "get_next_low_latency_combine_buffer"
        rt = self._rt(call)
        V.check_low_latency_mode(call, self.low_latency_mode)
        R = self.group_size
        M, hidden, num_experts = V.check_ll_handle(call, handle, R)
        self._ll_check_fits(call, M, hidden, num_experts)
        layout = self._ll_layout(M, hidden, num_experts)
        row_elems = layout["row_bytes"] // 2
        E_local = num_experts // R
        ptr = rt.ll_combine_send_ptr(self._ll_half, M, hidden, num_experts)
        raw = _wrap_device_memory(ptr, E_local * R * M * layout["row_bytes"], rt, self.device)
        return raw.view(torch.bfloat16).as_strided((E_local, R * M, hidden), (R * M * row_elems, row_elems, 1))

    def clean_low_latency_buffer(self, num_max_dispatch_tokens_per_rank: int, hidden: int, num_experts: int) -> None:
        """Collective: resets the low-latency signal words and scratch (both halves) on the current stream."""
        call = "clean_low_latency_buffer"
        rt = self._rt(call)
        V.check_low_latency_mode(call, self.low_latency_mode)
        V.check_ll_sizes(call, num_max_dispatch_tokens_per_rank, hidden, num_experts, self.group_size)
        self._ll_check_fits(call, num_max_dispatch_tokens_per_rank, hidden, num_experts)
        rt.clean_low_latency_buffer(torch.cuda.current_stream(self.device).cuda_stream)

    # ---- normal mode (training, prefill) ---------------------------------------------------------------------
    def _normal_rt(self, call: str):
        """The runtime, once normal mode is possible: an NVLink buffer and every rank an NVLink peer."""
        rt = self._rt(call)
        V.check_single_domain(call, bool(rt.normal_single_domain()))
        return rt

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

    def get_dispatch_layout(self, topk_idx: torch.Tensor, num_experts: int,
                            previous_event: Optional[EventOverlap] = None, async_finish: bool = False,
                            allocate_on_comm_stream: bool = False):
        """Per rank, per node and per expert token counts and the [T, R] token-to-rank map for topk_idx.

        Returns (num_tokens_per_rank [R] int32, num_tokens_per_rdma_rank [nodes] int32 or None when every rank is
        an NVLink peer, num_tokens_per_expert [E] int32, is_token_in_rank [T, R] bool, event)."""
        call = "get_dispatch_layout"
        R = self.group_size
        num_tokens, num_topk = V.check_dispatch_layout(topk_idx, num_experts, R, previous_event, async_finish,
                                                       allocate_on_comm_stream, call=call)
        V.check_on_device(call, "topk_idx", topk_idx, self.device)
        rt = self._rt(call)
        self._check_expert_ids(call, topk_idx, num_experts)
        single_domain = bool(rt.normal_single_domain())
        num_nodes = int(rt.num_nodes())

        current, comm = self._normal_streams(previous_event)
        dev = self.device
        with self._allocating_on(comm, allocate_on_comm_stream):
            per_rank = torch.empty((R,), dtype=torch.int32, device=dev)
            per_node = None if single_domain else torch.empty((num_nodes,), dtype=torch.int32, device=dev)
            per_expert = torch.empty((num_experts,), dtype=torch.int32, device=dev)
            in_rank = torch.empty((num_tokens, R), dtype=torch.bool, device=dev)
        rt.normal_layout(topk_idx.data_ptr(), num_tokens, num_topk, num_experts, per_rank.data_ptr(), _ptr(per_node),
                         per_expert.data_ptr(), in_rank.data_ptr(), comm.cuda_stream)
        event = self._normal_finish(current, comm, async_finish, allocate_on_comm_stream,
                                    (per_rank, per_node, per_expert, in_rank), (topk_idx,))
        return per_rank, per_node, per_expert, in_rank, event

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
        V.check_normal_mode(call, self.num_nvl_bytes)
        rt = self._normal_rt(call)
        config = self.get_dispatch_config(R) if config is None else config
        # A cached dispatch counts no experts (the handle carries no expert count): E = 0.
        K, E = a.num_topk, (0 if a.cached else a.num_experts)
        required = int(rt.normal_dispatch_bytes(xs.num_tokens, xs.hidden_bytes, xs.num_scales * 4, K, E))
        V.check_nvl_buffer_size(call, f"dispatching {xs.num_tokens} tokens of {xs.hidden_bytes} bytes "
                                      f"({xs.num_scales} scales, top-{K})", required, self.num_nvl_bytes)
        if K:
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
        report = not a.cached and worst == 0
        rt.normal_dispatch_send(xs.data.data_ptr(), xs.row_stride_bytes, _ptr(xs.scales), xs.num_scales,
                                xs.scale_strides[0], xs.scale_strides[1], _ptr(topk_idx), _ptr(topk_weights),
                                a.is_token_in_rank.data_ptr(), 0 if a.cached else num_tokens_per_expert.data_ptr(),
                                xs.num_tokens, xs.hidden_bytes, K, E, prefix.data_ptr(), _ptr(send_pos), a.cached,
                                report, config.num_sms, stream)
        per_expert_list = None if a.cached else []
        if report:
            num_recv, per_expert = rt.normal_dispatch_wait(E)
            rows = int(num_recv)
            per_expert_list = V.align_counts(per_expert, expert_alignment)
        elif not a.cached:
            rows = worst
        with alloc():
            recv_x = torch.empty((rows, xs.hidden), dtype=xs.data.dtype, device=dev)
            recv_scales = None if xs.scales is None else torch.empty((rows, xs.num_scales), dtype=xs.scales.dtype,
                                                                     device=dev)
            recv_topk_idx = torch.empty((rows, K), dtype=torch.int64, device=dev) if K else None
            recv_topk_weights = torch.empty((rows, K), dtype=torch.float32, device=dev) if K else None
            # A cached dispatch returns no source indices (the handle has them).
            recv_src_idx = None if a.cached else torch.empty((rows,), dtype=torch.int32, device=dev)
        rt.normal_dispatch_recv(xs.hidden_bytes, xs.num_scales, K, E, prefix.data_ptr(), recv_x.data_ptr(),
                                _ptr(recv_scales), _ptr(recv_topk_idx), _ptr(recv_topk_weights),
                                _ptr(recv_src_idx), rows, worst > 0, config.num_sms,
                                config.num_max_nvl_chunked_send_tokens, stream)
        outputs = (recv_x, recv_scales, recv_topk_idx, recv_topk_weights, recv_src_idx)
        outputs += () if a.cached else (prefix, send_pos)
        event = self._normal_finish(current, comm, async_finish, allocate_on_comm_stream, outputs,
                                    tuple(tensors.values()))
        recv = recv_x if recv_scales is None else (recv_x, recv_scales)
        if a.cached:
            return recv, None, None, None, None, event
        handle = (prefix, send_pos, rows, recv_src_idx, a.is_token_in_rank, worst)
        return recv, recv_topk_idx, recv_topk_weights, per_expert_list, handle, event

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
        V.check_normal_mode(call, self.num_nvl_bytes)
        rt = self._normal_rt(call)
        config = self.get_combine_config(R) if config is None else config
        rows, T, E = x.size(0), h.num_tokens, 0  # combine counts no experts
        required = int(rt.normal_combine_bytes(rows, hidden, K, E))
        V.check_nvl_buffer_size(call, f"combining {rows} rows of hidden {hidden} (top-{K})", required,
                                self.num_nvl_bytes)

        current, comm = self._normal_streams(previous_event)
        with self._allocating_on(comm, allocate_on_comm_stream):
            combined = torch.empty((T, hidden), dtype=torch.bfloat16, device=self.device)
            combined_weights = torch.empty((T, K), dtype=torch.float32, device=self.device) if K else None
        rt.normal_combine(x.data_ptr(), _ptr(topk_weights), _ptr(bias0), _ptr(bias1), h.send_pos.data_ptr(),
                          h.rank_prefix_matrix.data_ptr(), T, rows, hidden, K, E,
                          combined.data_ptr(), _ptr(combined_weights), config.num_sms,
                          config.num_max_nvl_chunked_send_tokens, comm.cuda_stream)
        event = self._normal_finish(current, comm, async_finish, allocate_on_comm_stream,
                                    (combined, combined_weights), tuple(inputs.values()))
        return combined, combined_weights, event

    # ---- elastic (enable_shrink) --------------------------------------------------------------------------
    def low_latency_update_mask_buffer(self, rank_to_mask: int, mask: bool = False) -> None:
        """mask=True masks `rank_to_mask` (its experts are skipped); mask=False unmasks it."""
        call = "low_latency_update_mask_buffer"
        V.check_shrink_enabled(call, self.enable_shrink)
        rt = self._rt(call)
        V.check_rank(call, "rank_to_mask", rank_to_mask, self.group_size)
        rt.update_mask(rank_to_mask, bool(mask), torch.cuda.current_stream(self.device).cuda_stream)

    def low_latency_query_mask_buffer(self, mask_status: torch.Tensor) -> None:
        """Copies the mask into `mask_status` (int32 [R], 1 = masked) on the current stream."""
        call = "low_latency_query_mask_buffer"
        V.check_shrink_enabled(call, self.enable_shrink)
        rt = self._rt(call)
        V.check_mask_status(call, mask_status, self.group_size)
        V.check_device(call, "mask_status", mask_status, self.device)
        rt.query_mask(mask_status.data_ptr(), torch.cuda.current_stream(self.device).cuda_stream)

    def low_latency_clean_mask_buffer(self) -> None:
        call = "low_latency_clean_mask_buffer"
        V.check_shrink_enabled(call, self.enable_shrink)
        self._rt(call).clean_mask(torch.cuda.current_stream(self.device).cuda_stream)


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
