"""bench/internode_reference.py against token-by-token counting: the hierarchical route (a token crosses the network at
most once per other node, to the source's peer there, which forwards it to the ranks of its node), the byte figures
and recv_gbl_rank_prefix_sum. CPU only."""
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))

import internode_reference as iref  # noqa: E402
import intranode_reference as ref  # noqa: E402


def routing(R, T, E, K, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(R):
        scores = torch.rand(T + s, E, generator=g)
        idx = scores.topk(K, dim=1).indices
        idx[torch.rand(idx.shape, generator=g) < 0.1] = -1  # some -1 entries
        out.append(ref.token_ranks(idx, E, R))
    return out


def brute_force(all_in_rank, P):
    """Per token, per destination: where it goes and by which path."""
    R = len(all_in_rank)
    sent, got, fwd, direct, recv = ([0] * R for _ in range(5))
    for s, m in enumerate(all_in_rank):
        for t in range(m.size(0)):
            dests = [r for r in range(R) if bool(m[t, r])]
            recv_nodes = sorted({r // P for r in dests})
            for r in dests:
                recv[r] += 1
                if r // P == s // P:
                    direct[s] += 1
                else:
                    fwd[(r // P) * P + s % P] += 1
            for b in recv_nodes:
                if b != s // P:
                    sent[s] += 1
                    got[b * P + s % P] += 1
    return sent, got, fwd, direct, recv


@pytest.mark.parametrize("R,P", [(4, 2), (8, 2), (8, 4), (16, 4), (6, 1)])
def test_the_route_counts_every_token_once_per_node_and_every_row_once(R, P):
    E, K, T = 4 * R, 4, 24
    all_in_rank = routing(R, T, E, K, seed=R * 10 + P)
    route = iref.route(all_in_rank, P)
    sent, got, fwd, direct, recv = brute_force(all_in_rank, P)
    assert route.rdma_sent.tolist() == sent
    assert route.rdma_received.tolist() == got
    assert route.forwarded.tolist() == fwd
    assert route.nvl_direct.tolist() == direct
    assert route.received.tolist() == recv
    # Every row arrives exactly once: directly on its source's node, or forwarded by the source's peer.
    assert int(route.forwarded.sum() + route.nvl_direct.sum()) == int(route.received.sum())
    # A record per (token, other node) and no more: the network carries at most what per-rank sends would.
    per_rank_remote = sum(int(m[:, [r for r in range(R) if r // P != s // P]].sum()) for s, m in
                          enumerate(all_in_rank))
    assert int(route.rdma_sent.sum()) <= per_rank_remote
    assert int(route.rdma_sent.sum()) == int(route.rdma_received.sum())


def test_one_node_sends_nothing_over_the_network_and_the_node_counts_are_the_layouts():
    R, P, E, K = 4, 4, 16, 3
    all_in_rank = routing(R, 16, E, K, seed=5)
    route = iref.route(all_in_rank, P)
    assert route.rdma_sent.sum() == 0 and route.forwarded.sum() == 0
    assert route.nvl_direct.tolist() == [int(m.sum()) for m in all_in_rank]
    # token_nodes' column sums are get_dispatch_layout's num_tokens_per_rdma_rank.
    g = torch.Generator().manual_seed(3)
    idx = torch.rand(20, 32, generator=g).topk(4, dim=1).indices
    lay = ref.layout(idx, 32, 8, ranks_per_node=2)
    assert iref.token_nodes(lay.is_token_in_rank, 2).sum(dim=0).to(torch.int32).tolist() == \
        lay.tokens_per_node.tolist()


def test_the_byte_figures_and_the_global_prefix_sum():
    R, P = 8, 4
    all_in_rank = routing(R, 12, 32, 4, seed=9)
    route = iref.route(all_in_rank, P)
    row = 7168 * 2
    assert route.rdma_bytes_sent(row).tolist() == [n * row for n in route.rdma_sent.tolist()]
    assert route.nvl_bytes_received(row).tolist() == [n * row for n in route.received.tolist()]
    for rank in range(R):
        g = iref.recv_gbl_rank_prefix_sum(all_in_rank, rank)
        counts = [int(m[:, rank].sum()) for m in all_in_rank]
        assert g.dtype == torch.int32 and g.tolist() == [sum(counts[:s + 1]) for s in range(R)]
        assert int(g[-1]) == int(route.received[rank])


def test_partial_nodes_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="whole nodes"):
        iref.num_nodes(6, 4)
    with pytest.raises(ValueError, match="expected"):
        iref.route([torch.zeros(3, 4, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool),
                    torch.zeros(3, 4, dtype=torch.bool), torch.zeros(3, 4, dtype=torch.bool)], 2)
    assert iref.peer_on(2, 5, 4) == 9 and iref.node_of(5, 4) == 1


# ---------------------------------------------------------------------------------------------------------------
# bench/test_internode.py: the records per (channel, node) stream its transport floor posts
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("R, P, C", [(4, 2, 3), (8, 4, 10), (6, 1, 4)])
def test_bench_stream_counts_cut_each_route_as_the_kernels_do(R, P, C):
    sys.path.insert(0, os.path.join(REPO, "tests", "python", "gpu"))
    import test_internode as bench  # bench/ is on sys.path
    gen = torch.Generator().manual_seed(R * 100 + P)
    all_in_rank = [torch.rand(7 + 3 * s, R, generator=gen) < 0.3 for s in range(R)]
    route = iref.route(all_in_rank, P)
    N = R // P
    for rank in range(R):
        got = bench.stream_counts(all_in_rank, rank, P, C)
        own, local = divmod(rank, P)
        # Every record of the route, once: what this rank sends across nodes and what it receives as its node's peer.
        assert sum(got["dispatch_sent"]) == int(route.rdma_sent[rank])
        assert sum(got["dispatch_received"]) == int(route.rdma_received[rank])
        # Combine runs the same records backwards.
        assert sum(got["combine_sent"]) == int(route.rdma_received[rank])
        assert sum(got["combine_received"]) == int(route.rdma_sent[rank])
        for b in range(N):
            # A stream of node b: token by token, channel c's range of the source's tokens (channelBegin).
            src = all_in_rank[rank].view(-1, N, P)[:, b].any(dim=1)
            T = src.size(0)
            for c in range(C):
                want = 0 if b == own else int(src[T * c // C:T * (c + 1) // C].sum())
                assert got["dispatch_sent"][c * N + b] == want, (rank, b, c)
            if b == own:
                assert all(got[k][c * N + b] == 0 for k in got for c in range(C))
            peer = b * P + local
            assert got["dispatch_received"][0 * N + b] == (0 if b == own else int(
                all_in_rank[peer].view(-1, N, P)[:, own].any(dim=1)[:all_in_rank[peer].size(0) * 1 // C].sum()))


def test_bench_flags_of_the_internode_bench():
    sys.path.insert(0, os.path.join(REPO, "tests", "python", "gpu"))
    import test_internode as bench  # bench/ is on sys.path
    a = bench.parse_args(["--no-checks", "--quick", "--nvlink-us", "1.5,2,3", "--rdma-bytes", "1024"])
    assert a.no_checks and a.quick and a.rdma_bytes == 1024 and bench.parse_nvlink_us(a.nvlink_us) == (1.5, 2.0, 3.0)
    a = bench.parse_args([])
    assert not a.no_checks and a.nvlink_us is None and bench.parse_nvlink_us(a.nvlink_us) is None
    for bad in ("1,2", "1,2,x", "1,-2,3"):
        with pytest.raises(ValueError, match="--nvlink-us takes DISPATCH_FP8,DISPATCH_BF16,COMBINE"):
            bench.parse_args(["--nvlink-us", bad])


def test_bench_report_prints_each_ranks_floor_so_a_late_start_shows():
    sys.path.insert(0, os.path.join(REPO, "tests", "python", "gpu"))
    import test_internode as bench  # bench/ is on sys.path

    def result(us, floor, sends):
        return {key: dict(us=us, rdma_bytes=1e6, nvl_bytes=2e6, floor_us=floor, floor_bytes=1e6, floor_sends_us=sends)
                for key in bench.CALLS}

    lines = bench.report([result(100.0, 80.0, 70.0), result(100.0, 2.0, 75.0)], None, "fabric/shm:shm")
    per_rank = [line for line in lines if line.startswith("floor per rank")]
    assert len(per_rank) == len(bench.CALLS)
    assert per_rank[0].endswith("80 / 70, 2 / 75")
    # The table's ratio is measured / floor per rank: the late rank's tiny floor gives the max.
    row = next(line for line in lines if line.startswith(f"| {bench.CALLS[0][0]} | {bench.CALLS[0][1]} |"))
    assert row.endswith("| 25.62 / 50.00 | 1.25 |")  # and the slowest rank against the slowest floor


def test_bench_sweep_lines_give_rdma_and_nvl_gbs_per_config_and_the_best():
    sys.path.insert(0, os.path.join(REPO, "tests", "python", "gpu"))
    import test_internode as bench  # bench/ is on sys.path

    def result(scale):
        r = {key: dict(rdma_bytes=1e6 * scale, nvl_bytes=2e6 * scale) for key in bench.CALLS}
        r["sweep"] = {(call, dtype, 24, chunk): 100.0 * scale * (2 if chunk == 4 else 1)
                      for call, dtype in bench.CALLS for chunk in (4, 8)}
        return r

    lines = bench.sweep_lines([result(1.0), result(2.0)])
    first = f"[tuning] {bench.CALLS[0][0]} {bench.CALLS[0][1]} SMs 24, RDMA chunk 4:"
    # rank 0: 1 MB in 200 us = 5 GB/s, rank 1: 2 MB in 400 us = 5 GB/s; NVL twice that; slowest rank 400 us
    assert f"{first} 5.00 GB/s (RDMA), 10.00 GB/s (NVL), slowest rank 400.0 us" in lines
    best = [line for line in lines if line.startswith("[tuning] best")]
    assert len(best) == len(bench.CALLS)
    assert all("RDMA chunk 8, slowest rank 200.0 us" in line for line in best)
    a = bench.parse_args(["--rdma-chunks", "4,12", "--no-sweep"])
    assert a.rdma_chunks == [4, 12] and a.no_sweep
    assert bench.sweep_lines([dict(result(1.0), sweep={})]) == []
