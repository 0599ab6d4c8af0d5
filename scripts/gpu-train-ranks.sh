#!/usr/bin/env bash
# `moe train` across ranks, from a build unpacked on a GPU machine (scripts/gpu-pack.sh): the
# default model in bf16 for 20 iterations on one rank, then on N ranks (EP N, the distributed
# optimizer, overlapped reductions and gathers, a sharded save at iteration 10), then one rank
# resuming the ranks' iteration-10 checkpoint. Prints the three runs' lm losses side by side
# (bf16: the runs agree to about 1e-3 relative, the order of the sums differs) and the ranks'
# memory report. The ranks are 2 MPI processes sharing GPU 0 by default, or with `nccl N` N
# processes, one per GPU, started by `moe launch` over NCCL.
# MAPPING... replaces the mapping flags (default: EP N with the distributed optimizer and overlap),
# e.g. --tensor-model-parallel-size 2 --sequence-parallel, or --context-parallel-size 2.
# Logs go to LOGDIR; the exit status is non-zero when a run failed.
#   scripts/gpu-train-ranks.sh BUILD LOGDIR [mpi|nccl N [MAPPING...]]
set -uo pipefail
build=$1 logdir=$2 mode=${3:-mpi} ranks=${4:-2}
shift $(($# < 4 ? $# : 4))
mapping=("$@")
[ ${#mapping[@]} -gt 0 ] || mapping=(--expert-model-parallel-size "$ranks" --use-distributed-optimizer
                                    --overlap-grad-reduce --overlap-param-gather)
mkdir -p "$logdir"
export LD_LIBRARY_PATH="$build/deps:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun_flags=(--allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none)
common=(train --bf16 --lr 3e-3 --train-iters 20 --log-interval 1 --sample-tokens 0 --seq-length 256
        --micro-batch-size 2 --global-batch-size 16)
status=0
"$build/moe" "${common[@]}" --metrics-jsonl "$logdir/one.jsonl" >"$logdir/one.log" 2>&1 || status=1
parallel=("${mapping[@]}" --save "$logdir/ckpt" --save-interval 10 --metrics-jsonl "$logdir/two.jsonl")
if [ "$mode" = nccl ]; then
  "$build/moe" launch --nproc-per-node "$ranks" "${common[@]}" --distributed-backend nccl \
    "${parallel[@]}" >"$logdir/two.log" 2>&1 || status=1
else
  mpirun "${mpirun_flags[@]}" -np "$ranks" "$build/moe" "${common[@]}" --distributed-backend mpi \
    "${parallel[@]}" >"$logdir/two.log" 2>&1 || status=1
fi
"$build/moe" "${common[@]}" --load "$logdir/ckpt/iter_0000010" \
  --metrics-jsonl "$logdir/resumed.jsonl" >"$logdir/resumed.log" 2>&1 || status=1
losses() { grep -a '"lm_loss":' "$1" | sed -E 's/.*"iteration":([0-9]+).*"lm_loss":([-+0-9.eE]+).*/\1 \2/'; }
echo "iteration  one rank  $ranks ranks ($mode, ${mapping[*]})  one rank resumed at 10"
awk 'FNR == 1 { f++ } { v[f "," $1] = $2; if ($1 > n) n = $1 }
     END { for (i = 1; i <= n; ++i) printf "%9d  %s  %s  %s\n", i, v["1," i], v["2," i], v["3," i] }' \
  <(losses "$logdir/one.jsonl") <(losses "$logdir/two.jsonl") <(losses "$logdir/resumed.jsonl")
grep -a -A3 "memory per rank" "$logdir/two.log"
[ $status -eq 0 ] || tail -n 20 "$logdir"/*.log
exit $status
