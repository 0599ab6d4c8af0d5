// CUDA router ops against the CPU reference (router.h) on fresh random inputs with an odd
// token count: top-k routing in every variant (E not a power of two, groups, bias, scaling,
// K up to 16), forced balancing, histograms (dropped slots, experts without tokens), the
// losses and their backward, sinkhorn, jitter, and empty inputs. Expert ids must match
// exactly (both devices rank fp64 selection values with the same tie rule); values match to
// the f32 (or f64) tolerance.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "common/check.h"
#include "ops/router_test_util.h"
#include "moe/ops/router.h"

namespace moe {
namespace {

using ops::ScoreFunction;
using ops::TopKConfig;
using ops::TopKRouting;

const Device kGpu = Device::cuda();
const Device kCpu = Device::cpu();

using test::make_config;

// A group-limited setting for (E, K) that masks something (group_topk < num_groups), with
// group_topk near half the groups; false when none exists.
bool pick_groups(int64_t experts, int64_t topk, int64_t& groups, int64_t& group_topk) {
  for (int64_t g : {8, 4, 3, 2}) {
    if (experts % g != 0) continue;
    const int64_t size = experts / g;
    std::vector<int64_t> order;
    for (int64_t d = 0; d < g; ++d) {
      if (g / 2 - d >= 1) order.push_back(g / 2 - d);
      if (d > 0 && g / 2 + d < g) order.push_back(g / 2 + d);
    }
    for (int64_t k : order) {
      if (k <= topk && topk / k <= size && k * size >= topk) {
        groups = g;
        group_topk = k;
        return true;
      }
    }
  }
  return false;
}

struct Variant {
  std::string name;
  TopKConfig config;
  bool with_bias;
};

std::vector<Variant> variants(int64_t experts, int64_t k) {
  std::vector<Variant> v = {
      {"softmax", make_config(k, ScoreFunction::softmax), false},
      {"pre-softmax", make_config(k, ScoreFunction::softmax, true), false},
      {"sigmoid x2.5", make_config(k, ScoreFunction::sigmoid, false, 0, 0, 2.5), false},
      {"sigmoid+bias", make_config(k, ScoreFunction::sigmoid), true},
      {"softmax+bias", make_config(k, ScoreFunction::softmax), true},
  };
  int64_t g = 0, gk = 0;
  if (pick_groups(experts, k, g, gk)) {
    v.push_back({"softmax groups", make_config(k, ScoreFunction::softmax, false, g, gk), false});
    v.push_back({"pre-softmax groups", make_config(k, ScoreFunction::softmax, true, g, gk), false});
    v.push_back({"sigmoid groups", make_config(k, ScoreFunction::sigmoid, false, g, gk), false});
    v.push_back({"sigmoid+bias groups x2.5",
                 make_config(k, ScoreFunction::sigmoid, false, g, gk, 2.5), true});
    TopKConfig best_of_group = make_config(k, ScoreFunction::softmax, true, g, gk);
    best_of_group.group_score_size = 1;  // DeepSeek-V2: a group ranks by its best expert
    v.push_back({"pre-softmax groups by max", best_of_group, false});
  }
  // E groups of one expert (each lane owns many groups): the K best groups are the top-k.
  v.push_back({"groups of one", make_config(k, ScoreFunction::sigmoid, false, experts, k), true});
  return v;
}

Tensor cpu(const Tensor& t) {
  return t.to(kCpu);
}

void expect_same_routing(const TopKRouting& gpu, const TopKRouting& ref, DType dtype) {
  EXPECT_TRUE(test::equal(cpu(gpu.expert_ids), ref.expert_ids, "expert_ids"));
  EXPECT_TRUE(test::close_as(cpu(gpu.probs), ref.probs, dtype, "probs"));
  EXPECT_TRUE(test::close_as(cpu(gpu.scores), ref.scores, dtype, "scores"));
  EXPECT_EQ(gpu.used_expert_bias, ref.used_expert_bias);
}

void check_topk(int64_t tokens, int64_t experts, int64_t k, DType dtype, uint64_t seed) {
  const Tensor logits = test::random_normal({tokens, experts}, dtype, seed);
  const Tensor bias = test::random_normal({experts}, DType::f32, seed + 1, kCpu, 0.05);
  const Tensor grad = test::random_normal({tokens, k}, dtype, seed + 2);
  const Tensor logits_gpu = logits.to(kGpu), bias_gpu = bias.to(kGpu), grad_gpu = grad.to(kGpu);
  for (const Variant& v : variants(experts, k)) {
    SCOPED_TRACE(v.name);
    const TopKRouting ref =
        ops::topk_routing_forward(logits, v.with_bias ? bias : Tensor(), v.config);
    const TopKRouting gpu =
        ops::topk_routing_forward(logits_gpu, v.with_bias ? bias_gpu : Tensor(), v.config);
    expect_same_routing(gpu, ref, dtype);
    EXPECT_TRUE(test::close_as(cpu(ops::topk_routing_backward(grad_gpu, gpu, logits_gpu, v.config)),
                               ops::topk_routing_backward(grad, ref, logits, v.config), dtype,
                               "d_logits"));
  }
  for (const TopKConfig& c :
       {make_config(k, ScoreFunction::softmax), make_config(k, ScoreFunction::softmax, true),
        make_config(k, ScoreFunction::sigmoid, false, 0, 0, 2.5)}) {
    SCOPED_TRACE("forced balanced");
    const TopKRouting ref = ops::forced_balanced_routing_forward(logits, c);
    const TopKRouting gpu = ops::forced_balanced_routing_forward(logits_gpu, c);
    expect_same_routing(gpu, ref, dtype);
    EXPECT_TRUE(test::close_as(cpu(ops::topk_routing_backward(grad_gpu, gpu, logits_gpu, c)),
                               ops::topk_routing_backward(grad, ref, logits, c), dtype,
                               "d_logits"));
  }
}

TEST(RouterCuda, TopKMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t experts : {8, 64, 129, 256}) {
    for (int64_t k : {1, 2, 8}) {
      SCOPED_TRACE("E = " + std::to_string(experts) + ", K = " + std::to_string(k));
      check_topk(257, experts, k, DType::f32, seed);
    }
  }
}

TEST(RouterCuda, TopKManyExpertsMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  check_topk(257, 512, 16, DType::f32, seed);  // DeepSeek-like scale, groups of 64
  check_topk(33, 1000, 32, DType::f32, seed);  // K at the CUDA limit, 8 groups of 125
}

TEST(RouterCuda, TopKF64MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  check_topk(257, 129, 2, DType::f64, seed);
  check_topk(65, 64, 8, DType::f64, seed);
}

TEST(RouterCuda, TiesAreBrokenByIndexLikeTheCpu) {
  MOE_REQUIRE_GPU();
  // Rows of repeated values (ties everywhere), routed by both devices.
  std::vector<float> values(257 * 64);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>((i * 7) % 5);
  const Tensor logits = Tensor::from_vector(values, {257, 64});
  for (const Variant& v : variants(64, 8)) {
    SCOPED_TRACE(v.name);
    const Tensor bias = v.with_bias ? Tensor::zeros({64}, DType::f32) : Tensor();
    const TopKRouting ref = ops::topk_routing_forward(logits, bias, v.config);
    const TopKRouting gpu = ops::topk_routing_forward(
        logits.to(kGpu), v.with_bias ? bias.to(kGpu) : Tensor(), v.config);
    expect_same_routing(gpu, ref, DType::f32);
  }
}

// ---- histograms ---------------------------------------------------------------------------

TEST(RouterCuda, HistogramsMatchCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 gen(seed);
  const int64_t tokens = 255, k = 3, experts = 129;
  // ids in [-1, 100): dropped slots, and experts 100..128 receive nothing
  std::uniform_int_distribution<int32_t> pick(-1, 99);
  std::vector<int32_t> ids(tokens * k);
  for (int32_t& id : ids) id = pick(gen);
  const Tensor ids_cpu = Tensor::from_vector(ids, {tokens, k});
  const Tensor ids_gpu = ids_cpu.to(kGpu);
  EXPECT_TRUE(test::equal(cpu(ops::tokens_per_expert_histogram(ids_gpu, experts)),
                          ops::tokens_per_expert_histogram(ids_cpu, experts)));
  for (int64_t b : {1, 3, 5}) {
    EXPECT_TRUE(test::equal(cpu(ops::tokens_per_expert_per_sequence(ids_gpu, experts, b)),
                            ops::tokens_per_expert_per_sequence(ids_cpu, experts, b)));
  }
}

// ---- losses -------------------------------------------------------------------------------

// d_logits accumulates: both devices start from the same random values.
Tensor start_grad(const Shape& shape, DType dtype, uint64_t seed, Device device) {
  return test::random_normal(shape, dtype, seed, device);
}

TEST(RouterCuda, AuxLossesMatchCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t seq = 85, batch = 3, tokens = seq * batch, k = 2;
  for (int64_t experts : {8, 129}) {
    for (ScoreFunction f : {ScoreFunction::softmax, ScoreFunction::sigmoid}) {
      SCOPED_TRACE(std::to_string(experts) +
                   (f == ScoreFunction::softmax ? " softmax" : " sigmoid"));
      const Tensor logits = test::random_normal({tokens, experts}, DType::f32, seed);
      const Tensor logits_gpu = logits.to(kGpu);
      const Tensor scores = ops::aux_loss_scores(logits, f);
      const Tensor scores_gpu = ops::aux_loss_scores(logits_gpu, f);
      EXPECT_TRUE(test::close_as(cpu(scores_gpu), scores, DType::f32, "scores"));
      const Tensor ids = ops::topk_routing_forward(logits, {}, make_config(k, f)).expert_ids;
      const Tensor ids_gpu = ids.to(kGpu);

      // aux_loss, counts as i64 and as fractional f32
      for (const Tensor& counts : {ops::tokens_per_expert_histogram(ids, experts),
                                   test::random_uniform({experts}, DType::f32, seed + 3, 0, 9)}) {
        const Tensor counts_gpu = counts.to(kGpu);
        const Tensor loss = ops::aux_loss_forward(scores, counts, 4 * tokens, k, 0.01);
        const Tensor loss_gpu = ops::aux_loss_forward(scores_gpu, counts_gpu, 4 * tokens, k, 0.01);
        EXPECT_TRUE(loss_gpu.is_cuda());
        EXPECT_EQ(loss_gpu.dim(), 0);
        EXPECT_TRUE(test::close_as(cpu(loss_gpu), loss, DType::f32, "aux_loss"));
        Tensor d = start_grad(logits.shape(), DType::f32, seed + 4, kCpu);
        Tensor d_gpu = start_grad(logits.shape(), DType::f32, seed + 4, kGpu);
        ops::aux_loss_backward(1.7, scores, counts, 4 * tokens, k, 0.01, logits, f, d);
        ops::aux_loss_backward(1.7, scores_gpu, counts_gpu, 4 * tokens, k, 0.01, logits_gpu, f,
                               d_gpu);
        EXPECT_TRUE(test::close_as(cpu(d_gpu), d, DType::f32, "aux_loss d_logits"));
      }

      // seq_aux_loss
      const Tensor seq_counts = ops::tokens_per_expert_per_sequence(ids, experts, batch);
      const Tensor seq_counts_gpu = ops::tokens_per_expert_per_sequence(ids_gpu, experts, batch);
      EXPECT_TRUE(test::equal(cpu(seq_counts_gpu), seq_counts));
      EXPECT_TRUE(test::close_as(
          cpu(ops::seq_aux_loss_forward(scores_gpu, seq_counts_gpu, batch, 2 * seq, k, 0.1)),
          ops::seq_aux_loss_forward(scores, seq_counts, batch, 2 * seq, k, 0.1), DType::f32,
          "seq_aux_loss"));
      Tensor d = start_grad(logits.shape(), DType::f32, seed + 5, kCpu);
      Tensor d_gpu = start_grad(logits.shape(), DType::f32, seed + 5, kGpu);
      ops::seq_aux_loss_backward(0.5, scores, seq_counts, batch, 2 * seq, k, 0.1, logits, f, d);
      ops::seq_aux_loss_backward(0.5, scores_gpu, seq_counts_gpu, batch, 2 * seq, k, 0.1,
                                 logits_gpu, f, d_gpu);
      EXPECT_TRUE(test::close_as(cpu(d_gpu), d, DType::f32, "seq_aux_loss d_logits"));
    }
  }
}

TEST(RouterCuda, ZLossMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (DType dtype : {DType::f32, DType::f64}) {
    for (int64_t experts : {8, 129, 512}) {
      const Tensor logits = test::random_normal({257, experts}, dtype, seed, kCpu, 4.0);
      const Tensor logits_gpu = logits.to(kGpu);
      EXPECT_TRUE(test::close_as(cpu(ops::z_loss_forward(logits_gpu, 1e-3)),
                                 ops::z_loss_forward(logits, 1e-3), dtype, "z_loss"));
      Tensor d = start_grad(logits.shape(), dtype, seed + 1, kCpu);
      Tensor d_gpu = start_grad(logits.shape(), dtype, seed + 1, kGpu);
      ops::z_loss_backward(2.0, logits, 1e-3, d);
      ops::z_loss_backward(2.0, logits_gpu, 1e-3, d_gpu);
      EXPECT_TRUE(test::close_as(cpu(d_gpu), d, dtype, "z_loss d_logits"));
    }
  }
}

// ---- sinkhorn -----------------------------------------------------------------------------

TEST(RouterCuda, SinkhornMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t experts : {8, 64, 129}) {
    SCOPED_TRACE(experts);
    const Tensor logits = test::random_normal({257, experts}, DType::f32, seed);
    const Tensor logits_gpu = logits.to(kGpu);
    EXPECT_TRUE(test::close_as(cpu(ops::sinkhorn(logits_gpu)), ops::sinkhorn(logits), DType::f32,
                               "sinkhorn"));
    for (int64_t k : {1, 2, 8}) {
      SCOPED_TRACE(k);
      const TopKRouting ref = ops::sinkhorn_routing_forward(logits, k);
      const TopKRouting gpu = ops::sinkhorn_routing_forward(logits_gpu, k);
      expect_same_routing(gpu, ref, DType::f32);
      const Tensor grad = test::random_normal({257, k}, DType::f32, seed + 1);
      EXPECT_TRUE(test::close_as(
          cpu(ops::sinkhorn_routing_backward(grad.to(kGpu), gpu, logits_gpu, k)),
          ops::sinkhorn_routing_backward(grad, ref, logits, k), DType::f32, "d_logits"));
    }
  }
}

// ---- jitter -------------------------------------------------------------------------------

TEST(RouterCuda, JitterIsBitIdenticalToCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor x = test::random_normal({257, 259}, dtype, seed);
    EXPECT_TRUE(test::equal(cpu(ops::input_jitter_forward(x.to(kGpu), 0.01, seed + 1)),
                            ops::input_jitter_forward(x, 0.01, seed + 1)));
    EXPECT_TRUE(test::equal(cpu(ops::input_jitter_backward(x.to(kGpu), 0.01, seed + 1)),
                            ops::input_jitter_backward(x, 0.01, seed + 1)));
  }
}

// ---- empty inputs -------------------------------------------------------------------------

TEST(RouterCuda, EmptyInputs) {
  MOE_REQUIRE_GPU();
  const Tensor logits = Tensor::empty({0, 64}, DType::f32, kGpu);
  const TopKConfig c = make_config(2, ScoreFunction::sigmoid, false, 8, 2);
  const TopKRouting r = ops::topk_routing_forward(logits, Tensor::zeros({64}, DType::f32, kGpu), c);
  EXPECT_EQ(r.probs.shape(), (Shape{0, 2}));
  EXPECT_EQ(
      ops::topk_routing_backward(Tensor::empty({0, 2}, DType::f32, kGpu), r, logits, c).shape(),
      (Shape{0, 64}));
  EXPECT_EQ(ops::forced_balanced_routing_forward(logits, c).expert_ids.shape(), (Shape{0, 2}));
  EXPECT_TRUE(test::equal(cpu(ops::tokens_per_expert_histogram(r.expert_ids, 64)),
                          Tensor::zeros({64}, DType::i64)));
  const Tensor scores = ops::aux_loss_scores(logits, ScoreFunction::softmax);
  const Tensor counts = Tensor::zeros({64}, DType::i64, kGpu);
  EXPECT_EQ(ops::aux_loss_forward(scores, counts, 0, 2, 0.1).item(), 0.0);
  EXPECT_EQ(ops::z_loss_forward(logits, 0.1).item(), 0.0);
  Tensor d = Tensor::empty({0, 64}, DType::f32, kGpu);
  ops::aux_loss_backward(1.0, scores, counts, 0, 2, 0.1, logits, ScoreFunction::softmax, d);
  ops::z_loss_backward(1.0, logits, 0.1, d);
  EXPECT_EQ(ops::sinkhorn(logits).shape(), (Shape{0, 64}));
  EXPECT_EQ(ops::sinkhorn_routing_forward(logits, 2).probs.shape(), (Shape{0, 2}));
  EXPECT_EQ(ops::input_jitter_forward(logits, 0.1, 1).shape(), (Shape{0, 64}));
}

}  // namespace
}  // namespace moe
