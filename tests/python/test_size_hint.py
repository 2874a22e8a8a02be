"""The low-latency size hint and layout through _C, against an independent reading of ll_layout.hpp's comment:
two halves, each a receive region (dispatch messages and combine rows share it) and a send region, each region
[E][M] slots of max(message, row), every region start and the half rounded up to 128; a message = 16-byte header +
max(BF16 row, FP8 row + one float per 128 channels), a row = max(BF16 row, 168 bytes of logfmt per 128 channels),
both rounded up to 16. The hint is no larger than DeepEP's for the same shape, and rejects what a call rejects."""
import pytest

import uccl.ep as ep
from uccl.ep import _validate as V
from uccl.ep import config as C


def up(v, a):
    return -(-v // a) * a


def expected_layout(M, hidden, R, E):
    msg = up(16 + max(2 * hidden, hidden + hidden // 128 * 4), 16)
    row = up(max(2 * hidden, hidden // 128 * (8 + 160)), 16)
    region = E * M * max(msg, row)
    send = up(region, 128)
    half = up(send + region, 128)
    return dict(msg_bytes=msg, row_bytes=row, dispatch_recv_off=0, combine_recv_off=0, send_off=send,
                half_bytes=half, total_bytes=2 * half, experts_per_rank=E // R, dispatch_count_index=R,
                combine_flag_index=R + E, signals_per_half=R + 2 * E)  # after the R clean epoch words


def deep_ep_hint(M, hidden, E):
    """DeepEP's get_low_latency_rdma_size_hint (csrc/config.hpp): per half a send buffer of max(M * msg,
    E * M * combine_msg) and a receive buffer of max(E * M * msg, E * M * combine_msg), msg = 16 + max(BF16 row,
    FP8 row + a float per 128 channels), combine_msg = BF16 row + 4 bytes of min/max per 128 channels (logfmt);
    two halves, two signal buffers of E ints rounded up to 128 (newer versions hold more), then 128 more."""
    scales = hidden // 128
    msg = 16 + max(2 * hidden, hidden + scales * 4)
    combine_msg = 2 * hidden + scales * 4
    send = max(M * msg, E * M * combine_msg)
    recv = max(E * M * msg, E * M * combine_msg)
    total = 2 * (send + recv + up(E * 4, 128))
    return (total + 128) // 128 * 128


CASES = [(128, 7168, 8, 256), (1, 128, 1, 1), (256, 4096, 16, 128), (1024, 8192, 2, 128), (37, 1152, 3, 6),
         (64, 2048, 32, 1024), (128, 7168, 1, 64)]


@pytest.mark.parametrize("M, hidden, R, E", CASES)
def test_hint_matches_independent_formula(native, M, hidden, R, E):
    exp = expected_layout(M, hidden, R, E)
    assert native.get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank=M, hidden=hidden, num_ranks=R,
                                                 num_experts=E) == exp["total_bytes"]
    assert ep.get_low_latency_rdma_size_hint(M, hidden, R, E) == exp["total_bytes"]
    assert ep.Buffer.get_low_latency_rdma_size_hint(M, hidden, R, E) == exp["total_bytes"]
    layout = native.low_latency_layout(num_max_dispatch_tokens_per_rank=M, hidden=hidden, num_ranks=R, num_experts=E)
    for k, v in exp.items():
        assert getattr(layout, k) == v, k
    assert (layout.num_ranks, layout.num_experts, layout.max_tokens, layout.hidden) == (R, E, M, hidden)
    assert layout.total_bytes % 128 == 0


def test_hint_is_monotonic_and_aligned(native):
    base = (64, 2048, 8, 64)
    def hint(M, hidden, R, E):
        return native.get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank=M, hidden=hidden, num_ranks=R,
                                                     num_experts=E)

    assert hint(*base) % 128 == 0
    for i, bigger in enumerate([128, 4096, 16, 128]):
        args = list(base)
        args[i] = bigger
        assert hint(*args) >= hint(*base), args
        assert hint(*args) % 128 == 0
    for M in range(1, 200, 17):
        for hidden in range(128, 2048, 384):
            assert hint(M, hidden, 4, 16) < hint(M + 1, hidden, 4, 16)
            assert hint(M, hidden, 4, 16) < hint(M, hidden + 128, 4, 16)


def test_receive_views_coincide_and_regions_do_not_overlap(native):
    for M, hidden, R, E in CASES:
        layout = native.low_latency_layout(num_max_dispatch_tokens_per_rank=M, hidden=hidden, num_ranks=R,
                                           num_experts=E)
        # dispatch_recv [E_local][R][M] messages and combine_recv [E][M] rows: one region, by design.
        assert layout.dispatch_recv_off == layout.combine_recv_off == 0
        recv_end = max(E * M * layout.msg_bytes, E * M * layout.row_bytes)
        assert recv_end <= layout.send_off < recv_end + 128 and layout.send_off % 128 == 0
        send_end = layout.send_off + max(E * M * layout.msg_bytes, E * M * layout.row_bytes)
        assert send_end <= layout.half_bytes < send_end + 128


@pytest.mark.parametrize("R", [2, 8, 16])
def test_hint_for_deepseek_decode_is_no_larger_than_deep_eps(R):
    hint = ep.Buffer.get_low_latency_rdma_size_hint(128, 7168, R, 288)
    assert hint == 2116288512
    assert hint <= deep_ep_hint(128, 7168, 288) == 2146961792
    assert hint <= 2 ** 31


@pytest.mark.parametrize("hidden", [2048, 2560, 3072, 4096, 5120, 6144, 7168, 8192])  # DeepEP's low-latency sizes
def test_hint_is_no_larger_than_deep_eps(hidden):
    for M in (1, 7, 128, 1024):
        for R in (1, 2, 8, 16, 32):
            for E in (R, 8 * R, 36 * R):
                assert ep.get_low_latency_rdma_size_hint(M, hidden, R, E) <= deep_ep_hint(M, hidden, E), (M, R, E)


@pytest.mark.parametrize("bad, name", [((0, 7168, 8, 256), "num_max_dispatch_tokens_per_rank"),
                                       ((1025, 7168, 8, 256), "num_max_dispatch_tokens_per_rank"),
                                       ((128, 0, 8, 256), "hidden"), ((128, 100, 8, 256), "hidden"),
                                       ((128, 16384, 8, 256), "hidden"), ((128, 7168 + 64, 8, 256), "hidden"),
                                       ((128, 7168, 0, 256), "num_ranks"), ((128, 7168, 8, -1), "num_experts"),
                                       ((128, 7168, 16, 289), "num_experts"),
                                       ((128, 7168, 2, 514), "num_experts / num_ranks")])
def test_hint_rejects_what_a_call_rejects(native, bad, name):
    kwargs = dict(zip(("num_max_dispatch_tokens_per_rank", "hidden", "num_ranks", "num_experts"), bad))
    with pytest.raises(native.ArgumentError) as e:
        native.get_low_latency_rdma_size_hint(**kwargs)
    assert isinstance(e.value, ValueError)
    assert "get_low_latency_rdma_size_hint" in str(e.value) and name in str(e.value), str(e.value)
    for hint in (ep.get_low_latency_rdma_size_hint, ep.Buffer.get_low_latency_rdma_size_hint):
        with pytest.raises(ep.ArgumentError, match=name.replace("/", ".")):
            hint(*bad)
    with pytest.raises(native.ArgumentError, match=name.replace("/", ".")):
        native.low_latency_layout(**kwargs)


LIMITS = dict(kMaxTopk=16, kChannelsPerScale=128, kUe8m0ChannelsPerInt=512, kRowAlign=16, kBufferSizeUnit=128,
              kMaxExpertsPerRank=256, kMaxTokensPerRank=1024, kMinHidden=128, kMaxHidden=8192, kMaxNormalExperts=8192,
              kMaxNvlRanks=1024, kHeaderBytes=16, kLogfmtGroupBytes=168)


def test_limits_come_from_native_only(native):
    for name, value in LIMITS.items():
        assert getattr(native, name) == value, name
        for module in (V, C):  # Python defines no limit: a second definition could drift from the kernels'
            assert not hasattr(module, name), (module.__name__, name)


@pytest.mark.parametrize("fn, kwargs", [
    ("get_nvl_buffer_size_hint", dict(num_sms=20, num_max_nvl_chunked_recv_tokens=256, hidden_bytes=2 ** 62,
                                      num_ranks=8)),
    ("get_rdma_buffer_size_hint", dict(num_sms=2 ** 30, num_max_rdma_chunked_recv_tokens=2 ** 30,
                                       hidden_bytes=2 ** 40, num_ranks=2 ** 20, num_ranks_per_node=1)),
])
def test_size_hints_raise_instead_of_wrapping(native, fn, kwargs):
    with pytest.raises(native.ArgumentError, match="overflows 64 bits"):
        getattr(native, fn)(**kwargs)


@pytest.fixture
def one_node_of_eight(monkeypatch):
    """The node size from nothing in the environment: 8 ranks per node."""
    for name in ("UCCL_EP_RANKS_PER_NODE", "LOCAL_WORLD_SIZE", "UCCL_EP_NORMAL_MNNVL", "DEEP_EP_NORMAL_MNNVL"):
        monkeypatch.delenv(name, raising=False)


CONFIG_HINTS = [("get_nvl_buffer_size_hint", "num_max_nvl_chunked_recv_tokens"),
                ("get_rdma_buffer_size_hint", "num_max_rdma_chunked_recv_tokens")]


@pytest.mark.parametrize("call, recv", CONFIG_HINTS)
@pytest.mark.parametrize("name, value", [("hidden_bytes", 2 ** 63), ("hidden_bytes", 2 ** 64 + 7168),
                                         ("num_ranks", 2 ** 31), ("num_ranks", 2 ** 63),
                                         ("num_ranks_per_node", 2 ** 31), ("num_ranks_per_node", -2 ** 63 - 1)])
def test_config_hints_name_an_argument_too_large_for_the_runtime(one_node_of_eight, call, recv, name, value):
    """A value past the runtime's integer type is ArgumentError naming the call and the argument (not the binding's
    TypeError that names neither, and never a wrapped value)."""
    args = dict(hidden_bytes=7168, num_ranks=16, num_ranks_per_node=0)
    args[name] = value
    with pytest.raises(ep.ArgumentError, match=f"^{call}: {name} must be within .*, got {value}$"):
        getattr(ep.Config(), call)(**args)


@pytest.mark.parametrize("call, recv", CONFIG_HINTS)
def test_config_hints_name_a_config_knob_too_large_for_the_runtime(one_node_of_eight, call, recv):
    huge = ep.Config(2 ** 31, 6, 2 ** 31, 6, 2 ** 31)  # Config itself sets no upper bound
    with pytest.raises(ep.ArgumentError, match=f"^{call}: num_sms must be within"):
        getattr(huge, call)(7168, 16)
    knobs = ep.Config(20, 6, 2 ** 31, 6, 2 ** 31)
    with pytest.raises(ep.ArgumentError, match=f"^{call}: {recv} must be within .*, got 2147483648$"):
        getattr(knobs, call)(7168, 16)


@pytest.mark.parametrize("call, recv", CONFIG_HINTS)
def test_config_hints_near_two_to_the_63_name_what_overflows(one_node_of_eight, call, recv):
    c = ep.Config()
    for hidden_bytes in (2 ** 63 - 1, 2 ** 62):
        with pytest.raises(ep.ArgumentError, match=f"^{call}: hidden_bytes={hidden_bytes} with {recv}=256 is out of "
                                                   f"range: .* overflows 64 bits"):
            getattr(c, call)(hidden_bytes, 16)
    wide = ep.Config(2 ** 31 - 2, 6, 256, 6, 256)  # each ring fits; channels x rings do not
    with pytest.raises(ep.ArgumentError, match=f"^{call}: the size overflows 64 bits: .*num_sms=2147483646.*"
                                               f"hidden_bytes={2 ** 62 // 256}, {recv}=256"):
        getattr(wide, call)(2 ** 62 // 256, 16)


def test_rdma_hint_for_two_to_the_31_minus_1_ranks_counts_the_nodes_without_wrapping(one_node_of_eight):
    """ceil(num_ranks / 8) nodes for num_ranks = INT_MAX: the sum num_ranks + 7 must not wrap to a negative count;
    every rank holds a counts row of every rank (src/kernels/internode.hpp), which at that size is past 64 bits: an
    ArgumentError naming num_ranks and the node count, never a wrapped size."""
    c = ep.Config()
    nodes = -(-(2 ** 31 - 1) // 8)
    with pytest.raises(ep.ArgumentError, match=f"overflows 64 bits: the counts areas of num_ranks=2147483647 in "
                                               f"{nodes} nodes"):
        c.get_rdma_buffer_size_hint(7168, 2 ** 31 - 1)
    assert c.get_rdma_buffer_size_hint(7168, 2 ** 12) > c.get_rdma_buffer_size_hint(7168, 2 ** 11)
    assert c.get_nvl_buffer_size_hint(7168, 2 ** 31 - 1) == up(10 * 8 * C_ring_bytes(7168, 256), 128)


def C_ring_bytes(hidden_bytes, recv_tokens):
    """One ring of config.py's formula: recv_tokens records of token_bytes, plus 64 bytes of counters."""
    token = up(hidden_bytes + 16 * (8 + 4) + -(-hidden_bytes // 128) * 4 + 12, 16)
    return recv_tokens * token + 64


@pytest.mark.parametrize("position, name", enumerate(("num_max_dispatch_tokens_per_rank", "hidden", "num_ranks",
                                                       "num_experts")))
@pytest.mark.parametrize("value", [2 ** 31, 2 ** 63, -2 ** 31 - 1])
def test_low_latency_hint_names_an_argument_too_large_for_the_runtime(position, name, value):
    args = [128, 7168, 8, 256]
    args[position] = value
    for hint in (ep.get_low_latency_rdma_size_hint, ep.Buffer.get_low_latency_rdma_size_hint):
        with pytest.raises(ep.ArgumentError, match=f"^get_low_latency_rdma_size_hint: {name} must be within .*, "
                                                   f"got {value}$"):
            hint(*args)
    args[position] = 2 ** 31 - 1  # fits the type: the runtime's own limit names it
    with pytest.raises(ep.ArgumentError, match=f"get_low_latency_rdma_size_hint: .*{name}"):
        ep.Buffer.get_low_latency_rdma_size_hint(*args)
