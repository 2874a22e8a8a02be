"""Small pieces buffer.py and _low_latency.py share: the per-Buffer call lock, tensors over device memory the runtime
owns, the type checks of the constructor's arguments, and a wait that Ctrl-C ends."""
import functools
import time
from typing import Callable, Optional

import torch


def one_thread(method):
    """Runs `method` with the Buffer's call lock held; a second thread that arrives meanwhile gets RuntimeError."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        lock = self._call_lock
        if lock is None:  # a Buffer whose constructor did not get that far
            return method(self, *args, **kwargs)
        if not lock.acquire(False):  # positional: a keyword costs here, on every call
            raise RuntimeError(f"Buffer.{method.__name__}: another thread is inside a call on this Buffer; a Buffer "
                               f"serves one thread at a time (serialize the calls, or use one Buffer per thread)")
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release()

    return call


def ptr_of(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


class _DeviceMemory:
    """`nbytes` of device memory at `ptr` as a 1-D uint8 array for torch.as_tensor (CUDA array interface).
    Holds `owner` so the memory outlives every tensor made from it."""

    def __init__(self, ptr: int, nbytes: int, owner):
        self.owner = owner
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr, False), "version": 2,
                                         "strides": None}


def wrap_device_memory(ptr: int, nbytes: int, owner, device: torch.device) -> torch.Tensor:
    if nbytes == 0:
        return torch.empty(0, dtype=torch.uint8, device=device)
    return torch.as_tensor(_DeviceMemory(ptr, nbytes, owner), device=device)


def as_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"Buffer: {name} must be a bool, got {type(value).__name__}")
    return value


def as_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Buffer: {name} must be an int, got {type(value).__name__}")
    return value


def wait_until(done: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.01) -> None:
    """Polls done() until it is true; a Python-level sleep between polls, so Ctrl-C raises KeyboardInterrupt at once
    (a blocking wait inside torch or MPI would defer it). TimeoutError naming `what` after timeout_s seconds."""
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what}: not done after {timeout_s:g} s (UCCL_EP_TIMEOUT_SECS)")
        time.sleep(poll_s)
