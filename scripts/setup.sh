#!/usr/bin/env bash
# Installs what building and testing difuse needs on a fresh Debian machine:
# the Debian packages (fuse3 for mounts, rsync for the mount tests, flatbuffers-compiler for
# scripts/gen.sh) and the Go modules. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then
  scripts/apt-install.sh fuse3 flatbuffers-compiler rsync iproute2
else
  echo "setup: not root and no sudo: skipping Debian packages (fuse3, flatbuffers-compiler, rsync)" >&2
fi
go mod download
