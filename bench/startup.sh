#!/usr/bin/env bash
# Start-up to ready and idle memory of `wf-host run`: the hello example, and an app with 10
# modules and 3 components whose compiled code is cached (the second start). Prints
# milliseconds from spawn to the first answered request, and RSS after start.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p "$WORK/components"
for c in sentiment alert_classify pii_redact; do cp "plugins/dist/$c.wasm" "$WORK/components/"; done
cat > "$WORK/app.yaml" <<'YAML'
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:18099"}}
  - {name: routes, type: http.router}
  - {name: health, type: health.checker}
  - {name: schemas, type: api.schemas}
  - {name: bus, type: messaging.broker}
  - {name: audit, type: messaging.handler}
  - {name: ok, type: http.handler}
  - {name: transform, type: data.transformer}
  - {name: wasm, type: wasm.components, config: {dir: components, data_dir: data, defaults: {policy: reuse}}}
  - {name: hello, type: http.handler, config: {body: {hello: true}}}
workflows:
  http:
    routes:
      - {method: GET, path: /ok, handler: ok}
      - method: POST
        path: /feedback
        steps:
          - {name: score, type: sentiment}
YAML

# start FILE URL -> "ms rss_kib"
start() {
  local t0 t1
  t0=$(date +%s%N)
  "$TARGET/wf-host" run "$1" --log-level warn & pid=$!
  until curl -sf -o /dev/null "$2"; do sleep 0.002; done
  t1=$(date +%s%N)
  sleep 1
  echo "$(( (t1 - t0) / 1000000 )) $(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

read -r ms rss <<<"$(PORT=18098 start example/hello/app.yaml http://127.0.0.1:18098/readyz)"
echo "hello example:                   ready in ${ms} ms, idle RSS $((rss / 1024)) MiB"
start "$WORK/app.yaml" http://127.0.0.1:18099/readyz >/dev/null   # compiles and caches the components
read -r ms rss <<<"$(start "$WORK/app.yaml" http://127.0.0.1:18099/readyz)"
echo "10 modules + 3 cached components: ready in ${ms} ms, idle RSS $((rss / 1024)) MiB"
