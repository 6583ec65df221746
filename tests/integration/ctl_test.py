#!/usr/bin/env python3
"""bundle-edge-ctl end to end (issue #4): publish a folder with --delta to a real node, then
/updates offers the release, its url serves a zip whose SHA-256 is the checksum, and every
manifest download_url serves a file whose SHA-256 is its file_hash. And every command and action
has its own --help: a description, its arguments, an example that parses, and the environment
variables it reads.

Usage: ctl_test.py <path-to-bundle-edge>"""
import importlib.machinery
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

from harness import run, TMP, Node, check, curl, results, sha

CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")

# Every command and action an operator can type; the test also finds the ones --help lists, so a
# command added later without its own help fails here too.
COMMANDS = {
    "publish": [], "stats": [], "audit": [], "fleet": [],
    "token": ["create", "list", "revoke"],
    "channel": ["set", "get", "list", "delete", "history", "rollback", "builtin"],
    "rollout": ["start", "set", "pause", "resume", "promote", "abort", "auto-pause"],
    "device": ["set", "unset", "test"],
    "devices": ["list", "show"],
    "release": ["list", "delete"],
    "outbox": ["dead-letters"],
    "key": ["create"],
    "app": ["show", "privacy", "set-key", "clear-key"],
}
NODE_ENV = ("BUNDLE_EDGE_URL", "BUNDLE_EDGE_TOKEN", "BUNDLE_EDGE_CACERT")


def help_text(*words):
    """`bundle-edge-ctl WORDS --help` with no node and no token around: (exit code, stdout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUNDLE_EDGE_")}
    r = subprocess.run([sys.executable, CTL, *words, "--help"], capture_output=True, text=True, env=env,
                       timeout=60, cwd=TMP)
    return r.returncode, r.stdout + r.stderr


def listed(text, title):
    """The names a help text lists under its `title` section (commands: / actions ...:)."""
    part = text.split("\n" + title, 1)[1].split("\n\n", 1)[0]
    return [m.group(1) for m in re.finditer(r"^    ([a-z][a-z-]*)\s", part, re.M)]


def t_help_everywhere():
    loader = importlib.machinery.SourceFileLoader("bundle_edge_ctl", CTL)
    spec = importlib.util.spec_from_loader("bundle_edge_ctl", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    parser = module.build_parser()
    rc, top = help_text()
    assert rc == 0, top
    assert sorted(listed(top, "commands:")) == sorted(COMMANDS), listed(top, "commands:")
    leaves = []
    for cmd, acts in COMMANDS.items():
        if acts:
            rc, text = help_text(cmd)
            assert rc == 0 and text.startswith("usage: bundle-edge-ctl %s " % cmd), (cmd, rc, text)
            assert sorted(listed(text, "actions")) == sorted(acts), (cmd, listed(text, "actions"))
            assert "example" in text and "BUNDLE_EDGE_" in text, (cmd, text)
        leaves += [[cmd, a] for a in acts] or [[cmd]]
    for words in leaves:
        name = " ".join(words)
        rc, text = help_text(*words)
        assert rc == 0, (name, rc, text)
        assert text.startswith("usage: bundle-edge-ctl %s " % name), (name, text[:200])
        # The description: the first paragraph after the usage block, a sentence of its own
        # (not the parent's usage, not the argument list).
        description = text.split("\n\n")[1].strip()
        assert description and not description.startswith(("usage:", "positional", "options")) and \
            description.endswith("."), (name, description)
        assert "options:" in text, (name, text)
        examples = [l.strip() for l in text.split("\nexample", 1)[1].splitlines()[1:] if
                    l.strip().startswith("bundle-edge-ctl ")]
        assert examples, (name, "no example line", text)
        for e in examples:
            argv = shlex.split(e)[1:]
            assert name in " ".join(argv), (name, e)
            try:
                args = parser.parse_args(argv)  # the example is a command line that parses
            except SystemExit as x:
                raise AssertionError("%s: example does not parse: %s (%s)" % (name, e, x))
            assert [args.command] + ([args.action] if len(words) > 1 else []) == words, (name, e)
        for var in NODE_ENV:
            assert var in text, (name, var, text)
        if words[0] == "key" or (words[0] == "app" and words[1] == "set-key") or words[0] == "publish":
            assert "BUNDLE_EDGE_OPENSSL" in text, (name, text)
    # The command lines the other tests and the docs use still parse the same way.
    a = parser.parse_args(["channel", "set", "com.x", "beta", "--release", "1.0.1", "--json", "{}"])
    assert (a.command, a.action, a.app, a.name, a.release, a.json, a.public) == \
        ("channel", "set", "com.x", "beta", "1.0.1", "{}", None), a
    a = parser.parse_args(["device", "set", "com.x", "d1", "beta"])
    assert (a.action, a.app, a.device, a.channel) == ("set", "com.x", "d1", "beta"), a
    a = parser.parse_args(["token", "create", "ops", "--role", "admin", "--app", "a", "--app", "b"])
    assert (a.action, a.name, a.role, a.app) == ("create", "ops", "admin", ["a", "b"]), a
    # A missing argument is a usage error (exit 2) that names it, with the action's usage.
    r = subprocess.run([sys.executable, CTL, "--token", "x", "token", "create", "ops"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "usage: bundle-edge-ctl token create" in r.stderr and "--role" in r.stderr, r.stderr


def main():
    node = Node("")

    def ctl(*args, expect=0):
        env = dict(os.environ, BUNDLE_EDGE_URL=node.admin_url, BUNDLE_EDGE_TOKEN=node.token)
        r = subprocess.run([sys.executable, CTL, *args], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == expect, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout + r.stderr

    dist = os.path.join(TMP, "dist")
    os.makedirs(os.path.join(dist, "assets"))
    files = {"index.html": b"<html>v1</html>", "assets/app.js": os.urandom(100000), "assets/my style.css": b"body{}"}
    for rel, data in files.items():
        open(os.path.join(dist, rel), "wb").write(data)
    device = {"platform": "android", "device_id": "0a1b2c3d-1111-4222-8333-444455556666",
              "app_id": "com.example.ctl", "version_build": "1.0.0", "version_name": "builtin",
              "plugin_version": "8.51.23", "is_emulator": False, "is_prod": True, "defaultChannel": ""}

    def updates(body):
        st, _, out = curl("-X", "POST", "--data-binary", json.dumps(body), node.url + "/updates")
        assert st == 200, st
        return json.loads(out)

    def t_publish():
        out = ctl("publish", "--app", "com.example.ctl", "--version", "1.0.1", "--dir", dist, "--delta",
                  "--channel", "production", "--public")
        assert "created app com.example.ctl" in out and "channel production -> 1.0.1" in out, out
        doc = updates(device)
        assert doc["version"] == "1.0.1", doc
        st, _, z = curl(doc["url"])
        assert st == 200 and sha(z) == doc["checksum"], "the zip hashes to checksum"
        got = {m["file_name"]: m for m in doc["manifest"]}
        assert sorted(got) == sorted(files), got
        for rel, m in got.items():
            st, _, b = curl(m["download_url"])
            assert st == 200 and b == files[rel] and sha(b) == m["file_hash"], rel

    def t_deterministic_and_commands():
        # The same folder again: same zip bytes, same files: nothing changes (exit 0).
        out = ctl("publish", "--app", "com.example.ctl", "--version", "1.0.1", "--dir", dist, "--delta")
        assert "release 1.0.1 unchanged" in out, out
        out = ctl("release", "list", "com.example.ctl")
        assert "1.0.1" in out
        out = ctl("channel", "set", "com.example.ctl", "beta", "--release", "1.0.1", "--json",
                  '{"allow_device_self_set": true}')
        assert '"allow_device_self_set": true' in out, out
        assert "beta" in ctl("channel", "list", "com.example.ctl")
        ctl("device", "set", "com.example.ctl", device["device_id"], "beta")
        ctl("device", "unset", "com.example.ctl", device["device_id"])
        ctl("channel", "delete", "com.example.ctl", "beta")
        assert "beta" not in ctl("channel", "list", "com.example.ctl")
        out = ctl("stats", "com.example.ctl")
        assert "devices" in out and "check-ins" in out and "(no check-ins" not in out, out
        # Errors say what to fix.
        err = ctl("channel", "set", "com.example.ctl", "x", "--release", "9.9.9", expect=3)
        assert "9.9.9" in err, err
        err = ctl("publish", "--app", "com.example.ctl", "--version", "2", expect=1)
        assert "--zip FILE, --dir DIST or --no-files" in err, err
        env_err = subprocess.run([sys.executable, CTL, "--token", "wrong", "--url", node.admin_url, "stats",
                                  "com.example.ctl"], capture_output=True, text=True, timeout=60)
        assert env_err.returncode == 1 and "token" in env_err.stderr, env_err.stderr
        zip_path = os.path.join(TMP, "given.zip")
        st, _, z = curl(updates(device)["url"])
        open(zip_path, "wb").write(z)
        out = ctl("publish", "--app", "com.example.ctl", "--version", "1.0.2", "--zip", zip_path, "--channel",
                  "production")
        assert "channel production -> 1.0.2" in out, out
        assert updates(device)["version"] == "1.0.2"

    for name, fn in [("every command and action has its own --help", t_help_everywhere),
                     ("publish --dir --delta, then a device updates", t_publish),
                     ("deterministic zips, channel/device/release/stats commands", t_deterministic_and_commands)]:
        check(name, fn)
    assert node.stop() == 0


if __name__ == "__main__":
    run(main)
