#!/usr/bin/env python3
"""The origin tier's failover as a loop: two origins on PostgreSQL 15 (primary + synchronous
standby) and s3rver, an edge with both origins as upstreams, devices checking in at the edge
without pause and a publisher publishing. Each round: kill -9 one origin (alternating), kill -9
the database primary and promote the standby, make a new standby, start the origin again; then
check that every check-in a device was answered for is counted exactly once (on both origins),
every acknowledged publish is there, the feed has no gap, and the edge serves the newest release.

Per round it prints how long admin writes and the edge took to resume after the promotion:
  admin resume = first publish acknowledged after `pg_ctl promote` returned
  edge resume  = until the edge answers a device with a release published after the promotion
Goal (not asserted): both <= 5 s, 0 lost. Root only (PostgreSQL runs as the postgres user).

Usage: bench/load/tier-failover.py [--binary build/release/bundle-edge] [--rounds 20]
"""
import argparse
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/bundle-edge"))
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    cmd = " ".join(sys.argv[1:])
    sys.argv = [sys.argv[0], args.binary]  # harness reads the binary from argv[1]
    import harness  # noqa: E402
    from benchnode import spread  # noqa: E402
    from tiercluster import Cluster  # noqa: E402

    c = None
    admin_resume, edge_resume, lost = [], [], []
    try:
        c = Cluster(log=lambda *a: print(*a, file=sys.stderr))
        c.start_load()
        for r in range(args.rounds):
            time.sleep(1.0)
            victim = r % 2
            c.kill_origin(victim)
            time.sleep(1.0)
            killed, promoted = c.fail_over_database()
            # The edge resumes when it answers a release published after the promotion.
            deadline = time.time() + 60
            first_after = None
            while time.time() < deadline:
                after = [p for p in c.published if p[2] > promoted]
                if after and first_after is None:
                    first_after = after[0]
                if first_after is not None and c.edge_version(1) in [p[0] for p in c.published if p[2] > promoted]:
                    break
                time.sleep(0.05)
            edge_at = time.time()
            admin_resume.append((first_after[2] - promoted) if first_after else float("inf"))
            edge_resume.append(edge_at - promoted)
            c.new_standby()
            c.restart_origin(victim)
            # Counts so far: pause the devices briefly so that answered and counted can be compared.
            c.end_load()
            figures = c.verify()
            lost.append(figures["answered"] - min(figures["counted"]))
            dup = max(figures["counted"]) - figures["answered"]
            print("round %2d: origin %s killed; admin resume %.2f s, edge resume %.2f s; "
                  "check-ins answered %d, counted %s (lost %d, duplicated %d); %d publishes" %
                  (r + 1, "AB"[victim], admin_resume[-1], edge_resume[-1], figures["answered"],
                   figures["counted"], lost[-1], max(dup, 0), figures["published"]), file=sys.stderr, flush=True)
            c.start_load()
        c.end_load()
        print("\n## Tier failover loop (%d rounds)\n" % args.rounds)
        print("`bench/load/tier-failover.py %s`\n" % cmd)
        print("| figure | median (min-max) |")
        print("|---|---|")
        print("| admin writes resume after promote | %s |" % spread(admin_resume, "%.2f", " s"))
        print("| edge serves a release published after promote | %s |" % spread(edge_resume, "%.2f", " s"))
        print("| check-ins answered but not counted (every round) | %d in total |" % sum(lost))
        print("| check-ins answered, in all | %d |" % c.acked_checkins)
        print("| releases published and acknowledged | %d |" % len(c.published))
    finally:
        if c is not None:
            c.close()
        if not os.environ.get("EDGE_IT_KEEP"):
            shutil.rmtree(harness.TMP, ignore_errors=True)
        else:
            print("kept " + harness.TMP, file=sys.stderr)


if __name__ == "__main__":
    main()
