"""Low-latency faults: a rank that never calls dispatch.

Run under scripts/launch.py (or torchrun) with a small UCCL_EP_TIMEOUT_SECS, e.g.

    UCCL_EP_TIMEOUT_SECS=3 python3 scripts/launch.py --nproc 4 -- bench/test_ll_faults.py

The last rank stays away from every collective call. Checked on the others:
  1. enable_shrink=False: the dispatch gives up after the timeout, and the next call raises uccl.ep.TimeoutError
     naming the absent rank, within the timeout (plus launch slack).
  2. enable_shrink=True: the absent rank is masked instead. dispatch and combine complete for the rest: no rows
     come from the absent rank, every other row is where the reference puts it, combine equals the weighted
     reference over the experts still reachable, and low_latency_query_mask_buffer reports exactly that rank.
     low_latency_clean_mask_buffer unmasks it again.
"""
import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "python", "gpu"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import ll_reference as ref  # noqa: E402
import rank_group  # noqa: E402


def check(cond, msg):
    if not cond:
        raise AssertionError(f"[rank {dist.get_rank()}] {msg}")


@dataclass
class FaultRun:
    """What a fault bench starts from: its arguments, the process group, uccl.ep, the device, the timeout and
    the rank that stays away (the last one)."""
    args: argparse.Namespace
    d: rank_group.Dist
    ep: object
    dev: torch.device
    timeout: float
    absent: int


def begin(doc: str, num_tokens: int, flags: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> FaultRun:
    """Parses --num-tokens/--hidden/--num-topk/--num-experts (and what `flags` adds), joins the process group (one
    GPU per local rank, shared when there are fewer) and imports uccl.ep."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-tokens", type=int, default=num_tokens)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--num-topk", type=int, default=4)
    p.add_argument("--num-experts", type=int, default=32)
    if flags is not None:
        flags(p)
    args = p.parse_args()
    d = rank_group.dist_env()
    _, dev = rank_group.join_group(d)
    return FaultRun(args, d, rank_group.import_ep(), dev, float(os.environ.get("UCCL_EP_TIMEOUT_SECS", "100")),
                    d.world - 1)


def main():
    run = begin(__doc__, num_tokens=64)
    args, d, ep, dev, timeout, absent = run.args, run.d, run.ep, run.dev, run.timeout, run.absent
    R, M, H, K, E = d.world, args.num_tokens, args.hidden, args.num_topk, args.num_experts

    gen = torch.Generator().manual_seed(1234 + d.rank)
    x = torch.randn(M, H, generator=gen).to(torch.bfloat16)
    idx = torch.rand(M, E, generator=gen).topk(K, dim=1).indices.to(torch.int64)
    w = torch.rand(M, K, generator=gen)
    all_idx = [t.cpu() for t in rank_group.all_gather_tensor(idx)]
    x, idx, w = x.to(dev), idx.to(dev), w.to(dev)
    hint = ep.Buffer.get_low_latency_rdma_size_hint(M, H, R, E)

    # 1. No shrink: the others raise, naming the absent rank.
    buf = ep.Buffer(dist.group.WORLD, num_rdma_bytes=hint, low_latency_mode=True)
    if d.rank != absent:
        start = time.monotonic()
        buf.low_latency_dispatch(x, idx, M, E, use_fp8=False)
        torch.cuda.synchronize()
        try:
            buf.low_latency_dispatch(x, idx, M, E, use_fp8=False)
            raise AssertionError(f"[rank {d.rank}] no error although rank {absent} never dispatched")
        except ep.TimeoutError as e:
            elapsed = time.monotonic() - start
            check(f"rank {absent}" in str(e), f"the error does not name rank {absent}: {e}")
            check(elapsed < timeout + 5, f"raised after {elapsed:.1f} s, timeout {timeout} s")
            print(f"[rank {d.rank}] raised after {elapsed:.1f} s (timeout {timeout} s): {e}", flush=True)
    dist.barrier()
    del buf

    # 2. Shrink: the absent rank is masked, the rest completes.
    buf = ep.Buffer(dist.group.WORLD, num_rdma_bytes=hint, low_latency_mode=True, enable_shrink=True)
    if d.rank != absent:
        recv_x, count, handle, _, _ = buf.low_latency_dispatch(x, idx, M, E, use_fp8=False)
        torch.cuda.synchronize()
        mask = torch.full((R,), -1, dtype=torch.int32, device=dev)
        buf.low_latency_query_mask_buffer(mask)
        want_mask = [1 if r == absent else 0 for r in range(R)]
        check(mask.tolist() == want_mask, f"mask {mask.tolist()}, expected {want_mask}")

        present = [t if r != absent else torch.full_like(t, -1) for r, t in enumerate(all_idx)]
        exp = ref.expected_layout(present, E, R, d.rank, M)
        check(torch.equal(count.cpu(), exp.recv_count), f"recv_count {count.tolist()}, expected {exp.recv_count.tolist()}")
        got_counts = (handle[1].cpu() & 0xFFFFFFFF)
        check(torch.equal(got_counts, exp.counts), "layout_range counts differ from the reference without the absent rank")

        # Experts return what they received; combine sums the reachable ones.
        out, _, _ = buf.low_latency_combine(recv_x, idx, w, handle)
        torch.cuda.synchronize()
        reachable = (idx >= 0) & (idx // (E // R) != absent)
        want = x.float() * (w * reachable).sum(dim=1, keepdim=True)
        diff = ref.calc_diff(out.float(), want)
        check(diff < 1e-5 and not torch.isnan(out).any(), f"combine calc_diff {diff}")

        buf.low_latency_clean_mask_buffer()
        buf.low_latency_query_mask_buffer(mask)
        check(mask.tolist() == [0] * R, f"mask after clean {mask.tolist()}")
        print(f"[rank {d.rank}] shrink: rank {absent} masked, dispatch/combine completed (calc_diff {diff:.2e})",
              flush=True)
    dist.barrier()
    if d.rank == 0:
        print("fault checks passed", flush=True)
    del buf
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
