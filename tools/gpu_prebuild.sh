#!/usr/bin/env bash
# Builds the GPU check's binaries on this (GPU-less) machine, so that device time goes to running
# them rather than compiling: the GPU tests, the C ABI library the benchmarks load and the demo,
# for sm_90a, into build/gpu-bins/, and the commit into .commit (with "+dirty" for uncommitted
# changes). Binaries built here run on the device image (same CUDA major version, glibc 2.39).
#
#   bash tools/gpu_prebuild.sh
#   then, on the device, carrying build/gpu-bins and .commit:
#   FLASHATTN_GPU_BINS=build/gpu-bins bash tools/gpu_check.sh test sanitize quick-bench-bwd
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/common.sh
source tools/common.sh
BUILD=build/gpu
DEST=build/gpu-bins
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DFLASHATTN_CUDA=ON -DFLASHATTN_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$BUILD" -j "$FLASHATTN_JOBS" \
  --target test_forward_gpu test_backward_gpu flashattn_c attention_demo
mkdir -p "$DEST"
cp "$BUILD/tests/gpu/test_forward_gpu" "$BUILD/tests/gpu/test_backward_gpu" \
  "$BUILD/libflashattn_c.so" "$BUILD/examples/attention_demo" "$DEST/"
dirty=""
git diff --quiet HEAD -- . ':!.commit' 2>/dev/null || dirty="+dirty"
echo "$(git rev-parse HEAD)$dirty" >.commit
echo "gpu_prebuild: $(du -sh "$DEST" | cut -f1) in $DEST, commit $(cat .commit)"
