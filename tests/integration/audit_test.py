#!/usr/bin/env python3
"""Integration test of history and audit under hostile traffic: the real binary, flooded by
a viewer's refused writes and by old plugins' setChannel calls, must keep what rollback,
channel history and the audit log need.

* refusals are coalesced and kept apart from the audit log: an admin's record and a
  channel's author survive 20k refused writes (with audit_keep below that);
* a token that keeps being refused is answered 429 with Retry-After;
* internal actors' names cannot be taken by a token;
* 10k+ device overrides (more than the changelog keeps) do not take a channel's history:
  rollback still works, and the override list is paged.

Usage: audit_test.py <path-to-bundle-edge>"""
import http.client
import json
import os
import subprocess
import threading

from harness import TMP, Node, admin, check, curl, header, run, sha, upload

CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")
APP = "com.example.audit"
BASE = "/v1/admin/apps/" + APP


def call(node, token, method, path, body=None):
    args = ["-X", method, "-H", "Authorization: Bearer " + token]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    st, headers, out = curl(*args, node.admin_url + path)
    return st, headers, (json.loads(out) if out else None)


def flood(port, n, request, threads=8):
    """Sends n requests from `threads` keep-alive connections; returns {status: count}.
    request(i) -> (method, path, body, headers)."""
    counts, lock = {}, threading.Lock()

    def worker(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = {}
        for i in range(k, n, threads):
            method, path, body, headers = request(i)
            conn.request(method, path, body, headers)
            r = conn.getresponse()
            r.read()
            mine[r.status] = mine.get(r.status, 0) + 1
        conn.close()
        with lock:
            for s, c in mine.items():
                counts[s] = counts.get(s, 0) + c
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return counts


def new_token(node, name, role):
    st, doc = admin(node, "POST", "/v1/admin/tokens", {"name": name, "role": role, "apps": [APP]})
    assert st == 201, (st, doc)
    return doc["token"]


def publish(node):
    """The app, two releases, and production pointed at 1.0.0 then 1.0.1 by the admin."""
    assert admin(node, "PUT", BASE, {})[0] == 201
    zip_path = os.path.join(node.dir, "a.zip")
    data = os.urandom(20_000)
    open(zip_path, "wb").write(data)
    assert upload(node, zip_path)[0] in (200, 201)
    for v in ("1.0.0", "1.0.1"):
        assert admin(node, "PUT", BASE + "/releases/" + v, {"zip": sha(data)})[0] == 201
    assert admin(node, "PUT", BASE + "/channels/production", {"release": "1.0.0", "public": True})[0] == 201
    assert admin(node, "PUT", BASE + "/channels/production", {"release": "1.0.1", "public": True})[0] == 200


def main():
    def refusal_flood():
        # audit_keep below the flood: before refusals were kept apart, 20k of them pushed
        # every admin record (and so every channel author) out.
        node = Node("[admin]\naudit_keep = 10000\nrefusals_per_minute = 0\n")
        try:
            publish(node)
            viewer = new_token(node, "dash", "viewer")
            body = json.dumps({"release": None})
            headers = {"Authorization": "Bearer " + viewer, "Content-Type": "application/json"}
            counts = flood(node.admin, 20_000,
                           lambda i: ("PUT", BASE + "/channels/production", body, headers))
            assert counts == {403: 20_000}, counts
            st, doc = admin(node, "GET", "/v1/admin/audit?limit=1000")
            recs = doc["records"]
            assert len(recs) < 20, "refusals are not audit records: %d" % len(recs)
            mine = [r for r in recs if r["token"] == "bootstrap" and r["path"] == BASE + "/channels/production"]
            assert len(mine) == 2 and all(r["status"] in (200, 201) for r in mine), recs
            st, doc = admin(node, "GET", BASE + "/channels/production/history")
            assert st == 200 and [e["by"] for e in doc["history"]] == ["bootstrap", "bootstrap"], doc
            # The 20k refusals: one record, counted, with first and last time.
            st, doc = admin(node, "GET", "/v1/admin/audit/refusals")
            assert st == 200 and doc["total"] == 1, doc
            r = doc["refusals"][0]
            assert (r["token"], r["role"], r["method"], r["status"], r["count"]) == \
                ("dash", "viewer", "PUT", 403, 20_000), r
            assert r["path"] == BASE + "/channels/production" and r["first_ms"] <= r["last_ms"], r
            node.restart()  # both survive a restart, still apart
            st, doc = admin(node, "GET", "/v1/admin/audit/refusals")
            assert doc["refusals"][0]["count"] == 20_000, doc
            assert len(admin(node, "GET", "/v1/admin/audit?limit=1000")[1]["records"]) == len(recs)
            for q in ("limit=0", "limit=1001", "after=1"):
                st, doc = admin(node, "GET", "/v1/admin/audit/refusals?" + q)
                assert st == 400 and doc["error"] == "invalid_query_parameters", (q, st, doc)
            assert admin(node, "DELETE", "/v1/admin/audit/refusals")[0] == 405
            st, _, doc = call(node, viewer, "GET", "/v1/admin/audit/refusals")
            assert st == 403, "refusals are for admin tokens"
            r = subprocess.run([CTL, "--url", node.admin_url, "--token", node.token, "audit", "--refusals"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and "dash" in r.stdout and "x20000" in r.stdout, r.stdout + r.stderr
        finally:
            node.stop()
    check("20k refused writes: audit log, channel authors kept; refusals coalesced", refusal_flood)

    def throttled():
        node = Node("")  # admin.refusals_per_minute is 30 by default
        try:
            publish(node)
            viewer = new_token(node, "dash", "viewer")
            statuses = []
            for _ in range(35):
                st, headers, doc = call(node, viewer, "DELETE", BASE + "/releases/1.0.0")
                statuses.append(st)
            assert statuses == [403] * 30 + [429] * 5, statuses
            assert doc["error"] == "too_many_refusals" and "'dash'" in doc["message"], doc
            wait = int(header(headers, "Retry-After"))
            assert 1 <= wait <= 60, wait
            # Throttled for everything it asks, reads included, until the minute is over.
            assert call(node, viewer, "GET", BASE)[0] == 429
            # Other callers are not: the admin and another viewer carry on.
            assert admin(node, "GET", BASE)[0] == 200
            other = new_token(node, "other", "viewer")
            assert call(node, other, "GET", BASE)[0] == 200
            st, doc = admin(node, "GET", "/v1/admin/audit/refusals")
            r = [x for x in doc["refusals"] if x["token"] == "dash"]
            assert len(r) == 1 and r[0]["count"] == 30, r
        finally:
            node.stop()
    check("a token refused 30 times in a minute is answered 429 with Retry-After", throttled)

    def reserved_names():
        node = Node("")
        try:
            assert admin(node, "PUT", BASE, {})[0] == 201
            for name in ("auto-pause", "bootstrap", "system", "system-sync"):
                for role, apps in (("admin", None), ("viewer", [APP])):
                    body = {"name": name, "role": role}
                    if apps:
                        body["apps"] = apps
                    st, doc = admin(node, "POST", "/v1/admin/tokens", body)
                    assert st == 400 and doc["error"] == "reserved_name" and name in doc["message"], (name, st, doc)
            assert admin(node, "GET", "/v1/admin/tokens")[1]["tokens"] == []
            # What people do is audited as "token"; only the node's automation is "system".
            new_token(node, "autopause", "viewer")  # a look-alike is an ordinary name
            recs = admin(node, "GET", "/v1/admin/audit")[1]["records"]
            assert recs and all(r["actor_kind"] == "token" for r in recs), recs
        finally:
            node.stop()
    check("internal actors' names cannot be taken by a token (400 reserved_name)", reserved_names)

    def override_flood():
        # The changelog keeps 5000 entries; 10.5k devices set their channel (old plugins'
        # setChannel stores an override, a numbered change like any channel write).
        node = Node("[sync]\nchangelog_keep = 5000\n")
        try:
            publish(node)
            assert admin(node, "PUT", BASE + "/channels/beta",
                         {"release": "1.0.0", "allow_device_self_set": True})[0] == 201
            n = 10_500
            device = {"platform": "android", "app_id": APP, "custom_id": "", "version_build": "1.0.0",
                      "version_code": "100", "version_os": "14", "version_name": "1.0.0",
                      "plugin_version": "5.0.0", "is_emulator": False, "is_prod": True, "defaultChannel": ""}
            headers = {"Content-Type": "application/json"}

            def set_channel(i):
                body = dict(device, device_id="0a1b2c3d-1111-4222-8333-%012x" % i, channel="beta")
                return "POST", "/channel_self", json.dumps(body), headers
            counts = flood(node.port, n, set_channel, threads=16)
            assert counts == {200: n}, counts
            st, doc = admin(node, "GET", BASE + "/channels/production/history")
            assert st == 200 and [e["release"] for e in doc["history"]] == ["1.0.1", "1.0.0"], doc
            assert [e["by"] for e in doc["history"]] == ["bootstrap", "bootstrap"], doc
            assert [e["by_kind"] for e in doc["history"]] == ["token", "token"], doc
            st, doc = admin(node, "POST", BASE + "/channels/production/rollback", {})
            assert st == 200 and doc["rolled_back_from"] == "1.0.1" and doc["rolled_back_to"] == "1.0.0", (st, doc)

            # The override list comes a page at a time, in device order, until next is null.
            seen, cursor, pages = [], "", 0
            while True:
                st, doc = admin(node, "GET", BASE + "/devices?limit=1000&cursor=" + cursor)
                assert st == 200 and doc["app_id"] == APP and len(doc["devices"]) <= 1000, (st, doc)
                seen += [d["device_id"] for d in doc["devices"]]
                pages += 1
                if doc["next"] is None:
                    break
                cursor = doc["next"]
            assert pages == 11 and len(seen) == n and seen == sorted(set(seen)), (pages, len(seen))
            st, doc = admin(node, "GET", BASE + "/devices")
            assert len(doc["devices"]) == 100 and doc["next"] == doc["devices"][-1]["device_id"], doc["next"]
            for q in ("limit=0", "limit=1001", "cursor=nope", "page=2"):
                st, doc = admin(node, "GET", BASE + "/devices?" + q)
                assert st == 400 and doc["error"] == "invalid_query_parameters", (q, st, doc)
            node.restart()  # the history is stored, not rebuilt from the changelog
            st, doc = admin(node, "GET", BASE + "/channels/production/history")
            assert [e["release"] for e in doc["history"]] == ["1.0.0", "1.0.1", "1.0.0"], doc
        finally:
            node.stop()
    check("10.5k setChannel overrides: channel history and rollback kept; overrides paged", override_flood)


run(main)
