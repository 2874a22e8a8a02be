"""The results every bench writes with --json PATH, and scripts/plot_results.py reads: a JSON array with one object
per measured configuration. The C++ benches write the same objects (bench/bench_record.hpp).

Fields (FIELDS: name -> accepted types; None in the tuple: the field may be null):
  schema          "uccl-ep-bench/1"
  bench, mode     which bench (test_low_latency, test_intranode, proxy_bench, gpu_ring_bench, ...) and which of its
                  measurements (low_latency, normal, bandwidth, ...)
  call, dtype     dispatch / combine / ..., and the data type moved (fp8, bf16, logfmt); null where none applies
  num_ranks, ranks_per_node
  tokens, hidden, topk, experts   the shape (tokens per rank); null for benches without one
  latency_us, bandwidth_gbs       the headline figures (mean over ranks where several ranks measure; GB/s per rank)
  figures         further figures, name -> number (worst rank, GPU time, host time, ...)
  params          what else set the configuration, name -> value (SMs, chunk size, transport, message size, ...)
  reference       the figure measured in the same run that the headline is read against, or null:
                  {"name", "latency_us", "bandwidth_gbs"}
  git_commit      the commit of the tree the bench ran from ("unknown" outside a git checkout)
  date            when it was written, UTC, ISO 8601 ("2026-11-30T05:31:37Z")
"""
import datetime
import json
import numbers
import os
import subprocess
from typing import Iterable, List, Optional

SCHEMA = "uccl-ep-bench/1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_NUM = (numbers.Real,)
FIELDS = {
    "schema": (str,),
    "bench": (str,),
    "mode": (str,),
    "call": (str, None),
    "num_ranks": (int,),
    "ranks_per_node": (int,),
    "tokens": (int, None),
    "hidden": (int, None),
    "topk": (int, None),
    "experts": (int, None),
    "dtype": (str, None),
    "latency_us": _NUM + (None,),
    "bandwidth_gbs": _NUM + (None,),
    "figures": (dict,),
    "params": (dict,),
    "reference": (dict, None),
    "git_commit": (str,),
    "date": (str,),
}
REFERENCE_FIELDS = {"name": (str,), "latency_us": _NUM + (None,), "bandwidth_gbs": _NUM + (None,)}


def git_commit(repo: str = REPO) -> str:
    """`git rev-parse HEAD` of repo, or "unknown" where there is no git or no checkout."""
    try:
        out = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def reference(name: str, latency_us: Optional[float] = None, bandwidth_gbs: Optional[float] = None) -> dict:
    return {"name": name, "latency_us": latency_us, "bandwidth_gbs": bandwidth_gbs}


def record(bench: str, mode: str, *, num_ranks: int, ranks_per_node: int, call: Optional[str] = None,
           dtype: Optional[str] = None, tokens: Optional[int] = None, hidden: Optional[int] = None,
           topk: Optional[int] = None, experts: Optional[int] = None, latency_us: Optional[float] = None,
           bandwidth_gbs: Optional[float] = None, figures: Optional[dict] = None, params: Optional[dict] = None,
           ref: Optional[dict] = None, commit: Optional[str] = None, date: Optional[str] = None) -> dict:
    """One configuration's object, checked (validate). commit and date default to this tree's HEAD and now."""
    rec = {"schema": SCHEMA, "bench": bench, "mode": mode, "call": call, "num_ranks": num_ranks,
           "ranks_per_node": ranks_per_node, "tokens": tokens, "hidden": hidden, "topk": topk, "experts": experts,
           "dtype": dtype, "latency_us": latency_us, "bandwidth_gbs": bandwidth_gbs, "figures": dict(figures or {}),
           "params": dict(params or {}), "reference": ref,
           "git_commit": commit if commit is not None else git_commit(), "date": date or utc_now()}
    validate(rec)
    return rec


def _is(value, t) -> bool:
    if t is None:
        return value is None
    if isinstance(value, bool):  # True is an int to Python, not a count or a figure
        return t is bool
    return isinstance(value, t)


def _check_type(where: str, value, accepted: tuple):
    if not any(_is(value, t) for t in accepted):
        names = ", ".join("null" if t is None else ("number" if t is numbers.Real else t.__name__) for t in accepted)
        raise ValueError(f"{where}: expected {names}, got {value!r}")


def validate(rec: dict, where: str = "record") -> None:
    """Raises ValueError naming the first field that is missing, unknown or of the wrong type."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected an object, got {type(rec).__name__}")
    missing = [k for k in FIELDS if k not in rec]
    unknown = [k for k in rec if k not in FIELDS]
    if missing or unknown:
        raise ValueError(f"{where}: " + "; ".join(filter(None, [missing and f"missing {', '.join(missing)}",
                                                                 unknown and f"unknown {', '.join(unknown)}"])))
    for k, accepted in FIELDS.items():
        _check_type(f"{where}.{k}", rec[k], accepted)
    if rec["schema"] != SCHEMA:
        raise ValueError(f"{where}.schema: expected {SCHEMA!r}, got {rec['schema']!r}")
    if rec["num_ranks"] < 1 or not 1 <= rec["ranks_per_node"] <= rec["num_ranks"]:
        raise ValueError(f"{where}: need num_ranks >= 1 and 1 <= ranks_per_node <= num_ranks, got "
                         f"{rec['num_ranks']} and {rec['ranks_per_node']}")
    for name, value in rec["figures"].items():
        _check_type(f"{where}.figures.{name}", value, _NUM)
    if rec["reference"] is not None:
        ref = rec["reference"]
        missing = [k for k in REFERENCE_FIELDS if k not in ref]
        if missing or set(ref) - set(REFERENCE_FIELDS):
            raise ValueError(f"{where}.reference: expected the fields {', '.join(REFERENCE_FIELDS)}, got "
                             f"{', '.join(ref)}")
        for k, accepted in REFERENCE_FIELDS.items():
            _check_type(f"{where}.reference.{k}", ref[k], accepted)


def write(path: str, records: Iterable[dict]) -> List[dict]:
    """Writes the records (each validated first) to path as one JSON array, says so on stdout; returns them."""
    records = list(records)
    for i, rec in enumerate(records):
        validate(rec, f"{path}[{i}]")
    with open(path, "w") as f:
        json.dump(records, f, indent=2)
        f.write("\n")
    print(f"figures written to {path}", flush=True)
    return records


def read(path: str) -> List[dict]:
    """The records of one --json file, each validated; ValueError names the file and the record."""
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    for i, rec in enumerate(data):
        validate(rec, f"{path}[{i}]")
    return data
