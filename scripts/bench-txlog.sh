#!/usr/bin/env bash
# Benchmarks durable key-value writes: quorum writes into a 3-host cluster
# over loopback gRPC against plain local Badger writes (Update + Sync),
# measured in the same run, by 1 and by 16 concurrent clients. Prints the
# Go benchmark lines, then a table of writes/s with the ratio to Badger.
# Usage: scripts/bench-txlog.sh [benchtime, default 3s]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
benchtime=${1:-3s}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench '^BenchmarkWrite$' -benchtime "$benchtime" -count 1 ./txlog/txlogrpc/ | tee "$out"
echo
awk '
  /^BenchmarkWrite\// {
    split($1, parts, "/"); kind = parts[2]; clients = parts[3]; sub(/-[0-9]+$/, "", clients)
    for (i = 1; i <= NF; i++) if ($(i+1) == "writes/s") rate[kind, clients] = $i
    seen[clients] = 1
  }
  END {
    printf "%-12s %14s %14s %8s\n", "clients", "badger w/s", "quorum w/s", "ratio"
    for (c in seen) {
      b = rate["badger", c]; q = rate["quorum", c]
      printf "%-12s %14.0f %14.0f %8.3f\n", c, b, q, (b > 0 ? q / b : 0) | "sort -t= -k2 -n"
    }
  }' "$out"
