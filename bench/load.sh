#!/usr/bin/env bash
# Load (issue 12): APPS apps pushed by CLIENTS concurrent `wf` clients (each its own
# WF_HOME and login) onto a distributed platform of CELLS cells (bench/lib.sh's
# start_distributed), each app the `handler` fixture (a wasi:http component: the cheap
# kind) with INSTANCES instances. Prints pushes/s, p50/p99/max push time, failed pushes,
# how many apps answer 200 through the router, then the instances the router has per
# cell and how long they took to be routed. Then the RSS and open descriptors of every
# component.
#
#   bench/load.sh                                   # APPS=1000 CLIENTS=20 CELLS=3 INSTANCES=1
#   APPS=1000 INSTANCES=10 bench/load.sh            # 10,000 instances across 3 cells
#   SOAK=10m bench/load.sh                          # then bench/soak.sh on that platform
#   PROFILE=debug APPS=100 bench/load.sh
#
# BIN (default target/$PROFILE) takes prebuilt `wf`/`wfd` instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PROFILE=${PROFILE:-release}
APPS=${APPS:-1000}
CLIENTS=${CLIENTS:-20}
CELLS=${CELLS:-3}
INSTANCES=${INSTANCES:-1}
MEMORY=${MEMORY:-16M}
DISK=${DISK:-16M}
FIXTURE=${FIXTURE:-handler}
if [ -z "${BIN:-}" ]; then
    flag=""; [ "$PROFILE" = release ] && flag="--release"
    cargo build -q $flag -p wf-cli --bins
    BIN=target/$PROFILE
fi
cargo build -q --release --target wasm32-wasip2 --target-dir target/wasm-fixtures \
    -p "fixture-$FIXTURE"
WASM=$PWD/target/wasm-fixtures/wasm32-wasip2/release/fixture_$FIXTURE.wasm
[ -f "$WASM" ] || WASM=$PWD/target/wasm-fixtures/wasm32-wasip2/release/fixture-$FIXTURE.wasm
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
trap 'stop_platform; rm -rf "$work"' EXIT
start=$(date +%s%N)
start_distributed "$BIN" "$work" "$CELLS"
echo "platform: $CELLS cells, up in $(( ($(date +%s%N) - start) / 1000000 )) ms ($PROFILE build, load average $(cut -d' ' -f1-3 /proc/loadavg))"

# client C: logs in with a WF_HOME of its own, pushes apps C, C+CLIENTS, ... and
# writes "ms status" per push to work/times-C.
client() {
    local c=$1 i t0 status
    export WF_HOME=$work/wf-$c
    "$BIN/wf" api "$api" > /dev/null
    "$BIN/wf" auth admin bench > /dev/null
    "$BIN/wf" target -o bench -s bench > /dev/null
    for ((i = c; i < APPS; i += CLIENTS)); do
        t0=$(date +%s%N)
        status=0
        "$BIN/wf" push "app-$i" -f "$work/manifest.yml" -p "$WASM" \
            > "$work/push-$i.out" 2>&1 || status=$?
        echo "$(( ($(date +%s%N) - t0) / 1000000 )) $status" >> "$work/times-$c"
    done
}

{
    echo "applications:"
    for ((i = 0; i < APPS; i++)); do
        printf -- '- name: app-%d\n  instances: %d\n  memory: %s\n  disk_quota: %s\n' \
            "$i" "$INSTANCES" "$MEMORY" "$DISK"
    done
} > "$work/manifest.yml"
echo "pushing $APPS apps ($FIXTURE, $INSTANCES instance(s) of $MEMORY memory and $DISK disk each) with $CLIENTS clients"
t0=$(date +%s%N)
clients=()
for ((c = 0; c < CLIENTS; c++)); do client "$c" & clients+=($!); done
wait "${clients[@]}"
push_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
cat "$work"/times-* > "$work/times"
failed=$(awk '$2 != 0' "$work/times" | wc -l)
sort -n "$work/times" | awk -v total_ms="$push_ms" '
    { t[NR] = $1 }
    END {
        p50 = t[int(NR * 0.50 + 0.5)]; p99 = t[int(NR * 0.99 + 0.5)]
        printf "pushes: %d in %.1f s = %.2f pushes/s; push time p50 %d ms, p99 %d ms, max %d ms\n",
            NR, total_ms / 1000, NR * 1000 / total_ms, p50, p99, t[NR]
    }'
echo "failed pushes: $failed"
awk '$2 != 0 {print $0}' "$work/times" | head -3
for f in $(grep -L '^OK\|state' "$work"/push-*.out 2> /dev/null | head -3); do
    echo "--- $f"; tail -5 "$f"
done

# Every app through the router (retrying each for up to 60 s: routes are registered
# as instances start).
answering=0
for ((i = 0; i < APPS; i++)); do
    for _ in $(seq 1 600); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: app-$i.apps.bench.local" "http://$router/")
        [ "$code" = 200 ] && { answering=$((answering + 1)); break; }
        sleep 0.1
    done
done
echo "apps answering 200 through the router: $answering of $APPS"

# routed: endpoints in the router's route table.
routed() {
    curl -s "http://$router_status/routes" |
        python3 -c 'import json, sys; print(sum(len(e) for e in json.load(sys.stdin).values()))'
}
# running_per_cell: "cell-1=N cell-2=M ..." RUNNING instances, from each rep's /metrics.
running_per_cell() {
    local i rep tls=()
    [ -d "$work/certs" ] && tls=(--cacert "$work/certs/ca.pem" --cert "$work/certs/controller.pem" --key "$work/certs/controller-key.pem")
    for i in $(seq 1 "$CELLS"); do
        rep=$(sed -n "s/^cell cell-$i: rep //p" "$work/cell-$i.out")
        echo -n "cell-$i=$(curl -s "${tls[@]}" "$rep/metrics" | awk '/^wf_cell_lrp_instances\{.*phase="RUNNING"/ {print $2}') "
    done
}
want=$((answering * INSTANCES))
t0=$(date +%s%N)
for _ in $(seq 1 600); do
    routed=$(routed)
    [ "$routed" -ge "$want" ] && break
    sleep 1
done
echo "instances routed: $routed of $want, $(( ($(date +%s%N) - t0) / 1000000 )) ms after the apps answered; RUNNING per cell: $(running_per_cell)"

echo "component RSS / open descriptors after the load:"
for entry in $pids; do
    read -r rss fds <<< "$(proc_sample "${entry#*:}")"
    printf '  %-12s %8d KiB %6d fds\n' "${entry%%:*}" "$rss" "$fds"
done

if [ -n "${SOAK:-}" ]; then
    # The routed apps (a failed push has no route), SOAK_APPS of them (default all).
    hosts=$(curl -s "http://$router_status/routes" | python3 -c '
import json, sys
print(" ".join(sorted(k.split("/")[0] for k in json.load(sys.stdin))))' |
        tr ' ' '\n' | head -n "${SOAK_APPS:-$APPS}" | tr '\n' ' ')
    PIDS="$pids" ROUTER="$router" HOSTS="$hosts" DURATION="$SOAK" bench/soak.sh
fi
