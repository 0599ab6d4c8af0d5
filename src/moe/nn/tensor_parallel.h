// Tensor and sequence parallelism of the dense parts (Megatron-Core's tensor_parallel package;
// docs/distributed-training.md "Tensor and sequence parallelism").
//
// A TP group of size P splits each dense matrix: a column-parallel layer (q/k/v projections,
// the MLPs' fc1, the vocabulary of the embedding and the output layer) holds 1/P of the
// output rows of its weight, a row-parallel layer (attention's o_proj, the MLPs' fc2) 1/P of
// its input columns, so attention runs on 1/P of the heads and an MLP on 1/P of its width.
// Between them the activations move through four maps, each a forward with its backward
// (Megatron's mappings.py). Tokens are rows [S, B, ...] (sequence-major), so a sequence shard
// is a contiguous block of rows:
//
//                        without --sequence-parallel      with --sequence-parallel
//   enter (before a      fwd: identity                    fwd: all-gather the sequence
//   column-parallel)     bwd: all-reduce                  bwd: reduce-scatter the sequence
//   exit (after a        fwd: all-reduce                  fwd: reduce-scatter the sequence
//   row-parallel)        bwd: identity                    bwd: all-gather the sequence
//
// Without sequence parallelism the activations between the blocks (norms, residuals, dropout)
// are whole on every rank; with it each rank holds the rows [r S/P, (r + 1) S/P) of the
// sequence, so their memory falls by P (Korthikanti et al. 2022, "Reducing Activation
// Recomputation in Large Transformer Models").
//
// Replicated parameters (norm weights, the router, the shared expert's gate, MTP's eh_proj,
// MLA's down projections) have a copy on every TP rank. Their gradient is the same on every
// rank when every rank saw the same rows, and a partial sum when each saw its own rows
// (sequence parallelism; the MoE layer, which always routes a sequence shard; QK-norm, which
// sees its rank's heads): ParamLayout::tp_partial_grad, summed over TP by the data-parallel
// wrapper before the data-parallel reduction (Megatron's _allreduce_layernorm_grads).
#pragma once

#include <cstdint>
#include <memory>

#include "moe/dist/process_group.h"
#include "moe/nn/parameter.h"

namespace moe::nn {

struct TensorParallel {
  std::shared_ptr<dist::ProcessGroup> group;  // the TP group; null: this rank alone
  bool sequence_parallel = false;             // --sequence-parallel

  int size() const { return group ? group->size() : 1; }
  int rank() const { return group ? group->rank() : 0; }
  bool active() const { return size() > 1; }
  // The part of `n` this rank holds (throws unless P divides n; `what` names it).
  int64_t local(int64_t n, const char* what) const;
};

// The maps above; x has the sequence (or token rows in [S, B] order) as dim 0. Identity and
// nothing else when TP is 1.
Tensor tp_enter_forward(const Tensor& x, const TensorParallel& tp);
Tensor tp_enter_backward(const Tensor& dx, const TensorParallel& tp);
Tensor tp_exit_forward(const Tensor& y, const TensorParallel& tp);
Tensor tp_exit_backward(const Tensor& dy, const TensorParallel& tp);

// The sequence maps themselves (whatever tp.sequence_parallel says): this rank's block of rows
// (no communication) and every rank's blocks concatenated (all-gather). dim 0 must divide by the
// group's size where it splits.
Tensor sequence_shard(const Tensor& x, const TensorParallel& tp);
Tensor sequence_gather(const Tensor& x, const TensorParallel& tp);

// What a column-parallel block keeps of its input for the backward's weight gradients: under
// sequence parallelism this rank's shard `x` (the backward gathers it again, as Megatron does, so
// the block's saved input falls by P), else the entered input `x_all` itself.
inline Tensor tp_input_to_save(const Tensor& x, const Tensor& x_all, const TensorParallel& tp) {
  return tp.sequence_parallel && tp.active() ? x : x_all;
}
// The entered input again from what tp_input_to_save kept.
Tensor tp_saved_input(const Tensor& saved, const TensorParallel& tp);

// A collective's result in flight: get() waits for it (the first time) and returns it.
class PendingTensor {
 public:
  PendingTensor() = default;
  PendingTensor(Tensor value, std::unique_ptr<dist::Work> work)
      : value_(std::move(value)), work_(std::move(work)) {}
  Tensor get();

 private:
  Tensor value_;
  std::unique_ptr<dist::Work> work_;
};
// The backward's overlap (Megatron's): a block starts gathering its saved input shard
// (tp_saved_input) before its input-gradient GEMMs, and starts reducing the input gradient
// (tp_enter_backward) before its weight-gradient GEMMs, which need the gathered input but not
// the reduction; each waits only where its result is read.
PendingTensor tp_saved_input_start(const Tensor& saved, const TensorParallel& tp);
PendingTensor tp_enter_backward_start(const Tensor& dx, const TensorParallel& tp);

// Marks p as this rank's block of a TP split: the global tensor `global` is viewed as `view`
// (same numel) and split evenly along `split_dim` of the view; p.value is reshaped to keep its
// own shape. Nothing happens when TP is 1 (the value is the whole tensor).
void set_tp_split(Parameter& p, const Shape& global, const Shape& view, int split_dim,
                  const TensorParallel& tp);
// Marks p as replicated over TP (partial_grad: see above). Nothing happens when TP is 1.
void set_tp_replicated(Parameter& p, const TensorParallel& tp, bool partial_grad);

// Fills p.value with normal(mean, stddev) draws of the counter-based generator (core/rng.h) at
// the elements' global indices, read from p's layout: the values the whole tensor would hold
// in this rank's box, so every mapping initialises the same model.
void fill_normal_box(Parameter& p, uint64_t seed, double mean, double stddev);

}  // namespace moe::nn
