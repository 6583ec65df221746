#!/usr/bin/env bash
# Device traffic while the admin API scans: device /updates p99 (wrk -t1 -c32, the load of
# updates-threads.sh over the same devices) without and then with concurrent viewer-token
# scans (GET /v1/admin/apps/<app>/device_index?release=none-such: no device matches, so each
# one reads every device row), in alternating rounds. The node runs one event loop
# (--threads 1), pinned to core 0 with its scan threads; wrk and the scanning clients run
# on the other cores. Everything is on 127.0.0.1; the node is stopped by its pid.
#
# Usage: bench/load/admin-scans.sh [--binary PATH] [--devices N] [--scans N] [--rounds N]
#                                  [--duration SECONDS] [--admin-option 'KEY = VALUE']...
# --devices: devices seeded (relayed check-ins, POST /v1/checkins) and cycled through by
#   the /updates load (default 200000).
# --scans: concurrent scanning clients, each a loop of scans on a keep-alive connection,
#   all with one viewer token (default 4, admin.max_scans_per_token).
# --admin-option: a line added to the node's [admin] table, e.g. 'scan_threads = 0' to run
#   scans on the event loop (what a node without scan threads does); repeatable. A binary
#   that does not know [admin] scan_threads (an older tree) runs its scans on the event loop.
# Prints per round both p99s, their ratio, the scans answered (and any 429), the host's
# steal and the 1-minute load average (the machine's other work, which steal does not show:
# on shared cores it moves both p99s); then the median and min-max over the rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/load/host-steal.sh  # cpu_times, steal_pct
BIN=build/release/bundle-edge
DEVICES=200000
SCANS=4
ROUNDS=5
DURATION=8
ADMIN_OPTIONS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=$2; shift 2 ;;
    --devices) DEVICES=$2; shift 2 ;;
    --scans) SCANS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --admin-option)
      [[ "$2" =~ ^[a-z_]+\ =\ [^[:space:]]+$ ]] || { echo "--admin-option must look like 'key = value', not '$2'" >&2; exit 2; }
      ADMIN_OPTIONS+=("$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for v in DEVICES SCANS ROUNDS DURATION; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "--${v,,} must be a positive integer, not '${!v}'" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "no binary at $BIN: cmake --preset release && cmake --build --preset release" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk: tools/setup.sh" >&2; exit 2; }
SERVER_CPU=(); CLIENT_CPU=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c "1-$(($(nproc) - 1))")
fi

WORK=$(mktemp -d /tmp/edge-scans-XXXXXX)
PID=""
SCANNERS=()
# The scanners (one process, a keep-alive connection per scanner) finish the scan they are
# in, so that none still runs in the next quiet run.
stop_scanners() {
  touch "$WORK/stop"
  for p in "${SCANNERS[@]}"; do wait "$p" 2>/dev/null || true; done
  SCANNERS=()
}
cleanup() {
  [ -d "$WORK" ] && stop_scanners
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PORT=$(free_port); ADMIN=$(free_port)
cat > "$WORK/node.toml" <<TOML
[server]
max_connections = 100000
max_connections_per_ip = 0  # every wrk connection comes from 127.0.0.1
[admin]
$(printf '%s\n' "${ADMIN_OPTIONS[@]}")
[sync]
token = "bench-sync"
[log]
level = "warn"
TOML
"${SERVER_CPU[@]}" "$BIN" --config "$WORK/node.toml" --data "$WORK/var" --listen 127.0.0.1:$PORT \
  --admin-listen 127.0.0.1:$ADMIN --threads 1 --admin-token bench-token >"$WORK/node.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 || { echo "the node did not start:" >&2; cat "$WORK/node.log" >&2; exit 2; }
mkdir -p "$WORK/bundle" && echo '<html>bench</html>' > "$WORK/bundle/index.html"
BUNDLE_EDGE_URL=http://127.0.0.1:$ADMIN BUNDLE_EDGE_TOKEN=bench-token tools/bundle-edge-ctl publish \
  --app com.bench.app --version 1.0.1 --dir "$WORK/bundle" --delta --channel production --public >/dev/null
VIEWER=$(curl -sf -H "Authorization: Bearer bench-token" -H "Content-Type: application/json" \
  --data '{"name":"dash","role":"viewer","apps":["com.bench.app"]}' \
  "http://127.0.0.1:$ADMIN/v1/admin/tokens" | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')

# The devices, with the ids bench/load/updates.lua sends: relayed check-ins, 1000 a batch.
t0=$(date +%s)
python3 - "$PORT" "$DEVICES" <<'PY'
import http.client, json, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
now = int(time.time() * 1000)
for b in range(0, n, 1000):
    batch = [{"app_id": "com.bench.app", "device_id": "0a1b2c3d-1111-4222-8333-%012d" % i,
              "platform": "android", "version_name": "builtin", "version_build": "1.0.0",
              "action": "get", "decision": "", "time_ms": now} for i in range(b, min(n, b + 1000))]
    conn.request("POST", "/v1/checkins", json.dumps({"checkins": batch}),
                 {"Authorization": "Bearer bench-sync", "Content-Type": "application/json",
                  "Idempotency-Key": "bench:1:%d" % (b // 1000 + 1)})
    r = conn.getresponse(); r.read()
    if r.status not in (200, 202):
        sys.exit("seeding: POST /v1/checkins answered %d" % r.status)
PY
SCAN="http://127.0.0.1:$ADMIN/v1/admin/apps/com.bench.app/device_index?release=none-such"
one_scan_ms() {
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "Authorization: Bearer $VIEWER" "$SCAN" |
    awk '{ if ($1 != 200) { print "scan answered " $1 > "/dev/stderr"; exit 1 } printf "%.0f", $2 * 1000 }'
}
one_scan_ms >/dev/null  # the device rows are read once before anything is measured
echo "seeded $DEVICES devices in $(($(date +%s) - t0)) s; one scan alone: $(one_scan_ms) ms; $(basename "$BIN") ${ADMIN_OPTIONS[*]:-}"

load() {
  UPDATES_DEVICES=$DEVICES "${CLIENT_CPU[@]}" wrk --latency -t1 -c32 -d"$1"s -s bench/load/updates.lua \
    "http://127.0.0.1:$PORT/updates"
}
# wrk's p99 in ms.
p99_ms() {
  awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
    printf "%.2f", v * (u == "us" ? 0.001 : u == "s" ? 1000 : 1) }' "$1"
}
start_scanners() {
  rm -f "$WORK/stop" "$WORK/scans"
  "${CLIENT_CPU[@]}" python3 - "$ADMIN" "$VIEWER" "$SCANS" "$WORK" <<'PY' &
import collections, http.client, os, sys, threading
port, token, n, work = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
path = "/v1/admin/apps/com.bench.app/device_index?release=none-such"
counts = collections.Counter()
def scanner():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while not os.path.exists(os.path.join(work, "stop")):
        conn.request("GET", path, headers={"Authorization": "Bearer " + token})
        r = conn.getresponse(); r.read()
        counts[r.status] += 1
threads = [threading.Thread(target=scanner) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
open(os.path.join(work, "scans"), "w").write("%d %d\n" % (counts[200], counts[429]))
PY
  SCANNERS+=($!)
}

load 3 >/dev/null  # warm-up
printf '%-6s %12s %12s %7s %14s %8s %6s\n' round "p99 quiet" "p99 scans" ratio "scans (429)" steal load
: > "$WORK/rows"
for r in $(seq "$ROUNDS"); do
  s0=$(cpu_times)
  load "$DURATION" > "$WORK/quiet.txt"
  start_scanners
  sleep 0.5  # every scanner has a scan in flight
  load "$DURATION" > "$WORK/busy.txt"
  stop_scanners
  s1=$(cpu_times)
  q=$(p99_ms "$WORK/quiet.txt"); b=$(p99_ms "$WORK/busy.txt")
  read -r ok limited < "$WORK/scans"
  ratio=$(awk -v q="$q" -v b="$b" 'BEGIN { printf "%.2f", b / q }')
  steal=$(steal_pct "$s0" "$s1")
  printf '%-6s %10s ms %10s ms %6sx %9s (%s) %7s%% %6s\n' "$r" "$q" "$b" "$ratio" "$ok" "$limited" "$steal" \
    "$(cut -d' ' -f1 /proc/loadavg)"
  echo "$q $b $ratio $steal" >> "$WORK/rows"
done
# Median and min-max of a column of $WORK/rows.
stats() {
  sort -g -k"$1","$1" "$WORK/rows" | awk -v c="$1" '{ v[NR] = $c } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "median %.2f, min %.2f, max %.2f", m, v[1], v[NR] }'
}
echo "/updates p99 without scans (ms): $(stats 1)"
echo "/updates p99 with $SCANS scans (ms): $(stats 2)"
echo "ratio with/without: $(stats 3)"
echo "host steal (%): $(stats 4)"
