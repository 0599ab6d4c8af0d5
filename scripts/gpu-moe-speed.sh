#!/usr/bin/env bash
# The MoE layer's speed on an H200, the grouped-GEMM backends side by side, with the PyTorch peer
# timed in the same call (docs/perf.md takes its ratios from one run on one machine):
#   - the grouped-GEMM and MoE-layer gpu tests (the cutlass backend against the CPU reference, and
#     the one-rank layer captured as one CUDA graph);
#   - `moe bench moe-layer` at T = 8192, balanced and skewed routing, automatic and cutlass;
#   - PEERS/moe_layer_peers.py (torch._grouped_mm and transformers) on the same shapes, if given;
#   - the training-step benchmark (scripts/train-bench.sh) with each backend.
# Logs go to LOGDIR; a build unpacked as scripts/gpu-pack.sh packs it.
#   scripts/gpu-moe-speed.sh BUILD LOGDIR [PEERS]
set -uo pipefail
build=$1 logdir=$2 peers=${3:-}
mkdir -p "$logdir"
export LD_LIBRARY_PATH="$build/deps:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logdir/gpu.txt"
status=0
timeout 200 "$build/tests/moe_gpu_tests" --gtest_filter='GroupedGemm*:MoELayer*' \
  >"$logdir/tests.log" 2>&1 || status=1
grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests ran|Failure" "$logdir/tests.log" | head -n 30
timeout 300 "$build/moe" bench moe-layer --tokens 8192 --routings balanced skewed --iters 8 \
  --warmup 3 --no-stages --grouped-gemm-backends automatic cutlass 2>&1 |
  tee "$logdir/bench_moe_layer.log" | grep "^|" || status=1
if [ -n "$peers" ]; then
  timeout 400 python3 "$peers/moe_layer_peers.py" --impls torch_grouped_mm --iters 8 \
    --json "$logdir/peers.json" >"$logdir/peers.log" 2>&1 || status=1
  tail -n 20 "$logdir/peers.log"
fi
for backend in automatic cutlass; do
  MOE_TRAIN_FLAGS="--moe-grouped-gemm-backend $backend" timeout 600 \
    bash "$(dirname "$0")/train-bench.sh" "$build/moe" "$logdir/train_$backend" |
    tee "$logdir/train_$backend.md" || status=1
done
exit $status
