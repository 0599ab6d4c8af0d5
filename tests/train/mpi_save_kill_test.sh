#!/usr/bin/env bash
# A sharded save killed midway leaves the last complete checkpoint: `moe train` on 2 ranks under
# mpirun (EP 2, the distributed optimizer) saves every 2 iterations with every save held open
# for a while (MOE_TEST_SAVE_DELAY_MS: after the ranks' shards and the index are written, before
# the trainer state, the manifest and the commit); the job is killed (SIGKILL, every process)
# while iteration 4's save is open. Then:
#   - the tracker still names iteration 2 and iter_0000004 does not exist (only the hidden
#     temporary folder of the killed save, which the next save removes);
#   - one rank resumes iteration 2 from that folder and saves iteration 4 there.
#   mpi_save_kill_test.sh MPIEXEC MOE
set -u
mpiexec=$1 moe=$2
fail() {
  echo "mpi_save_kill_test: $*" >&2
  [ -f "$dir/log" ] && { echo "-- the 2-rank job's output:" >&2; tail -n 30 "$dir/log" >&2; }
  ls -la "$dir/ckpt" >&2 2>/dev/null
  exit 1
}
dir=$(mktemp -d)
job=
cleanup() {
  [ -n "$job" ] && kill -KILL -- "-$job" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
common=(train --cpu --lr 3e-3 --seq-length 32 --micro-batch-size 2 --global-batch-size 4 --log-interval 1
        --sample-tokens 0)
parallel=(--expert-model-parallel-size 2 --use-distributed-optimizer)

# The job in its own process group, so that one kill reaches mpirun and both ranks.
MOE_TEST_SAVE_DELAY_MS=6000 setsid "$mpiexec" --allow-run-as-root --oversubscribe -np 2 "$moe" \
  "${common[@]}" "${parallel[@]}" --train-iters 6 --save "$dir/ckpt" --save-interval 2 >"$dir/log" 2>&1 &
job=$!
# Wait for iteration 2's commit, then for iteration 4's temporary folder to hold every rank's
# shards and the index (the save is midway: the trainer state, the manifest and the commit come
# after the held-open window).
for ((i = 0; i < 1200; ++i)); do
  [ -f "$dir/ckpt/latest_checkpointed_iteration.txt" ] &&
    compgen -G "$dir/ckpt/.iter_0000004.tmp.*/index.json" >/dev/null && break
  kill -0 "$job" 2>/dev/null || { cat "$dir/log"; fail "the job ended before its second save"; }
  sleep 0.05
done
compgen -G "$dir/ckpt/.iter_0000004.tmp.*/index.json" >/dev/null ||
  { cat "$dir/log"; fail "iteration 4's save never wrote its index"; }
[ ! -e "$dir/ckpt/iter_0000004" ] || fail "iteration 4 was committed before the kill"
# The ranks die (SIGKILL: no handler runs, as when a node fails); mpirun, their parent, reaps
# them and ends. (Killing mpirun too would leave the ranks to whatever reaps orphans here: a rank
# not yet reaped still owns its pid, and a temporary folder named after a live pid is kept.)
pkill -KILL -P "$job"
timeout 60 tail --pid="$job" -f /dev/null || kill -KILL -- "-$job"
wait "$job" 2>/dev/null
job=

[ "$(cat "$dir/ckpt/latest_checkpointed_iteration.txt")" = 2 ] ||
  fail "the tracker names $(cat "$dir/ckpt/latest_checkpointed_iteration.txt"), not 2"
[ ! -e "$dir/ckpt/iter_0000004" ] || fail "the killed save's iter_0000004 is visible"
[ -d "$dir/ckpt/iter_0000002" ] || fail "iter_0000002 is gone"

one=$("$moe" "${common[@]}" --train-iters 4 --load "$dir/ckpt" --save "$dir/ckpt" 2>&1) ||
  { echo "$one"; fail "one rank could not resume the checkpoint left by the killed save"; }
grep -aqF "loaded checkpoint $dir/ckpt/iter_0000002 (iteration 2)" <<<"$one" ||
  { echo "$one"; fail "one rank did not resume iteration 2"; }
# (Whether that run removed the killed save's temporary folder is not checked here: it keeps a
# folder whose pid is alive, and under a busy test run the rank's pid may already be another
# process's; checkpoint/atomic_folder's tests cover the removal.)
[ "$(cat "$dir/ckpt/latest_checkpointed_iteration.txt")" = 4 ] || fail "one rank did not save 4"
echo "mpi_save_kill_test: ok"
