#include "layer_demo.h"

#include <cmath>
#include <cstdio>

#include "moe/core/allocator.h"
#include "moe/core/rng.h"
#include "moe/core/timer.h"
#include "moe/nn/moe_layer.h"

namespace moe::app {

int run_layer_demo(bool force_cpu) {
  const bool gpu = !force_cpu && cuda_device_count() > 0;
  const Device device = gpu ? Device::cuda(0) : Device::cpu();
  nn::MoEConfig config;
  config.hidden_size = 256;
  config.moe_ffn_hidden_size = 512;
  config.num_experts = 8;
  config.moe_router_topk = 2;
  config.moe_aux_loss_coeff = 1e-2;
  config.moe_z_loss_coeff = 1e-3;
  config.moe_shared_expert_intermediate_size = 256;
  config.moe_token_dispatcher_type = moe::nn::DispatcherType::alltoall;
  config.params_dtype = gpu ? DType::bf16 : DType::f32;
  config.validate();
  const int64_t seq = 512, batch = 4;

  std::printf("moecore: one MoE layer on %s (%s)\n", device.str().c_str(),
              dtype_name(config.params_dtype));
  std::printf(
      "  hidden %lld, %lld experts of FFN %lld, top-%lld softmax routing, shared expert "
      "%lld, aux-loss %.0e, z-loss %.0e, %s dispatcher\n",
      static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_experts),
      static_cast<long long>(config.moe_ffn_hidden_size),
      static_cast<long long>(config.moe_router_topk),
      static_cast<long long>(config.moe_shared_expert_intermediate_size), config.moe_aux_loss_coeff,
      *config.moe_z_loss_coeff, moe::nn::name(config.moe_token_dispatcher_type));
  nn::MoELayer layer(config, device);
  Tensor x = Tensor::empty({seq, batch, config.hidden_size}, config.params_dtype, device);
  fill_normal(x, 1, 0.0, 1.0);
  Tensor dy = Tensor::empty(x.shape(), config.params_dtype, device);
  fill_normal(dy, 2, 0.0, 1.0);

  DeviceTimer timer(device);
  nn::MoEContext ctx;
  timer.record();
  Tensor y = layer.forward(x, ctx);
  timer.record();
  Tensor dx = layer.backward(dy, ctx);
  timer.record();
  std::printf("  input [%lld, %lld, %lld] -> output %s; forward %.2f ms, backward %.2f ms "
              "(first call, includes warm-up)\n",
              static_cast<long long>(seq), static_cast<long long>(batch),
              static_cast<long long>(config.hidden_size), shape_str(y.shape()).c_str(),
              timer.elapsed_ms(0, 1), timer.elapsed_ms(1, 2));
  const std::vector<int64_t> load = ctx.router.tokens_per_expert.to_vector<int64_t>();
  std::printf("  tokens per expert:");
  for (int64_t n : load) std::printf(" %lld", static_cast<long long>(n));
  std::printf("\n  aux loss %.6f, z-loss %.6f\n", ctx.router.aux_loss.item(),
              ctx.router.z_loss.item());
  double grad_norm2 = 0;
  for (nn::Parameter* p : layer.parameters()) {
    for (double g : p->grad_value().to_double_vector()) grad_norm2 += g * g;
  }
  std::printf("  gradient norm over %zu parameter tensors: %.6f; |dx| mean %.6f\n",
              layer.parameters().size(), std::sqrt(grad_norm2), [&] {
                double s = 0;
                const auto v = dx.to_double_vector();
                for (double d : v) s += std::abs(d);
                return s / static_cast<double>(v.size());
              }());
  std::printf("  peak memory %.1f MiB\n",
              static_cast<double>(memory_stats(device).peak_allocated_bytes) / (1 << 20));
  return 0;
}

}  // namespace moe::app
