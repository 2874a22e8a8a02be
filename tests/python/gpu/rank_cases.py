"""How the pytest files here run a multi-rank check: `run_ranks` starts one of the check scripts in this folder as
N ranks through scripts/launch.py (a subprocess: every rank needs a process, a GPU context and a process group of
its own) and returns the finished run; `assert_passed` reads it.

Skips, each with its reason: no runtime built with CUDA (UCCL_EP_BUILD_DIR unset and no installed uccl.ep._C
with CUDA; a set UCCL_EP_BUILD_DIR is never skipped, so a build that does not load fails loudly), and a case
that wants one GPU per rank on a machine with fewer. Other cases run on whatever GPUs there are: launch.py puts
rank r on GPU r % G and lets ranks share a GPU under MPS.
"""
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, Tuple

import pytest

GPU_TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(GPU_TESTS)))
LAUNCH = os.path.join(REPO, "scripts", "launch.py")
PASSED = "[rank 0] all checks passed"  # launch.py prefixes every line with its rank


@dataclass(frozen=True)
class RankCase:
    """N ranks of a check script in nodes of K (K < N: emulated nodes on this host), with extra flags and
    environment; own_gpus: one GPU per rank, never shared; expect_killed: ranks that SIGKILL themselves (fault
    checks; launch.py --expect-killed)."""
    nproc: int
    ranks_per_node: int
    args: Tuple[str, ...]
    env: Dict[str, str] = field(default_factory=dict, hash=False)
    own_gpus: bool = False
    timeout_s: int = 180
    expect_killed: Tuple[int, ...] = ()

    def launch_command(self, script: str):
        cmd = [sys.executable, LAUNCH, "--nproc", str(self.nproc), "--ranks-per-node", str(self.ranks_per_node),
               "--timeout", str(self.timeout_s)]
        if self.own_gpus:
            cmd += ["--gpus", str(self.nproc)]
        if self.expect_killed:
            cmd += ["--expect-killed", ",".join(str(r) for r in self.expect_killed)]
        return cmd + ["--", os.path.join(GPU_TESTS, script), *self.args]


def runtime_skip_reason():
    """Why the CUDA runtime cannot run here, or None."""
    if os.environ.get("UCCL_EP_BUILD_DIR"):
        return None
    import uccl.ep as ep
    if ep._C is None:
        return f"uccl.ep._C not available ({ep._C_import_error}); set UCCL_EP_BUILD_DIR to a CUDA build"
    if not ep._C.has_cuda():
        return "uccl.ep._C was built without CUDA; set UCCL_EP_BUILD_DIR to a CUDA build"
    return None


def run_ranks(script: str, case: RankCase) -> subprocess.CompletedProcess:
    """Runs case's ranks of script to the end, or skips the calling test (with the reason) where it cannot run."""
    reason = runtime_skip_reason()
    if reason:
        pytest.skip(reason)
    import torch
    have = torch.cuda.device_count()
    if case.own_gpus and have < case.nproc:
        pytest.skip(f"{case.nproc} ranks on a GPU each need {case.nproc} GPUs; {have} here")
    env = dict(os.environ, PYTHONUNBUFFERED="1", **case.env)
    # launch.py kills the ranks at timeout_s and names those still running; the margin covers MPS start and stop.
    return subprocess.run(case.launch_command(script), capture_output=True, text=True, env=env,
                          timeout=case.timeout_s + 60)


def assert_passed(run: subprocess.CompletedProcess):
    """Exit status 0 and rank 0's closing line; otherwise the end of the output, where the failed check is."""
    tail = f"\n--- stdout (end) ---\n{run.stdout[-6000:]}\n--- stderr (end) ---\n{run.stderr[-3000:]}"
    assert run.returncode == 0, f"{' '.join(run.args)} exited {run.returncode}{tail}"
    assert PASSED in run.stdout, f"no '{PASSED}' line{tail}"
