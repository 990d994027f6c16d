#!/usr/bin/env bash
# Push-to-first-200: the time from `wf push` starting to the first 200 answered by the
# app through the router, N times on one `wfd dev` (fresh data dir), for the `hello`
# fixture (a prebuilt wasm, wasm_buildpack) and the static site
# (tests/apps/source/static-site, staticfile_buildpack; target: under 1 s). Prints
# each run and the medians.
#
#   bench/push-to-first-200.sh            # debug build (dependencies optimized)
#   PROFILE=release bench/push-to-first-200.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PROFILE=${PROFILE:-debug}
N=${N:-5}
flag=""; [ "$PROFILE" = release ] && flag="--release"
cargo build -q $flag -p wf-cli --bins
cargo build -q --release --target wasm32-wasip2 -p fixture-hello
WASM=target/wasm32-wasip2/release/fixture-hello.wasm
BIN=target/$PROFILE

work=$(mktemp -d)
trap 'kill $wfd_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
start_dev "$BIN" "$work"

# bench LABEL NAME PATH: pushes PATH as NAME1..NAMEN, timing each to its first 200.
bench() {
    local label=$1 name=$2 path=$3 times=() i start ms sorted
    for i in $(seq 1 "$N"); do
        start=$(date +%s%N)
        "$BIN/wf" push "$name$i" -p "$path" > "$work/$name$i.out"
        until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $name$i.apps.bench.local" "http://$router/")" = 200 ]; do
            sleep 0.01
        done
        ms=$(( ($(date +%s%N) - start) / 1000000 ))
        times+=("$ms")
        echo "$label run $i: push to first 200 in ${ms} ms"
    done
    sorted=($(printf '%s\n' "${times[@]}" | sort -n))
    echo "median push-to-first-200, $label ($PROFILE build, $N runs): ${sorted[$((N / 2))]} ms"
}

bench "hello (wasm)" hello "$WASM"
bench "static site (staticfile)" site tests/apps/source/static-site
