#!/usr/bin/env bash
# Installs every build and test dependency of uccl-ep from distro packages (Debian 12, Ubuntu 22.04/24.04).
# Safe to run again: packages already present are left alone, and apt is touched only when something is
# missing. Reports a CUDA toolkit or ROCm install when it finds one; never installs either.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./install_deps.sh [-h]

Installs the build and test dependencies of uccl-ep with apt-get (as root, or through sudo).
CUDA and ROCm are detected and reported, never installed.
EOF
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) echo "install_deps.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
esac

log() { printf '[install_deps] %s\n' "$*"; }
die() { printf '[install_deps] error: %s\n' "$*" >&2; exit 1; }

# ---- privileges -------------------------------------------------------------------------------------------
if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  die "not root and sudo is not installed; run as root"
fi
apt_get() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@"; }

# ---- distribution -----------------------------------------------------------------------------------------
[[ -r /etc/os-release ]] || die "/etc/os-release not found; supported: Debian 12, Ubuntu 22.04, Ubuntu 24.04"
# shellcheck disable=SC1091
. /etc/os-release
DISTRO="${ID:-unknown} ${VERSION_ID:-}"
case "${ID:-}:${VERSION_ID:-}" in
  debian:12 | ubuntu:22.04 | ubuntu:24.04) ;;
  *)
    command -v apt-get >/dev/null 2>&1 || die "unsupported distribution '${DISTRO}' (needs apt-get)"
    log "warning: '${DISTRO}' is not one of Debian 12, Ubuntu 22.04, Ubuntu 24.04; trying anyway"
    ;;
esac

# ---- package lists ----------------------------------------------------------------------------------------
REQUIRED=(
  # build
  build-essential cmake ninja-build pkg-config git
  # transports
  rdma-core libibverbs-dev libfabric-dev libfabric-bin
  # libraries
  libspdlog-dev libfmt-dev libnuma-dev pybind11-dev python3-pybind11
  # the C++ benches: options (CLI11) and --json results (nlohmann/json), both header-only
  libcli11-dev nlohmann-json3-dev
  # the Python package (uccl.ep._C through setup.py / CMake; pip install --no-build-isolation uses these)
  python3-dev python3-setuptools python3-pip python3-wheel
  # the wheel check in CI: a fresh virtual environment, readelf of the module
  python3-venv binutils
  # tests (python3-torch: the CPU build of torch that tests/python runs on)
  googletest libgtest-dev libgmock-dev iproute2 python3 python3-pytest python3-numpy python3-torch
  # scripts/plot_results.py (bench figures against the rank count, PNG)
  python3-matplotlib
)
# Installed where the distribution carries them, skipped with a message elsewhere.
# hipcc + libamdhip64-dev drive the HIP compile check (Debian 12 ships hipcc 5.2.3).
OPTIONAL=(ibverbs-utils hipcc libamdhip64-dev)

is_installed() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed; }
is_available() {
  local candidate
  candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
  [[ -n "${candidate}" && "${candidate}" != "(none)" ]]
}

missing=()
for p in "${REQUIRED[@]}" "${OPTIONAL[@]}"; do
  is_installed "$p" || missing+=("$p")
done

installed_now=()
skipped=()
if [[ ${#missing[@]} -eq 0 ]]; then
  log "all $((${#REQUIRED[@]} + ${#OPTIONAL[@]})) packages already installed; apt not touched"
else
  log "missing: ${missing[*]}"
  # Update the package lists once, unless only optional packages are missing and the present lists
  # already say none of them exists here (a second run on Ubuntu 22.04, which has no hipcc).
  need_update=0
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || need_update=1
  for p in "${missing[@]}"; do
    if [[ " ${OPTIONAL[*]} " != *" $p "* ]] || is_available "$p"; then need_update=1; fi
  done
  if [[ ${need_update} -eq 1 ]]; then
    log "apt-get update"
    apt_get update
  fi
  to_install=()
  for p in "${missing[@]}"; do
    if [[ " ${OPTIONAL[*]} " == *" $p "* ]] && ! is_available "$p"; then
      skipped+=("$p")
      log "optional package '$p' is not available on ${DISTRO}; skipping"
    else
      to_install+=("$p")
    fi
  done
  if [[ ${#to_install[@]} -gt 0 ]]; then
    log "apt-get install ${to_install[*]}"
    apt_get install --no-install-recommends "${to_install[@]}"
    installed_now=("${to_install[@]}")
  fi
fi

# Every required package must be present now; a failed install above already stopped the script.
for p in "${REQUIRED[@]}"; do
  is_installed "$p" || die "package '$p' is still not installed"
done

# ---- toolchains that are detected, never installed --------------------------------------------------------
NVCC=""
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  NVCC=/usr/local/cuda/bin/nvcc
elif command -v nvcc >/dev/null 2>&1; then
  NVCC=$(command -v nvcc)
fi
if [[ -n "${NVCC}" ]]; then
  cuda="${NVCC} ($("${NVCC}" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/CUDA \1/p' | head -n1))"
else
  cuda="not found (CUDA targets are skipped; install a CUDA toolkit to build them)"
fi
if [[ -d /opt/rocm ]]; then
  rocm="/opt/rocm ($(cat /opt/rocm/.info/version 2>/dev/null || echo 'version unknown'))"
else
  rocm="not found"
fi
if command -v hipcc >/dev/null 2>&1; then
  hip="$(command -v hipcc) (HIP compile check on)"
else
  hip="not found (HIP compile check off)"
fi
# Python tests run on the distribution's interpreter, which owns python3-pytest, python3-numpy and python3-torch.
if /usr/bin/python3 -c 'import pytest, numpy, torch' >/dev/null 2>&1; then
  py="/usr/bin/python3 $(/usr/bin/python3 -c 'import platform; print(platform.python_version())'), pytest, numpy and torch import"
else
  py="/usr/bin/python3 cannot import pytest, numpy and torch"
fi

# ---- summary ----------------------------------------------------------------------------------------------
echo
echo "uccl-ep dependencies on ${PRETTY_NAME:-${DISTRO}}"
printf '  %-16s %s\n' "installed now:" "${installed_now[*]:-nothing (already present)}"
printf '  %-16s %s\n' "not available:" "${skipped[*]:-none}"
printf '  %-16s %s\n' "CUDA:" "${cuda}"
printf '  %-16s %s\n' "ROCm:" "${rocm}"
printf '  %-16s %s\n' "hipcc:" "${hip}"
printf '  %-16s %s\n' "python:" "${py}"
