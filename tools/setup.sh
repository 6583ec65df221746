#!/usr/bin/env bash
# Installs every Debian package that the build, the tests and the benchmarks need.
# Idempotent: when everything is present it only runs dpkg-query and exits.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libboost-program-options1.81-dev
  liburing-dev libxxhash-dev librocksdb-dev libssl-dev libtomlplusplus-dev libspdlog-dev
  zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  curl wrk nginx python3 valgrind openssl
  chromium chromium-driver python3-selenium
  # bench/fleet's plot. python3-ufolib2 names the alternative python3-fonttools needs, so
  # apt does not try python3-scipy's, whose dependencies conflict with libboost1.81-dev.
  python3-matplotlib python3-ufolib2
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# nginx is only a benchmark baseline: never leave the distribution's service running on :80.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
echo "setup: done"
