#!/usr/bin/env python3
"""What gzip does to /updates answers that carry a manifest (plugin 8.52 sends
Accept-Encoding: gzip on its JSON calls): for releases of 5 to 10k manifest files,
the answer's bytes with and without gzip (the gzip column is what the node sent, or for an
answer under the threshold what zlib level 1 would have made), the server's CPU per answer (from
/proc/<pid>/stat over many answers on one keep-alive connection), and what one
compression of that answer costs at zlib levels 1, 6 and 9 (the same zlib, from Python). The
baseline is the identity answer, measured on the same node in the same run; each CPU figure is
the median of ROUNDS rounds (min-max beside it), with the host's steal over the run.

Usage: bench/load/json-gzip.py [path-to-bundle-edge] [answers per case] [rounds (default 3)]"""
import hashlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import BenchNode, cpu_times, spread, steal_pct  # noqa: E402

binary = sys.argv[1] if len(sys.argv) > 1 else "build/release/bundle-edge"
answers = int(sys.argv[2]) if len(sys.argv) > 2 else 300
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def admin(node, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (node.admin, path), data=data, method=method,
                                 headers={"Authorization": "Bearer t"})
    with urllib.request.urlopen(req) as r:
        return r.status, r.read()


work = tempfile.mkdtemp(prefix="edge-gzip-")
node = BenchNode(binary, work, '[server]\njson_body_limit = "16MiB"\n')
try:
    # Distinct files, as in a real bundle: every entry has its own hash and blob URL (hex
    # digits, which compress far less than repeated names).
    blobs = [os.urandom(64) for _ in range(10000)]
    ids = [hashlib.sha256(b).hexdigest() for b in blobs]

    def upload_all(part):
        conn = http.client.HTTPConnection("127.0.0.1", node.admin, timeout=60)
        for b in part:
            conn.request("PUT", "/v1/admin/blobs", b, {"Authorization": "Bearer t"})
            r = conn.getresponse()
            r.read()
            assert r.status in (200, 201), r.status
        conn.close()
    threads = [threading.Thread(target=upload_all, args=(blobs[i::16],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s0 = cpu_times()
    print("| manifest files | identity bytes | gzip bytes | ratio | server CPU/answer, baseline: identity | "
          "gzip | one compression: level 1 | 6 | 9 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in (5, 20, 100, 1000, 10000):
        app = "com.example.gz%d" % n
        admin(node, "PUT", "/v1/admin/apps/" + app, {})
        files = [{"file_name": "www/assets/chunk-%05d-%s.js" % (i, ids[i][:8]), "file_hash": ids[i],
                  "blob": ids[i]} for i in range(n)]
        admin(node, "PUT", "/v1/admin/apps/%s/releases/1.0.1" % app, {"manifest": files})
        admin(node, "PUT", "/v1/admin/apps/%s/channels/production" % app,
              {"release": "1.0.1", "public": True, "disable_auto_update": "none", "update_package": "delta"})
        info = json.dumps({"platform": "android", "device_id": "0a1b2c3d-1111-4222-8333-444455556666",
                           "app_id": app, "version_build": "1.0.0", "version_name": "1.0.0",
                           "plugin_version": "8.52.0", "is_emulator": False, "is_prod": True})
        row = {}
        for coding in ("identity", "gzip"):
            conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
            headers = {"Content-Type": "application/json", "Accept-Encoding": coding}
            conn.request("POST", "/updates", info, headers)  # warms the answer cache
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, r.status
            row[coding] = len(body)
            row[coding + "_encoded"] = r.getheader("Content-Encoding") == "gzip"
            if coding == "identity":
                plain = body
            per_round = []
            for _ in range(rounds):
                t0 = cpu_seconds(node.proc.pid)
                for _ in range(answers * max(1, 1000 // n)):
                    conn.request("POST", "/updates", info, headers)
                    conn.getresponse().read()
                per_round.append((cpu_seconds(node.proc.pid) - t0) / (answers * max(1, 1000 // n)) * 1e6)
            row[coding + "_cpu"] = spread(per_round, "%.0f", " us").replace(" rounds)", ")").replace(
                ", %d)" % rounds, ")")
            conn.close()
        if not row["gzip_encoded"]:  # under the threshold: what gzip would have made
            c = zlib.compressobj(1, zlib.DEFLATED, 31)
            row["gzip"] = len(c.compress(plain) + c.flush())
        levels = []
        for level in (1, 6, 9):
            reps = max(3, 20000 // n)
            t0 = time.process_time()
            for _ in range(reps):
                c = zlib.compressobj(level, zlib.DEFLATED, 31)
                out = c.compress(plain) + c.flush()
            levels.append("%.3f ms (%d B)" % ((time.process_time() - t0) / reps * 1000, len(out)))
        print("| %d | %d | %d%s | %.1fx | %s | %s | %s |" % (
            n, row["identity"], row["gzip"], "" if row["gzip_encoded"] else " (not sent: identity)",
            row["identity"] / row["gzip"], row["identity_cpu"], row["gzip_cpu"], " | ".join(levels)))
    print("%s, %d rounds of %d+ answers per case (CPU: median, min-max); host steal %.1f%% over the run" % (
        time.strftime("%F"), rounds, answers, steal_pct(s0, cpu_times())))
finally:
    node.stop()
    shutil.rmtree(work, ignore_errors=True)
