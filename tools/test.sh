#!/usr/bin/env bash
# The README's test command: set up, configure, build and run every test with ctest.
# Usage: tools/test.sh [preset]   (default preset: dev)
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-dev}"
tools/setup.sh
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$(nproc)"
ctest --test-dir "build/$preset" --output-on-failure -j "$(nproc)" --timeout 900
