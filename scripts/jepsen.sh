#!/usr/bin/env bash
# Runs the Jepsen-style harness against a 5-node difused cluster in network
# namespaces, with two mounts, for 30 minutes by default, and prints its
# summary line. Run as root. Extra arguments go to difuse-jepsen
# (-duration, -seed, -nodes, -clients, -keys, -key-life, -hold, -quiet,
# -dir).
#
# Usage: scripts/jepsen.sh [-duration 30m] [-seed N] ...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
[ "$(id -u)" -eq 0 ] || { echo "jepsen: run as root (it makes network namespaces and mounts)" >&2; exit 2; }
scripts/apt-install.sh fuse3 iproute2
bin=$(mktemp -d /tmp/difuse-jepsen-bin.XXXXXX)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/" ./cmd/difused ./cmd/difuse-mount ./cmd/difuse-jepsen
"$bin/difuse-jepsen" -bin "$bin" "$@"
