# shellcheck shell=bash
# Shared by tools/test.sh, tools/demo.sh and .ci/run (sourced, not run): installs what a fresh
# Debian/Ubuntu machine lacks and configures the release build in build/release.
#
# Environment:
#   FLASHATTN_CUDA        AUTO (default: CUDA kernels when nvcc is found), ON or OFF
#   FLASHATTN_CUDA_ARCHS  the CUDA architectures compiled (default 80;90a)
#   FLASHATTN_HEAD_DIMS, FLASHATTN_DTYPES  the CUDA kernels compiled (e.g. 128 and bf16; default all)

FLASHATTN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLASHATTN_BUILD="$FLASHATTN_ROOT/build/release"
FLASHATTN_JOBS=$(nproc 2>/dev/null || echo 2)

# nvcc is often installed without being on PATH.
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# Installs with apt-get (after one apt-get update) only the packages that are missing.
flashattn_install_deps() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || missing+=(make)
  if command -v dpkg >/dev/null 2>&1; then
    dpkg -s libgtest-dev >/dev/null 2>&1 || missing+=(libgtest-dev)
  elif [[ ! -f /usr/include/gtest/gtest.h && ! -f /usr/local/include/gtest/gtest.h ]]; then
    missing+=(libgtest-dev)
  fi

  if ((${#missing[@]} > 0)); then
    echo "flashattn: installing ${missing[*]}"
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "flashattn: no apt-get here; please install: ${missing[*]}" >&2
      return 1
    fi
    local sudo=()
    if ((EUID != 0)); then sudo=(sudo); fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "${missing[@]}"
  fi

  local version
  version=$(cmake --version | sed -n 's/^cmake version \([0-9]*\.[0-9]*\).*/\1/p')
  if [[ "$(printf '%s\n' 3.25 "$version" | sort -V | head -n1)" != 3.25 ]]; then
    echo "flashattn: CMake >= 3.25 is needed, found $version" >&2
    return 1
  fi
}

flashattn_configure_release() {
  cmake --preset release -S "$FLASHATTN_ROOT" \
    -DFLASHATTN_CUDA="${FLASHATTN_CUDA:-AUTO}" \
    -DCMAKE_CUDA_ARCHITECTURES="${FLASHATTN_CUDA_ARCHS:-80;90a}" \
    -DFLASHATTN_HEAD_DIMS="${FLASHATTN_HEAD_DIMS:-}" -DFLASHATTN_DTYPES="${FLASHATTN_DTYPES:-}"
}
