#!/usr/bin/env python3
"""Start N ranks of a Python script on this host: one GPU per rank, or all ranks sharing the GPUs under MPS.

    python scripts/launch.py --nproc N [--ranks-per-node K] [--gpus auto|G] [--mps auto|on|off]
                             [--timeout S] [--master-port P] [--expect-killed R[,R...]]
                             -- script.py [args...]

Every rank runs `sys.executable script.py args...` with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE (= K),
MASTER_ADDR=127.0.0.1, MASTER_PORT, UCCL_EP_RANKS_PER_NODE=K (K defaults to N: one node; a smaller K emulates
N/K nodes on this host, whose ranks then talk through the proxies), UCCL_EP_LAUNCHER=1, and
UCCL_EP_NUM_GPUS=G, UCCL_EP_GPU_IDS=the GPU ids, UCCL_EP_SHARED_GPU=0|1 (1 when several ranks share one GPU, so a script knows that NCCL
cannot be used between them).

GPUs: G comes from --gpus, else CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`. Each rank sees one GPU:
CUDA_VISIBLE_DEVICES = the (rank % G)-th one. With N > G ranks share GPUs and MPS keeps their kernels
concurrent: with --mps auto|on the MPS control daemon is started (pipe and log directories in a temporary
directory, exported to the ranks) unless one already answers, and stopped at the end. With G = 0 (a machine
without GPUs, CI) CUDA_VISIBLE_DEVICES is left alone and MPS is not touched.

Output: every line of a rank is prefixed with `[rank r]`. When a rank exits non-zero the others get a short
grace period, are then killed (whole process groups), and the launcher exits with that rank's code, naming it.
--timeout S kills every rank after S seconds and exits 124, naming the ranks still running.
--expect-killed R,...: fault tests whose ranks R kill themselves with SIGKILL. Such a rank ending by SIGKILL is no
failure (the others go on); ending any other way, exit status 0 included, is one.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

GRACE_SECS = 3.0  # after the first failure, before the others are killed
KILL_SECS = 5.0  # after SIGTERM, before SIGKILL
EXIT_TIMEOUT = 124


def log(msg):
    sys.stderr.write(f"launch.py: {msg}\n")
    sys.stderr.flush()


def parse_args(argv):
    if "--" in argv:
        cut = argv.index("--")
        own, command = argv[:cut], argv[cut + 1:]
    else:
        own, command = argv, None
    p = argparse.ArgumentParser(
        prog="launch.py",
        description="Start N ranks of a Python script on this host (see the module docstring).",
        usage="%(prog)s --nproc N [options] -- script.py [args...]")
    p.add_argument("--nproc", type=int, required=True, help="number of ranks (WORLD_SIZE)")
    p.add_argument("--ranks-per-node", type=int, default=None,
                   help="emulated node size: LOCAL_WORLD_SIZE and UCCL_EP_RANKS_PER_NODE (default: --nproc)")
    p.add_argument("--gpus", default="auto", help="number of GPUs to use, or auto (CUDA_VISIBLE_DEVICES, nvidia-smi)")
    p.add_argument("--mps", choices=("auto", "on", "off"), default="auto",
                   help="MPS daemon when ranks share a GPU: auto (if available), on (required), off")
    p.add_argument("--timeout", type=float, default=0, help="kill every rank after this many seconds (0: never)")
    p.add_argument("--master-port", type=int, default=0, help="MASTER_PORT (default: a free port)")
    p.add_argument("--expect-killed", default="", metavar="R[,R...]",
                   help="ranks that kill themselves with SIGKILL (fault tests): that end is not a failure")
    if command is None:
        # No "--": everything from the first positional argument on is the command.
        p.add_argument("command", nargs=argparse.REMAINDER, help="script.py [args...]")
        args = p.parse_args(own)
        command = args.command
    else:
        args = p.parse_args(own)
    if not command:
        p.error("no script given (put it after --)")
    if args.nproc < 1:
        p.error("--nproc must be at least 1")
    k = args.ranks_per_node if args.ranks_per_node is not None else args.nproc
    if k < 1:
        p.error(f"--ranks-per-node must be at least 1, got {k}")
    if args.nproc % k != 0:
        log(f"--ranks-per-node {k} does not divide --nproc {args.nproc}: the last node has {args.nproc % k} rank(s)")
    args.ranks_per_node = k
    try:
        args.expect_killed = sorted({int(r) for r in args.expect_killed.split(",") if r.strip()})
    except ValueError:
        p.error(f"--expect-killed takes rank numbers separated by commas, got {args.expect_killed!r}")
    if any(r < 0 or r >= args.nproc for r in args.expect_killed):
        p.error(f"--expect-killed ranks must be in [0, {args.nproc}), got {args.expect_killed}")
    if args.gpus != "auto":
        try:
            args.gpus = int(args.gpus)
        except ValueError:
            p.error(f"--gpus takes a number or auto, got {args.gpus!r}")
        if args.gpus < 0:
            p.error("--gpus must not be negative")
    args.command = command
    return args


def detect_gpus(requested):
    """The GPU ids a rank may be given (strings for CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        # A value like "-1" or "" hides every GPU.
        ids = ids[:next((i for i, d in enumerate(ids) if d.startswith("-")), len(ids))]
    else:
        ids = []
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
                ids = [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]
            except (OSError, subprocess.SubprocessError):
                ids = []
    if requested == "auto":
        return ids
    if requested > len(ids) and ids:
        log(f"--gpus {requested} but only {len(ids)} GPU(s) found ({','.join(ids)}); using {len(ids)}")
        return ids
    if not ids:
        return [str(i) for i in range(requested)]  # trust the caller (e.g. no nvidia-smi in the image)
    return ids[:requested]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mps:
    """The MPS control daemon: reuse one that answers, else start one in a temporary directory."""

    def __init__(self):
        self.started = False
        self.tmpdir = None
        self.env = {}

    @staticmethod
    def _answers(env):
        try:
            r = subprocess.run(["nvidia-cuda-mps-control"], input="get_server_list\n", capture_output=True,
                               text=True, env=env, timeout=10)
            return r.returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def start(self, required):
        if shutil.which("nvidia-cuda-mps-control") is None:
            msg = "ranks share GPUs but nvidia-cuda-mps-control is not installed"
            if required:
                raise RuntimeError(msg + " (--mps on)")
            log(msg + "; running without MPS (kernels of different ranks will time-slice)")
            return
        if self._answers(dict(os.environ)):
            log("an MPS control daemon is already running; using it")
            return
        self.tmpdir = tempfile.mkdtemp(prefix="uccl-ep-mps-")
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": os.path.join(self.tmpdir, "pipe"),
                    "CUDA_MPS_LOG_DIRECTORY": os.path.join(self.tmpdir, "log")}
        for d in self.env.values():
            os.makedirs(d)
        env = dict(os.environ, **self.env)
        r = subprocess.run(["nvidia-cuda-mps-control", "-d"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            msg = f"nvidia-cuda-mps-control -d failed ({r.returncode}): {(r.stderr or r.stdout).strip()}"
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir, self.env = None, {}
            if required:
                raise RuntimeError(msg)
            log(msg + "; running without MPS")
            return
        self.started = True
        for _ in range(50):  # the daemon forks; wait until its pipe answers
            if self._answers(env):
                break
            time.sleep(0.1)
        log(f"started the MPS control daemon (pipe directory {self.env['CUDA_MPS_PIPE_DIRECTORY']})")

    def stop(self):
        if self.started:
            env = dict(os.environ, **self.env)
            try:
                subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, env=env,
                               capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError) as e:
                log(f"stopping the MPS control daemon failed: {e}")
            self.started = False
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def rank_env(args, rank, gpus, port, shared, mps_env):
    env = dict(os.environ)
    k = args.ranks_per_node
    env.update({
        "RANK": str(rank),
        "WORLD_SIZE": str(args.nproc),
        "LOCAL_RANK": str(rank % k),
        "LOCAL_WORLD_SIZE": str(k),
        "GROUP_RANK": str(rank // k),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "UCCL_EP_RANKS_PER_NODE": str(k),
        "UCCL_EP_LAUNCHER": "1",
        "UCCL_EP_NUM_GPUS": str(len(gpus)),
        "UCCL_EP_GPU_IDS": ",".join(gpus),
        "UCCL_EP_SHARED_GPU": "1" if shared else "0",
        "PYTHONUNBUFFERED": "1",
    })
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[rank % len(gpus)]
    env.update(mps_env)
    return env


def pump(rank, stream, lock):
    prefix = f"[rank {rank}] ".encode()
    out = sys.stdout.buffer
    for line in iter(stream.readline, b""):
        if not line.endswith(b"\n"):
            line += b"\n"
        with lock:
            out.write(prefix + line)
            out.flush()
    stream.close()


def kill_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)  # the rank leads its own process group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def stop_ranks(procs):
    """SIGTERM to every live rank's process group, SIGKILL to those still alive after KILL_SECS."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        kill_group(p, signal.SIGTERM)
    deadline = time.monotonic() + KILL_SECS
    while time.monotonic() < deadline and any(p.poll() is None for p in live):
        time.sleep(0.05)
    for p in procs:
        kill_group(p, signal.SIGKILL)  # also reaps grandchildren left behind by ranks that did exit
    for p in live:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} did not die after SIGKILL")


def exit_code(rc):
    return rc if rc > 0 else 128 + (-rc)  # a rank killed by signal s: 128 + s, like a shell


def rank_failed(rank, rc, expect_killed):
    """Whether a finished rank's exit status rc is a failure: nonzero, unless the rank was expected to be SIGKILLed
    and was; for such a rank, any other end (0 included: it outlived its kill) is one."""
    if rank in expect_killed:
        return rc != -signal.SIGKILL
    return rc != 0


def run(args):
    gpus = detect_gpus(args.gpus)
    shared = len(gpus) > 0 and args.nproc > len(gpus)
    port = args.master_port or free_port()
    mps = Mps()
    procs, pumps = [], []
    lock = threading.Lock()
    code = 0
    try:
        if shared and args.mps != "off":
            mps.start(required=args.mps == "on")
        elif args.mps == "on" and not gpus:
            log("--mps on ignored: no GPU found")
        log(f"{args.nproc} rank(s), {args.ranks_per_node} per node, {len(gpus)} GPU(s)"
            f"{' shared' if shared else ''}, MASTER_PORT {port}: {' '.join(args.command)}")
        for r in range(args.nproc):
            env = rank_env(args, r, gpus, port, shared, mps.env)
            p = subprocess.Popen([sys.executable] + args.command, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(p)
            t = threading.Thread(target=pump, args=(r, p.stdout, lock), daemon=True)
            t.start()
            pumps.append(t)

        deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
        failed = None  # (rank, rc) of the first rank that failed
        fail_time = None
        while True:
            rcs = [p.poll() for p in procs]
            if failed is None:
                for r, rc in enumerate(rcs):
                    if rc is not None and rank_failed(r, rc, args.expect_killed):
                        failed, fail_time = (r, rc), time.monotonic()
                        live = [str(i) for i, c in enumerate(rcs) if c is None]
                        log(f"rank {r} exited with code {rc}"
                            + (" although --expect-killed names it" if r in args.expect_killed else "")
                            + (f"; stopping rank(s) {', '.join(live)} in {GRACE_SECS:g} s" if live else ""))
                        break
            if all(rc is not None for rc in rcs):
                break
            if failed is not None and time.monotonic() - fail_time >= GRACE_SECS:
                stop_ranks(procs)
                break
            if deadline is not None and time.monotonic() >= deadline:
                live = [str(i) for i, rc in enumerate(rcs) if rc is None]
                log(f"timeout after {args.timeout:g} s; rank(s) still running: {', '.join(live)}; killing them")
                stop_ranks(procs)
                code = EXIT_TIMEOUT
                break
            time.sleep(0.05)

        if code == 0 and failed is not None:
            r, rc = failed
            code = exit_code(rc) if rc != 0 else 1  # an expected kill that never came
            log(f"failed: rank {r} exited with code {rc}")
    except KeyboardInterrupt:
        log("interrupted; killing every rank")
        stop_ranks(procs)
        code = 130
    finally:
        if any(p.poll() is None for p in procs):
            stop_ranks(procs)
        for t in pumps:
            t.join(timeout=5)
        mps.stop()
    return code


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt  # same clean-up as Ctrl-C: kill the ranks, stop MPS

    signal.signal(signal.SIGTERM, on_term)
    try:
        return run(args)
    except RuntimeError as e:
        log(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
