// ModelConfig: the shape of a decoder-only MoE language model, with Megatron's names for the
// fields (--num-layers -> num_layers, ...). The model zoo (configs/) and Hugging Face
// config.json files map onto it; the MoE block's own options live in `moe` (MoEConfig).
// Around it: model_config_json.h (the JSON file format), checkpoint/hf_config_import.h (config.json
// -> ModelConfig), model_zoo.h (model_zoo("deepseek-v3"), ...), param_count.h (total / active).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moe/nn/moe_config.h"

namespace moe::nn {

enum class AttentionType { gqa, mla };         // grouped-query (incl. MHA) or multi-latent
enum class RotaryStyle { half, interleaved };  // rotate_half pairs, or DeepSeek's (2i, 2i+1)

// YaRN context extension (DeepSeek-V2/V3), as Hugging Face's rope_scaling {"type": "yarn"}.
struct YarnConfig {
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 1.0, mscale_all_dim = 0.0;
};

// Multi-latent attention (DeepSeek-V2/V3).
struct MlaConfig {
  int64_t q_lora_rank = 0;  // 0: q is a plain projection (DeepSeek-V2-Lite)
  int64_t kv_lora_rank = 512;
  int64_t qk_head_dim = 128;         // qk_nope_head_dim: the part without rotary
  int64_t qk_pos_emb_head_dim = 64;  // qk_rope_head_dim: the decoupled rotary part
  int64_t v_head_dim = 128;
};

struct ModelConfig {
  std::string name;    // e.g. "mixtral-8x7b"
  std::string family;  // mixtral | qwen2_moe | qwen3_moe | deepseek_v2 | deepseek_v3

  // Transformer.
  int64_t num_layers = 0;           // --num-layers
  int64_t hidden_size = 0;          // --hidden-size
  int64_t ffn_hidden_size = 0;      // --ffn-hidden-size (dense MLP layers)
  int64_t num_attention_heads = 0;  // --num-attention-heads
  int64_t num_query_groups = 0;     // --num-query-groups (kv heads; = heads for MHA)
  int64_t kv_channels = 0;          // --kv-channels (head dim; 0 = hidden / heads)
  // --qk-layernorm. GQA: RMSNorm over each q and k head (Qwen3's q_norm / k_norm). MLA: the
  // RMSNorms of the latents (DeepSeek's q_a_layernorm when q_lora_rank > 0, kv_a_layernorm), as
  // Megatron's DeepSeek recipes pass --qk-layernorm with --multi-latent-attention.
  bool qk_layernorm = false;
  bool add_qkv_bias = false;                          // --add-qkv-bias (Qwen2)
  AttentionType attention_type = AttentionType::gqa;  // --multi-latent-attention -> mla
  MlaConfig mla;
  double norm_epsilon = 1e-5;  // --norm-epsilon
  int64_t vocab_size = 0;      // padded vocabulary (HF vocab_size)
  int64_t max_position_embeddings = 4096;
  double rotary_base = 10000.0;  // --rotary-base
  double rotary_percent = 1.0;   // --rotary-percent (partial rotary)
  RotaryStyle rotary_style = RotaryStyle::half;
  std::optional<YarnConfig> yarn;
  bool untie_embeddings_and_output_weights = true;  // --untie-embeddings-and-output-weights
  double init_method_std = 0.02;
  // Dropout in training (Megatron's places: ops/dropout.h, transformer_layer.h). Megatron's
  // defaults are 0.1; moecore's presets and model files default to 0 (no dropout) unless
  // given. --attention-dropout: on the attention probabilities; --hidden-dropout: the
  // embedding output and the attention / MLP outputs before each residual add.
  double attention_dropout = 0.0;
  double hidden_dropout = 0.0;
  // --deterministic-mode: bitwise-reproducible gradients where a kernel offers the choice
  // (cuDNN attention's backward; the other kernels always are). A run option, not part of the
  // model's shape: model_config.json does not store it.
  bool deterministic_mode = false;

  // MoE placement: moe_layer_pattern[i] = 1 if layer i is an MoE layer, one entry per layer
  // (--moe-layer-freq as a list; an integer N means layers 0, N, 2N, ...; Megatron's expression
  // "([0]*3+[1]*58)" is DeepSeek-V3's first_k_dense_replace = 3). model_config_json.h parses and
  // prints the flag's forms.
  std::vector<int> moe_layer_pattern;
  MoEConfig moe;  // the MoE block (hidden_size mirrored)

  // Multi-token prediction (DeepSeek-V3).
  int64_t mtp_num_layers = 0;            // --mtp-num-layers
  double mtp_loss_scaling_factor = 0.1;  // --mtp-loss-scaling-factor

  // 0 while num_attention_heads is not positive (an unvalidated config).
  int64_t head_dim() const {
    if (kv_channels > 0) return kv_channels;
    return num_attention_heads > 0 ? hidden_size / num_attention_heads : 0;
  }
  bool is_moe_layer(int64_t layer) const {
    return layer < static_cast<int64_t>(moe_layer_pattern.size()) && moe_layer_pattern[layer] != 0;
  }
  // Throws moe::Error naming the flags involved for any inconsistent shape or option (heads vs
  // query groups, head dim, rotary, MLA ranks, YaRN, layer pattern vs --num-layers, ...), and
  // applies moe.validate() when any layer is MoE. Starts with validate_sizes().
  void validate() const;
  // Every size field (this one's and moe's) within its least value and its bound
  // (config_limits.h), and the whole model within 2^53 parameters: what must hold before
  // anything is computed from the sizes (head dims, the layer pattern, parameter counts).
  void validate_sizes() const;
};

}  // namespace moe::nn
