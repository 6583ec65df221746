#!/usr/bin/env python3
"""Integration test of an edge with several upstreams (upstream.url as a list): it follows
the first healthy one, fails over on a dead or failing upstream for the feed, fills,
check-ins and status reports, and goes back to the first once it is healthy again. Real
processes on 127.0.0.1; a second edge of the same origin stands in for a second origin of a
tier (same feed epoch and numbering), and small fake upstreams answer 5xx on purpose.

Usage: sync_failover_test.py <path-to-bundle-edge>"""
import hashlib
import json
import os
import struct
import threading
import time

from harness import run, TMP, admin, check, curl, free_port, sha, stop_all, upload
from sync_test import (TOKEN, UpstreamHandler, edge, get_blob, metric, name_blob, origin,
                       origin_checkins, publish, serve, updates, wait_for, wait_version)


def series(name, position, url):
    return '%s{position="%d",url="%s"}' % (name, position, url)


def current(node, urls):
    """The 1-based position of the upstream /metrics says is in use (0: none)."""
    m = node.metrics()
    on = [i + 1 for i, u in enumerate(urls) if m.get(series("edge_upstream_current", i + 1, u)) == 1]
    assert len(on) <= 1, on
    return on[0] if on else 0


def recipe_digest(recipe):
    """store::Recipe::digest (as sync_test computes it): SHA-256 of u8 1, le64 size, le32
    count, then per chunk its 32 id bytes and le32 length."""
    out = b"\x01" + struct.pack("<QI", recipe["size"], len(recipe["chunks"]))
    for c in recipe["chunks"]:
        out += bytes.fromhex(c["sha256"]) + struct.pack("<I", c["size"])
    return hashlib.sha256(out).hexdigest()


def fleet_upstream(node):
    st, doc = admin(node, "GET", "/v1/admin/fleet")
    assert st == 200, (st, doc)
    return doc["self"]["upstream"]


def upload_blob(node, size):
    data = os.urandom(size)
    path = os.path.join(TMP, "blob-%s" % sha(data)[:12])
    open(path, "wb").write(data)
    assert upload(node, path)[0] == 201
    return data


def main():
    nodes = []

    def keep(*ns):
        nodes.extend(ns)
        return ns if len(ns) > 1 else ns[0]

    def t_dead_first():
        # The first upstream listed is a port nobody listens on: the edge follows the second,
        # fills from it and delivers check-ins to it; /metrics and the fleet report say so.
        o = keep(origin())
        dead = "http://127.0.0.1:%d" % free_port()
        urls = [dead, o.url]
        e = keep(edge(",".join(urls)))
        publish(o, "1.1.0")  # not the device's own 1.0.0
        wait_version(e, "1.1.0")
        assert current(e, urls) == 2
        m = e.metrics()
        assert m[series("edge_upstream_up", 1, dead)] == 0 and m[series("edge_upstream_up", 2, o.url)] == 1, m
        assert m["edge_upstream_switches_total"] >= 1, m
        assert fleet_upstream(e) == o.url
        data = upload_blob(o, 400_000)
        name_blob(o, [e], sha(data), "1.1.1-other")
        st, body = get_blob(e, sha(data))
        assert st == 200 and body == data
        for i in range(7):
            assert updates(e, device=200 + i)[0] == 200
        wait_for("outbox drained", lambda: metric(e, "edge_outbox_depth") == 0, timeout=15)
        wait_for("origin counted", lambda: origin_checkins(o) >= e.acked, timeout=10)
        time.sleep(0.5)
        assert origin_checkins(o) == e.acked, (origin_checkins(o), e.acked)
        # The dead one is still probed, never taken: nothing moved back to it.
        assert current(e, urls) == 2
        assert "upstream: now using %s (2 of 2) instead of %s" % (o.url, dead) in open(e.log_path).read()

    def t_origin_dies_second_edge_serves():
        # Upstream 1: the origin. Upstream 2: another edge of the same origin (same feed
        # epoch and numbering, as the origins of a tier share them). The origin is killed:
        # the edge follows, fills and sends check-ins through the other edge, without a
        # snapshot. The origin comes back: the edge prefers it again and follows what is
        # published there; every check-in reaches the origin once.
        o = keep(origin(port=free_port()))
        e2 = keep(edge(o.url))
        urls = [o.url, e2.url]
        e1 = keep(edge(",".join(urls), "status_interval_ms = 500\n"))
        publish(o, "2.0.0")
        wait_version(e1, "2.0.0")
        wait_version(e2, "2.0.0")
        assert current(e1, urls) == 1
        assert metric(e1, "edge_upstream_switches_total") == 0
        snapshots = metric(e1, "edge_sync_snapshots_applied_total")
        # A blob no channel points at (not prefetched): the second edge has it, e1 does not.
        data = upload_blob(o, 600_000)
        name_blob(o, [e1, e2], sha(data), "2.0.0-other")
        st, body = get_blob(e2, sha(data))
        assert st == 200 and body == data
        for i in range(5):
            assert updates(e1, device=300 + i)[0] == 200
        wait_for("outbox drained", lambda: metric(e1, "edge_outbox_depth") == 0, timeout=15)

        e1_id = admin(e1, "GET", "/v1/admin/fleet")[1]["self"]["node_id"]
        o.kill()
        wait_for("failover to the second edge", lambda: current(e1, urls) == 2, timeout=30)
        failed_over = time.time()
        assert metric(e1, "edge_upstream_switches_total") >= 1
        assert fleet_upstream(e1) == e2.url
        st, body = get_blob(e1, sha(data))
        assert st == 200 and body == data, st
        down_sent = 0
        for i in range(9):
            assert updates(e1, device=400 + i)[0] == 200
            down_sent += 1
        # Delivered to the second edge (which queues them while the origin is down).
        wait_for("e1 outbox drained via e2", lambda: metric(e1, "edge_outbox_depth") == 0, timeout=20)
        assert metric(e2, "edge_outbox_depth") >= down_sent
        # Still following: past the first long poll through e2 (5 s on a fallback), the feed
        # answered within the last seconds; no snapshot was taken. Status reports go to e2.
        time.sleep(max(0.0, failed_over + 6.5 - time.time()))
        assert metric(e1, "edge_sync_seconds_since_contact") <= 3, e1.metrics()
        wait_for("e1 in e2's fleet view", lambda: any(
            n["node_id"] == e1_id for n in admin(e2, "GET", "/v1/admin/fleet")[1]["nodes"]), timeout=10)
        assert metric(e1, "edge_sync_upstream_behind") == 0
        assert metric(e1, "edge_sync_snapshots_applied_total") == snapshots

        o.start()
        wait_for("back on the origin", lambda: current(e1, urls) == 1, timeout=30)
        publish(o, "2.0.1")
        wait_version(e1, "2.0.1", timeout=20)
        wait_version(e2, "2.0.1", timeout=20)
        assert current(e1, urls) == 1 and fleet_upstream(e1) == o.url
        assert metric(e1, "edge_sync_snapshots_applied_total") == snapshots, "same epoch: no snapshot"
        assert metric(e1, "edge_sync_epoch_changes_total") == 0
        # Exactly once: every answered /updates on either edge is one check-in at the origin.
        for e in (e1, e2):
            wait_for("outbox drained", lambda: metric(e, "edge_outbox_depth") == 0, timeout=30)
        want = e1.acked + e2.acked
        wait_for("origin counted", lambda: origin_checkins(o) >= want, timeout=15)
        time.sleep(1.0)
        assert origin_checkins(o) == want, (origin_checkins(o), want)
        log = open(e1.log_path).read()
        assert "now using %s (2 of 2)" % e2.url in log and "now using %s (1 of 2)" % o.url in log, log[-3000:]
        assert TOKEN not in log

    def t_5xx_resent_with_same_key():
        # Upstream 1 answers 500 to check-in batches: the batch goes to upstream 2 with the
        # same Idempotency-Key, and is taken there once.
        keys = {"a": [], "b": []}

        def handler(name, status):
            class H(UpstreamHandler):
                def release_doc(self):
                    return {"zip": "ab" * 32}

                def do_GET(self):
                    if self.feed():
                        return
                    if self.path == "/readyz":
                        return self.reply(200, b'{"status":"ok"}')
                    return self.reply(404, b'{"error":"not_found"}')

                def do_POST(self):
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    if self.path == "/v1/checkins":
                        keys[name].append((self.headers.get("Idempotency-Key"),
                                           len(json.loads(body)["checkins"])))
                        return self.reply(status, b'{"applied":1,"duplicate":false}'
                                          if status == 200 else b'{"error":"boom"}')
                    return self.reply(200, b"{}")  # status reports
            return H

        a, b = serve(handler("a", 500)), serve(handler("b", 200))
        try:
            urls = ["http://127.0.0.1:%d" % s.server_address[1] for s in (a, b)]
            e = keep(edge(",".join(urls)))
            wait_for("edge has the fake's release", lambda: metric(e, "edge_sync_cursor_seq") >= 2)
            for i in range(3):
                updates(e, device=500 + i)
            wait_for("batch taken by b", lambda: keys["b"], timeout=15)
            wait_for("outbox drained", lambda: metric(e, "edge_outbox_depth") == 0, timeout=15)
            assert keys["a"], keys
            taken = {k for k, _ in keys["b"]}
            assert len(keys["b"]) == len(taken), keys  # each batch once at b
            assert {k for k, _ in keys["a"]} <= taken, keys  # resent to b under its key
            assert sum(n for _, n in keys["b"]) == metric(e, "edge_checkins_sent_total") >= 1, keys
        finally:
            a.shutdown()
            b.shutdown()

    def t_fill_moves_on_mid_blob():
        # A blob fill in progress: upstream 1 serves chunks 0-2, then drops the connection on
        # chunk 3 (as a dying origin would). The same fill takes chunk 3 from upstream 2, and
        # only that chunk: the device gets the whole blob, byte-exact, in one response.
        parts = [os.urandom(n) for n in (70_000, 90_000, 60_000, 80_000)]
        blob = b"".join(parts)
        blob_id = sha(blob)
        recipe = {"sha256": blob_id, "size": len(blob),
                  "chunks": [{"sha256": sha(p), "size": len(p)} for p in parts]}
        index = {sha(p): i for i, p in enumerate(parts)}
        asked = {"a": [0] * 4, "b": [0] * 4}
        first_three = threading.Event()

        def handler(name):
            class H(UpstreamHandler):
                def release_doc(self):
                    return {"zip": blob_id, "recipe_sha256": {blob_id: recipe_digest(recipe)}}

                def do_GET(self):
                    if self.feed():
                        return
                    if self.path == "/readyz":
                        return self.reply(200, b'{"status":"ok"}')
                    if self.path == "/v1/recipes/" + blob_id:
                        return self.reply(200, json.dumps(recipe).encode())
                    i = index.get(self.path.rsplit("/", 1)[1]) if self.path.startswith("/v1/chunks/") else None
                    if i is None:
                        return self.reply(404, b'{"error":"not_found"}')
                    asked[name][i] += 1
                    if name == "a" and i == 3:
                        first_three.wait(10)
                        self.close_connection = True  # no answer: the connection just ends
                        return
                    self.reply(200, parts[i], "application/octet-stream")
                    if name == "a" and all(asked["a"][:3]):
                        first_three.set()
            return H

        a, b = serve(handler("a")), serve(handler("b"))
        try:
            urls = ["http://127.0.0.1:%d" % s.server_address[1] for s in (a, b)]
            e = keep(edge(",".join(urls)))
            wait_for("edge has the release", lambda: metric(e, "edge_sync_cursor_seq") >= 2)
            st, body = get_blob(e, blob_id)
            assert st == 200 and body == blob, (st, len(body))
            assert asked["a"][:3] == [1, 1, 1] and asked["a"][3] >= 1, asked
            assert asked["b"] == [0, 0, 0, 1], asked
            assert current(e, urls) in (1, 2)  # upstream 1 is probed back (it answers /readyz)
            assert metric(e, "edge_upstream_switches_total") >= 1
        finally:
            a.shutdown()
            b.shutdown()

    try:
        for name, fn in [("dead first upstream: follow, fill, check in via the second", t_dead_first),
                         ("origin killed: follow and fill via a second edge, back after", t_origin_dies_second_edge_serves),
                         ("check-in batch failed with 5xx: resent with the same key", t_5xx_resent_with_same_key),
                         ("a fill cut mid-blob carries on at the next upstream", t_fill_moves_on_mid_blob)]:
            check(name, fn)
            stop_all(nodes)
            nodes.clear()
    finally:
        stop_all(nodes)


if __name__ == "__main__":
    run(main)
