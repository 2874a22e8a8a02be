"""Buffer without a GPU: every type check runs before the group or CUDA is touched, the constructor hands the
runtime every rank's host identity and its arguments by name (a stand-in Runtime), and the UCCL compatibility
calls. Size values (multiples of 128, low_latency_mode needing num_rdma_bytes) are the runtime's ArgumentError."""
import types

import pytest
import torch

import uccl.ep as ep
from uccl.ep import Buffer, EventOverlap, utils
from uccl.ep import _low_latency as ll_module
from uccl.ep import buffer as buffer_module


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
    (dict(num_nvl_bytes=100.0), TypeError, "num_nvl_bytes"),
    (dict(num_rdma_bytes=1.5), TypeError, "num_rdma_bytes"),
    (dict(num_rdma_bytes=True), TypeError, "num_rdma_bytes"),
    (dict(low_latency_mode=1), TypeError, "low_latency_mode"),
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
    # group, num_nvl_bytes, num_rdma_bytes, low_latency_mode, num_qps_per_rank, allow_nvlink_for_low_latency_mode
    with pytest.raises(TypeError, match="low_latency_mode"):
        Buffer(G, 0, 0, 1)
    with pytest.raises(ValueError, match="num_qps_per_rank"):
        Buffer(G, 0, 0, False, 0)
    with pytest.raises(TypeError, match="allow_nvlink_for_low_latency_mode"):
        Buffer(G, 0, 0, False, 24, 1)


def test_constructor_reaches_cuda_with_gloo_group(gloo_group):
    """A valid call stops where it needs CUDA (the runtime), with a message that says so."""
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
    with pytest.raises((RuntimeError, ImportError)):
        Buffer(comm=Comm(), num_rdma_bytes=1 << 20, low_latency_mode=True)


def test_utils_parses_no_environment():
    """Node size and MNNVL are the runtime's decision (from host ids and the environment): Python parses neither."""
    for name in ("env_flag", "env_positive_int", "mnnvl_enabled", "ranks_per_node_from_env",
                 "ranks_per_node_from_hosts"):
        assert not hasattr(utils, name), name


class RecordingRuntime:
    """A stand-in for _C.Runtime that records its constructor's keyword arguments (keywords only, as the real
    one is called)."""

    made = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        RecordingRuntime.made.append(self)

    def local_info(self):
        return b"info"

    def connect(self, *, infos):
        self.infos = infos

    topo = types.SimpleNamespace(num_nodes=1, ranks_per_node=2, nvl_domain_spans_nodes=False)

    def topology(self):
        return self.topo

    def check_errors(self):
        pass

    def destroy(self):
        pass


class FakeNative:
    """The module surface the constructor reads: has_cuda, local_host_id, timeout_secs, Runtime."""
    Runtime = RecordingRuntime

    @staticmethod
    def has_cuda():
        return True

    @staticmethod
    def timeout_secs():
        return 5.0

    @staticmethod
    def local_host_id():
        return "host-a:boot-1"


@pytest.mark.parametrize("flags", [dict(), dict(allow_mnnvl=True, use_fabric=True, enable_shrink=True,
                                                allow_nvlink_for_low_latency_mode=False, num_qps_per_rank=3)])
def test_constructor_hands_host_ids_and_flags_to_the_runtime(monkeypatch, flags):
    from test_intranode_fake import install_fake_cuda
    install_fake_cuda(monkeypatch.setattr)
    monkeypatch.setattr(buffer_module, "native", lambda: FakeNative)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    gathered = []

    class Comm:  # rank 1 of 2; the peer's host differs
        def Get_rank(self):
            return 1

        def Get_size(self):
            return 2

        def allgather(self, obj):
            gathered.append(obj)
            return ["host-b:boot-9", obj] if isinstance(obj, str) else [b"peer", obj]

        def Ibarrier(self):  # the barrier after connect: the others have arrived
            return types.SimpleNamespace(Test=lambda: True, Wait=lambda: None)

    RecordingRuntime.made.clear()
    buf = Buffer(comm=Comm(), num_nvl_bytes=1 << 20, num_rdma_bytes=256, low_latency_mode=True, **flags)
    rt, = RecordingRuntime.made
    assert gathered[0] == "host-a:boot-1"  # _C.local_host_id(), not the host name
    want = dict(allow_nvlink_for_low_latency_mode=True, allow_mnnvl=False, use_fabric=False, enable_shrink=False)
    want.update({k: v for k, v in flags.items() if k != "num_qps_per_rank"})
    assert rt.kwargs == dict(rank=1, num_ranks=2, device=3, host_ids=["host-b:boot-9", "host-a:boot-1"],
                             num_nvl_bytes=1 << 20, num_rdma_bytes=256, low_latency_mode=True, **want)
    assert rt.infos == [b"peer", b"info"]
    assert buf.topology is RecordingRuntime.topo
    assert (buf.rank, buf.group_size, buf.num_nvl_bytes, buf.num_rdma_bytes, buf.low_latency_mode) == (
        1, 2, 1 << 20, 256, True)
    assert not hasattr(buf, "num_qps_per_rank") and not hasattr(buf, "ranks_per_node")
    buf._runtime = None


def _bare_buffer(**attrs):
    """A Buffer object as the constructor leaves it, without a runtime (for checks that come first)."""
    b = Buffer.__new__(Buffer)
    b._runtime = None
    b.group_size, b.rank, b.low_latency_mode, b.enable_shrink = 4, 0, True, False
    b.__dict__.update(attrs)
    return b


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
        num_max_dispatch_tokens_per_rank=128, hidden=7168, num_ranks=8, num_experts=256)
    assert Buffer.is_sm90_compiled() == native.has_cuda()


class _QuietRuntime:
    """A runtime stand-in that records nothing and has nothing recorded."""

    def check_errors(self):
        pass

    def nvl_buffer_ptr(self):
        raise AssertionError("the offset was not checked before the buffer was touched")


def _quiet_buffer(**attrs) -> Buffer:
    b = Buffer.__new__(Buffer)
    b.__dict__.update(dict(_runtime=_QuietRuntime(), num_nvl_bytes=1 << 20, num_rdma_bytes=0,
                           device=torch.device("cpu")), **attrs)
    return b


class _UntouchableRuntime:
    """A runtime stand-in that fails the test when a call reaches it at all (a recorded-error check included)."""

    def __getattr__(self, name):
        raise AssertionError(f"get_local_buffer_tensor reached the runtime ({name}) before checking its arguments")


@pytest.mark.parametrize("dtype, offset", [(torch.float32, 2), (torch.int64, 4), (torch.bfloat16, 1),
                                           (torch.float64, 1 << 19 | 4)])
def test_local_buffer_tensor_refuses_misaligned_offsets(dtype, offset):
    with pytest.raises(ep.ArgumentError, match=f"get_local_buffer_tensor: offset {offset} is not a multiple"):
        _quiet_buffer(_runtime=_UntouchableRuntime()).get_local_buffer_tensor(dtype, (4,), offset=offset)


@pytest.mark.parametrize("size, offset, rdma, name", [
    ((4,), -16, False, "offset -16 is outside the NVLink buffer of 1048576 bytes"),
    ((4,), (1 << 20) + 16, False, "offset 1048592 is outside the NVLink buffer"),
    ((4,), 16, True, "offset 16 is outside the RDMA buffer of 0 bytes"),
    ((1 << 18,), 16, False, r"size \(262144,\) of torch.float32 \(1048576 bytes\) at offset 16 exceeds"),
    ((1 << 18, 1), 0, False, None),  # the whole buffer: fits
    ((2 ** 31, 2 ** 31), 0, False, r"size \(2147483648, 2147483648\)"),
    ((-1,), 0, False, r"size\[0\] must be >= 0, got -1"),
    ((4, -4), 0, False, r"size\[1\] must be >= 0, got -4"),
])
def test_local_buffer_tensor_refuses_what_does_not_fit_before_touching_the_buffer(size, offset, rdma, name):
    b = _quiet_buffer(_runtime=_UntouchableRuntime())
    if name is None:
        with pytest.raises(AssertionError, match="reached the runtime"):  # valid: the call goes on to the runtime
            b.get_local_buffer_tensor(torch.float32, size, offset=offset, use_rdma_buffer=rdma)
        return
    with pytest.raises(ep.ArgumentError, match="get_local_buffer_tensor: " + name):
        b.get_local_buffer_tensor(torch.float32, size, offset=offset, use_rdma_buffer=rdma)


@pytest.mark.parametrize("kwargs, name", [(dict(dtype="float32"), "dtype"), (dict(size=4), "size"),
                                          (dict(size=(4.0,)), r"size\[0\]"), (dict(offset=16.0), "offset")])
def test_local_buffer_tensor_argument_types(kwargs, name):
    args = dict(dtype=torch.float32, size=(4,), offset=0) | kwargs
    with pytest.raises(TypeError, match=f"get_local_buffer_tensor: {name} must be"):
        _quiet_buffer(_runtime=_UntouchableRuntime()).get_local_buffer_tensor(**args)


def test_receive_hook_runs_once(monkeypatch):
    monkeypatch.setattr(ll_module, "_current_stream", lambda device_index: 77)
    ran = []
    hook = ll_module._RecvHook(_quiet_buffer(), ran.append, (torch.zeros(1),))
    hook()
    assert ran == [77]
    with pytest.raises(RuntimeError, match="already ran"):
        hook()
    assert ran == [77]  # the native receive half was not launched again


def test_a_second_thread_inside_a_call_raises_instead_of_racing():
    """One thread is held inside get_local_buffer_tensor (in the runtime); another thread's call on the same Buffer
    raises at once, and works again once the first call has returned."""
    import threading

    entered, release = threading.Event(), threading.Event()

    class HeldRuntime(_QuietRuntime):
        def nvl_buffer_ptr(self):
            entered.set()
            release.wait(10)
            raise RuntimeError("held call ends")  # no device memory on the CPU: the first call ends here

    b = _quiet_buffer(_runtime=HeldRuntime(), _call_lock=threading.Lock())
    first = []

    def hold():
        try:
            b.get_local_buffer_tensor(torch.float32, (4,))
        except RuntimeError as e:
            first.append(str(e))

    t = threading.Thread(target=hold)
    t.start()
    assert entered.wait(10)
    with pytest.raises(RuntimeError, match="another thread is inside a call on this Buffer"):
        b.get_local_buffer_tensor(torch.float32, (4,))
    with pytest.raises(RuntimeError, match="another thread is inside a call"):
        ll_module._RecvHook(b, lambda stream: None, ())()
    release.set()
    t.join(10)
    assert first == ["held call ends"]
    with pytest.raises(ValueError, match="not a multiple"):  # the lock is free again: the call runs (and checks)
        b.get_local_buffer_tensor(torch.float32, (4,), offset=2)


def test_enable_shrink_on_a_normal_mode_buffer_warns_that_normal_calls_do_not_mask(monkeypatch):
    """Before CUDA or the group is touched: the warning, then the CPU build's refusal (no runtime here)."""
    monkeypatch.setattr(buffer_module, "native", lambda: types.SimpleNamespace(has_cuda=lambda: False))
    with pytest.warns(UserWarning, match="normal-mode dispatch and combine do not mask ranks yet"):
        with pytest.raises(RuntimeError, match="without CUDA"):
            Buffer(G, 1 << 20, 0, low_latency_mode=False, enable_shrink=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a low-latency Buffer with enable_shrink, or normal mode without it: silent
        for kwargs in (dict(low_latency_mode=True, enable_shrink=True), dict(enable_shrink=False)):
            with pytest.raises(RuntimeError, match="without CUDA"):
                Buffer(G, 1 << 20, 1 << 20, **kwargs)
