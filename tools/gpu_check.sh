#!/usr/bin/env bash
# The GPU check, run on a machine with a CUDA GPU (the device tool runs it from the repo root).
# Steps (default: all):
#   test      the C++ GPU tests (and the CPU tests when built here), then again with the sm80
#             kernels forced (FLASHATTN_DISABLE_SM90=1)
#   sanitize  compute-sanitizer (memcheck, racecheck, synccheck) on a small case of each kernel
#             variant (the decode kernel, paged caches and the combine too) and on the
#             backward's workspace paths
#   demo      the demo on the GPU, and its first use with the PTX compiled by the driver
#   python    the Python package's tests on CUDA tensors (tests/python) and the transformers
#             example on the GPU
#   overhead  bench/python_overhead.py: tiny forward and fwd+bwd against SDPA
#   profile   bench/host_profile.py: where the host time of a synchronised call goes
#   bench     bench/bench.py: the sweep and the option rows through the drop-in functions, beside
#             SDPA's FLASH and CUDNN backends (quick-bench: bf16, seqlen 512 and 4096)
#   decode    (asked for by name only) bench/bench.py's decode grid with CUDA-graph replays
# The Python steps install the package once: the wheel in $FLASHATTN_GPU_BINS when there is one,
# else `pip install .` here (kernels for sm_90a). Into $OUT (default build/gpu-out): summary.txt,
# a line per result as it comes; the JSON; the logs, packed into logs.tgz at the end. The short
# table is printed last. FLASHATTN_SANITIZE_TOOLS: the sanitize step's tools (default all three).
#
# FLASHATTN_GPU_BINS=dir or .tgz: use what tools/gpu_prebuild.sh built elsewhere (the C++ GPU
# tests, the demo, the wheel; the archive is unpacked into build/) instead of building here
# (saves the device's time; the CPU tests are then left to CI).
set -euo pipefail
cd "$(dirname "$0")/.."
# A TMA tensor map the driver refuses fails the call instead of falling back to the sm80 kernel
# (src/cuda/sm90/tensor_map.h): the tests see every call the sm90 forward does not serve.
export FLASHATTN_TEST_REQUIRE_TMA=1
OUT=${OUT:-build/gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUILD=build/gpu
JOBS=$(nproc)
BINS=${FLASHATTN_GPU_BINS:-}
if [[ $BINS == *.tgz ]]; then
  mkdir -p build && tar -C build -xzf "$BINS"
  BINS=build/$(tar -tzf "$BINS" | awk -F/ 'NR == 1 { print $1 }')
fi
if [[ -n $BINS ]]; then
  TEST_FWD=$BINS/test_forward_gpu TEST_BWD=$BINS/test_backward_gpu DEMO=$BINS/attention_demo
else
  TEST_FWD=$BUILD/tests/gpu/test_forward_gpu TEST_BWD=$BUILD/tests/gpu/test_backward_gpu
  DEMO=$BUILD/examples/attention_demo
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

# The CMake build serves the C++ steps (pip builds the package on its own).
if [[ -z $BINS ]] && { want test || want sanitize || want demo; }; then
  start=$(date +%s)
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DFLASHATTN_CUDA=ON -DFLASHATTN_BUILD_EXAMPLES=ON >"$OUT/configure.log"
  cmake --build "$BUILD" -j "$JOBS" 2>&1 | tail -3
  echo "build: $(( $(date +%s) - start )) s on $JOBS cores"
fi

summary=()
# Each result line as it comes (summary.txt: what a call cut short at its limit still returns),
# and all of them again last.
: >"$OUT/summary.txt"
record() {
  summary+=("$1")
  printf '%s\n' "$1" >>"$OUT/summary.txt"
}
if want test; then
  set +e
  # The two GPU test binaries straight, not through ctest (one process a test there: 290 s for
  # what the binaries run in 90 s each), natively; with the sm80 kernels forced (on a Hopper GPU
  # the first run took the sm90 kernels where they have a tile; the sm80 kernels serve every
  # other GPU); and so under the emulated shared memory of an A100 (166,912 bytes a block) and of
  # an sm_86/89/120 part (101,376), where the smaller tiles run and the calls the README says
  # those GPUs cannot make must be refused by name. All at once, their time mostly the CPU
  # references', each binary split into gtest shards (the backward into more: it took 210 s as one
  # process, the longest of the step), so that every core works; the shards' results are summed
  # into one log a binary. A summary line in ctest's words for the table below.
  variants=(native sm80 smem166912 smem101376)
  variant_env() {
    case $1 in
      native) echo "" ;;
      sm80) echo "FLASHATTN_DISABLE_SM90=1" ;;
      smem*) echo "FLASHATTN_DISABLE_SM90=1 FLASHATTN_TEST_SMEM_LIMIT=${1#smem}" ;;
    esac
  }
  variant_log() { [[ $1 == native ]] && echo "$OUT/gpu_tests_$2.log" || echo "$OUT/gpu_tests_$1_$2.log"; }
  shards_of() { [[ $1 == forward ]] && echo 2 || echo 4; }
  pids=() names=()
  for variant in "${variants[@]}"; do
    for kind in forward backward; do
      shards=$(shards_of $kind)
      for ((shard = 0; shard < shards; ++shard)); do
        # shellcheck disable=SC2046
        env $(variant_env "$variant") GTEST_TOTAL_SHARDS="$shards" GTEST_SHARD_INDEX="$shard" \
          "$(test_bin $kind)" --gtest_brief=1 >"$(variant_log "$variant" "$kind").shard$shard" 2>&1 &
        pids+=("$!")
        names+=("$variant")
      done
    done
  done
  declare -A rc_of=([native]=0 [sm80]=0 [smem166912]=0 [smem101376]=0)
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || rc_of[${names[$i]}]=1
  done
  # One log a binary, in gtest's words: the shards' passed tests summed, their failures listed; a
  # shard that ended without a summary (a crash, a hang cut short) is a failure too.
  merge_shards() {
    local log=$1 shard_log
    {
      sed -nE 's/^\[  PASSED  \] ([0-9]+) tests?\..*/\1/p' "$log".shard* |
        awk '{ s += $1 } END { printf "[  PASSED  ] %d tests.\n", s }'
      grep -hE '^\[  FAILED  \] [A-Za-z]' "$log".shard* || true
      for shard_log in "$log".shard*; do
        grep -qE '^\[  (PASSED|FAILED)  \]' "$shard_log" ||
          echo "[  FAILED  ] ${shard_log##*/}: no gtest summary (crashed or cut short)"
      done
    } >"$log"
    ! grep -qE '^\[  FAILED  \] ' "$log"
  }
  for variant in "${variants[@]}"; do
    for kind in forward backward; do
      merge_shards "$(variant_log "$variant" "$kind")" || rc_of[$variant]=1
    done
  done
  rc_gpu=${rc_of[native]}
  passed=$(cat "$OUT"/gpu_tests_{forward,backward}.log | sed -nE 's/^\[  PASSED  \] ([0-9]+) tests?\./\1/p' | awk '{ s += $1 } END { print s + 0 }')
  failed=$(cat "$OUT"/gpu_tests_{forward,backward}.log | grep -cE '^\[  FAILED  \] [A-Za-z]' || true)
  echo "gpu test binaries: ${passed:-0} tests passed, $failed tests failed" >"$OUT/gpu_tests.log"
  grep -hE '^\[  FAILED  \] [A-Za-z]' "$OUT"/gpu_tests_{forward,backward}.log >>"$OUT/gpu_tests.log" || true
  if [[ -z $BINS ]]; then
    ctest --test-dir "$BUILD" -LE gpu -j "$JOBS" >"$OUT/cpu_tests.log" 2>&1
    rc_cpu=$?
  else
    echo "0 tests passed (prebuilt binaries: the CPU tests run in CI)" >"$OUT/cpu_tests.log"
    rc_cpu=0
  fi
  set -e
  record "gpu tests: $(grep -E 'tests passed|tests failed' "$OUT/gpu_tests.log" | tail -1) (rc $rc_gpu)"
  for variant in sm80 smem166912 smem101376; do
    label=$([[ $variant == sm80 ]] && echo "sm80 kernels forced" || echo "sm80 kernels, emulated ${variant#smem} bytes of shared memory")
    line="gpu tests, $label:"
    for kind in forward backward; do
      line+=" $kind $(grep -E '^\[  (PASSED|FAILED)  \]' "$(variant_log "$variant" "$kind")" | tr '\n' ' ')"
    done
    record "$line(rc ${rc_of[$variant]})"
  done
  record "cpu tests: $(grep -E 'tests passed|tests failed' "$OUT/cpu_tests.log" | tail -1) (rc $rc_cpu)"
  grep -hE "^\[  FAILED  \] [A-Za-z]|^\s+[0-9]+ - .*(Failed|Exception)" "$OUT"/gpu_tests*.log | head -20 || true
fi

if want sanitize; then
  # Forward: every compiled head dim (plain variant) and the score-mods variant (softcap, ALiBi,
  # dropout, window). Backward: every compiled head dim, the score-mods variant, fully masked
  # rows, deterministic cases (on Hopper the turn-taking dQ of the sm90 kernel: plain, window,
  # varlen with a window, GQA causal; elsewhere the sm80 dQ kernel) and the workspace paths.
  # fp16 and bf16. The HopperHeadDims grids (bf16) put the sm90 kernel through every option,
  # varlen batch and layout on a Hopper GPU. The decode kernel: 4 query tokens on every head
  # grid and head dim (the 16-row and the 32-row tile), every score option split 3 ways, the
  # paged caches (bf16; all 246 decode cases took memcheck past 300 s), and the splits merged in
  # the decode kernel (on a zeroed workspace).
  fwd_filter='AllHeadDims/*d*:Options/*softcap*:Options/*alibi*:Options/*dropout*:Options/*window*:Long/*:HopperHeadDims/*bf16*:Decode/*decode_bf16_b3_q4*:Decode/*bf16*split3:Paged/*bf16*:GpuDecode.SplitOnCallerWorkspace'
  bwd_filter='HeadDims/*:Options/*softcap*:Options/*alibi*:Options/*dropout*:Options/*window*:Masked/*:Det/*_d64_det:Det/*detwindow_bf16*:Det/*detvarlenwindow_bf16*:Det/*detgqacausal_bf16*:HopperHeadDims/*bf16*:GpuBackwardWorkspace.*'
  bwd_race_hopper='HopperHeadDims/*hopper_causal_bf16*:HopperHeadDims/*hopper_causalgqa_bf16*:HopperHeadDims/*hopper_layout_bf16*headmajor'
  # The three tools at once (each is CPU-bound; one after another they outlast a device call),
  # each in its own subshell with its own summary file, merged in order below.
  sanitize_tool() {
    local tool=$1 kind filter rc limit log
    for kind in forward backward; do
      filter=$fwd_filter; [[ $kind == backward ]] && filter=$bwd_filter
      # racecheck is slow on the Hopper backward (over a minute for 43 d = 256 cases): a dozen,
      # causal, varlen GQA and head-major, over the three head dims.
      if [[ $kind == backward && $tool == racecheck ]]; then
        filter=${filter/HopperHeadDims\/\*bf16\*/$bwd_race_hopper}
      fi
      log=$OUT/sanitizer_${tool}_${kind}.log
      compute-sanitizer --tool "$tool" --error-exitcode 9 \
        "$(test_bin $kind)" --gtest_filter="$filter" --gtest_brief=1 >"$log" 2>&1
      rc=$?
      echo "compute-sanitizer $tool ($kind): rc $rc, $(sanitizer_result "$log")"
    done
    # The smaller tiles of the emulated A100 and sm_86/89/120 part: every compiled head dim
    # (bf16: the tiles are the same for fp16), forward and backward, the sm80 kernels forced.
    for limit in 166912 101376; do
      for kind in forward backward; do
        log=$OUT/sanitizer_${tool}_${kind}_smem$limit.log
        FLASHATTN_DISABLE_SM90=1 FLASHATTN_TEST_SMEM_LIMIT=$limit \
          compute-sanitizer --tool "$tool" --error-exitcode 9 "$(test_bin $kind)" \
          --gtest_filter='HeadDims/*bf16*:AllHeadDims/*bf16*_d160*:AllHeadDims/*bf16*_d224*' \
          --gtest_brief=1 >"$log" 2>&1
        rc=$?
        echo "compute-sanitizer $tool ($kind, emulated $limit bytes): rc $rc, $(sanitizer_result "$log")"
      done
    done
  }
  sanitizer_result() {
    echo "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$1" | tail -1), $(grep -E '^\[  (PASSED|FAILED)  \]' "$1" | head -1 || true)"
  }
  set +e
  read -r -a tools <<<"${FLASHATTN_SANITIZE_TOOLS:-memcheck racecheck synccheck}"
  for tool in "${tools[@]}"; do
    sanitize_tool "$tool" >"$OUT/sanitizer_$tool.summary" &
  done
  wait
  set -e
  for tool in "${tools[@]}"; do
    while IFS= read -r line; do record "$line"; done <"$OUT/sanitizer_$tool.summary"
    rm -f "$OUT/sanitizer_$tool.summary"
  done
fi

if want demo; then
  "$DEMO" --seqlen 4096 --iters 5 | tee "$OUT/demo.log"
  record "demo (GPU, bf16, 1×16×4096×128): $(grep -E '^forward:' "$OUT/demo.log"), $(grep -E '^result:' "$OUT/demo.log")"
  # What a GPU without machine code here (Blackwell) pays at first use: the driver compiles the
  # compute_80 PTX of each kernel it loads. CUDA_FORCE_PTX_JIT makes this GPU do the same, with
  # the cache off (from the PTX the build holds: compute_90a for a 90a-only build, the same
  # kernels' code); the same process with the machine code beside it. The Ampere kernels, as
  # there.
  jit_run() {
    local t0 t1
    t0=$(date +%s.%N)
    env FLASHATTN_DISABLE_SM90=1 CUDA_CACHE_DISABLE=1 "$@" "$DEMO" --seqlen 1024 --iters 1 \
      --backward >>"$OUT/demo_jit.log" 2>&1
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }'
  }
  : >"$OUT/demo_jit.log"
  native_s=$(jit_run) jit_s=$(jit_run CUDA_FORCE_PTX_JIT=1)
  record "first use, forward + backward bf16 d 128 (demo process, sm80 kernels): ${native_s} s with sm_90a code, ${jit_s} s compiling the build's PTX (CUDA_FORCE_PTX_JIT=1, no cache; compute_90a where built for 90a alone, as here by default, compute_80 in a release build)"
fi

# ---- The Python package: installed once, for every Python step ------------------------------
python_installed=0
install_python() {
  ((python_installed)) && return 0
  python_installed=1
  local start rc wheel
  start=$(date +%s)
  wheel=$(ls "${BINS:-/nonexistent}"/flashattn-*.whl 2>/dev/null | head -1 || true)
  # The device image has torch, nanobind, scikit-build-core and transformers, and no network: no
  # build isolation, no dependencies fetched, the system python3 (no venv).
  local pip_args=(--no-build-isolation --no-deps --force-reinstall)
  if [[ -n $wheel ]]; then
    pip_args+=(--no-index "$wheel")
  else
    # --config-settings, not -C: pip before 23.1 knows only the long form.
    pip_args+=(-v --config-settings=cmake.define.FLASHATTN_CUDA=ON
               --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90a .)
  fi
  set +e
  CMAKE_BUILD_PARALLEL_LEVEL=$JOBS python3 -m pip install "${pip_args[@]}" >"$OUT/python_install.log" 2>&1
  rc=$?
  if ((rc != 0)) && grep -q externally-managed-environment "$OUT/python_install.log"; then
    CMAKE_BUILD_PARALLEL_LEVEL=$JOBS python3 -m pip install --break-system-packages \
      "${pip_args[@]}" >>"$OUT/python_install.log" 2>&1
    rc=$?
  fi
  set -e
  record "python: pip install ${wheel:-.} rc $rc in $(( $(date +%s) - start )) s"
}

if want python; then
  install_python
  set +e
  # From tests/python, so that the installed package is imported and not python/flashattn.
  (cd tests/python && python3 -m pytest -q -p no:cacheprovider -rs \
    --junitxml="$OUT/python_tests.xml" .) >"$OUT/python_tests.log" 2>&1
  rc=$?
  record "python tests: $(grep -E '^[0-9]+ (passed|failed)' "$OUT/python_tests.log" | tail -1) (rc $rc)"
  grep -E "^(FAILED|ERROR) " "$OUT/python_tests.log" | head -20
  python3 examples/hf_llama.py --device cuda >"$OUT/hf_llama.log" 2>&1
  rc=$?
  record "transformers example (GPU, bf16): rc $rc; $(grep -E '^(prefill|decode)' "$OUT/hf_llama.log" | tr -s ' ' | paste -sd ';')"
  set -e
fi

if want overhead; then
  install_python
  set +e
  python3 bench/python_overhead.py --device cuda --out "$OUT/python_overhead.json" \
    >"$OUT/python_overhead.log" 2>&1
  rc=$?
  overhead=$(python3 - "$OUT/python_overhead.json" 2>/dev/null <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results_us"]
for group, rows in r.items():
    for k in ("sdpa", "flashattn.flash_attn_func"):
        v = rows[k]
        print(f"{group} {k} {v['throughput_us']:.1f} ({v['latency_us']:.1f} synced)", end="; ")
PY
)
  record "python call overhead, µs per call (1×16×1×64 bf16): rc $rc; $overhead"
  set -e
fi

if want profile; then
  install_python
  python3 bench/host_profile.py --cprofile --json "$OUT/host_profile.json" \
    >"$OUT/host_profile.log" 2>&1 || record "host profile failed: see host_profile.log"
  record "host profile (bf16 s512 d128 causal fwd+bwd, µs): $(grep -E '^(flashattn|sdpa_flash) ' "$OUT/host_profile.log" | paste -sd ';')"
fi

# The decode grid of issue 15 (not in "all": several minutes; 108 rows): query tokens 1 and 4, heads 32/8,
# 32/32 and 64/8, d 64/128/256, pages of 16/64/256, CUDA-graph replays.
if [[ " ${steps[*]} " == *" decode "* ]]; then
  install_python
  python3 bench/bench.py --no-sweep --no-options --decode-graph --decode-q 1,4 \
    --decode-heads 32/8,32/32,64/8 --decode-dims 64,128,256 --decode-pages 16,64,256 \
    --decode-shapes 1x4096,1x16384,1x131072,16x16384,64x16384,256x4096 \
    --json "$OUT/bench_decode.json" 2>&1 | tee "$OUT/bench_decode.log" | tail -40
fi

if want bench || want quick-bench; then
  install_python
  quick=(); want bench || quick=(--quick)
  python3 bench/bench.py --json "$OUT/bench.json" "${quick[@]}" 2>&1 | tee "$OUT/bench.log" | tail -90
fi

# The logs in one archive: a device call returns at most 8 files from $OUT.
(cd "$OUT" && shopt -s nullglob && logs=(*.log *.xml *.log.shard*) && ((${#logs[@]})) &&
  tar -czf logs.tgz "${logs[@]}" && rm -f "${logs[@]}") || true
printf '%s\n' "${summary[@]}"
