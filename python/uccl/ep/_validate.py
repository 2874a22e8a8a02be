"""Argument checks of the low-latency calls, raised before any kernel runs.

Pure functions over tensors and plain numbers, so that CPU tests reach every branch. The device check is its
own function (`check_device`): CPU tests call the others with CPU tensors and test it separately. Each message
names the call, the argument, what it got and what was expected.

Exception types: ValueError for wrong values, shapes, dtypes, devices and contiguity; TypeError when an
argument is not a tensor (or not an int) at all; RuntimeError when the buffer's mode forbids the call.
"""
from typing import Optional, Sequence

import torch

# Limits of the low-latency kernels; mirror src/kernels/ll_layout.hpp (a test compares them with uccl.ep._C).
kMaxTopk = 16
kMaxExpertsPerRank = 256
kMaxTokensPerRank = 1024
kMinHidden = 128
kMaxHidden = 8192
kChannelsPerScale = 128
kUe8m0ChannelsPerInt = 512  # four UE8M0 exponents (of 128 channels each) per int32


def _fail(call: str, message: str) -> None:
    raise ValueError(f"{call}: {message}")


def check_int(call: str, name: str, value, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{call}: {name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        _fail(call, f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        _fail(call, f"{name} must be <= {maximum}, got {value}")
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


def check_expert_ids(call: str, name: str, topk_idx: torch.Tensor, num_experts: int) -> None:
    """Every entry in [-1, num_experts). Reads the tensor on the host: never call it during graph capture."""
    if topk_idx.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.stack(torch.aminmax(topk_idx)).tolist())  # one host read
    if lo < -1 or hi >= num_experts:
        _fail(call, f"{name} holds expert ids in [{lo}, {hi}]; expected ids in [-1, {num_experts}) "
                    f"(-1 = no expert, num_experts = {num_experts})")


def check_low_latency_mode(call: str, low_latency_mode: bool) -> None:
    if not low_latency_mode:
        raise RuntimeError(f"{call}: the buffer was built with low_latency_mode=False; build it with "
                           f"Buffer(group, 0, num_rdma_bytes, low_latency_mode=True)")


def check_shrink_enabled(call: str, enable_shrink: bool) -> None:
    if not enable_shrink:
        raise RuntimeError(f"{call}: the mask buffer exists only with enable_shrink=True; build the Buffer with "
                           f"enable_shrink=True")


def check_ll_sizes(call: str, num_max_dispatch_tokens_per_rank, hidden, num_experts, num_ranks: int) -> None:
    """M, hidden and E against the kernels' limits and the group size."""
    check_int(call, "num_max_dispatch_tokens_per_rank", num_max_dispatch_tokens_per_rank, 1, kMaxTokensPerRank)
    check_int(call, "hidden", hidden)
    if hidden % kChannelsPerScale != 0 or not kMinHidden <= hidden <= kMaxHidden:
        _fail(call, f"hidden must be a multiple of {kChannelsPerScale} in [{kMinHidden}, {kMaxHidden}], got {hidden}")
    check_int(call, "num_experts", num_experts, 1)
    if num_experts % num_ranks != 0:
        _fail(call, f"num_experts ({num_experts}) must be a multiple of the number of ranks ({num_ranks})")
    if num_experts // num_ranks > kMaxExpertsPerRank:
        _fail(call, f"num_experts / num_ranks = {num_experts // num_ranks} experts per rank; at most "
                    f"{kMaxExpertsPerRank} are supported")


def check_ll_buffer_size(call: str, required: int, available: int, num_max_dispatch_tokens_per_rank: int,
                         hidden: int, num_ranks: int, num_experts: int) -> None:
    if required > available:
        _fail(call, f"the RDMA buffer is too small: these sizes need {required} bytes "
                    f"(Buffer.get_low_latency_rdma_size_hint({num_max_dispatch_tokens_per_rank}, {hidden}, "
                    f"{num_ranks}, {num_experts})), the buffer has num_rdma_bytes={available}")


def check_topk(call: str, topk_idx, num_tokens: int, max_tokens: int) -> int:
    """topk_idx int64 [T, K] contiguous, T == num_tokens <= M, 1 <= K <= kMaxTopk. Returns K."""
    check_tensor(call, "topk_idx", topk_idx, torch.int64, dims=2)
    if topk_idx.size(0) != num_tokens:
        _fail(call, f"topk_idx must have one row per token ({num_tokens}), got shape {list(topk_idx.shape)}")
    if num_tokens > max_tokens:
        _fail(call, f"{num_tokens} tokens exceed num_max_dispatch_tokens_per_rank={max_tokens}")
    k = topk_idx.size(1)
    if not 1 <= k <= kMaxTopk:
        _fail(call, f"top-k must be in [1, {kMaxTopk}], got topk_idx of shape {list(topk_idx.shape)}")
    return k


def check_ll_dispatch(x, topk_idx, num_max_dispatch_tokens_per_rank, num_experts, num_ranks: int,
                      cumulative_local_expert_recv_stats=None, dispatch_wait_recv_cost_stats=None,
                      use_fp8: bool = True, round_scale: bool = False, use_ue8m0: bool = False,
                      async_finish: bool = False, return_recv_hook: bool = False,
                      call: str = "low_latency_dispatch") -> None:
    """Everything low_latency_dispatch checks except devices, expert-id values and the buffer size."""
    check_tensor(call, "x", x, torch.bfloat16, dims=2)
    num_tokens, hidden = x.shape
    check_ll_sizes(call, num_max_dispatch_tokens_per_rank, hidden, num_experts, num_ranks)
    check_topk(call, topk_idx, num_tokens, num_max_dispatch_tokens_per_rank)
    if use_ue8m0 and not (use_fp8 and round_scale):
        _fail(call, f"use_ue8m0=True needs use_fp8=True and round_scale=True, got use_fp8={use_fp8}, "
                    f"round_scale={round_scale}")
    if use_ue8m0 and hidden % kUe8m0ChannelsPerInt != 0:
        _fail(call, f"use_ue8m0=True needs hidden to be a multiple of {kUe8m0ChannelsPerInt}, got {hidden}")
    if use_fp8 and getattr(torch, "float8_e4m3fn", None) is None:
        _fail(call, f"use_fp8=True needs torch.float8_e4m3fn (torch >= 2.1); this is torch {torch.__version__}")
    if async_finish and return_recv_hook:
        _fail(call, "async_finish=True and return_recv_hook=True exclude each other; pick one")
    local = num_experts // num_ranks
    if cumulative_local_expert_recv_stats is not None:
        check_tensor(call, "cumulative_local_expert_recv_stats", cumulative_local_expert_recv_stats, torch.int32,
                     shape=[local])
    if dispatch_wait_recv_cost_stats is not None:
        check_tensor(call, "dispatch_wait_recv_cost_stats", dispatch_wait_recv_cost_stats, torch.int64,
                     shape=[num_ranks])


def check_ll_handle(call: str, handle, num_ranks: int):
    """handle = (src_info, layout_range, M, hidden, num_experts) from low_latency_dispatch. Returns the three ints."""
    if not isinstance(handle, (tuple, list)) or len(handle) != 5:
        raise TypeError(f"{call}: handle must be the 5-tuple (src_info, layout_range, "
                        f"num_max_dispatch_tokens_per_rank, hidden, num_experts) from low_latency_dispatch")
    src_info, layout_range, max_tokens, hidden, num_experts = handle
    check_ll_sizes(call, max_tokens, hidden, num_experts, num_ranks)
    local = num_experts // num_ranks
    check_tensor(call, "handle[0] (src_info)", src_info, torch.int32, shape=[local, num_ranks * max_tokens])
    check_tensor(call, "handle[1] (layout_range)", layout_range, torch.int64, shape=[local, num_ranks])
    return max_tokens, hidden, num_experts


def check_ll_combine(x, topk_idx, topk_weights, handle, num_ranks: int, zero_copy: bool = False,
                     async_finish: bool = False, return_recv_hook: bool = False, out=None,
                     combine_wait_recv_cost_stats=None, call: str = "low_latency_combine"):
    """Everything low_latency_combine checks except devices, expert-id values and the buffer size.
    Returns (M, hidden, num_experts) from the handle."""
    max_tokens, hidden, num_experts = check_ll_handle(call, handle, num_ranks)
    local = num_experts // num_ranks
    if not zero_copy:  # with zero_copy the rows are already in the buffer and x is not read
        check_tensor(call, "x", x, torch.bfloat16, shape=[local, num_ranks * max_tokens, hidden])
    if not isinstance(topk_idx, torch.Tensor):
        raise TypeError(f"{call}: topk_idx must be a torch.Tensor, got {type(topk_idx).__name__}")
    num_tokens = topk_idx.size(0) if topk_idx.dim() >= 1 else -1
    k = check_topk(call, topk_idx, num_tokens, max_tokens)
    check_tensor(call, "topk_weights", topk_weights, torch.float32, shape=[num_tokens, k])
    if async_finish and return_recv_hook:
        _fail(call, "async_finish=True and return_recv_hook=True exclude each other; pick one")
    if out is not None:
        check_tensor(call, "out", out, torch.bfloat16, shape=[num_tokens, hidden])
    if combine_wait_recv_cost_stats is not None:
        check_tensor(call, "combine_wait_recv_cost_stats", combine_wait_recv_cost_stats, torch.int64,
                     shape=[num_ranks])
    return max_tokens, hidden, num_experts


def check_mask_status(call: str, mask_status, num_ranks: int) -> None:
    check_tensor(call, "mask_status", mask_status, torch.int32, shape=[num_ranks])


def check_rank(call: str, name: str, rank, num_ranks: int) -> int:
    return check_int(call, name, rank, 0, num_ranks - 1)
