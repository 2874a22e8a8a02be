"""Normal-mode faults: a rank that never calls dispatch.

Run under scripts/launch.py (or torchrun) with a small UCCL_EP_TIMEOUT_SECS, e.g.

    UCCL_EP_TIMEOUT_SECS=3 python3 scripts/launch.py --nproc 4 -- bench/test_intranode_faults.py
    UCCL_EP_TIMEOUT_SECS=3 python3 scripts/launch.py --nproc 4 --ranks-per-node 2 -- bench/test_intranode_faults.py

Across emulated nodes the absent rank's counts never arrive (the counts exchange names it) or, on its own node, its
ready word never comes (the NVLink side names it).

The last rank builds the Buffer and then stays away from dispatch. Checked on the others: dispatch raises
uccl.ep.TimeoutError naming the absent rank, within the timeout plus launch slack; bad input raised before that
leaves the buffer usable (a good dispatch and combine with every rank present run first).
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from test_ll_faults import check  # noqa: E402
import test_ll_faults as tlf  # noqa: E402


def main():
    run = tlf.begin(__doc__, num_tokens=128)
    args, d, ep, dev, timeout, absent = run.args, run.d, run.ep, run.dev, run.timeout, run.absent
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
    try:
        buf.dispatch(x.float(), num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                     num_tokens_per_expert=per_expert, topk_idx=idx, topk_weights=w)
        raise AssertionError(f"[rank {d.rank}] a float32 x was accepted")
    except (TypeError, ValueError) as e:
        check("x" in str(e), f"the error does not name x: {e}")
    recv_x, _, recv_w, _, handle, _ = buf.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                                   num_tokens_per_expert=per_expert, topk_idx=idx, topk_weights=w)
    out, _, _ = buf.combine(recv_x, handle)
    torch.cuda.synchronize()
    want = x.float() * in_rank.sum(dim=1, keepdim=True).float()
    check((out.float() - want).abs().max().item() <= 0.02 * want.abs().max().item(), "combine after bad input")
    dist.barrier()

    if d.rank != absent:
        start = time.monotonic()
        try:
            buf.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank, num_tokens_per_expert=per_expert,
                         topk_idx=idx, topk_weights=w)
            torch.cuda.synchronize()
            buf.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank, num_tokens_per_expert=per_expert,
                         topk_idx=idx, topk_weights=w)
            raise AssertionError(f"[rank {d.rank}] no error although rank {absent} never dispatched")
        except ep.TimeoutError as e:
            elapsed = time.monotonic() - start
            check(f"rank {absent}" in str(e), f"the error does not name rank {absent}: {e}")
            check(elapsed < timeout + 5, f"raised after {elapsed:.1f} s, timeout {timeout} s")
            print(f"[rank {d.rank}] raised after {elapsed:.1f} s (timeout {timeout} s): {e}", flush=True)
    dist.barrier()
    if d.rank == 0:
        print("fault checks passed", flush=True)
    del buf
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
