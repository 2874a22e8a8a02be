"""Events and small helpers of uccl.ep (DeepEP's `deep_ep.utils`).

Nothing here touches CUDA at import; an `EventHandle` is the first thing that does.
"""
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
