#!/usr/bin/env bash
# User-space instructions per tiny request (DESIGN §8): bundle-edge's /healthz vs nginx's
# `return 200`, under valgrind --tool=callgrind (instruction counts are repeatable, unlike
# time on a shared machine). Counters are zeroed after a warm-up, then N requests go over
# one keep-alive connection, then the counters are dumped: Ir / N. --rounds R (default 3) repeats
# zero/drive/dump R times in the same processes; prints min/median/max of each server's figure,
# the baseline (nginx, same run) and the host's steal (which moves time, not instruction counts).
# Usage: bench/load/callgrind-healthz.sh [--binary PATH] [--requests N] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=build/release/bundle-edge
N=20000
ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=$2; shift 2 ;;
    --requests) N=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer, not '$ROUNDS'" >&2; exit 2; }
. bench/load/host-steal.sh  # cpu_times, steal_pct
WORK=$(mktemp -d /tmp/edge-cg-XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; sleep 0.5; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Sends n GETs of `path` over one connection, one at a time (keep-alive, not pipelined).
drive() {  # $1 port, $2 path, $3 n
  python3 - "$1" "$2" "$3" <<'PY'
import socket, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
req = ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode()
for _ in range(n):
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += s.recv(4096)
s.close()
PY
}

measure() {  # $1 pid, $2 port, $3 path, $4 out file; prints ROUNDS figures, one per line
  local pid=$1 port=$2 path=$3 out=$4 f
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port$path" >/dev/null 2>&1 && break; sleep 0.1; done
  drive "$port" "$path" 500            # warm-up
  for _ in $(seq "$ROUNDS"); do
    callgrind_control -z "$pid" >/dev/null
    drive "$port" "$path" "$N"
    callgrind_control -d "$pid" >/dev/null
    sleep 1
    # The newest dump holds only the N requests (counters were zeroed before them).
    f=$(ls -t "$out".* 2>/dev/null | head -1)
    awk -v n="$N" '/^summary:|^totals:/ {printf "%.0f\n", $2 / n; exit}' "$f"
  done
}
# mmm: "median (min-max)" of the numbers on stdin.
mmm() { sort -g | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
  printf "%.0f (min %.0f, max %.0f)", m, v[1], v[NR]}'; }
S0=$(cpu_times)

EP=$(free_port); AP=$(free_port)
valgrind --tool=callgrind --callgrind-out-file="$WORK/edge.cg" "$BIN" --data "$WORK/var" \
  --listen 127.0.0.1:$EP --admin-listen 127.0.0.1:$AP --threads 1 --admin-token t >"$WORK/edge.log" 2>&1 &
PIDS+=($!)
EDGE_IRS=$(measure "${PIDS[-1]}" "$EP" /healthz "$WORK/edge.cg")

NP=$(free_port)
cat > "$WORK/nginx.conf" <<NGINX
master_process off;
daemon off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:$NP; location = /healthz { return 200 '{"status":"ok"}'; } }
}
NGINX
valgrind --tool=callgrind --callgrind-out-file="$WORK/nginx.cg" nginx -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx.log" 2>&1 &
PIDS+=($!)
NGINX_IRS=$(measure "${PIDS[-1]}" "$NP" /healthz "$WORK/nginx.cg")
STEAL=$(steal_pct "$S0" "$(cpu_times)")
EDGE_IR=$(echo "$EDGE_IRS" | mmm | cut -d' ' -f1)
NGINX_IR=$(echo "$NGINX_IRS" | mmm | cut -d' ' -f1)

echo "$(date -u +%F) callgrind, $N keep-alive requests after a 500-request warm-up, $ROUNDS rounds; baseline: nginx in the same run; host steal $STEAL% (time only: instruction counts do not move with it)"
echo "| server | user-space instructions per /healthz request: median (min, max) |"
echo "|---|---|"
echo "| bundle-edge | $(echo "$EDGE_IRS" | mmm) |"
echo "| nginx (return 200) | $(echo "$NGINX_IRS" | mmm) |"
awk -v a="$EDGE_IR" -v b="$NGINX_IR" 'BEGIN {printf "ratio of the medians: %.2fx\n", a/b}'
