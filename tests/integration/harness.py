"""Shared helpers for the integration tests: start the real bundle-edge binary on free
loopback ports (port 0, 127.0.0.1 only), drive it with curl and raw sockets, stop it by pid."""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

BINARY = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else None
TMP = tempfile.mkdtemp(prefix="edge-it-")
results = {"passed": 0, "failed": 0}


def free_port():
    """A port that was free a moment ago (for nodes that must know each other's URL)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Node:
    def __init__(self, config_text, port=0, args=(), data=None):
        self.listen_port = port
        self.args = list(args)  # extra command-line flags
        self.dir = tempfile.mkdtemp(dir=TMP)
        self.data = data or os.path.join(self.dir, "var")
        self.conf = os.path.join(self.dir, "node.toml")
        with open(self.conf, "w") as f:
            f.write(config_text)
        self.start()

    def restart(self):
        """Stops the node (SIGTERM) and starts it again on the same data directory."""
        rc = self.stop()
        assert rc == 0, rc
        self.start()

    def start(self):
        self.log_path = os.path.join(self.dir, "log.txt")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [BINARY, "--config", self.conf, "--data", self.data,
             "--listen", "127.0.0.1:%d" % self.listen_port, "--admin-listen", "127.0.0.1:0", "--threads", "2", *self.args],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        self.port = self.admin = None
        while time.time() < deadline and (self.port is None or self.admin is None):
            text = open(self.log_path).read()
            m = re.search(r"public listener on 127\.0\.0\.1:(\d+)", text)
            a = re.search(r"admin listener on 127\.0\.0\.1:(\d+)", text)
            if m and a:
                self.port, self.admin = int(m.group(1)), int(a.group(1))
            elif self.proc.poll() is not None:
                raise RuntimeError("node exited: " + text)
            time.sleep(0.05)
        if self.port is None:
            raise RuntimeError("node did not start: " + open(self.log_path).read())
        self.token = open(os.path.join(self.data, "admin.token")).read().strip()
        self.url = "http://127.0.0.1:%d" % self.port
        self.admin_url = "http://127.0.0.1:%d" % self.admin

    def kill(self):
        """kill -9: no clean shutdown."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def metrics(self):
        """The node's /metrics as {series: value}."""
        st, _, out = curl("-H", "Authorization: Bearer " + self.token, self.admin_url + "/metrics")
        assert st == 200, st
        values = {}
        for line in out.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise RuntimeError("node did not stop within 15 s of SIGTERM")
        return self.proc.returncode


def stop_all(nodes):
    """Stops every node (SIGTERM; kill -9 if that fails), as a test's cleanup."""
    for n in nodes:
        try:
            n.stop()
        except Exception:
            n.kill()


def curl(*args, data=None):
    """Runs curl; returns (status, headers-text, body-bytes)."""
    hdr = tempfile.NamedTemporaryFile(dir=TMP, delete=False)
    hdr.close()
    out = subprocess.run(["curl", "-sS", "-D", hdr.name, "-o", "-", *args],
                         input=data, capture_output=True, timeout=120)
    headers = open(hdr.name, encoding="latin-1").read()
    os.unlink(hdr.name)
    statuses = re.findall(r"^HTTP/1\.1 (\d+)", headers, re.M)
    # Skip interim responses (100 Continue).
    final = [int(s) for s in statuses if not s.startswith("1")]
    return (final[-1] if final else 0), headers, out.stdout


def header(headers, name):
    blocks = [b for b in headers.split("\r\n\r\n") if b.strip()]
    last = blocks[-1] if blocks else ""
    m = re.search(r"^" + re.escape(name) + r":\s*(.*?)\r?$", last, re.M | re.I)
    return m.group(1) if m else None


def admin(node, method, path, body=None):
    """An admin API call with the node's token; returns (status, parsed JSON or None)."""
    args = ["-X", method, "-H", "Authorization: Bearer " + node.token]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    st, _, out = curl(*args, node.admin_url + path)
    return st, (json.loads(out) if out else None)


def upload(node, path, extra=()):
    return curl("-X", "PUT", "--data-binary", "@" + path, "-H",
                "Authorization: Bearer " + node.token, *extra, node.admin_url + "/v1/admin/blobs")


def half_sent_upload(node, size=200_000):
    """A blob upload that has sent half of its body and waits: the open connection. Send the
    other half (conn.send) and read the answer (conn.getresponse()) to finish it."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", node.admin, timeout=30)
    conn.putrequest("PUT", "/v1/admin/blobs")
    conn.putheader("Authorization", "Bearer " + node.token)
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    conn.send(os.urandom(size // 2))
    time.sleep(0.3)
    return conn


def sha(b):
    return hashlib.sha256(b).hexdigest()


def raw(port, payload, read_until_close=True, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(payload)
    chunks = []
    try:
        while True:
            d = s.recv(1 << 16)
            if not d:
                break
            chunks.append(d)
            if not read_until_close:
                break
    except socket.timeout:
        pass
    s.close()
    return b"".join(chunks)


def wait_for(what, fn, timeout=15.0, step=0.1):
    """Polls fn() until it returns something true (returned), or fails naming `what`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


class Skip(Exception):
    """Raised by a check whose precondition this machine cannot give; the reason is printed."""


def check(name, fn):
    only = os.environ.get("EDGE_IT_ONLY")  # a part of the names of the checks to run
    if only and only not in name:
        return
    t0 = time.time()
    try:
        fn()
        results["passed"] += 1
        print("PASS %-45s %.2fs" % (name, time.time() - t0), flush=True)
    except Skip as e:
        print("SKIP %s: %s" % (name, e), flush=True)
    except Exception:
        results["failed"] += 1
        print("FAIL %s\n%s" % (name, traceback.format_exc()), flush=True)




def run(main):
    """Runs a test file's main(), prints the closing count line, removes the temp dir."""
    try:
        main()
        print("%d passed, %d failed" % (results["passed"], results["failed"]))
        sys.exit(1 if results["failed"] else 0)
    finally:
        if os.environ.get("EDGE_IT_KEEP"):
            print("kept " + TMP)  # node logs, for sanitizer runs
        else:
            subprocess.run(["rm", "-rf", TMP])
