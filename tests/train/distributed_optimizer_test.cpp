// DistributedOptimizer (train/distributed_optimizer.h) on Local threads: its state per rank
// falls as 1 / DP while the ranks together hold AdamW's, its state() pieces tile every
// parameter once over the ranks that hold copies of it, its steps equal AdamW's (fp32 or bf16
// moments, fp32 or bf16 models), and a non-finite gradient on one rank stops the step on all.
#include "moe/train/distributed_optimizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "common/check.h"
#include "moe/dist/local_backend.h"
#include "moe/dist/parallel_state.h"
#include "moe/train/data_parallel.h"
#include "nn/gpt_test_util.h"

namespace moe::train {
namespace {

constexpr uint64_t kSeed = 1234;

nn::ModelConfig model_config(DType dtype, int ep) {
  nn::ModelConfig c = moe::test::tiny_gpt_config(dtype);
  c.untie_embeddings_and_output_weights = true;
  c.moe.expert_model_parallel_size = ep;
  return c;
}

// One rank of a data-parallel world: the tiny GPT model in buffers (DataParallel with the
// distributed optimizer) and the distributed optimizer over them.
struct Rank {
  Rank(std::shared_ptr<dist::ProcessGroup> world, int ep, DType dtype, const OptimizerConfig& oc,
       int64_t bucket_size = 200) {
    dist::ParallelConfig pc;
    pc.expert_model_parallel_size = ep;
    state = std::make_shared<dist::ParallelState>(std::move(world), pc);
    const nn::MoEGroups groups = nn::moe_groups_of(*state);
    model = std::make_unique<nn::GPTModel>(model_config(dtype, ep), dtype, Device::cpu(), kSeed,
                                           groups);
    DdpConfig ddp;
    ddp.use_distributed_optimizer = true;
    ddp.bucket_size = bucket_size;
    dp = std::make_unique<DataParallel>(*model, *state, ddp);
    optimizer = std::make_unique<DistributedOptimizer>(dp->buffers(), oc, dp->norm_groups(), false);
  }
  std::shared_ptr<dist::ParallelState> state;
  std::unique_ptr<nn::GPTModel> model;
  std::unique_ptr<DataParallel> dp;
  std::unique_ptr<DistributedOptimizer> optimizer;
};

// AdamW's state bytes for the whole model of one rank (no data parallelism).
int64_t adamw_state_bytes(DType dtype, const OptimizerConfig& oc) {
  nn::GPTModel model(model_config(dtype, 1), dtype, Device::cpu(), kSeed);
  AdamW adamw(model.parameters(), oc);
  int64_t bytes = 0;
  for (const NamedTensor& s : adamw.state()) bytes += static_cast<int64_t>(s.value->nbytes());
  return bytes;
}

OptimizerConfig with_moments(DType moments) {
  OptimizerConfig oc;
  oc.exp_avg_dtype = oc.exp_avg_sq_dtype = moments;
  return oc;
}

class DistributedOptimizerState : public ::testing::TestWithParam<std::tuple<DType, DType>> {};

// DP 1, 2, 4: together the ranks hold exactly AdamW's state (padding holds no state), and each
// rank at most its 1 / DP share of the padded buffers.
TEST_P(DistributedOptimizerState, BytesFallAsOneOverDp) {
  const auto [dtype, moments] = GetParam();
  const OptimizerConfig oc = with_moments(moments);
  const int64_t total = adamw_state_bytes(dtype, oc);
  // Bytes of state per parameter element: two moments, and an fp32 master for 16-bit models.
  const int64_t per_element =
      2 * static_cast<int64_t>(dtype_size(moments)) + (dtype == DType::bf16 ? 4 : 0);
  for (int world : {1, 2, 4}) {
    std::vector<int64_t> bytes(static_cast<size_t>(world));
    dist::run_local(world, [&](std::shared_ptr<dist::ProcessGroup> w) {
      Rank r(w, 1, dtype, oc);
      int64_t padded = 0;
      for (ParamAndGradBuffer* buf : r.dp->buffers()) padded += buf->numel();
      const int64_t mine = r.optimizer->state_bytes();
      EXPECT_LE(mine, padded / world * per_element)
          << "rank " << w->rank() << " of " << world << " holds more than its share";
      bytes[static_cast<size_t>(w->rank())] = mine;
    });
    int64_t sum = 0;
    for (int64_t b : bytes) sum += b;
    EXPECT_EQ(sum, total) << "DP " << world << ": the ranks' state does not add up to AdamW's";
    if (world > 1) {
      const int64_t largest = *std::max_element(bytes.begin(), bytes.end());
      // Within two buckets' alignment of an even split.
      EXPECT_LE(largest, total / world + 2 * world * kParamAlignment * per_element)
          << "DP " << world;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DistributedOptimizer, DistributedOptimizerState,
                         ::testing::Values(std::tuple{DType::f32, DType::f32},
                                           std::tuple{DType::f32, DType::bf16},
                                           std::tuple{DType::bf16, DType::f32},
                                           std::tuple{DType::bf16, DType::bf16}),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_model_" +
                                  dtype_name(std::get<1>(info.param)) + "_moments";
                         });

// World 4, EP 2 (dense over 4 ranks, experts over EDP 2): for every state tensor kind, the
// pieces of the ranks holding copies of a parameter (the same name and box) cover each of its
// elements exactly once.
TEST(DistributedOptimizer, StatePiecesTileEveryParameterOnce) {
  struct Piece {
    int rank;
    int64_t begin, end, numel;
  };
  // (state name, box offset) -> pieces
  std::map<std::pair<std::string, std::vector<int64_t>>, std::vector<Piece>> pieces;
  std::map<std::pair<std::string, std::vector<int64_t>>, int64_t> sizes;
  std::mutex mu;
  dist::run_local(4, [&](std::shared_ptr<dist::ProcessGroup> w) {
    Rank r(w, 2, DType::bf16, OptimizerConfig{}, 100);
    std::lock_guard<std::mutex> lock(mu);
    for (const NamedTensor& s : r.optimizer->state()) {
      const auto key = std::pair{s.name, nn::box_offset_of(*s.param)};
      pieces[key].push_back({w->rank(), s.begin, s.end, s.value->numel()});
      sizes[key] = s.param->value.numel();
    }
    // Every parameter of the model has all three tensors somewhere (checked over the ranks
    // below); none is unknown.
    for (const NamedTensor& s : r.optimizer->state()) {
      const std::string& n = s.name;
      EXPECT_TRUE(n == s.param->name + ".exp_avg" || n == s.param->name + ".exp_avg_sq" ||
                  n == s.param->name + ".master")
          << n;
    }
  });
  nn::GPTModel whole(model_config(DType::bf16, 1), DType::bf16, Device::cpu(), kSeed);
  for (nn::Parameter* p : whole.parameters())
    for (const std::string kind : {".exp_avg", ".exp_avg_sq", ".master"}) {
      // fp32 parameters of a bf16 model (the routers') are their own masters.
      if (kind == ".master" && p->value.dtype() != DType::bf16) continue;
      bool found = false;
      for (const auto& [key, list] : pieces) found = found || key.first == p->name + kind;
      EXPECT_TRUE(found) << "no rank holds " << p->name << kind;
    }
  for (const auto& [key, list] : pieces) {
    const int64_t n = sizes[key];
    std::vector<int> seen(static_cast<size_t>(n), 0);
    for (const Piece& piece : list) {
      EXPECT_EQ(piece.numel, piece.end - piece.begin) << key.first << " on rank " << piece.rank;
      ASSERT_GE(piece.begin, 0);
      ASSERT_LE(piece.end, n);
      for (int64_t j = piece.begin; j < piece.end; ++j) ++seen[static_cast<size_t>(j)];
    }
    for (int64_t j = 0; j < n; ++j)
      if (seen[static_cast<size_t>(j)] != 1) {
        ADD_FAILURE() << key.first << " (box at " << ::testing::PrintToString(key.second)
                      << "): element " << j << " is held " << seen[static_cast<size_t>(j)]
                      << " times";
        break;
      }
  }
}

// Gradient element j of the parameter with index i, the same on every rank (as after the
// data-parallel reduction), of mixed signs and magnitudes.
void fill_grads(const std::vector<nn::Parameter*>& params, int step) {
  for (size_t i = 0; i < params.size(); ++i) {
    nn::Parameter& p = *params[i];
    std::vector<double> v(static_cast<size_t>(p.value.numel()));
    for (size_t j = 0; j < v.size(); ++j)
      v[j] =
          std::sin(0.37 * static_cast<double>(j + 1) + 1.3 * static_cast<double>(i) + 0.7 * step) *
          (1.0 + static_cast<double>(j % 5));
    p.grad_value().copy_(Tensor::from_vector(v, p.grad.shape()).to(p.grad.dtype()));
  }
}

class DistributedOptimizerStep
    : public ::testing::TestWithParam<std::tuple<int, DType, DType, double>> {};

// Three steps from the same reduced gradients as AdamW on one rank: equal parameters on every
// rank (after the all-gather) and equal state pieces; bitwise without clipping (the same
// elementwise update), within rounding with it (the norm is summed in another order).
TEST_P(DistributedOptimizerStep, EqualsAdamW) {
  const auto [world, dtype, moments, clip] = GetParam();
  OptimizerConfig oc = with_moments(moments);
  oc.clip_grad = clip;
  const double tol = clip > 0 ? 1e-5 : 0.0;
  dist::run_local(world, [&](std::shared_ptr<dist::ProcessGroup> w) {
    const std::string me = "rank " + std::to_string(w->rank());
    Rank r(w, 1, dtype, oc);
    nn::GPTModel reference(model_config(dtype, 1), dtype, Device::cpu(), kSeed);
    AdamW adamw(reference.parameters(), oc);
    const std::vector<nn::Parameter*> mine = r.model->parameters();
    const std::vector<nn::Parameter*> theirs = reference.parameters();
    ASSERT_EQ(mine.size(), theirs.size());
    for (int step = 0; step < 3; ++step) {
      fill_grads(mine, step);
      fill_grads(theirs, step);
      const StepResult got = r.optimizer->step(1e-2, 0.1);
      const StepResult want = adamw.step(1e-2, 0.1);
      EXPECT_TRUE(got.taken) << me;
      EXPECT_NEAR(got.grad_norm, want.grad_norm, 1e-6 * want.grad_norm) << me;
    }
    EXPECT_EQ(r.optimizer->steps_taken(), 3);
    for (size_t i = 0; i < mine.size(); ++i) {
      const Tensor got = mine[i]->value.to(DType::f64);
      const Tensor want = theirs[i]->value.to(DType::f64);
      EXPECT_TRUE(moe::test::close(got, want, tol, me + " " + mine[i]->name));
    }
    std::map<std::string, Tensor*> full;
    for (const NamedTensor& s : adamw.state()) full[s.name] = s.value;
    for (const NamedTensor& s : r.optimizer->state()) {
      ASSERT_TRUE(full.count(s.name)) << me << ": " << s.name << " is not AdamW's";
      EXPECT_EQ(s.value->dtype(), full[s.name]->dtype()) << me << " " << s.name;
      const Tensor want =
          full[s.name]->reshape({full[s.name]->numel()}).rows(s.begin, s.end - s.begin);
      EXPECT_TRUE(
          moe::test::close(s.value->to(DType::f64), want.to(DType::f64), tol, me + " " + s.name));
    }
  });
}

INSTANTIATE_TEST_SUITE_P(DistributedOptimizer, DistributedOptimizerStep,
                         ::testing::Values(std::tuple{2, DType::f32, DType::f32, 0.0},
                                           std::tuple{2, DType::f32, DType::bf16, 0.0},
                                           std::tuple{4, DType::bf16, DType::bf16, 0.0},
                                           std::tuple{4, DType::bf16, DType::f32, 0.0},
                                           std::tuple{3, DType::f32, DType::bf16, 1.0}),
                         [](const auto& info) {
                           return "world" + std::to_string(std::get<0>(info.param)) + "_" +
                                  dtype_name(std::get<1>(info.param)) + "_model_" +
                                  dtype_name(std::get<2>(info.param)) + "_moments" +
                                  (std::get<3>(info.param) > 0 ? "_clip" : "");
                         });

class DistributedOptimizerNonFinite : public ::testing::TestWithParam<bool> {};

// World 4, EP 2: the last rank's local gradient of one parameter (an expert's, or a dense one)
// holds a NaN before the reduce-scatter. Whichever rank owns it after the reduction, the norm
// is NaN on every rank: no rank steps, no weight or state changes, the step count stays 0.
TEST_P(DistributedOptimizerNonFinite, NoRankSteps) {
  const bool expert = GetParam();
  dist::run_local(4, [&](std::shared_ptr<dist::ProcessGroup> w) {
    const std::string me = "rank " + std::to_string(w->rank());
    Rank r(w, 2, DType::f32, OptimizerConfig{}, 100);
    const std::vector<nn::Parameter*> params = r.model->parameters();
    std::vector<Tensor> before;
    for (nn::Parameter* p : params) before.push_back(p->value.clone());
    fill_grads(params, 0);
    if (w->rank() == 3) {
      nn::Parameter* bad = nullptr;
      for (nn::Parameter* p : params)
        if ((p->layout.grad_group == nn::GradGroup::expert) == expert) bad = p;
      ASSERT_NE(bad, nullptr);
      std::vector<float> g = bad->grad.reshape({bad->grad.numel()}).to_vector<float>();
      g[g.size() / 2] = std::numeric_limits<float>::quiet_NaN();
      bad->grad.copy_(Tensor::from_vector(g, bad->grad.shape()));
    }
    r.dp->finish_grad_sync();
    const StepResult result = r.optimizer->step(1e-2, 0.1);
    EXPECT_FALSE(result.taken) << me << " stepped";
    EXPECT_TRUE(std::isnan(result.grad_norm)) << me << ": gradient norm " << result.grad_norm;
    EXPECT_EQ(r.optimizer->steps_taken(), 0) << me;
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(moe::test::equal(params[i]->value, before[i], me + " " + params[i]->name));
    for (const NamedTensor& s : r.optimizer->state()) {
      if (s.name.ends_with(".master")) continue;
      EXPECT_TRUE(moe::test::equal(*s.value, Tensor::zeros(s.value->shape(), s.value->dtype()),
                                   me + " " + s.name));
    }
    // A later finite step is taken everywhere.
    r.model->zero_grad();
    fill_grads(params, 1);
    r.dp->finish_grad_sync();
    EXPECT_TRUE(r.optimizer->step(1e-2, 0.1).taken) << me;
  });
}

INSTANTIATE_TEST_SUITE_P(DistributedOptimizer, DistributedOptimizerNonFinite, ::testing::Bool(),
                         [](const auto& info) {
                           return std::string(info.param ? "expert" : "dense");
                         });

}  // namespace
}  // namespace moe::train
