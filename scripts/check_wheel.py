#!/usr/bin/env python3
"""Checks a built uccl-ep wheel: its file name's tags, what it installs, and what its native module links.

    python3 scripts/check_wheel.py dist/uccl_ep-0.1.0+cu13-cp311-cp311-linux_x86_64.whl

- tags: the version ends in +<target> (cu12, cu13, rocm, cpu), the Python and ABI tags name one CPython
  (cpXY-cpXY), the platform tag is manylinux_* or linux_<arch>;
- contents: uccl/ep/ with one _C module, no uccl/__init__.py (uccl is a namespace package), no deep_ep/ (the
  alias is its own distribution);
- `readelf -d` of the module: no NEEDED entry for torch, the CUDA driver, spdlog, fmt, libfabric, libibverbs,
  libefa or libpython (they are header-only, opened at run time, or never used).
Exit status 0 when every check passes; each failure is printed.
"""
import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from typing import List

FORBIDDEN_NEEDED = ("libtorch", "libc10", "libcuda.so", "libspdlog", "libfmt", "libfabric", "libibverbs", "libefa",
                    "libpython")
NAME = re.compile(r"^uccl_ep-(?P<version>[^-]+)-(?P<py>cp3\d+)-(?P<abi>cp3\d+)-(?P<plat>[A-Za-z0-9_.]+)\.whl$")


def needed_of(path: str) -> List[str]:
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def check(wheel: str) -> List[str]:
    problems = []
    base = wheel.rsplit("/", 1)[-1]
    m = NAME.match(base)
    if not m:
        return [f"{base}: not a uccl_ep-<version>-cpXY-cpXY-<platform>.whl name"]
    if not re.search(r"\+(cu12|cu13|rocm|cpu)$", m["version"]):
        problems.append(f"version {m['version']} does not end in +cu12, +cu13, +rocm or +cpu")
    if m["py"] != m["abi"]:
        problems.append(f"python tag {m['py']} and ABI tag {m['abi']} differ")
    if not re.match(r"^(manylinux_\d+_\d+_|linux_)(x86_64|aarch64)$", m["plat"].split(".")[0]):
        problems.append(f"platform tag {m['plat']} is neither manylinux_*_<arch> nor linux_<arch>")
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        names = z.namelist()
        modules = [n for n in names if re.match(r"^uccl/ep/_C[^/]*\.so$", n)]
        if len(modules) != 1:
            problems.append(f"expected one uccl/ep/_C*.so, found {modules}")
        if "uccl/__init__.py" in names:
            problems.append("ships uccl/__init__.py: uccl must stay a namespace package")
        if any(n.startswith("deep_ep/") for n in names):
            problems.append("ships deep_ep/: the alias is its own distribution (packaging/deep_ep)")
        if "uccl/ep/__init__.py" not in names:
            problems.append("has no uccl/ep/__init__.py")
        for mod in modules:
            needed = needed_of(z.extract(mod, tmp))
            bad = [n for n in needed if n.startswith(FORBIDDEN_NEEDED)]
            if bad:
                problems.append(f"{mod} links {bad} (NEEDED: {needed})")
            else:
                print(f"{base}: {mod} NEEDED {needed}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="check_wheel.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("wheels", nargs="+", metavar="WHEEL", help="uccl_ep-*.whl files to check")
    try:
        wheels = p.parse_args(sys.argv[1:] if argv is None else argv).wheels
    except SystemExit as e:  # --help (0) or a usage error (2): the status, not an exception, for callers of main
        return int(e.code or 0)
    status = 0
    for w in wheels:
        problems = check(w)
        for p in problems:
            print(f"check_wheel: {w}: {p}", file=sys.stderr)
        status |= 1 if problems else 0
        if not problems:
            print(f"check_wheel: {w}: ok")
    return status


if __name__ == "__main__":
    sys.exit(main())
