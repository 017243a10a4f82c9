#!/usr/bin/env bash
# Builds the real kube-apiserver that Weft's Kubernetes tests run against,
# from the pinned wrapper module in scripts/kube-apiserver, into a cache
# folder outside the clone keyed by version, only when it is missing. The
# cold build takes several minutes on a 2-core machine; a warm run costs
# nothing. Prints the binary's path.
#
#   WEFT_TOOLS_DIR  cache folder (default ${XDG_CACHE_HOME:-$HOME/.cache}/weft-tools)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/kube-apiserver"
version="$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")"
[ -n "$version" ] || { echo "kube-tools: no k8s.io/kubernetes version in $mod/go.mod" >&2; exit 1; }

dir="${WEFT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/weft-tools}"
out="$dir/kube-apiserver-$version"
if [ -x "$out" ]; then echo "$out"; exit 0; fi

mkdir -p "$dir"
echo "kube-tools: building kube-apiserver $version into $out (minutes, once)" >&2
start=$(date +%s)
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$tmp" .)
mv "$tmp" "$out"
echo "kube-tools: built kube-apiserver $version in $(( $(date +%s) - start ))s" >&2
echo "$out"
