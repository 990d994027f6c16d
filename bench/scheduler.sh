#!/usr/bin/env bash
# Scheduler benchmark (issue 4): bbs/examples/simulate.rs on SQLite and, when a PostgreSQL
# server is given, on PostgreSQL, with the figures side by side: placement from empty,
# one convergence pass at steady state, re-placement after 10% of the cells vanish, and
# the latency of the cells' BBS calls.
#
#   bench/scheduler.sh                                  # 100 cells, 10,000 instances
#   CELLS=1000 LRPS=250000 bench/scheduler.sh           # Diego's published scale
#   bench/scheduler.sh --postgres postgres://postgres@127.0.0.1:5432/postgres
#   WF_TEST_POSTGRES_URL=postgres://... bench/scheduler.sh -- --bbs-api
#
# Arguments after `--` go to the harness as they are. On PostgreSQL each run gets a fresh
# database (`wf_sim_<pid>`, dropped afterwards) on the given server, created with psql.
set -euo pipefail
cd "$(dirname "$0")/.."
CELLS=${CELLS:-100}
LRPS=${LRPS:-10000}
POSTGRES=${WF_TEST_POSTGRES_URL:-}
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
        --postgres) POSTGRES=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "usage: $0 [--postgres URL] [-- harness flags]" >&2; exit 2 ;;
    esac
done

cargo build -q --release -p wf-bbs --example simulate
HARNESS=target/release/examples/simulate
work=$(mktemp -d)
pg_db=""
cleanup() {
    [ -n "$pg_db" ] && psql -q "$POSTGRES" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

run() { # name [harness flags...]
    local name=$1
    shift
    echo "== $name"
    # The harness exits 1 when a phase timed out; its partial figures still count.
    "$HARNESS" --cells "$CELLS" --lrps "$LRPS" "$@" "${EXTRA[@]}" | tee "$work/$name.out" || true
    sed -n '/^--$/,$p' "$work/$name.out" | sed 1d > "$work/$name.results"
}

run sqlite
names=(sqlite)
if [ -n "$POSTGRES" ]; then
    pg_db="wf_sim_$$"
    psql -q "$POSTGRES" -c "CREATE DATABASE $pg_db" > /dev/null
    # The server URL (no query string) with its database swapped for the fresh one.
    run postgres --database-url "${POSTGRES%/*}/$pg_db"
    names+=(postgres)
fi

echo
echo "scheduler benchmark: $CELLS cells, $LRPS instances"
printf '%-28s' figure
for name in "${names[@]}"; do printf '%12s' "$name"; done
echo
for figure in desire_s placement_s convergence_s replacement_s replacement_convergence_s \
    claim_p50_ms claim_p99_ms start_p50_ms start_p99_ms presence_p50_ms presence_p99_ms; do
    printf '%-28s' "$figure"
    for name in "${names[@]}"; do
        value=$(awk -v f="$figure" '$1 == f {print $2}' "$work/$name.results")
        printf '%12s' "${value:--}"
    done
    echo
done
