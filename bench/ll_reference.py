"""Pure-torch references for the low-latency mode (CPU or GPU tensors; torch 1.13 and later).

What `low_latency_dispatch` must produce on a receiving rank, given every rank's `topk_idx`:
  - recv_count [E_local]: rows per local expert;
  - the rows of local expert e: every (src_rank, src_token) whose top-k holds e, ordered by source rank, then by
    source token. The contract leaves the order free; uccl-ep fixes it (a token's slot at expert e is the number
    of earlier tokens at its source that picked e, and sources are laid out in rank order), so the checks are
    exact;
  - layout_range [E_local, R] = (begin << 32) | count, begin of source s = rows of sources < s.
Also: the top-k-weighted combine, the per-128-channel FP8 cast (float scales, power-of-two scales, UE8M0
packing), an FP8 e4m3 rounding that needs no float8 dtype, DeepEP's `calc_diff`, and the row encoding the
benchmark uses to recognise every received row's source rank and token exactly, even through FP8.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

CHANNELS_PER_SCALE = 128
FP8_E4M3_MAX = 448.0
AMAX_FLOOR = 1e-4


# ---------------------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ExpectedLayout:
    """What one receiving rank must see (CPU tensors)."""

    rank: int
    num_ranks: int
    num_experts: int
    recv_count: torch.Tensor  # int32 [E_local]
    counts: torch.Tensor  # int64 [E_local, R]: rows from each source (layout_range's count)
    begins: torch.Tensor  # int64 [E_local, R]: first row of each source (layout_range's begin)
    src_rank: List[torch.Tensor]  # per local expert: int64 [recv_count[e]], in row order
    src_token: List[torch.Tensor]  # per local expert: int64 [recv_count[e]], in row order (== src_info)

    @property
    def experts_per_rank(self) -> int:
        return self.num_experts // self.num_ranks

    def layout_range(self) -> torch.Tensor:
        return (self.begins << 32) | self.counts


def check_topk_idx(topk_idx: torch.Tensor, num_experts: int, max_tokens: Optional[int] = None, what="topk_idx"):
    if topk_idx.dim() != 2:
        raise ValueError(f"{what}: expected [T, K], got shape {tuple(topk_idx.shape)}")
    if max_tokens is not None and topk_idx.shape[0] > max_tokens:
        raise ValueError(f"{what}: {topk_idx.shape[0]} tokens > num_max_dispatch_tokens_per_rank {max_tokens}")
    t = topk_idx.long()
    bad = (t < -1) | (t >= num_experts)
    if bool(bad.any()):
        raise ValueError(f"{what}: expert ids must be in [-1, {num_experts}), got {t[bad][:8].tolist()}")
    # A token that names one expert twice would need two slots at it; the layout assumes distinct experts.
    s = torch.sort(t, dim=1).values
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if bool(dup.any()):
        row = int(dup.any(dim=1).nonzero()[0])
        raise ValueError(f"{what}: token {row} selects an expert twice: {t[row].tolist()}")


def expected_layout(all_topk_idx: Sequence[torch.Tensor], num_experts: int, num_ranks: int, rank: int,
                    max_tokens: Optional[int] = None) -> ExpectedLayout:
    """The reference layout at receiving `rank`; all_topk_idx[s] is source s's topk_idx [T_s, K] (-1 allowed)."""
    if len(all_topk_idx) != num_ranks:
        raise ValueError(f"need one topk_idx per rank ({num_ranks}), got {len(all_topk_idx)}")
    if num_experts % num_ranks != 0:
        raise ValueError(f"num_experts {num_experts} is not a multiple of num_ranks {num_ranks}")
    epr = num_experts // num_ranks
    counts = torch.zeros(epr, num_ranks, dtype=torch.int64)
    per_expert_src = [[] for _ in range(epr)]
    per_expert_tok = [[] for _ in range(epr)]
    first = rank * epr
    for s, idx in enumerate(all_topk_idx):
        idx = idx.detach().cpu().long()
        check_topk_idx(idx, num_experts, max_tokens, what=f"topk_idx of rank {s}")
        mine = (idx >= first) & (idx < first + epr)
        tok, k = mine.nonzero(as_tuple=True)  # row-major: tokens ascending
        local = idx[tok, k] - first
        for e in range(epr):
            sel = tok[local == e]
            counts[e, s] = sel.numel()
            per_expert_src[e].append(torch.full_like(sel, s))
            per_expert_tok[e].append(sel)
    begins = torch.cumsum(counts, dim=1) - counts
    empty = torch.zeros(0, dtype=torch.int64)
    return ExpectedLayout(
        rank=rank, num_ranks=num_ranks, num_experts=num_experts,
        recv_count=counts.sum(dim=1).to(torch.int32), counts=counts, begins=begins,
        src_rank=[torch.cat(v) if v else empty for v in per_expert_src],
        src_token=[torch.cat(v) if v else empty for v in per_expert_tok])


def brute_force_layout(all_topk_idx, num_experts: int, num_ranks: int, rank: int):
    """The same thing with plain Python loops (tests compare the two): per local expert a list of (src, token)."""
    epr = num_experts // num_ranks
    rows = [[] for _ in range(epr)]
    for s in range(num_ranks):
        idx = all_topk_idx[s].tolist()
        for t, row in enumerate(idx):
            for e in row:
                if e >= 0 and e // epr == rank:
                    rows[e - rank * epr].append((s, t))
    return [sorted(r) for r in rows]


def decode_layout_range(layout_range: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    v = layout_range.detach().cpu().long()
    return v >> 32, v & 0xFFFFFFFF


def check_layout_range(layout_range: torch.Tensor, src_info: torch.Tensor, recv_count: torch.Tensor,
                       expected: ExpectedLayout, context: str = "") -> None:
    """layout_range [E_local, R] int64 and src_info [E_local, R*M] against the reference; AssertionError names
    the rank, local expert, source and `context` (the option combination) on the first mismatch."""
    where = f"rank {expected.rank}{', ' + context if context else ''}"
    begins, counts = decode_layout_range(layout_range)
    src_info = src_info.detach().cpu().long()
    recv_count = recv_count.detach().cpu().long()
    epr, R = expected.counts.shape
    if tuple(begins.shape) != (epr, R):
        raise AssertionError(f"{where}: layout_range shape {tuple(layout_range.shape)}, expected {(epr, R)}")
    for e in range(epr):
        total = int(recv_count[e])
        if total != int(expected.recv_count[e]):
            raise AssertionError(f"{where}: local expert {e}: recv_count {total}, expected {int(expected.recv_count[e])}")
        begin = 0
        for s in range(R):
            b, c = int(begins[e, s]), int(counts[e, s])
            if c != int(expected.counts[e, s]):
                raise AssertionError(f"{where}: local expert {e}, source {s}: layout_range count {c}, "
                                     f"expected {int(expected.counts[e, s])}")
            if b != begin:
                raise AssertionError(f"{where}: local expert {e}, source {s}: layout_range begin {b}, expected {begin} "
                                     f"(rows of sources < {s})")
            want = expected.src_token[e][expected.src_rank[e] == s]
            got = src_info[e, b:b + c]
            if not torch.equal(got, want):
                raise AssertionError(f"{where}: local expert {e}, source {s}: src_info[{b}:{b + c}] = "
                                     f"{got[:16].tolist()}..., expected {want[:16].tolist()}...")
            begin += c
        if begin != total:
            raise AssertionError(f"{where}: local expert {e}: counts sum to {begin}, recv_count {total}")


# ---------------------------------------------------------------------------------------------------------------
# Combine
# ---------------------------------------------------------------------------------------------------------------
def weighted_combine(y: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
    """sum over k of w[t, k] * y (float32), skipping k where topk_idx == -1.

    y: [T, hidden] when every expert returns the same row for a token (the benchmark's identity expert), or
    [T, K, hidden] with the row expert topk_idx[t, k] returned."""
    w = topk_weights.float() * (topk_idx >= 0).float()
    if y.dim() == 2:
        return y.float() * w.sum(dim=1, keepdim=True)
    return (y.float() * w.unsqueeze(-1)).sum(dim=1)


# ---------------------------------------------------------------------------------------------------------------
# FP8 (e4m3, per-128-channel scales)
# ---------------------------------------------------------------------------------------------------------------
def fp8_scales(x: torch.Tensor, round_scale: bool = False) -> torch.Tensor:
    """float32 [..., hidden/128]: amax / 448 with amax >= 1e-4; with round_scale 2**ceil(log2(.))."""
    h = x.shape[-1]
    if h % CHANNELS_PER_SCALE:
        raise ValueError(f"hidden {h} is not a multiple of {CHANNELS_PER_SCALE}")
    g = x.float().reshape(*x.shape[:-1], h // CHANNELS_PER_SCALE, CHANNELS_PER_SCALE)
    amax = g.abs().amax(dim=-1).clamp(min=AMAX_FLOOR)
    # Correctly rounded amax / 448, as the kernel's IEEE division gives it: torch divides by a scalar through its
    # reciprocal, one ulp off often enough to flip FP8 ties (BF16 inputs make exact ties common).
    scale = (amax.double() / FP8_E4M3_MAX).float()
    if round_scale:
        scale = torch.pow(2.0, torch.ceil(torch.log2(scale)))
    return scale


def round_to_e4m3(v: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to the nearest float8_e4m3fn value (ties to even), saturating at +-448. Pure
    arithmetic, so it works where torch has no float8 dtype."""
    v = v.float()
    a = v.abs().clamp(max=FP8_E4M3_MAX)
    _, e = torch.frexp(a)  # a = m * 2**e, m in [0.5, 1): floor(log2 a) = e - 1
    exp = (e - 1).clamp(min=-6)  # below 2**-6: subnormals, a fixed step of 2**-9
    step = torch.pow(2.0, (exp - 3).float())
    q = torch.round(a / step) * step  # torch.round: half to even
    q = torch.where(a == 0, torch.zeros_like(q), q).clamp(max=FP8_E4M3_MAX)
    return torch.copysign(q, v)


def cast_to_fp8(x: torch.Tensor, round_scale: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """(values float32 on the e4m3 grid, scales float32 [..., hidden/128]): x ~= values * scale."""
    scale = fp8_scales(x, round_scale)
    h = x.shape[-1]
    g = x.float().reshape(*x.shape[:-1], h // CHANNELS_PER_SCALE, CHANNELS_PER_SCALE)
    q = round_to_e4m3((g.double() / scale.unsqueeze(-1).double()).float())  # correctly rounded quotient
    return q.reshape(x.shape), scale


def dequantize(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """values [..., hidden] (any dtype torch can turn into float: float8 too) times per-128-channel scales:
    float32 [..., hidden/128], or UE8M0 int32 [..., hidden/512]."""
    if scales.dtype == torch.int32:
        scales = unpack_ue8m0(scales)
    h = values.shape[-1]
    g = values.float().reshape(*values.shape[:-1], h // CHANNELS_PER_SCALE, CHANNELS_PER_SCALE)
    return (g * scales.float().unsqueeze(-1)).reshape(values.shape)


def fp8_roundtrip(x: torch.Tensor, round_scale: bool = False) -> torch.Tensor:
    """What an FP8 dispatch delivers for x, as float32."""
    q, s = cast_to_fp8(x, round_scale)
    return dequantize(q, s)


def ue8m0_bytes(scales: torch.Tensor) -> torch.Tensor:
    """int32 exponent byte of each float32 scale: (bits >> 23) & 0xff (exact for powers of two)."""
    bits = scales.float().contiguous().view(torch.int32)
    return (bits >> 23) & 0xFF


def pack_ue8m0(scales: torch.Tensor) -> torch.Tensor:
    """float32 [..., G] (G % 4 == 0) -> int32 [..., G/4]: four consecutive groups' exponent bytes, the first
    in the lowest byte (little-endian)."""
    g = scales.shape[-1]
    if g % 4:
        raise ValueError(f"UE8M0 packing needs a multiple of 4 scale groups (hidden % 512 == 0), got {g}")
    b = ue8m0_bytes(scales).long().reshape(*scales.shape[:-1], g // 4, 4)
    v = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)
    v = torch.where(v >= 2 ** 31, v - 2 ** 32, v)  # as int32 bits
    return v.to(torch.int32)


def unpack_ue8m0(packed: torch.Tensor) -> torch.Tensor:
    """int32 [..., G/4] -> float32 scales [..., G] = 2**(byte - 127)."""
    v = packed.long() & 0xFFFFFFFF
    b = torch.stack([(v >> (8 * i)) & 0xFF for i in range(4)], dim=-1)
    b = b.reshape(*packed.shape[:-1], packed.shape[-1] * 4)
    return torch.pow(2.0, (b - 127).float())


# ---------------------------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------------------------
def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepEP's similarity measure: 1 - 2 sum(x y) / sum(x^2 + y^2), in float64 (0 when both are zero)."""
    x, y = x.double(), y.double()
    denom = (x * x + y * y).sum()
    if float(denom) == 0.0:
        return 0.0
    return float(1 - 2 * (x * y).sum() / denom)


# ---------------------------------------------------------------------------------------------------------------
# Row encoding: which source rank and token a received row came from
# ---------------------------------------------------------------------------------------------------------------
# The first 128 channels (one FP8 scale group) hold +1 or -1 each. Their amax is 1 whatever the bits, so every
# channel is exactly +-1 after BF16, and +-448 * scale after FP8 with float (amax/448) or power-of-two (1/256)
# scales: the sign of each channel survives any of the casts. Layout of the group:
#   [0, 8)     a fixed marker, so a row of zeros or stale data is not read as rank 0 / token 0
#   [8, 40)    source rank, bit i at channel 8 + i
#   [40, 72)   source token
#   [72, 104)  a check word mixing both, so halves of two different rows are not taken for one row
#   [104, 128) +1
# Channels from 128 on are the row's free (random) payload, compared with a tolerance.
ENCODED_CHANNELS = 128
_MARKER = (1, 0, 1, 1, 0, 0, 1, 0)
_BITS = torch.tensor([1 << i for i in range(32)], dtype=torch.int64)


def _check_word(rank: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    return ((rank * 2654435761 + token * 40503 + 0x5BD1E995) & 0xFFFFFFFF) ^ 0xA5A5A5A5


def _bits(v: torch.Tensor) -> torch.Tensor:
    return (v.unsqueeze(-1) >> torch.arange(32, device=v.device)) & 1


def encode_rows(x: torch.Tensor, rank: int) -> torch.Tensor:
    """Writes the encoding of (rank, token index) into channels [0, 128) of every row of x [T, hidden] (in place;
    returns x). Needs hidden >= 128."""
    t, h = x.shape
    if h < ENCODED_CHANNELS:
        raise ValueError(f"hidden {h} < {ENCODED_CHANNELS}: no room for the row encoding")
    dev = x.device
    tok = torch.arange(t, dtype=torch.int64, device=dev)
    rk = torch.full_like(tok, rank)
    bits = torch.ones(t, ENCODED_CHANNELS, dtype=torch.int64, device=dev)
    bits[:, 0:8] = torch.tensor(_MARKER, dtype=torch.int64, device=dev)
    bits[:, 8:40] = _bits(rk)
    bits[:, 40:72] = _bits(tok)
    bits[:, 72:104] = _bits(_check_word(rk, tok))
    x[:, :ENCODED_CHANNELS] = (bits * 2 - 1).to(x.dtype)
    return x


def decode_rows(rows: torch.Tensor, tol: float = 1e-2) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(src_rank int64 [N], src_token int64 [N], ok bool [N]) from rows [N, hidden] (dequantized, any float
    dtype). ok: marker, check word and every magnitude (1 within tol) agree."""
    g = rows[:, :ENCODED_CHANNELS].float()
    bits = (g > 0).long()
    bits_w = _BITS.to(rows.device)
    rank = (bits[:, 8:40] * bits_w).sum(dim=1)
    token = (bits[:, 40:72] * bits_w).sum(dim=1)
    check = (bits[:, 72:104] * bits_w).sum(dim=1)
    marker = torch.tensor(_MARKER, dtype=torch.int64, device=rows.device)
    ok = (bits[:, 0:8] == marker).all(dim=1) & (bits[:, 104:] == 1).all(dim=1)
    ok &= check == _check_word(rank, token)
    ok &= ((g.abs() - 1).abs() <= tol).all(dim=1)
    return rank, token, ok


def make_inputs(rank: int, num_tokens: int, hidden: int, num_experts: int, num_topk: int, generator: torch.Generator,
                num_masked: int = 10, dtype=torch.bfloat16):
    """(x [T, hidden] with encoded rows and random normal payload, topk_idx [T, K] int64 with `num_masked`
    random entries set to -1 (distinct experts otherwise), topk_weights [T, K] float32 > 0), on the CPU."""
    if num_topk > num_experts:
        raise ValueError(f"num_topk {num_topk} > num_experts {num_experts}")
    x = torch.randn(num_tokens, hidden, generator=generator).to(dtype)
    encode_rows(x, rank)
    scores = torch.randn(num_tokens, num_experts, generator=generator).abs() + 1
    topk_idx = torch.topk(scores, num_topk, dim=-1, largest=True, sorted=False).indices.long()
    n = min(num_masked, num_tokens * num_topk)
    if n > 0:
        pos = torch.randperm(num_tokens * num_topk, generator=generator)[:n]
        topk_idx.view(-1)[pos] = -1
    topk_weights = torch.randn(num_tokens, num_topk, generator=generator).abs() + 0.05
    return x, topk_idx, topk_weights


def fp8_message_bytes(hidden: int) -> int:
    """Bytes of one dispatch message as DeepEP counts them: hidden FP8 values, a 4-byte scale per 128 channels and a
    16-byte header."""
    return hidden + hidden // CHANNELS_PER_SCALE * 4 + 16


def nvlink_dispatch_bytes(topk_idx: torch.Tensor, hidden: int, rank: int, num_ranks: int, num_experts: int,
                          ranks_per_node: int) -> int:
    """Bytes of FP8 messages this rank's dispatch writes into the buffers of its NVLink peers (the other ranks of its
    node): one message (fp8_message_bytes) per token and distinct expert owned by such a peer."""
    per_rank = num_experts // num_ranks
    node = rank // ranks_per_node
    messages = 0
    for row in topk_idx.tolist():
        for e in set(e for e in row if 0 <= e < num_experts):
            dst = e // per_rank
            messages += dst != rank and dst // ranks_per_node == node
    return messages * fp8_message_bytes(hidden)


def dispatch_bytes(topk_idx: torch.Tensor, hidden: int, use_logfmt: bool = False) -> Tuple[int, int]:
    """(dispatch bytes, combine bytes) this rank sends: per selected (token, expert) pair one FP8 message
    (fp8_message_bytes) and one row back, BF16 or (use_logfmt) 10 bits a value
    plus 4 bytes per 128 channels, as DeepEP counts them."""
    pairs = int((topk_idx >= 0).sum())
    combine_row = hidden * 10 // 8 + hidden // CHANNELS_PER_SCALE * 4 if use_logfmt else hidden * 2
    return pairs * fp8_message_bytes(hidden), pairs * combine_row
