#!/usr/bin/env bash
# `moe train --profile` under mpirun: each profiled rank records its own window and writes its
# own trace and summary; --profile-ranks leaves the others out; rank 0 prints its summary and the
# table of every rank (gathered from all of them, the unprofiled ones included).
# Two data-parallel CPU ranks, iteration 2 profiled:
#   - every rank: DIR/rank-R.json (a Chrome trace with the step, its stages and the gradients'
#     data-parallel reduction) and DIR/rank-R.txt; rank 0's summary on the output;
#   - --profile-ranks 1: rank 1's files only, and no summary on the output (rank 1 prints none).
#   mpi_profile_test.sh MPIEXEC MOE
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 MPIEXEC MOE" >&2
  exit 2
fi
mpiexec=$1 moe=$2
fail() {
  echo "mpi_profile_test: $*" >&2
  exit 1
}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
run=(train --cpu --lr 3e-3 --seq-length 32 --micro-batch-size 2 --global-batch-size 4
     --train-iters 3 --log-interval 1 --eval-iters 0 --sample-tokens 0
     --profile --profile-step-start 1 --profile-step-end 2)

all=$(timeout 300 "$mpiexec" --allow-run-as-root --oversubscribe -np 2 "$moe" "${run[@]}" --profile-dir "$dir/all" 2>&1) ||
  { echo "$all"; fail "the run profiling every rank failed"; }
for r in 0 1; do
  [ -f "$dir/all/rank-$r.json" ] || { echo "$all"; fail "no trace of rank $r"; }
  for stage in train_step layer moe.dispatch optimizer grad_sync; do
    grep -q "\"name\":\"$stage\"" "$dir/all/rank-$r.json" ||
      fail "rank $r's trace has no $stage range"
  done
  head -n 1 "$dir/all/rank-$r.txt" | grep -q "^profile of iteration 2 on rank $r: 1 step in" ||
    fail "rank $r's summary: $(head -n 1 "$dir/all/rank-$r.txt")"
done
[ "$(grep -c '^profile of iteration 2 on rank' <<<"$all")" = 1 ] ||
  { echo "$all"; fail "the output should hold rank 0's summary alone"; }
grep -q '^profile of iteration 2 on rank 0' <<<"$all" || { echo "$all"; fail "no rank 0 summary"; }
grep -q '^profile of iteration 2, every rank' <<<"$all" || { echo "$all"; fail "no table of the ranks"; }
for r in 0 1; do
  grep -qE "^ +$r +[0-9]+\.[0-9]+ " <<<"$all" || { echo "$all"; fail "the table has no row for rank $r"; }
done

one=$(timeout 300 "$mpiexec" --allow-run-as-root --oversubscribe -np 2 "$moe" "${run[@]}" --profile-ranks 1 --profile-dir "$dir/one" 2>&1) ||
  { echo "$one"; fail "the run profiling rank 1 failed"; }
[ -f "$dir/one/rank-1.json" ] || { echo "$one"; fail "--profile-ranks 1: no trace of rank 1"; }
[ ! -e "$dir/one/rank-0.json" ] || fail "--profile-ranks 1: rank 0 wrote a trace"
! grep -q '^profile of iteration 2 on' <<<"$one" ||
  { echo "$one"; fail "--profile-ranks 1: rank 0 printed a summary of its own"; }
grep -qE '^ +0 +not profiled' <<<"$one" || { echo "$one"; fail "--profile-ranks 1: rank 0's row"; }
grep -qE '^ +1 +[0-9]+\.[0-9]+ ' <<<"$one" || { echo "$one"; fail "--profile-ranks 1: rank 1's row"; }
echo "mpi_profile_test: passed"
