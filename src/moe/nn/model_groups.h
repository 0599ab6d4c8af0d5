// The process groups a model's modules talk over, passed in (never read from globals): tensor
// (and sequence) parallelism for the dense parts, the expert grid's groups for the MoE layers
// (parallel folding, docs/design.md). Default: this rank alone.
#pragma once

#include <utility>

#include "moe/dist/parallel_state.h"
#include "moe/nn/context_parallel.h"
#include "moe/nn/moe_groups.h"
#include "moe/nn/tensor_parallel.h"

namespace moe::nn {

struct ModelGroups {
  ModelGroups() = default;
  // Expert parallelism alone (no tensor parallelism).
  ModelGroups(MoEGroups moe_groups) : moe(std::move(moe_groups)) {}  // NOLINT: implicit

  TensorParallel tp;   // attention, dense MLPs, shared experts, embedding, output layer
  ContextParallel cp;  // the sequence split: attention's key/value exchange, the loss
  MoEGroups moe;       // routers, dispatchers, routed experts
};

// The groups of a parallel mapping: its TP group (null when TP is 1) with --sequence-parallel,
// its CP group (null when CP is 1) with --cp-comm-type, and moe_groups_of(state).
ModelGroups model_groups_of(const dist::ParallelState& state, bool sequence_parallel,
                            ContextParallel::Exchange cp_exchange = ContextParallel::Exchange::p2p);

}  // namespace moe::nn
