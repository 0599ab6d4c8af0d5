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

TEST(MoEConfig, DefaultsAreValid) { EXPECT_NO_THROW(test::small_moe_config().validate()); }

TEST(MoEConfig, RefusesInvalidCombinations) {
  expect_refused([](MoEConfig& c) { c.moe_router_topk = 1; }, "--moe-router-pre-softmax");
  expect_refused([](MoEConfig& c) { c.moe_router_group_topk = 2; }, "--moe-router-num-groups");
  expect_refused([](MoEConfig& c) { c.moe_router_num_groups = 2; }, "--moe-router-group-topk");
  expect_refused([](MoEConfig& c) {
    c.moe_router_num_groups = 3;
    c.moe_router_group_topk = 1;
  }, "--moe-router-num-groups");
  expect_refused([](MoEConfig& c) { c.moe_router_load_balancing_type = "sinkhorn"; },
                 "--moe-aux-loss-coeff");
  expect_refused([](MoEConfig& c) {
    c.moe_router_load_balancing_type = "sinkhorn";
    c.moe_aux_loss_coeff = 0;
    c.moe_expert_capacity_factor = 1.0;
  }, "--moe-expert-capacity-factor");
  expect_refused([](MoEConfig& c) { c.moe_pad_expert_input_to_capacity = true; },
                 "--moe-expert-capacity-factor");
  expect_refused([](MoEConfig& c) { c.moe_router_load_balancing_type = "balanced"; },
                 "--moe-router-load-balancing-type");
  expect_refused([](MoEConfig& c) { c.moe_token_dispatcher_type = "flex"; },
                 "--moe-token-dispatcher-type");
  expect_refused([](MoEConfig& c) { c.moe_router_score_function = "relu"; },
                 "--moe-router-score-function");
  expect_refused([](MoEConfig& c) { c.moe_router_topk = 5; }, "--moe-router-topk");
  expect_refused([](MoEConfig& c) { c.expert_model_parallel_size = 3; },
                 "--expert-model-parallel-size");
  expect_refused([](MoEConfig& c) { c.expert_tensor_parallel_size = 3; },
                 "--expert-tensor-parallel-size");
  expect_refused([](MoEConfig& c) { c.moe_input_jitter_eps = 1.5; }, "--moe-input-jitter-eps");
  expect_refused([](MoEConfig& c) { c.moe_token_drop_policy = "random"; }, "--moe-token-drop-policy");
  expect_refused([](MoEConfig& c) {
    c.moe_router_load_balancing_type = "none";
  }, "--moe-aux-loss-coeff");
  expect_refused([](MoEConfig& c) { c.moe_router_dtype = "bf16"; }, "--moe-router-dtype");
  expect_refused([](MoEConfig& c) {
    c.moe_router_score_function = "sigmoid";
    c.moe_router_pre_softmax = true;
  }, "--moe-router-pre-softmax");
}

TEST(MoEConfig, AcceptsExpertBiasWithSoftmax) {
  MoEConfig c = test::small_moe_config();
  c.moe_router_enable_expert_bias = true;
  EXPECT_NO_THROW(c.validate());
}

}  // namespace
}  // namespace moe
