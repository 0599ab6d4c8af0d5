// Activation recomputation (nn/recompute.h) in GPTModel, f64 on the CPU: with each kind of
// recomputation a forward + backward gives the losses and every parameter gradient of the model
// without it, bit for bit; the forward really dropped what it says (a recomputed layer keeps its
// router outputs alone, a selective block its input), the backward recomputed it, and the
// routers' state (the jitter draw counter, the expert bias's step counts) advanced once per
// forward, not twice. Which layers each method recomputes: recompute_units.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "moe/core/error.h"
#include "moe/nn/gpt_model.h"
#include "moe/nn/recompute.h"
#include "nn/gpt_test_util.h"

namespace moe::nn {
namespace {

using Units = std::vector<std::pair<int64_t, int64_t>>;

RecomputeConfig full(RecomputeMethod method, int64_t layers) {
  RecomputeConfig r;
  r.granularity = RecomputeGranularity::full;
  r.method = method;
  r.num_layers = layers;
  return r;
}

RecomputeConfig selective(const std::vector<std::string>& modules) {
  RecomputeConfig r;
  r.granularity = RecomputeGranularity::selective;
  set_recompute_modules(r, modules);
  return r;
}

TEST(RecomputeUnits, UniformBlockAndNone) {
  EXPECT_EQ(recompute_units(full(RecomputeMethod::uniform, 2), 5), (Units{{0, 2}, {2, 4}, {4, 5}}));
  EXPECT_EQ(recompute_units(full(RecomputeMethod::uniform, 1), 3), (Units{{0, 1}, {1, 2}, {2, 3}}));
  EXPECT_EQ(recompute_units(full(RecomputeMethod::uniform, 8), 3), (Units{{0, 3}}));
  EXPECT_EQ(recompute_units(full(RecomputeMethod::block, 2), 5), (Units{{0, 1}, {1, 2}}));
  EXPECT_EQ(recompute_units(full(RecomputeMethod::block, 9), 2), (Units{{0, 1}, {1, 2}}));
  EXPECT_TRUE(recompute_units(full(RecomputeMethod::block, 2), 0).empty());
  EXPECT_TRUE(recompute_units(RecomputeConfig{}, 4).empty());
  EXPECT_TRUE(recompute_units(selective({"moe"}), 4).empty());
  EXPECT_THROW(recompute_units(full(RecomputeMethod::uniform, 0), 4), Error);
}

TEST(RecomputeModules, MegatronsNamesAndWhatIsNotBuilt) {
  const RecomputeConfig r = selective({"moe", "shared_experts", "core_attn"});
  EXPECT_TRUE(r.moe);
  EXPECT_FALSE(r.mlp);
  EXPECT_TRUE(r.shared_experts);
  EXPECT_TRUE(selective({"moe_layer"}).moe);  // Megatron's deprecation message's name
  EXPECT_EQ(describe_recompute(r), "selective: moe, shared_experts");
  EXPECT_EQ(describe_recompute(selective({"core_attn"})),
            "selective: nothing to recompute (core_attn)");
  EXPECT_EQ(describe_recompute(full(RecomputeMethod::uniform, 1)),
            "full, uniform units of 1 layer");
  for (const char* later : {"moe_act", "layernorm", "mla_up_proj"}) {
    try {
      selective({later});
      ADD_FAILURE() << later << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not built yet"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(selective({"attention"}), Error);
  EXPECT_THROW(parse_recompute_granularity("partial"), Error);
  EXPECT_THROW(parse_recompute_method("even"), Error);
}

// A 4-layer model: dense, then 3 MoE layers with a shared expert; jitter and the expert bias on
// (the router state a recomputation must not advance twice), dropout on (its masks must repeat).
ModelConfig recompute_model() {
  ModelConfig c = test::tiny_gpt_config();
  c.num_layers = 4;
  c.moe_layer_pattern = {0, 1, 1, 1};
  c.moe.moe_shared_expert_intermediate_size = 4;
  c.moe.moe_input_jitter_eps = 0.05;
  c.moe.moe_router_enable_expert_bias = true;
  c.moe.moe_router_score_function = ops::ScoreFunction::sigmoid;
  c.hidden_dropout = c.attention_dropout = 0.1;
  c.mtp_num_layers = 1;
  return c;
}

struct Pass {
  double loss = 0;
  std::vector<std::vector<double>> grads;
  std::vector<uint64_t> router_counts;
  GPTContext ctx;  // after forward(), before backward()
};

// Two micro-batches of forward + backward, as a training step runs them.
Pass run(const RecomputeConfig& recompute) {
  const ModelConfig c = recompute_model();
  GPTModel model(c, DType::f64, Device::cpu(), 77);
  test::randomize_norms_and_biases(model, 5);
  model.set_recompute(recompute);
  model.zero_grad();
  Pass pass;
  for (int mb = 0; mb < 2; ++mb) {
    GPTContext ctx;
    ctx.dropout_first_sample = 2 * mb;
    const Tensor ids = test::random_tokens(6, 2, c.vocab_size, 10 + mb);
    const Tensor labels = test::random_tokens(6, 2, c.vocab_size, 20 + mb);
    const GPTLoss loss = model.forward(ids, labels, ctx);
    pass.loss += loss.loss.to_double_vector()[0];
    if (mb == 0) pass.ctx = ctx;
    model.backward(ctx, 0.5);
  }
  for (Parameter* p : model.parameters()) pass.grads.push_back(p->grad_value().to_double_vector());
  pass.router_counts = model.router_forward_counts();
  model.finish_step();  // the expert-bias update from the step's counts
  for (MoELayer* moe : model.moe_layers())
    pass.grads.push_back(moe->router.expert_bias.to_double_vector());
  return pass;
}

void expect_same(const Pass& a, const Pass& b, const std::string& what) {
  EXPECT_EQ(a.loss, b.loss) << what;
  ASSERT_EQ(a.grads.size(), b.grads.size()) << what;
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_EQ(a.grads[i], b.grads[i]) << what << " #" << i;
  EXPECT_EQ(a.router_counts, b.router_counts) << what;
}

TEST(GPTModelRecompute, FullUnitsKeepTheirInputAndTrainTheSame) {
  const Pass plain = run({});
  for (const auto& [method, layers] :
       {std::pair{RecomputeMethod::uniform, 1}, std::pair{RecomputeMethod::uniform, 3},
        std::pair{RecomputeMethod::block, 2}}) {
    const RecomputeConfig r = full(method, layers);
    const std::string what = describe_recompute(r);
    const Pass recomputed = run(r);
    expect_same(recomputed, plain, what);
    // What the forward kept: a unit's first layer its input; recomputed layers their router
    // outputs alone; the others everything.
    const Units units = recompute_units(r, 4);
    std::vector<bool> in_unit(4, false), first(4, false);
    for (const auto& [b, e] : units) {
      first[static_cast<size_t>(b)] = true;
      for (int64_t i = b; i < e; ++i) in_unit[static_cast<size_t>(i)] = true;
    }
    const GPTContext& ctx = recomputed.ctx;
    ASSERT_EQ(ctx.layers.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(ctx.recompute_inputs[i].defined(), first[i]) << what << " layer " << i;
      EXPECT_EQ(ctx.layers[i].input_norm.x.defined(), !in_unit[i]) << what << " layer " << i;
      EXPECT_EQ(ctx.layers[i].attention.q.defined(), !in_unit[i]) << what << " layer " << i;
      if (i > 0) {  // MoE layers: the probabilities stay for the logs, the router input goes
        EXPECT_TRUE(ctx.layers[i].moe.router.probs.defined()) << what << " layer " << i;
        EXPECT_TRUE(ctx.layers[i].moe.router.aux_loss.defined() ||
                    !recompute_model().moe.moe_aux_loss_coeff)
            << what << " layer " << i;
        EXPECT_EQ(ctx.layers[i].moe.router.router_input.defined(), !in_unit[i])
            << what << " layer " << i;
      }
    }
  }
}

TEST(GPTModelRecompute, SelectiveBlocksKeepTheirInputAndTrainTheSame) {
  const Pass plain = run({});
  const Pass recomputed = run(selective({"moe", "mlp"}));
  expect_same(recomputed, plain, "selective moe mlp");
  const GPTContext& ctx = recomputed.ctx;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(ctx.layers[i].mlp_block_input.defined()) << "layer " << i;
    EXPECT_TRUE(ctx.layers[i].attention.q.defined()) << "layer " << i;  // attention kept
  }
  EXPECT_FALSE(ctx.layers[0].mlp.fc1_out.defined());
  EXPECT_FALSE(ctx.layers[1].moe.experts.x.defined());
  EXPECT_FALSE(ctx.layers[1].moe.shared.x.defined());
  EXPECT_TRUE(ctx.layers[1].moe.router.probs.defined());
  // The MTP layer's MoE block too.
  EXPECT_TRUE(ctx.mtp[0].layer.layer.mlp_block_input.defined());

  const Pass shared = run(selective({"shared_experts"}));
  expect_same(shared, plain, "selective shared_experts");
  EXPECT_TRUE(shared.ctx.layers[1].moe.shared.x.defined());
  EXPECT_FALSE(shared.ctx.layers[1].moe.shared.fc1_out.defined());
  EXPECT_TRUE(shared.ctx.layers[1].moe.experts.x.defined());  // the rest of the block kept

  const Pass nothing = run(selective({"core_attn"}));
  expect_same(nothing, plain, "selective core_attn");
  EXPECT_FALSE(nothing.ctx.layers[1].mlp_block_input.defined());
}

TEST(GPTModelRecompute, AForwardWithoutItsBackwardLeavesNoStateBehind) {
  // Evaluation: forwards only, recomputed units dropped at once; a training step after them
  // equals one without recomputation.
  const ModelConfig c = recompute_model();
  GPTModel model(c, DType::f64, Device::cpu(), 77);
  model.set_recompute(full(RecomputeMethod::uniform, 2));
  GPTContext ctx;
  const Tensor ids = test::random_tokens(6, 2, c.vocab_size, 3);
  (void)model.forward(ids, ids, ctx);
  EXPECT_FALSE(ctx.layers[1].attention.q.defined());
  EXPECT_TRUE(ctx.recompute_inputs[0].defined());
  model.backward(ctx, 1.0);
  EXPECT_FALSE(ctx.recompute_inputs[0].defined());   // used
  EXPECT_TRUE(ctx.layers[1].attention.q.defined());  // recomputed
  EXPECT_THROW(model.backward(ctx, 1.0), Error);     // a second backward has no input
}

}  // namespace
}  // namespace moe::nn
