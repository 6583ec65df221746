#!/usr/bin/env python3
"""Integration test of the origin tier's shared control state: several origins on one real
PostgreSQL 15 (started here, as the postgres user, on 127.0.0.1), writing and following one
numbered changelog; an edge following any of them; PostgreSQL down and back; a schema newer
than the binary refused.

Usage: tier_test.py <path-to-bundle-edge>"""
import json
import os
import subprocess
import threading
import time

from harness import (BINARY, Node, Skip, TMP, admin, check, curl, half_sent_upload, run, sha,
                     stop_all, upload, wait_for)
from pgharness import Postgres
import s3rver
from sync_test import APP, ADMIN_APP, TOKEN, edge, updates

DBS = iter(range(1000))


def tier_origin(url, sync_extra=""):
    return Node('[sync]\ntoken = "%s"\n%s\n[state]\nbackend = "postgres"\nurl = "%s"\n'
                % (TOKEN, sync_extra, url))


def feed(node, after=0):
    st, _, out = curl("-H", "Authorization: Bearer " + TOKEN,
                      node.url + "/v1/sync/changes?after=%d&wait_ms=0&limit=100000" % after)
    assert st == 200, (st, out)
    return json.loads(out)


def all_changes(node):
    """The node's whole feed as [(seq, kind, app, key, deleted)], following pages."""
    out, after = [], 0
    while True:
        doc = feed(node, after)
        ch = doc.get("changes", [])
        if not ch:
            return doc["epoch"], out
        for c in ch:
            out.append((c["seq"], c.get("kind"), c.get("app_id"), c.get("key"), c.get("deleted")))
        after = ch[-1]["seq"]


def make_app(node):
    st, doc = admin(node, "PUT", ADMIN_APP, {})
    assert st in (200, 201), (st, doc)


def publish_on(node, version, size=50_000):
    data = os.urandom(size)
    path = os.path.join(TMP, "zip-" + version)
    open(path, "wb").write(data)
    st, _, _ = upload(node, path)
    assert st in (200, 201), st
    st, doc = admin(node, "PUT", ADMIN_APP + "/releases/" + version, {"zip": sha(data)})
    assert st in (200, 201), (st, doc)
    st, doc = admin(node, "PUT", ADMIN_APP + "/channels/production",
                    {"release": version, "public": True, "disable_auto_update": "none"})
    assert st in (200, 201), (st, doc)
    return data


def main():
    pg = None
    nodes = []

    def keep(n):
        nodes.append(n)
        return n

    def db():
        return pg.create_db("t%d" % next(DBS))

    def t_start_postgres():
        nonlocal pg
        pg = Postgres()

    def need_pg():
        if pg is None:
            raise Skip("PostgreSQL did not start (see above)")

    def t_two_origins_share_one_numbered_log():
        need_pg()
        url = db()
        a, b = keep(tier_origin(url)), keep(tier_origin(url))
        make_app(a)
        publish_on(a, "1.5.0")
        # B follows A's writes (NOTIFY at commit, or its poll) into its own state.
        wait_for("B sees the release written on A",
                 lambda: admin(b, "GET", ADMIN_APP + "/channels/production")[0] == 200, timeout=10)
        assert updates(b)[1].get("version") == "1.5.0", updates(b)
        # A write on B continues the same numbering; A follows it.
        st, doc = admin(b, "PUT", ADMIN_APP + "/channels/beta", {"release": "1.5.0"})
        assert st == 201, (st, doc)
        wait_for("A sees the channel written on B",
                 lambda: admin(a, "GET", ADMIN_APP + "/channels/beta")[0] == 200, timeout=10)
        ea, ca = all_changes(a)
        eb, cb = all_changes(b)
        assert ea == eb and ca == cb, (ea, eb, ca, cb)
        seqs = [c[0] for c in ca]
        assert seqs == list(range(1, len(seqs) + 1)), seqs
        # The state is in PostgreSQL: one changelog row per change, the head at the last.
        assert pg.sql("SELECT seq FROM be_feed_head", db=url.split("dbname=")[1].split()[0]) == str(seqs[-1])

    def t_concurrent_writers_on_two_origins_keep_one_gapless_order():
        need_pg()
        url = db()
        a, b = keep(tier_origin(url)), keep(tier_origin(url))
        make_app(a)
        wait_for("B sees the app", lambda: admin(b, "GET", ADMIN_APP)[0] == 200, timeout=10)
        errors = []

        def writer(node, prefix):
            for i in range(25):
                st, doc = admin(node, "PUT", ADMIN_APP + "/channels/%s-%d" % (prefix, i),
                                {"public": False})
                if st not in (200, 201):
                    errors.append((prefix, i, st, doc))

        ts = [threading.Thread(target=writer, args=(a, "a")),
              threading.Thread(target=writer, args=(b, "b"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors
        for n in (a, b):
            wait_for("all 50 channels on every origin",
                     lambda n=n: len(admin(n, "GET", ADMIN_APP + "/channels")[1]["channels"]) == 50,
                     timeout=10)
        ea, ca = all_changes(a)
        eb, cb = all_changes(b)
        assert ea == eb and ca == cb
        seqs = [c[0] for c in ca]
        assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate: %s" % seqs
        assert len({c[3] for c in ca if c[1] == "channel"}) == 50

    def t_an_edge_of_one_origin_follows_writes_made_on_another():
        need_pg()
        url = db()
        a, b = keep(tier_origin(url)), keep(tier_origin(url))
        make_app(a)
        e = keep(edge(b.url))
        st, doc = admin(a, "PUT", ADMIN_APP + "/channels/production", {"public": True})
        assert st in (200, 201), (st, doc)
        wait_for("the edge of B sees A's channel",
                 lambda: admin(e, "GET", ADMIN_APP + "/channels/production")[0] == 200, timeout=10)
        t0 = time.time()
        st, doc = admin(a, "PUT", ADMIN_APP + "/channels/canary", {"public": False})
        assert st == 201
        wait_for("the edge of B sees the next write on A",
                 lambda: admin(e, "GET", ADMIN_APP + "/channels/canary")[0] == 200, timeout=10,
                 step=0.01)
        print("     write on A -> edge of B: %.0f ms" % ((time.time() - t0) * 1000))

    def t_postgres_down_writes_503_devices_answered_then_back():
        need_pg()
        url = db()
        a = keep(tier_origin(url))
        make_app(a)
        publish_on(a, "2.0.0")
        pg.stop()
        try:
            st, doc = admin(a, "PUT", ADMIN_APP + "/channels/beta", {"public": False})
            assert st == 503 and doc["error"] == "state_backend_unavailable", (st, doc)
            assert "password" not in json.dumps(doc)
            st, doc = updates(a)
            assert st == 200 and doc.get("version") == "2.0.0", (st, doc)
            wait_for("/readyz says degraded",
                     lambda: "state database" in curl(a.url + "/readyz")[2].decode(), timeout=10)
            assert a.metrics().get("edge_state_backend_up") == 0
        finally:
            pg.start()
        wait_for("writes work again",
                 lambda: admin(a, "PUT", ADMIN_APP + "/channels/beta", {"public": False})[0] in (200, 201),
                 timeout=15, step=0.5)
        st, doc = admin(a, "GET", ADMIN_APP + "/channels/beta")
        assert st == 200, (st, doc)
        wait_for("/readyz ok", lambda: b'"ok"' in curl(a.url + "/readyz")[2], timeout=10)

    def t_an_origin_on_an_empty_data_dir_rebuilds_from_postgres():
        need_pg()
        url = db()
        a = keep(tier_origin(url))
        make_app(a)
        publish_on(a, "3.0.0")
        ea, ca = all_changes(a)
        c = keep(tier_origin(url))
        ec, cc = all_changes(c)
        assert ea == ec and ca == cc, (ea, ec)
        assert updates(c)[1].get("version") == "3.0.0"

    def t_a_newer_schema_is_refused_with_a_clear_message():
        need_pg()
        url = db()
        a = keep(tier_origin(url))
        a.stop()
        name = url.split("dbname=")[1].split()[0]
        pg.sql("UPDATE be_schema SET version = 999", db=name)
        r = subprocess.run([BINARY, "--state-url", url, "--data", os.path.join(TMP, "newer"),
                            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0, r
        assert "schema version 999" in r.stderr + r.stdout and "newer bundle-edge" in r.stderr + r.stdout, r.stderr

    def t_one_origin_runs_the_singleton_work_another_takes_over():
        need_pg()
        url = db()
        a = keep(tier_origin(url))
        b = keep(tier_origin(url))
        held = lambda n: n.metrics().get("edge_tier_singleton_held", 0) == 1
        wait_for("one origin holds the singleton lock", lambda: held(a) or held(b), timeout=10)
        holder, other = (a, b) if held(a) else (b, a)
        assert not held(other)
        holder.kill()
        t0 = time.time()
        wait_for("the other origin takes over", lambda: held(other), timeout=15, step=0.2)
        print("     singleton takeover after kill -9: %.1f s" % (time.time() - t0))

    def t_the_shared_changelog_keeps_its_retention():
        need_pg()
        url = db()
        a = keep(tier_origin(url, "changelog_keep = 5\n"))
        make_app(a)
        for i in range(20):
            assert admin(a, "PUT", ADMIN_APP + "/channels/c%d" % i, {"public": False})[0] == 201
        name = url.split("dbname=")[1].split()[0]
        wait_for("the changelog trimmed to 5", lambda: pg.sql("SELECT count(*) FROM be_changelog", db=name) == "5",
                 timeout=25, step=0.5)
        assert pg.sql("SELECT log_start FROM be_feed_head", db=name) == "17"
        # A new origin starts from a snapshot and goes on with the same numbers.
        c = keep(tier_origin(url))
        assert admin(c, "GET", ADMIN_APP + "/channels/c0")[0] == 200
        st, _ = admin(c, "PUT", ADMIN_APP + "/channels/c20", {"public": False})
        assert st == 201
        wait_for("A follows C's write", lambda: admin(a, "GET", ADMIN_APP + "/channels/c20")[0] == 200, timeout=10)

    def t_primary_killed_standby_promoted_no_acknowledged_write_lost():
        need_pg()
        primary = Postgres()
        standby = None
        try:
            primary.sql("CREATE DATABASE f")
            standby = Postgres(standby_of=primary, sync_standby=True)
            url = ("host=127.0.0.1,127.0.0.1 port=%d,%d dbname=f user=postgres "
                   "target_session_attrs=read-write connect_timeout=2" % (primary.port, standby.port))
            a, b = keep(tier_origin(url)), keep(tier_origin(url))
            make_app(a)
            acked, stop = [], threading.Event()

            def writer(node, prefix):
                i = 0
                while not stop.is_set():
                    name = "%s-%d" % (prefix, i)
                    t1 = time.time()
                    st, _ = admin(node, "PUT", ADMIN_APP + "/channels/" + name, {"public": False})
                    if time.time() - t1 > 2:
                        print("     slow write %s: %.1f s -> %s" % (name, time.time() - t1, st))
                    if st in (200, 201):
                        acked.append((name, time.time()))
                        i += 1
                    else:
                        time.sleep(0.05)

            ts = [threading.Thread(target=writer, args=(a, "a")), threading.Thread(target=writer, args=(b, "b"))]
            for t in ts:
                t.start()
            time.sleep(1.0)
            primary.kill9()
            killed = time.time()
            time.sleep(0.5)
            standby.promote()
            promoted = time.time()
            wait_for("writes acknowledged after the promotion",
                     lambda: any(t > promoted for _, t in acked), timeout=30, step=0.1)
            resumed = min(t for _, t in acked if t > promoted)
            time.sleep(0.5)
            stop.set()
            for t in ts:
                t.join()
            print("     %d writes acknowledged; first after promote: %.2f s (kill -9 -> promote %.2f s)"
                  % (len(acked), resumed - promoted, promoted - killed))
            names = {n for n, _ in acked}
            for node in (a, b):
                wait_for("every acknowledged write on each origin",
                         lambda node=node: names <= {c["name"] for c in admin(node, "GET", ADMIN_APP + "/channels")[1]["channels"]},
                         timeout=15)
            in_db = set(standby.sql("SELECT key FROM be_documents WHERE kind = 3", db="f").split())
            assert names <= in_db, names - in_db
            ea, ca = all_changes(a)
            eb, cb = all_changes(b)
            assert ea == eb and ca == cb
            seqs = [c[0] for c in ca]
            assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate"
        finally:
            primary.remove()
            if standby is not None:
                standby.remove()

    def t_migrate_moves_an_embedded_origin_into_the_tier():
        need_pg()
        import s3rver
        if s3rver.find() is None:
            raise Skip("s3rver not found (tools/setup.sh installs it)")
        os.environ["AWS_ACCESS_KEY_ID"] = s3rver.ACCESS_KEY
        os.environ["AWS_SECRET_ACCESS_KEY"] = s3rver.SECRET_KEY
        s3 = s3rver.S3rver(TMP, bucket="migrate")
        try:
            emb = keep(Node('[sync]\ntoken = "%s"\n' % TOKEN))
            make_app(emb)
            data = publish_on(emb, "4.0.0", size=600_000)
            st, doc = admin(emb, "PUT", ADMIN_APP + "/channels/beta", {"public": False})
            assert st == 201
            epoch, before = all_changes(emb)
            # A running origin's data is locked: migrate says so.
            url = db()
            r = subprocess.run([BINARY, "migrate", "--data", emb.data, "--to-state", url],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 1 and "stop it first" in r.stderr, r.stderr
            emb.stop()
            r = subprocess.run([BINARY, "migrate", "--data", emb.data, "--to-state", url,
                                "--to-blobs", "s3://migrate", "--s3-endpoint", s3.endpoint],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, (r.stdout, r.stderr)
            assert "1 blobs written" in r.stdout and "migrated" in r.stdout, r.stdout
            assert any(k.startswith("recipes/") for k in s3.keys()), s3.keys()
            # Into an empty database only.
            r = subprocess.run([BINARY, "migrate", "--data", emb.data, "--to-state", url],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 1 and "empty" in r.stderr, r.stderr
            # A tier origin on a fresh data directory: same epoch and numbers, the bytes from S3.
            t = keep(Node('[sync]\ntoken = "%s"\n[state]\nbackend = "postgres"\nurl = "%s"\n'
                          '[blobs]\nbackend = "s3"\nendpoint = "%s"\nbucket = "migrate"\n'
                          'path_style = true\n' % (TOKEN, url, s3.endpoint)))
            assert all_changes(t) == (epoch, before)
            st, doc = updates(t)
            assert st == 200 and doc.get("version") == "4.0.0", (st, doc)
            st, _, body = curl(t.url + "/v1/blobs/" + sha(data))
            assert st == 200 and body == data, st
            st, doc = admin(t, "PUT", ADMIN_APP + "/channels/gamma", {"public": False})
            assert st == 201 and all_changes(t)[1][-1][0] == before[-1][0] + 1
        finally:
            s3.stop()

    def t_garbage_collection_of_the_shared_bucket():
        need_pg()
        if s3rver.find() is None:
            raise Skip("s3rver not found (tools/setup.sh installs it)")
        os.environ["AWS_ACCESS_KEY_ID"] = s3rver.ACCESS_KEY
        os.environ["AWS_SECRET_ACCESS_KEY"] = "tier-gc-secret"
        # The origins of the checks above hold PostgreSQL connections (max_connections 100).
        stop_all(nodes)
        nodes.clear()
        s3 = s3rver.S3rver(TMP, bucket="tiergc")
        try:
            url = db()
            extra = ('[blobs]\nbackend = "s3"\nendpoint = "%s"\nbucket = "tiergc"\n'
                     '[gc]\ninterval_s = 0\ngrace_s = 0\n' % s3.endpoint)
            a = keep(Node('[sync]\ntoken = "%s"\n[state]\nbackend = "postgres"\nurl = "%s"\n%s'
                          % (TOKEN, url, extra)))
            b = keep(Node('[sync]\ntoken = "%s"\n[state]\nbackend = "postgres"\nurl = "%s"\n%s'
                          % (TOKEN, url, extra)))
            held = lambda n: n.metrics().get("edge_tier_singleton_held", 0) == 1
            wait_for("one origin holds the singleton lock", lambda: held(a) or held(b), timeout=10)
            holder, other = (a, b) if held(a) else (b, a)

            def put(node, data):
                path = os.path.join(TMP, "tiergc-" + sha(data))
                open(path, "wb").write(data)
                st, _, out = upload(node, path)
                assert st in (200, 201), (st, out)
                return sha(data)

            def gc(node):
                st, doc = admin(node, "POST", "/v1/admin/gc", {})
                assert st == 200, (st, doc)
                return doc

            make_app(holder)
            old, new = put(holder, os.urandom(400_000)), put(other, os.urandom(400_000))
            orphan = put(other, os.urandom(300_000))
            for v, blob in (("1.0.0", old), ("1.1.0", new)):
                st, doc = admin(holder, "PUT", ADMIN_APP + "/releases/" + v, {"zip": blob})
                assert st == 201, (st, doc)
            assert admin(other, "DELETE", ADMIN_APP + "/releases/1.0.0")[0] == 200
            time.sleep(1.1)  # older than the grace period of 0 s, to S3's second
            # Only the singleton holder collects the bucket.
            doc = gc(other)
            assert doc["bucket"] is None and "singleton" in doc["bucket_note"], doc
            # An upload in progress on the other origin keeps the holder from removing anything.
            conn = half_sent_upload(other)
            rep = gc(holder)["bucket"]
            assert rep["blobs_removed"] == 0 and "in progress" in rep["note"], rep
            assert "recipes/" + old in s3.keys("recipes/")
            conn.send(os.urandom(100_000))
            r = conn.getresponse()
            assert r.status == 201, r.status
            slow = json.loads(r.read())["sha256"]
            conn.close()
            # A blob older than the grace period that a release on the other origin names just
            # before the pass: the holder catches up with the log first, and keeps it.
            late = put(other, os.urandom(200_000))
            time.sleep(1.1)
            st, doc = admin(other, "PUT", ADMIN_APP + "/releases/1.2.0", {"zip": late})
            assert st == 201, (st, doc)
            rep = gc(holder)["bucket"]
            assert rep["complete"], rep
            left = sorted(s3.keys("recipes/"))
            assert left == sorted("recipes/" + x for x in (new, late)), (left, old, orphan, slow)
            # Both origins serve what is left; an origin with nothing cached fills it whole.
            c = keep(Node('[sync]\ntoken = "%s"\n[state]\nbackend = "postgres"\nurl = "%s"\n%s'
                          % (TOKEN, url, extra)))
            for blob in (new, late):
                st, _, body = curl(c.url + "/v1/blobs/" + blob)
                assert st == 200 and sha(body) == blob, st
            # PostgreSQL down: an upload cannot take its lease, so it is refused with 503 (and
            # nothing is acknowledged); cached blobs are still served.
            pg.stop()
            try:
                path = os.path.join(TMP, "tiergc-down")
                open(path, "wb").write(os.urandom(50_000))
                st, _, out = upload(holder, path)
                assert st == 503 and b"state_backend_unavailable" in out, (st, out)
                st, _, body = curl(holder.url + "/v1/blobs/" + new)
                assert st == 200 and sha(body) == new, st
            finally:
                pg.start()
        finally:
            s3.stop()

    def t_config_errors_name_the_value():
        r = subprocess.run([BINARY, "--role", "edge", "--upstream", "http://127.0.0.1:1",
                            "--sync-token", "x", "--state-url", "host=127.0.0.1"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "state.backend" in r.stderr, r.stderr

    try:
        try:
            t_start_postgres()
        except Exception as e:  # every check below skips, saying why
            print("SKIP PostgreSQL: %s" % e, flush=True)
        check("two origins share one numbered log", t_two_origins_share_one_numbered_log)
        check("concurrent writers keep one gapless order",
              t_concurrent_writers_on_two_origins_keep_one_gapless_order)
        check("edge of one origin follows writes on another",
              t_an_edge_of_one_origin_follows_writes_made_on_another)
        check("postgres down: 503 writes, devices answered", t_postgres_down_writes_503_devices_answered_then_back)
        check("empty data dir rebuilds from postgres", t_an_origin_on_an_empty_data_dir_rebuilds_from_postgres)
        check("newer schema refused", t_a_newer_schema_is_refused_with_a_clear_message)
        check("singleton work: one origin, another takes over",
              t_one_origin_runs_the_singleton_work_another_takes_over)
        check("shared changelog keeps its retention", t_the_shared_changelog_keeps_its_retention)
        check("primary killed, standby promoted: nothing lost",
              t_primary_killed_standby_promoted_no_acknowledged_write_lost)
        check("migrate moves an embedded origin into the tier",
              t_migrate_moves_an_embedded_origin_into_the_tier)
        check("garbage collection of the shared bucket", t_garbage_collection_of_the_shared_bucket)
        check("config errors name the value", t_config_errors_name_the_value)
    finally:
        stop_all(nodes)
        if pg is not None:
            pg.remove()


if __name__ == "__main__":
    run(main)
