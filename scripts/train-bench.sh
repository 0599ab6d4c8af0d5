#!/usr/bin/env bash
# The training-step benchmark of docs/perf.md: full steps (forward, backward, AdamW) of
# Mixtral-8x7B cut to 4 layers and Qwen3-30B-A3B cut to 8 layers at sequence 4096, micro-batch
# 2, full width and vocabulary, bf16, on the built-in corpus; for each, one optimizer step per
# micro-batch (global batch 2) and per 8 accumulated micro-batches (global batch 16), with fp32
# and bf16 (--use-precision-aware-optimizer) moments. Prints one table row per run: medians of
# the log lines after the first two iterations (which include cuBLASLt / cuDNN plan building).
# No dropout (--attention-dropout 0 --hidden-dropout 0, as these models' Megatron recipes pass;
# with flags the default would be Megatron's 0.1).
# MOE_TRAIN_FLAGS (space-separated) are added to every run, e.g.
# MOE_TRAIN_FLAGS="--moe-grouped-gemm-backend cutlass". MOE_TRAIN_MOMENTS picks the moments'
# dtypes (default "fp32 bf16").
#   scripts/train-bench.sh MOE_BINARY LOGDIR [model:layers ...]
set -uo pipefail
moe=$1 logdir=$2
shift 2
models=("$@")
((${#models[@]})) || models=(mixtral-8x7b:4 qwen3-30b-a3b:8)
mkdir -p "$logdir"
median() { sort -g | awk '{v[NR]=$1} END {if (NR) print (NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
field() { sed -n "s#.*$1: \([0-9.eE+-]*\)[%]* |.*#\1#p"; }
echo "| model | global batch | moments | tokens/s | ms / iteration | TFLOP/s | MFU % | memory GiB |"
echo "|---|---|---|---|---|---|---|---|"
status=0
for spec in "${models[@]}"; do
  model=${spec%%:*} layers=${spec##*:}
  for gbs in 2 16; do
    iters=$((gbs == 2 ? 14 : 6))
    for moments in ${MOE_TRAIN_MOMENTS:-fp32 bf16}; do
      extra=()
      [ "$moments" = bf16 ] && extra=(--use-precision-aware-optimizer --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16)
      log="$logdir/train_${model}_${layers}_gbs${gbs}_${moments}.log"
      "$moe" train --model "$model" --num-layers "$layers" --bf16 --seq-length 4096 \
        --micro-batch-size 2 --global-batch-size "$gbs" --train-iters "$iters" --lr 3e-4 --lr-warmup-iters 1 \
        --log-interval 1 --eval-iters 0 --sample-tokens 0 --moe-router-force-load-balancing \
        --attention-dropout 0 --hidden-dropout 0 \
        "${extra[@]}" ${MOE_TRAIN_FLAGS:-} >"$log" 2>&1 || { status=1; echo "| $spec | $gbs | $moments | failed: see $log |"; continue; }
      lines=$(grep " iteration " "$log" | tail -n +3)
      printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$spec" "$gbs" "$moments" \
        "$(field 'tokens/s' <<<"$lines" | median)" \
        "$(field 'elapsed time per iteration (ms)' <<<"$lines" | median)" \
        "$(field 'TFLOP/s/GPU' <<<"$lines" | median)" "$(field 'MFU' <<<"$lines" | median)" \
        "$(field 'mem GiB' <<<"$lines" | median)"
    done
  done
done
exit $status
