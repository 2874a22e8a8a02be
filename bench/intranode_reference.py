"""Pure-torch references for normal mode (get_dispatch_layout, dispatch, combine); CPU or GPU tensors, torch 1.13
and later.

What a rank must see, given every rank's inputs:
  - layout: per rank (node) the tokens holding at least one of its experts, per expert the top-k entries naming
    it, and the [T, R] token-to-rank map; -1 entries are ignored;
  - dispatch at receiving rank r: the rows of every source s with is_token_in_rank_s[t, r], ordered by source
    rank, then source token; the [R, R] inclusive prefix matrix (prefix[s][r] = rows that ranks <= s send to r);
    each source's send_pos [T, R] (position of token t among the tokens it sends to r, else -1); top-k ids made
    local to r (-1 for experts elsewhere, their weights zeroed); per local expert the top-k entries naming it,
    summed over sources, rounded up to expert_alignment;
  - combine at source rank s: per token the plain sum of what every rank it went to returned, plus the biases.
Also FP8 e4m3 bytes without a float8 dtype (torch 1.13 has none), and the row encoding of ll_reference (each
row's first 128 channels carry its source rank and token, exactly, through BF16 and FP8).
"""
import os
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ll_reference import ENCODED_CHANNELS, cast_to_fp8, dequantize, pack_ue8m0  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Layout:
    tokens_per_rank: torch.Tensor  # int32 [R]
    tokens_per_node: Optional[torch.Tensor]  # int32 [nodes], None on one node / one NVLink domain
    tokens_per_expert: torch.Tensor  # int32 [E]
    is_token_in_rank: torch.Tensor  # bool [T, R]


def token_ranks(topk_idx: torch.Tensor, num_experts: int, num_ranks: int) -> torch.Tensor:
    """bool [T, R]: token t has at least one top-k expert on rank r."""
    epr = num_experts // num_ranks
    idx = topk_idx.long()
    owner = torch.where(idx >= 0, idx // epr, torch.full_like(idx, num_ranks))  # -1 entries: a spare column
    hit = torch.zeros(idx.size(0), num_ranks + 1, dtype=torch.bool, device=idx.device)
    hit.scatter_(1, owner, True)
    return hit[:, :num_ranks].contiguous()


def layout(topk_idx: torch.Tensor, num_experts: int, num_ranks: int,
           ranks_per_node: Optional[int] = None) -> Layout:
    """The reference of get_dispatch_layout. ranks_per_node None (or >= num_ranks): one domain, no node counts."""
    if num_experts % num_ranks:
        raise ValueError(f"num_experts {num_experts} is not a multiple of num_ranks {num_ranks}")
    idx = topk_idx.long()
    in_rank = token_ranks(idx, num_experts, num_ranks)
    valid = idx[idx >= 0]
    per_expert = torch.bincount(valid, minlength=num_experts).to(torch.int32)
    per_node = None
    if ranks_per_node is not None and ranks_per_node < num_ranks:
        nodes = (num_ranks + ranks_per_node - 1) // ranks_per_node
        pad = nodes * ranks_per_node - num_ranks
        by_node = torch.nn.functional.pad(in_rank, (0, pad)).view(idx.size(0), nodes, ranks_per_node)
        per_node = by_node.any(dim=2).sum(dim=0).to(torch.int32)
    return Layout(in_rank.sum(dim=0).to(torch.int32), per_node, per_expert, in_rank)


# ---------------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Expected:
    """What dispatch returns at one receiving rank (tensors on the inputs' device)."""

    rank: int
    rank_prefix_matrix: torch.Tensor  # int32 [R, R], inclusive over source ranks
    send_pos: List[torch.Tensor]  # per source rank: int32 [T_s, R]
    src_rank: torch.Tensor  # int64 [N]: source rank of each received row, in row order
    src_token: torch.Tensor  # int64 [N]: source token index (recv_src_idx)
    recv_topk_idx: Optional[torch.Tensor]  # int64 [N, K]: local expert ids, -1 elsewhere
    recv_topk_weights: Optional[torch.Tensor]  # float32 [N, K]: 0 where recv_topk_idx is -1
    tokens_per_expert: torch.Tensor  # int64 [E_local], before alignment

    @property
    def num_recv(self) -> int:
        return int(self.src_rank.numel())

    def per_expert_list(self, alignment: int = 1) -> List[int]:
        return [(int(c) + alignment - 1) // alignment * alignment for c in self.tokens_per_expert.tolist()]

    def block(self, source: int) -> slice:
        """The rows that came from `source`: [prefix[source-1][rank], prefix[source][rank])."""
        p = self.rank_prefix_matrix[:, self.rank]
        return slice(int(p[source - 1]) if source else 0, int(p[source]))


def send_positions(is_token_in_rank: torch.Tensor) -> torch.Tensor:
    """int32 [T, R]: position of token t among the tokens going to rank r, -1 where it does not go there."""
    m = is_token_in_rank.long()
    pos = torch.cumsum(m, dim=0) - 1
    return torch.where(m.bool(), pos, torch.full_like(pos, -1)).to(torch.int32)


def prefix_matrix(all_is_token_in_rank: Sequence[torch.Tensor]) -> torch.Tensor:
    """int32 [R, R]: prefix[s][r] = tokens that sources 0..s send to r."""
    counts = torch.stack([m.long().sum(dim=0) for m in all_is_token_in_rank])  # [source, dest]
    return torch.cumsum(counts, dim=0).to(torch.int32)


def dispatch_expected(all_is_token_in_rank: Sequence[torch.Tensor], rank: int, num_experts: int,
                      all_topk_idx: Optional[Sequence[torch.Tensor]] = None,
                      all_topk_weights: Optional[Sequence[torch.Tensor]] = None,
                      all_tokens_per_expert: Optional[Sequence[torch.Tensor]] = None) -> Expected:
    """The dispatch result at `rank` from every source's is_token_in_rank [T_s, R] (and top-k, when dispatched
    with it). Per-expert counts come from all_tokens_per_expert (the layout each source passed), else from the
    top-k ids."""
    R = len(all_is_token_in_rank)
    epr = num_experts // R
    dev = all_is_token_in_rank[0].device
    src_rank, src_token, idx_rows, w_rows = [], [], [], []
    for s, m in enumerate(all_is_token_in_rank):
        tok = m[:, rank].nonzero().flatten()
        src_rank.append(torch.full_like(tok, s))
        src_token.append(tok)
        if all_topk_idx is not None:
            idx = all_topk_idx[s][tok].long()
            mine = (idx >= rank * epr) & (idx < (rank + 1) * epr)
            idx_rows.append(torch.where(mine, idx - rank * epr, torch.full_like(idx, -1)))
            w = all_topk_weights[s][tok].float()
            w_rows.append(torch.where(mine, w, torch.zeros_like(w)))
    if all_tokens_per_expert is None:
        if all_topk_idx is None:
            raise ValueError("need all_tokens_per_expert or all_topk_idx for the per-expert counts")
        all_tokens_per_expert = [layout(i, num_experts, R).tokens_per_expert for i in all_topk_idx]
    per_expert = torch.stack([c.long() for c in all_tokens_per_expert]).sum(dim=0)[rank * epr:(rank + 1) * epr]
    return Expected(
        rank=rank, rank_prefix_matrix=prefix_matrix(all_is_token_in_rank),
        send_pos=[send_positions(m) for m in all_is_token_in_rank],
        src_rank=torch.cat(src_rank).long(), src_token=torch.cat(src_token).long(),
        recv_topk_idx=torch.cat(idx_rows) if idx_rows else None,
        recv_topk_weights=torch.cat(w_rows) if w_rows else None,
        tokens_per_expert=per_expert.to(dev))


def brute_force_rows(all_is_token_in_rank, rank: int) -> List[tuple]:
    """(source, token) of every row `rank` receives, in order, with plain loops (tests compare the two)."""
    return [(s, t) for s, m in enumerate(all_is_token_in_rank) for t in range(m.size(0)) if bool(m[t, rank])]


# ---------------------------------------------------------------------------------------------------------------
# Combine
# ---------------------------------------------------------------------------------------------------------------
def combine_expected(is_token_in_rank: torch.Tensor, returned: Callable[[int], torch.Tensor],
                     biases: Sequence[Optional[torch.Tensor]] = ()) -> torch.Tensor:
    """float32 [T, hidden] at one source rank: sum over the ranks r each token went to of returned(r) (float
    [T, hidden]: what rank r sends back for each of this rank's tokens; other rows ignored), plus the biases."""
    out = None
    for r in range(is_token_in_rank.size(1)):
        m = is_token_in_rank[:, r]
        if not bool(m.any()):
            continue
        part = torch.where(m.unsqueeze(1), returned(r).float(), torch.zeros((), device=m.device))
        out = part if out is None else out + part
    if out is None:
        raise ValueError("combine_expected: no rank holds any token (need returned(r) for the shape)")
    for b in biases:
        if b is not None:
            out = out + b.float()
    return out


def combine_weights_expected(is_token_in_rank: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor,
                             num_experts: int, factor: Callable[[int], float] = lambda r: 1.0) -> torch.Tensor:
    """float32 [T, K]: sum over ranks r the token went to of the weights r received (its own experts' entries,
    others zeroed), each scaled by factor(r) as the rank's expert did."""
    R = is_token_in_rank.size(1)
    epr = num_experts // R
    idx = topk_idx.long()
    out = torch.zeros_like(topk_weights, dtype=torch.float32)
    for r in range(R):
        mine = (idx >= r * epr) & (idx < (r + 1) * epr) & is_token_in_rank[:, r:r + 1]
        out = out + torch.where(mine, topk_weights.float() * factor(r), torch.zeros((), device=idx.device))
    return out


# ---------------------------------------------------------------------------------------------------------------
# FP8 e4m3 bytes (float8_e4m3fn: 1 sign, 4 exponent bits with bias 7, 3 mantissa bits; 0x7f / 0xff are NaN)
# ---------------------------------------------------------------------------------------------------------------
def e4m3_to_float(bits: torch.Tensor) -> torch.Tensor:
    """float32 values of uint8 e4m3fn codes."""
    b = bits.to(torch.int32) & 0xFF
    sign = 1 - 2 * (b >= 128).float()
    e = (b >> 3) & 0xF
    m = (b & 7).float()
    normal = (1 + m / 8) * torch.pow(2.0, (e - 7).float())
    sub = m / 8 * 2.0 ** -6
    v = sign * torch.where(e == 0, sub, normal)
    return torch.where((b & 0x7F) == 0x7F, torch.full_like(v, float("nan")), v)


def float_to_e4m3(v: torch.Tensor) -> torch.Tensor:
    """uint8 e4m3fn codes of float values (rounded to nearest even first, saturating at +-448)."""
    from ll_reference import round_to_e4m3
    q = round_to_e4m3(v.float())
    a = q.abs()
    _, e = torch.frexp(a)  # a = m * 2**e, m in [0.5, 1)
    exp = e - 1  # floor(log2 a)
    normal = exp >= -6
    field = torch.where(normal, exp + 7, torch.zeros_like(exp))
    mant = torch.where(normal, a / torch.pow(2.0, (exp - 3).float()) - 8, a / 2.0 ** -9)
    code = (field << 3) | mant.round().to(torch.int32)
    code = torch.where(a == 0, torch.zeros_like(code), code)
    code = code | (torch.signbit(q).to(torch.int32) << 7)
    return code.to(torch.uint8)


@dataclass
class Fp8Rows:
    """An FP8 cast of BF16 rows: e4m3 codes and per-128-channel scales (float32, or int32-packed UE8M0)."""

    codes: torch.Tensor  # uint8 [T, hidden]
    scales: torch.Tensor  # float32 [T, hidden/128] or int32 [T, hidden/512]

    def dequantize(self) -> torch.Tensor:
        return dequantize(e4m3_to_float(self.codes), self.scales)


def cast_rows_fp8(x: torch.Tensor, ue8m0: bool = False) -> Fp8Rows:
    """DeepEP's per-token-group cast (amax / 448 per 128 channels; power-of-two scales packed four to an int32
    with ue8m0)."""
    values, scales = cast_to_fp8(x, round_scale=ue8m0)
    return Fp8Rows(float_to_e4m3(values), pack_ue8m0(scales) if ue8m0 else scales)


def head_as_float(recv_x: torch.Tensor, recv_scales: Optional[torch.Tensor]) -> torch.Tensor:
    """float32 [N, 128]: the encoded first 128 channels of received rows (BF16, or FP8 codes in any 1-byte dtype
    with their scales), enough for decode_rows."""
    head = recv_x[:, :ENCODED_CHANNELS]
    if recv_scales is None:
        return head.float()
    first = recv_scales[:, :1]
    if first.dtype == torch.int32:  # four UE8M0 exponents, the first group in the lowest byte
        first = torch.pow(2.0, ((first.long() & 0xFF) - 127).float())
    return e4m3_to_float(head.contiguous().view(torch.uint8)) * first.float()


def row_bytes(t: torch.Tensor) -> torch.Tensor:
    """uint8 [rows, row bytes]: the exact bytes of each row of a 2-D tensor (any dtype)."""
    return t.contiguous().view(torch.uint8).view(t.size(0), -1)
