#!/usr/bin/env bash
# `moe train` across ranks on one GPU, from a build unpacked there (scripts/gpu-pack.sh): the
# default model in bf16 for 20 iterations on one rank, then on 2 MPI ranks sharing GPU 0 (EP 2,
# the distributed optimizer, overlapped reductions and gathers, a sharded save at iteration 10),
# then one rank resuming the ranks' iteration-10 checkpoint. Prints the three runs' lm losses
# side by side (bf16: the runs agree to about 1e-2 relative, the order of the sums differs).
# Logs go to LOGDIR; the exit status is non-zero when a run failed.
#   scripts/gpu-train-shared.sh BUILD LOGDIR
set -uo pipefail
build=$1 logdir=$2
mkdir -p "$logdir"
export LD_LIBRARY_PATH="$build/deps:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun_flags=(--allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none)
common=(train --bf16 --train-iters 20 --log-interval 1 --sample-tokens 0 --seq-length 256
        --micro-batch-size 4 --global-batch-size 16)
status=0
"$build/moe" "${common[@]}" --metrics-jsonl "$logdir/one.jsonl" >"$logdir/one.log" 2>&1 || status=1
mpirun "${mpirun_flags[@]}" -np 2 "$build/moe" "${common[@]}" --distributed-backend mpi \
  --expert-model-parallel-size 2 --use-distributed-optimizer --overlap-grad-reduce \
  --overlap-param-gather --save "$logdir/ckpt" --save-interval 10 \
  --metrics-jsonl "$logdir/two.jsonl" >"$logdir/two.log" 2>&1 || status=1
"$build/moe" "${common[@]}" --load "$logdir/ckpt/iter_0000010" \
  --metrics-jsonl "$logdir/resumed.jsonl" >"$logdir/resumed.log" 2>&1 || status=1
losses() { grep -a '"lm_loss":' "$1" | sed -E 's/.*"iteration":([0-9]+).*"lm_loss":([-+0-9.eE]+).*/\1 \2/'; }
echo "iteration  one rank  2 ranks (EP 2, ZeRO-1)  one rank resumed at 10"
awk 'FNR == 1 { f++ } { v[f "," $1] = $2; if ($1 > n) n = $1 }
     END { for (i = 1; i <= n; ++i) printf "%9d  %s  %s  %s\n", i, v["1," i], v["2," i], v["3," i] }' \
  <(losses "$logdir/one.jsonl") <(losses "$logdir/two.jsonl") <(losses "$logdir/resumed.jsonl")
grep -a -A3 "memory per rank" "$logdir/two.log"
[ $status -eq 0 ] || tail -n 20 "$logdir"/*.log
exit $status
