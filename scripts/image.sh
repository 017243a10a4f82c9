#!/usr/bin/env bash
# Builds the weft image (Dockerfile) and the compose example's app image
# (examples/compose/app/Dockerfile), both FROM scratch: the binaries are
# built here, on the host, CGO off, and handed to `docker build` in a
# context holding only what the image contains. No registry is contacted.
#
#   scripts/image.sh [WEFT_BIN]
#   env: VERSION (tag, default: git describe), IMAGE (default weft:$VERSION),
#        APP_IMAGE (default weft-example-app:$VERSION), MAX_MB (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
IMAGE=${IMAGE:-weft:$VERSION}
APP_IMAGE=${APP_IMAGE:-weft-example-app:$VERSION}
MAX_MB=${MAX_MB:-30}
BIN=${1:-bin/weft}
GO=${GO:-go}

certs=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$certs" ]; then
  echo "image: $certs missing: run scripts/deps.sh (installs ca-certificates)" >&2
  exit 1
fi
if [ ! -x "$BIN" ]; then
  echo "image: $BIN missing: run make build first" >&2
  exit 1
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/weft-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT

# What both images share: one non-root user, no shell, no home beyond /data.
mkdir -p "$ctx/weft/etc/ssl/certs" "$ctx/weft/data" "$ctx/app/etc"
printf 'root:x:0:0:root:/:/sbin/nologin\nweft:x:65532:65532:weft:/data:/sbin/nologin\n' >"$ctx/weft/etc/passwd"
printf 'root:x:0:\nweft:x:65532:\n' >"$ctx/weft/etc/group"
cp "$ctx/weft/etc/passwd" "$ctx/weft/etc/group" "$ctx/app/etc/"
cp -L "$certs" "$ctx/weft/etc/ssl/certs/ca-certificates.crt"
cp "$BIN" "$ctx/weft/weft"
CGO_ENABLED=0 "$GO" build -trimpath -ldflags '-s -w' -o "$ctx/app/app" ./examples/compose/app

build() { # docker build, its output shown only when it fails
  if ! docker build -f "$1" -t "$2" "$3" >"$ctx/build.log" 2>&1; then
    cat "$ctx/build.log" >&2
    echo "image: docker build of $2 failed" >&2
    exit 1
  fi
}
build Dockerfile "$IMAGE" "$ctx/weft"
build examples/compose/app/Dockerfile "$APP_IMAGE" "$ctx/app"

size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "image: $IMAGE $(awk -v s="$size" 'BEGIN{printf "%.1f MB (%d bytes)", s/1e6, s}'), $APP_IMAGE $(docker image inspect -f '{{.Size}}' "$APP_IMAGE" | awk '{printf "%.1f MB", $1/1e6}')"
if [ "$size" -ge $((MAX_MB * 1000000)) ]; then
  echo "image: $IMAGE is $size bytes, over the ${MAX_MB} MB budget" >&2
  exit 1
fi
