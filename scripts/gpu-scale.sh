#!/usr/bin/env bash
# The runs on a machine of several GPUs (2, 4 or 8), from a build unpacked there
# (scripts/gpu-pack.sh), in parts that each fit one call of ten minutes:
#   tests    the multigpu suite (one NCCL process per GPU: the backend suite and the
#            parallel-equals-serial training suite) on 2, 4 and 8 GPUs where the machine has them,
#            and `moe train` over NCCL on every GPU beside one rank (scripts/gpu-train-ranks.sh)
#   comm     `moe bench comm` over 2, 4 and 8 GPUs and, in the same call, the same collectives
#            timed by torch.distributed (bench/torch_comm_peer.py, when python3 has torch)
#   ep       `moe bench moe-ep` at EP 1, 2, 4 and 8 with the same tokens per GPU: Qwen3-30B-A3B
#            and DeepSeek-V3 shapes, balanced and natural routing, the synchronising and the
#            sync-free exchange; then each row's per-GPU expert TFLOP/s as a share of EP 1's
#   train MODEL  training steps across the node, tokens/s and MFU per GPU, with forced balance
#            and with the router's own routing: qwen3-30b-a3b (all 48 layers, seq 4096, EP = the
#            GPUs, distributed optimizer), mixtral-8x7b (all 32 layers; EP = the GPUs, TP 2 x
#            EP 4 on 8), deepseek-v3 (cut to 8 layers: MLA, 256 experts, PP 2 x EP 4 on 8); on 2
#            and 4 GPUs the same models cut to fit (16 and 8 layers)
#   reshard  a checkpoint saved on every GPU loads and trains on half and a quarter of them, and
#            one saved on two loads on every GPU (the tiny default model: the resharding, not the
#            size, is under test; scripts/gpu-train-ranks.sh prints the losses side by side)
# Logs (and the JSONL of the benchmarks) go to LOGDIR; the exit status is non-zero when a run
# failed. NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
#   scripts/gpu-scale.sh BUILD LOGDIR tests|comm|ep|reshard
#   scripts/gpu-scale.sh BUILD LOGDIR train qwen3-30b-a3b|mixtral-8x7b|deepseek-v3
set -uo pipefail
build=$1 logdir=$2 part=$3
model=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$logdir"
# shellcheck source=scripts/gpu-env.sh
source "$here/gpu-env.sh"
nvidia-smi topo -m >"$logdir/topology.txt" 2>&1 || true
sizes=()  # the GPU counts this machine has among 2, 4, 8
for n in 2 4 8; do [ "$n" -le "$gpus" ] && sizes+=("$n"); done

case "$part" in
  tests)
    for n in "${sizes[@]}"; do
      step "multigpu_nccl_$n" timeout 280 "$build/tests/moe_nccl_tests" --ranks "$n"
      grep -hE "^\[  (FAILED|PASSED) |tests ran" "$logdir/multigpu_nccl_$n.log" | head -n 20
    done
    step train_ranks_nccl bash "$here/gpu-train-ranks.sh" "$build" "$logdir/train_nccl" nccl "$gpus"
    ;;
  comm)
    have_torch=0
    python3 -c "import torch.distributed" 2>/dev/null && have_torch=1
    for n in "${sizes[@]}"; do
      step "comm_moe_$n" timeout 150 "$build/moe" launch --nproc-per-node "$n" bench comm \
        --device cuda --distributed-backend nccl --max-size 1G --jsonl "$logdir/comm_moe.jsonl"
      if [ $have_torch -eq 1 ]; then
        step "comm_torch_$n" timeout 150 python3 -m torch.distributed.run --nproc-per-node "$n" \
          "$here/../bench/torch_comm_peer.py" --max-size 1G --jsonl "$logdir/comm_torch.jsonl"
      fi
    done
    # moecore's bus bandwidth beside torch.distributed's, per op, world and size (1 MiB and up).
    python3 - "$logdir/comm_moe.jsonl" "$logdir/comm_torch.jsonl" <<'EOF' | tee "$logdir/comm_table.md"
import json, os, sys
def rows(path):
    if not os.path.exists(path):
        return {}
    out = {}
    for line in open(path):
        r = json.loads(line)
        out[(r["op"], r["world_size"], r["bytes"])] = r["busbw_gbps"]
    return out
moe, torch = rows(sys.argv[1]), rows(sys.argv[2])
print("| op | GPUs | size | moecore busbw GB/s | torch busbw GB/s | ratio |")
print("|---|---|---|---|---|---|")
for (op, n, size), bw in sorted(moe.items()):
    if size < 1 << 20:
        continue
    peer = torch.get((op, n, size))
    ratio = f"{bw / peer:.2f}" if peer else "-"
    print(f"| {op} | {n} | {size >> 20} MiB | {bw:.1f} | {peer if peer is None else round(peer, 1)} | {ratio} |")
EOF
    ;;
  ep)
    for n in 1 "${sizes[@]}"; do
      step "ep_$n" timeout 280 "$build/moe" launch --nproc-per-node "$n" bench moe-ep --device cuda \
        --distributed-backend nccl --shapes qwen3-30b-a3b deepseek-v3 --tokens 8192 \
        --routings balanced natural --exchanges synchronising sync-free \
        --jsonl "$logdir/ep.jsonl"
    done
    python3 "$here/ep-scaling-table.py" "$logdir/ep.jsonl" | tee "$logdir/ep_table.md"
    ;;
  train)
    # Layers per model for the GPUs at hand: all of them on 8, fewer on 2 and 4 (cut to fit).
    common=(train --bf16 --seq-length 4096 --micro-batch-size 1 --train-iters 8 --lr 3e-4
            --lr-warmup-iters 1 --log-interval 1 --eval-iters 0 --sample-tokens 0
            --attention-dropout 0 --hidden-dropout 0 --use-distributed-optimizer
            --overlap-grad-reduce --overlap-param-gather --use-precision-aware-optimizer
            --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16 --moe-token-dispatcher-type alltoall)
    case "$model" in
      qwen3-30b-a3b)
        layers=$((gpus >= 8 ? 48 : gpus >= 4 ? 16 : 8))
        mapping=(--expert-model-parallel-size "$gpus")
        ;;
      mixtral-8x7b)
        layers=$((gpus >= 8 ? 32 : gpus >= 4 ? 8 : 4))
        mapping=(--expert-model-parallel-size "$gpus")
        [ "$gpus" -ge 8 ] && mapping=(--tensor-model-parallel-size 2 --sequence-parallel
                                      --expert-model-parallel-size 4)
        ;;
      deepseek-v3)
        layers=$((gpus >= 8 ? 8 : 4))
        mapping=(--expert-model-parallel-size "$gpus")
        [ "$gpus" -ge 8 ] && mapping=(--pipeline-model-parallel-size 2 --expert-model-parallel-size 4)
        ;;
      *)
        echo "train: give qwen3-30b-a3b, mixtral-8x7b or deepseek-v3" >&2
        exit 2
        ;;
    esac
    gbs=$((2 * gpus))
    for routing in balanced natural; do
      extra=()
      [ "$routing" = balanced ] && extra=(--moe-router-force-load-balancing)
      step "train_${model}_${gpus}gpus_$routing" timeout 280 \
        "$build/moe" launch --nproc-per-node "$gpus" "${common[@]}" --model "$model" \
        --num-layers "$layers" --global-batch-size "$gbs" "${mapping[@]}" "${extra[@]}"
      log="$logdir/train_${model}_${gpus}gpus_$routing.log"
      grep -E "mapping|parallel" "$log" | head -n 5
      grep " iteration " "$log" | tail -n 3
    done
    ;;
  reshard)
    bash "$here/gpu-train-ranks.sh" "$build" "$logdir/reshard_all" nccl "$gpus" || status=1
    for n in "${sizes[@]}"; do
      [ "$n" -lt "$gpus" ] || continue
      # The checkpoint saved on every GPU, resumed on n of them (EP n), training on.
      step "reshard_${gpus}_to_$n" timeout 200 "$build/moe" launch --nproc-per-node "$n" train \
        --bf16 --lr 3e-3 --train-iters 20 --log-interval 1 --sample-tokens 0 --seq-length 256 \
        --micro-batch-size 2 --global-batch-size 16 --distributed-backend nccl \
        --expert-model-parallel-size "$n" --use-distributed-optimizer \
        --load "$logdir/reshard_all/ckpt/iter_0000010" --metrics-jsonl "$logdir/reshard_$n.jsonl"
    done
    # And back: saved on two, resumed on every GPU.
    if [ "$gpus" -gt 2 ]; then
      bash "$here/gpu-train-ranks.sh" "$build" "$logdir/reshard_two" nccl 2 || status=1
      step "reshard_2_to_$gpus" timeout 200 "$build/moe" launch --nproc-per-node "$gpus" train \
        --bf16 --lr 3e-3 --train-iters 20 --log-interval 1 --sample-tokens 0 --seq-length 256 \
        --micro-batch-size 2 --global-batch-size 16 --distributed-backend nccl \
        --expert-model-parallel-size "$gpus" --use-distributed-optimizer \
        --load "$logdir/reshard_two/ckpt/iter_0000010" --metrics-jsonl "$logdir/reshard_up.jsonl"
    fi
    # Every resumed run's losses beside the uninterrupted one's (the run on every GPU).
    for f in "$logdir"/reshard_*.jsonl; do
      [ -e "$f" ] || continue
      echo "$(basename "$f"): $(grep -a '"lm_loss":' "$f" | tail -n 3 |
        sed -E 's/.*"iteration":([0-9]+).*"lm_loss":([-+0-9.eE]+).*/\1:\2/' | tr '\n' ' ')"
    done
    echo "uninterrupted: $(grep -a '"lm_loss":' "$logdir/reshard_all/two.jsonl" | tail -n 3 |
      sed -E 's/.*"iteration":([0-9]+).*"lm_loss":([-+0-9.eE]+).*/\1:\2/' | tr '\n' ' ')"
    ;;
  *)
    echo "usage: $0 BUILD LOGDIR tests|comm|ep|reshard|train MODEL" >&2
    exit 2
    ;;
esac
exit $status
