#!/usr/bin/env python3
"""Override-flood benchmark (issue #9 item 9): old plugins' POST /channel_self writes a
server-side device override, unauthenticated by protocol. Floods an origin with writes of
distinct devices from 32 keep-alive connections, and reports the write rate per band of
stored overrides, with the p99 of a /healthz probe (a second connection, 20 probes/s) in each
band. Everything on 127.0.0.1; the node stops by pid.

Usage: bench/load/override-flood.py [--binary build/release/bundle-edge] [--overrides 30000]
"""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import BenchNode  # noqa: E402
APP = "com.bench.flood"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/bundle-edge"))
    ap.add_argument("--overrides", type=int, default=30000)
    ap.add_argument("--band", type=int, default=10000)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="edge-flood-")
    # A build from before per-address limits (for comparison) gets an empty config.
    node = BenchNode(args.binary, work, "[server]\nmax_connections_per_ip = 0\n", fallback_conf="")
    port, admin = node.port, node.admin
    try:
        bundle = os.path.join(work, "zip")
        open(bundle, "wb").write(os.urandom(20000))
        env = dict(os.environ, BUNDLE_EDGE_URL="http://127.0.0.1:%d" % admin, BUNDLE_EDGE_TOKEN="t")
        subprocess.run([os.path.join(ROOT, "tools/bundle-edge-ctl"), "publish", "--app", APP,
                        "--version", "1.0.1", "--zip", bundle, "--channel", "production",
                        "--public"], env=env, check=True, capture_output=True)
        c = http.client.HTTPConnection("127.0.0.1", admin)
        c.request("PUT", "/v1/admin/apps/%s/channels/beta" % APP,
                  json.dumps({"release": "1.0.1", "allow_device_self_set": True}),
                  {"Authorization": "Bearer t", "Content-Type": "application/json"})
        assert c.getresponse().status in (200, 201)

        next_id = [0]
        lock = threading.Lock()
        done_at = []  # time of each acknowledged write
        stop = threading.Event()
        errors = []

        def writer():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while not stop.is_set():
                with lock:
                    i = next_id[0]
                    if i >= args.overrides:
                        return
                    next_id[0] += 1
                body = json.dumps({"app_id": APP, "device_id": "0a1b2c3d-1111-4222-8333-%012x" % i,
                                   "platform": "android", "version_name": "1.0.0",
                                   "version_build": "1.0.0", "plugin_version": "5.0.0",
                                   "is_emulator": False, "is_prod": True, "channel": "beta"})
                conn.request("POST", "/channel_self", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                out = r.read()
                if r.status != 200 or b'"ok"' not in out:
                    errors.append(out[:200])
                    return
                with lock:
                    done_at.append(time.time())

        probes = []  # (time, latency)

        def prober():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while not stop.is_set():
                t = time.time()
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                probes.append((t, time.time() - t))
                time.sleep(0.05)

        threads = [threading.Thread(target=writer) for _ in range(args.connections)]
        p = threading.Thread(target=prober)
        t0 = time.time()
        p.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        p.join()
        if errors:
            raise SystemExit("a write failed: %r" % errors[0])
        done_at.sort()
        print("%s, %d cores, %d connections, 1 server thread" % (time.strftime("%F"), os.cpu_count(),
                                                                  args.connections))
        print("| stored overrides | writes/s | /healthz p99 ms |")
        print("|---|---|---|")
        start = t0
        for lo in range(0, args.overrides, args.band):
            hi = min(lo + args.band, args.overrides)
            end = done_at[hi - 1]
            rate = (hi - lo) / (end - start)
            lats = sorted(l for (t, l) in probes if start <= t < end) or [0]
            p99 = lats[min(len(lats) - 1, int(len(lats) * 0.99))]
            print("| %d-%d | %.0f | %.1f |" % (lo, hi, rate, p99 * 1000))
            start = end
    finally:
        node.stop()
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
