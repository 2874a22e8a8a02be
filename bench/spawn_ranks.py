"""--num-processes N: a bench starts its own N ranks on this host with torch.multiprocessing, as DeepEP's tests do.
Each rank gets the environment scripts/launch.py would give it (launch.rank_env: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT, UCCL_EP_RANKS_PER_NODE, its GPU), so a bench runs the same either way; ranks that outnumber the
GPUs share them under MPS where it is installed, as with the launcher.
"""
import os
import sys
import types
from typing import Callable, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))

import bench_flags  # noqa: E402
import launch  # noqa: E402  (scripts/launch.py: the rank environment, GPU detection, MPS)


def rank_environments(num_processes: int, ranks_per_node: int, gpus: List[str], port: int, shared: bool,
                      mps_env: dict) -> List[dict]:
    """The environment of each rank, exactly as scripts/launch.py builds it."""
    spec = types.SimpleNamespace(nproc=num_processes, ranks_per_node=ranks_per_node)
    return [launch.rank_env(spec, r, gpus, port, shared, mps_env) for r in range(num_processes)]


def _rank_entry(index: int, run: Callable, args, envs: List[dict]):
    os.environ.clear()
    os.environ.update(envs[index])  # before the first CUDA call: CUDA_VISIBLE_DEVICES is read then
    run(args)


def spawn(run: Callable, args, num_processes: int, ranks_per_node: int) -> None:
    """Runs run(args) in num_processes new processes (torch.multiprocessing, spawn start method) and waits for all;
    raises when a rank fails (the others are stopped). run must be a module-level function (it is pickled)."""
    import torch.multiprocessing as mp
    gpus = launch.detect_gpus("auto")
    shared = len(gpus) > 0 and num_processes > len(gpus)
    mps = launch.Mps()
    try:
        if shared:
            mps.start(required=False)
        envs = rank_environments(num_processes, ranks_per_node, gpus, launch.free_port(), shared, mps.env)
        mp.spawn(_rank_entry, args=(run, args, envs), nprocs=num_processes, join=True)
    finally:
        mps.stop()


def run_ranks(run: Callable, args) -> None:
    """A bench's main: run(args) as this rank (under scripts/launch.py or torchrun), or, with --num-processes N,
    in N ranks started here, nodes of one rank each with --disable-nvlink."""
    n = args.num_processes
    if n:
        spawn(run, args, n, bench_flags.ranks_per_node(args, n))
    else:
        run(args)
