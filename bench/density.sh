#!/usr/bin/env bash
# Density of one cell (issue 3): how many idle handler apps and how many idle server
# instances the cell's executor holds, with the resident memory per instance
# (`host/benches/density.rs`, in-process, the cell's own executor and handler server;
# the pool sized as the cell sizes it for this machine's memory). Each kind runs in a
# process of its own. The open-file limit is raised to its hard limit first: an idle
# handler app holds one descriptor (its listening socket), a server instance three (its
# socket and its two preopened directories).
#
#   bench/density.sh                          # HANDLERS=10000 SERVERS=2000 STEP=1000
#   MEMORY_MB=16384 SERVERS=4000 bench/density.sh servers
set -euo pipefail
cd "$(dirname "$0")/.."
KINDS=${*:-handlers servers}
ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n)"
cargo bench -q -p wf-host --bench density --no-run
for kind in $KINDS; do
    cargo bench -q -p wf-host --bench density -- "$kind"
done
