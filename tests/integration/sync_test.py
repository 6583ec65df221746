#!/usr/bin/env python3
"""Integration test of edges (issue #5): an origin and edges as real processes on 127.0.0.1.
Push and long-poll sync, single-flight fills, prefetch before a flip, an upstream outage,
kill -9 during check-ins, a corrupting upstream, tiering and snapshot catch-up.

Usage: sync_test.py <path-to-bundle-edge>"""
import hashlib
import http.client
import http.server
import json
import os
import socket
import struct
import threading
import time

from harness import run, TMP, Node, admin, check, curl, free_port, sha, upload

TOKEN = "sync-secret-for-tests"
APP = "com.example.edge"
ADMIN_APP = "/v1/admin/apps/" + APP


def origin(extra="", port=0):
    return Node('[sync]\ntoken = "%s"\n%s' % (TOKEN, extra), port=port)


def edge(upstream_url, extra="", port=0, args=()):
    conf = ('[node]\nrole = "edge"\n[sync]\ntoken = "%s"\n[upstream]\nurl = "%s"\ntoken = "%s"\n'
            'timeout_ms = 3000\nretries = 1\nbackoff_max_ms = 500\n%s' % (TOKEN, upstream_url, TOKEN, extra))
    return Node(conf, port=port, args=args)




def publish(node, version, size=200_000, public=True, channel="production", data=None):
    """Uploads a zip to the origin and points `channel` at a new release of it."""
    data = data if data is not None else os.urandom(size)
    path = os.path.join(TMP, "zip-%s-%s" % (version, os.getpid()))
    open(path, "wb").write(data)
    st, _, _ = upload(node, path)
    assert st in (200, 201), st
    if admin(node, "GET", ADMIN_APP)[0] != 200:
        assert admin(node, "PUT", ADMIN_APP, {})[0] == 201
    st, doc = admin(node, "PUT", ADMIN_APP + "/releases/" + version, {"zip": sha(data)})
    assert st == 201, (st, doc)
    publish.flipped_at = time.time()  # the channel write: what an edge must follow
    st, doc = admin(node, "PUT", ADMIN_APP + "/channels/" + channel, {"release": version, "public": public, "disable_auto_update": "none"})
    assert st in (200, 201), (st, doc)
    return data


DEVICE = {"platform": "android", "device_id": "0a1b2c3d-1111-4222-8333-444455556666", "app_id": APP,
          "custom_id": "", "version_build": "1.0.0", "version_code": "100", "version_os": "14",
          "version_name": "1.0.0", "plugin_version": "8.51.23", "is_emulator": False, "is_prod": True,
          "install_source": "google_play", "defaultChannel": ""}


def device_id(i):
    return "0a1b2c3d-1111-4222-8333-%012x" % i


def updates(node, device=0):
    """POST /updates as the plugin does: (status, document)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    conn.request("POST", "/updates", json.dumps(dict(DEVICE, device_id=device_id(device))),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    if r.status == 200:
        node.acked = getattr(node, "acked", 0) + 1  # every answered /updates is a check-in
    return r.status, json.loads(body)


def wait_for(what, fn, timeout=10.0, step=0.02):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(step)


def wait_version(node, version, timeout=10.0):
    return wait_for("version %s on :%d" % (version, node.port),
                    lambda: updates(node)[1].get("version") == version, timeout)


def origin_checkins(node):
    st, doc = admin(node, "GET", ADMIN_APP + "/stats")
    assert st == 200, (st, doc)
    return sum(d["actions"].get("updates", 0) for d in doc["days"])


def metric(node, name):
    return node.metrics().get(name, 0.0)


def name_blob(o, edges, blob, version):
    """A release naming `blob` (no channel points at it), synced to `edges`: an edge fills
    device misses only for blobs a release names."""
    if admin(o, "GET", ADMIN_APP)[0] != 200:
        assert admin(o, "PUT", ADMIN_APP, {})[0] == 201
    st, doc = admin(o, "PUT", ADMIN_APP + "/releases/" + version, {"zip": blob})
    assert st == 201, (st, doc)
    seq = metric(o, "edge_sync_cursor_seq")
    for e in edges:
        wait_for("release %s on :%d" % (version, e.port),
                 lambda: metric(e, "edge_sync_cursor_seq") >= seq)


def get_blob(node, blob_id):
    st, _, body = curl("http://127.0.0.1:%d/v1/blobs/%s" % (node.port, blob_id))
    return st, body


class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    """A fake upstream's handler: quiet, HTTP/1.1, reply(), and a feed whose state is one app
    with one release (`release_doc`, set by the subclass): edges fill only named blobs."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def feed(self):
        """Answers GET /v1/sync/changes (True), or leaves the request to the caller (False)."""
        if not self.path.startswith("/v1/sync/changes"):
            return False
        if "after=0&" in self.path:
            page = {"last_seq": 2, "changes": [
                {"seq": 1, "deleted": False, "kind": "app", "app_id": APP, "key": "", "doc": {}},
                {"seq": 2, "deleted": False, "kind": "release", "app_id": APP, "key": "1.0.0",
                 "doc": self.release_doc()}]}
            self.reply(200, json.dumps(page).encode())
        else:
            time.sleep(0.5)
            self.reply(200, b'{"last_seq":2,"changes":[]}')
        return True


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the edge closing a long poll at shutdown is not a failure


def serve(handler):
    srv = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main():
    nodes = []

    def keep(*ns):
        nodes.extend(ns)
        return ns if len(ns) > 1 else ns[0]

    def t_push():
        edge_port = free_port()
        o = keep(origin('push_to = ["http://127.0.0.1:%d"]\n' % edge_port))
        e = keep(edge(o.url, "poll_wait_ms = 60000\n", port=edge_port))
        publish(o, "1.0.1")
        wait_version(e, "1.0.1")
        # A later flip reaches the edge within a second.
        publish(o, "1.0.2")
        wait_version(e, "1.0.2", timeout=5)
        assert time.time() - publish.flipped_at < 1.0, time.time() - publish.flipped_at
        wait_for("a push received", lambda: metric(e, "edge_sync_pushes_received_total") >= 1)
        assert metric(o, "edge_sync_pushes_sent_total") >= 1
        # The feed carries the channel's download format (issue #10): a delta-only channel and
        # a zip-only release leave the edge nothing to offer, and it says so.
        st, doc = admin(o, "PUT", ADMIN_APP + "/channels/production",
                        {"release": "1.0.2", "public": True, "disable_auto_update": "none",
                         "update_package": "delta"})
        assert st == 200, (st, doc)
        wait_for("update_package on the edge", lambda: updates(e)[1].get("error") == "no_url_or_manifest")
        st, doc = admin(e, "GET", ADMIN_APP + "/channels/production")
        assert st == 200 and doc["update_package"] == "delta", (st, doc)
        # The edge refuses admin writes and uploads, naming the origin.
        st, doc = admin(e, "PUT", ADMIN_APP + "/channels/beta", {"release": "1.0.1"})
        assert st == 409 and "publish to the origin" in doc["message"], (st, doc)
        path = os.path.join(TMP, "small")
        open(path, "wb").write(b"x" * 100)
        assert upload(e, path)[0] == 409
        # Sync routes need the sync token.
        st, _, _ = curl(o.url + "/v1/sync/changes?after=0")
        assert st == 401, st
        st, _, _ = curl("-H", "Authorization: Bearer wrong", o.url + "/v1/sync/snapshot")
        assert st == 401, st

    def t_long_poll():
        o = keep(origin())
        e = keep(edge(o.url))
        publish(o, "2.0.0")
        wait_version(e, "2.0.0")
        publish(o, "2.0.1")
        wait_version(e, "2.0.1", timeout=5)
        assert time.time() - publish.flipped_at < 1.0, time.time() - publish.flipped_at
        assert metric(e, "edge_sync_pushes_received_total") == 0
        assert metric(e, "edge_sync_lag_seq") == 0

    def t_single_flight():
        o = keep(origin())
        e = keep(edge(o.url))
        data = os.urandom(3 << 20)
        path = os.path.join(TMP, "sf.bin")
        open(path, "wb").write(data)
        assert upload(o, path)[0] == 201
        blob = sha(data)
        name_blob(o, [e], blob, "0.0.1-sf")
        st, _, rec = curl("-H", "Authorization: Bearer " + TOKEN, o.url + "/v1/recipes/" + blob)
        chunks = {c["sha256"] for c in json.loads(rec)["chunks"]}
        assert len(chunks) > 10, len(chunks)
        before = o.metrics()
        results = [None] * 200

        def download(i):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", e.port, timeout=60)
                conn.request("GET", "/v1/blobs/" + blob)
                r = conn.getresponse()
                results[i] = (r.status, sha(r.read()))
                conn.close()
            except Exception as ex:  # noqa: BLE001 - recorded and asserted below
                results[i] = (0, repr(ex))

        threads = [threading.Thread(target=download, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bad = [r for r in results if r != (200, blob)]
        assert not bad, bad[:3]
        after = o.metrics()
        series = 'edge_http_requests_total{route="%s",status="%s"}'
        delta = lambda s: after.get(s, 0) - before.get(s, 0)
        recipes = delta(series % ("recipe", "200"))
        assert recipes == 1, recipes
        # Every chunk crossed once: runs of adjacent chunks as Range requests on the blob
        # (206), lone ones as chunk requests; the bytes moved are the blob's, once.
        ranges = delta(series % ("blob", "206"))
        moved = sum(delta('edge_http_response_body_bytes_total{route="%s"}' % r) for r in ("chunk", "blob"))
        assert ranges >= 1 and moved == len(data), (ranges, moved, len(data))
        assert delta(series % ("chunk", "200")) + ranges <= len(chunks)
        # Unknown ids: 404, and they never reach the origin (no release names them).
        for _ in range(3):
            st, _ = get_blob(e, "ab" * 32)
            assert st == 404, st
        misses = o.metrics().get('edge_http_requests_total{route="recipe",status="404"}', 0)
        assert misses == 0, misses

    def t_prefetch():
        o = keep(origin())
        e = keep(edge(o.url))
        publish(o, "3.0.0", size=1 << 20)
        wait_version(e, "3.0.0")
        data = publish(o, "3.0.1", size=2 << 20)
        wait_version(e, "3.0.1")
        fills = metric(e, "edge_fill_fetches_total")
        assert metric(e, "edge_prefetch_blobs_done_total") >= 2
        st, doc = updates(e, device=7)
        assert st == 200 and "url" in doc, doc
        st, _, body = curl(doc["url"])
        assert st == 200 and sha(body) == sha(data) == doc["checksum"]
        assert metric(e, "edge_fill_fetches_total") == fills, "the first download was a hit"

    def t_upstream_down():
        port = free_port()
        o = keep(origin(port=port))
        e = keep(edge(o.url))
        data = publish(o, "4.0.0")
        wait_version(e, "4.0.0")
        for i in range(5):
            assert updates(e, device=i)[0] == 200
        wait_for("outbox drained", lambda: metric(e, "edge_outbox_depth") == 0)
        o.stop()
        st, body = get_blob(e, sha(data))
        assert st == 200 and sha(body) == sha(data)
        for i in range(40):
            st, doc = updates(e, device=100 + i)
            assert st == 200 and doc["version"] == "4.0.0", doc
        acked = e.acked
        assert metric(e, "edge_outbox_depth") == 40
        time.sleep(1.0)  # a few failed sends: still queued
        assert metric(e, "edge_outbox_depth") == 40
        o.start()
        wait_for("outbox drained", lambda: metric(e, "edge_outbox_depth") == 0, timeout=20)
        wait_for("origin counted", lambda: origin_checkins(o) >= acked, timeout=5)
        time.sleep(0.5)
        assert origin_checkins(o) == acked, (origin_checkins(o), acked)

    def t_kill9():
        o = keep(origin())
        e = keep(edge(o.url))
        publish(o, "5.0.0")
        wait_version(e, "5.0.0")
        state = {"acked": e.acked, "sent": e.acked, "stop": False}

        def device_loop(k):
            i = 0
            while not state["stop"]:
                state["sent"] += 1
                try:
                    st, _ = updates(e, device=1000 * k + i)
                    if st == 200:
                        state["acked"] += 1
                except Exception:  # noqa: BLE001 - the edge died mid-request
                    return
                i += 1

        threads = [threading.Thread(target=device_loop, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        e.kill()
        state["stop"] = True
        for t in threads:
            t.join()
        assert state["acked"] > 20, state
        e.start()
        wait_for("outbox drained", lambda: metric(e, "edge_outbox_depth") == 0, timeout=20)
        wait_for("origin counted", lambda: origin_checkins(o) >= state["acked"], timeout=10)
        got = origin_checkins(o)
        assert state["acked"] <= got <= state["sent"], (got, state)

    def t_bad_chunk():
        parts = [os.urandom(40_000), os.urandom(50_000), os.urandom(30_000)]
        blob = b"".join(parts)
        blob_id = sha(blob)
        recipe = {"sha256": blob_id, "size": len(blob),
                  "chunks": [{"sha256": sha(p), "size": len(p)} for p in parts]}
        chunks = {sha(p): p for p in parts}
        bad_id = sha(parts[1])
        served = {"bad": 0}

        class Corrupting(UpstreamHandler):
            def release_doc(self):
                return {"zip": blob_id}

            def do_GET(self):
                if self.feed():
                    return
                if self.path == "/v1/recipes/" + blob_id:
                    return self.reply(200, json.dumps(recipe).encode())
                if self.path.startswith("/v1/chunks/"):
                    cid = self.path.rsplit("/", 1)[1]
                    body = bytearray(chunks[cid])
                    if cid == bad_id:
                        body[1234] ^= 0x01  # one flipped bit
                        served["bad"] += 1
                    return self.reply(200, bytes(body), "application/octet-stream")
                return self.reply(404, b'{"error":"not_found"}')

        srv = serve(Corrupting)
        try:
            e = keep(edge("http://127.0.0.1:%d" % srv.server_address[1]))
            wait_for("edge has the release", lambda: metric(e, "edge_sync_cursor_seq") >= 2)
            for _ in range(2):
                st, body = get_blob(e, blob_id)
                assert st == 502, st
                assert parts[1][:1000] not in body and b"verification" in body, body[:200]
            assert served["bad"] >= 2, "not stored: fetched again"
            assert metric(e, "edge_fill_verification_failures_total") >= 2
            tok = ("-H", "Authorization: Bearer " + TOKEN)
            st, _, _ = curl(*tok, "http://127.0.0.1:%d/v1/chunks/%s" % (e.port, bad_id))
            assert st == 502, st
            st, _, body = curl(*tok, "http://127.0.0.1:%d/v1/chunks/%s" % (e.port, sha(parts[0])))
            assert st == 200 and body == parts[0]
        finally:
            srv.shutdown()

    def t_tiering():
        o = keep(origin())
        mid = keep(edge(o.url))
        leaf = keep(edge(mid.url))
        data = publish(o, "6.0.0", size=500_000)
        wait_version(leaf, "6.0.0")
        st, doc = updates(leaf, device=1)
        assert st == 200 and "url" in doc, doc
        st, _, body = curl(doc["url"])
        assert st == 200 and sha(body) == sha(data) and doc["url"].startswith(leaf.url)
        other = os.urandom(300_000)  # not on any channel: filled through both tiers on demand
        path = os.path.join(TMP, "tier.bin")
        open(path, "wb").write(other)
        assert upload(o, path)[0] == 201
        name_blob(o, [mid, leaf], sha(other), "6.0.1-other")
        st, body = get_blob(leaf, sha(other))
        assert st == 200 and body == other
        for i in range(9):
            assert updates(leaf, device=10 + i)[0] == 200
        wait_for("check-ins reached the origin", lambda: origin_checkins(o) >= leaf.acked, timeout=15)
        time.sleep(0.5)
        assert origin_checkins(o) == leaf.acked, (origin_checkins(o), leaf.acked)

    def t_snapshot():
        o = keep(origin("changelog_keep = 2\n"))
        for v in ["7.0.0", "7.0.1", "7.0.2"]:
            publish(o, v)
        st, _, out = curl("-H", "Authorization: Bearer " + TOKEN, o.url + "/v1/sync/changes?after=0")
        assert st == 200 and json.loads(out)["snapshot"] is True, out
        e = keep(edge(o.url))
        wait_version(e, "7.0.2")
        assert metric(e, "edge_sync_snapshots_applied_total") == 1
        publish(o, "7.0.3")
        wait_version(e, "7.0.3")
        assert metric(e, "edge_sync_snapshots_applied_total") == 1, "then it follows the log"

    def t_idempotent():
        o = keep(origin())
        publish(o, "8.0.0")
        batch = {"checkins": [{"app_id": APP, "device_id": device_id(i), "platform": "ios", "version_name": "1.0.0",
                               "version_build": "1.0.0", "action": "updates", "decision": "update",
                               "time_ms": int(time.time() * 1000)} for i in range(3)]}
        args = ["-X", "POST", "-H", "Authorization: Bearer " + TOKEN, "-H", "Content-Type: application/json",
                "--data-binary", json.dumps(batch)]
        st, _, out = curl(*args, "-H", "Idempotency-Key: test-node:1", o.url + "/v1/checkins")
        assert st == 200 and json.loads(out) == {"applied": 3, "duplicate": False}, out
        st, _, out = curl(*args, "-H", "Idempotency-Key: test-node:1", o.url + "/v1/checkins")
        assert st == 200 and json.loads(out)["duplicate"] is True, out
        assert origin_checkins(o) == 3
        st, _, out = curl(*args, "-H", "Idempotency-Key: nonsense", o.url + "/v1/checkins")
        assert st == 400, st
        bad = dict(batch, checkins=[dict(batch["checkins"][0], time_ms="x")])
        st, _, out = curl("-X", "POST", "-H", "Authorization: Bearer " + TOKEN, "--data-binary", json.dumps(bad),
                          "-H", "Idempotency-Key: test-node:2", o.url + "/v1/checkins")
        assert st == 400 and b"time_ms" in out, out
        assert origin_checkins(o) == 3

    def recipe_digest(recipe):
        """store::Recipe::digest: SHA-256 of the binary form (u8 1, le64 size, le32 count,
        then per chunk its 32 id bytes and le32 length)."""
        out = b"\x01" + struct.pack("<QI", recipe["size"], len(recipe["chunks"]))
        for c in recipe["chunks"]:
            out += bytes.fromhex(c["sha256"]) + struct.pack("<I", c["size"])
        return hashlib.sha256(out).hexdigest()

    def t_recipe_pinned():
        # The origin pins each blob's recipe in the release document; the feed carries it.
        o = keep(origin())
        data = publish(o, "3.0.0", size=300_000)
        st, doc = admin(o, "GET", ADMIN_APP + "/releases/3.0.0")
        st, _, body = curl("-H", "Authorization: Bearer " + TOKEN, o.url + "/v1/recipes/" + sha(data))
        assert st == 200
        assert doc["recipe_sha256"] == {sha(data): recipe_digest(json.loads(body))}, doc
        # A publisher cannot pin a recipe of its choosing: the origin computes it.
        st, doc = admin(o, "PUT", ADMIN_APP + "/releases/3.0.0", {"zip": sha(data), "recipe_sha256": {sha(data): "0" * 64}})
        assert st == 200 and doc["unchanged"] and doc["recipe_sha256"][sha(data)] == recipe_digest(json.loads(body)), doc
        st, doc = admin(o, "PUT", ADMIN_APP + "/releases/3.0.1", {"zip": sha(data), "recipe_sha256": {"1" * 64: "0" * 64}})
        assert st == 400 and "recipe_sha256" in doc["message"], doc
        e = keep(edge(o.url))
        wait_version(e, "3.0.0")
        st, got = get_blob(e, sha(data))
        assert st == 200 and got == data
        assert metric(e, "edge_fill_recipe_mismatches_total") == 0

        # An upstream that serves another recipe than the one pinned (here: the true chunks
        # in another order, which a device would only find out at the last byte) is refused
        # before a single chunk is asked for.
        parts = [os.urandom(40_000), os.urandom(50_000), os.urandom(30_000)]
        blob = b"".join(parts)
        blob_id = sha(blob)
        recipe = {"sha256": blob_id, "size": len(blob), "chunks": [{"sha256": sha(p), "size": len(p)} for p in parts]}
        lie = dict(recipe, chunks=[recipe["chunks"][1], recipe["chunks"][0], recipe["chunks"][2]])
        asked = {"chunks": 0, "recipes": 0}

        class Lying(UpstreamHandler):
            def release_doc(self):
                return {"zip": blob_id, "recipe_sha256": {blob_id: recipe_digest(recipe)}}

            def do_GET(self):
                if self.feed():
                    return
                if self.path == "/v1/recipes/" + blob_id:
                    asked["recipes"] += 1
                    return self.reply(200, json.dumps(lie).encode())
                if self.path.startswith("/v1/chunks/"):
                    asked["chunks"] += 1
                return self.reply(404, b'{"error":"not_found"}')

        srv = serve(Lying)
        try:
            e2 = keep(edge("http://127.0.0.1:%d" % srv.server_address[1]))
            wait_for("edge has the release", lambda: metric(e2, "edge_sync_cursor_seq") >= 2)
            st, body = get_blob(e2, blob_id)
            assert st == 502 and b"verification" in body, (st, body[:200])
            assert asked["recipes"] >= 1 and asked["chunks"] == 0, asked
            assert metric(e2, "edge_fill_recipe_mismatches_total") >= 1
            assert metric(e2, "edge_fill_verification_failures_total") >= 1
        finally:
            srv.shutdown()

    class FakeUpstream:
        """An upstream whose feed names one release pinning the recipe of a blob of `sizes`
        chunks; serves the chunks, counting requests per chunk index, holding chunk `hold`
        until `release` is set and flipping a bit of chunk `corrupt`."""

        def __init__(self, sizes, hold=None, corrupt=None):
            self.parts = [os.urandom(n) for n in sizes]
            self.blob = b"".join(self.parts)
            self.blob_id = sha(self.blob)
            self.recipe = {"sha256": self.blob_id, "size": len(self.blob),
                           "chunks": [{"sha256": sha(p), "size": len(p)} for p in self.parts]}
            self.index = {sha(p): i for i, p in enumerate(self.parts)}
            self.asked = [0] * len(self.parts)
            self.hold, self.corrupt = hold, corrupt
            self.release = threading.Event()
            fake = self

            class Handler(UpstreamHandler):
                def release_doc(self):
                    return {"zip": fake.blob_id, "recipe_sha256": {fake.blob_id: recipe_digest(fake.recipe)}}

                def do_GET(self):
                    if self.feed():
                        return
                    if self.path == "/v1/recipes/" + fake.blob_id:
                        return self.reply(200, json.dumps(fake.recipe).encode())
                    if self.path.startswith("/v1/chunks/"):
                        i = fake.index.get(self.path.rsplit("/", 1)[1])
                        if i is None:
                            return self.reply(404, b'{"error":"not_found"}')
                        fake.asked[i] += 1
                        if i == fake.hold:
                            fake.release.wait(30)
                        body = bytearray(fake.parts[i])
                        if i == fake.corrupt:
                            body[len(body) // 2] ^= 0x01
                        return self.reply(200, bytes(body), "application/octet-stream")
                    return self.reply(404, b'{"error":"not_found"}')

            self.srv = serve(Handler)
            self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]

        def start(self, i):
            return sum(len(p) for p in self.parts[:i])

        def stop(self):
            self.release.set()
            self.srv.shutdown()

    def read_head(sock):
        """Reads a response head from a socket: (status, headers dict, bytes after it)."""
        data = b""
        while b"\r\n\r\n" not in data:
            d = sock.recv(65536)
            if not d:
                raise AssertionError("closed before the head: %r" % data[:200])
            data += d
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        return int(lines[0].split()[1]), headers, rest

    def fake_edge(fake):
        """An edge of `fake`, once it has the fake's release."""
        e = edge(fake.url)
        wait_for("edge has the release", lambda: metric(e, "edge_sync_cursor_seq") >= 2)
        return e

    def open_get(node, blob_id):
        """A raw GET of a blob: (socket, status, headers, body bytes read with the head)."""
        s = socket.create_connection(("127.0.0.1", node.port), timeout=15)
        s.sendall(("GET /v1/blobs/%s/app.zip HTTP/1.1\r\nHost: x\r\n\r\n" % blob_id).encode())
        return (s,) + read_head(s)

    def read_until(sock, have, n, timeout=15):
        sock.settimeout(timeout)
        while len(have) < n:
            d = sock.recv(1 << 20)
            if not d:
                break
            have += d
        return have

    def t_stream_first_bytes_before_fill_ends():
        # The last chunk is held upstream: the device gets its header and every byte before
        # that chunk while the fill is still running, then the rest, byte-exact.
        fake = FakeUpstream([100_000, 200_000, 150_000, 120_000, 80_000], hold=4)
        try:
            e = keep(fake_edge(fake))
            s, status, headers, body = open_get(e, fake.blob_id)
            assert status == 200 and int(headers["content-length"]) == len(fake.blob), (status, headers)
            before_held = fake.start(4)
            body = read_until(s, body, before_held)
            assert body[:before_held] == fake.blob[:before_held]
            # Chunks go out once verified, before they are stored: the fetch of the held
            # chunk may reach the fake just after the bytes before it reached us.
            wait_for("held chunk asked", lambda: fake.asked[4] == 1)
            assert not fake.release.is_set() and len(body) == before_held  # the fill is not over
            fake.release.set()
            body = read_until(s, body, len(fake.blob))
            s.close()
            assert body == fake.blob
            assert fake.asked == [1, 1, 1, 1, 1], fake.asked  # one fetch per chunk
            # The blob is whole now (its recipe stored once verified): a plain hit.
            wait_for("recipe stored", lambda: curl("-H", "Authorization: Bearer " + TOKEN,
                                                   e.url + "/v1/recipes/" + fake.blob_id)[0] == 200)
            st, got = get_blob(e, fake.blob_id)
            assert st == 200 and got == fake.blob and fake.asked == [1, 1, 1, 1, 1]
        finally:
            fake.stop()

    def t_stream_cut_before_bad_chunk():
        # Chunk 2 of 4 is corrupted upstream: the device gets chunks 0 and 1 whole and not a
        # byte of chunk 2; then the connection is cut. Nothing bad is stored.
        fake = FakeUpstream([90_000, 110_000, 100_000, 70_000], corrupt=2)
        try:
            e = keep(fake_edge(fake))
            s, status, headers, body = open_get(e, fake.blob_id)
            assert status == 200 and int(headers["content-length"]) == len(fake.blob)
            body = read_until(s, body, len(fake.blob))
            s.close()
            assert body == fake.blob[:fake.start(2)], (len(body), fake.start(2))
            assert metric(e, "edge_fill_verification_failures_total") >= 1
            # Not stored: asking for the chunk (as a child edge would) fetches it again.
            n = fake.asked[2]
            st, _, _ = curl("-H", "Authorization: Bearer " + TOKEN,
                            "%s/v1/chunks/%s" % (e.url, sha(fake.parts[2])))
            assert st == 502 and fake.asked[2] > n, (st, fake.asked)
            # A client resuming with Range gets the good chunks again, and no bad byte.
            st, _, got = curl("-r", "0-%d" % (fake.start(2) - 1), "%s/v1/blobs/%s" % (e.url, fake.blob_id))
            assert st == 206 and got == fake.blob[:fake.start(2)]
        finally:
            fake.stop()

    def t_stream_cold_range_fetches_its_chunks():
        fake = FakeUpstream([60_000, 70_000, 80_000, 90_000, 100_000])
        try:
            e = keep(fake_edge(fake))
            first, last = fake.start(2) + 10, fake.start(3) + 5  # ends 6 bytes into chunk 3
            st, _, got = curl("-r", "%d-%d" % (first, last), "%s/v1/blobs/%s" % (e.url, fake.blob_id))
            assert st == 206 and got == fake.blob[first:last + 1]
            assert fake.asked == [0, 0, 1, 1, 0], fake.asked
            st, _, got = curl("-r", "-1000", "%s/v1/blobs/%s" % (e.url, fake.blob_id))
            assert st == 206 and got == fake.blob[-1000:]
            assert fake.asked == [0, 0, 1, 1, 1], fake.asked
        finally:
            fake.stop()

    def t_stream_kill9_mid_fill():
        # kill -9 while a streamed fill waits for its last chunk; after a restart the edge
        # serves the blob byte-exact (what it kept is verified; the rest fills again).
        fake = FakeUpstream([100_000, 100_000, 100_000, 100_000], hold=3)
        try:
            e = fake_edge(fake)
            s, status, _, body = open_get(e, fake.blob_id)
            body = read_until(s, body, fake.start(3))
            assert status == 200 and body[:fake.start(3)] == fake.blob[:fake.start(3)]
            e.kill()
            s.close()
            fake.release.set()
            e.start()
            keep(e)
            st, got = get_blob(e, fake.blob_id)
            assert st == 200 and got == fake.blob
            st, _, got = curl("-r", "150000-250000", "%s/v1/blobs/%s" % (e.url, fake.blob_id))
            assert st == 206 and got == fake.blob[150000:250001]
        finally:
            fake.stop()

    def t_not_ready():
        # A fresh edge whose upstream is unreachable has nothing to answer devices with.
        e = keep(edge("http://127.0.0.1:%d" % free_port()))
        time.sleep(0.5)
        st, _, out = curl(e.url + "/readyz")
        assert st == 503, (st, out)
        assert curl(e.url + "/healthz")[0] == 200
        assert metric(e, "edge_sync_changes_applied_total") == 0

    try:
        for name, fn in [("fresh edge, upstream unreachable: not ready", t_not_ready),("push: edge follows within a second", t_push),
                         ("long poll without push", t_long_poll),
                         ("200 downloads, one fetch per chunk", t_single_flight),
                         ("prefetch: first download is a hit", t_prefetch),
                         ("upstream down: serve, queue, drain", t_upstream_down),
                         ("kill -9 during check-ins", t_kill9),
                         ("corrupt chunk is never served", t_bad_chunk),
                         ("recipes pinned by recipe_sha256", t_recipe_pinned),
                         ("streaming: first bytes before the fill ends", t_stream_first_bytes_before_fill_ends),
                         ("streaming: cut before a bad chunk's bytes", t_stream_cut_before_bad_chunk),
                         ("streaming: a cold range fetches its chunks only", t_stream_cold_range_fetches_its_chunks),
                         ("streaming: kill -9 mid-fill, restart", t_stream_kill9_mid_fill),
                         ("tiering: device-edge-edge-origin", t_tiering),
                         ("snapshot after log compaction", t_snapshot),
                         ("check-in batches apply once", t_idempotent)]:
            check(name, fn)
            for n in nodes:
                if n.proc.poll() is None:
                    n.stop()
            nodes.clear()
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                n.stop()


if __name__ == "__main__":
    run(main)
