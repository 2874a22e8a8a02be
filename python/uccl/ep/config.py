"""`Config`: the tuning knobs of the normal (intranode / internode) kernels, and the buffer sizes they need.

A config has `num_sms / 2` channels. Per (channel, peer) a ring holds up to "recv tokens" tokens and a sender
moves up to "send tokens" per step. The size hints are upper bounds from the formula below, so that the same
numbers hold for every kernel version; they are not tuned to the byte.

The intranode kernels (src/kernels/intranode.hpp) use the config this way: `num_sms` is the grid of their
pack and pull kernels, "send tokens" the rows one warp copies per work item. They keep no rings: the nvl buffer
holds this rank's own tokens during a dispatch (about num_tokens * token_bytes) and the rows it received during
a combine (about received rows * (hidden * 2 + 64)). The hint below, channels * peers * recv_tokens tokens,
covers typical calls (8 ranks, defaults: 20480 tokens or rows); a call that needs more raises before any kernel
and names the num_nvl_bytes it needs.

Bytes of one token in a ring (`_token_bytes`):
    hidden_bytes                                the row itself (BF16, or FP8 with its scales counted below)
  + 16                                          source metadata (source token index, flags)
  + kMaxTopk * (8 + 4)                          top-k expert ids (int64) and weights (float32), kMaxTopk = 16
  + ceil(hidden_bytes / 128) * 4                one float scale per 128 bytes of row (FP8 payloads)
Per (channel, peer) ring: recv_tokens * token_bytes + 64 bytes of head/tail counters.

  nvl hint  = channels * nvl_peers  * (nvl_recv_tokens  * token_bytes + 64)            rounded up to 128
  rdma hint = channels * rdma_nodes * (rdma_recv_tokens * token_bytes + 64) * 2       rounded up to 128
              (a send and a receive ring per remote node); 0 when every rank is on one node.

`nvl_peers` is min(num_ranks, ranks per node) and `rdma_nodes` is ceil(num_ranks / ranks per node). Ranks per
node comes from the `num_ranks_per_node` argument when given, else UCCL_EP_NORMAL_MNNVL / DEEP_EP_NORMAL_MNNVL
(all ranks), UCCL_EP_RANKS_PER_NODE or LOCAL_WORLD_SIZE, else 8 (DeepEP's node size).
"""
from typing import Optional

from . import utils

kMaxTopk = 16
_COUNTER_BYTES = 64
_DEFAULT_RANKS_PER_NODE = 8


def _align(v: int, a: int = 128) -> int:
    return (v + a - 1) // a * a


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Config: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"Config: {name} must be >= {minimum}, got {value}")
    return value


def _check_hint_args(hidden_bytes, num_ranks) -> None:
    if isinstance(hidden_bytes, bool) or not isinstance(hidden_bytes, int) or hidden_bytes <= 0:
        raise ValueError(f"size hint: hidden_bytes must be a positive int, got {hidden_bytes!r}")
    if isinstance(num_ranks, bool) or not isinstance(num_ranks, int) or num_ranks <= 0:
        raise ValueError(f"size hint: num_ranks must be a positive int, got {num_ranks!r}")


def _token_bytes(hidden_bytes: int) -> int:
    return hidden_bytes + 16 + kMaxTopk * (8 + 4) + (hidden_bytes + 127) // 128 * 4


def _ranks_per_node(num_ranks: int, num_ranks_per_node: Optional[int]) -> int:
    if num_ranks_per_node is not None:
        if isinstance(num_ranks_per_node, bool) or not isinstance(num_ranks_per_node, int) or num_ranks_per_node <= 0:
            raise ValueError(f"size hint: num_ranks_per_node must be a positive int, got {num_ranks_per_node!r}")
        return min(num_ranks_per_node, num_ranks)
    from_env = utils.ranks_per_node_from_env(num_ranks)
    return from_env if from_env is not None else min(_DEFAULT_RANKS_PER_NODE, num_ranks)


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

    def get_nvl_buffer_size_hint(self, hidden_bytes: int, num_ranks: int,
                                 num_ranks_per_node: Optional[int] = None) -> int:
        """Bytes of NVLink buffer (num_nvl_bytes) this config needs; see the module docstring for the formula."""
        _check_hint_args(hidden_bytes, num_ranks)
        peers = _ranks_per_node(num_ranks, num_ranks_per_node)
        per_ring = self.num_max_nvl_chunked_recv_tokens * _token_bytes(hidden_bytes) + _COUNTER_BYTES
        return _align(self.num_channels * peers * per_ring)

    def get_rdma_buffer_size_hint(self, hidden_bytes: int, num_ranks: int,
                                  num_ranks_per_node: Optional[int] = None) -> int:
        """Bytes of RDMA buffer (num_rdma_bytes) this config needs in normal mode; 0 on a single node."""
        _check_hint_args(hidden_bytes, num_ranks)
        rpn = _ranks_per_node(num_ranks, num_ranks_per_node)
        if rpn >= num_ranks:
            return 0
        nodes = (num_ranks + rpn - 1) // rpn
        per_ring = self.num_max_rdma_chunked_recv_tokens * _token_bytes(hidden_bytes) + _COUNTER_BYTES
        return _align(self.num_channels * nodes * per_ring * 2)

    def __repr__(self) -> str:
        return (f"Config(num_sms={self.num_sms}, num_max_nvl_chunked_send_tokens={self.num_max_nvl_chunked_send_tokens}, "
                f"num_max_nvl_chunked_recv_tokens={self.num_max_nvl_chunked_recv_tokens}, "
                f"num_max_rdma_chunked_send_tokens={self.num_max_rdma_chunked_send_tokens}, "
                f"num_max_rdma_chunked_recv_tokens={self.num_max_rdma_chunked_recv_tokens})")

    def __eq__(self, other) -> bool:
        return isinstance(other, Config) and vars(self) == vars(other)


def default_dispatch_config(num_ranks: int, num_sms: int) -> Config:
    """A sensible dispatch config for any rank count: small steps within a node, larger ones across nodes
    (fewer, larger RDMA writes), rings deep enough to keep num_ranks peers busy."""
    _check_int("num_ranks", num_ranks, 1)
    if num_ranks <= _DEFAULT_RANKS_PER_NODE:
        return Config(num_sms, 6, 256, 6, 128)
    return Config(num_sms, 8, 288, 16, 128)


def default_combine_config(num_ranks: int, num_sms: int) -> Config:
    """A sensible combine config for any rank count (combine rows are BF16: smaller steps than dispatch)."""
    _check_int("num_ranks", num_ranks, 1)
    if num_ranks <= _DEFAULT_RANKS_PER_NODE:
        return Config(num_sms, 6, 256, 6, 128)
    return Config(num_sms, 4, 288, 8, 128)
