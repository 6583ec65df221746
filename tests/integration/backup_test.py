#!/usr/bin/env python3
"""Integration test of `bundle-edge backup` and `bundle-edge restore`: a running and a stopped
origin backed up, the copy verified, a damaged or unfinished copy refused, a restored origin
serving the same bytes with the same feed epoch and sequence numbers, and an edge following it
on without a snapshot.

Usage: backup_test.py <path-to-bundle-edge>"""
import json
import os
import shutil
import signal
import subprocess
import time

from harness import BINARY, TMP, admin, check, curl, free_port, run, wait_for
from sync_test import ADMIN_APP, edge, metric, origin, publish, sha, updates, TOKEN


def bundle_edge(*args, timeout=120):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=timeout)


def feed(node):
    st, _, out = curl("-H", "Authorization: Bearer " + TOKEN,
                      node.url + "/v1/sync/changes?after=0&wait_ms=0")
    assert st == 200, (st, out)
    doc = json.loads(out)
    return doc["epoch"], doc.get("last_seq", doc.get("seq"))


def main():
    nodes = []

    def keep(n):
        nodes.append(n)
        return n

    def t_running_backup_verify_and_restore():
        port = free_port()
        o = keep(origin(port=port))
        data = publish(o, "1.1.0", size=3_000_000)
        e = keep(edge(o.url))
        wait_for("the edge follows", lambda: updates(e)[1].get("version") == "1.1.0")
        epoch, seq = feed(o)
        dest = os.path.join(TMP, "backup-running")
        r = bundle_edge("backup", "--data", o.data, "--to", dest)
        assert r.returncode == 0, (r.stdout, r.stderr)
        doc = json.loads(r.stdout)
        assert doc["epoch"] == epoch and doc["last_seq"] >= 1 and doc["files"] > 3, doc
        assert "asking it" in r.stderr, r.stderr  # the running node wrote it
        assert oct(os.stat(dest).st_mode & 0o777) == "0o700"
        assert not os.path.exists(os.path.join(dest, "BACKUP-INCOMPLETE"))
        r = bundle_edge("backup", "--verify", dest)
        assert r.returncode == 0 and "complete backup" in r.stdout, (r.stdout, r.stderr)
        # A second backup into the same folder is refused; the first is untouched.
        r = bundle_edge("backup", "--data", o.data, "--to", dest)
        assert r.returncode == 1 and "exists" in r.stdout + r.stderr, (r.stdout, r.stderr)
        # A viewer cannot ask for one; a relative path is refused.
        st, doc = admin(o, "POST", "/v1/admin/backup", {"to": "relative/path"})
        assert st == 400 and doc["error"] == "invalid_body", (st, doc)
        st, doc = admin(o, "POST", "/v1/admin/tokens", {"name": "look", "role": "viewer", "apps": ["*"]})
        assert st == 201, (st, doc)
        st, _, out = curl("-X", "POST", "-H", "Authorization: Bearer " + doc["token"], "--data-binary",
                          json.dumps({"to": os.path.join(TMP, "backup-viewer")}), o.admin_url + "/v1/admin/backup")
        assert st == 403 and not os.path.exists(os.path.join(TMP, "backup-viewer")), (st, out)
        # A damaged copy is refused, naming the file.
        bad = os.path.join(TMP, "backup-damaged")
        shutil.copytree(dest, bad)
        seg = sorted(f for f in os.listdir(os.path.join(bad, "segments")) if f.endswith(".seg"))[0]
        with open(os.path.join(bad, "segments", seg), "r+b") as f:
            f.seek(5000)
            b = f.read(1)
            f.seek(5000)
            f.write(bytes([b[0] ^ 0xFF]))
        r = bundle_edge("backup", "--verify", bad)
        assert r.returncode == 1 and seg in r.stderr and "SHA-256" in r.stderr, (r.stdout, r.stderr)
        r = bundle_edge("restore", "--from", bad, "--data", os.path.join(TMP, "restore-bad"))
        assert r.returncode == 1 and seg in r.stderr, r.stderr

        # The origin is lost; a new one starts on the restored data, on the same address.
        o.kill()
        nodes.remove(o)
        restored = os.path.join(TMP, "restored")
        r = bundle_edge("restore", "--from", dest, "--data", restored)
        assert r.returncode == 0 and "restored" in r.stdout, (r.stdout, r.stderr)
        r2 = bundle_edge("restore", "--from", dest, "--data", restored)
        assert r2.returncode == 1 and "not empty" in r2.stderr, r2.stderr
        o2 = keep(origin(port=port))
        o2.stop()
        shutil.rmtree(o2.data)
        shutil.copytree(restored, o2.data)
        o2.start()
        assert feed(o2) == (epoch, seq), (feed(o2), epoch, seq)
        st, _, body = curl(o2.url + "/v1/blobs/" + sha(data))
        assert st == 200 and body == data, st
        # The edge follows the restored origin without a snapshot.
        snapshots = metric(e, "edge_sync_snapshots_applied_total")
        publish(o2, "1.1.1", size=50_000)
        wait_for("the edge follows the restored origin", lambda: updates(e)[1].get("version") == "1.1.1",
                 timeout=30)
        assert metric(e, "edge_sync_snapshots_applied_total") == snapshots

    def t_stopped_backup_and_a_cut_one():
        o = keep(origin())
        publish(o, "2.0.0", size=40_000_000)
        o.stop()
        # kill -9 during a backup: the source is intact, the copy recognisably unfinished.
        cut = os.path.join(TMP, "backup-cut")
        p = subprocess.Popen([BINARY, "backup", "--data", o.data, "--to", cut],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline and not os.path.exists(os.path.join(cut, "segments")):
            time.sleep(0.001)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        if os.path.exists(os.path.join(cut, "BACKUP-INCOMPLETE")):
            r = bundle_edge("backup", "--verify", cut)
            assert r.returncode == 1 and "unfinished" in r.stderr, r.stderr
            r = bundle_edge("restore", "--from", cut, "--data", os.path.join(TMP, "restore-cut"))
            assert r.returncode == 1 and "unfinished" in r.stderr, r.stderr
        else:
            print("  (the backup finished before the kill: nothing cut to check)")
        # The stopped node's own backup, then the node starts as before.
        dest = os.path.join(TMP, "backup-stopped")
        r = bundle_edge("backup", "--data", o.data, "--to", dest)
        assert r.returncode == 0 and "sequence" in r.stdout, (r.stdout, r.stderr)
        assert not [f for f in os.listdir(o.data) if f.startswith("backup-tmp-")], os.listdir(o.data)
        assert bundle_edge("backup", "--verify", dest).returncode == 0
        o.start()
        assert updates(o)[1].get("version") == "2.0.0"

    try:
        check("a running origin's backup: verified, refused when damaged, restored with its "
              "epoch and sequence, an edge follows on", t_running_backup_verify_and_restore)
        check("a stopped origin's backup; a backup cut by kill -9 is refused, its source intact",
              t_stopped_backup_and_a_cut_one)
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.stop()


if __name__ == "__main__":
    run(main)
