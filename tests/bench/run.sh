#!/usr/bin/env bash
# hookd benchmark suite: builds hookd (Release), starts it with its own configs
# (signed Cirrus Insight source -> the `noop` test plugin, log level warn) and
# prints a table. Only 127.0.0.1 is used; every load run is bounded in time and count.
#
#   tests/bench/run.sh [all|table|compare|callgrind|profile]...   (default: table)
#     table      ingest (sync off/normal/full, repeated and unique ids, 64 KiB), end-to-end
#                delivery, latency at half load, RSS idle and with 10,000 idle connections,
#                and the isolation cases below
#     isolation  delivered/s to noop in thread vs process isolation, same run: end to end
#                (sync off) and draining a backlog of ISO_N deliveries; RSS of one child
#     compare    ../shared/bench/compare.sh against hookd with sync off and full
#     callgrind  instructions per request (valgrind --tool=callgrind, two request counts)
#     profile    perf record/report of hookd under unique-id load, sync full and off
#     backlog    RSS with 0, 20,000 and 200,000 deliveries pending for a down destination,
#                and a restart with them (time to /healthz, RSS)
#     tls        new-event ingest over TLS vs plain HTTP on one hookd in one run (wrk,
#                keep-alive, unique ids, verify none on both so only the transport differs;
#                prints the ratio) and TLS handshakes/s with and without resumption (s_time)
#     cluster    the PostgreSQL spool: unique-id ingest and delivered/s with 1, 2 and 3 nodes on one
#                throwaway PostgreSQL 15 (fsync on; synchronous_commit on and off), beside the
#                SQLite spool (sync full) measured in the same run
#
# Env: BENCH_SRC (source tree to build, default this one), BENCH_BUILD (build dir, default build-bench), BENCH_PORT (default 28480, admin +10),
#      SECS (per ingest run, default 5), CONNS (default 32), UNIQ (unique bodies built per run,
#      default 200000), E2E_N (default 50000), IDLE_CONNS (default 10000), COMPARE (compare.sh),
#      COMPARE_PEERS (compare.sh's PEERS, default "ceiling node"; see compare()),
#      BENCH_OUT (where configs, logs and profiles go; default a fresh temp dir),
#      REPS (runs per table cell, default 3: the cell is the median run; this
#      machine's neighbours swing single runs by a third),
#      PG_BIN (PostgreSQL 15 binaries, default /usr/lib/postgresql/15/bin), PG_PORT (default BENCH_PORT + 60),
#      CLUSTER_N (events per delivered/s run of `cluster`, default 20000),
#      ISO_N (backlog drained per isolation run, default 50000).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
SRC=${BENCH_SRC:-$root}  # the source tree built and measured (default: this one)
BUILD=${BENCH_BUILD:-$root/build-bench}
PORT=${BENCH_PORT:-28480}
APORT=$((PORT + 10))
SECS=${SECS:-5}
CONNS=${CONNS:-32}
UNIQ=${UNIQ:-200000}
E2E_N=${E2E_N:-50000}
IDLE_CONNS=${IDLE_CONNS:-10000}
REPS=${REPS:-3}
ISO_N=${ISO_N:-50000}
COMPARE=${COMPARE:-$root/../shared/bench/compare.sh}
KEY=bench-signing-key
PAYLOAD=$root/examples/payloads/scheduling.smartscheduler.scheduled.json
OUT=${BENCH_OUT:-$(mktemp -d /tmp/hookd-bench.XXXXXX)}
mkdir -p "$OUT"
HOOKD_PID=
HB_PID=
NODE_PIDS=()
PGDIR=

cleanup() {
  [ -n "$HB_PID" ] && kill "$HB_PID" 2>/dev/null || true
  [ -n "$HOOKD_PID" ] && kill "$HOOKD_PID" 2>/dev/null || true
  local p
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "$PGDIR" ] || pg_stop
  wait 2>/dev/null || true
}
trap cleanup EXIT

log() { printf '== %s\n' "$*" >&2; }

build() {
  log "building hookd (Release) in $BUILD"
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$OUT/cmake.log"
  cmake --build "$BUILD" -j"$(nproc)" >>"$OUT/cmake.log"
  [ -f "$BUILD/plugins/noop.so" ] || { echo "no $BUILD/plugins/noop.so" >&2; exit 1; }
  [ -f "$BUILD/plugins/test_fault.so" ] || { echo "no $BUILD/plugins/test_fault.so" >&2; exit 1; }
  cc -O2 -Wall -Wextra -o "$OUT/hbench" "$here/hbench.c" -lcrypto
  # Bodies: the 1.7 KiB scheduled event; __UID__ marks eventId and data.id (unique runs).
  cp "$PAYLOAD" "$OUT/body.json"
  sed -e 's/"eventId": "[^"]*"/"eventId": "__UID__"/' \
      -e 's/"id": "c0ffee00-[^"]*"/"id": "__UID__"/' "$PAYLOAD" >"$OUT/body-uniq.json"
  # 64 KiB: the same event with a padding field in data, exactly 65536 bytes.
  local cur pad
  cur=$(wc -c <"$OUT/body-uniq.json")
  pad=$((65536 - cur - 15))
  sed -e "s/\"data\": {/\"data\": {\"padding\": \"$(head -c "$pad" /dev/zero | tr '\0' x)\",/" \
      "$OUT/body-uniq.json" >"$OUT/body-64k-uniq.json"
}

# config SYNC NAME [ISOLATION [PLUGIN_JSON]]: a config file in $OUT/NAME/ (the noop instance
# in thread isolation unless told otherwise; PLUGIN_JSON replaces its module and config).
config() {
  local sync=$1 dir=$OUT/$2 iso=${3:-thread} plug=${4:-'"module": "noop", "config": {}'}
  rm -rf "$dir"; mkdir -p "$dir"
  cat >"$dir/hookd.jsonc" <<EOF
{
  "listen": "127.0.0.1:$PORT",
  "admin_listen": "127.0.0.1:$APORT",
  "data_dir": "var",
  "plugin_dirs": ["$BUILD/plugins"],
  "log": { "level": "warn", "format": "text" },
  "limits": { "max_connections": 20000 },
  "spool": { "sync": "$sync" },
  "sources": [ { "name": "cirrus", "path": "/webhooks/cirrus", "format": "cirrus-insight",
                 "verify": { "scheme": "hmac", "algorithm": "sha256", "header": "X-Signature",
                             "encoding": "hex", "secrets": ["\${BENCH_KEY}"] } } ],
  "plugins": [ { "name": "noop", "isolation": "$iso", $plug } ],
  "routes": [ { "source": "cirrus", "events": ["scheduling.smartscheduler.*"], "to": ["noop"] } ]
}
EOF
  echo "$dir/hookd.jsonc"
}

# start CONFIG [wrapper...]: starts hookd, waits for /readyz.
start() {
  local cfg=$1; shift
  # Another receiver on these ports would answer /readyz for the hookd that
  # failed to bind, and every figure would be its.
  if curl -fs "http://127.0.0.1:$APORT/readyz" >/dev/null 2>&1; then
    echo "something already answers on 127.0.0.1:$APORT (BENCH_PORT=$PORT): stop it first" >&2
    exit 1
  fi
  BENCH_KEY=$KEY CIRRUS_SIGNING_KEY=$KEY "$@" "$BUILD/hookd" run -c "$cfg" \
    >"$(dirname "$cfg")/hookd.out" 2>&1 &
  HOOKD_PID=$!
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$APORT/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$HOOKD_PID" 2>/dev/null || { cat "$(dirname "$cfg")/hookd.out" >&2; exit 1; }
    sleep 0.1
  done
  echo "hookd did not get ready" >&2; exit 1
}

stop() {
  [ -n "$HOOKD_PID" ] || return 0
  kill -TERM "$HOOKD_PID" 2>/dev/null || true
  for _ in $(seq 1 600); do kill -0 "$HOOKD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$HOOKD_PID" 2>/dev/null || true
  wait "$HOOKD_PID" 2>/dev/null || true
  HOOKD_PID=
}

hb() { "$OUT/hbench" "$1" -p "$PORT" -P /webhooks/cirrus -k "$KEY" "${@:2}"; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }  # field NAME < hbench line
# median FIELD < lines: the line whose FIELD is the median of all lines'.
median() { awk -v f="$1" '{for (i = 1; i <= NF; i++) if (index($i, f "=") == 1) v = substr($i, length(f) + 2); k[NR] = v + 0; l[NR] = $0}
  END {for (i = 1; i <= NR; i++) {r = 0; for (j = 1; j <= NR; j++) if (k[j] < k[i] || (k[j] == k[i] && j < i)) r++; if (r == int((NR - 1) / 2)) print l[i]}}'; }
delivered() {
  curl -fs "http://127.0.0.1:$APORT/metrics" |
    awk '/^hookd_deliveries_total\{.*instance="noop".*outcome="delivered"/ {print $2}'
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
written() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
# hookd's own view of a latency run: the ingest histogram's buckets holding
# its p50, p99 and p99.9 ("p50<=0.001 p99<=0.005 p999<=0.01", seconds).
ingest_quantiles() {
  curl -fs "http://127.0.0.1:$APORT/metrics" | awk 'BEGIN { n = 0 }
    /^hookd_ingest_latency_seconds_bucket\{source="cirrus",le="/ {
      split($0, a, "le=\""); split(a[2], b, "\""); le[n] = b[1]; c[n] = $2; n++ }
    END { total = c[n - 1]; split("0.5 0.99 0.999", qs, " "); split("p50 p99 p999", names, " ")
          for (q = 1; q <= 3; q++) for (i = 0; i < n; i++) if (c[i] >= qs[q] * total) {
            printf "%s<=%s ", names[q], le[i]; break } }'
}

declare -A R
ingest_cases() {
  local sync line
  local r u r64
  for sync in off normal full; do
    u=; r=; r64=
    for _ in $(seq 1 "$REPS"); do
      start "$(config "$sync" "ingest-$sync")"
      hb load -b "$OUT/body.json" -c "$CONNS" -d 1 -n 100000 >/dev/null  # warm-up
      line=$(hb load -b "$OUT/body-uniq.json" -u -c "$CONNS" -d "$SECS" -n "$UNIQ")
      echo "ingest unique sync=$sync: $line" >&2; u+="$line"$'\n'
      line=$(hb load -b "$OUT/body.json" -c "$CONNS" -d "$SECS" -n 2000000)
      echo "ingest repeated sync=$sync: $line" >&2; r+="$line"$'\n'
      stop
      [ "$sync" = normal ] && continue
      start "$(config "$sync" "big-$sync")"
      line=$(hb load -b "$OUT/body-64k-uniq.json" -u -c "$CONNS" -d "$SECS" -n 30000)
      echo "ingest 64KiB unique sync=$sync: $line" >&2; r64+="$line"$'\n'
      stop
    done
    R[uniq_$sync]=$(printf '%s' "$u" | median rps)
    R[rep_$sync]=$(printf '%s' "$r" | median rps)
    [ "$sync" = normal ] || R[big_$sync]=$(printf '%s' "$r64" | median rps)
  done
}

e2e_cases() {
  local sync line t0 t1 n d runs
  for sync in full off; do
    runs=
    for _ in $(seq 1 "$REPS"); do
      start "$(config "$sync" "e2e-$sync")"
      t0=$(date +%s.%N)
      line=$(hb load -b "$OUT/body-uniq.json" -u -c "$CONNS" -d 60 -n "$E2E_N")
      n=$(echo "$line" | field requests)
      for _ in $(seq 1 1200); do
        d=$(delivered); [ "${d:-0}" -ge "$n" ] && break; sleep 0.02
      done
      t1=$(date +%s.%N)
      line="e2e=$(awk -v n="$d" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}') written_per_event=$(( $(written "$HOOKD_PID") / ${d:-1} )) $line"
      echo "e2e sync=$sync: sent $n delivered $d in $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b-a}') s: $line" >&2
      runs+="$line"$'\n'
      stop
    done
    line=$(printf '%s' "$runs" | median e2e)
    R[e2e_$sync]=$(echo "$line" | sed 's/^e2e=\([0-9]*\).*/\1/')
    R[wb_$sync]=$(echo "$line" | field written_per_event)
    R[e2e_ingest_$sync]=$(echo "$line" | field rps)
  done
}

latency_cases() {
  local sync line rate runs
  for sync in full off; do
    rate=$(( $(echo "${R[uniq_$sync]}" | field rps) / 2 ))
    runs=
    for _ in $(seq 1 "$REPS"); do
      start "$(config "$sync" "lat-$sync")"
      line=$(hb load -b "$OUT/body-uniq.json" -u -c "$CONNS" -r "$rate" -d 10 -n $((rate * 10 + 10)))
      line="$line $(ingest_quantiles)"
      echo "latency sync=$sync at $rate/s: $line" >&2; runs+="$line"$'\n'
      stop
    done
    R[lat_$sync]=$(printf '%s' "$runs" | median p99_us)
  done
}

rss_cases() {
  local dir=$OUT/example base line
  rm -rf "$dir"; mkdir -p "$dir"
  # The example config as shipped, with this run's ports and paths.
  sed -e "s/127.0.0.1:8080/127.0.0.1:$PORT/; s/127.0.0.1:9090/127.0.0.1:$APORT/" \
      -e "s#\"../var\"#\"var\"#; s#\"../var/events.jsonl\"#\"var/events.jsonl\"#" \
      -e "s#\"../build/plugins\"#\"$BUILD/plugins\"#" "$root/examples/hookd.jsonc" >"$dir/hookd.jsonc"
  start "$dir/hookd.jsonc"; sleep 2
  R[rss_example]=$(rss_kib "$HOOKD_PID"); stop
  start "$(config full idle)"
  hb load -b "$OUT/body.json" -c 4 -d 1 -n 1000 >/dev/null; sleep 2
  base=$(rss_kib "$HOOKD_PID"); R[rss_bench]=$base
  ulimit -n 20000 2>/dev/null || true
  hb idle -b "$OUT/body.json" -c "$IDLE_CONNS" -d 50 >"$OUT/idle.out" &
  HB_PID=$!
  for _ in $(seq 1 400); do grep -q ready "$OUT/idle.out" 2>/dev/null && break; sleep 0.1; done
  sleep 3  # connections idle past TRIM_MS (1 s) give their buffers back
  R[rss_conns]=$(rss_kib "$HOOKD_PID")
  R[rss_per_conn]=$(awk -v a="$base" -v b="${R[rss_conns]}" -v n="$IDLE_CONNS" 'BEGIN {printf "%.2f", (b - a) / n}')
  echo "rss: example ${R[rss_example]} KiB, bench idle $base KiB, with $IDLE_CONNS conns ${R[rss_conns]} KiB ($(cat "$OUT/idle.out" | head -1))" >&2
  kill "$HB_PID" 2>/dev/null || true; wait "$HB_PID" 2>/dev/null || true; HB_PID=
  stop
}

# Process isolation against thread isolation, the same cases in the same run.
# e2e: the end-to-end case with sync off (delivery is the largest share there).
# drain: ISO_N deliveries waiting in the spool (made once: a plugin that hangs
# on its first call keeps them there, then hookd is killed), delivered after a
# restart; from launching hookd to the last delivery, so start-up and reading
# the backlog back are in it. The child's RSS is read idle after start and
# after the drain. Each run leaves its figure in ISO_V.
ISO_V=
iso_backlog() {
  local cfg
  cfg=$(config off iso-backlog process '"module": "test_fault", "config": {"hang": ["*"]}, "delivery": {"concurrency": 1, "timeout_ms": 3600000}')
  start "$cfg"
  hb load -b "$OUT/body-uniq.json" -u -c "$CONNS" -d 60 -n "$ISO_N" >"$OUT/iso-backlog.hb"
  kill -KILL "$HOOKD_PID"; wait "$HOOKD_PID" 2>/dev/null || true; HOOKD_PID=
  sleep 0.5  # the child sees hookd gone and exits
  ISO_BACKLOG=$(dirname "$cfg")/var
}

pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }  # its share of shared pages
child_pid() { cat /proc/"$HOOKD_PID"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -m1 . ; }

iso_drain() {
  local iso=$1 cfg t0 t1 d
  cfg=$(config off "iso-drain-$iso" "$iso")
  cp -a "$ISO_BACKLOG" "$(dirname "$cfg")/var"
  t0=$(date +%s.%N)
  start "$cfg"
  [ "$iso" = process ] && { R[iso_rss_idle]=$(rss_kib "$(child_pid)"); R[iso_pss_idle]=$(pss_kib "$(child_pid)"); }
  for _ in $(seq 1 3000); do
    d=$(delivered); [ "${d:-0}" -ge "$ISO_N" ] && break; sleep 0.01
  done
  t1=$(date +%s.%N)
  [ "$iso" = process ] && { sleep 1; R[iso_rss_after]=$(rss_kib "$(child_pid)"); R[iso_pss_after]=$(pss_kib "$(child_pid)"); }
  stop
  ISO_V=$(awk -v n="$d" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
}

iso_e2e() {
  local iso=$1 line t0 t1 n d
  start "$(config off "iso-e2e-$iso" "$iso")"
  t0=$(date +%s.%N)
  line=$(hb load -b "$OUT/body-uniq.json" -u -c "$CONNS" -d 60 -n "$E2E_N")
  n=$(echo "$line" | field requests)
  for _ in $(seq 1 1200); do d=$(delivered); [ "${d:-0}" -ge "$n" ] && break; sleep 0.02; done
  t1=$(date +%s.%N)
  stop
  ISO_V=$(awk -v n="$d" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
}

isolation_cases() {
  local iso what rep
  declare -A runs=()
  log "isolation: making a backlog of $ISO_N deliveries"
  iso_backlog
  for what in drain e2e; do
    # The modes take turns run by run, so that a noisy minute hits both.
    for rep in $(seq 1 "$REPS"); do
      for iso in thread process; do
        "iso_$what" "$iso"
        echo "isolation $what $iso (run $rep): $ISO_V delivered/s" >&2
        runs[$what.$iso]+="v=$ISO_V"$'\n'
      done
    done
    for iso in thread process; do
      R[iso_${what}_$iso]=$(printf '%s' "${runs[$what.$iso]}" | median v | sed 's/^v=//')
    done
  done
  R[iso_drain_ratio]=$(awk -v p="${R[iso_drain_process]}" -v t="${R[iso_drain_thread]}" 'BEGIN {printf "%.2f", p / t}')
  R[iso_e2e_ratio]=$(awk -v p="${R[iso_e2e_process]}" -v t="${R[iso_e2e_thread]}" 'BEGIN {printf "%.2f", p / t}')
}

isolation_table() {
  echo
  echo "| isolation (noop, sync off) | thread | process | process / thread |"
  echo "|---|---:|---:|---:|"
  echo "| drain $ISO_N waiting deliveries (launch to last delivery), delivered/s | ${R[iso_drain_thread]} | ${R[iso_drain_process]} | ${R[iso_drain_ratio]} |"
  echo "| end-to-end delivered/s ($E2E_N events) | ${R[iso_e2e_thread]} | ${R[iso_e2e_process]} | ${R[iso_e2e_ratio]} |"
  echo
  echo "| one isolated child (noop) | VmRSS | Pss (shared pages divided among their users) |"
  echo "|---|---:|---:|"
  echo "| idle after start | ${R[iso_rss_idle]} KiB | ${R[iso_pss_idle]} KiB |"
  echo "| after draining $ISO_N deliveries | ${R[iso_rss_after]} KiB | ${R[iso_pss_after]} KiB |"
}

isolation() {
  isolation_cases
  isolation_table
}

table() {
  ingest_cases; e2e_cases; latency_cases; rss_cases; isolation_cases
  local f
  f() { echo "${R[$1]}" | field "$2"; }
  echo
  echo "hookd benchmark — $(date -u +%F), $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(uname -r); client: tests/bench/hbench.c, $CONNS connections, ${SECS}s per run, median of $REPS runs per cell"
  echo
  echo "| case | sync off | sync normal | sync full |"
  echo "|---|---:|---:|---:|"
  echo "| ingest req/s, 1.7 KiB signed, same body (dedup fast path) | $(f rep_off rps) | $(f rep_normal rps) | $(f rep_full rps) |"
  echo "| ingest req/s, 1.7 KiB signed, unique ids (every one stored) | $(f uniq_off rps) | $(f uniq_normal rps) | $(f uniq_full rps) |"
  echo "| ingest req/s, 64 KiB signed, unique ids | $(f big_off rps) | – | $(f big_full rps) |"
  echo "| end-to-end delivered/s to noop (first request to last delivery) | ${R[e2e_off]} | – | ${R[e2e_full]} |"
  echo "| bytes written per delivered event (/proc/PID/io, WAL and checkpoints) | ${R[wb_off]} | – | ${R[wb_full]} |"
  echo "| hookd's ingest histogram at half load: the buckets of p50 / p99 / p99.9 (s) | $(f lat_off 'p50<') / $(f lat_off 'p99<') / $(f lat_off 'p999<') | – | $(f lat_full 'p50<') / $(f lat_full 'p99<') / $(f lat_full 'p999<') |"
  echo "| latency p50 / p99 / p99.9 (ms) at half the unique-id max ($(f lat_off rate) / $(f lat_full rate) req/s) | $(f lat_off p50_us | awk '{printf "%.2f", $1/1000}') / $(f lat_off p99_us | awk '{printf "%.2f", $1/1000}') / $(f lat_off p999_us | awk '{printf "%.2f", $1/1000}') | – | $(f lat_full p50_us | awk '{printf "%.2f", $1/1000}') / $(f lat_full p99_us | awk '{printf "%.2f", $1/1000}') / $(f lat_full p999_us | awk '{printf "%.2f", $1/1000}') |"
  echo
  echo "| memory | VmRSS |"
  echo "|---|---:|"
  echo "| idle, example config (file_sink) | ${R[rss_example]} KiB |"
  echo "| idle, bench config (noop), after 1000 requests | ${R[rss_bench]} KiB |"
  echo "| with $IDLE_CONNS idle keep-alive connections | ${R[rss_conns]} KiB (${R[rss_per_conn]} KiB per connection) |"
  isolation_table
}

# compare.sh sends a fresh eventId in every request, signed by the client
# with SIGN_KEY (HMAC-SHA256 hex in X-Signature), as hookd's source expects.
# Its peers default to the ceiling and Node only: adnanh/webhook answers at
# once and runs /bin/true afterwards, so it still forks a backlog of commands
# for seconds after its own measurement ends, and compare.sh measures the
# target right after it in every round (on 2 cores hookd then measured 6,900
# req/s back to back, 25,700 with webhook stopped). COMPARE_PEERS="ceiling
# node webhook" measures it too.
compare() {
  local sync
  for sync in off full; do
    start "$(config "$sync" "compare-$sync")"
    log "compare.sh, sync $sync"
    PEERS=${COMPARE_PEERS:-ceiling node} BODY=$PAYLOAD SIGN_KEY=$KEY \
      "$COMPARE" "http://127.0.0.1:$PORT/webhooks/cirrus" "$REPS" |
      sed "s/^/sync=$sync  /"
    [ "$sync" = full ] || { stop; continue; }
    # The same body size on both sides: 64 KiB events (a padding field in data).
    log "compare.sh, sync $sync, 64 KiB bodies"
    PEERS=ceiling BODY=$OUT/body-64k-uniq.json SIGN_KEY=$KEY \
      "$COMPARE" "http://127.0.0.1:$PORT/webhooks/cirrus" "$REPS" |
      sed "s/^/sync=$sync 64KiB  /"
    stop
  done
}

# Instructions per request: total Ir (all threads) with N1 and N2 unique
# requests, each run waiting for every delivery; the difference over N2 - N1.
callgrind() {
  local sync n ir
  command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; return 1; }
  for sync in off full; do
    declare -A IR=()
    for n in 2000 12000; do
      start "$(config "$sync" "cg-$sync-$n")" valgrind --tool=callgrind --dump-instr=no \
        --callgrind-out-file="$OUT/callgrind.$sync.$n"
      hb load -b "$OUT/body-uniq.json" -u -c 4 -d 120 -n "$n" >"$OUT/cg-$sync-$n.hb"
      for _ in $(seq 1 600); do [ "$(delivered)" -ge "$n" ] 2>/dev/null && break; sleep 0.1; done
      stop
      ir=$(awk '/^(summary|totals):/ {print $2}' "$OUT/callgrind.$sync.$n" | tail -1)
      IR[$n]=$ir
    done
    echo "callgrind sync=$sync: Ir(2000)=${IR[2000]} Ir(12000)=${IR[12000]} -> $(( (IR[12000] - IR[2000]) / 10000 )) instructions per request (all threads, delivery included)"
    callgrind_annotate --inclusive=no "$OUT/callgrind.$sync.12000" 2>/dev/null | head -45 >"$OUT/callgrind.$sync.top.txt" || true
  done
}

profile() {
  local sync
  command -v perf >/dev/null || { echo "perf not installed" >&2; return 1; }
  for sync in full off; do
    start "$(config "$sync" "perf-$sync")"
    perf record -F 1999 -o "$OUT/perf.$sync.data" -p "$HOOKD_PID" -- sleep "$SECS" 2>/dev/null &
    local pp=$!
    hb load -b "$OUT/body-uniq.json" -u -c "$CONNS" -d "$SECS" -n "$UNIQ" >&2
    wait "$pp" || true
    stop
    perf report -i "$OUT/perf.$sync.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
      grep -v '^#' | grep '%' | head -40 >"$OUT/perf.$sync.top.txt" || true
    echo "perf sync=$sync (self, top 40): $OUT/perf.$sync.top.txt"
    head -25 "$OUT/perf.$sync.top.txt" || true
  done
}

# tls: one hookd listens plain on PORT and TLS on PORT+1 (a throwaway self-signed cert).
tls() {
  local dir=$OUT/tls line plain=0 tls_rps=0 new reuse scheme port
  rm -rf "$dir"; mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/key.pem" \
    -out "$dir/cert.pem" -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 2>/dev/null
  chmod 600 "$dir/key.pem"
  printf '%s\n' '{' \
    "  \"listen\": [\"127.0.0.1:$PORT\", { \"address\": \"127.0.0.1:$((PORT + 1))\"," \
    '             "tls": { "cert": "cert.pem", "key": "key.pem" } }],' \
    "  \"admin_listen\": \"127.0.0.1:$APORT\"," \
    "  \"data_dir\": \"var\", \"plugin_dirs\": [\"$BUILD/plugins\"]," \
    '  "log": { "level": "warn" }, "spool": { "sync": "off" },' \
    '  "sources": [ { "name": "bench", "path": "/in", "format": "generic", "type_field": "type",' \
    '                 "id_field": "id", "verify": { "scheme": "none" } } ],' \
    '  "plugins": [ { "name": "noop", "module": "noop", "config": {} } ],' \
    '  "routes": [ { "events": ["**"], "to": ["noop"] } ]' '}' >"$dir/hookd.jsonc"
  # Every request a new event: a counter per wrk thread in the id, 1.7 KiB bodies.
  printf '%s\n' 'local n, t = 0, tostring(math.random(1, 1e9))' \
    'request = function()' '  n = n + 1' \
    '  return wrk.format("POST", "/in", {["Content-Type"] = "application/json"},' \
    "    '{\"type\":\"bench.event\",\"id\":\"' .. t .. '-' .. n .. '\",\"data\":{\"x\":\"' .. string.rep(\"y\", 1600) .. '\"}}')" \
    'end' >"$dir/uniq.lua"
  start "$dir/hookd.jsonc"
  # Alternating runs (plain, TLS, TLS, plain), so a neighbour's load or the
  # spool's growth does not favour one side; each side is the mean of two.
  for scheme in http https https http; do
    port=$PORT; [ "$scheme" = https ] && port=$((PORT + 1))
    wrk -t2 -c"$CONNS" -d"${SECS}s" -s "$dir/uniq.lua" "$scheme://127.0.0.1:$port/in" >"$dir/wrk-$scheme.txt"
    line=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk-$scheme.txt")
    echo "tls bench $scheme: $line req/s ($(grep -c 'Non-2xx' "$dir/wrk-$scheme.txt") non-2xx lines)" >&2
    if [ "$scheme" = http ]; then
      plain=$(awk -v a="$plain" -v b="$line" 'BEGIN {printf "%.0f", a + b / 2}')
    else
      tls_rps=$(awk -v a="$tls_rps" -v b="$line" 'BEGIN {printf "%.0f", a + b / 2}')
    fi
  done
  # TLS 1.2: s_time resumes by the session of the handshake itself (a TLS
  # 1.3 ticket comes after it, which s_time does not wait for).
  new=$(openssl s_time -tls1_2 -connect "127.0.0.1:$((PORT + 1))" -new -time "$SECS" 2>/dev/null |
        awk '/connections in .* real seconds/ {printf "%.0f", $1 / $4; exit}')
  reuse=$(openssl s_time -tls1_2 -connect "127.0.0.1:$((PORT + 1))" -reuse -time "$SECS" 2>/dev/null |
        awk '/connections in .* real seconds/ {printf "%.0f", $1 / $4; exit}')
  stop
  echo
  echo "| TLS vs plain, same hookd ($CONNS keep-alive connections, ${SECS}s each, 1.7 KiB unique events, sync off) | |"
  echo "|---|---:|"
  echo "| ingest req/s, plain HTTP | $plain |"
  echo "| ingest req/s, TLS | $tls_rps |"
  echo "| ratio TLS / plain | $(awk -v a="$tls_rps" -v b="$plain" 'BEGIN {printf "%.2f", b ? a / b : 0}') |"
  echo "| TLS 1.2 handshakes/s, full (openssl s_time -new, one client) | ${new:-?} |"
  echo "| TLS 1.2 handshakes/s, resumed (openssl s_time -reuse, one client) | ${reuse:-?} |"
}

# Memory with a backlog: an instance whose destination is down (test_plugin
# answers RETRY, the next try in an hour), RSS idle and with 20,000 and
# 200,000 deliveries pending; then a restart with the 200,000: time to
# /healthz and RSS.
backlog() {
  local dir cfg n0 n20 n200 t0 t1
  cfg=$(config off backlog)
  dir=$(dirname "$cfg")
  sed -i -e 's#"plugins": \[ { "name": "noop", "module": "noop", "config": {} } \]#"plugins": [ { "name": "noop", "module": "test_plugin", "config": { "result": "retry" }, "delivery": { "backoff_initial_ms": 3600000, "backoff_max_ms": 3600000, "max_pending": 1000000 } } ]#' "$cfg"
  start "$cfg"; sleep 1
  n0=$(rss_kib "$HOOKD_PID")
  hb load -b "$OUT/body-uniq.json" -u -c "$CONNS" -d 120 -n 20000 >/dev/null; sleep 2
  n20=$(rss_kib "$HOOKD_PID")
  hb load -b "$OUT/body-uniq.json" -u -c "$CONNS" -d 600 -n 180000 >/dev/null; sleep 2
  n200=$(rss_kib "$HOOKD_PID")
  stop
  t0=$(date +%s.%N)
  BENCH_KEY=$KEY "$BUILD/hookd" run -c "$cfg" >"$dir/hookd-restart.out" 2>&1 &
  HOOKD_PID=$!
  for _ in $(seq 1 1000); do curl -fs "http://127.0.0.1:$APORT/healthz" >/dev/null 2>&1 && break; sleep 0.01; done
  t1=$(date +%s.%N)
  sleep 1
  local nr; nr=$(rss_kib "$HOOKD_PID")
  stop
  echo
  echo "| backlog for a down destination (1.7 KiB events, sync off) | VmRSS |"
  echo "|---|---:|"
  echo "| 0 pending | $n0 KiB |"
  echo "| 20,000 pending | $n20 KiB |"
  echo "| 200,000 pending | $n200 KiB |"
  echo "| restarted with 200,000 pending: /healthz after $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s | $nr KiB |"
}

# --- the PostgreSQL spool: several nodes on one database --------------------------------------
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${PG_PORT:-$((PORT + 60))}
CLUSTER_N=${CLUSTER_N:-20000}
NODE_PORT=$((PORT + 40)) # node i listens on NODE_PORT + i, its admin on NODE_PORT + 10 + i

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# A throwaway cluster as in production: fsync on, data in a temp dir.
pg_start() {
  PGDIR=$(mktemp -d /tmp/hookd-bench-pg.XXXXXX)
  [ "$(id -u)" -ne 0 ] || chown postgres: "$PGDIR"
  as_pg "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --no-instructions \
    >"$OUT/initdb.log"
  printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $PG_PORT" \
    "unix_socket_directories = '$PGDIR'" "max_connections = 60" "shared_buffers = 256MB" |
    as_pg tee -a "$PGDIR/data/postgresql.auto.conf" >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w start >/dev/null
  PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
}

pg_stop() {
  as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
  PGDIR=
}

pg_sql() { as_pg psql -X -q -h "$PGDIR" -p "$PG_PORT" -U postgres -d postgres -Atc "$1"; }

# node_config I: node I's config (postgres backend) in $OUT/node-I/.
node_config() {
  local i=$1 dir=$OUT/node-$1
  rm -rf "$dir"; mkdir -p "$dir"
  cat >"$dir/hookd.jsonc" <<EOF
{
  "listen": "127.0.0.1:$((NODE_PORT + i))",
  "admin_listen": "127.0.0.1:$((NODE_PORT + 10 + i))",
  "data_dir": "var",
  "plugin_dirs": ["$BUILD/plugins"],
  "log": { "level": "warn", "format": "text" },
  "limits": { "max_connections": 20000 },
  "spool": { "backend": "postgres", "url": "\${HOOKD_PG_URL}" },
  "sources": [ { "name": "cirrus", "path": "/webhooks/cirrus", "format": "cirrus-insight",
                 "verify": { "scheme": "hmac", "algorithm": "sha256", "header": "X-Signature",
                             "encoding": "hex", "secrets": ["\${BENCH_KEY}"] } } ],
  "plugins": [ { "name": "noop", "module": "noop", "config": {} } ],
  "routes": [ { "source": "cirrus", "events": ["scheduling.smartscheduler.*"], "to": ["noop"] } ]
}
EOF
  echo "$dir/hookd.jsonc"
}

nodes_start() {
  local n=$1 i cfg
  NODE_PIDS=()
  for i in $(seq 0 $((n - 1))); do
    cfg=$(node_config "$i")
    BENCH_KEY=$KEY HOOKD_PG_URL=$PG_URL "$BUILD/hookd" run -c "$cfg" \
      >"$(dirname "$cfg")/hookd.out" 2>&1 &
    NODE_PIDS+=($!)
  done
  for i in $(seq 0 $((n - 1))); do
    for _ in $(seq 1 300); do
      curl -fs "http://127.0.0.1:$((NODE_PORT + 10 + i))/readyz" >/dev/null 2>&1 && break
      kill -0 "${NODE_PIDS[$i]}" 2>/dev/null || { cat "$OUT/node-$i/hookd.out" >&2; exit 1; }
      sleep 0.1
    done
  done
}

nodes_stop() {
  local p
  for p in "${NODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  NODE_PIDS=()
}

# Deliveries done, all nodes together.
nodes_delivered() {
  local i s=0 d
  for i in $(seq 0 $((${#NODE_PIDS[@]} - 1))); do
    d=$(curl -fs "http://127.0.0.1:$((NODE_PORT + 10 + i))/metrics" |
      awk '/^hookd_deliveries_total\{.*instance="noop".*outcome="delivered"/ {print $2}')
    s=$((s + ${d:-0}))
  done
  echo "$s"
}

# nodes_load N SECS COUNT: one hbench per node at once, CONNS split between
# them, unique ids; prints "rps=SUM requests=SUM".
nodes_load() {
  local n=$1 secs=$2 count=$3 i c=$(((CONNS + $1 - 1) / $1)) pids=()
  for i in $(seq 0 $((n - 1))); do
    "$OUT/hbench" load -p $((NODE_PORT + i)) -P /webhooks/cirrus -k "$KEY" -b "$OUT/body-uniq.json" \
      -u -c "$c" -d "$secs" -n $((count / n)) >"$OUT/load-$i.out" &
    pids+=($!)
  done
  wait "${pids[@]}"
  cat "$OUT"/load-[0-9]*.out | awk '{for (i = 1; i <= NF; i++) {split($i, kv, "="); s[kv[1]] += kv[2]}}
    END {printf "all rps=%d requests=%d\n", s["rps"], s["requests"]}'
  rm -f "$OUT"/load-[0-9]*.out
}

# cluster_case N on|off: ingest and delivered/s with N nodes.
cluster_case() {
  local n=$1 sc=$2 line t0 t1 d want sent
  pg_sql "DROP TABLE IF EXISTS hookd_meta, hookd_events, hookd_deliveries, hookd_nodes,
          hookd_instances, hookd_attempts, hookd_backfills, hookd_backfill_events" 2>/dev/null
  pg_sql "ALTER SYSTEM SET synchronous_commit = $sc"
  pg_sql "SELECT pg_reload_conf()" >/dev/null
  nodes_start "$n"
  line=$(nodes_load "$n" "$SECS" "$UNIQ")
  echo "cluster ingest nodes=$n synchronous_commit=$sc: $line" >&2
  R[pg_in_${n}_$sc]=$(echo "$line" | field rps)
  # The ingest run's backlog drains first; then CLUSTER_N fresh events,
  # from the first request to the last delivery.
  for _ in $(seq 1 3000); do
    [ "$(pg_sql "SELECT count(*) FROM hookd_deliveries WHERE state <> 1")" = 0 ] && break
    sleep 0.1
  done
  sent=$((CLUSTER_N / n * n))
  want=$(($(nodes_delivered) + sent))
  t0=$(date +%s.%N)
  nodes_load "$n" 120 "$CLUSTER_N" >/dev/null
  for _ in $(seq 1 6000); do d=$(nodes_delivered); [ "$d" -ge "$want" ] && break; sleep 0.05; done
  t1=$(date +%s.%N)
  R[pg_e2e_${n}_$sc]=$(awk -v n="$sent" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
  echo "cluster delivered nodes=$n synchronous_commit=$sc: $sent in $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}') s" >&2
  nodes_stop
}

cluster() {
  local n sc line t0 t1 d
  [ -x "$PG_BIN/initdb" ] || { echo "no $PG_BIN/initdb (apt-get install postgresql-15)" >&2; return 1; }
  # The SQLite spool in the same run: same client, same durations.
  start "$(config full cluster-sqlite)"
  line=$(hb load -b "$OUT/body-uniq.json" -u -c "$CONNS" -d "$SECS" -n "$UNIQ")
  R[sq_in]=$(echo "$line" | field rps)
  stop
  start "$(config full cluster-sqlite-e2e)"
  t0=$(date +%s.%N)
  hb load -b "$OUT/body-uniq.json" -u -c "$CONNS" -d 120 -n "$CLUSTER_N" >/dev/null
  for _ in $(seq 1 6000); do d=$(delivered); [ "${d:-0}" -ge "$CLUSTER_N" ] && break; sleep 0.05; done
  t1=$(date +%s.%N)
  R[sq_e2e]=$(awk -v n="$CLUSTER_N" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
  stop
  echo "sqlite sync=full: ingest ${R[sq_in]} req/s, delivered ${R[sq_e2e]}/s" >&2
  pg_start
  for sc in on off; do
    for n in 1 2 3; do cluster_case "$n" "$sc"; done
  done
  pg_stop
  echo
  echo "hookd cluster benchmark — $(date -u +%F), $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on the same machine (fsync on); hbench, $CONNS connections in all, ${SECS}s per ingest run, unique 1.7 KiB events -> noop"
  echo
  echo "| spool | nodes | ingest req/s (unique ids) | delivered/s ($CLUSTER_N events, first request to last delivery) |"
  echo "|---|---:|---:|---:|"
  echo "| SQLite, sync full | 1 | ${R[sq_in]} | ${R[sq_e2e]} |"
  for sc in on off; do
    for n in 1 2 3; do
      echo "| PostgreSQL, synchronous_commit $sc | $n | ${R[pg_in_${n}_$sc]} | ${R[pg_e2e_${n}_$sc]} |"
    done
  done
}

build
[ $# -eq 0 ] && set -- table
for what in "$@"; do
  case $what in
    all) table; compare; callgrind; profile ;;
    table|compare|callgrind|profile|tls|backlog|cluster|isolation) "$what" ;;
    *) echo "unknown: $what" >&2; exit 2 ;;
  esac
done
echo "(configs, logs and profiles: $OUT)" >&2
