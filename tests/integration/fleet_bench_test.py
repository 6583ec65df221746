#!/usr/bin/env python3
"""Smoke run of the fleet benchmark (bench/fleet/fleet-bench.py): an origin and 3 edges in
network namespaces for a few seconds. Checks that every scenario row comes out with sane
values (every edge took both releases with the right bytes, check-ins flowed, the partitioned
edge's devices were answered, nothing was lost or counted twice), and that nothing is left
behind: no befleet-* namespace, no bridge, no process, no work directory; also after a run
interrupted with Ctrl-C. Figures are not asserted: this is a test that the bench works.

Needs root and `ip netns`; elsewhere it prints SKIP and exits 0.

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
            except OSError:
                continue
            if b"/var/tmp/befleet-" in cmd:
                found.append("process %s: %s" % (pid, cmd[:100].decode(errors="replace")))
    return found


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
        proc = subprocess.Popen([python, SCRIPT, "--binary", binary, "--edges", "2", "--load-s", "60",
                                 "--timeout", "100", "--png", ""], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        deadline = time.time() + 60
        for line in proc.stdout:
            if line.startswith("|---") or time.time() > deadline:
                break
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
        if proc.returncode != 3:
            failures.append("Ctrl-C: exit %s (want 3): %s" % (proc.returncode, rest[-1000:]))
        left = leftovers()
        if left:
            failures.append("left behind after Ctrl-C: %s" % left)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        print("FAIL: " + f, flush=True)
    print("fleet_bench: %s" % ("FAILED" if failures else "passed"), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
