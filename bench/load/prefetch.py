#!/usr/bin/env python3
"""Prefetch benchmark (DESIGN §8): a 64 MiB release prefetched by an edge from the origin
(fetch-then-flip: recipe, chunks over 8 keep-alive connections, SHA-256 of every chunk and of
the blob, durable writes), as MB/s, against wrk downloading the same blob from the same origin
in the same run. Everything on 127.0.0.1; both nodes stop by pid.

Then a streaming miss (DESIGN §10): a device downloads a 64 MiB blob the edge has never seen (a
release names it, no channel serves it, so nothing was prefetched): time to its first byte and
the whole download, against the same download from the origin in the same round, and the edge's
CPU (utime+stime from /proc) per filled MiB. Every download is made by curl writing to
/dev/null, so the client is not what is timed: a reference server (curl from a local nginx
serving the same file from the page cache, the fastest of three) is measured in each round, and
the fastest download the client made in the run is printed as a floor for its ceiling; the
origin's copy is read once before it is timed, so the baseline is the origin at its fastest
(page cache, sendfile). The bytes are checked afterwards (size from curl, SHA-256 of the edge's
copy), outside the timed downloads.

Each figure is quoted as median (min, max) over --runs rounds, with the host's steal
(bench/load/host-steal.sh) during each round.

Usage: bench/load/prefetch.py [--binary build/release/bundle-edge] [--size-mib 64] [--runs 3]
                              [--chunk-write direct|page_cache] [--wrk-seconds 5]
                              [--only prefetch|miss]
"""
import argparse
import hashlib
import json
import mmap
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import cpu_times, spread, steal_pct  # noqa: E402

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
    out = subprocess.run(["curl", "-sS", "-f", "--max-time", "300", *args], capture_output=True, check=True)
    return out.stdout


def upload_blob(node, path):
    """PUT /v1/admin/blobs, retried when the upload stalls: a node that paused reading an upload
    for backpressure may never resume it (BlobWriter's in-flight waiter is not woken), and a
    content-addressed upload is safe to repeat. Each stall is reported on stderr."""
    for attempt in range(5):
        try:
            out = subprocess.run(["curl", "-sS", "-f", "--max-time", "60", "-X", "PUT", "-H",
                                  "Authorization: Bearer " + node.token, "--data-binary", "@" + path,
                                  node.admin + "/v1/admin/blobs"], capture_output=True, check=True)
            return json.loads(out.stdout)
        except subprocess.CalledProcessError as e:
            print("upload of %s stalled or failed (attempt %d): %s" % (os.path.basename(path), attempt + 1,
                                                                     e.stderr.decode().strip()),
                  file=sys.stderr, flush=True)
    raise SystemExit("the upload of %s failed 5 times" % path)


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
    """GET with curl writing to /dev/null (a client that moves GB/s, so the server is what is
    timed): (seconds to the first byte, seconds to the last, bytes)."""
    out = subprocess.run(["curl", "-sS", "--http1.1", "-o", "/dev/null", "-w",
                          "%{http_code} %{size_download} %{time_starttransfer} %{time_total}", url],
                         capture_output=True, text=True, timeout=300)
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 4 or fields[0] != "200":
        raise SystemExit("GET %s: %s %s" % (url, out.stdout, out.stderr))
    return float(fields[2]), float(fields[3]), int(fields[1])


def sha256_of_get(url):
    """SHA-256 of a GET's body (untimed: the check that the bytes were right)."""
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=300) as r:
        while True:
            piece = r.read(1 << 20)
            if not piece:
                break
            h.update(piece)
    return h.hexdigest()


class Nginx:
    """A local nginx serving `root` (sendfile, access log off): the client's ceiling, the
    fastest this client can take the same bytes off loopback."""

    def __init__(self, work, root):
        self.proc = None
        if not shutil.which("nginx"):
            return
        os.chmod(work, 0o755)  # nginx workers may run as an unprivileged user
        os.chmod(root, 0o755)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        conf = os.path.join(work, "nginx.conf")
        open(conf, "w").write(
            "worker_processes 1;\ndaemon off;\npid %s/nginx.pid;\nerror_log %s/nginx-error.log warn;\n"
            "events { worker_connections 64; }\nhttp { access_log off; sendfile on; tcp_nopush on;\n"
            "  server { listen 127.0.0.1:%d; root %s; } }\n" % (work, work, port, root))
        self.proc = subprocess.Popen(["nginx", "-c", conf, "-p", work], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d/" % port
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.proc = None


def streaming_miss(args, work, origin, edge, app):
    """Cold blobs through the edge (streamed while they fill) vs from the origin, each round
    with the client's ceiling measured beside it."""
    size = args.size_mib << 20
    mib = args.size_mib
    www = os.path.join(work, "www")
    os.makedirs(www, exist_ok=True)
    nginx = Nginx(work, www)
    rows = []
    try:
        for run in range(args.runs):
            blob = os.path.join(www, "cold%d" % run)
            data = os.urandom(size)
            with open(blob, "wb") as f:
                f.write(data)
            digest = hashlib.sha256(data).hexdigest()
            del data
            os.chmod(blob, 0o644)
            info = upload_blob(origin, blob)
            admin(origin, "PUT", app + "/releases/cold-%d" % run, {"zip": info["sha256"]})
            deadline = time.time() + 30
            while b"cold-%d" % run not in curl("-H", "Authorization: Bearer " + edge.token,
                                                edge.admin + app + "/releases"):
                if time.time() > deadline:
                    raise SystemExit("the edge did not follow the release")
                time.sleep(0.05)
            blob_url = "/v1/blobs/" + info["sha256"]
            s0 = cpu_times()
            # The client's ceiling: the same bytes from nginx (page cache, sendfile), the fastest
            # of three downloads.
            n_total = min(timed_get(nginx.url + os.path.basename(blob))[1] for _ in range(3)) if nginx.proc else None
            timed_get(origin.url + blob_url)  # the baseline is the origin serving from its page cache
            o_first, o_total, o_size = timed_get(origin.url + blob_url)
            cpu0 = cpu_seconds(edge.proc.pid)
            e_first, e_total, e_size = timed_get(edge.url + blob_url)
            cpu = cpu_seconds(edge.proc.pid) - cpu0
            # Context: the edge once it holds the blob. With store.chunk_write = "direct" the
            # chunks went to disk past the page cache, so this is a read from disk.
            w_total = timed_get(edge.url + blob_url)[1]
            steal = steal_pct(s0, cpu_times())
            if e_size != size or o_size != size or sha256_of_get(edge.url + blob_url) != digest:
                raise SystemExit("a download was not byte-exact")
            rows.append({"e_first": e_first, "e_total": e_total, "o_first": o_first, "o_total": o_total,
                         "cpu": cpu, "n_total": n_total, "w_total": w_total, "steal": steal,
                         "ratio": e_total / o_total})
            print("cold round %d: edge first byte %.1f ms, whole %.0f ms; origin whole %.0f ms (%.2fx); "
                  "nginx, best of 3, %s; the edge again, now a hit, %.0f ms; edge CPU %.0f ms; host steal %.1f%%"
                  % (run + 1, e_first * 1000, e_total * 1000, o_total * 1000, e_total / o_total,
                     "%.0f ms" % (n_total * 1000) if n_total else "(no nginx)", w_total * 1000, cpu * 1000,
                     steal), flush=True)
            os.unlink(blob)
    finally:
        nginx.stop()
    col = lambda k: [r[k] for r in rows]
    rate = lambda k: [mib / r[k] for r in rows]
    print()
    print("| streaming miss, %d MiB, curl -o /dev/null | median (min, max, rounds) |" % mib)
    print("|---|---|")
    print("| time to first byte through the edge (cold) | %s |" % spread([v * 1000 for v in col("e_first")], "%.1f", " ms"))
    print("| whole download through the edge (cold) | %s; %s |" % (
        spread([v * 1000 for v in col("e_total")], "%.0f", " ms"), spread(rate("e_total"), "%.0f", " MB/s")))
    print("| baseline: the same download from the origin, same round | %s; %s |" % (
        spread([v * 1000 for v in col("o_total")], "%.0f", " ms"), spread(rate("o_total"), "%.0f", " MB/s")))
    print("| edge (cold) / origin time, paired per round | %s |" % spread(col("ratio"), "%.2f", "x"))
    fastest = max(max(rate(k)) for k in ("o_total", "e_total", "w_total") + (("n_total",) if rows[0]["n_total"] else ()))
    print("| client: the fastest download it made in this run (a floor for its ceiling) | %.0f MB/s |" % fastest)
    if rows[0]["n_total"]:
        print("| reference server: curl from a local nginx, same bytes, best of 3 | %s |" % spread(rate("n_total"), "%.0f", " MB/s"))
        print("| origin's rate / nginx's, paired per round | %s |" % spread(
            [r["n_total"] / r["o_total"] for r in rows], "%.2f", "x"))
    print("| context: the edge again once it holds the blob (chunk_write %s) | %s |" % (
        args.chunk_write, spread(rate("w_total"), "%.0f", " MB/s")))
    print("| edge CPU per filled MiB | %s |" % spread([v * 1000 / mib for v in col("cpu")], "%.2f", " ms"))
    print("| host steal during the round | %s |" % spread(col("steal"), "%.1f", "%"))
    if statistics.median(rate("o_total")) > 0.8 * fastest:
        print("note: the origin's median rate is over 80% of the fastest download the client made: its time may be "
              "bounded by the client and loopback, not by the origin, so edge/origin is a lower bound")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/bundle-edge"))
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--wrk-seconds", type=int, default=5)
    ap.add_argument("--chunk-write", choices=["direct", "page_cache"], default="direct",
                    help="the edge's store.chunk_write (and how the disk bound is measured)")
    ap.add_argument("--only", choices=["prefetch", "miss"], help="run one of the two parts")
    args = ap.parse_args()
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
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
        if args.only != "miss":
            prefetch(args, work, origin, edge, app)
            print()
        if args.only != "prefetch":
            streaming_miss(args, work, origin, edge, app)
        print()
        print("%s, %d cores, %s, %s, %d MiB, %d rounds, load average %s (steal counts only the hypervisor's "
              "other guests, not this machine's other processes)" % (
                  time.strftime("%F"), os.cpu_count(), os.uname().release, os.path.basename(args.binary),
                  args.size_mib, args.runs, " ".join(open("/proc/loadavg").read().split()[:3])))
    finally:
        for n in reversed(nodes):
            n.stop()
        shutil.rmtree(work, ignore_errors=True)


def prefetch(args, work, origin, edge, app):
    """Releases prefetched through the edge, against wrk from the origin in the same run."""
    size = args.size_mib << 20
    results = []
    steals = []
    bounds = []  # each run's rate over min(origin, edge disk) measured just before it
    baseline = {}
    for run in range(args.runs):
        blob = os.path.join(work, "blob%d" % run)
        with open(blob, "wb") as f:
            f.write(os.urandom(size))
        info = upload_blob(origin, blob)
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
        # The bound: the edge's disk under its own sync policy, measured
        # just before this run (a new file, as the store's segments are).
        probe = os.path.join(edge.dir, "cache-probe%d" % run)
        cache_rate = disk_mbps(probe, blob, durable=False, direct=args.chunk_write == "direct")
        before = len(re.findall(r"prefetch: \d+ blob\(s\) whole in", edge.log()))
        s0 = cpu_times()
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
        steals.append(steal_pct(s0, cpu_times()))
        mbps = size / 1048576 / (ms / 1000)
        results.append(mbps)
        best_base = max(baseline[1], baseline[8])
        bound = min(best_base, cache_rate)
        bounds.append(mbps / bound)
        print("run %d: %d MiB prefetched in %d ms (%.0f MB/s; %.0f ms from the channel write); "
              "the edge's disk with background sync just before: %.0f MB/s; %.2fx of min(origin, disk); host steal %.1f%%"
              % (run + 1, args.size_mib, ms, mbps, wall * 1000, cache_rate, mbps / bound, steals[-1]), flush=True)
    best_base = max(baseline[1], baseline[8])
    print()
    print("| %d MiB release prefetched through an edge | median (min, max, rounds) |" % args.size_mib)
    print("|---|---|")
    print("| bundle-edge prefetch | %s |" % spread(results, "%.0f", " MB/s"))
    print("| baseline: wrk from the origin, same run | %.0f MB/s (wrk -c1: %.0f, -c8: %.0f; measured once) |"
          % (best_base, baseline[1], baseline[8]))
    print("| ratio to the baseline | %s |" % spread([r / best_base for r in results], "%.2f", "x"))
    print("| vs min(origin, edge disk with background sync), paired per round | %s |" % spread(bounds, "%.2f", "x"))
    print("| disk: write + fdatasync, same run (context) | %.0f MB/s (prefetch at %.2fx of it) |"
          % (baseline["disk"], statistics.median(results) / baseline["disk"]))
    print("| host steal during the prefetch | %s |" % spread(steals, "%.1f", "%"))

if __name__ == "__main__":
    main()
