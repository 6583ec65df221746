#!/usr/bin/env python3
"""Memory per idle keep-alive connection (DESIGN §8 target: <= 16 KiB): starts bundle-edge
on loopback, opens N connections that each make one request and then stay idle, and reports
the server's RSS growth per connection (user space; kernel socket buffers are not in RSS).
The baseline, measured the same way in the same run: nginx (one worker, `return 200`), the
RSS growth of its worker. Each round starts both servers afresh; prints min/median/max over
the rounds and the host's steal.

Usage: bench/load/idle-memory.py [path-to-bundle-edge] [N] [--rounds R]"""
import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import cpu_times, spread, steal_pct  # noqa: E402


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def growth_per_connection(port, pid, n):
    """Opens 50 warm-up connections, then n more; RSS growth of `pid` per connection (KiB)."""
    def connect():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1000)
        return s
    socks = [connect() for _ in range(50)]  # warm the allocator up first
    time.sleep(0.3)
    before = rss_kib(pid)
    socks += [connect() for _ in range(n)]
    time.sleep(0.5)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    return (after - before) / n


def ours(binary, work, n):
    log = open(os.path.join(work, "log"), "w")
    conf = os.path.join(work, "node.toml")
    with open(conf, "w") as f:
        f.write("[server]\nmax_connections_per_ip = 0\n")  # every connection comes from 127.0.0.1
    proc = subprocess.Popen([binary, "--config", conf, "--data", os.path.join(work, "var"), "--listen",
                             "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--threads", "1", "--admin-token", "t"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        port = None
        for _ in range(200):
            m = re.search(r"public listener on 127\.0\.0\.1:(\d+)", open(log.name).read())
            if m:
                port = int(m.group(1))
                break
            time.sleep(0.05)
        if port is None:
            raise SystemExit("bundle-edge did not start: " + open(log.name).read())
        return growth_per_connection(port, proc.pid, n)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def nginx(work, n):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    os.chmod(work, 0o755)
    conf = os.path.join(work, "nginx.conf")
    open(conf, "w").write(
        "worker_processes 1;\ndaemon off;\npid %s/nginx.pid;\nerror_log %s/nginx-error.log warn;\n"
        "worker_rlimit_nofile %d;\nevents { worker_connections %d; }\n"
        "http { access_log off; keepalive_timeout 600s; keepalive_requests 100000000;\n"
        "  server { listen 127.0.0.1:%d; location = /healthz { return 200 '{\"status\":\"ok\"}'; } } }\n"
        % (work, work, n + 1000, n + 1000, port))
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if not workers:
            raise SystemExit("nginx has no worker")
        return growth_per_connection(port, int(workers[0]), n)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default="build/release/bundle-edge")
    ap.add_argument("n", nargs="?", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.n + 1000, args.n + 1000))
    have_nginx = shutil.which("nginx") is not None
    edge, base, steals = [], [], []
    for r in range(args.rounds):
        work = tempfile.mkdtemp(prefix="edge-idle-")
        try:
            s0 = cpu_times()
            edge.append(ours(args.binary, os.path.join(work), args.n))
            if have_nginx:
                nwork = os.path.join(work, "nginx")
                os.makedirs(nwork)
                base.append(nginx(nwork, args.n))
            steals.append(steal_pct(s0, cpu_times()))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print("round %d: bundle-edge %.2f KiB per connection; nginx %s; host steal %.1f%%" % (
            r + 1, edge[-1], "%.2f KiB" % base[-1] if have_nginx else "(not installed)", steals[-1]), flush=True)
    print("%d idle connections, %d rounds: bundle-edge %s per connection (target <= 16 KiB); baseline, nginx in "
          "the same run: %s; host steal %s" % (args.n, args.rounds, spread(edge, "%.2f", " KiB"),
                                              spread(base, "%.2f", " KiB") if base else "not measured (no nginx)",
                                              spread(steals, "%.1f", "%")))


if __name__ == "__main__":
    main()
