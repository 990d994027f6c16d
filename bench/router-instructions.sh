#!/usr/bin/env bash
# Instructions the router runs a request (issue 5): the router of bench/router.sh's
# harness under valgrind's callgrind, 1,000 routes, `wrk -c50` for a fixed time after a
# warm-up. Counting instructions in user space is deterministic (repeat runs agree
# within about 1%), where CPU time on a shared machine varies by 10-20% from run to
# run, so it decides an A/B of a change to the request path; bench/router.sh gives the
# throughput. With REVS="rev1 rev2 ..." it builds and counts each git revision in turn
# (in a scratch worktree) as well as the working tree.
#
#   bench/router-instructions.sh                    # the working tree
#   REVS="HEAD~3 HEAD" bench/router-instructions.sh  # two revisions, then the working tree
#   KEEP=1 ...                                      # keeps the callgrind files (callgrind_annotate)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DURATION=${DURATION:-8s}
for tool in wrk valgrind callgrind_control taskset; do
    command -v "$tool" > /dev/null || { echo "missing $tool (apt-get install -y wrk valgrind util-linux)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
    wait 2> /dev/null || true
    git worktree remove --force "$work/tree" 2> /dev/null || true
    [ -n "${KEEP:-}" ] && echo "callgrind files kept in $work" || rm -rf "$work"
}
trap cleanup EXIT

build() { # dir name target-dir -> path of its bench_routes. Revisions share one target
    # directory (only what changed between them is rebuilt), apart from the working
    # tree's: cargo would take the binary another checkout wrote there for its own.
    CARGO_TARGET_DIR=$3 cargo build -q --release --manifest-path "$1/Cargo.toml" \
        -p wf-router --example bench_routes
    cp "$3/release/examples/bench_routes" "$work/bench_routes.$2"
    echo "$work/bench_routes.$2"
}

harnesses=()
for rev in ${REVS:-}; do
    git worktree add -q --detach "$work/tree" "$rev"
    harnesses+=("$rev=$(build "$work/tree" "$(git rev-parse --short "$rev")" "$PWD/target/revisions")")
    git worktree remove --force "$work/tree"
done
harnesses+=("working-tree=$(build . work "$PWD/target")")

start_harness_backend "${harnesses[0]#*=}" "$work" 0
pids+=("$backend_pid")

printf '%-14s %10s %14s\n' target requests instr/request
for entry in "${harnesses[@]}"; do
    name=${entry%%=*} bin=${entry#*=}
    rm -f "$work/router.in"; mkfifo "$work/router.in"
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$name.%p" \
        "$bin" router --backend "$backend" --routes 1000 --threads 0 \
        < "$work/router.in" > "$work/router.out" 2> "$work/router.err" &
    vg=$!
    exec 4> "$work/router.in"
    wait_line "$work/router.out" '^router '
    router=$(sed -n 's#^router http://\([^ ]*\).*#\1#p' "$work/router.out")
    host=$(sed -n 's#.* host \([^ ]*\)$#\1#p' "$work/router.out")
    taskset -c 1 wrk -t1 -c50 -d3s -H "Host: $host" "http://$router/" > /dev/null
    callgrind_control -z "$vg" > /dev/null 2>&1
    taskset -c 1 wrk -t1 -c50 -d"$DURATION" -H "Host: $host" "http://$router/" > "$work/wrk.out"
    callgrind_control -d "$vg" > /dev/null 2>&1
    exec 4>&-
    wait "$vg" 2> /dev/null || true
    requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
    instructions=$(grep -h '^summary:\|^totals:' "$work"/callgrind."$name".*.1 | head -1 | awk '{print $2}')
    printf '%-14s %10s %14s\n' "$name" "$requests" "$((instructions / requests))"
done
