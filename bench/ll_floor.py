"""The transport floor of the low-latency calls (issue 11), for bench/test_low_latency.py: the writes and signals one
dispatch or combine hands the proxies (same sizes, same count, same provider, between the same processes, over the
same RDMA buffer), posted straight through the transport from CPU threads and timed until every signal a rank
expects has been applied there. What a call costs above it is what the GPU, the ring and the proxies add.

Target: each call within 1.5x of (floor + the NVLink-path time of the same call). One run cannot measure both paths,
so the NVLink-path time comes from --nvlink-us DISPATCH,COMBINE (the same bench with every rank on one node); without
it the ratio printed is to the floor alone.

The C++ side: uccl_ep/proxy/transport_floor.hpp (the floor), runtime/ll_floor_plan.hpp (a call's plan),
runtime::Buffer::transportFloor* (through _C.Runtime). Here: the counts a plan is made from, the collective open and
close, the timing loop and the printed lines. The pure parts run on the CPU (tests/python/test_ll_floor.py).
"""
import statistics
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

TARGET = 1.5
CALLS = ("dispatch", "combine")


def expert_counts(all_topk_idx: Sequence[torch.Tensor], num_experts: int) -> List[int]:
    """counts[s * E + e] = tokens of rank s whose top-k holds expert e (-1 entries skipped; a token names an expert
    at most once, as ll_reference.check_topk_idx requires), the form _C's floor plans take."""
    out: List[int] = []
    for idx in all_topk_idx:
        t = idx.detach().cpu().long().reshape(-1)
        out.extend(torch.bincount(t[t >= 0], minlength=num_experts).tolist())
    return out


def parse_nvlink_us(text: Optional[str], names: Sequence[str] = ("DISPATCH", "COMBINE")) -> Optional[Tuple[float, ...]]:
    """'DISPATCH,COMBINE' (one number per name) in microseconds -> a tuple of them; None for None or ''. ValueError
    otherwise."""
    if not text:
        return None
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != len(names) or any(v < 0 or v != v for v in values):
        raise ValueError(f"--nvlink-us takes {','.join(names)} in microseconds ({len(names)} numbers >= 0), got "
                         f"{text!r}")
    return values


class Floor:
    """A Buffer's transport floor, open from the constructor to close(); both are collective over the Buffer's
    group. Run it only between calls: it writes the receive areas a call uses."""

    def __init__(self, buffer):
        self.buffer, self.rt = buffer, buffer._runtime
        infos = buffer._all_gather(bytes(self.rt.transport_floor_info()))
        self.rt.transport_floor_connect(infos=[bytes(i) for i in infos])

    def plan(self, call: str, counts: List[int], max_tokens: int, hidden: int, num_experts: int):
        return self.rt.low_latency_floor_plan(num_max_dispatch_tokens_per_rank=max_tokens, hidden=hidden,
                                              num_experts=num_experts, call=call, counts=counts)

    def run(self, plan):
        return self.rt.transport_floor_run(plan=plan)

    def close(self):
        self.buffer._barrier("transport floor close")  # every rank's last run is complete: no peer needs this rank's endpoints any more
        self.rt.transport_floor_close()


def measure(floor, plans: Dict[str, object], start_together: Callable[[], None], warmup: int,
            iters: int) -> dict:
    """Median floor per call (each key of `plans`) in microseconds (floor_<call>_us: until this rank's signals were
    applied; floor_<call>_sends_us: until its own writes and signals completed), and what one run sends from this
    rank."""
    res = {}
    for call in plans:
        us, sends = [], []
        for i in range(warmup + iters):
            start_together()
            r = floor.run(plans[call])
            if i >= warmup:
                us.append(r.seconds * 1e6)
                sends.append(r.sends_seconds * 1e6)
        res[f"floor_{call}_us"] = statistics.median(us)
        res[f"floor_{call}_sends_us"] = statistics.median(sends)
        res[f"floor_{call}_writes"] = int(plans[call].writes)
        res[f"floor_{call}_bytes"] = int(plans[call].bytes)
        res[f"floor_{call}_signals"] = len(plans[call].ops)
    return res


def summary_part(r: dict) -> str:
    """The floor's part of a rank's summary line."""
    return " | floor: " + ", ".join(
        f"{c} {r[f'floor_{c}_us']:.1f} us ({r[f'floor_{c}_writes']} writes, {r[f'floor_{c}_bytes'] / 1e6:.2f} MB, "
        f"{r[f'floor_{c}_signals']} signals)" for c in CALLS)


def floor_lines(results: List[dict], nvlink_us: Optional[Tuple[float, float]], transport: str) -> List[str]:
    """Rank 0's table: per call the measured time and the floor (mean / max over ranks), the NVLink-path time, and
    measured / (floor + NVLink) per rank (mean / max), with the target. Without nvlink_us: measured / floor."""
    if not results or "floor_dispatch_us" not in results[0]:
        return []
    lines = [f"transport floor over {transport}: the same writes and signals posted from the CPU "
             f"(target: each call within {TARGET}x of floor + NVLink-path time"
             + ("" if nvlink_us else "; pass --nvlink-us DISPATCH,COMBINE for it, the ratio below is to the floor "
                                     "alone") + ")",
             "| call | measured us mean/max | floor us mean/max | NVLink-path us | "
             + ("measured / (floor + NVLink) mean/max" if nvlink_us else "measured / floor mean/max")
             + f" | within {TARGET}x |",
             "|" + "---|" * 6]
    for i, call in enumerate(CALLS):
        measured = [r[f"{call}_us"] for r in results]
        floor = [r[f"floor_{call}_us"] for r in results]
        nvl = nvlink_us[i] if nvlink_us else 0.0
        ratios = [m / (f + nvl) if f + nvl > 0 else float("inf") for m, f in zip(measured, floor)]
        within = ("yes" if max(ratios) <= TARGET else "no") if nvlink_us else "-"
        lines.append(f"| {call} | {statistics.fmean(measured):.1f} / {max(measured):.1f} | "
                     f"{statistics.fmean(floor):.1f} / {max(floor):.1f} | "
                     f"{f'{nvl:.1f}' if nvlink_us else '-'} | "
                     f"{statistics.fmean(ratios):.2f} / {max(ratios):.2f} | {within} |")
    return lines
