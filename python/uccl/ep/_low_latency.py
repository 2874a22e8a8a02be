"""Buffer's low-latency calls (decode: low_latency_dispatch / low_latency_combine, their receive hooks, the combine
send area, clean_low_latency_buffer) and the elastic masks of enable_shrink, as `LowLatencyCalls`, a base class of
`Buffer` (buffer.py).

Host time per call is part of a decode step's latency (issue 11's budget is 10 us), so these calls keep what they
learn per size tuple (`_LowLatencyState`), compare tensor metadata before anything else, allocate through torch's
cheapest entry, and cross into the runtime once per call."""
from typing import Optional

import torch

from . import _validate as V
from ._native import limit
from ._support import one_thread, wrap_device_memory
from .utils import EventHandle, EventOverlap

_Tensor, _BF16, _F32, _I32, _I64 = torch.Tensor, torch.bfloat16, torch.float32, torch.int32, torch.int64


# The current stream of a device as a cudaStream_t int: torch.cuda.current_stream(index).cuda_stream without building a
# Stream object (torch's own accessor where this torch has one). The CPU tests replace it with their stand-in.
_current_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
    lambda index: torch.cuda.current_stream(index).cuda_stream)


# The event of a call without async_finish: it holds nothing (no event, no tensors) and nothing changes it, so every
# such call returns this one object rather than building one per call.
_NO_EVENT = EventOverlap(None)


def _ll_streams(st, async_finish: bool) -> tuple:
    """(stream, caller_stream, caller_waits) of a low-latency runtime call. Without async_finish, when every earlier
    low-latency launch is ordered before the current stream: the current stream itself, the order the comm stream and
    its two waits would give (the runtime skips the waits when the two streams are one). Otherwise the comm stream,
    after the current stream (the runtime's wait) and after the stream of the earlier launches (here, when that is a
    third one): two low-latency kernels of one Buffer never run at once."""
    current = _current_stream(st.device_index)
    last = st.last_stream
    if not async_finish and (last is None or last == current):
        st.last_stream = current
        return current, current, True
    comm = st.comm_stream
    if last is not None and last != comm and last != current:
        _stream_waits(comm, last, st.device_index)
    st.last_stream = comm if async_finish else current
    return comm, current, not async_finish


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



class LowLatencyCalls:
    """Buffer's low-latency calls (decode) and its elastic masks (enable_shrink), as a base class of Buffer: they use
    its runtime (`_runtime`, `_rt`), group size, device, comm stream and device checks."""

    _ll: Optional[_LowLatencyState] = None  # made by the first low-latency call

    # ---- low-latency mode ---------------------------------------------------------------------------------
    # Host time per call is part of the decode step's latency, so each call does the least it can (issue 11): the
    # sizes the runtime accepted, and what they imply (output shapes, the layout's experts_per_rank), are kept per size
    # tuple (_LowLatencyState); the tensor checks run first as plain metadata comparisons, and only when one of them
    # fails do the checks of _validate.py run, which raise the message (same checks, same order, same words); every
    # value crosses into the runtime in one call, by position in the order of the runtime's field table, which also
    # checks recorded errors, orders the comm stream after the current one and back (an event in the runtime, nothing
    # waits on the host) and launches. Nothing reads tensor data on the host: the kernels check the expert ids.
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
        event = EventOverlap(EventHandle(self._comm_stream), extra_tensors=keep) if async_finish else _NO_EVENT
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

    @one_thread
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
        stream, caller_stream, caller_waits = _ll_streams(st, async_finish)
        # By position, in the order of _C.LowLatencyDispatchCall.fields() (keywords cost ~0.8 us more per call on the
        # CPU stand-in; the CPU tests check every field through that table).
        native_hook = rt.low_latency_dispatch(
            x.data_ptr(), num_tokens, topk_idx.data_ptr(), num_topk, recv_x.data_ptr(),
            0 if scales is None else scales.data_ptr(), recv_count.data_ptr(), src_info.data_ptr(),
            layout_range.data_ptr(), 0 if cum is None else cum.data_ptr(), 0 if wait is None else wait.data_ptr(),
            use_fp8, bool(round_scale), use_ue8m0, M, plan.hidden, E, bool(return_recv_hook), stream, caller_stream,
            caller_waits)

        if async_finish or native_hook is not None:
            event, hook = self._ll_keep("low_latency_dispatch", native_hook, async_finish,
                                        (x, topk_idx, recv_x, scales, recv_count, src_info, layout_range, cum, wait))
        else:
            event, hook = _NO_EVENT, None
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

    @one_thread
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
        stream, caller_stream, caller_waits = _ll_streams(st, async_finish)
        # By position, in the order of _C.LowLatencyCombineCall.fields() (as the dispatch).
        native_hook = rt.low_latency_combine(
            0 if zero_copy else x.data_ptr(), topk_idx.data_ptr(), topk_weights.data_ptr(), num_tokens, num_topk,
            src_info.data_ptr(), layout_range.data_ptr(), combined.data_ptr(),
            0 if wait is None else wait.data_ptr(), bool(use_logfmt), bool(zero_copy), M, hidden, E,
            bool(return_recv_hook), stream, caller_stream, caller_waits)

        if async_finish or native_hook is not None:
            event, hook = self._ll_keep("low_latency_combine", native_hook, async_finish,
                                        (None if zero_copy else x, topk_idx, topk_weights, src_info, layout_range,
                                         combined, wait))
        else:
            event, hook = _NO_EVENT, None
        return combined, event, hook

    @one_thread
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
        raw = wrap_device_memory(ptr, E_local * R * M * row_bytes, rt, self.device)
        row_elems = row_bytes // 2
        return raw.view(torch.bfloat16).as_strided((E_local, R * M, hidden), (R * M * row_elems, row_elems, 1))

    @one_thread
    def clean_low_latency_buffer(self, num_max_dispatch_tokens_per_rank: int, hidden: int, num_experts: int) -> None:
        """Collective: resets the low-latency signal words and scratch (both halves), then a barrier with every
        unmasked rank's clean of the same number, and returns once the current stream's work is done. A rank that
        does not join within UCCL_EP_TIMEOUT_SECS is masked with enable_shrink (low_latency_query_mask_buffer shows
        it); without it this call raises uccl.ep.TimeoutError naming the rank."""
        call = "clean_low_latency_buffer"
        rt = self._rt(call)
        for name, value in (("num_max_dispatch_tokens_per_rank", num_max_dispatch_tokens_per_rank),
                            ("hidden", hidden), ("num_experts", num_experts)):
            V.check_int(call, name, value)
        rt.clean_low_latency_buffer(num_max_dispatch_tokens_per_rank=num_max_dispatch_tokens_per_rank, hidden=hidden,
                                    num_experts=num_experts,
                                    stream=torch.cuda.current_stream(self.device).cuda_stream)

    # ---- elastic (enable_shrink; the runtime raises UcclError without it) -----------------------------------
    @one_thread
    def _run_receive_hook(self, hook: "_RecvHook") -> None:
        """A receive hook runs under the Buffer's call lock like any call."""
        hook.run()

    @one_thread
    def low_latency_update_mask_buffer(self, rank_to_mask: int, mask: bool = False) -> None:
        """mask=True masks `rank_to_mask` (its experts are skipped); mask=False unmasks it."""
        call = "low_latency_update_mask_buffer"
        rt = self._rt(call)
        V.check_int(call, "rank_to_mask", rank_to_mask)
        rt.low_latency_update_mask_buffer(rank_to_mask=rank_to_mask, mask=bool(mask),
                                          stream=torch.cuda.current_stream(self.device).cuda_stream)

    @one_thread
    def low_latency_query_mask_buffer(self, mask_status: torch.Tensor) -> None:
        """Copies the mask into `mask_status` (int32 [R], 1 = masked) on the current stream."""
        call = "low_latency_query_mask_buffer"
        rt = self._rt(call)
        V.check_mask_status(call, mask_status, self.group_size)
        V.check_device(call, "mask_status", mask_status, self.device)
        rt.low_latency_query_mask_buffer(mask_status=mask_status.data_ptr(),
                                         stream=torch.cuda.current_stream(self.device).cuda_stream)

    @one_thread
    def low_latency_clean_mask_buffer(self) -> None:
        call = "low_latency_clean_mask_buffer"
        self._rt(call).low_latency_clean_mask_buffer(stream=torch.cuda.current_stream(self.device).cuda_stream)


class _RecvHook:
    """The receive half of a low-latency call (return_recv_hook=True): runs on the stream current when called.
    Holds the call's tensors, which the receive kernels still read and write."""

    __slots__ = ("_buffer", "_native_hook", "_tensors", "_ran", "_call")

    def __init__(self, buffer: "LowLatencyCalls", native_hook, tensors: tuple, call: str = "low-latency"):
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
