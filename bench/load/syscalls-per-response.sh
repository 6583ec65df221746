#!/usr/bin/env bash
# Syscalls per blob response, counted (deterministic where CPU figures are not): a node with
# one server thread, a 1 MiB and a 16 MiB blob uploaded and read once (warm), then strace on
# every thread of the node around N GETs of each on one keep-alive connection. Prints the
# calls by name, per response ("in all" also holds the timeout sweep and the disk-guard
# thread's periodic calls during the GETs).
#
# Usage: bench/load/syscalls-per-response.sh [--binary PATH] [--requests N]
# Defaults: build/release/bundle-edge, 10 requests. Needs strace and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=build/release/bundle-edge
N=10
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=$2; shift 2 ;;
    --requests) N=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "no binary at $BIN: cmake --preset release && cmake --build --preset release" >&2; exit 2; }
command -v strace >/dev/null || { echo "needs strace (apt-get install strace)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/edge-syscalls-XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
PORT=$(free_port); ADMIN=$(free_port)
printf '[log]\nlevel = "warn"\n' > "$WORK/edge.toml"
"$BIN" --config "$WORK/edge.toml" --data "$WORK/var" --listen 127.0.0.1:$PORT \
  --admin-listen 127.0.0.1:$ADMIN --threads 1 --admin-token bench-token >"$WORK/edge.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.05; done

for size in 1 16; do
  head -c $((size << 20)) /dev/urandom > "$WORK/blob"
  sha=$(curl -sf -X PUT --data-binary @"$WORK/blob" -H "Authorization: Bearer bench-token" \
    "http://127.0.0.1:$ADMIN/v1/admin/blobs" | sed -E 's/.*"sha256":"([0-9a-f]+)".*/\1/')
  url="http://127.0.0.1:$PORT/v1/blobs/$sha"
  curl -sf -o /dev/null "$url"  # warm
  strace -f -qq -p "$(ls /proc/$PID/task | paste -sd,)" -o "$WORK/trace" 2>/dev/null &
  tracer=$!
  sleep 1  # attached
  args=(); for _ in $(seq "$N"); do args+=(-o /dev/null "$url"); done
  curl -sf "${args[@]}"
  sleep 0.3; kill -INT $tracer; wait $tracer 2>/dev/null || true
  echo "$size MiB GET, per response ($N on one keep-alive connection):"
  # strace's table predates cachestat (451): it prints it as syscall_0x1c3.
  grep -v 'resumed>' "$WORK/trace" | sed -E 's/^[0-9]+ +//; s/\(.*//; s/^syscall_0x1c3$/cachestat/' |
    sort | uniq -c | sort -rn | awk -v n="$N" '{printf "  %8.1f %s\n", $1 / n, $2; t += $1} END {printf "  %8.1f in all\n", t / n}'
done
