#!/usr/bin/env bash
# A/B of two builds of the C ABI library on the backward benchmark, on the device: each build's
# rows twice, alternating (A B A B), in one call, so that clock and thermal drift show up as the
# spread between repeats rather than as a difference between builds. Ours only (no SDPA), rows
# picked with bench_bwd.py's subset options.
#
#   FLASHATTN_AB_ROUNDS=2 bash tools/ab_bwd.sh build/base-bins/libflashattn_c.so \
#       build/gpu-bins/libflashattn_c.so --head-dims 64 --seqlens 1024,4096,16384 --dtypes bfloat16
#   (carry both library folders; build A from the base commit with tools/gpu_prebuild.sh and copy
#   its libflashattn_c.so aside before building B)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 2 ]]; then
  echo "usage: tools/ab_bwd.sh LIB_A LIB_B [bench_bwd.py subset options]" >&2
  exit 2
fi
lib_a=$1 lib_b=$2
shift 2
for lib in "$lib_a" "$lib_b"; do
  [[ -f $lib ]] || { echo "ab_bwd: no library at $lib" >&2; exit 2; }
done
export PYTHONUNBUFFERED=1
for ((round = 1; round <= ${FLASHATTN_AB_ROUNDS:-2}; ++round)); do
  for side in A B; do
    lib=$lib_a; [[ $side == B ]] && lib=$lib_b
    echo "== round $round, $side ($lib)"
    python3 bench/bench_bwd.py --lib "$lib" --ours-only "$@" | grep -E '^(bfloat16|float16) '
  done
done
