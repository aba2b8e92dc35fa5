#!/usr/bin/env bash
# HTTP benchmark: bare axum vs a wf route running request_parse → set → json_response, measured
# with wrk on loopback in the same run. Prints req/s, p50, p99 and the ratio.
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

pids=()
cleanup() { for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_for() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "server at $1 did not come up" >&2; exit 1; }

measure() { # name url -> "name req/s p50 p99"
  local out
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$2")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$1 $rps $p50 $p99"
}

"$TARGET/wf-bench-baseline" 127.0.0.1:18090 & pids+=($!)
BENCH_ADDRESS=127.0.0.1:18091 "$TARGET/wf-host" run bench/http-pipeline.yaml --log-level warn & pids+=($!)
wait_for http://127.0.0.1:18090/orders/1
wait_for http://127.0.0.1:18091/orders/1
curl -s http://127.0.0.1:18090/orders/42; curl -s http://127.0.0.1:18091/orders/42

base=$(measure "axum" http://127.0.0.1:18090/orders/42)
wf=$(measure "wf-pipeline" http://127.0.0.1:18091/orders/42)
printf '%-14s %12s %10s %10s\n' scenario req/s p50 p99
printf '%-14s %12s %10s %10s\n' $base
printf '%-14s %12s %10s %10s\n' $wf
awk -v a="$(cut -d' ' -f2 <<<"$base")" -v b="$(cut -d' ' -f2 <<<"$wf")" 'BEGIN { if (a > 0) printf "ratio wf/axum: %.0f%% (target >= 60%%)\n", 100*b/a; else print "wrk reported no rate" }'

"$TARGET/wf-bench-executor" 10 20000
