#!/usr/bin/env python3
"""Integration test of the admin listener under hostile or expensive use: scans (device
index, stats, ...) run off the event loops with a per-token limit (429 + Retry-After), path
segments are percent-decoded once (releases with SemVer build metadata, UTF-8 channel
names, from curl and bundle-edge-ctl), /favicon.ico needs no token, and API answers carry
nosniff and no-store. The real binary on 127.0.0.1; nothing here is timed.

Usage: admin_test.py <path-to-bundle-edge>"""
import http.client
import json
import os
import select
import socket
import subprocess
import time

from harness import Node, admin, check, curl, header, run

CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")
APP = "com.example.admin"
DEVICES = 50_000


def seed_devices(node, n):
    """n devices in the check-in store, as relayed check-ins (POST /v1/checkins, 500 a batch)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
    now = int(time.time() * 1000)
    for b in range(0, n, 500):
        batch = [{"app_id": APP, "device_id": "%08x-0000-4000-8000-%012x" % (b, i), "platform": "android",
                  "version_name": "1.0.0", "version_build": "1.0.0", "action": "get", "decision": "",
                  "time_ms": now} for i in range(b, min(n, b + 500))]
        conn.request("POST", "/v1/checkins", json.dumps({"checkins": batch}),
                     {"Authorization": "Bearer s", "Content-Type": "application/json",
                      "Idempotency-Key": "admin-test:1:%d" % (b // 500 + 1)})
        r = conn.getresponse()
        r.read()
        assert r.status in (200, 202), r.status
    conn.close()


def send(port, path, token):
    """Sends one GET on a new connection without waiting for its answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n"
               % (path, token)).encode())
    return s


def answer(s):
    """The whole answer of a connection sent with send(): (status, headers text, body)."""
    chunks = []
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        chunks.append(d)
    s.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    text = head.decode("latin-1")
    return int(text.split(" ")[1]), text + "\r\n", body


def answered(s):
    """True if the server wrote something on `s` already (its answer has begun)."""
    return bool(select.select([s], [], [], 0)[0])


def main():
    node = Node('[sync]\ntoken = "s"\n[admin]\nscan_threads = 1\n')
    try:
        assert admin(node, "PUT", "/v1/admin/apps/" + APP, {})[0] == 201
        st, doc = admin(node, "POST", "/v1/admin/tokens", {"name": "dash", "role": "viewer", "apps": [APP]})
        assert st == 201, (st, doc)
        viewer = doc["token"]
        t0 = time.time()
        seed_devices(node, DEVICES)
        print("seeded %d devices in %.1f s" % (DEVICES, time.time() - t0))
        # No device has this release: the scan reads every device row.
        scan = "/v1/admin/apps/%s/device_index?release=none-such" % APP

        def scans_limited_per_token():
            # Four scans in flight for the viewer; the fifth is refused at once, the four
            # complete, and afterwards the token may scan again. On one scan thread the four
            # take several scan times: the fifth comes well within. A round in which the
            # four were done before the fifth arrived (a stalled test process) is retried.
            for attempt in range(3):
                socks = [send(node.admin, scan, viewer) for _ in range(4)]
                time.sleep(0.02)
                fifth = send(node.admin, scan, viewer)
                st5, h5, body5 = answer(fifth)
                still_running = not all(answered(s) for s in socks)
                results = [answer(s) for s in socks]
                assert [r[0] for r in results] == [200] * 4, [r[0] for r in results]
                for _, _, body in results:
                    assert json.loads(body)["devices"] == []
                if st5 == 200 and not still_running:
                    print("attempt %d: the four scans were done before the fifth came; again" % attempt)
                    continue
                assert st5 == 429, (st5, body5)
                assert header(h5, "Retry-After") == "1", h5
                err = json.loads(body5)
                assert err["error"] == "too_many_scans", err
                assert "admin.max_scans_per_token (4)" in err["message"] and "'dash'" in err["message"], err
                st, _, _ = answer(send(node.admin, scan, viewer))
                assert st == 200, st
                return
            raise AssertionError("the fifth scan never overlapped the four")

        def healthz_answers_during_scans():
            # The event loops do not run scans: both listeners' /healthz answer while four
            # scans of the viewer and one of the bootstrap token wait on the scan thread.
            for attempt in range(3):
                socks = [send(node.admin, scan, viewer) for _ in range(4)]
                socks.append(send(node.admin, scan, node.token))
                time.sleep(0.02)
                st_admin, _, _ = curl(node.admin_url + "/healthz")
                st_public, _, _ = curl(node.url + "/healthz")
                pending = sum(not answered(s) for s in socks)
                statuses = [answer(s)[0] for s in socks]
                assert st_admin == 200 and st_public == 200, (st_admin, st_public)
                assert statuses == [200] * 5, statuses
                if pending > 0:
                    print("/healthz answered with %d of 5 scans still running" % pending)
                    return
                print("attempt %d: the scans were done before /healthz answered; again" % attempt)
            raise AssertionError("/healthz never answered while scans were running")

        def other_scans_are_offloaded():
            for path in ("/v1/admin/apps/%s/stats" % APP, "/v1/admin/apps/%s/devices" % APP,
                         "/v1/admin/fleet", "/v1/admin/audit"):
                st, h, body = curl("-H", "Authorization: Bearer " + node.token, node.admin_url + path)
                assert st == 200, (path, st, body[:200])
                json.loads(body)
                assert header(h, "Cache-Control") == "no-store", (path, h)

        check("a 5th concurrent scan of one token: 429 with Retry-After", scans_limited_per_token)
        check("/healthz answers while scans run", healthz_answers_during_scans)
        check("stats, overrides, fleet and audit answer from the scan thread", other_scans_are_offloaded)

        def encoded_names():
            base = "/v1/admin/apps/%s" % APP
            # SemVer build metadata: '+' arrives as %2B from encodeURIComponent and quote().
            st, doc = admin(node, "PUT", base + "/releases/1.0.3%2Bbuild.7", {})
            assert st == 201, (st, doc)
            assert doc["name"] == "1.0.3+build.7", doc
            st, doc = admin(node, "GET", base + "/releases/1.0.3%2Bbuild.7")
            assert st == 200 and doc["name"] == "1.0.3+build.7", (st, doc)
            st, doc = admin(node, "GET", base + "/releases/1.0.3+build.7")  # '+' as it is
            assert st == 200 and doc["name"] == "1.0.3+build.7", (st, doc)
            st, doc = admin(node, "PUT", base + "/channels/b%C3%AAta", {"release": "1.0.3+build.7"})
            assert st == 201, (st, doc)
            assert doc["name"] == "bêta", doc
            st, doc = admin(node, "GET", base + "/channels/b%C3%AAta")
            assert st == 200 and doc["name"] == "bêta" and doc["release"] == "1.0.3+build.7", (st, doc)
            st, doc = admin(node, "GET", base + "/channels")
            assert "bêta" in [c["name"] for c in doc["channels"]], doc
            st, doc = admin(node, "GET", base + "/channels/b%C3%AAta/history")
            assert st == 200 and doc, (st, doc)

        def encoded_names_from_ctl():
            env = dict(os.environ, BUNDLE_EDGE_URL=node.admin_url, BUNDLE_EDGE_TOKEN=node.token)
            r = subprocess.run([CTL, "release", "list", APP], capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 0 and "1.0.3+build.7" in r.stdout, (r.returncode, r.stdout, r.stderr)
            r = subprocess.run([CTL, "channel", "set", APP, "canal-ñ", "--release", "1.0.3+build.7"],
                               capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 0, (r.stdout, r.stderr)
            r = subprocess.run([CTL, "channel", "get", APP, "canal-ñ"], capture_output=True, text=True,
                               env=env, timeout=60)
            assert r.returncode == 0 and "1.0.3+build.7" in r.stdout, (r.stdout, r.stderr)
            st, doc = admin(node, "GET", "/v1/admin/apps/%s/channels/canal-%%C3%%B1" % APP)
            assert st == 200 and doc["release"] == "1.0.3+build.7", (st, doc)

        def bad_encodings():
            base = "/v1/admin/apps/%s/releases/" % APP
            for seg, why in (("1.0%ZZ", "two hex digits"), ("1.0%2", "two hex digits"),
                             ("a%2Fb", "'/'"), ("a%00b", "control character"), ("a%0Ab", "control character"),
                             ("a%C3", "UTF-8")):
                st, doc = admin(node, "PUT", base + seg, {})
                assert st == 400, (seg, st, doc)
                assert doc["error"] == "bad_path" and seg in doc["message"] and why in doc["message"], (seg, doc)
            # Refused before the token is looked at: no 401 hides the reason.
            st, _, body = curl(node.admin_url + base + "x%2Fy")
            assert st == 400 and b"bad_path" in body, (st, body)

        check("release 1.0.3+build.7 and channel bêta through encoded paths", encoded_names)
        check("bundle-edge-ctl with '+' and UTF-8 names", encoded_names_from_ctl)
        check("bad %XX, %2F, %00 and non-UTF-8 segments: 400 naming the segment", bad_encodings)

        def favicon():
            st, h, body = curl(node.admin_url + "/favicon.ico")
            assert st == 204 and body == b"", (st, h)
            st, _, _ = curl("-I", node.admin_url + "/favicon.ico")
            assert st == 204, st

        def api_headers():
            for args in (["-H", "Authorization: Bearer " + node.token, node.admin_url + "/v1/admin/apps"],
                         [node.admin_url + "/v1/admin/apps"],  # 401
                         ["-H", "Authorization: Bearer " + node.token,
                          node.admin_url + "/v1/admin/apps/%s/device_index" % APP],  # a scan
                         ["-X", "PUT", "--data-binary", "x", node.admin_url + "/v1/admin/blobs"],  # 401
                         ["-X", "PUT", "--data-binary", "x", "-H", "Authorization: Bearer " + node.token,
                          node.admin_url + "/v1/admin/blobs"]):  # an upload
                st, h, _ = curl(*args)
                assert st in (200, 201, 401), (args, st)
                assert header(h, "X-Content-Type-Options") == "nosniff", (args, h)
                assert header(h, "Cache-Control") == "no-store", (args, h)
                assert header(h, "Content-Type") == "application/json", (args, h)

        check("/favicon.ico answers 204 without a token", favicon)
        check("admin JSON answers: nosniff and no-store", api_headers)
    finally:
        node.stop()


if __name__ == "__main__":
    run(main)
