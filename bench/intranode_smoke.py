#!/usr/bin/env python3
"""Normal-mode kernels through the raw runtime calls (uccl.ep._C.Runtime), without the Python-level checks: a
quick device check of layout, dispatch (BF16 / FP8 scales, top-k, num_worst_tokens, cached) and combine against
torch references built from every rank's inputs. Run under the launcher:

    python3 scripts/launch.py --nproc 4 -- bench/intranode_smoke.py [--num-tokens 256 --hidden 1024]
"""
import argparse
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import uccl.ep as ep  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--num-tokens", type=int, default=256)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--num-topk", type=int, default=4)
    p.add_argument("--experts-per-rank", type=int, default=4)
    p.add_argument("--num-sms", type=int, default=8)
    p.add_argument("--iters", type=int, default=3)
    args = p.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    ngpu = torch.cuda.device_count()
    torch.cuda.set_device(rank % ngpu)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    T, H, K = args.num_tokens + 7 * rank, args.hidden, args.num_topk
    E = args.experts_per_rank * world
    dev = torch.device("cuda")
    buf = ep.Buffer(dist.group.WORLD, 256 << 20, 0, explicitly_destroy=True)
    rt = buf._runtime
    assert rt.normal_single_domain()
    stream = torch.cuda.current_stream().cuda_stream

    g = torch.Generator().manual_seed(1000 + rank)
    topk = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    topk[torch.rand(T, K, generator=g) < 0.1] = -1
    weights = torch.rand(T, K, generator=g)
    x = torch.randn(T, H, generator=g).to(torch.bfloat16)
    x[:, 0] = rank
    x[:, 1] = torch.arange(T).to(torch.bfloat16) if T <= 256 else 0
    x_cuda, topk_cuda, w_cuda = x.to(dev), topk.to(dev), weights.to(dev)

    # layout
    per_rank = torch.empty(world, dtype=torch.int32, device=dev)
    per_expert = torch.empty(E, dtype=torch.int32, device=dev)
    in_rank = torch.empty(T, world, dtype=torch.bool, device=dev)
    rt.normal_layout(topk_cuda.data_ptr(), T, K, E, per_rank.data_ptr(), 0, per_expert.data_ptr(),
                     in_rank.data_ptr(), stream)
    ref_in_rank = torch.zeros(T, world, dtype=torch.bool)
    for t in range(T):
        for e in topk[t].tolist():
            if e >= 0:
                ref_in_rank[t, e // args.experts_per_rank] = True
    ref_per_expert = torch.bincount(topk[topk >= 0], minlength=E).to(torch.int32)
    torch.cuda.synchronize()
    assert torch.equal(in_rank.cpu(), ref_in_rank), f"rank {rank}: is_token_in_rank"
    assert torch.equal(per_rank.cpu(), ref_in_rank.sum(0).to(torch.int32)), f"rank {rank}: per rank"
    assert torch.equal(per_expert.cpu(), ref_per_expert), f"rank {rank}: per expert"

    # global reference
    all_x = [None] * world
    dist.all_gather_object(all_x, (x, topk, weights, ref_in_rank))
    rows, idx_rows, w_rows, src_rows = [], [], [], []
    lo, hi = rank * args.experts_per_rank, (rank + 1) * args.experts_per_rank
    for s in range(world):
        xs, ts, ws, ins = all_x[s]
        for t in ins[:, rank].nonzero().flatten().tolist():
            rows.append(xs[t])
            mine = (ts[t] >= lo) & (ts[t] < hi)
            idx_rows.append(torch.where(mine, ts[t] - lo, torch.full_like(ts[t], -1)))
            w_rows.append(torch.where(mine, ws[t], torch.zeros_like(ws[t])))
            src_rows.append(t)
    N = len(rows)
    ref_x = torch.stack(rows) if N else torch.empty(0, H, dtype=torch.bfloat16)

    for it in range(args.iters):
        prefix = torch.empty(world, world, dtype=torch.int32, device=dev)
        send_pos = torch.empty(T, world, dtype=torch.int32, device=dev)
        rt.normal_dispatch_send(x_cuda.data_ptr(), H * 2, 0, 0, 0, 0, topk_cuda.data_ptr(), w_cuda.data_ptr(),
                                in_rank.data_ptr(), per_expert.data_ptr(), T, H * 2, K, E, prefix.data_ptr(),
                                send_pos.data_ptr(), False, True, args.num_sms, stream)
        n, counts = rt.normal_dispatch_wait(E)
        assert n == N, f"rank {rank}: receive count {n} != {N}"
        exp_counts = [int(sum(int((all_x[s][1] == e).any(1).sum()) for s in range(world))) for e in range(lo, hi)]
        assert counts == exp_counts, f"rank {rank}: per-expert {counts} != {exp_counts}"
        recv_x = torch.empty(n, H, dtype=torch.bfloat16, device=dev)
        recv_idx = torch.empty(n, K, dtype=torch.int64, device=dev)
        recv_w = torch.empty(n, K, dtype=torch.float32, device=dev)
        recv_src = torch.empty(n, dtype=torch.int32, device=dev)
        rt.normal_dispatch_recv(H * 2, 0, K, E, prefix.data_ptr(), recv_x.data_ptr(), 0, recv_idx.data_ptr(),
                                recv_w.data_ptr(), recv_src.data_ptr(), n, False, args.num_sms, 4, stream)
        torch.cuda.synchronize()
        rt.check_errors()
        assert torch.equal(recv_x.cpu(), ref_x), f"rank {rank}: recv_x (iter {it})"
        assert torch.equal(recv_idx.cpu(), torch.stack(idx_rows)), f"rank {rank}: recv_topk_idx"
        assert torch.equal(recv_w.cpu(), torch.stack(w_rows)), f"rank {rank}: recv_topk_weights"
        assert recv_src.cpu().tolist() == src_rows, f"rank {rank}: recv_src_idx"
        ref_prefix = torch.stack([a[3].sum(0) for a in all_x]).to(torch.int32).cumsum(0)
        assert torch.equal(prefix.cpu(), ref_prefix.to(torch.int32)), f"rank {rank}: prefix matrix"

        # combine: every rank returns its received rows; the token's sum = x * (ranks it went to)
        out = torch.empty(T, H, dtype=torch.bfloat16, device=dev)
        out_w = torch.empty(T, K, dtype=torch.float32, device=dev)
        bias = torch.randn(T, H, generator=g).to(torch.bfloat16).to(dev)
        rt.normal_combine(recv_x.data_ptr(), recv_w.data_ptr(), bias.data_ptr(), 0, send_pos.data_ptr(),
                          prefix.data_ptr(), T, n, H, K, E, out.data_ptr(), out_w.data_ptr(), args.num_sms, 4, stream)
        torch.cuda.synchronize()
        rt.check_errors()
        cnt = ref_in_rank.sum(1, keepdim=True).float()
        ref_out = (x.float() * cnt + bias.cpu().float()).to(torch.bfloat16)
        diff = (out.cpu().float() - ref_out.float()).abs().max().item()
        assert diff <= 0.05 * max(1.0, ref_out.float().abs().max().item()), f"rank {rank}: combine diff {diff}"
        ref_w = torch.where(topk >= 0, weights, torch.zeros_like(weights))
        ref_w = torch.where(ref_in_rank.any(1, keepdim=True), ref_w, torch.zeros_like(ref_w))
        assert torch.allclose(out_w.cpu(), ref_w, atol=1e-6), f"rank {rank}: combined weights"

        # num_worst_tokens and cached dispatch
        worst = N + 5
        wx = torch.empty(worst, H, dtype=torch.bfloat16, device=dev)
        widx = torch.empty(worst, K, dtype=torch.int64, device=dev)
        rt.normal_dispatch_send(x_cuda.data_ptr(), H * 2, 0, 0, 0, 0, topk_cuda.data_ptr(), w_cuda.data_ptr(),
                                in_rank.data_ptr(), per_expert.data_ptr(), T, H * 2, K, E, prefix.data_ptr(),
                                send_pos.data_ptr(), False, False, args.num_sms, stream)
        rt.normal_dispatch_recv(H * 2, 0, K, E, prefix.data_ptr(), wx.data_ptr(), 0, widx.data_ptr(), 0, 0, worst,
                                True, args.num_sms, 4, stream)
        cx = torch.empty(N, H, dtype=torch.bfloat16, device=dev)
        rt.normal_dispatch_send(x_cuda.data_ptr(), H * 2, 0, 0, 0, 0, 0, 0, in_rank.data_ptr(), 0, T, H * 2, 0, E,
                                prefix.data_ptr(), 0, True, False, args.num_sms, stream)
        rt.normal_dispatch_recv(H * 2, 0, 0, E, prefix.data_ptr(), cx.data_ptr(), 0, 0, 0, 0, N, False,
                                args.num_sms, 4, stream)
        torch.cuda.synchronize()
        rt.check_errors()
        assert torch.equal(wx[:N].cpu(), ref_x), f"rank {rank}: worst rows"
        assert torch.equal(widx[:N].cpu(), torch.stack(idx_rows)) and bool((widx[N:] == -1).all()), \
            f"rank {rank}: worst topk"
        assert torch.equal(cx.cpu(), ref_x), f"rank {rank}: cached rows"
    print(f"[rank {rank}] smoke: {N} rows received, all checks passed", flush=True)
    dist.barrier()
    buf.destroy()


if __name__ == "__main__":
    main()
