#!/usr/bin/env bash
# Where /updates spends its CPU, per thread of the node: the same wrk load as the /updates
# rows of compare-nginx.sh (bench/load/updates.lua, wrk -t1 -c32, node pinned to core 0 and
# wrk to core 1), with each thread's utime+stime from /proc/<pid>/task/*/stat around the
# measured run, per response. The main thread is the io thread (--threads 1); the check-in
# writer is "checkin-writer"; rocksdb:high is RocksDB's memtable flush.
# Everything runs on 127.0.0.1; the node is stopped by its pid.
#
# Usage: bench/load/updates-threads.sh [--binary PATH] [--devices N] [--duration SECONDS]
#                                      [--server-option 'KEY = VALUE']...
# --devices: distinct device ids the requests cycle through (default 1000000: a new device
#   per request; 1000: devices that keep checking in).
# --server-option: a line added to the node's [server] table, for runs of one binary with
#   and without a setting (e.g. 'background_slice_us = 0'); repeatable.
# Also prints wrk's p50/p90/p99 of the measured run and the host's steal during it.
# Run two builds alternately in one sitting for a before/after (the machine is shared).
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/load/host-steal.sh  # cpu_times, steal_pct
BIN=build/release/bundle-edge
DEVICES=1000000
DURATION=8
SERVER_OPTIONS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=$2; shift 2 ;;
    --devices) DEVICES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --server-option)
      [[ "$2" =~ ^[a-z_]+\ =\ [^[:space:]]+$ ]] || { echo "--server-option must look like 'key = value', not '$2'" >&2; exit 2; }
      SERVER_OPTIONS+=("$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] || { echo "--devices must be a positive integer, not '$DEVICES'" >&2; exit 2; }
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || { echo "--duration must be a positive integer, not '$DURATION'" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no binary at $BIN: cmake --preset release && cmake --build --preset release" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk: tools/setup.sh" >&2; exit 2; }
SERVER_CPU=(); CLIENT_CPU=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c "1-$(($(nproc) - 1))")
fi

WORK=$(mktemp -d /tmp/edge-threads-XXXXXX)
PID=""
cleanup() {
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
$(printf '%s\n' "${SERVER_OPTIONS[@]}")
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

load() {
  UPDATES_DEVICES=$DEVICES "${CLIENT_CPU[@]}" wrk --latency -t1 -c32 -d"$1"s -s bench/load/updates.lua \
    "http://127.0.0.1:$PORT/updates"
}
# Per thread: tid, name, utime+stime in ticks.
threads() {
  for t in /proc/$PID/task/*; do
    echo "$(basename "$t") $(tr ' ' '_' < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
  done | sort
}
load 3 >/dev/null  # warm-up: the device table and the memtables are not empty
threads > "$WORK/before"
s0=$(cpu_times)
load "$DURATION" > "$WORK/wrk.txt"
s1=$(cpu_times)
threads > "$WORK/after"
REQ=$(grep -oP '^\s*\K[0-9]+(?= requests)' "$WORK/wrk.txt")
HZ=$(getconf CLK_TCK)
echo "latency: $(grep -E "^ +(50|90|99)%" "$WORK/wrk.txt" | tr -s " " | tr "\n" " ")"
echo "host steal: $(steal_pct "$s0" "$s1")% of the run"
echo "/updates, $DEVICES devices, ${DURATION}s: $REQ responses ($((REQ / DURATION)) req/s), $(basename "$BIN")"
join "$WORK/before" "$WORK/after" | awk -v r="$REQ" -v hz="$HZ" -v main="$PID" '
  { us = ($5 - $3) * 1e6 / hz / r; total += us
    if (us >= 0.05) printf "  %-8s %-16s %6.2f µs/response\n", ($1 == main ? "io" : $1), $2, us }
  END { printf "  total                     %6.2f µs/response\n", total }'
