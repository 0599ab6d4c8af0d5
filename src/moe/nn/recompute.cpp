#include "moe/nn/recompute.h"

#include <algorithm>

#include "moe/core/error.h"

namespace moe::nn {

std::vector<std::pair<int64_t, int64_t>> recompute_units(const RecomputeConfig& config,
                                                         int64_t block_layers) {
  std::vector<std::pair<int64_t, int64_t>> units;
  if (!config.full() || block_layers <= 0) return units;
  MOE_CHECK(config.num_layers >= 1, "--recompute-num-layers ", config.num_layers,
            " must be at least 1 with --recompute-granularity full");
  if (config.method == RecomputeMethod::uniform) {
    for (int64_t first = 0; first < block_layers; first += config.num_layers)
      units.emplace_back(first, std::min(first + config.num_layers, block_layers));
  } else {
    for (int64_t layer = 0; layer < std::min(config.num_layers, block_layers); ++layer)
      units.emplace_back(layer, layer + 1);
  }
  return units;
}

RecomputeGranularity parse_recompute_granularity(const std::string& name) {
  if (name == "full") return RecomputeGranularity::full;
  if (name == "selective") return RecomputeGranularity::selective;
  MOE_FAIL("--recompute-granularity ", name, ": choose full or selective");
}

RecomputeMethod parse_recompute_method(const std::string& name) {
  if (name == "uniform") return RecomputeMethod::uniform;
  if (name == "block") return RecomputeMethod::block;
  MOE_FAIL("--recompute-method ", name, ": choose uniform or block");
}

void set_recompute_modules(RecomputeConfig& config, const std::vector<std::string>& modules) {
  config.moe = config.mlp = config.shared_experts = false;
  for (const std::string& m : modules) {
    if (m == "moe" || m == "moe_layer") {
      config.moe = true;
    } else if (m == "mlp") {
      config.mlp = true;
    } else if (m == "shared_experts") {
      config.shared_experts = true;
    } else if (m == "core_attn") {
      // Nothing to drop: the fused attention keeps no S x S probabilities (recompute.h).
    } else if (m == "moe_act" || m == "layernorm" || m == "mla_up_proj") {
      MOE_FAIL("--recompute-modules ", m,
               ": output-discarding recomputation (moe_act, layernorm, mla_up_proj) is not built "
               "yet; moe, mlp and shared_experts are, and --recompute-granularity full");
    } else {
      MOE_FAIL("--recompute-modules ", m,
               ": not a module (core_attn, moe, mlp, shared_experts; moe_act, layernorm and "
               "mla_up_proj are not built yet)");
    }
  }
}

std::string describe_recompute(const RecomputeConfig& c) {
  switch (c.granularity) {
    case RecomputeGranularity::none:
      return "none";
    case RecomputeGranularity::full:
      return std::string("full, ") +
             (c.method == RecomputeMethod::uniform ? "uniform units of " : "block: the first ") +
             std::to_string(c.num_layers) + " layer" + (c.num_layers == 1 ? "" : "s") +
             (c.method == RecomputeMethod::uniform ? "" : " of each block");
    case RecomputeGranularity::selective: {
      std::string modules;
      for (const auto& [on, name] : {std::pair{c.moe, "moe"}, std::pair{c.mlp, "mlp"},
                                     std::pair{c.shared_experts, "shared_experts"}})
        if (on) modules += (modules.empty() ? "" : ", ") + std::string(name);
      return "selective: " +
             (modules.empty() ? std::string("nothing to recompute (core_attn)") : modules);
    }
  }
  return "none";
}

}  // namespace moe::nn
