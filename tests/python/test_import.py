"""The package imports anywhere (no GPU, no CUDA driver), exports the DeepEP names, and deep_ep is an alias."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ALIAS_DIR, PYTHON_DIR

EXPORTS = ["Buffer", "Config", "EventOverlap", "EventHandle", "topk_idx_t", "initialize_uccl", "destroy_uccl",
           "get_low_latency_rdma_size_hint", "TimeoutError", "UcclError", "ArgumentError"]


def _run(code: str, **env_changes) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PYTHON_DIR, ALIAS_DIR, env.get("PYTHONPATH", "")])
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_exports_present():
    import uccl.ep as ep
    for name in EXPORTS:
        assert hasattr(ep, name), name
    assert ep.topk_idx_t is torch.int64
    assert ep.utils.EventOverlap is ep.EventOverlap
    assert issubclass(ep.TimeoutError, TimeoutError)
    assert issubclass(ep.UcclError, RuntimeError)
    assert issubclass(ep.ArgumentError, ValueError)  # callers that catch ValueError for bad input keep working
    assert ep.Buffer.num_sms == 20


def test_deep_ep_alias_is_uccl_ep():
    import deep_ep
    import deep_ep.utils
    import uccl.ep as ep
    from deep_ep import Buffer, EventOverlap
    from deep_ep.utils import EventOverlap as EO2
    assert Buffer is ep.Buffer and deep_ep.Buffer is ep.Buffer
    assert EventOverlap is ep.EventOverlap and EO2 is ep.EventOverlap
    assert deep_ep.utils is ep.utils
    for name in EXPORTS:
        assert getattr(deep_ep, name) is getattr(ep, name), name


@pytest.mark.parametrize("build_dir", ["keep", None])
def test_import_without_gpu(build_dir):
    """CUDA_VISIBLE_DEVICES="" hides every GPU; import must not touch CUDA (with and without the native module).
    Configs build without it; their size hints come from the native module (ImportError naming it without)."""
    env = {"CUDA_VISIBLE_DEVICES": ""}
    if build_dir is None:
        env["UCCL_EP_BUILD_DIR"] = None
    code = ("import torch, uccl.ep as ep, deep_ep\n"
            "assert not torch.cuda.is_initialized()\n"
            "c = ep.Config()\n"
            "try:\n"
            "    print('hint', c.get_nvl_buffer_size_hint(7168 * 2, 8) > 0)\n"
            "except ImportError as e:\n"
            "    print('hint ImportError', 'UCCL_EP_BUILD_DIR' in str(e))\n"
            "assert not torch.cuda.is_initialized()\n"
            "print('native', ep._C is not None)\n")
    r = _run(code, **env)
    assert r.returncode == 0, r.stderr
    if build_dir is None:
        assert "native False" in r.stdout and "hint ImportError True" in r.stdout
    elif os.environ.get("UCCL_EP_BUILD_DIR"):
        assert "native True" in r.stdout and "hint True" in r.stdout


def test_missing_native_says_where_it_looked():
    code = ("import uccl.ep as ep\n"
            "try:\n"
            "    ep.get_low_latency_rdma_size_hint(128, 7168, 8, 256)\n"
            "except ImportError as e:\n"
            "    print('IMPORTERROR', e)\n")
    r = _run(code, UCCL_EP_BUILD_DIR=None)
    assert r.returncode == 0, r.stderr
    assert "IMPORTERROR" in r.stdout and "UCCL_EP_BUILD_DIR" in r.stdout


def test_bad_build_dir_is_reported(tmp_path):
    r = _run("import uccl.ep as ep; print(ep._C, ep._C_import_error)", UCCL_EP_BUILD_DIR=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "None" in r.stdout and str(tmp_path) in r.stdout


def test_native_module_names(native):
    import uccl.ep as ep
    assert native.__name__ == "uccl.ep._C"
    assert ep.TimeoutError is native.TimeoutError
    assert ep.TimeoutError.__module__ == "uccl.ep._C"
    assert ep.UcclError is native.UcclError and ep.ArgumentError is native.ArgumentError
    assert issubclass(native.ArgumentError, ValueError) and issubclass(native.UcclError, RuntimeError)
    assert isinstance(native.local_host_id(), str) and native.local_host_id()
    assert isinstance(native.has_cuda(), bool)
    assert native.has_cuda() == hasattr(native, "Runtime")
