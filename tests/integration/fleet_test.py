#!/usr/bin/env python3
"""Integration test of the fleet view's bounds: an origin and a mid-tier edge as real
processes, many forged nodes sent with the sync token (POST /v1/sync/status). A subtree of
more than 1000 nodes and 1 MiB still reaches the origin (the edge splits its report), nodes
not heard from are dropped at both tiers, a full table still takes a new edge, and
GET /v1/admin/fleet stays one page with a summary.

Usage: fleet_test.py <path-to-bundle-edge>"""
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request

from harness import Node, admin, check, curl, run, wait_for

CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")
TOKEN = "fleet-sync-secret"
EXPIRE_MS = 4000


def status(node_id, pad=900, lag=0):
    return {"node_id": node_id, "role": "edge", "lag_seq": lag, "outbox_depth": 1, "outbox_bytes": 10,
            "pad": "x" * pad}


def post_status(node, nodes):
    """One POST /v1/sync/status with the sync token, as a child edge sends it."""
    req = urllib.request.Request(node.url + "/v1/sync/status", data=json.dumps({"nodes": nodes}).encode(),
                                 method="POST", headers={"Authorization": "Bearer " + TOKEN,
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def fleet(node, query=""):
    """GET /v1/admin/fleet: (document, answer size in bytes)."""
    st, _, out = curl("-H", "Authorization: Bearer " + node.token, node.admin_url + "/v1/admin/fleet" + query)
    assert st == 200, (st, out[:300])
    return json.loads(out), len(out)


def find(node, node_id):
    """The node's entry in `node`'s fleet view, or None (a page of one starting at it)."""
    before = node_id[:-1] + chr(ord(node_id[-1]) - 1)  # ids here end in [1-9a-z]: a plain name
    doc, _ = fleet(node, "?limit=1&cursor=" + before)
    return next((n for n in doc["nodes"] if n["node_id"] == node_id), None)


class Forger:
    """Re-sends forged subtrees to a node every second (as live children would), from a
    thread the test stops."""

    def __init__(self, node, reports):
        self.node, self.reports, self.stop_flag = node, list(reports), threading.Event()
        self.codes = []
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop_flag.is_set():
            for r in list(self.reports):
                self.codes.append(post_status(self.node, r))
            self.stop_flag.wait(1.0)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(timeout=60)


def main():
    # The origin takes bodies of 256 KiB at most: the edge learns it from the 413s.
    origin = Node('[server]\njson_body_limit = "256KiB"\n[sync]\ntoken = "%s"\nfleet_expire_ms = %d\n'
                  % (TOKEN, EXPIRE_MS))
    mid = Node('[node]\nrole = "edge"\nid = "mid"\n[sync]\ntoken = "%s"\nfleet_expire_ms = %d\n'
               '[upstream]\nurl = "%s"\ntoken = "%s"\ntimeout_ms = 5000\nbackoff_max_ms = 500\n'
               'status_interval_ms = 300\n' % (TOKEN, EXPIRE_MS, origin.url, TOKEN))
    started = [mid, origin]
    # Two relays below the mid edge, 749 children each: 1500 statuses of about 1 KB below it,
    # more than one report may hold (1000 nodes, 1 MiB; 256 KiB at this origin).
    relay_a = [status("relay-a")] + [status("leaf-a-%04d" % i, lag=i % 7) for i in range(749)]
    relay_b = [status("relay-b")] + [status("leaf-b-%04d" % i) for i in range(749)]
    relay_a[101]["lag_seq"] = 42  # leaf-a-0100
    forger = Forger(mid, [relay_a, relay_b])
    try:
        def subtree_reaches_origin():
            wait_for("the forged subtree on the mid edge", lambda: fleet(mid)[0]["summary"]["nodes"] == 1500)
            # The mid edge relays 1501 statuses (1.5 MB): in several posts, all accepted.
            wait_for("mid and its 1500 nodes at the origin",
                     lambda: fleet(origin)[0]["summary"]["nodes"] == 1501, timeout=20)
            assert forger.codes and set(forger.codes) == {200}, set(forger.codes)
            for _ in range(3):  # it stays so: every node fresh, every round
                time.sleep(1.0)
                doc, size = fleet(origin)
                s = doc["summary"]
                assert s["nodes"] == 1501 and s["stale"] == 0, s
            assert s["max_lag_seq"] == 42 and s["max_lag_node"] == "leaf-a-0100", s
            assert s["outbox_depth"] == 1500 and s["outbox_bytes"] == 15000, s
            leaf = find(origin, "leaf-b-0748")
            assert leaf and leaf["via"] == "mid" and leaf["age_s"] <= 1 and not leaf["stale"], leaf
            me = find(origin, "mid")
            assert me and me["via"] is None and me["age_s"] <= 1, me
            log = open(mid.log_path).read()
            assert "/v1/sync/status failed" not in log and "posting at most 262144 at once" in log, log[-2000:]
            # The answer is one page of 100 with the summary, not every node.
            assert len(doc["nodes"]) == 100 and doc["next"] == doc["nodes"][-1]["node_id"], doc["next"]
            assert size < 200_000, size
        check("a subtree of 1500 nodes (1.5 MB) reaches the origin, split, and stays fresh", subtree_reaches_origin)

        def paging():
            seen, cursor = [], ""
            for _ in range(10):
                doc, size = fleet(origin, "?limit=1000" + ("&cursor=" + cursor if cursor else ""))
                assert len(doc["nodes"]) <= 1000
                seen += [n["node_id"] for n in doc["nodes"]]
                cursor = doc["next"]
                if not cursor:
                    break
            assert len(seen) == 1501 and len(set(seen)) == 1501 and seen == sorted(seen), len(seen)
            r = subprocess.run([CTL, "--url", origin.admin_url, "--token", origin.token, "fleet", "--limit", "5"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout.startswith("1501 nodes below, 0 stale"), (r.stdout, r.stderr)
            assert "more: --cursor leaf-a-0004" in r.stdout, r.stdout
            r = subprocess.run([CTL, "--url", origin.admin_url, "--token", origin.token, "fleet", "--all", "--json"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and len(json.loads(r.stdout)["nodes"]) == 1501, r.stderr
            for bad in ("?limit=0", "?limit=1001", "?cursor=a%20b", "?nodes=all"):
                st, _, out = curl("-H", "Authorization: Bearer " + origin.token,
                                  origin.admin_url + "/v1/admin/fleet" + bad)
                assert st == 400 and b"invalid_query_parameters" in out, (bad, st, out)
        check("GET /v1/admin/fleet pages with limit and cursor; a bad query is 400", paging)

        def silent_nodes_expire():
            forger.reports = [relay_a]  # relay-b and its children stop reporting
            t0 = time.time()
            wait_for("relay-b's subtree gone at the mid edge", lambda: fleet(mid)[0]["summary"]["nodes"] == 750,
                     timeout=15)
            wait_for("relay-b's subtree gone at the origin", lambda: fleet(origin)[0]["summary"]["nodes"] == 751,
                     timeout=15)
            took = time.time() - t0
            assert took < 3 * EXPIRE_MS / 1000, took
            assert find(origin, "leaf-b-0003") is None and find(origin, "leaf-a-0003") is not None
        check("nodes not heard from leave the mid edge's and the origin's view", silent_nodes_expire)
    finally:
        forger.stop()
        for n in started:
            n.stop()

    # A table filled with forged ids (10,000 near-4 KiB statuses, 40 MB) still takes a new edge.
    origin2 = Node('[sync]\ntoken = "%s"\n' % TOKEN)
    edge = None
    try:
        def full_table_takes_a_new_edge():
            for k in range(40):  # 250 a post: each under the 1 MiB body limit
                nodes = [status("zz-forged-%02d-%03d" % (k, i), pad=3800) for i in range(250)]
                assert post_status(origin2, nodes) == 200
            doc, size = fleet(origin2)
            assert doc["summary"]["nodes"] == 10_000 and doc["summary"]["max_nodes"] == 10_000, doc["summary"]
            assert size < 500_000, size  # 100 of 10,000 statuses of ~4 KB
            nonlocal edge
            edge = Node('[node]\nrole = "edge"\nid = "a-real-edge"\n[sync]\ntoken = "%s"\n[upstream]\nurl = "%s"\n'
                        'token = "%s"\ntimeout_ms = 5000\nbackoff_max_ms = 500\nstatus_interval_ms = 300\n'
                        % (TOKEN, origin2.url, TOKEN))
            wait_for("the new edge in the full view",
                     lambda: fleet(origin2, "?limit=1")[0]["nodes"][0]["node_id"] == "a-real-edge")
            doc, _ = fleet(origin2)
            assert doc["summary"]["nodes"] == 10_000, doc["summary"]
            first = [n["node_id"] for n in fleet(origin2, "?limit=2")[0]["nodes"]]
            assert first == ["a-real-edge", "zz-forged-00-001"], ("the stalest made room", first)
        check("a full fleet view takes a new edge (the stalest makes room), answer stays small",
              full_table_takes_a_new_edge)
    finally:
        if edge is not None:
            edge.stop()
        origin2.stop()


if __name__ == "__main__":
    run(main)
