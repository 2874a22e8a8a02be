"""Builds uccl.ep._C through the project's CMake and packages python/: uccl.ep, in `uccl` as a namespace package
(no uccl/__init__.py), so other uccl.* distributions install beside it. The `deep_ep` alias is a distribution of
its own (packaging/deep_ep), installed on request, so that uccl-ep never overwrites a real DeepEP.

Environment:
  UCCL_EP_WHEEL_TARGET         cu12, cu13, rocm or cpu; the version says it (0.1.0+cu13, 0.1.0+rocm).
  UCCL_EP_CUDA_ARCHS           GPU architectures, CMake style ("80;90;100", "90a"); else TORCH_CUDA_ARCH_LIST in
                               torch's style ("8.0;9.0+PTX", "9.0a 10.0"); else sm_80 and sm_90, plus sm_100 where
                               the CUDA release has it (12.8 and later). `python3 setup.py show_target` prints the choice.
                               Unset: the CUDA major of the nvcc found (CUDACXX, PATH, $CUDA_HOME/bin, /usr/local/cuda/bin);
                               no nvcc is an error, never a silent CPU-only package: ask for cpu by name.
  UCCL_EP_ROCM_ARCHS           rocm: AMD targets ("gfx942;gfx950", "gfx90a"); else PYTORCH_ROCM_ARCH (torch's name);
                               else gfx942 and gfx950. rocm needs hipcc (HIPCC, PATH, /opt/rocm/bin).
  CMAKE_ARGS                   extra CMake configure arguments (split like a shell would)
  UCCL_EP_SPDLOG_INCLUDE_DIR   folder with spdlog/ and fmt/ headers, for machines without libspdlog/libfmt
                               (sets -DUCCL_EP_SPDLOG_HEADER_ONLY=ON)
  CMAKE_BUILD_PARALLEL_LEVEL   compile jobs (default: number of cores)
The module is built for the interpreter running this script (-DUCCL_EP_PYTHON_EXECUTABLE=sys.executable).
"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

from setuptools import Command, Extension, setup
from setuptools.command.build_ext import build_ext

REPO = os.path.dirname(os.path.abspath(__file__))
BASE_VERSION = "0.1.0"
TARGETS = ("cu12", "cu13", "rocm", "cpu")


def find_nvcc():
    """The nvcc CMake would find: CUDACXX, nvcc on PATH, $CUDA_HOME/bin/nvcc, /usr/local/cuda/bin/nvcc; or None."""
    candidates = [os.environ.get("CUDACXX", ""), shutil.which("nvcc") or "",
                  os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")]
    if "CUDA_HOME" not in os.environ:
        candidates.append("/usr/local/cuda/bin/nvcc")
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def nvcc_release(nvcc: str) -> tuple:
    """(major, minor) of `nvcc --version`."""
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"release (\d+)\.(\d+)", out)
    if not match:
        raise RuntimeError(f"uccl-ep: cannot read the CUDA release from `{nvcc} --version`:\n{out}")
    return int(match.group(1)), int(match.group(2))


def cuda_archs(release: tuple) -> list:
    """CMake CUDA architectures: UCCL_EP_CUDA_ARCHS, else TORCH_CUDA_ARCH_LIST, else the defaults for `release`."""
    if os.environ.get("UCCL_EP_CUDA_ARCHS", "").strip():
        name, raw = "UCCL_EP_CUDA_ARCHS", os.environ["UCCL_EP_CUDA_ARCHS"]
        archs = [a for a in re.split(r"[;,\s]+", raw.strip()) if a]
    elif os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip():
        name, raw = "TORCH_CUDA_ARCH_LIST", os.environ["TORCH_CUDA_ARCH_LIST"]
        # torch's spelling: "8.0;9.0a 10.0+PTX" -> 80, 90a, 100 (this package ships no PTX)
        archs = [a.replace("+PTX", "").replace(".", "") for a in re.split(r"[;\s]+", raw.strip()) if a]
    else:
        return ["80", "90"] + (["100"] if release >= (12, 8) else [])
    bad = [a for a in archs if not re.fullmatch(r"\d{2,3}a?", a)]
    if bad or not archs:
        raise RuntimeError(f"{name}={raw!r}: expected architectures like 80;90;100 (UCCL_EP_CUDA_ARCHS) or "
                           f"8.0;9.0+PTX (TORCH_CUDA_ARCH_LIST), got {bad or 'none'}")
    return archs


def find_hipcc():
    """The hipcc of a rocm build: HIPCC, hipcc on PATH, /opt/rocm/bin/hipcc; or None."""
    candidates = [os.environ.get("HIPCC", ""), shutil.which("hipcc") or "", "/opt/rocm/bin/hipcc"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def rocm_archs() -> list:
    """AMD targets: UCCL_EP_ROCM_ARCHS, else PYTORCH_ROCM_ARCH, else gfx942 and gfx950 (MI300, MI355)."""
    for name in ("UCCL_EP_ROCM_ARCHS", "PYTORCH_ROCM_ARCH"):
        raw = os.environ.get(name, "").strip()
        if raw:
            break
    else:
        return ["gfx942", "gfx950"]
    archs = [a for a in re.split(r"[;,\s]+", raw) if a]
    bad = [a for a in archs if not re.fullmatch(r"gfx[0-9a-f]{3,4}(:[a-z]+[+-])*", a)]
    if bad or not archs:
        raise RuntimeError(f"{name}={raw!r}: expected AMD targets like gfx942;gfx950, got {bad or 'none'}")
    return archs


def wheel_target() -> tuple:
    """(target, CMake arguments for it). Raises with what to do when the build cannot give what was asked."""
    target = os.environ.get("UCCL_EP_WHEEL_TARGET", "").strip()
    if target and target not in TARGETS:
        raise RuntimeError(f"UCCL_EP_WHEEL_TARGET={target!r}: expected one of {', '.join(TARGETS)}")
    if target == "cpu":
        return "cpu", ["-DUCCL_EP_CUDA=OFF"]
    if target == "rocm":
        hipcc = find_hipcc()
        if hipcc is None:
            raise RuntimeError("UCCL_EP_WHEEL_TARGET=rocm: no hipcc found in HIPCC, on PATH or in /opt/rocm/bin")
        return "rocm", ["-DUCCL_EP_GPU=hip", f"-DHIPCC_EXECUTABLE={hipcc}",
                        f"-DUCCL_EP_HIP_ARCH={';'.join(rocm_archs())}"]
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("uccl-ep: no CUDA compiler (nvcc) found in CUDACXX, on PATH, in $CUDA_HOME/bin or "
                           "/usr/local/cuda/bin. A package without it has no Buffer; to build one anyway, ask for it "
                           "by name: UCCL_EP_WHEEL_TARGET=cpu")
    release = nvcc_release(nvcc)
    found = f"cu{release[0]}"
    if target and target != found:
        raise RuntimeError(f"UCCL_EP_WHEEL_TARGET={target} but {nvcc} is CUDA {found[2:]}: point CUDACXX at a "
                           f"CUDA {target[2:]} nvcc")
    if found not in TARGETS:
        raise RuntimeError(f"uccl-ep: {nvcc} is CUDA {found[2:]}; wheels are built for CUDA 12 and 13")
    return found, ["-DUCCL_EP_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}",
                   f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(cuda_archs(release))}"]


TARGET, TARGET_CMAKE_ARGS = wheel_target()


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        build_dir = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        configure = [
            "cmake", "-S", REPO, "-B", build_dir,
            "-DCMAKE_BUILD_TYPE=Release",
            "-DUCCL_EP_BUILD_TESTS=OFF",
            "-DUCCL_EP_BUILD_BENCH=OFF",
            "-DUCCL_EP_BUILD_PYTHON=ON",
            f"-DUCCL_EP_PYTHON_EXECUTABLE={sys.executable}",
            f"-DPython_EXECUTABLE={sys.executable}",
        ] + TARGET_CMAKE_ARGS
        spdlog_dir = os.environ.get("UCCL_EP_SPDLOG_INCLUDE_DIR", "")
        if spdlog_dir:
            configure += ["-DUCCL_EP_SPDLOG_HEADER_ONLY=ON", f"-DUCCL_EP_SPDLOG_INCLUDE_DIR={spdlog_dir}"]
        configure += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.check_call(configure)
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "uccl_ep_python", "-j", jobs])

        built = sorted(glob.glob(os.path.join(build_dir, "src", "python", "_C*.so")))
        if not built:
            raise RuntimeError(f"CMake built no _C*.so under {build_dir}/src/python")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built[0], target)


class ShowTarget(Command):
    """`python3 setup.py show_target`: the target and the CMake arguments it adds, without building."""

    description = "print the build target and its CMake arguments"
    user_options = []

    def initialize_options(self):
        pass

    def finalize_options(self):
        pass

    def run(self):
        print(f"target {TARGET}")
        print("cmake " + " ".join(TARGET_CMAKE_ARGS))


setup(
    version=f"{BASE_VERSION}+{TARGET}",
    package_dir={"": "python"},
    packages=["uccl.ep"],
    ext_modules=[CMakeExtension("uccl.ep._C")],
    cmdclass={"build_ext": CMakeBuild, "show_target": ShowTarget},
    zip_safe=False,
)
