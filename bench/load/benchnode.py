"""A bundle-edge node for the load scripts: started on 127.0.0.1 free ports with admin token
`t` and one server thread, stopped by pid."""
import os
import re
import signal
import subprocess
import time


class BenchNode:
    def __init__(self, binary, work, conf_text, fallback_conf=None):
        """`fallback_conf`: used instead if the binary refuses `conf_text` for an unknown
        key (an older build, run for comparison)."""
        self.conf = os.path.join(work, "node.toml")
        self.log = os.path.join(work, "log")
        self.binary, self.work = binary, work
        open(self.conf, "w").write(conf_text)
        self.proc = self._start()
        time.sleep(0.3)
        if fallback_conf is not None and self.proc.poll() is not None and \
                "unknown key" in open(self.log).read():
            open(self.conf, "w").write(fallback_conf)
            self.proc = self._start()
        self.port = self.admin = None
        for _ in range(200):
            text = open(self.log).read()
            m = re.search(r"public listener on 127\.0\.0\.1:(\d+)", text)
            a = re.search(r"admin listener on 127\.0\.0\.1:(\d+)", text)
            if m and a:
                self.port, self.admin = int(m.group(1)), int(a.group(1))
                return
            time.sleep(0.05)
        self.stop()
        raise SystemExit("node did not start: " + open(self.log).read())

    def _start(self):
        return subprocess.Popen([self.binary, "--config", self.conf, "--data",
                                 os.path.join(self.work, "var"), "--listen", "127.0.0.1:0",
                                 "--admin-listen", "127.0.0.1:0", "--admin-token", "t",
                                 "--threads", "1"],
                                stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


# Shared by the Python load scripts: the host's steal (from host-steal.sh, the one definition
# the shell scripts source too) and the min/median/max line every figure is quoted with.
STEAL_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "host-steal.sh")


def cpu_times():
    """The machine's CPU times ("cpu" line of /proc/stat), as host-steal.sh's cpu_times."""
    return subprocess.run(["bash", "-c", '. "$0"; cpu_times', STEAL_SH], capture_output=True, text=True,
                          check=True).stdout.strip()


def steal_pct(before, after):
    """Steal's share of the time between two cpu_times(), in % (host-steal.sh's steal_pct)."""
    out = subprocess.run(["bash", "-c", '. "$0"; steal_pct "$1" "$2"', STEAL_SH, before, after],
                         capture_output=True, text=True, check=True).stdout
    return float(out)


def spread(values, fmt="%.0f", unit=""):
    """'median (min-max, N rounds)' of a list of figures."""
    vals = sorted(values)
    med = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
    return "%s%s (min %s, max %s, %d round%s)" % (fmt % med, unit, fmt % vals[0], fmt % vals[-1], len(vals),
                                                 "" if len(vals) == 1 else "s")
