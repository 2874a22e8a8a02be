"""setup.py's build target: the version names it (0.1.0+cu13), it follows the nvcc that CMake would use, and a
machine without nvcc fails with a clear message instead of silently packaging a module without Buffer, unless
UCCL_EP_WHEEL_TARGET=cpu asks for that by name. Runs `setup.py --version`, which decides the target but builds
nothing; a fake nvcc on a private PATH stands in for each CUDA release."""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def version(tmp_path, target=None, cuda_release=None, command="--version", hipcc=False, **env_vars):
    """(exit status, output) of `setup.py <command>` on a PATH holding only a fake nvcc of `cuda_release` (or none)
    and, with `hipcc`, a fake hipcc."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if cuda_release:
        nvcc = bin_dir / "nvcc"
        nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {cuda_release}, V{cuda_release}.1'\n")
        nvcc.chmod(0o755)
    if hipcc:
        (bin_dir / "hipcc").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "hipcc").chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDACXX", "UCCL_EP_WHEEL_TARGET", "UCCL_EP_CUDA_ARCHS", "TORCH_CUDA_ARCH_LIST", "HIPCC",
                        "UCCL_EP_ROCM_ARCHS", "PYTORCH_ROCM_ARCH")}
    env.update(PATH=str(bin_dir), CUDA_HOME=str(tmp_path / "no-cuda"), **env_vars)
    if target is not None:
        env["UCCL_EP_WHEEL_TARGET"] = target
    r = subprocess.run([sys.executable, "setup.py", "-q", command], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    return r.returncode, (r.stdout + r.stderr).strip()


@pytest.mark.parametrize("release, expected", [("12.4", "0.1.0+cu12"), ("13.0", "0.1.0+cu13")])
def test_the_version_names_the_cuda_of_the_nvcc_found(tmp_path, release, expected):
    rc, out = version(tmp_path, cuda_release=release)
    assert rc == 0, out
    assert out.splitlines()[-1] == expected


def test_no_nvcc_is_an_error_that_says_how_to_ask_for_cpu(tmp_path):
    rc, out = version(tmp_path)
    assert rc != 0
    assert "no CUDA compiler (nvcc) found" in out and "UCCL_EP_WHEEL_TARGET=cpu" in out


def test_a_cpu_package_is_built_only_by_name(tmp_path):
    rc, out = version(tmp_path, target="cpu")
    assert rc == 0, out
    assert out.splitlines()[-1] == "0.1.0+cpu"


@pytest.mark.parametrize("target, release, words", [
    ("cu13", "12.4", ["UCCL_EP_WHEEL_TARGET=cu13", "CUDA 12"]),
    ("rocm", None, ["UCCL_EP_WHEEL_TARGET=rocm", "no hipcc found"]),
    ("cuda", None, ["UCCL_EP_WHEEL_TARGET='cuda'", "cu12, cu13, rocm, cpu"]),
])
def test_a_target_the_machine_cannot_build_is_named(tmp_path, target, release, words):
    rc, out = version(tmp_path, target=target, cuda_release=release)
    assert rc != 0
    for w in words:
        assert w in out, (w, out)


def test_a_rocm_package_says_rocm_in_its_version(tmp_path):
    rc, out = version(tmp_path, target="rocm", hipcc=True)
    assert rc == 0, out
    assert out.splitlines()[-1] == "0.1.0+rocm"


@pytest.mark.parametrize("env_vars, expected", [
    ({}, "gfx942;gfx950"),
    (dict(PYTORCH_ROCM_ARCH="gfx90a;gfx942"), "gfx90a;gfx942"),
    (dict(PYTORCH_ROCM_ARCH="gfx942", UCCL_EP_ROCM_ARCHS="gfx90a, gfx950"), "gfx90a;gfx950"),  # ours wins
])
def test_rocm_targets_follow_the_variables(tmp_path, env_vars, expected):
    rc, out = version(tmp_path, target="rocm", command="show_target", hipcc=True, **env_vars)
    assert rc == 0, out
    line = [l for l in out.splitlines() if l.startswith("cmake ")][-1]
    assert "-DUCCL_EP_GPU=hip" in line.split()
    assert line.split("-DUCCL_EP_HIP_ARCH=")[1].split()[0] == expected


def test_a_bad_rocm_target_is_named(tmp_path):
    rc, out = version(tmp_path, target="rocm", command="show_target", hipcc=True, UCCL_EP_ROCM_ARCHS="sm_90")
    assert rc != 0
    assert "UCCL_EP_ROCM_ARCHS='sm_90'" in out and "gfx942;gfx950" in out


def archs_of(tmp_path, release, **env_vars):
    rc, out = version(tmp_path, cuda_release=release, command="show_target", **env_vars)
    assert rc == 0, out
    line = [l for l in out.splitlines() if l.startswith("cmake ")][-1]
    return line.split("-DCMAKE_CUDA_ARCHITECTURES=")[1].split()[0]


@pytest.mark.parametrize("release, env_vars, expected", [
    ("12.4", {}, "80;90"),                                      # sm_100 arrived in CUDA 12.8
    ("12.8", {}, "80;90;100"),
    ("13.0", {}, "80;90;100"),
    ("13.0", dict(TORCH_CUDA_ARCH_LIST="8.0;9.0a 10.0+PTX"), "80;90a;100"),
    ("13.0", dict(TORCH_CUDA_ARCH_LIST="8.0", UCCL_EP_CUDA_ARCHS="90,100"), "90;100"),  # ours wins
])
def test_gpu_architectures_follow_the_variables_and_the_release(tmp_path, release, env_vars, expected):
    assert archs_of(tmp_path, release, **env_vars) == expected


def test_a_bad_architecture_list_is_named(tmp_path):
    rc, out = version(tmp_path, cuda_release="13.0", command="show_target", UCCL_EP_CUDA_ARCHS="sm_90")
    assert rc != 0
    assert "UCCL_EP_CUDA_ARCHS='sm_90'" in out and "80;90;100" in out


# ---------------------------------------------------------------------------------------------------------------
# The native module's dynamic dependencies: libfabric and libibverbs are opened at run time (dlopen), torch and the
# CUDA driver are never linked, so one module imports on any host of its target, with or without NIC libraries.
# ---------------------------------------------------------------------------------------------------------------
FORBIDDEN_NEEDED = ("libfabric", "libibverbs", "libefa", "libcuda.so", "libtorch", "libc10", "libpython")


def _readelf(args, path):
    try:
        return subprocess.run(["readelf", *args, path], capture_output=True, text=True, check=True, timeout=60).stdout
    except FileNotFoundError:
        pytest.fail("readelf is not installed: install_deps.sh installs binutils")


def test_the_native_module_links_no_nic_library_torch_or_cuda_driver(native):
    path = native.__file__
    needed = [line.split("[", 1)[1].rstrip("]") for line in _readelf(["-d"], path).splitlines() if "(NEEDED)" in line]
    assert needed, f"readelf -d {path} lists no NEEDED entries at all"
    bad = [n for n in needed if n.startswith(FORBIDDEN_NEEDED)]
    assert not bad, f"{path} links {bad}; they must be opened at run time or not used (all NEEDED: {needed})"


def test_the_libfabric_and_libibverbs_stand_ins_stay_inside_the_module(native):
    """The loader's definitions of fi_* / ibv_* are hidden: not exported (they would interpose on another copy of the
    library in the process) and none is left undefined (that would need the library at load time)."""
    symbols = _readelf(["--dyn-syms", "-W"], native.__file__).splitlines()
    names = [line.split()[-1] for line in symbols if len(line.split()) >= 8]
    leaked = [n for n in names if n.split("@")[0].startswith(("fi_", "ibv_", "_ibv_"))]
    assert not leaked, f"fi_*/ibv_* symbols in the dynamic symbol table of {native.__file__}: {leaked[:10]}"


# ---------------------------------------------------------------------------------------------------------------
# What each distribution installs: uccl-ep puts uccl.ep in the `uccl` namespace package (no uccl/__init__.py, so
# other uccl.* distributions install beside it) and no deep_ep; the deep_ep alias is its own distribution.
# ---------------------------------------------------------------------------------------------------------------
def _egg_info(project_dir, tmp_path, **env_vars):
    """(top_level.txt, SOURCES.txt, requires.txt or "") of `setup.py egg_info` / the pyproject build of project_dir."""
    out = tmp_path / "egg"
    out.mkdir()
    env = dict(os.environ, **env_vars)
    code = "from setuptools import setup; setup()" if not os.path.exists(os.path.join(project_dir, "setup.py")) else None
    cmd = [sys.executable, "setup.py"] if code is None else [sys.executable, "-c", code]
    r = subprocess.run(cmd + ["-q", "egg_info", "--egg-base", str(out)], cwd=project_dir, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    info = next(out.glob("*.egg-info"))
    read = lambda name: (info / name).read_text() if (info / name).exists() else ""  # noqa: E731
    return read("top_level.txt").split(), read("SOURCES.txt").split(), read("requires.txt")


def test_uccl_ep_installs_uccl_ep_in_a_namespace_package_and_no_deep_ep(tmp_path):
    top, sources, _ = _egg_info(REPO, tmp_path, UCCL_EP_WHEEL_TARGET="cpu")
    assert top == ["uccl"], top
    assert "python/uccl/ep/__init__.py" in sources
    assert not any(s.startswith("python/deep_ep") or s == "python/uccl/__init__.py" for s in sources), sources


def test_the_deep_ep_alias_is_its_own_distribution_on_top_of_uccl_ep(tmp_path):
    top, sources, requires = _egg_info(os.path.join(REPO, "packaging", "deep_ep"), tmp_path)
    assert top == ["deep_ep"], top
    assert "deep_ep/__init__.py" in sources
    assert "uccl-ep>=0.1.0" in requires


# ---------------------------------------------------------------------------------------------------------------
# A host without libfabric: the package still imports (nothing links it), and choosing a libfabric transport says
# which library is missing. The library is hidden in a private mount namespace (an empty file bound over it).
# ---------------------------------------------------------------------------------------------------------------
def _without_libfabric(script: str, tmp_path) -> subprocess.CompletedProcess:
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("unshare -m is not permitted here (needs root or user namespaces)")
    libs = [p for p in ("/usr/lib/x86_64-linux-gnu/libfabric.so.1", "/usr/lib/aarch64-linux-gnu/libfabric.so.1",
                        "/usr/lib64/libfabric.so.1") if os.path.exists(p)]
    if not libs:
        pytest.skip("no libfabric.so.1 on this host to hide")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    mounts = "".join(f"mount --bind {empty} {lib} && " for lib in libs)
    return subprocess.run(["unshare", "-m", "bash", "-c", mounts + script], capture_output=True, text=True,
                          timeout=120)


def test_without_libfabric_the_package_imports(native, tmp_path):
    build = os.path.dirname(os.path.dirname(os.path.dirname(native.__file__)))  # <build>/src/python/_C...so
    code = ("import ctypes\n"
            "try:\n    ctypes.CDLL('libfabric.so.1')\n    print('libfabric still loads')\n"
            "except OSError:\n    pass\n"
            "import uccl.ep as ep\nfrom uccl.ep import _C\nprint('imported', _C is not None)\n")
    r = _without_libfabric(f"UCCL_EP_BUILD_DIR={build} PYTHONPATH={REPO}/python {sys.executable} -c \"{code}\"",
                           tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "libfabric still loads" not in r.stdout
    assert "imported True" in r.stdout


def test_without_libfabric_a_fabric_transport_names_the_missing_library(native, tmp_path):
    build = os.path.dirname(os.path.dirname(os.path.dirname(native.__file__)))
    bench = os.path.join(build, "bench", "proxy_bench")
    if not os.path.exists(bench):
        pytest.skip(f"{bench} is not built (UCCL_EP_BUILD_BENCH=OFF)")
    r = _without_libfabric(f"timeout 60 {bench} --transport tcp", tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "libfabric is not available (could not load libfabric.so.1" in out, out
    assert "install libfabric" in out, out
