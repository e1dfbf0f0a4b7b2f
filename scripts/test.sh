#!/usr/bin/env bash
# The project's test command: sets up the machine, checks formatting, vet and
# generated code, then runs every test with the race detector. Exits non-zero
# when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh
source scripts/env.sh # GOWORK and GOFLAGS: the patched bazil.org/fuse
# The status page's test loads it in a real browser, and keeps screenshots.
scripts/apt-install.sh chromium
export DIFUSE_ARTIFACTS="$PWD/artifacts"

echo "== no large files tracked"
# A tracked file over 1 MiB is a mistake (a built binary, a data dump) unless
# it is named in scripts/large-files.txt, one path a line.
large=$(git ls-files -z | xargs -0 -r stat -c '%s %n' -- 2>/dev/null \
  | awk '$1 > 1048576 { $1=""; sub(/^ /, ""); print }' \
  | grep -vxF -f <(grep -v '^#' scripts/large-files.txt) || true)
if [ -n "$large" ]; then
  echo "files over 1 MiB are tracked and not listed in scripts/large-files.txt:"; echo "$large"; exit 1
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt: these files need formatting:"; echo "$unformatted"; exit 1
fi

echo "== go vet, and a plain build without the patched bazil.org/fuse"
go vet ./...
GOWORK=off GOFLAGS= go build ./...

echo "== go.mod is tidy"
cp go.mod /tmp/difuse-go.mod.$$; cp go.sum /tmp/difuse-go.sum.$$
GOWORK=off go mod tidy
if ! cmp -s go.mod /tmp/difuse-go.mod.$$ || ! cmp -s go.sum /tmp/difuse-go.sum.$$; then
  git diff -- go.mod go.sum
  cp /tmp/difuse-go.mod.$$ go.mod; cp /tmp/difuse-go.sum.$$ go.sum
  rm -f /tmp/difuse-go.mod.$$ /tmp/difuse-go.sum.$$
  echo "go.mod or go.sum is not tidy: run go mod tidy"; exit 1
fi
rm -f /tmp/difuse-go.mod.$$ /tmp/difuse-go.sum.$$

echo "== generated code is current"
scripts/gen.sh
if [ -n "$(git status --porcelain -- wire/fb)" ]; then
  git status --short -- wire/fb
  echo "wire/fb differs from what scripts/gen.sh generates: run it and commit"; exit 1
fi

echo "== imports point down, and the mount's packages link no database"
scripts/imports.sh -check
if go list -deps ./client ./inode ./fsnode | grep -q 'dgraph-io/badger'; then
  go list -deps ./client ./inode ./fsnode | grep 'dgraph-io/badger'
  echo "client, inode or fsnode links Badger: only node and the commands may import store/badgerdb"; exit 1
fi

echo "== tests with -race (-short: the deterministic simulations run smaller), all but the Jepsen harness"
go test -race -short -count=1 -timeout 30m $(go list ./... | grep -v /jepsen)

echo "== ring simulations, transaction-log fault schedules and 64 MiB block tests at full size, without -race"
go test -count=1 -timeout 30m ./ring/ ./txlog/ ./blockstore/

echo "== the mount of a 3-process cluster at full size (and the stress workload, 4 × 2,000 operations): Go's whole src/, 10,000 files in a directory, 1 GiB; then healing: 2 nodes joining 3 that hold 2,000 files, a node killed for good, anti-entropy, a graceful leave; garbage collection of 1 GiB"
go test -count=1 -timeout 40m -run 'TestClusterMount|TestStress|TestPOSIXMount' ./cmd/difuse-mount/
go test -count=1 -timeout 20m -run 'TestJoinRebalance|TestKillForGood|TestAntiEntropy|TestGracefulLeave|TestGCFreesDeletedData' ./cmd/difused/

echo "== the Jepsen-style harness alone (it runs 5 nodes and 2 mounts): a three-minute seeded schedule with power loss, a power cut and changes of membership; the planted read bug; the planted ballot bug (up to five one-minute schedules)"
go test -short -count=1 -timeout 30m ./internal/jepsen/

echo "== done in $(( $(date +%s) - start ))s"
