#!/usr/bin/env python3
"""Integration test of scoped admin tokens and the audit log (issue #12, item 1): the real
binary, tokens created, used, refused and revoked over HTTP and through bundle-edge-ctl.

Usage: access_test.py <path-to-bundle-edge>"""
import json
import os
import subprocess

from harness import TMP, Node, admin, check, curl, run, sha, upload

CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")
APP, OTHER = "com.example.scoped", "com.example.other"


def call(node, token, method, path, body=None):
    args = ["-X", method, "-H", "Authorization: Bearer " + token]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    st, _, out = curl(*args, node.admin_url + path)
    return st, (json.loads(out) if out else None)


def ctl(node, token, *args):
    # Global flags (--json) go before the command.
    flags = [a for a in args[:1] if a == "--json"]
    rest = list(args[len(flags):])
    return subprocess.run([CTL, "--url", node.admin_url, "--token", token, *flags, *rest],
                          capture_output=True, text=True, timeout=60)


def main():
    node = Node("")
    for app in (APP, OTHER):
        assert admin(node, "PUT", "/v1/admin/apps/" + app, {})[0] == 201
    zip_path = os.path.join(TMP, "a.zip")
    data = os.urandom(50_000)
    open(zip_path, "wb").write(data)
    assert upload(node, zip_path)[0] in (200, 201)
    tokens = {}

    def create_tokens():
        st, doc = admin(node, "POST", "/v1/admin/tokens", {"name": "ci", "role": "publisher", "apps": [APP]})
        assert st == 201 and doc["token"].startswith("bet_") and doc["apps"] == [APP], (st, doc)
        tokens["ci"] = doc["token"]
        st, doc = admin(node, "POST", "/v1/admin/tokens", {"name": "dash", "role": "viewer", "apps": [APP]})
        assert st == 201
        tokens["dash"] = doc["token"]
        r = ctl(node, node.token, "token", "create", "ops", "--role", "admin")
        assert r.returncode == 0 and r.stdout.strip().startswith("bet_"), r.stderr
        tokens["ops"] = r.stdout.strip()
        st, doc = admin(node, "GET", "/v1/admin/tokens")
        names = [t["name"] for t in doc["tokens"]]
        assert names == ["ci", "dash", "ops"], names
        assert "bet_" not in json.dumps(doc) and "sha256" not in json.dumps(doc), "a secret or hash is listed"
        # Bad input: 400 naming the field, 409 for a second token of one name; nothing made.
        for body, code in [({"name": "x y", "role": "viewer", "apps": [APP]}, "invalid_name"),
                           ({"name": "bootstrap", "role": "admin"}, "reserved_name"),
                           ({"name": "r", "role": "root"}, "invalid_role"),
                           ({"name": "v", "role": "viewer"}, "invalid_apps"),
                           ({"name": "a", "role": "admin", "apps": [APP]}, "invalid_apps"),
                           ({"name": "p", "role": "publisher", "apps": ["a/b"]}, "invalid_apps"),
                           ({"name": "p", "role": "publisher", "apps": [APP], "extra": 1}, "invalid_json_body")]:
            st, doc = admin(node, "POST", "/v1/admin/tokens", body)
            assert st == 400 and doc["error"] == code, (body, st, doc)
        st, doc = admin(node, "POST", "/v1/admin/tokens", {"name": "ci", "role": "viewer", "apps": [APP]})
        assert st == 409 and doc["error"] == "token_exists"
        assert len(admin(node, "GET", "/v1/admin/tokens")[1]["tokens"]) == 3
    check("tokens: created (secret once), listed without secrets, bad input 400/409", create_tokens)

    def publisher_scope():
        ci = tokens["ci"]
        st, doc = call(node, ci, "PUT", "/v1/admin/apps/%s/releases/1.0.0" % APP, {"zip": sha(data)})
        assert st == 201, (st, doc)
        st, _ = call(node, ci, "PUT", "/v1/admin/apps/%s/channels/production" % APP, {"release": "1.0.0", "public": True})
        assert st in (200, 201)
        # The CLI publishes with it end to end (upload, release, channel).
        dist = os.path.join(TMP, "dist")
        os.makedirs(dist, exist_ok=True)
        open(os.path.join(dist, "index.html"), "w").write("<p>ci</p>")
        r = ctl(node, ci, "publish", "--app", APP, "--version", "1.0.1", "--dir", dist, "--channel", "production")
        assert r.returncode == 0, r.stderr
        # No deletes, no other app, no tokens, no app list: 403 and nothing changed.
        before = admin(node, "GET", "/v1/admin/apps/%s/releases" % APP)[1]
        for method, path, body in [("DELETE", "/v1/admin/apps/%s/releases/1.0.0" % APP, None),
                                   ("PUT", "/v1/admin/apps/%s/releases/9.9.9" % OTHER, {"zip": sha(data)}),
                                   ("GET", "/v1/admin/apps/%s" % OTHER, None),
                                   ("POST", "/v1/admin/tokens", {"name": "x", "role": "admin"}),
                                   ("GET", "/v1/admin/apps", None),
                                   ("GET", "/v1/admin/audit", None)]:
            st, doc = call(node, ci, method, path, body)
            assert st == 403 and doc["error"] == "forbidden" and "'ci'" in doc["message"], (method, path, st, doc)
        assert admin(node, "GET", "/v1/admin/apps/%s/releases" % APP)[1] == before
        assert admin(node, "GET", "/v1/admin/apps/%s/releases/9.9.9" % OTHER)[0] == 404
        r = ctl(node, ci, "release", "delete", APP, "1.0.0")
        assert r.returncode == 5 and "not allowed" in r.stderr, (r.returncode, r.stderr)
        # --json on any command: one document on stdout, the exit code unchanged.
        r = ctl(node, ci, "--json", "release", "delete", APP, "1.0.0")
        doc = json.loads(r.stdout)
        assert r.returncode == 5 and doc["ok"] is False and doc["exit"] == 5 and doc["calls"][-1]["status"] == 403, doc
        r = ctl(node, ci, "--json", "release", "list", APP)
        doc = json.loads(r.stdout)
        assert r.returncode == 0 and doc["ok"] and [x["name"] for x in doc["result"]["releases"]] == ["1.0.0", "1.0.1"], doc
    check("publisher: publishes its app, cannot delete or touch another (403, exit 5)", publisher_scope)

    def ci_script():
        # conf/ci/publish.sh as a CI job runs it: a publisher token from the environment.
        dist = os.path.join(TMP, "dist")
        script = os.path.join(os.path.dirname(CTL), "..", "conf", "ci", "publish.sh")
        env = dict(os.environ, BUNDLE_EDGE_URL=node.admin_url, BUNDLE_EDGE_TOKEN=tokens["ci"], CTL=CTL,
                   APP_ID=APP, VERSION="1.1.0", DIST=dist, BUILD_CMD="true", PERCENT="10")
        r = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        ch = admin(node, "GET", "/v1/admin/apps/%s/channels/production" % APP)[1]
        assert ch["rollout"]["release"] == "1.1.0" and ch["rollout"]["bps"] == 1000, ch
        assert ch["release"] == "1.0.1", "the channel keeps its release; 10% get the new one"
        env["BUNDLE_EDGE_TOKEN"] = tokens["dash"]  # a viewer token cannot publish
        r = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 5, (r.returncode, r.stderr)
    check("conf/ci/publish.sh publishes and starts a 10% rollout with a publisher token", ci_script)

    def viewer_scope():
        dash = tokens["dash"]
        assert call(node, dash, "GET", "/v1/admin/apps/%s/channels/production" % APP)[0] == 200
        assert call(node, dash, "GET", "/v1/admin/apps/%s/stats" % APP)[0] == 200
        st, _, _ = curl("-H", "Authorization: Bearer " + dash, node.admin_url + "/metrics")
        assert st == 200
        st, doc = call(node, dash, "PUT", "/v1/admin/apps/%s/channels/production" % APP, {"release": None})
        assert st == 403 and "may only read" in doc["message"], doc
        st, _, _ = curl("-X", "PUT", "--data-binary", "@" + zip_path, "-H", "Authorization: Bearer " + dash,
                        node.admin_url + "/v1/admin/blobs")
        assert st == 403
        assert admin(node, "GET", "/v1/admin/apps/%s/channels/production" % APP)[1]["release"] == "1.0.1"
    check("viewer: reads its app and /metrics; writes and uploads 403", viewer_scope)

    def revoke_and_restart():
        assert call(node, tokens["ops"], "GET", "/v1/admin/tokens")[0] == 200  # a created admin
        r = ctl(node, tokens["ops"], "token", "revoke", "dash")
        assert r.returncode == 0, r.stderr
        st, doc = call(node, tokens["dash"], "GET", "/v1/admin/apps/%s" % APP)
        assert st == 401, (st, doc)  # refused at once
        assert admin(node, "DELETE", "/v1/admin/tokens/dash")[0] == 404
        node.restart()
        assert call(node, tokens["ci"], "GET", "/v1/admin/apps/%s" % APP)[0] == 200, "tokens survive a restart"
        assert call(node, tokens["dash"], "GET", "/v1/admin/apps/%s" % APP)[0] == 401
        assert call(node, "bet_" + "0" * 64, "GET", "/v1/admin/apps/%s" % APP)[0] == 401
        assert admin(node, "GET", "/v1/admin/tokens")[0] == 200, "the bootstrap token keeps working"
    check("revoked tokens are refused at once and after a restart; bootstrap works", revoke_and_restart)

    def audit_log():
        st, doc = admin(node, "GET", "/v1/admin/audit?limit=1000")
        assert st == 200, (st, doc)
        recs = doc["records"]
        assert [r["n"] for r in recs] == sorted(r["n"] for r in recs)
        by = lambda tok, method, frag: [r for r in recs if r["token"] == tok and r["method"] == method and frag in r["path"]]
        rel = by("ci", "PUT", "/releases/1.0.0")
        assert rel and rel[0]["status"] == 201 and rel[0]["change_seq"] > 0, rel
        assert by("ci", "PUT", "/v1/admin/blobs") and by("ci", "PUT", "/v1/admin/blobs")[0]["status"] in (200, 201)
        assert not by("ci", "DELETE", "/releases/1.0.0"), "refusals are kept apart from the audit log"
        assert {r["actor_kind"] for r in recs} == {"token"}, "people act through tokens"
        # Refusals: coalesced per token, method and path (the API once, the CLI twice).
        st, doc = admin(node, "GET", "/v1/admin/audit/refusals")
        assert st == 200, (st, doc)
        denied = [r for r in doc["refusals"] if r["token"] == "ci" and r["method"] == "DELETE"
                  and r["path"].endswith("/releases/1.0.0")]
        assert len(denied) == 1 and denied[0]["status"] == 403 and denied[0]["count"] == 3, denied
        assert denied[0]["first_ms"] <= denied[0]["last_ms"] and denied[0]["actor_kind"] == "token"
        assert by("ops", "DELETE", "/v1/admin/tokens/dash")[0]["status"] == 200
        assert by("bootstrap", "POST", "/v1/admin/tokens"), "the bootstrap token's writes are audited"
        assert not [r for r in recs if r["method"] == "GET"], "reads are not audited"
        r = ctl(node, node.token, "audit", "--after", str(recs[-2]["n"]), "--json")
        assert r.returncode == 0 and len(json.loads(r.stdout)) == 1, r.stdout
        for q in ("after=x", "limit=0", "limit=5000", "since=1"):
            st, doc = admin(node, "GET", "/v1/admin/audit?" + q)
            assert st == 400 and doc["error"] == "invalid_query_parameters", (q, st, doc)
    check("audit log: every write with token, status and change seq; bad queries 400", audit_log)

    node.stop()


run(main)
