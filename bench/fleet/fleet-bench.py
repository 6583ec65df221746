#!/usr/bin/python3
"""The fleet benchmark (DESIGN.md §13): an origin and N edges on one machine, each in its own
network namespace on a Linux bridge, with simulated devices at the edges. Answers the
operator's fleet questions, one markdown table row each:

  1. publish -> every edge answers the new release with its bytes whole (fetch-then-flip),
     for a small and a large zip, against the physical bound;
  2. check-ins end to end (devices -> edges -> origin): per second, lag, and every
     acknowledged check-in counted exactly once at the origin;
  3. a partition of K edges for T seconds: what their devices see, how the outboxes drain;
  4. the origin killed (kill -9) and restarted: what edges and devices saw;
  5. resources per edge, idle and under load (RSS, CPU, threads, fds, disk).

With --origin tier, the origin is the tier of DESIGN.md §12 instead: two origins (`befleet-o1`
10.77.0.1, `befleet-o3` 10.77.0.3) sharing a PostgreSQL 15 primary + synchronous standby and
s3rver, all three in `befleet-p` (10.77.0.4; PostgreSQL runs as the postgres user); every edge
lists both origins (half of them o1 first, half o3 first), and row 4 becomes the tier's
failover: o1 and the database primary killed with -9, the standby promoted, o1 started again.

Network: bridge `befleet0` (no address), namespaces `befleet-o` (origin, 10.77.0.1),
`befleet-d` (devices and this script's HTTP clients, 10.77.0.2) and `befleet-e<i>` (edges,
10.77.1.1 ...); every address lives inside a namespace this script made, in 10.77.0.0/16,
and nothing is routed anywhere else. Links are shaped with tc TBF when --rate is given;
netem (delay, loss) only where the kernel has it: the script probes and prints what it applied.
Everything it made (namespaces, links, processes, the work directory) is removed at the end,
on Ctrl-C, on --timeout and on a crash; a cleanup of leftovers by the same names runs first.

Root only. Usage:
  bench/fleet/fleet-bench.py [--edges 100] [--topology flat|tree] [--regions R]
      [--rate 100mbit] [--delay-ms 10] [--checkins-per-s 10000] [--load-s 30]
      [--partition-s 60] [--partition-frac 0.25] [--origin-down-s 10]
      [--small-kib 1024] [--large-mib 16] [--png fleet.png] [--json out.json] [--timeout 900]
      [--origin embedded|tier]
"""
import argparse
import asyncio
import ctypes
import hashlib
import http.client
import json
import math
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "load"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))  # --origin tier: pgharness, s3rver
from benchnode import cpu_times, steal_pct  # noqa: E402

PREFIX = "befleet"
BRIDGE = PREFIX + "0"
NS_ORIGIN, NS_DEV = PREFIX + "-o", PREFIX + "-d"
IP_ORIGIN, IP_DEV = "10.77.0.1", "10.77.0.2"
WORK_PARENT = "/var/tmp"
APP = "com.bench.fleet"
PUBLIC_PORT, ADMIN_PORT = 8080, 9090
# --origin tier: two origins and, in one more namespace, PostgreSQL (primary and standby) and s3rver.
NS_O1, IP_O1 = PREFIX + "-o1", "10.77.0.1"
NS_O3, IP_O3 = PREFIX + "-o3", "10.77.0.3"
NS_PG, IP_PG = PREFIX + "-p", "10.77.0.4"
PG_PORTS, S3_PORT, S3_BUCKET = (5432, 5433), 4569, "bundles"
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def log(msg):
    print("# " + msg, file=sys.stderr, flush=True)


def sh(*cmd, check=True, inp=None):
    r = subprocess.run(cmd, input=inp, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r


def setns(fd):
    """Moves the calling thread (and what it forks later) into the network namespace `fd`."""
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def edge_ip(i):
    """Edge i (1-based): 10.77.1.1 ... 10.77.1.200, 10.77.2.1 ..."""
    return "10.77.%d.%d" % (1 + (i - 1) // 200, (i - 1) % 200 + 1)


# --------------------------------------------------------------------------- cleanup


def our_namespaces():
    out = sh("ip", "netns", "list", check=False).stdout
    return [l.split()[0] for l in out.splitlines() if l.split() and l.split()[0].startswith(PREFIX + "-")]


def cleanup_leftovers(quiet=False):
    """Removes whatever a run of this script left behind, found by its names: processes inside
    befleet-* namespaces (by their pids), the namespaces, the bridge and root-side veths, and
    work directories /var/tmp/befleet-*."""
    found = []
    for ns in our_namespaces():
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
                found.append("pid %d" % p)
            except ProcessLookupError:
                pass
    for ns in our_namespaces():
        sh("ip", "netns", "del", ns, check=False)
        found.append("netns " + ns)
    links = sh("ip", "-o", "link", "show", check=False).stdout
    for m in re.finditer(r"^\d+: (%s[-0-9a-z]*)[@:]" % PREFIX, links, re.M):
        sh("ip", "link", "del", m.group(1), check=False)
        found.append("link " + m.group(1))
    for d in os.listdir(WORK_PARENT):
        if d.startswith(PREFIX + "-"):
            shutil.rmtree(os.path.join(WORK_PARENT, d), ignore_errors=True)
            found.append("dir " + d)
    if found and not quiet:
        log("removed leftovers: " + ", ".join(found[:12]) + (" ..." if len(found) > 12 else ""))
    return found


# --------------------------------------------------------------------------- network


class Net:
    def __init__(self, args):
        self.args = args
        self.root_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.shaping = []
        self.partition_mode = None

    def add_ns(self, ns, ip):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", ns, "master", BRIDGE, "up")
        sh("ip", "-n", ns, "-batch", "-", inp="addr add %s/16 dev eth0\nlink set eth0 up\nlink set lo up\n" % ip)

    def build(self, edge_names):
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "link", "set", BRIDGE, "up")
        if self.args.origin == "tier":
            origin_ns = [NS_O1, NS_O3]
            self.add_ns(NS_O1, IP_O1)
            self.add_ns(NS_O3, IP_O3)
            self.add_ns(NS_PG, IP_PG)
        else:
            origin_ns = [NS_ORIGIN]
            self.add_ns(NS_ORIGIN, IP_ORIGIN)
        self.add_ns(NS_DEV, IP_DEV)
        for i, ns in enumerate(edge_names, 1):
            self.add_ns(ns, edge_ip(i))
        self.netem = self.probe_netem()
        a = self.args
        if a.rate:
            for ns in edge_names:
                self.tbf(ns, a.rate)
            self.shaping.append("TBF %s each way on every edge link" % a.rate)
        if a.origin_rate:
            for ns in origin_ns:
                self.tbf(ns, a.origin_rate)
            self.shaping.append("TBF %s each way on the origin's link%s" % (a.origin_rate,
                                                                          "s" if len(origin_ns) > 1 else ""))
        if a.delay_ms or a.loss_pct:
            if self.netem and not a.rate:
                for ns in edge_names:
                    spec = ["delay", "%dms" % a.delay_ms] if a.delay_ms else []
                    spec += ["loss", "%g%%" % a.loss_pct] if a.loss_pct else []
                    sh("tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "netem", *spec)
                self.shaping.append("netem %s on every edge's egress" % " ".join(spec))
            elif self.netem:
                self.shaping.append("netem asked with --rate: not combined (TBF only)")
            else:
                self.shaping.append("netem NOT in this kernel: --delay-ms/--loss-pct NOT applied")
        if not self.shaping:
            self.shaping.append("none (unshaped veths)")

    def tbf(self, ns, rate):
        burst = "64kb"
        sh("tc", "qdisc", "add", "dev", ns, "root", "tbf", "rate", rate, "burst", burst, "latency", "50ms")
        sh("tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", burst,
           "latency", "50ms")

    def probe_netem(self):
        r = sh("tc", "qdisc", "add", "dev", NS_DEV, "root", "netem", "delay", "0ms", check=False)
        if r.returncode == 0:
            sh("tc", "qdisc", "del", "dev", NS_DEV, "root", check=False)
            return True
        return False

    def cut(self, ns, ip, peers):
        """Partitions edge `ns` from its upstreams `peers` [(ns, ip)]: tc u32 drop both ways where
        the kernel has the drop action, else blackhole routes both ways (connects fail at once
        instead of timing out)."""
        if self.partition_mode in (None, "tc"):
            ok = sh("tc", "-n", ns, "qdisc", "add", "dev", "eth0", "clsact", check=False).returncode == 0
            for _, peer_ip in peers:
                ok = ok and \
                    sh("tc", "-n", ns, "filter", "add", "dev", "eth0", "egress", "protocol", "ip", "u32", "match",
                       "ip", "dst", peer_ip + "/32", "action", "drop", check=False).returncode == 0 and \
                    sh("tc", "-n", ns, "filter", "add", "dev", "eth0", "ingress", "protocol", "ip", "u32", "match",
                       "ip", "src", peer_ip + "/32", "action", "drop", check=False).returncode == 0
            if ok:
                self.partition_mode = "tc"
                return
            sh("tc", "-n", ns, "qdisc", "del", "dev", "eth0", "clsact", check=False)
            self.partition_mode = "route"
        for peer_ns, peer_ip in peers:
            sh("ip", "-n", ns, "route", "add", "blackhole", peer_ip + "/32")
            sh("ip", "-n", peer_ns, "route", "add", "blackhole", ip + "/32")

    def heal(self, ns, ip, peers):
        if self.partition_mode == "tc":
            sh("tc", "-n", ns, "qdisc", "del", "dev", "eth0", "clsact", check=False)
        else:
            for peer_ns, peer_ip in peers:
                sh("ip", "-n", ns, "route", "del", "blackhole", peer_ip + "/32", check=False)
                sh("ip", "-n", peer_ns, "route", "del", "blackhole", ip + "/32", check=False)


# --------------------------------------------------------------------------- nodes

# What the bench sets on top of --edge-config (conf/small-edge.toml): every device comes from
# befleet-d's one address, and 100 reserve files would take 6 GiB of disk for nothing.
BENCH_EDGE = """\
[server]
max_connections_per_ip = 0
[store]
reserve = 0
"""


class Node:
    """One bundle-edge process inside namespace `ns`, listening on ip:8080 (public) and
    ip:9090 (admin), stopped by pid."""

    def __init__(self, fleet, name, ns, ip, role, upstream=None, depth=0, more_upstreams=()):
        self.fleet, self.name, self.ns, self.ip, self.role = fleet, name, ns, ip, role
        self.upstream, self.depth = upstream, depth
        self.upstreams = [upstream] + list(more_upstreams) if upstream is not None else []
        self.dir = os.path.join(fleet.work, name)
        os.makedirs(self.dir)
        self.proc = None
        a = fleet.args
        conf = ['[node]', 'role = "%s"' % role, 'id = "%s"' % name, 'public_url = "http://%s:%d"' % (ip, PUBLIC_PORT),
                '[log]', 'level = "warn"', '[sync]', 'token = "%s"' % fleet.sync_token]
        if role == "edge":
            if more_upstreams:  # the tier's origins, in this edge's order of preference
                url = "[%s]" % ", ".join('"http://%s:%d"' % (u.ip, PUBLIC_PORT) for u in self.upstreams)
            else:
                url = '"http://%s:%d"' % (upstream.ip, PUBLIC_PORT)
            conf += ['[upstream]', 'url = %s' % url, 'backoff_max_ms = %d' % a.backoff_max_ms]
            conf_text = merge_toml(merge_toml(open(a.edge_config).read(), BENCH_EDGE, drop=("[tls]",)),
                                   "\n".join(conf) + "\n")
        else:
            conf_text = "\n".join(conf) + "\n" + \
                "[server]\nthreads = %d\nmax_connections_per_ip = 0\n[store]\nreserve = 0\n" % a.origin_threads + \
                fleet.tier_conf
        self.conf = os.path.join(self.dir, "node.toml")
        open(self.conf, "w").write(conf_text)

    def start(self):
        self.log = open(os.path.join(self.dir, "log"), "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, self.fleet.args.binary, "--config", self.conf,
             "--data", os.path.join(self.dir, "var"), "--listen", "%s:%d" % (self.ip, PUBLIC_PORT),
             "--admin-listen", "%s:%d" % (self.ip, ADMIN_PORT), "--admin-token", self.fleet.admin_token],
            stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (self.name, open(os.path.join(self.dir, "log")).read()[-2000:]))
            try:
                s = socket.create_connection((self.ip, ADMIN_PORT), timeout=1)
                s.close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not start" % self.name)

    def stop(self, sig=signal.SIGTERM, wait=15):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def admin(self, method, path, body=None, raw=False, timeout=30):
        c = http.client.HTTPConnection(self.ip, ADMIN_PORT, timeout=timeout)
        headers = {"Authorization": "Bearer " + self.fleet.admin_token}
        if body is not None and not raw:
            body = json.dumps(body)
            headers["Content-Type"] = "application/json"
        c.request(method, path, body, headers)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, (data if raw else (json.loads(data) if data else None))

    def metrics(self, names=None):
        st, text = self.admin("GET", "/metrics", raw=True, timeout=10)
        out = {}
        for line in text.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            k, _, v = line.rpartition(" ")
            if names is None or k in names:
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def proc_stats(self):
        """RSS (KiB), threads, CPU seconds, fds of the process, from /proc."""
        pid = self.proc.pid
        st = {}
        for line in open("/proc/%d/status" % pid):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "Threads"):
                st[k] = int(v.split()[0])
        f = open("/proc/%d/stat" % pid).read().rpartition(")")[2].split()
        cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        for line in open("/proc/%d/smaps_rollup" % pid):
            k, _, v = line.partition(":")
            if k in ("Pss", "Anonymous"):
                st[k] = int(v.split()[0])
        return {"rss_kib": st["VmRSS"], "pss_kib": st["Pss"], "anon_kib": st["Anonymous"], "threads": st["Threads"],
                "cpu_s": cpu, "fds": len(os.listdir("/proc/%d/fd" % pid))}

    def thread_names(self):
        """'name xN, ...' of the process's threads."""
        names = {}
        for t in os.listdir("/proc/%d/task" % self.proc.pid):
            try:
                n = open("/proc/%d/task/%s/comm" % (self.proc.pid, t)).read().strip()
            except OSError:
                continue
            names[n] = names.get(n, 0) + 1
        return ", ".join("%s%s" % (n, " x%d" % k if k > 1 else "") for n, k in sorted(names.items()))

    def disk_bytes(self):
        total = 0
        for d, _, files in os.walk(os.path.join(self.dir, "var")):
            for f in files:
                try:
                    total += os.lstat(os.path.join(d, f)).st_blocks * 512
                except OSError:
                    pass
        return total


def merge_toml(base, extra, drop=()):
    """`base` with the tables of `extra` merged in (keys of extra win), without the tables in
    `drop`; flat `[table]` and `key = value` lines only (what conf/*.toml use)."""
    tables, order = {}, []
    for text in (base, extra):
        cur = ""
        for line in text.splitlines():
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s.startswith("["):
                cur = s
                if cur not in tables:
                    tables[cur] = {}
                    order.append(cur)
                continue
            k, _, v = s.partition("=")
            tables.setdefault(cur, {})[k.strip()] = v.strip()
            if cur not in order:
                order.append(cur)
    return "".join("%s\n%s" % (t, "".join("%s = %s\n" % kv for kv in tables[t].items()))
                   for t in order if t not in drop)


# --------------------------------------------------------------------------- a tiny HTTP/1.1 client


async def http_req(conn, host, port, method, path, body=b"", headers=(), timeout=10.0, sink=None):
    """One request on `conn` ([reader, writer] or [None, None], reopened as needed):
    (status, body). With `sink` (a hashlib object), a Content-Length body is fed to it in
    pieces as it arrives and (status, its length) comes back: a 16 MiB body read whole into
    one bytes object made this client, not the edges, the slowest part of a download.
    Raises on a network error or timeout (the connection is closed)."""
    try:
        if conn[0] is None:
            conn[0], conn[1] = await asyncio.wait_for(asyncio.open_connection(host, port, limit=1 << 20), timeout)
        r, w = conn
        head = "%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n%s\r\n" % (
            method, path, host, port, len(body), "".join("%s: %s\r\n" % h for h in headers))
        w.write(head.encode() + body)
        status_line = await asyncio.wait_for(r.readline(), timeout)
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        length, close, chunked = 0, False, False
        while True:
            line = await asyncio.wait_for(r.readline(), timeout)
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "connection" and "close" in v.lower():
                close = True
            elif k == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
        if chunked:
            data = b""
            while True:
                n = int((await asyncio.wait_for(r.readline(), timeout)).split(b";")[0], 16)
                data += await asyncio.wait_for(r.readexactly(n + 2), timeout)
                data = data[:-2]
                if n == 0:
                    break
        elif sink is not None:
            left = length
            while left:
                piece = await asyncio.wait_for(r.read(min(left, 1 << 20)), timeout)
                if not piece:
                    raise ConnectionError("closed mid-body")
                sink.update(piece)
                left -= len(piece)
            data = length
        else:
            data = await asyncio.wait_for(r.readexactly(length), timeout) if length else b""
        if close:
            w.close()
            conn[0] = conn[1] = None
        return status, data
    except BaseException:
        if conn[1] is not None:
            conn[1].close()
        conn[0] = conn[1] = None
        raise


def device_info(device_id, version="1.0.0"):
    return {"platform": "android", "device_id": device_id, "app_id": APP, "custom_id": "",
            "version_build": "1.0.0", "version_code": "100", "version_os": "14", "version_name": version,
            "plugin_version": "8.52.0", "is_emulator": False, "is_prod": True, "install_source": "google_play",
            "defaultChannel": ""}


def device_uuid(i):
    return "0a1b2c3d-1111-4222-8333-%012x" % i


# --------------------------------------------------------------------------- devices (worker processes)

# Counter slots per edge in the shared array.
# C_UNKNOWN: check-ins whose request may have reached the edge but whose answer never came
# (a timeout or a cut connection after sending): the edge may have counted them, the device
# cannot know. Exactly once means: none of the answered ones lost, and at most these extra.
# C_REQ_STATUS: of the failed requests (C_REQ_ERR), those answered with a status other than 200
# (the rest timed out or met a network error).
C_ACKED, C_REQ_OK, C_REQ_ERR, C_DL_BYTES, C_UNKNOWN, C_REQ_STATUS = range(6)
NC = 6


def device_worker(wid, nworkers, edges_ips, devices, rate, batch, current, stale_frac, counters, run_flag, lat_q):
    """The devices of the edges e with e % nworkers == wid; device d sticks to edge
    d % len(edges). Each device loops: POST /updates, then POST /stats with `batch` events,
    paced so that all devices together offer `rate` check-ins/s. A device starts on release
    `current` (or, a `stale_frac` share of them, on its builtin bundle); when /updates names
    another release it downloads the zip, checks its size and runs that release from then on,
    as the plugin does. Counters per edge in `counters`; latencies go back on `lat_q`."""
    n_edges = len(edges_ips)
    mine = [d for d in range(devices) if (d % n_edges) % nworkers == wid]
    period = devices * (batch + 1) / float(rate)
    lats = []
    rnd = random.Random(wid)

    async def device(d):
        e = d % n_edges
        ip = edges_ips[e]
        conn = [None, None]
        dconn = [None, None]
        dev = device_uuid(100000 + d)
        base = e * NC
        running = "1.0.0" if rnd.random() < stale_frac else current
        await asyncio.sleep(rnd.random() * period)
        nxt = time.monotonic()
        while run_flag.value:
            t0 = time.monotonic()
            pending = 0
            try:
                info = device_info(dev, running)
                pending = 1
                st, body = await http_req(conn, ip, PUBLIC_PORT, "POST", "/updates", json.dumps(info).encode(),
                                          (("Content-Type", "application/json"),))
                pending = 0
                doc = {}
                if st == 200:
                    counters[base + C_ACKED] += 1
                    counters[base + C_REQ_OK] += 1
                    doc = json.loads(body)
                else:
                    counters[base + C_REQ_ERR] += 1
                    counters[base + C_REQ_STATUS] += 1
                events = [dict(info, action="app_moved_to_foreground" if k % 2 else "app_moved_to_background")
                          for k in range(batch)]
                pending = batch
                st, body = await http_req(conn, ip, PUBLIC_PORT, "POST", "/stats", json.dumps(events).encode(),
                                          (("Content-Type", "application/json"),))
                pending = 0
                if st == 200:
                    ok = sum(1 for r in json.loads(body).get("results", []) if r.get("status") == "ok")
                    counters[base + C_ACKED] += ok
                    counters[base + C_REQ_OK] += 1
                else:
                    counters[base + C_REQ_ERR] += 1
                    counters[base + C_REQ_STATUS] += 1
                lats.append((time.time(), e, time.monotonic() - t0))
                if doc.get("url") and doc.get("version") not in (None, running):
                    path = doc["url"].split("%d" % PUBLIC_PORT, 1)[1]
                    st, data = await http_req(dconn, ip, PUBLIC_PORT, "GET", path, timeout=60)
                    if st == 200:
                        counters[base + C_DL_BYTES] += len(data)
                        running = doc["version"]
                    else:
                        counters[base + C_REQ_ERR] += 1
                        counters[base + C_REQ_STATUS] += 1
            except (OSError, asyncio.TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
                counters[base + C_REQ_ERR] += 1
                counters[base + C_UNKNOWN] += pending
                lats.append((time.time(), e, -1.0))
                await asyncio.sleep(0.2)
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            if nxt < time.monotonic() - period:
                nxt = time.monotonic()  # behind by more than a loop: do not burst to catch up

    async def main():
        await asyncio.gather(*(device(d) for d in mine))

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    lat_q.put(lats)


# --------------------------------------------------------------------------- the origin tier's backends


def tier_missing():
    """None if --origin tier can run here (PostgreSQL 15 and s3rver installed), else why not."""
    import pgharness
    import s3rver
    why = pgharness.available()
    if why:
        return why
    if s3rver.find() is None:
        return "s3rver is not installed (tools/setup.sh installs it under ~/.cache/bundle-edge/s3rver)"
    return None


def pid_usage(pid, reaped=False):
    """(RSS KiB, PSS KiB, CPU seconds) of one process from /proc; with `reaped`, the CPU of its
    children that have exited is counted too (a postmaster's backends come and go)."""
    rss = pss = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "Rss":
                rss = int(v.split()[0])
            elif k == "Pss":
                pss = int(v.split()[0])
    f = open("/proc/%d/stat" % pid).read().rpartition(")")[2].split()
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if reaped else 0)
    return rss, pss, ticks / os.sysconf("SC_CLK_TCK")


class TierBackends:
    """What the origins of --origin tier share, in namespace befleet-p (10.77.0.4): a PostgreSQL 15
    primary (port 5432) with a synchronous streaming standby (5433), run as the postgres user
    through tests/integration/pgharness.py, and s3rver (4569) through tests/integration/s3rver.py,
    with their files in /var/tmp/befleet-tier-*: a directory of its own, which the postgres user
    may enter, while the work directory (the nodes' tokens) stays root's alone. Stopped by pid
    and removed in close(); the leftover sweep finds them too (processes in befleet-* namespaces,
    /var/tmp/befleet-*)."""

    def __init__(self):
        import harness  # pgharness's base; it makes a temp dir on import that nothing here uses
        shutil.rmtree(harness.TMP, ignore_errors=True)
        import pgharness
        import s3rver
        self.pgs = []  # every server started (the killed primary too), removed at close()
        self.primary = self.standby = self.s3 = None
        self.root = tempfile.mkdtemp(prefix=PREFIX + "-tier-", dir=WORK_PARENT)
        os.chmod(self.root, 0o711)  # the postgres user reaches its directories under it
        pg = dict(host=IP_PG, netns=NS_PG, parent=self.root, allow="10.77.0.0/16")
        self.primary = pgharness.Postgres(port=PG_PORTS[0], **pg)
        self.pgs.append(self.primary)
        self.primary.sql("CREATE DATABASE tier")
        self.standby = pgharness.Postgres(standby_of=self.primary, sync_standby=True, port=PG_PORTS[1], **pg)
        self.pgs.append(self.standby)
        self.s3 = s3rver.S3rver(self.root, bucket=S3_BUCKET, port=S3_PORT, address=IP_PG, netns=NS_PG)
        os.environ["AWS_ACCESS_KEY_ID"] = s3rver.ACCESS_KEY  # the origins' S3 credentials
        os.environ["AWS_SECRET_ACCESS_KEY"] = s3rver.SECRET_KEY
        # Both servers in the URL: an origin finds the primary (read-write) after a promotion.
        self.state_url = ("host=%s,%s port=%d,%d dbname=tier user=postgres target_session_attrs=read-write "
                          "connect_timeout=2" % (IP_PG, IP_PG, PG_PORTS[0], PG_PORTS[1]))

    def origin_conf(self):
        return ('[state]\nbackend = "postgres"\nurl = "%s"\n[blobs]\nbackend = "s3"\nendpoint = "%s"\n'
                'bucket = "%s"\nregion = "us-east-1"\npath_style = true\ntimeout_ms = 3000\n' % (
                    self.state_url, self.s3.endpoint, S3_BUCKET))

    def fail_over(self):
        """kill -9 the primary, then pg_ctl promote the standby and clear its
        synchronous_standby_names (pgharness.Postgres.promote). Returns the seconds promote took."""
        self.primary.kill9()
        t = time.time()
        self.standby.promote()
        took = time.time() - t
        self.primary, self.standby = self.standby, None
        return took

    def usage(self):
        """{"pg": (RSS KiB, PSS KiB, CPU s), "s3": (...)}: PostgreSQL is every server's postmaster
        and its processes (shared buffers counted once in PSS), s3rver its one process."""
        rss = pss = cpu = 0
        for pg in (self.primary, self.standby):
            pid = pg.pid() if pg is not None else None
            if pid is None:
                continue
            kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
            for p, reaped in [(pid, True)] + [(int(k), False) for k in kids]:
                try:
                    r, ps, c = pid_usage(p, reaped)
                except (OSError, IndexError, ValueError):
                    continue
                rss, pss, cpu = rss + r, pss + ps, cpu + c
        out = {"pg": (rss, pss, cpu), "s3": (0, 0, 0.0)}
        if self.s3 is not None and self.s3.proc is not None:
            try:
                out["s3"] = pid_usage(self.s3.proc.pid)
            except (OSError, IndexError, ValueError):
                pass
        return out

    def close(self):
        if self.s3 is not None:
            self.s3.stop()
        for pg in self.pgs:
            pg.remove()
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- the fleet


def pct(vals, p):
    if not vals:
        return float("nan")
    s = sorted(vals)
    return s[min(len(s) - 1, max(0, int(math.ceil(p / 100.0 * len(s))) - 1))]


class Fleet:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix=PREFIX + "-", dir=WORK_PARENT)
        self.sync_token = os.urandom(16).hex()
        self.admin_token = os.urandom(16).hex()
        self.net = Net(args)
        self.nodes = []
        self.rows = []
        self.results = {}
        self.series = {}
        self.workers = []
        self.run_flag = None
        self.probe_acked = 0
        self.probe_unknown = 0  # probe check-ins sent whose answers never came
        self.tier = None  # --origin tier: TierBackends
        self.tier_conf = ""  # what each origin's config gets on top ([state], [blobs])
        self.origins = []

    # ---- set-up
    def build(self):
        a = self.args
        n = a.edges
        names = ["%s-e%d" % (PREFIX, i) for i in range(1, n + 1)]
        t0 = time.time()
        self.net.build(names)
        log("network: %d namespaces on %s in %.1f s; shaping: %s" % (n + (4 if a.origin == "tier" else 2), BRIDGE,
                                                                       time.time() - t0,
                                                                       "; ".join(self.net.shaping)))
        setns(os.open("/var/run/netns/" + NS_DEV, os.O_RDONLY))  # this thread's clients speak from befleet-d
        if a.origin == "tier":
            t0 = time.time()
            self.tier = TierBackends()
            self.tier_conf = self.tier.origin_conf()
            log("PostgreSQL primary + synchronous standby and s3rver up in %s in %.1f s" % (NS_PG, time.time() - t0))
            self.origins = [Node(self, "o1", NS_O1, IP_O1, "origin"), Node(self, "o3", NS_O3, IP_O3, "origin")]
        else:
            self.origins = [Node(self, "origin", NS_ORIGIN, IP_ORIGIN, "origin")]
        self.origin = self.origins[0]
        self.edges = []
        regions = 0 if a.topology == "flat" else (a.regions or max(1, int(round(math.sqrt(n)))))

        def to_origins(i):
            """Edge i's upstreams when it follows the origins: (first, [others]); in the tier,
            odd edges prefer o1 and even ones o3, so both origins take load."""
            first = self.origins[(i - 1) % len(self.origins)]
            return first, [o for o in self.origins if o is not first]

        for i, ns in enumerate(names, 1):
            if i <= regions:
                e = Node(self, "e%d" % i, ns, edge_ip(i), "edge", to_origins(i)[0], 1, to_origins(i)[1])
            elif regions:
                parent = self.edges[(i - 1) % regions]
                e = Node(self, "e%d" % i, ns, edge_ip(i), "edge", parent, 2)
            else:
                e = Node(self, "e%d" % i, ns, edge_ip(i), "edge", to_origins(i)[0], 1, to_origins(i)[1])
            self.edges.append(e)
        self.regions = regions
        self.leaves = [e for e in self.edges if e.depth == max(x.depth for x in self.edges)]
        t0 = time.time()
        for o in self.origins:
            o.start()
            o.wait_ready()
        for e in self.edges:
            e.start()
        for e in self.edges:
            e.wait_ready()
        log("%s + %d edges (%s) up in %.1f s" % ("origin" if len(self.origins) == 1 else "origins",
                                                 n, a.topology + (" %d regions" % regions if regions else ""),
                                                 time.time() - t0))

    # ---- helpers
    def publish(self, version, data, o=None, timeout=120):
        """Uploads `data`, makes it release `version` and points the channel at it, through origin
        `o` (the first one unless told); asserts every step was acknowledged."""
        o = o or self.origin
        st, doc = o.admin("PUT", "/v1/admin/blobs", data, raw=True, timeout=timeout)
        assert st in (200, 201), (st, doc)
        blob = hashlib.sha256(data).hexdigest()
        if o.admin("GET", "/v1/admin/apps/" + APP, timeout=min(timeout, 30))[0] != 200:
            st, doc = o.admin("PUT", "/v1/admin/apps/" + APP, {}, timeout=min(timeout, 30))
            assert st == 201, (st, doc)
        st, doc = o.admin("PUT", "/v1/admin/apps/%s/releases/%s" % (APP, version), {"zip": blob},
                          timeout=min(timeout, 30))
        assert st in ((200, 201) if self.tier else (201,)), (st, doc)  # a retried publish finds it made
        st, doc = o.admin("PUT", "/v1/admin/apps/%s/channels/production" % APP,
                          {"release": version, "public": True, "disable_auto_update": "none"},
                          timeout=min(timeout, 30))
        assert st in (200, 201), (st, doc)
        return time.time(), blob

    def origin_checkins(self):
        """Check-ins the origin counted; in the tier, the count of the first origin that answers
        (they share it in PostgreSQL)."""
        if self.tier is None:
            st, doc = self.origin.admin("GET", "/v1/admin/apps/%s/stats" % APP, timeout=30)
        else:
            err = None
            for o in self.origins:
                if o.proc is None or o.proc.poll() is not None:
                    continue
                try:
                    st, doc = o.admin("GET", "/v1/admin/apps/%s/stats" % APP, timeout=10)
                    if st in (200, 404):
                        break
                    err = AssertionError((o.name, st, doc))
                except (OSError, http.client.HTTPException) as e:
                    err = e
            else:
                raise err or OSError("no origin is running")
        if st == 404:
            return 0
        assert st == 200, (st, doc)
        return sum(d.get("checkins", 0) for d in doc["days"])

    def all_metrics(self, nodes, names):
        with ThreadPoolExecutor(16) as ex:
            return list(ex.map(lambda e: self._try_metrics(e, names), nodes))

    @staticmethod
    def _try_metrics(e, names):
        try:
            return e.metrics(names)
        except (OSError, http.client.HTTPException):
            return {}

    def converge(self, version, blob, size, t_ack, timeout):
        """Polls every edge's /updates (one probe device per edge, every a.poll_ms) until it
        names `version`, then downloads the zip and checks its hash: (answer time, whole time)
        per edge, seconds after the publish was acknowledged."""
        poll = self.args.poll_ms / 1000.0
        res = {}

        async def one(e):
            conn = [None, None]
            dev = device_uuid(9000000 + self.edges.index(e))
            deadline = t_ack + timeout
            while time.time() < deadline:
                try:
                    st, body = await http_req(conn, e.ip, PUBLIC_PORT, "POST", "/updates",
                                              json.dumps(device_info(dev)).encode(),
                                              (("Content-Type", "application/json"),))
                    doc = json.loads(body) if st == 200 else {}
                    self.probe_acked += st == 200  # an answered /updates is a check-in too
                except (OSError, asyncio.TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
                    self.probe_unknown += 1
                    doc = {}
                if doc.get("version") == version:
                    t_answer = time.time()
                    path = doc["url"].split("%d" % PUBLIC_PORT, 1)[1]
                    h = hashlib.sha256()
                    st, n = await http_req(conn, e.ip, PUBLIC_PORT, "GET", path, timeout=120, sink=h)
                    t_whole = time.time()
                    ok = st == 200 and n == size and h.hexdigest() == blob
                    res[e.name] = (t_answer - t_ack, t_whole - t_ack, ok)
                    break
                await asyncio.sleep(poll)
            if conn[1] is not None:
                conn[1].close()

        async def main():
            await asyncio.gather(*(one(e) for e in self.edges))

        asyncio.run(main())
        return res

    def transfer_probe(self, blob, size):
        """One GET of the blob from the origin to befleet-d: the link's own time for these bytes."""
        times = []
        for _ in range(3):
            c = http.client.HTTPConnection(IP_ORIGIN, PUBLIC_PORT, timeout=60)
            t = time.time()
            c.request("GET", "/v1/blobs/" + blob)
            r = c.getresponse()
            n = len(r.read())
            times.append(time.time() - t)
            c.close()
            assert r.status == 200 and n == size
        return min(times)

    def cpu_split(self):
        """CPU seconds so far: (the nodes, the device processes, this script, the tier's
        PostgreSQL + s3rver), from /proc."""
        nodes = sum(n.proc_stats()["cpu_s"] for n in self.origins + self.edges if n.proc.poll() is None)
        devs = 0.0
        for p in self.workers:
            try:
                f = open("/proc/%d/stat" % p.pid).read().rpartition(")")[2].split()
                devs += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                pass
        t = os.times()
        backends = 0.0
        if self.tier is not None:
            u = self.tier.usage()
            backends = u["pg"][2] + u["s3"][2]
        return nodes, devs, t.user + t.system, backends

    def cores(self, before, after, seconds):
        return "nodes %.2f, devices %.2f, this script %.2f%s cores of %d" % (
            (after[0] - before[0]) / seconds, (after[1] - before[1]) / seconds, (after[2] - before[2]) / seconds,
            (", PostgreSQL + s3rver %.2f" % ((after[3] - before[3]) / seconds)) if self.tier is not None else "",
            os.cpu_count())

    def readiness(self):
        """{status: edges} of the edges' /readyz (public listener)."""
        out = {}

        def one(e):
            try:
                c = http.client.HTTPConnection(e.ip, PUBLIC_PORT, timeout=5)
                c.request("GET", "/readyz")
                r = c.getresponse()
                body = r.read()
                try:
                    return "%d %s" % (r.status, json.loads(body).get("status", ""))
                except ValueError:
                    return str(r.status)
            except (OSError, http.client.HTTPException):
                return "no answer"
        with ThreadPoolExecutor(16) as ex:
            for st in ex.map(one, self.edges):
                out[st] = out.get(st, 0) + 1
        return out

    def rtt(self):
        """Median TCP connect time from befleet-d to the origin: one round trip on the bridge."""
        ts = []
        for _ in range(20):
            t = time.time()
            socket.create_connection((IP_ORIGIN, PUBLIC_PORT), timeout=5).close()
            ts.append(time.time() - t)
        return sorted(ts)[len(ts) // 2]

    def row(self, scenario, measured, goal):
        self.rows.append((scenario, measured, goal))
        print("| %s | %s | %s |" % (scenario, measured, goal), flush=True)

    def resources(self, label, cpu_window=None):
        stats = [e.proc_stats() for e in self.edges]
        rss = [s["rss_kib"] / 1024.0 for s in stats]
        anon = [s["anon_kib"] / 1024.0 for s in stats]
        thr = [s["threads"] for s in stats]
        fds = [s["fds"] for s in stats]
        o = self.origin.proc_stats()
        os_ = [x.proc_stats() for x in self.origins]
        total_pss = (sum(s["pss_kib"] for s in stats) + sum(x["pss_kib"] for x in os_)) / 1024.0
        backends = self.tier.usage() if self.tier is not None else None
        if backends:
            total_pss += (backends["pg"][1] + backends["s3"][1]) / 1024.0
        for p in self.workers:
            try:
                total_pss += int(open("/proc/%d/smaps_rollup" % p.pid).read().split("Pss:")[1].split()[0]) / 1024.0
            except (OSError, IndexError):
                pass
        out = {"rss_mib_p50": pct(rss, 50), "rss_mib_max": max(rss), "anon_mib_p50": pct(anon, 50),
               "threads_p50": pct(thr, 50), "total_pss_mib": total_pss,
               "fds_p50": pct(fds, 50), "fds_max": max(fds),
               "threads_max": max(thr), "origin_rss_mib": o["rss_kib"] / 1024.0,
               "cpu_s": [s["cpu_s"] for s in stats], "origin_cpu_s": o["cpu_s"]}
        if backends:
            out["origins_rss_mib"] = [x["rss_kib"] / 1024.0 for x in os_]
            out["origins_cpu_s"] = [x["cpu_s"] for x in os_]
            out["pg_rss_mib"], out["pg_pss_mib"], out["pg_cpu_s"] = (backends["pg"][0] / 1024.0,
                                                                     backends["pg"][1] / 1024.0, backends["pg"][2])
            out["s3_rss_mib"], out["s3_cpu_s"] = backends["s3"][0] / 1024.0, backends["s3"][2]
        if cpu_window:
            before, seconds = cpu_window
            cpu = [100.0 * (s["cpu_s"] - b) / seconds for s, b in zip(stats, before["cpu_s"])]
            out["cpu_pct_p50"], out["cpu_pct_max"] = pct(cpu, 50), max(cpu)
            out["origin_cpu_pct"] = 100.0 * (o["cpu_s"] - before["origin_cpu_s"]) / seconds
            if backends:
                out["origins_cpu_pct"] = [100.0 * (x - b) / seconds for x, b in zip(out["origins_cpu_s"],
                                                                                    before["origins_cpu_s"])]
                out["pg_cpu_pct"] = 100.0 * (out["pg_cpu_s"] - before["pg_cpu_s"]) / seconds
                out["s3_cpu_pct"] = 100.0 * (out["s3_cpu_s"] - before["s3_cpu_s"]) / seconds
        return out

    # ---- scenarios
    def s1_convergence(self):
        a = self.args
        log("scenario 1: publish -> every edge")
        _, base_blob = self.publish("2.0.0", os.urandom(64 * 1024))
        res = self.converge("2.0.0", base_blob, 64 * 1024, time.time(), 120)
        assert len(res) == len(self.edges), "only %d of %d edges took the first release" % (len(res), len(self.edges))
        # Idle means idle: the threads an edge starts for fills end after 10 s without work.
        time.sleep(12)
        self.idle = self.resources("idle")
        self.idle["thread_names"] = self.edges[-1].thread_names()
        rtt = self.rtt()
        depth = max(e.depth for e in self.edges)
        self.results["rtt_ms"] = rtt * 1000
        self.results["convergence"] = {}
        # the large one first: devices then start on the small one (row 2's downloads)
        for label, version, size in (("large", "2.0.1", a.large_mib << 20), ("small", "2.0.2", a.small_kib * 1024)):
            data = os.urandom(size)
            c0 = self.cpu_split()
            t_ack, blob = self.publish(version, data)
            res = self.converge(version, blob, size, t_ack, a.converge_timeout)
            cpu = self.cores(c0, self.cpu_split(), max(1e-3, time.time() - t_ack))
            link = self.transfer_probe(blob, size)
            if a.rate:
                bw = parse_rate(a.rate)
                hop = rtt + size / bw
                bound_txt = "%d x (RTT %.2f ms + %s / %s) = %.3f s" % (depth, rtt * 1000, human(size), a.rate, depth * hop)
            else:
                hop = link
                bound_txt = "%d x one GET of it on a veth (%.3f s, %.0f MB/s) = %.3f s" % (
                    depth, link, size / link / 1e6, depth * hop)
            answers = [r[0] for r in res.values()]
            wholes = [r[1] for r in res.values()]
            bad = sum(1 for r in res.values() if not r[2])
            missing = len(self.edges) - len(res)
            self.series["cdf_" + label] = sorted(wholes)
            self.results["convergence"][label] = {
                "size": size, "edges_done": len(res), "missing": missing, "bad": bad, "p50": pct(wholes, 50),
                "p99": pct(wholes, 99), "max": max(wholes) if wholes else float("nan"), "answer_p50": pct(answers, 50),
                "answer_max": max(answers) if answers else float("nan"), "bound": depth * hop}
            by_origin = ""
            if self.tier is not None:
                # the publish went through o1; edges that prefer o3 get the bytes through it (S3)
                for o in self.origins:
                    w = [r[1] for e in self.edges if e.upstream is o and e.name in res for r in [res[e.name]]]
                    self.results["convergence"][label]["max_via_" + o.name] = max(w) if w else float("nan")
                    self.results["convergence"][label]["p50_via_" + o.name] = pct(w, 50)
                by_origin = "; edges preferring %s" % "; ".join(
                    "%s p50 %.2f s, max %.2f s" % (o.name, self.results["convergence"][label]["p50_via_" + o.name],
                                                  self.results["convergence"][label]["max_via_" + o.name])
                    for o in self.origins)
            goal = "≤ %s s (%s)" % ("1" if depth == 1 else "2", "flat" if depth == 1 else "%d-level tree" % (depth + 1))
            self.current = version
            self.row("1. publish %s zip -> every edge serves it whole" % human(size),
                     "p50 %.2f s, p99 %.2f s, max %.2f s over %d/%d edges (first answer max %.2f s)%s%s; "
                     "bound %s; CPU meanwhile: %s" % (
                         pct(wholes, 50), pct(wholes, 99), max(wholes) if wholes else float("nan"), len(res),
                         len(self.edges), max(answers) if answers else float("nan"),
                         (", %d bad bytes" % bad if bad else ""), by_origin, bound_txt, cpu),
                     goal if label == "small" else "none set; compare with the bound")

    def start_devices(self):
        a = self.args
        self.counters = mp.Array("q", len(self.leaves) * NC, lock=False)
        self.run_flag = mp.Value("b", 1, lock=False)
        self.lat_q = mp.Queue()
        ips = [e.ip for e in self.leaves]
        for w in range(a.workers):
            p = mp.Process(target=device_worker, args=(w, a.workers, ips, a.devices, a.checkins_per_s, a.batch,
                                                       self.current, a.stale_frac, self.counters, self.run_flag,
                                                       self.lat_q))
            p.start()
            self.workers.append(p)

    def stop_devices(self):
        if self.run_flag is not None:
            self.run_flag.value = 0
        lats = []
        for _ in self.workers:
            try:
                lats += self.lat_q.get(timeout=30)
            except Exception:  # noqa: BLE001 - a worker that died has no latencies
                pass
        for p in self.workers:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        self.workers = []
        return lats

    def acked(self, edges_idx=None):
        c = self.counters
        idx = range(len(self.leaves)) if edges_idx is None else edges_idx
        return sum(c[i * NC + C_ACKED] for i in idx)

    def dl_bytes(self):
        return sum(self.counters[i * NC + C_DL_BYTES] for i in range(len(self.leaves)))

    def errs(self, edges_idx=None):
        c = self.counters
        idx = range(len(self.leaves)) if edges_idx is None else edges_idx
        return sum(c[i * NC + C_REQ_ERR] for i in idx), sum(c[i * NC + C_REQ_OK] for i in idx)

    def sampler(self, stop):
        """Every 0.5 s: (t, acked by devices, counted at the origin, outbox depth of all edges)."""
        n = 0
        while not stop.is_set():
            t = time.time()
            acked = self.acked()
            try:
                got = self.origin_checkins() - self.base_count
            except (OSError, http.client.HTTPException, AssertionError):
                got = None
            depth = None
            if n % 4 == 0:
                ms = self.all_metrics(self.edges, ("edge_outbox_depth",))
                depth = sum(m.get("edge_outbox_depth", 0) for m in ms)
            self.samples.append((t, acked, got, depth))
            n += 1
            stop.wait(max(0.0, 0.5 - (time.time() - t)))

    def lag_from(self, samples):
        """Lag of the c-th check-in: when the origin had counted c minus when devices had been
        answered for c (check-ins taken in order); one value per origin sample."""
        dev = [(t, a) for t, a, _, _ in samples]
        lags = []
        j = 0
        for t, _, got, _ in samples:
            if got is None or got <= 0:
                continue
            while j < len(dev) and dev[j][1] < got:
                j += 1
            if j == 0:
                lags.append((t, 0.0))
            elif j < len(dev):
                # interpolate when devices reached `got` between samples j-1 and j
                (t0, a0), (t1, a1) = dev[j - 1], dev[j]
                tdev = t0 + (t1 - t0) * ((got - a0) / float(a1 - a0)) if a1 > a0 else t1
                lags.append((t, max(0.0, t - tdev)))
        return lags

    def s2_checkins(self):
        a = self.args
        log("scenario 2: check-ins end to end, %d devices at %d edges, %d check-ins/s offered, %d s" % (
            a.devices, len(self.leaves), a.checkins_per_s, a.load_s))
        # The baseline is taken once the probes' check-ins of scenario 1 are all at the origin
        # (outboxes empty, the count still for a second): one still on its way would be
        # counted in this scenario without being one of its answered check-ins.
        deadline, last = time.time() + a.drain_timeout, None
        while time.time() < deadline:
            ms = self.all_metrics(self.edges, ("edge_outbox_depth",))
            count = self.origin_checkins()
            if sum(m.get("edge_outbox_depth", 1) for m in ms) == 0 and count == last:
                break
            last = count
            time.sleep(1.0)
        self.base_count = self.origin_checkins()
        self.base_probe = self.probe_acked
        self.base_probe_unknown = self.probe_unknown
        self.samples = []
        self.stop_sampler = threading.Event()
        self.t_load0 = time.time()
        before = self.resources("before")
        self.start_devices()
        c0 = self.cpu_split()
        threading.Thread(target=self.sampler, args=(self.stop_sampler,), daemon=True).start()
        time.sleep(a.load_s)
        cpu = self.cores(c0, self.cpu_split(), a.load_s)
        self.load = self.resources("load", (before, a.load_s))
        s = self.samples
        t_end = time.time()
        # steady window: skip the first 20% (devices start spread over one period)
        win = [x for x in s if x[0] >= self.t_load0 + 0.2 * a.load_s and x[2] is not None]
        if len(win) >= 2:
            dev_rate = (win[-1][1] - win[0][1]) / (win[-1][0] - win[0][0])
            org_rate = (win[-1][2] - win[0][2]) / (win[-1][0] - win[0][0])
        else:
            dev_rate = org_rate = float("nan")
        lags = [l for t, l in self.lag_from(s) if t >= self.t_load0 + 0.2 * a.load_s]
        # What the outboxes of all edges hold while nothing fails (p90 over the steady window): in
        # the tier a batch waits for PostgreSQL's synchronous commit, and the outboxes never get
        # near empty under this load, so there rows 3 and 4 call them drained back at this level.
        self.steady_outbox = pct([x[3] for x in s if x[0] >= self.t_load0 + 0.2 * a.load_s and x[3] is not None], 90)
        err, ok = self.errs()
        self.results["checkins"] = {"cpu": cpu, "offered_per_s": a.checkins_per_s, "acked_per_s": dev_rate, "origin_per_s": org_rate,
                                    "lag_p50": pct(lags, 50), "lag_p99": pct(lags, 99), "lag_max": max(lags or [0]),
                                    "device_errors": err, "device_ok": ok, "seconds": t_end - self.t_load0,
                                    "steady_outbox_p90": self.steady_outbox}
        self.row("2. check-ins devices -> %d edges -> origin%s" % (len(self.leaves), "" if self.tier is None else "s"),
                 "offered %d/s; answered %.0f/s; counted at the origin%s %.0f/s; lag p50 %.2f s, p99 %.2f s, "
                 "max %.2f s; device requests failed %d of %d; devices downloaded %.0f MiB; CPU: %s" % (
                     a.checkins_per_s, dev_rate, "" if self.tier is None else "s (PostgreSQL's count)", org_rate,
                     pct(lags, 50), pct(lags, 99), max(lags or [0]), err,
                     ok + err, self.dl_bytes() / 1048576.0, cpu),
                 "≥ 10000/s, p99 lag ≤ 2 s")

    def drained_level(self, n_edges):
        """Outbox depth of `n_edges` edges at which a backlog counts as drained, besides the 2% of
        its peak (or 50): in the tier, their share of the steady level (row 2); 0 embedded."""
        if self.tier is None or not self.steady_outbox or self.steady_outbox != self.steady_outbox:
            return 0
        return self.steady_outbox * n_edges / float(len(self.leaves))

    def errs_status(self, edges_idx=None):
        """Failed device requests that were answered with a status other than 200."""
        idx = range(len(self.leaves)) if edges_idx is None else edges_idx
        return sum(self.counters[i * NC + C_REQ_STATUS] for i in idx)

    def s3_partition(self):
        a = self.args
        k = max(1, int(round(len(self.leaves) * a.partition_frac)))
        cut = self.leaves[:k]
        idx = list(range(k))
        log("scenario 3: partition %d edges from their upstream for %d s" % (k, a.partition_s))
        err0, ok0 = self.errs(idx)
        acked0 = self.acked(idx)
        t0 = time.time()
        for e in cut:
            self.net.cut(e.ns, e.ip, [(up.ns, up.ip) for up in e.upstreams])
        self.results["partition_mode"] = self.net.partition_mode
        peak = 0
        while time.time() < t0 + a.partition_s:
            time.sleep(min(2.0, max(0.0, t0 + a.partition_s - time.time())))
            ms = self.all_metrics(cut, ("edge_outbox_depth",))
            peak = max(peak, sum(m.get("edge_outbox_depth", 0) for m in ms))
        err1, ok1 = self.errs(idx)
        acked_during = self.acked(idx) - acked0
        t_heal = time.time()
        for e in cut:
            self.net.heal(e.ns, e.ip, [(up.ns, up.ip) for up in e.upstreams])
        drained = None
        last = peak
        while time.time() < t_heal + a.drain_timeout:
            ms = self.all_metrics(cut, ("edge_outbox_depth",))
            if len(ms) == len(cut) and all("edge_outbox_depth" in m for m in ms):
                last = sum(m["edge_outbox_depth"] for m in ms)
                peak = max(peak, last)
                # devices keep checking in: drained = the backlog is gone (a few new ones may wait)
                if last <= max(50, 0.02 * peak, self.drained_level(len(cut))):
                    drained = time.time() - t_heal
                    break
            time.sleep(0.25 if len(cut) <= 20 else 1.0)
        self.results["partition"] = {"edges": k, "seconds": a.partition_s, "peak_outbox": peak, "drain_s": drained,
                                     "device_errors": err1 - err0, "device_ok": ok1 - ok0,
                                     "acked_during": acked_during, "mode": self.net.partition_mode}
        self.row("3. partition %d of %d edges for %d s (%s)" % (
            k, len(self.leaves), a.partition_s, "tc drop" if self.net.partition_mode == "tc" else "blackhole routes"),
                 "their devices: %d of %d requests failed; %d check-ins answered meanwhile; outboxes peaked at %d, "
                 "drained %s after the heal (%s check-ins/s)" % (
                     err1 - err0, ok1 - ok0 + err1 - err0, acked_during, peak,
                     ("%.1f s" % drained) if drained is not None else "NOT within %d s (%d left)" % (a.drain_timeout, last),
                     ("%.0f" % (peak / drained)) if drained else "-") + (
                     "" if self.tier is None else "; drained = back to %.0f, their share of the outboxes' level under "
                     "steady load (row 2, p90)" % self.drained_level(k)),
                 "devices answered, 0 lost (row 5)")

    def s4_origin_restart(self):
        a = self.args
        log("scenario 4: origin kill -9, down %d s, restart" % a.origin_down_s)
        err0, ok0 = self.errs()
        t_kill = time.time()
        stale = 0
        self.origin.proc.send_signal(signal.SIGKILL)
        self.origin.proc.wait()
        peak = 0
        while time.time() < t_kill + a.origin_down_s:
            time.sleep(min(2.0, max(0.0, t_kill + a.origin_down_s - time.time())))
            ms = self.all_metrics(self.edges, ("edge_outbox_depth", "edge_sync_stale"))
            peak = max(peak, sum(m.get("edge_outbox_depth", 0) for m in ms))
            stale = max(stale, sum(m.get("edge_sync_stale", 0) for m in ms))
        ready = self.readiness()
        err1, ok1 = self.errs()
        t_start = time.time()
        self.origin.start()
        self.origin.wait_ready()
        t_up = time.time() - t_start
        t_pub, blob = self.publish("2.0.3", os.urandom(64 * 1024))
        res = self.converge("2.0.3", blob, 64 * 1024, t_pub, a.converge_timeout)
        follow = max([r[1] for r in res.values()] or [float("nan")])
        drained = None
        while time.time() < t_start + a.drain_timeout:
            ms = self.all_metrics(self.edges, ("edge_outbox_depth",))
            depth = sum(m.get("edge_outbox_depth", 0) for m in ms)
            peak = max(peak, depth)
            if len(ms) == len(self.edges) and depth <= max(50, 0.02 * peak):
                drained = time.time() - t_start
                break
            time.sleep(0.25 if len(self.edges) <= 20 else 1.0)
        self.results["origin_restart"] = {"down_s": a.origin_down_s, "device_errors": err1 - err0,
                                          "device_ok": ok1 - ok0, "peak_outbox": peak, "origin_up_s": t_up,
                                          "edges_stale": stale, "readyz_at_end_of_outage": ready,
                                          "edges_following": len(res), "follow_max_s": follow, "drain_s": drained}
        self.row("4. origin kill -9, down %d s, restarted" % a.origin_down_s,
                 "devices: %d of %d requests failed while it was down; edges: %d marked stale, /readyz at the end "
                 "of the outage %s; outboxes peaked at %d; origin listening "
                 "%.1f s after its start; a release published then reached %d/%d edges in max %.2f s; outboxes "
                 "drained %s after the restart" % (
                     err1 - err0, ok1 - ok0 + err1 - err0, stale,
                     ", ".join("%d %s" % (k, v) for v, k in sorted(ready.items())), peak, t_up, len(res), len(self.edges), follow,
                     ("%.1f s" % drained) if drained is not None else "NOT within %d s" % a.drain_timeout),
                 "devices answered throughout, 0 lost")

    def s4_tier_failover(self):
        """Row 4 of --origin tier: kill -9 origin o1, then (1 s later) kill -9 the PostgreSQL
        primary and promote the standby (pg_ctl promote, synchronous_standby_names cleared: no
        standby is left to wait for); publish through o3 until a publish is acknowledged (admin
        writes work again), time that release to every edge, and start o1 again on its data
        directory --origin-down-s after its kill (or once the publish is through and the edges'
        /readyz read, if that takes longer: the row says how long it was down); its state URL
        names both servers, so it finds the new primary."""
        a = self.args
        o1, o3 = self.origins
        log("scenario 4: origin tier failover: kill -9 o1 and the PostgreSQL primary, promote the standby, "
            "o1 back after %d s" % a.origin_down_s)
        err0, ok0 = self.errs()
        status0 = self.errs_status()
        watch = {"peak": 0, "stale": 0}
        stop = threading.Event()

        def watcher():
            while not stop.is_set():
                ms = self.all_metrics(self.edges, ("edge_outbox_depth", "edge_sync_stale"))
                watch["peak"] = max(watch["peak"], sum(m.get("edge_outbox_depth", 0) for m in ms))
                watch["stale"] = max(watch["stale"], sum(m.get("edge_sync_stale", 0) for m in ms))
                stop.wait(2.0)

        t_kill = time.time()
        self.marks["t_kill"] = t_kill
        o1.proc.send_signal(signal.SIGKILL)
        o1.proc.wait()
        wt = threading.Thread(target=watcher, daemon=True)
        wt.start()
        time.sleep(1.0)
        t_pg_kill = time.time()
        promote_s = self.tier.fail_over()
        t_promoted = time.time()
        self.marks["t_promote"] = t_promoted
        # Admin writes: a publish through o3, retried until every step is acknowledged.
        data = os.urandom(64 * 1024)
        t_ack = blob = None
        attempts = 0
        while time.time() < t_promoted + a.drain_timeout:
            attempts += 1
            try:
                t_ack, blob = self.publish("2.0.3", data, o=o3, timeout=10)
                break
            except (OSError, http.client.HTTPException, AssertionError, ValueError):
                time.sleep(0.1)
        admin_s = (t_ack - t_promoted) if t_ack else None
        res = {}
        conv = None
        if t_ack:
            def follow():
                res.update(self.converge("2.0.3", blob, 64 * 1024, t_ack, a.converge_timeout))
            conv = threading.Thread(target=follow, daemon=True)
            conv.start()
        time.sleep(max(0.0, t_kill + a.origin_down_s - time.time()))
        ready = self.readiness()
        err1, ok1 = self.errs()
        status1 = self.errs_status()
        t_start = time.time()
        self.marks["t_restart"] = t_start
        o1.start()
        o1.wait_ready()
        t_up = time.time() - t_start
        if conv is not None:
            conv.join()
        follow_max = max([r[1] for r in res.values()] or [float("nan")])
        stop.set()
        wt.join()
        peak, stale = watch["peak"], watch["stale"]
        drained = None
        while time.time() < t_promoted + a.drain_timeout:
            ms = self.all_metrics(self.edges, ("edge_outbox_depth",))
            depth = sum(m.get("edge_outbox_depth", 0) for m in ms)
            peak = max(peak, depth)
            if len(ms) == len(self.edges) and depth <= max(50, 0.02 * peak, self.drained_level(len(self.leaves))):
                drained = time.time() - t_promoted
                break
            time.sleep(0.25 if len(self.edges) <= 20 else 1.0)
        o1_ready = "no answer"
        try:
            c = http.client.HTTPConnection(o1.ip, PUBLIC_PORT, timeout=5)
            c.request("GET", "/readyz")
            r = c.getresponse()
            o1_ready = "%d %s" % (r.status, json.loads(r.read() or b"{}").get("status", ""))
            c.close()
        except (OSError, http.client.HTTPException, ValueError):
            pass
        self.results["origin_restart"] = {
            "mode": "tier", "down_s": a.origin_down_s, "device_errors": err1 - err0, "device_ok": ok1 - ok0,
            "device_errors_status": status1 - status0, "drained_level": self.drained_level(len(self.leaves)),
            "o1_down_s": t_start - t_kill, "pg_primary_killed_after_s": t_pg_kill - t_kill,
            "peak_outbox": peak, "origin_up_s": t_up, "edges_stale": stale, "readyz_at_end_of_outage": ready,
            "promote_s": promote_s, "admin_resume_s": admin_s, "admin_attempts": attempts,
            "edges_following": len(res), "follow_max_s": follow_max, "drain_s": drained,
            "o1_readyz_after_restart": o1_ready}
        self.row("4. origin tier failover: kill -9 o1 and the PostgreSQL primary, standby promoted, o1 restarted",
                 "o1 down %.1f s, the primary killed %.1f s after it; devices: %d of %d requests failed until o1 "
                 "was back (%d answered with an error status, the rest "
                 "timed out or lost their connection); edges: %d marked stale, /readyz at the end of "
                 "the outage %s; outboxes peaked at %d; pg_ctl promote took %.1f s; admin writes (a publish through "
                 "o3) worked again %s after the promotion; that release reached %d/%d edges in max %.2f s after "
                 "its acknowledgement; o1 started on the new primary, listening %.1f s after its start, /readyz "
                 "%s; outboxes drained %s after the promotion (back to %.0f, their level under steady load)" % (
                     t_start - t_kill, t_pg_kill - t_kill, err1 - err0, ok1 - ok0 + err1 - err0, status1 - status0,
                     stale,
                     ", ".join("%d %s" % (k, v) for v, k in sorted(ready.items())), peak, promote_s,
                     ("%.2f s" % admin_s) if admin_s is not None else "NOT within %d s" % a.drain_timeout,
                     len(res), len(self.edges), follow_max, t_up, o1_ready,
                     ("%.1f s" % drained) if drained is not None else "NOT within %d s" % a.drain_timeout,
                     self.drained_level(len(self.leaves))),
                 "devices answered throughout; admin writes ≤ 5 s after the promotion; 0 lost")

    def s5_exactly_once(self):
        a = self.args
        lats = self.stop_devices()
        self.stop_sampler.set()
        acked = self.acked() + self.probe_acked - self.base_probe
        t0 = time.time()
        got = None
        while time.time() < t0 + a.drain_timeout:
            got = self.origin_checkins() - self.base_count
            if got >= acked:
                break
            time.sleep(0.5)
        time.sleep(1.5)  # anything counted twice would show up now
        got = self.origin_checkins() - self.base_count
        unknown = (sum(self.counters[i * NC + C_UNKNOWN] for i in range(len(self.leaves))) +
                   self.probe_unknown - self.base_probe_unknown)
        self.results["exactly_once"] = {"acked": acked, "origin": got, "lost": max(0, acked - got),
                                        "extra": max(0, got - acked), "unanswered": unknown,
                                        "wait_s": time.time() - t0}
        self.row("5. every answered check-in counted once at the origin",
                 "devices were answered for %d check-ins; the origin counted %d: %d lost, %d extra (%d "
                 "check-ins were sent but their answers lost: a timeout or a cut connection; the edge may "
                 "have kept them)" % (acked, got, max(0, acked - got), max(0, got - acked), unknown),
                 "0 lost, extra <= unanswered")
        lat_ok = [l for _, _, l in lats if l >= 0]
        self.results["device_latency_ms"] = {"p50": pct(lat_ok, 50) * 1000, "p99": pct(lat_ok, 99) * 1000}
        self.lats = lats

    def s6_resources(self):
        i, l = self.idle, self.load
        disks = [e.disk_bytes() / 1048576.0 for e in self.edges]
        self.results["resources"] = {"idle": {k: v for k, v in i.items() if k not in ("cpu_s",)},
                                     "load": {k: v for k, v in l.items() if k not in ("cpu_s",)},
                                     "disk_mib_p50": pct(disks, 50), "disk_mib_max": max(disks)}
        self.row("6. per edge, idle", "RSS p50 %.1f MiB (max %.1f), of it private %.1f MiB; threads %d (max %d); "
                 "fds %d (max %d)" % (i["rss_mib_p50"], i["rss_mib_max"], i["anon_mib_p50"], i["threads_p50"],
                                      i["threads_max"], i["fds_p50"], i["fds_max"]),
                 "≤ 24 MiB, ≤ 8 threads")
        self.row("6. an edge's threads", i["thread_names"], "-")
        self.row("6. per edge, under load (row 2)",
                 "RSS p50 %.1f MiB (max %.1f); CPU p50 %.1f%% (max %.1f%%) of a core; threads %d (max %d); fds %d "
                 "(max %d); disk p50 %.1f MiB (max %.1f)" % (
                     l["rss_mib_p50"], l["rss_mib_max"], l["cpu_pct_p50"], l["cpu_pct_max"], l["threads_p50"],
                     l["threads_max"], l["fds_p50"], l["fds_max"], pct(disks, 50), max(disks)), "-")
        if self.tier is None:
            self.row("6. whole fleet", "memory (PSS) of origin + %d edges + device processes: idle %.0f MiB, under "
                     "load %.0f MiB; origin under load %.0f MiB RSS, %.0f%% of a core" % (
                         len(self.edges), i["total_pss_mib"], l["total_pss_mib"], l["origin_rss_mib"],
                         l["origin_cpu_pct"]), "≤ 8 GiB")
            return
        self.row("6. whole fleet", "memory (PSS) of 2 origins + %d edges + PostgreSQL + s3rver + device processes: "
                 "idle %.0f MiB, under load %.0f MiB" % (len(self.edges), i["total_pss_mib"], l["total_pss_mib"]),
                 "≤ 8 GiB")
        self.row("6. the origin tier, under load (row 2)",
                 "origins: %s; PostgreSQL (primary + standby, every process): RSS %.0f MiB, PSS %.0f MiB, %.0f%% "
                 "of a core; s3rver %.0f MiB RSS, %.0f%% of a core; idle: origins %s MiB RSS, PostgreSQL PSS %.0f MiB" % (
                     ", ".join("%s %.0f MiB RSS, %.0f%% of a core" % (o.name, r, c) for o, r, c in zip(
                         self.origins, l["origins_rss_mib"], l["origins_cpu_pct"])),
                     l["pg_rss_mib"], l["pg_pss_mib"], l["pg_cpu_pct"], l["s3_rss_mib"], l["s3_cpu_pct"],
                     "/".join("%.0f" % r for r in i["origins_rss_mib"]), i["pg_pss_mib"]), "-")

    def plot(self, path):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log("no matplotlib (Debian: python3-matplotlib; run with /usr/bin/python3): PNG not written")
            return False
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
        for label in ("small", "large"):
            xs = self.series.get("cdf_" + label, [])
            if xs:
                c = self.results["convergence"][label]
                ax1.step(xs, [(k + 1) / len(self.edges) for k in range(len(xs))], where="post",
                         label="%s zip (bound %.2f s)" % (human(c["size"]), c["bound"]))
        ax1.set_xlim(left=0)
        ax1.set_xlabel("seconds after the publish was acknowledged")
        ax1.set_ylabel("share of edges serving it whole")
        ax1.set_title("publish -> every edge (%d edges, %s)" % (len(self.edges), self.args.topology))
        ax1.grid(alpha=.3)
        ax1.legend()
        lags = self.lag_from(self.samples)
        t0 = self.t_load0
        ax2.plot([t - t0 for t, _ in lags], [l for _, l in lags], label="check-in lag (s)")
        ax2.set_xlabel("seconds since devices started")
        ax2.set_ylabel("lag at the origin (s)")
        marks = (("t_cut", "partition"), ("t_heal", "heal"), ("t_kill", "origin kill -9"),
                 ("t_restart", "origin restart"))
        if self.tier is not None:
            marks = marks[:2] + (("t_kill", "o1 kill -9"), ("t_promote", "PG promote"), ("t_restart", "o1 restart"))
        for k, (key, lab) in enumerate(marks):
            if key in self.marks:
                ax2.axvline(self.marks[key] - t0, color="grey", ls="--", lw=.8)
                # the tier's three marks are seconds apart: their labels go one under the other
                y = .95 - (.06 * (k - 2) if self.tier is not None and k >= 2 else 0)
                ax2.text(self.marks[key] - t0, ax2.get_ylim()[1] * y, " " + lab, fontsize=8, va="top")
        ax3 = ax2.twinx()
        d = [(t - t0, x) for t, _, _, x in self.samples if x is not None]
        ax3.plot([x for x, _ in d], [y for _, y in d], color="tab:red", alpha=.6, label="outbox depth, all edges")
        ax3.set_ylabel("check-ins waiting in outboxes")
        ax2.set_title("check-ins: lag at the origin, outboxes")
        h1, l1 = ax2.get_legend_handles_labels()
        h3, l3 = ax3.get_legend_handles_labels()
        ax2.legend(h1 + h3, l1 + l3, loc="upper left")
        ax2.grid(alpha=.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        return True

    # ---- teardown
    def teardown(self):
        if self.run_flag is not None:
            self.run_flag.value = 0
        for p in self.workers:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        nodes = [n for n in (self.origins + getattr(self, "edges", [])) if n is not None]
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 15
        for n in nodes:
            if n.proc is not None:
                try:
                    n.proc.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()
        if self.tier is not None:
            self.tier.close()
        setns(self.net.root_fd)
        cleanup_leftovers(quiet=True)
        shutil.rmtree(self.work, ignore_errors=True)


def parse_rate(rate):
    """tc rate ('100mbit', '1gbit', '500kbit') in bytes/s."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(k|m|g)?bit", rate.lower())
    if not m:
        raise SystemExit("--rate: expected like 100mbit, got %r" % rate)
    return float(m.group(1)) * {None: 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] / 8


def human(n):
    return "%d MiB" % (n >> 20) if n >= 1 << 20 and n % (1 << 20) == 0 else "%d KiB" % (n >> 10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/bundle-edge"))
    ap.add_argument("--origin", choices=("embedded", "tier"), default="embedded",
                    help="embedded: one origin with its own state; tier: two origins on PostgreSQL 15 (primary + "
                         "synchronous standby) and s3rver")
    ap.add_argument("--edges", type=int, default=100)
    ap.add_argument("--topology", choices=("flat", "tree"), default="flat")
    ap.add_argument("--regions", type=int, default=0, help="tree: regional edges (default sqrt(edges))")
    ap.add_argument("--rate", default="", help="tc TBF rate on every edge link, each way (e.g. 100mbit)")
    ap.add_argument("--origin-rate", default="", help="tc TBF rate on the origin's link")
    ap.add_argument("--delay-ms", type=int, default=0, help="netem delay per edge link (if the kernel has netem)")
    ap.add_argument("--loss-pct", type=float, default=0, help="netem loss per edge link (if the kernel has netem)")
    ap.add_argument("--edge-config", default=os.path.join(ROOT, "conf/small-edge.toml"),
                    help="each edge's configuration ([tls] dropped; addresses, upstream and ids set per edge)")
    ap.add_argument("--origin-threads", type=int, default=2)
    ap.add_argument("--backoff-max-ms", type=int, default=5000, help="edges' upstream.backoff_max_ms")
    ap.add_argument("--devices", type=int, default=0, help="default: 10 per edge")
    ap.add_argument("--checkins-per-s", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=20, help="events per /stats batch")
    ap.add_argument("--stale-frac", type=float, default=0.1,
                    help="share of devices that start on their builtin bundle (they download the release)")
    ap.add_argument("--workers", type=int, default=2, help="device processes")
    ap.add_argument("--load-s", type=int, default=30)
    ap.add_argument("--partition-s", type=int, default=60)
    ap.add_argument("--partition-frac", type=float, default=0.25)
    ap.add_argument("--origin-down-s", type=int, default=10)
    ap.add_argument("--small-kib", type=int, default=1024)
    ap.add_argument("--large-mib", type=int, default=16)
    ap.add_argument("--poll-ms", type=int, default=0,
                    help="convergence: each edge's /updates is polled this often (default 25, 50 past 20 edges)")
    ap.add_argument("--converge-timeout", type=int, default=120)
    ap.add_argument("--drain-timeout", type=int, default=120)
    ap.add_argument("--png", default="fleet-bench.png")
    ap.add_argument("--json", default="")
    ap.add_argument("--timeout", type=int, default=1200, help="the whole run; then it cleans up and exits 3")
    ap.add_argument("--cleanup-only", action="store_true")
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)
    args.devices = args.devices or 10 * args.edges
    args.poll_ms = args.poll_ms or (25 if args.edges <= 20 else 50)

    if os.geteuid() != 0:
        raise SystemExit("fleet-bench: needs root (it makes network namespaces, veths and a bridge)")
    if shutil.which("ip") is None or sh("ip", "netns", "list", check=False).returncode != 0:
        raise SystemExit("fleet-bench: needs iproute2 with network namespaces (ip netns)")
    cleanup_leftovers()
    if args.cleanup_only:
        return 0
    if not os.access(args.binary, os.X_OK):
        raise SystemExit("fleet-bench: no binary at %s (cmake --build --preset release)" % args.binary)
    if args.origin == "tier":
        why = tier_missing()
        if why:
            raise SystemExit("fleet-bench: --origin tier: " + why)

    fleet = Fleet(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    def on_alarm(_signum, _frame):
        raise TimeoutError("--timeout %d s reached" % args.timeout)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)
    rc = 0
    s0 = cpu_times()
    try:
        fleet.marks = {}
        fleet.build()
        print("\norigin mode: %s\n" % (
            "embedded (one origin, %s, with its own state)" % NS_ORIGIN if fleet.tier is None else
            "tier (origins o1 %s and o3 %s on PostgreSQL 15 primary %s:%d + synchronous standby :%d and s3rver "
            ":%d, all in %s; odd edges list o1 first, even ones o3)" % (
                IP_O1, IP_O3, IP_PG, PG_PORTS[0], PG_PORTS[1], S3_PORT, NS_PG)), end="", flush=True)
        print("\nfleet-bench: %d edges, %s%s; %d devices at %d edges offering %d check-ins/s (an /updates and a "
              "/stats batch of %d events per loop); convergence polled every %d ms; edges' config %s; shaping: %s; "
              "binary %s\n" % (
                  args.edges, args.topology, (" (%d regional edges)" % fleet.regions) if fleet.regions else "",
                  args.devices, len(fleet.leaves), args.checkins_per_s, args.batch, args.poll_ms,
                  os.path.relpath(args.edge_config, ROOT), "; ".join(fleet.net.shaping),
                  os.path.relpath(args.binary, ROOT)), flush=True)
        print("| scenario | measured | goal / bound |\n|---|---|---|", flush=True)
        fleet.s1_convergence()
        fleet.s2_checkins()
        fleet.marks["t_cut"] = time.time()
        fleet.s3_partition()
        fleet.marks["t_heal"] = fleet.marks["t_cut"] + args.partition_s
        if fleet.tier is None:
            fleet.marks["t_kill"] = time.time()
            fleet.s4_origin_restart()
            fleet.marks["t_restart"] = fleet.marks["t_kill"] + args.origin_down_s
        else:
            fleet.s4_tier_failover()
        fleet.s5_exactly_once()
        fleet.s6_resources()
        steal = steal_pct(s0, cpu_times())
        la = os.getloadavg()
        print("\nRTT on the bridge %.2f ms; device request p50 %.1f ms, p99 %.1f ms; host steal %.1f%%, load "
              "average %.1f; shaping: %s" % (fleet.results["rtt_ms"], fleet.results["device_latency_ms"]["p50"],
                                             fleet.results["device_latency_ms"]["p99"], steal, la[0],
                                             "; ".join(fleet.net.shaping)), flush=True)
        fleet.results.update(origin_mode=args.origin, edges=args.edges, topology=args.topology, regions=fleet.regions,
                             steal_pct=steal,
                             shaping=fleet.net.shaping, netem=fleet.net.netem, rows=fleet.rows)
        if args.png and fleet.plot(args.png):
            print("plot: %s" % args.png, flush=True)
    except (KeyboardInterrupt, TimeoutError) as e:
        log("stopped: %s; cleaning up" % (e or "Ctrl-C"))
        rc = 3
    except Exception:
        import traceback
        traceback.print_exc()
        rc = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        fleet.teardown()
        left = our_namespaces()
        if left:
            log("left behind: " + " ".join(left))
            rc = rc or 1
    if args.json:
        json.dump(fleet.results, open(args.json, "w"), indent=1, default=str)
    return rc


if __name__ == "__main__":
    sys.exit(main())
