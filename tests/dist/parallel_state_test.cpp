// ParallelState: the rank lists of every group kind for several mappings, derived by hand from
// Megatron's order tp-cp-ep-dp-pp (dense rank = tp + TP (cp + CP (dp + DP pp)), expert
// rank = etp + ETP (ep + EP (edp + EDP pp))); the structure of every group for many mappings
// (each rank in exactly one group of a kind, members share the fixed coordinates and are
// ordered by the spanned ones); config errors; and the groups ParallelState builds on the
// Local backend.
#include "moe/dist/parallel_state.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/dist/local_backend.h"

namespace moe::dist {
namespace {

using Expected = std::map<GroupKind, RankGroups>;

RankGroups singletons(int world) {
  RankGroups groups;
  for (int r = 0; r < world; ++r) groups.push_back({r});
  return groups;
}

RankGroups whole(int world) {
  std::vector<int> all(static_cast<size_t>(world));
  std::iota(all.begin(), all.end(), 0);
  return {all};
}

ParallelConfig mapping(int tp, int cp, int pp, int ep, int etp) {
  ParallelConfig c;
  c.tensor_model_parallel_size = tp;
  c.context_parallel_size = cp;
  c.pipeline_model_parallel_size = pp;
  c.expert_model_parallel_size = ep;
  c.expert_tensor_parallel_size = etp;
  return c;
}

// World 8, TP 2, EP 4, ETP 1: DP 4, EDP 2.
Expected world8_tp2_ep4_etp1() {
  const RankGroups tp = {{0, 1}, {2, 3}, {4, 5}, {6, 7}};
  const RankGroups dp = {{0, 2, 4, 6}, {1, 3, 5, 7}};
  const RankGroups ep = {{0, 1, 2, 3}, {4, 5, 6, 7}};
  return {{GroupKind::tp, tp},
          {GroupKind::cp, singletons(8)},
          {GroupKind::dp, dp},
          {GroupKind::pp, singletons(8)},
          {GroupKind::tp_cp, tp},
          {GroupKind::dp_cp, dp},
          {GroupKind::tp_dp_cp, whole(8)},
          {GroupKind::tp_pp, tp},
          {GroupKind::etp, singletons(8)},
          {GroupKind::ep, ep},
          {GroupKind::edp, {{0, 4}, {1, 5}, {2, 6}, {3, 7}}},
          {GroupKind::tp_ep, ep},
          {GroupKind::tp_ep_pp, ep}};
}

// World 16, TP 2, CP 2, PP 2, EP 4, ETP 1: DP 2, EDP 2.
Expected world16_tp2_cp2_pp2_ep4_etp1() {
  const RankGroups ep = {{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}};
  return {{GroupKind::tp, {{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}}},
          {GroupKind::cp, {{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}, {12, 14}, {13, 15}}},
          {GroupKind::dp, {{0, 4}, {1, 5}, {2, 6}, {3, 7}, {8, 12}, {9, 13}, {10, 14}, {11, 15}}},
          {GroupKind::pp, {{0, 8}, {1, 9}, {2, 10}, {3, 11}, {4, 12}, {5, 13}, {6, 14}, {7, 15}}},
          {GroupKind::tp_cp, {{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}}},
          {GroupKind::dp_cp, {{0, 2, 4, 6}, {1, 3, 5, 7}, {8, 10, 12, 14}, {9, 11, 13, 15}}},
          {GroupKind::tp_dp_cp, {{0, 1, 2, 3, 4, 5, 6, 7}, {8, 9, 10, 11, 12, 13, 14, 15}}},
          {GroupKind::tp_pp, {{0, 1, 8, 9}, {2, 3, 10, 11}, {4, 5, 12, 13}, {6, 7, 14, 15}}},
          {GroupKind::etp, singletons(16)},
          {GroupKind::ep, ep},
          {GroupKind::edp, {{0, 4}, {1, 5}, {2, 6}, {3, 7}, {8, 12}, {9, 13}, {10, 14}, {11, 15}}},
          {GroupKind::tp_ep, ep},
          {GroupKind::tp_ep_pp, {{0, 1, 2, 3, 8, 9, 10, 11}, {4, 5, 6, 7, 12, 13, 14, 15}}}};
}

// World 8, TP 2, EP 2, ETP = TP (0 in the config): DP 4, EDP 2.
Expected world8_tp2_ep2_etp_default() {
  const RankGroups tp = {{0, 1}, {2, 3}, {4, 5}, {6, 7}};
  const RankGroups dp = {{0, 2, 4, 6}, {1, 3, 5, 7}};
  const RankGroups tp_ep = {{0, 1, 2, 3}, {4, 5, 6, 7}};
  return {{GroupKind::tp, tp},
          {GroupKind::cp, singletons(8)},
          {GroupKind::dp, dp},
          {GroupKind::pp, singletons(8)},
          {GroupKind::tp_cp, tp},
          {GroupKind::dp_cp, dp},
          {GroupKind::tp_dp_cp, whole(8)},
          {GroupKind::tp_pp, tp},
          {GroupKind::etp, tp},
          {GroupKind::ep, {{0, 2}, {1, 3}, {4, 6}, {5, 7}}},
          {GroupKind::edp, {{0, 4}, {1, 5}, {2, 6}, {3, 7}}},
          {GroupKind::tp_ep, tp_ep},
          {GroupKind::tp_ep_pp, tp_ep}};
}

// World 8, TP 4, EP 8, ETP 1: experts folded over the TP and DP ranks; DP 2, EDP 1.
Expected world8_tp4_ep8_etp1() {
  const RankGroups tp = {{0, 1, 2, 3}, {4, 5, 6, 7}};
  return {{GroupKind::tp, tp},
          {GroupKind::cp, singletons(8)},
          {GroupKind::dp, {{0, 4}, {1, 5}, {2, 6}, {3, 7}}},
          {GroupKind::pp, singletons(8)},
          {GroupKind::tp_cp, tp},
          {GroupKind::dp_cp, {{0, 4}, {1, 5}, {2, 6}, {3, 7}}},
          {GroupKind::tp_dp_cp, whole(8)},
          {GroupKind::tp_pp, tp},
          {GroupKind::etp, singletons(8)},
          {GroupKind::ep, whole(8)},
          {GroupKind::edp, singletons(8)},
          {GroupKind::tp_ep, whole(8)},
          {GroupKind::tp_ep_pp, whole(8)}};
}

// World 12, TP 2, PP 3, EP 2, ETP 1: DP 2, EDP 2.
Expected world12_tp2_pp3_ep2_etp1() {
  const RankGroups tp = {{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}};
  const RankGroups dp = {{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}};
  return {{GroupKind::tp, tp},
          {GroupKind::cp, singletons(12)},
          {GroupKind::dp, dp},
          {GroupKind::pp, {{0, 4, 8}, {1, 5, 9}, {2, 6, 10}, {3, 7, 11}}},
          {GroupKind::tp_cp, tp},
          {GroupKind::dp_cp, dp},
          {GroupKind::tp_dp_cp, {{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}}},
          {GroupKind::tp_pp, {{0, 1, 4, 5, 8, 9}, {2, 3, 6, 7, 10, 11}}},
          {GroupKind::etp, singletons(12)},
          {GroupKind::ep, tp},
          {GroupKind::edp, dp},
          {GroupKind::tp_ep, tp},
          {GroupKind::tp_ep_pp, {{0, 1, 4, 5, 8, 9}, {2, 3, 6, 7, 10, 11}}}};
}

struct Case {
  const char* name;
  int world;
  ParallelConfig config;
  Expected expected;
};

std::vector<Case> hand_derived_cases() {
  return {
      {"world8_tp2_ep4_etp1", 8, mapping(2, 1, 1, 4, 1), world8_tp2_ep4_etp1()},
      {"world16_tp2_cp2_pp2_ep4_etp1", 16, mapping(2, 2, 2, 4, 1), world16_tp2_cp2_pp2_ep4_etp1()},
      {"world8_tp2_ep2_etp_default", 8, mapping(2, 1, 1, 2, 0), world8_tp2_ep2_etp_default()},
      {"world8_tp4_ep8_etp1", 8, mapping(4, 1, 1, 8, 1), world8_tp4_ep8_etp1()},
      {"world12_tp2_pp3_ep2_etp1", 12, mapping(2, 1, 3, 2, 1), world12_tp2_pp3_ep2_etp1()}};
}

TEST(ParallelState, GroupListsMatchHandDerivedMegatronLists) {
  for (const Case& c : hand_derived_cases()) {
    for (GroupKind kind : kAllGroupKinds) {
      SCOPED_TRACE(std::string(c.name) + " " + group_kind_name(kind));
      EXPECT_EQ(rank_groups(c.world, c.config, kind), c.expected.at(kind));
    }
  }
}

TEST(ParallelState, ResolvedSizes) {
  ParallelSizes s = resolve_parallel_sizes(16, mapping(2, 2, 2, 4, 1));
  EXPECT_EQ(s.world, 16);
  EXPECT_EQ(s.tp, 2);
  EXPECT_EQ(s.cp, 2);
  EXPECT_EQ(s.pp, 2);
  EXPECT_EQ(s.dp, 2);
  EXPECT_EQ(s.etp, 1);
  EXPECT_EQ(s.ep, 4);
  EXPECT_EQ(s.edp, 2);
  s = resolve_parallel_sizes(8, mapping(2, 1, 1, 2, 0));  // ETP 0 means ETP = TP
  EXPECT_EQ(s.etp, 2);
  EXPECT_EQ(s.edp, 2);
  EXPECT_EQ(s.dp, 4);
  s = resolve_parallel_sizes(1, ParallelConfig{});
  EXPECT_EQ(s.dp, 1);
  EXPECT_EQ(s.edp, 1);
}

// Coordinates of a rank on a grid (fastest axis first).
std::vector<int> coords(int rank, const std::vector<int>& sizes) {
  std::vector<int> c;
  for (int n : sizes) {
    c.push_back(rank % n);
    rank /= n;
  }
  return c;
}

// For every kind of many mappings: the groups partition the world, have the expected count
// and size, their members share the coordinates the kind does not span, and member i has the
// spanned coordinates whose mixed-radix value (fastest first) is i.
TEST(ParallelState, GroupsPartitionTheWorldInGridOrder) {
  int mappings = 0;
  for (int world : {1, 2, 4, 6, 8, 12, 16, 24}) {
    for (int tp : {1, 2, 3, 4})
      for (int cp : {1, 2})
        for (int pp : {1, 2, 3})
          for (int ep : {1, 2, 4, 8})
            for (int etp : {0, 1, 2}) {
              const ParallelConfig config = mapping(tp, cp, pp, ep, etp);
              const int e = etp == 0 ? tp : etp;
              if (world % (tp * cp * pp) != 0 || world % (e * ep * pp) != 0) continue;
              ++mappings;
              const ParallelSizes s = resolve_parallel_sizes(world, config);
              const std::vector<int> dense = {s.tp, s.cp, s.dp, s.pp};
              const std::vector<int> expert = {s.etp, s.ep, s.edp, s.pp};
              const std::map<GroupKind, std::pair<std::vector<int>, std::vector<bool>>> spans = {
                  {GroupKind::tp, {dense, {1, 0, 0, 0}}},
                  {GroupKind::cp, {dense, {0, 1, 0, 0}}},
                  {GroupKind::dp, {dense, {0, 0, 1, 0}}},
                  {GroupKind::pp, {dense, {0, 0, 0, 1}}},
                  {GroupKind::tp_cp, {dense, {1, 1, 0, 0}}},
                  {GroupKind::dp_cp, {dense, {0, 1, 1, 0}}},
                  {GroupKind::tp_dp_cp, {dense, {1, 1, 1, 0}}},
                  {GroupKind::tp_pp, {dense, {1, 0, 0, 1}}},
                  {GroupKind::etp, {expert, {1, 0, 0, 0}}},
                  {GroupKind::ep, {expert, {0, 1, 0, 0}}},
                  {GroupKind::edp, {expert, {0, 0, 1, 0}}},
                  {GroupKind::tp_ep, {expert, {1, 1, 0, 0}}},
                  {GroupKind::tp_ep_pp, {expert, {1, 1, 0, 1}}}};
              for (GroupKind kind : kAllGroupKinds) {
                SCOPED_TRACE("world " + std::to_string(world) + " tp" + std::to_string(tp) + " cp" +
                             std::to_string(cp) + " pp" + std::to_string(pp) + " ep" +
                             std::to_string(ep) + " etp" + std::to_string(etp) + " " +
                             group_kind_name(kind));
                const auto& [sizes, spanned] = spans.at(kind);
                int group_size = 1;
                for (size_t a = 0; a < sizes.size(); ++a)
                  if (spanned[a]) group_size *= sizes[a];
                const RankGroups groups = rank_groups(world, config, kind);
                ASSERT_EQ(static_cast<int>(groups.size()), world / group_size);
                std::vector<int> times_seen(static_cast<size_t>(world), 0);
                for (const std::vector<int>& g : groups) {
                  ASSERT_EQ(static_cast<int>(g.size()), group_size);
                  const std::vector<int> first = coords(g[0], sizes);
                  for (size_t i = 0; i < g.size(); ++i) {
                    ASSERT_GE(g[i], 0);
                    ASSERT_LT(g[i], world);
                    ++times_seen[static_cast<size_t>(g[i])];
                    const std::vector<int> c = coords(g[i], sizes);
                    int index = 0, radix = 1;
                    for (size_t a = 0; a < sizes.size(); ++a) {
                      if (spanned[a]) {
                        index += c[a] * radix;
                        radix *= sizes[a];
                      } else {
                        EXPECT_EQ(c[a], first[a]) << "member " << g[i] << " leaves axis " << a;
                      }
                    }
                    EXPECT_EQ(index, static_cast<int>(i)) << "member " << g[i];
                  }
                }
                for (int n : times_seen) EXPECT_EQ(n, 1);
              }
              // Both grids share the pipeline stages (Megatron asserts the same).
              EXPECT_EQ(rank_groups(world, config, GroupKind::pp),
                        orthogonal_rank_groups(expert, {false, false, false, true}));
            }
  }
  EXPECT_GT(mappings, 100);
}

TEST(ParallelState, ConfigErrorsNameTheSizes) {
  auto message = [](int world, const ParallelConfig& config) -> std::string {
    try {
      resolve_parallel_sizes(world, config);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  std::string m = message(8, mapping(3, 1, 1, 1, 0));
  EXPECT_NE(m.find("world size 8 is not divisible by tensor_model_parallel_size (3) x "
                   "context_parallel_size (1) x pipeline_model_parallel_size (1) = 3"),
            std::string::npos)
      << m;
  m = message(8, mapping(2, 2, 1, 4, 1));  // dense 4 fine; expert 1 x 4 x 1 fine: no error
  EXPECT_EQ(m, "");
  m = message(8, mapping(1, 1, 2, 3, 1));
  EXPECT_NE(m.find("not divisible by expert_tensor_parallel_size (1) x "
                   "expert_model_parallel_size (3) x pipeline_model_parallel_size (2) = 6"),
            std::string::npos)
      << m;
  m = message(8, mapping(4, 1, 1, 4, 0));  // ETP defaults to TP 4: 4 x 4 does not divide 8
  EXPECT_NE(m.find("expert_tensor_parallel_size (4, from tensor_model_parallel_size)"),
            std::string::npos)
      << m;
  m = message(8, mapping(0, 1, 1, 1, 0));
  EXPECT_NE(m.find("tensor_model_parallel_size must be at least 1, got 0"), std::string::npos) << m;
  m = message(8, mapping(1, -1, 1, 1, 0));
  EXPECT_NE(m.find("context_parallel_size must be at least 1"), std::string::npos) << m;
  m = message(8, mapping(1, 1, 0, 1, 0));
  EXPECT_NE(m.find("pipeline_model_parallel_size must be at least 1"), std::string::npos) << m;
  m = message(8, mapping(1, 1, 1, 0, 0));
  EXPECT_NE(m.find("expert_model_parallel_size must be at least 1"), std::string::npos) << m;
  m = message(8, mapping(1, 1, 1, 1, -2));
  EXPECT_NE(m.find("expert_tensor_parallel_size must be at least 1"), std::string::npos) << m;
  m = message(0, ParallelConfig{});
  EXPECT_NE(m.find("world size must be at least 1"), std::string::npos) << m;
}

// On the Local backend: each rank's groups are the hand-derived lists containing it, its rank
// in each is its position in the list, and a sum over each group adds exactly its members.
TEST(ParallelState, BuildsThisRanksGroupsOnTheLocalBackend) {
  for (const Case& c : hand_derived_cases()) {
    SCOPED_TRACE(c.name);
    run_local(c.world, [&](std::shared_ptr<ProcessGroup> world) {
      const int me = world->rank();
      ParallelState state(world, c.config);
      EXPECT_EQ(state.world(), world);
      for (GroupKind kind : kAllGroupKinds) {
        const std::vector<int>* expected = nullptr;
        for (const std::vector<int>& g : c.expected.at(kind))
          if (std::find(g.begin(), g.end(), me) != g.end()) expected = &g;
        ASSERT_NE(expected, nullptr);
        const auto& group = state.group(kind);
        EXPECT_EQ(group->world_ranks(), *expected) << group_kind_name(kind) << " rank " << me;
        EXPECT_EQ(state.size(kind), static_cast<int>(expected->size()));
        EXPECT_EQ(state.rank(kind),
                  std::find(expected->begin(), expected->end(), me) - expected->begin());
        Tensor t = Tensor::full({1}, me, DType::i64);
        group->all_reduce(t);
        EXPECT_EQ(t.item(), std::accumulate(expected->begin(), expected->end(), 0.0))
            << group_kind_name(kind) << " rank " << me;
      }
      // The named accessors agree with the grid coordinates.
      const ParallelSizes& s = state.sizes();
      const std::vector<int> d = coords(me, {s.tp, s.cp, s.dp, s.pp});
      const std::vector<int> e = coords(me, {s.etp, s.ep, s.edp, s.pp});
      EXPECT_EQ(state.tp_rank(), d[0]);
      EXPECT_EQ(state.cp_rank(), d[1]);
      EXPECT_EQ(state.dp_rank(), d[2]);
      EXPECT_EQ(state.pp_rank(), d[3]);
      EXPECT_EQ(state.dp_cp_rank(), d[1] + s.cp * d[2]);
      EXPECT_EQ(state.etp_rank(), e[0]);
      EXPECT_EQ(state.ep_rank(), e[1]);
      EXPECT_EQ(state.edp_rank(), e[2]);
      EXPECT_EQ(state.tp_ep_rank(), e[0] + s.etp * e[1]);
      EXPECT_EQ(state.tp_size(), s.tp);
      EXPECT_EQ(state.ep_size(), s.ep);
      EXPECT_EQ(state.edp_size(), s.edp);
      EXPECT_EQ(state.tp_ep_size(), state.tp_ep()->size());
      EXPECT_EQ(state.dp_cp_size(), state.dp_cp()->size());
      EXPECT_EQ(state.tp_ep_pp_size(), state.tp_ep_pp()->size());
    });
  }
}

TEST(ParallelState, KindsWithTheSameMembersShareOneGroup) {
  run_local(8, [](std::shared_ptr<ProcessGroup> world) {
    ParallelState state(world, mapping(2, 1, 1, 4, 1));
    EXPECT_EQ(state.tp(), state.tp_cp());  // CP 1
    EXPECT_EQ(state.ep(), state.tp_ep());  // ETP 1
    EXPECT_NE(state.tp(), state.dp());
  });
}

TEST(ParallelState, BadConfigThrowsOnEveryRank) {
  EXPECT_THROW(run_local(8,
                         [](std::shared_ptr<ProcessGroup> world) {
                           ParallelState state(world, mapping(3, 1, 1, 1, 0));
                         }),
               Error);
}

}  // namespace
}  // namespace moe::dist
