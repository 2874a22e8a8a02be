"""Events and small helpers of uccl.ep (DeepEP's `deep_ep.utils`).

Nothing here touches CUDA at import; an `EventHandle` is the first thing that does.
"""
import os
from typing import Any, Iterable, Optional

import torch


class EventHandle:
    """A CUDA event recorded on the current stream at construction (or on `stream` when given)."""

    def __init__(self, stream: Optional["torch.cuda.Stream"] = None):
        self.event = torch.cuda.Event()
        self.event.record(stream if stream is not None else torch.cuda.current_stream())

    def current_stream_wait(self) -> None:
        """Makes the current stream wait for the recorded work (no host wait)."""
        torch.cuda.current_stream().wait_event(self.event)

    def synchronize(self) -> None:
        """Blocks the host until the recorded work is done."""
        self.event.synchronize()


class EventOverlap:
    """An optional `EventHandle` plus tensors kept alive until the caller is done with the event.

    `extra_tensors` replaces `record_stream`: tensors that work on another stream still reads or writes stay
    referenced here, so the caching allocator cannot hand their memory out early. Used as a context manager,
    the current stream waits for the event on exit.
    """

    def __init__(self, event: Optional[EventHandle] = None, extra_tensors: Optional[Iterable[Any]] = None):
        self.event = event
        self.extra_tensors = tuple(extra_tensors) if extra_tensors is not None else None

    def current_stream_wait(self) -> None:
        if self.event is None:
            raise RuntimeError("EventOverlap.current_stream_wait: no event (the call ran with async_finish=False; "
                               "the current stream already waits for it)")
        self.event.current_stream_wait()

    def __enter__(self) -> "EventOverlap":
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        if self.event is not None:
            self.event.current_stream_wait()


def env_flag(*names: str) -> bool:
    """True when any of the variables is set to 1 / true / yes / on."""
    for name in names:
        value = os.environ.get(name, "").strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
    return False


def env_positive_int(name: str) -> Optional[int]:
    """The variable as a positive int, None when unset or empty; ValueError naming it otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a positive integer") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: expected a positive integer")
    return value


def mnnvl_enabled() -> bool:
    """UCCL_EP_NORMAL_MNNVL=1 (or DeepEP's DEEP_EP_NORMAL_MNNVL=1): every rank is an NVLink peer."""
    return env_flag("UCCL_EP_NORMAL_MNNVL", "DEEP_EP_NORMAL_MNNVL")


def ranks_per_node_from_env(world: int) -> Optional[int]:
    """Node size from the environment, or None: MNNVL -> world; UCCL_EP_RANKS_PER_NODE; LOCAL_WORLD_SIZE.

    A value above the world size means one node holding every rank.
    """
    if mnnvl_enabled():
        return world
    for name in ("UCCL_EP_RANKS_PER_NODE", "LOCAL_WORLD_SIZE"):
        value = env_positive_int(name)
        if value is not None:
            return min(value, world)
    return None


def ranks_per_node_from_hosts(hosts: list, rank: int) -> int:
    """Node size from every rank's host name: the ranks sharing this rank's host, which must form contiguous,
    equally sized blocks (rank r on node r // ranks_per_node), as the runtime numbers nodes that way."""
    world = len(hosts)
    rpn = sum(1 for h in hosts if h == hosts[rank])
    bad = [r for r in range(world) if hosts[r] != hosts[(r // rpn) * rpn]]
    if bad or world % rpn != 0:
        raise RuntimeError(
            f"uccl.ep: ranks are not placed in contiguous blocks of {rpn} per host (host of each rank: {hosts}); "
            f"set UCCL_EP_RANKS_PER_NODE or LOCAL_WORLD_SIZE, or launch ranks in host order")
    return rpn
