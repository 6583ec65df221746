#!/usr/bin/env python3
"""The Grafana dashboard in conf/ graphs what the nodes really export: a real origin and an edge
that follows it are started, both /metrics are scraped after some traffic (a release the edge
prefetches, a device's /updates, a blob download through the edge), and every metric name the
dashboard's PromQL expressions reference must be exported by one of the two nodes (some only
exist on one role: the outbox on an edge, say), with the labels its selectors name.

Usage: dashboard_test.py <path-to-bundle-edge>"""
import json
import os
import re

from harness import run, TMP, Node, check, curl, admin, upload, sha, wait_for

DASHBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf", "grafana-dashboard.json")
TOKEN = "dash-sync-token"
APP = "com.example.dash"

# PromQL words that are not metric names: functions are recognised by their "(", these not.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}


def scrape(node):
    """{metric family: {"type": TYPE, "labels": set of label names on its samples}} of one node."""
    st, _, out = curl("-H", "Authorization: Bearer " + node.token, node.admin_url + "/metrics")
    assert st == 200, st
    families, samples = {}, {}
    for line in out.decode().splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)$", line)
        if m:
            families[m.group(1)] = {"type": m.group(2), "labels": set()}
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? \S+$", line)
        assert m, "not a Prometheus sample line: %r" % line
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
        samples.setdefault(m.group(1), set()).update(labels)
    for name, labels in samples.items():
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            # A histogram's samples are <family>_bucket/_sum/_count; `le` is the bucket's own label.
            if name.endswith(suffix) and families.get(name[:-len(suffix)], {}).get("type") in ("histogram",
                                                                                              "summary"):
                family = name[:-len(suffix)]
                labels = labels - {"le", "quantile"}
        assert family in families, "sample %s has no # TYPE line" % name
        families[family]["labels"] |= labels
    return families


def family_of(name, exported):
    """The family a referenced name belongs to: itself, or a histogram's for _bucket/_sum/_count
    (only when that family really is a histogram or summary)."""
    if name in exported:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[:-len(suffix)]
        if name.endswith(suffix) and exported.get(base, {}).get("type") in ("histogram", "summary"):
            return base
    return None


def references(expr):
    """[(metric name, set of label names in its selector)] in one PromQL expression."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    e = re.sub(r"\$\{?\w+\}?", "", e)  # Grafana variables ($__rate_interval, $instance)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range and subquery windows
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    refs = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?", e):
        name, selector, call = m.group(1), m.group(2), m.group(3)
        if call or name.lower() in KEYWORDS or re.fullmatch(r"[0-9.e]+", name):
            continue  # a function, aggregation or keyword
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector or ""))
        refs.append((name, labels))
    # Selectors written without a name ({__name__=...}) would dodge this check.
    assert not re.search(r"(^|[^\w])\{", e), "a selector without a metric name: " + expr
    return refs


def dashboard_exprs(doc):
    """Every (panel title, PromQL) of the dashboard, rows' collapsed panels included, and the
    template variables' queries."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))
    walk(doc["panels"])
    for v in doc.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"label_values\((\w+)\s*,\s*(\w+)\)", q or "")
        if m:
            out.append(("variable " + v["name"], m.group(1)))
    return out


def main():
    doc = json.load(open(DASHBOARD))
    origin = Node('[sync]\ntoken = "%s"\n' % TOKEN)
    edge = Node('[node]\nrole = "edge"\n[sync]\ntoken = "%s"\n[upstream]\nurl = "%s"\ntoken = "%s"\n'
                % (TOKEN, origin.url, TOKEN))
    exported = {}

    def t_traffic_and_scrape():
        # A release the edge prefetches, a device asking for it at the edge, the zip through it.
        data = os.urandom(300_000)
        path = os.path.join(TMP, "zip")
        open(path, "wb").write(data)
        assert upload(origin, path)[0] in (200, 201)
        assert admin(origin, "PUT", "/v1/admin/apps/" + APP, {})[0] == 201
        assert admin(origin, "PUT", "/v1/admin/apps/%s/releases/1.0.1" % APP, {"zip": sha(data)})[0] in (200, 201)
        assert admin(origin, "PUT", "/v1/admin/apps/%s/channels/production" % APP,
                     {"release": "1.0.1", "public": True})[0] in (200, 201)

        def answered():
            st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary", json.dumps(
                {"platform": "android", "device_id": "0a1b2c3d-1111-4222-8333-444455556666", "app_id": APP,
                 "version_build": "1.0.0", "version_name": "builtin", "plugin_version": "8.51.23",
                 "is_emulator": False, "is_prod": True, "defaultChannel": ""}), edge.url + "/updates")
            return st == 200 and json.loads(out).get("version") == "1.0.1" and json.loads(out)
        answer = wait_for("the edge answers the release", answered)
        st, _, body = curl(answer["url"])
        assert st == 200 and sha(body) == sha(data), st
        for node in (origin, edge):
            assert curl(node.url + "/healthz")[0] == 200
        # Both scraped once before, so the metrics route itself has been counted too.
        for node in (origin, edge):
            scrape(node)
        wait_for("the edge's check-ins reach the origin", lambda: edge.metrics().get("edge_checkins_sent_total", 0) > 0)
        for role, node in (("origin", origin), ("edge", edge)):
            for name, fam in scrape(node).items():
                entry = exported.setdefault(name, {"type": fam["type"], "labels": set(), "roles": set()})
                entry["labels"] |= fam["labels"]
                entry["roles"].add(role)

    def t_every_reference_is_exported():
        assert exported, "nothing scraped"
        exprs = dashboard_exprs(doc)
        assert len(exprs) >= 20, len(exprs)
        seen, missing, bad_labels = set(), [], []
        for title, expr in exprs:
            refs = references(expr)
            assert refs, "%s: no metric in %r" % (title, expr)
            for name, labels in refs:
                family = family_of(name, exported)
                if family is None:
                    missing.append("%s: %s" % (title, name))
                    continue
                seen.add(family)
                unknown = labels - exported[family]["labels"] - TARGET_LABELS
                if unknown:
                    bad_labels.append("%s: %s{%s}" % (title, name, ",".join(sorted(unknown))))
        assert not missing, "the dashboard references metrics no node exports: %s" % missing
        assert not bad_labels, "selectors name labels the metric does not have: %s" % bad_labels
        # What the dashboard promises to show is there.
        for family in ("edge_http_requests_total", "edge_http_request_duration_seconds",
                       "edge_http_response_body_bytes_total", "edge_http_connections", "edge_blob_lookups_total",
                       "edge_storage_free_bytes", "edge_storage_full", "edge_sync_lag_seq", "edge_outbox_depth",
                       "edge_outbox_oldest_age_seconds", "edge_outbox_dead_letter_batches", "edge_fill_errors_total",
                       "edge_tls_handshakes_total", "edge_checkins_sent_total"):
            assert family in seen, "the dashboard does not graph " + family

    def t_checker_catches_mistakes():
        # The checks above would catch a typo, a wrong suffix and a label that does not exist.
        assert family_of("edge_http_request_duration_seconds_bucket", exported) == "edge_http_request_duration_seconds"
        assert family_of("edge_http_requests_total_count", exported) is None  # a counter has no _count
        assert family_of("edge_http_request_totl", exported) is None
        refs = references('sum by (route) (rate(edge_http_requests_total{status=~"5..",instance=~"$instance"}'
                          '[$__rate_interval])) / ignoring(x) histogram_quantile(0.9, sum by (le) '
                          '(rate(edge_http_request_duration_seconds_bucket[5m])))')
        assert refs == [("edge_http_requests_total", {"status", "instance"}),
                        ("edge_http_request_duration_seconds_bucket", set())], refs

    def t_dashboard_is_importable():
        ids = []

        def walk(panels):
            for p in panels:
                ids.append(p["id"])
                assert "gridPos" in p and p["type"], p.get("title")
                if p["type"] != "row":
                    assert p.get("targets") and p["datasource"]["uid"] == "${datasource}", p["title"]
                    assert p.get("description"), "panel %s has no description" % p["title"]
                walk(p.get("panels", []))
        walk(doc["panels"])
        assert len(ids) == len(set(ids)), "panel ids repeat"
        names = [v["name"] for v in doc["templating"]["list"]]
        assert "datasource" in names and "instance" in names, names
        assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 30

    for name, fn in [("traffic on an origin and an edge, both scraped", t_traffic_and_scrape),
                     ("every metric the dashboard references is exported", t_every_reference_is_exported),
                     ("the reference checker catches typos and wrong suffixes", t_checker_catches_mistakes),
                     ("the dashboard is importable (ids, datasource, variables)", t_dashboard_is_importable)]:
        check(name, fn)
    assert edge.stop() == 0
    assert origin.stop() == 0


if __name__ == "__main__":
    run(main)
