#!/usr/bin/env python3
"""The NVLink reference for the normal-mode bench: a plain torch copy_ between GPUs, every GPU sending to the next
one at once (GPU i -> GPU (i + 1) % G on its own stream, so with two GPUs both directions of the link carry data, as
a dispatch between two ranks does). Prints one JSON line: {"gpus": G, "mb": ..., "gbs_per_gpu": ...} where
gbs_per_gpu = bytes each GPU sent / time (median of --iters rounds).

The bench ranks each see one GPU (CUDA_VISIBLE_DEVICES), so bench/test_intranode.py runs this as a child process
that sees them all:  python bench/peer_copy.py --mb 256 --devices 0,1
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import List, Optional

import torch


def measure_in_child(args: List[str], num_ranks: int) -> Optional[dict]:
    """For a bench rank that sees one GPU: runs this script with `args` as a child that sees the GPUs of the first
    num_ranks ranks (UCCL_EP_GPU_IDS, set by scripts/launch.py) and returns its JSON line. None where the ranks share
    fewer than two GPUs, or when the child fails (said on stdout)."""
    ids = [g for g in os.environ.get("UCCL_EP_GPU_IDS", "").split(",") if g]
    if len(ids) < 2:
        return None
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(ids[:num_ranks]))
    cmd = [sys.executable, os.path.abspath(__file__)] + args
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        print(f"[copy] the GPU-to-GPU reference failed ({e})", flush=True)
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=int, default=256, help="MiB each GPU sends per round")
    p.add_argument("--bytes", type=int, default=0, help="bytes each GPU sends per round (instead of --mb)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--devices", default="", help="comma-separated CUDA device indices (default: every visible GPU)")
    a = p.parse_args(argv)
    devs = [int(x) for x in a.devices.split(",") if x] or list(range(torch.cuda.device_count()))
    if len(devs) < 2:
        raise SystemExit(f"peer_copy needs two GPUs or more, got {devs}")
    if a.bytes < 0 or a.mb <= 0:
        raise SystemExit(f"peer_copy: --bytes must be >= 0 and --mb > 0, got {a.bytes} and {a.mb}")
    n = a.bytes or a.mb << 20
    src = [torch.empty(n, dtype=torch.uint8, device=f"cuda:{d}") for d in devs]
    dst = [torch.empty(n, dtype=torch.uint8, device=f"cuda:{devs[(i + 1) % len(devs)]}") for i in range(len(devs))]
    streams = [torch.cuda.Stream(device=f"cuda:{d}") for d in devs]

    def round_trip() -> float:
        for d in devs:
            torch.cuda.synchronize(d)
        starts = [torch.cuda.Event(enable_timing=True) for _ in devs]
        ends = [torch.cuda.Event(enable_timing=True) for _ in devs]
        for i, s in enumerate(streams):
            with torch.cuda.stream(s):
                starts[i].record(s)
                dst[i].copy_(src[i], non_blocking=True)
                ends[i].record(s)
        for d in devs:
            torch.cuda.synchronize(d)
        return max(st.elapsed_time(en) for st, en in zip(starts, ends)) / 1e3

    round_trip()  # warm-up (peer access set-up)
    t = statistics.median(round_trip() for _ in range(a.iters))
    print(json.dumps({"gpus": len(devs), "mb": n / (1 << 20), "bytes": n, "us": t * 1e6, "gbs_per_gpu": n / t / 1e9}),
          flush=True)


if __name__ == "__main__":
    main()
