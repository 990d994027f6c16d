#!/usr/bin/env bash
# Push-to-first-200 per built-in buildpack, side by side: each hello app of
# tests/apps/source (and the prebuilt `hello` fixture for the wasm buildpack) pushed
#   cold     - the first push on a fresh `wfd dev`: tools installed, no buildpack cache;
#   new app  - a second app from the same source: tools there, its own cache empty;
#   restage  - `wf restage` of that app: the buildpack cache is warm;
# with the droplet size from the staging log. Apps without a route (the C worker) are
# timed to their first RUNNING instance instead. `c-zig` is the C worker built with
# `zig cc` (WF_C_TOOLCHAIN=zig) instead of the cell's clang.
#
#   bench/buildpacks.sh                   # debug build (dependencies optimized)
#   PROFILE=release bench/buildpacks.sh
#   APPS="rust-hello static-site" bench/buildpacks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PROFILE=${PROFILE:-debug}
flag=""; [ "$PROFILE" = release ] && flag="--release"
cargo build -q $flag -p wf-cli --bins
cargo build -q --release --target wasm32-wasip2 -p fixture-hello
BIN=target/$PROFILE
SRC=tests/apps/source
APPS=${APPS:-"wasm static-site rust-hello c-worker c-zig js-hello python-hello"}

work=$(mktemp -d)
trap 'kill $wfd_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
start_dev "$BIN" "$work"

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# Waits for the app to answer 200 through the router (or, for a worker, to run).
wait_ready() {
    local name=$1 deadline=$((SECONDS + 300))
    if [ "$name" != "${name#c-}" ]; then
        until "$BIN/wf" app "$name" 2>/dev/null | grep -q 'running'; do
            [ $SECONDS -lt $deadline ] || return 1; sleep 0.05
        done
        return
    fi
    until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $name.apps.bench.local" "http://$router/")" = 200 ]; do
        [ $SECONDS -lt $deadline ] || return 1; sleep 0.01
    done
}

# Runs `wf $@` for app $name, then waits for it; prints "<ms> <droplet bytes>".
timed() {
    local name=$1; shift
    local start; start=$(date +%s%N)
    "$BIN/wf" "$@" > "$work/$name.out" 2>&1 || { echo "wf $* failed:" >&2; tail -20 "$work/$name.out" >&2; return 1; }
    wait_ready "$name"
    echo "$(ms_since "$start") $(sed -n 's/.*Droplet: \([0-9]*\) bytes.*/\1/p' "$work/$name.out" | tail -1)"
}

# Sets `src` to the `wf push` arguments of copy $2 (a or b) of app $1 from path $3.
push_args() {
    local name=$1-$2
    case $1 in
        # A worker (the C one: a preview1 module, no port) has no route and a process
        # check; zig is asked for in the app's environment, through a manifest.
        c-worker) src=("$name" -p "$3" --no-route -u process) ;;
        c-zig)
            printf 'applications:\n- name: %s\n  path: %s\n  no-route: true\n  health-check-type: process\n  env:\n    WF_C_TOOLCHAIN: zig\n' \
                "$name" "$3" > "$work/$name.yml"
            src=(-f "$work/$name.yml") ;;
        *) src=("$name" -p "$3") ;;
    esac
}

printf '%-14s %10s %10s %10s %12s\n' buildpack-app cold-ms new-app-ms restage-ms droplet-KiB
for app in $APPS; do
    case $app in
        wasm) path=target/wasm32-wasip2/release/fixture-hello.wasm ;;
        c-zig) path=$PWD/$SRC/c-worker ;;
        *) path=$SRC/$app ;;
    esac
    [ -e "$path" ] || { echo "$app: $path missing, skipped"; continue; }
    push_args "$app" a "$path"
    read -r cold size < <(timed "${app}-a" push "${src[@]}")
    push_args "$app" b "$path"
    read -r fresh _ < <(timed "${app}-b" push "${src[@]}")
    read -r warm _ < <(timed "${app}-b" restage "${app}-b")
    printf '%-14s %10s %10s %10s %12s\n' "$app" "$cold" "$fresh" "$warm" "$(( ${size:-0} / 1024 ))"
done
