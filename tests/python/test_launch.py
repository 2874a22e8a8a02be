"""scripts/launch.py on a machine without GPUs: the environment every rank sees, failure and timeout paths."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(REPO, "scripts", "launch.py")
sys.path.insert(0, os.path.join(REPO, "scripts"))

import launch  # noqa: E402

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
            "UCCL_EP_RANKS_PER_NODE", "UCCL_EP_LAUNCHER", "CUDA_VISIBLE_DEVICES", "UCCL_EP_SHARED_GPU")


def cpu_env():
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU, whatever the machine has
    return env


def launch_cmd(*own, script, script_args=(), timeout=120):
    cmd = [sys.executable, LAUNCH, *own, "--", str(script), *script_args]
    start = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=cpu_env(), timeout=timeout)
    return r, time.monotonic() - start


def write(path, body):
    path.write_text(textwrap.dedent(body))
    return path


def test_env_of_each_rank(tmp_path):
    script = write(tmp_path / "env_dump.py", f"""
        import json, os, sys
        keys = {ENV_KEYS!r}
        out = sys.argv[1]
        with open(os.path.join(out, "rank%s.json" % os.environ["RANK"]), "w") as f:
            json.dump({{k: os.environ.get(k) for k in keys}}, f)
        print("hello from", os.environ["RANK"], sys.argv[2])
    """)
    r, _ = launch_cmd("--nproc", "3", "--ranks-per-node", "2", script=script, script_args=(str(tmp_path), "x y"))
    assert r.returncode == 0, r.stdout + r.stderr
    seen = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(3)]
    ports = {s["MASTER_PORT"] for s in seen}
    assert len(ports) == 1 and int(ports.pop()) > 0
    for i, s in enumerate(seen):
        assert s["RANK"] == str(i)
        assert s["WORLD_SIZE"] == "3"
        assert s["LOCAL_RANK"] == str(i % 2)
        assert s["LOCAL_WORLD_SIZE"] == "2"
        assert s["UCCL_EP_RANKS_PER_NODE"] == "2"
        assert s["MASTER_ADDR"] == "127.0.0.1"
        assert s["UCCL_EP_LAUNCHER"] == "1"
        assert s["CUDA_VISIBLE_DEVICES"] == ""  # G = 0: left as it was
        assert s["UCCL_EP_SHARED_GPU"] == "0"
        assert f"[rank {i}] hello from {i} x y" in r.stdout.splitlines()


def test_default_one_node_and_explicit_port(tmp_path):
    script = write(tmp_path / "env_dump.py", """
        import os
        print("K=%s P=%s" % (os.environ["UCCL_EP_RANKS_PER_NODE"], os.environ["MASTER_PORT"]))
    """)
    port = launch.free_port()
    r, _ = launch_cmd("--nproc", "2", "--master-port", str(port), script=script)
    assert r.returncode == 0, r.stdout + r.stderr
    for i in range(2):
        assert f"[rank {i}] K=2 P={port}" in r.stdout.splitlines()


def test_failing_rank_fails_launcher_and_kills_others(tmp_path):
    script = write(tmp_path / "fail.py", """
        import os, sys, time
        rank = int(os.environ["RANK"])
        if rank == 1:
            print("rank one gives up")
            sys.exit(7)
        open(os.path.join(sys.argv[1], "started%d" % rank), "w").close()
        time.sleep(60)
        open(os.path.join(sys.argv[1], "finished%d" % rank), "w").close()
    """)
    r, secs = launch_cmd("--nproc", "3", "--ranks-per-node", "2", script=script, script_args=(str(tmp_path),))
    assert r.returncode == 7, r.stdout + r.stderr
    assert "rank 1 exited with code 7" in r.stderr
    assert "[rank 1] rank one gives up" in r.stdout
    assert secs < 30, f"launcher took {secs:.1f} s: the sleepers were not killed"
    assert not any((tmp_path / f"finished{i}").exists() for i in (0, 2))


def test_timeout_kills_all_and_names_ranks(tmp_path):
    script = write(tmp_path / "slow.py", """
        import os, sys, time
        if os.environ["RANK"] == "0":
            sys.exit(0)
        time.sleep(60)
    """)
    r, secs = launch_cmd("--nproc", "3", "--timeout", "2", script=script)
    assert r.returncode == 124, r.stdout + r.stderr
    assert "rank(s) still running: 1, 2" in r.stderr
    assert secs < 30


def test_rank_killed_by_signal(tmp_path):
    script = write(tmp_path / "sig.py", """
        import os, signal, time
        if os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    """)
    r, secs = launch_cmd("--nproc", "2", script=script)
    assert r.returncode == 128 + 9, r.stdout + r.stderr
    assert "rank 1 exited with code -9" in r.stderr
    assert secs < 30


def test_a_rank_expected_to_be_killed_is_no_failure_and_the_others_finish(tmp_path):
    script = write(tmp_path / "victim.py", """
        import os, signal, time
        if os.environ["RANK"] == "2":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(4)  # longer than the grace period a failure would give the others
        print("survived", flush=True)
    """)
    r, secs = launch_cmd("--nproc", "3", "--expect-killed", "2", script=script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[rank 0] survived" in r.stdout and "[rank 1] survived" in r.stdout
    assert secs < 30


@pytest.mark.parametrize("victim_exit", ["0", "3"])
def test_a_rank_expected_to_be_killed_that_exits_otherwise_fails_the_launcher(tmp_path, victim_exit):
    script = write(tmp_path / "missed.py", f"""
        import os, sys, time
        if os.environ["RANK"] == "1":
            sys.exit({victim_exit})
        time.sleep(60)
    """)
    r, secs = launch_cmd("--nproc", "2", "--expect-killed", "1", script=script)
    assert r.returncode == (1 if victim_exit == "0" else 3), r.stdout + r.stderr
    assert f"rank 1 exited with code {victim_exit} although --expect-killed names it" in r.stderr
    assert secs < 30


def test_argument_errors():
    with pytest.raises(SystemExit):
        launch.parse_args(["--nproc", "3", "--ranks-per-node", "2"])  # no script
    with pytest.raises(SystemExit):
        launch.parse_args(["--nproc", "4", "--ranks-per-node", "0", "--", "x.py"])
    with pytest.raises(SystemExit):
        launch.parse_args(["--nproc", "2", "--gpus", "many", "--", "x.py"])
    with pytest.raises(SystemExit):
        launch.parse_args(["--nproc", "2", "--expect-killed", "2", "--", "x.py"])
    with pytest.raises(SystemExit):
        launch.parse_args(["--nproc", "2", "--expect-killed", "one", "--", "x.py"])
    assert launch.parse_args(["--nproc", "3", "--expect-killed", "2,1", "--", "x.py"]).expect_killed == [1, 2]
    a = launch.parse_args(["--nproc", "4", "--gpus", "1", "--", "x.py", "--flag", "--", "y"])
    assert a.command == ["x.py", "--flag", "--", "y"] and a.gpus == 1 and a.ranks_per_node == 4
    a = launch.parse_args(["--nproc", "2", "x.py", "--num-tokens", "8"])
    assert a.command == ["x.py", "--num-tokens", "8"]


def test_gpu_assignment_without_starting_anything(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert launch.detect_gpus("auto") == ["3", "5"]
    assert launch.detect_gpus(1) == ["3"]
    a = launch.parse_args(["--nproc", "4", "--ranks-per-node", "2", "--", "x.py"])
    envs = [launch.rank_env(a, r, ["3", "5"], 1234, True, {"CUDA_MPS_PIPE_DIRECTORY": "/p"}) for r in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3", "5", "3", "5"]
    assert all(e["CUDA_MPS_PIPE_DIRECTORY"] == "/p" and e["UCCL_EP_SHARED_GPU"] == "1" for e in envs)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launch.detect_gpus("auto") == []


def test_shared_gpu_starts_and_stops_mps(tmp_path):
    """--gpus 1 with 2 ranks: the ranks share GPU 0, and an MPS daemon (a fake nvidia-cuda-mps-control on PATH
    here) is started with pipe/log directories exported to the ranks, then told to quit."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    state, log = tmp_path / "mps_running", tmp_path / "mps.log"
    fake = bindir / "nvidia-cuda-mps-control"
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "-d" ]; then
            echo "start $CUDA_MPS_PIPE_DIRECTORY" >> {log}; touch {state}; exit 0
        fi
        read cmd
        case "$cmd" in
            get_server_list) [ -e {state} ] && exit 0; exit 1 ;;
            quit) echo "quit $CUDA_MPS_PIPE_DIRECTORY" >> {log}; rm -f {state}; exit 0 ;;
        esac
        exit 2
    """))
    fake.chmod(0o755)
    script = write(tmp_path / "show.py", """
        import os
        print("dev=%s shared=%s pipe=%s" % (os.environ["CUDA_VISIBLE_DEVICES"], os.environ["UCCL_EP_SHARED_GPU"],
                                           os.environ.get("CUDA_MPS_PIPE_DIRECTORY")))
    """)
    env = cpu_env()
    env["PATH"] = f"{bindir}:{env['PATH']}"
    r = subprocess.run([sys.executable, LAUNCH, "--nproc", "2", "--gpus", "1", "--", str(script)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = log.read_text().split("\n")
    assert lines[0].startswith("start ") and lines[1].startswith("quit ") and lines[0][6:] == lines[1][5:]
    pipe = lines[0][6:]
    for i in range(2):
        assert f"[rank {i}] dev=0 shared=1 pipe={pipe}" in r.stdout.splitlines()
    assert not state.exists() and not os.path.exists(pipe)  # stopped, temporary directory removed

    # A daemon that already answers is used and left running.
    state.touch()
    log.write_text("")
    r = subprocess.run([sys.executable, LAUNCH, "--nproc", "2", "--gpus", "1", "--", str(script)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert log.read_text() == "" and state.exists()
    assert "already running" in r.stderr
