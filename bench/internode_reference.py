"""Pure-torch references for normal mode across nodes (issue 12): the route src/kernels/internode.hpp designs and the
figures DeepEP's internode test reports, given every rank's is_token_in_rank [T, R] and nodes of P ranks
(rank = node * P + local). CPU or GPU tensors, torch 1.13 and later.

What each rank receives, in which order, and the handle's rank prefix matrix are intranode_reference's (api.md: rows
ordered by global source rank, then source token); across nodes the route that delivers them is hierarchical:
  - a token of source s reaches the ranks of s's own node over NVLink, directly;
  - it crosses the network at most once per other node b that holds one of its ranks, to s's peer there, the rank
    (b, local(s)) with s's local index, which forwards it over NVLink to every rank of b that needs it (itself too).
This module counts that route: the (token, node) records each source sends over the network, the records each peer
receives and forwards, and the rows each rank ends up with; and the byte figures the bench prints beside the
transport floor (bytes that cross nodes, per source rank; bytes each rank receives over NVLink).
"""
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from intranode_reference import prefix_matrix  # noqa: E402


def num_nodes(num_ranks: int, ranks_per_node: int) -> int:
    if ranks_per_node < 1 or num_ranks % ranks_per_node:
        raise ValueError(f"{num_ranks} ranks do not make whole nodes of {ranks_per_node}")
    return num_ranks // ranks_per_node


def node_of(rank: int, ranks_per_node: int) -> int:
    return rank // ranks_per_node


def peer_on(node: int, rank: int, ranks_per_node: int) -> int:
    """The rank of `node` with `rank`'s local index: where `rank`'s tokens for that node cross the network to."""
    return node * ranks_per_node + rank % ranks_per_node


def token_nodes(is_token_in_rank: torch.Tensor, ranks_per_node: int) -> torch.Tensor:
    """bool [T, nodes]: token t goes to at least one rank of node b (get_dispatch_layout's per-node count is its
    column sum)."""
    T, R = is_token_in_rank.shape
    return is_token_in_rank.view(T, num_nodes(R, ranks_per_node), ranks_per_node).any(dim=2)


@dataclass
class Route:
    """The hierarchical route of one dispatch (combine runs it backwards: the same records, reduced per node)."""

    ranks_per_node: int
    rdma_sent: torch.Tensor  # int64 [R]: (token, node) records each source sends over the network
    rdma_received: torch.Tensor  # int64 [R]: records each rank receives over the network, as its node's peer
    forwarded: torch.Tensor  # int64 [R]: rows each rank pushes over NVLink for other nodes' sources (itself too)
    nvl_direct: torch.Tensor  # int64 [R]: rows each source pushes over NVLink to its own node (itself too)
    received: torch.Tensor  # int64 [R]: rows each rank ends up with (recv_x rows)

    def rdma_bytes_sent(self, row_bytes: int) -> torch.Tensor:
        """int64 [R]: bytes that cross nodes from each source rank (DeepEP's internode test's RDMA figure)."""
        return self.rdma_sent * row_bytes

    def nvl_bytes_received(self, row_bytes: int) -> torch.Tensor:
        """int64 [R]: bytes each rank receives (its recv_x rows; DeepEP's internode test's NVL figure)."""
        return self.received * row_bytes


def route(all_is_token_in_rank: Sequence[torch.Tensor], ranks_per_node: int) -> Route:
    """The route of a dispatch whose source s has is_token_in_rank all_is_token_in_rank[s] ([T_s, R] bool)."""
    R = len(all_is_token_in_rank)
    nodes = num_nodes(R, ranks_per_node)
    rdma_sent = torch.zeros(R, dtype=torch.int64)
    rdma_received = torch.zeros(R, dtype=torch.int64)
    forwarded = torch.zeros(R, dtype=torch.int64)
    nvl_direct = torch.zeros(R, dtype=torch.int64)
    received = torch.zeros(R, dtype=torch.int64)
    for s, in_rank in enumerate(all_is_token_in_rank):
        in_rank = in_rank.cpu().bool()
        if in_rank.dim() != 2 or in_rank.size(1) != R:
            raise ValueError(f"is_token_in_rank of source {s} is {tuple(in_rank.shape)}, expected [T, {R}]")
        per_rank = in_rank.long().sum(dim=0)  # rows s sends to each rank
        received += per_rank
        by_node = token_nodes(in_rank, ranks_per_node).long().sum(dim=0)  # [nodes]: records to each node
        home = node_of(s, ranks_per_node)
        for b in range(nodes):
            ranks = slice(b * ranks_per_node, (b + 1) * ranks_per_node)
            if b == home:
                nvl_direct[s] += per_rank[ranks].sum()
                continue
            peer = peer_on(b, s, ranks_per_node)
            rdma_sent[s] += by_node[b]
            rdma_received[peer] += by_node[b]
            forwarded[peer] += per_rank[ranks].sum()
    return Route(ranks_per_node, rdma_sent, rdma_received, forwarded, nvl_direct, received)


def recv_gbl_rank_prefix_sum(all_is_token_in_rank: Sequence[torch.Tensor], rank: int) -> torch.Tensor:
    """int32 [R]: the rows ranks 0..s send to `rank`, inclusive over s; the internode handle's fourth element from
    the end (api.md), which callers use to find each source rank's rows. It is the rank prefix matrix's column."""
    return prefix_matrix(all_is_token_in_rank)[:, rank].contiguous()
