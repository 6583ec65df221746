#!/usr/bin/env bash
# The README's "run" command: set up, build the release preset, start a standalone origin
# (public 127.0.0.1:8080, admin 127.0.0.1:9090, data ./var) with the documented defaults.
# Extra arguments go to bundle-edge, e.g. tools/run.sh --listen 127.0.0.1:8081
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake --preset release
cmake --build --preset release -j "$(nproc)" --target bundle-edge
echo "run: starting build/release/bundle-edge --config conf/bundle-edge.toml $*"
echo "run: upload a file with:"
echo "  curl -X PUT --data-binary @FILE -H \"Authorization: Bearer \$(cat var/admin.token)\" http://127.0.0.1:9090/v1/admin/blobs"
echo "run: then download it from http://127.0.0.1:8080/v1/blobs/<sha256>/<name>"
exec build/release/bundle-edge --config conf/bundle-edge.toml "$@"
