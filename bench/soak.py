#!/usr/bin/env python3
"""Soak: many low-latency and normal-mode dispatch/combine rounds on the same inputs. Every round's results must be
bitwise equal to the first round's, and memory must stay flat: GPU memory allocated and reserved (torch's caching
allocator) and this process's host RSS are printed every --every rounds and compared with what they were after
--warmup-rounds rounds. The run fails (exit 1, naming the round, the tensor and the first differing element, or
the figure that grew) when a result differs or a figure grows by more than its tolerance:
--gpu-growth-mb (default 16 MiB, allocated and reserved alike) and --rss-growth-mb (default 64 MiB).

On the device (one rank per GPU; the same flags as the other benches after the soak's own):

    python scripts/launch.py --nproc 8 -- bench/soak.py --ll-rounds 10000 --normal-rounds 1000 --every 1000
    python scripts/launch.py --nproc 2 --ranks-per-node 1 -- bench/soak.py   # two emulated nodes: the proxies

A low-latency round is an FP8 dispatch and a BF16 combine of the same expert output (bench/test_low_latency.py's
prepare); its results are recv_count, the rows below each expert's count (data, scales, src_info), layout_range and
the combined rows (rows past a count hold whatever the buffer held and are not compared). A normal-mode round is
get_dispatch_layout, dispatch with top-k and combine of what was received (tests/python/gpu/intranode_checks.py's
inputs); every tensor they return is compared. The arguments after the soak's own go to both calls' parsers
(tests/python/gpu/low_latency_checks.py and intranode_checks.py): --num-tokens, --hidden, --num-topk,
--num-experts, --num-masked and --seed are shared. tests/python/test_soak.py runs the same rounds over the CPU
stand-ins and shows that a changed result and a leak are caught.
"""
import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "python", "gpu"))

import torch  # noqa: E402

MiB = 1 << 20
Named = List[Tuple[str, torch.Tensor]]


class SoakFailure(Exception):
    """A round's results differ from the first round's, or memory grew past its tolerance."""


# ---------------------------------------------------------------------------------------------------------------
# Results: flattened, kept from the first round, compared bit for bit
# ---------------------------------------------------------------------------------------------------------------
def named_tensors(name: str, obj) -> Named:
    """Every tensor (and number) in obj, nested tuples and lists included, as (path, tensor); numbers become
    one-element tensors. Anything else (events, hooks, None) is left out."""
    if isinstance(obj, torch.Tensor):
        return [(name, obj)]
    if isinstance(obj, bool) or isinstance(obj, (int, float)):
        return [(name, torch.tensor([obj]))]
    if isinstance(obj, (tuple, list)):
        out = []
        for i, item in enumerate(obj):
            out += named_tensors(f"{name}[{i}]", item)
        return out
    return []


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).contiguous().view(torch.uint8)


def first_difference(name: str, want: torch.Tensor, got: torch.Tensor) -> Optional[str]:
    """None when got equals want bit for bit (dtype and shape too), else what differs first."""
    if got.dtype != want.dtype or tuple(got.shape) != tuple(want.shape):
        return f"{name}: {got.dtype} {tuple(got.shape)}, the first round gave {want.dtype} {tuple(want.shape)}"
    a, b = _bits(want), _bits(got)
    if torch.equal(a, b):
        return None
    diff = (a != b).nonzero()
    byte = int(diff[0])
    flat = byte // want.element_size()
    index, rest = [], flat
    for size in reversed(tuple(want.shape)):
        index.insert(0, rest % size)
        rest //= size
    w, g = want.reshape(-1)[flat].item(), got.reshape(-1)[flat].item()
    return f"{name}{index}: {g!r}, the first round gave {w!r} ({diff.numel()} bytes differ)"


class FirstRound:
    """The first round's results (copies on their device); check() compares a later round's with them."""

    def __init__(self, what: str):
        self.what, self.kept = what, None

    def check(self, round_: int, results: Named) -> None:
        if self.kept is None:
            self.kept = [(n, t.detach().clone()) for n, t in results]
            return
        names = [n for n, _ in results]
        if names != [n for n, _ in self.kept]:
            raise SoakFailure(f"{self.what} round {round_}: returned {names}, the first round "
                              f"{[n for n, _ in self.kept]}")
        for (name, want), (_, got) in zip(self.kept, results):
            why = first_difference(name, want, got)
            if why is not None:
                raise SoakFailure(f"{self.what} round {round_}: {why}")


# ---------------------------------------------------------------------------------------------------------------
# Memory: GPU allocated / reserved and host RSS against a baseline taken after the warm-up
# ---------------------------------------------------------------------------------------------------------------
def host_rss_bytes() -> int:
    """This process's resident set now (not its peak): /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sample_memory(device: torch.device) -> Dict[str, int]:
    on_gpu = device.type == "cuda"
    return dict(allocated=torch.cuda.memory_allocated(device) if on_gpu else 0,
                reserved=torch.cuda.memory_reserved(device) if on_gpu else 0, rss=host_rss_bytes())


class MemoryWatch:
    """Prints the figures and their growth since the baseline; raises SoakFailure when one grew past its tolerance
    (bytes: allocated and reserved share gpu_growth, rss has rss_growth)."""

    def __init__(self, what: str, sample: Callable[[], Dict[str, int]], gpu_growth: int, rss_growth: int,
                 out: Callable[[str], None] = print):
        self.what, self.sample, self.out = what, sample, out
        self.tolerance = dict(allocated=gpu_growth, reserved=gpu_growth, rss=rss_growth)
        self.base = None

    def baseline(self) -> None:
        self.base = self.sample()

    def report(self, round_: int, rounds: int) -> None:
        now = self.sample()
        base = self.base if self.base is not None else now
        grew = {k: now[k] - base[k] for k in now}
        self.out(f"[soak] {self.what} round {round_}/{rounds}: GPU allocated {now['allocated'] / MiB:.1f} MiB "
                 f"({grew['allocated'] / MiB:+.1f}), reserved {now['reserved'] / MiB:.1f} MiB "
                 f"({grew['reserved'] / MiB:+.1f}), host RSS {now['rss'] / MiB:.1f} MiB ({grew['rss'] / MiB:+.1f})")
        over = [f"{k} grew {grew[k] / MiB:.1f} MiB since the warm-up (tolerance {self.tolerance[k] / MiB:.1f} MiB)"
                for k in ("allocated", "reserved", "rss") if grew[k] > self.tolerance[k]]
        if over:
            raise SoakFailure(f"{self.what} round {round_}: " + "; ".join(over))


def soak(what: str, rounds: int, step: Callable[[], Named], every: int, warmup: int, watch: MemoryWatch) -> None:
    """Runs step() `rounds` times: every result against the first round's, memory every `every` rounds and after
    the last, against the figures after `warmup` rounds (the allocator's caches fill during the first ones)."""
    first = FirstRound(what)
    for r in range(1, rounds + 1):
        first.check(r, step())
        if r == min(warmup, rounds):
            watch.baseline()
        if r % every == 0 or r == rounds:
            watch.report(r, rounds)


# ---------------------------------------------------------------------------------------------------------------
# The rounds
# ---------------------------------------------------------------------------------------------------------------
def low_latency_step(buffer, x, topk_idx, topk_weights, y, out, M: int, E: int, use_fp8: bool):
    """One dispatch of x and one combine of y (the expert output, shaped like what dispatch returns) into out."""
    def step() -> Named:
        recv, count, handle, _, _ = buffer.low_latency_dispatch(x, topk_idx, M, E, use_fp8=use_fp8)
        combined = buffer.low_latency_combine(y, topk_idx, topk_weights, handle, out=out)[0]
        data, scales = recv if use_fp8 else (recv, None)
        valid = torch.arange(data.size(1), device=count.device).unsqueeze(0) < count.unsqueeze(1)
        res = [("recv_count", count), ("recv_x", data[valid]), ("src_info", handle[0][valid]),
               ("layout_range", handle[1]), ("combined_x", combined)]
        if scales is not None:
            res.insert(2, ("recv_x_scales", scales[valid]))
        return res

    return step


def normal_step(buffer, x, topk_idx, topk_weights, E: int):
    """get_dispatch_layout, dispatch with top-k, and combine of the received rows with their weights."""
    def step() -> Named:
        per_rank, per_node, per_expert, in_rank, _ = buffer.get_dispatch_layout(topk_idx, E)
        recv_x, recv_idx, recv_w, per_expert_list, handle, _ = buffer.dispatch(
            x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank, num_tokens_per_expert=per_expert,
            topk_idx=topk_idx, topk_weights=topk_weights)
        combined_x, combined_w, _ = buffer.combine(recv_x, handle, topk_weights=recv_w)
        return (named_tensors("layout", (per_rank, per_node, per_expert, in_rank)) +
                named_tensors("recv_x", recv_x) + named_tensors("recv_topk_idx", recv_idx) +
                named_tensors("recv_topk_weights", recv_w) +
                named_tensors("num_recv_tokens_per_expert_list", per_expert_list) + named_tensors("handle", handle) +
                named_tensors("combined_x", combined_x) + named_tensors("combined_topk_weights", combined_w))

    return step


# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    """(the soak's own arguments, the rest for the calls' parsers)."""
    p = argparse.ArgumentParser(description="uccl.ep soak: rounds compared bitwise with the first, memory flat "
                                "(see the module docstring). Arguments it does not know go to "
                                "low_latency_checks.py's and intranode_checks.py's parsers.")
    p.add_argument("--ll-rounds", type=int, default=10000, help="low-latency dispatch+combine rounds (0: none)")
    p.add_argument("--normal-rounds", type=int, default=1000, help="normal-mode rounds (0: none)")
    p.add_argument("--every", type=int, default=1000, help="print the memory figures every this many rounds")
    p.add_argument("--warmup-rounds", type=int, default=10, help="rounds before the memory baseline")
    p.add_argument("--gpu-growth-mb", type=float, default=16.0,
                   help="tolerated growth of GPU memory allocated, and of reserved, since the baseline (MiB)")
    p.add_argument("--rss-growth-mb", type=float, default=64.0,
                   help="tolerated growth of host RSS since the baseline (MiB)")
    a, rest = p.parse_known_args(argv)
    if a.ll_rounds < 0 or a.normal_rounds < 0 or a.every < 1 or a.warmup_rounds < 1:
        p.error("need --ll-rounds >= 0, --normal-rounds >= 0, --every >= 1 and --warmup-rounds >= 1")
    if not (a.gpu_growth_mb >= 0 and a.rss_growth_mb >= 0):
        p.error("the growth tolerances must be non-negative MiB")
    return a, rest


def watch_for(a, what: str, device: torch.device) -> MemoryWatch:
    return MemoryWatch(what, lambda: sample_memory(device), int(a.gpu_growth_mb * MiB), int(a.rss_growth_mb * MiB),
                       out=lambda line: print(line, flush=True))


def run_low_latency(a, ll_args, chk) -> None:
    import test_low_latency as ll_bench
    inp, y, out = ll_bench.prepare(ll_args, chk)
    step = low_latency_step(chk.buffer, inp["x"], inp["topk_idx"], inp["topk_weights"], y, out, chk.M, chk.E, True)
    soak("low-latency", a.ll_rounds, step, a.every, a.warmup_rounds, watch_for(a, "low-latency", chk.device))


def run_normal(a, normal_args, d, ep, device) -> None:
    import torch.distributed as dist

    import intranode_checks as normal_checks
    buffer = ep.Buffer(dist.group.WORLD, num_nvl_bytes=normal_args.nvl_bytes)
    chk = normal_checks.Checker(normal_args, ep, buffer, d, device)
    chk.setup(normal_args.seed)
    chk.check_layout()
    step = normal_step(buffer, chk.x, chk.topk_idx, chk.topk_weights, chk.E)
    soak("normal", a.normal_rounds, step, a.every, a.warmup_rounds, watch_for(a, "normal", device))


def main(argv=None):
    import torch.distributed as dist

    import intranode_checks as normal_checks
    import low_latency_checks as ll_checks
    from rank_group import log0
    a, rest = parse_args(argv)
    import test_low_latency as ll_bench
    # The low-latency bench's parser: the checks' flags and the bench flags its prepare() reads (--use-logfmt).
    ll_args, normal_args = ll_bench.parse_args(rest), normal_checks.parse_args(rest)
    d, chk, _ = ll_checks.start(ll_args, "soak")
    try:
        if a.ll_rounds:
            run_low_latency(a, ll_args, chk)
        if a.normal_rounds:
            run_normal(a, normal_args, d, chk.ep, chk.device)
    except SoakFailure as e:
        print(f"[rank {d.rank}] soak FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    dist.barrier()
    log0(d, f"soak passed: {a.ll_rounds} low-latency and {a.normal_rounds} normal-mode rounds bitwise equal to the "
            f"first, memory within its tolerances")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
