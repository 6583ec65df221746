#!/usr/bin/env bash
# Installs every Debian package that the build, the tests and the benchmarks need.
# Idempotent: when everything is present it only runs dpkg-query and exits.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libboost-program-options1.81-dev
  liburing-dev libxxhash-dev librocksdb-dev libssl-dev libtomlplusplus-dev libspdlog-dev
  zlib1g-dev libcurl4-openssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  curl wrk nginx python3 valgrind openssl
  chromium chromium-driver python3-selenium
  libpq-dev postgresql-15 postgresql-client-15
)
# bench/fleet's plot, best effort: without it the fleet bench writes no PNG and says so.
# python3-ufolib2 names the alternative python3-fonttools needs, so apt does not try
# python3-scipy's, whose dependencies conflict with libboost1.81-dev.
plot_packages=(python3-matplotlib python3-ufolib2)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
# node and npm run the local S3 (s3rver) of the blobs-in-S3 tests: Debian's, unless the
# machine has them already (from elsewhere).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  for p in nodejs npm; do installed "$p" || missing+=("$p"); done
fi

# s3rver 3.7.1 from npm, into a cache directory tests/integration/s3rver.py finds. Idempotent.
S3RVER_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/bundle-edge/s3rver"
install_s3rver() {
  if [ -x "$S3RVER_DIR/node_modules/.bin/s3rver" ] &&
    grep -q '"version": "3.7.1"' "$S3RVER_DIR/node_modules/s3rver/package.json" 2>/dev/null; then
    return 0
  fi
  echo "setup: installing s3rver 3.7.1 into $S3RVER_DIR (the S3 of the tests)"
  mkdir -p "$S3RVER_DIR"
  npm install --silent --no-audit --no-fund --prefix "$S3RVER_DIR" s3rver@3.7.1
}
missing_plot=()
for p in "${plot_packages[@]}"; do
  installed "$p" || missing_plot+=("$p")
done

if [ ${#missing[@]} -eq 0 ] && [ ${#missing_plot[@]} -eq 0 ]; then
  echo "setup: all $((${#packages[@]} + ${#plot_packages[@]})) packages present"
  install_s3rver
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ${#missing_plot[@]} -gt 0 ]; then
  echo "setup: installing ${missing_plot[*]} (the fleet bench's plot)"
  $SUDO apt-get install -y -q --no-install-recommends "${missing_plot[@]}" ||
    echo "setup: WARNING: could not install ${missing_plot[*]}: bench/fleet writes no PNG" >&2
fi
# nginx is only a benchmark baseline: never leave the distribution's service running on :80.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
install_s3rver
# PostgreSQL is started by the tests of the origin tier in their own temp dirs: the cluster
# the package creates is not used, so it is not left running.
if command -v pg_ctlcluster >/dev/null 2>&1; then $SUDO pg_ctlcluster 15 main stop >/dev/null 2>&1 || true; fi
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true; fi
echo "setup: done"
