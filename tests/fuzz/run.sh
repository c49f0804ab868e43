#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for FUZZ_SECONDS (default 60) from
# the seed corpus (tests/fuzz/seeds.py) plus what earlier runs kept in BUILD/corpus.
# Prints executions, coverage (libFuzzer's cov/ft counters) and corpus size per target;
# exits non-zero when a target crashed, leaked or hung (the input is in BUILD/artifacts).
#   FUZZ_BUILD=build-fuzz FUZZ_SECONDS=60 FUZZ_TARGETS="fuzz_http ..." tests/fuzz/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
secs=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"fuzz_http fuzz_envelope fuzz_config fuzz_template fuzz_verify_hmac fuzz_verify_stdwh fuzz_verify_basic fuzz_access fuzz_plugin_wire fuzz_tls"}
python=/usr/bin/python3
[ -x "$python" ] || python=python3

cmake -S "$root/tests/fuzz" -B "$build" -DCMAKE_C_COMPILER=clang >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
rm -rf "$build/seeds"
"$python" "$root/tests/fuzz/seeds.py" "$build/seeds"
mkdir -p "$build/artifacts" "$build/logs"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0
printf '%-20s %12s %10s %8s %8s %8s %s\n' target executions exec/s cov ft corpus result
for t in $targets; do
  mkdir -p "$build/corpus/$t"
  log="$build/logs/$t.log"
  rc=0
  "$build/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
    "$build/corpus/$t" "$build/seeds/$t" </dev/null >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(find "$build/corpus/$t" -type f | wc -l)
  result=ok
  if [ "$rc" -ne 0 ]; then
    result="FAILED (exit $rc, see $log)"
    failed=1
  fi
  printf '%-20s %12s %10s %8s %8s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "$result"
done
if [ "$failed" -ne 0 ]; then
  for l in "$build"/logs/*.log; do grep -q -E 'ERROR|deadly signal|Timeout' "$l" && { echo "== $l"; tail -40 "$l"; }; done
  exit 1
fi
