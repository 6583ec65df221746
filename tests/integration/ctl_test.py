#!/usr/bin/env python3
"""bundle-edge-ctl end to end (issue #4): publish a folder with --delta to a real node, then
/updates offers the release, its url serves a zip whose SHA-256 is the checksum, and every
manifest download_url serves a file whose SHA-256 is its file_hash.

Usage: ctl_test.py <path-to-bundle-edge>"""
import json
import os
import subprocess
import sys

from harness import run, TMP, Node, check, curl, results, sha

CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")


def main():
    node = Node("")

    def ctl(*args, expect=0):
        env = dict(os.environ, BUNDLE_EDGE_URL=node.admin_url, BUNDLE_EDGE_TOKEN=node.token)
        r = subprocess.run([sys.executable, CTL, *args], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == expect, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout + r.stderr

    dist = os.path.join(TMP, "dist")
    os.makedirs(os.path.join(dist, "assets"))
    files = {"index.html": b"<html>v1</html>", "assets/app.js": os.urandom(100000), "assets/my style.css": b"body{}"}
    for rel, data in files.items():
        open(os.path.join(dist, rel), "wb").write(data)
    device = {"platform": "android", "device_id": "0a1b2c3d-1111-4222-8333-444455556666",
              "app_id": "com.example.ctl", "version_build": "1.0.0", "version_name": "builtin",
              "plugin_version": "8.51.23", "is_emulator": False, "is_prod": True, "defaultChannel": ""}

    def updates(body):
        st, _, out = curl("-X", "POST", "--data-binary", json.dumps(body), node.url + "/updates")
        assert st == 200, st
        return json.loads(out)

    def t_publish():
        out = ctl("publish", "--app", "com.example.ctl", "--version", "1.0.1", "--dir", dist, "--delta",
                  "--channel", "production", "--public")
        assert "created app com.example.ctl" in out and "channel production -> 1.0.1" in out, out
        doc = updates(device)
        assert doc["version"] == "1.0.1", doc
        st, _, z = curl(doc["url"])
        assert st == 200 and sha(z) == doc["checksum"], "the zip hashes to checksum"
        got = {m["file_name"]: m for m in doc["manifest"]}
        assert sorted(got) == sorted(files), got
        for rel, m in got.items():
            st, _, b = curl(m["download_url"])
            assert st == 200 and b == files[rel] and sha(b) == m["file_hash"], rel

    def t_deterministic_and_commands():
        # The same folder again: same zip bytes, same files: nothing changes (exit 0).
        out = ctl("publish", "--app", "com.example.ctl", "--version", "1.0.1", "--dir", dist, "--delta")
        assert "release 1.0.1 unchanged" in out, out
        out = ctl("release", "list", "com.example.ctl")
        assert "1.0.1" in out
        out = ctl("channel", "set", "com.example.ctl", "beta", "--release", "1.0.1", "--json",
                  '{"allow_device_self_set": true}')
        assert '"allow_device_self_set": true' in out, out
        assert "beta" in ctl("channel", "list", "com.example.ctl")
        ctl("device", "set", "com.example.ctl", device["device_id"], "beta")
        ctl("device", "unset", "com.example.ctl", device["device_id"])
        ctl("channel", "delete", "com.example.ctl", "beta")
        assert "beta" not in ctl("channel", "list", "com.example.ctl")
        out = ctl("stats", "com.example.ctl")
        assert "devices" in out and "check-ins" in out and "(no check-ins" not in out, out
        # Errors say what to fix.
        err = ctl("channel", "set", "com.example.ctl", "x", "--release", "9.9.9", expect=3)
        assert "9.9.9" in err, err
        err = ctl("publish", "--app", "com.example.ctl", "--version", "2", expect=1)
        assert "--zip FILE, --dir DIST or --no-files" in err, err
        env_err = subprocess.run([sys.executable, CTL, "--token", "wrong", "--url", node.admin_url, "stats",
                                  "com.example.ctl"], capture_output=True, text=True, timeout=60)
        assert env_err.returncode == 1 and "token" in env_err.stderr, env_err.stderr
        zip_path = os.path.join(TMP, "given.zip")
        st, _, z = curl(updates(device)["url"])
        open(zip_path, "wb").write(z)
        out = ctl("publish", "--app", "com.example.ctl", "--version", "1.0.2", "--zip", zip_path, "--channel",
                  "production")
        assert "channel production -> 1.0.2" in out, out
        assert updates(device)["version"] == "1.0.2"

    for name, fn in [("publish --dir --delta, then a device updates", t_publish),
                     ("deterministic zips, channel/device/release/stats commands", t_deterministic_and_commands)]:
        check(name, fn)
    assert node.stop() == 0


if __name__ == "__main__":
    run(main)
