"""Every branch of the low-latency argument checks (_validate.py), with CPU tensors. The device check is its own
function and is exercised with a CPU tensor, expecting the error. After each rejected call a good call to the
same check passes: the checks keep no state."""
import pytest
import torch

from uccl.ep import _validate as V

R, M, E, H, K = 4, 32, 16, 256, 4
HAVE_FP8 = getattr(torch, "float8_e4m3fn", None) is not None


def good_dispatch(**over):
    args = dict(x=torch.zeros(8, H, dtype=torch.bfloat16), topk_idx=torch.zeros(8, K, dtype=torch.int64),
                num_max_dispatch_tokens_per_rank=M, num_experts=E, num_ranks=R,
                cumulative_local_expert_recv_stats=None, dispatch_wait_recv_cost_stats=None,
                use_fp8=HAVE_FP8, round_scale=False, use_ue8m0=False, async_finish=False, return_recv_hook=False)
    args.update(over)
    return args


def good_handle(M=M, H=H, E=E):
    return (torch.zeros(E // R, R * M, dtype=torch.int32), torch.zeros(E // R, R, dtype=torch.int64), M, H, E)


def good_combine(**over):
    args = dict(x=torch.zeros(E // R, R * M, H, dtype=torch.bfloat16), topk_idx=torch.zeros(8, K, dtype=torch.int64),
                topk_weights=torch.zeros(8, K, dtype=torch.float32), handle=good_handle(), num_ranks=R,
                zero_copy=False, async_finish=False, return_recv_hook=False, out=None,
                combine_wait_recv_cost_stats=None)
    args.update(over)
    return args


def test_good_calls_pass():
    V.check_ll_dispatch(**good_dispatch())
    V.check_ll_dispatch(**good_dispatch(use_fp8=False))
    assert V.check_ll_combine(**good_combine()) == (M, H, E)


DISPATCH_BAD = [
    # (overrides, exception, words in the message)
    (dict(x=torch.zeros(8, H, dtype=torch.float32)), ValueError, ["x", "torch.bfloat16", "torch.float32"]),
    (dict(x=torch.zeros(8, H, 1, dtype=torch.bfloat16)), ValueError, ["x", "2 dimensions"]),
    (dict(x=torch.zeros(H, 8, dtype=torch.bfloat16).t()), ValueError, ["x", "contiguous"]),
    (dict(x=[[0.0] * H]), TypeError, ["x", "torch.Tensor"]),
    (dict(x=torch.zeros(8, 200, dtype=torch.bfloat16)), ValueError, ["hidden", "multiple of 128", "200"]),
    (dict(x=torch.zeros(8, 8320, dtype=torch.bfloat16)), ValueError, ["hidden", "8192", "8320"]),
    (dict(x=torch.zeros(8, 0, dtype=torch.bfloat16)), ValueError, ["hidden"]),
    (dict(topk_idx=torch.zeros(8, K, dtype=torch.int32)), ValueError, ["topk_idx", "torch.int64", "torch.int32"]),
    (dict(topk_idx=torch.zeros(8, dtype=torch.int64)), ValueError, ["topk_idx", "2 dimensions"]),
    (dict(topk_idx=torch.zeros(7, K, dtype=torch.int64)), ValueError, ["topk_idx", "one row per token", "8"]),
    (dict(topk_idx=torch.zeros(K, 8, dtype=torch.int64).t()), ValueError, ["topk_idx", "contiguous"]),
    (dict(topk_idx=torch.zeros(8, 17, dtype=torch.int64)), ValueError, ["top-k", "16"]),
    (dict(topk_idx=torch.zeros(8, 0, dtype=torch.int64)), ValueError, ["top-k"]),
    (dict(x=torch.zeros(33, H, dtype=torch.bfloat16), topk_idx=torch.zeros(33, K, dtype=torch.int64)), ValueError,
     ["33 tokens", "num_max_dispatch_tokens_per_rank=32"]),
    (dict(num_max_dispatch_tokens_per_rank=1025), ValueError, ["num_max_dispatch_tokens_per_rank", "1024"]),
    (dict(num_max_dispatch_tokens_per_rank=0), ValueError, ["num_max_dispatch_tokens_per_rank", ">= 1"]),
    (dict(num_max_dispatch_tokens_per_rank=32.0), TypeError, ["num_max_dispatch_tokens_per_rank", "int"]),
    (dict(num_experts=18), ValueError, ["num_experts (18)", "multiple of the number of ranks (4)"]),
    (dict(num_experts=0), ValueError, ["num_experts", ">= 1"]),
    (dict(num_experts=257 * R), ValueError, ["257 experts per rank", "256"]),
    (dict(use_fp8=True, round_scale=False, use_ue8m0=True), ValueError, ["use_ue8m0", "round_scale"]),
    (dict(use_fp8=False, round_scale=True, use_ue8m0=True), ValueError, ["use_ue8m0", "use_fp8"]),
    (dict(async_finish=True, return_recv_hook=True), ValueError, ["async_finish", "return_recv_hook"]),
    (dict(cumulative_local_expert_recv_stats=torch.zeros(E // R, dtype=torch.int64)), ValueError,
     ["cumulative_local_expert_recv_stats", "torch.int32"]),
    (dict(cumulative_local_expert_recv_stats=torch.zeros(E, dtype=torch.int32)), ValueError,
     ["cumulative_local_expert_recv_stats", f"[{E // R}]"]),
    (dict(dispatch_wait_recv_cost_stats=torch.zeros(R, dtype=torch.int32)), ValueError,
     ["dispatch_wait_recv_cost_stats", "torch.int64"]),
    (dict(dispatch_wait_recv_cost_stats=torch.zeros(R + 1, dtype=torch.int64)), ValueError,
     ["dispatch_wait_recv_cost_stats", f"[{R}]"]),
]


@pytest.mark.parametrize("over, exc, words", DISPATCH_BAD)
def test_dispatch_rejects(over, exc, words):
    with pytest.raises(exc) as e:
        V.check_ll_dispatch(**good_dispatch(**over))
    msg = str(e.value)
    assert msg.startswith("low_latency_dispatch:"), msg
    for w in words:
        assert w in msg, (w, msg)
    V.check_ll_dispatch(**good_dispatch())  # nothing stuck


@pytest.mark.skipif(HAVE_FP8, reason="this torch has float8_e4m3fn, so the missing-fp8 branch cannot run")
def test_dispatch_fp8_needs_new_torch():
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        V.check_ll_dispatch(**good_dispatch(use_fp8=True))
    V.check_ll_dispatch(**good_dispatch(use_fp8=False))


def test_dispatch_ue8m0_hidden():
    with pytest.raises(ValueError, match="multiple of 512"):
        V.check_ll_dispatch(**good_dispatch(x=torch.zeros(8, 384, dtype=torch.bfloat16), use_fp8=True,
                                            round_scale=True, use_ue8m0=True))
    if HAVE_FP8:
        V.check_ll_dispatch(**good_dispatch(x=torch.zeros(8, 512, dtype=torch.bfloat16), use_fp8=True, round_scale=True,
                                        use_ue8m0=True))


def test_zero_tokens_pass():
    V.check_ll_dispatch(**good_dispatch(x=torch.zeros(0, H, dtype=torch.bfloat16),
                                        topk_idx=torch.zeros(0, K, dtype=torch.int64)))


COMBINE_BAD = [
    (dict(x=torch.zeros(E // R, R * M, H, dtype=torch.float32)), ValueError, ["x", "torch.bfloat16"]),
    (dict(x=torch.zeros(E // R, R * M, H + 128, dtype=torch.bfloat16)), ValueError, ["x", "shape", f"{H}"]),
    (dict(x=torch.zeros(E // R, H, R * M, dtype=torch.bfloat16).transpose(1, 2)), ValueError, ["x", "contiguous"]),
    (dict(topk_idx=torch.zeros(8, K, dtype=torch.float32)), ValueError, ["topk_idx", "torch.int64"]),
    (dict(topk_idx=[1, 2]), TypeError, ["topk_idx", "torch.Tensor"]),
    (dict(topk_idx=torch.zeros(33, K, dtype=torch.int64), topk_weights=torch.zeros(33, K)), ValueError,
     ["33 tokens", "32"]),
    (dict(topk_idx=torch.zeros(8, 17, dtype=torch.int64), topk_weights=torch.zeros(8, 17)), ValueError, ["top-k"]),
    (dict(topk_weights=torch.zeros(8, K, dtype=torch.bfloat16)), ValueError, ["topk_weights", "torch.float32"]),
    (dict(topk_weights=torch.zeros(8, K + 1)), ValueError, ["topk_weights", f"[8, {K}]"]),
    (dict(topk_weights=torch.zeros(K, 8).t()), ValueError, ["topk_weights", "contiguous"]),
    (dict(handle=good_handle()[:4]), TypeError, ["handle", "5-tuple"]),
    (dict(handle="handle"), TypeError, ["handle"]),
    (dict(handle=(torch.zeros(E // R, R * M, dtype=torch.int64),) + good_handle()[1:]), ValueError,
     ["src_info", "torch.int32"]),
    (dict(handle=(torch.zeros(E // R, M, dtype=torch.int32),) + good_handle()[1:]), ValueError,
     ["src_info", f"[{E // R}, {R * M}]"]),
    (dict(handle=good_handle()[:1] + (torch.zeros(E // R, R, dtype=torch.int32),) + good_handle()[2:]), ValueError,
     ["layout_range", "torch.int64"]),
    (dict(handle=good_handle()[:2] + (M, 200, E)), ValueError, ["hidden", "200"]),
    (dict(handle=good_handle()[:2] + (M, H, 18)), ValueError, ["num_experts (18)"]),
    (dict(async_finish=True, return_recv_hook=True), ValueError, ["exclude each other"]),
    (dict(out=torch.zeros(8, H, dtype=torch.float32)), ValueError, ["out", "torch.bfloat16"]),
    (dict(out=torch.zeros(9, H, dtype=torch.bfloat16)), ValueError, ["out", f"[8, {H}]"]),
    (dict(out=torch.zeros(H, 8, dtype=torch.bfloat16).t()), ValueError, ["out", "contiguous"]),
    (dict(combine_wait_recv_cost_stats=torch.zeros(R, dtype=torch.int32)), ValueError,
     ["combine_wait_recv_cost_stats", "torch.int64"]),
    (dict(combine_wait_recv_cost_stats=torch.zeros(2 * R, dtype=torch.int64)), ValueError,
     ["combine_wait_recv_cost_stats", f"[{R}]"]),
]


@pytest.mark.parametrize("over, exc, words", COMBINE_BAD)
def test_combine_rejects(over, exc, words):
    with pytest.raises(exc) as e:
        V.check_ll_combine(**good_combine(**over))
    msg = str(e.value)
    assert msg.startswith("low_latency_combine:"), msg
    for w in words:
        assert w in msg, (w, msg)
    V.check_ll_combine(**good_combine())


def test_combine_zero_copy_ignores_x():
    # With zero_copy the rows are already in the buffer: x may be anything (often the buffer view itself).
    V.check_ll_combine(**good_combine(x=None, zero_copy=True))
    strided = torch.zeros(E // R, R * M, H + 64, dtype=torch.bfloat16)[:, :, :H]
    V.check_ll_combine(**good_combine(x=strided, zero_copy=True))


def test_expert_ids():
    ids = torch.tensor([[0, E - 1], [-1, 3]])
    V.check_expert_ids("c", "topk_idx", ids, E)
    V.check_expert_ids("c", "topk_idx", torch.zeros(0, 2, dtype=torch.int64), E)
    for bad, words in [(E, [f"[-1, {E})", f"{E}]"]), (-2, ["[-2,", f"[-1, {E})"]), (10 ** 9, ["1000000000"])]:
        with pytest.raises(ValueError) as e:
            V.check_expert_ids("low_latency_dispatch", "topk_idx", torch.tensor([[0, bad]]), E)
        for w in words:
            assert w in str(e.value), (w, str(e.value))
    V.check_expert_ids("c", "topk_idx", ids, E)


def test_device_check_rejects_cpu_tensor():
    with pytest.raises(ValueError, match="x must be a CUDA tensor, got one on cpu"):
        V.check_device("low_latency_dispatch", "x", torch.zeros(2))


def test_buffer_size_check():
    V.check_ll_buffer_size("c", 1024, 1024, M, H, R, E)
    with pytest.raises(ValueError) as e:
        V.check_ll_buffer_size("low_latency_dispatch", 4096, 1024, M, H, R, E)
    msg = str(e.value)
    assert "4096" in msg and "num_rdma_bytes=1024" in msg and "get_low_latency_rdma_size_hint" in msg


def test_mode_checks():
    V.check_low_latency_mode("c", True)
    with pytest.raises(RuntimeError, match="low_latency_mode=False"):
        V.check_low_latency_mode("low_latency_dispatch", False)
    V.check_shrink_enabled("c", True)
    with pytest.raises(RuntimeError, match="enable_shrink=True"):
        V.check_shrink_enabled("low_latency_update_mask_buffer", False)


def test_mask_status_and_rank():
    V.check_mask_status("c", torch.zeros(R, dtype=torch.int32), R)
    with pytest.raises(ValueError, match="torch.int32"):
        V.check_mask_status("c", torch.zeros(R, dtype=torch.int64), R)
    with pytest.raises(ValueError, match=rf"\[{R}\]"):
        V.check_mask_status("c", torch.zeros(R + 1, dtype=torch.int32), R)
    assert V.check_rank("c", "rank_to_mask", 3, R) == 3
    with pytest.raises(ValueError, match="<= 3"):
        V.check_rank("c", "rank_to_mask", 4, R)
    with pytest.raises(ValueError, match=">= 0"):
        V.check_rank("c", "rank_to_mask", -1, R)
