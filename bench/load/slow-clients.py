#!/usr/bin/env python3
"""Slow-client attack (issue #9 item 5): N connections each send a JSON request header and
then drip its body, against a node whose server.max_connections is N. Reports how many the
node admitted, how long it held them (body timeout), and what the operator and a device see
meanwhile: admin /healthz and /metrics status, and public /healthz p99 from another address.
The baseline, in the same run: the same public probe for 2 s before the attack. One round (the
attack is the run); the probes' latencies are given as min/median/p99/max, with the host's
steal during the attack. Everything on 127.0.0.0/8; the node stops by pid.

Usage: bench/load/slow-clients.py [--binary build/release/bundle-edge] [--connections 500]
"""
import argparse
import http.client
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import BenchNode, cpu_times, steal_pct  # noqa: E402


def probe_once(port):
    """One public GET /healthz from 127.0.250.1 on a new connection: (status, seconds)."""
    a = time.time()
    probe = socket.socket()
    probe.bind(("127.0.250.1", 0))
    probe.settimeout(5)
    probe.connect(("127.0.0.1", port))
    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = probe.recv(4096)
    probe.close()
    return (int(data.split()[1]) if data else 0), time.time() - a


def latency_line(lat):
    """'min/median/p99/max ms' of a list of seconds."""
    if not lat:
        return "no answers"
    lat = sorted(lat)
    pick = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] * 1000
    return "%.1f / %.1f / %.1f / %.1f ms (%d probes)" % (lat[0] * 1000, pick(0.5), pick(0.99), lat[-1] * 1000, len(lat))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/bundle-edge"))
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=15)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="edge-slow-")
    node = BenchNode(args.binary, work, "[server]\nmax_connections = %d\n" % args.connections)
    port, admin = node.port, node.admin
    try:
        base = []
        deadline = time.time() + 2
        while time.time() < deadline:  # the baseline: the idle node
            st, took = probe_once(port)
            if st == 200:
                base.append(took)
            time.sleep(0.02)
        s0 = cpu_times()
        head = (b"POST /updates HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{")
        socks, t0 = [], time.time()
        for i in range(args.connections):
            s = socket.socket()
            s.bind(("127.0.%d.%d" % (1 + i // 200, 1 + i % 200), 0))  # many client addresses
            s.connect(("127.0.0.1", port))
            s.sendall(head)
            socks.append(s)
        stop = threading.Event()

        def drip():
            while not stop.is_set():
                for s in socks:
                    try:
                        s.send(b" ")
                    except OSError:
                        pass
                time.sleep(1)
        threading.Thread(target=drip, daemon=True).start()
        time.sleep(0.5)

        def status(p, path, token=None):
            try:
                c = http.client.HTTPConnection("127.0.0.1", p, timeout=5)
                c.request("GET", path, headers={"Authorization": "Bearer t"} if token else {})
                return c.getresponse().status
            except OSError as e:
                return type(e).__name__
        admin_health = status(admin, "/healthz")
        admin_metrics = status(admin, "/metrics", token=True)
        lat = []
        statuses = {}
        first_ok = None
        deadline = time.time() + args.seconds
        while time.time() < deadline:
            st, took = probe_once(port)
            statuses[st] = statuses.get(st, 0) + 1
            if st == 200:
                lat.append(took)
                if first_ok is None:
                    first_ok = time.time() - t0
            time.sleep(0.02)
        held = []
        for s in socks:
            s.settimeout(0.01)
            try:
                held.append(s.recv(64)[:12])
            except OSError:
                held.append(b"(still open)")
        stop.set()
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
        timed_out = sum(1 for h in held if h.startswith(b"HTTP/1.1 408"))
        refused = sum(1 for h in held if h.startswith(b"HTTP/1.1 503"))
        print("%s, %s, %d dripping connections from %d addresses, server.max_connections=%d" % (
            time.strftime("%F"), os.path.basename(args.binary), args.connections,
            len({s.getsockname()[0] for s in socks}), args.connections))
        print("| figure | value |")
        print("|---|---|")
        print("| admin /healthz during the attack | %s |" % admin_health)
        print("| admin /metrics during the attack | %s |" % admin_metrics)
        print("| public /healthz probes from another address, by status | %s |" % statuses)
        print("| first public 200 after the attack began | %s |" % (
            "%.1f s" % first_ok if first_ok is not None else "never"))
        print("| public /healthz p99 of the 200s | %.1f ms |" % p99)
        print("| public /healthz min / median / p99 / max during the attack | %s |" % latency_line(lat))
        print("| baseline: the same probe before the attack, same run | %s |" % latency_line(base))
        print("| rounds; host steal during the attack | 1; %.1f%% |" % steal_pct(s0, cpu_times()))
        print("| dripping connections answered 408 within %.0f s | %d |" % (time.time() - t0, timed_out))
        print("| refused 503 at connect | %d |" % refused)
        for s in socks:
            s.close()
    finally:
        node.stop()
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
