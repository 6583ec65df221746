#!/usr/bin/env bash
# Where /updates spends its CPU, per thread of the node: the same wrk load as the /updates
# rows of compare-nginx.sh (bench/load/updates.lua, wrk -t1 -c32, node pinned to core 0 and
# wrk to core 1), with each thread's utime+stime from /proc/<pid>/task/*/stat around the
# measured run, per response. The main thread is the io thread (--threads 1); the check-in
# writer is "checkin-writer"; rocksdb:high is RocksDB's memtable flush.
# Everything runs on 127.0.0.1; the node is stopped by its pid.
#
# Usage: bench/load/updates-threads.sh [--binary PATH] [--devices N] [--duration SECONDS]
#                                      [--server-option 'KEY = VALUE']... [--rounds N]
# --devices: distinct device ids the requests cycle through (default 1000000: a new device
#   per request; 1000: devices that keep checking in).
# --server-option: a line added to the node's [server] table, for runs of one binary with
#   and without a setting (e.g. 'background_slice_us = 0'); repeatable.
# --rounds N: measured runs (default 3); each is followed by the baseline: nginx's tiny
#   `return 200` under the same wrk load, pinned the same way, its CPU per response (DESIGN
#   §8's target: /updates <= 2x of it). Prints each round (wrk's p50/p90/p99, the host's
#   steal), the per-thread breakdown of the median round, and min/median/max of the totals.
# Run two builds alternately in one sitting for a before/after (the machine is shared).
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/load/host-steal.sh  # cpu_times, steal_pct
BIN=build/release/bundle-edge
DEVICES=1000000
DURATION=8
ROUNDS=3
SERVER_OPTIONS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=$2; shift 2 ;;
    --devices) DEVICES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --server-option)
      [[ "$2" =~ ^[a-z_]+\ =\ [^[:space:]]+$ ]] || { echo "--server-option must look like 'key = value', not '$2'" >&2; exit 2; }
      SERVER_OPTIONS+=("$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] || { echo "--devices must be a positive integer, not '$DEVICES'" >&2; exit 2; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer, not '$ROUNDS'" >&2; exit 2; }
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || { echo "--duration must be a positive integer, not '$DURATION'" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no binary at $BIN: cmake --preset release && cmake --build --preset release" >&2; exit 2; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx: tools/setup.sh" >&2; exit 2; }
SERVER_CPU=(); CLIENT_CPU=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c "1-$(($(nproc) - 1))")
fi

WORK=$(mktemp -d /tmp/edge-threads-XXXXXX)
chmod 755 "$WORK"  # nginx workers may run as an unprivileged user
PID=""; NGINX_PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
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

# The baseline: nginx's tiny response on the same core, one worker.
NGINX_PORT=$(free_port)
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:$NGINX_PORT; location = /healthz { return 200 '{"status":"ok"}'; } }
}
NGINX
"${SERVER_CPU[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NGINX_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.05; done

load() {
  UPDATES_DEVICES=$DEVICES "${CLIENT_CPU[@]}" wrk --latency -t1 -c32 -d"$1"s -s bench/load/updates.lua \
    "http://127.0.0.1:$PORT/updates"
}
# CPU ticks (utime+stime) of nginx's master and workers.
nginx_ticks() {
  local total=0 p
  for p in $NGINX_PID $(pgrep -P "$NGINX_PID" || true); do
    [ -r /proc/$p/stat ] && total=$((total + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo $total
}
# Per thread: tid, name, utime+stime in ticks.
threads() {
  for t in /proc/$PID/task/*; do
    echo "$(basename "$t") $(tr ' ' '_' < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
  done | sort
}
HZ=$(getconf CLK_TCK)
load 3 >/dev/null  # warm-up: the device table and the memtables are not empty
SUMMARY=()
for round in $(seq "$ROUNDS"); do
  threads > "$WORK/before.$round"
  s0=$(cpu_times)
  load "$DURATION" > "$WORK/wrk.$round"
  threads > "$WORK/after.$round"
  n0=$(nginx_ticks)
  NOUT=$("${CLIENT_CPU[@]}" wrk -t1 -c32 -d"$DURATION"s "http://127.0.0.1:$NGINX_PORT/healthz")
  n1=$(nginx_ticks)
  s1=$(cpu_times)
  REQ=$(grep -oP '^\s*\K[0-9]+(?= requests)' "$WORK/wrk.$round")
  NREQ=$(echo "$NOUT" | grep -oP '^\s*\K[0-9]+(?= requests)')
  TOTAL=$(join "$WORK/before.$round" "$WORK/after.$round" | awk -v r="$REQ" -v hz="$HZ" '{t += $5 - $3} END {printf "%.2f", t * 1e6 / hz / r}')
  NGINX_US=$(awk -v t=$((n1 - n0)) -v hz="$HZ" -v n="$NREQ" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
  STEAL=$(steal_pct "$s0" "$s1")
  echo "round $round: /updates $REQ responses ($((REQ / DURATION)) req/s), $TOTAL µs/response; nginx tiny $NGINX_US µs/response; $(awk -v a="$TOTAL" -v b="$NGINX_US" 'BEGIN {printf "%.2fx", a / b}'); latency $(grep -E "^ +(50|90|99)%" "$WORK/wrk.$round" | tr -s " " | tr "\n" " "); host steal $STEAL%"
  SUMMARY+=("$TOTAL $NGINX_US $(awk -v a="$TOTAL" -v b="$NGINX_US" 'BEGIN {printf "%.4f", a / b}') $STEAL $round")
done
# mmm COLUMN: "median (min-max)" of one column of SUMMARY.
mmm() { printf '%s\n' "${SUMMARY[@]}" | awk -v c="$1" '{print $c}' | sort -g | awk -v f="$2" '{v[NR] = $1}
  END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf f " (min " f ", max " f ")", m, v[1], v[NR]}'; }
MEDIAN_ROUND=$(printf '%s\n' "${SUMMARY[@]}" | sort -g -k3,3 | sed -n "$(((ROUNDS + 1) / 2))p" | awk '{print $5}')
REQ=$(grep -oP '^\s*\K[0-9]+(?= requests)' "$WORK/wrk.$MEDIAN_ROUND")
echo
echo "$(date -u +%F) $(nproc) cores, $(uname -r), $(basename "$BIN"), /updates, $DEVICES devices, wrk -t1 -c32 -d${DURATION}s, $ROUNDS rounds; baseline: nginx $(nginx -v 2>&1 | sed 's/.*\///') tiny return 200, same wrk, same core, after each round"
echo "/updates CPU per response: $(mmm 1 "%.2f") µs"
echo "nginx tiny CPU per response: $(mmm 2 "%.2f") µs"
echo "ratio /updates / nginx tiny: $(mmm 3 "%.2fx") (DESIGN §8 target: <= 2x)"
echo "host steal: $(mmm 4 "%.1f%%")"
echo "per thread, round $MEDIAN_ROUND (the median ratio):"
join "$WORK/before.$MEDIAN_ROUND" "$WORK/after.$MEDIAN_ROUND" | awk -v r="$REQ" -v hz="$HZ" -v main="$PID" '
  { us = ($5 - $3) * 1e6 / hz / r; total += us
    if (us >= 0.05) printf "  %-8s %-16s %6.2f µs/response\n", ($1 == main ? "io" : $1), $2, us }
  END { printf "  total                     %6.2f µs/response\n", total }'
