#!/usr/bin/env python3
"""Normal-mode handles the caller forged, one rank of a multi-rank run (tests/python/gpu/test_intranode_gpu.py runs
it through pytest; same flags as intranode_checks.py):

    python scripts/launch.py --nproc 2 -- tests/python/gpu/intranode_handle_checks.py --num-tokens 512 \
        --hidden 2048 --num-topk 8 --num-experts 64

The kernels check every handle entry they index with (src/kernels/intranode_handle.hpp) and record the first bad
one; the call itself (where a step of it waits for its kernels, as the staged path's receive does) or the next call
raises ArgumentError naming the field, the entry, the value and the rank, once, and the Buffer stays usable. Each
forgery below runs on every rank at once (one collective call), then get_dispatch_layout (a call that talks to no
peer) must raise naming the entry unless the call did, then an honest dispatch, cached dispatch and combine must pass
intranode_checks.py's exact checks on the same Buffer:
  - combine: a rank_prefix_matrix entry past the receive count, a negative one; send_pos entries -2 and past the
    rows sent (those only skip the entry);
  - cached dispatch: a rank_prefix_matrix entry that is not is_token_in_rank's count, a column end past the rows;
  - combine with the matrix forged on rank 0 only: rank 0 names its entry, every rank that sent rows to rank 0 (and
    so waits for them back) names rank 0, the others raise nothing; across nodes also the sources of other nodes
    whose peer rank 0 is (it sums their rows of its node);
  - recv_src_idx forged: no kernel reads it, the combine is exact and nothing is raised.
Rank 0 prints "all checks passed" at the end.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import intranode_checks as ic  # noqa: E402
from rank_group import fail, log0  # noqa: E402

# x BF16 with top-k, synchronous, no alignment, no num_worst_tokens, no bias, the default config.
HONEST = ic.Case("bf16", True, False, False, False, 1, False, 0, 0)


class HandleChecks:
    def __init__(self, chk: "ic.Checker"):
        self.chk, self.buffer, self.rank, self.R = chk, chk.buffer, chk.rank, chk.R

    def honest_round(self, ctx: str):
        """dispatch, cached dispatch and combine with intranode_checks' exact checks; returns the dispatch's out."""
        chk = self.chk
        v = chk.variant(HONEST.x_mode)
        out = chk.dispatch(HONEST, v)
        chk.check_dispatch(HONEST, v, out, f"{ctx}: dispatch")
        chk.check_cached(HONEST, v, out[0], out[4], f"{ctx}: cached dispatch")
        chk.check_combine(HONEST, v, out, f"{ctx}: combine")
        return out

    def expect_raised(self, ctx: str, words):
        """The next call raises ArgumentError (a ValueError) holding every one of `words` (none: raises nothing);
        the probe is get_dispatch_layout, which no peer takes part in."""
        torch.cuda.synchronize()
        try:
            self.buffer.get_dispatch_layout(self.chk.topk_idx, self.chk.E)
        except self.chk.ep.ArgumentError as e:
            self.says(ctx, "the next call", words, e)
            return
        if words:
            fail(ctx, f"the next call did not raise (expected an ArgumentError saying {words})")

    @staticmethod
    def says(ctx: str, where: str, words, e: Exception):
        """`where` raised e: fails unless an error was expected and e holds every one of `words`."""
        if not words:
            fail(ctx, f"{where} raised, expected nothing: {e}")
        missing = [w for w in words if w not in str(e)]
        if missing:
            fail(ctx, f"the error does not say {missing}: {e}")

    def combine(self, out, handle):
        """The combine of the honest round's rows with `handle`."""
        recv, _, rw, _, _, _ = out
        y = self.chk.expert_output(recv, None, self.chk.expected.num_recv, recv.size(0))
        return self.buffer.combine(y, handle, topk_weights=rw)

    @staticmethod
    def forged(handle, index: int, edit):
        """The handle with a copy of its tensor `index`, edited by edit(tensor)."""
        h = list(handle)
        h[index] = h[index].clone()
        edit(h[index])
        return tuple(h)

    def check_forgery(self, ctx: str, run, words):
        """run() with a forged handle: the call itself raises when a step of it waits for its kernels (the staged
        path's receive does), otherwise the next call; either way once, naming the entry."""
        try:
            run()
        except self.chk.ep.ArgumentError as e:
            self.says(ctx, "the call", words, e)
            self.expect_raised(ctx, [])  # raised once: the record is cleared
        else:
            self.expect_raised(ctx, words)
        dist.barrier()
        self.honest_round(f"{ctx}, then honest calls")
        return f"  ok {ctx}: the call or the next one raised naming it; honest calls after it pass"

    def run(self, d):
        me, R = self.rank, self.R
        out = self.honest_round("honest round")
        handle = out[4]
        prefix = handle[0]
        rows = int(handle[2])
        at = f"on rank {me}"

        def prefix_set(row, col, value):
            return lambda t: t.__setitem__((row, col), value)

        # combine: an entry past the receive count, and a negative one.
        h = self.forged(handle, 0, prefix_set(R - 1, me, rows + 1))
        log0(d, self.check_forgery("combine, rank_prefix_matrix entry past the receive count",
                                   lambda: self.combine(out, h),
                                   [f"combine {at}",
                                    f"handle[0] (rank_prefix_matrix)[{R - 1}][{me}] holds {rows + 1}"]))
        # In the last row, so that no other entry's rule sees it (each rule names the entry it reads last).
        other = (me + 1) % R
        h = self.forged(handle, 0, prefix_set(R - 1, other, -1))
        log0(d, self.check_forgery("combine, negative rank_prefix_matrix entry", lambda: self.combine(out, h),
                                   [f"combine {at}", f"(rank_prefix_matrix)[{R - 1}][{other}] holds -1"]))
        # combine: send_pos entries -2 and past the rows this rank sent to rank 0 (the entry is skipped).
        sent = int(prefix[me, 0]) - (int(prefix[me - 1, 0]) if me else 0)
        for value in (-2, sent, 2 ** 31 - 1):
            h = self.forged(handle, 1, prefix_set(0, 0, value))
            log0(d, self.check_forgery(f"combine, send_pos entry {value}", lambda: self.combine(out, h),
                                       [f"combine {at}", f"handle[1] (send_pos)[0][0] holds {value};"]))
        # cached dispatch: this rank's own count no longer is_token_in_rank's, and a column end past the rows.
        x = self.chk.variant(HONEST.x_mode).arg
        h = self.forged(handle, 0, prefix_set(0, me, -1))
        log0(d, self.check_forgery("cached dispatch, negative rank_prefix_matrix entry",
                                   lambda: self.buffer.dispatch(x, handle=h),
                                   [f"dispatch (handle given) {at}", f"(rank_prefix_matrix)[0][{me}] holds -1"]))
        h = self.forged(handle, 0, prefix_set(R - 1, me, rows + 1))
        log0(d, self.check_forgery("cached dispatch, rank_prefix_matrix column end past the rows",
                                   lambda: self.buffer.dispatch(x, handle=h),
                                   [f"dispatch (handle given) {at}",
                                    f"(rank_prefix_matrix)[{R - 1}][{me}] holds {rows + 1}"]))
        if R > 1:
            ctx = "combine with rank 0's rank_prefix_matrix forged"
            h = self.forged(handle, 0, prefix_set(R - 1, 0, 2 ** 31 - 1)) if me == 0 else handle
            to_rank0 = int(prefix[me, 0]) - (int(prefix[me - 1, 0]) if me else 0)
            # Across nodes (src/kernels/internode_combine.cu) rank 0 also sums, for the sources of other nodes whose
            # peer it is, the partials of every row its node got from them: it can place none of them, so such a
            # source loses every partial from rank 0's node.
            P = self.chk.internode_ranks_per_node
            if P and me % P == 0 and me // P != 0:
                to_rank0 += sum(int(prefix[me, r]) - (int(prefix[me - 1, r]) if me else 0) for r in range(P))
            if me == 0:
                words = [f"combine {at}", f"(rank_prefix_matrix)[{R - 1}][0] holds {2 ** 31 - 1}"]
            else:
                words = [f"combine {at}", "rank 0 rejected an entry of its handle"] if to_rank0 else []
            log0(d, self.check_forgery(ctx, lambda: self.combine(out, h), words))
        # recv_src_idx: read by no kernel; a forged one changes nothing.
        h = self.forged(handle, 3, lambda t: t.fill_(-7))
        ctx = "combine with recv_src_idx forged"
        self.chk.check_combine(HONEST, self.chk.variant(HONEST.x_mode), out[:4] + (h,) + out[5:], ctx)
        self.expect_raised(ctx, [])
        log0(d, f"  ok {ctx}: exact, nothing raised (no kernel reads it)")


def main(argv=None):
    args = ic.parse_args(argv)
    d, chk = ic.start(args, "handle checks")
    chk.ep.Buffer.set_num_sms(args.num_sms[0])
    chk.setup(args.seed)
    chk.check_layout()
    HandleChecks(chk).run(d)
    dist.barrier()
    log0(d, "all checks passed")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
