#!/usr/bin/env python3
"""Smoke run of the fleet benchmark (bench/fleet/fleet-bench.py): an origin and 3 edges in
network namespaces for a few seconds. Checks that every scenario row comes out with sane
values (every edge took both releases with the right bytes, check-ins flowed, the partitioned
edge's devices were answered, nothing was lost or counted twice), and that nothing is left
behind: no befleet-* namespace, no bridge, no process, no work directory; also after a run
interrupted with Ctrl-C. Figures are not asserted: this is a test that the bench works.

Two cases: `embedded` (one origin) and `tier` (--origin tier: two origins on PostgreSQL 15,
primary + synchronous standby, and s3rver, and row 4 the tier's failover; its PostgreSQL and
s3rver processes and files must be gone too). EDGE_IT_ONLY=<substring> runs one.

Needs root and `ip netns`; elsewhere it prints SKIP and exits 0. The tier case also needs
PostgreSQL 15 and s3rver (tools/setup.sh installs both); without them it prints SKIP.

Usage: fleet_bench_test.py <path-to-bundle-edge>"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "fleet", "fleet-bench.py")


def skip(why):
    print("SKIP: fleet_bench: " + why, flush=True)
    sys.exit(0)


def leftovers():
    """What a fleet-bench run could leave: its namespaces, links, work directories, processes."""
    found = []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += ["netns " + l.split()[0] for l in out.splitlines() if l.startswith("befleet-")]
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += ["link " + l.split(":")[1].strip() for l in out.splitlines() if ": befleet" in l]
    found += ["dir " + d for d in os.listdir("/var/tmp") if d.startswith("befleet-")]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ")
                # PostgreSQL's processes keep their data directory as working directory
                cwd = os.readlink("/proc/%s/cwd" % pid)
            except OSError:
                continue
            if b"/var/tmp/befleet-" in cmd or b"netns exec befleet-" in cmd or cwd.startswith("/var/tmp/befleet-"):
                found.append("process %s: %s" % (pid, cmd[:100].decode(errors="replace")))
    return found


def tier_missing():
    """None if the tier case can run (PostgreSQL 15 and s3rver installed), else why not."""
    import harness  # pgharness's base: it makes a temp dir on import that this test does not use
    shutil.rmtree(harness.TMP, ignore_errors=True)
    import pgharness
    import s3rver
    return pgharness.available() or (None if s3rver.find() else "s3rver is not installed (tools/setup.sh)")



def run_up(python, binary, edges, tier=False):
    """A run of the bench with `edges` edges, once its fleet (and tier) are up: the table has
    started, or 60 s passed. The running process."""
    proc = subprocess.Popen([python, SCRIPT, *(["--origin", "tier"] if tier else []), "--binary", binary,
                             "--edges", str(edges), "--load-s", "60", "--timeout", "100", "--png", ""],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    for line in proc.stdout:
        if line.startswith("|---") or time.time() > deadline:
            break
    return proc


def interrupted_leaves_nothing(proc, failures):
    """Ctrl-C to a running bench: it must exit 3 and leave nothing behind."""
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    if proc.returncode != 3:
        failures.append("Ctrl-C: exit %s (want 3): %s" % (proc.returncode, rest[-1000:]))
    left = leftovers()
    if left:
        failures.append("left behind after Ctrl-C: %s" % left)

def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        skip("needs root (network namespaces, veths, a bridge)")
    if shutil.which("ip") is None:
        skip("no ip (iproute2)")
    probe = subprocess.run(["ip", "netns", "add", "befleet-probe"], capture_output=True, text=True)
    if probe.returncode != 0:
        skip("ip netns add is not allowed here: " + probe.stderr.strip())
    subprocess.run(["ip", "netns", "del", "befleet-probe"], check=True)

    # Debian's interpreter has python3-matplotlib (tools/setup.sh): the plot is checked too.
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    only = os.environ.get("EDGE_IT_ONLY", "")
    failures = []
    ran = 0
    for name, case in (("embedded", embedded), ("tier", tier)):
        if only and only not in name:
            continue
        ran += 1
        print("== fleet_bench %s" % name, flush=True)
        failures += ["%s: %s" % (name, f) for f in case(python, binary)]
    for f in failures:
        print("FAIL: " + f, flush=True)
    print("fleet_bench: %s" % ("FAILED" if failures else "passed" if ran else "nothing matched EDGE_IT_ONLY"),
          flush=True)
    return 1 if failures else 0


def embedded(python, binary):
    """One origin with its own state (the default): every row, the plot, Ctrl-C."""
    work = tempfile.mkdtemp(prefix="fleet-bench-test-")
    failures = []
    try:
        out_json = os.path.join(work, "out.json")
        png = os.path.join(work, "fleet.png")
        t0 = time.time()
        r = subprocess.run([python, SCRIPT, "--binary", binary, "--edges", "3", "--devices", "9",
                            "--checkins-per-s", "300", "--load-s", "3", "--partition-s", "3", "--origin-down-s", "2",
                            "--small-kib", "256", "--large-mib", "2", "--converge-timeout", "20",
                            "--drain-timeout", "20", "--timeout", "100", "--json", out_json, "--png", png],
                           capture_output=True, text=True, timeout=150)
        took = time.time() - t0
        print(r.stdout, flush=True)
        if r.returncode != 0:
            print(r.stderr[-3000:], flush=True)
            raise AssertionError("fleet-bench exited %d" % r.returncode)
        print("smoke run: %.1f s" % took, flush=True)
        for row in ("| 1. publish 256 KiB", "| 1. publish 2 MiB", "| 2. check-ins", "| 3. partition", "| 4. origin kill",
                    "| 5. every answered", "| 6. per edge, idle", "| 6. per edge, under load", "| 6. whole fleet"):
            if row not in r.stdout:
                failures.append("no row " + row)
        res = json.load(open(out_json))
        for label in ("small", "large"):
            c = res["convergence"][label]
            if not (c["edges_done"] == 3 and c["bad"] == 0 and 0 < c["p50"] <= c["max"] < 20):
                failures.append("convergence %s: %r" % (label, c))
        c = res["checkins"]
        if not (c["acked_per_s"] > 50 and c["origin_per_s"] > 50 and 0 <= c["lag_p99"] < 10):
            failures.append("check-ins: %r" % c)
        p = res["partition"]
        if not (p["edges"] == 1 and p["device_errors"] <= 0.01 * (p["device_ok"] + p["device_errors"])
                and p["acked_during"] > 0 and p["drain_s"] is not None):
            failures.append("partition: %r" % p)
        o = res["origin_restart"]
        if not (o["edges_following"] == 3 and o["drain_s"] is not None and
                o["device_errors"] <= 0.01 * (o["device_ok"] + o["device_errors"])):
            failures.append("origin restart: %r" % o)
        e = res["exactly_once"]
        # "extra": check-ins the edge kept whose answers the device never got (a timeout or a
        # cut connection); more than those would be a check-in counted twice.
        if not (e["acked"] > 0 and e["lost"] == 0 and e["extra"] <= e.get("unanswered", 0)):
            failures.append("exactly once: %r" % e)
        rs = res["resources"]
        if not (0 < rs["idle"]["rss_mib_p50"] < 1024 and 0 < rs["idle"]["threads_p50"] < 200
                and rs["disk_mib_p50"] > 0):
            failures.append("resources: %r" % rs)
        if not res["shaping"]:
            failures.append("no shaping line")
        has_plot = subprocess.run([python, "-c", "import matplotlib"], capture_output=True).returncode == 0
        if has_plot and not (os.path.exists(png) and os.path.getsize(png) > 10000):
            failures.append("no PNG")
        elif not has_plot:
            print("(no matplotlib in %s: PNG not checked)" % python)
        left = leftovers()
        if left:
            failures.append("left behind after a run: %s" % left)

        # Ctrl-C once the fleet is up: everything still goes.
        interrupted_leaves_nothing(run_up(python, binary, 2), failures)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return failures


def tier(python, binary):
    """--origin tier, 3 edges: every row (row 4 the failover), 0 lost, nothing left behind:
    also after a Ctrl-C once the PostgreSQL servers and s3rver run, and after a kill -9 of the
    script once the next run's sweep (--cleanup-only) is through."""
    why = tier_missing()
    if why:
        print("SKIP: fleet_bench tier: " + why, flush=True)
        return []
    work = tempfile.mkdtemp(prefix="fleet-bench-test-")
    failures = []
    try:
        out_json = os.path.join(work, "out.json")
        t0 = time.time()
        r = subprocess.run([python, SCRIPT, "--origin", "tier", "--binary", binary, "--edges", "3", "--devices", "9",
                            "--checkins-per-s", "300", "--load-s", "3", "--partition-s", "3", "--origin-down-s", "3",
                            "--small-kib", "256", "--large-mib", "2", "--converge-timeout", "20",
                            "--drain-timeout", "20", "--timeout", "100", "--json", out_json, "--png", ""],
                           capture_output=True, text=True, timeout=150)
        took = time.time() - t0
        print(r.stdout, flush=True)
        if r.returncode != 0:
            print(r.stderr[-3000:], flush=True)
            raise AssertionError("fleet-bench --origin tier exited %d" % r.returncode)
        print("tier smoke run: %.1f s" % took, flush=True)
        for row in ("origin mode: tier", "| 1. publish 256 KiB", "| 1. publish 2 MiB", "| 2. check-ins",
                    "| 3. partition", "| 4. origin tier failover", "| 5. every answered", "| 6. per edge, idle",
                    "| 6. per edge, under load", "| 6. whole fleet", "| 6. the origin tier"):
            if row not in r.stdout:
                failures.append("no row " + row)
        res = json.load(open(out_json))
        if res.get("origin_mode") != "tier":
            failures.append("origin_mode %r" % res.get("origin_mode"))
        for label in ("small", "large"):
            c = res["convergence"][label]
            if not (c["edges_done"] == 3 and c["bad"] == 0 and 0 < c["p50"] <= c["max"] < 20):
                failures.append("convergence %s: %r" % (label, c))
        c = res["checkins"]
        if not (c["acked_per_s"] > 50 and c["origin_per_s"] > 50):
            failures.append("check-ins: %r" % c)
        p = res["partition"]
        if not (p["edges"] == 1 and p["acked_during"] > 0 and p["drain_s"] is not None):
            failures.append("partition: %r" % p)
        o = res["origin_restart"]
        # The failover: admin writes came back through o3, the release published then reached
        # every edge, o1 came back on the promoted server, the outboxes drained.
        if not (o.get("mode") == "tier" and o["admin_resume_s"] is not None and o["edges_following"] == 3
                and o["drain_s"] is not None and o["o1_readyz_after_restart"].startswith("200")):
            failures.append("tier failover: %r" % o)
        e = res["exactly_once"]
        if not (e["acked"] > 0 and e["lost"] == 0 and e["extra"] <= e.get("unanswered", 0)):
            failures.append("exactly once: %r" % e)
        load = res["resources"]["load"]
        if not (len(load.get("origins_rss_mib", [])) == 2 and load.get("pg_pss_mib", 0) > 0
                and load.get("s3_rss_mib", 0) > 0):
            failures.append("tier resources: %r" % load)
        left = leftovers()
        if left:
            failures.append("left behind after a run: %s" % left)

        # Ctrl-C once the tier and the fleet are up: PostgreSQL and s3rver go too.
        interrupted_leaves_nothing(run_up(python, binary, 2, tier=True), failures)

        # kill -9 of the script (no teardown at all): the next run's sweep, here --cleanup-only,
        # finds PostgreSQL, s3rver and their files by the befleet- names.
        proc = run_up(python, binary, 1, tier=True)
        proc.kill()
        proc.communicate(timeout=30)
        left = leftovers()
        if not any("postgres" in x for x in left) or not any(x.startswith("dir befleet-tier-") for x in left):
            failures.append("kill -9 left no PostgreSQL or no tier directory to sweep (the check is blind): %s" % left)
        r = subprocess.run([python, SCRIPT, "--cleanup-only"], capture_output=True, text=True, timeout=60)
        left = leftovers()
        if r.returncode != 0 or left:
            failures.append("left behind after kill -9 and --cleanup-only (exit %d): %s" % (r.returncode, left))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return failures


if __name__ == "__main__":
    sys.exit(main())
