#!/usr/bin/env python3
"""What writing into the page cache costs on this machine (context for issue #14's figures).

Writes 64 MiB files in 1 MiB pwrites, no sync (the edge's store.chunk_sync = background write
path): first into new files while the page cache grows (new pages), then again after deleting
them (the kernel hands the freed pages straight back). On a VM with free page reporting (dmesg:
"Free page reporting enabled") a page the guest has not used lately is a host fault on first
touch, so once the recently freed pages are used up the first figures fall several times below
the second; on bare metal both are memory-copy speed. Everything stays in a temp dir under
DIR (default: the current directory, i.e. the disk the data directory is on). The baseline is
the second set (reused pages, memory-copy speed), measured in the same run; each file is a round
(min/median/max printed), with the host's steal over the run.

Usage: bench/load/page-cache-probe.py [DIR] [--files N]
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import cpu_times, spread, steal_pct  # noqa: E402


def write(path, data):
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for off in range(0, len(data), 1 << 20):
        os.pwrite(fd, data[off:off + (1 << 20)], off)
    os.close(fd)
    return len(data) / 1048576 / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default=".")
    ap.add_argument("--files", type=int, default=8)
    args = ap.parse_args()
    data = memoryview(os.urandom(64 << 20))
    work = tempfile.mkdtemp(prefix="page-cache-probe-", dir=args.dir)
    s0 = cpu_times()
    try:
        paths = [os.path.join(work, "new%d" % i) for i in range(args.files)]
        fresh = [write(p, data) for p in paths]
        for p in paths:
            os.unlink(p)
        reused = []
        for i in range(args.files):
            p = os.path.join(work, "reused%d" % i)
            reused.append(write(p, data))
            os.unlink(p)
        print("64 MiB into new page-cache pages (the cache grows): " +
              ", ".join("%.0f" % r for r in fresh) + " MB/s")
        print("64 MiB into pages just freed (deleted files):        " +
              ", ".join("%.0f" % r for r in reused) + " MB/s")
        print("new pages: %s; baseline, reused pages: %s; new/reused %.2fx; host steal %.1f%% over the run" % (
            spread(fresh, "%.0f", " MB/s"), spread(reused, "%.0f", " MB/s"),
            sorted(fresh)[len(fresh) // 2] / sorted(reused)[len(reused) // 2], steal_pct(s0, cpu_times())))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
