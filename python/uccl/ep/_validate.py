"""The torch-side argument checks of Buffer's calls, raised before anything is allocated or launched.

Only what the runtime cannot see is checked here: that an argument is a tensor (an int, a bool), its dtype,
dimensions, contiguity and device, shapes that must agree between arguments, the structure of a handle, the rules
between stream arguments, and the expert ids (a read of tensor data). Value ranges (token counts, hidden sizes,
expert counts, top-k, row alignment, buffer sizes) are the runtime's: uccl.ep._C raises ArgumentError for them,
and no limit is defined in Python (the few a shape needs come from _C through _native.limit).

Pure functions over tensors and plain numbers, so that CPU tests reach every branch; the device checks are their
own functions. Each message names the call, the argument, what it got and what was expected. Exception types:
ValueError for wrong dtypes, shapes, devices and contiguity; TypeError when an argument is not a tensor (an int,
a bool, a tuple of the right length) at all.
"""
from typing import Optional, Sequence

import torch

from ._native import limit

# 1-byte float types an FP8 dispatch accepts (e4m3fnuz on AMD MI300); the CPU tests add a stand-in.
FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e4m3fnuz") if hasattr(torch, n))


def _fail(call: str, message: str) -> None:
    raise ValueError(f"{call}: {message}")


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------
def check_int(call: str, name: str, value, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """An int (not a bool); the bounds are for values Python itself uses (an alignment, an offset), not limits."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{call}: {name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        _fail(call, f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        _fail(call, f"{name} must be <= {maximum}, got {value}")
    return value


def check_bool(call: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{call}: {name} must be a bool, got {type(value).__name__}")
    return value


def check_tensor(call: str, name: str, t, dtype: torch.dtype, shape: Optional[Sequence[int]] = None,
                 contiguous: bool = True, dims: Optional[int] = None) -> torch.Tensor:
    """dtype, then rank (`dims`) or exact `shape` (None entries match anything), then contiguity."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{call}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        _fail(call, f"{name} must have dtype {dtype}, got {t.dtype}")
    if dims is not None and t.dim() != dims:
        _fail(call, f"{name} must have {dims} dimensions, got shape {list(t.shape)}")
    if shape is not None:
        if t.dim() != len(shape) or any(e is not None and e != s for e, s in zip(shape, t.shape)):
            expected = ["*" if e is None else e for e in shape]
            _fail(call, f"{name} must have shape {expected}, got {list(t.shape)}")
    if contiguous and not t.is_contiguous():
        _fail(call, f"{name} must be contiguous, got strides {list(t.stride())} for shape {list(t.shape)}")
    return t


def check_device(call: str, name: str, t: torch.Tensor, device: Optional[torch.device] = None) -> None:
    """`t` lives on CUDA (on `device` when given)."""
    if t.device.type != "cuda":
        _fail(call, f"{name} must be a CUDA tensor, got one on {t.device}")
    if device is not None and t.device != device:
        _fail(call, f"{name} must be on {device} (the buffer's device), got {t.device}")


def check_on_device(call: str, name: str, t: Optional[torch.Tensor], device: torch.device) -> None:
    """`t` (when given) lives on the buffer's device."""
    if t is not None and t.device != device:
        _fail(call, f"{name} must be on {device} (the buffer's device), got a tensor on {t.device}")


def check_expert_ids(call: str, name: str, topk_idx: torch.Tensor, num_experts: int) -> None:
    """Every entry in [-1, num_experts). Reads the tensor on the host: never call it during graph capture."""
    if topk_idx.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.stack(torch.aminmax(topk_idx)).tolist())  # one host read
    if lo < -1 or hi >= num_experts:
        _fail(call, f"{name} holds expert ids in [{lo}, {hi}]; expected ids in [-1, {num_experts}) "
                    f"(-1 = no expert, num_experts = {num_experts})")


def check_exclusive_finish(call: str, async_finish, return_recv_hook) -> None:
    if async_finish and return_recv_hook:
        _fail(call, "async_finish=True and return_recv_hook=True exclude each other; pick one")


# ---------------------------------------------------------------------------------------------------------------
# Low-latency mode. The sizes (M, hidden, num_experts) are checked by the runtime's low_latency_layout, which
# Buffer calls between the two steps below; the second step needs its experts_per_rank.
# ---------------------------------------------------------------------------------------------------------------
def check_topk_idx(call: str, topk_idx, num_tokens: Optional[int] = None) -> int:
    """topk_idx int64 [T, K] contiguous (T == num_tokens when given). Returns K; its range is the runtime's."""
    check_tensor(call, "topk_idx", topk_idx, torch.int64, dims=2)
    if num_tokens is not None and topk_idx.size(0) != num_tokens:
        _fail(call, f"topk_idx must have one row per token ({num_tokens}), got shape {list(topk_idx.shape)}")
    return topk_idx.size(1)


def check_ll_dispatch(x, topk_idx, num_max_dispatch_tokens_per_rank, num_experts, use_fp8: bool = True,
                      async_finish: bool = False, return_recv_hook: bool = False,
                      call: str = "low_latency_dispatch") -> tuple:
    """What low_latency_dispatch checks before the layout exists. Returns (num_tokens, hidden)."""
    check_tensor(call, "x", x, torch.bfloat16, dims=2)
    num_tokens, hidden = x.shape
    check_topk_idx(call, topk_idx, num_tokens)
    check_int(call, "num_max_dispatch_tokens_per_rank", num_max_dispatch_tokens_per_rank)
    check_int(call, "num_experts", num_experts)
    if use_fp8 and getattr(torch, "float8_e4m3fn", None) is None:
        _fail(call, f"use_fp8=True needs torch.float8_e4m3fn (torch >= 2.1); this is torch {torch.__version__}")
    check_exclusive_finish(call, async_finish, return_recv_hook)
    return num_tokens, hidden


def check_ll_dispatch_stats(call: str, experts_per_rank: int, num_ranks: int,
                            cumulative_local_expert_recv_stats=None, dispatch_wait_recv_cost_stats=None) -> None:
    """The optional statistics tensors of low_latency_dispatch, against the layout's experts_per_rank."""
    if cumulative_local_expert_recv_stats is not None:
        check_tensor(call, "cumulative_local_expert_recv_stats", cumulative_local_expert_recv_stats, torch.int32,
                     shape=[experts_per_rank])
    if dispatch_wait_recv_cost_stats is not None:
        check_tensor(call, "dispatch_wait_recv_cost_stats", dispatch_wait_recv_cost_stats, torch.int64,
                     shape=[num_ranks])


def check_ll_handle(call: str, handle) -> tuple:
    """handle = (src_info, layout_range, M, hidden, num_experts) from low_latency_dispatch: its structure and the
    three ints' types. Returns (M, hidden, num_experts); their values are the runtime's to check."""
    if not isinstance(handle, (tuple, list)) or len(handle) != 5:
        raise TypeError(f"{call}: handle must be the 5-tuple (src_info, layout_range, "
                        f"num_max_dispatch_tokens_per_rank, hidden, num_experts) from low_latency_dispatch")
    _, _, max_tokens, hidden, num_experts = handle
    check_int(call, "handle[2] (num_max_dispatch_tokens_per_rank)", max_tokens)
    check_int(call, "handle[3] (hidden)", hidden)
    check_int(call, "handle[4] (num_experts)", num_experts)
    return max_tokens, hidden, num_experts


def check_ll_handle_tensors(call: str, handle, experts_per_rank: int, num_ranks: int) -> None:
    src_info, layout_range, max_tokens = handle[0], handle[1], handle[2]
    check_tensor(call, "handle[0] (src_info)", src_info, torch.int32, shape=[experts_per_rank, num_ranks * max_tokens])
    check_tensor(call, "handle[1] (layout_range)", layout_range, torch.int64, shape=[experts_per_rank, num_ranks])


def check_ll_combine(x, topk_idx, topk_weights, handle, experts_per_rank: int, num_ranks: int,
                     zero_copy: bool = False, async_finish: bool = False, return_recv_hook: bool = False, out=None,
                     combine_wait_recv_cost_stats=None, call: str = "low_latency_combine") -> None:
    """What low_latency_combine checks once the layout of the handle's sizes exists (check_ll_handle first)."""
    check_ll_handle_tensors(call, handle, experts_per_rank, num_ranks)
    max_tokens, hidden = handle[2], handle[3]
    if not zero_copy:  # with zero_copy the rows are already in the buffer and x is not read
        check_tensor(call, "x", x, torch.bfloat16, shape=[experts_per_rank, num_ranks * max_tokens, hidden])
    k = check_topk_idx(call, topk_idx)
    num_tokens = topk_idx.size(0)
    check_tensor(call, "topk_weights", topk_weights, torch.float32, shape=[num_tokens, k])
    check_exclusive_finish(call, async_finish, return_recv_hook)
    if out is not None:
        check_tensor(call, "out", out, torch.bfloat16, shape=[num_tokens, hidden])
    if combine_wait_recv_cost_stats is not None:
        check_tensor(call, "combine_wait_recv_cost_stats", combine_wait_recv_cost_stats, torch.int64,
                     shape=[num_ranks])


def check_mask_status(call: str, mask_status, num_ranks: int) -> None:
    check_tensor(call, "mask_status", mask_status, torch.int32, shape=[num_ranks])


# ---------------------------------------------------------------------------------------------------------------
# Normal mode (get_dispatch_layout, dispatch, combine)
# ---------------------------------------------------------------------------------------------------------------
def event_of(previous_event):
    """The torch event inside an EventOverlap (None when the overlap holds none, as after a synchronous call)."""
    handle = getattr(previous_event, "event", None)
    return None if handle is None else handle.event


def check_stream_args(call: str, previous_event, async_finish, allocate_on_comm_stream) -> None:
    check_bool(call, "async_finish", async_finish)
    check_bool(call, "allocate_on_comm_stream", allocate_on_comm_stream)
    if previous_event is not None and not hasattr(previous_event, "event"):
        raise TypeError(f"{call}: previous_event must be an EventOverlap (e.g. from Buffer.capture()), got "
                        f"{type(previous_event).__name__}")
    if allocate_on_comm_stream and (event_of(previous_event) is None or not async_finish):
        _fail(call, "allocate_on_comm_stream=True needs previous_event (an EventOverlap holding an event) and "
                    f"async_finish=True, got previous_event={previous_event!r}, async_finish={async_finish}")


def check_config(call: str, config) -> None:
    from .config import Config
    if config is not None and not isinstance(config, Config):
        raise TypeError(f"{call}: config must be a uccl.ep.Config or None, got {type(config).__name__}")


def check_dispatch_layout(topk_idx, num_experts, previous_event=None, async_finish=False,
                          allocate_on_comm_stream=False, call: str = "get_dispatch_layout") -> tuple:
    """What get_dispatch_layout checks on the torch side. Returns (T, K)."""
    k = check_topk_idx(call, topk_idx)
    check_int(call, "num_experts", num_experts)
    check_stream_args(call, previous_event, async_finish, allocate_on_comm_stream)
    return topk_idx.size(0), k


class NormalX:
    """A dispatch's x split into data and scales, with the sizes the argument struct takes."""

    def __init__(self, data: torch.Tensor, scales: Optional[torch.Tensor]):
        self.data, self.scales = data, scales
        self.num_tokens, self.hidden = data.shape
        self.hidden_bytes = self.hidden * data.element_size()
        self.row_stride_bytes = data.stride(0) * data.element_size() if self.num_tokens > 1 else self.hidden_bytes
        self.num_scales = 0 if scales is None else scales.size(1)
        self.scale_strides = (0, 0) if scales is None else (scales.stride(0), scales.stride(1))


def check_dispatch_x(call: str, x) -> NormalX:
    """x: BF16 [T, hidden], or (FP8 [T, hidden], scales float32 [T, hidden/kChannelsPerScale] or int32
    [T, hidden/kUe8m0ChannelsPerInt] packing four UE8M0 exponents). Rows may lie a stride apart but each row is
    contiguous; scales may have any strides. Row sizes, strides and alignment are the runtime's to check."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise TypeError(f"{call}: x must be a BF16 tensor or a 2-tuple (FP8 data, scales), got a "
                            f"{type(x).__name__} of {len(x)}")
        data, scales = x
        if not isinstance(scales, torch.Tensor):
            raise TypeError(f"{call}: x[1] (scales) must be a torch.Tensor, got {type(scales).__name__}")
    else:
        data, scales = x, None
    name = "x" if scales is None else "x[0]"
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{call}: {name} must be a torch.Tensor, got {type(data).__name__}")
    fp8_names = ", ".join(str(d) for d in FP8_DTYPES) or "torch.float8_e4m3fn (torch >= 2.1)"
    if scales is None and data.dtype != torch.bfloat16:
        hint = " (FP8 data needs its scales: pass x=(data, scales))" if data.dtype in FP8_DTYPES else ""
        _fail(call, f"x must have dtype torch.bfloat16, or be a tuple ({fp8_names} data, scales); got {data.dtype}"
                    f"{hint}")
    if scales is not None and data.dtype not in FP8_DTYPES:
        _fail(call, f"x[0] must have an FP8 dtype ({fp8_names}) when scales are given, got {data.dtype}")
    if data.dim() != 2:
        _fail(call, f"{name} must have 2 dimensions [num_tokens, hidden], got shape {list(data.shape)}")
    num_tokens, hidden = data.shape
    if hidden > 1 and num_tokens > 0 and data.stride(1) != 1:
        _fail(call, f"{name}: each row must be contiguous (stride 1 along hidden), got strides {list(data.stride())}")
    if num_tokens > 1 and data.stride(0) < hidden:
        _fail(call, f"{name}: rows must not overlap, got a row stride of {data.stride(0)} elements for "
                    f"hidden={hidden}")
    if scales is not None:
        if scales.dtype == torch.float32:
            group, what = limit("kChannelsPerScale"), "float32"
        elif scales.dtype == torch.int32:
            group, what = limit("kUe8m0ChannelsPerInt"), "int32 (four packed UE8M0 exponents)"
        else:
            _fail(call, f"x[1] (scales) must have dtype torch.float32 or torch.int32 (packed UE8M0), got "
                        f"{scales.dtype}")
        if hidden % group:
            _fail(call, f"{what} scales need hidden to be a multiple of {group}, got hidden={hidden}")
        expected = [num_tokens, hidden // group]
        if list(scales.shape) != expected:
            _fail(call, f"x[1] ({what} scales) must have shape {expected} (one per {group} channels), got "
                        f"{list(scales.shape)}")
    return NormalX(data, scales)


def check_normal_topk(call: str, topk_idx, topk_weights, num_tokens: int) -> int:
    """Both or neither; returns K (0 for neither)."""
    if (topk_idx is None) != (topk_weights is None):
        _fail(call, f"pass both topk_idx and topk_weights or neither, got topk_idx="
                    f"{'None' if topk_idx is None else 'a tensor'}, topk_weights="
                    f"{'None' if topk_weights is None else 'a tensor'}")
    if topk_idx is None:
        return 0
    k = check_topk_idx(call, topk_idx, num_tokens)
    check_tensor(call, "topk_weights", topk_weights, torch.float32, shape=[num_tokens, k])
    return k


class NormalHandle:
    """The handle of a normal dispatch, by name: 6 elements, or 9 across nodes (the receive prefix sum and the
    forward map before num_worst_tokens)."""

    def __init__(self, handle):
        (self.rank_prefix_matrix, self.send_pos, self.num_recv_rows, self.recv_src_idx, self.is_token_in_rank) = \
            handle[:5]
        self.num_worst_tokens = handle[-1]
        self.internode = len(handle) == 9
        self.recv_gbl_rank_prefix_sum, self.forward_positions, self.forward_source_token = (
            handle[5:8] if self.internode else (None, None, None))

    @property
    def num_forward(self) -> int:
        return self.forward_source_token.size(0) if self.internode else 0

    @property
    def num_tokens(self) -> int:
        return self.send_pos.size(0)


def check_normal_handle(call: str, handle, num_ranks: int, ranks_per_node: Optional[int] = None) -> NormalHandle:
    """handle = (rank_prefix_matrix [R, R] int32, send_pos [T, R] int32, num_recv_rows, recv_src_idx
    [num_recv_rows] int32, is_token_in_rank [T, R] bool, num_worst_tokens) from dispatch, or across nodes the 9-tuple.
    ranks_per_node (given by a Buffer): its node size across nodes, 0 within one NVLink domain; the handle must be
    of that Buffer's form."""
    if not isinstance(handle, (tuple, list)) or len(handle) not in (6, 9):
        raise TypeError(f"{call}: handle must be the 6-tuple (rank_prefix_matrix, send_pos, num_recv_tokens, "
                        f"recv_src_idx, is_token_in_rank, num_worst_tokens) returned by dispatch, or across nodes the "
                        f"9-tuple with recv_gbl_rank_prefix_sum, forward_positions and forward_source_token before "
                        f"num_worst_tokens, got "
                        f"{type(handle).__name__}{' of ' + str(len(handle)) if isinstance(handle, (tuple, list)) else ''}")
    h = NormalHandle(handle)
    R = num_ranks
    check_tensor(call, "handle[0] (rank_prefix_matrix)", h.rank_prefix_matrix, torch.int32, shape=[R, R])
    check_tensor(call, "handle[1] (send_pos)", h.send_pos, torch.int32, shape=[None, R])
    check_int(call, "handle[2] (num_recv_tokens)", h.num_recv_rows, 0)  # a row count the outputs are sized by
    check_tensor(call, "handle[3] (recv_src_idx)", h.recv_src_idx, torch.int32, shape=[h.num_recv_rows])
    check_tensor(call, "handle[4] (is_token_in_rank)", h.is_token_in_rank, torch.bool, shape=[h.num_tokens, R])
    last = len(handle) - 1
    check_int(call, f"handle[{last}] (num_worst_tokens)", h.num_worst_tokens, 0)
    if h.num_worst_tokens and h.num_worst_tokens != h.num_recv_rows:
        _fail(call, f"handle[{last}] (num_worst_tokens={h.num_worst_tokens}) must equal handle[2] (receive rows, "
                    f"{h.num_recv_rows}) when it is not 0")
    if h.internode:
        check_tensor(call, "handle[5] (recv_gbl_rank_prefix_sum)", h.recv_gbl_rank_prefix_sum, torch.int32, shape=[R])
        check_tensor(call, "handle[6] (forward_positions)", h.forward_positions, torch.int32, dims=2)
        if h.forward_positions.size(1) < 2:
            _fail(call, f"handle[6] (forward_positions) has {h.forward_positions.size(1)} columns; expected ranks per "
                        f"node + 1")
        check_tensor(call, "handle[7] (forward_source_token)", h.forward_source_token, torch.int32,
                     shape=[h.forward_positions.size(0)])
    if ranks_per_node is not None:
        if bool(ranks_per_node) != h.internode:
            _fail(call, f"the handle has {len(handle)} elements, made by a Buffer "
                        f"{'across' if h.internode else 'within one'} NVLink domain, but this Buffer "
                        f"{'spans nodes' if ranks_per_node else 'is one NVLink domain'}")
        if h.internode and h.forward_positions.size(1) != ranks_per_node + 1:
            _fail(call, f"handle[6] (forward_positions) has {h.forward_positions.size(1)} columns, expected "
                        f"{ranks_per_node + 1} (ranks per node + the source node)")
    return h


class NormalDispatch:
    """What check_normal_dispatch derived: x, K, E (0 for a cached dispatch: the handle has no expert count),
    the handle (cached), num_worst_tokens and is_token_in_rank."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def check_normal_dispatch(x, handle=None, num_tokens_per_rank=None, num_tokens_per_rdma_rank=None,
                          is_token_in_rank=None, num_tokens_per_expert=None, topk_idx=None, topk_weights=None,
                          expert_alignment=1, num_worst_tokens=0, config=None, previous_event=None,
                          async_finish=False, allocate_on_comm_stream=False, num_ranks: int = 1,
                          call: str = "dispatch", ranks_per_node: Optional[int] = None) -> NormalDispatch:
    """What dispatch checks on the torch side (devices and expert-id values apart)."""
    R = num_ranks
    xs = check_dispatch_x(call, x)
    T = xs.num_tokens
    check_int(call, "expert_alignment", expert_alignment, 1)  # Python rounds the per-expert list by it
    check_int(call, "num_worst_tokens", num_worst_tokens, 0)  # Python sizes the outputs by it
    check_config(call, config)
    check_stream_args(call, previous_event, async_finish, allocate_on_comm_stream)
    if handle is not None:  # cached: the layout comes from the handle
        if topk_idx is not None or topk_weights is not None:
            _fail(call, "a cached dispatch (handle given) takes no topk_idx / topk_weights: it moves x only, with "
                        "the layout of the dispatch that returned the handle")
        h = check_normal_handle(call, handle, R, ranks_per_node)
        if h.num_tokens != T:
            _fail(call, f"x has {T} tokens but the handle was made for {h.num_tokens} "
                        f"(handle[1] send_pos has shape {list(h.send_pos.shape)})")
        if num_worst_tokens and num_worst_tokens != h.num_worst_tokens:
            _fail(call, f"num_worst_tokens={num_worst_tokens} differs from the handle's ({h.num_worst_tokens}); pass "
                        f"0 or the value the handle was made with")
        return NormalDispatch(x=xs, cached=True, handle=h, num_topk=0, num_experts=0,
                              num_worst_tokens=h.num_worst_tokens, is_token_in_rank=h.is_token_in_rank)
    missing = [n for n, v in (("num_tokens_per_rank", num_tokens_per_rank), ("is_token_in_rank", is_token_in_rank),
                              ("num_tokens_per_expert", num_tokens_per_expert)) if v is None]
    if missing:
        _fail(call, f"a dispatch without handle needs the layout from get_dispatch_layout: {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} None")
    check_tensor(call, "num_tokens_per_rank", num_tokens_per_rank, torch.int32, shape=[R])
    if num_tokens_per_rdma_rank is not None:
        check_tensor(call, "num_tokens_per_rdma_rank", num_tokens_per_rdma_rank, torch.int32, dims=1)
    check_tensor(call, "is_token_in_rank", is_token_in_rank, torch.bool, shape=[T, R])
    check_tensor(call, "num_tokens_per_expert", num_tokens_per_expert, torch.int32, dims=1)
    k = check_normal_topk(call, topk_idx, topk_weights, T)
    return NormalDispatch(x=xs, cached=False, handle=None, num_topk=k, num_experts=num_tokens_per_expert.size(0),
                          num_worst_tokens=num_worst_tokens, is_token_in_rank=is_token_in_rank)


def split_bias(call: str, bias):
    """bias: None, a tensor, or a 2-tuple of tensors / None -> (bias0, bias1)."""
    if bias is None:
        return None, None
    if isinstance(bias, torch.Tensor):
        return bias, None
    if isinstance(bias, (tuple, list)) and len(bias) == 2:
        return bias[0], bias[1]
    raise TypeError(f"{call}: bias must be None, a tensor or a 2-tuple of tensors, got {type(bias).__name__}"
                    f"{' of ' + str(len(bias)) if isinstance(bias, (tuple, list)) else ''}")


def check_normal_combine(x, handle, topk_weights=None, bias=None, config=None, previous_event=None,
                         async_finish=False, allocate_on_comm_stream=False, num_ranks: int = 1,
                         call: str = "combine", ranks_per_node: Optional[int] = None):
    """What combine checks on the torch side (devices apart). Returns (handle, hidden, K, bias0, bias1); K is 0
    without topk_weights."""
    h = check_normal_handle(call, handle, num_ranks, ranks_per_node)
    check_tensor(call, "x", x, torch.bfloat16, dims=2)
    if x.size(0) != h.num_recv_rows:
        _fail(call, f"x must have one row per row the dispatch returned ({h.num_recv_rows}, handle[2]), got shape "
                    f"{list(x.shape)}")
    hidden = x.size(1)
    k = 0
    if topk_weights is not None:
        check_tensor(call, "topk_weights", topk_weights, torch.float32, dims=2)
        if topk_weights.size(0) != h.num_recv_rows:
            _fail(call, f"topk_weights must have one row per row of x ({h.num_recv_rows}), got shape "
                        f"{list(topk_weights.shape)}")
        k = topk_weights.size(1)
    b0, b1 = split_bias(call, bias)
    for name, b in (("bias[0]" if b1 is not None else "bias", b0), ("bias[1]", b1)):
        if b is not None:
            check_tensor(call, name, b, torch.bfloat16, shape=[h.num_tokens, hidden])
    check_config(call, config)
    check_stream_args(call, previous_event, async_finish, allocate_on_comm_stream)
    return h, hidden, k, b0, b1


def align_counts(counts, alignment: int) -> list:
    """Each count rounded up to a multiple of `alignment` (dispatch's per-expert list)."""
    return [(int(c) + alignment - 1) // alignment * alignment for c in counts]
