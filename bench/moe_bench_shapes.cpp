#include "moe_bench_shapes.h"

#include <algorithm>
#include <exception>

#include "moe/core/error.h"
#include "moe/nn/moe_layer.h"
#include "moe/ops/grouped_gemm.h"

namespace moe::bench {

const std::vector<Shape>& all_shapes() {
  static const std::vector<Shape> shapes = {
      {"mixtral-8x7b", 4096, 14336, 8, 2, 0, "softmax", 0, 0, 1.0, 527},
      {"qwen3-30b-a3b", 2048, 768, 128, 8, 0, "softmax", 0, 0, 1.0, 185},
      {"deepseek-v3", 7168, 2048, 256, 8, 2048, "sigmoid", 8, 4, 2.5, 310},
      // One rank of EP = 8: 32 local experts receive, on average, T * K rows.
      {"deepseek-v3-ep8", 7168, 2048, 32, 8, 2048, "sigmoid", 8, 4, 2.5, 403},
      {"tiny", 64, 128, 8, 2, 0, "softmax", 0, 0, 1.0, 0},
  };
  return shapes;
}

nn::MoEConfig config_for(const Shape& s, Device device, const std::string& routing,
                         const std::string& dispatcher) {
  nn::MoEConfig c;
  c.hidden_size = s.hidden;
  c.moe_ffn_hidden_size = s.ffn;
  c.num_experts = s.experts;
  c.moe_router_topk = s.topk;
  c.moe_shared_expert_intermediate_size = s.shared;
  c.moe_router_score_function = nn::parse_score_function(s.score_function);
  c.moe_router_num_groups = s.groups;
  c.moe_router_group_topk = s.group_topk;
  if (s.scaling != 1.0) c.moe_router_topk_scaling_factor = s.scaling;
  c.moe_router_enable_expert_bias = s.score_function == "sigmoid" || routing == "skewed";
  c.moe_router_load_balancing_type = s.score_function == "sigmoid"
                                         ? nn::LoadBalancingType::seq_aux_loss
                                         : nn::LoadBalancingType::aux_loss;
  c.moe_aux_loss_coeff = s.score_function == "sigmoid" ? 1e-4 : 1e-2;
  c.moe_router_force_load_balancing = routing == "balanced";
  c.moe_token_dispatcher_type = nn::parse_dispatcher_type(dispatcher);
  c.params_dtype = device.is_cuda() ? DType::bf16 : DType::f32;
  return c;
}

void skew_expert_bias(nn::MoELayer& layer, const Shape& s) {
  const double spread = s.score_function == "sigmoid" ? 0.1 : 1.0 / static_cast<double>(s.experts);
  std::vector<float> bias(static_cast<size_t>(s.experts));
  for (int64_t e = 0; e < s.experts; ++e)
    bias[e] = static_cast<float>(spread * (1.0 - 2.0 * e / static_cast<double>(s.experts - 1)));
  layer.router.expert_bias.copy_(Tensor::from_vector<float>(bias, {s.experts}));
}

void check_shape_names(const std::vector<std::string>& names, const std::string& command) {
  std::string known;
  for (const Shape& s : all_shapes()) known += (known.empty() ? "" : ", ") + s.name;
  for (const std::string& name : names) {
    const auto& shapes = all_shapes();
    const bool found =
        std::any_of(shapes.begin(), shapes.end(), [&](const Shape& s) { return s.name == name; });
    MOE_CHECK(found, command, ": --shapes '", name, "' is not a shape; the shapes are: ", known);
  }
}

std::string grouped_gemm_backend_problem(const std::string& name) {
  try {
    (void)ops::parse_grouped_gemm_backend(name);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace moe::bench
