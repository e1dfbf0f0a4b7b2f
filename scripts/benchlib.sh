# Sourced by the benchmarks, which set work (a scratch directory holding
# bin/ with difused and difuse-mount), nodes=() and mountpid="".

# ncurl calls a node's HTTP interface (or the mount's) with the admin token
# the first node wrote.
ncurl() { curl -fsS -H "Authorization: Bearer $(cat "$work/n0/admin-token")" "$@"; }

# bench_cluster starts three nodes on this machine (gRPC 127.0.0.1:4654-4656,
# HTTP :9154-9156, data in $work/n0-n2, logs beside), adds their pids to
# nodes, and waits until every node places keys on three hosts.
bench_cluster() {
  for i in 0 1 2; do
    join=(); [ "$i" -gt 0 ] && join=(-j 127.0.0.1:4654 -token-file "$work/n0/join-token")
    "$work/bin/difused" -b "127.0.0.1:$((4654 + i))" -a "127.0.0.1:$((9154 + i))" -d "$work/n$i" "${join[@]}" 2>"$work/n$i.log" &
    nodes+=($!)
    for _ in $(seq 300); do grep -q 'msg="node serving"' "$work/n$i.log" && break; sleep 0.1; done
  done
  for _ in $(seq 300); do
    ok=1
    for i in 0 1 2; do
      n=$(ncurl "http://127.0.0.1:$((9154 + i))/v1/lookup?key=probe&n=3" | grep -c '"addr"' || true)
      [ "$n" -eq 3 ] || ok=0
    done
    [ "$ok" -eq 1 ] && break
    sleep 0.1
  done
}

# mount_difuse [FLAGS...] (re)starts the mount of the cluster at $work/mnt,
# with its metrics at 127.0.0.1:9160 and FLAGS, sets mountpid, and waits
# until it is mounted.
mount_difuse() {
  if [ -n "$mountpid" ]; then kill "$mountpid"; wait "$mountpid" || true; fi
  mkdir -p "$work/mnt"
  "$work/bin/difuse-mount" -j 127.0.0.1:4654 -token-file "$work/n0/join-token" -d "$work/mount-id" -metrics 127.0.0.1:9160 "$@" "$work/mnt" 2>"$work/mount.log" &
  mountpid=$!
  for _ in $(seq 300); do grep -q 'msg=mounted' "$work/mount.log" && return; sleep 0.1; done
  echo "bench: the difuse mount did not come up" >&2; exit 1
}

# written prints the block bytes clients stored through the nodes, summed
# (what mounts sent as blocks, before replication).
written() {
  local total=0 v
  for i in 0 1 2; do
    v=$(ncurl "http://127.0.0.1:$((9154 + i))/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["blocks"]["written_bytes"])')
    total=$((total + v))
  done
  echo "$total"
}

# peak_rss PID prints the process's peak resident memory in MiB.
peak_rss() { awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
