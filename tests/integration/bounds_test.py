#!/usr/bin/env python3
"""Integration test of the bounds on device-reported analytics names: thousands of random
platforms, running versions and /stats targets sent to a real origin (and through an edge)
are all accepted, yet the stats answer stays small and counts the real releases right.

Usage: bounds_test.py <path-to-bundle-edge>"""
import http.client
import json
import random
import time

from harness import run, check
from sync_test import (APP, ADMIN_APP, DEVICE, admin, device_id, edge, origin, publish,
                       updates, wait_for)

RANDOM = 3000  # random names of each kind
MAX_ANSWER = 64 << 10  # bytes: the capped answer is ~6 KB; before the caps it was ~800 KB
MAX_NAMES = 128  # kMaxAnalyticsNames


class Client:
    """One keep-alive connection to a node's device port."""

    def __init__(self, node):
        self.conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)

    def post(self, path, body):
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        return r.status, json.loads(data)

    def close(self):
        self.conn.close()


def stats_bytes(node, query=""):
    """GET the app's stats: (status, body bytes, seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.admin, timeout=60)
    t0 = time.time()
    conn.request("GET", ADMIN_APP + "/stats" + query, headers={"Authorization": "Bearer " + node.token})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body, time.time() - t0


def word(rng):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14))


def event(i, **fields):
    return dict(DEVICE, device_id=device_id(i), **fields)


def checkins(node):
    st, doc = admin(node, "GET", ADMIN_APP + "/stats")
    assert st == 200, (st, doc)
    return sum(d["checkins"] for d in doc["days"])


def events_on(node):
    """Check-ins other than update checks in the app's stats."""
    st, doc = admin(node, "GET", ADMIN_APP + "/stats")
    assert st == 200, (st, doc)
    return sum(n for d in doc["days"] for a, n in d["actions"].items() if a != "updates")


def send_stats(client, events):
    """POSTs `events` in batches of 100; every event must be taken (status ok)."""
    for k in range(0, len(events), 100):
        st, doc = client.post("/stats", events[k:k + 100])
        assert st == 200, (st, doc)
        bad = [r for r in doc["results"] if r["status"] != "ok"]
        assert not bad, bad[:3]


def main():
    nodes = []
    rng = random.Random(20261206)

    def t_random_names_leave_the_stats_answer_small():
        o = origin()
        nodes.append(o)
        publish(o, "1.0.1")
        c = Client(o)
        # /updates from devices running random versions (the plugin's check).
        for i in range(RANDOM):
            st, doc = c.post("/updates", event(i, version_name="9." + word(rng)))
            assert st == 200, (st, doc)
        # /stats: random platforms, and per-file failures of the real release with random
        # file names ("1.0.1:<file>", as the plugin names them), and of builtin.
        fails = [event(RANDOM + i, platform=word(rng), action="download_fail",
                       version_name="1.0.1:" + word(rng) + ".js") for i in range(RANDOM)]
        fails += [event(i, action="download_fail", version_name="builtin:" + word(rng))
                  for i in range(100)]
        installs = [event(i, action="set", version_name="1.0.1") for i in range(50)]
        send_stats(c, fails + installs)
        c.close()
        total = RANDOM + len(fails) + len(installs)
        wait_for("every check-in counted", lambda: checkins(o) == total)

        for query in ("", "?resolution=hour"):
            st, body, secs = stats_bytes(o, query)
            assert st == 200, (st, body[:200])
            print("  stats%s: %d bytes in %.3f s" % (query, len(body), secs), flush=True)
            assert len(body) < MAX_ANSWER, len(body)
            doc = json.loads(body)
            buckets = doc["hours"] if query else doc["days"]
            platforms, targets, releases, by_release = {}, {}, {}, {}
            for b in buckets:
                for k, v in b["platforms"].items():
                    platforms[k] = platforms.get(k, 0) + v
                for r, acts in b["targets"].items():
                    for a, v in acts.items():
                        targets.setdefault(r, {})[a] = targets.setdefault(r, {}).get(a, 0) + v
                assert len(b["releases"]) <= MAX_NAMES + 1, len(b["releases"])
                for k, v in b["releases"].items():
                    releases[k] = releases.get(k, 0) + v
            for d in doc["days"]:
                assert len(d["devices_by_release"]) <= MAX_NAMES + 1
                for k, v in d["devices_by_release"].items():
                    by_release[k] = by_release.get(k, 0) + v
            # Every event is counted, and the random platforms as "other".
            assert platforms == {"android": RANDOM + 150, "other": RANDOM}, platforms
            # The real release keeps its per-file failures under its own name.
            assert targets == {"1.0.1": {"download_fail": RANDOM},
                               "builtin": {"download_fail": 100}}, list(targets)[:5]
            summary = {r["release"]: r for r in doc["releases"]}
            assert set(summary) == {"1.0.1", "builtin"}, list(summary)[:5]
            assert summary["1.0.1"]["failures"] == RANDOM
            assert summary["1.0.1"]["installs"] == 50
            # Per-release usage counts only releases: the random running versions are
            # recorded (above) but counted under no release.
            assert releases == {"1.0.1": 50}, (len(releases), list(releases)[:5])
            assert set(by_release) <= {"1.0.1"}, list(by_release)[:5]

        # A release's failures read right even though the random names came first.
        st, doc = admin(o, "GET", ADMIN_APP + "/stats")
        assert [r["failure_rate_bps"] for r in doc["releases"] if r["release"] == "1.0.1"] == [
            RANDOM * 10_000 // (RANDOM + 50)]

    def t_relayed_names_are_bounded_on_the_origin():
        o = origin()
        nodes.append(o)
        publish(o, "1.0.1")
        e = edge(o.url)
        nodes.append(e)
        wait_for("edge synced", lambda: updates(e)[1].get("version") == "1.0.1")
        c = Client(e)
        events = [event(i, platform=word(rng), action=rng.choice(["download_fail", "app_moved_to_foreground"]),
                        version_name="1.0.1:" + word(rng)) for i in range(1000)]
        send_stats(c, events)
        c.close()
        fails = sum(1 for ev in events if ev["action"] == "download_fail")
        # The edge's own update checks (its sync probe above) are relayed too: not counted here.
        wait_for("relayed", lambda: events_on(o) == len(events), timeout=30)
        st, body, _ = stats_bytes(o)
        assert st == 200 and len(body) < MAX_ANSWER, (st, len(body))
        day = json.loads(body)["days"][-1]
        checks = day["actions"].get("updates", 0)
        assert day["targets"] == {"1.0.1": {"download_fail": fails}}, list(day["targets"])[:5]
        assert day["platforms"] == {"android": checks, "other": len(events)}, day["platforms"]
        # The edge's probe runs the native version (builtin): counted as builtin.
        assert day["releases"] == {"1.0.1": len(events) - fails, "builtin": checks}, day["releases"]

    try:
        check("random names leave the stats answer small", t_random_names_leave_the_stats_answer_small)
        check("relayed names are bounded on the origin", t_relayed_names_are_bounded_on_the_origin)
    finally:
        for n in nodes:
            n.stop()


if __name__ == "__main__":
    run(main)
