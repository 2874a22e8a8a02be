#!/usr/bin/env python3
"""Draws bench results against the rank count: latency (us, log scale) on the left, bandwidth (GB/s per rank) on the
right, one line per series, and each series' reference figure (the copy rate, the transport floor) dashed in its
colour. Reads the --json files of the benches (bench/bench_json.py), writes one PNG.

    python3 scripts/plot_results.py bench/results/results_2026-11-30.json -o bench/results/results_2026-11-30.png
    python3 scripts/plot_results.py ll_2r.json ll_4r.json ll_8r.json --bench test_low_latency -o ll.png

A series is the records that share bench, params["series"] (where a transcription names one), mode, call, dtype and
node layout (all ranks on one node, or nodes of K ranks). Where a series holds two records at one rank count, the
later one (file order, then record order) is drawn.
"""
import argparse
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

import bench_json  # noqa: E402

PANELS = (("latency_us", "latency (us)"), ("bandwidth_gbs", "bandwidth (GB/s per rank)"))


def series_key(rec: dict) -> Tuple[str, str, str]:
    """(what ran, which call and dtype, node layout) of a record's series."""
    head = rec["params"].get("series") or f"{rec['bench']} {rec['mode']}"
    what = " ".join(x for x in (rec["call"], rec["dtype"]) if x)
    nodes = "" if rec["ranks_per_node"] == rec["num_ranks"] else f"nodes of {rec['ranks_per_node']}"
    return head, what, nodes


def series_name(rec: dict) -> str:
    head, what, nodes = series_key(rec)
    return head + (f": {what}" if what else "") + (f", {nodes}" if nodes else "")


def series(records: List[dict], field: str) -> "OrderedDict[str, Dict[int, Tuple[float, Optional[tuple]]]]":
    """series name -> {num_ranks: (value of field, (reference name, its value) or None)}, for the records that
    have field."""
    out: "OrderedDict[str, Dict[int, Tuple[float, Optional[tuple]]]]" = OrderedDict()
    for rec in records:
        if rec[field] is None:
            continue
        ref = rec["reference"]
        ref = (ref["name"], ref[field]) if ref is not None and ref[field] is not None else None
        out.setdefault(series_name(rec), {})[rec["num_ranks"]] = (rec[field], ref)
    return out


def references(drawn, heads: Dict[str, str]) -> "OrderedDict[tuple, Tuple[str, str]]":
    """The reference lines of a panel, each drawn once: (reference name, its points) -> (label, the series whose
    colour it takes). Several calls of one series often share one reference (the copy rate of the run)."""
    out: "OrderedDict[tuple, Tuple[str, str]]" = OrderedDict()
    for name, points in drawn.items():
        refs = tuple(sorted((r, v[1][1]) for r, v in points.items() if v[1] is not None))
        if not refs:
            continue
        ref_name = next(v[1][0] for v in points.values() if v[1] is not None)
        key = (ref_name, refs)
        if key in out:
            out[key] = (f"{heads[name]}: {ref_name}", out[key][1])  # shared: name the series, not one call
        else:
            out[key] = (f"{name}: {ref_name}", name)
    return out


def draw(records: List[dict], output: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(16, 11))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(OrderedDict.fromkeys(series_name(r) for r in records))
    colour = {n: colours[i % len(colours)] for i, n in enumerate(names)}
    heads = {series_name(r): series_key(r)[0] for r in records}
    markers = "os^Dv<>ph*"
    for ax, (field, label) in zip(axes, PANELS):
        drawn = series(records, field)
        for i, (name, points) in enumerate(drawn.items()):
            ranks = sorted(points)
            ax.plot(ranks, [points[r][0] for r in ranks], marker=markers[i % len(markers)], color=colour[name],
                    label=name)
        for (_, refs), (ref_label, name) in references(drawn, heads).items():
            ax.plot([r for r, _ in refs], [v for _, v in refs], linestyle="--", marker="x", color=colour[name],
                    alpha=0.6, label=f"{ref_label} (reference)")
        all_ranks = sorted({r for points in drawn.values() for r in points})
        if all_ranks:
            ax.set_xscale("log", base=2)
            ax.set_xticks(all_ranks)
            ax.set_xticklabels([str(r) for r in all_ranks])
            ax.set_yscale("log")
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08))
        else:
            ax.text(0.5, 0.5, f"no {label} figures", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("ranks")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    commits = sorted({r["git_commit"][:8] for r in records})
    fig.suptitle(title + f"\n(commits {', '.join(commits)}; dashed: the reference figure measured in the same run)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Files: JSON arrays of bench records (bench/bench_json.py).")
    p.add_argument("files", nargs="+", help="--json files of the benches")
    p.add_argument("-o", "--output", default="results.png", help="the PNG to write (default: %(default)s)")
    p.add_argument("--bench", action="append", default=None,
                   help="only records of this bench (repeat for several; default: all)")
    p.add_argument("--title", default="uccl-ep bench results against the rank count")
    a = p.parse_args(argv)
    if not a.output.lower().endswith(".png"):
        p.error(f"--output {a.output}: expected a .png file")
    return a


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    records = []
    try:
        for path in a.files:
            records += bench_json.read(path)
    except (OSError, ValueError) as e:
        print(f"plot_results.py: {e}", file=sys.stderr)
        return 1
    if a.bench:
        records = [r for r in records if r["bench"] in a.bench]
    if not records:
        print("plot_results.py: no records to draw" + (f" for --bench {', '.join(a.bench)}" if a.bench else ""),
              file=sys.stderr)
        return 1
    draw(records, a.output, a.title)
    print(f"plot_results.py: {len(records)} records, {len(set(map(series_name, records)))} series -> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
