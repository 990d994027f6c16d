#!/usr/bin/env bash
# The resource cache (issue 6): `wf push` of an app with a large file (SIZE_MB of
# random data beside the hello fixture's wasm) to a fresh `wfd dev`, then of the same
# files as a second app, whose push names the cached files instead of sending them.
# Prints each push's time and bytes uploaded.
#
#   bench/resource-cache.sh               # SIZE_MB=50, debug build
#   PROFILE=release SIZE_MB=200 bench/resource-cache.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PROFILE=${PROFILE:-debug}
SIZE_MB=${SIZE_MB:-50}
flag=""; [ "$PROFILE" = release ] && flag="--release"
cargo build -q $flag -p wf-cli --bins
cargo build -q --release --target wasm32-wasip2 -p fixture-hello
BIN=target/$PROFILE

work=$(mktemp -d)
trap 'exec 3>&- 2> /dev/null || true; wait 2> /dev/null || true; rm -rf "$work"' EXIT
start_dev "$BIN" "$work"
mkdir -p "$work/app/static"
cp target/wasm32-wasip2/release/fixture-hello.wasm "$work/app/app.wasm"
head -c $((SIZE_MB << 20)) /dev/urandom > "$work/app/static/big.bin"

printf '%-8s %10s %16s\n' push ms uploaded-bytes
for name in first second; do
    start=$(date +%s%N)
    "$BIN/wf" push "rc-$name" -p "$work/app" > "$work/$name.out" 2>&1 \
        || { cat "$work/$name.out" >&2; exit 1; }
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    printf '%-8s %10s %16s\n' "$name" "$ms" "$(sed -n 's/^Uploading files (\([0-9]*\) bytes).*/\1/p' "$work/$name.out")"
done
