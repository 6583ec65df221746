#!/usr/bin/env python3
"""How long a garbage collection pass takes on an embedded origin, and what it frees.

An origin (release build, 64 MiB segments, grace 0 s) takes --releases uploads of --mib MiB of
random bytes, each published as a release; then every other release is deleted and one pass of
POST /v1/admin/gc runs: the deleted releases' blobs and chunks are removed and the segments
they leave sparse are compacted (live chunks copied forward, files removed). Each round starts
from an empty data directory. Baseline, same round: copying the same segment files with
`cp` + `sync` (read + write of every byte, what compaction does to the live part).

Usage: gc-pass.py [--binary build/release/bundle-edge] [--releases 40] [--mib 16] [--rounds 3]"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import BenchNode, spread  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = "/v1/admin/apps/com.example.gcbench"


def call(node, method, path, body=None, data=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (node.admin, path), method=method,
                                 data=data if data is not None else
                                 (json.dumps(body).encode() if body is not None else None),
                                 headers={"Authorization": "Bearer t",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"null")


def round_once(args, work):
    node = BenchNode(args.binary, work, '[gc]\ninterval_s = 0\ngrace_s = 0\n'
                     '[store]\nsegment_size = "64MiB"\n')
    try:
        call(node, "PUT", APP, {})
        for i in range(args.releases):
            data = os.urandom(args.mib << 20)
            blob = call(node, "PUT", "/v1/admin/blobs", data=data)["sha256"]
            assert blob == hashlib.sha256(data).hexdigest()
            call(node, "PUT", APP + "/releases/1.0.%d" % i, {"zip": blob})
        for i in range(0, args.releases, 2):
            call(node, "DELETE", APP + "/releases/1.0.%d" % i)
        seg_dir = os.path.join(work, "var", "segments")
        on_disk = sum(os.path.getsize(os.path.join(seg_dir, f)) for f in os.listdir(seg_dir))
        # Baseline: read and write every byte of the segment files once, synced.
        copy = os.path.join(work, "copy")
        t0 = time.monotonic()
        shutil.copytree(seg_dir, copy)
        subprocess.run(["sync"], check=True)
        baseline = time.monotonic() - t0
        shutil.rmtree(copy)
        time.sleep(1.1)  # older than the grace period, to the second
        t0 = time.monotonic()
        rep = call(node, "POST", "/v1/admin/gc", {})["store"]
        took = time.monotonic() - t0
        after = sum(os.path.getsize(os.path.join(seg_dir, f)) for f in os.listdir(seg_dir))
        assert rep["complete"] and rep["blobs_removed"] == (args.releases + 1) // 2, rep
        return {"pass_s": took, "baseline_s": baseline, "on_disk": on_disk, "after": after,
                "report": rep}
    finally:
        node.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/bundle-edge"))
    ap.add_argument("--releases", type=int, default=40)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results = []
    for r in range(args.rounds):
        work = tempfile.mkdtemp(prefix="gc-pass-", dir="/var/tmp")
        try:
            res = round_once(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rep = res["report"]
        print("round %d: pass %.2f s (baseline cp+sync of the %d MiB of segments %.2f s); removed %d "
              "blobs, %d chunks, %d MiB; compacted %d segments, moved %d chunks, freed %d MiB; "
              "segments %d -> %d MiB" % (
                  r + 1, res["pass_s"], res["on_disk"] >> 20, res["baseline_s"], rep["blobs_removed"],
                  rep["chunks_removed"], rep["bytes_removed"] >> 20, rep["segments_compacted"],
                  rep["chunks_relocated"], rep["bytes_freed"] >> 20, res["on_disk"] >> 20,
                  res["after"] >> 20), flush=True)
        results.append(res)
    print("\n%d releases of %d MiB, half deleted, one pass:" % (args.releases, args.mib))
    print("  pass: %s" % spread([x["pass_s"] for x in results], "%.2f", " s"))
    print("  baseline (cp + sync of the segment files): %s" %
          spread([x["baseline_s"] for x in results], "%.2f", " s"))
    print("  pass / baseline: %s" % spread([x["pass_s"] / x["baseline_s"] for x in results], "%.2f", "x"))
    print("  freed: %s" % spread([(x["on_disk"] - x["after"]) / 2**20 for x in results], "%.0f", " MiB"))


if __name__ == "__main__":
    main()
