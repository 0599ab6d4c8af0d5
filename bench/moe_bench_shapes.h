// The published MoE layer shapes the layer benchmarks share (`moe bench moe-layer`, `moe bench
// moe-ep`): their dimensions and routing, the layer configuration of one, and the "skewed"
// routing's expert bias.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/core/device.h"
#include "moe/nn/moe_config.h"

namespace moe::nn {
class MoELayer;
}

namespace moe::bench {

struct Shape {
  std::string name;
  int64_t hidden, ffn, experts, topk, shared;
  std::string score_function;
  int64_t groups, group_topk;
  double scaling;
  double peer_tflops;  // torch._grouped_mm fwd+bwd on one H200, T = 8192 (0: none)
};

// mixtral-8x7b, qwen3-30b-a3b, deepseek-v3, deepseek-v3-ep8 (one rank's 32 experts of EP 8),
// tiny (the CPU's).
const std::vector<Shape>& all_shapes();

// The layer of a shape on `device` (bf16 on a GPU, f32 on the CPU), with `routing` "balanced"
// (--moe-router-force-load-balancing), "skewed" (an expert bias: skew_expert_bias) or the
// router's own choice, and the token dispatcher `dispatcher` (allgather, alltoall).
nn::MoEConfig config_for(const Shape& s, Device device, const std::string& routing,
                         const std::string& dispatcher);

// A selection-only bias that tilts the load towards low expert indices (linearly, by about
// the spread of the scores), for the "skewed" routing.
void skew_expert_bias(nn::MoELayer& layer, const Shape& s);

// Every --shapes name must be a shape: an unknown one is an error naming `command` and listing
// the shapes, not a row silently missing from the table.
void check_shape_names(const std::vector<std::string>& names, const std::string& command);

// A CLI11 validator of --grouped-gemm-backend(s) values: "" for a backend name, else the error
// naming the choices (a validator reports by its return value; a throw would escape the parse).
std::string grouped_gemm_backend_problem(const std::string& name);

}  // namespace moe::bench
