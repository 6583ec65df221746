"""A whole origin tier on 127.0.0.1 for the failover test and its benchmark loop: PostgreSQL 15
(a primary and a synchronous streaming standby, as the postgres user), a local S3 (s3rver),
two origins sharing both, and an edge that lists both origins as upstreams; devices checking in
at the edge without pause and a publisher publishing, while origins and the database primary are
killed with -9 and the standby is promoted. Everything is stopped by pid and removed at close().

A round: kill -9 one origin (then start it again on its data directory), kill -9 the database
primary, promote the standby (pg_ctl promote, then clear synchronous_standby_names), and make a
new standby of the new primary on the old primary's port, so that the origins' multi-host URL
stays the same from round to round."""
import http.client
import json
import os
import secrets
import threading
import time

from harness import Node, TMP, admin, curl, free_port, sha, upload, wait_for
from pgharness import Postgres
import s3rver
from sync_test import ADMIN_APP, DEVICE, TOKEN, device_id

DEVICES = 64


def _post(port, path, body, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Cluster:
    def __init__(self, log=print):
        self.log = log
        self.nodes = []
        self.primary = self.standby = self.s3 = None
        self.acked_checkins = 0
        self.published = []  # (version, blob sha, time acknowledged)
        self.lock = threading.Lock()
        self.stop_load = threading.Event()
        self.threads = []
        self.version = 0
        if s3rver.find() is None:
            raise RuntimeError("s3rver not found (tools/setup.sh installs it)")
        os.environ["AWS_ACCESS_KEY_ID"] = s3rver.ACCESS_KEY
        os.environ["AWS_SECRET_ACCESS_KEY"] = s3rver.SECRET_KEY
        self.s3 = s3rver.S3rver(TMP)
        self.primary = Postgres()
        self.primary.sql("CREATE DATABASE tier")
        self.standby = Postgres(standby_of=self.primary, sync_standby=True)
        self.ports = (self.primary.port, self.standby.port)
        self.url = ("host=127.0.0.1,127.0.0.1 port=%d,%d dbname=tier user=postgres "
                    "target_session_attrs=read-write connect_timeout=2" % self.ports)
        conf = ('[sync]\ntoken = "%s"\n[state]\nbackend = "postgres"\nurl = "%s"\n'
                '[blobs]\nbackend = "s3"\nendpoint = "%s"\nbucket = "%s"\nregion = "us-east-1"\n'
                'path_style = true\ntimeout_ms = 3000\n' % (TOKEN, self.url, self.s3.endpoint, self.s3.bucket))
        # Fixed ports: an origin started again after its kill -9 must be where the edge's
        # upstream list says it is.
        self.origins = [self._keep(Node(conf, port=free_port())), self._keep(Node(conf, port=free_port()))]
        st, doc = admin(self.origins[0], "PUT", ADMIN_APP, {})
        assert st in (200, 201), (st, doc)
        self.publish()
        upstreams = '["%s", "%s"]' % (self.origins[0].url, self.origins[1].url)
        self.edge = self._keep(Node(
            '[node]\nrole = "edge"\n[sync]\ntoken = "%s"\n[upstream]\nurl = %s\ntoken = "%s"\n'
            'timeout_ms = 2000\nretries = 1\nbackoff_max_ms = 500\npoll_wait_ms = 2000\n'
            % (TOKEN, upstreams, TOKEN)))
        wait_for("the edge serves the first release", lambda: self.edge_version() == self.published[-1][0],
                 timeout=30)

    def _keep(self, n):
        self.nodes.append(n)
        return n

    # --- load -------------------------------------------------------------------------

    def edge_version(self, device=0):
        st, body = _post(self.edge.port, "/updates", dict(DEVICE, device_id=device_id(device)))
        if st == 200:
            with self.lock:
                self.acked_checkins += 1
            return json.loads(body).get("version")
        return None

    def publish(self):
        """One release on whichever origin answers; returns True once acknowledged."""
        self.version += 1
        version = "1.%d.0" % self.version
        data = secrets.token_bytes(40_000)
        path = os.path.join(TMP, "zip-" + version)
        open(path, "wb").write(data)
        for attempt in range(40):
            o = self.origins[attempt % 2]
            if o.proc.poll() is not None:
                continue
            try:
                st, _, _ = upload(o, path)
                if st not in (200, 201):
                    raise RuntimeError(st)
                st, doc = admin(o, "PUT", ADMIN_APP + "/releases/" + version, {"zip": sha(data)})
                if st not in (200, 201):
                    raise RuntimeError(st)
                st, doc = admin(o, "PUT", ADMIN_APP + "/channels/production",
                                {"release": version, "public": True, "disable_auto_update": "none"})
                if st not in (200, 201):
                    raise RuntimeError(st)
                with self.lock:
                    self.published.append((version, sha(data), time.time()))
                os.unlink(path)
                return True
            except Exception:
                time.sleep(0.1)
        os.unlink(path)
        return False

    def start_load(self):
        self.stop_load.clear()

        def devices():
            i = 0
            while not self.stop_load.is_set():
                try:
                    self.edge_version(i % DEVICES)
                except OSError:
                    time.sleep(0.05)
                i += 1

        def publisher():
            while not self.stop_load.is_set():
                self.publish()
                time.sleep(0.3)

        self.threads = [threading.Thread(target=devices), threading.Thread(target=devices),
                        threading.Thread(target=publisher)]
        for t in self.threads:
            t.start()

    def end_load(self):
        self.stop_load.set()
        for t in self.threads:
            t.join()

    # --- faults -----------------------------------------------------------------------

    def kill_origin(self, i):
        self.origins[i].kill()

    def restart_origin(self, i):
        self.origins[i].start()

    def fail_over_database(self):
        """kill -9 the primary, promote the standby; returns (killed, promoted) times."""
        self.primary.kill9()
        killed = time.time()
        self.standby.promote()
        promoted = time.time()
        old = self.primary
        self.primary, self.standby = self.standby, None
        old.remove()
        return killed, promoted

    def new_standby(self):
        """A synchronous standby of the current primary on the port the old primary had."""
        port = [p for p in self.ports if p != self.primary.port][0]
        self.standby = Postgres(standby_of=self.primary, sync_standby=True, port=port)

    # --- checks -----------------------------------------------------------------------

    def counted_checkins(self, origin):
        st, doc = admin(origin, "GET", ADMIN_APP + "/stats")
        assert st == 200, (st, doc)
        return sum(d["actions"].get("updates", 0) for d in doc["days"])

    def outbox_depth(self):
        return self.edge.metrics().get("edge_outbox_depth", 0)

    def feed(self, node):
        out, after = [], 0
        while True:
            st, _, body = curl("-H", "Authorization: Bearer " + TOKEN,
                               node.url + "/v1/sync/changes?after=%d&wait_ms=0&limit=100000" % after)
            assert st == 200, (st, body)
            doc = json.loads(body)
            ch = doc.get("changes", [])
            if not ch:
                return out
            out += [c["seq"] for c in ch]
            after = ch[-1]["seq"]

    def verify(self, timeout=60):
        """Every answered check-in counted exactly once, every acknowledged publish served, one
        gapless feed, the edge on the newest release. Returns a dict of figures."""
        live = [o for o in self.origins if o.proc.poll() is None]
        wait_for("the edge's outbox drains", lambda: self.outbox_depth() == 0, timeout=timeout, step=0.5)
        newest = self.published[-1][0]
        wait_for("the edge answers the newest release %s" % newest,
                 lambda: self.edge_version() == newest, timeout=timeout, step=0.2)
        # The counts settle once the last batch is committed (the outbox is empty already).
        counted = None
        deadline = time.time() + 15
        while time.time() < deadline:
            counted = [self.counted_checkins(o) for o in live]
            if all(c == self.acked_checkins for c in counted):
                break
            time.sleep(0.5)
        for version, blob, _ in self.published:
            for o in live:
                st, doc = admin(o, "GET", ADMIN_APP + "/releases/" + version)
                assert st == 200, ("acknowledged release missing", version, st, doc)
        # The newest bytes are served by the edge (filled through either origin, from S3).
        st, _, body = curl(self.edge.url + "/v1/blobs/" + self.published[-1][1])
        assert st == 200 and sha(body) == self.published[-1][1], st
        feeds = [self.feed(o) for o in live]
        for f in feeds:
            assert f == list(range(f[0], f[0] + len(f))), "gap or duplicate in the feed"
        assert all(f == feeds[0] for f in feeds)
        return {"answered": self.acked_checkins, "counted": counted, "published": len(self.published),
                "feed_last": feeds[0][-1]}

    def close(self):
        self.stop_load.set()
        for t in self.threads:
            t.join(timeout=30)
        for n in self.nodes:
            try:
                n.stop()
            except Exception:
                try:
                    n.kill()
                except Exception:
                    pass
        for pg in (self.primary, self.standby):
            if pg is not None:
                pg.remove()
        if self.s3 is not None:
            self.s3.stop()
