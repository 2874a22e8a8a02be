"""Host time per low-latency call: the CPU time from the Python call of Buffer.low_latency_dispatch /
low_latency_combine (and of a receive hook) until it returns, median over many calls. Issue 11's budget is 10 us per
call on the device machine.

Without a GPU this runs uccl.ep.Buffer over the CPU stand-in of tests/python/ll_stand_in.py: the figure is Python,
the argument checks, the output allocation (CPU tensors, through torch.empty_strided: the low-overhead entry Buffer
uses on a GPU allocates CUDA memory only) and the binding's keyword parsing, without the runtime's launch and with the
CPU allocator in place of the CUDA caching allocator. torch without float8 allocates the FP8 codes as uint8 here. On the device, bench/profile_kernels.py --mode ll prints the same figures for the real runtime
(it calls measure() below):

    UCCL_EP_BUILD_DIR=build /usr/bin/python3 bench/host_time.py [--iters N] [--profile]

--profile adds, per call, the functions that take its time (cProfile; it slows every call down, so the shares are
what to read, not the sum).
"""
import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, what runs): the calls measured, in the order one step makes them.
CALLS = ("dispatch", "combine", "dispatch send (hook)", "dispatch hook()", "combine send (hook)", "combine hook()")


def step(buf, x, topk_idx, topk_weights, y, M, E, use_fp8, times=None, sync=lambda: None):
    """One dispatch + combine, then one of each with a receive hook; `times[name]` gets each call's seconds."""
    clock = time.perf_counter
    sync()
    t0 = clock()
    _, _, handle, _, _ = buf.low_latency_dispatch(x, topk_idx, M, E, use_fp8=use_fp8)
    t1 = clock()
    buf.low_latency_combine(y, topk_idx, topk_weights, handle)
    t2 = clock()
    sync()
    t3 = clock()
    _, _, handle, _, hook = buf.low_latency_dispatch(x, topk_idx, M, E, use_fp8=use_fp8, return_recv_hook=True)
    t4 = clock()
    hook()
    t5 = clock()
    _, _, hook = buf.low_latency_combine(y, topk_idx, topk_weights, handle, return_recv_hook=True)
    t6 = clock()
    hook()
    t7 = clock()
    if times is not None:
        for name, dt in zip(CALLS, (t1 - t0, t2 - t1, t4 - t3, t5 - t4, t6 - t5, t7 - t6)):
            times[name].append(dt)


def measure(buf, x, topk_idx, topk_weights, y, M, E, use_fp8=True, iters=200, warmup=20, sync=lambda: None):
    """{call: median host us} over `iters` steps. `sync` runs between the steps, outside the timed calls (on the
    device: torch.cuda.synchronize, so that no call waits for room in the launch queue)."""
    for _ in range(warmup):
        step(buf, x, topk_idx, topk_weights, y, M, E, use_fp8, sync=sync)
    times = {name: [] for name in CALLS}
    for _ in range(iters):
        step(buf, x, topk_idx, topk_weights, y, M, E, use_fp8, times, sync)
    sync()
    return {name: statistics.median(v) * 1e6 for name, v in times.items()}


def profile(buf, x, topk_idx, topk_weights, y, M, E, use_fp8=True, iters=200, top=12, sync=lambda: None) -> str:
    """cProfile of the dispatch + combine calls alone (`sync` between steps, not profiled): the functions by own
    time, per step."""
    prof = cProfile.Profile()
    for _ in range(10):
        step(buf, x, topk_idx, topk_weights, y, M, E, use_fp8, sync=sync)
    for _ in range(iters):
        sync()
        prof.enable()
        _, _, handle, _, _ = buf.low_latency_dispatch(x, topk_idx, M, E, use_fp8=use_fp8)
        buf.low_latency_combine(y, topk_idx, topk_weights, handle)
        prof.disable()
    sync()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime")
    rows = []
    for func, (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        rows.append((tottime, ncalls, cumtime, func))
    rows.sort(reverse=True)
    lines = [f"{'own us/step':>11s} {'calls/step':>10s} {'cum us/step':>11s}  function (one step: dispatch + combine)"]
    for tottime, ncalls, cumtime, (path, line, name) in rows[:top]:
        where = name if path == "~" else f"{os.path.relpath(path, REPO) if path.startswith(REPO) else path}:{line} {name}"
        lines.append(f"{tottime / iters * 1e6:11.2f} {ncalls / iters:10.1f} {cumtime / iters * 1e6:11.2f}  {where}")
    return "\n".join(lines)


def format_line(host_us: dict, label: str = "") -> str:
    return (f"host time per low-latency call{(' (' + label + ')') if label else ''}, median, us: "
            + " | ".join(f"{name} {host_us[name]:.1f}" for name in CALLS))


def stand_in_main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # Small outputs by default: the CPU allocator stands in for the caching allocator only while they stay small
    # (with 128 tokens the FP8 dispatch's 15 MB recv_x makes glibc map and unmap memory on some runs: 10x the time).
    p.add_argument("--num-tokens", type=int, default=32)
    p.add_argument("--hidden", type=int, default=7168)
    p.add_argument("--num-topk", type=int, default=8)
    p.add_argument("--num-experts", type=int, default=16)
    p.add_argument("--num-ranks", type=int, default=2)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--bf16", action="store_true", help="dispatch with use_fp8=False (no scales)")
    p.add_argument("--profile", action="store_true", help="add a cProfile breakdown of dispatch + combine")
    args = p.parse_args(argv)
    for path in (os.path.join(REPO, "python"), os.path.join(REPO, "tests", "python")):
        if path not in sys.path:
            sys.path.insert(0, path)
    import uccl.ep as ep
    from uccl.ep._native import native
    from ll_stand_in import make_ll_buffer
    use_fp8 = not args.bf16
    if use_fp8 and not hasattr(torch, "float8_e4m3fn"):
        torch.float8_e4m3fn = torch.uint8  # the stand-in's FP8 codes: one byte each, as on the device
    buf, _ = make_ll_buffer(native(), num_ranks=args.num_ranks, log=False)
    T, H, K, E, R = args.num_tokens, args.hidden, args.num_topk, args.num_experts, args.num_ranks
    x = torch.randn(T, H).to(torch.bfloat16)
    topk_idx = torch.stack([torch.randperm(E)[:K] for _ in range(T)])
    topk_weights = torch.rand(T, K)
    y = torch.zeros(E // R, R * T, H, dtype=torch.bfloat16)
    host = measure(buf, x, topk_idx, topk_weights, y, T, E, use_fp8, args.iters, args.warmup)
    print(f"== CPU stand-in (tests/python/ll_stand_in.py; no launch, CPU allocator), torch {torch.__version__}, "
          f"Python {sys.version.split()[0]}: rank 0 of {R}, {T} tokens, hidden {H}, top-{K} of {E} experts, "
          f"{'FP8' if use_fp8 else 'BF16'} dispatch; uccl.ep from {os.path.dirname(ep.__file__)}")
    print(format_line(host, "stand-in"))
    if args.profile:
        print(profile(buf, x, topk_idx, topk_weights, y, T, E, use_fp8, min(args.iters, 2000)))


if __name__ == "__main__":
    stand_in_main(sys.argv[1:])
