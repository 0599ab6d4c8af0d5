// The per-family HF <-> moecore name mapping (hf_names.h).
#include "moe/checkpoint/hf_names.h"

#include "moe/core/error.h"

namespace moe::checkpoint {

namespace {

// A tensor that keeps its HF name.
TensorMapping same(const std::string& name, const Shape& shape) {
  return {name, shape, {shape}, {{name}}, false, false};
}

// [gate; up] of two [F, H] tensors.
TensorMapping fused_gate_up(const std::string& name, const std::string& gate,
                            const std::string& up, int64_t F, int64_t H) {
  return {name, {2 * F, H}, {{F, H}, {F, H}}, {{gate, up}}, false, false};
}

// The MLP names of a family: where the router, experts and shared experts live.
struct MlpNames {
  std::string block;   // "mlp." or "block_sparse_moe."
  std::string gate, up, down;  // per-expert projection names
  std::string shared;  // "mlp.shared_expert." / "mlp.shared_experts."
};

MlpNames mlp_names(const std::string& family) {
  if (family == "mixtral") return {"block_sparse_moe.", "w1", "w3", "w2", "mlp.shared_expert."};
  const bool deepseek = family == "deepseek_v2" || family == "deepseek_v3";
  return {"mlp.", "gate_proj", "up_proj", "down_proj",
          deepseek ? "mlp.shared_experts." : "mlp.shared_expert."};
}

void add_attention(const nn::ModelConfig& c, const std::string& p, std::vector<TensorMapping>& t) {
  const int64_t H = c.hidden_size, Hq = c.num_attention_heads;
  if (c.attention_type == nn::AttentionType::gqa) {
    const int64_t D = c.head_dim(), Hkv = c.num_query_groups;
    t.push_back(same(p + "self_attn.q_proj.weight", {Hq * D, H}));
    t.push_back(same(p + "self_attn.k_proj.weight", {Hkv * D, H}));
    t.push_back(same(p + "self_attn.v_proj.weight", {Hkv * D, H}));
    if (c.add_qkv_bias) {
      t.push_back(same(p + "self_attn.q_proj.bias", {Hq * D}));
      t.push_back(same(p + "self_attn.k_proj.bias", {Hkv * D}));
      t.push_back(same(p + "self_attn.v_proj.bias", {Hkv * D}));
    }
    t.push_back(same(p + "self_attn.o_proj.weight", {H, Hq * D}));
    if (c.qk_layernorm) {
      t.push_back(same(p + "self_attn.q_norm.weight", {D}));
      t.push_back(same(p + "self_attn.k_norm.weight", {D}));
    }
    return;
  }
  // MLA (DeepSeek-V2/V3): HF's names and shapes; the latent norms come with --qk-layernorm.
  const nn::MlaConfig& m = c.mla;
  const int64_t dn = m.qk_head_dim, dr = m.qk_pos_emb_head_dim, dv = m.v_head_dim;
  if (m.q_lora_rank > 0) {
    t.push_back(same(p + "self_attn.q_a_proj.weight", {m.q_lora_rank, H}));
    if (c.qk_layernorm) t.push_back(same(p + "self_attn.q_a_layernorm.weight", {m.q_lora_rank}));
    t.push_back(same(p + "self_attn.q_b_proj.weight", {Hq * (dn + dr), m.q_lora_rank}));
  } else {
    t.push_back(same(p + "self_attn.q_proj.weight", {Hq * (dn + dr), H}));
  }
  t.push_back(same(p + "self_attn.kv_a_proj_with_mqa.weight", {m.kv_lora_rank + dr, H}));
  if (c.qk_layernorm) t.push_back(same(p + "self_attn.kv_a_layernorm.weight", {m.kv_lora_rank}));
  t.push_back(same(p + "self_attn.kv_b_proj.weight", {Hq * (dn + dv), m.kv_lora_rank}));
  t.push_back(same(p + "self_attn.o_proj.weight", {H, Hq * dv}));
}

void add_dense_mlp(const nn::ModelConfig& c, const std::string& p, std::vector<TensorMapping>& t) {
  MOE_CHECK(c.family != "mixtral", "model ", c.name, " (family mixtral) has a dense layer (",
            p, "), which Mixtral's Hugging Face layout cannot hold");
  const int64_t H = c.hidden_size, F = c.ffn_hidden_size;
  t.push_back(fused_gate_up(p + "mlp.gate_up_proj.weight", p + "mlp.gate_proj.weight",
                            p + "mlp.up_proj.weight", F, H));
  t.push_back(same(p + "mlp.down_proj.weight", {H, F}));
}

void add_moe(const nn::ModelConfig& c, const std::string& p, std::vector<TensorMapping>& t) {
  const nn::MoEConfig& m = c.moe;
  const MlpNames n = mlp_names(c.family);
  const int64_t H = c.hidden_size, E = m.num_experts, F = m.moe_ffn_hidden_size;
  TensorMapping router = same(p + "mlp.gate.weight", {E, H});
  router.hf_names = {{p + n.block + "gate.weight"}};
  t.push_back(router);
  if (m.moe_router_enable_expert_bias) {
    TensorMapping bias = same(p + "mlp.gate.e_score_correction_bias", {E});
    bias.hf_names = {{p + n.block + "gate.e_score_correction_bias"}};
    bias.buffer = true;
    t.push_back(bias);
  }
  TensorMapping fc1{p + "mlp.experts.gate_up_proj", {E, 2 * F, H}, {{F, H}, {F, H}}, {}, true,
                    false};
  TensorMapping fc2{p + "mlp.experts.down_proj", {E, H, F}, {{H, F}}, {}, true, false};
  for (int64_t e = 0; e < E; ++e) {
    const std::string expert = p + n.block + "experts." + std::to_string(e) + ".";
    fc1.hf_names.push_back({expert + n.gate + ".weight", expert + n.up + ".weight"});
    fc2.hf_names.push_back({expert + n.down + ".weight"});
  }
  t.push_back(fc1);
  t.push_back(fc2);
  const int64_t Fs = m.moe_shared_expert_intermediate_size;
  if (Fs > 0) {
    t.push_back(fused_gate_up(p + "mlp.shared_expert.gate_up_proj.weight",
                              p + n.shared + "gate_proj.weight", p + n.shared + "up_proj.weight",
                              Fs, H));
    TensorMapping down = same(p + "mlp.shared_expert.down_proj.weight", {H, Fs});
    down.hf_names = {{p + n.shared + "down_proj.weight"}};
    t.push_back(down);
  }
  if (m.moe_shared_expert_gate) t.push_back(same(p + "mlp.shared_expert_gate.weight", {1, H}));
}

}  // namespace

bool ignored_hf_tensor(const std::string& name) { return name.ends_with(".rotary_emb.inv_freq"); }

UnitMapping hf_layer_mapping(const nn::ModelConfig& c, int64_t layer) {
  const int64_t L = c.num_layers, total = L + c.mtp_num_layers;
  MOE_CHECK(layer >= 0 && layer < total, "hf_layer_mapping: layer ", layer, " of model ", c.name,
            " with ", L, " layers and ", c.mtp_num_layers, " MTP layers");
  const int64_t H = c.hidden_size;
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  UnitMapping unit;
  unit.what = "model.layers." + std::to_string(layer);
  unit.layer = layer;
  unit.mtp = layer >= L;
  std::vector<TensorMapping>& t = unit.tensors;
  if (unit.mtp) {
    // DeepSeek-V3's MTP module: [enorm(embedding); hnorm(hidden)] -> eh_proj -> layer -> norm.
    t.push_back(same(p + "enorm.weight", {H}));
    t.push_back(same(p + "hnorm.weight", {H}));
    t.push_back(same(p + "eh_proj.weight", {H, 2 * H}));
  }
  t.push_back(same(p + "input_layernorm.weight", {H}));
  add_attention(c, p, t);
  t.push_back(same(p + "post_attention_layernorm.weight", {H}));
  const bool moe = c.is_moe_layer(unit.mtp ? L - 1 : layer);
  if (moe)
    add_moe(c, p, t);
  else
    add_dense_mlp(c, p, t);
  if (unit.mtp) {
    t.push_back(same(p + "shared_head.norm.weight", {H}));
    unit.copies.push_back({p + "embed_tokens.weight", "model.embed_tokens.weight"});
    unit.copies.push_back({p + "shared_head.head.weight", c.untie_embeddings_and_output_weights
                                                              ? "lm_head.weight"
                                                              : "model.embed_tokens.weight"});
  }
  return unit;
}

std::vector<UnitMapping> hf_model_mapping(const nn::ModelConfig& c) {
  std::vector<UnitMapping> units;
  UnitMapping embedding;
  embedding.what = "embedding";
  embedding.tensors.push_back(same("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}));
  units.push_back(embedding);
  for (int64_t l = 0; l < c.num_layers + c.mtp_num_layers; ++l)
    units.push_back(hf_layer_mapping(c, l));
  UnitMapping final_unit;
  final_unit.what = "final norm and output layer";
  final_unit.tensors.push_back(same("model.norm.weight", {c.hidden_size}));
  if (c.untie_embeddings_and_output_weights)
    final_unit.tensors.push_back(same("lm_head.weight", {c.vocab_size, c.hidden_size}));
  else
    final_unit.copies.push_back({"lm_head.weight", "model.embed_tokens.weight", /*optional=*/true});
  units.push_back(final_unit);
  return units;
}

}  // namespace moe::checkpoint
