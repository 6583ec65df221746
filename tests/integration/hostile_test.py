#!/usr/bin/env python3
"""Integration test of hostile input, full disks and lying peers (issue #9): real origins and
edges on 127.0.0.1, attacked the way the issue found them broken.

Usage: hostile_test.py <path-to-bundle-edge>"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time

from harness import run, TMP, Node, check, curl, free_port, raw, sha, upload
from sync_test import (APP, ADMIN_APP, DEVICE, TOKEN, admin, device_id, edge, metric, name_blob,
                       origin, origin_checkins, publish, updates, wait_for)


def post_updates(node, body, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=timeout)
    conn.request("POST", "/updates", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def status_of(reply):
    """The status codes of every response in a raw reply."""
    return [int(line.split()[1]) for line in reply.split(b"\r\n")
            if line.startswith(b"HTTP/1.1 ")]


def edge_pair(nodes, edge_extra="", origin_port=0):
    o = origin(port=origin_port)
    nodes.append(o)
    e = edge(o.url, edge_extra)
    nodes.append(e)
    publish(o, "1.0.1")
    wait_for("edge synced", lambda: updates(e)[1].get("version") == "1.0.1")
    return o, e


def named_upload(o, edges, version, size=300_000):
    """A random blob uploaded to the origin and named by release `version` (on no channel,
    so not prefetched), synced to `edges`; returns its bytes."""
    path = os.path.join(TMP, "blob-" + version)
    data = os.urandom(size)
    open(path, "wb").write(data)
    assert upload(o, path)[0] in (200, 201)
    name_blob(o, edges, sha(data), version)
    return data


def proxied_pair(nodes, drip_delay, edge_extra=""):
    """An origin with 1.0.1 published and an edge that reaches it through a Tamper proxy
    (not dripping yet), synced: (origin, proxy, edge)."""
    o = origin()
    nodes.append(o)
    publish(o, "1.0.1")
    proxy = Tamper(o.port, drip_paths=(), drip_delay=drip_delay)
    e = edge(proxy.url, edge_extra)
    nodes.append(e)
    wait_for("edge synced", lambda: updates(e)[1].get("version") == "1.0.1")
    return o, proxy, e


def drained(e):
    return metric(e, "edge_outbox_depth") == 0


def main():
    nodes = []

    # --- item 1: a check-in that splits a character, or grows past the body limit once
    # escaped, must not wedge the outbox; a batch refused for good is set aside.
    def t_multibyte_checkin_does_not_wedge_the_outbox():
        o, e = edge_pair(nodes)
        base = origin_checkins(o)
        st, _ = post_updates(e, dict(DEVICE, version_name="\u20ac" * 400))
        assert st == 200, st
        for i in range(3):
            assert updates(e, device=i)[0] == 200
        wait_for("outbox drained", lambda: drained(e), timeout=15)
        wait_for("all 4 check-ins upstream", lambda: origin_checkins(o) - base >= 4, timeout=15)
        assert metric(e, "edge_outbox_dead_letter_batches") == 0
        # The origin's own stats stay valid UTF-8 (json.loads would fail otherwise).
        st, out = admin(o, "GET", ADMIN_APP + "/stats")
        assert st == 200, st

    def t_control_characters_during_an_outage():
        port = free_port()
        o, e = edge_pair(nodes, origin_port=port)
        base = origin_checkins(o)
        o.stop()
        # 300 check-ins whose fields are mostly control characters: 6 bytes each escaped.
        nasty = "\x01" * 1000
        for i in range(300):
            st, _ = post_updates(e, dict(DEVICE, device_id=device_id(i), version_build="1.0.0",
                                         custom_id=nasty, version_name="1.0.0" + "\x02" * 900))
            assert st == 200, st
        o.start()
        wait_for("outbox drained after the outage", lambda: drained(e), timeout=60)
        got = origin_checkins(o) - base
        assert got >= 300, got
        assert metric(e, "edge_outbox_dead_letter_batches") == 0

    def t_refused_batch_is_a_dead_letter():
        o, e = edge_pair(nodes, "")
        # A proxy in front of the origin refuses the first check-in batch with a 400.
        proxy = Tamper(o.port, refuse_checkins=1)
        e2 = edge(proxy.url)
        nodes.append(e2)
        wait_for("edge 2 synced", lambda: updates(e2)[1].get("version") == "1.0.1")
        base = origin_checkins(o)
        wait_for("first batch dead-lettered",
                 lambda: metric(e2, "edge_outbox_dead_letter_batches") == 1, timeout=15)
        for i in range(5):
            assert updates(e2, device=100 + i)[0] == 200
        wait_for("the rest flows", lambda: drained(e2), timeout=15)
        assert origin_checkins(o) - base >= 5
        st, _, out = curl("-H", "Authorization: Bearer " + e2.token,
                          e2.admin_url + "/v1/admin/outbox/dead-letters")
        doc = json.loads(out)
        assert st == 200 and len(doc["dead_letters"]) == 1, (st, doc)
        dead = doc["dead_letters"][0]
        assert dead["reason"].startswith("HTTP 400"), dead
        assert dead["checkins"] and dead["checkins"][0]["app_id"] == APP, dead
        # Read-only: a write is 405, and the route needs the admin token.
        st, _, _ = curl("-X", "DELETE", "-H", "Authorization: Bearer " + e2.token,
                        e2.admin_url + "/v1/admin/outbox/dead-letters")
        assert st == 405, st
        assert curl(e2.admin_url + "/v1/admin/outbox/dead-letters")[0] == 401
        ctl = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                           "bundle-edge-ctl")
        out = subprocess.run([ctl, "--url", e2.admin_url, "--token", e2.token, "outbox",
                              "dead-letters"], capture_output=True, text=True)
        assert out.returncode == 0 and "HTTP 400" in out.stdout, (out.stdout, out.stderr)
        proxy.stop()

    # --- item 2: a full disk: reads go on, writes get 507/503, the node recovers by itself
    # and starts on a full disk.
    def t_full_disk():
        mnt = os.path.join(TMP, "small-disk")
        os.makedirs(mnt)
        m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt],
                           capture_output=True, text=True)
        if m.returncode != 0:
            print("SKIP item2 full disk: cannot mount a tmpfs here (%s)" % m.stderr.strip())
            return
        try:
            full_disk_case(mnt, nodes)
        finally:
            for n in nodes:
                if n.proc.poll() is None:
                    n.stop()
            nodes.clear()
            subprocess.run(["umount", "-l", mnt])

    # --- item 3: framing that a proxy and this server could read differently.
    def t_request_smuggling_is_refused():
        o = origin()
        nodes.append(o)
        inner = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for te in (b"xchunked", b"identity", b"chunked, identity", b"gzip, chunked"):
            req = (b"POST /updates HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te +
                   b"\r\n\r\n" + inner)
            reply = raw(o.port, req)
            assert status_of(reply) == [400], (te, reply[:300])
            assert b"Connection: close" in reply, reply[:300]
        # Transfer-Encoding and Content-Length together; TE in HTTP/1.0.
        reply = raw(o.port, b"POST /updates HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert status_of(reply) == [400], reply[:300]
        reply = raw(o.port, b"POST /updates HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert status_of(reply) == [400], reply[:300]
        # Host: none, or two, in HTTP/1.1 (RFC 9112 §3.2); HTTP/1.0 without Host is fine.
        assert status_of(raw(o.port, b"GET /healthz HTTP/1.1\r\n\r\n")) == [400]
        assert status_of(raw(o.port, b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")) == [400]
        assert status_of(raw(o.port, b"GET /healthz HTTP/1.0\r\n\r\n")) == [200]
        # Absolute-form targets are accepted (§3.2.2), and a real chunked body still works.
        assert status_of(raw(o.port, b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\n"
                                     b"Connection: close\r\n\r\n")) == [200]
        body = json.dumps(dict(DEVICE)).encode()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        reply = raw(o.port, b"POST /updates HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                            b"Connection: close\r\n\r\n" + chunked)
        assert status_of(reply) and status_of(reply)[0] in (200, 429), reply[:300]

    def t_bearer_scheme_is_case_insensitive():
        o = origin()
        nodes.append(o)
        for scheme in ("Bearer", "bearer", "BEARER"):
            st, _, _ = curl("-H", "Authorization: %s %s" % (scheme, o.token), o.admin_url + "/metrics")
            assert st == 200, (scheme, st)
        st, _, _ = curl("-H", "Authorization: Basic " + o.token, o.admin_url + "/metrics")
        assert st == 401, st

    # --- item 4: restarted batch numbering must never read as duplicates.
    def t_wiped_edge_with_pinned_id_loses_nothing():
        o = origin()
        nodes.append(o)
        publish(o, "1.0.1")
        base = origin_checkins(o)
        # Someone with the sync token posts a huge batch number for the victim first.
        forged = json.dumps({"checkins": []})
        st, _, _ = curl("-X", "POST", "-H", "Authorization: Bearer " + TOKEN, "-H",
                        "Idempotency-Key: victim:18446744073709551615", "-H",
                        "Content-Type: application/json", "--data-binary", forged,
                        o.url + "/v1/checkins")
        assert st == 200, st
        acked = 0
        for round_ in range(2):
            # The operator pins the id (--node-id) and the data dir is wiped between rounds.
            e = edge(o.url, args=["--node-id", "victim"])
            nodes.append(e)
            wait_for("edge synced", lambda: updates(e)[1].get("version") == "1.0.1")
            for i in range(20):
                assert updates(e, device=round_ * 100 + i)[0] == 200
            wait_for("outbox drained", lambda: drained(e), timeout=15)
            acked += e.acked
            e.stop()
            shutil.rmtree(os.path.join(e.dir, "var"))
        got = origin_checkins(o) - base
        assert got >= acked and acked >= 40, (got, acked)

    # --- item 5: slow bodies, connection floods and the operator's access.
    def t_nobody_locks_everyone_out():
        o = origin('[server]\nmax_connections = 40\nmax_connections_per_ip = 30\n'
                   'body_timeout_ms = 1000\n')
        nodes.append(o)
        drip = b"POST /updates HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"
        socks = []

        def open_from(src):
            s = socket.socket()
            s.bind((src, 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", o.port))
            s.sendall(drip)
            return s
        t0 = time.time()
        socks += [open_from("127.0.0.1") for _ in range(30)]
        time.sleep(0.2)
        extra = open_from("127.0.0.1")
        assert extra.recv(1000).startswith(b"HTTP/1.1 503"), "per-address limit"
        socks += [open_from("127.0.0.2") for _ in range(10)]
        time.sleep(0.2)
        over = open_from("127.0.0.3")
        reply = over.recv(1000)
        assert reply.startswith(b"HTTP/1.1 503") and b"max_connections" in reply, reply[:200]
        # The operator still gets in: the admin listener has its own budget.
        lat = []
        for _ in range(20):
            a = time.time()
            st, _, _ = curl(o.admin_url + "/healthz")
            lat.append(time.time() - a)
            assert st == 200, st
        st, _, _ = curl("-H", "Authorization: Bearer " + o.token, o.admin_url + "/metrics")
        assert st == 200, st
        # Slow JSON bodies get the short body timeout (1 s), not the upload timeout.
        timed_out = 0
        for s_ in socks:
            try:
                if s_.recv(1000).startswith(b"HTTP/1.1 408"):
                    timed_out += 1
            except socket.timeout:
                pass
            s_.close()
        assert timed_out == 40, timed_out
        assert time.time() - t0 < 8, time.time() - t0
        lat.sort()
        print("  admin /healthz under the flood: max %.1f ms (curl included)" % (lat[-1] * 1000))

    # --- item 6: a fill that outlives shutdown_grace_ms must not crash the shutdown.
    def t_shutdown_with_a_fill_in_flight():
        o = origin()
        nodes.append(o)
        publish(o, "1.0.1")
        proxy = Tamper(o.port, drip_paths=(), drip_delay=0.3)
        blobs = [sha(named_upload(o, [], "1.0.2-lone%d" % i, 100_000)) for i in range(3)]
        # The crash was a race (2 of 3 runs): several rounds, fills on both event-loop threads.
        for round_ in range(3):
            proxy.drip_paths = ()
            e = edge(proxy.url, "[server]\nshutdown_grace_ms = 200\n")
            nodes.append(e)
            seq = metric(o, "edge_sync_cursor_seq")
            wait_for("edge synced", lambda: metric(e, "edge_sync_cursor_seq") >= seq)
            proxy.drip_paths = ("/v1/recipes/",)
            getters = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "--max-time", "20",
                                         "%s/v1/blobs/%s" % (e.url, b)]) for b in blobs * 2]
            time.sleep(0.7)  # the fills are waiting on the dripping recipes
            rc = e.stop()
            for g in getters:
                g.wait()
            assert rc == 0, "round %d: edge exited with %s (negative: a signal)" % (round_, rc)
        proxy.stop()

    # --- item 7: timeouts bound whole requests; lost contact shows in /readyz.
    def t_upstream_timeouts_bound_the_request():
        o, proxy, e = proxied_pair(nodes, 0.2, "")
        data = named_upload(o, [e], "1.0.2-dripped", 300_000)
        proxy.drip_paths = ("/v1/recipes/",)  # a byte every 0.2 s: a recipe takes a minute
        t0 = time.time()
        st, _, _ = curl("--max-time", "60", "%s/v1/blobs/%s" % (e.url, sha(data)))
        took = time.time() - t0
        # timeout_ms = 3000, retries = 1 (sync_test's edge): two bounded tries and a backoff.
        assert st == 502 and took < 10, (st, took)
        proxy.stop()

    def t_lost_contact_shows_in_readyz():
        o, proxy, e = proxied_pair(nodes, 0.5, "poll_wait_ms = 500\nstale_after_ms = 3000\n")
        st, _, out = curl(e.url + "/readyz")
        assert st == 200 and json.loads(out)["status"] == "ok", out
        proxy.drip_paths = ("/v1/sync/",)  # every feed answer now drips
        wait_for("readyz degraded", lambda: json.loads(curl(e.url + "/readyz")[2])["status"] ==
                 "degraded", timeout=15)
        assert metric(e, "edge_sync_stale") == 1
        assert updates(e)[0] == 200, "the edge still answers devices"
        proxy.drip_paths = ()
        wait_for("readyz ok again", lambda: json.loads(curl(e.url + "/readyz")[2])["status"] ==
                 "ok", timeout=15)
        proxy.stop()

    # --- item 8: cache-busting ids do not become upstream load; fills have per-client bounds.
    def t_cache_busting_ids_cost_nothing_upstream():
        o = origin()
        nodes.append(o)
        publish(o, "1.0.1")
        e = edge(o.url, "max_fills_per_client = 2\n")
        nodes.append(e)
        wait_for("edge synced", lambda: updates(e)[1].get("version") == "1.0.1")
        before = o.metrics()
        statuses = {}
        conn = http.client.HTTPConnection("127.0.0.1", e.port, timeout=10)
        for i in range(2000):
            rid = sha(os.urandom(8))
            path = ("/v1/chunks/%s" if i % 2 else "/v1/blobs/%s/x.zip") % rid
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            statuses[r.status] = statuses.get(r.status, 0) + 1
        assert statuses == {401: 1000, 404: 1000}, statuses
        after = o.metrics()
        upstream = sum(after.get(k, 0) - before.get(k, 0) for k in after
                       if k.startswith("edge_http_requests_total") and
                       ('route="chunk"' in k or 'route="recipe"' in k))
        assert upstream == 0, upstream
        # A real device's fill still goes through at once.
        data = named_upload(o, [e], "1.0.2-real", 200_000)
        t0 = time.time()
        st, _, body = curl("%s/v1/blobs/%s" % (e.url, sha(data)))
        assert st == 200 and body == data and time.time() - t0 < 3, (st, time.time() - t0)

    def t_fills_per_client_are_bounded():
        o, proxy, e = proxied_pair(nodes, 0.05, "max_fills_per_client = 2\n")
        blobs = [sha(named_upload(o, [e], "1.0.3-slow%d" % i, 100_000)) for i in range(3)]
        proxy.drip_paths = ("/v1/recipes/",)  # each fill now takes ~10 s
        getters = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "--max-time", "30",
                                     "%s/v1/blobs/%s" % (e.url, b)]) for b in blobs[:2]]
        time.sleep(0.5)
        # Two distinct fills from this address are in flight: a third id waits its turn...
        st, h, out = curl("%s/v1/blobs/%s" % (e.url, blobs[2]))
        assert st == 503 and json.loads(out)["error"] == "fill_busy", (st, out)
        assert "Retry-After" in h
        # ...while more requests for an id it already waits on join that fill for free.
        joiner = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                   "--max-time", "30", "%s/v1/blobs/%s" % (e.url, blobs[0])],
                                  stdout=subprocess.PIPE)
        proxy.drip_paths = ()
        out, _ = joiner.communicate()
        assert out == b"200", out
        for g in getters:
            g.wait()
        proxy.stop()

    # --- item 9: override floods (the write rate is a benchmark: bench/load/override-flood.py).
    def t_override_flood():
        o = origin()
        nodes.append(o)
        publish(o, "1.0.1")
        st, doc = admin(o, "PUT", ADMIN_APP + "/channels/beta",
                        {"release": "1.0.1", "allow_device_self_set": True})
        assert st in (200, 201), (st, doc)
        e = edge(o.url)
        nodes.append(e)
        n = 3000
        errors = []

        def writer(k):
            conn = http.client.HTTPConnection("127.0.0.1", o.port, timeout=30)
            for i in range(k, n, 16):
                body = json.dumps(dict(DEVICE, device_id=device_id(50_000 + i), plugin_version="5.0.0",
                                       channel="beta"))
                conn.request("POST", "/channel_self", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                out = r.read()
                if r.status != 200 or json.loads(out).get("status") != "ok":
                    errors.append(out)
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:2]
        def all_overrides():
            # The override list is paged (cursor, limit, "next"), as the device index is.
            out, cursor = [], ""
            while True:
                st, doc = admin(o, "GET", ADMIN_APP + "/devices?limit=1000&cursor=" + cursor)
                assert st == 200 and len(doc["devices"]) <= 1000, (st, doc)
                out += doc["devices"]
                if doc["next"] is None:
                    return out
                cursor = doc["next"]
        assert len(all_overrides()) == n
        # The edge follows all of them, in byte-bounded pages.
        seq = metric(o, "edge_sync_cursor_seq")
        wait_for("edge follows the overrides", lambda: metric(e, "edge_sync_cursor_seq") >= seq,
                 timeout=30)
        st, d = updates(e, device=50_000 + 7)
        assert st == 200, (st, d)
        o.restart()  # and they are all there after a restart (loaded in place, not copied)
        assert len(all_overrides()) == n
        # Feed pages are bounded in bytes, not only in count: 300 changes of 8 KiB each do not
        # come as one 2.4 MB page.
        after = metric(o, "edge_sync_cursor_seq")
        zip_id = admin(o, "GET", ADMIN_APP + "/releases/1.0.1")[1]["zip"]
        for i in range(300):
            st, _ = admin(o, "PUT", ADMIN_APP + "/releases/9.0.%d" % i,
                          {"zip": zip_id, "comment": "c" * 8192})
            assert st == 201, st
        st, _, body = curl("-H", "Authorization: Bearer " + TOKEN,
                           "%s/v1/sync/changes?after=%d&wait_ms=0" % (o.url, after))
        page = json.loads(body)
        assert st == 200 and 50 < len(page["changes"]) < 300, (st, len(page["changes"]))
        assert len(body) < (1 << 20) + 65536, len(body)

    # --- item 10: a lying or broken upstream.
    def t_lying_upstream():
        fake = FakeUpstream()
        try:
            e = edge(fake.url, "poll_wait_ms = 200\n")
            nodes.append(e)
            wait_for("edge at seq 4", lambda: metric(e, "edge_sync_cursor_seq") == 4)
            # A change with a field a newer origin added is applied (forward compatibility).
            fake.add({"kind": "channel", "app_id": APP, "key": "future",
                      "doc": {"release": "1.0.0", "public": False, "brand_new_field": {"x": 1}}})
            wait_for("unknown field applied", lambda: metric(e, "edge_sync_cursor_seq") == 5)
            # A chunk body larger than any chunk is refused without being read whole.
            fake.huge_chunk = True
            st, body = curl_blob(e, fake.cold)
            assert st == 502, st
            assert metric(e, "edge_fill_verification_failures_total") >= 1
            # The feed going backwards in the same epoch is not followed.
            fake.truncate(2)
            wait_for("upstream behind", lambda: metric(e, "edge_sync_upstream_behind") == 1)
            assert metric(e, "edge_sync_cursor_seq") == 5
            # An older snapshot is never applied, and not fetched in a tight loop.
            fake.force_snapshot = True
            n0 = fake.snapshot_requests
            time.sleep(2)
            assert metric(e, "edge_sync_cursor_seq") == 5
            assert metric(e, "edge_sync_snapshots_applied_total") == 0
            assert fake.snapshot_requests - n0 < 15, fake.snapshot_requests - n0
            # A new epoch (the upstream's data was reset): followed, through a snapshot.
            fake.force_snapshot = False
            fake.reset_epoch("bbbb")
            wait_for("new epoch followed", lambda: metric(e, "edge_sync_epoch_changes_total") == 1
                     and metric(e, "edge_sync_cursor_seq") == 4, timeout=15)
            assert metric(e, "edge_sync_snapshots_applied_total") >= 1
            # A gap in the feed: a snapshot, not a retry for ever.
            fake.gap = True
            fake.add({"kind": "channel", "app_id": APP, "key": "later",
                      "doc": {"release": "1.0.0", "public": False}})
            fake.add({"kind": "channel", "app_id": APP, "key": "later2",
                      "doc": {"release": "1.0.0", "public": False}})
            wait_for("gap answered with a snapshot", lambda: metric(e, "edge_sync_cursor_seq") == 6,
                     timeout=15)
        finally:
            fake.stop()

    # --- item 11: errors do not echo megabytes of input.
    def t_errors_quote_little():
        o = origin()
        nodes.append(o)
        publish(o, "1.0.1")
        st, data = post_updates(o, dict(DEVICE, version_build="x" * 1_000_000))
        assert st == 400, st
        assert len(data) < 2048, len(data)
        json.loads(data)

    tests = [
        ("item1 multibyte check-in does not wedge", t_multibyte_checkin_does_not_wedge_the_outbox),
        ("item1 control characters during outage", t_control_characters_during_an_outage),
        ("item1 refused batch becomes a dead letter", t_refused_batch_is_a_dead_letter),
        ("item2 full disk", t_full_disk),
        ("item3 request smuggling refused", t_request_smuggling_is_refused),
        ("item3 bearer scheme case-insensitive", t_bearer_scheme_is_case_insensitive),
        ("item4 wiped edge with pinned id", t_wiped_edge_with_pinned_id_loses_nothing),
        ("item5 nobody locks everyone out", t_nobody_locks_everyone_out),
        ("item6 shutdown with a fill in flight", t_shutdown_with_a_fill_in_flight),
        ("item7 upstream timeouts bound the request", t_upstream_timeouts_bound_the_request),
        ("item7 lost contact shows in readyz", t_lost_contact_shows_in_readyz),
        ("item8 cache-busting ids cost nothing upstream", t_cache_busting_ids_cost_nothing_upstream),
        ("item8 fills per client are bounded", t_fills_per_client_are_bounded),
        ("item9 override flood", t_override_flood),
        ("item10 lying upstream", t_lying_upstream),
        ("item11 errors quote little", t_errors_quote_little),
    ]
    only = os.environ.get("EDGE_IT_ONLY")
    try:
        for name, fn in tests:
            if only and only not in name:
                continue
            check(name, fn)
            for n in nodes:
                if n.proc is not None and n.proc.poll() is None:
                    n.stop()
            nodes.clear()
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.stop()


def full_disk_case(mnt, nodes):
    conf = ('[store]\nmin_free = "8MiB"\nreserve = "4MiB"\nsegment_size = "4MiB"\n'
            '[sync]\ntoken = "%s"\n' % TOKEN)
    o = Node(conf, data=os.path.join(mnt, "var"))
    nodes.append(o)
    data = publish(o, "1.0.1", size=1_000_000)
    blob = sha(data)
    # Upload until the node refuses: 507 storage_full, never a crash.
    statuses = []
    for i in range(12):
        path = os.path.join(TMP, "fill-%d" % i)
        open(path, "wb").write(os.urandom(6_000_000))
        st, _, out = upload(o, path)
        statuses.append(st)
        os.unlink(path)
        if st == 507:
            assert json.loads(out)["error"] == "storage_full", out
            break
    assert statuses[-1] == 507, statuses
    assert o.proc.poll() is None, "the node died"
    wait_for("storage_full metric", lambda: metric(o, "edge_storage_full") == 1)
    # Reads go on: the blob, /updates (from memory), health.
    st, _, body = curl(o.url + "/v1/blobs/" + blob)
    assert st == 200 and body == data, st
    for i in range(50):
        st, doc = updates(o, device=i)
        assert st == 200 and doc.get("version") == "1.0.1", (st, doc)
    # Writes are refused with a clear answer.
    st, doc = admin(o, "PUT", ADMIN_APP + "/channels/beta", {"release": "1.0.1"})
    assert st == 507 and doc["error"] == "storage_full", (st, doc)
    ev = dict(DEVICE, action="set", version_name="1.0.1")
    st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                      json.dumps(ev), o.url + "/stats")
    assert st == 503 and json.loads(out)["error"] == "storage_full", (st, out)
    assert metric(o, "edge_storage_writes_refused_total") > 0
    # kill -9 and start again with the disk entirely full (another process filled it).
    o.kill()
    filler = os.path.join(mnt, "filler")
    subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=1M", "count=100"],
                   capture_output=True)
    o.start()
    assert "storage full at start" in open(o.log_path).read()
    st, _, body = curl(o.url + "/v1/blobs/" + blob)
    assert st == 200 and body == data, st
    assert updates(o)[0] == 200
    # Space returns: writes resume by themselves.
    os.unlink(filler)
    wait_for("writes resume", lambda: metric(o, "edge_storage_full") == 0, timeout=10)
    st, doc = admin(o, "PUT", ADMIN_APP + "/channels/beta", {"release": "1.0.1"})
    assert st in (200, 201), (st, doc)
    o.stop()
    o.start()  # and nothing acknowledged was lost
    st, doc = admin(o, "GET", ADMIN_APP + "/channels/beta")
    assert st == 200, (st, doc)
    o.stop()
    shutil.rmtree(o.data)  # its uploads filled the small disk: room for what follows
    # A fresh origin started below store.min_free (with more than the 4 MiB floor free) runs
    # with writes refused; its new feed epoch is written with the first change once space
    # returns, and survives a restart.
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=1M", "count=%d" % ((free >> 20) - 6)],
                   capture_output=True)
    fresh = Node(conf, data=os.path.join(mnt, "fresh"))
    nodes.append(fresh)
    assert fresh.proc.poll() is None, open(fresh.log_path).read()
    assert "written with the first change once space returns" in open(fresh.log_path).read()
    assert curl(fresh.url + "/healthz")[0] == 200
    st, doc = admin(fresh, "PUT", ADMIN_APP, {})
    assert st == 507 and doc["error"] == "storage_full", (st, doc)

    def feed_epoch(node):
        st, _, out = curl("-H", "Authorization: Bearer " + TOKEN, node.url + "/v1/sync/changes?after=0&wait_ms=0")
        assert st == 200, (st, out)
        return json.loads(out)["epoch"]
    epoch = feed_epoch(fresh)
    assert epoch, "a fresh origin names its feed epoch even on a full disk"
    os.unlink(filler)
    wait_for("writes resume on the fresh origin", lambda: metric(fresh, "edge_storage_full") == 0, timeout=10)
    st, doc = admin(fresh, "PUT", ADMIN_APP, {})
    assert st == 201, (st, doc)
    fresh.stop()
    fresh.start()
    assert feed_epoch(fresh) == epoch, "the epoch was written with the first change"
    fresh.stop()


def curl_blob(node, blob):
    st, _, body = curl("--max-time", "30", "%s/v1/blobs/%s" % (node.url, blob))
    return st, body


class FakeUpstream:
    """An upstream that says what the test wants: a feed (epoch, changes, snapshot), a
    recipe and chunks for one blob, with switches to lie."""

    def __init__(self):
        import http.server

        fake = self
        self.epoch = "aaaa"
        self.blob_data = os.urandom(5000)
        self.blob = sha(self.blob_data)
        self.cold_data = os.urandom(5000)  # named by a release on no channel: not prefetched
        self.cold = sha(self.cold_data)
        self.changes = []
        self.huge_chunk = False
        self.force_snapshot = False
        self.gap = False
        self.snapshot_requests = 0
        self.lock = threading.Lock()
        self.add({"kind": "app", "app_id": APP, "key": "", "doc": {}})
        self.add({"kind": "release", "app_id": APP, "key": "1.0.0", "doc": {"zip": self.blob}})
        self.add({"kind": "release", "app_id": APP, "key": "0.9.0", "doc": {"zip": self.cold}})
        self.add({"kind": "channel", "app_id": APP, "key": "production",
                  "doc": {"release": "1.0.0", "public": True}})
        self.initial = list(self.changes)

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, obj, raw=None):
                body = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                with fake.lock:
                    last = len(fake.changes)
                    if self.path.startswith("/v1/sync/changes"):
                        after = int(self.path.split("after=")[1].split("&")[0])
                        if fake.force_snapshot:
                            return self.reply({"last_seq": last + 10, "epoch": fake.epoch,
                                               "snapshot": True})
                        page = [dict(c, seq=i + 1, deleted=False)
                                for i, c in enumerate(fake.changes) if i + 1 > after]
                        if fake.gap and page:
                            page = page[1:]  # the first change the follower needs is missing
                        if not page:
                            time.sleep(0.2)
                        return self.reply({"last_seq": last, "epoch": fake.epoch, "changes": page})
                    if self.path == "/v1/sync/snapshot":
                        fake.snapshot_requests += 1
                        seq = 0 if fake.force_snapshot else last
                        docs = [] if fake.force_snapshot else fake.docs()
                        return self.reply({"last_seq": seq, "epoch": fake.epoch, "docs": docs})
                    for bid, data in ((fake.blob, fake.blob_data), (fake.cold, fake.cold_data)):
                        if self.path == "/v1/recipes/" + bid:
                            return self.reply({"sha256": bid, "size": len(data),
                                               "chunks": [{"sha256": bid, "size": len(data)}]})
                    if self.path.startswith("/v1/chunks/"):
                        if fake.huge_chunk and self.path.endswith(fake.cold):
                            self.send_response(200)
                            self.send_header("Content-Length", str(256 << 20))
                            self.end_headers()
                            try:
                                for _ in range(64):
                                    self.wfile.write(b"x" * (1 << 20))
                            except OSError:
                                pass
                            return
                        return self.reply(None, raw=fake.cold_data if self.path.endswith(
                            fake.cold) else fake.blob_data)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Quiet(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.server = Quiet(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, change):
        with self.lock:
            self.changes.append(change)

    def truncate(self, n):
        with self.lock:
            self.changes = self.changes[:n]

    def reset_epoch(self, epoch):
        with self.lock:
            self.epoch = epoch
            self.changes = list(self.initial)
            self.gap = False

    def docs(self):
        latest = {}
        for c in self.changes:
            latest[(c["kind"], c["app_id"], c["key"])] = c
        return [{"kind": k[0], "app_id": k[1], "key": k[2], "doc": c["doc"]}
                for k, c in latest.items()]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Tamper:
    """A forwarding proxy on 127.0.0.1 in front of a node's public port, which can lie:
    refuse the first N check-in batches with 400, drip replies, corrupt bodies."""

    def __init__(self, upstream_port, refuse_checkins=0, drip_paths=(), drip_delay=1.0):
        import http.server

        proxy = self
        self.refuse = refuse_checkins
        self.drip_paths = drip_paths
        self.drip_delay = drip_delay

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                self.forward(None)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                self.forward(self.rfile.read(n))

            def forward(self, body):
                if self.path.startswith("/v1/checkins") and proxy.refuse > 0:
                    proxy.refuse -= 1
                    out = b'{"error":"invalid_body","message":"refused by the test proxy"}'
                    self.send_response(400)
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body, headers)
                r = conn.getresponse()
                data = r.read()
                conn.close()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if any(self.path.startswith(p) for p in proxy.drip_paths):
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(proxy.drip_delay)
                else:
                    self.wfile.write(data)

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # peers that hang up on a dripping reply are the point

        self.server = Quiet(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    run(main)
