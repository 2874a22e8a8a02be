"""`Config`: the tuning knobs of the normal (intranode / internode) kernels, and the buffer sizes they need.

A config has `num_sms / 2` channels. Per (channel, peer) a ring holds up to "recv tokens" tokens and a sender
moves up to "send tokens" per step. Config checks its own knobs; everything else (limits, node size, the size
formula) is the runtime's.

The intranode kernels (src/kernels/intranode.hpp) use the config this way: `num_sms` is the grid of their
push, unpack and reduce kernels, "send tokens" the rows one warp copies per work item. They keep no rings: during a
dispatch the nvl buffer holds the rows this rank receives (about received rows * token_bytes), during a combine the
copies of its own tokens that come back (about the same rows * (hidden * 2 + 64)). The hint, channels * peers *
recv_tokens tokens, covers typical calls (8 ranks, defaults: 20480 tokens or rows). A call whose own sizes need more
raises ArgumentError before any kernel and names the num_nvl_bytes it needs; the rows a rank receives are known only
on the GPU, which checks them before any row is stored and fails the call naming the bytes needed.

The size hints come from uccl.ep._C (the source of truth is src/runtime/size_hints.hpp); they are upper bounds
that hold for every kernel version, not tuned to the byte:
    token_bytes = hidden_bytes + kMaxTopk * (8 + 4) (top-k ids and weights) + ceil(hidden_bytes / 128) * 4 (one
                  float scale per 128 bytes of row, FP8 payloads) + 12 (source index, destination mask),
                  rounded up to 16
    nvl hint    = channels * nvl_peers  * (nvl_recv_tokens  * token_bytes + 64)         rounded up to 128
    rdma hint   = counts + 2 * rdma_nodes * channels * (rdma_recv_tokens * record_bytes + 64)   rounded up to 128
                  (per node a region of send rings and one of receive rings, src/kernels/internode.hpp), where
                  record_bytes = the token record (hidden_bytes + kMaxTopk * 12 + scales + 4, rounded up to 16)
                  plus one int32 position per rank of the node, rounded up to 16, and counts = the counts areas
                  (2 + 2 * num_ranks rows of num_ranks + rdma_nodes * 64 channels and ceil(kMaxNormalExperts /
                  num_ranks) expert ints, each part padded to 4 ints, rounded up to 128); 0 when every rank is an
                  NVLink peer.
`nvl_peers` is min(num_ranks, ranks per node) and `rdma_nodes` is ceil(num_ranks / ranks per node). Ranks per
node comes from the `num_ranks_per_node` argument when positive, else the runtime reads the environment
(UCCL_EP_NORMAL_MNNVL / DEEP_EP_NORMAL_MNNVL: all ranks; UCCL_EP_RANKS_PER_NODE or LOCAL_WORLD_SIZE), else 8.
A hint never wraps: an argument (or knob) past the runtime's integer type (hidden_bytes 64-bit signed, the others
32-bit signed), or a size past 64 bits, raises ArgumentError naming the call and the arguments.
"""
from ._native import native

# Up to this many ranks the default configs take the small steps of one node (a tuning choice, not a limit).
_SMALL_GROUP = 8


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Config: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"Config: {name} must be >= {minimum}, got {value}")
    return value


def _check_hint_types(call: str, **values) -> None:
    """The hint arguments are ints (their values are the runtime's to check)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Config.{call}: {name} must be an int, got {type(value).__name__}")


class Config:
    """Kernel tuning for normal mode; checks itself on construction (ValueError on invalid combinations)."""

    def __init__(self, num_sms: int = 20, num_max_nvl_chunked_send_tokens: int = 6,
                 num_max_nvl_chunked_recv_tokens: int = 256, num_max_rdma_chunked_send_tokens: int = 6,
                 num_max_rdma_chunked_recv_tokens: int = 256):
        _check_int("num_sms", num_sms, 2)
        if num_sms % 2 != 0:
            raise ValueError(f"Config: num_sms must be even (two SMs per channel), got {num_sms}")
        _check_int("num_max_nvl_chunked_send_tokens", num_max_nvl_chunked_send_tokens, 1)
        _check_int("num_max_nvl_chunked_recv_tokens", num_max_nvl_chunked_recv_tokens, 1)
        _check_int("num_max_rdma_chunked_send_tokens", num_max_rdma_chunked_send_tokens, 1)
        _check_int("num_max_rdma_chunked_recv_tokens", num_max_rdma_chunked_recv_tokens, 1)
        if num_max_nvl_chunked_send_tokens >= num_max_nvl_chunked_recv_tokens:
            raise ValueError(
                f"Config: num_max_nvl_chunked_send_tokens ({num_max_nvl_chunked_send_tokens}) must be below "
                f"num_max_nvl_chunked_recv_tokens ({num_max_nvl_chunked_recv_tokens})")
        if num_max_rdma_chunked_send_tokens >= num_max_rdma_chunked_recv_tokens:
            raise ValueError(
                f"Config: num_max_rdma_chunked_send_tokens ({num_max_rdma_chunked_send_tokens}) must be below "
                f"num_max_rdma_chunked_recv_tokens ({num_max_rdma_chunked_recv_tokens})")
        if num_max_rdma_chunked_send_tokens > num_max_rdma_chunked_recv_tokens // 2:
            raise ValueError(
                f"Config: num_max_rdma_chunked_send_tokens ({num_max_rdma_chunked_send_tokens}) must be at most half "
                f"of num_max_rdma_chunked_recv_tokens ({num_max_rdma_chunked_recv_tokens} // 2 = "
                f"{num_max_rdma_chunked_recv_tokens // 2})")
        self.num_sms = num_sms
        self.num_max_nvl_chunked_send_tokens = num_max_nvl_chunked_send_tokens
        self.num_max_nvl_chunked_recv_tokens = num_max_nvl_chunked_recv_tokens
        self.num_max_rdma_chunked_send_tokens = num_max_rdma_chunked_send_tokens
        self.num_max_rdma_chunked_recv_tokens = num_max_rdma_chunked_recv_tokens

    @property
    def num_channels(self) -> int:
        return self.num_sms // 2

    def get_nvl_buffer_size_hint(self, hidden_bytes: int, num_ranks: int, num_ranks_per_node: int = 0) -> int:
        """Bytes of NVLink buffer (num_nvl_bytes) this config needs; see the module docstring for the formula.
        num_ranks_per_node 0 (or None): the node size the runtime reads from the environment."""
        return self._hint("get_nvl_buffer_size_hint", "num_max_nvl_chunked_recv_tokens", hidden_bytes, num_ranks,
                          num_ranks_per_node)

    def get_rdma_buffer_size_hint(self, hidden_bytes: int, num_ranks: int, num_ranks_per_node: int = 0) -> int:
        """Bytes of RDMA buffer (num_rdma_bytes) this config needs in normal mode; 0 when every rank is an NVLink
        peer."""
        return self._hint("get_rdma_buffer_size_hint", "num_max_rdma_chunked_recv_tokens", hidden_bytes, num_ranks,
                          num_ranks_per_node)

    def _hint(self, call: str, recv_tokens: str, hidden_bytes, num_ranks, num_ranks_per_node) -> int:
        """The runtime's size hint `call` (same name in uccl.ep._C) for this config's `recv_tokens` knob."""
        num_ranks_per_node = 0 if num_ranks_per_node is None else num_ranks_per_node
        _check_hint_types(call, hidden_bytes=hidden_bytes, num_ranks=num_ranks, num_ranks_per_node=num_ranks_per_node)
        return int(getattr(native(), call)(num_sms=self.num_sms, hidden_bytes=hidden_bytes, num_ranks=num_ranks,
                                           num_ranks_per_node=num_ranks_per_node,
                                           **{recv_tokens: getattr(self, recv_tokens)}))

    def __repr__(self) -> str:
        return (f"Config(num_sms={self.num_sms}, num_max_nvl_chunked_send_tokens={self.num_max_nvl_chunked_send_tokens}, "
                f"num_max_nvl_chunked_recv_tokens={self.num_max_nvl_chunked_recv_tokens}, "
                f"num_max_rdma_chunked_send_tokens={self.num_max_rdma_chunked_send_tokens}, "
                f"num_max_rdma_chunked_recv_tokens={self.num_max_rdma_chunked_recv_tokens})")

    def __eq__(self, other) -> bool:
        return isinstance(other, Config) and vars(self) == vars(other)


# Records per RDMA write across nodes (num_max_rdma_chunked_send_tokens), for any rank count: a group of few ranks may
# span nodes too (emulated nodes, or one GPU per node). bench/test_internode.py's sweep, 2 nodes over shm, 4096 tokens
# x 7168 (bench/RESULTS.md): chunks of 16 against 6 take 0.75x (FP8 dispatch), 0.71x (BF16 dispatch) and 0.82x
# (combine) of the time; 32 gains 3% more for FP8 and loses 1-2% for BF16.
_RDMA_CHUNK = 16


def default_dispatch_config(num_ranks: int, num_sms: int) -> Config:
    """A sensible dispatch config for any rank count: small NVLink steps within a node, larger ones in bigger
    groups, RDMA writes of _RDMA_CHUNK records across nodes, rings deep enough to keep num_ranks peers busy."""
    _check_int("num_ranks", num_ranks, 1)
    if num_ranks <= _SMALL_GROUP:
        return Config(num_sms, 6, 256, _RDMA_CHUNK, 128)
    return Config(num_sms, 8, 288, _RDMA_CHUNK, 128)


def default_combine_config(num_ranks: int, num_sms: int) -> Config:
    """A sensible combine config for any rank count (combine rows are BF16: smaller NVLink steps than dispatch)."""
    _check_int("num_ranks", num_ranks, 1)
    if num_ranks <= _SMALL_GROUP:
        return Config(num_sms, 6, 256, _RDMA_CHUNK, 128)
    return Config(num_sms, 4, 288, _RDMA_CHUNK, 128)
