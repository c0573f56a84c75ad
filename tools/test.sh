#!/usr/bin/env bash
# The test command: installs what is missing, builds the release configuration (CUDA kernels too
# when nvcc is found) with every core, and runs every test. See tools/common.sh for the settings.
set -euo pipefail
# shellcheck source=tools/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

flashattn_install_deps
flashattn_configure_release
cmake --build "$FLASHATTN_BUILD" -j "$FLASHATTN_JOBS"

echo "==> C++ tests"
ctest --test-dir "$FLASHATTN_BUILD" --output-on-failure -j "$FLASHATTN_JOBS"
