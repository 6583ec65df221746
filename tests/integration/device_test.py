#!/usr/bin/env python3
"""Integration test of the current plugin's protocol (issue #10, capgo-protocol.md §9): the
builtin revert, version rows without files, each update_package, the publish-time checks
(admin API and bundle-edge-ctl), the /channel_self and /stats validation, stats currency and
Retry-After. The real binary on 127.0.0.1, port 0, stopped by its pid.

Usage: device_test.py <path-to-bundle-edge>"""
import gzip
import json
import os
import subprocess
import sys
import time

from harness import run, TMP, Node, check, curl, header, raw, sha, upload

APP = "com.example.proto"
ADMIN_APP = "/v1/admin/apps/" + APP
CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")
DEV = "0a1b2c3d-1111-4222-8333-444455556666"
INFO = {"platform": "android", "device_id": DEV, "app_id": APP, "custom_id": "", "version_build": "1.0.0",
        "version_code": "100", "version_os": "14", "version_name": "1.0.0", "plugin_version": "8.51.23",
        "is_emulator": False, "is_prod": True, "install_source": "google_play", "defaultChannel": ""}


def main():
    node = Node("")

    def admin(method, path, body=None):
        args = ["-X", method, "-H", "Authorization: Bearer " + node.token]
        if body is not None:
            # From a file: a release of a thousand files is past the limit of one argument.
            body_path = os.path.join(TMP, "admin-body.json")
            open(body_path, "w").write(json.dumps(body))
            args += ["-H", "Content-Type: application/json", "--data-binary", "@" + body_path]
        st, _, out = curl(*args, node.admin_url + path)
        return st, (json.loads(out) if out else None)

    def device(path, body, method="POST", query=None):
        url = node.url + path + ("?" + query if query is not None else "")
        args = ["-X", method]
        if body is not None:
            args += ["--data-binary", json.dumps(body)]
        st, headers, out = curl(*args, url)
        return st, json.loads(out), headers

    def updates(**fields):
        st, doc, _ = device("/updates", dict(INFO, **fields))
        assert st == 200, (st, doc)
        return doc

    def blob(data, name):
        path = os.path.join(TMP, name)
        open(path, "wb").write(data)
        st, _, _ = upload(node, path)
        assert st in (200, 201), st
        return sha(data)

    def channel(**fields):
        body = {"public": True, "disable_auto_update": "none", "disable_auto_update_under_native": False}
        body.update(fields)
        st, doc = admin("PUT", ADMIN_APP + "/channels/production", body)
        assert st in (200, 201), (st, doc)

    assert admin("PUT", ADMIN_APP, {})[0] == 201
    zip_bytes = os.urandom(50_000)
    zip_id = blob(zip_bytes, "bundle.zip")
    js = os.urandom(20_000)
    js_id = blob(js, "app.js")
    manifest = [{"file_name": "app.js", "file_hash": sha(js), "blob": js_id}]
    st, doc = admin("PUT", ADMIN_APP + "/releases/1.0.1", {"zip": zip_id, "manifest": manifest})
    assert st == 201 and doc["checksum"] == zip_id, doc

    def t_builtin_revert():
        channel(release=None)  # the channel points at the store build
        doc = updates(version_name="1.0.1")  # an OTA bundle
        assert doc == {"version": "builtin"}, doc  # no error, no kind: the plugin resets (§9.1)
        for name in ("builtin", "1.0.0"):
            doc = updates(version_name=name)
            assert doc["error"] == "already_on_builtin" and doc["kind"] == "up_to_date", (name, doc)
        doc = updates(version_name="1.0.1", plugin_version="6.1.0")
        assert doc["error"] == "revert_to_builtin_plugin_version_too_old" and doc["kind"] == "failed", doc

    def t_version_row():
        # A version without files (published before its files, or one devices report).
        st, doc = admin("PUT", ADMIN_APP + "/releases/2.0.0", {})
        assert st == 201 and doc["zip"] is None, doc
        channel(release="2.0.0")
        doc = updates()
        assert doc["error"] == "no_bundle" and doc["kind"] == "failed", doc
        st, doc, _ = device("/stats", dict(INFO, action="set", version_name="2.0.0"))
        assert (st, doc) == (200, {"status": "ok"}), doc
        # Its files arrive later under the same version: now devices get it.
        st, doc = admin("PUT", ADMIN_APP + "/releases/2.0.0", {"zip": zip_id})
        assert st == 200 and doc["unchanged"] is False, doc
        assert updates()["version"] == "2.0.0"

    def t_update_package():
        expect = {  # format -> (on an OTA bundle, on builtin): what the answer carries
            "all": (("zip", "manifest"), ("zip", "manifest")),
            "zip": (("zip",), ("zip",)),
            "delta": (("manifest",), ("manifest",)),
            "zip_from_builtin": (("zip", "manifest"), ("zip",)),
            "delta_from_builtin": (("zip", "manifest"), ("manifest",)),
        }
        zip_url = "/v1/blobs/%s/1.0.1.zip" % zip_id
        for fmt, cases in expect.items():
            channel(release="1.0.1", update_package=fmt)
            st, doc = admin("GET", ADMIN_APP + "/channels/production")
            assert doc["update_package"] == fmt, doc
            for name, parts in zip(("0.9.0", "builtin"), cases):
                doc = updates(version_name=name)
                assert doc["version"] == "1.0.1" and "error" not in doc, (fmt, name, doc)
                assert doc["url"].endswith(zip_url) == ("zip" in parts), (fmt, name, doc["url"])
                assert ("manifest" in doc) == ("manifest" in parts), (fmt, name, doc)
                if "zip" in parts:
                    st, _, body = curl(doc["url"])
                    assert st == 200 and body == zip_bytes
                else:
                    assert doc["url"].startswith("http")  # a placeholder: plugins need a url
        # The feed carries the field; a bad value is refused, naming it.
        st, doc = admin("PUT", ADMIN_APP + "/channels/production", {"update_package": "tarball"})
        assert st == 400 and "update_package" in doc["message"] and "tarball" in doc["message"], doc
        # Delta for a plugin without manifest support: a clear failure, not a dead url.
        channel(release="1.0.1", update_package="delta")
        doc = updates(plugin_version="6.24.0", version_name="0.9.0")
        assert doc["error"] == "no_url_or_manifest" and doc["kind"] == "failed", doc
        channel(release="1.0.1", update_package="all")

    def t_publish_refusals():
        base = ADMIN_APP + "/releases/"
        cases = [
            ({"zip": zip_id, "session_key": "no-colon-here"}, 400, "invalid_session_key", "session_key"),
            ({"zip": zip_id, "session_key": ":abc"}, 400, "invalid_session_key", "session_key"),
            ({"zip": zip_id, "session_key": "aXY=:"}, 400, "invalid_session_key", "session_key"),
            ({"zip": zip_id, "checksum": "xyz"}, 400, "invalid_checksum", "checksum"),
            ({"zip": zip_id, "checksum": "ab" * 31}, 400, "invalid_checksum", "checksum"),
            ({"zip": zip_id, "checksum": "0" * 64}, 422, "checksum_mismatch", "checksum"),
            ({"zip": zip_id, "session_key": "aXY=:a2V5"}, 400, "invalid_checksum", "checksum"),
            ({"zip": zip_id, "session_key": "aXY=:" + "A" * 2000, "checksum": "Q0hFQ0s="}, 400,
             "invalid_session_key", "session_key"),
            ({"zip": zip_id, "session_key": "aXY=:a2V5", "checksum": "Q" * 2000}, 400, "invalid_checksum",
             "checksum"),
        ]
        for body, status, code, field in cases:
            st, doc = admin("PUT", base + "3.0.0", body)
            assert st == status and doc["error"] == code and field in doc["message"], (body, st, doc)
        st, _ = admin("GET", base + "3.0.0")
        assert st == 404, "nothing stored by a refusal"
        # Upper-case SHA-256: stored lower-case (devices compare case-sensitively).
        st, doc = admin("PUT", base + "3.0.0", {"zip": zip_id, "checksum": zip_id.upper()})
        assert st == 201 and doc["checksum"] == zip_id and doc["warnings"] == [], doc
        # Encrypted: the publisher's checksum is kept as given.
        st, doc = admin("PUT", base + "3.0.1", {"zip": zip_id, "session_key": "aXY=:a2V5", "checksum": "Q0hFQ0s="})
        assert st == 201 and doc["checksum"] == "Q0hFQ0s=", doc
        # A CRC32 from old tooling: accepted, with a warning.
        st, doc = admin("PUT", base + "3.0.2", {"zip": zip_id, "checksum": "DEADBEEF"})
        assert st == 201 and doc["checksum"] == "deadbeef", doc
        assert any("CRC32" in w and "8.51.23" in w for w in doc["warnings"]), doc
        # The same version again with other files: refused; the same publish: unchanged.
        other = blob(os.urandom(1000), "other.zip")
        st, doc = admin("PUT", base + "3.0.0", {"zip": other})
        assert st == 409 and doc["error"] == "release_exists" and "3.0.0" in doc["message"], doc
        st, doc = admin("PUT", base + "3.0.0", {"zip": zip_id})
        assert st == 200 and doc["unchanged"] is True, doc

    def ctl(*args, expect=0):
        env = dict(os.environ, BUNDLE_EDGE_URL=node.admin_url, BUNDLE_EDGE_TOKEN=node.token)
        r = subprocess.run([sys.executable, CTL, *args], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == expect, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout, r.stderr

    def t_ctl_publish():
        zp = os.path.join(TMP, "ctl.zip")
        open(zp, "wb").write(os.urandom(30_000))
        pub = ("publish", "--app", APP, "--version")
        _, err = ctl(*pub, "4.0.0", "--zip", zp, "--session-key", "nocolon", expect=3)
        assert "--session-key" in err, err
        _, err = ctl(*pub, "4.0.0", "--zip", zp, "--checksum", "nothex", expect=3)
        assert "--checksum" in err, err
        _, err = ctl(*pub, "4.0.0", "--zip", zp, "--checksum", "0" * 64, expect=3)
        assert "checksum" in err and "SHA-256" in err, err
        out, err = ctl(*pub, "4.0.0", "--zip", zp)
        assert "release 4.0.0 created" in out, out
        out, err = ctl(*pub, "4.0.0", "--zip", zp)
        assert "release 4.0.0 unchanged" in out, out
        other = os.path.join(TMP, "ctl2.zip")
        open(other, "wb").write(os.urandom(30_000))
        _, err = ctl(*pub, "4.0.0", "--zip", other, expect=4)
        assert "already exists" in err and "new version" in err, err
        out, err = ctl(*pub, "4.0.1", "--zip", zp, "--checksum", "cafebabe")
        assert "warning:" in err and "CRC32" in err, err
        out, _ = ctl(*pub, "4.1.0", "--no-files")
        assert "release 4.1.0 created" in out and "no_bundle" in out, out
        out, _ = ctl(*pub, "4.0.2", "--zip", zp, "--channel", "production", "--update-package", "zip")
        st, doc = admin("GET", ADMIN_APP + "/channels/production")
        assert doc["update_package"] == "zip" and doc["release"] == "4.0.2", doc
        out, _ = ctl("channel", "set", APP, "production", "--update-package", "all")
        assert '"update_package": "all"' in out, out

    def t_native_floor_warning():
        # Devices report native 5.0.0; a release at or below it would be blocked by
        # disable_auto_update_under_native on the channel: a warning, not an error.
        channel(release="1.0.1", disable_auto_update_under_native=True)
        for i in range(3):
            updates(device_id="0a1b2c3d-1111-4222-8333-44445555%04d" % i, version_build="5.0.0",
                    version_name="5.0.0")
        deadline = time.time() + 5
        while True:
            st, doc = admin("PUT", ADMIN_APP + "/releases/4.9.0", {"zip": zip_id})
            warned = [w for w in doc["warnings"] if "disable_auto_update_under_native" in w]
            if warned or time.time() > deadline:
                break
            time.sleep(0.2)  # the check-ins are group-committed
        assert st in (200, 201) and warned, doc
        assert "5.0.0" in warned[0] and "production" in warned[0], warned
        st, doc = admin("PUT", ADMIN_APP + "/releases/6.0.0", {"zip": zip_id})
        assert not [w for w in doc["warnings"] if "native" in w], doc
        channel(release="1.0.1")

    def t_channel_self_validation():
        for method in ("POST", "PUT"):
            st, doc, _ = device("/channel_self", dict(INFO, version_build="1.x", channel="production"), method)
            assert st == 400 and doc["error"] == "semver_error", (method, doc)
        q = "app_id=%s&platform=android&device_id=%s&plugin_version=7.0.0" % (APP, DEV)
        st, doc, _ = device("/channel_self", None, "DELETE", q + "&version_build=1.x")
        assert st == 400 and doc["error"] == "semver_error", doc
        # DELETE (old plugins' unset) needs the device; GET (listChannels) does not (§10.9).
        st, doc, _ = device("/channel_self", None, "DELETE", "app_id=%s&platform=android" % APP)
        assert st == 400 and doc["error"] == "missing_device_id", doc
        for method in ("DELETE", "GET"):
            st, doc, _ = device("/channel_self", None, method, "device_id=%s&platform=android" % DEV)
            assert st == 400 and doc["error"] == "missing_app_id", (method, doc)
        for bad in (5, "x" * 65):
            st, doc, _ = device("/channel_self", dict(INFO, install_source=bad), "PUT")
            assert st == 400 and doc["error"] == "invalid_json_body", (bad, doc)
            assert doc["moreInfo"]["field"] == "install_source", doc

    def t_stats_validation_and_currency():
        for bad in ("not-a-uuid", DEV + "7"):
            st, doc, _ = device("/stats", dict(INFO, action="set", device_id=bad))
            assert st == 400 and doc["error"] == "invalid_json_body" and doc["moreInfo"]["field"] == "device_id", doc
        # New actions and the billingOnly body (§9.5).
        for action in ("checksum_required", "session_key_required", "app_nav"):
            st, doc, _ = device("/stats", dict(INFO, action=action, version_name="1.0.1"))
            assert (st, doc) == (200, {"status": "ok"}), (action, doc)
        billing = {k: v for k, v in INFO.items() if k not in ("custom_id", "version_code", "install_source",
                                                              "defaultChannel")}
        st, doc, _ = device("/stats", [dict(billing, action="set", version_name="1.0.1", stats_mode="billingOnly")])
        assert st == 200 and doc["results"] == [{"status": "ok", "index": 0}], doc
        # The device runs 1.0.1; events naming a target (a download, a failure) do not move it.
        dev2 = "0a1b2c3d-2222-4222-8333-444455556666"
        st, doc, _ = device("/stats", [dict(INFO, device_id=dev2, action="set", version_name="1.0.1"),
                                       dict(INFO, device_id=dev2, action="download_fail", version_name="3.0.0"),
                                       dict(INFO, device_id=dev2, action="checksum_required", version_name="3.0.0")])
        assert st == 200 and all(r["status"] == "ok" for r in doc["results"]), doc
        deadline = time.time() + 5
        while True:
            st, d = admin("GET", ADMIN_APP + "/devices/" + dev2)
            if (d.get("last_checkin") or {}).get("action") == "checksum_required" or time.time() > deadline:
                break
            time.sleep(0.1)
        assert d["last_checkin"]["action"] == "checksum_required", d
        assert d["last_checkin"]["version_name"] == "1.0.1", d
        st, s = admin("GET", ADMIN_APP + "/stats")
        day = s["days"][-1]
        assert day["targets"]["3.0.0"] == {"download_fail": 1, "checksum_required": 1}, day
        assert "3.0.0" not in day["releases"], day


    def t_stats_unknown_versions_recorded():
        # §10.8: a version that is not a release (a deleted bundle a device still runs) is
        # recorded, single or batched; no version_not_found.
        dev3 = "0a1b2c3d-3333-4222-8333-444455556666"
        dev4 = "0a1b2c3d-4444-4222-8333-444455556666"

        def day_devices():
            st, s = admin("GET", ADMIN_APP + "/stats")
            assert st == 200, s
            return s["days"][-1]["devices"] if s["days"] else 0
        before = day_devices()
        st, doc, _ = device("/stats", dict(INFO, device_id=dev3, action="set", version_name="7.7.7"))
        assert (st, doc) == (200, {"status": "ok"}), doc
        st, doc, _ = device("/stats", [dict(INFO, device_id=dev4, action="set", version_name="7.7.8"),
                                       dict(INFO, device_id=dev4, action="app_moved_to_foreground",
                                            version_name="7.7.8:www/app.js")])
        assert st == 200 and doc["results"] == [{"status": "ok", "index": 0}, {"status": "ok", "index": 1}], doc
        deadline = time.time() + 5
        while time.time() < deadline:
            rows = [admin("GET", ADMIN_APP + "/devices/" + d) for d in (dev3, dev4)]
            if all(st == 200 and (r.get("last_checkin") or {}).get("version_name") for st, r in rows) \
                    and day_devices() >= before + 2:
                break
            time.sleep(0.1)
        assert rows[0][1]["last_checkin"]["version_name"] == "7.7.7", rows[0]
        assert rows[1][1]["last_checkin"]["action"] == "app_moved_to_foreground", rows[1]
        assert rows[1][1]["last_checkin"]["version_name"] == "7.7.8:www/app.js", rows[1]
        assert day_devices() >= before + 2, (before, day_devices())

    def t_stats_batches_answer_2xx():
        # §10.7: any 4xx drops the whole batch on the device; a batch is always 2xx, even
        # when its first event carries a bad app_id (a single event still gets its 400).
        for first in ({"app_id": "not a domain"}, {"app_id": None}):
            event = {k: v for k, v in dict(INFO, action="set", **first).items() if v is not None}
            st, doc, _ = device("/stats", [event, dict(INFO, action="set")])
            assert st == 200 and doc["error"] == "invalid_app_id", (first, st, doc)
            st, doc, _ = device("/stats", event)
            assert st == 400 and doc["error"] == "invalid_app_id", (first, st, doc)
        st, doc, _ = device("/stats", [dict(INFO, action="set"), dict(INFO, action="no_such_action"),
                                       dict(INFO, device_id="nope", action="set")])
        assert st == 200 and [r["status"] for r in doc["results"]] == ["ok", "error", "error"], doc

    def t_list_channels_without_device():
        # §10.9: listChannels sends the info object as a query string, device_id or not.
        st, doc = admin("PUT", ADMIN_APP + "/channels/beta",
                        {"public": False, "allow_device_self_set": True, "disable_auto_update": "none"})
        assert st in (200, 201), doc
        for q in ("app_id=%s&platform=android" % APP,
                  "app_id=%s&platform=android&device_id=&is_emulator=false&is_prod=true&version_name=1.0.0" % APP,
                  "app_id=%s&platform=android&device_id=%s" % (APP, DEV)):
            st, doc, _ = device("/channel_self", None, "GET", q)
            assert st == 200 and isinstance(doc, list), (q, st, doc)
            assert {c["name"] for c in doc} >= {"production", "beta"}, (q, doc)
            assert all(isinstance(c["id"], int) for c in doc), doc
        st, doc, _ = device("/channel_self", None, "GET", "app_id=%s&platform=ios&device_id=nope" % APP)
        assert st == 400 and doc["error"] == "invalid_query_parameters", doc  # a bad one is still refused
        st, doc, _ = device("/channel_self", None, "GET", "platform=android")
        assert st == 400 and doc["error"] == "missing_app_id", doc

    def t_website_live():
        # §10.11: the same answer for any app (no app-id oracle).
        for app in (APP, "com.unknown.app", ""):
            st, doc, headers = device("/website_live", None, "GET", "app_id=" + app)
            assert (st, doc) == (200, {"allowed": False, "mode": "capgo"}), (app, st, doc)


    def t_json_gzip():
        # JSON answers to Accept-Encoding: gzip are gzip from 8 KiB on (a manifest of many
        # files); small ones and every download stay identity; Vary on each JSON answer.
        app = "com.example.gzip"
        base = "/v1/admin/apps/" + app
        assert admin("PUT", base, {})[0] == 201
        files = [{"file_name": "www/assets/chunk-%04d.js" % i, "file_hash": sha(js), "blob": js_id}
                 for i in range(1000)]
        st, doc = admin("PUT", base + "/releases/3.0.0", {"zip": zip_id, "manifest": files})
        assert st == 201, doc
        st, doc = admin("PUT", base + "/channels/production",
                        {"release": "3.0.0", "public": True, "disable_auto_update": "none"})
        assert st in (200, 201), doc
        info = json.dumps(dict(INFO, app_id=app, version_name="1.0.0"))
        st, h_id, plain = curl("-X", "POST", "-H", "Accept-Encoding: identity", "--data-binary", info, node.url + "/updates")
        assert st == 200 and header(h_id, "Content-Encoding") is None, h_id
        assert header(h_id, "Vary") == "Accept-Encoding", h_id
        st, h_gz, packed = curl("-X", "POST", "-H", "Accept-Encoding: gzip", "--data-binary", info, node.url + "/updates")
        assert st == 200 and header(h_gz, "Content-Encoding") == "gzip", h_gz
        assert header(h_gz, "Vary") == "Accept-Encoding", h_gz
        assert int(header(h_gz, "Content-Length")) == len(packed) < len(plain) / 5, (len(packed), len(plain))
        assert gzip.decompress(packed) == plain
        doc = json.loads(plain)
        assert len(doc["manifest"]) == 1000, len(doc["manifest"])
        # A small answer stays identity, even when gzip is welcome.
        st, h, out = curl("-X", "POST", "-H", "Accept-Encoding: gzip", "--data-binary",
                          json.dumps(dict(INFO, app_id=app, version_name="3.0.0")), node.url + "/updates")
        assert st == 200 and header(h, "Content-Encoding") is None and json.loads(out)["kind"] == "up_to_date", (h, out)
        assert header(h, "Vary") == "Accept-Encoding", h
        # Downloads are never encoded: the zip, a manifest file, a range of it.
        for url, want, extra in ((doc["url"], zip_bytes, ()), (doc["manifest"][7]["download_url"], js, ()),
                                 (doc["manifest"][7]["download_url"], js[100:200], ("-r", "100-199"))):
            st, h, out = curl("-H", "Accept-Encoding: gzip", *extra, url)
            assert st in (200, 206) and out == want and header(h, "Content-Encoding") is None, (url, h)
            assert header(h, "Vary") is None, h

    def t_manifest_over_16mib_refused():
        # A release whose /updates answer would pass the 16 MiB a device reads is refused at
        # publish, naming the limit (the request body fits a raised json_body_limit).
        big = Node('[server]\njson_body_limit = "64MiB"\n')
        try:
            def call(method, path, body):
                path_ = os.path.join(TMP, "body.json")
                open(path_, "w").write(json.dumps(body))
                st, _, out = curl("-X", method, "-H", "Authorization: Bearer " + big.token,
                                  "--data-binary", "@" + path_, big.admin_url + path)
                return st, json.loads(out)
            app = "/v1/admin/apps/com.example.huge"
            assert call("PUT", app, {})[0] == 201
            p = os.path.join(TMP, "one.js")
            open(p, "wb").write(js)
            assert upload(big, p)[0] in (200, 201)
            name = "www/" + "n" * 4000 + "/%05d.js"
            files = [{"file_name": name % i, "file_hash": sha(js), "blob": js_id} for i in range(2200)]
            st, doc = call("PUT", app + "/releases/1.0.0", {"manifest": files})
            assert st == 422 and doc["error"] == "manifest_too_large", (st, str(doc)[:300])
            assert "16777216" in doc["message"] and "2200 files" in doc["message"], doc
            st, doc = call("PUT", app + "/releases/1.0.0", {"manifest": files[:1000]})
            assert st == 201, (st, doc)
        finally:
            big.stop()

    def t_retry_after():
        for path, body in (("/updates", dict(INFO, app_id="com.unknown.app")),
                           ("/stats", dict(INFO, app_id="com.unknown.app", action="set")),
                           ("/channel_self", dict(INFO, app_id="com.unknown.app", channel="x"))):
            st, doc, headers = device(path, body)
            assert st == 429 and doc["error"] == "on_premise_app", (path, doc)
            assert header(headers, "Retry-After") == "60", (path, headers)

    def t_names_are_utf8():
        # A version name is echoed to devices in JSON: one that is not UTF-8 is refused, and a
        # version row (no files needed) is the easiest way to try.
        path = ("/v1/admin/apps/%s/releases/1.0." % APP).encode() + b"\xff"
        req = (b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + node.token.encode() +
               b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        out = raw(node.admin, req)
        assert out.startswith(b"HTTP/1.1 400") and b"invalid_name" in out, out[:300]
        json.loads(out.split(b"\r\n\r\n", 1)[1])  # the answer itself is valid JSON

    def t_pipelined_bodies():
        # Bodies that arrive with their heads are read from the buffer at once; the requests
        # behind them in the same segment are answered in order.
        body = json.dumps(dict(INFO, app_id="com.unknown.app"))
        one = "POST /updates HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        out = raw(node.port, (one * 3 + "GET /updates HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode())
        assert out.count(b"HTTP/1.1 429") == 3 and out.count(b"HTTP/1.1 200") == 1, out[:400]
        assert out.rindex(b"HTTP/1.1 200") > out.rindex(b"HTTP/1.1 429"), "in order"

    for name, fn in [("builtin revert and already_on_builtin", t_builtin_revert),
                     ("a version row answers no_bundle", t_version_row),
                     ("each update_package value", t_update_package),
                     ("publish-time refusals and idempotent re-publish", t_publish_refusals),
                     ("bundle-edge-ctl publish: exit codes and warnings", t_ctl_publish),
                     ("native floor warning", t_native_floor_warning),
                     ("/channel_self validation", t_channel_self_validation),
                     ("/stats validation and currency", t_stats_validation_and_currency),
                     ("/stats records versions that are not releases", t_stats_unknown_versions_recorded),
                     ("/stats batches answer 2xx", t_stats_batches_answer_2xx),
                     ("GET /channel_self without device_id", t_list_channels_without_device),
                     ("GET /website_live", t_website_live),
                     ("JSON answers gzip when asked; downloads never", t_json_gzip),
                     ("a manifest over 16 MiB is refused at publish", t_manifest_over_16mib_refused),
                     ("429 carries Retry-After", t_retry_after),
                     ("pipelined /updates bodies", t_pipelined_bodies),
                     ("release names must be UTF-8", t_names_are_utf8)]:
        check(name, fn)
    assert node.stop() == 0


if __name__ == "__main__":
    run(main)
