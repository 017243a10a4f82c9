#!/usr/bin/env bash
# Prints the path of h2spec (github.com/summerwind/h2spec), the HTTP/2
# conformance tester the hardening e2e tests run, building it from the Go
# module proxy into a cache folder outside the clone, keyed by version,
# only when it is missing. Safe to re-run.
set -euo pipefail

version=v2.2.1
cache="${WEFT_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/weft/tools}/h2spec-$version"
bin="$cache/h2spec"
if [ ! -x "$bin" ]; then
  echo "h2spec: building $version into $cache" >&2
  mkdir -p "$cache"
  # h2spec has no go.mod (+incompatible): its imports resolve to their
  # latest versions, outside this module's go.mod.
  (cd "$cache" && GOBIN="$cache" GOFLAGS=-mod=mod GO111MODULE=on go install "github.com/summerwind/h2spec/cmd/h2spec@$version+incompatible" >&2)
fi
echo "$bin"
