#!/usr/bin/env python3
"""Low-latency dispatch/combine: latency and bandwidth, DeepEP's tests/test_low_latency.py figures for uccl.ep.
The correctness checks live in tests/python/gpu/low_latency_checks.py (same flags); this prints figures after a
cheap sanity check of the call it times.

    python scripts/launch.py --nproc 8 -- bench/test_low_latency.py --num-tokens 128 --hidden 7168 \
        --num-topk 8 --num-experts 288
    torchrun --nproc_per_node 8 bench/test_low_latency.py ...

Timed: dispatch (FP8) + combine (BF16) pairs back to back as DeepEP times them; each call alone with all ranks
starting together (CUDA events, and the host time until each call returns); the send and receive halves of hook
mode apart; and the GPU time of each kernel launch (torch profiler, median) for single calls and hook halves. Bandwidth counts the (token,
destination-rank) messages this rank sends. Rank 0 prints a Markdown row for bench/RESULTS.md.

Between emulated nodes (some peers reached through the proxies) it also times the transport floor (bench/ll_floor.py):
the same writes and signals each call hands the proxies, posted straight through the same transport from the CPU,
and prints it beside the measured call with the ratio measured / (floor + NVLink-path time); the NVLink-path time of
each call comes from --nvlink-us DISPATCH,COMBINE (this bench's figures with every rank on one node). --no-floor
skips it.

    python scripts/launch.py --nproc 2 --ranks-per-node 1 -- bench/test_low_latency.py --nvlink-us 40,60

With one rank per GPU and NVLink peers, rank 0 also times the NVLink reference: a plain torch copy_ of the bytes its
dispatch sends to NVLink peers, every GPU to the next at once (bench/peer_copy.py --bytes), and prints the GPU time
of the dispatch send (hook) as a multiple of it.

Beside the shape flags of the checks, the bench flags of bench/bench_flags.py (shared with bench/test_intranode.py):
--num-processes N starts N ranks here instead of under a launcher, --disable-nvlink makes every rank a node of its
own (the proxy path), --use-logfmt combines with use_logfmt=True, --no-bench keeps only the sanity check, and
--json PATH writes one object per call (dispatch, combine, the pair; bench/bench_json.py).

    python bench/test_low_latency.py --num-processes 2 --disable-nvlink --json ll.json

Process group and GPU choice: tests/python/gpu/rank_group.py.
"""
import os
import statistics
import sys
import time
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "python", "gpu"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import bench_flags  # noqa: E402
import bench_json  # noqa: E402
import ll_floor  # noqa: E402
import ll_reference as ref  # noqa: E402
import peer_copy  # noqa: E402
import low_latency_checks as checks  # noqa: E402  (arguments, inputs, the Buffer)
from rank_group import Dist, all_gather_tensor, fail, log0  # noqa: E402
import spawn_ranks  # noqa: E402


def summary_line(r: dict) -> str:
    return (f"rank {r['rank']}/{r['world']}: dispatch {r['dispatch_us']:.1f} us {r['dispatch_gbs']:.2f} GB/s | "
            f"combine {r['combine_us']:.1f} us {r['combine_gbs']:.2f} GB/s | pair {r['pair_us']:.1f} us "
            f"(back-to-back loop {r['loop_us']:.1f} us) | hook: dispatch send {r['hook_dispatch_send_us']:.1f} "
            f"recv {r['hook_dispatch_recv_us']:.1f} us, combine send {r['hook_combine_send_us']:.1f} "
            f"recv {r['hook_combine_recv_us']:.1f} us | GPU (profiler): dispatch {r['gpu_dispatch_us']:.1f} combine "
            f"{r['gpu_combine_us']:.1f} us, hook send+recv {r['gpu_hook_dispatch_send_us']:.1f}+"
            f"{r['gpu_hook_dispatch_recv_us']:.1f} / {r['gpu_hook_combine_send_us']:.1f}+{r['gpu_hook_combine_recv_us']:.1f} us"
            f" | host per call: dispatch {r['host_dispatch_us']:.1f} combine {r['host_combine_us']:.1f} us")


def aggregate_lines(results: List[dict], args, ranks_per_node: int) -> List[str]:
    """A Markdown table (header and one row) for bench/RESULTS.md: mean and worst over ranks."""
    def mean(k):
        return statistics.fmean(r[k] for r in results)

    def mx(k):
        return max(r[k] for r in results)

    def mn(k):
        return min(r[k] for r in results)

    R = len(results)
    head = ("| ranks (per node) | tokens, hidden, topk, experts | dispatch us mean/max | dispatch GB/s mean/min | "
            "combine us mean/max | combine GB/s mean/min | pair us mean | loop us mean | hook send+recv us "
            "dispatch / combine | GPU us dispatch / combine | GPU hook send+recv us dispatch / combine | "
            "host us per call dispatch / combine |")
    sep = "|" + "---|" * 12
    row = (f"| {R} ({ranks_per_node}) | {args.num_tokens}, {args.hidden}, {args.num_topk}, {args.num_experts} | "
           f"{mean('dispatch_us'):.1f} / {mx('dispatch_us'):.1f} | {mean('dispatch_gbs'):.2f} / {mn('dispatch_gbs'):.2f} | "
           f"{mean('combine_us'):.1f} / {mx('combine_us'):.1f} | {mean('combine_gbs'):.2f} / {mn('combine_gbs'):.2f} | "
           f"{mean('pair_us'):.1f} | {mean('loop_us'):.1f} | "
           f"{mean('hook_dispatch_send_us'):.1f}+{mean('hook_dispatch_recv_us'):.1f} / "
           f"{mean('hook_combine_send_us'):.1f}+{mean('hook_combine_recv_us'):.1f} | "
           f"{mean('gpu_dispatch_us'):.1f} / {mean('gpu_combine_us'):.1f} | "
           f"{mean('gpu_hook_dispatch_send_us'):.1f}+{mean('gpu_hook_dispatch_recv_us'):.1f} / "
           f"{mean('gpu_hook_combine_send_us'):.1f}+{mean('gpu_hook_combine_recv_us'):.1f} | "
           f"{mean('host_dispatch_us'):.1f} / {mean('host_combine_us'):.1f} |")
    return [head, sep, row]


def json_records(results: List[dict], args, ranks_per_node: int) -> List[dict]:
    """One bench_json record per call (dispatch, combine, both back to back): the mean over ranks, the worst rank
    and the GPU, host and hook times as further figures, and the transport floor (when measured) as reference."""
    def mean(k):
        return statistics.fmean(r[k] for r in results)

    first = results[0]
    shape = dict(num_ranks=len(results), ranks_per_node=ranks_per_node, tokens=args.num_tokens, hidden=args.hidden,
                 topk=args.num_topk, experts=args.num_experts)
    params = {"use_logfmt": bool(args.use_logfmt), "bench_iters": args.bench_iters}
    if "transport" in first:
        params["transport"] = first["transport"]
    out = []
    for call, dtype in (("dispatch", "fp8"), ("combine", "logfmt" if args.use_logfmt else "bf16")):
        floor = (bench_json.reference("transport floor", latency_us=mean(f"floor_{call}_us"))
                 if f"floor_{call}_us" in first else None)
        if floor is None and call == "dispatch" and "nvlink_ref_us" in first:
            floor = bench_json.reference("NVLink copy_ of the bytes sent to NVLink peers",
                                         latency_us=first["nvlink_ref_us"])
        figures = {"latency_us_max": max(r[f"{call}_us"] for r in results),
                   "bandwidth_gbs_min": min(r[f"{call}_gbs"] for r in results),
                   "gpu_us": mean(f"gpu_{call}_us"), "host_us": mean(f"host_{call}_us"),
                   "hook_send_us": mean(f"hook_{call}_send_us"), "hook_recv_us": mean(f"hook_{call}_recv_us")}
        out.append(bench_json.record("test_low_latency", "low_latency", call=call, dtype=dtype, **shape,
                                     latency_us=mean(f"{call}_us"), bandwidth_gbs=mean(f"{call}_gbs"),
                                     figures=figures, params=params, ref=floor))
    out.append(bench_json.record("test_low_latency", "low_latency", call="dispatch+combine", dtype="fp8+" +
                                 out[1]["dtype"], **shape, latency_us=mean("pair_us"),
                                 figures={"back_to_back_loop_us": mean("loop_us")}, params=params))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------------------------
def median_us(pairs):
    return statistics.median(a.elapsed_time(b) * 1e3 for a, b in pairs)


def kernel_launches(body, iters: int) -> dict:
    """Runs body() iters times under the torch profiler; returns the GPU time (us) of every dispatch and combine
    kernel launch, in launch order: {"dispatch": [...], "combine": [...]}. GPU time only: the gaps while the host
    prepares a call are not in it (the host time per call is measured apart)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            body()
        torch.cuda.synchronize()
    found = []
    for e in prof.events():
        if not str(getattr(e, "device_type", "")).endswith("CUDA"):
            continue
        for kind in ("dispatch", "combine"):
            if f"::{kind}(" in e.name:
                found.append((e.time_range.start, kind, e.time_range.elapsed_us()))
    out = {"dispatch": [], "combine": []}
    for _, kind, us in sorted(found):
        out[kind].append(us)
    return out


def events(n):
    return [torch.cuda.Event(enable_timing=True) for _ in range(n)]


def sanity_check(chk: checks.Checker, inp, recv_count, combined):
    """The timed calls move what the figures count: each local expert receives the rows the reference says, and
    combine returns finite values. (Everything else is tests/python/gpu/low_latency_checks.py's job.)"""
    want = inp["expected"].recv_count
    if not torch.equal(recv_count.cpu().long(), want.long()):
        fail("bench sanity check", f"recv_count {recv_count.tolist()}, expected {want.tolist()}")
    if not bool(torch.isfinite(combined.float()).all()):
        fail("bench sanity check", "combined_x holds NaN or Inf")


def prepare(args, chk: checks.Checker):
    """One FP8 dispatch and a combine of what it received (dequantized: the simulated expert output), checked by
    sanity_check. Returns (inputs, expert output y, combine's out tensor)."""
    inp = chk.inputs.get("main") or chk.add_inputs("main", args.seed)
    x, idx, w = inp["x"], inp["topk_idx"], inp["topk_weights"]
    buf = chk.buffer
    recv, recv_count, handle, _, _ = buf.low_latency_dispatch(x, idx, chk.M, chk.E, use_fp8=True)
    torch.cuda.synchronize()
    y = torch.empty(recv[0].shape, dtype=torch.bfloat16, device=chk.device)
    for e in range(chk.E_local):  # one expert at a time: the float32 copy of all of recv_x is large
        y[e] = ref.dequantize(recv[0][e], recv[1][e]).to(torch.bfloat16)
    out = torch.empty(args.num_tokens, args.hidden, dtype=torch.bfloat16, device=chk.device)
    sanity_check(chk, inp, recv_count, buf.low_latency_combine(y, idx, w, handle, out=out,
                                                               use_logfmt=args.use_logfmt)[0])
    return inp, y, out


def nvlink_reference(args, d: Dist, idx: torch.Tensor, ranks_per_node: int) -> dict:
    """Rank 0: the physical reference of the NVLink path, a plain torch copy_ of the bytes this rank's dispatch sends
    to its NVLink peers, every GPU to the next at once (bench/peer_copy.py --bytes, as a child that sees the ranks'
    GPUs). {} on other ranks, where the ranks share a GPU or have no NVLink peer, or when the child fails (said)."""
    if d.rank != 0:
        return {}
    n = ref.nvlink_dispatch_bytes(idx.cpu(), args.hidden, d.rank, d.world, args.num_experts, ranks_per_node)
    out = peer_copy.measure_in_child(["--bytes", str(n), "--iters", "50"], d.world) if n > 0 else None
    if out is None or "us" not in out:
        return {}
    return {"nvlink_ref_bytes": n, "nvlink_ref_us": float(out["us"])}


def nvlink_reference_line(results: List[dict]) -> List[str]:
    """Rank 0's line on the NVLink reference (nvlink_reference), with the dispatch send's GPU time against it."""
    first = results[0]
    if "nvlink_ref_us" not in first:
        return []
    send = statistics.fmean(r["gpu_hook_dispatch_send_us"] for r in results)
    return [f"[copy] NVLink reference: torch copy_ of the {first['nvlink_ref_bytes'] / 1e6:.2f} MB one dispatch sends "
            f"to NVLink peers, every GPU to the next at once: {first['nvlink_ref_us']:.1f} us; the GPU dispatch send "
            f"(hook, mean {send:.1f} us) takes {send / first['nvlink_ref_us']:.2f}x that"]


def run_bench(args, chk: checks.Checker, d: Dist, ranks_per_node: int) -> dict:
    inp, y, out = prepare(args, chk)
    x, idx, w = inp["x"], inp["topk_idx"], inp["topk_weights"]
    buf, M, E = chk.buffer, chk.M, chk.E
    warm, iters = args.bench_warmup, args.bench_iters

    def dispatch(hook=False):
        return buf.low_latency_dispatch(x, idx, M, E, use_fp8=True, return_recv_hook=hook)

    def combine(h, hook=False):
        return buf.low_latency_combine(y, idx, w, h, out=out, use_logfmt=args.use_logfmt, return_recv_hook=hook)

    def sync_all():
        torch.cuda.synchronize()
        dist.barrier()

    # 1. DeepEP's way: dispatch + combine pairs back to back, no barrier in between.
    for _ in range(warm):
        combine(dispatch()[2])
    sync_all()
    start, end = events(2)
    start.record()
    for _ in range(iters):
        combine(dispatch()[2])
    end.record()
    torch.cuda.synchronize()
    loop_us = start.elapsed_time(end) * 1e3 / iters

    # 2. Each call timed by events, all ranks starting together.
    disp, comb, pair, host_d, host_c = [], [], [], [], []
    for i in range(warm + iters):
        sync_all()
        e = events(3)
        e[0].record()
        t0 = time.perf_counter()
        h = dispatch()[2]
        t1 = time.perf_counter()
        e[1].record()
        t2 = time.perf_counter()
        combine(h)
        t3 = time.perf_counter()
        e[2].record()
        if i >= warm:
            disp.append((e[0], e[1]))
            comb.append((e[1], e[2]))
            pair.append((e[0], e[2]))
            host_d.append(t1 - t0)
            host_c.append(t3 - t2)
    torch.cuda.synchronize()

    # 3. Hook mode: send and receive halves apart; the receive half runs once every rank's sends are done.
    hs, hr, cs, cr = [], [], [], []
    for i in range(warm + iters):
        sync_all()
        e = events(8)
        e[0].record()
        r = dispatch(hook=True)
        e[1].record()
        sync_all()
        e[2].record()
        r[4]()
        e[3].record()
        e[4].record()
        c = combine(r[2], hook=True)
        e[5].record()
        sync_all()
        e[6].record()
        c[2]()
        e[7].record()
        if i >= warm:
            hs.append((e[0], e[1]))
            hr.append((e[2], e[3]))
            cs.append((e[4], e[5]))
            cr.append((e[6], e[7]))
    torch.cuda.synchronize()

    # 4. GPU time per kernel (profiler): each call alone after a barrier, then the hook halves apart.
    def plain():
        sync_all()
        combine(dispatch()[2])

    def hooked():
        sync_all()
        r = dispatch(hook=True)
        sync_all()
        r[4]()
        c = combine(r[2], hook=True)
        sync_all()
        c[2]()

    k_plain = kernel_launches(plain, iters)
    k_hook = kernel_launches(hooked, iters)
    med = statistics.median

    # 5. The transport floor of both calls (between emulated nodes), all ranks starting together as in 2.
    floor = run_floor(args, chk, idx, sync_all)
    # 6. The NVLink reference (rank 0, while the others wait).
    nvlink = nvlink_reference(args, d, idx, ranks_per_node)
    sync_all()

    dbytes, cbytes = ref.dispatch_bytes(idx, args.hidden, args.use_logfmt)
    res = dict(rank=d.rank, world=d.world, dispatch_us=median_us(disp), combine_us=median_us(comb),
               pair_us=median_us(pair), loop_us=loop_us, hook_dispatch_send_us=median_us(hs),
               hook_dispatch_recv_us=median_us(hr), hook_combine_send_us=median_us(cs),
               hook_combine_recv_us=median_us(cr), dispatch_bytes=dbytes, combine_bytes=cbytes,
               gpu_dispatch_us=med(k_plain["dispatch"]), gpu_combine_us=med(k_plain["combine"]),
               gpu_hook_dispatch_send_us=med(k_hook["dispatch"][0::2]),
               gpu_hook_dispatch_recv_us=med(k_hook["dispatch"][1::2]),
               gpu_hook_combine_send_us=med(k_hook["combine"][0::2]),
               gpu_hook_combine_recv_us=med(k_hook["combine"][1::2]),
               host_dispatch_us=med(host_d) * 1e6, host_combine_us=med(host_c) * 1e6)
    res["dispatch_gbs"] = dbytes / 1e3 / res["dispatch_us"]  # bytes/us = MB/s; /1e3 = GB/s
    res["combine_gbs"] = cbytes / 1e3 / res["combine_us"]
    res.update(floor)
    res.update(nvlink)
    return res


def run_floor(args, chk: checks.Checker, idx, sync_all) -> dict:
    """The floor's figures (ll_floor.measure), or {} where no peer is reached through the proxies or --no-floor.
    Collective: every rank reaches the same decision (the topology is symmetric)."""
    runtime = getattr(chk.buffer, "_runtime", None)  # absent on the CPU stand-ins the tests use
    transport = runtime.transport_name() if runtime is not None else ""
    if args.no_floor or not transport:
        return {}
    if args.use_logfmt:  # the floor posts what a BF16 combine hands the proxies
        if dist.get_rank() == 0:
            print("no transport floor with --use-logfmt (it plans BF16 combine rows)", flush=True)
        return {}
    counts = ll_floor.expert_counts([i.cpu() for i in all_gather_tensor(idx)], chk.E)
    floor = ll_floor.Floor(chk.buffer)
    plans = {c: floor.plan(c, counts, chk.M, args.hidden, chk.E) for c in ll_floor.CALLS}
    res = ll_floor.measure(floor, plans, sync_all, args.bench_warmup, args.bench_iters)
    floor.close()
    res["transport"] = transport
    return res


# ---------------------------------------------------------------------------------------------------------------
def run_all(args, d: Dist, chk: checks.Checker, ranks_per_node: int):
    """The sanity check and (unless --no-bench) the figures: every rank's summary line, then rank 0's table."""
    if args.no_bench:
        prepare(args, chk)
        log0(d, "sanity check passed (--no-bench: no figures)")
        return
    res = run_bench(args, chk, d, ranks_per_node)
    print(summary_line(res) + (ll_floor.summary_part(res) if "transport" in res else ""), flush=True)
    results = [None] * d.world
    dist.all_gather_object(results, res)
    if d.rank == 0:
        lines = aggregate_lines(results, args, ranks_per_node) + nvlink_reference_line(results)
        if "transport" in res:
            lines += ll_floor.floor_lines(results, ll_floor.parse_nvlink_us(args.nvlink_us), res["transport"])
        print("\n".join(lines), flush=True)
        if args.json:
            bench_json.write(args.json, json_records(results, args, ranks_per_node))


def parse_args(argv=None):
    """The checks' shape flags (low_latency_checks.build_parser) and the bench flags (bench/bench_flags.py)."""
    return bench_flags.parse_bench_args(checks, argv, low_latency=True, description=__doc__.split("\n\n")[0])


def run_rank(args):
    """One rank: under scripts/launch.py or torchrun, or started by --num-processes."""
    bench_flags.apply_disable_nvlink(args)
    d, chk, ranks_per_node = checks.start(args, "bench")
    run_all(args, d, chk, ranks_per_node)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None):
    spawn_ranks.run_ranks(run_rank, parse_args(argv))


if __name__ == "__main__":
    main()
