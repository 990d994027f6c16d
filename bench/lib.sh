# Helpers shared by the bench scripts (sourced, not run).

wait_line() { # file pattern: waits up to 180 s for a line matching pattern in file
    for _ in $(seq 1 1800); do grep -q "$2" "$1" 2> /dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

# start_harness_backend HARNESS WORK CPU: starts the hello-world backend of the router
# harness (router/examples/bench_routes.rs) on CPU until the script's fd 3 closes (its
# stdin, a fifo). Sets `backend` (host:port) and `backend_pid`.
start_harness_backend() {
    mkfifo "$2/backend.in"
    taskset -c "$3" "$1" backend --threads 0 < "$2/backend.in" > "$2/backend.out" &
    backend_pid=$!
    exec 3> "$2/backend.in"
    wait_line "$2/backend.out" '^backend '
    backend=$(sed -n 's#^backend http://##p' "$2/backend.out")
}

free_port() { # a port free on 127.0.0.1 a moment ago
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_dev BIN WORK: starts `BIN/wfd dev` on fresh ephemeral ports with its data in WORK
# (stopped when the script's fd 3 closes, i.e. when it exits), logs `BIN/wf` in as admin
# (WF_HOME under WORK) and targets org and space `bench`. Sets `api`, `router`
# (host:port) and `wfd_pid`.
start_dev() {
    local bin=$1 work=$2
    export WF_HOME=$work/wf
    mkfifo "$work/stdin"
    "$bin/wfd" dev --data-dir "$work/data" --api-port 0 --router-port 0 \
        --apps-domain apps.bench.local --admin-password bench --stop-on-stdin-close \
        < "$work/stdin" > "$work/wfd.out" 2> "$work/wfd.err" &
    wfd_pid=$!
    exec 3> "$work/stdin"
    wait_line "$work/wfd.out" '^router: '
    api=$(sed -n 's/^api: //p' "$work/wfd.out")
    router=$(sed -n 's#^router: http://\([^ ]*\).*#\1#p' "$work/wfd.out")
    "$bin/wf" api "$api" > /dev/null
    "$bin/wf" auth admin bench > /dev/null
    "$bin/wf" create-org bench > /dev/null
    "$bin/wf" create-space bench -o bench > /dev/null
    "$bin/wf" target -o bench -s bench > /dev/null
}

# start_distributed BIN WORK CELLS: the platform one component per process, as
# tests/src/distributed.rs lays it out: `nats-server`, UAA, one BBS, the controller, one
# router (status server on a port of its own) and CELLS cells (`CELL_MEMORY_MB` and
# `CELL_DISK_MB` each, default 200,000 and 1,000,000: room for thousands of small
# instances and 20 stagings at once), each with its data in WORK, the
# internal APIs on mutual TLS when `wfd certs` exists. Stopped by `stop_platform`. Logs
# `BIN/wf` in as admin (WF_HOME under WORK) and targets org and space `bench` (the org
# without quota limits). Sets
# `api`, `router` (host:port), `router_status`, `bbs_url` and `pids` ("name:pid ...").
start_distributed() {
    local bin=$1 work=$2 cells=$3 nats_port bbs_port uaa_port api_port status_port i
    export WF_HOME=$work/wf
    pids=""
    nats_port=$(free_port); bbs_port=$(free_port); uaa_port=$(free_port)
    api_port=$(free_port); status_port=$(free_port)
    local nats="nats://127.0.0.1:$nats_port" db="sqlite://$work"
    local scheme=http mtls_bbs=() mtls_cc=() mtls_rep=()
    if "$bin/wfd" certs --help > /dev/null 2>&1; then
        "$bin/wfd" certs --host 127.0.0.1 --dir "$work/certs" > /dev/null
        scheme=https
        mtls() { echo --mtls-ca "$work/certs/ca.pem" --mtls-cert "$work/certs/$1.pem" --mtls-key "$work/certs/$1-key.pem"; }
        read -ra mtls_bbs <<< "$(mtls bbs)"; read -ra mtls_cc <<< "$(mtls controller)"
        read -ra mtls_rep <<< "$(mtls rep)"
    fi
    bbs_url="$scheme://127.0.0.1:$bbs_port"
    nats-server -a 127.0.0.1 -p "$nats_port" > "$work/nats.out" 2>&1 &
    pids="nats:$!"
    for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$nats_port") 2> /dev/null && break; sleep 0.1; done
    "$bin/wfd" uaa --database-url "$db/uaa.db?mode=rwc" --listen "127.0.0.1:$uaa_port" \
        --url "http://127.0.0.1:$uaa_port" --admin-password bench \
        --signing-key "$work/uaa-key.pem" > "$work/uaa.out" 2> "$work/uaa.err" &
    pids="$pids uaa:$!"
    wait_line "$work/uaa.out" '^uaa: '
    "$bin/wfd" bbs --database-url "$db/bbs.db?mode=rwc" --listen "127.0.0.1:$bbs_port" \
        --nats-url "$nats" "${mtls_bbs[@]}" > "$work/bbs.out" 2> "$work/bbs.err" &
    pids="$pids bbs:$!"
    wait_line "$work/bbs.out" '^bbs: '
    "$bin/wfd" controller --database-url "$db/cc.db?mode=rwc" --listen "127.0.0.1:$api_port" \
        --external-url "http://127.0.0.1:$api_port" --uaa-url "http://127.0.0.1:$uaa_port" \
        --bbs-url "$bbs_url" --blobstore-dir "$work/blobstore" \
        --signing-secret-file "$work/blob-signing-secret" --apps-domain apps.bench.local \
        --nats-url "$nats" "${mtls_cc[@]}" > "$work/controller.out" 2> "$work/controller.err" &
    pids="$pids controller:$!"
    wait_line "$work/controller.out" '^api: '
    "$bin/wfd" router --listen 127.0.0.1:0 --status-listen "127.0.0.1:$status_port" \
        --nats-url "$nats" > "$work/router.out" 2> "$work/router.err" &
    pids="$pids router:$!"
    wait_line "$work/router.out" '^router: '
    for i in $(seq 1 "$cells"); do
        "$bin/wfd" cell --bbs-url "$bbs_url" --listen 127.0.0.1:0 --cell-id "cell-$i" \
            --memory-mb "${CELL_MEMORY_MB:-200000}" --disk-mb "${CELL_DISK_MB:-1000000}" \
            --data-dir "$work/cell-$i" \
            --nats-url "$nats" "${mtls_rep[@]}" > "$work/cell-$i.out" 2> "$work/cell-$i.err" &
        pids="$pids cell-$i:$!"
        wait_line "$work/cell-$i.out" "^cell cell-$i: rep"
    done
    api="http://127.0.0.1:$api_port"
    router=$(sed -n 's#^router: http://\([^ ]*\).*#\1#p' "$work/router.out")
    router_status="127.0.0.1:$status_port"
    "$bin/wf" api "$api" > /dev/null
    "$bin/wf" auth admin bench > /dev/null
    "$bin/wf" create-org bench > /dev/null
    # Thousands of apps and instances: past the default org quota (10 GiB, 1,000 routes).
    "$bin/wf" create-quota bench-unlimited -m -1 -i -1 -r -1 -s -1 -a -1 > /dev/null
    "$bin/wf" set-quota bench bench-unlimited > /dev/null
    "$bin/wf" create-space bench -o bench > /dev/null
    "$bin/wf" target -o bench -s bench > /dev/null
}

# stop_platform: SIGTERM to every process start_distributed started (by pid), then waits.
stop_platform() {
    local entry
    for entry in $pids; do kill "${entry#*:}" 2> /dev/null || true; done
    wait 2> /dev/null || true
}

# proc_sample PID: "RSS_KIB FDS" of a process from /proc.
proc_sample() {
    local rss fds
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2> /dev/null || echo 0)
    fds=$(ls "/proc/$1/fd" 2> /dev/null | wc -l)
    echo "${rss:-0} $fds"
}
