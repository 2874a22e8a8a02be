#!/usr/bin/env python3
"""Normal mode across nodes (issue 12): the figures DeepEP's tests/test_internode.py prints for uccl.ep (RDMA and NVL
GB/s per rank), beside the transport floor of the same calls measured in the same run. First it runs the correctness
checks of tests/python/gpu/intranode_checks.py (same flags; --quick for the reduced case matrix, --no-checks to
skip them): every row's source and bytes against the pure-torch reference, per-expert and per-node counts, cached
dispatch, combine with 0-2 biases and weights, FP8, num_worst_tokens, async, a CUDA graph.

    UCCL_EP_TRANSPORT=shm python3 scripts/launch.py --nproc 4 --ranks-per-node 2 -- bench/test_internode.py \
        --num-tokens 4096 --hidden 7168 --num-topk 8 --num-experts 256 --rdma-bytes 2000000000

Per rank and call (cached dispatch FP8 and BF16, combine BF16; the default config of Buffer.get_dispatch_config):
  - the time (CUDA events, median);
  - RDMA GB/s: the bytes of the rows this rank sends across nodes (one per (token, other node), bench/
    internode_reference.py's route) over the time, DeepEP's RDMA figure; NVL GB/s: the bytes of the rows it
    receives over the time, DeepEP's NVL figure;
  - the transport floor: the writes and signals the call hands the proxies (runtime/internode_floor_plan.hpp: the
    counts exchange, the record streams in chunks, the room given back), posted straight through the transport
    from the CPU between the same processes (bench/ll_floor.py's Floor), and the call's time over it.
Then the tuning sweep DeepEP's test ends with: every call at each --num-sms x --rdma-chunks config, the RDMA and
NVL GB/s per rank of each, and the best config per call.
Target (issue 12): each call within 1.5x of (floor + the NVLink time of its intranode part); pass that NVLink time
as --nvlink-us DISPATCH_FP8,DISPATCH_BF16,COMBINE (this bench with every rank on one node) to have the ratio to it.
"""
import functools
import os
import statistics
import sys
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "python", "gpu"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import bench_flags  # noqa: E402
import bench_json  # noqa: E402
import internode_reference as iref  # noqa: E402
import intranode_checks as checks  # noqa: E402
import ll_floor  # noqa: E402
from rank_group import Dist, fail, log0  # noqa: E402
import spawn_ranks  # noqa: E402
import test_intranode as ti  # noqa: E402  (time_call)

TARGET = 1.5
CALLS = (("dispatch", "FP8"), ("dispatch", "BF16"), ("combine", "BF16"))
NVLINK_NAMES = ("DISPATCH_FP8", "DISPATCH_BF16", "COMBINE")  # --nvlink-us, one number per call


def channel_begin(c: int, n: int, channels: int) -> int:
    """kernels/internode.hpp channelBegin: channel c's first of n items."""
    return n * c // channels


def stream_counts(all_in_rank: List[torch.Tensor], rank: int, P: int, channels: int) -> Dict[str, List[int]]:
    """Records per (channel, node) stream, [c * N + node], as the kernels cut them (kernels/internode.hpp):
    dispatch_sent: this rank's tokens of channel c's range that go to node b; dispatch_received: its peer on node a's
    tokens of channel c's range that go to this rank's node; combine: the partials back, the records of a source cut
    into channel shares (combine_sent to the source's node, combine_received from each node)."""
    R = len(all_in_rank)
    N, own, local = R // P, rank // P, rank % P

    def to_nodes(s: int) -> torch.Tensor:  # bool [T_s, N]
        return iref.token_nodes(all_in_rank[s].cpu().bool(), P)

    out = {k: [0] * (channels * N) for k in ("dispatch_sent", "dispatch_received", "combine_sent", "combine_received")}
    mine = to_nodes(rank)
    for b in range(N):
        if b == own:
            continue
        theirs = to_nodes(b * P + local)
        for c in range(channels):
            lo, hi = channel_begin(c, mine.size(0), channels), channel_begin(c + 1, mine.size(0), channels)
            out["dispatch_sent"][c * N + b] = int(mine[lo:hi, b].sum())
            lo, hi = channel_begin(c, theirs.size(0), channels), channel_begin(c + 1, theirs.size(0), channels)
            out["dispatch_received"][c * N + b] = int(theirs[lo:hi, own].sum())
        n_back, n_here = int(theirs[:, own].sum()), int(mine[:, b].sum())
        for c in range(channels):
            out["combine_sent"][c * N + b] = channel_begin(c + 1, n_back, channels) - channel_begin(c, n_back, channels)
            out["combine_received"][c * N + b] = channel_begin(c + 1, n_here, channels) - channel_begin(c, n_here,
                                                                                                        channels)
    return out


def run_bench(args, chk: checks.Checker, d: Dist) -> dict:
    buf, ep = chk.buffer, chk.ep
    per_rank, per_expert, in_rank = chk.layout
    P = chk.internode_ranks_per_node
    if not P:
        fail("bench/test_internode.py", "every rank shares one NVLink domain: emulate nodes with --ranks-per-node")
    config = ep.Buffer.get_dispatch_config(d.world)
    counts = stream_counts(chk.all_in_rank, d.rank, P, config.num_sms // 2)
    route = iref.route(chk.all_in_rank, P)
    res = {"copy_gbs": ti.copy_rate(args, chk.device)}
    rt = buf._runtime
    plans = {}
    y = None
    for call, dtype in CALLS:
        fp8 = dtype == "FP8"
        v = chk.variant("fp8" if fp8 else "bf16")
        recv, _, _, _, handle, _ = buf.dispatch(v.arg, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                                num_tokens_per_expert=per_expert)
        rows = handle[2]
        if rows != chk.expected.num_recv:  # the figures count these rows: they must be the right number
            fail(f"bench sanity check, {dtype} dispatch", f"{rows} rows received, expected {chk.expected.num_recv}")
        row_bytes = args.hidden * (1 if fp8 else 2) + (args.hidden // 128 * 4 if fp8 else 0)
        if call == "dispatch":
            seconds = ti.time_call(lambda: buf.dispatch(v.arg, handle=handle), args.bench_warmup, args.bench_iters)
        else:
            y = recv
            seconds = ti.time_call(lambda: buf.combine(y, handle), args.bench_warmup, args.bench_iters)
        cfg = config if call == "dispatch" else ep.Buffer.get_combine_config(d.world)  # the config the call ran
        plans[f"{call} {dtype}"] = rt.internode_floor_plan(
            call=call, hidden_bytes=args.hidden * (1 if fp8 else 2), num_scales=args.hidden // 128 if fp8 else 0,
            num_topk=0, num_sms=cfg.num_sms,
            num_max_rdma_chunked_send_tokens=cfg.num_max_rdma_chunked_send_tokens,
            num_max_rdma_chunked_recv_tokens=cfg.num_max_rdma_chunked_recv_tokens,
            sent=counts[f"{call}_sent"], received=counts[f"{call}_received"])
        res[(call, dtype)] = dict(us=seconds * 1e6, rdma_bytes=int(route.rdma_sent[d.rank]) * row_bytes,
                                  nvl_bytes=int(route.received[d.rank]) * row_bytes)
    torch.cuda.synchronize()
    floor = ll_floor.Floor(buf)
    fl = ll_floor.measure(floor, plans, lambda: buf._barrier("transport floor run"), args.bench_warmup,
                          args.bench_iters)
    floor.close()
    for call, dtype in CALLS:
        res[(call, dtype)].update(floor_us=fl[f"floor_{call} {dtype}_us"], floor_bytes=fl[f"floor_{call} {dtype}_bytes"],
                                  floor_sends_us=fl[f"floor_{call} {dtype}_sends_us"])
    res["sweep"] = {} if args.no_sweep else sweep(args, chk)
    return res


def sweep(args, chk: checks.Checker) -> Dict[tuple, float]:
    """DeepEP's tuning sweep: every call (cached dispatch FP8 and BF16, combine BF16) at each --num-sms x
    --rdma-chunks config (Config.num_max_rdma_chunked_send_tokens; the rest as the default config of the rank
    count): (call, dtype, SMs, RDMA chunk) -> this rank's median us."""
    buf, ep = chk.buffer, chk.ep
    per_rank, per_expert, in_rank = chk.layout
    out = {}
    for sms in args.num_sms:
        for chunk in args.rdma_chunks:
            for call, dtype in CALLS:
                base = (ep.Buffer.get_dispatch_config if call == "dispatch" else ep.Buffer.get_combine_config)(
                    len(chk.all_in_rank))
                cfg = ep.Config(sms, base.num_max_nvl_chunked_send_tokens, base.num_max_nvl_chunked_recv_tokens,
                                chunk, base.num_max_rdma_chunked_recv_tokens)
                v = chk.variant("fp8" if dtype == "FP8" else "bf16")
                recv, _, _, _, handle, _ = buf.dispatch(v.arg, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                                        num_tokens_per_expert=per_expert, config=cfg)
                if call == "dispatch":
                    fn = functools.partial(buf.dispatch, v.arg, handle=handle, config=cfg)
                else:
                    fn = functools.partial(buf.combine, recv, handle, config=cfg)
                out[(call, dtype, sms, chunk)] = ti.time_call(fn, args.bench_warmup, args.bench_iters) * 1e6
    return out


def sweep_lines(results: List[dict]) -> List[str]:
    """Rank 0's [tuning] lines, as DeepEP's internode test prints them: per call and config the RDMA and NVL GB/s per
    rank (mean; each rank's bytes of the default-config run over its time at this config) and the slowest rank's
    time, then the best config per call (the fastest slowest rank)."""
    lines = []
    for call, dtype in CALLS:
        configs = [k[2:] for k in results[0]["sweep"] if k[:2] == (call, dtype)]
        if not configs:
            continue
        slowest = {}
        for sms, chunk in configs:
            us = [r["sweep"][(call, dtype, sms, chunk)] for r in results]
            rdma = statistics.fmean(r[(call, dtype)]["rdma_bytes"] / u / 1e3 for r, u in zip(results, us))
            nvl = statistics.fmean(r[(call, dtype)]["nvl_bytes"] / u / 1e3 for r, u in zip(results, us))
            slowest[(sms, chunk)] = max(us)
            lines.append(f"[tuning] {call} {dtype} SMs {sms}, RDMA chunk {chunk}: {rdma:.2f} GB/s (RDMA), "
                         f"{nvl:.2f} GB/s (NVL), slowest rank {max(us):.1f} us")
        best = min(configs, key=lambda c: slowest[c])
        lines.append(f"[tuning] best {call} {dtype}: SMs {best[0]}, RDMA chunk {best[1]}, slowest rank "
                     f"{slowest[best]:.1f} us")
    return lines


def parse_nvlink_us(text):
    return ll_floor.parse_nvlink_us(text, NVLINK_NAMES)


def report(results: List[dict], nvlink_us, transport: str) -> List[str]:
    """Rank 0's table. Per rank, measured / floor mixes what a rank waits for with its own start skew; a collective
    call ends with its slowest rank, and so does the floor's exchange, so the last column divides the two maxima."""
    lines = [f"transport floor over {transport}: the same writes and signals posted from the CPU; target: each call "
             f"within {TARGET}x of floor + the NVLink time of its intranode part"
             + ("" if nvlink_us else " (pass --nvlink-us for it; the ratio below is to the floor alone)"),
             "| call | dtype | us mean / max | RDMA GB/s per rank | NVL GB/s per rank | floor us mean / max | "
             "floor MB per rank | measured / " + ("(floor + NVLink)" if nvlink_us else "floor") + " mean / max | "
             "slowest rank / slowest floor |",
             "|" + "---|" * 9]
    for i, key in enumerate(CALLS):
        per = [r[key] for r in results]
        us = [p["us"] for p in per]
        nvl = nvlink_us[i] if nvlink_us else 0.0
        ratios = [p["us"] / (p["floor_us"] + nvl) for p in per]
        rdma = [p["rdma_bytes"] / p["us"] / 1e3 for p in per]
        nvlgbs = [p["nvl_bytes"] / p["us"] / 1e3 for p in per]
        lines.append(f"| {key[0]} | {key[1]} | {statistics.fmean(us):.1f} / {max(us):.1f} | "
                     f"{statistics.fmean(rdma):.2f} | {statistics.fmean(nvlgbs):.2f} | "
                     f"{statistics.fmean(p['floor_us'] for p in per):.1f} / {max(p['floor_us'] for p in per):.1f} | "
                     f"{statistics.fmean(p['floor_bytes'] for p in per) / 1e6:.2f} | "
                     f"{statistics.fmean(ratios):.2f} / {max(ratios):.2f} | "
                     f"{max(us) / (max(p['floor_us'] for p in per) + nvl):.2f} |")
    # Per rank: a floor far below the others' means that rank started late (its signals were already there), so the
    # spread of one run's floors shows its start skew.
    for key in CALLS:
        lines.append(f"floor per rank, {key[0]} {key[1]} (us until its signals arrived / its own sends completed): "
                     + ", ".join(f"{r[key]['floor_us']:.0f} / {r[key]['floor_sends_us']:.0f}" for r in results))
    return lines


def json_records(args, results: List[dict], ranks_per_node: int) -> List[dict]:
    """One bench_json record per call: the slowest rank's time, the RDMA GB/s per rank (mean), against the transport
    floor (mean over ranks) measured in the same run."""
    out = []
    for key in CALLS:
        per = [r[key] for r in results]
        out.append(bench_json.record(
            "test_internode", "normal", call=key[0], dtype=key[1].lower(), num_ranks=len(results),
            ranks_per_node=ranks_per_node, tokens=args.num_tokens, hidden=args.hidden, topk=args.num_topk,
            experts=args.num_experts, latency_us=max(p["us"] for p in per),
            bandwidth_gbs=statistics.fmean(p["rdma_bytes"] / p["us"] / 1e3 for p in per),
            figures={"nvl_gbs": statistics.fmean(p["nvl_bytes"] / p["us"] / 1e3 for p in per)},
            params={"same_tokens": bool(args.same_tokens)},
            ref=bench_json.reference("transport floor", latency_us=statistics.fmean(p["floor_us"] for p in per))))
    return out


def run_all(args, d: Dist, chk: checks.Checker):
    chk.ep.Buffer.set_num_sms(args.num_sms[0])
    log0(d, f"topology: {chk.buffer.topology.describe()}")
    chk.setup(args.seed)
    if args.no_checks:
        chk.check_layout()  # the figures need the layout
    else:
        checks.run_checks(args, chk, d)
        dist.barrier()
        log0(d, "all checks passed")
        chk.setup(args.seed)  # the figures' inputs, as the checks left them
        chk.check_layout()
    if args.no_bench:
        log0(d, "sanity check passed (--no-bench: no figures)")
        return
    res = run_bench(args, chk, d)
    results = [None] * d.world
    dist.all_gather_object(results, res)
    if d.rank == 0:
        copy = statistics.fmean(r["copy_gbs"] for r in results)
        print(f"[copy] device-to-device copy_: {copy:.1f} GB/s per rank", flush=True)
        print("\n".join(report(results, parse_nvlink_us(args.nvlink_us), chk.buffer._runtime.transport_name())
                        + sweep_lines(results)), flush=True)
        if args.json:
            bench_json.write(args.json, json_records(args, results, chk.internode_ranks_per_node))


def internode_flags(p):
    g = p.add_argument_group("internode bench")
    g.add_argument("--nvlink-us", default=None, metavar=",".join(NVLINK_NAMES),
                   help="the NVLink time of each call's intranode part (this bench with every rank on one node), "
                        "added to the floor in the ratio")
    g.add_argument("--no-checks", action="store_true", help="skip the correctness checks before the figures")
    g.add_argument("--rdma-chunks", type=checks.int_list, default=[4, 8, 12, 16, 24, 32],
                   help="comma list of Config.num_max_rdma_chunked_send_tokens the closing sweep runs (with each "
                        "--num-sms)")
    g.add_argument("--no-sweep", action="store_true", help="skip the closing sweep")


def parse_args(argv=None):
    """The checks' shape flags (intranode_checks.build_parser, --rdma-bytes among them), the bench flags
    (bench/bench_flags.py), --nvlink-us and --no-checks."""
    args = bench_flags.parse_bench_args(checks, argv, low_latency=False, description=__doc__.split("\n\n")[0],
                                        extra=internode_flags)
    parse_nvlink_us(args.nvlink_us)  # a bad value fails before any rank starts
    return args


def main(argv=None):
    spawn_ranks.run_ranks(functools.partial(ti.run_rank, run_all=run_all), parse_args(argv))


if __name__ == "__main__":
    main()
