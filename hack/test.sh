#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs, then builds and
# runs every test in four configurations. CI (.ci/run) runs exactly this.
#   1. RelWithDebInfo (gcc): every ctest test, including the format check and the end-to-end
#      tests that boot real guests under qemu (the guest image is built first, from Debian's
#      packages, into build/images).
#   2. ASan + UBSan (gcc): every unit and integration test again (not the real-guest ones).
#   3. TSan (gcc): the concurrency tests (work queue, watcher, store, controller, API).
#   4. libFuzzer (clang): a bounded run of the manifest parser fuzzer over tests/fuzz/corpus.
# Set MVM_TEST_QUICK=1 to run only configuration 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=$(nproc)

bash hack/install-deps.sh

section() { printf '\n==== %s ====\n' "$*"; }

section "guest image (for the end-to-end tests)"
bash hack/build-guest-image.sh --out "$ROOT/build/images" | tail -n 4
export MVM_IMAGE_DIR="$ROOT/build/images"

section "build (RelWithDebInfo)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$JOBS"
section "ctest (RelWithDebInfo)"
ctest --test-dir build --output-on-failure -j"$JOBS"

if [ "${MVM_TEST_QUICK:-0}" = 1 ]; then exit 0; fi

section "build + ctest (ASan + UBSan)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMVM_SANITIZE=ON -DMVM_BENCH=OFF >/dev/null
cmake --build build-asan -j"$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$JOBS" -LE 'nosan|e2e'

section "build + ctest (TSan: concurrency tests)"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMVM_TSAN=ON -DMVM_BENCH=OFF >/dev/null
cmake --build build-tsan -j"$JOBS" --target workqueue_test watcher_test store_test controller_test \
  controller_property_test \
  api_test
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --test-dir build-tsan --output-on-failure -j"$JOBS" -L concurrency

section "fuzz (libFuzzer, clang, bounded)"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMVM_FUZZ=ON -DMVM_BENCH=OFF \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build build-fuzz -j"$JOBS" --target parser_fuzz
ctest --test-dir build-fuzz --output-on-failure -L fuzz

section "all test configurations passed"
