// The rank grid (parallel_state.h): sizes, group lists, and this rank's subgroups.
#include "moe/dist/parallel_state.h"

#include <algorithm>
#include <map>

#include "moe/core/error.h"

namespace moe::dist {
namespace {

// The grid and the axes a kind spans. Dense axes: tp, cp, dp, pp; expert axes: etp, ep, edp, pp
// (Megatron's order tp-cp-ep-dp-pp with ep = 1 in the dense grid and cp = 1 in the expert one).
struct GridSpan {
  std::vector<int> axis_sizes;
  std::vector<bool> spans;
};

GridSpan grid_span(const ParallelSizes& s, GroupKind kind) {
  const std::vector<int> dense = {s.tp, s.cp, s.dp, s.pp};
  const std::vector<int> expert = {s.etp, s.ep, s.edp, s.pp};
  switch (kind) {
    case GroupKind::tp:
      return {dense, {true, false, false, false}};
    case GroupKind::cp:
      return {dense, {false, true, false, false}};
    case GroupKind::dp:
      return {dense, {false, false, true, false}};
    case GroupKind::pp:
      return {dense, {false, false, false, true}};
    case GroupKind::tp_cp:
      return {dense, {true, true, false, false}};
    case GroupKind::dp_cp:
      return {dense, {false, true, true, false}};
    case GroupKind::tp_dp_cp:
      return {dense, {true, true, true, false}};
    case GroupKind::tp_pp:
      return {dense, {true, false, false, true}};
    case GroupKind::etp:
      return {expert, {true, false, false, false}};
    case GroupKind::ep:
      return {expert, {false, true, false, false}};
    case GroupKind::edp:
      return {expert, {false, false, true, false}};
    case GroupKind::tp_ep:
      return {expert, {true, true, false, false}};
    case GroupKind::tp_ep_pp:
      return {expert, {true, true, false, true}};
  }
  MOE_FAIL("unknown GroupKind ", static_cast<int>(kind));
}

// ParallelState stores its groups indexed by GroupKind, walking kAllGroupKinds.
constexpr bool kinds_in_enum_order() {
  int i = 0;
  for (GroupKind kind : kAllGroupKinds)
    if (static_cast<int>(kind) != i++) return false;
  return true;
}
static_assert(kinds_in_enum_order(), "kAllGroupKinds must list GroupKind in declaration order");

}  // namespace

const char* group_kind_name(GroupKind kind) {
  switch (kind) {
    case GroupKind::tp:
      return "tp";
    case GroupKind::cp:
      return "cp";
    case GroupKind::dp:
      return "dp";
    case GroupKind::pp:
      return "pp";
    case GroupKind::tp_cp:
      return "tp_cp";
    case GroupKind::dp_cp:
      return "dp_cp";
    case GroupKind::tp_dp_cp:
      return "tp_dp_cp";
    case GroupKind::tp_pp:
      return "tp_pp";
    case GroupKind::etp:
      return "etp";
    case GroupKind::ep:
      return "ep";
    case GroupKind::edp:
      return "edp";
    case GroupKind::tp_ep:
      return "tp_ep";
    case GroupKind::tp_ep_pp:
      return "tp_ep_pp";
  }
  return "?";
}

ParallelSizes resolve_parallel_sizes(int world_size, const ParallelConfig& c) {
  MOE_CHECK(world_size >= 1, "parallel config: world size must be at least 1, got ", world_size);
  MOE_CHECK(c.tensor_model_parallel_size >= 1,
            "parallel config: tensor_model_parallel_size must be at least 1, got ",
            c.tensor_model_parallel_size);
  MOE_CHECK(c.context_parallel_size >= 1,
            "parallel config: context_parallel_size must be at least 1, got ",
            c.context_parallel_size);
  MOE_CHECK(c.pipeline_model_parallel_size >= 1,
            "parallel config: pipeline_model_parallel_size must be at least 1, got ",
            c.pipeline_model_parallel_size);
  MOE_CHECK(c.expert_model_parallel_size >= 1,
            "parallel config: expert_model_parallel_size must be at least 1, got ",
            c.expert_model_parallel_size);
  MOE_CHECK(c.expert_tensor_parallel_size >= 0,
            "parallel config: expert_tensor_parallel_size must be at least 1 (or 0 for the "
            "tensor_model_parallel_size), got ",
            c.expert_tensor_parallel_size);
  ParallelSizes s;
  s.world = world_size;
  s.tp = c.tensor_model_parallel_size;
  s.cp = c.context_parallel_size;
  s.pp = c.pipeline_model_parallel_size;
  s.ep = c.expert_model_parallel_size;
  s.etp = c.expert_tensor_parallel_size == 0 ? s.tp : c.expert_tensor_parallel_size;
  // 64-bit products: sizes from the command line must not overflow into a false "divides".
  const int64_t dense = int64_t{s.tp} * s.cp * s.pp;
  MOE_CHECK(world_size % dense == 0, "parallel config: world size ", world_size,
            " is not divisible by tensor_model_parallel_size (", s.tp,
            ") x context_parallel_size (", s.cp, ") x pipeline_model_parallel_size (", s.pp,
            ") = ", dense);
  const int64_t expert = int64_t{s.etp} * s.ep * s.pp;
  MOE_CHECK(world_size % expert == 0, "parallel config: world size ", world_size,
            " is not divisible by expert_tensor_parallel_size (", s.etp,
            (c.expert_tensor_parallel_size == 0 ? ", from tensor_model_parallel_size" : ""),
            ") x expert_model_parallel_size (", s.ep, ") x pipeline_model_parallel_size (", s.pp,
            ") = ", expert);
  s.dp = static_cast<int>(world_size / dense);
  s.edp = static_cast<int>(world_size / expert);
  return s;
}

RankGroups orthogonal_rank_groups(const std::vector<int>& axis_sizes,
                                  const std::vector<bool>& spans) {
  MOE_CHECK(axis_sizes.size() == spans.size(), "orthogonal_rank_groups: ", axis_sizes.size(),
            " axis sizes but ", spans.size(), " span flags");
  // rank = sum over axes of index[a] * stride[a], stride = prefix product of the sizes.
  std::vector<int> spanned_size, spanned_stride, fixed_size, fixed_stride;
  int stride = 1;
  for (size_t a = 0; a < axis_sizes.size(); ++a) {
    MOE_CHECK(axis_sizes[a] >= 1, "orthogonal_rank_groups: axis ", a, " has size ", axis_sizes[a]);
    (spans[a] ? spanned_size : fixed_size).push_back(axis_sizes[a]);
    (spans[a] ? spanned_stride : fixed_stride).push_back(stride);
    stride *= axis_sizes[a];
  }
  // Rank offset of the i-th combination of the given axes, enumerated fastest axis first.
  auto offset_of = [](int i, const std::vector<int>& sizes, const std::vector<int>& strides) {
    int offset = 0;
    for (size_t a = 0; a < sizes.size(); ++a) {
      offset += (i % sizes[a]) * strides[a];
      i /= sizes[a];
    }
    return offset;
  };
  int group_size = 1, num_groups = 1;
  for (int n : spanned_size) group_size *= n;
  for (int n : fixed_size) num_groups *= n;
  RankGroups groups(static_cast<size_t>(num_groups));
  for (int g = 0; g < num_groups; ++g) {
    const int base = offset_of(g, fixed_size, fixed_stride);
    for (int m = 0; m < group_size; ++m)
      groups[static_cast<size_t>(g)].push_back(base + offset_of(m, spanned_size, spanned_stride));
  }
  return groups;
}

RankGroups rank_groups(int world_size, const ParallelConfig& config, GroupKind kind) {
  const GridSpan g = grid_span(resolve_parallel_sizes(world_size, config), kind);
  return orthogonal_rank_groups(g.axis_sizes, g.spans);
}

ParallelState::ParallelState(std::shared_ptr<ProcessGroup> world, const ParallelConfig& config)
    : world_(std::move(world)), config_(config) {
  MOE_CHECK(world_ != nullptr, "ParallelState: no world process group");
  sizes_ = resolve_parallel_sizes(world_->size(), config_);
  const int me = world_->rank();
  // One split of the world per kind (a collective: every member splits for every kind, in the
  // same order). Kinds with the same partition of the world share its groups; partitions into
  // translates of one list are unique, so equal groups for this rank mean equal partitions.
  std::map<RankGroups, std::shared_ptr<ProcessGroup>> by_partition;
  for (GroupKind kind : kAllGroupKinds) {
    const GridSpan g = grid_span(sizes_, kind);
    RankGroups partition = orthogonal_rank_groups(g.axis_sizes, g.spans);
    RankGroups key = partition;
    std::sort(key.begin(), key.end());
    auto it = by_partition.find(key);
    if (it == by_partition.end()) it = by_partition.emplace(key, world_->split(partition)).first;
    MOE_CHECK(it->second != nullptr, "ParallelState: rank ", me, " is in no ",
              group_kind_name(kind), " group");
    groups_.push_back(it->second);
  }
}

const std::shared_ptr<ProcessGroup>& ParallelState::group(GroupKind kind) const {
  const auto index = static_cast<size_t>(kind);
  MOE_CHECK(index < groups_.size(), "ParallelState: unknown GroupKind ", static_cast<int>(kind));
  return groups_[index];
}

}  // namespace moe::dist
