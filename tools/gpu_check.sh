#!/usr/bin/env bash
# The GPU check, run on a machine with a CUDA GPU (the device tool runs it from the repo root):
# builds with all cores, runs every test (GPU and CPU), compute-sanitizer (memcheck, racecheck,
# synccheck) on a small case of each kernel variant, and the forward and backward benchmarks
# against PyTorch SDPA's backends in one process; `python` installs the Python package with the
# system python3 (pip install ., CUDA kernels for sm_90a) and runs its tests on CUDA tensors, the
# transformers example on the GPU and the call-overhead benchmark. Logs and JSON go to $OUT
# (default build/gpu-out); the short table is printed last.
#
# usage: tools/gpu_check.sh [all|test|sanitize|demo|bench|quick-bench|bench-bwd|quick-bench-bwd|python]...
#        (default: all; bench runs both benchmarks in full)
# FLASHATTN_GPU_BINS=dir: use the binaries tools/gpu_prebuild.sh built elsewhere instead of
# building here (saves the device's time; the CPU tests are then left to CI).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-out}
mkdir -p "$OUT"
BUILD=build/gpu
JOBS=$(nproc)
BINS=${FLASHATTN_GPU_BINS:-}
if [[ -n $BINS ]]; then
  TEST_FWD=$BINS/test_forward_gpu TEST_BWD=$BINS/test_backward_gpu
  LIB=$BINS/libflashattn_c.so DEMO=$BINS/attention_demo
else
  TEST_FWD=$BUILD/tests/gpu/test_forward_gpu TEST_BWD=$BUILD/tests/gpu/test_backward_gpu
  LIB=$BUILD/libflashattn_c.so DEMO=$BUILD/examples/attention_demo
fi
test_bin() { [[ $1 == forward ]] && echo "$TEST_FWD" || echo "$TEST_BWD"; }
steps=("${@:-all}")
want() { for s in "${steps[@]}"; do [[ $s == all || $s == "$1" ]] && return 0; done; return 1; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
# .commit: written before a copy of the tree is sent to a GPU machine (the copy's .git may lag).
commit=$(cat .commit 2>/dev/null || git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
echo "commit $commit" | tee -a "$OUT/device.txt"

# GoogleTest: the system's, or one built from a source tree carried in .gtest/ (the device
# image has none and no network).
if [[ -z $BINS && -d .gtest ]] && ! ls /usr/lib/x86_64-linux-gnu/cmake/GTest >/dev/null 2>&1; then
  cmake -S .gtest -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF \
    -DCMAKE_INSTALL_PREFIX=/tmp/gtest >/dev/null
  cmake --build /tmp/gtest-build -j "$JOBS" >/dev/null && cmake --install /tmp/gtest-build >/dev/null
  export CMAKE_PREFIX_PATH=/tmp/gtest${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
fi

# The CMake build serves every step but `python` (pip builds the package on its own).
if [[ -z $BINS ]] && { want test || want sanitize || want demo || want bench || want quick-bench ||
  want bench-bwd || want quick-bench-bwd; }; then
  start=$(date +%s)
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DFLASHATTN_CUDA=ON -DFLASHATTN_BUILD_EXAMPLES=ON >"$OUT/configure.log"
  cmake --build "$BUILD" -j "$JOBS" 2>&1 | tail -3
  echo "build: $(( $(date +%s) - start )) s on $JOBS cores"
fi

summary=()
if want test; then
  set +e
  if [[ -z $BINS ]]; then
    ctest --test-dir "$BUILD" -L gpu -j 4 --output-on-failure >"$OUT/gpu_tests.log" 2>&1
    rc_gpu=$?
    ctest --test-dir "$BUILD" -LE gpu -j "$JOBS" >"$OUT/cpu_tests.log" 2>&1
    rc_cpu=$?
  else
    # Prebuilt: the two GPU test binaries straight (ctest's files name the other machine's
    # paths); a summary line in ctest's words for the table below.
    rc_gpu=0
    for kind in forward backward; do
      "$(test_bin $kind)" --gtest_brief=1 >"$OUT/gpu_tests_${kind}.log" 2>&1 || rc_gpu=$?
    done
    passed=$(cat "$OUT"/gpu_tests_{forward,backward}.log | sed -nE 's/^\[  PASSED  \] ([0-9]+) tests?\./\1/p' | awk '{ s += $1 } END { print s + 0 }')
    failed=$(cat "$OUT"/gpu_tests_{forward,backward}.log | grep -cE '^\[  FAILED  \] [A-Za-z]' || true)
    echo "gpu test binaries: ${passed:-0} tests passed, $failed tests failed" >"$OUT/gpu_tests.log"
    grep -hE '^\[  FAILED  \] [A-Za-z]' "$OUT"/gpu_tests_{forward,backward}.log >>"$OUT/gpu_tests.log" || true
    echo "0 tests passed (prebuilt binaries: the CPU tests run in CI)" >"$OUT/cpu_tests.log"
    rc_cpu=0
  fi
  # On a Hopper GPU the run above took the sm90 kernels where they have a tile; the sm80 kernels
  # serve every other GPU, so their tests run here too.
  rc_sm80=0
  for kind in forward backward; do
    FLASHATTN_DISABLE_SM90=1 "$(test_bin $kind)" --gtest_brief=1 \
      >"$OUT/gpu_tests_sm80_${kind}.log" 2>&1 || rc_sm80=$?
  done
  set -e
  summary+=("gpu tests: $(grep -E 'tests passed|tests failed' "$OUT/gpu_tests.log" | tail -1) (rc $rc_gpu)")
  summary+=("gpu tests, sm80 kernels forced: forward $(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/gpu_tests_sm80_forward.log" | tr '\n' ' ')backward $(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/gpu_tests_sm80_backward.log" | tr '\n' ' ')(rc $rc_sm80)")
  summary+=("cpu tests: $(grep -E 'tests passed|tests failed' "$OUT/cpu_tests.log" | tail -1) (rc $rc_cpu)")
  grep -E "^\s+[0-9]+ - .*(Failed|Exception)" "$OUT/gpu_tests.log" | head -20 || true
fi

if want sanitize; then
  # Forward: every compiled head dim (plain variant) and the score-mods variant (softcap, ALiBi,
  # dropout, window). Backward: every compiled head dim, the score-mods variant, fully masked
  # rows and deterministic cases (on Hopper the turn-taking dQ of the sm90 kernel: plain, window,
  # varlen with a window, GQA causal; elsewhere the sm80 dQ kernel). fp16 and bf16.
  # The HopperHeadDims grids (bf16) put the sm90 kernel through every option, varlen batch and
  # layout on a Hopper GPU.
  fwd_filter='AllHeadDims/*d*:Options/*softcap*:Options/*alibi*:Options/*dropout*:Options/*window*:Long/*:HopperHeadDims/*bf16*'
  bwd_filter='HeadDims/*:Options/*softcap*:Options/*alibi*:Options/*dropout*:Options/*window*:Masked/*:Det/*_d64_det:Det/*detwindow_bf16*:Det/*detvarlenwindow_bf16*:Det/*detgqacausal_bf16*:HopperHeadDims/*bf16*'
  bwd_race_hopper='HopperHeadDims/*hopper_causal_bf16*:HopperHeadDims/*hopper_causalgqa_bf16*:HopperHeadDims/*hopper_layout_bf16*headmajor'
  for tool in memcheck racecheck synccheck; do
    for kind in forward backward; do
      filter=$fwd_filter; [[ $kind == backward ]] && filter=$bwd_filter
      # racecheck is slow on the Hopper backward (over a minute for 43 d = 256 cases): a dozen,
      # causal, varlen GQA and head-major, over the three head dims. At 81e9244 every tool is
      # clean on both filters (docs/performance_backward.md).
      if [[ $kind == backward && $tool == racecheck ]]; then
        filter=${filter/HopperHeadDims\/\*bf16\*/$bwd_race_hopper}
      fi
      set +e
      compute-sanitizer --tool "$tool" --error-exitcode 9 \
        "$(test_bin $kind)" --gtest_filter="$filter" --gtest_brief=1 \
        >"$OUT/sanitizer_${tool}_${kind}.log" 2>&1
      rc=$?
      set -e
      summary+=("compute-sanitizer $tool ($kind): rc $rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_${tool}_${kind}.log" | tail -1), $(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/sanitizer_${tool}_${kind}.log" | head -1 || true)")
    done
  done
fi

if want demo; then
  "$DEMO" --seqlen 4096 --iters 5 | tee "$OUT/demo.log"
  summary+=("demo (GPU, bf16, 1×16×4096×128): $(grep -E '^forward:' "$OUT/demo.log"), $(grep -E '^result:' "$OUT/demo.log")")
fi

if want bench || want quick-bench; then
  quick=(); want bench || quick=(--quick)
  python3 bench/bench_fwd.py --lib "$LIB" --json "$OUT/bench_fwd.json" \
    --commit "$commit" "${quick[@]}" 2>&1 | tee "$OUT/bench_fwd.log" | tail -80
fi

if want bench || want bench-bwd || want quick-bench-bwd; then
  quick=(); want bench || want bench-bwd || quick=(--quick)
  python3 bench/bench_bwd.py --lib "$LIB" --json "$OUT/bench_bwd.json" \
    --commit "$commit" "${quick[@]}" 2>&1 | tee "$OUT/bench_bwd.log" | tail -80
fi

if want python; then
  # The device image has torch, nanobind, scikit-build-core and transformers, and no network: no
  # build isolation, no dependencies fetched, the system python3 (no venv).
  out_abs=$(cd "$OUT" && pwd)
  start=$(date +%s)
  # --config-settings, not -C: pip before 23.1 knows only the long form.
  pip_args=(--no-build-isolation --no-deps -v --config-settings=cmake.define.FLASHATTN_CUDA=ON
            --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90a .)
  set +e
  CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install "${pip_args[@]}" >"$OUT/python_install.log" 2>&1
  rc=$?
  if ((rc != 0)) && grep -q externally-managed-environment "$OUT/python_install.log"; then
    CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install --break-system-packages "${pip_args[@]}" \
      >>"$OUT/python_install.log" 2>&1
    rc=$?
  fi
  summary+=("python: pip install . (sm_90a) rc $rc in $(( $(date +%s) - start )) s")
  # pytest, if the image lacks it, from wheels carried in .whl/ (pip download pytest -d .whl).
  if ! python3 -c 'import pytest' 2>/dev/null; then
    if [[ -d .whl ]]; then
      python3 -m pip install --no-index --find-links .whl pytest >>"$OUT/python_install.log" 2>&1 ||
        python3 -m pip install --break-system-packages --no-index --find-links .whl pytest \
          >>"$OUT/python_install.log" 2>&1
    else
      summary+=("python: no pytest on this machine; carry .whl/ (pip download pytest -d .whl)")
    fi
  fi
  # From tests/python, so that the installed package is imported and not python/flashattn.
  (cd tests/python && python3 -m pytest -q -p no:cacheprovider -rs \
    --junitxml="$out_abs/python_tests.xml" .) >"$OUT/python_tests.log" 2>&1
  rc=$?
  summary+=("python tests: $(grep -E '^[0-9]+ (passed|failed)' "$OUT/python_tests.log" | tail -1) (rc $rc)")
  grep -E "^(FAILED|ERROR) " "$OUT/python_tests.log" | head -20
  python3 examples/hf_llama.py --device cuda >"$OUT/hf_llama.log" 2>&1
  rc=$?
  summary+=("transformers example (GPU, bf16): rc $rc; $(grep -E '^(prefill|decode)' "$OUT/hf_llama.log" | tr -s ' ' | paste -sd ';')")
  python3 bench/python_overhead.py --device cuda --out "$OUT/python_overhead.json" \
    >"$OUT/python_overhead.log" 2>&1
  rc=$?
  overhead=$(python3 - "$OUT/python_overhead.json" 2>/dev/null <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results_us"]
print(", ".join(f"{k} {v['throughput_us']:.1f} ({v['latency_us']:.1f} synced)" for k, v in r.items()))
PY
)
  summary+=("python call overhead, µs per call (1×16×1×64 bf16): rc $rc; $overhead")
  set -e
fi

printf '%s\n' "${summary[@]}"
