#!/usr/bin/env bash
# Log pipeline benchmark (issue 9): how many lines per second one cell ships to the log
# cache with nothing lost, and what is lost under overload. `wfd dev` runs the hostile
# fixture; `GET /flood?lines=N&rate=R` makes an instance print N short lines ("flood
# line 12345") at R lines a second (batches every 10 ms), or as fast as it can without
# `rate`. Before and after each flood the collector view (`/metrics/platform`) is read:
# the cell's app log lines admitted and dropped by the instance's log limiter, and the
# log cache's envelopes ingested and stream losses. A flood is over when the ingested
# count has not moved for 0.5 s; lines/s is what the log cache ingested over that time,
# loss % what of the N lines never reached it.
#
# Two paths, each at a few rates (DURATION seconds each) and unpaced (MAX_LINES lines):
#   capped - `wf scale APP -l 1M`: the default rate, 1 MiB/s, whose burst is then 1 MiB
#            too (the burst is capped at the rate); each line costs 256 B on top of its
#            bytes, so some 3,850 of these lines a second
#   raw    - the limit raised with `wf scale APP -l 1G`, so what is measured is the
#            pipeline (instance -> limiter buffer -> bus -> log cache)
#
#   bench/logs.sh                 # RATES="2000 5000 10000 20000 50000 100000" DURATION=2 MAX_LINES=100000 INSTANCES=1
#   PROFILE=debug bench/logs.sh   # the dev profile's wfd (dependencies optimized, ours not)
#
# Figures: docs/performance.md, "Log pipeline".
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RATES=${RATES:-"2000 5000 10000 20000 50000 100000"}
DURATION=${DURATION:-2}
MAX_LINES=${MAX_LINES:-100000}
INSTANCES=${INSTANCES:-1}
PROFILE=${PROFILE:-release}

if [ "$PROFILE" = release ]; then
    cargo build -q --release -p wf-cli --bins
else
    cargo build -q -p wf-cli --bins
fi
cargo build -q --release --target wasm32-wasip2 -p fixture-hostile
WASM=target/wasm32-wasip2/release/fixture-hostile.wasm
BIN=target/$PROFILE

work=$(mktemp -d)
cleanup() {
    exec 3>&- 2> /dev/null || true
    [ -n "${wfd_pid:-}" ] && wait "$wfd_pid" 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
start_dev "$BIN" "$work"
"$BIN/wf" push flood -p "$WASM" -m 64M > /dev/null

run_path() { # path limit
    local path=$1 limit=$2
    "$BIN/wf" scale flood -l "$limit" > /dev/null
    "$BIN/wf" restart flood > /dev/null
    for n in $INSTANCES; do
        "$BIN/wf" scale flood -i "$n" > /dev/null
        WF_TOKEN=$("$BIN/wf" oauth-token) API=$api ROUTER=$router HOST=flood.apps.bench.local \
            PATH_NAME=$path INSTANCES_N=$n RATES=$RATES DURATION=$DURATION MAX_LINES=$MAX_LINES python3 - << 'PY'
import json, os, re, threading, time, urllib.request

api, router, host = os.environ["API"], os.environ["ROUTER"], os.environ["HOST"]
token, path = os.environ["WF_TOKEN"], os.environ["PATH_NAME"]
instances = int(os.environ["INSTANCES_N"])

def metrics():
    req = urllib.request.Request(api + "/metrics/platform", headers={"Authorization": token})
    text = urllib.request.urlopen(req, timeout=30).read().decode()
    want = {
        "log_cache_envelopes_ingested_total": "ingested",
        "log_cache_stream_dropped_total": "stream_dropped",
        "wf_cell_app_log_lines_total": "admitted",
        "wf_cell_app_log_lines_dropped_total": "dropped",
    }
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)\{[^}]*\} (\S+)$", line)
        if m and m.group(1) in want:
            out[want[m.group(1)]] = float(m.group(2))
    return out

def wait_running():
    deadline = time.time() + 60
    while time.time() < deadline:
        text = urllib.request.urlopen(urllib.request.Request(api + "/metrics/platform",
            headers={"Authorization": token}), timeout=30).read().decode()
        m = re.search(r'wf_cell_lrp_instances\{[^}]*phase="RUNNING"\} (\d+)', text)
        if m and int(m.group(1)) >= instances:
            return
        time.sleep(0.5)
    raise SystemExit("instances did not start")

def flood(lines, rate):
    # Each request goes to the instance the router picks (round robin), so that
    # concurrent floods land on different instances.
    query = f"lines={lines}" + (f"&rate={rate}" if rate else "")
    req = urllib.request.Request(f"http://{router}/flood?{query}", headers={"Host": host})
    urllib.request.urlopen(req, timeout=300).read()

wait_running()
runs = [(int(r), int(r) * int(os.environ["DURATION"])) for r in os.environ["RATES"].split()]
runs.append((0, int(os.environ["MAX_LINES"])))
for rate, size in runs:
    per, per_rate = size // instances, rate // instances
    time.sleep(1.5)  # let the previous flood's drop notices and gauges settle
    before = metrics()
    started = time.time()
    threads = [threading.Thread(target=flood, args=(per, per_rate)) for _ in range(instances)]
    for t in threads: t.start()
    last, last_change = before["ingested"], time.time()
    while True:
        time.sleep(0.05)
        now = metrics()["ingested"]
        if now != last:
            last, last_change = now, time.time()
        elif time.time() - last_change > 0.5 and not any(t.is_alive() for t in threads):
            break
    for t in threads: t.join()
    after = metrics()
    offered = per * instances
    ingested = after["ingested"] - before["ingested"]
    shipped = min(ingested, offered)
    secs = last_change - started
    offered_rate = str(rate) if rate else "max"
    print(f"{path:6} {instances:9} {offered_rate:>8} {offered:9} {secs:8.2f} {shipped/secs:10.0f}"
          f" {after['admitted']-before['admitted']:9.0f} {after['dropped']-before['dropped']:9.0f}"
          f" {ingested:9.0f} {after['stream_dropped']-before['stream_dropped']:7.0f}"
          f" {100*(offered-shipped)/offered:7.2f}", flush=True)
PY
    done
}

printf '%-6s %9s %8s %9s %8s %10s %9s %9s %9s %7s %7s\n' path instances offered lines seconds 'lines/s' \
    admitted dropped ingested lagged 'loss %'
run_path capped 1M
run_path raw 1G
