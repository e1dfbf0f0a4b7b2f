#!/usr/bin/env bash
# Benchmarks the block store: chunking and hashing on one core, and storing
# 1 MiB blocks durably into one local Badger (the baseline), into the local
# block store (a file each) and at quorum into a 3-host cluster over
# loopback gRPC, measured in the same run, by 1 and by 4 writers. Prints the
# Go benchmark lines, then MB/s with the ratios to Badger.
# Usage: scripts/bench-blocks.sh [benchtime, default 3s]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
benchtime=${1:-3s}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench '^BenchmarkChunkAndHash$' -benchtime "$benchtime" -cpu 1 ./blockstore/ | grep -E '^Benchmark'
go test -run '^$' -bench '^BenchmarkSetBlock$' -benchtime "$benchtime" -count 1 ./blockstore/blockrpc/ | tee "$out"
echo
awk '
  /^BenchmarkSetBlock\// {
    split($1, parts, "/"); kind = parts[2]; w = parts[3]; sub(/-[0-9]+$/, "", w)
    for (i = 1; i <= NF; i++) if ($(i+1) == "MB/s") rate[kind, w] = $i
    seen[w] = 1
  }
  END {
    printf "%-12s %12s %12s %12s %12s %12s\n", "writers", "badger MB/s", "files MB/s", "quorum MB/s", "files/badger", "quorum/badger"
    for (w in seen) {
      b = rate["badger", w]; f = rate["files", w]; q = rate["quorum", w]
      printf "%-12s %12.1f %12.1f %12.1f %12.3f %12.3f\n", w, b, f, q, (b > 0 ? f / b : 0), (b > 0 ? q / b : 0) | "sort -t= -k2 -n"
    }
  }' "$out"
