#!/usr/bin/env python3
"""Normal-mode (intranode) dispatch/combine: a tuning sweep with bandwidth, DeepEP's tests/test_intranode.py
figures for uccl.ep. The correctness checks live in tests/python/gpu/intranode_checks.py (same flags); this
prints figures after a cheap sanity check of the layout and the receive counts.

    python scripts/launch.py --nproc 8 -- bench/test_intranode.py --num-tokens 4096 --hidden 7168 \
        --num-topk 8 --num-experts 256
    torchrun --nproc_per_node 8 bench/test_intranode.py ...

Inputs as the checks build them (Checker.setup: ranks send different token counts unless --same-tokens).
Benchmark (unless --no-bench): cached dispatch (FP8, BF16) and combine over --num-sms x --chunks
(Config.num_max_nvl_chunked_send_tokens) and the default config; GB/s per rank = received rows x row bytes
(FP8: data + scales; combine: the same rows in BF16) / time, DeepEP's count. The device-to-device copy rate
(torch copy_ of --copy-mb, every rank at once, bytes copied / time) is measured in the same run and each figure is
also given as a fraction of it. Rank 0 prints one summary row per (call, dtype) for a results table.

Beside the shape flags of the checks, the bench flags of bench/bench_flags.py (shared with bench/test_low_latency.py):
--num-processes N starts N ranks here instead of under a launcher, --disable-nvlink makes every rank a node of its
own, --no-bench (formerly --skip-bench) keeps only the sanity check, and --json PATH writes one object per (call,
dtype) at its best config, with the copy rate as reference (bench/bench_json.py).

    python bench/test_intranode.py --num-processes 2 --json intranode.json

Process group and GPU choice: tests/python/gpu/rank_group.py (gloo when ranks share a GPU).
"""
import os
import statistics
import sys
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "python", "gpu"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import bench_flags  # noqa: E402
import bench_json  # noqa: E402
import intranode_checks as checks  # noqa: E402  (arguments, inputs, the Buffer; FP8_DTYPE)
import peer_copy  # noqa: E402
from rank_group import Dist, fail, log0  # noqa: E402
import spawn_ranks  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# The report (CPU only; tested in tests/python/test_intranode_reference.py)
# ---------------------------------------------------------------------------------------------------------------
def summary_lines(rows: List[dict]) -> List[str]:
    """A Markdown table (header, separator, one row per (call, dtype)) for bench/RESULTS.md."""
    head = ("| call | dtype | ranks | tokens x hidden, top-k of experts | best config | GB/s per rank mean / min | "
            "us (slowest rank) | copy GB/s | of copy | GPU-to-GPU GB/s | of GPU-to-GPU |")
    out = [head, "|" + "---|" * 11]
    for r in rows:
        out.append(f"| {r['call']} | {r['dtype']} | {r['ranks']} | {r['shape']} | SMs {r['sms']}, chunk {r['chunk']} "
                   f"| {r['gbs_mean']:.2f} / {r['gbs_min']:.2f} | {r['us']:.1f} | {r['copy_gbs']:.1f} | "
                   f"{r['gbs_mean'] / r['copy_gbs']:.3f} | " +
                   (f"{r['peer_gbs']:.1f} | {r['gbs_mean'] / r['peer_gbs']:.3f} |" if r.get("peer_gbs") else "- | - |"))
    return out


def json_records(args, rows: List[dict], ranks_per_node: int) -> List[dict]:
    """One bench_json record per summary row (call, dtype at its best config): GB/s per rank (mean) and the slowest
    rank's time, against the device-to-device copy rate measured in the same run."""
    out = []
    for r in rows:
        figures = {"bandwidth_gbs_min": r["gbs_min"]}
        if r.get("peer_gbs"):
            figures["gpu_to_gpu_copy_gbs"] = r["peer_gbs"]
        out.append(bench_json.record(
            "test_intranode", "normal", call=r["call"], dtype=r["dtype"].lower(), num_ranks=r["ranks"],
            ranks_per_node=ranks_per_node, tokens=args.num_tokens, hidden=args.hidden, topk=args.num_topk,
            experts=args.num_experts, latency_us=r["us"], bandwidth_gbs=r["gbs_mean"], figures=figures,
            params={"num_sms": r["sms"], "chunk": r["chunk"], "same_tokens": bool(args.same_tokens)},
            ref=bench_json.reference("device-to-device copy_", bandwidth_gbs=r["copy_gbs"])))
    return out


def best_config(per_rank: List[dict]) -> tuple:
    """The config whose slowest rank is fastest: per_rank[r] maps config -> (seconds, bytes)."""
    configs = [c for c in per_rank[0] if c != "default"]
    return min(configs, key=lambda c: max(p[c][0] for p in per_rank))


# ---------------------------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------------------------
def time_call(fn, warmup: int, iters: int) -> float:
    """Median seconds of fn() on the current stream (CUDA events), after warm-up and a barrier."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    dist.barrier()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in pairs) / 1e3


def copy_rate(args, device) -> float:
    """GB/s of a device-to-device torch copy_ (bytes copied / time), every rank copying at once."""
    n = args.copy_mb << 20
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    t = time_call(lambda: dst.copy_(src), 2, max(3, args.bench_iters // 2))
    return n / t / 1e9


def peer_copy_rate(args, d: Dist) -> float:
    """Rank 0: GB/s each GPU sends in a plain torch copy_ to the next GPU, all GPUs at once (bench/peer_copy.py,
    run as a child that sees every GPU of the ranks). 0.0 when the ranks share one GPU or the child fails (said)."""
    if d.rank != 0:
        return 0.0
    out = peer_copy.measure_in_child(["--mb", str(args.copy_mb)], d.world)
    if out is None or "gbs_per_gpu" not in out:
        return 0.0  # figures are given against the local copy only
    return float(out["gbs_per_gpu"])


def run_bench(args, chk: checks.Checker, d: Dist) -> dict:
    buf, ep = chk.buffer, chk.ep
    per_rank, per_expert, in_rank = chk.layout
    configs = {(s, c): ep.Config(s, c, 256) for s in args.num_sms for c in args.chunks}
    res = {"copy_gbs": copy_rate(args, chk.device)}
    dist.barrier()
    res["peer_copy_gbs"] = peer_copy_rate(args, d)
    dist.barrier()
    dtypes = (("FP8", "fp8"), ("BF16", "bf16")) if checks.FP8_DTYPE is not None else (("BF16", "bf16"),)
    for name, mode in dtypes:
        v = chk.variant(mode)
        recv, _, _, _, handle, _ = buf.dispatch(v.arg, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                                num_tokens_per_expert=per_expert)
        rows = handle[2]
        if rows != chk.expected.num_recv:  # the figures count these rows: they must be the right number
            fail(f"bench sanity check, {name} dispatch", f"{rows} rows received, expected {chk.expected.num_recv}")
        row_bytes = args.hidden * (1 if mode == "fp8" else 2) + (args.hidden // 128 * 4 if mode == "fp8" else 0)
        times = {key: (time_call(lambda: buf.dispatch(v.arg, handle=handle, config=cfg), args.bench_warmup,
                                 args.bench_iters), rows * row_bytes) for key, cfg in configs.items()}
        times["default"] = (time_call(lambda: buf.dispatch(v.arg, handle=handle), args.bench_warmup,
                                      args.bench_iters), rows * row_bytes)
        res[("dispatch", name)] = times
        if mode == "bf16":
            y = recv
            times = {key: (time_call(lambda: buf.combine(y, handle, config=cfg), args.bench_warmup,
                                     args.bench_iters), rows * args.hidden * 2) for key, cfg in configs.items()}
            times["default"] = (time_call(lambda: buf.combine(y, handle), args.bench_warmup, args.bench_iters),
                                rows * args.hidden * 2)
            res[("combine", "BF16")] = times
    return res


def report(args, results: List[dict], d: Dist) -> tuple:
    """Rank 0's tuning lines and summary table from every rank's run_bench result, and the summary rows."""
    lines, rows = [], []
    copy_gbs = statistics.fmean(r["copy_gbs"] for r in results)
    peer_gbs = results[0]["peer_copy_gbs"]
    lines.append(f"[copy] device-to-device copy_: {copy_gbs:.1f} GB/s per rank (mean, all ranks copying at once)")
    if peer_gbs > 0:
        lines.append(f"[copy] GPU-to-GPU copy_ (each GPU to the next, all at once): {peer_gbs:.1f} GB/s per GPU")
    for key in [k for k in results[0] if k not in ("copy_gbs", "peer_copy_gbs")]:
        call, dtype = key
        per_rank = [r[key] for r in results]
        for cfg in per_rank[0]:
            gbs = [p[cfg][1] / p[cfg][0] / 1e9 for p in per_rank]
            slow = max(p[cfg][0] for p in per_rank)
            label = "default config" if cfg == "default" else f"SMs {cfg[0]}, chunk {cfg[1]}"
            peer = f", {statistics.fmean(gbs) / peer_gbs:.3f} of GPU-to-GPU copy" if peer_gbs > 0 else ""
            lines.append(f"[tuning] {call} {dtype} {label}: {statistics.fmean(gbs):.2f} GB/s per rank (mean, "
                         f"{statistics.fmean(gbs) / copy_gbs:.3f} of copy{peer}), slowest rank {slow * 1e6:.1f} us")
        best = best_config(per_rank)
        gbs = [p[best][1] / p[best][0] / 1e9 for p in per_rank]
        rows.append(dict(call=call, dtype=dtype, ranks=d.world,
                         shape=f"{args.num_tokens} x {args.hidden}, top-{args.num_topk} of {args.num_experts}",
                         sms=best[0], chunk=best[1], gbs_mean=statistics.fmean(gbs), gbs_min=min(gbs),
                         us=max(p[best][0] for p in per_rank) * 1e6, copy_gbs=copy_gbs, peer_gbs=peer_gbs))
        lines.append(f"[tuning] best {call} {dtype}: SMs {best[0]}, chunk {best[1]}: {rows[-1]['gbs_mean']:.2f} GB/s "
                     f"per rank, {rows[-1]['gbs_mean'] / copy_gbs:.3f} of the copy rate")
    return lines + summary_lines(rows), rows


# ---------------------------------------------------------------------------------------------------------------
def run_all(args, d: Dist, chk: checks.Checker):
    """The inputs and the layout (checked: a cheap sanity check, and the sweep needs it), then (unless
    --no-bench) the tuning sweep and rank 0's report."""
    chk.ep.Buffer.set_num_sms(args.num_sms[0])
    log0(d, f"normal path: {chk.buffer.normal_path}")
    chk.setup(args.seed)
    chk.check_layout()
    if args.no_bench:
        log0(d, "sanity check passed (--no-bench: no sweep)")
        return
    res = run_bench(args, chk, d)
    results = [None] * d.world
    dist.all_gather_object(results, res)
    if d.rank == 0:
        lines, rows = report(args, results, d)
        print("\n".join(lines), flush=True)
        if args.json:
            topology = getattr(chk.buffer, "topology", None)
            ranks_per_node = topology.ranks_per_node if topology is not None else d.local_world
            bench_json.write(args.json, json_records(args, rows, ranks_per_node))


def parse_args(argv=None):
    """The checks' shape flags (intranode_checks.build_parser) and the bench flags (bench/bench_flags.py)."""
    return bench_flags.parse_bench_args(checks, argv, low_latency=False, description=__doc__.split("\n\n")[0])


def run_rank(args, run_all=run_all):
    """One rank: under scripts/launch.py or torchrun, or started by --num-processes; `run_all` is the bench's body
    (bench/test_internode.py passes its own)."""
    bench_flags.apply_disable_nvlink(args)
    d, chk = checks.start(args, "bench")
    run_all(args, d, chk)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None):
    spawn_ranks.run_ranks(run_rank, parse_args(argv))


if __name__ == "__main__":
    main()
