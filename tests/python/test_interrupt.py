"""Ctrl-C and local destroy on the CPU.

A native wait with the GIL released (uccl.ep._C.wait_interruptibly takes the path every native wait takes: the
dispatch counts, the device, a peer's fd, a floor run) ends within a second of SIGINT with the KeyboardInterrupt
Python's handler raised, the wait named in a note. Buffer.destroy() over a stand-in runtime: collective (device, then
barrier, then free) while healthy; local after a recorded failure (no barrier), after which a new Buffer works;
Ctrl-C ends its barrier wait within a second and leaves the buffer as it was; the barrier gives up after
UCCL_EP_TIMEOUT_SECS.
"""
import os
import signal
import sys
import threading
import time

import pytest
import torch

from test_intranode_fake import FakeNormalRuntime, install_fake_cuda, make_buffer

SIGNAL_AFTER = 0.3


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """SIGINT raises KeyboardInterrupt in these tests whatever the process inherited: a shell starts a background job
    with SIGINT ignored, and Python then leaves it ignored (CI run with nohup or `&` would see no signal at all)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def sigint_after(seconds: float) -> threading.Timer:
    t = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    return t


def test_a_native_wait_ends_within_a_second_of_ctrl_c(native):
    start = time.monotonic()
    sigint_after(SIGNAL_AFTER)
    with pytest.raises(KeyboardInterrupt) as e:
        native.wait_interruptibly(30.0)
    assert time.monotonic() - start - SIGNAL_AFTER < 1.0
    if sys.version_info >= (3, 11):
        assert "wait_interruptibly was interrupted (Ctrl-C)" in " ".join(getattr(e.value, "__notes__", [])), e.value


def test_what_a_sigint_handler_raises_is_what_the_wait_raises(native):
    def handler(signum, frame):
        raise RuntimeError("the application's own SIGINT handler")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        sigint_after(SIGNAL_AFTER)
        with pytest.raises(RuntimeError, match="the application's own SIGINT handler"):
            native.wait_interruptibly(30.0)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_native_wait_without_a_signal_runs_its_time(native):
    start = time.monotonic()
    native.wait_interruptibly(0.25)
    assert time.monotonic() - start >= 0.25
    with pytest.raises(native.ArgumentError, match="seconds must be finite and >= 0, got -1"):
        native.wait_interruptibly(-1.0)


# ---------------------------------------------------------------------------------------------------------------
# Buffer.destroy
# ---------------------------------------------------------------------------------------------------------------
class Work:
    """A barrier's handle: complete once `done` is set."""

    def __init__(self, done: threading.Event):
        self.done = done

    def is_completed(self):
        return self.done.is_set()

    def wait(self):
        return True


class LifeRuntime(FakeNormalRuntime):
    """Logs the life-cycle calls; `failure` is what check_errors raises (a recorded failure stays)."""

    def __init__(self, native, events, failure=None):
        super().__init__(0, 2)
        self.native, self.events, self.failure = native, events, failure

    def check_errors(self):
        if self.failure is not None:
            raise self.failure

    def synchronize(self):
        self.events.append("synchronize")

    def destroy(self):
        self.events.append("destroy")


@pytest.fixture
def life(native, monkeypatch):
    """(make(failure=None) -> (Buffer, runtime), events, barrier_done): Buffers with explicitly_destroy=True over
    LifeRuntime; torch.distributed.barrier logs itself and completes once barrier_done is set."""
    import torch.distributed as dist
    install_fake_cuda(monkeypatch.setattr)
    events, barrier_done = [], threading.Event()

    def barrier(group=None, async_op=False):
        events.append("barrier")
        assert async_op, "Buffer's barrier must not block: Ctrl-C could not end it"
        return Work(barrier_done)

    monkeypatch.setattr(dist, "barrier", barrier)

    def make(failure=None):
        rt = LifeRuntime(native, events, failure)
        b = make_buffer(rt, group=object())
        b.explicitly_destroy = True
        b._call_lock = threading.Lock()
        return b, rt

    return make, events, barrier_done


def test_destroy_while_healthy_is_collective(life):
    make, events, barrier_done = life
    b, _ = make()
    barrier_done.set()
    b.destroy()
    assert events == ["synchronize", "barrier", "destroy"]
    assert b._runtime is None
    b.destroy()  # idempotent
    assert events == ["synchronize", "barrier", "destroy"]


def test_destroy_after_a_recorded_failure_is_local_and_a_new_buffer_works(life, native):
    make, events, barrier_done = life  # the barrier never completes: a lost peer never joins it
    lost = native.TimeoutError("rank 0: proxy failed: the operation to rank 1 did not complete; is rank 1 alive?")
    b, _ = make(failure=lost)
    assert b._recorded_failure() is lost
    start = time.monotonic()
    b.destroy()
    assert time.monotonic() - start < 1.0
    assert events == ["destroy"]  # no device wait for peers' sake, no barrier
    assert b._runtime is None
    with pytest.raises(RuntimeError, match="the buffer was destroyed"):
        b.get_dispatch_layout(torch.zeros(4, 2, dtype=torch.int64), 4)

    fresh, rt = make()
    per_rank, _, per_expert, _, _ = fresh.get_dispatch_layout(torch.tensor([[0, 1], [2, 3]]), 4)
    assert per_rank.tolist() == [1, 1] and per_expert.tolist() == [1, 1, 1, 1]


def test_an_argument_error_is_not_a_failure(life, native):
    make, events, barrier_done = life
    b, rt = make(failure=native.ArgumentError("topk_idx[0][0] holds expert id 9"))
    assert b._recorded_failure() is None
    rt.failure = None
    barrier_done.set()
    b.destroy()
    assert events == ["synchronize", "barrier", "destroy"]


def test_ctrl_c_ends_the_destroy_barrier_within_a_second_and_leaves_the_buffer(life):
    make, events, barrier_done = life
    b, _ = make()
    start = time.monotonic()
    sigint_after(SIGNAL_AFTER)
    with pytest.raises(KeyboardInterrupt):
        b.destroy()
    assert time.monotonic() - start - SIGNAL_AFTER < 1.0
    assert events == ["synchronize", "barrier"] and b._runtime is not None  # nothing freed
    barrier_done.set()
    b.destroy()  # again, once every rank is there
    assert events[-3:] == ["synchronize", "barrier", "destroy"] and b._runtime is None


def test_the_destroy_barrier_gives_up_after_the_timeout(life, native, monkeypatch):
    make, events, barrier_done = life
    monkeypatch.setattr(native, "timeout_secs", lambda: 0.2)
    b, _ = make()
    with pytest.raises(TimeoutError, match=r"Buffer.destroy \(rank 0 of 2\): the barrier every rank must reach; .*"
                                           r"not done after 0.2 s \(UCCL_EP_TIMEOUT_SECS\)"):
        b.destroy()
    assert b._runtime is not None
