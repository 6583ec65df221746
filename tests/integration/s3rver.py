"""A local S3 for tests: s3rver 3.7.1 from npm (tools/setup.sh installs it under
${XDG_CACHE_HOME:-~/.cache}/bundle-edge/s3rver), started on a free 127.0.0.1 port in a temp
directory, with one bucket, and stopped by pid."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

# s3rver's default account; it accepts other keys too, so it never judges signatures
# (the unit tests check signing against AWS's published examples).
ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"


def find():
    """The s3rver executable, or None."""
    explicit = os.environ.get("S3RVER")
    if explicit and os.access(explicit, os.X_OK):
        return explicit
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(cache, "bundle-edge", "s3rver", "node_modules", ".bin", "s3rver")
    if os.access(path, os.X_OK) and shutil.which("node"):
        return path
    return None


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class S3rver:
    """s3rver serving `bucket` from a new directory under `parent`; .endpoint is its URL. It
    listens on `address` (127.0.0.1 unless told), inside network namespace `netns` if given;
    the caller must then be able to reach that address to see it start."""

    def __init__(self, parent, bucket="bundles", port=None, address="127.0.0.1", netns=None):
        self.exe = find()
        assert self.exe, "s3rver not found (tools/setup.sh installs it)"
        self.bucket = bucket
        self.address, self.netns = address, netns
        self.dir = tempfile.mkdtemp(prefix="s3rver-", dir=parent)
        self.port = port or _free_port()
        self.proc = None
        self.start()

    @property
    def endpoint(self):
        return "http://%s:%d" % (self.address, self.port)

    def start(self):
        self.log = open(os.path.join(os.path.dirname(self.dir), "s3rver-%d.log" % self.port), "a")
        cmd = [self.exe, "--directory", self.dir, "--port", str(self.port), "--address", self.address,
               "--configure-bucket", self.bucket, "--silent"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]  # it execs s3rver: the pid stays s3rver's
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("s3rver exited with %d" % self.proc.returncode)
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers (an anonymous request may be refused)
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("s3rver did not answer on %s within 30 s" % self.endpoint)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def object_path(self, key):
        """Where s3rver keeps the bytes of object `key` (its file layout, 3.7.1)."""
        return os.path.join(self.dir, self.bucket, key + "._S3rver_object")

    def keys(self, prefix=""):
        """Every object key under `prefix`, read from s3rver's directory."""
        root = os.path.join(self.dir, self.bucket)
        out = []
        for base, _, files in os.walk(root):
            for f in files:
                if f.endswith("._S3rver_object"):
                    key = os.path.relpath(os.path.join(base, f[:-len("._S3rver_object")]), root)
                    if key.startswith(prefix):
                        out.append(key)
        return sorted(out)
