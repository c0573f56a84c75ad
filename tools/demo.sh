#!/usr/bin/env bash
# Builds and runs the attention demo; arguments go to the demo (try --help).
#   bash tools/demo.sh --seqlen 8192 --causal --backward
# On a machine without a GPU (and FLASHATTN_CUDA unset) it builds without the CUDA kernels, in
# build/cpu (the cpu preset): a few seconds of compiling instead of minutes of kernels it could
# not run. FLASHATTN_CUDA=ON builds them anyway (in build/release).
set -euo pipefail
# shellcheck source=tools/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

flashattn_install_deps
if [[ -z ${FLASHATTN_CUDA:-} ]] && ! nvidia-smi -L >/dev/null 2>&1; then
  echo "demo: no GPU here: building the CPU implementation only (build/cpu)"
  build="$FLASHATTN_ROOT/build/cpu"
  cmake --preset cpu -S "$FLASHATTN_ROOT" >/dev/null
else
  build="$FLASHATTN_BUILD"
  flashattn_configure_release
fi
cmake --build "$build" --target attention_demo -j "$FLASHATTN_JOBS"
echo
exec "$build/examples/attention_demo" "$@"
