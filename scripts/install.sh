#!/usr/bin/env bash
# Builds difused and difuse-mount into PREFIX/bin (default /usr/local) and
# installs the mount helper /sbin/mount.fuse.difuse, so that
# `mount -t fuse.difuse` and /etc/fstab lines work. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
prefix=${PREFIX:-/usr/local}
scripts/setup.sh
go build -o "$prefix/bin/" ./cmd/difused ./cmd/difuse-mount
ln -sf "$prefix/bin/difuse-mount" /sbin/mount.fuse.difuse
echo "installed $prefix/bin/difused, $prefix/bin/difuse-mount and /sbin/mount.fuse.difuse"
