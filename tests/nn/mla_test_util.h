// Shared pieces of the MLA tests: small multi-latent-attention configs and helpers that give the
// latent norms random weights.
#pragma once

#include <cstdint>

#include "common/check.h"
#include "moe/nn/mla_attention.h"
#include "moe/nn/model_config.h"
#include "moe/ops/elementwise.h"
#include "nn/gpt_test_util.h"

namespace moe::test {

// MLA with q compression, latent norms, interleaved rotary and YaRN whose mscale differs from
// mscale_all_dim (so the cos/sin factor and the softmax factor are both != 1): hidden 11,
// 3 heads, ql 7, kvl 5, dn 3, dr 4, dv 5. Std 0.3 keeps the attention far from uniform.
inline nn::ModelConfig small_mla_config() {
  nn::ModelConfig c;
  c.name = "mla-test";
  c.num_layers = 2;
  c.hidden_size = 11;
  c.ffn_hidden_size = 6;
  c.num_attention_heads = 3;
  c.num_query_groups = 3;
  c.vocab_size = 7;
  c.attention_type = nn::AttentionType::mla;
  c.mla = nn::MlaConfig{.q_lora_rank = 7,
                        .kv_lora_rank = 5,
                        .qk_head_dim = 3,
                        .qk_pos_emb_head_dim = 4,
                        .v_head_dim = 5};
  c.qk_layernorm = true;
  c.rotary_style = nn::RotaryStyle::interleaved;
  c.norm_epsilon = 1e-6;
  c.init_method_std = 0.3;
  c.yarn = nn::YarnConfig{.factor = 4.0,
                          .original_max_position_embeddings = 16,
                          .beta_fast = 32.0,
                          .beta_slow = 1.0,
                          .mscale = 0.9,
                          .mscale_all_dim = 0.6};
  c.moe_layer_pattern = {0, 0};
  return c;
}

// small_mla_config with tiny_gpt_config's MoE block as its second layer (4 experts top-2, aux
// and z losses; router in fp64 for f64 models).
inline nn::ModelConfig small_mla_moe_config(DType dtype = DType::f64) {
  nn::ModelConfig c = small_mla_config();
  c.moe_layer_pattern = {0, 1};
  c.moe = tiny_gpt_config(dtype).moe;
  c.moe.hidden_size = c.hidden_size;
  return c;
}

// Norm weights start at one: give them 1 + N(0, 0.3^2) so the checks see them act.
inline void randomize_latent_norms(nn::MlaAttention& m, uint64_t seed) {
  for (nn::Parameter* p : m.parameters()) {
    if (p->name.find("norm") == std::string::npos) continue;
    Tensor r = random_normal(p->value.shape(), p->value.dtype(), seed++, p->value.device(), 0.3);
    ops::add_(r, Tensor::full(r.shape(), 1.0, r.dtype(), r.device()));
    p->value.copy_(r);
  }
}

}  // namespace moe::test
