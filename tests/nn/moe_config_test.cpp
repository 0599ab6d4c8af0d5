// MoEConfig::validate: every invalid combination is refused with a message naming the flags.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "nn/moe_test_util.h"

namespace moe {
namespace {

using nn::MoEConfig;

void expect_refused(const std::function<void(MoEConfig&)>& change, const std::string& flag) {
  MoEConfig c = test::small_moe_config(DType::f32);
  change(c);
  try {
    c.validate();
    ADD_FAILURE() << "accepted an invalid config; expected an error naming " << flag;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
  }
}

TEST(MoEConfig, DefaultsAreValid) {
  EXPECT_NO_THROW(test::small_moe_config().validate());
}

TEST(MoEConfig, RefusesInvalidCombinations) {
  expect_refused([](MoEConfig& c) { c.moe_router_topk = 1; }, "--moe-router-pre-softmax");
  expect_refused([](MoEConfig& c) { c.moe_router_group_topk = 2; }, "--moe-router-num-groups");
  expect_refused([](MoEConfig& c) { c.moe_router_num_groups = 2; }, "--moe-router-group-topk");
  expect_refused(
      [](MoEConfig& c) {
        c.moe_router_num_groups = 3;
        c.moe_router_group_topk = 1;
      },
      "--moe-router-num-groups");
  expect_refused(
      [](MoEConfig& c) { c.moe_router_load_balancing_type = nn::LoadBalancingType::sinkhorn; },
      "--moe-aux-loss-coeff");
  expect_refused(
      [](MoEConfig& c) {
        c.moe_router_load_balancing_type = nn::LoadBalancingType::sinkhorn;
        c.moe_aux_loss_coeff = 0;
        c.moe_expert_capacity_factor = 1.0;
      },
      "--moe-expert-capacity-factor");
  expect_refused([](MoEConfig& c) { c.moe_pad_expert_input_to_capacity = true; },
                 "--moe-expert-capacity-factor");
  expect_refused([](MoEConfig& c) { c.moe_router_topk = 5; }, "--moe-router-topk");
  expect_refused([](MoEConfig& c) { c.expert_model_parallel_size = 3; },
                 "--expert-model-parallel-size");
  expect_refused([](MoEConfig& c) { c.expert_tensor_parallel_size = 3; },
                 "--expert-tensor-parallel-size");
  expect_refused([](MoEConfig& c) { c.moe_input_jitter_eps = 1.5; }, "--moe-input-jitter-eps");
  expect_refused(
      [](MoEConfig& c) { c.moe_router_load_balancing_type = nn::LoadBalancingType::none; },
      "--moe-aux-loss-coeff");
  expect_refused(
      [](MoEConfig& c) {
        c.moe_router_score_function = ops::ScoreFunction::sigmoid;
        c.moe_router_pre_softmax = true;
      },
      "--moe-router-pre-softmax");
}

// The named options are parsed once, where a name enters; an unknown name is refused there with
// the flag and the accepted names, and name() spells every value back as it was parsed.
void expect_parse_error(const std::function<void()>& parse, const std::string& message) {
  try {
    parse();
    ADD_FAILURE() << "accepted an unknown name; expected: " << message;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
  }
}

TEST(MoEConfig, RefusesUnknownNames) {
  expect_parse_error([] { nn::parse_load_balancing_type("balanced"); },
                     "--moe-router-load-balancing-type balanced is not one of aux_loss, "
                     "seq_aux_loss, global_aux_loss, sinkhorn, none");
  expect_parse_error([] { nn::parse_dispatcher_type("flex"); },
                     "--moe-token-dispatcher-type flex is not supported by this build");
  expect_parse_error([] { nn::parse_dispatcher_type("a2a"); },
                     "--moe-token-dispatcher-type a2a is not one of allgather, alltoall");
  expect_parse_error([] { nn::parse_score_function("relu"); },
                     "--moe-router-score-function relu is not one of softmax, sigmoid");
  expect_parse_error([] { nn::parse_router_dtype("bf16"); },
                     "--moe-router-dtype bf16 is not one of fp32, fp64");
  expect_parse_error([] { nn::parse_drop_policy("random"); },
                     "--moe-token-drop-policy random is not one of probs, position");
}

TEST(MoEConfig, NamesRoundTrip) {
  for (const char* n : {"aux_loss", "seq_aux_loss", "global_aux_loss", "sinkhorn", "none"})
    EXPECT_STREQ(nn::name(nn::parse_load_balancing_type(n)), n);
  for (const char* n : {"softmax", "sigmoid"})
    EXPECT_STREQ(nn::name(nn::parse_score_function(n)), n);
  for (const char* n : {"allgather", "alltoall"})
    EXPECT_STREQ(nn::name(nn::parse_dispatcher_type(n)), n);
  for (const char* n : {"fp32", "fp64"}) EXPECT_STREQ(nn::name(nn::parse_router_dtype(n)), n);
  for (const char* n : {"probs", "position"}) EXPECT_STREQ(nn::name(nn::parse_drop_policy(n)), n);
  EXPECT_EQ(nn::parse_router_dtype("fp64"), nn::RouterDType::fp64);
  EXPECT_EQ(nn::parse_score_function("sigmoid"), ops::ScoreFunction::sigmoid);
}

TEST(MoEConfig, AcceptsExpertBiasWithSoftmax) {
  MoEConfig c = test::small_moe_config();
  c.moe_router_enable_expert_bias = true;
  EXPECT_NO_THROW(c.validate());
}

}  // namespace
}  // namespace moe
