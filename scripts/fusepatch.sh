#!/usr/bin/env bash
# Patches bazil.org/fuse for the build, without touching the module cache:
# copies the module into .build/fuse/module, applies
# scripts/fuse/bazil-fuse.patch there, and writes .build/go.work, a
# workspace of the project that replaces the module with the patched copy.
# scripts/env.sh runs it and sets GOWORK to that file and the build tag
# difuse_fusepatch, which turns on the code that needs the patch
# (docs/filesystem.md says what each hunk does). A plain `go build ./...`
# builds with neither.
set -euo pipefail
cd "$(dirname "$0")/.."
patch=$PWD/scripts/fuse/bazil-fuse.patch
out=$PWD/.build/fuse/module
version=$(GOWORK=off go list -m -f '{{.Version}}' bazil.org/fuse)
GOWORK=off go mod download bazil.org/fuse
mod=$(GOWORK=off go list -m -f '{{.Dir}}' bazil.org/fuse)
[ -d "$mod" ] || { echo "fusepatch: bazil.org/fuse is not in the module cache" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -r "$mod" "$out"
chmod -R u+w "$out"
(cd "$out" && git apply -p1 "$patch")
cat > .build/go.work <<WORK
go $(GOWORK=off go list -m -f '{{.GoVersion}}')

use ..

replace bazil.org/fuse $version => ./fuse/module
WORK
