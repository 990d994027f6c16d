#!/usr/bin/env bash
# Router benchmark (issue 5): a hello-world backend reached three ways, side by side in
# one run, with 100,000 other routes loaded in the router:
#   direct  - wrk -> backend
#   router  - wrk -> wf-router (in-process bus, 100k routes, RTR envelopes drained) -> backend
#   nginx   - wrk -> nginx (Debian's, one worker, keep-alive upstream) -> backend
# Servers are pinned to CPU 0, wrk to CPU 1; 10 s per run at c=1 and c=50, in ROUNDS
# rounds (direct, router and nginx back to back in each, so a ratio compares runs made
# under the same conditions; the summary gives the medians over the rounds). Prints req/s,
# p50/p99 latency, the CPU time the serving process (backend, router, nginx's master and
# worker) spent per request (steadier than req/s on a busy machine), and the ratios
# router/direct and router/nginx.
#
# The backend is the harness' tiny hyper server rather than the `hello` wasm fixture:
# the fixture serves one connection at a time with `Connection: close`, so it would
# measure itself, not the proxy hop.
#
#   bench/router.sh                      # DURATION=10s ROUTES=100000 CONNS="1 50" ROUNDS=3
#   ROUTER_THREADS=1 bench/router.sh     # router on a 1-worker multi-thread runtime (default 0: current thread, like one nginx worker)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DURATION=${DURATION:-10s}
ROUTES=${ROUTES:-100000}
CONNS=${CONNS:-"1 50"}
ROUNDS=${ROUNDS:-3}
ROUTER_THREADS=${ROUTER_THREADS:-0}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

for tool in wrk nginx taskset; do
    command -v "$tool" > /dev/null || { echo "missing $tool (apt-get install -y wrk nginx util-linux)" >&2; exit 1; }
done
cargo build -q --release -p wf-router --example bench_routes
HARNESS=target/release/examples/bench_routes

work=$(mktemp -d)
pids=()
cleanup() {
    for fd in 3 4; do eval "exec $fd>&-" 2> /dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2> /dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
    wait 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT


# Backend and router run until their stdin (a fifo held open here) closes.
start_harness_backend "$HARNESS" "$work" "$SERVER_CPU"
pids+=("$backend_pid")
mkfifo "$work/router.in"

taskset -c "$SERVER_CPU" "$HARNESS" router --backend "$backend" --routes "$ROUTES" \
    --threads "$ROUTER_THREADS" < "$work/router.in" > "$work/router.out" 2> "$work/router.err" &
pids+=($!)
exec 4> "$work/router.in"
wait_line "$work/router.out" '^router '
router=$(sed -n 's#^router http://\([^ ]*\).*#\1#p' "$work/router.out")
status=$(sed -n 's#.* status http://\([^ ]*\).*#\1#p' "$work/router.out")
host=$(sed -n 's#.* host \([^ ]*\)$#\1#p' "$work/router.out")

nginx_port=$(free_port)
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log $work/nginx.access combined buffer=64k flush=1s;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    upstream backend { server $backend; keepalive 128; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
taskset -c "$SERVER_CPU" nginx -c "$work/nginx.conf" -p "$work" > "$work/nginx.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break; sleep 0.1; done

for target in "direct $backend" "router $router" "nginx 127.0.0.1:$nginx_port"; do
    set -- $target
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" "http://$2/")
    [ "$code" = 200 ] || { echo "$1 ($2) answers $code" >&2; exit 1; }
done

# wrk's latency figures carry units (us, ms, s): print them in ms.
to_ms() { awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "%s", v }'; }

# CPU time (user + system, in clock ticks) of processes so far.
cpu_ticks() { awk '{t += $14 + $15} END {print t}' $(printf '/proc/%s/stat ' "$@"); }
clock_ticks=$(getconf CLK_TCK)
router_pid=${pids[1]}
nginx_pids="${pids[2]} $(pgrep -P "${pids[2]}" | tr '\n' ' ')"

declare -A RPS P50 P99 CPU
run() { # name addr conns round
    local threads=1 procs before after key=$1.$3.$4
    case $1 in
        direct) procs=$backend_pid ;;
        router) procs=$router_pid ;;
        nginx) procs=$nginx_pids ;;
    esac
    taskset -c "$LOAD_CPU" wrk -t1 -c"$3" -d2s -H "Host: $host" "http://$2/" > /dev/null
    before=$(cpu_ticks $procs)
    taskset -c "$LOAD_CPU" wrk -t$threads -c"$3" -d"$DURATION" --latency -H "Host: $host" "http://$2/" > "$work/wrk.$key"
    after=$(cpu_ticks $procs)
    CPU[$key]=$(awk -v t=$((after - before)) -v hz="$clock_ticks" '/requests in/ {printf "%.1f", t / hz * 1e6 / $1}' "$work/wrk.$key")
    RPS[$key]=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.$key")
    P50[$key]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$work/wrk.$key")")
    P99[$key]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$work/wrk.$key")")
    local errors
    errors=$(grep -E 'Non-2xx|Socket errors' "$work/wrk.$key" || true)
    [ -z "$errors" ] || echo "  $1 c=$3: $errors" >&2
}

# The median of the numbers on stdin.
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
# The median over the rounds of an awk expression of one round's figures (r, d, n:
# router, direct and nginx req/s; r50, d50, n50, r99, d99, n99: their latencies).
over_rounds() { # conns expression
    for round in $(seq 1 "$ROUNDS"); do
        local k=$1.$round
        awk -v r="${RPS[router.$k]}" -v d="${RPS[direct.$k]}" -v n="${RPS[nginx.$k]}" \
            -v r50="${P50[router.$k]}" -v d50="${P50[direct.$k]}" -v n50="${P50[nginx.$k]}" \
            -v r99="${P99[router.$k]}" -v d99="${P99[direct.$k]}" -v n99="${P99[nginx.$k]}" \
            "BEGIN { printf \"%.4f\\n\", $2 }"
    done | median
}

echo "router benchmark: $ROUTES extra routes, $DURATION per run, servers on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU"
echo "backend $backend, router $router (status $status, threads $ROUTER_THREADS), nginx 127.0.0.1:$nginx_port"
printf '%-8s %4s %5s %12s %10s %10s %12s\n' target conns round 'req/s' 'p50 ms' 'p99 ms' 'cpu us/req'
for c in $CONNS; do
    for round in $(seq 1 "$ROUNDS"); do
        for name in direct router nginx; do
            case $name in
                direct) addr=$backend ;;
                router) addr=$router ;;
                nginx) addr=127.0.0.1:$nginx_port ;;
            esac
            run "$name" "$addr" "$c" "$round"
            k=$name.$c.$round
            printf '%-8s %4s %5s %12s %10s %10s %12s\n' "$name" "$c" "$round" "${RPS[$k]}" "${P50[$k]}" "${P99[$k]}" "${CPU[$k]}"
        done
    done
done
echo
echo "medians over $ROUNDS rounds of each round's ratios (throughput) and of the latency the router adds over direct:"
for c in $CONNS; do
    printf 'c=%-3s router/direct %.2f  router/nginx %.2f  added p50 %.3f ms p99 %.3f ms (nginx adds p50 %.3f ms p99 %.3f ms)\n' "$c" \
        "$(over_rounds "$c" 'r / d')" "$(over_rounds "$c" 'r / n')" \
        "$(over_rounds "$c" 'r50 - d50')" "$(over_rounds "$c" 'r99 - d99')" \
        "$(over_rounds "$c" 'n50 - d50')" "$(over_rounds "$c" 'n99 - d99')"
    for name in direct router nginx; do
        printf '      %-6s cpu us/req %s\n' "$name" \
            "$(for round in $(seq 1 "$ROUNDS"); do echo "${CPU[$name.$c.$round]}"; done | median)"
    done
done
metrics=$(curl -s "http://$status/metrics")
echo
echo "router metrics: $(grep -E '^wf_router_(total_routes|requests_total|responses_5xx_total|access_log_dropped_total) ' <<< "$metrics" | tr '\n' ' ')"
