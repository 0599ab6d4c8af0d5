// `moe train`'s multi-latent attention and YaRN flags (train_flag_table.h): Megatron-LM's
// --multi-latent-attention with its shape (_add_mla_args in megatron/training/arguments.py) and
// the rotary options MLATransformerConfig reads, onto ModelConfig's mla, yarn and rotary_style.
//
// Megatron's rules, kept here:
//   - --multi-latent-attention on a grouped-query model starts from Megatron's MLA argument
//     defaults: --q-lora-rank None (0: a plain q projection), --kv-lora-rank 32, --qk-head-dim
//     128, --qk-pos-emb-head-dim 64, --v-head-dim 128; an MLA --model keeps its own shape.
//     MLA rotates DeepSeek's interleaved pairs (Megatron's apply_rotary_pos_emb with
//     multi_latent_attention), has no --kv-channels and one kv head per head.
//   - --rope-type (rope | yarn): MLA takes yarn by default; grouped-query attention takes rope,
//     or yarn with --position-embedding-type yarn. YaRN's values start from Megatron's defaults
//     (--rotary-scaling-factor 1, --mscale 1, --mscale-all-dim 0, original max positions 4096,
//     beta fast 32, beta slow 1); YaRN at factor 1 with those mscales is plain rope, so the model
//     keeps no YaRN block unless a YaRN flag is given or its --model has one.
//   - --yarn-original-max-position-embeddings, --yarn-beta-fast, --yarn-beta-slow are Megatron's
//     names (its MLATransformerConfig keeps 4096 / 32 / 1 for them; moecore applies the flags to
//     MLA and grouped-query YaRN alike).
#include "moe/core/error.h"
#include "moe/train/train_flag_table.h"

namespace moe::train::flags {
namespace {

// The model's YaRN block, made with Megatron's defaults when the model has none.
nn::YarnConfig& yarn(ParseState& s) {
  if (!s.run.model.yarn) s.run.model.yarn = nn::YarnConfig{};
  return *s.run.model.yarn;
}

}  // namespace

void add_mla_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(toggle("--multi-latent-attention",
                     "model.attention_type = mla (DeepSeek's multi-latent attention, interleaved "
                     "rotary pairs); a grouped-query --model starts from Megatron's MLA defaults",
                     [](S& s, V) {
                       nn::ModelConfig& m = s.run.model;
                       if (m.attention_type != nn::AttentionType::mla) {
                         m.attention_type = nn::AttentionType::mla;
                         m.mla = nn::MlaConfig{0, 32, 128, 64, 128};  // arguments.py's defaults
                       }
                       m.rotary_style = nn::RotaryStyle::interleaved;
                       m.kv_channels = 0;
                     }));
  t.push_back(
      value("--q-lora-rank", "R", "model.mla.q_lora_rank (0: no q compression)",
            [](S& s, V v) { s.run.model.mla.q_lora_rank = as_count("--q-lora-rank", v, 0); }));
  t.push_back(value("--kv-lora-rank", "R", "model.mla.kv_lora_rank", [](S& s, V v) {
    s.run.model.mla.kv_lora_rank = as_count("--kv-lora-rank", v, 1);
  }));
  t.push_back(
      value("--qk-head-dim", "D", "model.mla.qk_head_dim (the part of q / k without rotary)",
            [](S& s, V v) { s.run.model.mla.qk_head_dim = as_count("--qk-head-dim", v, 1); }));
  t.push_back(value("--qk-pos-emb-head-dim", "D",
                    "model.mla.qk_pos_emb_head_dim (the decoupled rotary part)", [](S& s, V v) {
                      s.run.model.mla.qk_pos_emb_head_dim = as_count("--qk-pos-emb-head-dim", v, 1);
                    }));
  t.push_back(value("--v-head-dim", "D", "model.mla.v_head_dim", [](S& s, V v) {
    s.run.model.mla.v_head_dim = as_count("--v-head-dim", v, 1);
  }));
  t.push_back(value("--rope-type", "TYPE",
                    "rope | yarn (default: yarn with --multi-latent-attention, else rope); rope "
                    "drops the --model's YaRN block",
                    [](S& s, V v) {
                      s.rope_type = one_of("--rope-type", v, {"rope", "yarn"});
                    }));
  t.push_back(value("--rotary-scaling-factor", "X", "model.yarn.factor (YaRN's context extension)",
                    [](S& s, V v) { yarn(s).factor = as_double("--rotary-scaling-factor", v); }));
  t.push_back(value("--mscale", "X", "model.yarn.mscale",
                    [](S& s, V v) { yarn(s).mscale = as_double("--mscale", v); }));
  t.push_back(value("--mscale-all-dim", "X", "model.yarn.mscale_all_dim",
                    [](S& s, V v) { yarn(s).mscale_all_dim = as_double("--mscale-all-dim", v); }));
  t.push_back(value("--yarn-original-max-position-embeddings", "N",
                    "model.yarn.original_max_position_embeddings", [](S& s, V v) {
                      yarn(s).original_max_position_embeddings =
                          as_count("--yarn-original-max-position-embeddings", v, 1);
                    }));
  t.push_back(value("--yarn-beta-fast", "X", "model.yarn.beta_fast",
                    [](S& s, V v) { yarn(s).beta_fast = as_double("--yarn-beta-fast", v); }));
  t.push_back(value("--yarn-beta-slow", "X", "model.yarn.beta_slow",
                    [](S& s, V v) { yarn(s).beta_slow = as_double("--yarn-beta-slow", v); }));
}

void finish_mla_flags(ParseState& s) {
  nn::ModelConfig& m = s.run.model;
  auto given = [&](const char* flag) { return s.values.count(flag) > 0; };
  const bool mla = m.attention_type == nn::AttentionType::mla;
  for (const char* flag : {"--q-lora-rank", "--kv-lora-rank", "--qk-head-dim",
                           "--qk-pos-emb-head-dim", "--v-head-dim"})
    MOE_CHECK(mla || !given(flag), flag,
              " is a multi-latent attention shape: give "
              "--multi-latent-attention (or an MLA --model)");
  MOE_CHECK(!(given("--multi-latent-attention") && given("--group-query-attention")),
            "--group-query-attention and --multi-latent-attention exclude each other (Megatron's "
            "rule)");
  if (mla) {
    MOE_CHECK(!given("--kv-channels"),
              "--kv-channels is grouped-query attention's head dim; "
              "--multi-latent-attention has --qk-head-dim, --qk-pos-emb-head-dim, --v-head-dim");
    MOE_CHECK(!given("--num-query-groups") || m.num_query_groups == m.num_attention_heads,
              "--num-query-groups ", m.num_query_groups,
              " with --multi-latent-attention: MLA has "
              "one kv head per head (--num-attention-heads ",
              m.num_attention_heads, ")");
    m.num_query_groups = m.num_attention_heads;
    m.kv_channels = 0;
  }
  const bool yarn_given = given("--rotary-scaling-factor") || given("--mscale") ||
                          given("--mscale-all-dim") ||
                          given("--yarn-original-max-position-embeddings") ||
                          given("--yarn-beta-fast") || given("--yarn-beta-slow");
  const std::string position =
      given("--position-embedding-type") ? s.values.at("--position-embedding-type") : "";
  std::string rope = s.rope_type;
  if (rope.empty()) rope = mla || position == "yarn" ? "yarn" : "rope";
  if (rope == "rope") {
    MOE_CHECK(!yarn_given,
              "YaRN's flags (--rotary-scaling-factor, --mscale, --mscale-all-dim, "
              "--yarn-*) need --rope-type yarn",
              mla ? "" : " or --position-embedding-type yarn");
    MOE_CHECK(!given("--rope-type") || position != "yarn",
              "--rope-type rope contradicts --position-embedding-type yarn");
    // An absent --rope-type keeps a grouped-query --model's YaRN (its own rotary).
    if (given("--rope-type")) m.yarn.reset();
  } else {
    MOE_CHECK(mla || position == "yarn",
              "--rope-type yarn with grouped-query attention needs --position-embedding-type yarn "
              "(Megatron: common attention only supports rope_type rope)");
    if (position == "yarn" && !m.yarn) m.yarn = nn::YarnConfig{};
  }
}

}  // namespace moe::train::flags
