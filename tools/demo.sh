#!/usr/bin/env bash
# Builds and runs the attention demo; arguments go to the demo (try --help).
#   bash tools/demo.sh --seqlen 8192 --causal --backward
set -euo pipefail
# shellcheck source=tools/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

flashattn_install_deps
flashattn_configure_release
cmake --build "$FLASHATTN_BUILD" --target attention_demo -j "$FLASHATTN_JOBS"
echo
exec "$FLASHATTN_BUILD/examples/attention_demo" "$@"
