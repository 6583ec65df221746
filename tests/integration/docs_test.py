#!/usr/bin/env python3
"""The user docs stay true: links resolve, documented config keys are accepted by the binary,
documented bundle-edge-ctl commands exist, and no diary (issue numbers, dates) creeps back in.

Usage: docs_test.py PATH/TO/bundle-edge
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")
CTL = os.path.join(ROOT, "tools", "bundle-edge-ctl")

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def rel(path):
    return os.path.relpath(path, ROOT)


def user_docs():
    """docs/*.md."""
    return sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md"))


def strip_code(text):
    """Text without fenced blocks and inline code: links there are examples, not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    h = re.sub(r"`", "", heading.strip().lower())
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors(path):
    seen = {}
    out = set()
    text = re.sub(r"^```.*?^```", "", open(path, encoding="utf-8").read(), flags=re.S | re.M)
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, flags=re.M):
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def check_links():
    files = [os.path.join(ROOT, "README.md")] + user_docs()
    checked = 0
    for path in files:
        text = strip_code(open(path, encoding="utf-8").read())
        for m in re.finditer(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            base = os.path.dirname(path)
            dest = path if file_part == "" else os.path.normpath(os.path.join(base, file_part))
            checked += 1
            if not os.path.exists(dest):
                fail(f"{rel(path)}: link {target!r}: {rel(dest)} does not exist")
                continue
            if anchor and dest.endswith(".md") and anchor not in anchors(dest):
                fail(f"{rel(path)}: link {target!r}: no heading #{anchor} in {rel(dest)}")
    print(f"links: {checked} relative links checked", flush=True)


def documented_config():
    """{"section.key": default as TOML text} from the tables of docs/configuration.md."""
    keys = {}
    text = open(os.path.join(DOCS, "configuration.md"), encoding="utf-8").read()
    for m in re.finditer(r"^\| `([a-z_]+\.[a-z_]+)` \| `(.*?)` \|", text, flags=re.M):
        keys[m.group(1)] = m.group(2).replace("\\|", "|")
    return keys


def toml_keys(data):
    return {f"{s}.{k}" for s, t in data.items() if isinstance(t, dict) for k in t}


def start_node(binary, config, tmp, extra=()):
    """Starts the binary on `config`; returns (accepted, output). Accepted: it came up."""
    data = tempfile.mkdtemp(dir=tmp)
    p = subprocess.Popen([binary, "--config", config, "--data", data, "--listen", "127.0.0.1:0",
                          "--admin-listen", "127.0.0.1:0", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        out.append(line)
        if "admin listener on" in line:  # the config was accepted: the node is serving
            time.sleep(0.5)
            p.send_signal(signal.SIGTERM)
            rest, _ = p.communicate(timeout=60)
            out.append(rest)
            return True, "".join(out)
    if p.poll() is None:
        p.kill()
    p.wait()
    return False, "".join(out)


def check_config(binary):
    documented = documented_config()
    with open(os.path.join(ROOT, "conf", "bundle-edge.toml"), "rb") as f:
        shipped = toml_keys(tomllib.load(f))
    print(f"config: {len(documented)} keys documented, {len(shipped)} in conf/bundle-edge.toml",
          flush=True)
    for k in sorted(shipped - documented.keys()):
        fail(f"conf/bundle-edge.toml key {k} is not in docs/configuration.md")
    if not documented:
        fail("docs/configuration.md: no key table found")
        return
    # Every documented key, at its documented default, in one file the binary must accept.
    sections = {}
    for k, v in documented.items():
        s, name = k.split(".", 1)
        sections.setdefault(s, []).append(f"{name} = {v}")
    text = "".join(f"[{s}]\n" + "\n".join(lines) + "\n\n" for s, lines in sections.items())
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"docs/configuration.md: the documented defaults are not valid TOML: {e}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "documented.toml")
        open(path, "w").write(text)
        ok, out = start_node(binary, path, tmp)
        if not ok:
            fail("bundle-edge refused the documented keys and defaults:\n" + out[-2000:])
        # The check above means something only if a bad key is refused.
        bad = os.path.join(tmp, "bad.toml")
        open(bad, "w").write("[server]\nno_such_key = 1\n")
        ok, out = start_node(binary, bad, tmp)
        if ok or "no_such_key" not in out:
            fail("bundle-edge accepted an unknown key, so the key check proves nothing")
    # Keys shown in ```toml examples must be real keys too; an example with a [node] table
    # is a whole config, and the binary must start on it (paths, ports and certificates
    # replaced by flags: the examples name production paths).
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        started = 0
        for path in user_docs():
            text = open(path, encoding="utf-8").read()
            for block in re.findall(r"^```toml\n(.*?)^```", text, flags=re.S | re.M):
                try:
                    data = tomllib.loads(block)
                except tomllib.TOMLDecodeError as e:
                    fail(f"{rel(path)}: a toml example does not parse: {e}")
                    continue
                for k in sorted(toml_keys(data) - documented.keys()):
                    fail(f"{rel(path)}: toml example uses {k}, which docs/configuration.md lacks")
                if "node" not in data:
                    continue
                example = os.path.join(tmp, f"example{started}.toml")
                open(example, "w").write(block)
                extra = []
                if data.get("tls", {}).get("listen"):
                    extra = ["--tls-listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key]
                ok, out = start_node(binary, example, tmp, extra)
                started += 1
                if not ok:
                    fail(f"{rel(path)}: bundle-edge does not start on a toml example:\n" + out[-2000:])
        print(f"config: {started} whole toml examples started", flush=True)


GLOBAL_WITH_VALUE = {"--url", "--token", "--cacert"}


def ctl_invocations():
    """(file, cmd, [subcommand alternatives]) for each `bundle-edge-ctl CMD SUB` shown."""
    found = []
    for path in user_docs():
        text = open(path, encoding="utf-8").read()
        for m in re.finditer(r"bundle-edge-ctl((?:[ \t]+[^\s`|;)]+(?:\|[^\s`|;)]+)*){0,4})", text):
            tokens = m.group(1).split()
            i = 0
            while i < len(tokens) and tokens[i].startswith("-"):
                i += 2 if tokens[i] in GLOBAL_WITH_VALUE else 1
            if i >= len(tokens) or not re.fullmatch(r"[a-z][a-z-]*", tokens[i]):
                continue  # prose ("bundle-edge-ctl exits 5"), a placeholder, or nothing
            cmd = tokens[i]
            sub = tokens[i + 1] if i + 1 < len(tokens) else ""
            subs = sub.split("|") if re.fullmatch(r"[a-z][a-z-]*(\|[a-z][a-z-]*)*", sub) else []
            found.append((path, cmd, subs))
    return found


def check_ctl():
    helps = {}
    calls = ctl_invocations()
    words_after = {"exits", "prints", "makes", "needs", "refuses", "derives", "is", "and", "or",
                   "with", "in", "to", "from", "the", "on", "as", "for", "does", "writes"}
    for path, cmd, subs in calls:
        if cmd in words_after:
            continue
        if cmd not in helps:
            p = subprocess.run([sys.executable, CTL, cmd, "--help"], capture_output=True,
                               text=True, timeout=60)
            helps[cmd] = (p.returncode, p.stdout + p.stderr)
        rc, out = helps[cmd]
        if rc != 0:
            fail(f"{rel(path)}: `bundle-edge-ctl {cmd} --help` exits {rc}: {out.strip()[-300:]}")
            continue
        # The subcommand is the first positional argument: argparse lists its choices first
        # under "positional arguments:" (option choices appear in the usage line too).
        choices = re.search(r"positional arguments:\n\s+\{([a-z,-]+)\}", out)
        if choices and subs:
            allowed = choices.group(1).split(",")
            for s in subs:
                if s not in allowed:
                    fail(f"{rel(path)}: `bundle-edge-ctl {cmd} {s}`: {s} is not one of {allowed}")
    print(f"ctl: {len(calls)} invocations, {len(helps)} commands checked", flush=True)


DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")


def check_no_diary():
    for path in user_docs():
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
            where = f"{rel(path)}:{n}"
            if re.search(r"issue\s*#\s*\d*", line, flags=re.I):
                fail(f"{where}: an issue number: {line.strip()[:120]}")
            if re.search(r"DESIGN(\.md)?\s*§", line):
                fail(f"{where}: a DESIGN § reference (point to docs/ instead)")
            for m in DATE.finditer(line):
                before = line[:m.start()]
                if re.search(r"(--from|--to|from=|to=)\s*$", before):
                    continue  # a date given to a command, not a diary entry
                fail(f"{where}: a date {m.group(0)}: {line.strip()[:120]}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    check_links()
    check_no_diary()
    check_ctl()
    check_config(os.path.abspath(sys.argv[1]))
    if failures:
        print(f"{len(failures)} problem(s)")
        sys.exit(1)
    print("docs: ok")


if __name__ == "__main__":
    main()
