#!/usr/bin/env python3
"""Integration test of an origin whose blobs live in S3 ([blobs] backend = "s3") against a
local s3rver: an upload is acknowledged once its chunks and recipe are objects in the bucket;
an origin with an empty data directory on the same bucket serves the blob byte-exact through
a verified fill; a damaged chunk object is never served and is counted; with the bucket down
an upload answers 503 while cached blobs are still served; credentials appear nowhere.

Usage: s3_test.py <path-to-bundle-edge>"""
import os
import secrets
import time

from harness import Node, TMP, admin, check, curl, run, sha, upload, wait_for
import s3rver

SECRET = "it-secret-" + secrets.token_hex(8)  # must never show up in logs or answers


def config(endpoint, bucket="bundles"):
    return """
[blobs]
backend = "s3"
endpoint = "%s"
bucket = "%s"
region = "us-east-1"
path_style = true
timeout_ms = 3000
""" % (endpoint, bucket)


def put_blob(node, data, name):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(data)
    return upload(node, path, ("-H", "X-Content-Sha256: " + sha(data)))


def get_blob(node, blob_id):
    return curl(node.url + "/v1/blobs/" + blob_id)


def main():
    if s3rver.find() is None:
        print("SKIP s3: s3rver not found (tools/setup.sh installs it under "
              "${XDG_CACHE_HOME:-~/.cache}/bundle-edge/s3rver)")
        return
    os.environ["AWS_ACCESS_KEY_ID"] = s3rver.ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET
    os.environ.pop("AWS_SESSION_TOKEN", None)
    s3 = s3rver.S3rver(TMP)
    nodes = []

    def keep(n):
        nodes.append(n)
        return n

    # A blob of several chunks (FastCDC: 16-256 KiB each).
    blob = secrets.token_bytes(3 << 20)
    blob_id = sha(blob)
    a = None  # the first origin, started below (inside the try that stops everything)
    state = {}

    def t_upload_lands_in_bucket():
        st, _, out = put_blob(a, blob, "one.bin")
        assert st == 201, (st, out)
        keys = s3.keys()
        assert "recipes/" + blob_id in keys, keys
        chunks = [k for k in keys if k.startswith("chunks/")]
        assert len(chunks) >= 4, chunks
        for k in chunks:  # every chunk object is the bytes its name says
            assert sha(open(s3.object_path(k), "rb").read()) == k[len("chunks/"):], k
        m = a.metrics()
        assert m['edge_s3_requests_total{op="put",result="ok"}'] == len(chunks) + 1, m
        assert m['edge_s3_bytes_total{direction="sent"}'] >= len(blob), m
        # A second upload of the same bytes: already durable, answered 200.
        st, _, out = put_blob(a, blob, "one-again.bin")
        assert st == 200, (st, out)
        state["chunks"] = chunks

    def t_fresh_origin_fills_from_bucket():
        b = keep(Node(config(s3.endpoint)))  # an empty data directory, the same bucket
        st, _, body = get_blob(b, blob_id)
        assert st == 200, (st, body[:200])
        assert body == blob
        m = b.metrics()
        assert m['edge_s3_requests_total{op="get",result="ok"}'] >= len(state["chunks"]) + 1, m
        assert m['edge_s3_bytes_total{direction="received"}'] >= len(blob), m
        assert m["edge_s3_verify_failures_total"] == 0, m
        # Now cached here: a Range read is served from the segment store.
        st, _, part = curl("-H", "Range: bytes=100-199", b.url + "/v1/blobs/" + blob_id)
        assert st == 206 and part == blob[100:200], st
        # An id the bucket does not have: 404, not an error.
        st, _, _ = get_blob(b, "ab" * 32)
        assert st == 404, st

    def t_release_on_another_origin_fills_first():
        # Uploaded through A; the release is written on D, which has never seen the blob:
        # D fills it from the bucket (verified), then pins its recipe as usual.
        data = secrets.token_bytes(600 << 10)
        st, _, out = put_blob(a, data, "rel.bin")
        assert st == 201, (st, out)
        d = keep(Node(config(s3.endpoint)))
        app = "/v1/admin/apps/com.example.s3"
        assert admin(d, "PUT", app, {})[0] == 201
        st, doc = admin(d, "PUT", app + "/releases/1.0.1", {"zip": sha(data)})
        assert st == 201, (st, doc)
        assert doc["recipe_sha256"][sha(data)], doc
        st, _, body = get_blob(d, sha(data))
        assert st == 200 and body == data, st
        # A blob no origin uploaded: 422 missing_blob, as on an embedded origin.
        st, doc = admin(d, "PUT", app + "/releases/1.0.2", {"zip": "cd" * 32})
        assert st == 422 and doc["error"] == "missing_blob", (st, doc)

    def t_damaged_chunk_is_never_served():
        other = secrets.token_bytes(1 << 20)
        other_id = sha(other)
        before = set(s3.keys("chunks/"))
        st, _, out = put_blob(a, other, "two.bin")
        assert st == 201, (st, out)
        mine = [k for k in s3.keys("chunks/") if k not in before]
        assert mine, "no new chunk objects"
        victim = s3.object_path(mine[0])
        data = bytearray(open(victim, "rb").read())
        data[len(data) // 2] ^= 0xFF  # same length, other bytes
        with open(victim, "wb") as f:
            f.write(data)
        c = keep(Node(config(s3.endpoint)))
        st, _, body = get_blob(c, other_id)
        assert st == 502, (st, len(body))
        assert body != other
        m = c.metrics()
        assert m["edge_s3_verify_failures_total"] >= 1, m
        log = open(c.log_path).read()
        assert "failed SHA-256 verification" in log and mine[0] in log, log[-2000:]
        # Still refused on a second ask (nothing unverified was stored).
        st, _, _ = get_blob(c, other_id)
        assert st == 502, st

    def t_bucket_down_upload_503_cache_served():
        s3.stop()
        try:
            fresh = secrets.token_bytes(200 << 10)
            st, _, out = put_blob(a, fresh, "three.bin")
            assert st == 503, (st, out)
            assert b"blob_backend_unavailable" in out, out
            # Blobs this origin has cached are still served.
            st, _, body = get_blob(a, blob_id)
            assert st == 200 and body == blob, st
            st, _, ready = curl(a.url + "/readyz")
            assert st == 200 and b'"blob_backend":"unreachable"' in ready, (st, ready)
            # A release is written only once its blobs are in the bucket: 503 too.
            app = "/v1/admin/apps/com.example.down"
            assert admin(a, "PUT", app, {})[0] == 201
            st, doc = admin(a, "PUT", app + "/releases/1.0.0", {"zip": sha(fresh)})
            assert st == 503 and doc["error"] == "blob_backend_unavailable", (st, doc)
            m = a.metrics()
            assert m["edge_s3_up"] == 0, m
            assert m["edge_s3_errors_total"] >= 1, m
        finally:
            s3.start()
        # Back: with no request meanwhile, the node's probe (every 10 s) notices.
        wait_for("/readyz to see the bucket again",
                 lambda: b'"blob_backend":"ok"' in curl(a.url + "/readyz")[2], timeout=30, step=0.5)
        # The same upload goes through now, and is acknowledged.
        st, _, out = put_blob(a, fresh, "three-again.bin")
        assert st in (200, 201), (st, out)
        assert "recipes/" + sha(fresh) in s3.keys("recipes/")
        st, _, ready = curl(a.url + "/readyz")
        assert b'"blob_backend":"ok"' in ready, ready
        st, doc = admin(a, "PUT", "/v1/admin/apps/com.example.down/releases/1.0.0",
                        {"zip": sha(fresh)})
        assert st == 201, (st, doc)

    def t_embedded_origin_moves_to_the_bucket():
        # An origin that kept its blobs in its embedded store: restarted on the bucket, the
        # blobs its releases name are written there in the background.
        e = keep(Node(""))
        data = secrets.token_bytes(500 << 10)
        st, _, out = put_blob(e, data, "moved.bin")
        assert st == 201, (st, out)
        app = "/v1/admin/apps/com.example.moved"
        assert admin(e, "PUT", app, {})[0] == 201
        assert admin(e, "PUT", app + "/releases/2.0.0", {"zip": sha(data)})[0] == 201
        assert "recipes/" + sha(data) not in s3.keys("recipes/")
        e.stop()
        with open(e.conf, "w") as f:
            f.write(config(s3.endpoint))
        e.start()
        wait_for("the moved blob's recipe in the bucket",
                 lambda: "recipes/" + sha(data) in s3.keys("recipes/"), timeout=20)
        # And another origin serves it from there.
        f = keep(Node(config(s3.endpoint)))
        st, _, body = get_blob(f, sha(data))
        assert st == 200 and body == data, st

    def t_credentials_appear_nowhere():
        for n in nodes:
            st, _, ready = curl(n.url + "/readyz")
            assert SECRET.encode() not in ready
            _, _, metrics = curl("-H", "Authorization: Bearer " + n.token, n.admin_url + "/metrics")
            assert SECRET.encode() not in metrics
            assert SECRET not in open(n.log_path).read()

    def t_garbage_collection_in_the_bucket():
        # A bucket of its own: the other checks' origins do not share control state, and a
        # bucket's collector keeps only what its own state names.
        s3gc = s3rver.S3rver(TMP, bucket="gc")
        try:
            conf = config(s3gc.endpoint, bucket="gc") + "[gc]\ninterval_s = 0\ngrace_s = 0\n"
            g = keep(Node(conf))
            shared = secrets.token_bytes(1 << 20)
            old, new, orphan = (shared + secrets.token_bytes(1 << 20),
                                shared + secrets.token_bytes(1 << 20), secrets.token_bytes(600 << 10))
            for i, data in enumerate((old, new, orphan)):
                st, _, out = put_blob(g, data, "gc-%d.bin" % i)
                assert st == 201, (st, out)
            app = "/v1/admin/apps/com.example.gc"
            assert admin(g, "PUT", app, {})[0] == 201
            assert admin(g, "PUT", app + "/releases/1.0.0", {"zip": sha(old)})[0] == 201
            assert admin(g, "PUT", app + "/releases/1.1.0", {"zip": sha(new)})[0] == 201
            assert admin(g, "DELETE", app + "/releases/1.0.0")[0] == 200
            chunks_before = set(s3gc.keys("chunks/"))
            time.sleep(1.1)  # LastModified has a resolution of a second
            st, doc = admin(g, "POST", "/v1/admin/gc", {})
            assert st == 200, (st, doc)
            rep = doc["bucket"]
            assert rep["complete"] and rep["blobs_removed"] == 2, rep
            assert rep["blobs_referenced"] == 1 and rep["chunks_removed"] > 0, rep
            keys = s3gc.keys("recipes/")
            assert keys == ["recipes/" + sha(new)], keys
            gone = chunks_before - set(s3gc.keys("chunks/"))
            assert len(gone) == rep["chunks_removed"], (len(gone), rep)
            # What is left is whole: an origin with nothing cached serves it from the bucket.
            fresh = keep(Node(config(s3gc.endpoint, bucket="gc") + "[gc]\ninterval_s = 0\n"))
            st, _, body = get_blob(fresh, sha(new))
            assert st == 200 and body == new, st
            assert get_blob(fresh, sha(old))[0] == 404
            m = g.metrics()
            assert m['edge_gc_removed_blobs_total{where="bucket"}'] == 2, m
            # Uploading the same bytes again writes the recipe again: a new grace period.
            st, _, out = put_blob(g, new, "gc-again.bin")
            assert st == 200, (st, out)
            st, _, out = put_blob(g, orphan, "gc-orphan.bin")
            assert st == 201, (st, out)  # its chunks and recipe are written again
            st, doc = admin(g, "POST", "/v1/admin/gc", {})
            assert doc["bucket"]["blobs_removed"] == 0, doc
            assert "recipes/" + sha(orphan) in s3gc.keys("recipes/")
        finally:
            for n in list(nodes):
                if n.conf and "gc" in open(n.conf).read() and n.proc.poll() is None:
                    n.stop()
            s3gc.stop()

    def t_missing_credentials_refused():
        env = dict(os.environ)
        env.pop("AWS_SECRET_ACCESS_KEY")
        import subprocess
        conf = os.path.join(TMP, "nocreds.toml")
        with open(conf, "w") as f:
            f.write(config(s3.endpoint))
        from harness import BINARY
        r = subprocess.run([BINARY, "--config", conf, "--data", os.path.join(TMP, "nocreds"),
                            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert "AWS_SECRET_ACCESS_KEY" in r.stdout + r.stderr, r.stdout + r.stderr

    try:
        a = keep(Node(config(s3.endpoint)))
        check("s3: upload lands in the bucket", t_upload_lands_in_bucket)
        check("s3: fresh origin fills from the bucket", t_fresh_origin_fills_from_bucket)
        check("s3: release on another origin fills first", t_release_on_another_origin_fills_first)
        check("s3: damaged chunk is never served", t_damaged_chunk_is_never_served)
        check("s3: bucket down: upload 503, cache served", t_bucket_down_upload_503_cache_served)
        check("s3: embedded origin moves to the bucket", t_embedded_origin_moves_to_the_bucket)
        check("s3: garbage collection in the bucket", t_garbage_collection_in_the_bucket)
        check("s3: credentials appear nowhere", t_credentials_appear_nowhere)
        check("s3: missing credentials refused", t_missing_credentials_refused)
    finally:
        try:
            for n in nodes:
                try:
                    n.stop()
                except Exception as e:  # noqa: BLE001 - the others and s3rver still stop
                    print("stopping a node: %s" % e)
        finally:
            s3.stop()


if __name__ == "__main__":
    run(main)
