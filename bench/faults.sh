#!/usr/bin/env bash
# Fault injection (issue 12): runs tests/tests/faults.rs and prints its per-fault
# tables. Under a steady workload on a distributed platform (GETs through both routers,
# as a load balancer in front of them sends them, about 20 a second; a `wf push` every
# 2 s; the app log line each GET makes), each fault is injected and undone in turn:
#
#   kill -9 of a cell, the active BBS, the controller, UAA, a router, nats-server (each
#   restarted as a supervisor would, after 2 s; NATS at once); the blobstore gone for
#   10 s; PostgreSQL (the BBS, CC and UAA databases, a private server) crashed for 3 s;
#   a fourth cell's disk (a 64 MB tmpfs in a private mount namespace: needs root) full
#   for 15 s; the active BBS's wall clock stepped 2 min ahead, then behind, for 10 s
#   each (libfaketime: apt-get install faketime).
#
# Columns: requests sent from the injection until the platform was healthy again,
# those that failed, time to heal (injection -> every instance running, both routers
# serving, the API answering and a push started after the fault acknowledged, with no
# failure after), pushes acknowledged / failed meanwhile, and what was lost of what had
# been acknowledged: apps or DesiredLRPs, droplets (downloaded and checked against the
# DesiredLRP's sha256), log lines written outside any fault ("quiet", must all arrive)
# and, best effort, log lines written during the fault. The test fails on any loss.
#
#   bench/faults.sh                      # the four tests, ~5.5 min on 2 cores
#   bench/faults.sh kill_9               # only the kill -9 sequence
#
# Needs nats-server; the PostgreSQL row needs PostgreSQL's server programs (initdb,
# pg_ctl; skipped without them unless WF_TEST_POSTGRES_URL is set).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p wf-cli --bins
log=$(mktemp /tmp/wf-faults.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
cargo test -q -p wf-tests --test faults -- --nocapture --test-threads 1 "$@" >"$log" 2>&1 || status=$?
awk '/^FAULTS-REPORT-BEGIN/ { sub(/^FAULTS-REPORT-BEGIN /, "### "); print; print ""; on = 1; next }
     /^FAULTS-REPORT-END/ { on = 0; print ""; next }
     on' "$log"
if [ "$status" != 0 ]; then
    echo "tests/tests/faults.rs failed; its output:" >&2
    grep -v '^\s*$' "$log" | tail -n 80 >&2
fi
exit "$status"
