#!/usr/bin/env python3
"""Integration test of the control admin API (issue #4, first part): apps, releases,
channels and device overrides over HTTP against the real binary, including validation
errors, blob checks, public-channel demotion, and persistence across a restart.

Usage: control_test.py <path-to-bundle-edge>"""
import json
import os
import subprocess
import sys

from harness import TMP, Node, check, curl, header, results, sha, upload


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
        st, _, doc = admin("PUT", app + "/releases/1.2.0", {})
        assert st == 400, doc
        st, _, doc = admin("GET", app + "/releases")
        assert [r["name"] for r in doc["releases"]] == ["1.0.0", "1.1.0"], doc

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

    for name, fn in [("apps", t_apps), ("releases", t_releases), ("channels", t_channels),
                     ("device overrides", t_devices), ("delete release, restart", t_delete_release_and_restart)]:
        check(name, fn)
    assert node.stop() == 0
    print("%d passed, %d failed" % (results["passed"], results["failed"]))
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        subprocess.run(["rm", "-rf", TMP])
