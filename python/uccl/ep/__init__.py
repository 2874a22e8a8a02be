"""uccl.ep: expert-parallel dispatch and combine, a drop-in for DeepEP (`import uccl.ep as deep_ep`).

Importing never touches CUDA: a CPU-only machine imports this package and builds Configs; with the native module
(its CPU-only build too) it also computes size hints. The native module `_C` is looked up in this package first
(installed wheel), then in $UCCL_EP_BUILD_DIR/src/python/ (an in-tree CMake build). Without it the package still
imports; whatever needs the runtime raises ImportError saying where it looked.
"""
import glob as _glob
import importlib as _importlib
import importlib.machinery as _machinery
import importlib.util as _importlib_util
import os as _os
import sys as _sys

import torch as _torch


def _load_native():
    try:
        return _importlib.import_module(__name__ + "._C"), None  # installed next to this file
    except ImportError as e:
        first_error = e
    build_dir = _os.environ.get("UCCL_EP_BUILD_DIR", "")
    if not build_dir:
        return None, f"not in the package ({first_error}) and UCCL_EP_BUILD_DIR is not set"
    folder = _os.path.join(build_dir, "src", "python")
    candidates = [p for s in _machinery.EXTENSION_SUFFIXES for p in _glob.glob(_os.path.join(folder, "_C" + s))]
    if not candidates:
        return None, f"not in the package and no _C{_machinery.EXTENSION_SUFFIXES[0]} in {folder}"
    spec = _importlib_util.spec_from_file_location(__name__ + "._C", candidates[0])
    native = _importlib_util.module_from_spec(spec)
    _sys.modules[spec.name] = native
    try:
        spec.loader.exec_module(native)
    except Exception as e:  # a module built for another interpreter, a missing shared library
        del _sys.modules[spec.name]
        return None, f"loading {candidates[0]} failed: {e}"
    return native, None


_C, _C_import_error = _load_native()

if _C is not None:
    TimeoutError = _C.TimeoutError
    UcclError = _C.UcclError
    ArgumentError = _C.ArgumentError
else:
    class TimeoutError(TimeoutError):  # noqa: A001 - the name callers catch, as in the native module
        """A wait that ran past UCCL_EP_TIMEOUT_SECS (raised by the native module)."""

    class UcclError(RuntimeError):
        """A failure in the uccl-ep runtime (raised by the native module)."""

    class ArgumentError(ValueError):
        """A value the runtime rejects: a size out of range, a buffer too small (raised by the native module)."""

from . import utils  # noqa: E402
from .buffer import Buffer, destroy_uccl, initialize_uccl  # noqa: E402
from .config import Config  # noqa: E402
from .utils import EventHandle, EventOverlap  # noqa: E402

topk_idx_t = _torch.int64


def get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank: int, hidden: int, num_ranks: int,
                                   num_experts: int) -> int:
    """Bytes of RDMA buffer low-latency mode needs (same as Buffer.get_low_latency_rdma_size_hint)."""
    return Buffer.get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank, hidden, num_ranks, num_experts)


__all__ = ["Buffer", "Config", "EventOverlap", "EventHandle", "topk_idx_t", "initialize_uccl", "destroy_uccl",
           "get_low_latency_rdma_size_hint", "TimeoutError", "UcclError", "ArgumentError", "utils"]
