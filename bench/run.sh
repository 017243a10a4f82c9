#!/usr/bin/env bash
# The mesh benchmark (see bench/README.md): installs HAProxy and nginx when
# missing, builds weft (if bin/weft is absent) and meshbench, and runs every
# path on loopback. `make bench` builds bin/weft first and then runs this.
#
#   bash bench/run.sh                      # full run: 3 rounds, 500/1000/2000 req/s + max
#   bash bench/run.sh -rounds 1 -duration 2s -paths direct,haproxy
#
# Flags are meshbench's (bench/.bin/meshbench -h). Markdown goes to stdout,
# progress to stderr, JSON to bench/results/latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

if [ ! -x bin/weft ]; then
  echo "run.sh: bin/weft missing, building it (make build)" >&2
  make build >&2
fi

# Built, not `go run`: Ctrl-C must reach meshbench itself so that it stops
# every process it started.
go build -o bench/.bin/meshbench ./bench/cmd/meshbench

export MESHBENCH_COMMAND="bash bench/run.sh${*:+ $*}"
exec bench/.bin/meshbench "$@"
