#!/usr/bin/env python3
"""The origin tier's failover test with the real engines: PostgreSQL 15 primary + synchronous
standby, s3rver, two origins on both, an edge with both origins as upstreams, devices checking
in at the edge without pause and a publisher publishing. kill -9 one origin, then kill -9 the
PostgreSQL primary and promote the standby: every check-in a device was answered for is counted
exactly once, every acknowledged publish is there and served, the feed has no gap or duplicate,
and the edge reaches the newest release. (bench/load/tier-failover.py runs the same as a loop.)

Usage: tier_failover_test.py <path-to-bundle-edge>"""
import time

from harness import Skip, check, run
import pgharness
import s3rver


def main():
    def t_origin_and_database_primary_killed_nothing_lost():
        why = pgharness.available()
        if why:
            raise Skip(why)
        if s3rver.find() is None:
            raise Skip("s3rver not found (tools/setup.sh installs it)")
        from tiercluster import Cluster
        c = Cluster()
        try:
            c.start_load()
            time.sleep(2)
            c.kill_origin(0)
            time.sleep(2)
            killed, promoted = c.fail_over_database()
            c.new_standby()
            time.sleep(3)
            c.restart_origin(0)
            time.sleep(2)
            c.end_load()
            after = [t for _, _, t in c.published if t > promoted]
            figures = c.verify()
            assert figures["counted"] and all(n == figures["answered"] for n in figures["counted"]), figures
            print("     %s; first publish after promote %.2f s" %
                  (figures, (min(after) - promoted) if after else float("nan")))
        finally:
            c.close()

    check("origin and database primary killed: nothing lost",
          t_origin_and_database_primary_killed_nothing_lost)


if __name__ == "__main__":
    run(main)
