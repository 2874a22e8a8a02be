"""The low-latency argument checks: the torch-side ones (_validate.py) on every branch with CPU tensors, and the
value ranges the runtime owns through uccl.ep._C's module functions (low_latency_layout,
check_low_latency_dispatch / check_low_latency_combine), which raise ArgumentError (a ValueError) naming the
argument. The device check is its own function and is exercised with a CPU tensor, expecting the error. After each
rejected call a good call to the same check passes: the checks keep no state."""
import pytest
import torch

from uccl.ep import _validate as V

R, M, E, H, K = 4, 32, 16, 256, 4
HAVE_FP8 = getattr(torch, "float8_e4m3fn", None) is not None


def good_dispatch(**over):
    args = dict(x=torch.zeros(8, H, dtype=torch.bfloat16), topk_idx=torch.zeros(8, K, dtype=torch.int64),
                num_max_dispatch_tokens_per_rank=M, num_experts=E, use_fp8=HAVE_FP8, async_finish=False,
                return_recv_hook=False)
    args.update(over)
    return args


def good_stats(**over):
    args = dict(experts_per_rank=E // R, num_ranks=R, cumulative_local_expert_recv_stats=None,
                dispatch_wait_recv_cost_stats=None)
    args.update(over)
    return args


def good_handle(M=M, H=H, E=E):
    return (torch.zeros(E // R, R * M, dtype=torch.int32), torch.zeros(E // R, R, dtype=torch.int64), M, H, E)


def good_combine(**over):
    args = dict(x=torch.zeros(E // R, R * M, H, dtype=torch.bfloat16), topk_idx=torch.zeros(8, K, dtype=torch.int64),
                topk_weights=torch.zeros(8, K, dtype=torch.float32), handle=good_handle(), experts_per_rank=E // R,
                num_ranks=R, zero_copy=False, async_finish=False, return_recv_hook=False, out=None,
                combine_wait_recv_cost_stats=None)
    args.update(over)
    return args


def test_good_calls_pass():
    assert V.check_ll_dispatch(**good_dispatch()) == (8, H)
    assert V.check_ll_dispatch(**good_dispatch(use_fp8=False)) == (8, H)
    V.check_ll_dispatch_stats("c", **good_stats(cumulative_local_expert_recv_stats=torch.zeros(E // R,
                                                                                              dtype=torch.int32)))
    assert V.check_ll_handle("c", good_handle()) == (M, H, E)
    V.check_ll_combine(**good_combine())


DISPATCH_BAD = [
    # (overrides, exception, words in the message)
    (dict(x=torch.zeros(8, H, dtype=torch.float32)), ValueError, ["x", "torch.bfloat16", "torch.float32"]),
    (dict(x=torch.zeros(8, H, 1, dtype=torch.bfloat16)), ValueError, ["x", "2 dimensions"]),
    (dict(x=torch.zeros(H, 8, dtype=torch.bfloat16).t()), ValueError, ["x", "contiguous"]),
    (dict(x=[[0.0] * H]), TypeError, ["x", "torch.Tensor"]),
    (dict(topk_idx=torch.zeros(8, K, dtype=torch.int32)), ValueError, ["topk_idx", "torch.int64", "torch.int32"]),
    (dict(topk_idx=torch.zeros(8, dtype=torch.int64)), ValueError, ["topk_idx", "2 dimensions"]),
    (dict(topk_idx=torch.zeros(7, K, dtype=torch.int64)), ValueError, ["topk_idx", "one row per token", "8"]),
    (dict(topk_idx=torch.zeros(K, 8, dtype=torch.int64).t()), ValueError, ["topk_idx", "contiguous"]),
    (dict(topk_idx=[[0] * K] * 8), TypeError, ["topk_idx", "torch.Tensor"]),
    (dict(num_max_dispatch_tokens_per_rank=32.0), TypeError, ["num_max_dispatch_tokens_per_rank", "int"]),
    (dict(num_max_dispatch_tokens_per_rank=True), TypeError, ["num_max_dispatch_tokens_per_rank", "int"]),
    (dict(num_experts="16"), TypeError, ["num_experts", "int"]),
    (dict(async_finish=True, return_recv_hook=True), ValueError, ["async_finish", "return_recv_hook"]),
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


STATS_BAD = [
    (dict(cumulative_local_expert_recv_stats=torch.zeros(E // R, dtype=torch.int64)),
     ["cumulative_local_expert_recv_stats", "torch.int32"]),
    (dict(cumulative_local_expert_recv_stats=torch.zeros(E, dtype=torch.int32)),
     ["cumulative_local_expert_recv_stats", f"[{E // R}]"]),
    (dict(dispatch_wait_recv_cost_stats=torch.zeros(R, dtype=torch.int32)), ["dispatch_wait_recv_cost_stats",
                                                                            "torch.int64"]),
    (dict(dispatch_wait_recv_cost_stats=torch.zeros(R + 1, dtype=torch.int64)), ["dispatch_wait_recv_cost_stats",
                                                                                f"[{R}]"]),
]


@pytest.mark.parametrize("over, words", STATS_BAD)
def test_dispatch_stats_follow_the_layout(over, words):
    with pytest.raises(ValueError) as e:
        V.check_ll_dispatch_stats("low_latency_dispatch", **good_stats(**over))
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    V.check_ll_dispatch_stats("low_latency_dispatch", **good_stats())


@pytest.mark.skipif(HAVE_FP8, reason="this torch has float8_e4m3fn, so the missing-fp8 branch cannot run")
def test_dispatch_fp8_needs_new_torch():
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        V.check_ll_dispatch(**good_dispatch(use_fp8=True))
    V.check_ll_dispatch(**good_dispatch(use_fp8=False))


def test_zero_tokens_pass():
    V.check_ll_dispatch(**good_dispatch(x=torch.zeros(0, H, dtype=torch.bfloat16),
                                        topk_idx=torch.zeros(0, K, dtype=torch.int64)))


# ---------------------------------------------------------------------------------------------------------------
# Value ranges: the runtime's (uccl.ep._C), the same checks its launches run
# ---------------------------------------------------------------------------------------------------------------
def layout(native, M=M, hidden=H, R=R, E=E):
    return native.low_latency_layout(num_max_dispatch_tokens_per_rank=M, hidden=hidden, num_ranks=R, num_experts=E)


def assert_argument_error(native, run, words):
    with pytest.raises(native.ArgumentError) as e:
        run()
    assert isinstance(e.value, ValueError)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


LAYOUT_BAD = [
    (dict(hidden=200), ["hidden", "200", "128"]),
    (dict(hidden=8320), ["hidden", "8320", "8192"]),
    (dict(hidden=0), ["hidden", "0"]),
    (dict(hidden=64), ["hidden", "64", "128"]),
    (dict(M=1025), ["num_max_dispatch_tokens_per_rank", "1025", "1024"]),
    (dict(M=0), ["num_max_dispatch_tokens_per_rank", "0"]),
    (dict(E=18), ["num_experts", "18", "4"]),
    (dict(E=0), ["num_experts", "0"]),
    (dict(E=257 * R), ["num_experts", "256"]),
]


@pytest.mark.parametrize("over, words", LAYOUT_BAD)
def test_layout_rejects_sizes(native, over, words):
    assert_argument_error(native, lambda: layout(native, **over), words)
    assert layout(native).experts_per_rank == E // R  # nothing stuck


def dispatch_args(native, T=8, k=K, use_fp8=True, round_scale=False, use_ue8m0=False):
    return native.LowLatencyDispatchArgs(num_tokens=T, num_topk=k, use_fp8=use_fp8, round_scale=round_scale,
                                         use_ue8m0=use_ue8m0)


DISPATCH_RANGE_BAD = [
    (dict(T=33), ["num_tokens", "33", "32"]),
    (dict(k=17), ["num_topk", "17", "16"]),
    (dict(k=0), ["num_topk", "0"]),
    (dict(use_fp8=True, round_scale=False, use_ue8m0=True), ["use_ue8m0", "round_scale"]),
    (dict(use_fp8=False, round_scale=True, use_ue8m0=True), ["use_ue8m0", "use_fp8"]),
]


@pytest.mark.parametrize("over, words", DISPATCH_RANGE_BAD)
def test_runtime_dispatch_check(native, over, words):
    lay = layout(native)
    assert_argument_error(native, lambda: native.check_low_latency_dispatch(layout=lay,
                                                                             args=dispatch_args(native, **over)), words)
    native.check_low_latency_dispatch(layout=lay, args=dispatch_args(native))
    native.check_low_latency_dispatch(layout=lay, args=dispatch_args(native, T=M, k=16))
    native.check_low_latency_dispatch(layout=lay, args=dispatch_args(native, T=0))


def test_runtime_dispatch_ue8m0_hidden(native):
    ue8m0 = dict(use_fp8=True, round_scale=True, use_ue8m0=True)
    lay = layout(native, hidden=384)
    assert_argument_error(native, lambda: native.check_low_latency_dispatch(layout=lay,
                                                                             args=dispatch_args(native, **ue8m0)),
                          ["512", "384"])
    native.check_low_latency_dispatch(layout=layout(native, hidden=512), args=dispatch_args(native, **ue8m0))


@pytest.mark.parametrize("T, k, words", [(33, K, ["num_tokens", "33", "32"]), (8, 17, ["num_topk", "17", "16"]),
                                         (8, 0, ["num_topk", "0"])])
def test_runtime_combine_check(native, T, k, words):
    lay = layout(native)
    bad = native.LowLatencyCombineArgs(num_tokens=T, num_topk=k)
    assert_argument_error(native, lambda: native.check_low_latency_combine(layout=lay, args=bad), words)
    native.check_low_latency_combine(layout=lay, args=native.LowLatencyCombineArgs(num_tokens=8, num_topk=K))


def test_argument_structs_take_names_only(native):
    args = native.LowLatencyDispatchArgs(x=1234, num_tokens=3)
    assert (args.x, args.num_tokens, args.topk_idx, args.use_fp8) == (1234, 3, 0, False)
    args.topk_idx = 5678
    assert args.topk_idx == 5678
    assert "cumulative_local_expert_recv_stats" in native.LowLatencyDispatchArgs.fields()
    with pytest.raises(TypeError) as e:
        native.LowLatencyDispatchArgs(cum_stats=1)
    assert "cum_stats" in str(e.value) and "cumulative_local_expert_recv_stats" in str(e.value)
    with pytest.raises(TypeError, match="argument field 'num_tokens' expects an int or bool, got str"):
        native.LowLatencyDispatchArgs(num_tokens="3")


def test_argument_structs_find_keywords_built_at_run_time(native):
    """Keywords are found by their interned key object once seen; names built at run time (not interned, a new
    object each time) are found by their text, every time, and never confused with another field."""
    for i in range(200):
        name = "".join(["num_", "tokens"])  # a new str each time
        other = "num_" + "topk"[: 4 - i % 2]  # 'num_topk', then 'num_top' (no such field)
        if i % 2:
            with pytest.raises(TypeError, match="unexpected keyword argument 'num_top'"):
                native.LowLatencyDispatchArgs(**{name: i, other: 1})
            continue
        args = native.LowLatencyDispatchArgs(**{name: i, other: i + 1}, x=i + 2)
        assert (args.num_tokens, args.num_topk, args.x) == (i, i + 1, i + 2)


COMBINE_BAD = [
    (dict(x=torch.zeros(E // R, R * M, H, dtype=torch.float32)), ValueError, ["x", "torch.bfloat16"]),
    (dict(x=torch.zeros(E // R, R * M, H + 128, dtype=torch.bfloat16)), ValueError, ["x", "shape", f"{H}"]),
    (dict(x=torch.zeros(E // R, H, R * M, dtype=torch.bfloat16).transpose(1, 2)), ValueError, ["x", "contiguous"]),
    (dict(topk_idx=torch.zeros(8, K, dtype=torch.float32)), ValueError, ["topk_idx", "torch.int64"]),
    (dict(topk_idx=[1, 2]), TypeError, ["topk_idx", "torch.Tensor"]),
    (dict(topk_idx=torch.zeros(8, dtype=torch.int64)), ValueError, ["topk_idx", "2 dimensions"]),
    (dict(topk_weights=torch.zeros(8, K, dtype=torch.bfloat16)), ValueError, ["topk_weights", "torch.float32"]),
    (dict(topk_weights=torch.zeros(8, K + 1)), ValueError, ["topk_weights", f"[8, {K}]"]),
    (dict(topk_weights=torch.zeros(K, 8).t()), ValueError, ["topk_weights", "contiguous"]),
    (dict(handle=(torch.zeros(E // R, R * M, dtype=torch.int64),) + good_handle()[1:]), ValueError,
     ["src_info", "torch.int32"]),
    (dict(handle=(torch.zeros(E // R, M, dtype=torch.int32),) + good_handle()[1:]), ValueError,
     ["src_info", f"[{E // R}, {R * M}]"]),
    (dict(handle=good_handle()[:1] + (torch.zeros(E // R, R, dtype=torch.int32),) + good_handle()[2:]), ValueError,
     ["layout_range", "torch.int64"]),
    (dict(handle=good_handle()[:1] + (torch.zeros(E // R, R + 1, dtype=torch.int64),) + good_handle()[2:]), ValueError,
     ["layout_range", f"[{E // R}, {R}]"]),
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


@pytest.mark.parametrize("handle, words", [
    (good_handle()[:4], ["handle", "5-tuple"]),
    ("handle", ["handle", "5-tuple"]),
    (good_handle()[:2] + (M, 200.0, E), ["handle[3] (hidden)", "int"]),
    (good_handle()[:2] + (str(M), H, E), ["handle[2] (num_max_dispatch_tokens_per_rank)", "int"]),
    (good_handle()[:2] + (M, H, None), ["handle[4] (num_experts)", "int"]),
])
def test_handle_structure(handle, words):
    with pytest.raises(TypeError) as e:
        V.check_ll_handle("low_latency_combine", handle)
    msg = str(e.value)
    assert msg.startswith("low_latency_combine:"), msg
    for w in words:
        assert w in msg, (w, msg)


def test_handle_sizes_are_the_runtimes(native):
    """A handle whose sizes the runtime rejects: low_latency_layout of its sizes raises, naming the size."""
    for sizes, words in (((M, 200, E), ["hidden", "200"]), ((M, H, 18), ["num_experts", "18"])):
        M_, H_, E_ = V.check_ll_handle("low_latency_combine", good_handle()[:2] + sizes)
        assert_argument_error(native, lambda: layout(native, M=M_, hidden=H_, E=E_), words)


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


def test_mask_status():
    V.check_mask_status("c", torch.zeros(R, dtype=torch.int32), R)
    with pytest.raises(ValueError, match="torch.int32"):
        V.check_mask_status("c", torch.zeros(R, dtype=torch.int64), R)
    with pytest.raises(ValueError, match=rf"\[{R}\]"):
        V.check_mask_status("c", torch.zeros(R + 1, dtype=torch.int32), R)


def test_python_defines_no_value_range_checks():
    """The ranges are the runtime's: _validate keeps no limit and no range check of its own."""
    for name in ("kMaxTopk", "kMaxExpertsPerRank", "kMaxTokensPerRank", "kMinHidden", "kMaxHidden",
                 "kChannelsPerScale", "kUe8m0ChannelsPerInt", "kMaxNormalExperts", "kNormalRowAlign",
                 "check_ll_sizes", "check_ll_buffer_size", "check_nvl_buffer_size", "check_num_experts"):
        assert not hasattr(V, name), name
