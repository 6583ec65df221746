#!/usr/bin/env python3
"""Encrypted bundles end to end: `bundle-edge-ctl key create` and `publish --encrypt` against a
real node, then the bundle is opened the way the Capgo plugin opens it, with the PUBLIC key
alone (capgo-protocol.md §2.5, §2.6): RSA public-decrypt of the session key's AES key and of
the checksum (PKCS#1 v1.5 type 1), AES-128-CBC decrypt of the zip downloaded from the node's
url, and the plain zip's SHA-256 equals the decrypted checksum. Also: the key files and their
modes, the app's key id refusing a wrong key pair (in the CLI and in the node), what
/updates tells devices with and without the app's key, and an edge passing it all on.

Every RSA and AES operation here is the openssl command's. Usage: crypto_test.py <bundle-edge>"""
import base64
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import time
import zipfile

from harness import run, TMP, Node, check, curl, admin, sha, wait_for

CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bundle-edge-ctl")
APP = "com.example.crypto"
SYNC_TOKEN = "crypto-sync-secret"
HEADER = "-----BEGIN RSA PUBLIC KEY-----"


def openssl(*args, data=None):
    r = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=120)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def public_decrypt(public_pem_path, block):
    """What the plugin does with the session key and the checksum: RSA public-decrypt with
    PKCS#1 v1.5 type-1 padding. The raw block is checked too: 00 01, at least eight FF, 00."""
    raw = openssl("pkeyutl", "-verifyrecover", "-pubin", "-inkey", public_pem_path,
                  "-pkeyopt", "rsa_padding_mode:none", data=block)
    assert len(raw) == 256 and raw[:2] == b"\x00\x01", raw[:4].hex()
    sep = raw.index(b"\x00", 2)
    assert sep >= 10 and set(raw[2:sep]) == {0xFF}, "type-1 padding"
    payload = openssl("pkeyutl", "-verifyrecover", "-pubin", "-inkey", public_pem_path,
                      "-pkeyopt", "rsa_padding_mode:pkcs1", data=block)
    assert payload == raw[sep + 1:]
    return payload


def main():
    node = Node('[sync]\ntoken = "%s"\n' % SYNC_TOKEN)  # an origin an edge can follow
    work = os.path.join(TMP, "publisher")
    os.makedirs(work)
    figures = {}

    def ctl(*args, expect=0, token=True):
        env = dict(os.environ, BUNDLE_EDGE_URL=node.admin_url)
        env.pop("BUNDLE_EDGE_TOKEN", None)
        if token:
            env["BUNDLE_EDGE_TOKEN"] = node.token
        started = time.monotonic()
        r = subprocess.run([sys.executable, CTL, *args], capture_output=True, text=True, env=env, timeout=300,
                           cwd=work)
        figures.setdefault("ctl " + args[0], []).append(time.monotonic() - started)
        assert r.returncode == expect, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout + r.stderr

    keys = os.path.join(work, "keys")
    other = os.path.join(work, "other-keys")
    device = {"platform": "android", "device_id": "0a1b2c3d-1111-4222-8333-444455556666", "app_id": APP,
              "version_build": "1.0.0", "version_name": "builtin", "plugin_version": "8.51.23",
              "is_emulator": False, "is_prod": True, "defaultChannel": ""}

    def updates(body, at=None):
        st, _, out = curl("-X", "POST", "--data-binary", json.dumps(body), (at or node).url + "/updates")
        assert st == 200, st
        return json.loads(out)

    def key_id(path):
        body = open(path).read().replace(HEADER, "").replace("-----END RSA PUBLIC KEY-----", "")
        return "".join(body.split())[:20]

    def t_key_create():
        # No token anywhere: creating a key never talks to a node.
        out = ctl("key", "create", "--out", keys, token=False)
        private, public = os.path.join(keys, "private_key.pem"), os.path.join(keys, "public_key.pem")
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600, oct(os.stat(private).st_mode)
        assert stat.S_IMODE(os.stat(public).st_mode) & 0o077 == 0o044, "public key readable"
        pem = open(public).read()
        assert pem.startswith(HEADER + "\n") and pem.rstrip().endswith("-----END RSA PUBLIC KEY-----"), pem
        assert "PRIVATE KEY" in open(private).read()
        text = openssl("rsa", "-RSAPublicKey_in", "-in", public, "-noout", "-text").decode()
        assert "2048 bit" in text, text[:80]
        # The private key's public half is this public key.
        assert openssl("rsa", "-in", private, "-RSAPublicKey_out").decode() == pem
        kid = key_id(public)
        assert len(kid) == 20 and kid.startswith("MIIBCgKCAQEA") and "key id:      " + kid in out, out
        # The snippet for capacitor.config.json parses and carries the PEM; the .ts form too.
        m = re.search(r"capacitor\.config\.json:\n(.*?)\ncapacitor\.config\.ts:\n(.*?)\n\n", out, re.S)
        assert m, out
        assert json.loads(m.group(1))["plugins"]["CapacitorUpdater"]["publicKey"] == pem
        assert "CapacitorUpdater: {" in m.group(2) and json.dumps(pem) in m.group(2), m.group(2)
        # Never overwritten.
        before = open(private, "rb").read()
        err = ctl("key", "create", "--out", keys, token=False, expect=1)
        assert "never overwritten" in err and open(private, "rb").read() == before, err
        # A second pair, registered on the app in the same step.
        out = ctl("key", "create", "--out", other, "--app", APP)
        assert "registered key id " + key_id(os.path.join(other, "public_key.pem")) in out, out
        st, doc = admin(node, "GET", "/v1/admin/apps/" + APP)
        assert st == 200 and doc["key_id"] == key_id(os.path.join(other, "public_key.pem")), doc

    def t_set_key_refusals():
        public = os.path.join(keys, "public_key.pem")
        spki = os.path.join(work, "spki.pem")
        open(spki, "wb").write(openssl("rsa", "-RSAPublicKey_in", "-in", public, "-pubout"))
        err = ctl("app", "set-key", APP, "--public-key", spki, expect=1)
        assert "PKCS#1" in err and "-RSAPublicKey_out" in err, err
        err = ctl("app", "set-key", APP, "--public-key", os.path.join(keys, "private_key.pem"), expect=1)
        assert "is a private key" in err, err
        out = ctl("app", "set-key", APP, "--public-key", public)
        assert key_id(public) in out
        st, doc = admin(node, "GET", "/v1/admin/apps/" + APP)
        assert doc["key_id"] == key_id(public), doc
        # The node stores the id, never a key.
        assert "BEGIN" not in json.dumps(doc)
        st, doc = admin(node, "PUT", "/v1/admin/apps/" + APP, {"key_id": "not a key id"})
        assert st == 400 and "key_id" in doc["message"], (st, doc)

    plain_zip = {}

    def t_round_trip():
        # A ~5 MB zip of incompressible content, so the encrypted blob is ~5 MB too.
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("index.html", b"<html>encrypted</html>")
            z.writestr("assets/app.js", os.urandom(5 * 1024 * 1024))
        zip_bytes = buf.getvalue()
        plain_zip["bytes"] = zip_bytes
        zip_path = os.path.join(work, "bundle.zip")
        open(zip_path, "wb").write(zip_bytes)
        private = os.path.join(keys, "private_key.pem")
        public = os.path.join(keys, "public_key.pem")
        out = ctl("publish", "--app", APP, "--version", "1.0.1", "--zip", zip_path, "--encrypt", "--key", private,
                  "--channel", "production", "--public")
        m = re.search(r"encrypted ([\d.]+ \w+) for key (\S+) in ([\d.]+) s", out)
        assert m and m.group(2) == key_id(public), out
        figures["encrypt 5 MiB zip (s)"] = float(m.group(3))
        figures["publish --encrypt 5 MiB (s)"] = figures["ctl publish"][-1]
        assert "warning" not in out, out
        # The device ships the public key: it sends its key id.
        doc = updates(dict(device, key_id=key_id(public)))
        assert doc["version"] == "1.0.1" and "error" not in doc, doc
        # §2.6: "<base64 iv>:<base64 RSA-encrypted AES key>", standard base64; §2.5: the
        # encrypted checksum in hex, one RSA-2048 block.
        iv_b64, key_b64 = doc["session_key"].split(":")
        assert re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", iv_b64) and re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", key_b64)
        assert re.fullmatch(r"[0-9a-f]{512}", doc["checksum"]), doc["checksum"]
        iv, wrapped = base64.b64decode(iv_b64, validate=True), base64.b64decode(key_b64, validate=True)
        assert len(iv) == 16 and len(wrapped) == 256
        started = time.monotonic()
        aes_key = public_decrypt(public, wrapped)
        assert len(aes_key) == 16
        expected = public_decrypt(public, bytes.fromhex(doc["checksum"])).hex()
        assert len(expected) == 64
        # The blob the node stores and serves is the ciphertext.
        st, headers, blob = curl(doc["url"])
        assert st == 200 and len(blob) % 16 == 0 and len(blob) > len(zip_bytes), (st, len(blob))
        assert blob != zip_bytes and zip_bytes[:4] not in blob[:64]
        plain = openssl("enc", "-d", "-aes-128-cbc", "-K", aes_key.hex(), "-iv", iv.hex(), data=blob)
        figures["device-side decrypt + verify (s)"] = time.monotonic() - started
        assert sha(plain) == expected, "the decrypted zip hashes to the decrypted checksum"
        assert plain == zip_bytes
        with zipfile.ZipFile(io.BytesIO(plain)) as z:
            assert z.read("index.html") == b"<html>encrypted</html>"
        figures["zip bytes"] = len(zip_bytes)
        figures["stored blob bytes"] = len(blob)
        # The release records the key id, so a device with another key is told key_id_mismatch
        # (plugins after 8.40.7) instead of failing to decrypt.
        doc = updates(dict(device, key_id="MIIBCgKCAQEAzzzzzzzz"))
        assert doc["error"] == "key_id_mismatch" and doc["kind"] == "blocked", doc
        assert doc["bundleKeyId"] == key_id(public), doc
        # A device without a key id (older plugins) still gets the release.
        assert updates(device)["version"] == "1.0.1"

    def open_like_a_device(doc, public):
        """The plugin's steps on an /updates answer: (plain zip, decrypted checksum)."""
        iv_b64, key_b64 = doc["session_key"].split(":")
        iv = base64.b64decode(iv_b64, validate=True)
        aes_key = public_decrypt(public, base64.b64decode(key_b64, validate=True))
        expected = public_decrypt(public, bytes.fromhex(doc["checksum"])).hex()
        st, _, blob = curl(doc["url"])
        assert st == 200, st
        return openssl("enc", "-d", "-aes-128-cbc", "-K", aes_key.hex(), "-iv", iv.hex(), data=blob), expected

    def t_through_edge():
        # An edge following the origin passes the encrypted release on as it is: same
        # session_key and checksum, the same ciphertext filled from the origin.
        conf = ('[node]\nrole = "edge"\n[sync]\ntoken = "%s"\n[upstream]\nurl = "%s"\ntoken = "%s"\n'
                'timeout_ms = 3000\nretries = 1\nbackoff_max_ms = 500\n' % (SYNC_TOKEN, node.url, SYNC_TOKEN))
        edge = Node(conf)
        try:
            public = os.path.join(keys, "public_key.pem")
            asked = dict(device, key_id=key_id(public))
            at_origin = updates(asked)
            at_edge = wait_for("1.0.1 on the edge", lambda: (lambda d: d if d.get("version") == "1.0.1" else None)(
                updates(asked, at=edge)))
            assert at_edge["session_key"] == at_origin["session_key"], at_edge
            assert at_edge["checksum"] == at_origin["checksum"], at_edge
            assert at_edge["url"].startswith(edge.url), at_edge["url"]
            plain, expected = open_like_a_device(at_edge, public)
            assert plain == plain_zip["bytes"] and sha(plain) == expected
            # The app's key id reached the edge with the app document.
            st, doc = admin(edge, "GET", "/v1/admin/apps/" + APP)
            assert st == 200 and doc.get("key_id") == key_id(public), (st, doc)
            assert updates(dict(device, key_id="MIIBCgKCAQEAzzzzzzzz"), at=edge)["error"] == "key_id_mismatch"
        finally:
            assert edge.stop() == 0

    def t_wrong_key():
        zip_path = os.path.join(work, "bundle.zip")
        registered = key_id(os.path.join(keys, "public_key.pem"))
        wrong = key_id(os.path.join(other, "public_key.pem"))
        err = ctl("publish", "--app", APP, "--version", "1.0.2", "--zip", zip_path, "--encrypt", "--key",
                  os.path.join(other, "private_key.pem"), "--channel", "production", expect=3)
        assert wrong in err and registered in err and "app set-key" in err, err
        assert "uploading" not in err, "refused before any upload"
        assert "1.0.2" not in ctl("release", "list", APP)
        assert updates(dict(device, key_id=registered))["version"] == "1.0.1"
        # The node refuses it too, whatever tool wrote the release.
        zip_id = hashlib.sha256(open(zip_path, "rb").read()).hexdigest()
        st, _, _ = curl("-X", "PUT", "-H", "Authorization: Bearer " + node.token, "-H",
                        "X-Content-Sha256: " + zip_id, "--data-binary", "@" + zip_path,
                        node.admin_url + "/v1/admin/blobs")
        assert st in (200, 201), st
        body = {"zip": zip_id, "session_key": "AAAAAAAAAAAAAAAAAAAAAA==:QUJD", "checksum": "ab" * 256,
                "key_id": wrong}
        st, doc = admin(node, "PUT", "/v1/admin/apps/%s/releases/1.0.3" % APP, body)
        assert st == 422 and doc["error"] == "key_id_mismatch", (st, doc)
        assert wrong in doc["message"] and registered in doc["message"], doc
        # An unencrypted bundle on an app with a key: accepted, with a warning.
        out = ctl("publish", "--app", APP, "--version", "1.0.4", "--zip", zip_path)
        assert "warning: session_key" in out and "session_key_required" in out, out

    def t_usage_refusals():
        private = os.path.join(keys, "private_key.pem")
        dist = os.path.join(work, "dist")
        os.makedirs(dist, exist_ok=True)
        open(os.path.join(dist, "index.html"), "w").write("<html>d</html>")
        err = ctl("publish", "--app", APP, "--version", "2.0.0", "--dir", dist, "--delta", "--encrypt",
                  "--key", private, expect=2)
        assert "delta" in err and "not supported" in err, err
        err = ctl("publish", "--app", APP, "--version", "2.0.0", "--dir", dist, "--encrypt", expect=2)
        assert "--key" in err, err
        err = ctl("publish", "--app", APP, "--version", "2.0.0", "--dir", dist, "--encrypt", "--key", private,
                  "--session-key", "a:b", expect=2)
        assert "--session-key" in err, err
        small = os.path.join(work, "small.pem")
        open(small, "wb").write(openssl("genrsa", "-traditional", "1024"))
        err = ctl("publish", "--app", APP, "--version", "2.0.0", "--dir", dist, "--encrypt", "--key", small,
                  expect=3)
        assert "1024-bit" in err and "RSA-2048" in err, err
        # --dir builds the zip, then encrypts it (the app's key: accepted).
        out = ctl("publish", "--app", APP, "--version", "2.0.1", "--dir", dist, "--encrypt", "--key", private)
        assert "release 2.0.1 created" in out, out
        help_text = ctl("key", "--help", token=False)
        assert "example:" in help_text and "create" in help_text, help_text

    for name, fn in [("key create: PKCS#1 public key, 0600 private key, snippet, no overwrite", t_key_create),
                     ("app set-key stores the key id only; other key forms refused", t_set_key_refusals),
                     ("publish --encrypt, then decrypt with the public key alone as the plugin does",
                      t_round_trip),
                     ("an edge serves the encrypted release as the origin does", t_through_edge),
                     ("a wrong key pair is refused by the CLI and by the node", t_wrong_key),
                     ("--encrypt refuses --delta, a missing key, manual fields, a 1024-bit key", t_usage_refusals)]:
        check(name, fn)
    print("figures: " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()
                                    if not k.startswith("ctl ")}))
    assert node.stop() == 0


if __name__ == "__main__":
    run(main)
