#!/usr/bin/env bash
# The test command: installs what is missing, builds the release configuration (CUDA kernels too
# when nvcc is found) with every core, and runs every test: the C++ tests, then the Python
# package's (tools/test_python.sh: pip install . into a virtual environment, then pytest). See
# tools/common.sh and tools/test_python.sh for the settings; FLASHATTN_PYTHON_TESTS=0 skips the
# Python part.
set -euo pipefail
# shellcheck source=tools/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

flashattn_install_deps
flashattn_configure_release
cmake --build "$FLASHATTN_BUILD" -j "$FLASHATTN_JOBS"

echo "==> C++ tests"
ctest --test-dir "$FLASHATTN_BUILD" --output-on-failure -j "$FLASHATTN_JOBS"

if [[ "${FLASHATTN_PYTHON_TESTS:-1}" != 0 ]]; then
  bash "$FLASHATTN_ROOT/tools/test_python.sh"
fi
