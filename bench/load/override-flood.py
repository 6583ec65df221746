#!/usr/bin/env python3
"""Override-flood benchmark (issue #9 item 9): old plugins' POST /channel_self writes a
server-side device override, unauthenticated by protocol. Floods an origin with writes of
distinct devices from 32 keep-alive connections, and reports the write rate per band of
stored overrides, with the p99 of a /healthz probe (a second connection, 20 probes/s) in each
band. The baseline, in the same run: the same /healthz probe for 2 s before the flood starts
(the node idle). --rounds R repeats the whole flood on a fresh node (default 1) and prints
min/median/max per band; the host's steal is printed for each round. Everything on 127.0.0.1;
the node stops by pid.

Usage: bench/load/override-flood.py [--binary build/release/bundle-edge] [--overrides 30000] [--rounds 1]
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
from benchnode import BenchNode, cpu_times, spread, steal_pct  # noqa: E402
APP = "com.bench.flood"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/bundle-edge"))
    ap.add_argument("--overrides", type=int, default=30000)
    ap.add_argument("--band", type=int, default=10000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    results = [flood(args) for _ in range(args.rounds)]
    print("%s, %d cores, %d connections, 1 server thread, %d round(s)" % (time.strftime("%F"), os.cpu_count(),
                                                                          args.connections, args.rounds))
    print("| stored overrides | writes/s | /healthz p99 ms | baseline: idle /healthz p99 ms, same run |")
    print("|---|---|---|---|")
    for i, (lo, hi, _, _) in enumerate(results[0]["bands"]):
        print("| %d-%d | %s | %s | %s |" % (lo, hi, spread([r["bands"][i][2] for r in results], "%.0f"),
                                            spread([r["bands"][i][3] for r in results], "%.1f"),
                                            spread([r["idle_p99"] for r in results], "%.1f")))
    print("host steal: %s" % spread([r["steal"] for r in results], "%.1f", "%"))


def p99_of(lats):
    lats = sorted(lats) or [0]
    return lats[min(len(lats) - 1, int(len(lats) * 0.99))] * 1000


def flood(args):
    """One flood on a fresh node: {"bands": [(lo, hi, writes/s, p99 ms)], "idle_p99", "steal"}."""
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
        s0 = cpu_times()
        p.start()
        time.sleep(2)  # the baseline: the probe against the idle node
        idle_p99 = p99_of([lat for (_, lat) in probes])
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        p.join()
        if errors:
            raise SystemExit("a write failed: %r" % errors[0])
        done_at.sort()
        bands = []
        start = t0
        for lo in range(0, args.overrides, args.band):
            hi = min(lo + args.band, args.overrides)
            end = done_at[hi - 1]
            bands.append((lo, hi, (hi - lo) / (end - start), p99_of([l for (t, l) in probes if start <= t < end])))
            start = end
        steal = steal_pct(s0, cpu_times())
        print("round: idle /healthz p99 %.1f ms; %s; host steal %.1f%%" % (
            idle_p99, ", ".join("%d-%d: %.0f writes/s, p99 %.1f ms" % b for b in bands), steal), flush=True)
        return {"bands": bands, "idle_p99": idle_p99, "steal": steal}
    finally:
        node.stop()
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
