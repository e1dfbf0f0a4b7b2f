#!/usr/bin/env bash
# Benchmarks large files changed in place on the mount of a 3-node cluster
# on this machine, beside the local disk, in one run:
#  - a 4 KiB write at offset 4 KiB into a dense file of 64 MiB, 1 GiB and
#    4 GiB, then close: the time and the block bytes sent;
#  - 1,000 random 4 KiB writes into a 16 GiB sparse file, each closed on its
#    own (one flush each): the time per write and the bytes sent per write;
#  - a sequential write of 4 GiB.
# Each row gives the local disk's time, the mount's, and their ratio. At the
# end it prints the mount's peak resident memory against its bound
# (-memory-mib, default 256). Run as root: it mounts FUSE.
#
# Usage: scripts/bench-bigfile.sh [-m MEMORY_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/benchlib.sh
memory=256
while getopts m: opt; do
  case $opt in
    m) memory=$OPTARG ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench-bigfile: run as root (it mounts FUSE)" >&2; exit 2; }
scripts/apt-install.sh fuse3 curl python3
work=$(mktemp -d /var/tmp/difuse-bigfile.XXXXXX)
nodes=() mountpid=""
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && fusermount3 -uz "$work/mnt"
  for p in $mountpid "${nodes[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
go build -buildvcs=auto -o "$work/bin/" ./cmd/difused ./cmd/difuse-mount
bench_cluster
mount_difuse -memory-mib "$memory"
mkdir -p "$work/local"

now() { date +%s.%N; }
# seconds START prints the seconds since START.
seconds() { echo "$(now) - $1" | bc -l; }

printf '%-44s %10s %10s %8s %14s\n' workload "local s" "difuse s" ratio "bytes sent"
row() { # NAME LOCAL DIFUSE BYTES
  printf '%-44s %10.3f %10.3f %8.1f %14s\n' "$1" "$2" "$3" "$(echo "$3 / $2" | bc -l)" "$4"
}

# A 4 KiB change near the start of dense files.
head -c $((64 << 20)) /dev/urandom > "$work/random"
for size_mib in 64 1024 4096; do
  for dir in "$work/local" "$work/mnt"; do
    for _ in $(seq $((size_mib / 64))); do cat "$work/random"; done > "$dir/dense"
  done
  sync
  for dir in "$work/local" "$work/mnt"; do
    before=$(written) t0=$(now)
    dd if=/dev/urandom of="$dir/dense" bs=4096 count=1 seek=1 conv=notrunc status=none
    t=$(seconds "$t0")
    if [ "$dir" = "$work/local" ]; then lt=$t; else row "4 KiB at 4 KiB of a ${size_mib} MiB file, close" "$lt" "$t" "$(( $(written) - before ))"; fi
  done
  rm -f "$work/local/dense" "$work/mnt/dense"
done

# 1,000 random 4 KiB writes into a 16 GiB sparse file.
offsets=$(python3 -c 'import random; random.seed(1); print(" ".join(str(random.randrange(4 << 20)) for _ in range(1000)))')
for dir in "$work/local" "$work/mnt"; do
  truncate -s 16G "$dir/sparse"
  before=$(written) t0=$(now)
  for o in $offsets; do
    dd if="$work/random" of="$dir/sparse" bs=4096 count=1 skip=$((o % 16384)) seek="$o" conv=notrunc status=none
  done
  t=$(seconds "$t0")
  if [ "$dir" = "$work/local" ]; then lt=$t; else row "1,000 × 4 KiB into 16 GiB sparse, each closed" "$lt" "$t" "$(( ($(written) - before) / 1000 )) a write"; fi
done
rm -f "$work/local/sparse" "$work/mnt/sparse"

# A sequential 4 GiB write.
for dir in "$work/local" "$work/mnt"; do
  before=$(written) t0=$(now)
  for _ in $(seq 64); do cat "$work/random"; done > "$dir/seq"
  sync
  t=$(seconds "$t0")
  if [ "$dir" = "$work/local" ]; then lt=$t; else row "sequential write of 4 GiB" "$lt" "$t" "$(( $(written) - before ))"; fi
done

echo
echo "the mount's peak resident memory: $(peak_rss "$mountpid") MiB, with -memory-mib $memory"
