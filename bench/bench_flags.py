"""The flags the end-to-end benches share (bench/test_low_latency.py, bench/test_intranode.py), defined once here
under the names DeepEP's tests give them; each bench adds them to the parser of its checks' shape flags.

  --num-processes N  start N ranks on this host with torch.multiprocessing (bench/spawn_ranks.py), as DeepEP's
                     tests do, instead of running under scripts/launch.py or torchrun
  --disable-nvlink   every rank is a node of its own, so peers are reached through the proxies and the transport
                     (UCCL_EP_RANKS_PER_NODE=1, as scripts/launch.py --ranks-per-node 1 sets)
  --no-bench         the sanity check only, no figures (--skip-bench: the former name, deprecated, still accepted)
  --json PATH        write the figures as JSON, one object per measured configuration (bench/bench_json.py)
  --use-logfmt       low-latency only: combine with use_logfmt=True (10-bit log format on the wire)
"""
import argparse
import os
import sys

DEPRECATED = {"--skip-bench": "--no-bench"}


class _StoreTrueOrAlias(argparse.Action):
    """store_true under its name and under a deprecated alias (DEPRECATED), which still works and says its
    replacement on stderr."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in DEPRECATED:
            print(f"{parser.prog}: {option_string} is deprecated; use {DEPRECATED[option_string]}", file=sys.stderr)
        setattr(namespace, self.dest, True)


def add_bench_flags(p: argparse.ArgumentParser, low_latency: bool) -> None:
    g = p.add_argument_group("bench (shared by bench/test_low_latency.py and bench/test_intranode.py)")
    g.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="start N ranks here with torch.multiprocessing (DeepEP's way), instead of running under "
                   "scripts/launch.py or torchrun")
    g.add_argument("--disable-nvlink", action="store_true",
                   help="every rank a node of its own: peers go through the proxies and the transport "
                   "(UCCL_EP_RANKS_PER_NODE=1, like scripts/launch.py --ranks-per-node 1)")
    g.add_argument("--no-bench", "--skip-bench", dest="no_bench", action=_StoreTrueOrAlias,
                   help="only the sanity check, no figures (--skip-bench: deprecated name)")
    g.add_argument("--json", default=None, metavar="PATH",
                   help="rank 0 writes the figures here as JSON, one object per measured configuration "
                   "(bench/bench_json.py; scripts/plot_results.py draws them)")
    if low_latency:
        g.add_argument("--use-logfmt", action="store_true",
                       help="combine with use_logfmt=True (the 10-bit log format on the wire)")


def check_bench_flags(p: argparse.ArgumentParser, a: argparse.Namespace, environ=None) -> None:
    """p.error (exit status 2, the message on stderr) for a combination that cannot run."""
    env = os.environ if environ is None else environ
    if a.num_processes is not None:
        if a.num_processes < 1:
            p.error(f"--num-processes must be at least 1, got {a.num_processes}")
        if "RANK" in env or "WORLD_SIZE" in env:
            p.error("--num-processes starts its own ranks; this process is already a rank (RANK/WORLD_SIZE set by "
                    "scripts/launch.py or torchrun): drop one of the two")
    if a.json is not None:
        folder = os.path.dirname(os.path.abspath(a.json))
        if not os.path.isdir(folder):
            p.error(f"--json {a.json}: no folder {folder}")


def parse_bench_args(checks, argv, low_latency: bool, description: str, extra=None) -> argparse.Namespace:
    """A bench's arguments: the flags of its checks module (build_parser, check_args), these, and the bench's own
    (extra(parser) adds them)."""
    p = checks.build_parser()
    p.description = description
    add_bench_flags(p, low_latency)
    if extra is not None:
        extra(p)
    a = checks.check_args(p, p.parse_args(argv))
    check_bench_flags(p, a)
    return a


def ranks_per_node(a: argparse.Namespace, world: int) -> int:
    """The node size these flags ask for: 1 with --disable-nvlink, else every rank on one node."""
    return 1 if a.disable_nvlink else world


def apply_disable_nvlink(a: argparse.Namespace, environ=None) -> None:
    """With --disable-nvlink, this rank's runtime sees nodes of one rank (read when the Buffer is built), whatever
    the launcher said."""
    env = os.environ if environ is None else environ
    if a.disable_nvlink:
        env["UCCL_EP_RANKS_PER_NODE"] = "1"
