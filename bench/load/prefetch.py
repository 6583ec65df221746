#!/usr/bin/env python3
"""Prefetch benchmark (issue #5, DESIGN §8): a 64 MiB release prefetched by an edge from the
origin (fetch-then-flip: recipe, chunks over 8 keep-alive connections, SHA-256 of every
chunk and of the blob, durable writes), as MB/s, against wrk downloading the same blob from
the same origin in the same run. Everything on 127.0.0.1; both nodes stop by pid.

Then a streaming miss (issue #14, DESIGN §10): a device downloads a 64 MiB blob the edge has
never seen (a release names it, no channel serves it, so nothing was prefetched): time to
its first body byte, the whole download against the same download from the origin in the
same run, and the edge's CPU (utime+stime from /proc) per filled MiB.

Usage: bench/load/prefetch.py [--binary build/release/bundle-edge] [--size-mib 64] [--runs 3]
                              [--chunk-write direct|page_cache]
"""
import argparse
import json
import mmap
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "bench-sync-token"


class Node:
    def __init__(self, binary, work, name, conf):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        path = os.path.join(self.dir, "node.toml")
        open(path, "w").write(conf)
        self.log_path = os.path.join(self.dir, "log.txt")
        self.proc = subprocess.Popen([binary, "--config", path, "--data", os.path.join(self.dir, "var"),
                                      "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
                                     stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            text = open(self.log_path).read()
            m = re.search(r"public listener on 127\.0\.0\.1:(\d+)", text)
            a = re.search(r"admin listener on 127\.0\.0\.1:(\d+)", text)
            if m and a:
                self.url = "http://127.0.0.1:" + m.group(1)
                self.admin = "http://127.0.0.1:" + a.group(1)
                self.token = open(os.path.join(self.dir, "var", "admin.token")).read().strip()
                return
            if self.proc.poll() is not None:
                raise SystemExit(name + " exited: " + text)
            time.sleep(0.05)
        raise SystemExit(name + " did not start")

    def log(self):
        return open(self.log_path).read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


def curl(*args):
    out = subprocess.run(["curl", "-sS", "-f", *args], capture_output=True, check=True)
    return out.stdout


def admin(node, method, path, body):
    return curl("-X", method, "-H", "Authorization: Bearer " + node.token, "-H", "Content-Type: application/json",
                "--data-binary", json.dumps(body), node.admin + path)


def wrk_mbps(url, conns, seconds):
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, url], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1e-6, "KB": 1.024e-3, "MB": 1.048576, "GB": 1073.741824}[m.group(2)]
    return float(m.group(1)) * scale


def disk_mbps(path, source, durable, direct=False):
    """What the edge's disk takes: `source` written to a new file in 1 MiB pieces. durable:
    write + fdatasync (the origin's policy). Otherwise the edge's store.chunk_sync policy
    (background): the writes are timed, the sync after them is not (a syncer thread does it
    while the next chunks arrive). direct: with O_DIRECT from one reused aligned buffer, as
    the edge's store writes (store.chunk_write = "direct"; the page cache if the filesystem
    refuses it); else into the page cache. The file is left for the caller: pages freed by
    deleting it would make the next write (the probe's or the edge's) look faster than a
    cache that grows (on this kind of VM a page the guest has not used lately costs a host
    fault: ~0.2-0.4 GB/s into new pages, ~2 GB/s into reused ones)."""
    data = memoryview(open(source, "rb").read())
    piece = 1 << 20
    buf = mmap.mmap(-1, piece)  # page-aligned, as O_DIRECT needs
    t0 = time.time()
    fd = None
    if direct:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
        except OSError:
            fd = None
    if fd is None:
        direct = False
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for off in range(0, len(data), piece):
        if direct:
            chunk = data[off:off + piece]
            buf[:len(chunk)] = chunk
            os.pwrite(fd, memoryview(buf)[:len(chunk)], off)
        else:
            os.pwrite(fd, data[off:off + piece], off)
    if durable:
        os.fdatasync(fd)
    elapsed = time.time() - t0
    if not durable:
        os.fdatasync(fd)
    os.close(fd)
    buf.close()
    return len(data) / 1048576 / elapsed


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_get(url):
    """GET with a raw socket: (seconds to the first body byte, seconds to the last, bytes)."""
    u = urllib.parse.urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=120)
    t0 = time.perf_counter()
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % u.path).encode())
    data = bytearray()  # amortized appends: the client must not be the bottleneck
    first = None
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        n = s.recv_into(view)
        if n == 0:
            break
        data += view[:n]
        if first is None:
            end = data.find(b"\r\n\r\n")
            if end >= 0 and len(data) > end + 4:
                first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit("GET %s: %r" % (url, head[:200]))
    return first, total, body


def streaming_miss(args, work, origin, edge, app):
    """Cold 64 MiB blobs through the edge (streamed while they fill) vs from the origin."""
    size = args.size_mib << 20
    rows = []
    for run in range(args.runs):
        blob = os.path.join(work, "cold%d" % run)
        data = os.urandom(size)
        with open(blob, "wb") as f:
            f.write(data)
        info = json.loads(curl("-X", "PUT", "-H", "Authorization: Bearer " + origin.token, "--data-binary",
                               "@" + blob, origin.admin + "/v1/admin/blobs"))
        admin(origin, "PUT", app + "/releases/cold-%d" % run, {"zip": info["sha256"]})
        deadline = time.time() + 30
        while b"cold-%d" % run not in curl("-H", "Authorization: Bearer " + edge.token,
                                            edge.admin + app + "/releases"):
            if time.time() > deadline:
                raise SystemExit("the edge did not follow the release")
            time.sleep(0.05)
        o_first, o_total, o_body = timed_get(origin.url + "/v1/blobs/" + info["sha256"])
        cpu0 = cpu_seconds(edge.proc.pid)
        e_first, e_total, e_body = timed_get(edge.url + "/v1/blobs/" + info["sha256"])
        cpu = cpu_seconds(edge.proc.pid) - cpu0
        if e_body != data or o_body != data:
            raise SystemExit("a download was not byte-exact")
        rows.append((e_first, e_total, o_first, o_total, cpu))
        print("cold run %d: edge first byte %.1f ms, whole %.0f ms; origin whole %.0f ms; edge CPU %.0f ms"
              % (run + 1, e_first * 1000, e_total * 1000, o_total * 1000, cpu * 1000), flush=True)
        os.unlink(blob)
    med = lambda i: statistics.median(r[i] for r in rows)
    print()
    print("| streaming miss, %d MiB (median of %d) | figure |" % (args.size_mib, args.runs))
    print("|---|---|")
    print("| time to first byte through the edge (cold) | %.1f ms |" % (med(0) * 1000))
    print("| whole download through the edge (cold) | %.0f ms (%.0f MB/s) |" % (med(1) * 1000, args.size_mib / med(1)))
    print("| the same download from the origin, same run | %.0f ms (%.0f MB/s) |" % (med(3) * 1000, args.size_mib / med(3)))
    print("| edge / origin time | %.2fx |" % (med(1) / med(3)))
    print("| edge CPU per filled MiB | %.2f ms |" % (med(4) * 1000 / args.size_mib))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/bundle-edge"))
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--wrk-seconds", type=int, default=5)
    ap.add_argument("--chunk-write", choices=["direct", "page_cache"], default="direct",
                    help="the edge's store.chunk_write (and how the disk bound is measured)")
    args = ap.parse_args()
    for tool in ("wrk", "curl"):
        if not shutil.which(tool):
            raise SystemExit("needs %s: tools/setup.sh" % tool)
    work = tempfile.mkdtemp(prefix="edge-prefetch-")
    nodes = []
    try:
        origin = Node(args.binary, work, "origin", '[sync]\ntoken = "%s"\n' % TOKEN)
        nodes.append(origin)
        edge = Node(args.binary, work, "edge",
                    '[node]\nrole = "edge"\n[upstream]\nurl = "%s"\ntoken = "%s"\n[store]\nchunk_write = "%s"\n'
                    % (origin.url, TOKEN, args.chunk_write))
        nodes.append(edge)
        app = "/v1/admin/apps/com.example.bench"
        admin(origin, "PUT", app, {})
        size = args.size_mib << 20
        results = []
        bounds = []  # each run's rate over min(origin, edge disk) measured just before it
        baseline = {}
        for run in range(args.runs):
            blob = os.path.join(work, "blob%d" % run)
            with open(blob, "wb") as f:
                f.write(os.urandom(size))
            info = json.loads(curl("-X", "PUT", "-H", "Authorization: Bearer " + origin.token, "--data-binary",
                                   "@" + blob, origin.admin + "/v1/admin/blobs"))
            version = "1.0.%d" % run
            admin(origin, "PUT", app + "/releases/" + version, {"zip": info["sha256"]})
            if run == 0:
                # Baseline: wrk downloading this blob from the origin (page cache, sendfile).
                url = origin.url + "/v1/blobs/" + info["sha256"]
                for conns in (1, 8):
                    baseline[conns] = wrk_mbps(url, conns, args.wrk_seconds)
                # Context: what the disk under the edge takes durably (write + fdatasync).
                probe = os.path.join(edge.dir, "disk-probe")
                baseline["disk"] = disk_mbps(probe, blob, durable=True)
            # The bound of issue #14: the edge's disk under its own sync policy, measured
            # just before this run (a new file, as the store's segments are).
            probe = os.path.join(edge.dir, "cache-probe%d" % run)
            cache_rate = disk_mbps(probe, blob, durable=False, direct=args.chunk_write == "direct")
            before = len(re.findall(r"prefetch: \d+ blob\(s\) whole in", edge.log()))
            t0 = time.time()
            admin(origin, "PUT", app + "/channels/production", {"release": version, "public": True})
            deadline = time.time() + 300
            while True:
                found = re.findall(r"prefetch: \d+ blob\(s\) whole in (\d+) ms", edge.log())
                if len(found) > before:
                    ms = int(found[-1])
                    break
                if time.time() > deadline:
                    raise SystemExit("prefetch did not finish: " + edge.log()[-2000:])
                time.sleep(0.01)
            wall = time.time() - t0
            mbps = size / 1048576 / (ms / 1000)
            results.append(mbps)
            best_base = max(baseline[1], baseline[8])
            bound = min(best_base, cache_rate)
            bounds.append(mbps / bound)
            print("run %d: %d MiB prefetched in %d ms (%.0f MB/s; %.0f ms from the channel write); "
                  "the edge's disk with background sync just before: %.0f MB/s; %.2fx of min(origin, disk)"
                  % (run + 1, args.size_mib, ms, mbps, wall * 1000, cache_rate, mbps / bound), flush=True)
        med = statistics.median(results)
        print()
        print("| workload | bundle-edge | baseline: wrk from the origin, same run | ratio | vs min(origin, edge disk with background sync), paired per run | disk: write + fdatasync, same run |")
        print("|---|---|---|---|---|---|")
        print("| %d MiB release prefetched through an edge (median of %d) | %.0f MB/s | %.0f MB/s (wrk -c1: %.0f, -c8: %.0f) | %.2fx | %.2fx | %.0f MB/s (%.2fx) |"
              % (args.size_mib, args.runs, med, best_base, baseline[1], baseline[8], med / best_base,
                 statistics.median(bounds), baseline["disk"], med / baseline["disk"]))
        print()
        streaming_miss(args, work, origin, edge, app)
    finally:
        for n in reversed(nodes):
            n.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
