#!/usr/bin/env bash
# Builds the commands into bin/ with the project's patch of bazil.org/fuse
# (scripts/fusepatch.sh; a plain `go build` leaves out what it adds).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mkdir -p bin
go build -buildvcs=auto -o bin/ ./cmd/...
