// Parameter counts of a ModelConfig: total and active per token, by kind, computed from the
// shapes alone (no model is built). H hidden, V vocab, L layers, F dense FFN, E experts, k top-k,
// Fe expert FFN, Fs shared-expert FFN, heads Hq, query groups Hkv, head dim D:
//
//   embedding        V H
//   output layer     V H when untied (0 when tied to the embedding)
//   GQA attention    H Hq D + 2 H Hkv D + Hq D H  (+ Hq D + 2 Hkv D with --add-qkv-bias)
//                    (+ 2 D with --qk-layernorm: the q and k norm weights)
//   MLA attention    q: H ql + ql + ql Hq (dn + dr)  (q_lora_rank ql > 0; q_a_layernorm ql)
//                       or H Hq (dn + dr)            (ql = 0)
//                    kv: H (kvl + dr) + kvl + kvl Hq (dn + dv); out: Hq dv H
//                    (dn qk_head_dim, dr qk_pos_emb_head_dim, dv v_head_dim, kvl kv_lora_rank;
//                     the latent norms ql + kvl are counted with --qk-layernorm)
//   dense MLP        3 H F (SwiGLU: gate, up, down)
//   MoE layer        router E H; experts 3 H Fe E; shared experts 3 H Fs (+ H for the sigmoid
//                    gate with moe_shared_expert_gate)
//   norms            2 H per layer (input and pre-MLP RMSNorm) + H (final norm)
//   MTP layer        enorm H + hnorm H + eh_proj 2H x H + one transformer layer (MoE iff the
//                    last decoder layer is MoE) + final norm H; the MTP layers share the
//                    embedding and the output layer with the main model (DeepSeek-V3).
//
// Active per token: everything except the routed experts, plus k of the E experts of each MoE
// layer (the embedding table and the output layer count in full, as Mixtral's, Qwen's and
// DeepSeek's published figures do). No biases besides Qwen2's q/k/v (Megatron's
// --disable-bias-linear). The expert bias (DeepSeek-V3's e_score_correction_bias, E per MoE
// layer) is a buffer, not a trained parameter: reported apart, in no total.
#pragma once

#include <cstdint>
#include <string>

#include "moe/nn/model_config.h"

namespace moe::nn {

// One group of layers (the main model, or the MTP layers), by kind.
struct ParamCount {
  int64_t embedding = 0;
  int64_t output_layer = 0;
  int64_t attention = 0;  // projections, biases, q/k or latent norms
  int64_t dense_mlp = 0;
  int64_t router = 0;
  int64_t routed_experts = 0;         // all E experts of every MoE layer
  int64_t routed_experts_active = 0;  // k experts of every MoE layer
  int64_t shared_experts = 0;         // shared experts and their gates
  int64_t norms = 0;                  // layer norms, final norm (MTP: enorm, hnorm, final norm)
  int64_t mtp_projection = 0;         // MTP's eh_proj
  int64_t expert_bias = 0;            // buffers, in no total

  int64_t total() const {
    return embedding + output_layer + attention + dense_mlp + router + routed_experts +
           shared_experts + norms + mtp_projection;
  }
  int64_t active() const { return total() - routed_experts + routed_experts_active; }
};

struct ModelParamCount {
  ParamCount main;  // the decoder with embedding and output layer, without MTP
  ParamCount mtp;   // the MTP layers alone (embedding and output layer shared: 0 here)
  // A DeepSeek-V3 checkpoint stores the embedding and the output head again in each MTP layer
  // (model.layers.61.embed_tokens, .shared_head.head): mtp_num_layers * 2 V H, so its
  // "685B = 671B main + 14B MTP" counts them twice. Not parameters of the trained model.
  int64_t mtp_checkpoint_copies = 0;

  int64_t total() const { return main.total() + mtp.total(); }
  int64_t checkpoint_total() const { return total() + mtp_checkpoint_copies; }
};

// Per-block counts, for modules to check their parameters against.
int64_t attention_param_count(const ModelConfig& config);  // one layer's attention block
int64_t dense_mlp_param_count(const ModelConfig& config);  // one dense SwiGLU MLP
// One MoE block: router + routed experts + shared experts (and gate); active: k experts.
int64_t moe_param_count(const ModelConfig& config);
int64_t moe_active_param_count(const ModelConfig& config);

ModelParamCount count_parameters(const ModelConfig& config);

// "46.70B" / "12.9M"-style rounding for logs, and a small table of a ModelParamCount.
std::string format_param_count(int64_t count);
std::string describe(const ModelParamCount& count);

}  // namespace moe::nn
