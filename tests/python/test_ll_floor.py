"""The transport floor's plan and figures on the CPU: _C.low_latency_floor_plan (runtime/ll_floor_plan.hpp) against
bench/ll_reference.py's layout, both sides of every signal agreeing, and bench/ll_floor.py's counts, timing loop,
collective open and close, and printed lines. Bytes moving between processes: tests/cpp/e2e/test_floor.cpp."""
import os
import sys
import types

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))

import ll_floor  # noqa: E402
import ll_reference as ref  # noqa: E402


def random_topk(gen, tokens, k, experts, masked):
    idx = torch.topk(torch.rand(tokens, experts, generator=gen), k, dim=1).indices.long()
    if masked:
        idx.view(-1)[torch.randperm(tokens * k, generator=gen)[:masked]] = -1
    return idx


def case(seed, R=4, epr=3, M=7, K=3):
    gen = torch.Generator().manual_seed(seed)
    E = R * epr
    all_idx = [random_topk(gen, int(torch.randint(0, M + 1, (1,), generator=gen)), K, E, masked=2) for _ in range(R)]
    return all_idx, E, M


def plans(native, layout, call, counts, proxy, threads=2, half=0):
    R = layout.num_ranks
    return [native.low_latency_floor_plan(layout=layout, call=call, rank=r, counts=counts, proxy_peers=proxy[r],
                                          half=half, num_rings=2 * threads, num_threads=threads) for r in range(R)]


def test_expert_counts_match_the_reference_layout():
    for seed in range(6):
        all_idx, E, M = case(seed)
        R = len(all_idx)
        counts = ll_floor.expert_counts(all_idx, E)
        assert len(counts) == R * E
        for rank in range(R):
            exp = ref.expected_layout(all_idx, E, R, rank, M)
            for el in range(E // R):
                for s in range(R):
                    assert counts[s * E + rank * (E // R) + el] == int(exp.counts[el, s])


@pytest.mark.parametrize("ranks_per_node", [1, 2])
@pytest.mark.parametrize("half", [0, 1])
def test_dispatch_plan_matches_the_reference(native, ranks_per_node, half):
    threads = 2
    for seed in range(4):
        all_idx, E, M = case(seed)
        R = len(all_idx)
        H = 256
        epr = E // R
        L = native.low_latency_layout(M, H, R, E)
        counts = ll_floor.expert_counts(all_idx, E)
        proxy = [[p // ranks_per_node != r // ranks_per_node for p in range(R)] for r in range(R)]
        half_off, half_sig = half * L.half_bytes, half * L.signals_per_half
        ps = plans(native, L, "dispatch", counts, proxy, threads, half)
        for r in range(R):
            ops = ps[r].ops
            # One op per global expert whose rank is a proxy peer, in expert order.
            experts = [e for e in range(E) if proxy[r][e // epr]]
            assert len(ops) == len(experts)
            for o, e in zip(ops, experts):
                n = counts[r * E + e]
                dst, el = divmod(e, epr)
                assert (o.peer, o.lane, o.bytes) == (dst, (e % (2 * threads)) % threads, n * L.msg_bytes)
                assert o.src_offset == half_off + L.send_off + e * M * L.msg_bytes
                assert o.dst_offset == half_off + L.dispatch_recv_off + ((el * R + r) * M) * L.msg_bytes
                assert (o.signal_index, o.signal_value) == (half_sig + L.dispatch_count_index + el * R + r, n + 1)
            assert ps[r].writes == sum(1 for e in experts if counts[r * E + e] > 0)
            # What rank r expects: count + 1 from every proxy source, for each of its local experts.
            exp = ref.expected_layout(all_idx, E, R, r, M)
            want = {(s, half_sig + L.dispatch_count_index + el * R + s): int(exp.counts[el, s]) + 1
                    for s in range(R) if proxy[r][s] for el in range(epr)}
            assert {(x.peer, x.signal_index): x.value for x in ps[r].expect} == want
        check_both_sides(ps, R)


@pytest.mark.parametrize("ranks_per_node", [1, 2])
def test_combine_plan_matches_the_reference(native, ranks_per_node):
    threads = 3
    for seed in range(4):
        all_idx, E, M = case(seed, R=4, epr=2)
        R, H = len(all_idx), 384
        epr = E // R
        L = native.low_latency_layout(M, H, R, E)
        counts = ll_floor.expert_counts(all_idx, E)
        proxy = [[p // ranks_per_node != r // ranks_per_node for p in range(R)] for r in range(R)]
        ps = plans(native, L, "combine", counts, proxy, threads)
        for r in range(R):
            exp = ref.expected_layout(all_idx, E, R, r, M)
            pairs = [(el, s) for el in range(epr) for s in range(R) if proxy[r][s] and exp.counts[el, s] > 0]
            assert len(ps[r].ops) == len(pairs)
            for o, (el, s) in zip(ps[r].ops, pairs):
                expert = r * epr + el
                n, begin = int(exp.counts[el, s]), int(exp.begins[el, s])
                assert (o.peer, o.lane, o.bytes) == (s, ((el * R + s) % (2 * threads)) % threads, n * L.row_bytes)
                assert o.src_offset == L.send_off + (el * R * M + begin) * L.row_bytes  # layout_range's begin
                assert o.dst_offset == L.combine_recv_off + expert * M * L.row_bytes
                assert (o.signal_index, o.signal_value) == (L.combine_flag_index + expert, 1)
            # Every expert on a proxy peer that this rank sent rows to answers once; the others send nothing.
            want = {(e // epr, L.combine_flag_index + e): 1 for e in range(E)
                    if proxy[r][e // epr] and counts[r * E + e] > 0}
            assert {(x.peer, x.signal_index): x.value for x in ps[r].expect} == want
            assert ps[r].bytes == sum(int(exp.counts[el, s]) for el, s in pairs) * L.row_bytes
        check_both_sides(ps, R)


def check_both_sides(ps, R):
    """What each rank expects is exactly the sum of what the others' plans send it, counter by counter, and writes
    to one rank never overlap."""
    for r in range(R):
        sent = {}
        ranges = []
        for s in range(R):
            for o in ps[s].ops:
                if o.peer == r:
                    sent[(s, o.signal_index)] = sent.get((s, o.signal_index), 0) + o.signal_value
                    if o.bytes:
                        ranges.append((o.dst_offset, o.dst_offset + o.bytes))
        assert {(x.peer, x.signal_index): x.value for x in ps[r].expect} == sent
        ranges.sort()
        assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))


def test_one_node_plans_nothing_and_bad_input_is_named(native):
    L = native.low_latency_layout(4, 128, 2, 4)
    p = native.low_latency_floor_plan(layout=L, call="dispatch", rank=0, counts=[1, 0, 2, 0, 0, 0, 0, 3],
                                      proxy_peers=[False, False], num_rings=2, num_threads=1)
    assert p.ops == [] and p.expect == [] and p.writes == 0
    kw = dict(layout=L, rank=0, proxy_peers=[False, True], num_rings=2, num_threads=1)
    with pytest.raises(ValueError, match="counts holds 3 values, expected num_ranks \\* num_experts = 8"):
        native.low_latency_floor_plan(call="combine", counts=[0, 0, 0], **kw)
    with pytest.raises(ValueError, match="rank 1 sends 5 tokens to expert 0; expected 0 to 4"):
        native.low_latency_floor_plan(call="combine", counts=[0] * 4 + [5, 0, 0, 0], **kw)
    with pytest.raises(ValueError, match="'gather': expected 'dispatch' or 'combine'"):
        native.low_latency_floor_plan(call="gather", counts=[0] * 8, **kw)
    with pytest.raises(ValueError, match="proxy_peer holds 1 values"):
        native.low_latency_floor_plan(call="dispatch", counts=[0] * 8, **dict(kw, proxy_peers=[True]))


def test_parse_nvlink_us():
    assert ll_floor.parse_nvlink_us("12.5,30") == (12.5, 30.0)
    assert ll_floor.parse_nvlink_us(None) is None and ll_floor.parse_nvlink_us("") is None
    for bad in ("12", "1,2,3", "a,b", "-1,2", "nan,1"):
        with pytest.raises(ValueError, match="DISPATCH,COMBINE"):
            ll_floor.parse_nvlink_us(bad)


def result(rank, dispatch_us, combine_us, floor_d, floor_c):
    r = dict(rank=rank, dispatch_us=dispatch_us, combine_us=combine_us, floor_dispatch_us=floor_d,
             floor_combine_us=floor_c)
    for c in ll_floor.CALLS:
        r.update({f"floor_{c}_writes": 3, f"floor_{c}_bytes": 2_000_000, f"floor_{c}_signals": 4,
                  f"floor_{c}_sends_us": 1.0})
    return r


def test_floor_lines_with_and_without_the_nvlink_path():
    results = [result(0, 100.0, 200.0, 40.0, 100.0), result(1, 120.0, 150.0, 60.0, 100.0)]
    lines = ll_floor.floor_lines(results, (20.0, 50.0), "fabric/shm:shm")
    assert lines[0].startswith("transport floor over fabric/shm:shm") and "--nvlink-us" not in lines[0]
    assert lines[1].count("|") == lines[2].count("|") == lines[3].count("|") == lines[4].count("|")
    # dispatch ratios 100 / 60 = 1.67 and 120 / 80 = 1.5; combine 200 / 150 = 1.33 and 150 / 150 = 1.0
    assert lines[3] == "| dispatch | 110.0 / 120.0 | 50.0 / 60.0 | 20.0 | 1.58 / 1.67 | no |"
    assert lines[4] == "| combine | 175.0 / 200.0 | 100.0 / 100.0 | 50.0 | 1.17 / 1.33 | yes |"
    alone = ll_floor.floor_lines(results, None, "fabric/tcp;ofi_rxm:lo")
    assert "--nvlink-us DISPATCH,COMBINE" in alone[0] and "measured / floor" in alone[1]
    assert alone[3] == "| dispatch | 110.0 / 120.0 | 50.0 / 60.0 | - | 2.25 / 2.50 | - |"
    assert ll_floor.floor_lines([dict(rank=0, dispatch_us=1.0)], None, "x") == []
    part = ll_floor.summary_part(results[0])
    assert part == (" | floor: dispatch 40.0 us (3 writes, 2.00 MB, 4 signals), combine 100.0 us (3 writes, 2.00 MB, "
                    "4 signals)")


def test_measure_takes_the_median_after_the_warmup():
    starts = []
    seconds = iter([9.0, 1e-6, 3e-6, 2e-6, 9.0, 5e-6, 4e-6, 6e-6])  # dispatch: warm-up then 3 runs; combine alike
    floor = types.SimpleNamespace(run=lambda plan: types.SimpleNamespace(seconds=next(seconds), sends_seconds=1e-6))
    plan = types.SimpleNamespace(writes=2, bytes=100, ops=[1, 2, 3])
    r = ll_floor.measure(floor, {"dispatch": plan, "combine": plan}, lambda: starts.append(1), warmup=1, iters=3)
    assert len(starts) == 8
    assert r["floor_dispatch_us"] == pytest.approx(2.0) and r["floor_combine_us"] == pytest.approx(5.0)
    assert (r["floor_dispatch_writes"], r["floor_dispatch_bytes"], r["floor_dispatch_signals"]) == (2, 100, 3)


def test_the_floor_opens_and_closes_collectively():
    log = []

    class Runtime:
        def transport_floor_info(self):
            log.append("info")
            return b"me"

        def transport_floor_connect(self, infos):
            log.append(("connect", infos))

        def transport_floor_close(self):
            log.append("close")

    buf = types.SimpleNamespace(_runtime=Runtime(), _all_gather=lambda obj: [obj, b"peer"],
                                _barrier=lambda call: log.append("barrier"))
    f = ll_floor.Floor(buf)
    f.close()
    assert log == ["info", ("connect", [b"me", b"peer"]), "barrier", "close"]
