// Activation recomputation, as Megatron-Core's flags say: trade one more forward for the memory
// of the activations a backward reads (Korthikanti et al. 2022, arXiv 2205.05198).
//
// full granularity (--recompute-granularity full): whole decoder layers. A recomputed unit keeps
// only its input [S, B, H] (and its routers' small outputs: probabilities, expert ids, the aux
// losses); the backward runs the unit's forward again from that input, then its backward.
//   --recompute-method uniform: the layers of a block (a pipeline rank's chunk, or the whole
//     model) in units of --recompute-num-layers consecutive layers (the last may be shorter);
//     every layer is recomputed, one input kept per unit.
//   --recompute-method block: the first --recompute-num-layers layers of each block, each its own
//     unit; the rest keep their activations.
// selective granularity (--recompute-granularity selective --recompute-modules ...): parts of
// every layer.
//   moe             the MoE block (router, dispatch, experts, combine, shared expert): its input
//                   kept, everything else recomputed (Megatron's --moe-layer-recompute);
//   mlp             the dense MLP of dense layers;
//   shared_experts  the MoE layer's shared expert;
//   core_attn       Megatron's default module: recompute the attention's S x S probabilities.
//                   moecore's attention is fused (flash-style): it keeps q, k, v, the output and
//                   the softmax statistics, never the probabilities, so there is nothing to drop
//                   (Megatron says the same of its fused attention); accepted, and it changes
//                   nothing.
// The recomputed forward equals the first one bit for bit: dropout masks come from counters of
// (sample, layer, site), the router reuses the first forward's jitter draw and global-aux counts
// and does not count the tokens twice for the expert bias, and collectives (EP, TP, CP) repeat in
// the same order on every rank. Training is therefore the same with and without recomputation.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moe::nn {

enum class RecomputeGranularity { none, full, selective };
enum class RecomputeMethod { uniform, block };

struct RecomputeConfig {
  RecomputeGranularity granularity = RecomputeGranularity::none;
  RecomputeMethod method = RecomputeMethod::uniform;  // full granularity
  int64_t num_layers = 0;                             // full granularity: >= 1
  // selective granularity's modules (core_attn changes nothing: see above)
  bool moe = false;
  bool mlp = false;
  bool shared_experts = false;

  bool full() const { return granularity == RecomputeGranularity::full; }
};

// The units of a block of `block_layers` decoder layers that full recomputation recomputes, as
// [first, end) layer ranges in order; layers in none keep their activations. Empty unless the
// granularity is full.
std::vector<std::pair<int64_t, int64_t>> recompute_units(const RecomputeConfig& config,
                                                         int64_t block_layers);

// Megatron's names <-> the config, for flags and the run's description.
RecomputeGranularity parse_recompute_granularity(const std::string& name);
RecomputeMethod parse_recompute_method(const std::string& name);
// Applies --recompute-modules' list (refusing the modules moecore does not build, with why).
void set_recompute_modules(RecomputeConfig& config, const std::vector<std::string>& modules);
std::string describe_recompute(const RecomputeConfig& config);

}  // namespace moe::nn
