// `moe train`'s activation-recomputation flags (nn/recompute.h), Megatron-LM's names and rules
// (train_flag_table.h).
#include "moe/core/error.h"
#include "moe/train/train_flag_table.h"

namespace moe::train::flags {

void add_recompute_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(
      value("--recompute-granularity", "G",
            "full (whole decoder layers: a unit keeps its input and runs its forward "
            "again in the backward) | selective (the --recompute-modules of every layer)",
            [](S& s, V v) { s.run.recompute.granularity = nn::parse_recompute_granularity(v); }));
  t.push_back(value("--recompute-method", "M",
                    "with full: uniform (every layer, in units of --recompute-num-layers "
                    "consecutive layers of each pipeline chunk) | block (the first "
                    "--recompute-num-layers layers of each chunk, one by one)",
                    [](S& s, V v) { s.run.recompute.method = nn::parse_recompute_method(v); }));
  t.push_back(value(
      "--recompute-num-layers", "N",
      "with full: the layers of a unit (uniform) or "
      "the layers recomputed per chunk (block)",
      [](S& s, V v) { s.run.recompute.num_layers = as_count("--recompute-num-layers", v, 1); }));
  t.push_back(value("--recompute-modules", "M ...",
                    "with selective: moe (the MoE block), mlp (dense MLPs), shared_experts, "
                    "core_attn (Megatron's default: moecore's fused attention keeps no S x S "
                    "probabilities, so it changes nothing); moe_act, layernorm and mla_up_proj "
                    "are not built yet",
                    [](S&, V) {}));  // read by finish_recompute_flags (ParseState::values)
  t.push_back(toggle(
      "--recompute-activations", "Megatron's older switch: --recompute-granularity selective",
      [](S& s, V) { s.run.recompute.granularity = nn::RecomputeGranularity::selective; }));
  t.push_back(toggle("--moe-layer-recompute",
                     "Megatron's older switch: --recompute-granularity selective "
                     "--recompute-modules moe",
                     [](S&, V) {}));  // read by finish_recompute_flags
  t.push_back(refused("--distribute-saved-activations", "",
                      "not built yet: a recomputed unit's input is kept whole on each tensor-"
                      "parallel rank (under --sequence-parallel, its shard)"));
}

// Megatron's rules (TransformerConfig.__post_init__), once every flag is applied.
void finish_recompute_flags(ParseState& s) {
  nn::RecomputeConfig& r = s.run.recompute;
  const auto given = [&](const char* flag) { return s.values.count(flag) > 0; };
  const bool moe_layer_recompute = given("--moe-layer-recompute");
  if (moe_layer_recompute) {
    MOE_CHECK(r.granularity != nn::RecomputeGranularity::full,
              "--moe-layer-recompute with --recompute-granularity full: leave one out (full "
              "recomputes the MoE block with the rest of the layer)");
    r.granularity = nn::RecomputeGranularity::selective;
  }
  switch (r.granularity) {
    case nn::RecomputeGranularity::full:
      MOE_CHECK(given("--recompute-method"),
                "--recompute-granularity full needs --recompute-method uniform or block");
      MOE_CHECK(r.num_layers >= 1,
                "--recompute-granularity full needs --recompute-num-layers (the layers of a "
                "unit with uniform, of each chunk with block)");
      break;
    case nn::RecomputeGranularity::selective: {
      MOE_CHECK(r.num_layers == 0,
                "--recompute-num-layers is for --recompute-granularity full; selective "
                "recomputes its modules in every layer");
      // Megatron's default module list is core_attn.
      std::vector<std::string> modules = given("--recompute-modules")
                                             ? split_values(s.values.at("--recompute-modules"))
                                             : std::vector<std::string>{"core_attn"};
      if (moe_layer_recompute) modules.push_back("moe");
      nn::set_recompute_modules(r, modules);
      break;
    }
    case nn::RecomputeGranularity::none:
      // Megatron reads --recompute-method / -num-layers / -modules only with a granularity.
      r = nn::RecomputeConfig{};
      break;
  }
}

}  // namespace moe::train::flags
