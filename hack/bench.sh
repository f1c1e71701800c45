#!/usr/bin/env bash
# Builds the benchmarks in Release and runs every one of them, writing each one's JSON to
# build/bench-results/<name>.json and printing its one-line summary.
#
#   hack/bench.sh [NAME...]      e.g. hack/bench.sh store_bench controller_bench
#
# Environment:
#   BUILD_DIR    Release build directory (default build-release)
#   RESULTS_DIR  where the JSON goes (default build/bench-results)
#   JOBS         parallel compile jobs (default: nproc)
#   BENCH_ARGS_<name>  extra flags for one benchmark, e.g. BENCH_ARGS_controller_bench="--edits 50"
#
# Release (-O3) is built without -Werror: GCC 12 reports a false -Wrestrict inside valijson's
# json_pointer.hpp when it inlines it into manifests/schema.cpp at -O3 (RelWithDebInfo's -O2, the
# configuration CI checks warnings in, is clean).
#
# qemu_bench boots real guests (15 under TCG, a few minutes; the guest image of
# hack/build-guest-image.sh in $MVM_IMAGE_DIR or /var/lib/mvm/images): it exits 2 (a failure
# here) where qemu or the image is missing.
#
# Timings on a shared machine are noisy: each benchmark reports medians of repeated runs, and
# this script prints the load average before each one. Exit status: 0 when every benchmark ran
# and met its targets, 1 when one missed a target or failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BUILD_DIR=${BUILD_DIR:-build-release}
RESULTS_DIR=${RESULTS_DIR:-build/bench-results}
JOBS=${JOBS:-$(nproc)}
ALL=(parse_bench watch_bench workqueue_bench store_bench controller_bench jail_bench qemu_bench)
if [ "$#" -gt 0 ]; then BENCHES=("$@"); else BENCHES=("${ALL[@]}"); fi

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMVM_BENCH=ON -DMVM_WERROR=OFF \
  >/dev/null || exit 1
cmake --build "$BUILD_DIR" -j"$JOBS" --target "${BENCHES[@]}" || exit 1
mkdir -p "$RESULTS_DIR"

failed=()
for bench in "${BENCHES[@]}"; do
  json="$RESULTS_DIR/$bench.json"
  extra_var="BENCH_ARGS_$bench"
  # shellcheck disable=SC2206  # word splitting of the extra flags is intended
  extra=(${!extra_var:-})
  printf '== %s (load average %s)\n' "$bench" "$(cut -d' ' -f1-3 /proc/loadavg)"
  out=$("$BUILD_DIR/bench/$bench" --json "$json" "${extra[@]}" 2>&1)
  status=$?
  # Every line that is not a JSON object is a summary (or an error message).
  grep -v '^{' <<<"$out"
  case $status in
    0) ;;
    1) failed+=("$bench (target missed)") ;;
    *) failed+=("$bench (exit $status)") ;;
  esac
done

echo
echo "results: $RESULTS_DIR/"
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'not met: %s\n' "${failed[@]}"
  exit 1
fi
echo "every benchmark met its targets"
