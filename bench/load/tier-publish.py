#!/usr/bin/env python3
"""Publish-to-edge time in the origin tier: how long from an admin write's acknowledgement on
one origin until an edge that follows ANOTHER origin has applied it (the write commits in
PostgreSQL with a NOTIFY, the second origin follows the shared changelog and wakes its
long-polls, the edge applies and wakes its own). Baseline in the same run: the same write on
an embedded origin that the edge follows directly (one hop less, no database).

The time is read without polling: right after the write is acknowledged the script long-polls
the edge's own changes feed (GET /v1/sync/changes?after=<seq-1>&wait_ms=5000), which answers
the moment the edge has applied the change. PostgreSQL 15 runs from Debian's binaries in a
temp dir (as the postgres user), everything on 127.0.0.1, every process stopped by pid.

Usage: bench/load/tier-publish.py [--binary build/release/bundle-edge] [--writes 200] [--rounds 3]
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from benchnode import BenchNode, cpu_times, spread, steal_pct  # noqa: E402
import harness  # noqa: E402  (pgharness needs it; its temp dir is removed below)
from pgharness import Postgres  # noqa: E402

shutil.rmtree(harness.TMP, ignore_errors=True)
APP = "com.bench.tier"
SYNC = "bench-sync"


def request(port, method, path, body=None, token="t"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, None if body is None else json.dumps(body),
              {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.getheader("X-Change-Seq"), data


def percentile(values, p):
    vals = sorted(values)
    return vals[min(len(vals) - 1, int(round(p / 100.0 * (len(vals) - 1))))]


def measure(writer, edge, writes, prefix):
    """Per write: ms from the writer's acknowledgement to the edge having applied it."""
    out = []
    for i in range(writes):
        st, seq, body = request(writer.admin, "PUT", "/v1/admin/apps/%s/channels/%s-%d" % (APP, prefix, i),
                                {"public": False})
        acked = time.perf_counter()
        assert st in (200, 201), (st, body)
        seq = int(seq)
        st, _, body = request(edge.port, "GET", "/v1/sync/changes?after=%d&wait_ms=5000" % (seq - 1),
                              token=SYNC)
        done = time.perf_counter()
        doc = json.loads(body)
        assert st == 200 and any(c["seq"] == seq for c in doc.get("changes", [])), (st, doc)
        out.append((done - acked) * 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/bundle-edge"))
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="edge-tier-publish-")
    nodes, pg = [], None

    def node(name, conf):
        d = os.path.join(work, name)
        os.makedirs(d)
        n = BenchNode(args.binary, d, conf)
        nodes.append(n)
        return n

    try:
        pg = Postgres()
        url = pg.create_db("bench")
        tier = '[sync]\ntoken = "%s"\n[state]\nbackend = "postgres"\nurl = "%s"\n' % (SYNC, url)
        a, b = node("a", tier), node("b", tier)
        emb = node("embedded", '[sync]\ntoken = "%s"\n' % SYNC)
        edge_conf = ('[node]\nrole = "edge"\n[sync]\ntoken = "%s"\n[upstream]\nurl = "http://127.0.0.1:%d"\n'
                     'token = "%s"\n')
        e_tier = node("edge-tier", edge_conf % (SYNC, b.port, SYNC))
        e_emb = node("edge-embedded", edge_conf % (SYNC, emb.port, SYNC))
        for o in (a, emb):
            assert request(o.admin, "PUT", "/v1/admin/apps/" + APP, {})[0] in (200, 201)
        time.sleep(1.0)
        rows = {"embedded origin -> its edge": [], "tier: write on A -> edge of B": [],
                "tier: write on B -> edge of B": []}
        p50s = {k: [] for k in rows}
        before = cpu_times()
        for r in range(args.rounds):
            for label, writer, edge in (("embedded origin -> its edge", emb, e_emb),
                                        ("tier: write on A -> edge of B", a, e_tier),
                                        ("tier: write on B -> edge of B", b, e_tier)):
                ms = measure(writer, edge, args.writes, "r%d-%s" % (r, label.split()[0] + str(id(writer))))
                rows[label] += ms
                p50s[label].append(statistics.median(ms))
                print("round %d %-32s p50 %.1f ms  p99 %.1f ms  max %.1f ms" %
                      (r + 1, label, statistics.median(ms), percentile(ms, 99), max(ms)), file=sys.stderr)
        steal = steal_pct(before, cpu_times())
        print("\n## Publish-to-edge time (%d writes x %d rounds, host steal %.1f%%)\n" %
              (args.writes, args.rounds, steal))
        print("`%s`\n" % " ".join(["bench/load/tier-publish.py"] + sys.argv[1:]))
        print("| path | p50 per round, median (min-max) | p99 (all writes) | max | p50 vs embedded |")
        print("|---|---|---|---|---|")
        base = statistics.median(p50s["embedded origin -> its edge"])
        for label, ms in rows.items():
            print("| %s | %s | %.1f ms | %.1f ms | %.2fx |" % (
                label, spread(p50s[label], "%.1f", " ms"), percentile(ms, 99), max(ms),
                statistics.median(p50s[label]) / base))
    finally:
        for n in nodes:
            try:
                n.stop()
            except Exception:
                n.proc.kill()
        if pg is not None:
            pg.remove()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
