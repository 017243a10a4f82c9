#!/usr/bin/env bash
# Runs every native Go fuzz target in the module for FUZZTIME each
# (default 20s), one after the other; stops at the first failure, whose
# input Go writes under the package's testdata/fuzz/<Target>/ (check it
# in as a seed once fixed). Plain `go test` runs the seeds only.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-20s}
for pkg in $($GO list ./...); do
  dir=$($GO list -f '{{.Dir}}' "$pkg")
  grep -l '^func Fuzz' "$dir"/*_test.go >/dev/null 2>&1 || continue
  for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
    echo "fuzz: $pkg $target ($FUZZTIME)"
    $GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"
  done
done
