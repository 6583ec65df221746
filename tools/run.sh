#!/usr/bin/env bash
# The README's "run" command: set up, build the release preset, start a standalone origin
# (public 127.0.0.1:8080, admin 127.0.0.1:9090, data ./var), publish the small sample bundle
# in tools/sample-bundle as release 1.0.1 of com.example.app on the public channel
# "production", and print the request a device would make, the web console's URL and
# the token to sign in with. Ctrl-C stops the node.
#   tools/run.sh --tls   also serves HTTPS on 127.0.0.1:8443 with a self-signed certificate
#                        made here (var/tls/cert.pem, for localhost and 127.0.0.1), and
#                        devices get https:// URLs: try curl --cacert var/tls/cert.pem ...
# Extra arguments go to bundle-edge, e.g. tools/run.sh --threads 1
set -euo pipefail
cd "$(dirname "$0")/.."
TLS=0
if [[ "${1:-}" == "--tls" ]]; then
  TLS=1
  shift
fi
tools/setup.sh
cmake --preset release
cmake --build --preset release -j "$(nproc)" --target bundle-edge

TLS_ARGS=()
if [[ $TLS == 1 ]]; then
  mkdir -p var/tls
  if [[ ! -s var/tls/cert.pem || ! -s var/tls/key.pem ]]; then
    echo "run: making a self-signed certificate for localhost and 127.0.0.1 (var/tls/cert.pem)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
      -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout var/tls/key.pem -out var/tls/cert.pem 2>/dev/null
    chmod 600 var/tls/key.pem
  fi
  TLS_ARGS=(--tls-listen 127.0.0.1:8443 --tls-cert var/tls/cert.pem --tls-key var/tls/key.pem)
fi
build/release/bundle-edge --config conf/bundle-edge.toml "${TLS_ARGS[@]}" "$@" &
NODE=$!
trap 'kill -TERM $NODE 2>/dev/null; wait $NODE' INT TERM
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break
  kill -0 $NODE 2>/dev/null || { echo "run: bundle-edge exited; see the log above" >&2; exit 1; }
  sleep 0.1
done

BUNDLE_EDGE_TOKEN=$(cat var/admin.token) tools/bundle-edge-ctl publish --app com.example.app \
  --version 1.0.1 --dir tools/sample-bundle --delta --channel production --public

if [[ $TLS == 1 ]]; then
  cat <<'MSG'

run: HTTPS is up on 127.0.0.1:8443 with a self-signed certificate; /updates answers carry
https:// URLs. Check it (and a download) with the certificate as the CA:

  curl -s --cacert var/tls/cert.pem -X POST https://localhost:8443/updates -H 'Content-Type: application/json' -d '{"platform":"android","device_id":"0a1b2c3d-1111-4222-8333-444455556666","app_id":"com.example.app","version_build":"1.0.0","version_name":"builtin","plugin_version":"8.51.23","is_emulator":false,"is_prod":true,"defaultChannel":""}'
MSG
fi
cat <<'MSG'

run: the node is up. A device (the @capgo/capacitor-updater plugin with updateUrl set to
http://127.0.0.1:8080/updates) would ask:

  curl -s -X POST http://127.0.0.1:8080/updates -H 'Content-Type: application/json' -d '{"platform":"android","device_id":"0a1b2c3d-1111-4222-8333-444455556666","app_id":"com.example.app","version_build":"1.0.0","version_name":"builtin","plugin_version":"8.51.23","is_emulator":false,"is_prod":true,"defaultChannel":""}'

Publish your own:  BUNDLE_EDGE_TOKEN=$(cat var/admin.token) tools/bundle-edge-ctl publish --app ID --version X --dir DIST --channel production
MSG
if [[ $TLS == 1 ]] && grep -q '^admin *= *true' conf/bundle-edge.toml; then CONSOLE=https; else CONSOLE=http; fi
cat <<MSG

The web console: ${CONSOLE}://127.0.0.1:9090/console/
Sign in with the admin token: $(cat var/admin.token)
(or a scoped one: tools/bundle-edge-ctl token create NAME --role viewer --app '*')
Ctrl-C stops the node.
MSG
wait $NODE
