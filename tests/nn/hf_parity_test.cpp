// Parity with Hugging Face transformers on the CPU, in f32: each fixture of tests/fixtures/hf/
// (a tiny random model made and run by transformers' own classes, make_hf_fixtures.py) is
// loaded with checkpoint::load_model from its HF folder, run forward and backward, and compared
// with transformers' logits (relative L2 error <= 1e-4 over the whole [S, B, V] tensor), loss,
// and gradients (<= 1e-3; moecore's fused gradients are mapped to HF names with
// checkpoint::moecore_to_hf). The fixtures' routing decisions all have relative margins
// >= 0.1 and >= 4 x the bf16 noise of the router's deciding values (meta.json), so neither f32
// nor bf16 rounding can flip an expert choice.
//
// The sensitivity test changes behaviours the HF config decides (routing rules, the rotary
// layout, the routed scaling, YaRN's attention scale) and expects the
// logits to move far outside the parity tolerance: the fixtures can tell those apart.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/checkpoint/model_io.h"
#include "nn/hf_fixture.h"

namespace moe::test {
namespace {

constexpr double kLogitsTol = 1e-4;
constexpr double kLossTol = 1e-4;
constexpr double kGradTol = 1e-3;

std::string family_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

class HfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParity, F32LogitsLossAndGradientsMatchTransformers) {
  const HfFixture fx = load_hf_fixture(GetParam());
  auto model = checkpoint::load_model(fx.dir, DType::f32, Device::cpu());
  ASSERT_EQ(model->config().family, fx.family);
  ASSERT_EQ(model->config().vocab_size, fx.vocab);
  const HfParityResult r = run_hf_parity(*model, fx);
  expect_hf_parity(fx, r, kLogitsTol, kLossTol, [](const std::string&) { return kGradTol; });
}

// Behaviours the fixture must be able to see, changed after the config is read; with any of
// them the logits must miss transformers' by far more than the parity tolerance.
struct WrongBehaviour {
  const char* what;
  std::function<void(nn::ModelConfig&)> adjust;
};

std::vector<WrongBehaviour> wrong_behaviours(const std::string& family) {
  const auto pre_softmax = [](bool on) {
    return [on](nn::ModelConfig& c) { c.moe.moe_router_pre_softmax = on; };
  };
  const auto half_rotary = [](nn::ModelConfig& c) { c.rotary_style = nn::RotaryStyle::half; };
  if (family == "mixtral") return {{"top-k probabilities not renormalised", pre_softmax(true)}};
  if (family == "qwen2_moe")
    return {{"renormalised although norm_topk_prob is false", pre_softmax(false)}};
  if (family == "qwen3_moe")
    return {{"not renormalised although norm_topk_prob is true", pre_softmax(true)}};
  if (family == "deepseek_v2")
    return {{"Megatron's group score (sum of the top k / topk_group) instead of the best expert",
             [](nn::ModelConfig& c) { c.moe.moe_router_group_score_topk = 2; }},
            {"routed_scaling_factor ignored",
             [](nn::ModelConfig& c) { c.moe.moe_router_topk_scaling_factor.reset(); }},
            {"rotate_half pairs instead of interleaved ones", half_rotary}};
  return {{"rotate_half pairs instead of interleaved ones", half_rotary},
          {"YaRN without mscale_all_dim",
           [](nn::ModelConfig& c) { c.yarn->mscale_all_dim = 0.0; }}};
}

TEST_P(HfParity, FixtureSeesAChangedBehaviour) {
  const HfFixture fx = load_hf_fixture(GetParam());
  for (const WrongBehaviour& wrong : wrong_behaviours(fx.family)) {
    SCOPED_TRACE(wrong.what);
    auto model = checkpoint::load_model(fx.dir, DType::f32, Device::cpu(), wrong.adjust);
    const Tensor logits = host(model->logits(fx.input_ids)).to(DType::f32);
    EXPECT_GT(relative_error(logits, fx.logits), 100 * kLogitsTol) << fx.family;
  }
}

TEST_P(HfParity, FixtureIsWhatTheGeneratorPromises) {
  // The fixture's own record: fp32 reference within 1e-5 of an fp64 run of transformers, and
  // routing margins no smaller than the generator's bound, nor than 4 x the measured bf16 noise
  // of the deciding values (a boundary moves by at most 2 x that noise; 2 x head room).
  const HfFixture fx = load_hf_fixture(GetParam());
  const auto& fp64 = fx.meta.at("check_fp64_reference");
  EXPECT_LT(fp64.at("logits_rel_err").get<double>(), 1e-5);
  EXPECT_TRUE(fp64.at("same_routing").get<bool>());
  const double required = fx.meta.at("margin_required").get<double>();
  EXPECT_GE(required, 3e-2);
  const double over_noise = fx.meta.at("margin_over_bf16_noise_required").get<double>();
  EXPECT_GE(over_noise, 4.0);
  for (const auto& [layer, r] : fx.meta.at("routing").items()) {
    const double margin = r.at("min_relative_margin").get<double>();
    EXPECT_GE(margin, required) << "layer " << layer;
    EXPECT_GE(margin, over_noise * r.at("bf16_relative_noise").get<double>()) << "layer " << layer;
  }
  EXPECT_EQ(fx.meta.at("batch").get<int64_t>(), fx.batch);
  EXPECT_EQ(fx.meta.at("seq").get<int64_t>(), fx.seq);
}

// transformers writes no MTP weights for DeepSeek-V3 but keeps num_nextn_predict_layers in
// config.json (as the published checkpoints have it, 1): the fixture's folder with that field
// set loads without MTP and still gives transformers' logits.
TEST(HfParityNoMtp, DeepSeekV3ConfigAnnouncingMtpLoadsWithoutIt) {
  const HfFixture fx = load_hf_fixture("deepseek_v3");
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() /
                       ("moe_hf_no_mtp_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                        "_" + std::to_string(reinterpret_cast<uintptr_t>(&fx)));
  fs::create_directories(dir);
  fs::copy_file(fs::path(fx.dir) / "model.safetensors", dir / "model.safetensors");
  nlohmann::json config = read_json_file(fx.dir + "/config.json");
  config["num_nextn_predict_layers"] = 1;
  std::ofstream(dir / "config.json") << config.dump(2);
  auto model = checkpoint::load_model(dir.string(), DType::f32, Device::cpu());
  EXPECT_EQ(model->config().mtp_num_layers, 0);
  const Tensor logits = host(model->logits(fx.input_ids)).to(DType::f32);
  EXPECT_LE(relative_error(logits, fx.logits), kLogitsTol);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Families, HfParity, ::testing::ValuesIn(hf_fixture_families()),
                         family_name);

}  // namespace
}  // namespace moe::test
