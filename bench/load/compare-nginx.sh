#!/usr/bin/env bash
# Load benchmark (issue #3): bundle-edge vs nginx on the same bytes, same wrk settings, same
# run. Prints one markdown table: req/s, MB/s, p99 latency, server CPU per response
# (utime+stime of the server processes from /proc, divided by responses), our/nginx ratios,
# and the sendfile-vs-copy ratio. Everything runs on 127.0.0.1 and stops by itself.
#
# Usage: bench/load/compare-nginx.sh [--binary PATH] [--duration SECONDS] [--connections N]
#                                    [--threads N] [--updates-only] [--rounds N]
#                                    [--https | --https-only]
# --updates-only: just the tiny and /updates rows (for before/after runs of the device path).
# --rounds N: each row measured N times, nginx then ours back to back; the table shows the
#   round with the median CPU/resp ratio (default 1, 3 with --updates-only), a second table
#   the min/median/max of both ratios over the rounds with the host's steal; each round is
#   also printed to stderr with both p99s and the host's steal during it.
# The baseline of every row is nginx, measured in the same run, the round just before ours.
# --https: also the HTTPS rows (issue #11): both servers on one self-signed EC P-256
#   certificate, TLS 1.3 with TLS_AES_128_GCM_SHA256 only, keep-alive, same files: 64 KiB
#   GET, 1 MiB GET, 64 KiB Range, tiny, and a row with a new connection (a full handshake)
#   per request. Prints which send path our node ran (kTLS or userspace).
# --https-only: just the HTTPS rows.
# Defaults: build/release/bundle-edge, 10 s per row, 32 connections, 1 server thread
# (and 1 nginx worker): on 2 cores wrk takes the other one.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=build/release/bundle-edge
DURATION=10
CONNS=32
THREADS=1
UPDATES_ONLY=0
ROUNDS=""
HTTPS=0
PLAIN=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --updates-only) UPDATES_ONLY=1; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --https) HTTPS=1; shift ;;
    --https-only) HTTPS=1; PLAIN=0; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
# --updates-only is the before/after run of the device path: three rounds unless told.
[ -n "$ROUNDS" ] || { [ "$UPDATES_ONLY" = 1 ] && ROUNDS=3 || ROUNDS=1; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer, not '$ROUNDS'" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no binary at $BIN: cmake --preset release && cmake --build --preset release" >&2; exit 2; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx: tools/setup.sh" >&2; exit 2; }

WORK=$(mktemp -d /tmp/edge-load-XXXXXX)
chmod 755 "$WORK"  # nginx workers run as an unprivileged user
EDGE_PID=""; NGINX_PID=""
cleanup() {
  [ -n "$EDGE_PID" ] && kill "$EDGE_PID" 2>/dev/null && wait "$EDGE_PID" 2>/dev/null || true
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  sleep 0.2; rm -rf "$WORK"
}
trap cleanup EXIT
HZ=$(getconf CLK_TCK)
# On 2+ cores, pin the servers to core 0 and wrk to the others, so that runs do not depend
# on where the scheduler happens to put them (much less noise on a 2-core machine).
SERVER_CPU=(); CLIENT_CPU=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPU=(taskset -c 0-$((THREADS - 1))); CLIENT_CPU=(taskset -c "$THREADS-$(($(nproc) - 1))")
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# CPU ticks (utime+stime) of a process and its direct children (nginx workers).
cpu_ticks() {
  local pid=$1 total=0 p
  for p in $pid $(pgrep -P "$pid" || true); do
    [ -r /proc/$p/stat ] || continue
    total=$((total + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo $total
}

# One certificate for both servers (EC P-256: what a modern CDN serves).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 644 "$WORK/key.pem"  # nginx workers read it as an unprivileged user
EDGE_TLS_PORT=$(free_port)
NGINX_TLS_PORT=$(free_port)

start_edge() {  # $1: send_mode
  local port admin
  port=$(free_port); admin=$(free_port)
  cat > "$WORK/edge.toml" <<TOML
[server]
send_mode = "$1"
max_connections = 100000
max_connections_per_ip = 0  # every wrk connection comes from 127.0.0.1
[log]
level = "warn"
[tls]
listen = "127.0.0.1:$EDGE_TLS_PORT"
cert_file = "$WORK/cert.pem"
key_file = "$WORK/key.pem"
min_protocol = "TLSv1.3"
ciphersuites = "TLS_AES_128_GCM_SHA256"
TOML
  "${SERVER_CPU[@]}" "$BIN" --config "$WORK/edge.toml" --data "$WORK/var" --listen 127.0.0.1:$port \
    --admin-listen 127.0.0.1:$admin --threads "$THREADS" --admin-token bench-token >"$WORK/edge.log" 2>&1 &
  EDGE_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
  EDGE=http://127.0.0.1:$port; ADMIN=http://127.0.0.1:$admin; EDGE_TLS=https://127.0.0.1:$EDGE_TLS_PORT
}
stop_edge() { kill "$EDGE_PID"; wait "$EDGE_PID" 2>/dev/null || true; EDGE_PID=""; }

mkdir -p "$WORK/www"
head -c $((64 * 1024)) /dev/urandom > "$WORK/www/64k.bin"
head -c $((1024 * 1024)) /dev/urandom > "$WORK/www/1m.bin"
head -c $((16 * 1024 * 1024)) /dev/urandom > "$WORK/www/16m.bin"

NGINX_PORT=$(free_port)
cat > "$WORK/nginx.conf" <<NGINX
worker_processes $THREADS;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 65536; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 100000000;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    root $WORK/www;
    location = /healthz { return 200 '{"status":"ok"}'; }
  }
  server {
    listen 127.0.0.1:$NGINX_TLS_PORT ssl reuseport;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    ssl_session_tickets on;
    root $WORK/www;
    location = /healthz { return 200 '{"status":"ok"}'; }
  }
}
NGINX
"${SERVER_CPU[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NGINX_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
NGINX=http://127.0.0.1:$NGINX_PORT
NGINX_TLS=https://127.0.0.1:$NGINX_TLS_PORT

start_edge sendfile
declare -A SHA
for f in 64k 1m 16m; do
  SHA[$f]=$(curl -sf -X PUT --data-binary @"$WORK/www/$f.bin" -H "Authorization: Bearer bench-token" \
    "$ADMIN/v1/admin/blobs" | sed -E 's/.*"sha256":"([0-9a-f]+)".*/\1/')
done

# cpu_times and steal_pct: the host's steal during each round.
. bench/load/host-steal.sh

# Runs wrk; prints "reqs req/s MB/s p99_ms cpu_us_per_response".
measure() {  # $1 pid, $2 url, rest: extra wrk args
  local pid=$1 url=$2; shift 2
  local before after out reqs rps mbs p99
  before=$(cpu_ticks "$pid")
  out=$("${CLIENT_CPU[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url")
  after=$(cpu_ticks "$pid")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  mbs=$(echo "$out" | awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else if (v ~ /MB/) {sub("MB","",v)} else if (v ~ /KB/) {sub("KB","",v); v/=1024} else {sub("B","",v); v/=1048576} print v*1.048576}')
  p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us/) {sub("us","",v); v/=1000} else if (v ~ /ms/) {sub("ms","",v)} else if (v ~ /s/) {sub("s","",v); v*=1000} print v}')
  if echo "$out" | grep -q "Non-2xx"; then echo "wrk saw non-2xx responses at $url: the figures would be wrong" >&2; exit 1; fi
  echo "$reqs $rps $mbs $p99 $(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz / n * 1e6}')"
}

ROWS=()
SPREADS=()
# mmm: "median (min-max)" of the numbers on stdin.
mmm() { sort -g | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
  printf "%.2fx (%.2f-%.2f)", m, v[1], v[NR]}'; }
row() {  # $1 label, $2 our url, $3 nginx url, rest: wrk args
  # ROUNDS pairs (nginx, then ours, back to back); the row is the pair with the median
  # CPU/resp ratio: on a shared machine, a pair measured minutes apart says more about the
  # neighbours than about the servers.
  local label=$1 ours=$2 theirs=$3; shift 3
  local n e i s0 s1 st pairs=() cpu_ratios=() rps_ratios=() steals=()
  for i in $(seq "$ROUNDS"); do
    s0=$(cpu_times)
    n=$(measure "$NGINX_PID" "$theirs" "$@")
    e=$(measure "$EDGE_PID" "$ours" "$@")
    s1=$(cpu_times)
    st=$(steal_pct "$s0" "$s1")
    steals+=("$st")
    pairs+=("$(awk -v e="${e##* }" -v n="${n##* }" 'BEGIN {printf "%.4f", e / n}')|$e|$n")
    cpu_ratios+=("${pairs[-1]%%|*}")
    rps_ratios+=("$(awk -v e="$(echo "$e" | cut -d' ' -f2)" -v n="$(echo "$n" | cut -d' ' -f2)" 'BEGIN {printf "%.4f", e / n}')")
    # p99 is field 4 of measure's output; steal is CPU time the host gave to others.
    echo "  $label, round $i: CPU/resp ours ${e##* } µs, nginx ${n##* } µs; p99 ours $(echo "$e" | cut -d' ' -f4) ms, nginx $(echo "$n" | cut -d' ' -f4) ms; host steal $st% of the round" >&2
  done
  local median
  median=$(printf '%s\n' "${pairs[@]}" | sort -t'|' -k1,1 -g | sed -n "$(((ROUNDS + 1) / 2))p")
  ROWS+=("$label|${median#*|}")
  SPREADS+=("$label|$ROUNDS|$(printf '%s\n' "${cpu_ratios[@]}" | mmm)|$(printf '%s\n' "${rps_ratios[@]}" | mmm)|$(printf '%s\n' "${steals[@]}" | sort -g | tail -1)")
  echo "measured: $label" >&2
}

if [ "$UPDATES_ONLY" = 0 ] && [ "$PLAIN" = 1 ]; then
  row "blob GET 64 KiB" "$EDGE/v1/blobs/${SHA[64k]}/64k.bin" "$NGINX/64k.bin"
  row "blob GET 1 MiB" "$EDGE/v1/blobs/${SHA[1m]}/1m.bin" "$NGINX/1m.bin"
  row "blob GET 16 MiB" "$EDGE/v1/blobs/${SHA[16m]}/16m.bin" "$NGINX/16m.bin"
  # Random offsets (nginx stalls on delayed ACKs here: its ratio says little about us), and
  # one fixed 64 KiB range of the same blob, where both servers run unstalled.
  row "64 KiB Range of 16 MiB (random offsets)" "$EDGE/v1/blobs/${SHA[16m]}/16m.bin" "$NGINX/16m.bin" -s bench/load/range.lua
  row "64 KiB Range of 16 MiB (fixed offset)" "$EDGE/v1/blobs/${SHA[16m]}/16m.bin" "$NGINX/16m.bin" -s bench/load/range-fixed.lua
fi
if [ "$PLAIN" = 1 ]; then
  row "tiny (/healthz vs return 200)" "$EDGE/healthz" "$NGINX/healthz"
  # /updates: a real decision and a check-in per request, next to nginx's tiny response.
  mkdir -p "$WORK/bundle" && echo '<html>bench</html>' > "$WORK/bundle/index.html"
  BUNDLE_EDGE_URL=$ADMIN BUNDLE_EDGE_TOKEN=bench-token tools/bundle-edge-ctl publish --app com.bench.app \
    --version 1.0.1 --dir "$WORK/bundle" --delta --channel production --public >/dev/null
  row "/updates (decision + check-in) vs tiny" "$EDGE/updates" "$NGINX/healthz" -s bench/load/updates.lua
  # The same from 1000 devices that keep checking in (the common case; the row above, a new
  # device per request, is the worst case and the one DESIGN §8's target is judged on).
  UPDATES_DEVICES=1000 row "/updates, 1000 returning devices, vs tiny" "$EDGE/updates" "$NGINX/healthz" -s bench/load/updates.lua
fi

TLS_PATH=""
if [ "$HTTPS" = 1 ] && [ "$UPDATES_ONLY" = 0 ]; then
  row "HTTPS blob GET 64 KiB" "$EDGE_TLS/v1/blobs/${SHA[64k]}/64k.bin" "$NGINX_TLS/64k.bin"
  row "HTTPS blob GET 1 MiB" "$EDGE_TLS/v1/blobs/${SHA[1m]}/1m.bin" "$NGINX_TLS/1m.bin"
  row "HTTPS 64 KiB Range of 16 MiB" "$EDGE_TLS/v1/blobs/${SHA[16m]}/16m.bin" "$NGINX_TLS/16m.bin" -s bench/load/range.lua
  row "HTTPS tiny" "$EDGE_TLS/healthz" "$NGINX_TLS/healthz"
  # wrk resumes no sessions: every request below is a new connection and a full handshake.
  row "HTTPS new connection per request (full handshake + tiny)" "$EDGE_TLS/healthz" "$NGINX_TLS/healthz" -H "Connection: close"
  TLS_PATH=$(curl -sf -H "Authorization: Bearer bench-token" "$ADMIN/metrics" |
    awk -F'[{}" ]+' '/^edge_tls_connections_total/ {n[$3]=$NF} END {printf "ktls %d, userspace %d", n["ktls"], n["userspace"]}')
fi

# Copy path, for what zero-copy buys (one round: it is context, not a target).
COPY_1M="0 1 0 0 0"; COPY_64K="0 1 0 0 0"; COPY_STEAL=""
if [ "$UPDATES_ONLY" = 0 ] && [ "$PLAIN" = 1 ]; then
  stop_edge
  start_edge copy
  s0=$(cpu_times)
  COPY_1M=$(measure "$EDGE_PID" "$EDGE/v1/blobs/${SHA[1m]}/1m.bin")
  COPY_64K=$(measure "$EDGE_PID" "$EDGE/v1/blobs/${SHA[64k]}/64k.bin")
  COPY_STEAL=$(steal_pct "$s0" "$(cpu_times)")
fi

echo
echo "$(date -u +%F) $(nproc) cores, $(uname -r), nginx $(nginx -v 2>&1 | sed 's/.*\///'), wrk -t1 -c$CONNS -d${DURATION}s, server threads=$THREADS, rounds=$ROUNDS (the table: the round with the median CPU ratio; baseline: nginx in the same round)"
if [ -n "$TLS_PATH" ]; then
  echo "HTTPS: TLS 1.3, TLS_AES_128_GCM_SHA256, EC P-256 certificate, $(openssl version | cut -d' ' -f1-2); our TLS connections by send path: $TLS_PATH (kernel ULPs: $(cat /proc/sys/net/ipv4/tcp_available_ulp))"
fi
echo
echo "| workload | ours req/s | nginx req/s | ours MB/s | nginx MB/s | ours p99 ms | nginx p99 ms | ours CPU µs/resp | nginx CPU µs/resp | req/s ratio | CPU/resp ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do
  IFS='|' read -r label e n <<<"$r"
  read -r _ ers emb ep99 ecpu <<<"$e"
  read -r _ nrs nmb np99 ncpu <<<"$n"
  awk -v l="$label" -v ers="$ers" -v nrs="$nrs" -v emb="$emb" -v nmb="$nmb" -v ep="$ep99" -v np="$np99" \
      -v ec="$ecpu" -v nc="$ncpu" 'BEGIN {printf "| %s | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f | %.1f | %.1f | %.2fx | %.2fx |\n", l, ers, nrs, emb, nmb, ep, np, ec, nc, ers/nrs, ec/nc}'
done
echo
echo "| workload | rounds | CPU/resp ratio: median (min-max) | req/s ratio: median (min-max) | host steal, worst round |"
echo "|---|---|---|---|---|"
for r in "${SPREADS[@]}"; do
  IFS='|' read -r label n cpu rps st <<<"$r"
  echo "| $label | $n | $cpu | $rps | $st% |"
done
read -r _ crs _ _ ccpu <<<"$COPY_1M"
read -r _ c64rs _ _ c64cpu <<<"$COPY_64K"
for r in "${ROWS[@]}"; do
  IFS='|' read -r label e n <<<"$r"
  read -r _ ers _ _ ecpu <<<"$e"
  case "$label" in
    "blob GET 1 MiB") awk -v a="$ers" -v b="$crs" -v c="$ecpu" -v d="$ccpu" -v st="$COPY_STEAL" 'BEGIN {printf "\nsendfile vs copy (1 round, host steal %s%%), 1 MiB GET: req/s %.2fx, CPU/resp %.2fx (copy: %.0f req/s, %.1f µs/resp)\n", st, a/b, c/d, b, d}' ;;
    "blob GET 64 KiB") awk -v a="$ers" -v b="$c64rs" -v c="$ecpu" -v d="$c64cpu" 'BEGIN {printf "sendfile vs copy, 64 KiB GET: req/s %.2fx, CPU/resp %.2fx (copy: %.0f req/s, %.1f µs/resp)\n", a/b, c/d, b, d}' ;;
  esac
done
