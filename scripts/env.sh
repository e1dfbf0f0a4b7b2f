# Sourced by the other scripts: puts the Go toolchain on PATH.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { echo "go not found: install Go 1.26 first" >&2; exit 1; }
# Build with the project's patch of bazil.org/fuse (scripts/fusepatch.sh).
scripts/fusepatch.sh
export GOWORK="$PWD/.build/go.work" GOFLAGS="-tags=difuse_fusepatch"
