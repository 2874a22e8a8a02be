"""scripts/plot_results.py: a PNG from a small --json file, its series (one per bench, call, dtype and node layout;
the later record wins at one rank count; shared references drawn once), and its refusals (a bad file, no records,
an output that is not a PNG). Runs on the CPU (matplotlib's Agg backend)."""
import json
import os
import struct
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "plot_results.py")
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import bench_json  # noqa: E402

pytest.importorskip("matplotlib")


def ll(call, n, rpn, us, gbs=None, floor=None):
    return bench_json.record("test_low_latency", "low_latency", call=call, dtype="fp8", num_ranks=n,
                             ranks_per_node=rpn, tokens=128, hidden=7168, topk=8, experts=288, latency_us=us,
                             bandwidth_gbs=gbs, ref=floor and bench_json.reference("transport floor", latency_us=floor),
                             commit="0" * 40, date="2026-11-30T00:00:00Z")


def small_file(tmp_path):
    records = [ll("dispatch", 2, 2, 70.0, 3.0), ll("dispatch", 4, 4, 90.0, 2.5), ll("dispatch", 8, 8, 250.0, 1.0),
               ll("dispatch", 2, 1, 3300.0, floor=2900.0), ll("dispatch", 8, 1, 10700.0, floor=14000.0)]
    path = str(tmp_path / "ll.json")
    bench_json.write(path, records)
    return path


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", head[:8]
    return struct.unpack(">II", head[16:24])


def run(*argv):
    return subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True, timeout=300)


def test_a_png_from_a_small_file(tmp_path):
    out = str(tmp_path / "ll.png")
    r = run(small_file(tmp_path), "-o", out)
    assert r.returncode == 0, r.stderr
    assert "5 records, 2 series" in r.stdout
    width, height = png_size(out)
    assert width >= 800 and height >= 600


def test_series_split_by_node_layout_and_the_later_record_wins():
    import plot_results
    records = [ll("dispatch", 2, 2, 70.0), ll("dispatch", 8, 8, 250.0), ll("dispatch", 2, 1, 3300.0, floor=2900.0),
               ll("combine", 2, 2, 50.0), ll("dispatch", 2, 2, 75.0)]
    drawn = plot_results.series(records, "latency_us")
    assert list(drawn) == ["test_low_latency low_latency: dispatch fp8", "test_low_latency low_latency: dispatch fp8, "
                           "nodes of 1", "test_low_latency low_latency: combine fp8"]
    one_node = drawn["test_low_latency low_latency: dispatch fp8"]
    assert one_node == {2: (75.0, None), 8: (250.0, None)}
    assert drawn["test_low_latency low_latency: dispatch fp8, nodes of 1"] == {2: (3300.0, ("transport floor",
                                                                                           2900.0))}
    assert plot_results.series(records, "bandwidth_gbs") == {}


def test_a_reference_shared_by_several_calls_is_drawn_once():
    import plot_results
    copy = bench_json.reference("copy", bandwidth_gbs=1000.0)
    records = [bench_json.record("test_intranode", "normal", call=c, dtype="bf16", num_ranks=2, ranks_per_node=2,
                                 bandwidth_gbs=g, ref=copy, params={"series": "uccl-ep"}) for c, g in
               (("dispatch", 300.0), ("combine", 310.0))]
    drawn = plot_results.series(records, "bandwidth_gbs")
    heads = {plot_results.series_name(r): "uccl-ep" for r in records}
    refs = plot_results.references(drawn, heads)
    assert list(refs.values()) == [("uccl-ep: copy", "uccl-ep: dispatch bf16")]


def test_only_the_benches_asked_for(tmp_path):
    r = run(small_file(tmp_path), "--bench", "test_intranode", "-o", str(tmp_path / "none.png"))
    assert r.returncode == 1 and "no records to draw for --bench test_intranode" in r.stderr
    assert not os.path.exists(tmp_path / "none.png")


def test_a_bad_file_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"schema": bench_json.SCHEMA}]))
    r = run(str(bad), "-o", str(tmp_path / "x.png"))
    assert r.returncode == 1 and f"{bad}[0]: missing" in r.stderr
    r = run(str(tmp_path / "absent.json"), "-o", str(tmp_path / "x.png"))
    assert r.returncode == 1 and "absent.json" in r.stderr


def test_the_output_must_be_a_png(tmp_path):
    r = run(small_file(tmp_path), "-o", str(tmp_path / "x.svg"))
    assert r.returncode == 2 and "expected a .png file" in r.stderr


def test_the_committed_plot_reads_the_committed_figures():
    path = os.path.join(REPO, "bench", "results", "results_2026-11-30.json")
    records = bench_json.read(path)
    assert all(r["params"].get("source", "").startswith("bench/RESULTS_2026-11-30_sessions_1_to_4.md") for r in records)
    assert png_size(path.replace(".json", ".png"))[0] > 0
