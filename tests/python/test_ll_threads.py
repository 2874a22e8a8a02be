"""One Buffer, two threads, and receive hooks called twice, on the CPU stand-in of the low-latency runtime
(ll_stand_in.py).

A Buffer serves one thread at a time: a call that starts while another thread is inside a call on the same Buffer
raises RuntimeError at once, before it launches anything (it does not wait: a silent wait would hide the misuse,
and the two threads' calls would still take the buffer's halves in an order neither chose). A receive hook runs
once: a second call raises RuntimeError naming the call and launches nothing.
"""
import inspect
import threading
import time

import pytest

from uccl.ep import Buffer
from ll_stand_in import make_ll_buffer
from test_ll_host_path import combine, dispatch, inputs, launched

BUSY = "another thread is inside a call on this Buffer"

# Public Buffer methods that neither launch anything nor touch the low-latency state or the streams.
NO_LOCK_NEEDED = {"get_comm_stream"}


@pytest.fixture
def ll_buffer(native, monkeypatch):
    return make_ll_buffer(native, monkeypatch.setattr)


def hold_the_runtime(rt, name):
    """Makes the stand-in's `name` wait inside the runtime until released; returns (entered, release)."""
    entered, release = threading.Event(), threading.Event()
    inner = getattr(rt, name)

    def held(*fields, **keywords):
        entered.set()
        assert release.wait(10)
        return inner(*fields, **keywords)

    setattr(rt, name, held)
    return entered, release


def test_every_call_that_launches_or_changes_state_takes_the_buffer():
    """Each public method (and the receive hook's entry) is wrapped by _one_thread, but for the few that only read."""
    unlocked = []
    for name, member in vars(Buffer).items():
        if name.startswith("__") or not inspect.isfunction(member) or name in NO_LOCK_NEEDED:
            continue
        if name.startswith("_") and name != "_run_receive_hook":
            continue
        if getattr(member, "__wrapped__", None) is None:
            unlocked.append(name)
    assert not unlocked, f"Buffer methods a second thread could enter at once: {unlocked}"


@pytest.mark.parametrize("second", ["low_latency_dispatch", "low_latency_combine", "receive hook"])
def test_a_second_thread_raises_while_a_dispatch_is_inside_the_runtime(ll_buffer, second):
    """Thread A is held inside the runtime's low_latency_dispatch; thread B's call on the same Buffer raises at once
    and launches nothing; once A returns, B's call runs."""
    buf, rt = ll_buffer
    x, idx, w = inputs()
    _, _, handle, _, hook = dispatch(buf, x, idx, return_recv_hook=True)
    calls = {
        "low_latency_dispatch": lambda: dispatch(buf, x, idx),
        "low_latency_combine": lambda: combine(buf, handle, idx, w),
        "receive hook": hook,
    }
    before = len(launched(rt))
    entered, release = hold_the_runtime(rt, "low_latency_dispatch")
    errors = []

    def first():
        try:
            dispatch(buf, x, idx)
        except Exception as e:  # reported below: a failure in the thread must fail the test
            errors.append(e)

    a = threading.Thread(target=first)
    a.start()
    try:
        assert entered.wait(10)
        with pytest.raises(RuntimeError, match=f"Buffer.{second if second != 'receive hook' else '_run_receive_hook'}: "
                                               f"{BUSY}"):
            calls[second]()
        assert len(launched(rt)) == before  # B launched nothing; A is still inside
    finally:
        release.set()
        a.join(10)
    assert not errors and not a.is_alive()
    assert [c[0] for c in launched(rt)[before:]] == ["low_latency_dispatch"]
    calls[second]()  # the Buffer is free again: B's call runs
    assert len(launched(rt)) == before + 2


def test_two_threads_dispatching_at_once_never_overlap_inside_the_runtime(ll_buffer):
    """Two threads call low_latency_dispatch in a loop with no coordination: every call either runs alone inside the
    runtime or raises the busy error; none is lost and none fails in another way."""
    buf, rt = ll_buffer
    x, idx, w = inputs()
    dispatch(buf, x, idx)  # the first call with these sizes takes the full checks; the loop the fast path
    inside, overlaps = [0], []
    inner = rt.low_latency_dispatch

    def counted(*fields, **keywords):
        inside[0] += 1
        if inside[0] > 1:
            overlaps.append(inside[0])
        try:
            time.sleep(0.0002)  # gives up the GIL inside the runtime: the other thread gets to arrive meanwhile
            return inner(*fields, **keywords)
        finally:
            inside[0] -= 1

    rt.low_latency_dispatch = counted
    n, ran, busy, other = 300, [0, 0], [0, 0], []
    start = threading.Barrier(2)

    def loop(t):
        start.wait()
        for _ in range(n):
            try:
                dispatch(buf, x, idx)
                ran[t] += 1
            except RuntimeError as e:
                if BUSY in str(e):
                    busy[t] += 1
                else:
                    other.append(e)
            except Exception as e:
                other.append(e)

    threads = [threading.Thread(target=loop, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not other and not overlaps
    assert [r + b for r, b in zip(ran, busy)] == [n, n]
    assert len(launched(rt)) == 1 + sum(ran)
    assert any(busy), busy  # the threads did meet


@pytest.mark.parametrize("call", ["low_latency_dispatch", "low_latency_combine"])
def test_a_receive_hook_called_twice_raises_naming_the_call_and_launches_nothing(ll_buffer, call):
    buf, rt = ll_buffer
    x, idx, w = inputs()
    _, _, handle, _, hook = dispatch(buf, x, idx, return_recv_hook=True)
    if call == "low_latency_combine":
        hook()
        _, _, hook = combine(buf, handle, idx, w, return_recv_hook=True)
    hook()
    before = list(rt.calls)
    with pytest.raises(RuntimeError, match=f"{call} receive hook: this hook already ran"):
        hook()
    assert rt.calls == before  # nothing launched, nothing checked
    assert [c[0] for c in launched(rt)].count(f"{call} hook") == 1


def test_a_failed_second_hook_leaves_the_buffer_usable(ll_buffer):
    buf, rt = ll_buffer
    x, idx, w = inputs()
    *_, hook = dispatch(buf, x, idx, return_recv_hook=True)
    hook()
    with pytest.raises(RuntimeError, match="already ran"):
        hook()
    assert buf._call_lock.acquire(False)  # the lock was given back
    buf._call_lock.release()
    dispatch(buf, x, idx)
    assert [c[0] for c in launched(rt)][-1] == "low_latency_dispatch"
