# Helpers shared by the bench scripts (sourced, not run).

wait_line() { # file pattern: waits up to 180 s for a line matching pattern in file
    for _ in $(seq 1 1800); do grep -q "$2" "$1" 2> /dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

free_port() { # a port free on 127.0.0.1 a moment ago
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
