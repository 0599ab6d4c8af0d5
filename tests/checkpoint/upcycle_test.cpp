// Upcycling (checkpoint/upcycle.h, `moe train --moe-use-upcycling`), as specifications:
//   - the default scheme keeps the dense model's function exactly where the k chosen
//     probabilities sum to 1 (top-k then softmax, group-limited too, normalised sigmoid with
//     expert bias):
//     logits and MTP losses equal the dense model's in f64;
//   - the granular scheme (and pre-softmax scaling) equals the dense model with SiLU sharpened
//     to z sigmoid(c z), c = s^(1/3), when k is a multiple of g (pre-softmax: for a uniform
//     router), which is what the paper's scaling promises for a gated MLP;
//   - the tensors follow Megatron's layout (pieces e mod g, router rows repeated g times);
//   - bad combinations fail with errors naming the flags and the values;
//   - `moe train --moe-use-upcycling` on a dense checkpoint saves the iteration-0 MoE model
//     (whose logits are the dense model's), trains with falling loss, resumes as usual, and
//     refuses to upcycle over an existing run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/checkpoint/model_io.h"
#include "moe/checkpoint/upcycle.h"
#include "moe/core/error.h"
#include "moe/train/train_args.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/train_run.h"
#include "nn/gpt_test_util.h"

namespace moe::checkpoint {
namespace {

namespace fs = std::filesystem;

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_HAS(call, ...)                                              \
  do {                                                                           \
    const std::string message_ = error_of([&] { call; });                        \
    ASSERT_FALSE(message_.empty()) << "no error from " #call;                    \
    for (const char* part_ : {__VA_ARGS__})                                      \
      EXPECT_NE(message_.find(part_), std::string::npos) << part_ << " not in: " << message_; \
  } while (0)

// The dense model: 3 layers, hidden 8, 4 heads in 2 groups, q/k norms, FFN 12, one MTP layer,
// vocabulary 11; large init so that routing and SiLU are far from linear.
nn::ModelConfig dense_config() {
  nn::ModelConfig c = test::tiny_gpt_config(DType::f64);
  c.num_layers = 3;
  c.qk_layernorm = true;
  c.mtp_num_layers = 1;
  c.moe_layer_pattern = {0, 0, 0};
  return c;
}

// The MoE model of it: layer 0 stays dense, layers 1, 2 (and so the MTP layer) are MoE.
nn::ModelConfig moe_config(int64_t experts, int64_t topk, int64_t granularity) {
  nn::ModelConfig c = dense_config();
  c.moe_layer_pattern = {0, 1, 1};
  c.moe.num_experts = experts;
  c.moe.moe_router_topk = topk;
  c.moe.moe_ffn_hidden_size = c.ffn_hidden_size / granularity;
  c.moe.moe_router_dtype = nn::RouterDType::fp64;
  return c;
}

struct Outputs {
  Tensor logits;
  double lm_loss = 0.0, mtp_loss = 0.0;
};

Outputs outputs(nn::GPTModel& model) {
  const Tensor ids = test::random_tokens(7, 3, 11, 5);
  const Tensor labels = test::random_tokens(7, 3, 11, 6);
  nn::GPTContext ctx;
  const nn::GPTLoss loss = model.forward(ids, labels, ctx);
  return {model.logits(ids), loss.lm_loss.item(), loss.mtp_loss.item()};
}

void expect_same_function(nn::GPTModel& actual, nn::GPTModel& expected, double tol = 1e-12) {
  const Outputs a = outputs(actual), e = outputs(expected);
  EXPECT_LT(test::relative_error(a.logits, e.logits), tol);
  EXPECT_NEAR(a.lm_loss, e.lm_loss, tol * std::abs(e.lm_loss));
  EXPECT_NEAR(a.mtp_loss, e.mtp_loss, tol * std::abs(e.mtp_loss));
}

// The dense MLP with SiLU replaced by silu(c z) / c: gate rows times c, fc2 divided by c.
void sharpen(nn::DenseMLP& mlp, double c) {
  std::vector<double> w1 = mlp.fc1.value.to_vector<double>();
  const size_t gate = w1.size() / 2;  // the first F rows of [gate; up]
  for (size_t i = 0; i < gate; ++i) w1[i] *= c;
  mlp.fc1.value.copy_(Tensor::from_vector(w1, mlp.fc1.value.shape()));
  std::vector<double> w2 = mlp.fc2.value.to_vector<double>();
  for (double& w : w2) w /= c;
  mlp.fc2.value.copy_(Tensor::from_vector(w2, mlp.fc2.value.shape()));
}

constexpr uint64_t kDenseSeed = 11, kMoESeed = 22;

TEST(Upcycle, ScaleIsMegatrons) {
  nn::MoEConfig m;
  m.num_experts = 8;
  m.moe_router_topk = 4;
  UpcyclingScale s = upcycling_scale(m, 1);  // default scheme, top-k then softmax: no scaling
  EXPECT_EQ(s.expansion_rate, 8);
  EXPECT_EQ(s.activation_scale, 1.0);
  EXPECT_EQ(s.weight_scale, 1.0);
  s = upcycling_scale(m, 2);  // s = g
  EXPECT_EQ(s.expansion_rate, 4);
  EXPECT_EQ(s.activation_scale, 2.0);
  EXPECT_DOUBLE_EQ(s.weight_scale, std::cbrt(2.0));
  m.moe_router_pre_softmax = true;  // s = r g^2 / k = 4 * 4 / 4
  s = upcycling_scale(m, 2);
  EXPECT_EQ(s.activation_scale, 4.0);
  EXPECT_DOUBLE_EQ(s.weight_scale, std::cbrt(4.0));
  s = upcycling_scale(m, 1);  // pre-softmax scales even the default scheme: E / k
  EXPECT_EQ(s.activation_scale, 2.0);
  EXPECT_THROW(upcycling_scale(m, 3), Error);  // 8 experts in groups of 3
  EXPECT_THROW(upcycling_scale(m, 0), Error);
}

TEST(Upcycle, TensorsFollowTheVirtualGroupLayout) {
  // fc1 [2F = 8, H = 3] = [gate rows 0..3; up rows 4..7], value 10 row + col; g = 2, E = 4.
  const int64_t H = 3, F = 4, g = 2, E = 4;
  std::vector<double> w1(2 * F * H), w2(H * F), router(E * H);
  for (int64_t i = 0; i < 2 * F * H; ++i) w1[i] = 10.0 * (i / H) + i % H;
  for (int64_t i = 0; i < H * F; ++i) w2[i] = 100.0 + 10.0 * (i / F) + i % F;
  for (int64_t i = 0; i < E * H; ++i) router[i] = 1000.0 + i;
  UpcyclingScale scale;
  scale.granularity = g;
  scale.expansion_rate = E / g;
  scale.weight_scale = 0.5;
  const std::vector<double> fc1 =
      upcycle_expert_fc1(Tensor::from_vector(w1, {2 * F, H}), scale).to_vector<double>();
  const std::vector<double> fc2 =
      upcycle_expert_fc2(Tensor::from_vector(w2, {H, F}), scale).to_vector<double>();
  const Tensor r = upcycle_router(Tensor::from_vector(router, {E, H}), g);
  ASSERT_EQ(fc1.size(), static_cast<size_t>(E * F * H));  // [E, 2 F/g, H]
  ASSERT_EQ(fc2.size(), static_cast<size_t>(E * H * F / 2));
  EXPECT_EQ(r.shape(), (Shape{E, H}));
  const int64_t Fe = F / g;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t piece = e % g;
    for (int64_t row = 0; row < 2 * Fe; ++row) {
      // gate rows piece*Fe.., then up rows F + piece*Fe..
      const int64_t dense_row = row < Fe ? piece * Fe + row : F + piece * Fe + (row - Fe);
      for (int64_t h = 0; h < H; ++h)
        EXPECT_EQ(fc1[(e * 2 * Fe + row) * H + h], 0.5 * (10.0 * dense_row + h)) << e << " " << row;
    }
    for (int64_t h = 0; h < H; ++h)
      for (int64_t f = 0; f < Fe; ++f)
        EXPECT_EQ(fc2[(e * H + h) * Fe + f], 0.5 * (100.0 + 10.0 * h + piece * Fe + f));
  }
  const std::vector<double> rows = r.to_vector<double>();
  for (int64_t e = 0; e < E; ++e)
    for (int64_t h = 0; h < H; ++h) EXPECT_EQ(rows[e * H + h], 1000.0 + (e / g) * H + h);
  // Dtype and device follow the input.
  EXPECT_EQ(upcycle_router(Tensor::from_vector(router, {E, H}).to(DType::f32), g).dtype(), DType::f32);
}

// Default scheme: the k chosen probabilities sum to 1, every expert is the dense MLP, so the
// MoE layer is the dense MLP and the logits are the dense model's.
TEST(Upcycle, DefaultSchemeKeepsTheDenseLogits) {
  struct Routing {
    const char* name;
    int64_t experts, topk;
    const char* score;
    bool expert_bias;
    int64_t groups = 0, group_topk = 0;
  };
  for (const Routing& routing :
       {Routing{"softmax top-2", 4, 2, "softmax", false},
        Routing{"softmax top-4 of 8, 4 groups keep 2", 8, 4, "softmax", false, 4, 2},
        Routing{"sigmoid top-3, expert bias", 6, 3, "sigmoid", true}}) {
    SCOPED_TRACE(routing.name);
    nn::GPTModel dense(dense_config(), DType::f64, Device::cpu(), kDenseSeed);
    nn::ModelConfig mc = moe_config(routing.experts, routing.topk, 1);
    mc.moe.moe_router_score_function = nn::parse_score_function(routing.score);
    mc.moe.moe_router_enable_expert_bias = routing.expert_bias;
    mc.moe.moe_router_num_groups = routing.groups;
    mc.moe.moe_router_group_topk = routing.group_topk;
    nn::GPTModel moe(mc, DType::f64, Device::cpu(), kMoESeed);
    const Tensor fresh_router = moe.layers[1].moe->router.weight.value.clone();
    EXPECT_GT(test::relative_error(outputs(moe).logits, outputs(dense).logits), 1e-3);  // before

    const UpcyclingReport report = upcycle_model(dense, moe, 1);
    EXPECT_EQ(report.moe_layers, 3);  // layers 1, 2 and the MTP layer
    EXPECT_EQ(report.dense_mlps_copied, 1);
    EXPECT_EQ(report.scale.weight_scale, 1.0);
    EXPECT_TRUE(report.notes.empty());
    expect_same_function(moe, dense);
    // The router stays the fresh one (g = 1: its E rows, each once).
    EXPECT_EQ(test::relative_error(moe.layers[1].moe->router.weight.value, fresh_router), 0.0);
  }
}

// g > 1, k a multiple of g, top-k then softmax: k / g whole virtual groups are chosen; each
// sums to c^2 fc2 (silu(c gate x) * up x) with weight q_i / g, sum q_i = 1, c^3 = g: the MoE
// layer is the dense MLP with SiLU sharpened to silu(c z) / c.
TEST(Upcycle, GranularSchemeIsTheDenseModelWithSharpenedSiLU) {
  for (auto [g, experts, topk] : {std::tuple{2, 8, 4}, std::tuple{3, 6, 3}, std::tuple{2, 4, 2}}) {
    SCOPED_TRACE(::testing::Message() << "g " << g << ", E " << experts << ", top-" << topk);
    nn::GPTModel dense(dense_config(), DType::f64, Device::cpu(), kDenseSeed);
    nn::GPTModel moe(moe_config(experts, topk, g), DType::f64, Device::cpu(), kMoESeed);
    const UpcyclingReport report = upcycle_model(dense, moe, g);
    const double c = std::cbrt(static_cast<double>(g));
    EXPECT_DOUBLE_EQ(report.scale.weight_scale, c);

    nn::GPTModel expected(dense_config(), DType::f64, Device::cpu(), kDenseSeed);
    sharpen(*expected.layers[1].mlp, c);
    sharpen(*expected.layers[2].mlp, c);
    sharpen(*expected.mtp_layers[0].layer.mlp, c);
    expect_same_function(moe, expected);
    // Not the dense model itself: the check above sees the scale.
    EXPECT_GT(test::relative_error(outputs(moe).logits, outputs(dense).logits), 1e-6);
  }
}

// Pre-softmax: s = r g^2 / k, for the router a fresh one is in expectation, uniform. With zero
// router weights every prob is 1 / E, ties go to the lower index, so experts 0..k-1 (k / g whole
// groups) are chosen and MoE(x) = (k / g)(1 / E) c^2 fc2 (silu(c gate x) * up x) with
// c^3 = E g / k: the sharpened dense model again. g = 1 scales too (Megatron's formula).
TEST(Upcycle, PreSoftmaxScalingKeepsTheOutputForAUniformRouter) {
  for (auto [g, experts, topk] : {std::tuple{2, 8, 4}, std::tuple{1, 4, 2}}) {
    SCOPED_TRACE(::testing::Message() << "g " << g << ", E " << experts << ", top-" << topk);
    nn::GPTModel dense(dense_config(), DType::f64, Device::cpu(), kDenseSeed);
    nn::ModelConfig mc = moe_config(experts, topk, g);
    mc.moe.moe_router_pre_softmax = true;
    nn::GPTModel moe(mc, DType::f64, Device::cpu(), kMoESeed);
    const UpcyclingReport report = upcycle_model(dense, moe, g);
    const double c = std::cbrt(static_cast<double>(experts * g) / static_cast<double>(topk));
    EXPECT_DOUBLE_EQ(report.scale.weight_scale, c);
    for (nn::TransformerLayer* layer : {&moe.layers[1], &moe.layers[2], &moe.mtp_layers[0].layer})
      layer->moe->router.weight.value.zero_();

    nn::GPTModel expected(dense_config(), DType::f64, Device::cpu(), kDenseSeed);
    sharpen(*expected.layers[1].mlp, c);
    sharpen(*expected.layers[2].mlp, c);
    sharpen(*expected.mtp_layers[0].layer.mlp, c);
    expect_same_function(moe, expected);
  }
}

// The router of the granular scheme: the first E / g fresh rows, each g times.
TEST(Upcycle, GranularRouterRepeatsTheFirstRows) {
  nn::GPTModel dense(dense_config(), DType::f64, Device::cpu(), kDenseSeed);
  nn::GPTModel moe(moe_config(6, 3, 3), DType::f64, Device::cpu(), kMoESeed);
  const std::vector<double> fresh = moe.layers[2].moe->router.weight.value.to_vector<double>();
  upcycle_model(dense, moe, 3);
  const std::vector<double> rows = moe.layers[2].moe->router.weight.value.to_vector<double>();
  const size_t H = 8;
  for (size_t e = 0; e < 6; ++e)
    for (size_t h = 0; h < H; ++h) EXPECT_EQ(rows[e * H + h], fresh[(e / 3) * H + h]);
}

TEST(Upcycle, BadCombinationsNameTheFlagsAndValues) {
  nn::GPTModel dense(dense_config(), DType::f64, Device::cpu(), kDenseSeed);
  auto upcycle = [&](const nn::ModelConfig& mc, int64_t g) {
    nn::GPTModel moe(mc, DType::f64, Device::cpu(), kMoESeed);
    upcycle_model(dense, moe, g);
  };
  nn::ModelConfig mc = moe_config(4, 2, 1);
  mc.hidden_size = mc.moe.hidden_size = 16;
  EXPECT_ERROR_HAS(upcycle(mc, 1), "--hidden-size", "16", "8");
  mc = moe_config(4, 2, 1);
  mc.vocab_size = 13;
  EXPECT_ERROR_HAS(upcycle(mc, 1), "--vocab-size", "13", "11");
  mc = moe_config(4, 2, 1);
  mc.num_query_groups = 4;
  EXPECT_ERROR_HAS(upcycle(mc, 1), "--num-query-groups", "4", "2");
  mc = moe_config(4, 2, 1);
  mc.moe.moe_ffn_hidden_size = 6;  // the dense FFN is 12: g = 1 needs 12
  EXPECT_ERROR_HAS(upcycle(mc, 1), "--moe-ffn-hidden-size 6", "--ffn-hidden-size 12", "= 12");
  mc = moe_config(4, 2, 2);
  mc.moe.moe_ffn_hidden_size = 4;
  EXPECT_ERROR_HAS(upcycle(mc, 2), "--moe-ffn-hidden-size 4", "--ffn-hidden-size 12",
                   "--moe-upcycling-granularity 2 = 6");
  mc = moe_config(10, 5, 1);
  mc.moe.moe_ffn_hidden_size = 2;
  EXPECT_ERROR_HAS(upcycle(mc, 5), "--moe-upcycling-granularity 5 does not divide",
                   "--ffn-hidden-size 12");
  mc = moe_config(4, 2, 3);
  EXPECT_ERROR_HAS(upcycle(mc, 3), "--num-experts 4 is not a multiple of",
                   "--moe-upcycling-granularity 3");
  mc = moe_config(4, 2, 1);
  mc.moe.moe_shared_expert_intermediate_size = 12;
  EXPECT_ERROR_HAS(upcycle(mc, 1), "--moe-shared-expert-intermediate-size 12", "not supported");
  mc = moe_config(4, 2, 1);
  mc.ffn_hidden_size = 24;  // the dense layer 0 is copied: its width must match
  EXPECT_ERROR_HAS(upcycle(mc, 1), "--ffn-hidden-size of the MoE model is 24", "12");
  // The source must be dense.
  nn::GPTModel not_dense(moe_config(4, 2, 1), DType::f64, Device::cpu(), kDenseSeed);
  nn::GPTModel moe(moe_config(4, 2, 1), DType::f64, Device::cpu(), kMoESeed);
  EXPECT_ERROR_HAS(upcycle_model(not_dense, moe, 1), "not dense", "layer 1");
  // Non-shape differences are notes, not errors.
  mc = moe_config(4, 2, 1);
  mc.rotary_base = 500000.0;
  nn::GPTModel other(mc, DType::f64, Device::cpu(), kMoESeed);
  const UpcyclingReport report = upcycle_model(dense, other, 1);
  ASSERT_EQ(report.notes.size(), 1u);
  EXPECT_NE(report.notes[0].find("--rotary-base"), std::string::npos) << report.notes[0];
  // So is a top-k that splits virtual groups (Megatron allows it).
  nn::GPTModel split(moe_config(6, 3, 2), DType::f64, Device::cpu(), kMoESeed);
  const UpcyclingReport split_report = upcycle_model(dense, split, 2);
  ASSERT_EQ(split_report.notes.size(), 1u);
  EXPECT_NE(split_report.notes[0].find("--moe-router-topk 3 is not a multiple"), std::string::npos)
      << split_report.notes[0];
}

TEST(Upcycle, FlagsAreCheckedBeforeAnythingRuns) {
  using train::parse_train_args;
  EXPECT_ERROR_HAS(parse_train_args({"--moe-use-upcycling", "--save", "/tmp/x"}),
                   "--moe-use-upcycling needs --load");
  EXPECT_ERROR_HAS(parse_train_args({"--moe-use-upcycling", "--load", "/tmp/x"}),
                   "--moe-use-upcycling needs --save");
  EXPECT_ERROR_HAS(parse_train_args({"--moe-upcycling-granularity", "2"}),
                   "--moe-upcycling-granularity 2 needs --moe-use-upcycling");
  EXPECT_ERROR_HAS(parse_train_args({"--moe-use-upcycling", "--load", "/tmp/x", "--save", "/tmp/y",
                                     "--moe-upcycling-granularity", "3"}),
                   "--num-experts 8 is not a multiple of", "--moe-upcycling-granularity 3");
  EXPECT_ERROR_HAS(parse_train_args({"--moe-use-upcycling", "--load", "/tmp/x", "--save", "/tmp/y",
                                     "--moe-upcycling-granularity", "0"}),
                   "--moe-upcycling-granularity must be >= 1");
  EXPECT_ERROR_HAS(parse_train_args({"--moe-use-upcycling", "--load", "/tmp/x", "--save", "/tmp/y",
                                     "--moe-shared-expert-intermediate-size", "64"}),
                   "--moe-shared-expert-intermediate-size 64");
  const train::TrainRunConfig ok = parse_train_args(
      {"--moe-use-upcycling", "--load", "/tmp/x", "--save", "/tmp/y", "--moe-upcycling-granularity",
       "2", "--moe-ffn-hidden-size", "64", "--lr", "1e-3"});
  EXPECT_TRUE(ok.moe_use_upcycling);
  EXPECT_EQ(ok.moe_upcycling_granularity, 2);
  EXPECT_NE(train::train_flags_help().find("--moe-upcycling-granularity G"), std::string::npos);
}

// ---- `moe train --moe-use-upcycling` end to end -----------------------------------------------

fs::path fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("moe_upcycle_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  return dir;
}

// 2 layers of width 32, FFN 64, on the built-in corpus; `extra` adds or overrides flags.
std::vector<std::string> run_args(int64_t iters, std::vector<std::string> extra) {
  std::vector<std::string> args = {
      "--cpu", "--num-layers", "2", "--hidden-size", "32", "--ffn-hidden-size", "64",
      "--num-attention-heads", "2", "--num-query-groups", "1", "--seq-length", "32",
      "--micro-batch-size", "4", "--global-batch-size", "8", "--train-iters",
      std::to_string(iters), "--lr", "1e-2", "--log-interval", "5", "--eval-iters", "0",
      "--sample-tokens", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

double mean(const std::vector<double>& v, size_t from, size_t count) {
  double s = 0.0;
  for (size_t i = from; i < from + count; ++i) s += v[i];
  return s / static_cast<double>(count);
}

TEST(UpcycleRun, TrainsFromTheDenseCheckpointAndResumes) {
  const fs::path dir = fresh_dir("run");
  const std::string dense_save = (dir / "dense").string(), moe_save = (dir / "moe").string();
  const train::TrainHooks hooks = train::standard_train_hooks();

  // A dense model trained a little: every layer dense.
  train::run_training(
      train::parse_train_args(run_args(10, {"--moe-layer-freq", "[0,0]", "--save", dense_save})),
      hooks, nullptr);
  ASSERT_EQ(train::latest_checkpoint_iteration(dense_save), 10);

  // Upcycled into 4 experts top-2 (default scheme), every layer MoE.
  const std::vector<std::string> moe_flags = {"--num-experts", "4", "--moe-router-topk", "2",
                                              "--moe-ffn-hidden-size", "64",
                                              "--moe-aux-loss-coeff", "1e-2",
                                              "--moe-use-upcycling"};
  auto moe_run = [&](int64_t iters, const std::string& load) {
    std::vector<std::string> extra = moe_flags;
    for (const std::string& a : {std::string("--load"), load, std::string("--save"), moe_save})
      extra.push_back(a);
    return train::parse_train_args(run_args(iters, extra));
  };
  std::FILE* out = std::tmpfile();
  const train::TrainRunResult r = train::run_training(moe_run(20, dense_save), hooks, out);
  std::rewind(out);
  std::string text(1 << 16, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), out));
  std::fclose(out);
  EXPECT_NE(text.find("upcycled the dense model"), std::string::npos) << text;
  EXPECT_NE(text.find("iter_0000000"), std::string::npos) << text;

  ASSERT_EQ(r.iterations, 20);
  // It starts from the dense model's loss, not from an untrained model's log(384) ~ 5.95.
  EXPECT_LT(r.losses[0], std::log(384.0) - 1.0) << r.losses[0];
  EXPECT_LT(mean(r.losses, 15, 5), mean(r.losses, 0, 5) - 0.05)
      << "first " << mean(r.losses, 0, 5) << " last " << mean(r.losses, 15, 5);
  EXPECT_EQ(train::latest_checkpoint_iteration(moe_save), 20);

  // The iteration-0 checkpoint: an MoE model computing the dense model's logits.
  const fs::path iter0 = fs::path(moe_save) / "iter_0000000";
  ASSERT_TRUE(fs::is_regular_file(iter0 / "manifest.json"));
  std::unique_ptr<nn::GPTModel> moe = load_model(iter0.string(), DType::f64, Device::cpu());
  std::unique_ptr<nn::GPTModel> dense =
      load_model((fs::path(dense_save) / "iter_0000010").string(), DType::f64, Device::cpu());
  ASSERT_TRUE(moe->layers[0].is_moe() && moe->layers[1].is_moe());
  ASSERT_FALSE(dense->layers[0].is_moe());
  const Tensor ids = test::random_tokens(16, 2, 257, 3);
  // f32 weights read into f64; the router runs in fp32 (its probs sum to 1 within 1e-7).
  EXPECT_LT(test::relative_error(moe->logits(ids), dense->logits(ids)), 1e-6);

  // The upcycled run, resumed: --load now holds the MoE checkpoint; it loads as usual.
  const train::TrainRunResult resumed = train::run_training(moe_run(24, moe_save), hooks, nullptr);
  EXPECT_EQ(resumed.iterations, 4);
  EXPECT_EQ(train::latest_checkpoint_iteration(moe_save), 24);

  // Upcycling again over the existing run is refused (Megatron's rule), before any change.
  EXPECT_ERROR_HAS(train::run_training(moe_run(30, dense_save), hooks, nullptr),
                   "already holds a checkpoint (iteration 24)", "--load");
  EXPECT_EQ(train::latest_checkpoint_iteration(moe_save), 24);
  fs::remove_all(dir);
}

// Granular upcycling from an iteration folder (a --load form of its own), and the --load
// errors of a run.
TEST(UpcycleRun, GranularFromAnIterationFolderAndLoadErrors) {
  const fs::path dir = fresh_dir("granular");
  const std::string dense_save = (dir / "dense").string(), moe_save = (dir / "moe").string();
  const train::TrainHooks hooks = train::standard_train_hooks();
  train::run_training(
      train::parse_train_args(run_args(4, {"--moe-layer-freq", "[0,0]", "--save", dense_save})),
      hooks, nullptr);
  const std::string iter4 = (fs::path(dense_save) / "iter_0000004").string();

  auto granular = [&](const std::string& load, const std::string& save, const char* ffn) {
    return train::parse_train_args(run_args(
        6, {"--num-experts", "8", "--moe-router-topk", "4", "--moe-ffn-hidden-size", ffn,
            "--moe-use-upcycling", "--moe-upcycling-granularity", "2", "--load", load, "--save",
            save}));
  };
  const train::TrainRunResult r = train::run_training(granular(iter4, moe_save, "32"), hooks, nullptr);
  EXPECT_EQ(r.iterations, 6);
  for (double loss : r.losses) EXPECT_TRUE(std::isfinite(loss));
  std::unique_ptr<nn::GPTModel> moe =
      load_model((fs::path(moe_save) / "iter_0000000").string(), DType::f32, Device::cpu());
  EXPECT_EQ(moe->layers[0].moe->experts.fc1.value.shape(), (Shape{8, 64, 32}));

  // --moe-ffn-hidden-size must be the dense 64 / 2.
  EXPECT_ERROR_HAS(train::run_training(granular(iter4, (dir / "bad").string(), "16"), hooks, nullptr),
                   "--moe-ffn-hidden-size 16", "--ffn-hidden-size 64", "= 32");
  // A --load without any checkpoint.
  fs::create_directories(dir / "empty");
  EXPECT_ERROR_HAS(
      train::run_training(granular((dir / "empty").string(), (dir / "bad").string(), "32"), hooks,
                          nullptr),
      "holds no checkpoint to upcycle");
  EXPECT_FALSE(fs::exists(dir / "bad" / train::kTrackerFileName));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe::checkpoint
