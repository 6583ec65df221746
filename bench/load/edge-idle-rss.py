#!/usr/bin/env python3
"""Idle memory of a small edge: an origin on loopback with one small published release, then
an edge started afresh each round with conf/small-edge.toml (its listeners on free loopback
ports, no TLS, no disk reserve) that follows it and fills the release once (a device asks for
an update and downloads the zip through it); after --idle seconds without traffic the edge's
VmRSS (/proc/<pid>/status) and Pss, Private (clean + dirty) and Anonymous (smaps_rollup) are
read. Prints each round, then median (min-max) over the rounds; with --maps, the resident KiB
of each file the last edge maps (its shared libraries), largest first.

Usage: bench/load/edge-idle-rss.py [--binary build/release/bundle-edge] [--rounds 5] [--idle 10] [--maps]"""
import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from benchnode import BenchNode, spread  # noqa: E402

APP = "com.bench.idle"
# What this script sets on top of conf/small-edge.toml: every request comes from 127.0.0.1,
# and no reserve file (it would only take disk).
OVERRIDES = {"[server]": {"max_connections_per_ip": "0"}, "[store]": {"reserve": "0"}}


def edge_conf(origin_port, token):
    """conf/small-edge.toml without [tls] and its paths, following the origin at origin_port."""
    out, table = [], ""
    extra = dict(OVERRIDES)
    extra["[upstream]"] = {"url": '"http://127.0.0.1:%d"' % origin_port}
    extra["[sync]"] = {"token": '"%s"' % token}
    for line in open(os.path.join(ROOT, "conf", "small-edge.toml")):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("["):
            if table in extra:
                out += ["%s = %s" % kv for kv in extra.pop(table).items()]
            table = s
            if table != "[tls]":
                out.append(s)
            continue
        key = s.partition("=")[0].strip()
        if table == "[tls]" or key in extra.get(table, {}) or key == "data_dir":
            continue
        out.append(s)
    if table in extra:
        out += ["%s = %s" % kv for kv in extra.pop(table).items()]
    for t, kv in extra.items():
        out.append(t)
        out += ["%s = %s" % x for x in kv.items()]
    return "\n".join(out) + "\n"


def request(port, method, path, body=None, admin=False):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": "Bearer t"} if admin else {}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    c.request(method, path, body, headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def publish(origin):
    data = os.urandom(64 * 1024)
    blob = hashlib.sha256(data).hexdigest()
    st, _ = request(origin.admin, "PUT", "/v1/admin/blobs", data, admin=True)
    assert st in (200, 201), st
    st, _ = request(origin.admin, "PUT", "/v1/admin/apps/" + APP, {}, admin=True)
    assert st == 201, st
    st, _ = request(origin.admin, "PUT", "/v1/admin/apps/%s/releases/1.0.1" % APP, {"zip": blob}, admin=True)
    assert st == 201, st
    st, _ = request(origin.admin, "PUT", "/v1/admin/apps/%s/channels/production" % APP,
                    {"release": "1.0.1", "public": True, "disable_auto_update": "none"}, admin=True)
    assert st in (200, 201), st
    return blob


def fill(edge, blob, timeout=30):
    """A device asks the edge for an update until it names the release, then downloads it."""
    device = {"platform": "android", "device_id": "0a1b2c3d-1111-4222-8333-000000000001", "app_id": APP,
              "custom_id": "", "version_build": "1.0.0", "version_code": "100", "version_os": "14",
              "version_name": "1.0.0", "plugin_version": "8.52.0", "is_emulator": False, "is_prod": True,
              "defaultChannel": ""}
    deadline = time.time() + timeout
    while time.time() < deadline:
        st, body = request(edge.port, "POST", "/updates", device)
        doc = json.loads(body) if st == 200 else {}
        if doc.get("version") == "1.0.1":
            path = "/" + doc["url"].split("/", 3)[3]
            st, data = request(edge.port, "GET", path)
            assert st == 200 and hashlib.sha256(data).hexdigest() == blob, st
            return
        time.sleep(0.2)
    raise SystemExit("the edge never answered the release: " + open(edge.log).read()[-2000:])


def memory(pid):
    out = {}
    for line in open("/proc/%d/status" % pid):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "Threads"):
            out[k] = int(v.split()[0])
    for line in open("/proc/%d/smaps_rollup" % pid):
        k, _, v = line.partition(":")
        if k in ("Pss", "Private_Clean", "Private_Dirty", "Anonymous"):
            out[k] = int(v.split()[0])
    out["Private"] = out["Private_Clean"] + out["Private_Dirty"]
    return out


def maps(pid):
    """Resident KiB per mapped file (and its private dirty part), largest first."""
    per, cur = {}, None
    for line in open("/proc/%d/smaps" % pid):
        f = line.split()
        if len(f) >= 5 and "-" in f[0] and ":" not in f[0]:
            cur = f[5] if len(f) >= 6 else "[anon]"
            continue
        if f and f[0] in ("Rss:", "Private_Dirty:") and cur is not None:
            r = per.setdefault(cur, [0, 0])
            r[0 if f[0] == "Rss:" else 1] += int(f[1])
    return sorted(per.items(), key=lambda kv: -kv[1][0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "release", "bundle-edge"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--maps", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="edge-idle-rss-")
    token = os.urandom(16).hex()
    origin = None
    try:
        os.makedirs(os.path.join(work, "origin"))
        origin = BenchNode(args.binary, os.path.join(work, "origin"),
                           '[node]\nrole = "origin"\n[sync]\ntoken = "%s"\n[store]\nreserve = 0\n' % token)
        blob = publish(origin)
        rows = []
        for r in range(args.rounds):
            d = os.path.join(work, "edge%d" % r)
            os.makedirs(d)
            edge = BenchNode(args.binary, d, edge_conf(origin.port, token))
            try:
                fill(edge, blob)
                time.sleep(args.idle)
                m = memory(edge.proc.pid)
                rows.append(m)
                print("round %d: VmRSS %.2f MiB, Pss %.2f MiB, Private %.2f MiB, Anonymous %.2f MiB, threads %d"
                      % (r + 1, m["VmRSS"] / 1024, m["Pss"] / 1024, m["Private"] / 1024, m["Anonymous"] / 1024,
                         m["Threads"]), flush=True)
                if args.maps and r == args.rounds - 1:
                    for name, (rss, dirty) in maps(edge.proc.pid):
                        if rss >= 4:
                            print("  %6d KiB (private dirty %5d)  %s" % (rss, dirty, name))
            finally:
                edge.stop()
        for k in ("VmRSS", "Pss", "Private", "Anonymous"):
            print("%-9s %s" % (k, spread([m[k] / 1024 for m in rows], "%.2f", " MiB")))
    finally:
        if origin is not None:
            origin.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
