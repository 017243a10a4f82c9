#!/usr/bin/env bash
# Builds Docker Compose v2 (the Compose Specification implementation,
# module github.com/docker/compose/v5) from the Go module proxy, once, into
# a cache outside the clone keyed by version, so the compose e2e test can
# run the example under it as well as under Debian's docker-compose 1.29.
# Prints the binary's path. A second run costs nothing.
set -euo pipefail

VERSION=${COMPOSE_V2_VERSION:-v5.6.0}
GO=${GO:-go}
cache=${WEFT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weft-tools}
out="$cache/compose-$VERSION/docker-compose"
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
dir=$("$GO" mod download -json "github.com/docker/compose/v5@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "compose-v2: go mod download github.com/docker/compose/v5@$VERSION gave no source" >&2; exit 1; }
src=$(mktemp -d "${TMPDIR:-/tmp}/compose-src.XXXXXX")
trap 'chmod -R u+w "$src" 2>/dev/null; rm -rf "$src"' EXIT
# `go install pkg@version` refuses the module (its go.mod has exclude
# directives), so build it as the main module from a copy of its source.
cp -r "$dir/." "$src"
chmod -R u+w "$src"
echo "compose-v2: building docker compose $VERSION (once; a few minutes)" >&2
(cd "$src" && CGO_ENABLED=0 "$GO" build -trimpath \
  -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$VERSION" -o "$out.tmp" ./cmd)
mv "$out.tmp" "$out"
echo "$out"
