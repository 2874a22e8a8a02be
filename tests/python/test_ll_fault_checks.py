"""tests/python/gpu/ll_fault_checks.py's reference on the CPU: its checked dispatch + combine round (Faults.round_trip,
what every fault case checks the survivors with) passes over test_ll_reference.py's pure-torch low-latency buffer
on 2 and 3 ranks, and fails naming the rank and the check when that buffer swaps rows, miscounts or misadds. Also
that the script's cases parse, and that its inputs are a function of the rank alone (the survivors of a kill rebuild
every source's inputs without a collective)."""
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "gpu"))
sys.path.insert(0, HERE)

import ll_fault_checks as lf  # noqa: E402

LAUNCH = os.path.join(REPO, "scripts", "launch.py")


def faults_on_cpu(rank, world, argv=("--case", "clean-skip")):
    """A Faults of `world` ranks without a GPU or a process group (the checks only read these fields)."""
    f = lf.Faults.__new__(lf.Faults)
    f.args = lf.parse_args(list(argv))
    f.d = type("Dist", (), {"rank": rank, "world": world})()
    f.dev = torch.device("cpu")
    f.M, f.H, f.K, f.E = f.args.num_tokens, f.args.hidden, f.args.num_topk, f.args.num_experts
    f.victim, f.timeout = world - 1, 3.0
    return f


def test_every_case_parses_and_the_default_experts_split_over_three_ranks_and_two_survivors():
    for case in lf.CASES:
        assert lf.parse_args(["--case", case]).case == case
    with pytest.raises(SystemExit):
        lf.parse_args(["--case", "unplugged"])
    assert lf.parse_args(["--case", "clean-skip"]).num_experts % 6 == 0


def test_inputs_are_a_function_of_the_rank_alone():
    a, b = faults_on_cpu(0, 3), faults_on_cpu(2, 3)
    for got, want in zip(a.inputs(1), b.inputs(1)):
        assert torch.equal(got, want)
    x0, idx0, _ = a.inputs(0)
    x1, idx1, _ = a.inputs(1)
    assert not torch.equal(x0, x1)
    assert bool((idx0 == -1).any()) and bool((idx0 >= 0).any()) and int(idx0.max()) < a.E


def fault_rank_main():
    """One rank: a round of the fault checks' reference against the pure-torch buffer (FAKE_BUG: its bug)."""
    import torch.distributed as dist
    import rank_group
    import test_ll_reference as fake
    torch.cuda.synchronize = lambda *a, **k: None
    d = rank_group.dist_env()
    dist.init_process_group("gloo", init_method="env://", rank=d.rank, world_size=d.world)
    f = faults_on_cpu(d.rank, d.world)
    buf = fake.FakeLowLatencyBuffer(f.E, f.M, f.H, bug=os.environ.get("FAKE_BUG", ""))
    f.round_trip(buf, list(range(d.world)), set(), "fake round")
    dist.barrier()
    if d.rank == 0:
        print("round checked", flush=True)
    dist.destroy_process_group()


def run_fake(nproc, bug=""):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", FAKE_BUG=bug)
    cmd = [sys.executable, LAUNCH, "--nproc", str(nproc), "--timeout", "200", "--", os.path.abspath(__file__),
           "--fault-rank"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("nproc", [2, 3])
def test_the_round_passes_over_a_correct_buffer(nproc):
    r = run_fake(nproc)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "[rank 0] round checked" in r.stdout


@pytest.mark.parametrize("bug,message", [
    ("swap", "[rank 1] fake round: local expert 1: received rows differ from their source rows"),
    ("count", "[rank 1] fake round: recv_count"),
    ("combine", "[rank 0] fake round: combine calc_diff"),
])
def test_the_round_catches_a_wrong_buffer(bug, message):
    r = run_fake(2, bug)
    assert r.returncode != 0
    assert message in r.stdout, r.stdout[-4000:]


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--fault-rank":
    fault_rank_main()
