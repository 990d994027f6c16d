# Helpers shared by the bench scripts (sourced, not run).

wait_line() { # file pattern: waits up to 180 s for a line matching pattern in file
    for _ in $(seq 1 1800); do grep -q "$2" "$1" 2> /dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
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
