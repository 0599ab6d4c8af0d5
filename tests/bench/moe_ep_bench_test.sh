#!/usr/bin/env bash
# `moe bench moe-ep` (bench/moe_ep_bench.h) on NP ranks (under MPIEXEC when given, else one
# process) prints its table: on the tiny shape, T = 37 tokens per rank, EP = NP, exactly one row
# (rank 0 alone prints) for each routing (balanced, natural) and exchange (synchronising,
# sync-free), each with positive times; with NP > 1 the exchange's throughput and, for the
# sync-free rows, the slots' use ("ok" or "short": peak of slot rows); with one rank "unused".
# The --jsonl file holds the same four rows.
#   moe_ep_bench_test.sh MOE NP [MPIEXEC]
set -u
if [ $# -lt 2 ]; then
  echo "usage: $0 MOE NP [MPIEXEC]" >&2
  exit 2
fi
moe=$1 np=$2 mpiexec=${3:-}
fail() {
  echo "moe_ep_bench_test (np $np): $*" >&2
  exit 1
}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
args=(bench moe-ep --cpu --shapes tiny --tokens 37 --iters 2 --warmup 1
      --exchanges synchronising sync-free --jsonl "$dir/rows.jsonl")
if [ -n "$mpiexec" ]; then
  out=$("$mpiexec" --allow-run-as-root --oversubscribe -np "$np" "$moe" "${args[@]}" 2>&1) ||
    { echo "$out"; fail "the run failed"; }
else
  out=$("$moe" "${args[@]}" 2>&1) || { echo "$out"; fail "the run failed"; }
fi
echo "$out"

number='[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?'
if [ "$np" -gt 1 ]; then gbps="$number" slots='(ok|short): peak [0-9]+ of [0-9]+'; else
  gbps='-' slots='unused'; fi
for routing in balanced natural; do
  for exchange in synchronising sync-free; do
    [ "$exchange" = sync-free ] && column="$slots" || column='-'
    # shape | EP | T | routing | exchange | fwd+bwd ms | TFLOP/s | vs GEMM | load | 4 stage ms
    # | dispatch GB/s | combine GB/s | slots
    row="^\| tiny \| $np \| 37 \| $routing \| $exchange \| $number \| $number \| $number \| $number"
    row+=" \| $number \| $number \| $number \| $number \| $gbps \| $gbps \| $column \|$"
    count=$(grep -cE "$row" <<<"$out")
    [ "$count" -eq 1 ] || fail "$count rows for $routing, $exchange (want 1) matching: $row"
    ms=$(grep -E "$row" <<<"$out" | awk -F'|' '{ print $7 + 0 }')
    awk -v ms="$ms" 'BEGIN { exit !(ms > 0) }' || fail "fwd+bwd time $ms for $routing, $exchange"
  done
done
lines=$(grep -c "\"ep\":$np," "$dir/rows.jsonl")
[ "$lines" -eq 4 ] || fail "$lines rows of EP $np in the --jsonl file (want 4)"
echo "moe_ep_bench_test (np $np): ok"
