#!/usr/bin/env bash
# The distributed runtime on a GPU machine, from a build unpacked there (scripts/gpu-pack.sh):
#   - every gpu-labelled test, among them the runtime's (events, the allocator's record_stream,
#     the NCCL backend on a world of one, the backend suite on Local threads with CUDA tensors);
#   - the backend suite on MPI processes sharing GPU 0 (2 and 4 ranks), CUDA tensors staged
#     through pinned memory;
#   - the parallel-equals-serial training suite on MPI processes sharing GPU 0 (2 and 4 ranks,
#     bf16), as ctest's gpu;mpi entries mpi_training_cuda_np2 / np4 run it;
#   - `moe train` on 2 MPI ranks sharing GPU 0 beside one rank (scripts/gpu-train-ranks.sh): EP 2,
#     TP 2 with sequence parallelism, CP 2 (ring and a2a), PP 2 with 2 virtual stages, EP 2 with
#     the sync-free exchange (--moe-expert-rank-capacity-factor 1.0);
#   - with two or more GPUs: the multigpu suite (one NCCL process per GPU: the backend suite and
#     the training suite) and `moe train` on every GPU over NCCL beside one rank;
#   - `moe bench comm` on NCCL over every GPU (moe launch), and on MPI ranks sharing GPU 0.
# Logs go to LOGDIR; the exit status is non-zero when any test failed. PART picks what runs, so
# that each call fits ten minutes: gpu (the gpu tests, which scripts/gpu-suite.sh runs too), mpi
# (the two suites on MPI ranks sharing GPU 0), train (`moe train` on ranks, the multigpu suite
# when there are GPUs for it), bench (comm); dist = mpi, train and bench; all = everything.
#   scripts/gpu-dist-suite.sh BUILD LOGDIR [all|dist|gpu|mpi|train|bench]
set -uo pipefail
build=$1 logdir=$2 what=${3:-all}
mkdir -p "$logdir"
# shellcheck source=scripts/gpu-env.sh
source "$(dirname "$0")/gpu-env.sh"
wants() {  # wants PART: whether this call runs PART
  [ "$what" = all ] || [ "$what" = "$1" ] || { [ "$what" = dist ] && [ "$1" != gpu ]; }
}

# Every gpu test: the allocator under them all changed with record_stream.
if wants gpu; then
  step gpu_tests timeout 330 "$build/tests/moe_gpu_tests"
  grep -hE "^\[  (FAILED|PASSED|SKIPPED) |tests ran" "$logdir/gpu_tests.log" | head -n 40
fi
if wants mpi; then
  for np in 2 4; do
    step "mpi_shared_gpu_np$np" timeout 100 mpirun "${mpirun_flags[@]}" -np $np \
      "$build/tests/moe_mpi_tests" --device cuda
  done
  for np in 2 4; do
    step "mpi_training_shared_gpu_np$np" timeout 200 mpirun "${mpirun_flags[@]}" -np $np \
      "$build/tests/moe_mpi_training_tests" --device cuda
  done
fi
if wants train; then
  ranks=$(dirname "$0")/gpu-train-ranks.sh
  step train_ranks_shared_gpu bash "$ranks" "$build" "$logdir/train_mpi"
  step train_ranks_shared_gpu_tp2_sp bash "$ranks" "$build" "$logdir/train_mpi_tp" mpi 2 \
    --tensor-model-parallel-size 2 --sequence-parallel
  step train_ranks_shared_gpu_cp2 bash "$ranks" "$build" "$logdir/train_mpi_cp" mpi 2 \
    --context-parallel-size 2
  step train_ranks_shared_gpu_cp2_a2a bash "$ranks" "$build" "$logdir/train_mpi_cp_a2a" mpi 2 \
    --context-parallel-size 2 --cp-comm-type a2a
  step train_ranks_shared_gpu_pp2 bash "$ranks" "$build" "$logdir/train_mpi_pp" mpi 2 \
    --pipeline-model-parallel-size 2 --num-virtual-stages-per-pipeline-rank 2 --pipeline-timeline
  step train_ranks_shared_gpu_ep2_slots bash "$ranks" "$build" "$logdir/train_mpi_slots" mpi 2 \
    --expert-model-parallel-size 2 --moe-token-dispatcher-type alltoall \
    --moe-expert-rank-capacity-factor 1.0
  if [ "$gpus" -ge 2 ]; then
    step multigpu_nccl timeout 280 "$build/tests/moe_nccl_tests" --ranks "$gpus"
    step train_ranks_nccl bash "$ranks" "$build" "$logdir/train_nccl" nccl "$gpus"
  fi
fi
if wants bench; then
  step bench_comm_nccl timeout 200 "$build/moe" launch --nproc-per-node "$gpus" bench comm \
    --device cuda --distributed-backend nccl --max-size 1G --jsonl "$logdir/bench_comm_nccl.jsonl"
  step bench_comm_mpi_shared timeout 200 mpirun "${mpirun_flags[@]}" -np 2 "$build/moe" bench \
    comm --device cuda --distributed-backend mpi --max-size 64M
  grep -h "" "$logdir"/bench_comm_*.log | head -n 80
fi
exit $status
