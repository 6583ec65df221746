#!/usr/bin/env python3
"""How fast the web console's dashboard is with a lot of data (issue #13): 30 days of hourly
buckets for N releases (default 50), fed to a real origin as relayed check-ins
(POST /v1/checkins with past time_ms), then the dashboard opened in headless Chromium at
"Last 30 days, by hour" and "Last 30 days, by day". Reports the stats API's answer time and
size, and the page's time from navigation to a rendered dashboard: min/median/max of --runs
rounds, with the host's steal. The baseline, in the same run: the same calls and pages for an app
with one release and no check-ins (what the console costs without the data).

Usage: bench/load/console-scale.py [--binary build/release/bundle-edge] [--releases 50]
       [--per-hour 2] [--runs 5]
Needs Debian's chromium, chromium-driver and python3-selenium (tools/setup.sh)."""
import argparse
import json
import os
import random
import sys
import tempfile
import time
import urllib.request

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
sys.path.append("/usr/lib/python3/dist-packages")  # Debian's python3-selenium
from benchnode import BenchNode, cpu_times, spread, steal_pct  # noqa: E402

APP = "com.example.scale"
EMPTY = "com.example.empty"  # the baseline: no check-ins


def call(node, method, path, body=None, token="t", public=False, headers=None):
    url = "http://127.0.0.1:%d%s" % (node.port if public else node.admin, path)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, r.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/release/bundle-edge")
    ap.add_argument("--releases", type=int, default=50)
    ap.add_argument("--per-hour", type=int, default=2, help="check-ins per release and hour")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="console-scale-")
    node = BenchNode(os.path.abspath(args.binary), work, '[sync]\ntoken = "s"\n')
    try:
        call(node, "PUT", "/v1/admin/apps/" + APP, {})
        call(node, "PUT", "/v1/admin/apps/" + EMPTY, {})
        call(node, "PUT", "/v1/admin/apps/%s/releases/1.0.0" % EMPTY, {})
        releases = ["1.0.%d" % i for i in range(args.releases)]
        for r in releases:  # version rows: no files needed for analytics
            call(node, "PUT", "/v1/admin/apps/%s/releases/%s" % (APP, r), {})
        now = int(time.time() * 1000)
        hours = 30 * 24
        batch, seq, total = [], 0, 0
        t0 = time.time()
        actions = ["updates", "updates", "set", "download_zip_start", "download_fail"]
        for h in range(hours):
            t = now - (hours - h) * 3600_000 + 1000
            for r in releases:
                for k in range(args.per_hour):
                    batch.append({"app_id": APP, "device_id": "%08x-0000-4000-8000-%012x" % (random.getrandbits(32), h * 1000 + k),
                                  "platform": random.choice(["ios", "android"]), "version_name": r,
                                  "version_build": "1.0.0", "action": random.choice(actions), "decision": "",
                                  "time_ms": t})
                    if len(batch) == 500:
                        seq += 1
                        call(node, "POST", "/v1/checkins", {"checkins": batch}, token="s", public=True,
                             headers={"Idempotency-Key": "scale:1:%d" % seq})
                        total += len(batch)
                        batch = []
            if h % 72 == 0:
                print("seeding: %d of %d hours, %d check-ins" % (h, hours, total), flush=True)
        if batch:
            call(node, "POST", "/v1/checkins", {"checkins": batch}, token="s", public=True,
                 headers={"Idempotency-Key": "scale:1:%d" % (seq + 1)})
            total += len(batch)
        print("seeded %d check-ins over %d hours for %d releases in %.1f s" % (total, hours, len(releases), time.time() - t0))

        s0 = cpu_times()
        for res in ("hour", "day"):
            for app in (APP, EMPTY):
                times = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    _, body = call(node, "GET", "/v1/admin/apps/%s/stats?from=%d&to=%d&resolution=%s" % (
                        app, now - 30 * 86400_000 + 1, now, res))
                    times.append((time.perf_counter() - t) * 1000)
                print("stats API, 30 days by %s, %s: %s, %d KB" % (
                    res, "%d releases" % len(releases) if app == APP else "baseline: no check-ins",
                    spread(times, "%.1f", " ms"), len(body) // 1024))

        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1366,900",
                  "--user-data-dir=" + os.path.join(work, "profile")):
            opts.add_argument(a)
        d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            base = "http://127.0.0.1:%d/console/" % node.admin
            d.get(base)
            d.execute_script("sessionStorage.setItem('bundle-edge-token', 't')")
            for key, label, app in (("30dh", "30 days by hour", APP), ("30dh", "30 days by hour", EMPTY),
                                    ("30d", "30 days by day", APP), ("30d", "30 days by day", EMPTY)):
                times = []
                for _ in range(args.runs):
                    d.get("about:blank")
                    t = time.perf_counter()
                    d.get(base + "#/app/%s/dashboard?range=%s" % (app, key))
                    for _ in range(6000):
                        done = d.execute_script(
                            "return !!document.getElementById('summary') && document.getElementById('busy').hidden")
                        if done:
                            break
                        time.sleep(0.005)
                    times.append((time.perf_counter() - t) * 1000)
                nodes = d.execute_script("return document.querySelectorAll('svg *').length")
                print("dashboard, %s, %s: %s to rendered (%d SVG elements)" % (
                    label, "%d releases" % len(releases) if app == APP else "baseline: no check-ins",
                    spread(times, "%.0f", " ms"), nodes))
            print("host steal over the measured part: %.1f%%" % steal_pct(s0, cpu_times()))
        finally:
            d.quit()
    finally:
        node.stop()


if __name__ == "__main__":
    main()
