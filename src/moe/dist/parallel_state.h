// ParallelState: the rank grid of a parallel mapping and this rank's process groups, with MoE
// parallel folding (docs/design.md "Parallel folding"; docs/algorithms.md). Attention layers use
// the dense grid TP x CP x DP x PP, MoE layers the expert grid ETP x EP x EDP x PP over the
// same ranks and the same PP. Ranks follow Megatron-Core's default order "tp-cp-ep-dp-pp"
// (first axis fastest), so a mapping means the same ranks here as there:
//   dense:  rank = tp + TP * (cp + CP * (dp + DP * pp)),    DP  = world / (TP * CP * PP)
//   expert: rank = etp + ETP * (ep + EP * (edp + EDP * pp)), EDP = world / (ETP * EP * PP)
// A group spans some axes of one grid (dp_cp spans cp and dp): its members vary those axes
// with the others fixed, listed with the fastest spanned axis fastest (dp_cp member
// i = cp + CP * dp); the groups of a kind are listed likewise by the fixed axes. This is
// Megatron's RankGenerator.get_ranks / generate_masked_orthogonal_rank_groups.
//
// Example, world 8, TP 2, EP 4, ETP 1: DP 4, EDP 2;
//   tp [0,1] [2,3] [4,5] [6,7]   dp [0,2,4,6] [1,3,5,7]
//   ep [0,1,2,3] [4,5,6,7]       edp [0,4] [1,5] [2,6] [3,7]   etp [0] ... [7]
#pragma once

#include <memory>
#include <vector>

#include "moe/dist/process_group.h"

namespace moe::dist {

// Megatron's flag names. Validated by resolve_parallel_sizes.
struct ParallelConfig {
  int tensor_model_parallel_size = 1;
  int context_parallel_size = 1;
  int pipeline_model_parallel_size = 1;
  int expert_model_parallel_size = 1;
  int expert_tensor_parallel_size = 0;  // 0 = same as tensor_model_parallel_size
};

// Every axis of both grids for one world size.
struct ParallelSizes {
  int world = 1;
  int tp = 1, cp = 1, dp = 1, pp = 1;  // dense grid
  int etp = 1, ep = 1, edp = 1;        // expert grid (same pp)
};

// Resolves expert_tensor_parallel_size = 0 and the data-parallel sizes; throws moe::Error
// naming the fields when a size is not positive or the world does not divide into a grid.
ParallelSizes resolve_parallel_sizes(int world_size, const ParallelConfig& config);

enum class GroupKind {
  tp,        // dense grid: tensor parallel
  cp,        // context parallel
  dp,        // data parallel (without CP)
  pp,        // pipeline parallel (the same in both grids)
  tp_cp,     // TP x CP
  dp_cp,     // DP x CP: dense gradient reduction
  tp_dp_cp,  // TP x DP x CP: one pipeline stage
  tp_pp,     // TP x PP: the model-parallel group
  etp,       // expert grid: expert tensor parallel
  ep,        // expert parallel: the all-to-all of token dispatch
  edp,       // expert data parallel: expert gradient reduction
  tp_ep,     // ETP x EP: allgather / flex dispatch
  tp_ep_pp,  // ETP x EP x PP: expert model parallel
};
inline constexpr GroupKind kAllGroupKinds[] = {
    GroupKind::tp,    GroupKind::cp,       GroupKind::dp,      GroupKind::pp,  GroupKind::tp_cp,
    GroupKind::dp_cp, GroupKind::tp_dp_cp, GroupKind::tp_pp,   GroupKind::etp, GroupKind::ep,
    GroupKind::edp,   GroupKind::tp_ep,    GroupKind::tp_ep_pp};
const char* group_kind_name(GroupKind kind);

using RankGroups = std::vector<std::vector<int>>;

// The groups over a grid with the given axis sizes (fastest first) that span the axes where
// `spans` is true: prod(sizes of spanned axes) ranks each, partitioning [0, prod(sizes)).
RankGroups orthogonal_rank_groups(const std::vector<int>& axis_sizes,
                                  const std::vector<bool>& spans);

// All groups of one kind for a world size and mapping (validated).
RankGroups rank_groups(int world_size, const ParallelConfig& config, GroupKind kind);

// This rank's groups: built collectively, so every member of `world` constructs its
// ParallelState with the same config at the same point. Ranks of the grid are ranks of `world`
// (usually the world group). Groups of different kinds with the same members share one
// ProcessGroup.
class ParallelState {
 public:
  ParallelState(std::shared_ptr<ProcessGroup> world, const ParallelConfig& config);

  const ParallelConfig& config() const { return config_; }
  const ParallelSizes& sizes() const { return sizes_; }
  const std::shared_ptr<ProcessGroup>& world() const { return world_; }

  const std::shared_ptr<ProcessGroup>& group(GroupKind kind) const;
  int rank(GroupKind kind) const { return group(kind)->rank(); }
  int size(GroupKind kind) const { return group(kind)->size(); }

  const std::shared_ptr<ProcessGroup>& tp() const { return group(GroupKind::tp); }
  const std::shared_ptr<ProcessGroup>& cp() const { return group(GroupKind::cp); }
  const std::shared_ptr<ProcessGroup>& dp() const { return group(GroupKind::dp); }
  const std::shared_ptr<ProcessGroup>& pp() const { return group(GroupKind::pp); }
  const std::shared_ptr<ProcessGroup>& tp_cp() const { return group(GroupKind::tp_cp); }
  const std::shared_ptr<ProcessGroup>& dp_cp() const { return group(GroupKind::dp_cp); }
  const std::shared_ptr<ProcessGroup>& tp_dp_cp() const { return group(GroupKind::tp_dp_cp); }
  const std::shared_ptr<ProcessGroup>& tp_pp() const { return group(GroupKind::tp_pp); }
  const std::shared_ptr<ProcessGroup>& etp() const { return group(GroupKind::etp); }
  const std::shared_ptr<ProcessGroup>& ep() const { return group(GroupKind::ep); }
  const std::shared_ptr<ProcessGroup>& edp() const { return group(GroupKind::edp); }
  const std::shared_ptr<ProcessGroup>& tp_ep() const { return group(GroupKind::tp_ep); }
  const std::shared_ptr<ProcessGroup>& tp_ep_pp() const { return group(GroupKind::tp_ep_pp); }

  int tp_rank() const { return rank(GroupKind::tp); }
  int cp_rank() const { return rank(GroupKind::cp); }
  int dp_rank() const { return rank(GroupKind::dp); }
  int pp_rank() const { return rank(GroupKind::pp); }
  int tp_cp_rank() const { return rank(GroupKind::tp_cp); }
  int dp_cp_rank() const { return rank(GroupKind::dp_cp); }
  int tp_dp_cp_rank() const { return rank(GroupKind::tp_dp_cp); }
  int tp_pp_rank() const { return rank(GroupKind::tp_pp); }
  int etp_rank() const { return rank(GroupKind::etp); }
  int ep_rank() const { return rank(GroupKind::ep); }
  int edp_rank() const { return rank(GroupKind::edp); }
  int tp_ep_rank() const { return rank(GroupKind::tp_ep); }
  int tp_ep_pp_rank() const { return rank(GroupKind::tp_ep_pp); }

  int tp_size() const { return sizes_.tp; }
  int cp_size() const { return sizes_.cp; }
  int dp_size() const { return sizes_.dp; }
  int pp_size() const { return sizes_.pp; }
  int tp_cp_size() const { return sizes_.tp * sizes_.cp; }
  int dp_cp_size() const { return sizes_.dp * sizes_.cp; }
  int tp_dp_cp_size() const { return sizes_.tp * sizes_.dp * sizes_.cp; }
  int tp_pp_size() const { return sizes_.tp * sizes_.pp; }
  int etp_size() const { return sizes_.etp; }
  int ep_size() const { return sizes_.ep; }
  int edp_size() const { return sizes_.edp; }
  int tp_ep_size() const { return sizes_.etp * sizes_.ep; }
  int tp_ep_pp_size() const { return sizes_.etp * sizes_.ep * sizes_.pp; }

 private:
  std::shared_ptr<ProcessGroup> world_;
  ParallelConfig config_;
  ParallelSizes sizes_;
  std::vector<std::shared_ptr<ProcessGroup>> groups_;  // indexed by GroupKind
};

}  // namespace moe::dist
