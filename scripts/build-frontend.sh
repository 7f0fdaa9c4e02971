#!/usr/bin/env bash
# Installs the dashboard's pinned npm packages (web/package-lock.json) and copies the files
# the pages load into src/tuneforge/web/static/vendor/, which is gitignored: vendor code
# comes from the registry at build time and is never committed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENDOR=src/tuneforge/web/static/vendor
MODULES=web/node_modules

npm ci --prefix web --no-audit --no-fund --loglevel=error

rm -rf "$VENDOR"
mkdir -p "$VENDOR"
cp "$MODULES/htmx.org/dist/htmx.min.js" "$VENDOR/htmx.min.js"
cp "$MODULES/chart.js/dist/chart.umd.min.js" "$VENDOR/chart.umd.min.js"
for package in htmx.org chart.js; do
  cp "$MODULES/$package"/LICENSE* "$VENDOR/LICENSE.$package"
done
touch "$VENDOR/.built"
echo "Front-end vendor files are in $VENDOR"
