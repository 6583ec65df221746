#!/usr/bin/env python3
"""Edge catch-up benchmark (issue #9 item 9): an origin takes N old-plugin /channel_self
override writes (16 keep-alive connections), then a fresh edge starts and follows the feed;
reports the write time and how long the edge takes from its start to reach the origin's
sequence number. The baseline, in the same run: a bare HTTP client reading the same feed
(GET /v1/sync/changes pages, parsed, not applied), the least any follower must spend. --rounds R
(default 3) starts R fresh edges one after the other (the writes are made once); prints
min/median/max and the host's steal. Everything on 127.0.0.1; every node stops by pid.

Usage: bench/load/edge-follow.py [--binary build/release/bundle-edge] [--overrides 20000] [--rounds 3]
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
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import BenchNode, cpu_times, spread, steal_pct  # noqa: E402

APP = "com.bench.follow"
SYNC = "bench-sync"


def cursor(node):
    req = urllib.request.Request("http://127.0.0.1:%d/metrics" % node.admin,
                                 headers={"Authorization": "Bearer t"})
    for line in urllib.request.urlopen(req).read().decode().splitlines():
        if line.startswith("edge_sync_cursor_seq "):
            return int(float(line.split()[1]))
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/bundle-edge"))
    ap.add_argument("--overrides", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="edge-follow-")
    os.makedirs(os.path.join(work, "origin"))
    origin = BenchNode(args.binary, os.path.join(work, "origin"), '[sync]\ntoken = "%s"\n' % SYNC)
    edge = None
    try:
        bundle = os.path.join(work, "zip")
        open(bundle, "wb").write(os.urandom(20000))
        env = dict(os.environ, BUNDLE_EDGE_URL="http://127.0.0.1:%d" % origin.admin,
                   BUNDLE_EDGE_TOKEN="t")
        subprocess.run([os.path.join(ROOT, "tools/bundle-edge-ctl"), "publish", "--app", APP,
                        "--version", "1.0.1", "--zip", bundle, "--channel", "production",
                        "--public"], env=env, check=True, capture_output=True)
        c = http.client.HTTPConnection("127.0.0.1", origin.admin)
        c.request("PUT", "/v1/admin/apps/%s/channels/beta" % APP,
                  json.dumps({"release": "1.0.1", "allow_device_self_set": True}),
                  {"Authorization": "Bearer t", "Content-Type": "application/json"})
        assert c.getresponse().status in (200, 201)

        def writer(k):
            conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=30)
            for i in range(k, args.overrides, 16):
                body = json.dumps({"app_id": APP, "device_id": "0a1b2c3d-1111-4222-8333-%012x" % i,
                                   "platform": "android", "version_name": "1.0.0",
                                   "version_build": "1.0.0", "plugin_version": "5.0.0",
                                   "is_emulator": False, "is_prod": True, "channel": "beta"})
                conn.request("POST", "/channel_self", body, {"Content-Type": "application/json"})
                conn.getresponse().read()
        t0 = time.time()
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wrote = time.time() - t0
        target = cursor(origin)

        def read_feed():
            """Seconds a bare client takes to read the feed from 0 to `target`."""
            t = time.time()
            conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=60)
            after = 0
            while after < target:
                conn.request("GET", "/v1/sync/changes?after=%d&wait_ms=0" % after,
                             headers={"Authorization": "Bearer " + SYNC})
                r = conn.getresponse()
                doc = json.loads(r.read())
                if r.status != 200 or not doc.get("changes"):
                    raise SystemExit("the feed stopped at %d of %d: %s" % (after, target, str(doc)[:200]))
                after = max(c["seq"] for c in doc["changes"])
            return time.time() - t

        follows, feeds, steals = [], [], []
        for r in range(args.rounds):
            s0 = cpu_times()
            feeds.append(read_feed())
            os.makedirs(os.path.join(work, "edge%d" % r))
            t0 = time.time()
            edge = BenchNode(args.binary, os.path.join(work, "edge%d" % r),
                             '[node]\nrole = "edge"\n[sync]\ntoken = "%s"\n[upstream]\nurl = '
                             '"http://127.0.0.1:%d"\n' % (SYNC, origin.port))
            while cursor(edge) < target:
                time.sleep(0.02)
            follows.append(time.time() - t0)
            edge.stop()
            edge = None
            steals.append(steal_pct(s0, cpu_times()))
            print("round %d: a fresh edge reached seq %d %.2f s after its start; a bare client read the feed in "
                  "%.3f s; host steal %.1f%%" % (r + 1, target, follows[-1], feeds[-1], steals[-1]), flush=True)
        print("%s, %s: %d overrides written in %.1f s (%.0f/s); a fresh edge reached seq %d in %s after its "
              "start; baseline, a bare client reading the same feed: %s; host steal %s" % (
                  time.strftime("%F"), os.path.basename(args.binary), args.overrides, wrote,
                  args.overrides / wrote, target, spread(follows, "%.2f", " s"), spread(feeds, "%.3f", " s"),
                  spread(steals, "%.1f", "%")))
    finally:
        if edge is not None:
            edge.stop()
        origin.stop()
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
