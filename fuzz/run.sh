#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each under libFuzzer for a bounded time.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 15 s each, every target)
#
# Stable rustc: RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo-fuzz passes (the
# sanitizer runtimes ship with stable's rust-std). Targets run two at a time (or
# WF_FUZZ_JOBS), each until SECONDS pass; an input that panics, runs over 10 s, or
# makes the process pass 2 GB fails the run: the reproducer is kept under
# fuzz/artifacts/<target>/ and printed, with the command that replays it. New inputs
# go to fuzz/corpus/<target>/ (not committed; the committed seeds are fuzz/seeds/).
#
# The build of the platform's crates with coverage instrumentation is most of the time:
# by default without AddressSanitizer (the code is memory-safe Rust; panics, hangs and
# allocations are what is looked for) and at opt-level 1, which together halve it
# (12 CPU-minutes from scratch instead of 25) and run the targets faster than ASan at
# opt-level 3. WF_FUZZ_SANITIZER=address and WF_FUZZ_OPT_LEVEL=3 give the thorough build
# (ASan works on stable: its runtime ships in rust-std). WF_FUZZ_TARGET_DIR: where to build.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-15}
shift || true
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
sanitizer=${WF_FUZZ_SANITIZER:-none}
export CARGO_PROFILE_RELEASE_OPT_LEVEL=${WF_FUZZ_OPT_LEVEL:-1}
jobs=${WF_FUZZ_JOBS:-2}
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${WF_FUZZ_TARGET_DIR:-fuzz/target}
bin_dir=$target_dir/$triple/release

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install --locked cargo-fuzz" >&2
    exit 1
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
# 16 codegen units: a much faster build of the whole platform than cargo-fuzz's
# default of 1, for slightly slower fuzzing.
cargo fuzz build -O --features libfuzzer --sanitizer "$sanitizer" --target-dir "$target_dir" \
    --codegen-units 16
built=$(date +%s)
echo "fuzz: built ${#targets[@]} targets in $((built - start)) s (sanitizer: $sanitizer, opt-level $CARGO_PROFILE_RELEASE_OPT_LEVEL)"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run_target() {
    local target=$1
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    # -timeout: one input; -rss_limit_mb: the process (an allocation above it fails too).
    "$bin_dir/$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$target/" -print_final_stats=1 \
        >"$logs/$target.log" 2>&1
}

failed=()
pids=()
names=()
wait_one() {
    local pid=${pids[0]} name=${names[0]}
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
    if ! wait "$pid"; then
        failed+=("$name")
    fi
}
for target in "${targets[@]}"; do
    rm -rf "fuzz/artifacts/$target"
    run_target "$target" &
    pids+=($!)
    names+=("$target")
    if [ ${#pids[@]} -ge "$jobs" ]; then
        wait_one
    fi
done
while [ ${#pids[@]} -gt 0 ]; do
    wait_one
done

printf '%-18s %10s %8s %8s\n' target execs exec/s corpus
for target in "${targets[@]}"; do
    log=$logs/$target.log
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
    printf '%-18s %10s %8s %8s\n' "$target" "$(stat number_of_executed_units)" \
        "$(stat average_exec_per_sec)" "$(ls "fuzz/corpus/$target" | wc -l)"
done
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, in $(($(date +%s) - start)) s in all"

if [ ${#failed[@]} -gt 0 ]; then
    for target in "${failed[@]}"; do
        echo
        echo "=== fuzz target $target failed; its output:"
        tail -n 80 "$logs/$target.log"
        for artifact in "fuzz/artifacts/$target"/*; do
            [ -f "$artifact" ] || continue
            echo "--- reproducer $artifact ($(wc -c <"$artifact") bytes), base64:"
            base64 -w 0 "$artifact"
            echo
            echo "--- replay: $bin_dir/$target $artifact"
            echo "    (or: cargo fuzz run -O --features libfuzzer --target-dir $target_dir $target $artifact)"
        done
    done
    echo
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
