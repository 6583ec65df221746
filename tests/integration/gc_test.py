#!/usr/bin/env python3
"""Integration test of garbage collection on an embedded origin: blobs no release references
(a deleted release's, an upload never published) and their chunks are removed after the grace
period, chunks another release shares stay, sparse segments are compacted, nothing removed
while an upload is in progress, and what is left is served byte for byte after a restart.

Usage: gc_test.py <path-to-bundle-edge>"""
import json
import os
import time

from harness import TMP, admin, check, curl, half_sent_upload, run, upload
from sync_test import ADMIN_APP, origin, sha

GC_CONF = '[gc]\ninterval_s = 0\ngrace_s = %d\ncompact_below_pct = 90\n[store]\nsegment_size = "4MiB"\n'


def put_blob(node, data, name):
    path = os.path.join(TMP, "gc-%s-%d" % (name, os.getpid()))
    with open(path, "wb") as f:
        f.write(data)
    st, _, _ = upload(node, path)
    os.unlink(path)
    assert st in (200, 201), st
    return sha(data)


def release(node, version, blob):
    if admin(node, "GET", ADMIN_APP)[0] != 200:
        assert admin(node, "PUT", ADMIN_APP, {})[0] == 201
    return admin(node, "PUT", ADMIN_APP + "/releases/" + version, {"zip": blob})


def gc(node, dry_run=False):
    st, doc = admin(node, "POST", "/v1/admin/gc", {"dry_run": dry_run})
    assert st == 200, (st, doc)
    return doc["store"]


def blob(node, blob_id):
    st, _, body = curl("http://127.0.0.1:%d/v1/blobs/%s" % (node.port, blob_id))
    return st, body


def main():
    nodes = []

    def keep(n):
        nodes.append(n)
        return n

    def t_deleted_and_orphan_blobs_go_shared_chunks_stay():
        o = keep(origin(GC_CONF % 0))
        shared = os.urandom(3_000_000)
        a = shared + os.urandom(3_000_000)  # A and B share their first 3 MB
        b = shared + os.urandom(3_000_000)
        orphan = os.urandom(2_000_000)  # uploaded, never published
        ida, idb = put_blob(o, a, "a"), put_blob(o, b, "b")
        ido = put_blob(o, orphan, "orphan")
        assert release(o, "1.0.0", ida)[0] == 201
        assert release(o, "1.1.0", idb)[0] == 201
        st, doc = admin(o, "PUT", ADMIN_APP + "/channels/production",
                        {"release": "1.1.0", "public": True})
        assert st in (200, 201), (st, doc)
        assert admin(o, "DELETE", ADMIN_APP + "/releases/1.0.0")[0] == 200
        time.sleep(1.1)  # older than the grace period (0 s), to the second
        before = o.metrics()
        dry = gc(o, dry_run=True)
        assert dry["dry_run"] and dry["blobs_removed"] == 2, dry  # A and the orphan
        assert dry["blobs_referenced"] == 1 and dry["chunks_removed"] > 0, dry
        assert blob(o, ida)[0] == 200 and blob(o, ido)[0] == 200  # a dry run removes nothing
        rep = gc(o)
        assert rep["complete"] and rep["blobs_removed"] == 2, rep
        assert rep["chunks_removed"] == dry["chunks_removed"], (rep, dry)
        # The chunks only A or the orphan had: about 3 MB + 2 MB of the 11 MB stored.
        assert 4_000_000 < rep["bytes_removed"] < 6_500_000, rep
        assert rep["segments_compacted"] >= 1 and rep["bytes_freed"] > 0, rep
        after = o.metrics()
        assert after["edge_store_bytes_on_disk"] < before["edge_store_bytes_on_disk"], (before, after)
        assert after['edge_gc_removed_blobs_total{where="store"}'] == 2, after
        assert blob(o, ida)[0] == 404 and blob(o, ido)[0] == 404
        st, body = blob(o, idb)
        assert st == 200 and body == b, st
        # A release naming a collected blob is refused until it is uploaded again.
        st, doc = release(o, "1.2.0", ido)
        assert st == 422 and doc["error"] == "missing_blob", (st, doc)
        assert put_blob(o, orphan, "orphan2") == ido
        assert release(o, "1.2.0", ido)[0] == 201
        # A second pass finds nothing more; after a restart everything left is whole.
        again = gc(o)
        assert again["blobs_removed"] == 0 and again["chunks_removed"] == 0, again
        o.restart()
        st, body = blob(o, idb)
        assert st == 200 and body == b, st
        st, body = blob(o, ido)
        assert st == 200 and body == orphan, st
        assert blob(o, ida)[0] == 404

    def t_grace_period_keeps_new_blobs():
        o = keep(origin(GC_CONF % 3600))
        ido = put_blob(o, os.urandom(500_000), "young")
        rep = gc(o)
        assert rep["blobs_young"] == 1 and rep["blobs_removed"] == 0, rep
        assert rep["chunks_removed"] == 0, rep
        assert blob(o, ido)[0] == 200

    def t_nothing_removed_while_an_upload_runs():
        o = keep(origin(GC_CONF % 0))
        ido = put_blob(o, os.urandom(500_000), "orphan")
        time.sleep(1.1)
        # An upload that has sent part of its body and waits.
        conn = half_sent_upload(o)
        rep = gc(o)
        assert rep["blobs_removed"] == 0 and not rep["complete"], rep
        assert "in progress" in rep["note"], rep
        assert blob(o, ido)[0] == 200
        conn.send(os.urandom(100_000))
        r = conn.getresponse()
        assert r.status == 201, r.status
        new_id = json.loads(r.read())["sha256"]
        conn.close()
        rep = gc(o)
        # The orphan is old; the blob just uploaded is within its grace... of 0 s, to the
        # second: wait for it to age as well.
        assert blob(o, ido)[0] == 404, rep
        time.sleep(1.1)
        rep = gc(o)
        assert blob(o, new_id)[0] == 404, rep

    def t_admin_only_and_bad_bodies():
        o = keep(origin(GC_CONF % 0))
        st, doc = admin(o, "GET", "/v1/admin/gc")
        assert st == 405, (st, doc)
        st, doc = admin(o, "POST", "/v1/admin/gc", {"dry_run": "yes"})
        assert st == 400 and doc["error"] == "invalid_body", (st, doc)
        st, doc = admin(o, "POST", "/v1/admin/gc", {"other": 1})
        assert st == 400, (st, doc)
        st, doc = admin(o, "POST", "/v1/admin/tokens", {"name": "pub", "role": "publisher", "apps": ["*"]})
        assert st == 201, (st, doc)
        st, _, out = curl("-X", "POST", "-H", "Authorization: Bearer " + doc["token"],
                          o.admin_url + "/v1/admin/gc")
        assert st == 403, (st, out)

    try:
        for name, fn in list(locals().items()):
            if name.startswith("t_"):
                check(name, fn)
    finally:
        for n in nodes:
            n.stop()


if __name__ == "__main__":
    run(main)
