"""Normal-mode faults: a rank that never calls dispatch or combine, or dies before it.

Run under scripts/launch.py (or torchrun) with a small UCCL_EP_TIMEOUT_SECS, e.g.

    UCCL_EP_TIMEOUT_SECS=3 python3 scripts/launch.py --nproc 4 -- bench/test_intranode_faults.py
    UCCL_EP_TIMEOUT_SECS=3 python3 scripts/launch.py --nproc 4 --ranks-per-node 2 -- bench/test_intranode_faults.py \
        --phase combine
    UCCL_EP_TIMEOUT_SECS=3 python3 scripts/launch.py --nproc 4 --ranks-per-node 2 --expect-killed 3 -- \
        bench/test_intranode_faults.py --phase combine --kill

The last rank (the victim) builds the Buffer, takes part in a good dispatch and combine, and then stays away from
the call --phase names (dispatch, or combine after a dispatch every rank joined); with --kill it SIGKILLs itself
instead (launch.py --expect-killed names it).

Checked on the others: that call raises uccl.ep.TimeoutError naming the victim, within the timeout plus launch
slack, on every rank, the victim's node peers (the NVLink side) and the other nodes' ranks (the network side) alike:
across nodes a dispatch names it through the counts exchange, a combine through the entered words
(src/kernels/internode.hpp, design point 9). Bad input raised before that leaves the buffer usable (a good dispatch
and combine with every rank present run first).

After a kill the process group names a dead rank: each survivor checks its own call and leaves with os._exit(0);
launch.py reports any survivor that failed.
"""
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from test_ll_faults import check  # noqa: E402
import test_ll_faults as tlf  # noqa: E402

PHASES = ("dispatch", "combine")


def flags(p):
    p.add_argument("--phase", choices=PHASES, default="dispatch", help="the call the victim stays away from")
    p.add_argument("--kill", action="store_true", help="the victim SIGKILLs itself instead of staying away")


def main():
    run = tlf.begin(__doc__, num_tokens=128, flags=flags)
    args, d, ep, dev, timeout, victim = run.args, run.d, run.ep, run.dev, run.timeout, run.absent
    T, H, K, E = args.num_tokens, args.hidden, args.num_topk, args.num_experts
    gen = torch.Generator().manual_seed(99 + d.rank)
    x = torch.randn(T, H, generator=gen).to(torch.bfloat16).to(dev)
    idx = torch.rand(T, E, generator=gen).topk(K, dim=1).indices.to(torch.int64).to(dev)
    w = torch.rand(T, K, generator=gen).to(dev)
    # Across emulated nodes (UCCL_EP_RANKS_PER_NODE) the network side needs its RDMA buffer (0 within one node).
    rdma = ep.Buffer.get_dispatch_config(d.world).get_rdma_buffer_size_hint(H * 2, d.world)
    buf = ep.Buffer(dist.group.WORLD, num_nvl_bytes=64 << 20, num_rdma_bytes=rdma)

    # Every rank present: bad input raises before any kernel and the buffer stays usable.
    per_rank, per_node, per_expert, in_rank, _ = buf.get_dispatch_layout(idx, E)
    layout = dict(num_tokens_per_rank=per_rank, num_tokens_per_rdma_rank=per_node, is_token_in_rank=in_rank,
                  num_tokens_per_expert=per_expert, topk_idx=idx, topk_weights=w)
    try:
        buf.dispatch(x.float(), **layout)
        raise AssertionError(f"[rank {d.rank}] a float32 x was accepted")
    except (TypeError, ValueError) as e:
        check("x" in str(e), f"the error does not name x: {e}")
    recv_x, _, recv_w, _, handle, _ = buf.dispatch(x, **layout)
    out, _, _ = buf.combine(recv_x, handle)
    torch.cuda.synchronize()
    want = x.float() * in_rank.sum(dim=1, keepdim=True).float()
    check((out.float() - want).abs().max().item() <= 0.02 * want.abs().max().item(), "combine after bad input")
    dist.barrier()

    if args.phase == "combine":  # every rank joins this dispatch; the victim then skips (or dies before) the combine
        recv_x, _, _, _, handle, _ = buf.dispatch(x, **layout)
        torch.cuda.synchronize()
        dist.barrier()
    if d.rank == victim and args.kill:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if args.kill:
        time.sleep(0.5)  # the victim is gone before the survivors' call (it would be named either way)

    def call():
        if args.phase == "dispatch":
            buf.dispatch(x, **layout)
        else:
            buf.combine(recv_x, handle)

    if d.rank != victim:
        start = time.monotonic()
        try:
            call()
            torch.cuda.synchronize()
            call()  # a failure of the call before is raised here at the latest
            raise AssertionError(f"[rank {d.rank}] no error although rank {victim} "
                                 f"{'died' if args.kill else 'never called ' + args.phase}")
        except ep.TimeoutError as e:
            elapsed = time.monotonic() - start
            check(f"rank {victim}" in str(e), f"the error does not name rank {victim}: {e}")
            check(elapsed < timeout + 5, f"raised after {elapsed:.1f} s, timeout {timeout} s")
            print(f"[rank {d.rank}] {args.phase} raised after {elapsed:.1f} s (timeout {timeout} s): {e}", flush=True)
    if args.kill:  # the process group holds a dead rank: no collective, no teardown
        if d.rank == 0:
            print("all checks passed", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    dist.barrier()
    if d.rank == 0:
        print("all checks passed", flush=True)
    del buf
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
