#!/usr/bin/env bash
# HTTP benchmark, every scenario in the same run with the same wrk settings: bare axum; a wf route
# running request_parse → set → json_response (native); the same route with a wasm step in place
# of `set`, with warm (`reuse`) and per-call (`fresh`) instances; the route reading one row with
# step.db_query on SQLite and on PostgreSQL; the native route behind metrics, request-id and
# security-headers middleware; the native route with every run traced (observability.otel); the
# native route with its runs recorded in the run journal on SQLite and on PostgreSQL, and as a
# durable run (each step committed before the next). Then the in-process costs:
# executor overhead per step and wasm call, compile and swap times; message throughput and
# latency per broker. Prints req/s, p50, p99 and
# ratios against axum.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${BENCH_DURATION:-10s}"
CONNECTIONS="${BENCH_CONNECTIONS:-50}"
TARGET="${CARGO_TARGET_DIR:-target}/release"

CARGO="${CARGO:-cargo}"
for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "bench needs $tool: install it (Debian: apt-get install $tool)" >&2; exit 1; }
done
"$CARGO" build --release -q -p wf-host -p wf-tests --bins
make --no-print-directory plugins

pids=()
# Each server gets a data directory of its own (one `wf-host run` holds one at a time).
DATA=$(mktemp -d /tmp/wf-bench-data.XXXXXX)
cleanup() { for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

wait_for() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "server at $1 did not come up" >&2; exit 1; }

measure() { # name url [header] -> "name req/s p50 p99"
  local out
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency ${3:+-H "$3"} "$2")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$1 $rps $p50 $p99"
}

"$TARGET/wf-bench-baseline" 127.0.0.1:18090 & pids+=($!)
BENCH_ADDRESS=127.0.0.1:18091 "$TARGET/wf-host" run --data-dir "$DATA/18091" bench/http-pipeline.yaml --log-level warn & pids+=($!)
BENCH_ADDRESS=127.0.0.1:18092 WASM_POLICY=reuse "$TARGET/wf-host" run --data-dir "$DATA/18092" bench/wasm-pipeline.yaml --log-level warn & pids+=($!)
BENCH_ADDRESS=127.0.0.1:18093 WASM_POLICY=fresh "$TARGET/wf-host" run --data-dir "$DATA/18093" bench/wasm-pipeline.yaml --log-level warn & pids+=($!)
# The same route reading one row by primary key, on SQLite and on PostgreSQL.
rm -f /tmp/wf-bench.db /tmp/wf-bench.db-wal /tmp/wf-bench.db-shm
BENCH_ADDRESS=127.0.0.1:18094 BENCH_DSN=/tmp/wf-bench.db "$TARGET/wf-host" run --data-dir "$DATA/18094" bench/db-pipeline.yaml --log-level warn & pids+=($!)
BENCH_ADDRESS=127.0.0.1:18095 BENCH_DSN="${WF_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}" "$TARGET/wf-host" run --data-dir "$DATA/18095" bench/db-pipeline.yaml --log-level warn & pids+=($!)
# The native route with metrics, request ids and security headers around it.
BENCH_ADDRESS=127.0.0.1:18096 "$TARGET/wf-host" run --data-dir "$DATA/18096" bench/observed-pipeline.yaml --log-level warn & pids+=($!)
# The native route with every run and step traced, spans exported to the baseline server.
BENCH_ADDRESS=127.0.0.1:18097 BENCH_COLLECTOR=http://127.0.0.1:18090 "$TARGET/wf-host" run --data-dir "$DATA/18097" bench/traced-pipeline.yaml --log-level warn & pids+=($!)
# The native route with its runs journaled: SQLite in the data directory (the default), PostgreSQL,
# and durable on SQLite.
BENCH_ADDRESS=127.0.0.1:18101 "$TARGET/wf-host" run --data-dir "$DATA/18101" bench/journaled-pipeline.yaml --log-level warn & pids+=($!)
BENCH_ADDRESS=127.0.0.1:18102 BENCH_DSN="${WF_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}" "$TARGET/wf-host" run --data-dir "$DATA/18102" bench/journaled-postgres-pipeline.yaml --log-level warn & pids+=($!)
BENCH_ADDRESS=127.0.0.1:18103 "$TARGET/wf-host" run --data-dir "$DATA/18103" bench/durable-pipeline.yaml --log-level warn & pids+=($!)
for port in 18090 18091 18092 18093 18094 18095 18096 18097 18101 18102 18103; do wait_for "http://127.0.0.1:$port/orders/42"; curl -s "http://127.0.0.1:$port/orders/42"; echo; done

# One server at a time, so each has the machine to itself.
results=()
results+=("$(measure axum http://127.0.0.1:18090/orders/42)")
results+=("$(measure wf-native http://127.0.0.1:18091/orders/42)")
results+=("$(measure wf-observed http://127.0.0.1:18096/orders/42)")
results+=("$(measure wf-traced http://127.0.0.1:18097/orders/42)")
# The same server continuing callers that do not record: context kept, nothing exported.
results+=("$(measure wf-traced-unsampled http://127.0.0.1:18097/orders/42 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00')")
results+=("$(measure wf-wasm-reuse http://127.0.0.1:18092/orders/42)")
results+=("$(measure wf-wasm-fresh http://127.0.0.1:18093/orders/42)")
results+=("$(measure wf-db-sqlite http://127.0.0.1:18094/orders/42)")
results+=("$(measure wf-db-postgres http://127.0.0.1:18095/orders/42)")
results+=("$(measure wf-journal-sqlite http://127.0.0.1:18101/orders/42)")
results+=("$(measure wf-journal-postgres http://127.0.0.1:18102/orders/42)")
results+=("$(measure wf-durable-sqlite http://127.0.0.1:18103/orders/42)")
base_rps=$(cut -d' ' -f2 <<<"${results[0]}")
native_rps=$(cut -d' ' -f2 <<<"${results[1]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.0f%%", 100*b/a; else print "?" }'; }
printf '%-20s %12s %10s %10s %8s %10s\n' scenario req/s p50 p99 "vs axum" "vs native"
for r in "${results[@]}"; do
  read -r name rps p50 p99 <<<"$r"
  printf '%-20s %12s %10s %10s %7s %10s\n' "$name" "$rps" "$p50" "$p99" "$(ratio "$base_rps" "$rps")" "$(ratio "$native_rps" "$rps")"
done
echo "targets: wf-native >= 60%, wf-wasm-reuse >= 35%, wf-wasm-fresh >= 7% of axum;"
echo "         wf-journal-sqlite >= 40%, wf-journal-postgres >= 20% of wf-native"

"$TARGET/wf-bench-executor" 10 20000
"$TARGET/wf-bench-wasm" 20000
# Messages starting pipelines: in-memory (async and sync), NATS core and JetStream, against the
# same pipeline called directly (NATS at $WF_TEST_NATS_URL, default 127.0.0.1:4222; skipped
# when unreachable).
"$TARGET/wf-bench-messaging" 20000
bench/startup.sh
