#!/usr/bin/env bash
# Handler benchmark (issue 3): the `handler` fixture (a hello-world wasi:http component)
# served by the cell of a real `wfd dev`, side by side with the same component under
# `wasmtime serve` (wasmtime-cli 48.0.8, installed if missing), in one run:
#   cell        - wrk -> the instance's port on the cell (a fresh instance per request)
#   cell-router - wrk -> the router -> the instance's port
#   reuse       - wrk -> the port of the same app pushed with WF_HANDLER_REUSE=true
#   reuse-router
#   wasmtime    - wrk -> wasmtime serve (a fresh instance per request, its default)
#   wasmtime-reuse - wrk -> wasmtime serve --max-instance-reuse-count 1000000000
# Servers (wfd, wasmtime serve) are pinned to CPU 0, wrk to CPU 1; 10 s per run at c=1
# and c=50. Prints req/s, p50/p99 latency and the ratios cell/wasmtime.
#
# Then cold start: the first byte of a handler app with no live instance (every idle
# handler app: the cell instantiates per request from the cached, compiled component),
# measured by curl's time to first byte on a fresh connection: the app's very first
# request after it started, then the median and p99 of COLD_N single requests.
#
#   bench/handler-throughput.sh                 # DURATION=10s CONNS="1 50" COLD_N=200
#   PROFILE=debug bench/handler-throughput.sh   # the debug build (deps optimized)
#   WASMTIME=none bench/handler-throughput.sh   # the cell alone (no wasmtime-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DURATION=${DURATION:-10s}
CONNS=${CONNS:-"1 50"}
COLD_N=${COLD_N:-200}
PROFILE=${PROFILE:-release}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WASMTIME_VERSION=48.0.8

for tool in wrk taskset curl python3; do
    command -v "$tool" > /dev/null || { echo "missing $tool" >&2; exit 1; }
done
WASMTIME=${WASMTIME:-$(command -v wasmtime || echo "$HOME/.cargo/bin/wasmtime")}
if [ "$WASMTIME" != none ] && ! "$WASMTIME" --version 2> /dev/null | grep -q "$WASMTIME_VERSION"; then
    echo "installing wasmtime-cli $WASMTIME_VERSION (compiles for a while)" >&2
    cargo install -q wasmtime-cli@"$WASMTIME_VERSION" --locked
    WASMTIME=$HOME/.cargo/bin/wasmtime
fi
flag=""; [ "$PROFILE" = release ] && flag="--release"
cargo build -q $flag -p wf-cli --bins
cargo build -q --release --target wasm32-wasip2 -p fixture-handler
WASM=target/wasm32-wasip2/release/fixture_handler.wasm
BIN=target/$PROFILE

work=$(mktemp -d)
pids=()
cleanup() {
    exec 3>&- 2> /dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
    wait 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT


export WF_HOME=$work/wf
mkfifo "$work/stdin"
taskset -c "$SERVER_CPU" "$BIN/wfd" dev --data-dir "$work/data" --api-port 0 --router-port 0 \
    --apps-domain apps.bench.local --admin-password bench --stop-on-stdin-close \
    < "$work/stdin" > "$work/wfd.out" 2> "$work/wfd.err" &
pids+=($!)
exec 3> "$work/stdin"
wait_line "$work/wfd.out" '^router: '
api=$(sed -n 's/^api: //p' "$work/wfd.out")
router=$(sed -n 's#^router: http://\([^ ]*\).*#\1#p' "$work/wfd.out")
wf() { "$BIN/wf" "$@"; }
wf api "$api" > /dev/null
wf auth admin bench > /dev/null
wf create-org bench > /dev/null
wf create-space bench -o bench > /dev/null
wf target -o bench -s bench > /dev/null

# The port of app $1's first instance on the cell, from the process stats.
instance_addr() {
    local guid
    guid=$(wf curl "/v3/apps?names=$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["guid"])')
    wf curl "/v3/apps/$guid/processes/web/stats" | python3 -c '
import json, sys
i = json.load(sys.stdin)["resources"][0]
print("%s:%s" % (i["host"], i["instance_ports"][0]["external"]))'
}

# Time to first byte of one GET on a fresh connection, in ms.
ttfb() { curl -s -o /dev/null -w '%{time_starttransfer}\n' "http://$1/" | awk '{printf "%.3f\n", $1 * 1000}'; }

wf push h -p "$WASM" > "$work/push.h"
cell=$(instance_addr h)
cold_first=$(ttfb "$cell")
for _ in $(seq 1 "$COLD_N"); do ttfb "$cell"; done | sort -n > "$work/cold"
cold_p50=$(awk -v n="$COLD_N" 'NR == int(n * 0.5) + 1' "$work/cold")
cold_p99=$(awk -v n="$COLD_N" 'NR == int(n * 0.99) + 1' "$work/cold")

wf push hr -p "$WASM" --no-start > "$work/push.hr"
wf set-env hr WF_HANDLER_REUSE true > /dev/null
wf start hr > "$work/start.hr"
reuse=$(instance_addr hr)
[ "$(curl -s "http://$reuse/count")" != "$(curl -s "http://$reuse/count")" ] \
    || { echo "the reuse app does not keep its instance" >&2; exit 1; }

TARGETS="cell cell-router reuse reuse-router"
if [ "$WASMTIME" != none ]; then
    TARGETS+=" wasmtime wasmtime-reuse"
    wasmtime_port=$(free_port)
    taskset -c "$SERVER_CPU" "$WASMTIME" serve -Scli --addr "127.0.0.1:$wasmtime_port" "$WASM" \
        > /dev/null 2> "$work/wasmtime.err" &
    pids+=($!)
    wasmtime_reuse_port=$(free_port)
    taskset -c "$SERVER_CPU" "$WASMTIME" serve -Scli --addr "127.0.0.1:$wasmtime_reuse_port" \
        --max-instance-reuse-count 1000000000 "$WASM" > /dev/null 2> "$work/wasmtime-reuse.err" &
    pids+=($!)
    for port in "$wasmtime_port" "$wasmtime_reuse_port"; do
        for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
    done
fi

# wrk's latency figures carry units (us, ms, s): print them in ms.
to_ms() { awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "%s", v }'; }

declare -A ADDR HOST RPS P50 P99
ADDR[cell]=$cell; ADDR[cell-router]=$router; ADDR[reuse]=$reuse; ADDR[reuse-router]=$router
ADDR[wasmtime]=127.0.0.1:${wasmtime_port:-}; ADDR[wasmtime-reuse]=127.0.0.1:${wasmtime_reuse_port:-}
HOST[cell]=h.apps.bench.local; HOST[cell-router]=h.apps.bench.local
HOST[reuse]=hr.apps.bench.local; HOST[reuse-router]=hr.apps.bench.local
HOST[wasmtime]=localhost; HOST[wasmtime-reuse]=localhost
for name in $TARGETS; do
    body=$(curl -s -H "Host: ${HOST[$name]}" "http://${ADDR[$name]}/")
    [ "$body" = "hello from handler 0" ] || { echo "$name (${ADDR[$name]}) answers '$body'" >&2; exit 1; }
done

run() { # name conns
    local out=$work/wrk.$1.$2
    taskset -c "$LOAD_CPU" wrk -t1 -c"$2" -d2s -H "Host: ${HOST[$1]}" "http://${ADDR[$1]}/" > /dev/null
    taskset -c "$LOAD_CPU" wrk -t1 -c"$2" -d"$DURATION" --latency -H "Host: ${HOST[$1]}" "http://${ADDR[$1]}/" > "$out"
    RPS[$1.$2]=$(awk '/^Requests\/sec/ {print $2}' "$out")
    P50[$1.$2]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    P99[$1.$2]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    local errors
    errors=$(grep -E 'Non-2xx|Socket errors' "$out" || true)
    [ -z "$errors" ] || echo "  $1 c=$2: $errors" >&2
}

echo "handler benchmark ($PROFILE build): $DURATION per run, servers on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU"
echo "cell h $cell, reuse hr $reuse, router $router"
[ "$WASMTIME" = none ] || echo "wasmtime serve 127.0.0.1:$wasmtime_port, reusing 127.0.0.1:$wasmtime_reuse_port ($("$WASMTIME" --version))"
printf '%-15s %4s %12s %10s %10s\n' target conns 'req/s' 'p50 ms' 'p99 ms'
for c in $CONNS; do
    for name in $TARGETS; do
        run "$name" "$c"
        printf '%-15s %4s %12s %10s %10s\n' "$name" "$c" "${RPS[$name.$c]}" "${P50[$name.$c]}" "${P99[$name.$c]}"
    done
done
echo
if [ "$WASMTIME" = none ]; then
    echo "no wasmtime serve run: no ratios"
else
    echo "ratios (throughput): fresh instances over wasmtime serve's, reused over its reused:"
    for c in $CONNS; do
        line="c=$c"
        for pair in cell:wasmtime cell-router:wasmtime reuse:wasmtime-reuse reuse-router:wasmtime-reuse; do
            local_name=${pair%%:*}; base=${pair#*:}
            line+=$(awk -v n="$local_name" -v b="$base" -v a="${RPS[$local_name.$c]}" -v w="${RPS[$base.$c]}" \
                'BEGIN { printf "  %s/%s %.2f", n, b, a / w }')
        done
        echo "$line"
    done
fi
echo
echo "cold start (time to first byte, fresh connection, app with no live instance):"
echo "  first request after the app started: $cold_first ms"
echo "  $COLD_N single requests: p50 $cold_p50 ms, p99 $cold_p99 ms (target: under 5 ms)"
