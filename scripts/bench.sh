#!/usr/bin/env bash
# Benchmarks the filesystem on (a) the local disk, (b) go-fuse's loopback
# over the local disk with the kernel's FUSE passthrough off (internal/loopback:
# the ceiling of a Go FUSE filesystem here) and (c) difuse, through a FUSE
# mount of a 3-node cluster on this machine (N = 3, default levels), in the
# same run. Every workload runs RUNS times on each; one table gives the
# medians and the ratios c/a and c/b (above 1: difuse is faster). Run as
# root: it mounts, and drops the page cache before the cold workloads (the
# FUSE mounts are also remounted, so that their own caches are cold too).
#
# Usage: scripts/bench.sh [-r RUNS] [-s SIZE_MIB] [-p PROFILE_DIR]
#   -r RUNS      runs of each workload (default 3)
#   -s SIZE_MIB  size of the sequential file (default 1024)
#   -p DIR       keep CPU and allocation profiles of difuse's nodes and
#                mount under each workload of the first run in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/benchlib.sh
runs=3 size_mib=1024 profdir=""
while getopts r:s:p: opt; do
  case $opt in
    r) runs=$OPTARG ;;
    s) size_mib=$OPTARG ;;
    p) profdir=$(realpath -m "$OPTARG") ;;
    *) sed -n '2,15p' "$0" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (it mounts FUSE and drops caches)" >&2; exit 2; }
scripts/apt-install.sh fuse3 bc curl python3
files=5000       # the directory workloads
tree_files=5000  # the tree workloads: about 150 MB in this many files
tree_mb=150

work=$(mktemp -d /var/tmp/difuse-bench.XXXXXX)
: > "$work/ops"
nodes=() mountpid="" lbpid=""
cleanup() {
  for m in "$work/mnt" "$work/lb"; do mountpoint -q "$m" 2>/dev/null && fusermount3 -uz "$m"; done
  for p in $mountpid $lbpid "${nodes[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
go build -buildvcs=auto -o "$work/bin/" ./cmd/difused ./cmd/difuse-mount ./internal/loopback

bench_cluster
mkdir -p "$work/mnt" "$work/lb" "$work/lbsrc" "$work/local"

# mount_lb (re)starts the loopback mount and waits for it.
mount_lb() {
  if [ -n "$lbpid" ]; then kill "$lbpid"; wait "$lbpid" || true; fi
  "$work/bin/loopback" "$work/lb" "$work/lbsrc" >"$work/lb.log" 2>&1 &
  lbpid=$!
  for _ in $(seq 300); do grep -q '^mounted' "$work/lb.log" && return; sleep 0.1; done
  echo "bench: the loopback mount did not come up" >&2; exit 1
}
mount_difuse
mount_lb

now() { date +%s.%N; }
# cold TARGET: empties the page cache and, for a FUSE target, the mount's
# own caches by mounting it again.
cold() {
  sync
  case $1 in difuse) mount_difuse ;; loopback) mount_lb ;; esac
  echo 3 > /proc/sys/vm/drop_caches
}
# held: the block bytes the three nodes hold together.
held() {
  local sum=0 v
  for i in 0 1 2; do
    v=$(ncurl "http://127.0.0.1:$((9154 + i))/metrics" | awk '$1 == "difuse_block_bytes_held" {printf "%d", $2}')
    sum=$((sum + v))
  done
  echo "$sum"
}
# profile_start NAME / profile_stop: CPU profiles of the nodes and the mount
# over the 60 s from a workload's start (a shorter workload waits the rest
# out; a longer one has its first minute profiled), then their allocation
# profiles.
profs=()
profile_start() {
  [ -n "$profdir" ] && [ "$run" -eq 1 ] && [ "$target" = difuse ] || return 0
  mkdir -p "$profdir"
  prof_name=$1 profs=()
  for a in 127.0.0.1:9154 127.0.0.1:9155 127.0.0.1:9156 127.0.0.1:9160; do
    ncurl -o "$profdir/$prof_name-cpu-${a##*:}.pprof" "http://$a/debug/pprof/profile?seconds=60" &
    profs+=($!)
  done
}
profile_stop() {
  [ ${#profs[@]} -gt 0 ] || return 0
  wait "${profs[@]}" || true
  for a in 127.0.0.1:9154 127.0.0.1:9155 127.0.0.1:9156 127.0.0.1:9160; do
    ncurl -o "$profdir/$prof_name-allocs-${a##*:}.pprof" "http://$a/debug/pprof/allocs" || true
  done
  profs=()
}
# fuse_ops: the mount's FUSE operation counts and seconds so far, as lines
# "op count seconds".
fuse_ops() {
  ncurl http://127.0.0.1:9160/metrics | awk '
    /^difuse_fuse_operation_duration_seconds_count/ { split($1, a, "\""); n[a[2]] = $2 }
    /^difuse_fuse_operation_duration_seconds_sum/ { split($1, a, "\""); s[a[2]] = $2 }
    END { for (op in n) print op, n[op], s[op] }'
}
# timed WORKLOAD CMD...: runs CMD, then sync, and records its seconds; on
# difuse's first run, also the FUSE operations it made and their seconds.
timed() {
  local w=$1 t ops="" count=""; shift
  profile_start "$w"
  # A mount just started has no operations yet: ops is then empty.
  [ "$target" = difuse ] && [ "$run" -eq 1 ] && count=1 && ops=$(fuse_ops)
  t=$(now)
  "$@"
  sync
  echo "$target $w $run $(echo "$(now) - $t" | bc)" >> "$work/results"
  if [ -n "$count" ]; then
    { echo "$ops" | sed 's/^/before /'; fuse_ops | sed 's/^/after /'; } |
      awk -v w="$w" '$1 == "before" { n[$2] -= $3; s[$2] -= $4; next } { n[$2] += $3; s[$2] += $4 }
        END { for (op in n) if (n[op] > 0) print w, op, n[op], s[op] }' >> "$work/ops"
  fi
  profile_stop
}

mkfiles() {  # mkfiles DIR: 5,000 files of 4 KiB, one process
  python3 - "$1" "$files" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
data = os.urandom(4096)
for i in range(n):
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(data)
PY
}
tarcopy() { mkdir "$2" && tar -C "$1" -cf - . | tar -C "$2" -xf -; }

# The inputs: a random file, and a tree of about 150 MB in 5,000 files of
# log-normal sizes in 100 directories.
head -c "$((size_mib << 20))" /dev/urandom > "$work/random"
python3 - "$work/tree" "$tree_files" "$tree_mb" <<'PY'
import os, random, sys
root, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(11)
sizes = [rng.lognormvariate(9, 1.6) for _ in range(n)]
scale = mb * 1e6 / sum(sizes)
for i, s in enumerate(sizes):
    d = os.path.join(root, "d%02d" % (i % 10), "e%02d" % (i // 10 % 10))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(os.urandom(max(1, int(s * scale))))
PY
tree_bytes=$(du -sb --apparent-size "$work/tree" | cut -f1)
echo "bench: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $size_mib MiB file, $files files of 4 KiB, a tree of $tree_bytes bytes in $tree_files files; $runs runs" >&2

for run in $(seq "$runs"); do
  for target in local loopback difuse; do
    case $target in local) dir=$work/local ;; loopback) dir=$work/lb ;; difuse) dir=$work/mnt ;; esac
    echo "bench: run $run, $target" >&2
    timed write cp "$work/random" "$dir/big"
    cold "$target"
    timed read cat "$dir/big" > /dev/null
    rm -f "$dir/big"
    timed create mkfiles "$dir/many"
    cold "$target"
    timed ls ls -l "$dir/many" > /dev/null
    timed rm rm -rf "$dir/many"
    timed cpa cp -a "$work/tree" "$dir/t1"
    timed tar tarcopy "$work/tree" "$dir/t2"
    [ "$target" = difuse ] && before=$(held)
    timed cpa2 cp -a "$work/tree" "$dir/t3"
    if [ "$target" = difuse ]; then
      echo "difuse newbytes $run $(( $(held) - before ))" >> "$work/results"
    fi
    rm -rf "$dir/t1" "$dir/t2" "$dir/t3"
    sync
  done
done

# Idle memory, after the workloads and a minute of rest: the resident set,
# and its anonymous part (the rest is file pages Badger maps, which the
# kernel takes back as it needs).
sleep 60
rss() { awk -v f="$2" '$1 == f":" {print $2}' "/proc/$1/status"; }
for f in VmRSS RssAnon; do
  most=0
  for p in "${nodes[@]}"; do most=$(( $(rss "$p" $f) > most ? $(rss "$p" $f) : most )); done
  echo "difuse node$f 1 $most" >> "$work/results"
  echo "difuse mount$f 1 $(rss "$mountpid" $f)" >> "$work/results"
  echo "loopback mount$f 1 $(rss "$lbpid" $f)" >> "$work/results"
done

python3 - "$work/results" "$size_mib" "$files" "$tree_bytes" <<'PY'
import statistics, sys
path, size_mib, files, tree = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
res = {}
for line in open(path):
    target, w, _, v = line.split()
    res.setdefault((target, w), []).append(float(v))
med = {k: statistics.median(v) for k, v in res.items()}
rows = [  # workload, key, how a figure comes from the seconds, unit, target
    (f"sequential write {size_mib} MiB (cp, sync)", "write", lambda s: size_mib / s, "MiB/s", ">= 300 MiB/s"),
    ("sequential read, cold", "read", lambda s: size_mib / s, "MiB/s", ">= 600 MiB/s"),
    (f"create {files} x 4 KiB, one dir", "create", lambda s: files / s, "files/s", ">= 1,500 files/s"),
    ("ls -l of them, cold", "ls", lambda s: s, "s", "<= 0.5 s"),
    ("rm -rf of them", "rm", lambda s: files / s, "files/s", ">= 2,000 files/s"),
    (f"cp -a of the tree ({tree / 1e6:.0f} MB)", "cpa", lambda s: s, "s", "<= 2x loopback"),
    ("tar c \\| tar x of the tree", "tar", lambda s: s, "s", "<= 2x loopback"),
    ("second cp -a of the tree", "cpa2", lambda s: s, "s", ""),
]
def fmt(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"
print(f"| workload | local disk (a) | loopback (b) | difuse (c) | c/a | c/b | target |")
print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
for name, key, fig, unit, target in rows:
    a, b, c = (med.get((t, key)) for t in ("local", "loopback", "difuse"))
    fa, fb, fc = fig(a), fig(b), fig(c)
    # A ratio is of speeds: difuse's speed over the other's.
    ra, rb = (fc / fa, fc / fb) if unit != "s" else (a / c, b / c)
    print(f"| {name} | {fmt(fa)} {unit} | {fmt(fb)} {unit} | {fmt(fc)} {unit} | {ra:.2f} | {rb:.2f} | {target} |")
nb = med[("difuse", "newbytes")]
print(f"| new block bytes stored by the second cp -a | | | {100 * nb / (3 * tree):.2f}% of 3 x the tree | | | <= 2% |")
def mib(t, k):
    return f"{med[(t, k)] / 1024:.0f}"
print(f"| idle RSS (anonymous): largest node / mount | | {mib('loopback', 'mountVmRSS')} ({mib('loopback', 'mountRssAnon')}) MiB"
      f" | {mib('difuse', 'nodeVmRSS')} ({mib('difuse', 'nodeRssAnon')}) / {mib('difuse', 'mountVmRSS')} ({mib('difuse', 'mountRssAnon')}) MiB | | | <= 150 MiB each |")
print("(medians; c/a and c/b are difuse's speed over the local disk's and the loopback's: 1 is as fast)")
PY

# Where the mount's time went in the first run: per workload, the FUSE
# operations that took most, with their count and mean latency.
echo
echo "| workload | FUSE operations of difuse's mount, first run: count × mean = total |"
echo "| --- | --- |"
sort -k1,1 -k4,4gr "$work/ops" | awk '
  $1 != w { if (w != "") print "| " w " | " line " |"; w = $1; line = ""; k = 0 }
  k++ < 6 { line = line (line == "" ? "" : "; ") sprintf("%s %d × %.2f ms = %.1f s", $2, $3, 1000 * $4 / $3, $4) }
  END { if (w != "") print "| " w " | " line " |" }'
