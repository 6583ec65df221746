#!/usr/bin/env python3
"""Integration test of the origin tier's check-ins: two origins on one real PostgreSQL 15
(started here, as the postgres user, on 127.0.0.1) keep check-ins in it, so either origin
answers for all of them, each counted once: devices' own check-ins on both, a child's batch
posted to one and retried on the other, an edge's outbox, PostgreSQL down and back.

Usage: tier_checkins_test.py <path-to-bundle-edge>"""
import http.client
import json
import threading
import time

from harness import Node, Skip, admin, check, curl, run, stop_all, wait_for
from pgharness import Postgres
from sync_test import APP, ADMIN_APP, TOKEN, DEVICE, device_id, edge, publish, updates

DBS = iter(range(1000))


def tier_origin(url, extra=""):
    return Node('[sync]\ntoken = "%s"\n[state]\nbackend = "postgres"\nurl = "%s"\n%s'
                % (TOKEN, url, extra))


def stats(node):
    """The app's stats document (the last 30 days, by day)."""
    st, doc = admin(node, "GET", ADMIN_APP + "/stats")
    assert st == 200, (st, doc)
    return doc


def action_count(node, action):
    return sum(d["actions"].get(action, 0) for d in stats(node)["days"])


def devices_today(node):
    return max([d["devices"] for d in stats(node)["days"]] or [0])


def device_index(node):
    st, doc = admin(node, "GET", ADMIN_APP + "/device_index?limit=1000")
    assert st == 200, (st, doc)
    return {d["device_id"]: d for d in doc["devices"]}


def device_pages(node, limit):
    """Every device id of the device index, page by page."""
    ids, cursor = [], ""
    while True:
        st, doc = admin(node, "GET", ADMIN_APP + "/device_index?limit=%d%s"
                        % (limit, "&cursor=" + cursor if cursor else ""))
        assert st == 200, (st, doc)
        ids += [d["device_id"] for d in doc["devices"]]
        if not doc.get("next"):
            return ids
        cursor = doc["next"]


def post_stats(node, device, action):
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    conn.request("POST", "/stats", json.dumps(dict(DEVICE, device_id=device_id(device), action=action)),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200, (r.status, body)


def post_batch(node, key, checkins):
    """POST /v1/checkins as a child node sends its outbox: (status, document)."""
    st, _, out = curl("-X", "POST", "-H", "Authorization: Bearer " + TOKEN,
                      "-H", "Idempotency-Key: " + key, "-H", "Content-Type: application/json",
                      "--data-binary", json.dumps({"checkins": checkins}), node.url + "/v1/checkins")
    return st, json.loads(out) if out.strip() else {}


def child_checkins(first, n, action):
    now = int(time.time() * 1000)
    return [{"app_id": APP, "device_id": device_id(first + i), "platform": "ios",
             "version_name": "1.0.0", "version_build": "1.0.0", "action": action,
             "decision": "", "time_ms": now - 1000 + i} for i in range(n)]


def outbox_depth(node):
    return node.metrics().get("edge_outbox_depth", 0.0)


def main():
    pg = None
    nodes = []

    def keep(n):
        nodes.append(n)
        return n

    def need_pg():
        if pg is None:
            raise Skip("PostgreSQL did not start (see above)")

    def two_origins():
        need_pg()
        url = pg.create_db("c%d" % next(DBS))
        a, b = keep(tier_origin(url)), keep(tier_origin(url))
        publish(a, "1.0.0", size=20_000)
        wait_for("B follows the release written on A",
                 lambda: admin(b, "GET", ADMIN_APP + "/channels/production")[0] == 200, timeout=10)
        return a, b

    def t_devices_on_both_origins_seen_on_either_once():
        a, b = two_origins()
        for i in range(10):
            assert updates(a, i)[0] == 200
            assert updates(b, 10 + i)[0] == 200
        for i in range(5):
            post_stats(a, i, "app_moved_to_foreground")
            post_stats(b, 10 + i, "app_moved_to_foreground")
        for n in (a, b):
            wait_for("20 update checks and 10 stats events on :%d" % n.port,
                     lambda n=n: action_count(n, "updates") == 20 and
                     action_count(n, "app_moved_to_foreground") == 10, timeout=10)
            assert devices_today(n) == 20, stats(n)["days"]
            index = device_index(n)
            assert sorted(index) == sorted(device_id(i) for i in range(20)), sorted(index)
            assert index[device_id(3)]["last_action"] == "app_moved_to_foreground", index[device_id(3)]
            assert device_pages(n, 7) == sorted(device_id(i) for i in range(20))
            st, doc = admin(n, "GET", ADMIN_APP + "/reach")
            assert st == 200 and doc["devices"] == 20 and doc["complete"], (st, doc)
        # A device's timeline on the other origin: both of its events, newest first.
        st, doc = admin(b, "GET", ADMIN_APP + "/devices/" + device_id(2))
        assert st == 200, (st, doc)
        assert [e["action"] for e in doc["timeline"]] == ["app_moved_to_foreground", "updates"], doc
        assert doc["last_checkin"]["action"] == "app_moved_to_foreground", doc
        # Counted once: nothing moves on after a while.
        time.sleep(0.3)
        assert action_count(a, "updates") == 20 and action_count(b, "updates") == 20

    def t_a_batch_retried_on_the_other_origin_is_counted_once():
        a, b = two_origins()
        batch = child_checkins(100, 7, "download_complete")
        st, doc = post_batch(a, "child-1:9f3a:1", batch)
        assert st == 200 and doc == {"applied": 7, "duplicate": False}, (st, doc)
        # The child did not hear back and sends the same batch, same key, to B.
        st, doc = post_batch(b, "child-1:9f3a:1", batch)
        assert st == 200 and doc == {"applied": 0, "duplicate": True}, (st, doc)
        # An older batch of the same sender is a duplicate too; a new generation is new.
        st, doc = post_batch(b, "child-1:9f3a:1", batch[:1])
        assert st == 200 and doc["duplicate"] is True, (st, doc)
        st, doc = post_batch(b, "child-1:77aa:1", child_checkins(200, 2, "download_complete"))
        assert st == 200 and doc == {"applied": 2, "duplicate": False}, (st, doc)
        for n in (a, b):
            assert action_count(n, "download_complete") == 9, stats(n)["days"]
            assert devices_today(n) == 9

    def t_the_same_batches_sent_to_both_origins_at_once_apply_once():
        a, b = two_origins()
        for k in range(1, 21):
            # A child that timed out on one origin and retried on the other: batch k reaches
            # both at the same time; the child moves on to k+1 once both answered.
            batch = child_checkins(1000 + 10 * k, 10, "download_complete")
            results = {}

            def send(node, name):
                results[name] = post_batch(node, "child-3:5e:%d" % k, batch)

            ts = [threading.Thread(target=send, args=(n, name)) for n, name in ((a, "a"), (b, "b"))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            ra, rb = results["a"], results["b"]
            assert ra[0] == 200 and rb[0] == 200, (k, ra, rb)
            # One applied it, the other saw the duplicate.
            assert sorted([ra[1]["applied"], rb[1]["applied"]]) == [0, 10], (k, ra, rb)
            assert ra[1]["duplicate"] != rb[1]["duplicate"], (k, ra, rb)
        for n in (a, b):
            assert action_count(n, "download_complete") == 200, stats(n)["days"]
            assert devices_today(n) == 200, stats(n)["days"]

    def t_an_edge_delivers_its_outbox_once_even_with_postgres_down():
        a, b = two_origins()
        e = keep(edge(a.url))
        wait_for("the edge serves 1.0.0", lambda: updates(e, 0)[0] == 200, timeout=15)
        for i in range(1, 5):
            assert updates(e, i)[0] == 200
        wait_for("the edge's 5 check-ins on B", lambda: action_count(b, "updates") == 5, timeout=15)
        wait_for("the edge's outbox empty", lambda: outbox_depth(e) == 0, timeout=10)
        # PostgreSQL stops: a child's batch is refused with 503 and kept by the child.
        pg.stop()
        st, doc = post_batch(a, "child-2:1:1", child_checkins(300, 3, "set"))
        assert st == 503 and doc["error"] == "state_backend_unavailable", (st, doc)
        st, doc = admin(b, "GET", ADMIN_APP + "/stats")  # reads say so too, and may retry
        assert st == 503 and doc["error"] == "state_backend_unavailable", (st, doc)
        for i in range(5, 8):
            assert updates(e, i)[0] == 200  # the edge answers, and queues the check-ins
        # The origin answers its own devices too, and keeps their check-ins until it can write.
        for i in range(400, 402):
            assert updates(a, i)[0] == 200
        wait_for("A's 2 check-ins pending", lambda: a.metrics().get("edge_checkins_pg_pending") == 2,
                 timeout=10)
        wait_for("3 check-ins waiting in the edge's outbox", lambda: outbox_depth(e) == 3, timeout=10)
        time.sleep(1.0)  # the edge retries meanwhile, and is refused
        assert outbox_depth(e) == 3, outbox_depth(e)
        assert a.metrics().get('edge_checkins_pg_batches_total{result="failed"}', 0) > 0
        pg.start()
        wait_for("the edge's outbox delivered", lambda: outbox_depth(e) == 0, timeout=20)
        st, doc = post_batch(a, "child-2:1:1", child_checkins(300, 3, "set"))
        assert st == 200 and doc["applied"] == 3, (st, doc)
        for n in (a, b):
            wait_for("10 update checks on :%d" % n.port, lambda n=n: action_count(n, "updates") == 10,
                     timeout=10)
        time.sleep(0.5)
        for n in (a, b):
            assert action_count(n, "updates") == 10 and action_count(n, "set") == 3, stats(n)["days"]
            assert devices_today(n) == 13, stats(n)["days"]
        assert a.metrics().get("edge_checkins_pg_pending") == 0
        assert a.metrics().get("edge_checkins_pg_dropped_total") == 0

    def t_an_edge_failing_over_between_origins_loses_and_doubles_nothing():
        a, b = two_origins()
        e = keep(edge(a.url + "," + b.url))
        wait_for("the edge serves 1.0.0", lambda: updates(e, 600)[0] == 200, timeout=15)
        # Devices keep checking in through the edge while origin A dies (kill -9, maybe
        # with a batch in flight: committed or not, its retry on B carries the same key).
        stop = threading.Event()

        def devices():
            i = 601
            while not stop.is_set():
                try:
                    updates(e, i)
                except OSError:
                    pass
                i += 1
                time.sleep(0.005)

        t = threading.Thread(target=devices)
        t.start()
        time.sleep(1.0)
        a.kill()
        time.sleep(1.5)
        stop.set()
        t.join()
        wait_for("the edge's outbox delivered to B", lambda: outbox_depth(e) == 0, timeout=30)
        wait_for("B counts every answered check-in",
                 lambda: action_count(b, "updates") >= e.acked, timeout=10)
        time.sleep(0.5)
        assert action_count(b, "updates") == e.acked, (action_count(b, "updates"), e.acked)
        assert devices_today(b) == e.acked, (devices_today(b), e.acked)

    def t_the_retention_sweep_runs_as_singleton_work():
        need_pg()
        url = pg.create_db("c%d" % next(DBS))
        a = keep(tier_origin(url, "[checkins]\nretention_days = 1\n"))
        publish(a, "1.0.0", size=20_000)
        old = child_checkins(700, 3, "updates")
        for c in old:
            c["time_ms"] -= 5 * 86_400_000
        st, doc = post_batch(a, "child-4:1:1", old + child_checkins(710, 2, "updates"))
        assert st == 200 and doc["applied"] == 5, (st, doc)
        day = time.strftime("%Y-%m-%d", time.gmtime(old[0]["time_ms"] / 1000))
        path = ADMIN_APP + "/stats?from=%s&to=%s" % (day, day)

        def old_updates():
            st, doc = admin(a, "GET", path)
            assert st == 200, (st, doc)
            return sum(d["actions"].get("updates", 0) for d in doc["days"])

        def timeline(i):
            st, doc = admin(a, "GET", ADMIN_APP + "/devices/" + device_id(i))
            assert st == 200, (st, doc)
            return doc["timeline"]

        dbname = url.split("dbname=")[1].split()[0]

        def stored_events(i):
            return int(pg.sql("SELECT count(*) FROM be_checkin_timeline WHERE device_id = '%s'"
                              % device_id(i), db=dbname))

        # An event past the retention is kept until the sweep, but no timeline shows it.
        assert old_updates() == 3 and stored_events(700) == 1 and timeline(700) == []
        # The origin holds the singleton lock again at its restart, and sweeps at once.
        a.restart()
        wait_for("the old day's counters swept", lambda: old_updates() == 0, timeout=15)
        assert stored_events(700) == 0 and stored_events(710) == 1 and len(timeline(710)) == 1
        assert action_count(a, "updates") == 2
        assert device_id(700) in device_index(a)  # the device index keeps every device

    try:
        try:
            pg = Postgres()
        except Exception as e:  # every check below skips, saying why
            print("SKIP PostgreSQL: %s" % e, flush=True)
        check("devices on both origins, seen on either once",
              t_devices_on_both_origins_seen_on_either_once)
        check("a batch retried on the other origin counted once",
              t_a_batch_retried_on_the_other_origin_is_counted_once)
        check("the same batches on both origins at once apply once",
              t_the_same_batches_sent_to_both_origins_at_once_apply_once)
        check("edge outbox and origin's own delivered once, postgres down",
              t_an_edge_delivers_its_outbox_once_even_with_postgres_down)
        check("an edge failing over between origins: exactly once",
              t_an_edge_failing_over_between_origins_loses_and_doubles_nothing)
        check("the retention sweep runs as singleton work",
              t_the_retention_sweep_runs_as_singleton_work)
    finally:
        stop_all(nodes)
        if pg is not None:
            pg.remove()


if __name__ == "__main__":
    run(main)
