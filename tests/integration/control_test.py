#!/usr/bin/env python3
"""Integration test of the control admin API (issue #4, first part): apps, releases,
channels and device overrides over HTTP against the real binary, including validation
errors, blob checks, public-channel demotion, and persistence across a restart.

Usage: control_test.py <path-to-bundle-edge>"""
import json
import os
import subprocess
import sys

from harness import run, TMP, Node, check, curl, header, results, sha, upload


def main():
    node = Node("")
    auth = lambda: ("-H", "Authorization: Bearer " + node.token)

    def admin(method, path, body=None):
        args = ["-X", method, *auth()]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", body if isinstance(body, str) else json.dumps(body)]
        st, h, out = curl(*args, node.admin_url + path)
        try:
            doc = json.loads(out) if out else None
        except ValueError:
            doc = out
        return st, h, doc

    blobs = {}
    for name in ["bundle.zip", "index.html", "app.js"]:
        data = os.urandom(50000)
        path = os.path.join(TMP, name)
        open(path, "wb").write(data)
        st, _, _ = upload(node, path)
        assert st == 201
        blobs[name] = sha(data)
    app = "/v1/admin/apps/com.example.app"

    def t_apps():
        st, _, doc = admin("PUT", app, {"expose_metadata": True})
        assert st == 201 and doc["app_id"] == "com.example.app" and doc["expose_metadata"] is True, (st, doc)
        st, _, doc = admin("PUT", app, {"expose_metadata": False})
        assert st == 200
        st, _, doc = admin("GET", app)
        assert st == 200 and doc["expose_metadata"] is False
        st, _, doc = admin("GET", "/v1/admin/apps")
        assert [a["app_id"] for a in doc["apps"]] == ["com.example.app"]
        st, _, doc = admin("PUT", "/v1/admin/apps/not_reverse_domain", {})
        assert st == 400 and doc["error"] == "invalid_app_id", doc
        st, _, doc = admin("PUT", app, {"expose_metadata": "yes"})
        assert st == 400 and "expose_metadata" in doc["message"], doc
        st, _, doc = admin("GET", "/v1/admin/apps/com.unknown.app/channels")
        assert st == 404
        st, _, _ = curl("-X", "PUT", "--data", "{}", node.admin_url + app)
        assert st == 401

    def t_releases():
        st, _, doc = admin("PUT", app + "/releases/1.0.0", {"zip": "0" * 64})
        assert st == 422 and doc["error"] == "missing_blob" and "0" * 64 in doc["message"], doc
        st, _, doc = admin("PUT", app + "/releases/1.0.0", {"zip": blobs["bundle.zip"]})
        assert st == 201 and doc["checksum"] == blobs["bundle.zip"], doc
        manifest = [{"file_name": n, "file_hash": blobs[n], "blob": blobs[n]} for n in ["index.html", "app.js"]]
        st, _, doc = admin("PUT", app + "/releases/1.1.0",
                           {"zip": blobs["bundle.zip"], "manifest": manifest, "link": "https://x", "comment": "c"})
        assert st == 201 and len(doc["manifest"]) == 2, doc
        bad = [{"file_name": "a.js", "file_hash": "h", "blob": "1" * 64}]
        st, _, doc = admin("PUT", app + "/releases/1.2.0", {"manifest": bad})
        assert st == 422 and "manifest[0]" in doc["message"], doc
        st, _, doc = admin("PUT", app + "/releases/1.2.0", {"zip": blobs["bundle.zip"], "colour": "red"})
        assert st == 400 and "colour" in doc["message"], doc
        # A version row without files (Capgo has them): taken; devices get no_bundle for it.
        st, _, doc = admin("PUT", app + "/releases/1.2.0", {})
        assert st == 201 and doc["zip"] is None and doc["manifest"] == [] and doc["checksum"] == "", doc
        st, _, doc = admin("GET", app + "/releases")
        assert [r["name"] for r in doc["releases"]] == ["1.0.0", "1.1.0", "1.2.0"], doc

    def t_channels():
        st, h, doc = admin("PUT", app + "/channels/production", {"release": "1.0.0", "public": True})
        assert st == 201 and doc["release"] == "1.0.0" and doc["disable_auto_update"] == "major", doc
        seq1 = int(header(h, "X-Change-Seq"))
        st, _, doc = admin("PUT", app + "/channels/beta", {"release": "9.9.9"})
        assert st == 422 and doc["error"] == "unknown_release", doc
        st, _, doc = admin("PUT", app + "/channels/beta", {"release": "1.1.0", "allow_device_self_set": True,
                                                            "rollout": {"release": "1.0.0", "bps": 5000, "enabled": True}})
        assert st == 201 and doc["rollout"]["id"] == "beta:1.0.0", doc
        st, _, doc = admin("PUT", app + "/channels/beta", {"rollout": {"release": "1.0.0", "bps": 20000}})
        assert st == 400 and "rollout.bps" in doc["message"], doc
        # A second public channel for the same platforms demotes the first.
        st, h, doc = admin("PUT", app + "/channels/stable", {"release": "1.1.0", "public": True})
        assert st == 201 and doc["demoted"] == ["production"], doc
        assert int(header(h, "X-Change-Seq")) > seq1
        st, _, doc = admin("GET", app + "/channels/production")
        assert doc["public"] is False
        # An iOS-only public channel does not demote an Android one... but overlaps "stable".
        st, _, doc = admin("PUT", app + "/channels/ios-only", {"public": True, "android": False, "electron": False})
        assert st == 201 and doc["demoted"] == ["stable"] and doc["release"] is None, doc
        st, _, doc = admin("DELETE", app + "/channels/ios-only")
        assert st == 200
        st, _, doc = admin("GET", app + "/channels")
        assert [c["name"] for c in doc["channels"]] == ["beta", "production", "stable"], doc

    def t_devices():
        dev = "0A1B2C3D-1111-4222-8333-444455556666"
        st, _, doc = admin("PUT", app + "/devices/" + dev, {"channel": "nope"})
        assert st == 422 and doc["error"] == "unknown_channel", doc
        st, _, doc = admin("PUT", app + "/devices/" + dev, {"channel": "beta"})
        assert st == 201 and doc["device_id"] == dev.lower(), doc
        st, _, doc = admin("GET", app + "/devices/" + dev.lower())
        assert doc["channel"] == "beta"
        st, _, doc = admin("PUT", app + "/devices/not-a-uuid", {"channel": "beta"})
        assert st == 400 and doc["error"] == "invalid_device_id"
        st, _, doc = admin("GET", app + "/devices")
        assert doc["devices"] == [{"device_id": dev.lower(), "channel": "beta"}], doc

    def t_delete_release_and_restart():
        st, _, doc = admin("DELETE", app + "/releases/1.0.0")
        assert st == 200 and doc["deleted"] is True
        st, _, doc = admin("PUT", app + "/channels/production", {"release": "1.0.0"})
        assert st == 422, "a deleted release cannot be pointed at"
        node.restart()
        st, _, doc = admin("GET", app + "/channels")
        assert [c["name"] for c in doc["channels"]] == ["beta", "production", "stable"], doc
        st, _, doc = admin("GET", app + "/releases/1.0.0")
        assert doc["deleted"] is True
        st, _, doc = admin("GET", app + "/devices/0a1b2c3d-1111-4222-8333-444455556666")
        assert doc["channel"] == "beta"

    def t_updates():
        # A fresh app: release 1.2.4 with a zip and a two-file manifest on a public channel.
        dapp = "/v1/admin/apps/com.example.devices"
        assert admin("PUT", dapp, {"expose_metadata": True})[0] == 201
        manifest = [{"file_name": n, "file_hash": blobs[n], "blob": blobs[n]} for n in ["index.html", "app.js"]]
        st, _, _ = admin("PUT", dapp + "/releases/1.2.4", {"zip": blobs["bundle.zip"], "manifest": manifest,
                                                           "link": "https://example.com/notes", "comment": "fixes"})
        assert st == 201
        assert admin("PUT", dapp + "/channels/production", {"release": "1.2.4", "public": True})[0] == 201
        android = {"platform": "android", "device_id": "0a1b2c3d-1111-4222-8333-444455556666",
                   "app_id": "com.example.devices", "custom_id": "", "version_build": "1.2.0", "version_code": "120",
                   "version_os": "14", "version_name": "1.2.3", "plugin_version": "8.51.23", "is_emulator": False,
                   "is_prod": True, "install_source": "google_play", "defaultChannel": ""}

        def post(body, raw_text=None):
            data = raw_text if raw_text is not None else json.dumps(body)
            st, h, out = curl("-X", "POST", "-H", "Content-Type: application/json; charset=utf-8",
                              "--data-binary", data, node.url + "/updates")
            return st, json.loads(out)

        st, doc = post(android)
        assert st == 200 and doc["version"] == "1.2.4" and "error" not in doc, doc
        assert doc["session_key"] == "" and doc["checksum"] == blobs["bundle.zip"]
        assert doc["link"] == "https://example.com/notes" and doc["comment"] == "fixes"
        st, _, zipbytes = curl(doc["url"])
        assert st == 200 and sha(zipbytes) == doc["checksum"], "the url serves the zip the checksum names"
        assert len(doc["manifest"]) == 2
        for m in doc["manifest"]:
            st, _, b = curl(m["download_url"])
            assert st == 200 and sha(b) == m["file_hash"], m
        st, doc = post(dict(android, version_name="1.2.4"))
        assert doc == {"error": "no_new_version_available", "message": "No new version available",
                       "kind": "up_to_date"}, doc
        ios = {k: v for k, v in android.items() if k not in ("defaultChannel", "install_source")}
        st, doc = post(dict(ios, platform="ios", version_name="builtin"))
        assert st == 200 and doc["version"] == "1.2.4", doc
        st, doc = post(dict(android, version_build="1.2"))
        assert st == 200 and doc["version"] == "1.2.4", "1.2 is coerced to 1.2.0"
        st, doc = post(dict(android, plugin_version="7.0.34"))
        assert "manifest" not in doc and "link" not in doc, doc
        st, doc = post(dict(android, plugin_version="5.10.0"))
        assert len(doc["manifest"]) == 2 and "link" not in doc, doc
        st, doc = post(dict(android, plugin_version="8.35.0-beta.1"))
        assert "link" not in doc, "a prerelease of 8.35.0 counts as older"
        st, doc = post(dict(android, version_build="2.0.0"))
        assert doc["error"] == "disable_auto_update_under_native" and doc["kind"] == "blocked", doc
        # Errors and statuses.
        st, doc = post(dict(android, app_id="com.unknown.app"))
        assert st == 429 and doc == {"error": "on_premise_app", "message": "On-premise app detected"}, doc
        st, doc = post(None, raw_text="{not json")
        assert st == 400 and doc["error"] == "invalid_json_parse_body"
        st, doc = post({})
        assert st == 400 and doc["error"] == "invalid_json_body"
        st, doc = post({k: v for k, v in android.items() if k != "device_id"})
        assert st == 400 and doc["error"] == "missing_device_id"
        st, doc = post(dict(android, app_id=""))
        assert st == 400 and doc["error"] == "missing_app_id"
        st, doc = post(dict(android, version_build="not.a.version"))
        assert st == 400 and doc["error"] == "semver_error" and "kind" not in doc, doc
        for field, bad in [("platform", "windows"), ("device_id", "nope"), ("plugin_version", "x"),
                           ("is_prod", "yes"), ("key_id", "k" * 21), ("version_name", "")]:
            st, doc = post(dict(android, **{field: bad}))
            assert st == 400 and doc["error"] == "invalid_json_body", (field, doc)
        st, _, out = curl(node.url + "/updates")
        assert st == 200 and json.loads(out) == {"status": "ok"}
        # manifest_size: sizes of the files a manifest names, from this node's blobs.
        st, doc = post(android)
        ms = dict(android, version="1.2.4", manifest=doc["manifest"] + doc["manifest"][:1] + [
            {"file_name": "x.js", "file_hash": "h", "download_url": "https://elsewhere.example/x.js"}])
        st, _, out = curl("-X", "POST", "--data-binary", json.dumps(ms), node.url + "/updates/manifest_size")
        size = json.loads(out)
        assert st == 200 and size["knownFiles"] == 2 and size["unknownFiles"] == 1, size
        assert size["totalSize"] == 100000 and size["files"][2]["error"] == "size_unknown", size

    def t_channel_self():
        capp = "/v1/admin/apps/com.example.chan"
        assert admin("PUT", capp, {})[0] == 201
        assert admin("PUT", capp + "/releases/1.0.0", {"zip": blobs["bundle.zip"]})[0] == 201
        assert admin("PUT", capp + "/channels/production", {"release": "1.0.0", "public": True})[0] == 201
        assert admin("PUT", capp + "/channels/beta", {"release": "1.0.0", "allow_device_self_set": True})[0] == 201
        assert admin("PUT", capp + "/channels/internal", {"release": "1.0.0"})[0] == 201
        assert admin("PUT", capp + "/channels/ios-beta", {"release": "1.0.0", "allow_device_self_set": True,
                                                          "android": False})[0] == 201
        dev = "0a1b2c3d-1111-4222-8333-444455556677"
        info = {"platform": "android", "device_id": dev, "app_id": "com.example.chan", "custom_id": "",
                "version_build": "1.0.0", "version_code": "1", "version_os": "14", "version_name": "builtin",
                "plugin_version": "8.51.23", "is_emulator": False, "is_prod": True, "defaultChannel": ""}

        def call(method, body=None, query=None):
            args = ["-X", method]
            url = node.url + "/channel_self"
            if query is not None:
                url += "?" + query
            if body is not None:
                args += ["--data-binary", json.dumps(body)]
            st, _, out = curl(*args, url)
            return st, json.loads(out)

        # New plugin: nothing stored server-side.
        st, doc = call("POST", dict(info, channel="beta"))
        assert (st, doc) == (200, {"status": "ok", "allowSet": True}), doc
        st, doc = call("POST", dict(info, channel="internal"))
        assert doc["error"] == "channel_self_set_not_allowed", doc
        st, doc = call("POST", dict(info, channel="production"))
        assert doc["error"] == "public_channel_self_set_not_allowed", doc
        st, doc = call("POST", dict(info, channel="nope"))
        assert doc["error"] == "channel_not_found" and doc["channel"] == "nope", doc
        st, doc = call("POST", info)
        assert doc["error"] == "missing_channel", doc
        st, doc = call("PUT", info)
        assert doc == {"channel": "production", "status": "default"}, doc
        st, doc = call("PUT", dict(info, defaultChannel="beta"))
        assert doc == {"channel": "beta", "status": "default"}, doc
        st, doc = call("DELETE", query="app_id=com.example.chan&platform=android&device_id=" + dev + "&plugin_version=8.51.23")
        assert doc == {"status": "ok"}, doc
        # listChannels with the info object in the query string.
        q = "&".join("%s=%s" % (k, str(v).lower() if isinstance(v, bool) else v) for k, v in info.items())
        st, doc = call("GET", query=q)
        assert st == 200 and [c["name"] for c in doc] == ["beta", "production"], doc
        assert all(isinstance(c["id"], int) for c in doc)
        st, doc = call("GET", query=q.replace("platform=android", "platform=ios"))
        assert [c["name"] for c in doc] == ["beta", "ios-beta", "production"], doc
        st, doc = call("GET", query="")
        assert st == 400 and doc["error"] == "invalid_query_parameters", doc
        st, doc = call("GET", query="platform=android")
        assert st == 400 and doc["error"] == "missing_app_id", doc  # no device needed (§10.9)
        st, doc = call("GET", query="platform=android&device_id=" + dev)
        assert st == 400 and doc["error"] == "missing_app_id", doc
        st, doc = call("POST", dict(info, app_id="com.unknown.app", channel="beta"))
        assert st == 429 and doc["error"] == "on_premise_app"
        # Old plugin (7.0.0 < 7.34.0): the override lives on the server, and /updates follows it.
        old = dict(info, plugin_version="7.0.0")
        st, doc = call("POST", dict(old, channel="beta"))
        assert doc == {"status": "ok"}, doc
        st, _, o = admin("GET", capp + "/devices/" + dev)
        assert o["channel"] == "beta", o
        st, doc = call("PUT", old)
        assert doc == {"channel": "beta", "status": "override", "allowSet": True}, doc
        st, doc = call("POST", dict(old, channel="production"))
        assert doc["error"] == "public_channel_self_set_not_allowed", doc
        st, doc = call("DELETE", query="app_id=com.example.chan&platform=android&device_id=" + dev + "&plugin_version=7.0.0")
        assert doc == {"status": "ok"}, doc
        st, _, o = admin("GET", capp + "/devices/" + dev)
        assert o["channel"] is None, o
        st, doc = call("DELETE", query="app_id=com.example.chan&platform=android&device_id=" + dev + "&plugin_version=7.0.0")
        assert doc["error"] == "cannot_override", doc

    def t_stats():
        dapp = "/v1/admin/apps/com.example.devices"  # made by t_updates: release 1.2.4
        dev = "0a1b2c3d-1111-4222-8333-444455556666"
        event = {"platform": "android", "device_id": dev, "app_id": "com.example.devices", "custom_id": "",
                 "version_build": "1.2.0", "version_code": "120", "version_os": "14", "version_name": "1.2.4",
                 "plugin_version": "8.51.23", "is_emulator": False, "is_prod": True, "action": "set",
                 "old_version_name": "1.2.3", "timestamp": 1764115200000}

        def post(body, raw_text=None):
            st, _, out = curl("-X", "POST", "--data-binary", raw_text if raw_text is not None else json.dumps(body),
                              node.url + "/stats")
            return st, json.loads(out)

        assert post(event) == (200, {"status": "ok"})
        st, doc = post([event, dict(event, action="download_complete"), dict(event, action="not_an_action"),
                        dict(event, version_name="1.2.4:assets/app.js", action="download_manifest_file_fail")])
        assert st == 200 and [r["status"] for r in doc["results"]] == ["ok", "ok", "error", "ok"], doc
        assert doc["results"][2]["index"] == 2
        assert post([]) == (200, {"status": "ok", "results": []})
        # Sent by plugin 8.51.23 though Capgo's allow-list lacks it (§9.5): taken here.
        st, doc = post(dict(event, action="session_key_required"))
        assert (st, doc) == (200, {"status": "ok"}), (st, doc)
        # A version that is not a release is recorded (§10.8): no version_not_found. (Another
        # device, so that the checks of `dev` below stay about target-naming events.)
        st, doc = post(dict(event, version_name="9.9.9", device_id="0a1b2c3d-9999-4222-8333-444455556666"))
        assert (st, doc) == (200, {"status": "ok"}), (st, doc)
        st, doc = post({k: v for k, v in event.items() if k != "app_id"})
        assert st == 400 and doc["error"] == "invalid_app_id", doc
        st, doc = post([event, {k: v for k, v in event.items() if k != "app_id"}])
        assert st == 200 and doc["error"] == "invalid_app_id", doc
        st, doc = post([event, dict(event, app_id="com.example.chan")])
        assert st == 200 and doc["error"] == "mixed_app_ids", doc
        st, doc = post(dict(event, app_id="com.unknown.app"))
        assert st == 429 and doc["error"] == "on_premise_app"
        st, doc = post(None, raw_text="nope")
        assert st == 400 and doc["error"] == "invalid_json_parse_body"
        st, _, out = curl(node.url + "/stats")
        assert json.loads(out) == {"status": "ok"}
        # The check-ins of /updates and /stats show in the app's stats and on the device.
        import time
        deadline = time.time() + 5
        while True:
            st, _, doc = admin("GET", dapp + "/stats")
            day = doc["days"][-1] if doc["days"] else {"actions": {}}
            if day["actions"].get("set", 0) >= 3 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert st == 200 and day["actions"]["set"] == 3, doc  # 9.9.9's included
        assert day["actions"]["updates"] >= 1 and day["devices"] >= 2, doc
        # Target-naming events (§9.5) count against the release they name, not as running it.
        assert day["releases"]["1.2.4"] >= 2, doc
        assert day["targets"]["1.2.4"]["download_complete"] == 1, doc
        assert day["targets"]["1.2.4"]["session_key_required"] == 1, doc
        st, _, doc = admin("GET", dapp + "/devices/" + dev)
        assert doc["last_checkin"]["action"] in ("set", "download_complete", "download_manifest_file_fail",
                                                 "session_key_required"), doc
        assert doc["last_checkin"]["version_name"] == "1.2.4", doc

    for name, fn in [("apps", t_apps), ("releases", t_releases), ("channels", t_channels),
                     ("device overrides", t_devices), ("delete release, restart", t_delete_release_and_restart),
                     ("/updates with plugin bodies", t_updates), ("/channel_self", t_channel_self),
                     ("/stats and check-ins", t_stats)]:
        check(name, fn)
    assert node.stop() == 0


if __name__ == "__main__":
    run(main)
