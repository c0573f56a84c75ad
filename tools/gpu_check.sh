#!/usr/bin/env bash
# The GPU check, run on a machine with a CUDA GPU (the device tool runs it from the repo root):
# builds with all cores, runs every test (GPU and CPU), compute-sanitizer (memcheck, racecheck,
# synccheck) on a small case of each kernel variant, and the forward and backward benchmarks
# against PyTorch SDPA's backends in one process. Logs and JSON go to $OUT (default build/gpu-out); the short
# table is printed last.
#
# usage: tools/gpu_check.sh [all|test|sanitize|demo|bench|quick-bench|bench-bwd|quick-bench-bwd]...
#        (default: all; bench runs both benchmarks in full)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-out}
mkdir -p "$OUT"
BUILD=build/gpu
JOBS=$(nproc)
steps=("${@:-all}")
want() { for s in "${steps[@]}"; do [[ $s == all || $s == "$1" ]] && return 0; done; return 1; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
commit=$(git rev-parse --verify -q HEAD 2>/dev/null || cat .commit 2>/dev/null || echo unknown)
echo "commit $commit" | tee -a "$OUT/device.txt"

# GoogleTest: the system's, or one built from a source tree carried in .gtest/ (the device
# image has none and no network).
if [[ -d .gtest ]] && ! ls /usr/lib/x86_64-linux-gnu/cmake/GTest >/dev/null 2>&1; then
  cmake -S .gtest -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF \
    -DCMAKE_INSTALL_PREFIX=/tmp/gtest >/dev/null
  cmake --build /tmp/gtest-build -j "$JOBS" >/dev/null && cmake --install /tmp/gtest-build >/dev/null
  export CMAKE_PREFIX_PATH=/tmp/gtest${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
fi

start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DFLASHATTN_CUDA=ON -DFLASHATTN_BUILD_EXAMPLES=ON >"$OUT/configure.log"
cmake --build "$BUILD" -j "$JOBS" 2>&1 | tail -3
echo "build: $(( $(date +%s) - start )) s on $JOBS cores"

summary=()
if want test; then
  set +e
  ctest --test-dir "$BUILD" -L gpu -j 4 --output-on-failure >"$OUT/gpu_tests.log" 2>&1
  rc_gpu=$?
  ctest --test-dir "$BUILD" -LE gpu -j "$JOBS" >"$OUT/cpu_tests.log" 2>&1
  rc_cpu=$?
  set -e
  summary+=("gpu tests: $(grep -E 'tests passed|tests failed' "$OUT/gpu_tests.log" | tail -1) (rc $rc_gpu)")
  summary+=("cpu tests: $(grep -E 'tests passed|tests failed' "$OUT/cpu_tests.log" | tail -1) (rc $rc_cpu)")
  grep -E "^\s+[0-9]+ - .*(Failed|Exception)" "$OUT/gpu_tests.log" | head -20 || true
fi

if want sanitize; then
  # Every compiled head dim (plain variant) and the score-mods variant (softcap, ALiBi, dropout,
  # window), fp16 and bf16.
  filter='AllHeadDims/*d*:Options/*softcap*:Options/*alibi*:Options/*dropout*:Options/*window*:Long/*'
  for tool in memcheck racecheck synccheck; do
    set +e
    compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "$BUILD/tests/gpu/test_forward_gpu" --gtest_filter="$filter" --gtest_brief=1 \
      >"$OUT/sanitizer_$tool.log" 2>&1
    rc=$?
    set -e
    summary+=("compute-sanitizer $tool: rc $rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.log" | tail -1)")
  done
fi

if want demo; then
  "$BUILD/examples/attention_demo" --seqlen 4096 --iters 5 | tee "$OUT/demo.log"
  summary+=("demo (GPU, bf16, 1×16×4096×128): $(grep -E '^forward:' "$OUT/demo.log"), $(grep -E '^result:' "$OUT/demo.log")")
fi

if want bench || want quick-bench; then
  quick=(); want bench || quick=(--quick)
  python3 bench/bench_fwd.py --lib "$BUILD/libflashattn_c.so" --json "$OUT/bench_fwd.json" \
    --commit "$commit" "${quick[@]}" 2>&1 | tee "$OUT/bench_fwd.log" | tail -80
fi

if want bench || want bench-bwd || want quick-bench-bwd; then
  quick=(); want bench || want bench-bwd || quick=(--quick)
  python3 bench/bench_bwd.py --lib "$BUILD/libflashattn_c.so" --json "$OUT/bench_bwd.json" \
    --commit "$commit" "${quick[@]}" 2>&1 | tee "$OUT/bench_bwd.log" | tail -80
fi

printf '%s\n' "${summary[@]}"
