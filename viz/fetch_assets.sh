#!/usr/bin/env bash
# Fetch kepler.gl and the libraries it expects as browser globals from the npm registry (no CDN),
# pinned, into viz/vendor/. The maps citylake writes load them from a folder beside the HTML.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/vendor"
stamp="$dest/.versions"
versions="kepler.gl@3.2.6 react@18.3.1 react-dom@18.3.1 redux@4.2.1 react-redux@8.1.3 styled-components@6.1.19 maplibre-gl@4.7.1"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$versions" ]; then exit 0; fi
command -v npm >/dev/null || { echo "npm is needed to fetch kepler.gl from the npm registry: apt-get install npm" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"
for spec in $versions; do
  (cd "$work" && npm pack --silent "$spec" >/dev/null)
done
take() {  # take TARBALL-PREFIX PATH-IN-PACKAGE
  local tarball
  tarball="$(ls "$work"/"$1"-[0-9]*.tgz)"
  tar -xzf "$tarball" -C "$work" "package/$2"
  cp "$work/package/$2" "$dest/"
  rm -rf "$work/package"
}
take kepler.gl umd/keplergl.min.js
take kepler.gl umd/keplergl.min.css
take react umd/react.production.min.js
take react-dom umd/react-dom.production.min.js
take redux dist/redux.min.js
take react-redux dist/react-redux.min.js
take styled-components dist/styled-components.min.js
take maplibre-gl dist/maplibre-gl.js
take maplibre-gl dist/maplibre-gl.css
echo "$versions" > "$stamp"
echo "kepler.gl assets in $dest"
