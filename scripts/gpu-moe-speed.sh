#!/usr/bin/env bash
# The MoE layer's speed on an H200, the grouped-GEMM backends side by side, with the PyTorch peer
# timed in the same call (docs/perf.md takes its ratios from one run on one machine), in parts
# that each fit a call of ten minutes (PART, default all):
#   tests  the grouped-GEMM, MoE-layer, exchange-slot and CUDA-graph gpu tests (the cutlass
#          backend against the CPU reference, the one-rank layer captured as one CUDA graph,
#          the graph's private pool, a training step replayed as a graph against eager steps);
#   gemm   `moe bench grouped-gemm`: the experts' six grouped GEMMs (written and accumulated
#          weight gradients) of every shape, balanced and skewed, with the automatic backend and
#          the cutlass backend in each tile configuration and its by-shape choice;
#   layer  `moe bench moe-layer` at T = 8192, balanced and skewed routing, automatic and
#          cutlass, each also replayed as one CUDA graph (--cuda-graph: the launches' cost), and
#          PEERS/moe_layer_peers.py (torch._grouped_mm) on the same shapes if given;
#   train  the training-step benchmark (scripts/train-bench.sh) with the automatic backend (eager,
#          and with per-layer graphs of the attention blocks: --cuda-graph-impl local
#          --cuda-graph-modules attn), with cutlass (eager, with per-layer graphs of whole
#          layers, and with the step captured as one CUDA graph: --cuda-graph-impl
#          full_iteration): the time graphs save, and in the logs their memory;
#          MOE_TRAIN_MOMENTS as train-bench.sh takes it, MOE_TRAIN_MODEL (model:layers) the
#          model (default qwen3-30b-a3b:8, which fits an H200; an 80 GB H100 takes :4);
#   profile  the timeline of a Qwen3-30B-A3B:8 step (docs/perf.md): `moe train --profile` over
#          iterations 5-6 with moecore's recorder (host ranges and CUPTI's kernels), eager with
#          the automatic backend and with cutlass, and with cutlass replayed as one CUDA graph;
#          the summaries (stages, idle gaps and their causes) in LOGDIR/profile_*.log, the Chrome
#          traces in LOGDIR/profile_*/rank-0.json.
# Logs go to LOGDIR; a build unpacked as scripts/gpu-pack.sh packs it.
#   scripts/gpu-moe-speed.sh BUILD LOGDIR [PEERS] [tests|gemm|layer|train|profile|all]
set -uo pipefail
build=$1 logdir=$2 peers=${3:-} part=${4:-all}
mkdir -p "$logdir"
export LD_LIBRARY_PATH="$build/deps:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logdir/gpu.txt"
status=0
wants() { [ "$part" = all ] || [ "$part" = "$1" ]; }
if wants tests; then
  timeout 240 "$build/tests/moe_gpu_tests" \
    --gtest_filter='GroupedGemm*:MoELayer*:ExchangeSlotsCuda*:CudaGraph*:TrainerCudaGraph*:DeviceActivityCuda*' \
    >"$logdir/tests.log" 2>&1 || status=1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests ran|Failure" "$logdir/tests.log" | head -n 30
fi
if wants gemm; then
  timeout 300 "$build/moe" bench grouped-gemm --iters 6 --warmup 2 2>&1 |
    tee "$logdir/bench_grouped_gemm.log" | grep -E "^\||ceilings" || status=1
fi
if wants layer; then
  timeout 300 "$build/moe" bench moe-layer --tokens 8192 --routings balanced skewed --iters 8 \
    --warmup 3 --no-stages --grouped-gemm-backends automatic cutlass --cuda-graph 2>&1 |
    tee "$logdir/bench_moe_layer.log" | grep "^|" || status=1
  if [ -n "$peers" ]; then
    timeout 250 python3 "$peers/moe_layer_peers.py" --impls torch_grouped_mm --iters 8 \
      --json "$logdir/peers.json" >"$logdir/peers.log" 2>&1 || status=1
    tail -n 20 "$logdir/peers.log"
  fi
fi
if wants train; then
  for variant in automatic automatic-local-attn cutlass cutlass-local cutlass-graph; do
    flags="--moe-grouped-gemm-backend ${variant%%-*}"
    case $variant in
      *-local-attn) flags="$flags --cuda-graph-impl local --cuda-graph-modules attn" ;;
      *-local) flags="$flags --cuda-graph-impl local" ;;
      *-graph) flags="$flags --cuda-graph-impl full_iteration" ;;
    esac
    [ "$variant" != automatic ] && [ "$variant" != cutlass ] && flags="$flags --cuda-graph-warmup-steps 2"
    MOE_TRAIN_FLAGS="$flags" timeout 190 \
      bash "$(dirname "$0")/train-bench.sh" "$build/moe" "$logdir/train_$variant" \
        "${MOE_TRAIN_MODEL:-qwen3-30b-a3b:8}" |
      tee "$logdir/train_$variant.md" || status=1
    grep -h "CUDA graph" "$logdir/train_$variant"/*.log 2>/dev/null | head -n 2
  done
fi
if wants profile; then
  # MOE_PROFILE_MODEL (model:layers): the default fits an H200; an 80 GB H100 takes :4.
  spec=${MOE_PROFILE_MODEL:-qwen3-30b-a3b:8}
  for variant in automatic cutlass cutlass-graph; do
    flags=(--moe-grouped-gemm-backend "${variant%-graph}")
    [ "$variant" = cutlass-graph ] &&
      flags+=(--cuda-graph-impl full_iteration --cuda-graph-warmup-steps 2)
    timeout 150 "$build/moe" train --model "${spec%%:*}" --num-layers "${spec##*:}" --bf16 --seq-length 4096 \
      --micro-batch-size 2 --global-batch-size 2 --train-iters 6 --lr 3e-4 --lr-warmup-iters 1 \
      --log-interval 1 --eval-iters 0 --sample-tokens 0 --moe-router-force-load-balancing \
      --attention-dropout 0 --hidden-dropout 0 "${flags[@]}" \
      --profile --profile-step-start 4 --profile-step-end 6 --profile-dir "$logdir/profile_$variant" \
      >"$logdir/profile_$variant.log" 2>&1 || status=1
    sed -n '/^profile of/,/^  trace/p' "$logdir/profile_$variant.log" | head -n 60
  done
fi
exit $status
