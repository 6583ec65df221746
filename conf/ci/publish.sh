#!/usr/bin/env bash
# Publish a web bundle from CI and start a rollout. Plain shell: any CI runs it.
#
# Environment (all but the first two have defaults):
#   BUNDLE_EDGE_URL     the origin's admin listener, e.g. https://origin.example.com:9090
#   BUNDLE_EDGE_TOKEN   a publisher token for APP_ID (bundle-edge-ctl token create ci
#                       --role publisher --app APP_ID), kept in the CI's secret store
#   BUNDLE_EDGE_CACERT  a CA bundle for a private certificate (optional)
#   APP_ID              the Capacitor app id (default: read from capacitor.config.json)
#   VERSION             the bundle version (default: "version" of package.json)
#   CHANNEL             the channel to roll out on (default: production)
#   PERCENT             the rollout's share of devices (default: 10)
#   BUILD_CMD           how to build the web assets (default: npm ci && npm run build)
#   DIST                the folder the build writes (default: dist)
# Exit codes: those of bundle-edge-ctl (0 done or unchanged, 1 error, 3 a refused value,
# 4 the version exists with other files, 5 the token may not do this).
set -euo pipefail
: "${BUNDLE_EDGE_URL:?set BUNDLE_EDGE_URL to the admin URL of the origin}"
: "${BUNDLE_EDGE_TOKEN:?set BUNDLE_EDGE_TOKEN to a publisher token}"
CTL=${CTL:-bundle-edge-ctl}
CHANNEL=${CHANNEL:-production}
PERCENT=${PERCENT:-10}
DIST=${DIST:-dist}
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
APP_ID=${APP_ID:-$(json_field capacitor.config.json appId)}
VERSION=${VERSION:-$(json_field package.json version)}

echo "ci: building $APP_ID $VERSION"
eval "${BUILD_CMD:-npm ci && npm run build}"
[ -d "$DIST" ] || { echo "ci: no $DIST folder after the build" >&2; exit 1; }

echo "ci: publishing $VERSION (zip and per-file delta) to $BUNDLE_EDGE_URL"
"$CTL" publish --app "$APP_ID" --version "$VERSION" --dir "$DIST" --delta

echo "ci: rollout of $VERSION to $PERCENT% of channel $CHANNEL"
"$CTL" rollout start "$APP_ID" "$CHANNEL" --release "$VERSION" --percent "$PERCENT"
echo "ci: done; widen with: bundle-edge-ctl rollout set $APP_ID $CHANNEL --percent 50," \
  "then rollout promote; undo with rollout abort or channel rollback"
