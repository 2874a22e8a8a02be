"""deep_ep: an alias of uccl.ep, so that code written for DeepEP (`import deep_ep`, `from deep_ep.utils import
EventOverlap`) runs on uccl-ep unchanged. Every name is the very object uccl.ep exports."""
import sys as _sys

import uccl.ep as _ep
from uccl.ep import *  # noqa: F401,F403
from uccl.ep import (ArgumentError, Buffer, Config, EventHandle, EventOverlap, TimeoutError,  # noqa: F401
                     UcclError, destroy_uccl, get_low_latency_rdma_size_hint, initialize_uccl, topk_idx_t)
from uccl.ep import buffer, config, utils  # noqa: F401

# Submodules under both names: `import deep_ep.utils` finds uccl.ep.utils itself.
for _name in ("utils", "buffer", "config"):
    _sys.modules[__name__ + "." + _name] = getattr(_ep, _name)

__all__ = list(_ep.__all__)
