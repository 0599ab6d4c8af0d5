// Shared pieces of the GPTModel tests: tiny model configurations and random token batches.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/core/rng.h"
#include "moe/nn/gpt_model.h"
#include "moe/ops/elementwise.h"

namespace moe::test {

// The gradient-check model: 2 layers (dense, then MoE with 4 experts top-2), hidden 8, 4 heads
// in 2 query groups (head dim 2), vocabulary 11; aux and z losses on; router in fp64 for f64.
inline nn::ModelConfig tiny_gpt_config(DType dtype = DType::f64) {
  nn::ModelConfig c;
  c.name = "tiny-test";
  c.num_layers = 2;
  c.hidden_size = 8;
  c.ffn_hidden_size = 12;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.vocab_size = 11;
  c.norm_epsilon = 1e-5;
  c.init_method_std = 0.3;  // far from routing ties and from an all-linear model
  c.moe_layer_pattern = {0, 1};
  c.moe.hidden_size = c.hidden_size;
  c.moe.num_experts = 4;
  c.moe.moe_ffn_hidden_size = 6;
  c.moe.moe_router_topk = 2;
  c.moe.moe_aux_loss_coeff = 1e-2;
  c.moe.moe_z_loss_coeff = 1e-3;
  c.moe.moe_router_dtype = dtype == DType::f64 ? nn::RouterDType::fp64 : nn::RouterDType::fp32;
  return c;
}

// The GPU comparison model: 3 layers (dense, MoE, MoE; 8 experts top-2), hidden 64, 4 heads in
// 2 groups of head dim 16, vocabulary 257.
inline nn::ModelConfig small_gpt_config() {
  nn::ModelConfig c;
  c.name = "small-test";
  c.num_layers = 3;
  c.hidden_size = 64;
  c.ffn_hidden_size = 96;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.kv_channels = 16;
  c.vocab_size = 257;
  c.norm_epsilon = 1e-6;
  c.init_method_std = 0.05;
  c.moe_layer_pattern = {0, 1, 1};
  c.moe.hidden_size = c.hidden_size;
  c.moe.num_experts = 8;
  c.moe.moe_ffn_hidden_size = 48;
  c.moe.moe_router_topk = 2;
  c.moe.moe_aux_loss_coeff = 1e-2;
  c.moe.moe_z_loss_coeff = 1e-3;
  return c;
}

// Token ids [S, B] (i64) uniform in [0, vocab), from the counter-based RNG.
inline Tensor random_tokens(int64_t S, int64_t B, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> ids(static_cast<size_t>(S * B));
  for (size_t i = 0; i < ids.size(); ++i) {
    const float u = philox_uniform(seed, i, 0.0f, static_cast<float>(vocab));
    ids[i] = std::min<int64_t>(static_cast<int64_t>(u), vocab - 1);
  }
  return Tensor::from_vector(ids, {S, B});
}

// Labels: random ids with every `ignore_every`-th token (from `first`) set to ignore_index.
inline Tensor random_labels(int64_t S, int64_t B, int64_t vocab, uint64_t seed,
                            int64_t ignore_every, int64_t first = 1) {
  Tensor labels = random_tokens(S, B, vocab, seed);
  std::vector<int64_t> y = labels.to_vector<int64_t>();
  for (int64_t i = first; i < S * B; i += ignore_every)
    y[static_cast<size_t>(i)] = ops::kIgnoreIndex;
  return Tensor::from_vector(y, {S, B});
}

// Norm weights start at one and biases at zero: give them random values (norms 1 + N(0, 0.3^2),
// biases N(0, 0.3^2)) so that the checks see them act (a bias the forward ignored would then
// show in the finite differences).
inline void randomize_norms_and_biases(nn::GPTModel& model, uint64_t seed) {
  for (nn::Parameter* p : model.parameters()) {
    const std::string& n = p->name;
    const bool norm = n.find("norm") != std::string::npos;
    if (!norm && n.find("bias") == std::string::npos) continue;
    Tensor r = random_normal(p->value.shape(), p->value.dtype(), seed++, p->value.device(), 0.3);
    if (norm) ops::add_(r, Tensor::full(r.shape(), 1.0, r.dtype(), r.device()));
    p->value.copy_(r);
  }
}

}  // namespace moe::test
