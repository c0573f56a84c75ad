#!/usr/bin/env bash
# Builds the GPU check's binaries on this (GPU-less) machine, so that device time goes to running
# them rather than compiling: the GPU tests, the demo and the Python wheel, for sm_90a, into
# build/gpu-bins/, and the commit into .commit (with "+dirty" for uncommitted changes). Binaries
# built here run on the device image (same CUDA major version, glibc 2.39); the wheel is built by
# $FLASHATTN_PYTHON (default python3), which must be the device's minor version (3.12). The same
# files also go into build/carry/gpu-bins.tgz: about 36 MB, where the folder's 68 MB is more than
# a device call carries (64 MiB).
#
#   bash tools/gpu_prebuild.sh
#   then, on the device, carrying build/carry and .commit:
#   FLASHATTN_GPU_BINS=build/carry/gpu-bins.tgz bash tools/gpu_check.sh test sanitize quick-bench
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/common.sh
source tools/common.sh
BUILD=build/gpu
DEST=build/gpu-bins
generator=()
# (A build directory keeps the generator it was configured with.)
[[ ! -f $BUILD/CMakeCache.txt ]] && command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DFLASHATTN_CUDA=ON -DFLASHATTN_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$BUILD" -j "$FLASHATTN_JOBS" \
  --target test_forward_gpu test_backward_gpu attention_demo
mkdir -p "$DEST"
cp "$BUILD/tests/gpu/test_forward_gpu" "$BUILD/tests/gpu/test_backward_gpu" \
  "$BUILD/examples/attention_demo" "$DEST/"
rm -f "$DEST"/flashattn-*.whl
FLASHATTN_CUDA=ON FLASHATTN_CUDA_ARCHS=90a CMAKE_BUILD_PARALLEL_LEVEL=$FLASHATTN_JOBS \
  "${FLASHATTN_PYTHON:-python3}" -m pip wheel --no-build-isolation --no-deps -w "$DEST" . >/dev/null
mkdir -p build/carry
tar -C "$(dirname "$DEST")" -czf build/carry/gpu-bins.tgz "$(basename "$DEST")"
dirty=""
git diff --quiet HEAD -- . ':!.commit' 2>/dev/null || dirty="+dirty"
echo "$(git rev-parse HEAD)$dirty" >.commit
echo "gpu_prebuild: $(du -sh "$DEST" | cut -f1) in $DEST ($(du -sh build/carry/gpu-bins.tgz | cut -f1) in build/carry/gpu-bins.tgz), commit $(cat .commit)"
