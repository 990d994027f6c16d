#!/usr/bin/env bash
# Cloud Controller API under load (issue 6): on one `wfd dev` (fresh data dir), N
# concurrent clients create APPS apps, then `wrk` (pinned to CPU 1, the platform to
# CPU 0) lists them for 10 s at c=1 and c=20: the first page and a deep page of
# `GET /v3/apps`, and `GET /v3/apps/:guid`. Prints requests/s and latency p50/p99,
# and the creation rate.
#
#   bench/api.sh                        # 10,000 apps, 20 creating clients
#   APPS=1000 CLIENTS=8 bench/api.sh
#   PROFILE=release bench/api.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
PROFILE=${PROFILE:-debug}
APPS=${APPS:-10000}
CLIENTS=${CLIENTS:-20}
DURATION=${DURATION:-10s}
flag=""; [ "$PROFILE" = release ] && flag="--release"
cargo build -q $flag -p wf-cli --bins
BIN=target/$PROFILE

work=$(mktemp -d)
trap 'kill $wfd_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export WF_HOME=$work/wf
mkfifo "$work/stdin"
taskset -c 0 "$BIN/wfd" dev --data-dir "$work/data" --api-port 0 --router-port 0 \
    --apps-domain apps.bench.local --admin-password bench --stop-on-stdin-close \
    < "$work/stdin" > "$work/wfd.out" 2> "$work/wfd.err" &
wfd_pid=$!
exec 3> "$work/stdin"
wait_line "$work/wfd.out" '^router: '
api=$(sed -n 's/^api: //p' "$work/wfd.out")
"$BIN/wf" api "$api" > /dev/null
"$BIN/wf" auth admin bench > /dev/null
"$BIN/wf" create-org bench > /dev/null
"$BIN/wf" create-space bench -o bench > /dev/null
token=$("$BIN/wf" oauth-token)
space=$("$BIN/wf" curl "/v3/spaces?names=bench" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["guid"])')

# APPS apps from CLIENTS threads; prints the rate and one app's guid.
read -r rate guid < <(API="$api" TOKEN="$token" SPACE="$space" APPS="$APPS" CLIENTS="$CLIENTS" python3 - <<'PY'
import json, os, threading, time, urllib.request
api, token, space = os.environ["API"], os.environ["TOKEN"], os.environ["SPACE"]
apps, clients = int(os.environ["APPS"]), int(os.environ["CLIENTS"])
guids, errors = [], []
def create(start):
    for i in range(start, apps, clients):
        body = json.dumps({"name": f"app-{i}", "relationships": {"space": {"data": {"guid": space}}}}).encode()
        req = urllib.request.Request(f"{api}/v3/apps", data=body, method="POST",
                                     headers={"Authorization": token, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                guids.append(json.load(resp)["guid"])
        except Exception as e:  # counted and reported, never silent
            errors.append(str(e))
t0 = time.time()
threads = [threading.Thread(target=create, args=(c,)) for c in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.time() - t0
if errors:
    raise SystemExit(f"{len(errors)} creations failed, e.g. {errors[0]}")
print(f"{apps / elapsed:.0f} {guids[0]}")
PY
)
echo "created $APPS apps with $CLIENTS clients: $rate apps/s"

run() { # name conns path
    local out
    out=$(taskset -c 1 wrk -t1 -c"$2" -d"$DURATION" --latency -H "Authorization: $token" "$api$3")
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
    p50=$(awk '$1 == "50%" {print $2}' <<< "$out")
    p99=$(awk '$1 == "99%" {print $2}' <<< "$out")
    printf '| %-28s | %5s | %10s | %9s | %9s |\n' "$1" "$2" "$rps" "$p50" "$p99"
}
echo
echo "| request ($APPS apps) | conns | req/s | p50 | p99 |"
echo "|---|---|---|---|---|"
deep=$(( APPS / 50 / 2 ))
for c in 1 20; do
    run "GET /v3/apps (page 1 of 50)" "$c" "/v3/apps?per_page=50"
    run "GET /v3/apps (page $deep)" "$c" "/v3/apps?per_page=50&page=$deep"
    run "GET /v3/apps/:guid" "$c" "/v3/apps/$guid"
done
