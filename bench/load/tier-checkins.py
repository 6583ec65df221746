#!/usr/bin/env python3
"""Check-in batches ingested per second (POST /v1/checkins, as edges relay their outbox)
through one origin of the tier, through two origins sharing the same PostgreSQL 15, and,
as the baseline in the same run, through one embedded origin (RocksDB).

Each round starts fresh nodes (and a fresh database), then `--senders` child senders post
`--batches` batches of `--batch` check-ins between them, one at a time each, as an edge does
(each with its own Idempotency-Key sender), over `--devices` devices; with two origins the
senders are split between them. A batch counts once its 200 came back (committed). Prints the
median, min and max over the rounds, and the host's steal.

PostgreSQL 15 runs from Debian's binaries in a temp dir on a free port (as the postgres user
when run as root), and everything is stopped by pid and removed at the end.

Usage: bench/load/tier-checkins.py [--binary build/release/bundle-edge] [--rounds 3]
         [--batches 200] [--batch 500] [--senders 4] [--devices 50000]"""
import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
from benchnode import BenchNode, cpu_times, spread, steal_pct  # noqa: E402

SYNC = "bench-sync"
APP = "com.bench.app"


def bodies(args, salt):
    """The batches' bodies (bytes), built before the clock starts."""
    now = int(time.time() * 1000)
    out = []
    for b in range(args.batches):
        batch = []
        for i in range(args.batch):
            n = (b * args.batch + i) % args.devices
            batch.append({"app_id": APP, "device_id": "0a1b2c3d-1111-4222-8333-%012d" % n,
                          "platform": "android" if n % 3 else "ios", "version_name": "builtin",
                          "version_build": "1.0.%d" % (n % 4),
                          "action": "updates" if i % 4 else "app_moved_to_foreground",
                          "decision": "" if i % 4 == 0 else "no_new_version_available",
                          "time_ms": now - (args.batch - i) - salt})
        out.append(json.dumps({"checkins": batch}).encode())
    return out


def drive(ports, args, bodies_, tag):
    """Posts every batch, senders spread over `ports`; returns check-ins per second."""
    errors = []
    per_sender = [bodies_[s::args.senders] for s in range(args.senders)]

    def sender(s):
        port = ports[s % len(ports)]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for k, body in enumerate(per_sender[s], start=1):
            while True:
                conn.request("POST", "/v1/checkins", body,
                             {"Authorization": "Bearer " + SYNC, "Content-Type": "application/json",
                              "Idempotency-Key": "bench-%s-%d:1:%d" % (tag, s, k)})
                r = conn.getresponse()
                doc = r.read()
                if r.status == 200:
                    break
                if r.status != 503:
                    errors.append((r.status, doc[:200]))
                    return
                time.sleep(0.05)  # a deadlock or a pause: the sender retries, as an edge does

    threads = [threading.Thread(target=sender, args=(s,)) for s in range(args.senders)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    if errors:
        sys.exit("POST /v1/checkins failed: %s" % errors[:3])
    return args.batches * args.batch / elapsed


def updates_total(port):
    """Check-ins the node's stats count (all actions of the last 30 days): the ingest check."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/v1/admin/apps/%s/stats" % APP, headers={"Authorization": "Bearer t"})
    r = conn.getresponse()
    doc = json.loads(r.read())
    return sum(sum(d["actions"].values()) for d in doc.get("days", []))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/release/bundle-edge")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--devices", type=int, default=50_000)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    print("$ " + " ".join([sys.argv[0]] + sys.argv[1:]))
    print("binary %s; %d rounds of %d batches x %d check-ins, %d senders, %d devices" %
          (binary, args.rounds, args.batches, args.batch, args.senders, args.devices), flush=True)
    import harness  # noqa: E402  (makes a temp dir of its own, removed below)
    from pgharness import Postgres  # noqa: E402
    work = tempfile.mkdtemp(prefix="bench-tier-checkins-")
    pg = None
    nodes = []
    figures = {"embedded, 1 origin": [], "tier, 1 origin": [], "tier, 2 origins": []}
    try:
        pg = Postgres()
        before = cpu_times()
        for rnd in range(args.rounds):
            for name in figures:
                d = tempfile.mkdtemp(dir=work)
                if name.startswith("embedded"):
                    confs = ['[sync]\ntoken = "%s"\n' % SYNC]
                else:
                    url = pg.create_db("b%d_%d" % (rnd, len(os.listdir(work))))
                    conf = ('[sync]\ntoken = "%s"\n[state]\nbackend = "postgres"\nurl = "%s"\n'
                            % (SYNC, url))
                    confs = [conf] * (2 if "2 origins" in name else 1)
                started = []
                for i, conf in enumerate(confs):
                    wd = os.path.join(d, str(i))
                    os.makedirs(wd)
                    node = BenchNode(binary, wd, conf)
                    nodes.append(node)
                    started.append(node)
                conn = http.client.HTTPConnection("127.0.0.1", started[0].admin, timeout=30)
                conn.request("PUT", "/v1/admin/apps/" + APP, "{}",
                             {"Authorization": "Bearer t", "Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status not in (200, 201):
                    sys.exit("creating the app answered %d" % r.status)
                body = bodies(args, rnd)
                rate = drive([n.port for n in started], args, body,
                             "r%dc%d" % (rnd, list(figures).index(name)))
                counted = updates_total(started[0].admin)
                if counted != args.batches * args.batch:
                    sys.exit("%s: %d check-ins counted, %d sent" % (name, counted,
                                                                     args.batches * args.batch))
                figures[name].append(rate)
                print("round %d  %-20s %8.0f check-ins/s" % (rnd + 1, name, rate), flush=True)
                for n in started:
                    n.stop()
                    nodes.remove(n)
        steal = steal_pct(before, cpu_times())
        print()
        for name, vals in figures.items():
            print("%-20s %s" % (name, spread(vals, unit=" check-ins/s")))
        one = sorted(figures["tier, 1 origin"])[len(figures["tier, 1 origin"]) // 2]
        two = sorted(figures["tier, 2 origins"])[len(figures["tier, 2 origins"]) // 2]
        emb = sorted(figures["embedded, 1 origin"])[len(figures["embedded, 1 origin"]) // 2]
        print("tier 2 origins / 1 origin: %.2fx; tier 1 origin / embedded: %.2fx (medians)"
              % (two / one, one / emb))
        print("host steal over the rounds: %.1f%%; load average: %s"
              % (steal, open("/proc/loadavg").read().split()[0]))
    finally:
        for n in nodes:
            n.stop()
        if pg is not None:
            pg.remove()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(harness.TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
