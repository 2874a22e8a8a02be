"""The --json results of the benches (bench/bench_json.py): what a record holds, what validation refuses (naming
the field), the file round trip, the low-latency bench's records from its per-rank results, and the C++ proxy_bench
writing records that the same validation accepts."""
import copy
import json
import os
import re
import subprocess
import sys
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.path.insert(0, os.path.join(REPO, "tests", "python", "gpu"))

import bench_json  # noqa: E402


def sample(**overrides):
    rec = bench_json.record("test_low_latency", "low_latency", call="dispatch", dtype="fp8", num_ranks=2,
                            ranks_per_node=1, tokens=128, hidden=7168, topk=8, experts=288, latency_us=218.6,
                            bandwidth_gbs=3.1, figures={"gpu_us": 90.0}, params={"transport": "shm"},
                            ref=bench_json.reference("transport floor", latency_us=100.0))
    rec.update(overrides)
    return rec


def test_a_record_names_its_schema_commit_and_date():
    rec = sample()
    assert rec["schema"] == bench_json.SCHEMA
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert rec["git_commit"] == (head or "unknown")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["date"])
    assert set(rec) == set(bench_json.FIELDS)


def test_git_commit_outside_a_checkout_is_unknown(tmp_path):
    assert bench_json.git_commit(str(tmp_path)) == "unknown"


@pytest.mark.parametrize("change, words", [
    (lambda r: r.pop("hidden"), "missing hidden"),
    (lambda r: r.update(colour="red"), "unknown colour"),
    (lambda r: r.update(num_ranks="2"), "record.num_ranks: expected int"),
    (lambda r: r.update(num_ranks=True), "record.num_ranks: expected int"),
    (lambda r: r.update(latency_us="fast"), "record.latency_us: expected number, null"),
    (lambda r: r.update(bench=None), "record.bench: expected str"),
    (lambda r: r.update(schema="uccl-ep-bench/0"), "record.schema: expected 'uccl-ep-bench/1'"),
    (lambda r: r.update(ranks_per_node=3), "1 <= ranks_per_node <= num_ranks"),
    (lambda r: r.update(figures={"gpu_us": "90"}), "record.figures.gpu_us: expected number"),
    (lambda r: r.update(reference={"name": "floor"}), "record.reference: expected the fields"),
    (lambda r: r.update(reference=bench_json.reference(None)), "record.reference.name: expected str"),
])
def test_validation_names_what_is_wrong(change, words):
    rec = sample()
    change(rec)
    with pytest.raises(ValueError, match=re.escape(words)):
        bench_json.validate(rec)


def test_fields_without_a_value_are_null():
    rec = bench_json.record("proxy_bench", "descriptor_rate", num_ranks=1, ranks_per_node=1,
                            figures={"descriptors_per_s": 4.7e7})
    assert all(rec[k] is None for k in ("call", "dtype", "tokens", "hidden", "topk", "experts", "latency_us",
                                        "bandwidth_gbs", "reference"))


def test_write_and_read_round_trip(tmp_path):
    path = str(tmp_path / "r.json")
    records = [sample(), sample(call="combine", dtype="bf16")]
    bench_json.write(path, records)
    assert bench_json.read(path) == records
    assert isinstance(json.load(open(path)), list)


def test_write_refuses_a_bad_record_and_read_a_bad_file(tmp_path):
    with pytest.raises(ValueError, match=r"r.json\[1\].num_ranks"):
        bench_json.write(str(tmp_path / "r.json"), [sample(), sample(num_ranks=0.5)])
    (tmp_path / "obj.json").write_text(json.dumps(sample()))
    with pytest.raises(ValueError, match="expected a JSON array"):
        bench_json.read(str(tmp_path / "obj.json"))
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ValueError, match="not JSON"):
        bench_json.read(str(tmp_path / "bad.json"))


def ll_result(rank, scale, floor=False):
    keys = ("dispatch_us", "combine_us", "pair_us", "loop_us", "hook_dispatch_send_us", "hook_dispatch_recv_us",
            "hook_combine_send_us", "hook_combine_recv_us", "gpu_dispatch_us", "gpu_combine_us", "host_dispatch_us",
            "host_combine_us")
    r = {k: 10.0 * scale for k in keys}
    r.update(rank=rank, world=2, dispatch_gbs=2.0 / scale, combine_gbs=4.0 / scale)
    if floor:
        r.update(floor_dispatch_us=5.0 * scale, floor_combine_us=6.0, transport="shm")
    return r


@pytest.mark.parametrize("use_logfmt", [False, True])
def test_low_latency_records_from_the_ranks_results(use_logfmt):
    import test_low_latency as bench
    args = types.SimpleNamespace(num_tokens=128, hidden=7168, num_topk=8, num_experts=288, use_logfmt=use_logfmt,
                                 bench_iters=50)
    records = bench.json_records([ll_result(0, 1.0, True), ll_result(1, 3.0, True)], args, ranks_per_node=1)
    combine = "logfmt" if use_logfmt else "bf16"
    assert [(r["call"], r["dtype"]) for r in records] == [("dispatch", "fp8"), ("combine", combine),
                                                          ("dispatch+combine", "fp8+" + combine)]
    d, c, pair = records
    assert d["latency_us"] == pytest.approx(20.0) and d["figures"]["latency_us_max"] == pytest.approx(30.0)
    assert d["bandwidth_gbs"] == pytest.approx((2.0 + 2.0 / 3) / 2) and d["figures"]["bandwidth_gbs_min"] == \
        pytest.approx(2.0 / 3)
    assert d["reference"] == bench_json.reference("transport floor", latency_us=10.0)
    assert c["reference"]["latency_us"] == pytest.approx(6.0)
    assert pair["reference"] is None and pair["bandwidth_gbs"] is None
    assert all(r["params"] == {"use_logfmt": use_logfmt, "bench_iters": 50, "transport": "shm"} for r in records)
    assert all((r["num_ranks"], r["ranks_per_node"]) == (2, 1) for r in records)
    # Without the floor (one node): no reference, no transport.
    plain = bench.json_records([ll_result(0, 1.0), ll_result(1, 1.0)], args, ranks_per_node=2)
    assert all(r["reference"] is None and "transport" not in r["params"] for r in plain)


def test_the_nvlink_reference_is_the_dispatch_reference_on_one_node_and_rank0_says_the_ratio():
    import test_low_latency as bench
    args = types.SimpleNamespace(num_tokens=128, hidden=7168, num_topk=8, num_experts=288, use_logfmt=False,
                                 bench_iters=50)
    results = [dict(ll_result(0, 1.0), nvlink_ref_us=17.5, nvlink_ref_bytes=3_800_000), ll_result(1, 1.0)]
    for r, send in zip(results, (19.0, 21.0)):
        r["gpu_hook_dispatch_send_us"] = send
    d, c, _ = bench.json_records(results, args, ranks_per_node=2)
    assert d["reference"] == bench_json.reference("NVLink copy_ of the bytes sent to NVLink peers", latency_us=17.5)
    assert c["reference"] is None
    (line,) = bench.nvlink_reference_line(results)
    assert "3.80 MB" in line and "17.5 us" in line and "mean 20.0 us" in line and f"{20.0 / 17.5:.2f}x" in line
    assert bench.nvlink_reference_line([ll_result(0, 1.0)]) == []


def test_nvlink_dispatch_bytes_count_messages_to_the_other_ranks_of_the_node():
    import torch
    import ll_reference as ref
    # 4 ranks, 2 per node, 8 experts (2 per rank). Rank 1: its node is ranks 0 and 1, so only experts 0 and 1
    # (rank 0) count; a repeated expert in one token counts once; -1 and out-of-range ids never.
    idx = torch.tensor([[0, 2, 4, 1], [1, 1, -1, 6], [3, 5, 7, 9]])
    msg = 7168 + 56 * 4 + 16
    assert ref.nvlink_dispatch_bytes(idx, 7168, rank=1, num_ranks=4, num_experts=8, ranks_per_node=2) == 3 * msg
    # Rank 2 (node of ranks 2 and 3: experts 4..7, its own are 4 and 5): experts 6 and 7.
    assert ref.nvlink_dispatch_bytes(idx, 7168, rank=2, num_ranks=4, num_experts=8, ranks_per_node=2) == 2 * msg
    # Every rank a node of its own: nothing crosses NVLink.
    assert ref.nvlink_dispatch_bytes(idx, 7168, rank=1, num_ranks=4, num_experts=8, ranks_per_node=1) == 0


def test_logfmt_counts_fewer_combine_bytes():
    import torch
    import ll_reference as ref
    idx = torch.tensor([[0, 1, -1], [2, -1, -1]])
    d_bf16, c_bf16 = ref.dispatch_bytes(idx, 7168)
    d_log, c_log = ref.dispatch_bytes(idx, 7168, use_logfmt=True)
    assert d_bf16 == d_log == 3 * (7168 + 56 * 4 + 16)
    assert (c_bf16, c_log) == (3 * 7168 * 2, 3 * (7168 * 10 // 8 + 56 * 4))


def proxy_bench_binary():
    build = os.environ.get("UCCL_EP_BUILD_DIR", os.path.join(REPO, "build"))
    path = os.path.join(build, "bench", "proxy_bench")
    return path if os.access(path, os.X_OK) else None


@pytest.mark.skipif(proxy_bench_binary() is None, reason="no proxy_bench in the build directory (UCCL_EP_BUILD_DIR)")
def test_the_cpp_bench_writes_records_the_schema_accepts(tmp_path):
    path = str(tmp_path / "proxy.json")
    r = subprocess.run([proxy_bench_binary(), "--skip-bw", "--seconds", "0.1", "--threads", "1", "--producers", "1",
                        "--json", path], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    records = bench_json.read(path)
    assert [(x["bench"], x["mode"]) for x in records] == [("proxy_bench", "descriptor_rate")] * 2
    assert all(x["figures"]["descriptors_per_s"] > 0 for x in records)
    assert records[0]["git_commit"] == bench_json.git_commit()
    broken = copy.deepcopy(records[0])
    broken.pop("date")
    with pytest.raises(ValueError):
        bench_json.validate(broken)


def test_the_gpu_to_gpu_reference_is_skipped_without_two_gpus_and_a_failed_child_is_said(monkeypatch, capsys):
    import peer_copy
    monkeypatch.delenv("UCCL_EP_GPU_IDS", raising=False)
    assert peer_copy.measure_in_child(["--mb", "1"], 2) is None  # no GPUs named: nothing run
    monkeypatch.setenv("UCCL_EP_GPU_IDS", "0")
    assert peer_copy.measure_in_child(["--mb", "1"], 2) is None  # one GPU: nothing run
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("UCCL_EP_GPU_IDS", "0,1")  # named, but this machine has none: the child fails
    assert peer_copy.measure_in_child(["--bytes", "4096"], 2) is None
    assert "the GPU-to-GPU reference failed" in capsys.readouterr().out
