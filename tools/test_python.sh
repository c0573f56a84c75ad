#!/usr/bin/env bash
# The Python package's test command (tools/test.sh runs it after the C++ tests): installs what is
# missing into a virtual environment (torch, numpy, pytest, nanobind, scikit-build-core and
# transformers, from PyPI), builds and installs the package with `pip install .` (the library,
# its CUDA kernels too when nvcc is found, and the nanobind module), then runs pytest on
# tests/python. CUDA tests run where there is a GPU and are skipped elsewhere.
#
# Environment:
#   FLASHATTN_VENV        the virtual environment to use or create (default ~/.cache/flashattn/venv,
#                         kept between runs so that torch is downloaded once); an active virtualenv
#                         ($VIRTUAL_ENV) is used as it is
#   FLASHATTN_PYTHON      the interpreter that creates the environment (default python3)
#   FLASHATTN_CUDA        AUTO (default), ON or OFF: whether the CUDA kernels are compiled
#   FLASHATTN_CUDA_ARCHS  the CUDA architectures compiled (default 80;90a)
#   FLASHATTN_TRANSFORMERS=0  do not install transformers (its tests are then skipped)
#   FLASHATTN_PREBUILT_LIBRARY  a libflashattn.a built from this tree with the same options, for
#                         the module to link instead of compiling the kernels again (tools/test.sh
#                         passes its release build's; pyproject.toml)
# Arguments are passed to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# nvcc is often installed without being on PATH.
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "flashattn: no apt-get here; please install: $*" >&2
    return 1
  fi
  local sudo=()
  if ((EUID != 0)); then sudo=(sudo); fi
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  venv="$VIRTUAL_ENV"
else
  venv="${FLASHATTN_VENV:-$HOME/.cache/flashattn/venv}"
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "==> creating the virtual environment $venv"
    mkdir -p "$(dirname "$venv")"
    if ! "${FLASHATTN_PYTHON:-python3}" -m venv "$venv"; then
      apt_install python3-venv  # Debian/Ubuntu ship venv separately
      rm -rf "$venv"
      "${FLASHATTN_PYTHON:-python3}" -m venv "$venv"
    fi
  fi
fi
py="$venv/bin/python"

# The extension is compiled against the interpreter's headers.
if ! "$py" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  apt_install python3-dev
fi

# Only what is missing: torch is large (PyPI's Linux wheel is the CUDA build, about 3 GB with its
# nvidia-* libraries), so an environment that has it is not asked again.
missing=()
"$py" -c 'import torch' 2>/dev/null || missing+=("torch>=2.4")
"$py" -c 'import numpy' 2>/dev/null || missing+=(numpy)
"$py" -c 'import pytest' 2>/dev/null || missing+=(pytest)
"$py" -c 'import nanobind' 2>/dev/null || missing+=("nanobind>=2.2")
"$py" -c 'import scikit_build_core' 2>/dev/null || missing+=("scikit-build-core>=0.10")
if [[ "${FLASHATTN_TRANSFORMERS:-1}" != 0 ]]; then
  "$py" -c 'import transformers' 2>/dev/null || missing+=("transformers>=5")
fi
if ((${#missing[@]} > 0)); then
  echo "==> pip install ${missing[*]}"
  "$py" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
fi

# The build directory (build/python/<tag>) is kept, so a second run rebuilds only what changed.
# Ninja builds in parallel by itself; make needs the level.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
echo "==> pip install . (FLASHATTN_CUDA=${FLASHATTN_CUDA:-AUTO})"
"$py" -m pip install --quiet --disable-pip-version-check --no-build-isolation .

echo "==> Python tests"
# Run from tests/python so that the installed package is imported, not python/flashattn.
cd "$ROOT/tests/python"
"$py" -m pytest -q -rs -p no:cacheprovider "$@" .  # -rs: the reason of each skip, grouped
