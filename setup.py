"""Builds uccl.ep._C through the project's CMake and packages python/ (uccl, uccl.ep, deep_ep).

Environment:
  CMAKE_ARGS                   extra CMake configure arguments (split like a shell would)
  UCCL_EP_SPDLOG_INCLUDE_DIR   folder with spdlog/ and fmt/ headers, for machines without libspdlog/libfmt
                               (sets -DUCCL_EP_SPDLOG_HEADER_ONLY=ON)
  CMAKE_BUILD_PARALLEL_LEVEL   compile jobs (default: number of cores)
The module is built for the interpreter running this script (-DUCCL_EP_PYTHON_EXECUTABLE=sys.executable).
"""
import glob
import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REPO = os.path.dirname(os.path.abspath(__file__))


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
        ]
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


setup(
    package_dir={"": "python"},
    packages=["uccl", "uccl.ep", "deep_ep"],
    ext_modules=[CMakeExtension("uccl.ep._C")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
