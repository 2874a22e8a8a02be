"""A one-rank Buffer in low-latency mode on a real GPU (gloo group of world 1): bad input raises before any
kernel runs and leaves the buffer usable; dispatch and combine round-trip; hooks, zero-copy and local tensors.
Skipped, with the reason printed, where no GPU is present."""
import pytest
import torch

pytestmark = pytest.mark.gpu

M, H, E, K = 64, 1024, 8, 4
HAVE_FP8 = getattr(torch, "float8_e4m3fn", None) is not None


@pytest.fixture(scope="module")
def buffer():
    import torch.distributed as dist

    import uccl.ep as ep
    torch.cuda.set_device(0)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    num_rdma_bytes = ep.Buffer.get_low_latency_rdma_size_hint(M, H, 1, E)
    buf = ep.Buffer(dist.group.WORLD, 0, num_rdma_bytes, low_latency_mode=True, explicitly_destroy=True)
    buf.clean_low_latency_buffer(M, H, E)
    try:
        yield buf
    finally:
        buf.destroy()
        dist.destroy_process_group()


def make_inputs(num_tokens=16, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(num_tokens, H, generator=g).to(torch.bfloat16).cuda()
    topk = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(num_tokens)]).cuda()
    topk[0, -1] = -1  # a slot without an expert
    weights = torch.rand(num_tokens, K, generator=g).cuda()
    return x, topk, weights


def check_dispatch(x, topk, recv_x, recv_count, handle):
    src_info, layout_range = handle[0], handle[1]
    expected = torch.bincount(topk[topk >= 0].flatten().cpu(), minlength=E).to(torch.int32)
    assert torch.equal(recv_count.cpu(), expected)
    assert torch.equal((layout_range[:, 0].cpu() & 0xFFFFFFFF).to(torch.int32), expected)
    for e in range(E):
        n = int(expected[e])
        src = src_info[e, :n].long()
        assert sorted(src.tolist()) == sorted((topk == e).any(dim=1).nonzero().flatten().tolist())
        assert torch.equal(recv_x[e, :n], x[src])


def expected_combine(x, topk, weights):
    w = torch.where(topk >= 0, weights, torch.zeros_like(weights))
    return (x.float() * w.sum(dim=1, keepdim=True)).to(torch.bfloat16)


def test_bad_input_raises_and_buffer_stays_usable(buffer):
    x, topk, weights = make_inputs()
    bad_calls = [
        (dict(x=x.float()), "torch.bfloat16"),
        (dict(x=x.cpu()), "CUDA tensor"),
        (dict(topk_idx=topk.int()), "torch.int64"),
        (dict(x=x.t().contiguous().t()), "contiguous"),
        (dict(num_max_dispatch_tokens_per_rank=8), "num_max_dispatch_tokens_per_rank=8"),
        (dict(num_experts=257 * 1, topk_idx=topk), "experts per rank"),
        (dict(x=torch.zeros(16, 2048, dtype=torch.bfloat16, device="cuda")), "too small"),
        (dict(async_finish=True, return_recv_hook=True), "exclude each other"),
    ]
    for over, words in bad_calls:
        args = dict(x=x, topk_idx=topk, num_max_dispatch_tokens_per_rank=M, num_experts=E, use_fp8=False)
        args.update(over)
        with pytest.raises(ValueError, match=None) as e:
            buffer.low_latency_dispatch(**args)
        assert words in str(e.value), (words, str(e.value))
    torch.cuda.synchronize()

    # An expert id out of range is found on the GPU (no host read per call): the call skips the entry, and the next
    # call raises ArgumentError naming the entry and the id, before it launches anything.
    buffer.low_latency_dispatch(x, torch.full_like(topk, E), M, E, use_fp8=False)
    torch.cuda.synchronize()
    with pytest.raises(ValueError, match=f"topk_idx\\[0\\]\\[0\\] holds expert id {E}"):
        buffer.low_latency_dispatch(x, topk, M, E, use_fp8=False)

    recv_x, recv_count, handle, event, hook = buffer.low_latency_dispatch(x, topk, M, E, use_fp8=False)
    assert hook is None
    assert recv_x.shape == (E, M, H) and recv_x.dtype == torch.bfloat16
    check_dispatch(x, topk, recv_x, recv_count, handle)

    with pytest.raises(ValueError, match="topk_weights"):
        buffer.low_latency_combine(recv_x, topk, weights.double(), handle)
    combined, event, hook = buffer.low_latency_combine(recv_x, topk, weights, handle)
    torch.cuda.synchronize()
    torch.testing.assert_close(combined, expected_combine(x, topk, weights), rtol=2e-2, atol=2e-2)


def test_two_rounds_alternate_halves(buffer):
    for seed in (1, 2, 3):
        x, topk, weights = make_inputs(num_tokens=M, seed=seed)
        recv_x, recv_count, handle, _, _ = buffer.low_latency_dispatch(x, topk, M, E, use_fp8=False)
        check_dispatch(x, topk, recv_x, recv_count, handle)
        combined, _, _ = buffer.low_latency_combine(recv_x, topk, weights, handle)
        torch.cuda.synchronize()
        torch.testing.assert_close(combined, expected_combine(x, topk, weights), rtol=2e-2, atol=2e-2)


def test_hooks_and_async(buffer):
    x, topk, weights = make_inputs(seed=4)
    recv_x, recv_count, handle, event, hook = buffer.low_latency_dispatch(x, topk, M, E, use_fp8=False,
                                                                          return_recv_hook=True)
    hook()
    torch.cuda.synchronize()
    check_dispatch(x, topk, recv_x, recv_count, handle)
    out = torch.empty(x.shape, dtype=torch.bfloat16, device="cuda")
    combined, event, hook = buffer.low_latency_combine(recv_x, topk, weights, handle, async_finish=True, out=out)
    event.current_stream_wait()
    assert combined.data_ptr() == out.data_ptr() and hook is None
    torch.cuda.synchronize()
    torch.testing.assert_close(combined, expected_combine(x, topk, weights), rtol=2e-2, atol=2e-2)


def test_zero_copy_combine(buffer):
    x, topk, weights = make_inputs(seed=5)
    recv_x, recv_count, handle, _, _ = buffer.low_latency_dispatch(x, topk, M, E, use_fp8=False)
    view = buffer.get_next_low_latency_combine_buffer(handle)
    assert view.shape == (E, M, H) and view.dtype == torch.bfloat16
    view.copy_(recv_x)
    combined, _, _ = buffer.low_latency_combine(view, topk, weights, handle, zero_copy=True)
    torch.cuda.synchronize()
    torch.testing.assert_close(combined, expected_combine(x, topk, weights), rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(not HAVE_FP8, reason="this torch has no float8_e4m3fn")
def test_fp8_dispatch(buffer):
    x, topk, weights = make_inputs(seed=6)
    (recv_x, scales), recv_count, handle, _, _ = buffer.low_latency_dispatch(x, topk, M, E, use_fp8=True)
    torch.cuda.synchronize()
    assert recv_x.dtype == torch.float8_e4m3fn and scales.shape == (E, M, H // 128)
    assert scales.stride(1) == 1  # column-major in the last two dims
    for e in range(E):
        n = int(recv_count[e])
        src = handle[0][e, :n].long()
        deq = recv_x[e, :n].float().view(n, H // 128, 128) * scales[e, :n].unsqueeze(-1)
        torch.testing.assert_close(deq.view(n, H), x[src].float(), rtol=0.1, atol=0.05)


def test_local_buffer_tensor(buffer):
    t = buffer.get_local_buffer_tensor(torch.int32, (16,), offset=128, use_rdma_buffer=True)
    assert t.device.type == "cuda" and t.shape == (16,)
    with pytest.raises(ValueError, match="exceed"):
        buffer.get_local_buffer_tensor(torch.uint8, (buffer.num_rdma_bytes + 1,), use_rdma_buffer=True)


def test_mask_api_needs_enable_shrink(buffer):
    with pytest.raises(RuntimeError, match="enable_shrink"):
        buffer.low_latency_clean_mask_buffer()
