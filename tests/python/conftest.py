"""pytest set-up for the Python layer: python/ and packaging/deep_ep on sys.path (uccl.ep, deep_ep without
installing), the `gpu` marker, and a `native` fixture for tests that need uccl.ep._C.

The native module comes from UCCL_EP_BUILD_DIR (scripts/run_tests.sh points it at the Release build). Tests that
need it are skipped when the variable is unset, and fail when it is set but the module does not load.
"""
import os
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PYTHON_DIR = os.path.join(REPO, "python")
ALIAS_DIR = os.path.join(REPO, "packaging", "deep_ep")  # the deep_ep alias distribution's source
for _path in (ALIAS_DIR, PYTHON_DIR):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device")


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device here (torch.cuda.is_available() is False); GPU tests run on "
                                   "the device machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def native():
    import uccl.ep as ep
    if ep._C is None:
        if os.environ.get("UCCL_EP_BUILD_DIR"):
            pytest.fail(f"UCCL_EP_BUILD_DIR is set but uccl.ep._C did not load: {ep._C_import_error}")
        pytest.skip("uccl.ep._C not available (set UCCL_EP_BUILD_DIR to a CMake build directory)")
    return ep._C
