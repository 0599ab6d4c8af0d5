// ModelConfig::validate: every shape and option of the decoder checked in one place, with errors
// that name Megatron's flags, so a bad zoo entry, Hugging Face config or command line is refused
// before any module is built. The MoE block's own rules live in MoEConfig::validate.
#include "moe/nn/model_config.h"

#include <algorithm>
#include <cmath>

#include "moe/core/error.h"
#include "moe/nn/config_limits.h"

namespace moe::nn {
namespace {

void validate_gqa(const ModelConfig& c) {
  MOE_CHECK(c.num_query_groups > 0, "--num-query-groups must be positive, got ", c.num_query_groups,
            " (set it to --num-attention-heads for multi-head attention)");
  MOE_CHECK(c.num_query_groups <= c.num_attention_heads &&
                c.num_attention_heads % c.num_query_groups == 0,
            "--num-attention-heads ", c.num_attention_heads,
            " is not divisible by --num-query-groups ", c.num_query_groups);
  MOE_CHECK(c.kv_channels >= 0, "--kv-channels must not be negative, got ", c.kv_channels);
  if (c.kv_channels == 0)
    MOE_CHECK(c.hidden_size % c.num_attention_heads == 0, "--hidden-size ", c.hidden_size,
              " is not divisible by --num-attention-heads ", c.num_attention_heads,
              "; give the head dim with --kv-channels");
  // Megatron: rotary_dim = int(kv_channels * rotary_percent), rotated in (even, odd) or half pairs.
  const int64_t head_dim = c.head_dim();
  const auto rotary_dim = static_cast<int64_t>(static_cast<double>(head_dim) * c.rotary_percent);
  MOE_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0, "--rotary-percent ", c.rotary_percent,
            " of head dim ", head_dim, " (--kv-channels) gives rotary dim ", rotary_dim,
            "; it must be a positive even number");
}

void validate_mla(const ModelConfig& c) {
  const MlaConfig& m = c.mla;
  MOE_CHECK(m.q_lora_rank >= 0, "--q-lora-rank must not be negative (0: no q compression), got ",
            m.q_lora_rank);
  MOE_CHECK(m.kv_lora_rank > 0, "--kv-lora-rank must be positive, got ", m.kv_lora_rank);
  MOE_CHECK(m.qk_head_dim > 0, "--qk-head-dim must be positive, got ", m.qk_head_dim);
  MOE_CHECK(m.qk_pos_emb_head_dim > 0 && m.qk_pos_emb_head_dim % 2 == 0,
            "--qk-pos-emb-head-dim must be a positive even number (it is rotated in pairs), got ",
            m.qk_pos_emb_head_dim);
  MOE_CHECK(m.v_head_dim > 0, "--v-head-dim must be positive, got ", m.v_head_dim);
  MOE_CHECK(c.rotary_percent == 1.0, "--rotary-percent ", c.rotary_percent,
            " is for grouped-query attention; --multi-latent-attention rotates all "
            "--qk-pos-emb-head-dim features");
  MOE_CHECK(!c.add_qkv_bias,
            "--add-qkv-bias applies to grouped-query attention, not to "
            "--multi-latent-attention");
}

void validate_yarn(const YarnConfig& y) {
  MOE_CHECK(y.factor >= 1.0, "YaRN --rotary-scaling-factor must be at least 1, got ", y.factor);
  MOE_CHECK(y.original_max_position_embeddings > 0,
            "YaRN --original-max-position-embeddings must be positive, got ",
            y.original_max_position_embeddings);
  // The ramp between the two correction dims needs beta_fast (rotations of the high
  // frequencies) above beta_slow (YaRN, Peng et al. 2023, eq. 18).
  MOE_CHECK(y.beta_slow > 0 && y.beta_fast > y.beta_slow, "YaRN --beta-fast ", y.beta_fast,
            " must exceed --beta-slow ", y.beta_slow, " > 0");
  MOE_CHECK(y.mscale >= 0 && y.mscale_all_dim >= 0,
            "YaRN --mscale and --mscale-all-dim must not be negative");
}

// An upper estimate of the parameter count, in double (no overflow whatever the sizes): every
// term of param_count.h, GQA's and MLA's attention both.
double estimated_parameters(const ModelConfig& c) {
  const auto d = [](int64_t v) { return static_cast<double>(v); };
  const double H = d(c.hidden_size), V = d(c.vocab_size), heads = d(c.num_attention_heads);
  const double D = d(c.kv_channels > 0 ? c.kv_channels : c.hidden_size / c.num_attention_heads);
  const double groups = d(c.num_query_groups);
  const MlaConfig& m = c.mla;
  const double qk = d(m.qk_head_dim) + d(m.qk_pos_emb_head_dim);
  const double gqa = 2 * H * heads * D + 2 * H * groups * D + heads * D + 2 * groups * D + 2 * D;
  const double mla = H * d(m.q_lora_rank) + d(m.q_lora_rank) * (heads * qk + 1) + H * heads * qk +
                     H * (d(m.kv_lora_rank) + d(m.qk_pos_emb_head_dim)) + d(m.kv_lora_rank) +
                     d(m.kv_lora_rank) * heads * (d(m.qk_head_dim) + d(m.v_head_dim)) +
                     heads * d(m.v_head_dim) * H;
  const MoEConfig& e = c.moe;
  const double mlp = 3 * H * d(c.ffn_hidden_size) + d(e.num_experts) * H +
                     3 * H * d(e.moe_ffn_hidden_size) * d(e.num_experts) +
                     3 * H * d(e.moe_shared_expert_intermediate_size) + H;
  const double layer = gqa + mla + mlp + 5 * H + 2 * H * H;  // + norms, MTP's eh_proj
  const double layers = d(c.num_layers) + d(c.mtp_num_layers);
  return (2 + 2 * d(c.mtp_num_layers)) * V * H + layers * layer + H;
}

}  // namespace

void ModelConfig::validate_sizes() const {
  check_size("--num-layers", num_layers, 1, kLayerLimit);
  check_size("--hidden-size", hidden_size, 1, kWidthLimit);
  check_size("--ffn-hidden-size", ffn_hidden_size, 0, kWidthLimit);
  check_size("--num-attention-heads", num_attention_heads, 1, kCountLimit);
  check_size("--num-query-groups", num_query_groups, 0, kCountLimit);
  check_size("--kv-channels", kv_channels, 0, kWidthLimit);
  check_size("--vocab-size", vocab_size, 1, kVocabLimit);
  check_size("--max-position-embeddings", max_position_embeddings, 1, kPositionLimit);
  check_size("--q-lora-rank", mla.q_lora_rank, 0, kWidthLimit);
  check_size("--kv-lora-rank", mla.kv_lora_rank, 0, kWidthLimit);
  check_size("--qk-head-dim", mla.qk_head_dim, 0, kWidthLimit);
  check_size("--qk-pos-emb-head-dim", mla.qk_pos_emb_head_dim, 0, kWidthLimit);
  check_size("--v-head-dim", mla.v_head_dim, 0, kWidthLimit);
  if (yarn)
    check_size("YaRN --original-max-position-embeddings", yarn->original_max_position_embeddings, 1,
               kPositionLimit);
  check_size("--mtp-num-layers", mtp_num_layers, 0, kLayerLimit);
  moe.validate_sizes();
  const double parameters = estimated_parameters(*this);
  MOE_CHECK(parameters <= kMaxParameters, "the model would have about ", parameters,
            " parameters, more than 2^53 (", kMaxParameters,
            "; a sanity bound: 36 PB in fp32); check --num-layers, --hidden-size, "
            "--ffn-hidden-size, --vocab-size, --num-experts and --moe-ffn-hidden-size");
}

void ModelConfig::validate() const {
  // The sizes first, before anything is computed from them.
  validate_sizes();
  MOE_CHECK(std::isfinite(norm_epsilon) && norm_epsilon > 0,
            "--norm-epsilon must be positive, got ", norm_epsilon);
  MOE_CHECK(std::isfinite(init_method_std) && init_method_std > 0,
            "--init-method-std must be positive, got ", init_method_std);
  MOE_CHECK(std::isfinite(attention_dropout) && attention_dropout >= 0 && attention_dropout <= 1,
            "--attention-dropout must be in [0, 1], got ", attention_dropout);
  MOE_CHECK(std::isfinite(hidden_dropout) && hidden_dropout >= 0 && hidden_dropout <= 1,
            "--hidden-dropout must be in [0, 1], got ", hidden_dropout);
  MOE_CHECK(std::isfinite(rotary_base) && rotary_base > 0, "--rotary-base must be positive, got ",
            rotary_base);
  MOE_CHECK(rotary_percent > 0 && rotary_percent <= 1, "--rotary-percent must be in (0, 1], got ",
            rotary_percent);

  if (attention_type == AttentionType::gqa)
    validate_gqa(*this);
  else
    validate_mla(*this);
  if (yarn) validate_yarn(*yarn);

  // Layer placement.
  MOE_CHECK(static_cast<int64_t>(moe_layer_pattern.size()) == num_layers, "--moe-layer-freq gives ",
            moe_layer_pattern.size(), " layers but --num-layers is ", num_layers,
            " (the pattern needs one 0/1 entry per layer)");
  int64_t moe_layers = 0;
  for (size_t i = 0; i < moe_layer_pattern.size(); ++i) {
    MOE_CHECK(moe_layer_pattern[i] == 0 || moe_layer_pattern[i] == 1, "--moe-layer-freq entry ", i,
              " is ", moe_layer_pattern[i], "; entries are 0 (dense) or 1 (MoE)");
    moe_layers += moe_layer_pattern[i];
  }
  if (moe_layers < num_layers)
    MOE_CHECK(ffn_hidden_size > 0, "--ffn-hidden-size must be positive: ", num_layers - moe_layers,
              " layers are dense (--moe-layer-freq)");

  if (moe_layers > 0) {
    MOE_CHECK(moe.hidden_size == hidden_size, "moe.hidden_size ", moe.hidden_size,
              " must mirror --hidden-size ", hidden_size);
    moe.validate();
  }

  MOE_CHECK(mtp_loss_scaling_factor >= 0, "--mtp-loss-scaling-factor must not be negative, got ",
            mtp_loss_scaling_factor);
}

}  // namespace moe::nn
