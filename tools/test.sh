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
# The build's output also goes to a log, whose register-spill warnings are checked against
# tools/spills.txt (a list for the default architectures; elsewhere only reported).
cmake --build "$FLASHATTN_BUILD" -j "$FLASHATTN_JOBS" 2>&1 | tee "$FLASHATTN_BUILD/build.log"
spill_args=()
[[ "${FLASHATTN_CUDA_ARCHS:-80;90a}" == "80;90a" ]] || spill_args=(--warn-only)
python3 "$FLASHATTN_ROOT/tools/check_spills.py" "$FLASHATTN_BUILD/build.log" "${spill_args[@]}"

echo "==> C++ tests"
# Without a GPU the GPU tests would only skip, each one listed: they are left out, and said so.
ctest_args=()
if ! nvidia-smi -L >/dev/null 2>&1; then
  ctest_args=(-LE gpu)
  echo "(no GPU here: the GPU tests are not run; tools/gpu_check.sh runs them on a GPU machine)"
fi
# One line a test goes to a log; the summary (and, on failure, what failed) is printed here.
log="$FLASHATTN_BUILD/ctest.log"
status=0
ctest --test-dir "$FLASHATTN_BUILD" --output-on-failure -j "$FLASHATTN_JOBS" "${ctest_args[@]}" \
  >"$log" 2>&1 || status=$?
if ((status != 0)); then
  grep -E -A40 '\*\*\*(Failed|Exception)|Not Run' "$log" | head -200 || true
  sed -n '/The following tests FAILED/,$p' "$log"
fi
grep -E 'tests passed|Total Test time' "$log" || tail -20 "$log"
echo "(every test's line: $log)"
((status == 0)) || exit "$status"

if [[ "${FLASHATTN_PYTHON_TESTS:-1}" != 0 ]]; then
  # The Python module links the library just built instead of compiling the kernels again.
  FLASHATTN_PREBUILT_LIBRARY="$FLASHATTN_BUILD/libflashattn.a" bash "$FLASHATTN_ROOT/tools/test_python.sh"
fi
