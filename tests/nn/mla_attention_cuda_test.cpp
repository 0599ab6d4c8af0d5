// MlaAttention on the GPU against the CPU reference, same weights and inputs, odd sizes
// (S = 37, B = 3, hidden 67, 5 heads, ql 24, kvl 20, dn 16, dr 8, dv 12), with and without q
// compression, YaRN with mscale != mscale_all_dim: the forward output, dx and every parameter
// gradient, in f32 and in bf16 (the bf16 GPU module against the f32 CPU module holding the same
// bf16-rounded weights and inputs); zero tokens.
#include <gtest/gtest.h>

#include <tuple>

#include "nn/mla_test_util.h"

namespace moe {
namespace {

using nn::MlaAttention;
using nn::ModelConfig;
using test::gpu;
using test::host;

ModelConfig gpu_mla_config(bool q_lora) {
  ModelConfig c = test::small_mla_config();
  c.hidden_size = 67;
  c.num_attention_heads = 5;
  c.num_query_groups = 5;
  c.mla = nn::MlaConfig{.q_lora_rank = q_lora ? 24 : 0,
                        .kv_lora_rank = 20,
                        .qk_head_dim = 16,
                        .qk_pos_emb_head_dim = 8,
                        .v_head_dim = 12};
  c.init_method_std = 0.1;
  return c;
}

// target's parameters := source's (rounded to target's dtype), and source's := those rounded
// values, so both modules hold exactly the same weights.
void share_parameters(MlaAttention& target, MlaAttention& source) {
  auto dst = target.parameters(), src = source.parameters();
  ASSERT_EQ(dst.size(), src.size());
  for (size_t i = 0; i < dst.size(); ++i) {
    ASSERT_EQ(dst[i]->name, src[i]->name);
    const Tensor rounded = src[i]->value.to(dst[i]->value.dtype());
    dst[i]->value.copy_(rounded.to(dst[i]->value.device()));
    src[i]->value.copy_(rounded.to(src[i]->value.dtype()));
  }
}

class MlaAttentionCuda : public ::testing::TestWithParam<std::tuple<DType, bool>> {};

TEST_P(MlaAttentionCuda, ForwardAndBackwardMatchCpu) {
  MOE_REQUIRE_GPU();
  const auto [dtype, q_lora] = GetParam();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const ModelConfig config = gpu_mla_config(q_lora);
  MlaAttention cpu(config, 1, "self_attn.", DType::f32, Device::cpu(), seed);
  test::randomize_latent_norms(cpu, seed + 10);
  MlaAttention dev(config, 1, "self_attn.", dtype, Device::cuda(), seed);
  share_parameters(dev, cpu);

  for (int64_t S : {37, 0}) {
    SCOPED_TRACE(S);
    const test::PairedInput x = test::paired_input({S, 3, config.hidden_size}, dtype, seed + 1);
    const test::PairedInput dy = test::paired_input(x.ref.shape(), dtype, seed + 2);
    nn::MlaAttentionContext cctx, dctx;
    const Tensor y_ref = cpu.forward(x.ref, cctx);
    const Tensor y = dev.forward(x.dev, dctx);
    EXPECT_TRUE(y.is_cuda());
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_TRUE(test::close_as(host(y), y_ref, dtype, "y"));

    cpu.zero_grad();
    dev.zero_grad();
    const Tensor dx_ref = cpu.backward(dy.ref, cctx);
    const Tensor dx = dev.backward(dy.dev, dctx);
    EXPECT_TRUE(test::close_as(host(dx), dx_ref, dtype, "dx"));
    auto dp = dev.parameters(), cp = cpu.parameters();
    for (size_t i = 0; i < dp.size(); ++i)
      EXPECT_TRUE(
          test::close_as(host(dp[i]->grad_value()), cp[i]->grad_value(), dtype, dp[i]->name));
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, MlaAttentionCuda,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_q_lora" : "_q_proj");
                         });

}  // namespace
}  // namespace moe
