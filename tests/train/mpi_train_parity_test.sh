#!/usr/bin/env bash
# `moe train` on NP ranks under mpirun trains the model one rank trains: runs a short default
# run (tiny model, built-in corpus, CPU) once on one rank and once under `mpirun -np NP` with the
# extra flags (a parallel mapping: --expert-model-parallel-size 2, --use-distributed-optimizer,
# ...), and checks from both metrics.jsonl files that
#   - every iteration's lm loss and load-balancing loss, and the validation losses, agree within
#     a relative tolerance of 1e-5 (the ranks sum the same gradients in another order: the runs
#     differ in the last bits only, ~1e-7 relative after 10 iterations; a wrong data shard, a
#     gradient scaled by the wrong factor or an expert update lost differs by 1e-3 or more from
#     the second iteration on),
#   - the file holds each iteration once (rank 0 alone writes it),
#   - the checkpoint the ranks saved at iteration 5 resumes on one rank and continues their run,
# and from the output that rank 0 alone printed the log, the memory report of every rank and
# the text sample (every rank ran the sample's forwards: with EP they are collective; under
# pipeline parallelism the note that there is none).
# Both runs take global batches of 4 samples in micro-batches of 2 (the same micro-batches: the
# aux loss of a micro-batch is not linear in its tokens), so NP data-parallel ranks must divide 2.
#   mpi_train_parity_test.sh MPIEXEC MOE NP [FLAGS...]
set -u
if [ $# -lt 3 ]; then
  echo "usage: $0 MPIEXEC MOE NP [FLAGS...]" >&2
  exit 2
fi
mpiexec=$1 moe=$2 np=$3
shift 3
name="np $np $*"
fail() {
  echo "mpi_train_parity_test ($name): $*" >&2
  exit 1
}
iterations=10
tolerance=1e-5
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
common=(train --cpu --lr 3e-3 --seq-length 32 --micro-batch-size 2 --global-batch-size 4
        --train-iters "$iterations" --log-interval 1 --eval-interval 5 --eval-iters 1
        --sample-tokens 24)

one=$("$moe" "${common[@]}" --metrics-jsonl "$dir/one.jsonl" 2>&1) ||
  { echo "$one"; fail "the one-rank run failed"; }
# The timeout is a backstop: a run that hangs (a rank left out of a collective) fails here.
many=$(timeout 300 "$mpiexec" --allow-run-as-root --oversubscribe -np "$np" "$moe" "${common[@]}" \
         "$@" --metrics-jsonl "$dir/many.jsonl" --save "$dir/ckpt" --save-interval 5 2>&1)
status=$?
echo "$many"
[ "$status" -ne 124 ] || fail "the $np-rank run was still running after 300 s"
[ "$status" -eq 0 ] || fail "the $np-rank run exited with status $status"

# "<iteration> <value>" for every record of a metrics file that has `key`.
values() {
  local file=$1 key=$2
  paste -d ' ' <(grep -a "\"$key\":" "$file" | sed -E 's/.*"iteration":([0-9]+).*/\1/') \
               <(grep -a "\"$key\":" "$file" | sed -E "s/.*\"$key\":([-+0-9.eE]+|null).*/\\1/")
}
# compare KEY A_FILE A_NAME B_FILE B_NAME: B's records of `key` (at least one) at the iterations
# A has, A holding each of B's iterations, agree within the tolerance.
compare() {
  local key=$1 a=$2 a_name=$3 b=$4 b_name=$5
  values "$a" "$key" >"$dir/a"
  values "$b" "$key" >"$dir/b"
  [ -s "$dir/b" ] || fail "$b_name: no $key in its metrics"
  awk -v tol="$tolerance" -v key="$key" -v an="$a_name" -v bn="$b_name" '
    NR == FNR { a[$1] = $2; next }
    { if (!($1 in a)) { printf "iteration %s %s: %s has none\n", $1, key, an; bad = 1; next }
      x = a[$1]; y = $2; d = x - y; if (d < 0) d = -d; m = (x < 0 ? -x : x); if (m < 1) m = 1
      printf "iteration %s %s: %s %s, %s %s, relative difference %.3g\n", $1, key, an, x, bn, y,
             d / m
      if (x == "null" || y == "null" || d > tol * m) bad = 1 }
    END { exit bad }' "$dir/a" "$dir/b" || fail "$key: $b_name differs from $a_name by more" \
                                              "than $tolerance (relative)"
}
for key in lm_loss load_balancing_loss valid_lm_loss; do
  compare "$key" "$dir/one.jsonl" "one rank" "$dir/many.jsonl" "$np ranks"
  compare "$key" "$dir/many.jsonl" "$np ranks" "$dir/one.jsonl" "one rank"  # the same iterations
done
lines=$(grep -c '"lm_loss":' "$dir/many.jsonl")
[ "$lines" -eq "$iterations" ] ||
  fail "the $np-rank metrics hold $lines iteration records, expected $iterations" \
       "(rank 0 alone writes them)"

count() { grep -acF -- "$1" <<<"$many"; }
[ "$(count "iteration       $iterations/      $iterations |")" -eq 1 ] ||
  fail "the last log line is not printed once"
[ "$(count "memory per rank (MiB)")" -eq 1 ] || fail "no memory report (or more than one)"
for ((r = 0; r < np; ++r)); do
  [ "$(count "  rank $r: ")" -eq 1 ] || fail "the memory report lacks rank $r"
done
[ "$(count "peak memory after iteration 1")" -eq 1 ] || fail "no peak memory line"
if [[ " $* " == *" --pipeline-model-parallel-size "* ]]; then
  # Pipeline ranks hold a stage each: no rank can generate, and the run says so once.
  [ "$(count "no text sample: generation runs on a rank that holds the whole model")" -eq 1 ] ||
    fail "no note that pipeline ranks print no sample"
else
  [ "$(count "sample (24 tokens at most")" -eq 1 ] || fail "the sample is not printed once"
fi
# The checkpoint the ranks saved at iteration 5 (each rank its slices) resumes on one rank: the
# rest of the run is the ranks' (the optimizer state and data position came back whole).
resumed=$("$moe" "${common[@]}" --load "$dir/ckpt/iter_0000005" \
            --metrics-jsonl "$dir/resumed.jsonl" 2>&1) ||
  { echo "$resumed"; fail "one rank could not resume the $np ranks' checkpoint"; }
grep -aqF "loaded checkpoint $dir/ckpt/iter_0000005 (iteration 5)" <<<"$resumed" ||
  { echo "$resumed"; fail "the resumed run did not load iteration 5"; }
compare lm_loss "$dir/many.jsonl" "$np ranks" "$dir/resumed.jsonl" "one rank resumed at 5"
echo "mpi_train_parity_test ($name): ok"
