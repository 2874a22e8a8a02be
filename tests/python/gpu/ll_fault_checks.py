#!/usr/bin/env python3
"""Low-latency faults across ranks on real GPUs: one rank (the last; never rank 0, which holds the process group's
store) skips a clean or dies, and the others are checked. One rank of a multi-rank run; run through
tests/python/gpu/test_ll_faults_gpu.py, or by hand with a short timeout:

    UCCL_EP_TIMEOUT_SECS=3 python3 scripts/launch.py --nproc 3 --expect-killed 2 -- \
        tests/python/gpu/ll_fault_checks.py --case kill-then-rebuild

--case clean-skip         the last rank skips a clean_low_latency_buffer. Without enable_shrink the others' clean raises
                          uccl.ep.TimeoutError naming it, within the timeout; the late rank's own clean then completes
                          (the others' arrivals were not lost). With enable_shrink the others' clean completes, their
                          mask shows exactly that rank, and their dispatch/combine then completes without it.
--case kill-then-rebuild  the last rank SIGKILLs itself (launch.py --expect-killed). The survivors' next low-latency
                          dispatch raises uccl.ep.TimeoutError naming it; they destroy() the Buffer (local after the
                          failure), build a process group and a Buffer without it, and run checked dispatch/combine.
--case kill-under-shrink  the same kill with enable_shrink: the survivors' dispatch/combine complete, checked without
                          the dead rank's tokens and experts, and their mask shows it; a second round runs too.

Every rank's inputs come from a generator seeded by its rank, so each rank builds every source's topk_idx and rows
itself: the reference (bench/ll_reference.py, as in low_latency_checks.py) needs no collective after a rank died.
Results: recv_count, layout_range and src_info against ref.expected_layout, every received BF16 row equal to its
source row, and combine against ref.weighted_combine over the experts still reachable. Rank 0 prints "all checks
passed" at the end. The survivors of a kill leave with os._exit: the default process group still names the dead
rank, and tearing it down may wait for it.
"""
import argparse
import functools
import gc
import inspect
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "bench"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import ll_reference as ref  # noqa: E402
from rank_group import dist_env, import_ep, join_group  # noqa: E402

CASES = ("clean-skip", "kill-then-rebuild", "kill-under-shrink")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=CASES, required=True)
    p.add_argument("--num-tokens", type=int, default=32)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--num-topk", type=int, default=4)
    p.add_argument("--num-experts", type=int, default=24, help="a multiple of the rank count and of the survivors'")
    return p.parse_args(argv)


class Faults:
    """One rank's view: the shape, its original rank, the rank that skips or dies (`victim`), the timeout."""

    def __init__(self, args):
        self.args = args
        self.d = dist_env()
        _, self.dev = join_group(self.d)
        self.ep = import_ep()
        self.M, self.H, self.K, self.E = args.num_tokens, args.hidden, args.num_topk, args.num_experts
        self.victim = self.d.world - 1
        self.timeout = float(os.environ.get("UCCL_EP_TIMEOUT_SECS", "100"))
        if self.victim == 0:
            raise SystemExit("ll_fault_checks.py needs at least 2 ranks: the last one skips or dies")

    def check(self, cond, msg):
        if not cond:
            raise AssertionError(f"[rank {self.d.rank}] {msg}")

    def inputs(self, rank):
        """Original rank `rank`'s x (BF16 [M, H]), topk_idx ([M, K], distinct experts, a few -1) and weights, on CPU."""
        gen = torch.Generator().manual_seed(7919 + rank)
        x = torch.randn(self.M, self.H, generator=gen).to(torch.bfloat16)
        idx = torch.rand(self.M, self.E, generator=gen).topk(self.K, dim=1).indices.to(torch.int64)
        idx[torch.rand(self.M, self.K, generator=gen) < 0.1] = -1
        w = torch.rand(self.M, self.K, generator=gen)
        return x, idx, w

    def buffer(self, group, R, **kwargs):
        hint = self.ep.Buffer.get_low_latency_rdma_size_hint(self.M, self.H, R, self.E)
        return self.ep.Buffer(group, num_rdma_bytes=hint, low_latency_mode=True, **kwargs)

    def round_trip(self, buf, members, masked, ctx):
        """Checked dispatch + combine (BF16) over `buf`, whose group rank g is original rank members[g]; the group
        ranks in `masked` are masked (their tokens and experts are out)."""
        R, me = len(members), members.index(self.d.rank)
        E_local = self.E // R
        all_inputs = [self.inputs(r) for r in members]
        x, idx, w = (t.to(self.dev) for t in all_inputs[me])
        present = [inp[1] if g not in masked else torch.full_like(inp[1], -1) for g, inp in enumerate(all_inputs)]
        exp = ref.expected_layout(present, self.E, R, me, self.M)

        recv_x, count, handle, _, _ = buf.low_latency_dispatch(x, idx, self.M, self.E, use_fp8=False)
        torch.cuda.synchronize()
        self.check(torch.equal(count.cpu(), exp.recv_count), f"{ctx}: recv_count {count.tolist()}, expected "
                   f"{exp.recv_count.tolist()}")
        try:
            ref.check_layout_range(handle[1], handle[0], count, exp, context=ctx)
        except AssertionError as e:
            raise AssertionError(f"[rank {self.d.rank}] {e}") from None
        for e in range(E_local):
            n = int(count[e])
            want = torch.stack([all_inputs[int(s)][0][int(t)] for s, t in zip(exp.src_rank[e], exp.src_token[e])]) \
                if n else torch.zeros(0, self.H, dtype=torch.bfloat16)
            self.check(torch.equal(recv_x[e, :n].cpu(), want), f"{ctx}: local expert {e}: received rows differ "
                       "from their source rows")

        # The experts return what they received; combine sums the reachable ones with the top-k weights.
        out, _, _ = buf.low_latency_combine(recv_x, idx, w, handle)
        torch.cuda.synchronize()
        owner_masked = torch.zeros_like(idx, dtype=torch.bool)
        for g in masked:
            owner_masked |= (idx >= 0) & (idx // E_local == g)
        want = ref.weighted_combine(x.float(), idx.masked_fill(owner_masked, -1), w)
        diff = ref.calc_diff(out.float(), want)
        self.check(diff < 1e-5 and not bool(torch.isnan(out).any()), f"{ctx}: combine calc_diff {diff:.3g}")

    def mask_of(self, buf, R):
        mask = torch.full((R,), -1, dtype=torch.int32, device=self.dev)
        buf.low_latency_query_mask_buffer(mask)
        torch.cuda.synchronize()
        return mask.tolist()

    def clean(self, buf):
        buf.clean_low_latency_buffer(self.M, self.H, self.E)

    def expect_timeout_naming_victim(self, call, ctx):
        start = time.monotonic()
        try:
            call()
        except self.ep.TimeoutError as e:
            elapsed = time.monotonic() - start
            self.check(f"rank {self.victim}" in str(e), f"{ctx}: the error does not name rank {self.victim}: {e}")
            self.check(elapsed < 2 * self.timeout + 10,
                       f"{ctx}: raised after {elapsed:.1f} s (timeout {self.timeout} s)")
            print(f"[rank {self.d.rank}] {ctx}: raised after {elapsed:.1f} s: {e}", flush=True)
            return str(e)
        raise AssertionError(f"[rank {self.d.rank}] {ctx}: no TimeoutError although rank {self.victim} "
                             "never joined")


def clean_skip(f: Faults):
    R, world = f.d.world, list(range(f.d.world))
    skipper = f.d.rank == f.victim

    # 1. Without enable_shrink: the others' clean raises naming the rank that skipped it.
    buf = f.buffer(dist.group.WORLD, R)
    f.clean(buf)  # every rank: the barrier passes
    f.round_trip(buf, world, set(), "after a clean every rank joined")
    if not skipper:
        msg = f.expect_timeout_naming_victim(functools.partial(f.clean, buf),
                                             "clean without enable_shrink, one rank absent")
        f.check("clean_low_latency_buffer" in msg and "did not join this barrier (clean call 2 " in msg,
                f"the error does not name the clean and its call number: {msg}")
    dist.barrier()
    if skipper:
        # Late, but the others' arrivals at this clean number are still counted: no wait, no error.
        start = time.monotonic()
        f.clean(buf)
        f.check(time.monotonic() - start < f.timeout, "the late clean waited for arrivals that had already landed")
    dist.barrier()
    del buf
    gc.collect()

    # 2. With enable_shrink: the others' clean completes and masks the rank that skipped it.
    buf = f.buffer(dist.group.WORLD, R, enable_shrink=True)
    f.clean(buf)
    f.check(f.mask_of(buf, R) == [0] * R, "a clean every rank joined masked a rank")
    f.round_trip(buf, world, set(), "shrink, after a clean every rank joined")
    if not skipper:
        start = time.monotonic()
        f.clean(buf)  # completes after the timeout
        elapsed = time.monotonic() - start
        want = [1 if r == f.victim else 0 for r in range(R)]
        f.check(f.mask_of(buf, R) == want, f"mask after the clean {f.mask_of(buf, R)}, expected {want}")
        f.check(elapsed < 2 * f.timeout + 10, f"the clean took {elapsed:.1f} s (timeout {f.timeout} s)")
        f.round_trip(buf, world, {f.victim}, f"shrink, rank {f.victim} masked by the clean")
        f.clean(buf)  # the masked rank is not waited for
        print(f"[rank {f.d.rank}] shrink: the clean masked rank {f.victim} after {elapsed:.1f} s; dispatch/combine "
              "completed without it", flush=True)
    dist.barrier()
    del buf
    gc.collect()
    dist.barrier()
    if f.d.rank == 0:
        print("all checks passed", flush=True)
    dist.destroy_process_group()


def die_after_round(f: Faults, buf):
    """Every rank: a clean and a checked round, then the victim SIGKILLs itself; returns on the survivors."""
    world = list(range(f.d.world))
    f.clean(buf)
    f.round_trip(buf, world, set(), "before the kill")
    dist.barrier()
    if f.d.rank == f.victim:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)  # the victim is gone before the survivors' next call (it would be named either way)
    return [r for r in world if r != f.victim]


def survivors_group(f: Faults, survivors):
    """A gloo group of the survivors, built by them alone: without use_local_synchronization (torch >= 2.1) every
    rank of the default group, the dead one too, would have to join."""
    if "use_local_synchronization" not in inspect.signature(dist.new_group).parameters:
        raise RuntimeError(f"torch {torch.__version__}: dist.new_group has no use_local_synchronization; the "
                           "survivors of a kill cannot build a group without the dead rank")
    return dist.new_group(ranks=survivors, use_local_synchronization=True)


def finish_survivor(f: Faults, group):
    dist.barrier(group=group)
    if f.d.rank == 0:
        print("all checks passed", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def kill_then_rebuild(f: Faults):
    buf = f.buffer(dist.group.WORLD, f.d.world, explicitly_destroy=True)
    survivors = die_after_round(f, buf)

    def next_dispatch():
        x, idx, _ = f.inputs(f.d.rank)
        buf.low_latency_dispatch(x.to(f.dev), idx.to(f.dev), f.M, f.E, use_fp8=False)
        torch.cuda.synchronize()  # the kernel gave up after the timeout and recorded the dead rank
        buf.low_latency_dispatch(x.to(f.dev), idx.to(f.dev), f.M, f.E, use_fp8=False)  # raises it

    f.expect_timeout_naming_victim(next_dispatch, "dispatch after the kill")
    start = time.monotonic()
    buf.destroy()  # local after the recorded failure: no barrier with the dead rank
    f.check(time.monotonic() - start < f.timeout, "destroy() after the failure waited for the dead rank")

    group = survivors_group(f, survivors)
    buf = f.buffer(group, len(survivors), explicitly_destroy=True)
    f.clean(buf)
    for i in range(2):
        f.round_trip(buf, survivors, set(), f"rebuilt without rank {f.victim}, round {i}")
    buf.destroy()  # collective over the survivors
    print(f"[rank {f.d.rank}] rebuilt a Buffer over ranks {survivors}: dispatch/combine checked", flush=True)
    finish_survivor(f, group)


def kill_under_shrink(f: Faults):
    buf = f.buffer(dist.group.WORLD, f.d.world, enable_shrink=True)
    survivors = die_after_round(f, buf)
    world = list(range(f.d.world))
    start = time.monotonic()
    f.round_trip(buf, world, {f.victim}, f"shrink, rank {f.victim} killed")
    elapsed = time.monotonic() - start
    want = [1 if r == f.victim else 0 for r in world]
    f.check(f.mask_of(buf, f.d.world) == want, f"mask {f.mask_of(buf, f.d.world)}, expected {want}")
    f.check(elapsed < 2 * f.timeout + 10, f"the round took {elapsed:.1f} s (timeout {f.timeout} s)")
    f.round_trip(buf, world, {f.victim}, f"shrink, rank {f.victim} masked, second round")
    f.clean(buf)  # the dead rank is masked: not waited for
    f.round_trip(buf, world, {f.victim}, f"shrink, rank {f.victim} masked, after a clean")
    print(f"[rank {f.d.rank}] shrink: killed rank {f.victim} masked after {elapsed:.1f} s; dispatch/combine "
          "completed without it", flush=True)
    finish_survivor(f, survivors_group(f, survivors))


def main(argv=None):
    args = parse_args(argv)
    f = Faults(args)
    {"clean-skip": clean_skip, "kill-then-rebuild": kill_then_rebuild, "kill-under-shrink": kill_under_shrink}[
        args.case](f)


if __name__ == "__main__":
    main()
