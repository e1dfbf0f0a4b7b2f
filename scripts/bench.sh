#!/usr/bin/env bash
# Benchmarks the filesystem through a FUSE mount of a 3-node cluster (N = 3
# replicas, default levels) against the local disk, in the same run, and
# prints one table with both and their ratio. Run as root (it mounts and
# drops the page cache between write and read).
#
# Usage: scripts/bench.sh [SIZE_MIB, default 1024] [FILES, default 10000]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
size_mib=${1:-1024}
files=${2:-10000}
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (it mounts FUSE and drops caches)" >&2; exit 2; }
scripts/apt-install.sh fuse3

work=$(mktemp -d /var/tmp/difuse-bench.XXXXXX)
pids=()
mnt="$work/mnt"
cleanup() {
  mountpoint -q "$mnt" 2>/dev/null && fusermount3 -uz "$mnt"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
go build -buildvcs=auto -o "$work/bin/" ./cmd/...

# A 3-node cluster on its own ports, and a mount using it.
for i in 0 1 2; do
  join=(); [ "$i" -gt 0 ] && join=(-j 127.0.0.1:4654)
  "$work/bin/difused" -b "127.0.0.1:$((4654 + i))" -a "127.0.0.1:$((9154 + i))" -d "$work/n$i" "${join[@]}" 2>"$work/n$i.log" &
  pids+=($!)
  for _ in $(seq 300); do grep -q 'msg="node serving"' "$work/n$i.log" && break; sleep 0.1; done
done
for _ in $(seq 300); do  # until every node places keys on 3 hosts
  ok=1
  for i in 0 1 2; do
    n=$(curl -fsS "http://127.0.0.1:$((9154 + i))/v1/lookup?key=probe&n=3" | grep -c '"addr"' || true)
    [ "$n" -eq 3 ] || ok=0
  done
  [ "$ok" -eq 1 ] && break
  sleep 0.1
done
mkdir -p "$mnt" "$work/local"
"$work/bin/difuse-mount" -j 127.0.0.1:4654 "$mnt" 2>"$work/mount.log" &
pids+=($!)
for _ in $(seq 300); do grep -q 'msg=mounted' "$work/mount.log" && break; sleep 0.1; done

now() { date +%s.%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; sleep 2; }  # also outlasts the mount's 1 s caches
declare -A result

# run NAME DIR: runs each workload in DIR and records its seconds.
run() {
  local name=$1 dir=$2 t
  t=$(now); cp "$work/random" "$dir/big"; sync; result[$name,write]=$(echo "$(now) - $t" | bc)
  drop
  t=$(now); cat "$dir/big" > /dev/null; result[$name,read]=$(echo "$(now) - $t" | bc)
  rm -f "$dir/big"
  t=$(now)
  python3 - "$dir/many" "$files" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
data = os.urandom(4096)
for i in range(n):
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(data)
PY
  sync; result[$name,create]=$(echo "$(now) - $t" | bc)
  drop
  t=$(now); ls -l "$dir/many" > /dev/null; result[$name,ls]=$(echo "$(now) - $t" | bc)
  t=$(now); rm -rf "$dir/many"; result[$name,rm]=$(echo "$(now) - $t" | bc)
  t=$(now); cp -a "$GOROOT_SRC" "$dir/src"; sync; result[$name,cpa]=$(echo "$(now) - $t" | bc)
  t=$(now); diff -r "$GOROOT_SRC" "$dir/src" > /dev/null; result[$name,diff]=$(echo "$(now) - $t" | bc)
}

scripts/apt-install.sh bc curl
GOROOT_SRC="$(go env GOROOT)/src"
src_mib=$(du -sm "$GOROOT_SRC" | cut -f1)
src_files=$(find "$GOROOT_SRC" -type f | wc -l)
echo "bench: $size_mib MiB random file, $files files of 4 KiB, Go src ($src_mib MiB, $src_files files)" >&2
head -c "$((size_mib << 20))" /dev/urandom > "$work/random"
run local "$work/local"
run difuse "$mnt"

printf '\n%-36s %12s %12s %8s\n' "workload" "local disk" "difuse" "ratio"
row() {  # row LABEL KEY UNIT AMOUNT: prints rates (AMOUNT per second) or seconds (AMOUNT empty)
  local l=${result[local,$2]} d=${result[difuse,$2]}
  if [ -n "$4" ]; then
    printf '%-36s %12s %12s %8s\n' "$1" "$(echo "scale=1; $4 / $l" | bc) $3" "$(echo "scale=1; $4 / $d" | bc) $3" "$(echo "scale=3; $l / $d" | bc)"
  else
    printf '%-36s %12s %12s %8s\n' "$1" "$(printf %.2f "$l") s" "$(printf %.2f "$d") s" "$(echo "scale=3; $l / $d" | bc)"
  fi
}
row "sequential write ($size_mib MiB, cp+sync)" write MiB/s "$size_mib"
row "sequential read (cold)" read MiB/s "$size_mib"
row "create $files x 4 KiB" create files/s "$files"
row "ls -l of them (cold)" ls "" ""
row "rm -rf of them" rm files/s "$files"
row "cp -a Go src" cpa "" ""
row "diff -r Go src" diff "" ""
echo "(ratio: difuse speed / local speed; 1 is as fast as the local disk)"
