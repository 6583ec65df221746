#!/usr/bin/env python3
"""Integration test of channel history, rollback and rollout commands (issue #12, items 2-3):
an origin and an edge as real processes, driven through the admin API and bundle-edge-ctl.

Usage: operate_test.py <path-to-bundle-edge>"""
import json
import os
import subprocess
import time

from harness import TMP, Node, admin, check, curl, run, sha, upload

CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")
TOKEN = "operate-sync-secret"
APP = "com.example.operate"
BASE = "/v1/admin/apps/" + APP
DEVICE = {"platform": "android", "device_id": "0a1b2c3d-1111-4222-8333-444455556666", "app_id": APP,
          "version_build": "0.9.0", "version_code": "1", "version_os": "14", "version_name": "builtin",
          "plugin_version": "8.51.23", "is_emulator": False, "is_prod": True, "defaultChannel": ""}


def ctl(node, *args, token=None):
    return subprocess.run([CTL, "--url", node.admin_url, "--token", token or node.token, *args],
                          capture_output=True, text=True, timeout=60)


def updates(node, **fields):
    st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                      json.dumps(dict(DEVICE, **fields)), node.url + "/updates")
    assert st == 200, (st, out)
    return json.loads(out)


def wait_for(what, fn, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def release(node, version):
    data = os.urandom(30_000)
    path = os.path.join(TMP, "zip-" + version)
    open(path, "wb").write(data)
    assert upload(node, path)[0] in (200, 201)
    st, doc = admin(node, "PUT", BASE + "/releases/" + version, {"zip": sha(data)})
    assert st == 201, (st, doc)


def app_with_releases(node, app, versions):
    """A new app with a release per version (one 5 KB zip for all); its admin base path."""
    base = "/v1/admin/apps/" + app
    assert admin(node, "PUT", base, {})[0] == 201
    data = os.urandom(5000)
    path = os.path.join(TMP, "zip-" + app)
    open(path, "wb").write(data)
    assert upload(node, path)[0] in (200, 201)
    for v in versions:
        assert admin(node, "PUT", base + "/releases/" + v, {"zip": sha(data)})[0] == 201
    return base


def dev(n):
    return "0a0b0c0d-3333-4444-8555-%012d" % n


def point(node, version):
    st, doc = admin(node, "PUT", BASE + "/channels/production",
                    {"release": version, "public": True, "disable_auto_update": "none"})
    assert st in (200, 201), (st, doc)


def main():
    origin = Node('[sync]\ntoken = "%s"\n[checkins]\ntimeline_events = 6\n' % TOKEN)
    assert admin(origin, "PUT", BASE, {})[0] == 201
    for v in ("1.0.0", "1.0.1", "1.0.2", "1.0.3"):
        release(origin, v)
    edge = Node('[node]\nrole = "edge"\n[sync]\ntoken = "%s"\n[upstream]\nurl = "%s"\ntoken = "%s"\n'
                'timeout_ms = 3000\nbackoff_max_ms = 500\nstatus_interval_ms = 300\n' % (TOKEN, origin.url, TOKEN))

    def no_history_no_rollback():
        point(origin, "1.0.0")
        st, doc = admin(origin, "POST", BASE + "/channels/production/rollback")
        assert st == 409 and doc["error"] == "no_previous_release", (st, doc)
        st, doc = admin(origin, "POST", BASE + "/channels/nope/rollback")
        assert st == 404, (st, doc)
        st, doc = admin(origin, "POST", BASE + "/channels/production/rollback", {"to": "1.0.1"})
        assert st == 400 and doc["error"] == "invalid_json_body", (st, doc)
        st, doc = admin(origin, "GET", BASE + "/channels/production/frobnicate")
        assert st == 404
    check("rollback with nothing before: 409; bad channel 404; fields 400", no_history_no_rollback)

    def rollback_reaches_the_edge():
        st, tok = admin(origin, "POST", "/v1/admin/tokens", {"name": "ci", "role": "publisher", "apps": [APP]})
        assert st == 201
        r = ctl(origin, "channel", "set", APP, "production", "--release", "1.0.1", token=tok["token"])
        assert r.returncode == 0, r.stderr
        wait_for("1.0.1 on the edge", lambda: updates(edge).get("version") == "1.0.1")
        r = ctl(origin, "channel", "rollback", APP, "production", token=tok["token"])  # a publisher may
        assert r.returncode == 0 and "1.0.1 -> 1.0.0" in r.stdout, (r.stdout, r.stderr)
        assert admin(origin, "GET", BASE + "/channels/production")[1]["release"] == "1.0.0"
        wait_for("the rollback on the edge", lambda: updates(edge).get("version") == "1.0.0")
        st, doc = admin(origin, "GET", BASE + "/channels/production/history")
        h = doc["history"]
        assert [e["release"] for e in h[:3]] == ["1.0.0", "1.0.1", "1.0.0"], h
        assert h[0]["by"] == "ci" and h[1]["by"] == "ci" and h[2]["by"] == "bootstrap", h
        assert all(e["time_ms"] for e in h[:3]) and h[0]["seq"] > h[1]["seq"] > h[2]["seq"]
        r = ctl(origin, "channel", "history", APP, "production")
        assert r.returncode == 0 and "release=1.0.1" in r.stdout and " ci " in r.stdout, r.stdout
    check("rollback restores the previous release on an edge; history names who and when", rollback_reaches_the_edge)

    def rollback_to_a_deleted_release():
        point(origin, "1.0.2")
        assert admin(origin, "DELETE", BASE + "/releases/1.0.0")[0] == 200
        st, doc = admin(origin, "POST", BASE + "/channels/production/rollback")
        assert st == 422 and "1.0.0" in doc["message"], (st, doc)
        assert admin(origin, "GET", BASE + "/channels/production")[1]["release"] == "1.0.2"
    check("rollback to a deleted release: 422 naming it, nothing changed", rollback_to_a_deleted_release)

    def rollout_commands():
        point(origin, "1.0.2")
        r = ctl(origin, "rollout", "start", APP, "production", "--release", "1.0.3", "--percent", "100")
        assert r.returncode == 0 and "1.0.3 to 100.00%" in r.stdout, (r.stdout, r.stderr)
        wait_for("the rollout on the edge", lambda: updates(edge).get("version") == "1.0.3")
        assert ctl(origin, "rollout", "pause", APP, "production").returncode == 0
        wait_for("the pause on the edge", lambda: updates(edge).get("version") == "1.0.2")
        assert ctl(origin, "rollout", "resume", APP, "production").returncode == 0
        wait_for("the resume", lambda: updates(edge).get("version") == "1.0.3")
        assert ctl(origin, "rollout", "set", APP, "production", "--percent", "0").returncode == 0
        wait_for("0%", lambda: updates(edge).get("version") == "1.0.2")
        r = ctl(origin, "rollout", "set", APP, "production", "--percent", "101")
        assert r.returncode == 2 and "--percent" in r.stderr
        assert ctl(origin, "rollout", "promote", APP, "production").returncode == 0
        ch = admin(origin, "GET", BASE + "/channels/production")[1]
        assert ch["release"] == "1.0.3" and not ch.get("rollout"), ch
        wait_for("the promotion", lambda: updates(edge).get("version") == "1.0.3")
        r = ctl(origin, "rollout", "abort", APP, "production")
        assert r.returncode == 1 and "no rollout" in r.stderr, r.stderr
        assert ctl(origin, "rollout", "start", APP, "production", "--release", "1.0.2", "--percent", "50").returncode == 0
        assert ctl(origin, "rollout", "abort", APP, "production").returncode == 0
        assert not admin(origin, "GET", BASE + "/channels/production")[1].get("rollout")
        # Rolling back after the promotion goes to where the channel pointed before it.
        r = ctl(origin, "channel", "rollback", APP, "production", "--as-json")
        assert r.returncode == 0 and json.loads(r.stdout)["rolled_back_to"] == "1.0.2", r.stdout
    check("rollout start/set/pause/resume/promote/abort, each followed by the edge", rollout_commands)

    def builtin_and_viewer():
        r = ctl(origin, "channel", "builtin", APP, "production")
        assert r.returncode == 0, r.stderr
        wait_for("builtin on the edge",
                 lambda: updates(edge, version_name="1.0.2").get("version") == "builtin")
        st, tok = admin(origin, "POST", "/v1/admin/tokens", {"name": "dash", "role": "viewer", "apps": [APP]})
        assert st == 201
        st, _, _ = curl("-H", "Authorization: Bearer " + tok["token"], origin.admin_url + BASE + "/channels/production/history")
        assert st == 200
        r = ctl(origin, "channel", "rollback", APP, "production", token=tok["token"])
        assert r.returncode == 5, (r.returncode, r.stderr)
        st, doc = admin(edge, "POST", BASE + "/channels/production/rollback")
        assert st == 409 and doc["error"] == "edge_node", (st, doc)  # roll back on the origin
    check("channel builtin reverts devices; a viewer reads history but cannot roll back", builtin_and_viewer)

    def fleet_two_tiers():
        edge2 = Node('[node]\nrole = "edge"\n[sync]\ntoken = "%s"\n[upstream]\nurl = "%s"\ntoken = "%s"\n'
                     'timeout_ms = 3000\nbackoff_max_ms = 500\nstatus_interval_ms = 300\n' % (TOKEN, edge.url, TOKEN))
        try:
            wait_for("edge2 ready", lambda: curl(edge2.url + "/readyz")[0] == 200)
            st, _, out = curl(edge2.url + "/v1/blobs/" + "0" * 64)  # a miss on edge2 (404: no release names it)
            seq = admin(origin, "GET", BASE + "/channels/production")[1] and int(
                origin.metrics().get("edge_sync_cursor_seq", 0))

            def fleet():
                st, doc = admin(origin, "GET", "/v1/admin/fleet")
                assert st == 200, (st, doc)
                return {n["node_id"]: n for n in doc["nodes"]}, doc["self"]
            wait_for("both edges in the origin's fleet view", lambda: len(fleet()[0]) == 2, timeout=15)
            nodes, me = fleet()
            assert me["role"] == "origin" and me["cursor_seq"] == seq, me
            e1 = [n for n in nodes.values() if n["via"] is None]
            e2 = [n for n in nodes.values() if n["via"] is not None]
            assert len(e1) == 1 and len(e2) == 1 and e2[0]["via"] == e1[0]["node_id"], nodes
            for n in nodes.values():
                assert n["role"] == "edge" and n["age_s"] <= 5 and "hit_ratio" in n and "cache_bytes" in n, n
            wait_for("edge2 at the origin's cursor", lambda: fleet()[0][e2[0]["node_id"]]["cursor_seq"] == seq)
            assert e2[0]["upstream"] == edge.url and e1[0]["upstream"] == origin.url
            r = ctl(origin, "fleet")
            assert r.returncode == 0 and e2[0]["node_id"] in r.stdout and "via " + e1[0]["node_id"] in r.stdout, r.stdout
            # A report that is not one is 400 and changes nothing.
            st, _, out = curl("-X", "POST", "-H", "Authorization: Bearer " + TOKEN, "--data-binary",
                              '{"nodes":[{"node_id":"x y"}]}', origin.url + "/v1/sync/status")
            assert st == 400 and b"node_id" in out, (st, out)
            assert len(fleet()[0]) == 2
        finally:
            edge2.stop()
    check("fleet: the origin sees a two-tier tree with cursors, outboxes and hit ratios", fleet_two_tiers)

    def device_index():
        app = "com.example.devices"
        base = app_with_releases(origin, app, ("2.0.0", "2.0.1"))
        assert admin(origin, "PUT", base + "/channels/production", {"release": "2.0.1", "public": True})[0] in (200, 201)
        assert admin(origin, "PUT", base + "/channels/beta", {"release": "2.0.1", "allow_device_self_set": True})[0] in (200, 201)
        # 10k devices: even ones on iOS, every third on 2.0.0, every 7th pinned to beta.
        ids = ["%08x-1111-4222-8333-%012d" % (n, n) for n in range(10_000)]
        t0 = int(time.time() * 1000)
        for start in range(0, len(ids), 500):
            batch = [dict(DEVICE, app_id=app, device_id=d, action="set",
                          platform="ios" if n % 2 == 0 else "android",
                          version_name="2.0.0" if n % 3 == 0 else "2.0.1")
                     for n, d in enumerate(ids[start:start + 500], start)]
            st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-",
                              origin.url + "/stats", data=json.dumps(batch).encode())
            assert st == 200, (st, out[:300])
        for n in range(0, 10_000, 7):
            assert admin(origin, "PUT", base + "/devices/" + ids[n], {"channel": "beta"})[0] in (200, 201)

        def page_all(query):
            seen, cursor = [], None
            while True:
                q = query + ("&cursor=" + cursor if cursor else "")
                st, doc = admin(origin, "GET", base + "/device_index?" + q)
                assert st == 200, (st, doc)
                seen += doc["devices"]
                cursor = doc["next"]
                if not cursor:
                    return seen
        wait_for("10k devices indexed", lambda: len(page_all("limit=1000")) == 10_000, timeout=30)
        every = page_all("limit=1000")
        assert [d["device_id"] for d in every] == sorted(ids), "paging is exact and ordered"
        ios = page_all("platform=ios&limit=333")
        assert len(ios) == 5000 and all(d["platform"] == "ios" for d in ios)
        old = page_all("release=2.0.0&limit=1000")
        assert len(old) == len([n for n in range(10_000) if n % 3 == 0])
        beta = page_all("channel=beta&limit=1000")
        assert len(beta) == len(range(0, 10_000, 7)) and all(
            d["channel_reason"] == "override" and d["override"] == "beta" for d in beta), beta[:2]
        prod = page_all("channel=production&platform=android&limit=1000")
        assert len(prod) == len([n for n in range(10_000) if n % 2 == 1 and n % 7 != 0])
        assert all(d["channel_reason"] == "public" for d in prod)
        assert page_all("seen_since=%d" % (int(time.time() * 1000) + 60_000)) == []
        assert len(page_all("seen_since=%d&limit=1000" % (t0 - 60_000))) == 10_000
        d = every[42]
        assert d["release"] in ("2.0.0", "2.0.1") and d["native_version"] == "0.9.0" and d["last_action"] == "set"
        for q, name in (("platform=windows", "platform"), ("limit=0", "limit"), ("limit=x", "limit"),
                        ("channel=nope", "channel"), ("seen_since=-1", "seen_since"), ("sort=id", "sort")):
            st, doc = admin(origin, "GET", base + "/device_index?" + q)
            assert st == 400 and doc["error"] == "invalid_query_parameters" and name in doc["message"], (q, st, doc)
        r = ctl(origin, "devices", "list", app, "--channel", "beta", "--all", "--as-json")
        assert r.returncode == 0 and len(json.loads(r.stdout)["devices"]) == len(beta), r.stderr
        r = ctl(origin, "devices", "list", app, "--platform", "ios", "--limit", "3")
        assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 3 and "--cursor" in r.stderr, (r.stdout, r.stderr)
    check("device index: 10k devices, filters and cursor paging exact, bad parameters 400", device_index)

    def analytics_and_timelines():
        app = "com.example.analytics"
        base = app_with_releases(origin, app, ("3.0.0", "3.0.1"))
        assert admin(origin, "PUT", base + "/channels/production",
                     {"release": "3.0.0", "public": True, "disable_auto_update": "none",
                      "rollout": {"release": "3.0.1", "bps": 5000, "enabled": True}})[0] in (200, 201)
        assert admin(origin, "PUT", base + "/channels/beta",
                     {"release": "3.0.1", "allow_device_self_set": True, "disable_auto_update": "none"})[0] in (200, 201)
        ids = ["%08x-2222-4333-8444-%012d" % (n, n) for n in range(20)]

        def send(node, endpoint, n, **fields):
            body = dict(dict(DEVICE, app_id=app, device_id=ids[n], custom_id="user-%d" % n,
                             defaultChannel="beta" if n % 4 == 0 else "", version_name="3.0.0"), **fields)
            st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                              json.dumps(body), node.url + endpoint)
            assert st == 200, (st, out)
            return json.loads(out)
        wait_for("the app on the edge", lambda: admin(edge, "GET", base + "/channels/beta")[0] == 200)
        for n in range(20):  # through the edge: the origin gets them with its outbox
            send(edge, "/updates", n)
        for n in range(6):
            send(edge, "/stats", n, action="download_0", version_name="3.0.1")
            send(edge, "/stats", n, action="set", version_name="3.0.1")
        for n in (6, 7):
            send(edge, "/stats", n, action="download_fail", version_name="3.0.1")
        def today():
            st, doc = admin(origin, "GET", base + "/stats")
            assert st == 200, (st, doc)
            return doc
        # The edge's check-ins on the origin first, so the origin's own come after them.
        wait_for("the edge's check-ins on the origin",
                 lambda: today()["days"] and today()["days"][-1]["checkins"] == 20 + 12 + 2, timeout=20)
        send(origin, "/stats", 8, action="checksum_fail", version_name="3.0.1")
        for k in range(8):  # more events than the timeline keeps (6)
            send(origin, "/stats", 19, action="app_moved_to_foreground" if k % 2 else "app_moved_to_background")
        wait_for("every check-in on the origin",
                 lambda: today()["days"] and today()["days"][-1]["checkins"] == 20 + 12 + 2 + 1 + 8, timeout=20)
        doc = today()
        day = doc["days"][-1]
        assert day["devices"] == 20, day
        assert day["installs"] == {"3.0.1": 6}, day
        assert day["platforms"] == {"android": 43}, day
        assert day["devices_by_release"]["3.0.1"] == 6 and day["devices_by_release"]["3.0.0"] == 20, day
        rel = {r["release"]: r for r in doc["releases"]}["3.0.1"]
        assert rel["installs"] == 6 and rel["failures"] == 3 and rel["downloads_started"] == 6, rel
        assert rel["failure_rate_bps"] == 3 * 10000 // 9, rel
        assert rel["failures_by_action"] == {"download_fail": 2, "checksum_fail": 1}, rel
        (ro,) = doc["rollouts"]
        assert ro["channel"] == "production" and ro["release"] == "3.0.1" and ro["percent"] == 50, ro
        assert ro["days"][-1]["rollout_release_devices"] == 6 and ro["days"][-1]["channel_release_devices"] == 20, ro
        # Hourly: the same check-ins, by hour; a time range reads just its buckets.
        st, hourly = admin(origin, "GET", base + "/stats?resolution=hour")
        assert st == 200 and sum(h["checkins"] for h in hourly["hours"]) == 43, hourly
        assert hourly["days"][-1]["devices"] == 20
        st, none = admin(origin, "GET", base + "/stats?from=2020-01-01&to=2020-01-31")
        assert st == 200 and none["days"] == [] and none["releases"] == [], none
        for q, name in (("from=2026-13-01", "from"), ("to=yesterday", "to"), ("resolution=week", "resolution"),
                        ("from=2026-02-30", "from"), ("from=2026-12-02&to=2026-12-01", "from"),
                        ("from=2020-01-01&to=2026-01-01", "from"), ("from=2026-01-01T00&resolution=hour", "from"),
                        ("app=x", "app")):
            st, err = admin(origin, "GET", base + "/stats?" + q)
            assert st == 400 and err["error"] == "invalid_query_parameters" and name in err["message"], (q, st, err)
        # The device index carries what the devices last sent; defaultChannel resolves.
        st, idx = admin(origin, "GET", base + "/device_index?custom_id=user-1&limit=100")
        assert st == 200 and sorted(d["custom_id"] for d in idx["devices"]) == sorted(
            ["user-1"] + ["user-1%d" % k for k in range(10)]), idx
        st, idx = admin(origin, "GET", base + "/device_index?channel=beta&limit=100")
        assert st == 200 and len(idx["devices"]) == 5 and all(
            d["channel_reason"] == "defaultChannel" and d["default_channel"] == "beta" for d in idx["devices"]), idx
        assert idx["devices"][0]["plugin_version"] == "8.51.23", idx["devices"][0]
        st, err = admin(origin, "GET", base + "/device_index?custom_id=" + "x" * 37)
        assert st == 400 and "custom_id" in err["message"], err
        # A device's timeline: its last events, newest first, bounded.
        st, dev = admin(origin, "GET", base + "/devices/" + ids[19])
        assert st == 200 and len(dev["timeline"]) == 6, dev
        assert dev["timeline"][0]["action"] == "app_moved_to_foreground", dev["timeline"][:2]
        assert dev["timeline"][-1]["action"] == "app_moved_to_background"
        st, dev = admin(origin, "GET", base + "/devices/" + ids[0])
        assert [e["action"] for e in dev["timeline"]] == ["set", "download_0", "updates"], dev
        assert dev["timeline"][0]["version_name"] == "3.0.1" and dev["last_checkin"]["custom_id"] == "user-0"
        # The CLI: a table, JSON, the timeline.
        r = ctl(origin, "stats", app)
        assert r.returncode == 0 and "fail rate" in r.stdout and "33.3%" in r.stdout and \
            "rollout on production: 3.0.1 at 50%" in r.stdout, (r.stdout, r.stderr)
        r = ctl(origin, "stats", app, "--hourly", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["resolution"] == "hour", r.stderr
        r = ctl(origin, "stats", app, "--from", "2026-13-01")
        assert r.returncode != 0 and "from" in r.stderr, (r.returncode, r.stderr)
        r = ctl(origin, "devices", "show", app, ids[0])
        assert r.returncode == 0 and "custom id user-0" in r.stdout and r.stdout.count(" UTC ") == 3, r.stdout
        r = ctl(origin, "devices", "list", app, "--custom-id", "user-2", "--as-json")
        assert r.returncode == 0 and len(json.loads(r.stdout)["devices"]) == 1, r.stdout
        # A number outside a double's range is refused, not stored (it would come back as
        # `Infinity`, which is not JSON): on a device body and on a fleet report.
        raw = json.dumps(dict(DEVICE, app_id=app, device_id=ids[3], action="set")).replace('"is_prod": true', '"is_prod": true, "n": 1e999')
        st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary", raw,
                          origin.url + "/stats")
        assert st == 400 and b"invalid_json_parse_body" in out, (st, out)
        st, _, out = curl("-X", "POST", "-H", "Authorization: Bearer " + TOKEN, "-H", "Content-Type: application/json",
                          "--data-binary", '{"nodes":[{"node_id":"edge-x","hit_ratio":1e999}]}',
                          origin.url + "/v1/sync/status")
        assert st == 400, (st, out)
        # "Test as a device": the answer /updates would give and why, nothing recorded.
        before = today()["days"][-1]["checkins"]
        probe = {k: v for k, v in DEVICE.items() if k != "app_id"}  # the path names the app
        outcomes = set()
        for n in range(20):
            st, doc = admin(origin, "POST", base + "/decide",
                            dict(probe, device_id=ids[n], version_name="3.0.0", defaultChannel=""))
            assert st == 200 and doc["status"] == 200, (st, doc)
            why = doc["why"]
            assert why["channel"] == "production" and why["channel_reason"] == "public", why
            assert why["rollout"]["release"] == "3.0.1" and why["rollout"]["percent"] == 50, why
            # In the rollout: 3.0.1; out of it: 3.0.0, which the device runs already.
            assert (doc["answer"].get("version") == "3.0.1") == why["rollout"]["selected"], doc
            assert why["kind"] == ("update" if why["rollout"]["selected"] else "up_to_date"), doc
            outcomes.add(why["rollout"]["selected"])
        assert outcomes == {True, False}, "20 devices at 50%: some in, some out"
        st, doc = admin(origin, "POST", base + "/decide", dict(probe, device_id=ids[0], app_id=app, defaultChannel="beta"))
        assert st == 200 and doc["why"]["channel_reason"] == "defaultChannel" and doc["answer"]["version"] == "3.0.1", doc
        st, tok = admin(origin, "POST", "/v1/admin/tokens", {"name": "analyst", "role": "viewer", "apps": [app]})
        assert st == 201
        st, _, out = curl("-X", "POST", "-H", "Authorization: Bearer " + tok["token"], "-H",
                          "Content-Type: application/json", "--data-binary", json.dumps(dict(probe, device_id=ids[1])),
                          origin.admin_url + base + "/decide")
        assert st == 200, ("a viewer may test a device", st, out)
        for body, want in ((dict(probe, device_id="nope"), 400), (dict(DEVICE, app_id="com.other"), 400)):
            st, doc = admin(origin, "POST", base + "/decide", body)
            assert st == want, (body, st, doc)
        assert admin(origin, "POST", "/v1/admin/apps/com.no.such/decide", probe)[0] == 404
        assert admin(origin, "GET", base + "/decide")[0] == 405
        r = ctl(origin, "device", "test", app, ids[0], "--version-name", "3.0.0", "--version-build", "0.9.0",
                "--default-channel", "beta")
        assert r.returncode == 0 and "channel: beta (defaultChannel)" in r.stdout and "-> 3.0.1" in r.stdout, r.stdout
        time.sleep(0.3)
        assert today()["days"][-1]["checkins"] == before, "a dry run records no check-in"
        audit = admin(origin, "GET", "/v1/admin/audit?limit=1000")[1]["records"]
        assert not [a for a in audit if a["path"].endswith("/decide")], "nor an audit record"
        m = origin.metrics()
        assert m["edge_device_table_devices"] >= 10_020 and m["edge_device_table_bytes"] > 0, m.get("edge_device_table_devices")
    check("analytics: hourly buckets, devices per day and release, failure rates, rollout progress, "
          "time ranges (bad ones 400); device timelines and the new index fields", analytics_and_timelines)

    def privacy_settings():
        app = "com.example.private"
        base = app_with_releases(origin, app, ["1.0.0"])
        st, doc = admin(origin, "PUT", base + "/channels/production",
                        {"release": "1.0.0", "public": True, "disable_auto_update": "none"})
        assert st == 201, (st, doc)
        st, doc = admin(origin, "PUT", base, {"stats_mode": "billingOnly",
                                              "device_data_collection": {"platform": False}})
        assert st in (200, 201) and doc["stats_mode"] == "billingOnly", (st, doc)
        assert doc["device_data_collection"]["platform"] is False, doc
        st, doc = admin(origin, "PUT", base, {"stats_mode": "some"})
        assert st == 400 and "stats_mode" in doc["message"], (st, doc)
        # Through the edge: the dropped event is answered as recorded and never travels.
        def edge_has_settings():
            st, doc = admin(edge, "GET", base)
            return st == 200 and doc.get("stats_mode") == "billingOnly"
        wait_for("the settings on the edge", edge_has_settings)
        assert updates(edge, app_id=app, device_id=dev(1)).get("version") == "1.0.0"
        for action in ("app_moved_to_foreground", "download_10", "set"):
            st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                              json.dumps(dict(DEVICE, app_id=app, device_id=dev(1), action=action,
                                              version_name="1.0.0", custom_id="patient-42")),
                              edge.url + "/stats")
            assert st == 200 and json.loads(out)["status"] == "ok", (action, st, out)

        def timeline():
            st, doc = admin(origin, "GET", base + "/devices/" + dev(1))
            return doc.get("timeline") if st == 200 else None
        wait_for("the kept events at the origin", lambda: timeline() and timeline()[0]["action"] == "set")
        tl = timeline()
        assert [e["action"] for e in tl] == ["set", "updates"], tl
        assert all(e["platform"] == "" and e["custom_id"] == "" for e in tl), tl
        # Back to everything: later events keep every field.
        st, doc = admin(origin, "PUT", base, {"stats_mode": "all"})
        assert st == 200 and "device_data_collection" not in doc and "stats_mode" not in doc, (st, doc)
        # The CLI: the same settings, other fields kept.
        r = ctl(origin, "app", "privacy", app, "--stats-mode", "updatesOnly", "--no-collect", "custom_id,platform")
        assert r.returncode == 0 and "stats_mode updatesOnly" in r.stdout and "platform, custom_id" in r.stdout, r
        doc = admin(origin, "GET", base)[1]
        assert doc["stats_mode"] == "updatesOnly" and doc["device_data_collection"]["custom_id"] is False, doc
        r = ctl(origin, "app", "privacy", app, "--no-collect", "ip")
        assert r.returncode == 2 and "unknown device field 'ip'" in r.stderr, r
        r = ctl(origin, "app", "privacy", app, "--stats-mode", "all", "--collect", "all")
        assert r.returncode == 0 and "device fields not stored: none" in r.stdout, r
        wait_for("the edge keeps everything again", lambda: updates(edge, app_id=app, device_id=dev(1)) and
                 timeline()[0]["platform"] == "android", timeout=10)
    check("privacy: stats_mode and device_data_collection applied where a check-in is first recorded "
          "(an edge), dropped events answered ok and never sent upstream", privacy_settings)

    def auto_pause():
        point(origin, "1.0.2")
        r = ctl(origin, "rollout", "start", APP, "production", "--release", "1.0.3", "--percent", "100")
        assert r.returncode == 0, r.stderr
        r = ctl(origin, "rollout", "auto-pause", APP, "production", "--failure-rate", "50", "--window", "10",
                "--min-attempts", "4")
        assert r.returncode == 0 and "50.00% of at least 4 devices" in r.stdout, (r.stdout, r.stderr)
        wait_for("the rollout on the edge", lambda: updates(edge).get("version") == "1.0.3")

        offered = set()

        def stats(node, n, action):
            dev = "0a1b2c3d-1111-4222-8333-%012d" % n
            if dev not in offered:  # only devices offered the release count
                assert updates(node, device_id=dev).get("version") == "1.0.3"
                offered.add(dev)
            st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                              json.dumps(dict(DEVICE, device_id=dev, action=action, version_name="1.0.3")),
                              node.url + "/stats")
            assert st == 200, (st, out)
        # Through the edge: its check-ins reach the origin with its outbox.
        for n in range(4):
            stats(edge, n, "download_0")
        stats(edge, 0, "download_fail")
        stats(edge, 0, "download_fail")  # one device failing twice counts once
        time.sleep(2.5)
        ro = admin(origin, "GET", BASE + "/channels/production")[1]["rollout"]
        assert not ro["paused"], ("1 of 4 devices failed: under 50%", ro)
        stats(edge, 1, "checksum_fail")  # 2 of 4: the threshold
        wait_for("the auto-pause on the origin",
                 lambda: admin(origin, "GET", BASE + "/channels/production")[1]["rollout"]["paused"], timeout=20)
        ro = admin(origin, "GET", BASE + "/channels/production")[1]["rollout"]
        assert "2 of 4 devices" in ro["pause_reason"], ro
        wait_for("the edge to stop the rollout", lambda: updates(edge).get("version") == "1.0.2")
        audit, after = [], 0
        while True:  # every record, a page at a time
            page = admin(origin, "GET", "/v1/admin/audit?limit=1000&after=%d" % after)[1]["records"]
            if not page:
                break
            audit += page
            after = page[-1]["n"]
        assert [r for r in audit if r["token"] == "auto-pause" and r["status"] == 200 and r["change_seq"] > 0
                and r["actor_kind"] == "system"], audit[-3:]
        assert all(r["actor_kind"] == "token" for r in audit if r["token"] != "auto-pause"), audit[-3:]

        # Counts survive a restart mid-window: resume with a higher floor, restart, and the
        # devices counted before the restart still count.
        r = ctl(origin, "rollout", "auto-pause", APP, "production", "--failure-rate", "50", "--window", "10",
                "--min-attempts", "6")
        assert r.returncode == 0
        assert ctl(origin, "rollout", "resume", APP, "production").returncode == 0
        time.sleep(1.5)
        assert not admin(origin, "GET", BASE + "/channels/production")[1]["rollout"]["paused"]
        origin.restart()
        stats(origin, 4, "download_0")
        time.sleep(2)
        assert not admin(origin, "GET", BASE + "/channels/production")[1]["rollout"]["paused"], "5 < 6 devices"
        stats(origin, 5, "unzip_fail")  # 6 devices tried, 3 failed: 50%
        wait_for("the auto-pause after a restart",
                 lambda: admin(origin, "GET", BASE + "/channels/production")[1]["rollout"]["paused"], timeout=20)
        reason = admin(origin, "GET", BASE + "/channels/production")[1]["rollout"]["pause_reason"]
        assert "3 of 6 devices" in reason and "rests on 3 distinct failing devices" in reason, reason
        # Bad rules: 400 naming the field.
        ch = admin(origin, "GET", BASE + "/channels/production")[1]
        ch.pop("name")
        ch["rollout"]["pause_reason"] = "x" * 513
        st, doc = admin(origin, "PUT", BASE + "/channels/production", ch)
        assert st == 400 and "rollout.pause_reason" in doc["message"], (st, doc)
        for bad in ({"failure_rate_bps": 0, "window_minutes": 5, "min_attempts": 1},
                    {"failure_rate_bps": 100, "window_minutes": 2000, "min_attempts": 1},
                    {"failure_rate_bps": 100, "window_minutes": 5}):
            ch = admin(origin, "GET", BASE + "/channels/production")[1]
            ch.pop("name")
            ch["auto_pause"] = bad
            st, doc = admin(origin, "PUT", BASE + "/channels/production", ch)
            assert st == 400 and "auto_pause." in doc["message"], (bad, st, doc)
    check("auto-pause: a rollout failing on too many devices pauses on the origin and the edge, "
          "counts survive a restart", auto_pause)

    def auto_pause_forged():
        app = "com.example.forged"
        base = app_with_releases(origin, app, ["1.0.0", "2.0.0"])
        st, doc = admin(origin, "PUT", base + "/channels/production",
                        {"release": "1.0.0", "public": True, "disable_auto_update": "none"})
        assert st == 201, (st, doc)
        assert ctl(origin, "rollout", "start", app, "production", "--release", "2.0.0",
                   "--percent", "20").returncode == 0
        assert ctl(origin, "rollout", "auto-pause", app, "production", "--failure-rate", "20",
                   "--window", "10", "--min-attempts", "5").returncode == 0
        wait_for("the rollout watched", lambda: origin.metrics().get("edge_auto_pause_rollouts", 0) >= 1)

        def post_stats(events):
            st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                              json.dumps(events), origin.url + "/stats")
            assert st == 200, (st, out)

        def ev(dev, action, version):
            return dict(DEVICE, app_id=app, device_id=dev, action=action, version_name=version)
        # 200 forged failures from never-seen ids (most outside the rollout's 20%): no pause.
        forged = ["0f0f0f0f-2222-4333-8444-%012d" % i for i in range(200)]
        post_stats([ev(d, "download_0", "2.0.0") for d in forged[:100]])
        post_stats([ev(d, "download_0", "2.0.0") for d in forged[100:]])
        post_stats([ev(d, "download_fail", "2.0.0") for d in forged[:100]])
        post_stats([ev(d, "download_fail", "2.0.0") for d in forged[100:]])
        time.sleep(2.5)
        ro = admin(origin, "GET", base + "/channels/production")[1]["rollout"]
        assert not ro["paused"], ("forged failures of devices never offered the release", ro)
        # Names that are no watched release keep no auto-pause state, however many.
        held = origin.metrics()["edge_auto_pause_devices"]
        for k in range(3):
            post_stats([ev("0e0e0e0e-2222-4333-8444-%012d" % (k * 100 + i),
                           "download_fail", "unknown:%s" % os.urandom(8).hex()) for i in range(100)])
            post_stats([ev("0e0e0e0e-2222-4333-8444-%012d" % (k * 100 + i),
                           "download_fail", os.urandom(6).hex()) for i in range(100)])
        time.sleep(1)
        assert origin.metrics()["edge_auto_pause_devices"] == held, (held, origin.metrics()["edge_auto_pause_devices"])
        # Real devices: offered 2.0.0 by the rollout, then failing with it: a pause that says
        # how many distinct devices it rests on.
        chosen = []
        for i in range(400):
            dev = "0d0d0d0d-2222-4333-8444-%012d" % i
            if updates(origin, app_id=app, device_id=dev, version_name="1.0.0").get("version") == "2.0.0":
                chosen.append(dev)
            if len(chosen) == 6:
                break
        assert len(chosen) == 6, chosen
        post_stats([ev(d, "download_0", "2.0.0") for d in chosen])
        post_stats([ev(d, "download_fail", "2.0.0") for d in chosen[:2]])
        wait_for("the auto-pause of real failures",
                 lambda: admin(origin, "GET", base + "/channels/production")[1]["rollout"]["paused"], timeout=20)
        reason = admin(origin, "GET", base + "/channels/production")[1]["rollout"]["pause_reason"]
        assert "2 of 6 devices" in reason and "rests on 2 distinct failing devices" in reason, reason
        # The rollout ends: its devices are forgotten.
        assert ctl(origin, "rollout", "abort", app, "production").returncode == 0
        wait_for("the state pruned", lambda: origin.metrics()["edge_auto_pause_devices"] <= held, timeout=5)
    check("auto-pause: forged failures of devices never offered the release do not pause; any "
          "other name keeps no state; the reason counts distinct devices; state goes with the rollout",
          auto_pause_forged)

    def future_relayed_checkin():
        # A child's check-in dated ten years ahead is taken as made at receipt (+ a minute).
        dev = "0c0c0c0c-2222-4333-8444-000000000001"
        ahead = int(time.time() * 1000) + 10 * 365 * 86_400_000
        batch = {"checkins": [{"app_id": APP, "device_id": dev, "platform": "ios", "version_name": "1.0.3",
                               "version_build": "1.0.3", "action": "download_fail", "decision": "",
                               "time_ms": ahead}]}
        st, _, out = curl("-X", "POST", "-H", "Authorization: Bearer " + TOKEN, "-H", "Content-Type: application/json",
                          "-H", "Idempotency-Key: future-child:1:1", "--data-binary", json.dumps(batch),
                          origin.url + "/v1/checkins")
        assert st == 200, (st, out)
        now = int(time.time() * 1000)

        def stored():
            st, doc = admin(origin, "GET", BASE + "/devices/" + dev)
            return doc["timeline"] if st == 200 and doc.get("timeline") else None
        wait_for("the relayed check-in", stored)
        t = stored()[0]["time_ms"]
        assert now - 60_000 <= t <= now + 61_000, (t, now)
    check("a relayed check-in dated years ahead is clamped to the receipt time plus a minute",
          future_relayed_checkin)

    def plugins_and_reach():
        # A scripted fleet of six devices on two channels, one of them delta-only (manifest
        # only): the plugins route counts devices per plugin major.minor and flags, by full
        # version, the ones the delta channel strands; the reach route counts each channel's
        # population, who runs its release, and per release the installs, downloads and
        # failures reported.
        app = "com.example.reach"
        base = app_with_releases(origin, app, ["1.0.0", "1.0.1"])
        for name, doc in (("production", {"release": "1.0.1", "public": True, "disable_auto_update": "none"}),
                          ("beta", {"release": "1.0.1", "allow_device_self_set": True, "update_package": "delta",
                                    "disable_auto_update": "none"})):
            st, doc = admin(origin, "PUT", base + "/channels/" + name, doc)
            assert st == 201, (st, doc)
        st, doc = admin(origin, "GET", base + "/plugins")
        assert st == 200 and doc["devices"] == 0 and doc["versions"] == [] and doc["complete"], doc
        assert doc["rules"] == [{"rule": "manifest", "needs": "5.10.0 / 6.25.0 / 7.0.35 / 8.0.0 or later",
                                 "channels": ["beta"], "channel_count": 1}], doc
        fleet = [(1, "5.2.0", ""), (2, "6.30.0", ""), (3, "7.0.10", "beta"), (4, "8.52.0", "beta"),
                 (5, "8.52.1", ""), (6, "7.0.40", "")]
        for n, plugin, channel in fleet:
            updates(origin, app_id=app, device_id=dev(100 + n), plugin_version=plugin, defaultChannel=channel)

        def event(n, action, version):
            plugin, channel = fleet[n - 1][1], fleet[n - 1][2]
            st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                              json.dumps(dict(DEVICE, app_id=app, device_id=dev(100 + n), action=action,
                                              version_name=version, plugin_version=plugin,
                                              defaultChannel=channel)), origin.url + "/stats")
            assert st == 200 and json.loads(out)["status"] == "ok", (action, st, out)
        for n in (1, 2):
            event(n, "set", "1.0.1")
        event(4, "download_complete", "1.0.1")
        event(4, "set", "1.0.1")
        event(5, "download_fail", "1.0.1")

        def reach():
            st, doc = admin(origin, "GET", base + "/reach")
            assert st == 200, (st, doc)
            return doc
        wait_for("the fleet's events in the reach figures",
                 lambda: {r["release"]: r for r in reach()["releases"]}.get("1.0.1", {}).get("failures") == 1)
        st, doc = admin(origin, "GET", base + "/plugins")
        assert st == 200 and doc["devices"] == 6 and doc["complete"], doc
        rows = {v["version"]: v for v in doc["versions"]}
        assert [v["version"] for v in doc["versions"]] == ["8.52", "7.0", "6.30", "5.2"], doc
        assert {k: v["devices"] for k, v in rows.items()} == {"8.52": 2, "7.0": 2, "6.30": 1, "5.2": 1}, rows
        assert {k: v["flagged"] for k, v in rows.items()} == {"8.52": 0, "7.0": 1, "6.30": 0, "5.2": 1}, rows
        flag = rows["7.0"]["flags"]
        assert len(flag) == 1 and flag[0]["rule"] == "manifest" and flag[0]["devices"] == 1, flag
        assert flag[0]["channels"] == ["beta"], flag
        assert rows["8.52"]["flags"] == [] and rows["6.30"]["flags"] == [], rows

        doc = reach()
        assert doc["devices"] == 6 and doc["complete"], doc
        chans = {c["channel"]: c for c in doc["channels"]}
        # production: devices 1, 2, 5, 6 (1 and 2 run 1.0.1); beta: 3 and 4 (4 runs it).
        assert (chans["production"]["devices"], chans["production"]["on_release"]) == (4, 2), chans
        assert (chans["beta"]["devices"], chans["beta"]["on_release"]) == (2, 1), chans
        rel = {r["release"]: r for r in doc["releases"]}
        assert rel["1.0.1"] == {"release": "1.0.1", "running": 3, "checked_in_today": 3, "downloads": 1,
                                "installs": 3, "failures": 1}, rel
        # A device on its builtin bundle reports its native version, counted as builtin:
        # three still run it; all six ran it today before three installed 1.0.1.
        assert (rel["builtin"]["running"], rel["builtin"]["checked_in_today"]) == (3, 6), rel
        assert "0.9.0" not in rel, rel
        # Only GET; an unknown app is 404; a viewer of the app reads both.
        assert admin(origin, "POST", base + "/plugins", {})[0] == 405
        assert admin(origin, "GET", "/v1/admin/apps/com.example.nope/reach")[0] == 404
        st, viewer = admin(origin, "POST", "/v1/admin/tokens", {"name": "reach-viewer", "role": "viewer", "apps": [app]})
        assert st == 201, (st, viewer)
        for route in ("/plugins", "/reach"):
            st, _, out = curl("-H", "Authorization: Bearer " + viewer["token"], origin.admin_url + base + route)
            assert st == 200 and json.loads(out)["devices"] == 6, (route, st, out)
    check("plugins and reach: plugin versions per major.minor flagged against a delta-only channel, "
          "channel populations and release reach exact for a scripted fleet", plugins_and_reach)

    edge.stop()
    origin.stop()


run(main)
