#!/usr/bin/env python3
"""First read of a blob from S3 through an origin, against the first read of a blob from an
origin's embedded store, in the same run (blobs in S3, DESIGN §12.2).

Each round makes a new random blob of --size-mib MiB for each side:
  s3:       uploaded through origin W ([blobs] backend = "s3", a local s3rver), then read by
            origin R, which shares the bucket and has never seen the blob: R fills it from the
            bucket (recipe, then every chunk, each checked against its SHA-256, stored), then
            serves it. Timed: R's answer (time to first byte, and to the last).
  embedded: uploaded to origin E (the default embedded store), then read from E. Timed the same.
Also timed, for reference: the upload acknowledgement on each side (s3: once the chunks and
recipe are objects in the bucket), R's second read of its blob (now cached), and the floor the
origin cannot beat: the blob's recipe and chunk objects read straight from s3rver by this
script over 8 keep-alive connections (what the origin's 8 S3 threads could move at best).
Every download goes to /dev/null with curl; the bytes are checked afterwards, outside the timed
reads. Figures are median (min, max) over --runs rounds, with the host's steal.

s3rver is a Node.js process writing each object to a file: it is not a fast S3, so the s3 figure
is a bound on what the origin costs on top of the bucket, not a figure for AWS.

Usage: bench/load/s3-first-read.py [--binary build/release/bundle-edge] [--size-mib 16] [--runs 7]
Needs s3rver (tools/setup.sh installs it)."""
import argparse
import hashlib
import http.client
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from benchnode import BenchNode, cpu_times, spread, steal_pct  # noqa: E402
import s3rver  # noqa: E402


def s3_conf(endpoint):
    return ('[blobs]\nbackend = "s3"\nendpoint = "%s"\nbucket = "bundles"\nregion = "us-east-1"\n'
            'path_style = true\n' % endpoint)


def upload(node, path, digest):
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "-X", "PUT",
                          "--data-binary", "@" + path, "-H", "Authorization: Bearer t", "-H",
                          "X-Content-Sha256: " + digest,
                          "http://127.0.0.1:%d/v1/admin/blobs" % node.admin],
                         capture_output=True, text=True, check=True).stdout.split()
    if out[0] not in ("200", "201"):
        raise SystemExit("upload answered %s: see %s" % (out[0], node.log))
    return float(out[1])


def timed_get(node, digest, size):
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w",
                          "%{http_code} %{size_download} %{time_starttransfer} %{time_total}",
                          "http://127.0.0.1:%d/v1/blobs/%s" % (node.port, digest)],
                         capture_output=True, text=True, check=True).stdout.split()
    if out[0] != "200" or int(out[1]) != size:
        raise SystemExit("GET answered %s with %s bytes: see %s" % (out[0], out[1], node.log))
    return float(out[2]), float(out[3])


def direct_read(s3, digest, connections=8):
    """Seconds to GET the blob's recipe object, then its chunk objects over `connections`
    keep-alive connections, straight from s3rver (no origin, no verification)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", s3.port)
    conn.request("GET", "/%s/recipes/%s" % (s3.bucket, digest))
    recipe = conn.getresponse().read()
    conn.close()
    _, _, count = struct.unpack_from("<BQI", recipe, 0)
    keys = [recipe[13 + 36 * i:13 + 36 * i + 32].hex() for i in range(count)]
    todo = list(dict.fromkeys(keys))
    lock = threading.Lock()

    def work():
        c = http.client.HTTPConnection("127.0.0.1", s3.port)
        while True:
            with lock:
                if not todo:
                    break
                key = todo.pop()
            c.request("GET", "/%s/chunks/%s" % (s3.bucket, key))
            c.getresponse().read()
        c.close()
    threads = [threading.Thread(target=work) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def check_bytes(node, digest):
    body = subprocess.run(["curl", "-sS", "http://127.0.0.1:%d/v1/blobs/%s" % (node.port, digest)],
                          capture_output=True, check=True).stdout
    if hashlib.sha256(body).hexdigest() != digest:
        raise SystemExit("the bytes served do not hash to " + digest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "release", "bundle-edge"))
    ap.add_argument("--size-mib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    if s3rver.find() is None:
        raise SystemExit("s3rver not found: run tools/setup.sh")
    os.environ["AWS_ACCESS_KEY_ID"] = s3rver.ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = s3rver.SECRET_KEY
    work = tempfile.mkdtemp(prefix="s3-first-read-")
    s3 = s3rver.S3rver(work)
    nodes = []
    try:
        for name in ("w", "r", "e"):
            os.makedirs(os.path.join(work, name))
        w = BenchNode(args.binary, os.path.join(work, "w"), s3_conf(s3.endpoint))
        nodes.append(w)
        r = BenchNode(args.binary, os.path.join(work, "r"), s3_conf(s3.endpoint))
        nodes.append(r)
        e = BenchNode(args.binary, os.path.join(work, "e"), "")
        nodes.append(e)
        size = args.size_mib << 20
        fig = {k: [] for k in ("s3_ttfb", "s3_total", "s3_cached", "s3_direct", "emb_ttfb",
                               "emb_total", "s3_upload", "emb_upload", "steal")}
        for i in range(args.runs):
            before = cpu_times()
            for side in ("s3", "emb"):
                blob = os.urandom(size)
                digest = hashlib.sha256(blob).hexdigest()
                path = os.path.join(work, "blob-%s-%d" % (side, i))
                open(path, "wb").write(blob)
                if side == "s3":
                    fig["s3_upload"].append(upload(w, path, digest))
                    ttfb, total = timed_get(r, digest, size)
                    fig["s3_ttfb"].append(ttfb)
                    fig["s3_total"].append(total)
                    fig["s3_cached"].append(timed_get(r, digest, size)[1])
                    fig["s3_direct"].append(direct_read(s3, digest))
                    check_bytes(r, digest)
                else:
                    fig["emb_upload"].append(upload(e, path, digest))
                    ttfb, total = timed_get(e, digest, size)
                    fig["emb_ttfb"].append(ttfb)
                    fig["emb_total"].append(total)
                    check_bytes(e, digest)
                os.unlink(path)
            fig["steal"].append(steal_pct(before, cpu_times()))
        ms = lambda k: [v * 1000 for v in fig[k]]  # noqa: E731
        mbs = lambda k: [size / v / 1e6 for v in fig[k]]  # noqa: E731
        print("blob %d MiB, %d rounds, origin threads 1, s3rver %s" % (args.size_mib, args.runs,
                                                                      s3.endpoint))
        print("first read, S3 through an origin:  TTFB %s, whole %s = %s" %
              (spread(ms("s3_ttfb"), "%.1f", " ms"), spread(ms("s3_total"), "%.1f", " ms"),
               spread(mbs("s3_total"), "%.0f", " MB/s")))
        print("first read, embedded store:        TTFB %s, whole %s = %s" %
              (spread(ms("emb_ttfb"), "%.1f", " ms"), spread(ms("emb_total"), "%.1f", " ms"),
               spread(mbs("emb_total"), "%.0f", " MB/s")))
        print("second read, S3 origin (cached):   whole %s" % spread(ms("s3_cached"), "%.1f", " ms"))
        print("floor: the objects straight from s3rver, 8 connections: %s = %s" %
              (spread(ms("s3_direct"), "%.1f", " ms"), spread(mbs("s3_direct"), "%.0f", " MB/s")))
        print("upload acknowledged, S3 (durable in the bucket): %s" %
              spread(ms("s3_upload"), "%.1f", " ms"))
        print("upload acknowledged, embedded (fdatasync):        %s" %
              spread(ms("emb_upload"), "%.1f", " ms"))
        print("host steal: %s" % spread(fig["steal"], "%.1f", "%"))
    finally:
        for n in nodes:
            n.stop()
        s3.stop()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
