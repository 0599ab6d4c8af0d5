#include "moe/checkpoint/upcycle.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "moe/core/error.h"

namespace moe::checkpoint {
namespace {

constexpr const char* kFlag = "--moe-use-upcycling";

// dst (the MoE model's tensor) = src (the dense model's), cast to dst's dtype.
void assign(Tensor& dst, const Tensor& src) {
  if (src.dtype() == dst.dtype()) dst.copy_(src);
  else dst.copy_(src.to(Device::cpu()).to(dst.dtype()));
}

// A host f64 tensor -> `like`'s dtype on `like`'s device.
Tensor from_host(const std::vector<double>& values, const Shape& shape, const Tensor& like) {
  return Tensor::from_vector(values, shape).to(like.dtype()).to(like.device());
}

template <class T>
void same_shape_flag(const char* flag, const T& dense, const T& moe) {
  MOE_CHECK(dense == moe, kFlag, ": ", flag, " of the MoE model is ", moe,
            " but the dense checkpoint's is ", dense,
            "; everything but the MLP is copied, so the shape flags must agree");
}

void same_shape_flag(const char* flag, bool dense, bool moe) {
  same_shape_flag(flag, std::string(dense ? "on" : "off"), std::string(moe ? "on" : "off"));
}

const char* attention_name(nn::AttentionType type) {
  return type == nn::AttentionType::mla ? "multi-latent" : "grouped-query";
}

}  // namespace

UpcyclingScale upcycling_scale(const nn::MoEConfig& moe, int64_t granularity) {
  const int64_t g = granularity, E = moe.num_experts, k = moe.moe_router_topk;
  MOE_CHECK(g >= 1, "--moe-upcycling-granularity must be >= 1, got ", g);
  MOE_CHECK(E >= 1 && E % g == 0, "--num-experts ", E, " is not a multiple of ",
            "--moe-upcycling-granularity ", g, " (the experts form E / g virtual groups of g)");
  MOE_CHECK(k >= 1, "--moe-router-topk must be >= 1, got ", k);
  UpcyclingScale scale;
  scale.granularity = g;
  scale.expansion_rate = E / g;
  // Megatron's _get_moe_activation_scale: with softmax before top-k the k chosen probs sum to
  // about k / E for a fresh (near-uniform) router, after top-k they sum to 1.
  scale.activation_scale = moe.moe_router_pre_softmax
                               ? static_cast<double>(scale.expansion_rate * g * g) / static_cast<double>(k)
                               : static_cast<double>(g);
  // Gated experts: fc2 (c) times up (c) times gate (c, inside SiLU) -> c^3 = s.
  scale.weight_scale = std::cbrt(scale.activation_scale);
  return scale;
}

void check_upcycling_target(const nn::ModelConfig& moe, int64_t granularity) {
  MOE_CHECK(granularity >= 1, "--moe-upcycling-granularity must be >= 1, got ", granularity);
  bool any_moe = false;
  for (int64_t l = 0; l < moe.num_layers; ++l) any_moe = any_moe || moe.is_moe_layer(l);
  MOE_CHECK(any_moe, kFlag, ": the model has no MoE layer (--moe-layer-freq makes every layer "
                            "dense); there is nothing to upcycle into");
  MOE_CHECK(moe.moe.num_experts % granularity == 0, "--num-experts ", moe.moe.num_experts,
            " is not a multiple of --moe-upcycling-granularity ", granularity,
            " (the experts form E / g virtual groups of g)");
  MOE_CHECK(moe.moe.moe_shared_expert_intermediate_size == 0, kFlag,
            " with --moe-shared-expert-intermediate-size ",
            moe.moe.moe_shared_expert_intermediate_size,
            " is not supported: the dense model has no shared expert, and Megatron leaves it at "
            "its random initialisation, which adds a random MLP to the dense model's function; "
            "upcycle without a shared expert");
}

std::vector<std::string> check_upcycling_configs(const nn::ModelConfig& dense,
                                                 const nn::ModelConfig& moe, int64_t granularity) {
  check_upcycling_target(moe, granularity);
  for (int64_t l = 0; l < dense.num_layers; ++l)
    MOE_CHECK(!dense.is_moe_layer(l), kFlag, ": the checkpoint to upcycle is not dense: its layer ",
              l, " is an MoE layer (upcycling starts from a dense model)");
  same_shape_flag("--num-layers", dense.num_layers, moe.num_layers);
  same_shape_flag("--hidden-size", dense.hidden_size, moe.hidden_size);
  same_shape_flag("--num-attention-heads", dense.num_attention_heads, moe.num_attention_heads);
  same_shape_flag("--num-query-groups", dense.num_query_groups, moe.num_query_groups);
  same_shape_flag("--kv-channels (head dim)", dense.head_dim(), moe.head_dim());
  same_shape_flag("the attention (--multi-latent-attention)",
                  std::string(attention_name(dense.attention_type)),
                  std::string(attention_name(moe.attention_type)));
  if (dense.attention_type == nn::AttentionType::mla) {
    same_shape_flag("--q-lora-rank", dense.mla.q_lora_rank, moe.mla.q_lora_rank);
    same_shape_flag("--kv-lora-rank", dense.mla.kv_lora_rank, moe.mla.kv_lora_rank);
    same_shape_flag("--qk-head-dim", dense.mla.qk_head_dim, moe.mla.qk_head_dim);
    same_shape_flag("--qk-pos-emb-head-dim", dense.mla.qk_pos_emb_head_dim,
                    moe.mla.qk_pos_emb_head_dim);
    same_shape_flag("--v-head-dim", dense.mla.v_head_dim, moe.mla.v_head_dim);
  }
  same_shape_flag("--qk-layernorm", dense.qk_layernorm, moe.qk_layernorm);
  same_shape_flag("--add-qkv-bias", dense.add_qkv_bias, moe.add_qkv_bias);
  same_shape_flag("--vocab-size", dense.vocab_size, moe.vocab_size);
  same_shape_flag("--untie-embeddings-and-output-weights", dense.untie_embeddings_and_output_weights,
                  moe.untie_embeddings_and_output_weights);
  same_shape_flag("--mtp-num-layers", dense.mtp_num_layers, moe.mtp_num_layers);

  const int64_t F = dense.ffn_hidden_size, g = granularity;
  MOE_CHECK(F % g == 0, "--moe-upcycling-granularity ", g,
            " does not divide the dense model's --ffn-hidden-size ", F);
  MOE_CHECK(moe.moe.moe_ffn_hidden_size * g == F, "--moe-ffn-hidden-size ",
            moe.moe.moe_ffn_hidden_size, " must equal the dense model's --ffn-hidden-size ", F,
            " / --moe-upcycling-granularity ", g, " = ", F / g);
  bool keeps_dense_layers = false;
  for (int64_t l = 0; l < moe.num_layers; ++l) keeps_dense_layers |= !moe.is_moe_layer(l);
  if (keeps_dense_layers)
    MOE_CHECK(moe.ffn_hidden_size == F, kFlag, ": --ffn-hidden-size of the MoE model is ",
              moe.ffn_hidden_size, " but the dense checkpoint's is ", F,
              "; the layers --moe-layer-freq keeps dense take the dense MLP as it is");

  std::vector<std::string> notes;
  auto note = [&](const char* flag, const auto& a, const auto& b) {
    if (a != b)
      notes.push_back(moe::detail::concat(flag, ": dense checkpoint ", a, ", MoE model ", b,
                                          " (the MoE model computes with its own)"));
  };
  note("--norm-epsilon", dense.norm_epsilon, moe.norm_epsilon);
  note("--rotary-base", dense.rotary_base, moe.rotary_base);
  note("--rotary-percent", dense.rotary_percent, moe.rotary_percent);
  auto style = [](nn::RotaryStyle r) { return std::string(r == nn::RotaryStyle::half ? "half" : "interleaved"); };
  note("rotary style", style(dense.rotary_style), style(moe.rotary_style));
  auto on = [](bool b) { return std::string(b ? "on" : "off"); };
  note("YaRN rope scaling", on(dense.yarn.has_value()), on(moe.yarn.has_value()));
  return notes;
}

Tensor upcycle_expert_fc1(const Tensor& dense_fc1, const UpcyclingScale& scale) {
  check_dim(dense_fc1, 2, "upcycle_expert_fc1", "dense_fc1");
  const int64_t g = scale.granularity, E = scale.expansion_rate * g;
  const int64_t H = dense_fc1.size(1), F = dense_fc1.size(0) / 2;
  MOE_CHECK(dense_fc1.size(0) == 2 * F && F % g == 0, "upcycle_expert_fc1: fc1 ",
            shape_str(dense_fc1.shape()), " is not [gate; up] of a width divisible by ",
            "--moe-upcycling-granularity ", g);
  const int64_t Fe = F / g;
  const std::vector<double> w = dense_fc1.to_double_vector();
  std::vector<double> out(static_cast<size_t>(E * 2 * Fe * H));
  for (int64_t e = 0; e < E; ++e) {
    const int64_t piece = e % g;
    for (int64_t half = 0; half < 2; ++half)  // gate, then up: each split on its own
      for (int64_t row = 0; row < Fe; ++row) {
        const double* src = w.data() + (half * F + piece * Fe + row) * H;
        double* dst = out.data() + ((e * 2 + half) * Fe + row) * H;
        for (int64_t h = 0; h < H; ++h) dst[h] = scale.weight_scale * src[h];
      }
  }
  return from_host(out, {E, 2 * Fe, H}, dense_fc1);
}

Tensor upcycle_expert_fc2(const Tensor& dense_fc2, const UpcyclingScale& scale) {
  check_dim(dense_fc2, 2, "upcycle_expert_fc2", "dense_fc2");
  const int64_t g = scale.granularity, E = scale.expansion_rate * g;
  const int64_t H = dense_fc2.size(0), F = dense_fc2.size(1);
  MOE_CHECK(F % g == 0, "upcycle_expert_fc2: fc2 ", shape_str(dense_fc2.shape()),
            " has a width not divisible by --moe-upcycling-granularity ", g);
  const int64_t Fe = F / g;
  const std::vector<double> w = dense_fc2.to_double_vector();
  std::vector<double> out(static_cast<size_t>(E * H * Fe));
  for (int64_t e = 0; e < E; ++e) {
    const int64_t piece = e % g;  // fc2 splits along its input (F) dimension: columns
    for (int64_t h = 0; h < H; ++h) {
      const double* src = w.data() + h * F + piece * Fe;
      double* dst = out.data() + (e * H + h) * Fe;
      for (int64_t f = 0; f < Fe; ++f) dst[f] = scale.weight_scale * src[f];
    }
  }
  return from_host(out, {E, H, Fe}, dense_fc2);
}

Tensor upcycle_router(const Tensor& fresh_router, int64_t granularity) {
  check_dim(fresh_router, 2, "upcycle_router", "fresh_router");
  const int64_t E = fresh_router.size(0), H = fresh_router.size(1), g = granularity;
  MOE_CHECK(g >= 1 && E % g == 0, "upcycle_router: ", E, " router rows are not a multiple of ",
            "--moe-upcycling-granularity ", g);
  const std::vector<double> w = fresh_router.to_double_vector();
  std::vector<double> out(w.size());
  for (int64_t e = 0; e < E; ++e) {
    const int64_t row = e / g;  // virtual group e / g: the first E / g fresh rows
    std::copy(w.begin() + row * H, w.begin() + (row + 1) * H, out.begin() + e * H);
  }
  return from_host(out, {E, H}, fresh_router);
}

UpcyclingReport upcycle_model(nn::GPTModel& dense, nn::GPTModel& moe, int64_t granularity) {
  UpcyclingReport report;
  report.notes = check_upcycling_configs(dense.config(), moe.config(), granularity);
  report.scale = upcycling_scale(moe.config().moe, granularity);
  // Routing options under which the MoE model does not start from the dense function (see the
  // header): allowed, as Megatron allows them, but said.
  const nn::MoEConfig& m = moe.config().moe;
  if (m.moe_router_topk % granularity != 0)
    report.notes.push_back(moe::detail::concat(
        "--moe-router-topk ", m.moe_router_topk, " is not a multiple of --moe-upcycling-granularity ",
        granularity, ": the top-k splits virtual groups, so the MoE model does not start from the "
        "dense model's function"));
  if (m.moe_router_score_function == ops::ScoreFunction::sigmoid && m.moe_router_topk == 1)
    report.notes.push_back("sigmoid top-1 routing weights are not normalised: the MoE layer "
                           "starts as sigmoid(z) times the dense MLP");
  if (m.moe_router_topk_scaling_factor && *m.moe_router_topk_scaling_factor != 1.0)
    report.notes.push_back(moe::detail::concat("--moe-router-topk-scaling-factor ",
                                               *m.moe_router_topk_scaling_factor,
                                               " scales the upcycled MLP outputs"));
  if (m.moe_expert_capacity_factor)
    report.notes.push_back("--moe-expert-capacity-factor: dropped tokens skip the upcycled MLP");

  std::set<std::string> filled;  // the MoE blocks' tensors, written by the scheme
  auto upcycle_layer = [&](nn::TransformerLayer& from, nn::TransformerLayer& to) {
    if (!to.is_moe()) {
      if (to.mlp) ++report.dense_mlps_copied;  // copied by name below
      return;
    }
    MOE_CHECK(from.mlp.has_value(), kFlag, ": layer ", from.index(),
              " of the dense checkpoint has no dense MLP");
    nn::MoELayer& block = *to.moe;
    block.experts.load_full(upcycle_expert_fc1(from.mlp->fc1.value, report.scale),
                            upcycle_expert_fc2(from.mlp->fc2.value, report.scale));
    block.router.weight.value.copy_(upcycle_router(block.router.weight.value, granularity));
    if (block.router.expert_bias.defined()) block.router.expert_bias.zero_();
    filled.insert({block.router.weight.name, block.experts.fc1.name, block.experts.fc2.name});
    ++report.moe_layers;
  };
  for (size_t l = 0; l < moe.layers.size(); ++l) upcycle_layer(dense.layers[l], moe.layers[l]);
  for (size_t d = 0; d < moe.mtp_layers.size(); ++d)
    upcycle_layer(dense.mtp_layers[d].layer, moe.mtp_layers[d].layer);

  std::map<std::string, nn::Parameter*> by_name;
  for (nn::Parameter* p : dense.parameters()) by_name[p->name] = p;
  for (nn::Parameter* p : moe.parameters()) {
    if (filled.count(p->name)) continue;
    const auto it = by_name.find(p->name);
    MOE_CHECK(it != by_name.end(), kFlag, ": the MoE model's tensor ", p->name,
              " has no counterpart in the dense checkpoint");
    const Tensor& src = it->second->value;
    MOE_CHECK(src.shape() == p->value.shape(), kFlag, ": ", p->name, " is ",
              shape_str(p->value.shape()), " in the MoE model but ", shape_str(src.shape()),
              " in the dense checkpoint");
    assign(p->value, src);
    ++report.tensors_copied;
  }
  return report;
}

}  // namespace moe::checkpoint
