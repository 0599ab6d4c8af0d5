// MoELayer on the CPU: fp64 finite-difference gradients of the whole layer for every routing
// and dispatch variant, grouped == sequential experts, capacity, padding and expert bias.
#include <gtest/gtest.h>

#include <functional>

#include "moe/ops/elementwise.h"
#include "nn/gradient_check.h"
#include "nn/moe_test_util.h"

namespace moe {
namespace {

using nn::MoEConfig;
using nn::MoELayer;

struct Variant {
  const char* name;
  std::function<void(MoEConfig&)> apply;
};

// Every variant is checked end to end: d objective / d (x, every parameter).
const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"softmax_aux", [](MoEConfig&) {}},
      {"softmax_aux_alltoall",
       [](MoEConfig& c) { c.moe_token_dispatcher_type = nn::DispatcherType::alltoall; }},
      {"sequential_experts", [](MoEConfig& c) { c.moe_grouped_gemm = false; }},
      {"pre_softmax_top1_zloss",
       [](MoEConfig& c) {
         c.moe_router_topk = 1;
         c.moe_router_pre_softmax = true;
         c.moe_z_loss_coeff = 1e-2;
       }},
      {"sigmoid_groups_bias_scaling_seq_aux",
       [](MoEConfig& c) {
         c.num_experts = 8;
         c.moe_router_score_function = ops::ScoreFunction::sigmoid;
         c.moe_router_num_groups = 4;
         c.moe_router_group_topk = 2;
         c.moe_router_enable_expert_bias = true;
         c.moe_router_topk_scaling_factor = 2.5;
         c.moe_router_load_balancing_type = nn::LoadBalancingType::seq_aux_loss;
       }},
      {"softmax_expert_bias", [](MoEConfig& c) { c.moe_router_enable_expert_bias = true; }},
      {"global_aux",
       [](MoEConfig& c) {
         c.moe_router_load_balancing_type = nn::LoadBalancingType::global_aux_loss;
       }},
      {"sinkhorn",
       [](MoEConfig& c) {
         c.moe_router_load_balancing_type = nn::LoadBalancingType::sinkhorn;
         c.moe_aux_loss_coeff = 0;
       }},
      {"capacity_drop_probs", [](MoEConfig& c) { c.moe_expert_capacity_factor = 0.75; }},
      {"capacity_drop_pad_position_alltoall",
       [](MoEConfig& c) {
         c.moe_expert_capacity_factor = 0.75;
         c.moe_token_drop_policy = ops::DropPolicy::position;
         c.moe_pad_expert_input_to_capacity = true;
         c.moe_token_dispatcher_type = nn::DispatcherType::alltoall;
       }},
      {"shared_expert_gated_fp8_padding",
       [](MoEConfig& c) {
         c.moe_shared_expert_intermediate_size = 5;
         c.moe_shared_expert_gate = true;
         c.moe_router_padding_for_fp8 = true;
       }},
      {"forced_balance", [](MoEConfig& c) { c.moe_router_force_load_balancing = true; }},
  };
  return v;
}

class MoELayerGradient : public ::testing::TestWithParam<size_t> {};

TEST_P(MoELayerGradient, MatchesFiniteDifferences) {
  const Variant& variant = variants()[GetParam()];
  SCOPED_TRACE(variant.name);
  MoEConfig config = test::small_moe_config();
  variant.apply(config);
  MoELayer layer(config, Device::cpu());
  // Give the expert bias a non-zero value so it actually changes the selection.
  if (config.moe_router_enable_expert_bias)
    layer.router.expert_bias.copy_(
        test::random_normal({config.num_experts}, DType::f32, 99, Device::cpu(), 0.3));

  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Tensor x = test::random_normal({3, 2, config.hidden_size}, DType::f64, seed);  // [S, B, H]
  const Tensor weights = test::random_normal(x.shape(), DType::f64, seed + 1);
  const bool stateful =
      config.moe_router_load_balancing_type == nn::LoadBalancingType::global_aux_loss;
  auto objective = [&] {
    if (stateful) layer.finish_step();  // global aux counts restart for each evaluation
    return test::moe_objective(layer, x, weights);
  };

  if (stateful) layer.finish_step();
  layer.zero_grad();
  nn::MoEContext ctx;
  layer.forward(x, ctx);
  const Tensor dx = layer.backward(weights, ctx);

  EXPECT_TRUE(test::close(dx, test::numerical_gradient(objective, x), test::kGradCheckTol, "dx"));
  test::expect_parameter_gradients(objective, layer.parameters());
}

INSTANTIATE_TEST_SUITE_P(Variants, MoELayerGradient, ::testing::Range<size_t>(0, 12),
                         [](const auto& info) { return std::string(variants()[info.param].name); });

// Grouped and sequential experts compute the same function.
TEST(MoELayer, GroupedEqualsSequential) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  MoEConfig grouped = test::small_moe_config(DType::f32);
  grouped.num_experts = 8;
  MoEConfig sequential = grouped;
  sequential.moe_grouped_gemm = false;
  MoELayer a(grouped, Device::cpu()), b(sequential, Device::cpu());
  const Tensor x = test::random_normal({37, grouped.hidden_size}, DType::f32, seed);
  const Tensor dy = test::random_normal(x.shape(), DType::f32, seed + 1);
  nn::MoEContext ca, cb;
  EXPECT_TRUE(test::close_as(b.forward(x, cb), a.forward(x, ca), DType::f32));
  EXPECT_TRUE(test::close_as(b.backward(dy, cb), a.backward(dy, ca), DType::f32));
  EXPECT_TRUE(test::close_as(b.experts.fc1.grad_value(), a.experts.fc1.grad_value(), DType::f32));
  EXPECT_TRUE(test::close_as(b.experts.fc2.grad_value(), a.experts.fc2.grad_value(), DType::f32));
}

// Padding expert inputs (to capacity, or to multiples of 16) adds rows that carry nothing:
// drop-and-pad == drop, and FP8 padding leaves the output unchanged.
TEST(MoELayer, PaddingLeavesOutputsUnchanged) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const char* dispatcher : {"allgather", "alltoall"}) {
    MoEConfig drop = test::small_moe_config(DType::f64);
    drop.moe_token_dispatcher_type = nn::parse_dispatcher_type(dispatcher);
    drop.moe_expert_capacity_factor = 0.8;
    MoEConfig pad = drop;
    pad.moe_pad_expert_input_to_capacity = true;
    MoEConfig fp8 = test::small_moe_config(DType::f64);
    fp8.moe_token_dispatcher_type = nn::parse_dispatcher_type(dispatcher);
    fp8.moe_router_padding_for_fp8 = true;
    MoEConfig plain = test::small_moe_config(DType::f64);
    plain.moe_token_dispatcher_type = nn::parse_dispatcher_type(dispatcher);
    const Tensor x = test::random_normal({29, drop.hidden_size}, DType::f64, seed);
    const Tensor dy = test::random_normal(x.shape(), DType::f64, seed + 1);
    auto run = [&](const MoEConfig& c) {
      MoELayer layer(c, Device::cpu());
      nn::MoEContext ctx;
      Tensor y = layer.forward(x, ctx);
      Tensor dx = layer.backward(dy, ctx);
      return std::make_tuple(y, dx, layer.experts.fc1.grad_value().clone());
    };
    auto [y_drop, dx_drop, g_drop] = run(drop);
    auto [y_pad, dx_pad, g_pad] = run(pad);
    EXPECT_TRUE(test::close_as(y_pad, y_drop, DType::f64, "drop-and-pad y"));
    EXPECT_TRUE(test::close_as(dx_pad, dx_drop, DType::f64, "drop-and-pad dx"));
    EXPECT_TRUE(test::close_as(g_pad, g_drop, DType::f64, "drop-and-pad dfc1"));
    auto [y_plain, dx_plain, g_plain] = run(plain);
    auto [y_fp8, dx_fp8, g_fp8] = run(fp8);
    EXPECT_TRUE(test::close_as(y_fp8, y_plain, DType::f64, "fp8 padding y"));
    EXPECT_TRUE(test::close_as(dx_fp8, dx_plain, DType::f64, "fp8 padding dx"));
    // And dropping did drop something (otherwise the first half proves nothing).
    EXPECT_GT(test::relative_error(y_drop, y_plain), 1e-6);
  }
}

// The expert bias moves towards balance: under-loaded experts gain, over-loaded lose.
TEST(MoELayer, ExpertBiasUpdateFollowsLoad) {
  MoEConfig c = test::small_moe_config(DType::f32);
  c.moe_router_score_function = ops::ScoreFunction::sigmoid;
  c.moe_router_enable_expert_bias = true;
  c.moe_router_bias_update_rate = 0.25;
  c.moe_aux_loss_coeff = 0;
  c.moe_router_load_balancing_type = nn::LoadBalancingType::none;
  MoELayer layer(c, Device::cpu());
  const Tensor x = test::random_normal({64, c.hidden_size}, DType::f32, test::fresh_seed());
  nn::MoEContext ctx;
  layer.forward(x, ctx);
  const std::vector<int64_t> n = ctx.router.tokens_per_expert.to_vector<int64_t>();
  layer.finish_step();
  const std::vector<float> b = layer.router.expert_bias.to_vector<float>();
  const double mean = 64.0 * c.moe_router_topk / c.num_experts;
  for (size_t e = 0; e < n.size(); ++e) {
    const float expected = n[e] < mean ? 0.25f : (n[e] > mean ? -0.25f : 0.0f);
    EXPECT_EQ(b[e], expected) << "expert " << e << " got " << n[e] << " tokens";
  }
  // The step's counts were reset: a step without forwards changes nothing.
  layer.finish_step();
  EXPECT_EQ(layer.router.expert_bias.to_vector<float>(), b);
}

TEST(MoELayer, ForcedBalanceGivesUnitAuxLoss) {
  MoEConfig c = test::small_moe_config(DType::f64);
  c.moe_router_force_load_balancing = true;
  c.moe_aux_loss_coeff = 1.0;
  MoELayer layer(c, Device::cpu());
  const Tensor x = test::random_normal({32, c.hidden_size}, DType::f64, test::fresh_seed());
  nn::MoEContext ctx;
  layer.forward(x, ctx);
  EXPECT_NEAR(ctx.router.aux_loss.item(), 1.0, 1e-12);
}

TEST(MoELayer, BadInputNamesTheCause) {
  MoEConfig c = test::small_moe_config(DType::f32);
  MoELayer layer(c, Device::cpu());
  nn::MoEContext ctx;
  EXPECT_THROW(layer.forward(Tensor::zeros({4, c.hidden_size + 1}, DType::f32), ctx), Error);
  EXPECT_THROW(layer.forward(Tensor::zeros({4, c.hidden_size}, DType::f64), ctx), Error);
  const Tensor x = test::random_normal({4, c.hidden_size}, DType::f32, 1);
  layer.forward(x, ctx);
  EXPECT_THROW(layer.backward(Tensor::zeros({5, c.hidden_size}, DType::f32), ctx), Error);
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

// zero_grad() is lazy; gradients must still be exact: one backward after zero_grad gives g,
// two give 2g, and zero_grad again forgets them (no stale values leak into the next step).
TEST(MoELayer, LazyZeroGradIsExact) {
  for (bool grouped : {true, false}) {
    nn::MoEConfig c = test::small_moe_config(DType::f64);
    c.moe_grouped_gemm = grouped;
    c.num_experts = 8;  // some experts get no tokens from 5 tokens x top-2
    c.moe_shared_expert_intermediate_size = 3;
    c.moe_shared_expert_gate = true;
    nn::MoELayer layer(c, Device::cpu());
    const Tensor x = test::random_normal({5, c.hidden_size}, DType::f64, test::fresh_seed());
    const Tensor dy = test::random_normal(x.shape(), DType::f64, test::fresh_seed());
    auto step = [&] {
      nn::MoEContext ctx;
      layer.forward(x, ctx);
      layer.backward(dy, ctx);
    };
    layer.zero_grad();
    step();
    std::vector<Tensor> once;
    for (nn::Parameter* p : layer.parameters()) once.push_back(p->grad_value().clone());
    step();
    size_t i = 0;
    for (nn::Parameter* p : layer.parameters()) {
      Tensor twice = once[i++].clone();
      ops::add_(twice, once[i - 1]);
      EXPECT_TRUE(test::close(p->grad_value(), twice, 1e-14, p->name + " accumulates"));
    }
    layer.zero_grad();
    step();
    i = 0;
    for (nn::Parameter* p : layer.parameters())
      EXPECT_TRUE(test::close(p->grad_value(), once[i++], 1e-14, p->name + " after zero_grad"));
  }
}

}  // namespace
}  // namespace moe
