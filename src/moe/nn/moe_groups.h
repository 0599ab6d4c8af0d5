// The process groups an MoE layer talks over, passed in (never read from globals). A null
// group means "this rank alone" (size 1). With parallel folding (docs/design.md) the expert groups
// come from the expert grid ETP x EP x EDP and the token groups from the dense grid.
#pragma once

#include <memory>

#include "moe/dist/parallel_state.h"
#include "moe/dist/process_group.h"

namespace moe::nn {

struct MoEGroups {
  std::shared_ptr<dist::ProcessGroup> ep;     // expert parallel: ranks holding other experts
  std::shared_ptr<dist::ProcessGroup> etp;    // expert tensor parallel: shards of one expert
  std::shared_ptr<dist::ProcessGroup> tp_ep;  // ETP x EP (etp fastest): the allgather group
  std::shared_ptr<dist::ProcessGroup> tp_cp;  // ranks splitting one sequence: aux-loss counts
  std::shared_ptr<dist::ProcessGroup>
      tp_dp_cp;  // one model replica's data: global aux, expert bias
  // The data-parallel size (the model replicas: DP, without TP and CP), by which the trainer
  // divides each micro-batch's loss; the global aux loss, whose every rank's share is of the
  // whole batch's statistics, scales its gradient back by it.
  int dp_size = 1;

  static int size_of(const std::shared_ptr<dist::ProcessGroup>& g) { return g ? g->size() : 1; }
  static int rank_of(const std::shared_ptr<dist::ProcessGroup>& g) { return g ? g->rank() : 0; }
  int ep_size() const { return size_of(ep); }
  int ep_rank() const { return rank_of(ep); }
  int etp_size() const { return size_of(etp); }
  int etp_rank() const { return rank_of(etp); }
};

// The groups of a parallel mapping's ParallelState: its ep, etp, tp_ep, tp_cp and tp_dp_cp
// groups (a group of one rank as null, "this rank alone") and its DP size.
MoEGroups moe_groups_of(const dist::ParallelState& state);

}  // namespace moe::nn
