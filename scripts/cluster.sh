#!/usr/bin/env bash
# Runs a local difuse cluster on loopback addresses.
#
#   scripts/cluster.sh up [N]   build difused and start N nodes (default 3)
#   scripts/cluster.sh status   print every node's status
#   scripts/cluster.sh down     stop the nodes (SIGTERM, by PID)
#
# Node i serves gRPC on 127.0.0.1:$((4624+i)) and HTTP on 127.0.0.1:$((9090+i))
# and keeps its data and log under .cluster/n$i (the previous run's log in
# log.prev). Nodes after the first join the first. Data survives down/up:
# restarted, the nodes rejoin their ring. Remove .cluster to start afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
state=.cluster

node_dirs() { ls -d "$state"/n* 2>/dev/null | sort -V; }

up() {
  local n=${1:-3}
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "cluster: N must be a positive number" >&2; exit 2; }
  mkdir -p "$state" bin
  scripts/build.sh
  for ((i = 0; i < n; i++)); do
    local dir="$state/n$i" grpc="127.0.0.1:$((4624 + i))" http="127.0.0.1:$((9090 + i))"
    mkdir -p "$dir"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "n$i already running (pid $(cat "$dir/pid"))"; continue
    fi
    local join=()
    # Nodes after the first join with the token the first wrote.
    [ "$i" -gt 0 ] && join=(-j 127.0.0.1:4624 -token-file "$state/n0/data/join-token")
    echo "$grpc" > "$dir/grpc"
    echo "$http" > "$dir/http"
    [ -f "$dir/log" ] && mv "$dir/log" "$dir/log.prev"
    nohup bin/difused -b "$grpc" -a "$http" -d "$dir/data" "${join[@]}" >"$dir/log" 2>&1 &
    echo $! > "$dir/pid"
    if [ "$i" -eq 0 ]; then
      for _ in $(seq 300); do [ -f "$dir/data/join-token" ] && break; sleep 0.1; done
    fi
  done
  # Wait until every node is a ring member (its lookups answer).
  for ((i = 0; i < n; i++)); do
    local dir="$state/n$i"
    for _ in $(seq 300); do
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || { echo "n$i failed to start:" >&2; tail -5 "$dir/log" >&2; exit 1; }
      grep -q 'msg="node serving"' "$dir/log" && break
      sleep 0.1
    done
    grep -q 'msg="node serving"' "$dir/log" || { echo "n$i did not join within 30 s; see $dir/log" >&2; exit 1; }
    echo "n$i up: gRPC $(cat "$dir/grpc"), http://$(cat "$dir/http")/ (pid $(cat "$dir/pid"), log $dir/log)"
  done
  wait_ring "$n"
}

# replicas prints the replica addresses node $1 (an HTTP address) gives for
# key $2.
replicas() {
  curl -fsS -H "Authorization: Bearer $(cat "$state/n0/data/admin-token")" "http://$1/v1/lookup?key=$2&n=3" 2>/dev/null | grep -o '"addr": "[^"]*"' | tr '\n' ' '
}

# wait_ring waits until the nodes' rings have settled: every node names the
# same replica sets, of min(3, N) hosts, for 64 probe keys. Until then a
# node may not know all the others yet.
wait_ring() {
  local n=$1 want=$(( $1 < 3 ? $1 : 3 ))
  scripts/apt-install.sh curl
  for _ in $(seq 150); do
    local ok=1
    for k in $(seq 0 63); do
      local first
      first=$(replicas 127.0.0.1:9090 "probe-$k")
      [ "$(echo "$first" | grep -o addr | wc -l)" -eq "$want" ] || { ok=0; break; }
      for ((i = 1; i < n; i++)); do
        [ "$(replicas "127.0.0.1:$((9090 + i))" "probe-$k")" = "$first" ] || { ok=0; break 2; }
      done
    done
    [ "$ok" -eq 1 ] && { echo "ring settled: every node names the same replica sets"; return; }
    sleep 0.1
  done
  echo "cluster: the ring has not settled after 15 s; it may still be forming (see the logs)" >&2
}

status() {
  for dir in $(node_dirs); do
    echo "== $(basename "$dir")"
    bin/difused status -d "$dir/data" -b "$(cat "$dir/grpc")" || true
  done
}

down() {
  for dir in $(node_dirs); do
    [ -f "$dir/pid" ] || continue
    local pid; pid=$(cat "$dir/pid")
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "$(basename "$dir") stopped"
    fi
    rm -f "$dir/pid"
  done
}

case "${1:-}" in
  up) shift; up "$@" ;;
  status) status ;;
  down) down ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
