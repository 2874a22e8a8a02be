"""Buffer without a GPU: every argument check runs before the group or CUDA is touched, the topology comes from
the environment or the group's host names, the mask API names enable_shrink, and the UCCL compatibility calls."""
import pytest
import torch

import uccl.ep as ep
from uccl.ep import Buffer, EventOverlap, utils


class UntouchableGroup:
    """A process group that fails the test if anything asks it a question."""

    def __getattr__(self, name):
        raise AssertionError(f"the group was used ({name}) before the arguments were checked")


G = UntouchableGroup()


@pytest.fixture
def gloo_group(monkeypatch):
    """A one-rank gloo group on this host (CPU only)."""
    import torch.distributed as dist
    for name in ("UCCL_EP_RANKS_PER_NODE", "LOCAL_WORLD_SIZE", "UCCL_EP_NORMAL_MNNVL", "DEEP_EP_NORMAL_MNNVL"):
        monkeypatch.delenv(name, raising=False)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def test_unknown_keyword_is_type_error():
    with pytest.raises(TypeError) as e:
        Buffer(G, 0, 1 << 20, low_latency_mode=True, num_qps_per_rnak=24)
    assert "num_qps_per_rnak" in str(e.value) and "num_qps_per_rank" in str(e.value)


def test_too_many_positionals_is_type_error():
    with pytest.raises(TypeError):
        Buffer(G, 0, 0, False, 24, True, False, False, False, False, None, "extra")


def test_group_or_comm():
    with pytest.raises(TypeError, match="exactly one of group"):
        Buffer()
    with pytest.raises(TypeError, match="exactly one of group"):
        Buffer(G, comm=G)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(num_nvl_bytes=100), ValueError, "num_nvl_bytes"),
    (dict(num_nvl_bytes=-128), ValueError, "num_nvl_bytes"),
    (dict(num_rdma_bytes=129), ValueError, "num_rdma_bytes"),
    (dict(num_rdma_bytes=1.5), TypeError, "num_rdma_bytes"),
    (dict(num_rdma_bytes=True), TypeError, "num_rdma_bytes"),
    (dict(low_latency_mode=1), TypeError, "low_latency_mode"),
    (dict(low_latency_mode=True, num_rdma_bytes=0), ValueError, "num_rdma_bytes > 0"),
    (dict(num_qps_per_rank=0), ValueError, "num_qps_per_rank"),
    (dict(explicitly_destroy="yes"), TypeError, "explicitly_destroy"),
    (dict(enable_shrink=None), TypeError, "enable_shrink"),
    (dict(allow_nvlink_for_low_latency_mode=0), TypeError, "allow_nvlink_for_low_latency_mode"),
    (dict(allow_mnnvl=1), TypeError, "allow_mnnvl"),
    (dict(use_fabric=1), TypeError, "use_fabric"),
])
def test_bad_sizes_and_flags_raise_before_cuda(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        Buffer(G, **kwargs)
    assert not torch.cuda.is_initialized()


def test_positional_order():
    # group, num_nvl_bytes, num_rdma_bytes, low_latency_mode: the fourth positional is low_latency_mode.
    with pytest.raises(ValueError, match="num_rdma_bytes > 0"):
        Buffer(G, 0, 0, True)


def test_constructor_reaches_cuda_with_gloo_group(gloo_group):
    """A valid call gets through the group (rank, size, host names) and stops only where it needs CUDA."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/python/gpu builds real buffers")
    with pytest.raises((RuntimeError, ImportError)) as e:
        Buffer(gloo_group, 0, 1 << 20, low_latency_mode=True)
    assert "CUDA" in str(e.value) or "_C" in str(e.value)


def test_constructor_accepts_mpi_style_comm(monkeypatch):
    class Comm:
        def Get_rank(self):
            return 0

        def Get_size(self):
            return 1

        def allgather(self, obj):
            return [obj]

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this test only follows the CPU path")
    monkeypatch.setenv("UCCL_EP_RANKS_PER_NODE", "1")
    with pytest.raises((RuntimeError, ImportError)):
        Buffer(comm=Comm(), num_rdma_bytes=1 << 20, low_latency_mode=True)


def test_ranks_per_node_from_env(monkeypatch):
    for name in ("UCCL_EP_RANKS_PER_NODE", "LOCAL_WORLD_SIZE", "UCCL_EP_NORMAL_MNNVL", "DEEP_EP_NORMAL_MNNVL"):
        monkeypatch.delenv(name, raising=False)
    assert utils.ranks_per_node_from_env(16) is None
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert utils.ranks_per_node_from_env(16) == 8
    monkeypatch.setenv("UCCL_EP_RANKS_PER_NODE", "2")  # wins over LOCAL_WORLD_SIZE
    assert utils.ranks_per_node_from_env(16) == 2
    assert utils.ranks_per_node_from_env(1) == 1
    monkeypatch.setenv("DEEP_EP_NORMAL_MNNVL", "1")
    assert utils.ranks_per_node_from_env(16) == 16
    monkeypatch.delenv("DEEP_EP_NORMAL_MNNVL")
    monkeypatch.setenv("UCCL_EP_NORMAL_MNNVL", "1")
    assert utils.ranks_per_node_from_env(16) == 16
    monkeypatch.delenv("UCCL_EP_NORMAL_MNNVL")
    monkeypatch.setenv("UCCL_EP_RANKS_PER_NODE", "-3")
    with pytest.raises(ValueError, match="UCCL_EP_RANKS_PER_NODE"):
        utils.ranks_per_node_from_env(16)


def test_ranks_per_node_from_hosts():
    assert utils.ranks_per_node_from_hosts(["a"], 0) == 1
    assert utils.ranks_per_node_from_hosts(["a", "a", "b", "b"], 3) == 2
    assert utils.ranks_per_node_from_hosts(["a", "b", "c"], 1) == 1
    with pytest.raises(RuntimeError, match="contiguous"):
        utils.ranks_per_node_from_hosts(["a", "b", "a", "b"], 0)
    with pytest.raises(RuntimeError, match="UCCL_EP_RANKS_PER_NODE"):
        utils.ranks_per_node_from_hosts(["a", "a", "b"], 0)


def _bare_buffer(**attrs):
    """A Buffer object as the constructor leaves it, without a runtime (for checks that come first)."""
    b = Buffer.__new__(Buffer)
    b._runtime = None
    b.group_size, b.rank, b.low_latency_mode, b.enable_shrink = 4, 0, True, False
    b.__dict__.update(attrs)
    return b


def test_mask_api_needs_enable_shrink():
    b = _bare_buffer()
    for call in (lambda: b.low_latency_update_mask_buffer(1, True), lambda: b.low_latency_query_mask_buffer(
            torch.zeros(4, dtype=torch.int32)), lambda: b.low_latency_clean_mask_buffer()):
        with pytest.raises(RuntimeError, match="enable_shrink"):
            call()


def test_calls_on_destroyed_buffer():
    b = _bare_buffer(enable_shrink=True)
    with pytest.raises(RuntimeError, match="destroyed"):
        b.low_latency_clean_mask_buffer()
    with pytest.raises(RuntimeError, match="destroyed"):
        b.low_latency_dispatch(None, None, 128, 16)


def test_destroy_needs_explicitly_destroy():
    with pytest.raises(RuntimeError, match="explicitly_destroy"):
        _bare_buffer(explicitly_destroy=False).destroy()


def test_initialize_and_destroy_uccl():
    proxies, workers = ep.initialize_uccl(None, 1 << 20, 0, 2, None, 16)
    ep.destroy_uccl(proxies, workers)
    with pytest.raises(ValueError, match="rank"):
        ep.initialize_uccl(None, 1 << 20, 2, 2, None, 16)
    with pytest.raises(TypeError, match="num_rdma_bytes"):
        ep.initialize_uccl(None, "1M", 0, 2, None, 16)
    with pytest.raises(TypeError, match="scratch"):
        ep.initialize_uccl([0], 1 << 20, 0, 2, None, 16)
    with pytest.raises(TypeError):
        ep.destroy_uccl(None, None)


def test_event_overlap_without_event():
    ev = EventOverlap(None, extra_tensors=[torch.zeros(1)])
    assert len(ev.extra_tensors) == 1
    with ev:
        pass
    with pytest.raises(RuntimeError, match="no event"):
        ev.current_stream_wait()


def test_static_helpers_without_gpu(native):
    assert Buffer.get_low_latency_rdma_size_hint(128, 7168, 8, 256) == native.get_low_latency_rdma_size_hint(
        128, 7168, 8, 256)
    assert Buffer.is_sm90_compiled() == native.has_cuda()
