#!/usr/bin/env bash
# Soak (issue 12): steady traffic for DURATION (default 10m) through the router to the
# apps HOSTS, at about RATE requests a second (`wrk` on CONNS connections, each pausing
# between requests), sampling every component's resident memory and open descriptors
# from /proc every INTERVAL seconds. Prints the series, first/after-warm-up/last/max per
# component, wrk's latency and errors, and a verdict: a component is flat when, from the
# end of the warm-up (WARMUP seconds, default a tenth of DURATION, at least one
# interval) to the end, its RSS grew by at most RSS_SLACK_PCT percent (default 10) or
# 16 MiB, whichever is more, and its descriptors by at most FD_SLACK (default 16).
#
#   bench/soak.sh                      # starts a platform: bench/load.sh with APPS=100
#   DURATION=60s RATE=100 bench/soak.sh
#   PIDS="router:123 cell-1:456" ROUTER=127.0.0.1:8080 HOSTS="a.example b.example" bench/soak.sh
#
# Without PIDS it runs bench/load.sh (APPS=100 CLIENTS=10 CELLS=3 by default), which
# calls back here once its apps answer.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DURATION=${DURATION:-10m}
if [ -z "${PIDS:-}" ]; then
    APPS=${APPS:-100} CLIENTS=${CLIENTS:-10} SOAK=$DURATION exec bench/load.sh
fi
RATE=${RATE:-200}
CONNS=${CONNS:-10}
INTERVAL=${INTERVAL:-10}
RSS_SLACK_PCT=${RSS_SLACK_PCT:-10}
FD_SLACK=${FD_SLACK:-16}

seconds() { # 90 / 90s / 10m / 1h -> seconds
    case $1 in
        *h) echo $(( ${1%h} * 3600 )) ;; *m) echo $(( ${1%m} * 60 )) ;;
        *s) echo "${1%s}" ;; *) echo "$1" ;;
    esac
}
duration_s=$(seconds "$DURATION")
WARMUP=${WARMUP:-$(( duration_s / 10 > INTERVAL ? duration_s / 10 : INTERVAL ))}
work=$(mktemp -d)
trap 'kill $wrk_pid 2> /dev/null || true; rm -rf "$work"' EXIT

# wrk paces each connection: CONNS connections at RATE/s is one request per
# CONNS*1000/RATE ms on each, minus the time the request took (about: wrk's delay
# does not know it, so the rate is a ceiling).
delay_ms=$(( CONNS * 1000 / RATE ))
hosts_lua=$(for h in $HOSTS; do printf '"%s",' "$h"; done)
cat > "$work/soak.lua" <<EOF
local hosts = {${hosts_lua}}
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", "/", { Host = hosts[(n % #hosts) + 1] })
end
delay = function() return ${delay_ms} end
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("requests: %d (%.1f/s), non-2xx/3xx: %d, socket errors: connect %d read %d write %d timeout %d\n",
        summary.requests, summary.requests / (summary.duration / 1e6), e.status,
        e.connect, e.read, e.write, e.timeout))
    io.write(string.format("latency: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
        latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
EOF
echo "soak: $DURATION at ~$RATE req/s on $CONNS connections to $(wc -w <<< "$HOSTS") apps via $ROUTER; samples every ${INTERVAL}s, warm-up ${WARMUP}s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
wrk -t1 -c "$CONNS" -d "${duration_s}s" --timeout 10s -s "$work/soak.lua" "http://$ROUTER/" \
    > "$work/wrk.out" 2>&1 &
wrk_pid=$!

names=$(for entry in $PIDS; do echo -n "${entry%%:*} "; done)
start=$(date +%s)
: > "$work/samples"
while :; do
    t=$(( $(date +%s) - start ))
    line="$t"
    for entry in $PIDS; do line="$line $(proc_sample "${entry#*:}")"; done
    echo "$line" >> "$work/samples"
    kill -0 "$wrk_pid" 2> /dev/null || break
    sleep "$INTERVAL"
done
wait "$wrk_pid" || true
cat "$work/wrk.out"

echo "samples (RSS MiB / open fds):"
printf '%6s' "t(s)"; for n in $names; do printf ' %16s' "$n"; done; echo
awk '{ printf "%6d", $1; for (i = 2; i < NF; i += 2) printf " %9.1f / %4d", $i / 1024, $(i + 1); print "" }' "$work/samples"

echo "per component: RSS first / after warm-up / last / max (MiB), fds first / after warm-up / last / max, verdict"
verdict=flat
col=2
for n in $names; do
    result=$(awk -v c="$col" -v warm="$WARMUP" -v pct="$RSS_SLACK_PCT" -v fdslack="$FD_SLACK" '
        NR == 1 { r0 = $c; f0 = $(c + 1) }
        $1 >= warm && !w { w = 1; rw = $c; fw = $(c + 1) }
        { r = $c; f = $(c + 1); if (r > rmax) rmax = r; if (f > fmax) fmax = f }
        END {
            if (!w) { rw = r; fw = f }
            slack = rw * pct / 100; if (slack < 16384) slack = 16384
            ok = (r - rw <= slack) && (f - fw <= fdslack)
            printf "%.1f / %.1f / %.1f / %.1f   %d / %d / %d / %d   %s\n",
                r0 / 1024, rw / 1024, r / 1024, rmax / 1024, f0, fw, f, fmax, ok ? "flat" : "GROWING"
        }' "$work/samples")
    printf '  %-12s %s\n' "$n" "$result"
    [[ $result == *GROWING ]] && verdict=GROWING
    col=$((col + 2))
done
echo "verdict: $verdict (RSS within ${RSS_SLACK_PCT}% or 16 MiB, fds within $FD_SLACK, after ${WARMUP}s)"
