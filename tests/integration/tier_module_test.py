#!/usr/bin/env python3
"""The origin tier's module (bundle-edge-tier.so next to the binary): an edge and an embedded
origin never map it nor libpq/libcurl; a config that needs it loads it; without it, the start
fails naming the path it looked at. Needs no PostgreSQL and no S3: the node stops at the
missing credentials, which it checks once the module has loaded."""
import os
import shutil
import subprocess

from harness import BINARY, TMP, Node, check, run, stop_all

# What only the tier brings into the process.
TIER_FILES = ("bundle-edge-tier.so", "libpq.so", "libcurl.so")

S3_CONFIG = """
[blobs]
backend = "s3"
endpoint = "http://127.0.0.1:9"
bucket = "bundles"
"""


def mapped_files(pid):
    files = set()
    for line in open("/proc/%d/maps" % pid):
        f = line.split()
        if len(f) >= 6:
            files.add(os.path.basename(f[5]))
    return files


def start_without_credentials(binary, name):
    """Starts `binary` with [blobs] backend = "s3" and no AWS_* variables: (exit code, output)."""
    conf = os.path.join(TMP, name + ".toml")
    with open(conf, "w") as f:
        f.write(S3_CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    r = subprocess.run([binary, "--config", conf, "--data", os.path.join(TMP, name), "--listen", "127.0.0.1:0",
                        "--admin-listen", "127.0.0.1:0"], env=env, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def main():
    nodes = []

    def t_edge_and_origin_do_not_map_it():
        origin = Node('[node]\nrole = "origin"\n[sync]\ntoken = "tok"\n')
        nodes.append(origin)
        edge = Node('[node]\nrole = "edge"\n[sync]\ntoken = "tok"\n[upstream]\nurl = "%s"\n' % origin.url)
        nodes.append(edge)
        for n in (origin, edge):
            files = mapped_files(n.proc.pid)
            tier = [f for f in files if f.startswith(TIER_FILES)]
            assert not tier, tier

    def t_s3_config_loads_it():
        rc, out = start_without_credentials(BINARY, "loads")
        assert rc == 1, (rc, out)
        # The credentials are checked through the module: reaching that check means it loaded.
        assert "AWS_SECRET_ACCESS_KEY" in out, out
        assert "tier module" not in out, out

    def t_missing_module_names_its_path():
        bindir = os.path.join(TMP, "bin")
        os.makedirs(bindir)
        copy = os.path.join(bindir, "bundle-edge")
        shutil.copy2(BINARY, copy)  # without bundle-edge-tier.so beside it
        rc, out = start_without_credentials(copy, "missing")
        assert rc == 1, (rc, out)
        assert 'blobs.backend = "s3" needs the tier module %s/bundle-edge-tier.so' % bindir in out, out
        os.remove(copy)

    try:
        check("tier module: an edge and an origin do not map it", t_edge_and_origin_do_not_map_it)
        check("tier module: [blobs] backend = s3 loads it", t_s3_config_loads_it)
        check("tier module: missing, the start fails naming its path", t_missing_module_names_its_path)
    finally:
        stop_all(nodes)


if __name__ == "__main__":
    run(main)
