"""Per-kernel GPU time (torch profiler), wall time per call and host time per call (until each call returns to
Python) of uccl.ep's dispatch and combine.

One rank per process under scripts/launch.py (or torchrun); rank 0 prints one table per mode:

    python3 scripts/launch.py --nproc 2 -- bench/profile_kernels.py --mode ll [--host-profile]
    python3 scripts/launch.py --nproc 2 -- bench/profile_kernels.py --mode normal
    UCCL_EP_TRANSPORT=shm python3 scripts/launch.py --nproc 4 --ranks-per-node 2 -- bench/profile_kernels.py --mode normal

Low-latency host time (issue 11's budget: 10 us per call) is measured by bench/host_time.py's measure(): dispatch,
combine, and each with a receive hook (the send call and hook() apart), the GPU synchronized between steps so that
no call waits for the launch queue. --host-profile adds rank 0's cProfile breakdown of those calls, and the cost of
one allocation on the device (the dispatch allocates five outputs, the combine one).

Only the public uccl.ep API is used, so the same script profiles any version of the package on PYTHONPATH (that is
how bench/RESULTS.md compares a change with the code before it). The reference in the same run is a device-to-device
copy of the bytes one call moves per rank (its time is printed beside the calls as a ratio).
"""
import argparse
import collections
import os
import statistics
import time

import torch
import torch.distributed as dist

import host_time  # bench/, beside this file


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("ll", "normal"), required=True)
    p.add_argument("--num-tokens", type=int, default=0, help="tokens per rank (default: 128 for ll, 4096 for normal)")
    p.add_argument("--hidden", type=int, default=7168)
    p.add_argument("--num-topk", type=int, default=8)
    p.add_argument("--num-experts", type=int, default=0, help="default: 288 for ll, 256 for normal")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--num-sms", type=int, default=0, help="Buffer.set_num_sms before the calls (0: the default)")
    p.add_argument("--rdma-bytes", type=int, default=0, help="normal: num_rdma_bytes of the Buffer (normal mode across "
                   "emulated nodes, UCCL_EP_RANKS_PER_NODE / --ranks-per-node; 0: the RDMA size hint there)")
    p.add_argument("--label", default="", help="printed with the table (e.g. before / after)")
    p.add_argument("--host-iters", type=int, default=200, help="low-latency steps timed for the host time")
    p.add_argument("--host-profile", action="store_true", help="ll: rank 0's cProfile of the calls' host time")
    return p.parse_args()


def kernel_table(prof, calls: int):
    """{kernel name: (launches per call, GPU us per call)} from the profiler's device events."""
    per = collections.defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if str(getattr(e, "device_type", "")).endswith("CUDA") and e.name and not e.name.startswith("Memcpy"):
            t = getattr(e, "device_time", None)
            if t is None:
                t = getattr(e, "cuda_time", 0.0)
            per[e.name][0] += 1
            per[e.name][1] += t
    return {k: (v[0] / calls, v[1] / calls) for k, v in per.items()}


def wall_us(fn, iters: int) -> float:
    torch.cuda.synchronize()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e6


def copy_us(nbytes: int, iters: int) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    dst.copy_(src)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters * 1e3


def empty_us(iters: int) -> str:
    """Median host time of one small allocation on the current CUDA device (the caching allocator's reuse path):
    torch.empty, and the entry torch.compile's code uses (uccl.ep allocates through it where it exists)."""
    fast = getattr(getattr(getattr(torch._C, "_dynamo", None), "guards", None), "_empty_strided_cuda", None)
    ways = {"torch.empty": lambda: torch.empty((64, 256), dtype=torch.int32, device="cuda")}
    if fast is not None:
        ways["torch._C._dynamo.guards._empty_strided_cuda"] = lambda: fast((64, 256), (256, 1), torch.int32)
    out = []
    for name, alloc in ways.items():
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            alloc()
            times.append(time.perf_counter() - t0)
        out.append(f"{name} {statistics.median(times) * 1e6:.2f} us")
    return ", ".join(out)


def main():
    args = parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    dist.init_process_group("nccl" if torch.cuda.device_count() >= world else "gloo")
    import uccl.ep as ep
    if args.num_sms:
        ep.Buffer.set_num_sms(args.num_sms)
    ll = args.mode == "ll"
    T = args.num_tokens or (128 if ll else 4096)
    E = args.num_experts or (288 if ll else 256)
    H, K = args.hidden, args.num_topk
    g = torch.Generator(device="cuda").manual_seed(rank)
    x = torch.randn((T, H), dtype=torch.bfloat16, device="cuda", generator=g)
    scores = torch.rand((T, E), device="cuda", generator=g)
    topk_idx = torch.topk(scores, K, dim=-1).indices.to(torch.int64)
    topk_weights = torch.rand((T, K), dtype=torch.float32, device="cuda", generator=g)
    if ll:
        buf = ep.Buffer(dist.group.WORLD, 0, ep.Buffer.get_low_latency_rdma_size_hint(T, H, world, E),
                        low_latency_mode=True, num_qps_per_rank=E // world)
        y = torch.ones((E // world, world * T, H), dtype=torch.bfloat16, device="cuda")  # expert outputs

        def step():
            _, _, handle, _, _ = buf.low_latency_dispatch(x, topk_idx, T, E, use_fp8=True)
            buf.low_latency_combine(y, topk_idx, topk_weights, handle)
        moved = T * K * (H + H // 128 * 4) + T * K * H * 2  # FP8 rows out, BF16 rows back
    else:
        rdma = args.rdma_bytes or ep.Buffer.get_dispatch_config(world).get_rdma_buffer_size_hint(H * 2, world)
        buf = ep.Buffer(dist.group.WORLD, int(1e9), rdma)
        cache = {}

        def step(host=None):
            t0 = time.perf_counter()
            per_rank, per_rdma, per_expert, in_rank, _ = buf.get_dispatch_layout(topk_idx, E)
            recv_x, _, recv_w, _, handle, _ = buf.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                                           num_tokens_per_expert=per_expert, topk_idx=topk_idx,
                                                           topk_weights=topk_weights)
            t1 = time.perf_counter()
            cache["rows"] = recv_x.size(0)
            buf.combine(recv_x, handle)
            if host is not None:  # the dispatch includes the allowed wait for the receive count
                host["dispatch"].append(t1 - t0)
                host["combine"].append(time.perf_counter() - t1)
        step()
        moved = cache["rows"] * H * 2 * 2  # BF16 rows in, BF16 rows back
    for _ in range(args.warmup):
        step()
    call_us = wall_us(step, args.iters)
    # Host time per call: how long each call takes to return to Python (the launches are asynchronous; the GPU's
    # time is the table below). Median over the iterations.
    breakdown = ""
    if ll:
        host_us = host_time.measure(buf, x, topk_idx, topk_weights, y, T, E, use_fp8=True, iters=args.host_iters,
                                    warmup=args.warmup, sync=torch.cuda.synchronize)
        if args.host_profile:  # every rank makes the calls (they are collective); rank 0 prints its figures
            breakdown = (host_time.profile(buf, x, topk_idx, topk_weights, y, T, E, use_fp8=True,
                                           iters=args.host_iters, top=16, sync=torch.cuda.synchronize)
                         + f"\nreference: one allocation on {torch.cuda.get_device_name()} (median): "
                           f"{empty_us(args.host_iters)}")
            torch.cuda.synchronize()
        dist.barrier()
    else:
        host = {"dispatch": [], "combine": []}
        for _ in range(args.iters):
            step(host)
        torch.cuda.synchronize()
        host_us = {k: statistics.median(v) * 1e6 for k, v in host.items()}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(args.iters):
            step()
        torch.cuda.synchronize()
    table = kernel_table(prof, args.iters)
    ref_us = copy_us(moved, args.iters)
    rows = [None] * world
    dist.all_gather_object(rows, (call_us, table, host_us))
    if rank == 0:
        what = "low-latency dispatch+combine (FP8 out, BF16 back)" if ll else "normal dispatch+combine (BF16)"
        print(f"== {args.label} {what}: {world} ranks, {T} tokens, hidden {H}, top-{K} of {E} experts, "
              f"{ep.Buffer.num_sms} SMs")
        walls = [r[0] for r in rows]
        print(f"wall per dispatch+combine: {sum(walls) / world:.1f} us (ranks {min(walls):.1f}..{max(walls):.1f}); "
              f"reference: device copy of the {moved / 1e6:.2f} MB one call moves per rank {ref_us:.1f} us; "
              f"ratio {sum(walls) / world / ref_us:.2f}")
        if ll:
            print("host time per low-latency call (median until it returns; rank mean, min..max), us: " + " | ".join(
                f"{call} {sum(r[2][call] for r in rows) / world:.1f} ({min(r[2][call] for r in rows):.1f}.."
                f"{max(r[2][call] for r in rows):.1f})" for call in host_time.CALLS))
            if breakdown:
                print(f"rank 0 host time by function (cProfile; it slows each call, read the shares):\n{breakdown}")
        for call in () if ll else ("dispatch", "combine"):
            hs = [r[2][call] for r in rows]
            print(f"host time per {call} call (median, until it returns): {sum(hs) / world:.1f} us "
                  f"(ranks {min(hs):.1f}..{max(hs):.1f})")
        print(f"{'kernel':64s} {'launches/call':>13s} {'GPU us/call (rank mean)':>24s}")
        names = sorted(set().union(*[r[1].keys() for r in rows]), key=lambda n: -rows[0][1].get(n, (0, 0))[1])
        for n in names:
            vals = [r[1].get(n, (0, 0.0)) for r in rows]
            print(f"{n[:64]:64s} {vals[0][0]:13.1f} {sum(v[1] for v in vals) / world:24.1f}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
