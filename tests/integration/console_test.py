#!/usr/bin/env python3
"""Integration test of the web console (issue #13) in a real browser: Debian's headless
Chromium driven by chromedriver (python3-selenium), against a real origin and edge on
127.0.0.1 with seeded data. Screenshots of every page go to the artifacts folder
(EDGE_ARTIFACTS, default <build>/test-artifacts/console); no check depends on pixels.

Usage: console_test.py <path-to-bundle-edge>"""
import json
import os
import shlex
import subprocess
import sys
import time
import zipfile

# Debian's python3-selenium lives in the system interpreter's dist-packages; a pyenv or
# venv interpreter running this file finds it there too (pure Python).
try:
    import selenium  # noqa: F401
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from harness import BINARY, TMP, Node, admin, check, curl, header, run, sha, upload, wait_for

CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")

TOKEN = "console-sync-secret"
APP = "com.example.console"
BASE = "/v1/admin/apps/" + APP
ARTIFACTS = os.environ.get("EDGE_ARTIFACTS") or os.path.join(
    os.path.dirname(BINARY), "test-artifacts", "console")
DEVICE = {"platform": "android", "app_id": APP, "version_build": "0.9.0", "version_code": "1",
          "version_os": "14", "version_name": "builtin", "plugin_version": "8.51.23",
          "is_emulator": False, "is_prod": True, "defaultChannel": ""}
PINNED = "0a1b2c3d-4444-4222-8333-444455556666"  # a device with an override and custom id


def device_id(i):
    return "0a1b2c3d-%04d-4222-8333-444455556666" % i


def updates(url, **fields):
    st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                      json.dumps(dict(DEVICE, **fields)), url + "/updates")
    assert st == 200, (st, out)
    return json.loads(out)


def stats_event(url, **fields):
    st, _, out = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                      json.dumps(dict(DEVICE, **fields)), url + "/stats")
    assert st == 200, (st, out)


def seed(origin):
    assert admin(origin, "PUT", BASE, {})[0] == 201
    # 1.0.1 keeps the first 400 KB of 1.0.0 and changes the rest: they share chunks.
    common = os.urandom(400_000)
    zips = {"1.0.0": common + os.urandom(200_000), "1.0.1": common + os.urandom(200_000),
            "1.0.2": os.urandom(300_000)}
    for v, data in zips.items():
        path = os.path.join(TMP, "zip-" + v)
        open(path, "wb").write(data)
        assert upload(origin, path)[0] in (200, 201)
        st, doc = admin(origin, "PUT", BASE + "/releases/" + v, {"zip": sha(data)})
        assert st == 201, (st, doc)
    for rel in ("1.0.0", "1.0.1"):  # history: 1.0.0, then 1.0.1 (a rollback goes to 1.0.0)
        st, doc = admin(origin, "PUT", BASE + "/channels/production",
                        {"release": rel, "public": True, "disable_auto_update": "none"})
        assert st in (200, 201), (st, doc)
    assert admin(origin, "PUT", BASE + "/channels/beta", {"release": "1.0.2"})[0] == 201
    assert admin(origin, "PUT", BASE + "/devices/" + PINNED, {"channel": "beta"})[0] in (200, 201)
    # Check-ins: 6 devices ask, 3 install 1.0.1, 1 fails it, the pinned one asks as user-42.
    for i in range(6):
        updates(origin.url, device_id=device_id(i), custom_id="user-%d" % (100 + i))
    for i in range(3):
        stats_event(origin.url, device_id=device_id(i), action="set", version_name="1.0.1")
    stats_event(origin.url, device_id=device_id(5), action="download_fail", version_name="1.0.1")
    updates(origin.url, device_id=PINNED, custom_id="user-42")


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1366,900",
              "--user-data-dir=" + os.path.join(TMP, "chromium-profile")):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


class Console:
    """The browser on the console of one node."""

    def __init__(self, driver, node):
        self.d = driver
        self.node = node
        self.base = node.admin_url + "/console/"

    def wait(self, css, timeout=15):
        try:
            # The page re-renders after every action: an element found a moment ago may be
            # gone (stale); the wait then looks again.
            return WebDriverWait(self.d, timeout, ignored_exceptions=[StaleElementReferenceException]).until(
                lambda d: d.find_element(By.CSS_SELECTOR, css) if d.find_elements(By.CSS_SELECTOR, css) else False)
        except TimeoutException:
            raise AssertionError("no %s on %s; notice: %r" % (css, self.d.current_url, self.notice()))

    def wait_text(self, css, text, timeout=15):
        try:
            WebDriverWait(self.d, timeout, ignored_exceptions=[StaleElementReferenceException]).until(
                lambda d: any(text in e.text for e in d.find_elements(By.CSS_SELECTOR, css)))
        except TimeoutException:
            got = [e.text for e in self.d.find_elements(By.CSS_SELECTOR, css)]
            raise AssertionError("%s never showed %r (got %r; notice %r)" % (css, text, got, self.notice()))

    def notice(self):
        n = self.d.find_elements(By.CSS_SELECTOR, "#notice")
        return n[0].text if n and n[0].is_displayed() else ""

    def idle(self):
        WebDriverWait(self.d, 15).until(
            lambda d: d.execute_script("return document.getElementById('busy').hidden"))

    def open(self, hash_):
        self.d.get(self.base + hash_)
        self.idle()

    def sign_in(self, token):
        self.d.get(self.base + "#/login")
        self.d.execute_script("sessionStorage.clear()")
        self.d.get(self.base + "#/login")
        field = self.wait("#token")
        field.clear()
        field.send_keys(token)
        self.d.find_element(By.CSS_SELECTOR, "#sign-in").click()

    def click(self, css):
        self.d.execute_script("window.confirm = () => true")  # the page's confirmations
        for attempt in range(5):
            try:
                self.wait(css).click()
                break
            except StaleElementReferenceException:
                if attempt == 4:
                    raise
                time.sleep(0.1)  # re-rendered between finding and clicking: find it again
        self.idle()

    def shot(self, name):
        os.makedirs(ARTIFACTS, exist_ok=True)
        self.idle()
        self.d.save_screenshot(os.path.join(ARTIFACTS, name + ".png"))

    def has(self, css):
        return bool(self.d.find_elements(By.CSS_SELECTOR, css))


def main():
    if not os.path.exists("/usr/bin/chromium") or not os.path.exists("/usr/bin/chromedriver"):
        raise SystemExit("console_test: needs Debian's chromium and chromium-driver (tools/setup.sh installs them)")
    origin = Node('[sync]\ntoken = "%s"\n' % TOKEN)
    edge = Node('[node]\nrole = "edge"\n[sync]\ntoken = "%s"\n[upstream]\nurl = "%s"\ntoken = "%s"\n'
                'timeout_ms = 3000\nbackoff_max_ms = 500\nstatus_interval_ms = 300\n' % (TOKEN, origin.url, TOKEN))
    seed(origin)
    st, viewer = admin(origin, "POST", "/v1/admin/tokens", {"name": "dash", "role": "viewer", "apps": [APP]})
    assert st == 201, (st, viewer)
    driver = browser()
    c = Console(driver, origin)
    try:
        def static_files():
            st, hdr, body = curl(origin.admin_url + "/console")
            assert st == 301 and header(hdr, "Location") == "/console/", (st, hdr)
            st, hdr, body = curl(origin.admin_url + "/console/")
            assert st == 200 and b"console.js" in body, st
            assert header(hdr, "Content-Type").startswith("text/html"), hdr
            assert "default-src 'self'" in header(hdr, "Content-Security-Policy"), hdr
            etag = header(hdr, "ETag")
            assert curl("-H", "If-None-Match: " + etag, origin.admin_url + "/console/index.html")[0] == 304
            st, hdr, _ = curl(origin.admin_url + "/console/console.js")
            assert st == 200 and header(hdr, "Content-Type").startswith("text/javascript"), hdr
            st, _, body = curl(origin.admin_url + "/console/nope.js")
            assert st == 404 and b"nope.js" in body, (st, body)
            assert curl("-X", "POST", origin.admin_url + "/console/")[0] == 405
            # The API behind the page still needs a token.
            assert curl(origin.admin_url + "/v1/admin/whoami")[0] == 401

        def whoami_and_release_files():
            st, me = admin(origin, "GET", "/v1/admin/whoami")
            assert st == 200 and me["role"] == "admin" and me["can_write"] and APP in me["visible_apps"], me
            st, _, out = curl("-H", "Authorization: Bearer " + viewer["token"], origin.admin_url + "/v1/admin/whoami")
            me = json.loads(out)
            assert st == 200 and me["role"] == "viewer" and not me["can_write"], me
            assert me["visible_apps"] == [APP], me
            st, me = admin(edge, "GET", "/v1/admin/whoami")
            assert me["node_role"] == "edge" and me["read_only"] and not me["can_write"], me
            st, f = admin(origin, "GET", BASE + "/releases/1.0.1/files")
            assert st == 200 and f["base"] == "1.0.0" and f["size"] == 600_000, f
            assert 0 < f["shared_chunks"] < f["chunks"], f
            assert f["new_chunks"] == f["chunks"] - f["shared_chunks"], f
            st, f2 = admin(origin, "GET", BASE + "/releases/1.0.1/files?base=1.0.2")
            assert st == 200 and f2["shared_chunks"] == 0 and f2["new_bytes"] == f2["chunk_bytes"], f2
            st, err = admin(origin, "GET", BASE + "/releases/1.0.1/files?base=9.9.9")
            assert st == 400 and err["error"] == "invalid_query_parameters" and "9.9.9" in err["message"], err
            st, err = admin(origin, "GET", BASE + "/releases/1.0.1/files?bogus=1")
            assert st == 400 and "bogus" in err["message"], err

        def wrong_token():
            c.sign_in("bet_" + "0" * 64)
            c.wait_text("#notice", "401")
            assert "wrong or revoked" in c.notice(), c.notice()
            assert not c.d.find_element(By.CSS_SELECTOR, "#top").is_displayed()
            c.shot("01-sign-in-refused")

        def dashboard_figures():
            c.sign_in(origin.token)
            c.wait("#summary")
            c.idle()
            c.shot("02-dashboard")
            st, stats = admin(origin, "GET", BASE + "/stats")
            assert st == 200
            api_get = sum(d["actions"].get("updates", 0) for d in stats["days"])
            api_set = sum(d["actions"].get("set", 0) for d in stats["days"])
            api_fail = sum(v for d in stats["days"] for a, v in d["actions"].items() if a.endswith("_fail"))
            assert (api_get, api_set, api_fail) == (7, 3, 1), (api_get, api_set, api_fail)
            shown = lambda css: int(c.d.find_element(By.CSS_SELECTOR, css + " .n").text.replace(",", ""))
            assert (shown("#sum-get"), shown("#sum-installed"), shown("#sum-failed")) == (api_get, api_set, api_fail)

            for chart_id in ("chart-actions", "chart-devices"):  # built when first opened
                c.d.find_element(By.CSS_SELECTOR, "#%s-figures summary" % chart_id).click()
                c.wait("#%s-figures table" % chart_id)

            def cells(series):  # the figures behind the actions chart, per series
                return sum(int(e.get_attribute("textContent").replace(",", "")) for e in c.d.find_elements(
                    By.CSS_SELECTOR, '#chart-actions-figures td[data-series="%s"]' % series))
            assert (cells("get"), cells("installed"), cells("failed")) == (api_get, api_set, api_fail)
            # Failure rate per release: the API's figure for 1.0.1.
            rel = next(r for r in stats["releases"] if r["release"] == "1.0.1")
            row = c.d.find_element(By.CSS_SELECTOR, '#failure-rate tr[data-release="1.0.1"] td[data-value]')
            assert int(row.get_attribute("data-value")) == rel["failure_rate_bps"] == 2500, rel
            # Active devices: today's devices on 1.0.1 in the chart's figures equal the API's.
            today = stats["days"][-1]
            on = c.d.find_elements(By.CSS_SELECTOR, '#chart-devices-figures td[data-series="1.0.1"][data-label="%s"]' % today["day"])
            assert on and int(on[0].get_attribute("textContent")) == today["devices_by_release"]["1.0.1"], today
            # The hourly range shows the same totals.
            Select(c.wait("#range")).select_by_value("24h")
            c.wait_text("#range option:checked", "24 hours")
            c.idle()
            assert shown("#sum-get") == api_get

        def dashboard_from_a_large_answer():
            # Whatever the API answers, the dashboard draws it: an answer from a node before
            # the name caps, 20,000 running versions in a day and as many releases in the
            # summary, once made the page die with "Maximum call stack size exceeded". The
            # answer is served to the page by a stand-in fetch (the node itself caps its
            # answers); the page must draw it fast, without errors, top names first.
            c.sign_in(origin.token)
            c.wait("#summary")
            c.idle()
            c.d.execute_script("""
              const names = 20000, now = Date.now(), day = 86400e3;
              const days = [];
              for (let k = 29; k >= 0; k--) {
                const d = new Date(now - k * day).toISOString().slice(0, 10);
                days.push({ day: d, devices: 3, devices_by_release: { "1.0.1": 3 }, checkins: 3,
                            actions: { updates: 3 }, platforms: { android: 3 }, releases: { "1.0.1": 3 },
                            installs: {}, targets: {} });
              }
              const last = days[days.length - 1], summary = [];
              for (let i = 0; i < names; i++) {
                const v = "9.0." + i;
                last.releases[v] = 1 + (i % 7);
                last.devices_by_release[v] = 1 + (i % 5);
                last.platforms["p" + i] = 1;
                summary.push({ release: v, installs: 1, downloads_started: 1, failures: i % 3,
                               failures_by_action: {}, failure_rate_bps: (i % 3) * 5000 });
              }
              const doc = { app_id: arguments[0], resolution: "day", from_ms: now - 30 * day + 1, to_ms: now,
                            days, releases: summary, rollouts: [] };
              window.__errors = [];
              window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
              window.addEventListener("unhandledrejection", (e) => window.__errors.push(String(e.reason)));
              window.__realFetch = window.__realFetch || window.fetch;
              window.fetch = (input, opts) => String(input).includes("/stats?")
                ? Promise.resolve(new Response(JSON.stringify(doc), { status: 200, headers: { "Content-Type": "application/json" } }))
                : window.__realFetch(input, opts);
            """, APP)
            try:
                t0 = time.time()
                c.open("#/app/%s/dashboard?range=30d&large=1" % APP)
                c.wait("#chart-running")
                secs = time.time() - t0
                print("  large answer drawn in %.2f s" % secs, flush=True)
                errors = c.d.execute_script("return window.__errors")
                assert not errors, errors
                assert not c.notice(), c.notice()
                assert not c.d.find_elements(By.XPATH, "//*[contains(text(), 'could not be loaded')]")
                # The top 20 releases and one "other" line: a readable chart, not 20,000 lines.
                lines = c.d.find_elements(By.CSS_SELECTOR, "#chart-running polyline")
                assert len(lines) == 21, len(lines)
                legend = c.d.execute_script(
                    "return [...document.getElementById('chart-running').closest('div').parentNode"
                    ".querySelectorAll('.legend > span')].map((e) => e.textContent)")
                assert legend[-1] == "other (19,981 more)", legend[-3:]
                assert len(c.d.find_elements(By.CSS_SELECTOR, "#chart-devices polyline")) == 21
                # The failure rates: the 20 highest, then how many more there are.
                rows = c.d.find_elements(By.CSS_SELECTOR, "#failure-rate tr[data-release]")
                assert len(rows) == 20, len(rows)
                assert all(int(r.find_element(By.CSS_SELECTOR, "td[data-value]").get_attribute("data-value")) == 10000
                           for r in rows)
                assert "19,980 more" in c.d.find_element(By.CSS_SELECTOR, "#failure-rate tr.more").text
                assert secs < 10, secs
                c.shot("02b-dashboard-large-answer")
            finally:
                c.d.execute_script("if (window.__realFetch) window.fetch = window.__realFetch;")

        def release_pages():
            c.open("#/app/%s/releases" % APP)
            c.wait('#releases tr[data-release="1.0.1"]')
            c.shot("03-releases")
            c.open("#/app/%s/releases/1.0.1" % APP)
            c.wait("#release-delta")
            st, f = admin(origin, "GET", BASE + "/releases/1.0.1/files")
            text = c.d.find_element(By.CSS_SELECTOR, "#release-delta").text
            assert "Shares %d of %d chunks" % (f["shared_chunks"], f["chunks"]) in text and "1.0.0" in text, text
            assert "600,000 bytes" in c.d.find_element(By.CSS_SELECTOR, "#release-size").text
            assert "25.00%" in c.d.find_element(By.CSS_SELECTOR, "#release-failure-rate").text
            c.shot("04-release")

        def plugins_and_reach():
            # Two devices with old plugins, and beta made delta-only (manifest only): the
            # Plugins panel shows the API's rows and flags them; the release and channel
            # pages say how many devices run the release, as the reach route counts them.
            st, beta = admin(origin, "GET", BASE + "/channels/beta")
            body = {k: v for k, v in beta.items() if k != "name"}
            assert admin(origin, "PUT", BASE + "/channels/beta", dict(body, update_package="delta"))[0] == 200
            try:
                updates(origin.url, device_id=device_id(7), plugin_version="5.2.0")
                updates(origin.url, device_id=device_id(8), plugin_version="7.0.10")
                wait_for("the new devices in the plugins answer",
                         lambda: admin(origin, "GET", BASE + "/plugins")[1]["devices"] == 9)
                st, plugins = admin(origin, "GET", BASE + "/plugins")
                assert [(v["version"], v["devices"], v["flagged"]) for v in plugins["versions"]] == \
                    [("8.51", 7, 0), ("7.0", 1, 1), ("5.2", 1, 1)], plugins
                c.sign_in(origin.token)
                c.wait("#summary")
                c.wait("#plugins tbody tr")
                rows = c.d.find_elements(By.CSS_SELECTOR, "#plugins tbody tr")
                shown = [(r.get_attribute("data-version"), int(r.get_attribute("data-devices")),
                          int(r.get_attribute("data-flagged"))) for r in rows]
                assert shown == [(v["version"], v["devices"], v["flagged"]) for v in plugins["versions"]], shown
                flagged = c.d.find_elements(By.CSS_SELECTOR, "#plugins tr.flagged")
                assert [r.get_attribute("data-version") for r in flagged] == ["7.0", "5.2"], flagged
                badge_ = c.d.find_element(By.CSS_SELECTOR, '#plugins tr[data-version="7.0"] .badge[data-rule="manifest"]')
                assert "manifest: 1 below" in badge_.text and "beta" in badge_.text, badge_.text
                assert "beta" in c.d.find_element(By.CSS_SELECTOR, '#plugin-rules li[data-rule="manifest"]').text
                assert "9 devices" in c.d.find_element(By.CSS_SELECTOR, "#plugins-summary").text
                assert c.has("#chart-plugins path")  # the stacked bars
                c.d.execute_script("document.getElementById('plugins-panel').scrollIntoView()")
                c.shot("04b-plugins")
                # A node that read only part of a large device index says so; the page too.
                c.d.execute_script("""
                  const doc = { app_id: arguments[0], devices: 50000, complete: false, rules: [],
                                versions: [{ version: "8.52", devices: 50000, flagged: 0, flags: [] }] };
                  window.__realFetch = window.__realFetch || window.fetch;
                  window.fetch = (input, opts) => String(input).endsWith("/plugins")
                    ? Promise.resolve(new Response(JSON.stringify(doc), { status: 200, headers: { "Content-Type": "application/json" } }))
                    : window.__realFetch(input, opts);
                """, APP)
                try:
                    c.open("#/app/%s/dashboard?range=7d" % APP)
                    c.wait_text("#plugins-summary", "50,000 devices")
                    assert "the first 50,000 by device id" in c.d.find_element(By.CSS_SELECTOR, "#plugins-summary").text
                finally:
                    c.d.execute_script("if (window.__realFetch) window.fetch = window.__realFetch;")

                st, reach = admin(origin, "GET", BASE + "/reach")
                rel = next(r for r in reach["releases"] if r["release"] == "1.0.1")
                prod = next(ch for ch in reach["channels"] if ch["channel"] == "production")
                # Devices 0-5 and the two new ones resolve to production (the pinned one to
                # beta); 0-2 installed 1.0.1, 5 failed to download it.
                assert (reach["devices"], prod["devices"], prod["on_release"]) == (9, 8, 3), reach
                assert (rel["running"], rel["installs"], rel["failures"], rel["checked_in_today"]) == (3, 3, 1, 3), rel
                c.open("#/app/%s/releases/1.0.1" % APP)
                c.wait_text("#release-reach", "3 of 9 devices of the app run 1.0.1")
                text = c.d.find_element(By.CSS_SELECTOR, "#reach-panel").text
                assert "3 of 8 devices on production run it" in text, text
                assert "3 devices checked in running it today" in text and "3 installs, 1 failure reported" in text, text
                c.shot("04c-release-reach")
                c.open("#/app/%s/channels/production" % APP)
                c.wait_text("#channel-reach", "3 of 8 devices on production run 1.0.1")
                c.shot("04d-channel-reach")
            finally:
                assert admin(origin, "PUT", BASE + "/channels/beta", body)[0] == 200

        def rollout_start_pause():
            c.open("#/app/%s/channels/production" % APP)
            Select(c.wait("#rollout-release")).select_by_value("1.0.2")
            pct = c.wait("#rollout-start-percent")
            pct.clear()
            pct.send_keys("25")
            c.click("#rollout-start")
            c.wait_text("#rollout-state", "1.0.2 to 25.00%")
            st, ch = admin(origin, "GET", BASE + "/channels/production")
            assert ch["rollout"]["release"] == "1.0.2" and ch["rollout"]["bps"] == 2500, ch
            assert ch["rollout"]["enabled"] and not ch["rollout"]["paused"], ch
            c.click("#rollout-pause")
            c.wait_text("#rollout-state", "paused")
            assert c.has("#rollout-resume")
            st, ch = admin(origin, "GET", BASE + "/channels/production")
            assert ch["rollout"]["paused"] and ch["release"] == "1.0.1", ch
            c.shot("05-channel")
            # The dashboard's rollout panel follows.
            c.open("#/app/%s/dashboard" % APP)
            c.wait_text('.rollout[data-channel="production"]', "paused")

        def rollback_changes_edge():
            dev = device_id(1)
            wait_for("the edge answering 1.0.1", lambda: updates(edge.url, device_id=dev).get("version") == "1.0.1")
            c.open("#/app/%s/channels/production" % APP)
            c.click("#rollback")
            c.wait_text("#notice", "1.0.1 → 1.0.0")
            c.wait_text("#channel-current", "1.0.0")
            st, ch = admin(origin, "GET", BASE + "/channels/production")
            assert ch["release"] == "1.0.0" and not ch.get("rollout"), ch
            wait_for("the edge answering 1.0.0 after the rollback",
                     lambda: updates(edge.url, device_id=dev).get("version") == "1.0.0")
            c.wait("#history tbody tr")
            c.shot("06-channel-rolled-back")

        def test_as_device():
            c.open("#/app/%s/channels/production" % APP)
            c.wait("#test-device-id").send_keys(device_id(2))
            build = c.wait("#test-version-build")
            build.clear()
            build.send_keys("0.9.0")
            c.click("#test-run")
            c.wait_text("#test-release", "1.0.0")
            assert "production" in c.d.find_element(By.CSS_SELECTOR, "#test-channel").text

        def revert_to_builtin():
            c.open("#/app/%s/channels/beta" % APP)
            c.click("#revert-builtin")
            c.wait_text("#channel-current", "builtin")
            st, ch = admin(origin, "GET", BASE + "/channels/beta")
            assert ch["release"] is None, ch
            # A device pinned to beta on an OTA bundle is sent back to builtin.
            answer = updates(origin.url, device_id=PINNED, version_name="1.0.2", custom_id="user-42")
            assert answer.get("version") == "builtin", answer

        def find_device_remove_override():
            c.open("#/app/%s/devices" % APP)
            c.wait("#filter-custom_id").send_keys("user-4")
            c.click("#device-search")
            c.wait('#devices tr[data-device="%s"]' % PINNED)
            rows = c.d.find_elements(By.CSS_SELECTOR, "#devices tbody tr")
            assert len(rows) == 1, [r.text for r in rows]  # user-42 only, not user-10x
            assert "override" in rows[0].text, rows[0].text
            c.shot("07-devices")
            c.click('#devices tr[data-device="%s"] a' % PINNED)
            c.wait_text("#override-state", "beta")
            c.wait("#timeline tbody tr")
            c.shot("08-device")
            c.click("#override-remove")
            c.wait_text("#override-state", "No override")
            st, d = admin(origin, "GET", BASE + "/devices/" + PINNED)
            assert st == 200 and d["channel"] is None, d

        def fleet_page():
            c.open("#/fleet")
            c.wait("#fleet tbody tr")
            wait_for("the edge in the fleet view", lambda: (c.open("#/fleet"), len(c.d.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")) >= 2)[1])
            text = c.d.find_element(By.CSS_SELECTOR, "#fleet").text
            assert "edge" in text and origin.url in text, text
            c.shot("09-fleet")

        def fleet_page_at_scale():
            # 10,000 nodes of near-4 KiB statuses (40 MB in all), sent with the sync token as
            # relaying edges would: the page shows one page and the summary, quickly.
            for k in range(40):
                body = json.dumps({"nodes": [{"node_id": "zz-forged-%02d-%03d" % (k, i), "role": "edge",
                                              "lag_seq": 0, "pad": "x" * 3800} for i in range(250)]})
                st, _, out = curl("-X", "POST", "-H", "Authorization: Bearer " + TOKEN, "--data-binary", "@-",
                                  origin.url + "/v1/sync/status", data=body.encode())
                assert st == 200, (st, out)
            c.open("#/app/%s/releases" % APP)  # from another page: #/fleet again would not re-render
            t0 = time.time()
            c.open("#/fleet")
            c.wait_text("#fleet-nodes", "10,000")
            took = time.time() - t0
            rows = c.d.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
            assert 2 <= len(rows) <= 101, len(rows)
            assert took < 3, took  # the whole table in one page took 15 s here
            c.shot("09-fleet-10k")
            c.click("#fleet-next-page")
            c.wait("#fleet-first-page")
            assert len(c.d.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")) == 100
            assert "this node" not in c.d.find_element(By.CSS_SELECTOR, "#fleet").text
            print("  fleet page with 10,000 nodes: %.2f s, %d rows" % (took, len(rows)))

        def privacy_settings():
            c.open("#/app/%s/settings" % APP)
            mode = c.wait("#privacy-mode")
            assert mode.get_attribute("value") == "all"
            Select(mode).select_by_value("billingOnly")
            box = c.wait("#collect-custom_id")
            assert box.is_selected()
            box.click()
            c.click("#privacy-save")
            c.wait_text("#notice", "Privacy settings saved")
            st, doc = admin(origin, "GET", BASE)
            assert doc["stats_mode"] == "billingOnly" and doc["device_data_collection"]["custom_id"] is False, doc
            assert doc["device_data_collection"]["platform"] is True, doc
            c.open("#/app/%s/settings" % APP)
            assert c.wait("#privacy-mode").get_attribute("value") == "billingOnly"
            assert not c.wait("#collect-custom_id").is_selected()
            c.shot("09-settings")
            st, _ = admin(origin, "PUT", BASE, {k: v for k, v in doc.items()
                                                 if k not in ("app_id", "stats_mode", "device_data_collection")})
            assert st == 200, st

        def viewer_sees_no_write_controls():
            c.sign_in(viewer["token"])
            c.wait("#summary")
            assert "dash (viewer)" in c.d.find_element(By.CSS_SELECTOR, "#who").text
            c.open("#/app/%s/channels/production" % APP)
            c.wait("#read-only-note")
            for css in ("#save-channel", "#rollback", "#rollout-start", "#rollout-pause", "#revert-builtin",
                        "#ap-save", "#delete-channel"):
                assert not c.has(css), css
            c.shot("10-viewer-channel")
            c.open("#/app/%s/channels" % APP)
            c.wait("#channels")
            assert not c.has("#new-channel-name")
            c.open("#/app/%s/devices/%s" % (APP, device_id(0)))
            c.wait("#override-state")
            assert not c.has("#override-set") and not c.has("#override-remove")
            c.open("#/app/%s/releases/1.0.1" % APP)
            c.wait("#release-delta")
            assert not c.has("#delete-release")
            c.open("#/app/%s/settings" % APP)
            c.wait("#privacy")
            assert not c.has("#privacy-save")

        def phone_layout():
            c.d.set_window_size(390, 844)
            try:
                c.sign_in(origin.token)
                c.wait("#summary")
                for page in ("dashboard", "channels/production", "devices"):
                    c.open("#/app/%s/%s" % (APP, page))
                    c.idle()
                    over = c.d.execute_script(
                        "return document.documentElement.scrollWidth - window.innerWidth")
                    assert over <= 1, (page, over)  # tables scroll inside their panel
                c.shot("11-phone-devices")
            finally:
                c.d.set_window_size(1366, 900)

        def edge_console_is_read_only():
            e = Console(driver, edge)
            e.sign_in(edge.token)
            e.wait("#summary")
            assert "edge node" in driver.find_element(By.CSS_SELECTOR, "#who").text
            e.open("#/app/%s/channels/production" % APP)
            e.wait_text("#read-only-note", "edge")
            assert not e.has("#save-channel")

        def empty_states():
            # A new app with nothing in it: every page says so and gives the next step.
            empty = "com.example.empty"
            commands = {}
            st, _ = admin(origin, "PUT", "/v1/admin/apps/" + empty, {})
            assert st in (200, 201), st
            c.sign_in(origin.token)
            c.wait("#summary")
            for page, text, hint in (
                    ("dashboard", "No check-ins in this range yet", None),
                    ("releases", "No releases yet. Publish one:", "bundle-edge-ctl publish --app " + empty),
                    ("channels", "No channels yet", "bundle-edge-ctl channel set " + empty),
                    ("devices", "No device has checked in yet.", None)):
                c.open("#/app/%s/%s" % (empty, page))
                c.wait_text(".empty", text)
                if hint:
                    c.wait_text(".empty code", hint)
                    commands[page] = c.d.find_element(By.CSS_SELECTOR, ".empty code").text
                c.shot("empty-" + page)
            # The next steps the pages give work as printed: publish, then the channel.
            work = os.path.join(TMP, "empty-app")
            os.makedirs(work, exist_ok=True)
            with zipfile.ZipFile(os.path.join(work, "bundle.zip"), "w") as z:
                z.writestr("index.html", "<html>empty no more</html>")
            env = dict(os.environ, BUNDLE_EDGE_URL=origin.admin_url, BUNDLE_EDGE_TOKEN=origin.token)
            for page in ("releases", "channels"):
                argv = shlex.split(commands[page])
                assert argv[0] == "bundle-edge-ctl", argv
                out = subprocess.run([CTL, *argv[1:]], cwd=work, env=env, capture_output=True, text=True)
                assert out.returncode == 0, (commands[page], out.stdout, out.stderr)
            st, ch = admin(origin, "GET", "/v1/admin/apps/%s/channels/production" % empty)
            assert st == 200 and ch["release"] == "1.0.0" and ch["public"] is True, (st, ch)

        check("console static files", static_files)
        check("whoami and release files API", whoami_and_release_files)
        check("a wrong token shows the API's message", wrong_token)
        check("dashboard figures match the API", dashboard_figures)
        check("the dashboard draws a large answer", dashboard_from_a_large_answer)
        check("release list and delta", release_pages)
        check("plugins panel and reach figures match the API", plugins_and_reach)
        check("start a rollout and pause it", rollout_start_pause)
        check("rollback changes an edge's /updates", rollback_changes_edge)
        check("test as a device", test_as_device)
        check("revert to builtin with confirmation", revert_to_builtin)
        check("find a device by custom id, remove override", find_device_remove_override)
        check("fleet shows the edge", fleet_page)
        check("fleet page with 10,000 nodes: one page and a summary, fast", fleet_page_at_scale)
        check("app privacy settings shown and saved", privacy_settings)
        check("a viewer sees no write controls", viewer_sees_no_write_controls)
        check("phone-width layout", phone_layout)
        check("an edge's console is read-only", edge_console_is_read_only)
        check("an empty app's pages say what to do next", empty_states)
        print("screenshots in " + ARTIFACTS)
    finally:
        driver.quit()
        edge.stop()
        origin.stop()


if __name__ == "__main__":
    run(main)
