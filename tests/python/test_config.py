"""Config: its own checks, the size hints (computed by uccl.ep._C; checked here against the formula in
config.py's docstring, written out again), and Buffer's configs for any rank count."""
import pytest

import uccl.ep as ep
from uccl.ep import Buffer, Config


def _token_bytes(hidden_bytes):  # the formula in config.py's docstring (src/runtime/size_hints.hpp)
    return -(-(hidden_bytes + 16 * 12 + -(-hidden_bytes // 128) * 4 + 12) // 16) * 16


def _align(v):
    return -(-v // 128) * 128


def _up16(v):
    return -(-v // 16) * 16


def _rdma_hint(num_sms, recv_tokens, hidden_bytes, num_ranks, ranks_per_node):
    """config.py's rdma hint, written out again: the counts areas, then per (area, node) the rings of every channel
    (records: the token record at top-k 16, then one int32 position per rank of the node)."""
    nodes = -(-num_ranks // ranks_per_node)
    record = _up16(_up16(hidden_bytes + 16 * 12 + -(-hidden_bytes // 128) * 4 + 4) + 4 * ranks_per_node)
    head = -(-(num_ranks + nodes * 64) // 4) * 4
    experts = -(-(-(-8192 // num_ranks)) // 4) * 4
    counts = _align(2 * (head + num_ranks * experts) * 4 + 2 * num_ranks * (head + experts) * 4)
    return _align(counts + 2 * nodes * (num_sms // 2) * (recv_tokens * record + 64))


@pytest.fixture(autouse=True)
def _no_topology_env(monkeypatch):
    for name in ("UCCL_EP_RANKS_PER_NODE", "LOCAL_WORLD_SIZE", "UCCL_EP_NORMAL_MNNVL", "DEEP_EP_NORMAL_MNNVL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    c = Config()
    assert (c.num_sms, c.num_max_nvl_chunked_send_tokens, c.num_max_nvl_chunked_recv_tokens,
            c.num_max_rdma_chunked_send_tokens, c.num_max_rdma_chunked_recv_tokens) == (20, 6, 256, 6, 256)
    assert c.num_channels == 10
    assert Config(24, 6, 256, 6, 128) == Config(num_sms=24, num_max_rdma_chunked_recv_tokens=128)


@pytest.mark.parametrize("args, words", [
    ((20, 256, 256, 6, 128), ["num_max_nvl_chunked_send_tokens", "below"]),
    ((20, 300, 256, 6, 128), ["num_max_nvl_chunked_send_tokens", "256"]),
    ((20, 6, 256, 128, 128), ["num_max_rdma_chunked_send_tokens", "below"]),
    ((20, 6, 256, 65, 128), ["at most half", "64"]),
    ((21, 6, 256, 6, 128), ["num_sms", "even"]),
    ((0, 6, 256, 6, 128), ["num_sms", ">= 2"]),
    ((-2, 6, 256, 6, 128), ["num_sms"]),
    ((20, 0, 256, 6, 128), ["num_max_nvl_chunked_send_tokens", ">= 1"]),
    ((20, 6, 256, 0, 128), ["num_max_rdma_chunked_send_tokens"]),
])
def test_invalid_combinations(args, words):
    with pytest.raises(ValueError) as e:
        Config(*args)
    for w in words:
        assert w in str(e.value)


def test_rdma_send_exactly_half_is_allowed():
    Config(20, 6, 256, 64, 128)


def test_non_int_is_type_error():
    with pytest.raises(TypeError, match="num_sms"):
        Config(20.0)
    with pytest.raises(TypeError, match="num_sms"):
        Config(True)


@pytest.mark.parametrize("hidden_bytes", [256, 7168 * 2, 4096, 1000])
@pytest.mark.parametrize("num_ranks", [1, 2, 8])
def test_nvl_hint_formula(native, hidden_bytes, num_ranks):
    c = Config(24, 6, 256, 6, 128)
    expected = _align(12 * num_ranks * (256 * _token_bytes(hidden_bytes) + 64))
    assert c.get_nvl_buffer_size_hint(hidden_bytes, num_ranks) == expected
    assert c.get_rdma_buffer_size_hint(hidden_bytes, num_ranks) == 0  # one node
    assert expected % 128 == 0


def test_multi_node_hints(native):
    c = Config(20, 6, 256, 6, 128)
    hb = 7168 * 2
    # 32 ranks, default node size 8: 8 NVLink peers, 4 nodes.
    assert c.get_nvl_buffer_size_hint(hb, 32) == _align(10 * 8 * (256 * _token_bytes(hb) + 64))
    assert c.get_rdma_buffer_size_hint(hb, 32) == _rdma_hint(20, 128, hb, 32, 8)
    # explicit node size, and a partial last node
    assert c.get_rdma_buffer_size_hint(hb, 12, num_ranks_per_node=4) == _rdma_hint(20, 128, hb, 12, 4)
    assert c.get_rdma_buffer_size_hint(hb, 10, num_ranks_per_node=4) == _rdma_hint(20, 128, hb, 10, 4)


def test_hints_follow_topology_env(native, monkeypatch):
    c, hb = Config(), 7168 * 2
    monkeypatch.setenv("UCCL_EP_RANKS_PER_NODE", "2")
    assert c.get_rdma_buffer_size_hint(hb, 8) > 0
    assert c.get_nvl_buffer_size_hint(hb, 8) == c.get_nvl_buffer_size_hint(hb, 2)
    monkeypatch.setenv("UCCL_EP_NORMAL_MNNVL", "1")
    assert c.get_rdma_buffer_size_hint(hb, 72) == 0
    assert c.get_nvl_buffer_size_hint(hb, 72) == _align(10 * 72 * (256 * _token_bytes(hb) + 64))
    monkeypatch.delenv("UCCL_EP_NORMAL_MNNVL")
    monkeypatch.delenv("UCCL_EP_RANKS_PER_NODE")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert c.get_rdma_buffer_size_hint(hb, 8) > 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "zero")
    with pytest.raises(ValueError, match="LOCAL_WORLD_SIZE"):
        c.get_rdma_buffer_size_hint(hb, 8)


def test_hints_monotonic(native):
    c = Config()
    for r in (1, 2, 4, 8, 16, 64):
        assert c.get_nvl_buffer_size_hint(2048, r) <= c.get_nvl_buffer_size_hint(4096, r)
        assert c.get_nvl_buffer_size_hint(2048, r) <= c.get_nvl_buffer_size_hint(2048, r * 2)
        assert c.get_rdma_buffer_size_hint(2048, r) <= c.get_rdma_buffer_size_hint(2048, r * 2)
    assert Config(20, 6, 128, 6, 128).get_nvl_buffer_size_hint(2048, 8) < Config().get_nvl_buffer_size_hint(2048, 8)


@pytest.mark.parametrize("bad, name, value", [((0, 8), "hidden_bytes", "0"), ((-1, 8), "hidden_bytes", "-1"),
                                              ((1024, 0), "num_ranks", "0"), ((1024, 8, -1), "num_ranks_per_node", "-1")])
def test_hint_bad_values_are_argument_errors(native, bad, name, value):
    """The runtime checks the values: ArgumentError (a ValueError) naming the argument and the value."""
    for hint in (Config().get_nvl_buffer_size_hint, Config().get_rdma_buffer_size_hint):
        with pytest.raises(native.ArgumentError) as e:
            hint(*bad)
        assert isinstance(e.value, ValueError) and isinstance(e.value, ep.ArgumentError)
        assert name in str(e.value) and value in str(e.value), str(e.value)


@pytest.mark.parametrize("bad, name", [((1024.0, 8), "hidden_bytes"), ((1024, None), "num_ranks"),
                                       ((True, 8), "hidden_bytes"), ((1024, 8, 2.0), "num_ranks_per_node")])
def test_hint_non_int_is_type_error_before_the_runtime(bad, name):
    """Types are Python's to check: TypeError naming the argument, with or without the native module."""
    for hint in (Config().get_nvl_buffer_size_hint, Config().get_rdma_buffer_size_hint):
        with pytest.raises(TypeError, match=name):
            hint(*bad)


def test_hint_module_functions_take_keywords(native):
    c = Config(24, 6, 256, 6, 128)
    assert native.get_nvl_buffer_size_hint(num_sms=24, num_max_nvl_chunked_recv_tokens=256, hidden_bytes=4096,
                                           num_ranks=8, num_ranks_per_node=4) == c.get_nvl_buffer_size_hint(4096, 8, 4)
    assert native.get_rdma_buffer_size_hint(num_sms=24, num_max_rdma_chunked_recv_tokens=128, hidden_bytes=4096,
                                            num_ranks=8, num_ranks_per_node=4) == c.get_rdma_buffer_size_hint(4096, 8, 4)
    # num_ranks_per_node None is the old spelling of "from the environment" (0)
    assert c.get_nvl_buffer_size_hint(4096, 8, None) == c.get_nvl_buffer_size_hint(4096, 8)


@pytest.mark.parametrize("num_ranks", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 24, 32, 48, 64, 72, 128, 144, 256, 1000])
def test_configs_for_any_rank_count(native, num_ranks):
    for c in (Buffer.get_dispatch_config(num_ranks), Buffer.get_combine_config(num_ranks)):
        assert isinstance(c, Config)
        assert c.num_sms == Buffer.num_sms
        assert c.get_nvl_buffer_size_hint(7168 * 2, num_ranks) > 0


def test_configs_bad_rank_count():
    with pytest.raises(ValueError):
        Buffer.get_dispatch_config(0)
    with pytest.raises(TypeError):
        Buffer.get_combine_config("8")


def test_set_num_sms():
    old = Buffer.num_sms
    try:
        Buffer.set_num_sms(24)
        assert Buffer.num_sms == 24 and ep.Buffer.get_dispatch_config(8).num_sms == 24
        for bad in (23, 0, -2, 2.0, True):
            with pytest.raises(ValueError, match="even"):
                Buffer.set_num_sms(bad)
        assert Buffer.num_sms == 24
    finally:
        Buffer.num_sms = old
