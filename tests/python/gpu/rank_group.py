"""What every multi-rank GPU script starts from, the checks under tests/python/gpu/ and the benches under bench/
alike: this rank's place (from scripts/launch.py or torchrun), its GPU, the process group, uccl.ep (installed or
the in-tree build), and how a failed check is reported.

Process group: gloo when ranks share a GPU (they do under scripts/launch.py with more ranks than GPUs; NCCL
refuses two ranks on one GPU) or when UCCL_EP_BENCH_BACKEND=gloo, else nccl.
"""
import os
import sys
from dataclasses import dataclass
from typing import List

import torch
import torch.distributed as dist

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    local_world: int


def dist_env(environ=None) -> Dist:
    env = os.environ if environ is None else environ
    missing = [k for k in ("RANK", "WORLD_SIZE") if k not in env]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not set: run under scripts/launch.py or torchrun")
    world = int(env["WORLD_SIZE"])
    return Dist(rank=int(env["RANK"]), world=world, local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
                local_world=int(env.get("LOCAL_WORLD_SIZE", world)))


def choose_backend(d: Dist, device_count: int, environ=None) -> str:
    env = os.environ if environ is None else environ
    forced = env.get("UCCL_EP_BENCH_BACKEND", "")
    if forced:
        if forced not in ("gloo", "nccl"):
            raise ValueError(f"UCCL_EP_BENCH_BACKEND must be gloo or nccl, got {forced!r}")
        return forced
    if env.get("UCCL_EP_LAUNCHER") == "1":
        # scripts/launch.py gives every rank one GPU of its own, or says that ranks share them.
        return "gloo" if env.get("UCCL_EP_SHARED_GPU") == "1" else "nccl"
    return "gloo" if d.local_world > max(device_count, 1) or device_count == 0 else "nccl"


def join_group(d: Dist):
    """Selects this rank's GPU (local rank modulo the GPU count: ranks share GPUs when they outnumber them) and
    joins the process group. Returns (backend, device)."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"rank {d.rank}: no CUDA device; this script needs a GPU")
    ndev = torch.cuda.device_count()
    torch.cuda.set_device(d.local_rank % ndev)
    backend = choose_backend(d, ndev)
    dist.init_process_group(backend=backend, init_method="env://", rank=d.rank, world_size=d.world)
    return backend, torch.device("cuda", torch.cuda.current_device())


def import_ep():
    """uccl.ep as installed, else from python/ with the in-tree build (build/) when UCCL_EP_BUILD_DIR is unset."""
    try:
        import uccl.ep as ep
        return ep
    except ImportError:
        for name in [m for m in sys.modules if m == "uccl" or m.startswith("uccl.")]:
            del sys.modules[name]
        sys.path.insert(0, os.path.join(REPO, "python"))
        if "UCCL_EP_BUILD_DIR" not in os.environ and os.path.isdir(os.path.join(REPO, "build", "src", "python")):
            os.environ["UCCL_EP_BUILD_DIR"] = os.path.join(REPO, "build")
        import uccl.ep as ep
        return ep


def log0(d: Dist, msg: str):
    if d.rank == 0:
        print(msg, flush=True)


def topology_line(buffer) -> str:
    """`topology: <describe()>` of the Buffer, or a note that this build's Buffer does not report one yet."""
    topo = getattr(buffer, "topology", None)
    return f"topology: {topo.describe()}" if topo is not None else "topology: (this Buffer has no topology attribute)"


def all_gather_tensor(t: torch.Tensor) -> List[torch.Tensor]:
    """Every rank's t (same shape everywhere), on t's device. Works with gloo (CPU tensors) and nccl (GPU);
    moved as bytes so that no backend needs to know BF16 (gloo does not)."""
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    src = t.contiguous().view(torch.uint8).to(dev)
    outs = [torch.empty_like(src) for _ in range(dist.get_world_size())]
    dist.all_gather(outs, src)
    return [o.to(t.device).view(t.dtype) for o in outs]


_BUFFER = None  # the Buffer under check: a failed check first surfaces what its kernels recorded


def watch_buffer(buffer):
    global _BUFFER
    _BUFFER = buffer


def fail(ctx: str, msg: str):
    """Raises AssertionError naming this rank and the case, so that the launcher fails naming the rank. A timeout
    or ring error the kernels recorded is the likelier cause of a wrong result, so it is raised first."""
    runtime = getattr(_BUFFER, "_runtime", None)  # absent on the CPU stand-ins the tests use
    if runtime is not None:
        torch.cuda.synchronize()
        runtime.check_errors()  # raises the recorded timeout or ring error, naming the peer
    raise AssertionError(f"[rank {dist.get_rank()}] {ctx}: {msg}")
