#!/usr/bin/env python3
"""Memory per idle keep-alive connection (DESIGN §8 target: <= 16 KiB): starts bundle-edge
on loopback, opens N connections that each make one request and then stay idle, and reports
the server's RSS growth per connection (user space; kernel socket buffers are not in RSS).

Usage: bench/load/idle-memory.py [path-to-bundle-edge] [N]"""
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "build/release/bundle-edge"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1000, n + 1000))
work = tempfile.mkdtemp(prefix="edge-idle-")
log = open(os.path.join(work, "log"), "w")
conf = os.path.join(work, "node.toml")
with open(conf, "w") as f:
    f.write("[server]\nmax_connections_per_ip = 0\n")  # every connection comes from 127.0.0.1
proc = subprocess.Popen([binary, "--config", conf, "--data", os.path.join(work, "var"), "--listen", "127.0.0.1:0",
                         "--admin-listen", "127.0.0.1:0", "--threads", "1", "--admin-token", "t"],
                        stdout=log, stderr=subprocess.STDOUT)
try:
    port = None
    for _ in range(200):
        m = re.search(r"public listener on 127\.0\.0\.1:(\d+)", open(log.name).read())
        if m:
            port = int(m.group(1))
            break
        time.sleep(0.05)

    def rss_kib():
        for line in open("/proc/%d/status" % proc.pid):
            if line.startswith("VmRSS"):
                return int(line.split()[1])

    def connect():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1000)
        return s

    socks = [connect() for _ in range(50)]  # warm the allocator up first
    time.sleep(0.3)
    before = rss_kib()
    socks += [connect() for _ in range(n)]
    time.sleep(0.5)
    after = rss_kib()
    print("%d idle connections: RSS +%d KiB, %.2f KiB per connection" % (n, after - before, (after - before) / n))
finally:
    proc.terminate()
    proc.wait(timeout=20)
    shutil.rmtree(work, ignore_errors=True)
