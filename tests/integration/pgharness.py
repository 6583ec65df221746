"""PostgreSQL 15 for the tests of the origin tier: a primary (and a streaming standby) from
Debian's binaries in a temp dir on 127.0.0.1, run as the `postgres` user (PostgreSQL refuses
to run as root), stopped by pid and removed at the end. The fleet benchmark runs the same
servers on an address inside a network namespace (`host`, `netns`, `parent`, `allow`)."""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from harness import Skip, free_port

PG_BIN = "/usr/lib/postgresql/15/bin"


def _as_postgres(cmd, netns=None, **kw):
    """Runs cmd as the postgres user when we are root (PostgreSQL refuses root), inside network
    namespace `netns` if given (what it starts stays there)."""
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)


def available():
    """None if PostgreSQL 15 can be run here, else why not."""
    if not os.path.exists(os.path.join(PG_BIN, "postgres")):
        return "PostgreSQL 15 is not installed (%s; tools/setup.sh installs postgresql-15)" % PG_BIN
    if os.getuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no postgres user to run PostgreSQL as"
    return None


class Postgres:
    """One PostgreSQL server. `standby_of`: a streaming standby of that primary (on the same
    host). It listens on `host` only (127.0.0.1 unless told), inside network namespace `netns`
    if given, with its files in a new directory under `parent` (the temp dir unless told; the
    postgres user must be able to reach it). `allow`: the network (CIDR) that may connect as
    postgres, for queries and replication; `host`/32 unless told."""

    def __init__(self, standby_of=None, sync_standby=False, port=None, host="127.0.0.1", netns=None,
                 parent=None, allow=None):
        why = available()
        if why:
            raise Skip(why)
        self.host, self.netns = host, netns
        allow = allow or host + "/32"
        self.root = tempfile.mkdtemp(prefix="edge-pg-", dir=parent)
        os.chmod(self.root, 0o755)
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.root, "data")
        self.port = port or free_port()
        self.log = os.path.join(self.root, "log.txt")
        if standby_of is None:
            r = _as_postgres([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                              "-A", "trust", "--no-sync", "-E", "UTF8", "--locale", "C"], netns)
            if r.returncode != 0:
                raise RuntimeError("initdb failed: " + r.stdout + r.stderr)
            with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
                f.write("\nlisten_addresses = '%s'\nunix_socket_directories = '%s'\n"
                        "wal_level = replica\nmax_wal_senders = 5\nfsync = on\n"
                        "synchronous_commit = on\nwal_keep_size = '64MB'\n" % (host, self.root))
            with open(os.path.join(self.data, "pg_hba.conf"), "a") as f:
                f.write("\nhost replication postgres %s trust\n" % allow)
                if allow != "127.0.0.1/32":
                    f.write("host all postgres %s trust\n" % allow)
        else:
            r = _as_postgres([os.path.join(PG_BIN, "pg_basebackup"), "-h", standby_of.host,
                              "-p", str(standby_of.port), "-U", "postgres", "-D", self.data,
                              "-R", "-X", "stream", "--no-sync", "--checkpoint=fast"], netns)
            if r.returncode != 0:
                raise RuntimeError("pg_basebackup failed: " + r.stdout + r.stderr)
            with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
                f.write("\nunix_socket_directories = '%s'\n" % self.root)
        self.start()
        if standby_of is not None and sync_standby:
            standby_of.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
            standby_of.sql("SELECT pg_reload_conf()")

    def start(self):
        r = _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log,
                          "-o", "-p %d" % self.port, "-w", "-t", "60", "start"], self.netns)
        if r.returncode != 0:
            raise RuntimeError("pg_ctl start failed: " + r.stdout + r.stderr + self.read_log())

    def read_log(self):
        try:
            return open(self.log).read()[-4000:]
        except OSError:
            return ""

    def pid(self):
        try:
            return int(open(os.path.join(self.data, "postmaster.pid")).readline())
        except (OSError, ValueError):
            return None

    def url(self, db="postgres"):
        return "host=%s port=%d dbname=%s user=postgres" % (self.host, self.port, db)

    def sql(self, statement, db="postgres"):
        cmd = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.host,
               "-p", str(self.port), "-U", "postgres", "-d", db, "-c", statement]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("psql failed: %s: %s" % (statement, r.stderr))
        return r.stdout.strip()

    def create_db(self, name):
        self.sql("CREATE DATABASE %s" % name)
        return self.url(name)

    def kill9(self):
        """kill -9 of the postmaster and every backend: a crashed machine."""
        pid = self.pid()
        if pid is None:
            return
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for p in [pid] + [int(c) for c in children]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                break
        try:
            os.unlink(os.path.join(self.data, "postmaster.pid"))
        except OSError:
            pass

    def promote(self):
        """pg_ctl promote, then clear synchronous_standby_names (the new primary inherits it and
        with no standby left every commit would wait for ever)."""
        r = _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "promote"], self.netns)
        if r.returncode != 0:
            raise RuntimeError("pg_ctl promote failed: " + r.stdout + r.stderr)
        self.sql("ALTER SYSTEM SET synchronous_standby_names = ''")
        self.sql("SELECT pg_reload_conf()")

    def stop(self):
        if self.pid() is not None:
            _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate",
                          "-w", "stop"], self.netns)
        self.kill9()

    def remove(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
