"""The flags both end-to-end benches share (bench/bench_flags.py): the same names in both, DeepEP's
--num-processes / --disable-nvlink / --use-logfmt, the deprecated --skip-bench alias, the combinations that cannot
run, and --num-processes starting the ranks with launch.py's environment (bench/spawn_ranks.py). CPU only: the ranks
that --num-processes starts here run a stand-in, not a bench."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.path.insert(0, os.path.join(REPO, "tests", "python", "gpu"))

import bench_flags  # noqa: E402
import spawn_ranks  # noqa: E402

BENCHES = {"test_low_latency": "low_latency", "test_intranode": "normal"}


def import_bench(name):
    return __import__(name)


@pytest.fixture(autouse=True)
def not_a_rank(monkeypatch):
    """These tests parse as a user's shell would: outside any launcher."""
    for k in ("RANK", "WORLD_SIZE", "UCCL_EP_RANKS_PER_NODE"):
        monkeypatch.delenv(k, raising=False)


@pytest.mark.parametrize("name", list(BENCHES))
def test_both_benches_list_the_shared_flags_in_their_help(name):
    r = subprocess.run([sys.executable, os.path.join(REPO, "bench", name + ".py"), "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for flag in ("--num-processes", "--disable-nvlink", "--no-bench, --skip-bench", "--json"):
        assert flag in r.stdout, (flag, r.stdout)
    assert ("--use-logfmt" in r.stdout) == (name == "test_low_latency")


@pytest.mark.parametrize("name", list(BENCHES))
def test_defaults_start_no_ranks_and_keep_nvlink(name):
    a = import_bench(name).parse_args([])
    assert (a.num_processes, a.disable_nvlink, a.no_bench, a.json) == (None, False, False, None)


@pytest.mark.parametrize("name", list(BENCHES))
def test_the_shared_flags_parse_the_same_in_both(name, tmp_path):
    a = import_bench(name).parse_args(["--num-processes", "4", "--disable-nvlink", "--no-bench", "--json",
                                       str(tmp_path / "out.json")])
    assert (a.num_processes, a.disable_nvlink, a.no_bench, a.json) == (4, True, True, str(tmp_path / "out.json"))


@pytest.mark.parametrize("name", list(BENCHES))
def test_skip_bench_is_a_deprecated_alias_that_still_works(name, capsys):
    assert import_bench(name).parse_args(["--skip-bench"]).no_bench
    assert "--skip-bench is deprecated; use --no-bench" in capsys.readouterr().err
    assert import_bench(name).parse_args(["--no-bench"]).no_bench
    assert "deprecated" not in capsys.readouterr().err


def test_use_logfmt_is_a_low_latency_flag():
    assert import_bench("test_low_latency").parse_args(["--use-logfmt"]).use_logfmt
    assert not import_bench("test_low_latency").parse_args([]).use_logfmt
    with pytest.raises(SystemExit) as e:
        import_bench("test_intranode").parse_args(["--use-logfmt"])
    assert e.value.code == 2


@pytest.mark.parametrize("name", list(BENCHES))
@pytest.mark.parametrize("argv, words", [
    (["--num-processes", "0"], "--num-processes must be at least 1"),
    (["--num-processes", "two"], "invalid int value"),
    (["--disable-nvlinks"], "unrecognized arguments: --disable-nvlinks"),
    (["--json", "/no/such/folder/out.json"], "no folder /no/such/folder"),
    (["--json"], "expected one argument"),
])
def test_a_bad_flag_fails_naming_it(name, argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        import_bench(name).parse_args(argv)
    assert e.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("name", list(BENCHES))
def test_num_processes_refuses_to_run_inside_a_launched_rank(name, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        import_bench(name).parse_args(["--num-processes", "2"])
    assert "this process is already a rank" in capsys.readouterr().err
    assert import_bench(name).parse_args([]).num_processes is None  # under a launcher without it: fine


def test_disable_nvlink_makes_every_rank_a_node():
    plain = import_bench("test_low_latency").parse_args([])
    off = import_bench("test_low_latency").parse_args(["--disable-nvlink"])
    assert (bench_flags.ranks_per_node(plain, 8), bench_flags.ranks_per_node(off, 8)) == (8, 1)
    env = {"UCCL_EP_RANKS_PER_NODE": "4"}
    bench_flags.apply_disable_nvlink(plain, env)
    assert env["UCCL_EP_RANKS_PER_NODE"] == "4"  # left as the launcher said
    bench_flags.apply_disable_nvlink(off, env)
    assert env["UCCL_EP_RANKS_PER_NODE"] == "1"


@pytest.mark.parametrize("name", list(BENCHES))
def test_main_spawns_the_ranks_only_when_asked(name, monkeypatch):
    bench = import_bench(name)
    calls = []
    monkeypatch.setattr(bench.spawn_ranks, "spawn", lambda run, args, n, k: calls.append(("spawn", run, n, k)))
    monkeypatch.setattr(bench, "run_rank", lambda args: calls.append(("rank", args.disable_nvlink)))
    bench.main(["--num-processes", "3", "--disable-nvlink"])
    bench.main(["--num-processes", "3"])
    bench.main(["--disable-nvlink"])
    assert calls == [("spawn", bench.run_rank, 3, 1), ("spawn", bench.run_rank, 3, 3), ("rank", True)]


def test_spawned_ranks_get_the_launchers_environment():
    envs = spawn_ranks.rank_environments(4, 1, gpus=["0", "1"], port=12345, shared=True, mps_env={"X": "y"})
    assert [e["RANK"] for e in envs] == ["0", "1", "2", "3"]
    assert {e["WORLD_SIZE"] for e in envs} == {"4"} and {e["MASTER_PORT"] for e in envs} == {"12345"}
    assert {e["UCCL_EP_RANKS_PER_NODE"] for e in envs} == {"1"} and {e["LOCAL_RANK"] for e in envs} == {"0"}
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1"]
    assert {e["UCCL_EP_SHARED_GPU"] for e in envs} == {"1"} and {e["X"] for e in envs} == {"y"}
    one_node = spawn_ranks.rank_environments(2, 2, gpus=[], port=1, shared=False, mps_env={})
    assert [e["LOCAL_RANK"] for e in one_node] == ["0", "1"] and {e["UCCL_EP_RANKS_PER_NODE"] for e in one_node} == {"2"}


def record_rank_env(args):
    """A stand-in for a bench's run_rank: what this spawned rank saw."""
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "UCCL_EP_RANKS_PER_NODE", "MASTER_PORT")
    with open(os.path.join(args, f"rank{os.environ['RANK']}"), "w") as f:
        f.write(" ".join(os.environ[k] for k in keys))


def fail_on_rank_one(args):
    if os.environ["RANK"] == "1":
        raise RuntimeError("rank 1 failed on purpose")


def test_spawn_starts_n_processes_each_a_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: the ranks' device choice is left alone
    spawn_ranks.spawn(record_rank_env, str(tmp_path), 3, 1)
    seen = sorted(p.read_text().split() for p in tmp_path.iterdir())
    assert [s[:4] for s in seen] == [["0", "3", "0", "1"], ["1", "3", "0", "1"], ["2", "3", "0", "1"]]
    assert len({s[4] for s in seen}) == 1  # one MASTER_PORT


def test_a_failed_spawned_rank_fails_the_run(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(Exception, match="rank 1 failed on purpose"):
        spawn_ranks.spawn(fail_on_rank_one, None, 2, 2)
