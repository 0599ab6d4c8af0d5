// Parameter counts from the shapes of a ModelConfig (formulas in param_count.h).
#include "moe/nn/param_count.h"

#include <cstdio>
#include <sstream>

#include "moe/core/error.h"

namespace moe::nn {

int64_t attention_param_count(const ModelConfig& c) {
  const int64_t H = c.hidden_size, heads = c.num_attention_heads;
  if (c.attention_type == AttentionType::gqa) {
    const int64_t D = c.head_dim(), groups = c.num_query_groups;
    int64_t n = H * heads * D + 2 * H * groups * D + heads * D * H;
    if (c.add_qkv_bias) n += heads * D + 2 * groups * D;
    if (c.qk_layernorm) n += 2 * D;
    return n;
  }
  const MlaConfig& m = c.mla;
  const int64_t qk = m.qk_head_dim + m.qk_pos_emb_head_dim;
  int64_t n = 0;
  if (m.q_lora_rank > 0)
    n += H * m.q_lora_rank + m.q_lora_rank * heads * qk + (c.qk_layernorm ? m.q_lora_rank : 0);
  else
    n += H * heads * qk;
  n += H * (m.kv_lora_rank + m.qk_pos_emb_head_dim) + (c.qk_layernorm ? m.kv_lora_rank : 0);
  n += m.kv_lora_rank * heads * (m.qk_head_dim + m.v_head_dim);
  n += heads * m.v_head_dim * H;
  return n;
}

int64_t dense_mlp_param_count(const ModelConfig& c) {
  return 3 * c.hidden_size * c.ffn_hidden_size;
}

namespace {

int64_t shared_expert_param_count(const ModelConfig& c) {
  const MoEConfig& m = c.moe;
  if (m.moe_shared_expert_intermediate_size == 0) return 0;
  return 3 * c.hidden_size * m.moe_shared_expert_intermediate_size +
         (m.moe_shared_expert_gate ? c.hidden_size : 0);
}

// Adds one transformer layer (attention, its MLP or MoE block, two norms) to `count`.
void add_layer(const ModelConfig& c, bool moe_layer, ParamCount& count) {
  const int64_t H = c.hidden_size;
  count.attention += attention_param_count(c);
  count.norms += 2 * H;
  if (!moe_layer) {
    count.dense_mlp += dense_mlp_param_count(c);
    return;
  }
  const MoEConfig& m = c.moe;
  const int64_t expert = 3 * H * m.moe_ffn_hidden_size;
  count.router += m.num_experts * H;
  count.routed_experts += m.num_experts * expert;
  count.routed_experts_active += m.moe_router_topk * expert;
  count.shared_experts += shared_expert_param_count(c);
  if (m.moe_router_enable_expert_bias) count.expert_bias += m.num_experts;
}

}  // namespace

int64_t moe_param_count(const ModelConfig& c) {
  return c.moe.num_experts * c.hidden_size * (1 + 3 * c.moe.moe_ffn_hidden_size) +
         shared_expert_param_count(c);
}

int64_t moe_active_param_count(const ModelConfig& c) {
  return c.moe.num_experts * c.hidden_size +
         c.moe.moe_router_topk * 3 * c.hidden_size * c.moe.moe_ffn_hidden_size +
         shared_expert_param_count(c);
}

ModelParamCount count_parameters(const ModelConfig& c) {
  c.validate();
  const int64_t H = c.hidden_size, V = c.vocab_size;
  ModelParamCount out;
  ParamCount& main = out.main;
  main.embedding = V * H;
  main.output_layer = c.untie_embeddings_and_output_weights ? V * H : 0;
  for (int64_t layer = 0; layer < c.num_layers; ++layer) add_layer(c, c.is_moe_layer(layer), main);
  main.norms += H;  // final norm

  // Multi-token prediction (DeepSeek-V3 2.2; Megatron's MultiTokenPredictionLayer): each layer
  // normalises the previous hidden state (hnorm) and the next token's embedding (enorm),
  // projects their concatenation [2H] to H (eh_proj), runs one transformer layer with the
  // decoder's last layer's spec, and normalises again before the shared output layer.
  const bool mtp_moe = c.is_moe_layer(c.num_layers - 1);
  for (int64_t i = 0; i < c.mtp_num_layers; ++i) {
    out.mtp.norms += 3 * H;
    out.mtp.mtp_projection += 2 * H * H;
    add_layer(c, mtp_moe, out.mtp);
  }
  out.mtp_checkpoint_copies = c.mtp_num_layers * 2 * V * H;
  return out;
}

std::string format_param_count(int64_t count) {
  const double n = static_cast<double>(count);
  char buffer[32];
  if (n >= 1e9)
    std::snprintf(buffer, sizeof buffer, "%.2fB", n / 1e9);
  else if (n >= 1e6)
    std::snprintf(buffer, sizeof buffer, "%.2fM", n / 1e6);
  else if (n >= 1e3)
    std::snprintf(buffer, sizeof buffer, "%.2fK", n / 1e3);
  else
    std::snprintf(buffer, sizeof buffer, "%lld", static_cast<long long>(count));
  return buffer;
}

std::string describe(const ModelParamCount& count) {
  std::ostringstream out;
  char line[128];
  auto row = [&](const char* what, int64_t total, int64_t active) {
    std::snprintf(line, sizeof line, "  %-24s %12s %12s\n", what, format_param_count(total).c_str(),
                  format_param_count(active).c_str());
    out << line;
  };
  const ParamCount& m = count.main;
  std::snprintf(line, sizeof line, "  %-24s %12s %12s\n", "parameters", "total", "active/token");
  out << line;
  row("embedding", m.embedding, m.embedding);
  row("output layer", m.output_layer, m.output_layer);
  row("attention", m.attention, m.attention);
  row("dense MLPs", m.dense_mlp, m.dense_mlp);
  row("routers", m.router, m.router);
  row("routed experts", m.routed_experts, m.routed_experts_active);
  row("shared experts", m.shared_experts, m.shared_experts);
  row("norms", m.norms, m.norms);
  row("main model", m.total(), m.active());
  if (count.mtp.total() > 0) row("MTP layers", count.mtp.total(), count.mtp.active());
  row("total", count.total(), m.active() + count.mtp.active());
  if (m.expert_bias + count.mtp.expert_bias > 0)
    row("expert bias (buffers)", m.expert_bias + count.mtp.expert_bias,
        m.expert_bias + count.mtp.expert_bias);
  return out.str();
}

}  // namespace moe::nn
