#!/usr/bin/env python3
"""Integration test of the access state and fleet view shared by the origins of a tier: two
origins on one real PostgreSQL 15 (started here, as the postgres user, on 127.0.0.1). A token
created on one works on the other, a revocation takes effect on the other within seconds,
the audit log and the refusal records show the writes made through every origin (each
naming its origin), an edge reporting to one origin shows in the other's fleet view, and
with PostgreSQL stopped tokens still authenticate while token writes answer 503 and audit
records wait to be appended.

Usage: tier_access_test.py <path-to-bundle-edge>"""
import json
import os
import subprocess
import time

from harness import Node, Skip, admin, check, curl, run, stop_all, wait_for
from pgharness import Postgres
from sync_test import TOKEN, edge

APP = "com.example.tier"
CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")
DBS = iter(range(1000))


def tier_origin(url, node_id, sync_extra=""):
    return Node('[node]\nid = "%s"\n[sync]\ntoken = "%s"\n%s[state]\nbackend = "postgres"\nurl = "%s"\n'
                % (node_id, TOKEN, sync_extra, url))


def call(node, token, method, path, body=None):
    args = ["-X", method, "-H", "Authorization: Bearer " + token]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    st, _, out = curl(*args, node.admin_url + path)
    return st, (json.loads(out) if out else None)


def audit(node, after=0):
    st, doc = admin(node, "GET", "/v1/admin/audit?after=%d&limit=1000" % after)
    assert st == 200, (st, doc)
    return doc["records"]


def main():
    pg = None
    nodes = []

    def keep(n):
        nodes.append(n)
        return n

    def pair(sync_extra=""):
        url = pg.create_db("a%d" % next(DBS))
        a = keep(tier_origin(url, "origin-a", sync_extra))
        b = keep(tier_origin(url, "origin-b", sync_extra))
        st, doc = admin(a, "PUT", "/v1/admin/apps/" + APP, {})
        assert st == 201, (st, doc)
        wait_for("B sees the app", lambda: admin(b, "GET", "/v1/admin/apps/" + APP)[0] == 200, timeout=10)
        return url, a, b

    def need_pg():
        if pg is None:
            raise Skip("PostgreSQL did not start (see above)")

    def t_a_token_created_on_one_origin_works_on_the_other_and_revocation_follows():
        need_pg()
        _, a, b = pair()
        st, doc = admin(a, "POST", "/v1/admin/tokens", {"name": "ci", "role": "publisher", "apps": [APP]})
        assert st == 201, (st, doc)
        secret = doc["token"]
        t0 = time.time()
        wait_for("B accepts the token created on A",
                 lambda: call(b, secret, "GET", "/v1/admin/apps/" + APP)[0] == 200, timeout=5)
        print("     token created on A accepted by B after %.2f s" % (time.time() - t0))
        # The publisher writes through B; B lists the token as A created it.
        st, doc = call(b, secret, "PUT", "/v1/admin/apps/%s/channels/beta" % APP, {"public": False})
        assert st == 201, (st, doc)
        st, doc = admin(b, "GET", "/v1/admin/tokens")
        assert [(t["name"], t["created_by"]) for t in doc["tokens"]] == [("ci", "bootstrap")], doc
        # One name for the whole tier: B refuses a second "ci".
        st, doc = admin(b, "POST", "/v1/admin/tokens", {"name": "ci", "role": "viewer", "apps": [APP]})
        assert st == 409 and doc["error"] == "token_exists", (st, doc)
        # Revoked on A: refused on B within seconds (the security-relevant direction).
        st, doc = admin(a, "DELETE", "/v1/admin/tokens/ci")
        assert st == 200, (st, doc)
        t0 = time.time()
        wait_for("B refuses the token revoked on A",
                 lambda: call(b, secret, "GET", "/v1/admin/apps/" + APP)[0] == 401, timeout=5, step=0.05)
        took = time.time() - t0
        print("     token revoked on A refused by B after %.2f s" % took)
        assert took < 3, took
        assert call(a, secret, "GET", "/v1/admin/apps/" + APP)[0] == 401
        # Each origin keeps its own bootstrap token.
        assert call(b, a.token, "GET", "/v1/admin/tokens")[0] == 401

    def t_the_audit_log_and_refusals_name_the_origin_of_every_write():
        need_pg()
        _, a, b = pair()
        st, doc = admin(b, "PUT", "/v1/admin/apps/%s/channels/from-b" % APP, {"public": False})
        assert st == 201, (st, doc)
        st, doc = admin(a, "PUT", "/v1/admin/apps/%s/channels/from-a" % APP, {"public": False})
        assert st == 201, (st, doc)
        for reader in (a, b):
            recs = audit(reader)
            ns = [r["n"] for r in recs]
            assert ns == list(range(1, len(ns) + 1)), ns
            by_path = {r["path"]: r for r in recs}
            rb = by_path["/v1/admin/apps/%s/channels/from-b" % APP]
            ra = by_path["/v1/admin/apps/%s/channels/from-a" % APP]
            assert rb["origin"] == "origin-b" and rb["token"] == "bootstrap" and rb["change_seq"] > 0, rb
            assert ra["origin"] == "origin-a" and ra["n"] > rb["n"], ra
            # The app was created through A.
            assert by_path["/v1/admin/apps/" + APP]["origin"] == "origin-a"
        # A viewer refused on B: the refusal is on A's page too, with B named.
        st, doc = admin(a, "POST", "/v1/admin/tokens", {"name": "dash", "role": "viewer", "apps": [APP]})
        assert st == 201
        viewer = doc["token"]
        wait_for("B accepts the viewer", lambda: call(b, viewer, "GET", "/v1/admin/apps/" + APP)[0] == 200, timeout=5)
        for _ in range(2):
            st, doc = call(b, viewer, "PUT", "/v1/admin/apps/%s/channels/nope" % APP, {"public": False})
            assert st == 403, (st, doc)
        st, doc = call(a, viewer, "DELETE", "/v1/admin/apps/%s/channels/nope" % APP)
        assert st == 403, (st, doc)
        st, doc = admin(a, "GET", "/v1/admin/audit/refusals")
        assert st == 200, (st, doc)
        got = {(r["origin"], r["method"], r["token"], r["count"]) for r in doc["refusals"]}
        assert ("origin-b", "PUT", "dash", 2) in got and ("origin-a", "DELETE", "dash", 1) in got, doc
        assert doc["total"] == 2, doc
        # A refusal is not an audit record.
        assert not any("nope" in r["path"] for r in audit(a))
        # bundle-edge-ctl names the origin of each record.
        r = subprocess.run([CTL, "--url", a.admin_url, "--token", a.token, "audit"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "/channels/from-b -> 201 seq" in r.stdout and " at origin-b" in r.stdout, r
        r = subprocess.run([CTL, "--url", a.admin_url, "--token", a.token, "audit", "--refusals"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "x2 at origin-b" in r.stdout, r

    def t_an_edge_reporting_to_one_origin_shows_in_the_others_fleet_view():
        need_pg()
        url, a, b = pair("fleet_expire_ms = 3000\n")
        e = keep(edge(b.url, "status_interval_ms = 300\n", args=("--node-id", "edge-of-b")))

        def in_fleet(node):
            st, doc = admin(node, "GET", "/v1/admin/fleet")
            assert st == 200, (st, doc)
            return [n for n in doc["nodes"] if n["node_id"] == "edge-of-b"], doc

        wait_for("the edge in A's fleet view", lambda: in_fleet(a)[0], timeout=15)
        rows, doc = in_fleet(a)
        assert rows[0]["role"] == "edge" and rows[0]["upstream"] == b.url, rows
        assert rows[0]["via"] is None and rows[0]["stale"] is False, rows
        assert doc["summary"]["nodes"] == 1 and doc["next"] is None, doc
        assert doc["self"]["node_id"] == "origin-a", doc["self"]
        assert in_fleet(b)[0], "B shows the edge too"
        # Paging by node id, as on an embedded origin.
        st, doc = admin(a, "GET", "/v1/admin/fleet?limit=1&cursor=edge-of-b")
        assert st == 200 and doc["nodes"] == [] and doc["next"] is None, doc
        st, doc = admin(a, "GET", "/v1/admin/fleet?limit=0")
        assert st == 400 and "limit" in doc["message"], doc
        # Stopped, the edge leaves every origin's view once expired (sync.fleet_expire_ms),
        # and the shared table once the singleton's sweep ran.
        e.stop()
        wait_for("the edge expires from A's view", lambda: not in_fleet(a)[0], timeout=15)
        assert not in_fleet(b)[0]
        name = url.split("dbname=")[1].split()[0]
        wait_for("the row swept from be_fleet",
                 lambda: pg.sql("SELECT count(*) FROM be_fleet", db=name) == "0", timeout=15, step=0.5)

    def t_the_shared_logs_keep_their_bounds():
        need_pg()
        url = pg.create_db("a%d" % next(DBS))
        name = url.split("dbname=")[1].split()[0]
        conf = '[node]\nid = "%s"\n[admin]\naudit_keep = 3\n[sync]\ntoken = "%s"\n[state]\nbackend = "postgres"\nurl = "%s"\n'
        a = keep(Node(conf % ("origin-a", TOKEN, url)))
        b = keep(Node(conf % ("origin-b", TOKEN, url)))
        for i, node in enumerate((a, b, a, b, a)):
            assert admin(node, "PUT", "/v1/admin/apps/com.example.k%d" % i, {})[0] == 201
        recs = audit(b)
        assert [r["n"] for r in recs] == [3, 4, 5], recs
        assert [r["origin"] for r in recs] == ["origin-a", "origin-b", "origin-a"], recs
        # Records past admin.audit_keep_days (here: from 1970) go with the singleton's sweep,
        # whichever origin wrote them.
        pg.sql("INSERT INTO be_audit (n, time_ms, doc) VALUES (0, 1, '{\"time_ms\":1}')", db=name)
        pg.sql("INSERT INTO be_refusals (key, last_ms, doc) VALUES ('00', 1, '{\"last_ms\":1}')", db=name)
        wait_for("the old records swept",
                 lambda: pg.sql("SELECT count(*) FROM be_audit WHERE n = 0", db=name) == "0"
                 and pg.sql("SELECT count(*) FROM be_refusals", db=name) == "0", timeout=20, step=0.5)
        assert pg.sql("SELECT count(*) FROM be_audit", db=name) == "3"

    def t_postgres_stopped_tokens_still_work_token_writes_503_audit_waits():
        need_pg()
        global_pg = Postgres()
        try:
            global_pg.sql("CREATE DATABASE d")
            url = global_pg.url("d") + " connect_timeout=2"
            a = keep(tier_origin(url, "origin-a"))
            b = keep(tier_origin(url, "origin-b"))
            st, doc = admin(a, "POST", "/v1/admin/tokens", {"name": "ops", "role": "viewer", "apps": ["*"]})
            assert st == 201, (st, doc)
            secret = doc["token"]
            wait_for("B accepts the token", lambda: call(b, secret, "GET", "/v1/admin/tokens")[0] in (200, 403), timeout=5)
            assert call(b, secret, "GET", "/v1/admin/whoami")[0] == 200
            before = len(audit(a))
            global_pg.stop()
            time.sleep(1.5)  # a reload or two fail meanwhile: the tokens in memory stay
            for node in (a, b):
                st, doc = call(node, secret, "GET", "/v1/admin/whoami")
                assert st == 200 and doc.get("name", doc.get("token")) == "ops", (st, doc)
            st, doc = admin(a, "POST", "/v1/admin/tokens", {"name": "late", "role": "viewer", "apps": ["*"]})
            assert st == 503 and doc["error"] == "state_backend_unavailable", (st, doc)
            st, doc = admin(b, "DELETE", "/v1/admin/tokens/ops")
            assert st == 503 and doc["error"] == "state_backend_unavailable", (st, doc)
            assert call(b, secret, "GET", "/v1/admin/whoami")[0] == 200, "a failed revoke left the token working"
            wait_for("the audit records wait", lambda: a.metrics().get("edge_audit_pending", 0) >= 1, timeout=5)
            global_pg.start()
            # Appended once the database is back: the 503 answers are on record, from each origin.
            wait_for("the waiting audit records appended",
                     lambda: a.metrics().get("edge_audit_pending", 1) == 0
                     and b.metrics().get("edge_audit_pending", 1) == 0, timeout=15)
            recs = audit(a)[before:]
            seen = {(r["origin"], r["method"], r["path"], r["status"]) for r in recs}
            assert ("origin-a", "POST", "/v1/admin/tokens", 503) in seen, recs
            assert ("origin-b", "DELETE", "/v1/admin/tokens/ops", 503) in seen, recs
            assert a.metrics().get("edge_audit_dropped_total", 1) == 0
            # Writes work again.
            st, doc = admin(a, "POST", "/v1/admin/tokens", {"name": "late", "role": "viewer", "apps": ["*"]})
            assert st == 201, (st, doc)
        finally:
            for n in nodes:
                try:
                    n.stop()
                except Exception:
                    n.kill()
            nodes.clear()
            global_pg.remove()

    try:
        try:
            pg = Postgres()
        except Exception as e:  # every check below skips, saying why
            print("SKIP PostgreSQL: %s" % e, flush=True)
        check("a token made on A works on B, revoked on A refused on B",
              t_a_token_created_on_one_origin_works_on_the_other_and_revocation_follows)
        check("audit log and refusals name the origin", t_the_audit_log_and_refusals_name_the_origin_of_every_write)
        check("an edge of B shows in A's fleet view", t_an_edge_reporting_to_one_origin_shows_in_the_others_fleet_view)
        check("the shared logs keep their bounds", t_the_shared_logs_keep_their_bounds)
        check("postgres stopped: tokens work, writes 503, audit waits",
              t_postgres_stopped_tokens_still_work_token_writes_503_audit_waits)
    finally:
        stop_all(nodes)
        if pg is not None:
            pg.remove()


if __name__ == "__main__":
    run(main)
