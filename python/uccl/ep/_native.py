"""The one way into uccl.ep._C from the Python layer: `native()` returns the module or raises ImportError saying
where it was looked for, and `limit(name)` reads a kernel limit (src/kernels/limits.hpp) from it.

Looked up at call time, never at import, so that `import uccl.ep` works on a machine without the native module
and only the calls that need it fail.
"""


def native():
    """uccl.ep._C, or ImportError saying how to get it (the package imports without it)."""
    from . import _C, _C_import_error
    if _C is None:
        raise ImportError(f"uccl.ep: the native module uccl.ep._C is not available ({_C_import_error}); install "
                          f"the package (pip install .) or point UCCL_EP_BUILD_DIR at a CMake build directory")
    return _C


def limit(name: str) -> int:
    """A limit of the kernels by its C++ name (kChannelsPerScale, kUe8m0ChannelsPerInt, ...): Python defines none."""
    return int(getattr(native(), name))
