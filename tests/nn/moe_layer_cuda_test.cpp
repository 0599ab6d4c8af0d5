// MoELayer on the GPU against the CPU reference (same weights, same tokens), for the routing
// and dispatch variants, in f32 and bf16; and expert parallelism emulated on one GPU (ranks as
// threads of the Local backend) against one GPU rank.
#include <gtest/gtest.h>

#include <functional>

#include "nn/moe_test_util.h"

namespace moe {
namespace {

using nn::MoEConfig;
using nn::MoELayer;

// Makes `target`'s parameters equal to `source`'s (converted to target's dtype and device).
void copy_parameters(MoELayer& target, MoELayer& source) {
  auto dst = target.parameters(), src = source.parameters();
  ASSERT_EQ(dst.size(), src.size());
  for (size_t i = 0; i < dst.size(); ++i)
    dst[i]->value.copy_(
        src[i]->value.to(Device::cpu()).to(dst[i]->value.dtype()).to(dst[i]->value.device()));
  target.router.expert_bias.copy_(source.router.expert_bias.to(target.router.expert_bias.device()));
}

struct GpuVariant {
  const char* name;
  std::function<void(MoEConfig&)> apply;
};

const std::vector<GpuVariant>& gpu_variants() {
  static const std::vector<GpuVariant> v = {
      {"softmax_aux_alltoall",
       [](MoEConfig& c) { c.moe_token_dispatcher_type = nn::DispatcherType::alltoall; }},
      {"softmax_aux_allgather", [](MoEConfig&) {}},
      {"sequential", [](MoEConfig& c) { c.moe_grouped_gemm = false; }},
      {"sigmoid_groups_bias_seq_aux_shared_gate",
       [](MoEConfig& c) {
         c.num_experts = 16;
         c.moe_router_score_function = ops::ScoreFunction::sigmoid;
         c.moe_router_num_groups = 4;
         c.moe_router_group_topk = 2;
         c.moe_router_topk = 4;
         c.moe_router_enable_expert_bias = true;
         c.moe_router_topk_scaling_factor = 2.5;
         c.moe_router_load_balancing_type = nn::LoadBalancingType::seq_aux_loss;
         c.moe_shared_expert_intermediate_size = 40;
         c.moe_shared_expert_gate = true;
       }},
      {"pre_softmax_top1_zloss_jitter",
       [](MoEConfig& c) {
         c.moe_router_topk = 1;
         c.moe_router_pre_softmax = true;
         c.moe_z_loss_coeff = 1e-3;
         c.moe_input_jitter_eps = 1e-2;
       }},
      {"capacity_pad_alltoall",
       [](MoEConfig& c) {
         c.moe_expert_capacity_factor = 0.9;
         c.moe_pad_expert_input_to_capacity = true;
         c.moe_token_dispatcher_type = nn::DispatcherType::alltoall;
       }},
      {"sinkhorn_fp8_padding",
       [](MoEConfig& c) {
         c.moe_router_load_balancing_type = nn::LoadBalancingType::sinkhorn;
         c.moe_aux_loss_coeff = 0;
         c.moe_router_padding_for_fp8 = true;
       }},
      {"global_aux_many_experts",
       [](MoEConfig& c) {
         c.num_experts = 64;  // several experts get no tokens
         c.moe_router_topk = 6;
         c.moe_router_load_balancing_type = nn::LoadBalancingType::global_aux_loss;
       }},
      // The CUTLASS grouped GEMM reading the counts on the device (bf16; f32 falls back).
      {"cutlass_grouped_gemm",
       [](MoEConfig& c) { c.moe_grouped_gemm_backend = ops::GroupedGemmBackend::cutlass; }},
  };
  return v;
}

class MoELayerCuda : public ::testing::TestWithParam<std::tuple<size_t, DType>> {};

TEST_P(MoELayerCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const auto [index, dtype] = GetParam();
  const GpuVariant& variant = gpu_variants()[index];
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  MoEConfig gpu_config = test::small_moe_config(dtype);
  gpu_config.hidden_size = 72;
  gpu_config.moe_ffn_hidden_size = 56;
  gpu_config.init_method_std = 0.1;
  variant.apply(gpu_config);
  MoEConfig cpu_config = gpu_config;
  cpu_config.params_dtype = DType::f32;
  MoELayer gpu(gpu_config, Device::cuda()), cpu(cpu_config, Device::cpu());
  if (gpu_config.moe_router_enable_expert_bias)
    gpu.router.expert_bias.copy_(
        test::random_normal({gpu_config.num_experts}, DType::f32, seed + 7, Device::cuda(), 0.05));
  copy_parameters(cpu, gpu);

  const int64_t S = 67, B = 3;  // 201 tokens
  const Tensor x_gpu =
      test::random_normal({S, B, gpu_config.hidden_size}, dtype, seed, Device::cuda());
  const Tensor dy_gpu = test::random_normal(x_gpu.shape(), dtype, seed + 1, Device::cuda());
  const Tensor x_cpu = x_gpu.to(Device::cpu()).to(DType::f32);
  const Tensor dy_cpu = dy_gpu.to(Device::cpu()).to(DType::f32);

  nn::MoEContext gctx, cctx;
  const Tensor y_gpu = gpu.forward(x_gpu, gctx);
  const Tensor y_cpu = cpu.forward(x_cpu, cctx);
  EXPECT_TRUE(test::equal(gctx.router.expert_ids.to(Device::cpu()), cctx.router.expert_ids))
      << "routing differs";
  const Tensor dx_gpu = gpu.backward(dy_gpu, gctx);
  const Tensor dx_cpu = cpu.backward(dy_cpu, cctx);
  const double tol = test::tolerance(dtype) * (dtype == DType::f32 ? 10 : 1);
  EXPECT_TRUE(test::close(y_gpu.to(Device::cpu()).to(DType::f32), y_cpu, tol, "y"));
  EXPECT_TRUE(test::close(dx_gpu.to(Device::cpu()).to(DType::f32), dx_cpu, tol, "dx"));
  if (cctx.router.aux_loss.defined()) {
    EXPECT_TRUE(
        test::close(gctx.router.aux_loss.to(Device::cpu()), cctx.router.aux_loss, 1e-5, "aux"));
  }
  auto gp = gpu.parameters(), cp = cpu.parameters();
  for (size_t i = 0; i < gp.size(); ++i)
    EXPECT_TRUE(test::close(gp[i]->grad_value().to(Device::cpu()).to(DType::f32),
                            cp[i]->grad_value(), tol, gp[i]->name));
}

INSTANTIATE_TEST_SUITE_P(Variants, MoELayerCuda,
                         ::testing::Combine(::testing::Range<size_t>(0, gpu_variants().size()),
                                            ::testing::Values(DType::f32, DType::bf16)),
                         [](const auto& info) {
                           return std::string(gpu_variants()[std::get<0>(info.param)].name) + "_" +
                                  dtype_name(std::get<1>(info.param));
                         });

// EP = 4 x ETP = 2 on one GPU (8 ranks as threads) against one GPU rank, both dispatchers.
TEST(MoELayerCudaExpertParallel, MatchesOneRank) {
  MOE_REQUIRE_GPU();
  for (const char* dispatcher : {"alltoall", "allgather"}) {
    SCOPED_TRACE(dispatcher);
    MoEConfig base = test::small_moe_config(DType::f32);
    base.hidden_size = 64;
    base.num_experts = 16;
    base.moe_ffn_hidden_size = 48;
    base.moe_router_topk = 4;
    base.init_method_std = 0.1;
    base.moe_token_dispatcher_type = nn::parse_dispatcher_type(dispatcher);
    test::check_expert_parallel_invariance(base, 4, 2, 33, Device::cuda(), 1e-5);
  }
}

}  // namespace
}  // namespace moe
