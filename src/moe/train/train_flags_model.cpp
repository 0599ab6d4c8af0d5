// `moe train`'s model flags: --model (the preset) and its overrides, and the MoE block
// (train_flag_table.h).
#include <filesystem>

#include "moe/checkpoint/model_io.h"
#include "moe/core/error.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"
#include "moe/train/train_flag_table.h"

namespace moe::train::flags {

nn::ModelConfig preset_model(const std::string& preset) {
  namespace fs = std::filesystem;
  if (preset == "default") return default_train_model();
  // A model folder (Hugging Face config.json, or moecore's model_config.json), or a Hugging Face
  // config.json file: the folder's model (checkpoint/model_io.h).
  if (fs::is_directory(preset))
    return checkpoint::read_model_config(preset, checkpoint::detect_format(preset));
  if (fs::path(preset).filename() == "config.json") {
    const std::string folder = fs::path(preset).parent_path().string();
    return checkpoint::read_model_config(folder.empty() ? "." : folder,
                                         checkpoint::CheckpointFormat::hf);
  }
  const bool is_file = preset.size() > 5 && preset.substr(preset.size() - 5) == ".json";
  if (is_file) return nn::load_model_config(preset);
  return nn::model_zoo(preset);  // an unknown name lists the zoo
}

// Model: the preset first, then its overrides.
void add_model_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(value("--model", "NAME",
                    "the model: 'default' (the built-in tiny byte-level MoE), a zoo name (moe "
                    "info lists them), a model_config.json file, or a model folder (Hugging Face "
                    "config.json, or moecore's); later flags override it. Absent with --load of a "
                    "model folder: that folder's model",
                    [](S& s, V v) {
                      s.run.model_preset = v;
                      s.run.model = preset_model(v);
                      s.preset_head_dim_derived = head_dim_is_derived(s.run.model);
                    }));
  t.push_back(value("--num-layers", "N",
                    "model.num_layers (the MoE layer pattern is cut or "
                    "extended with its last entry)",
                    [](S& s, V v) { s.run.model.num_layers = as_count("--num-layers", v, 1); }));
  t.push_back(value("--hidden-size", "H", "model.hidden_size",
                    [](S& s, V v) { s.run.model.hidden_size = as_count("--hidden-size", v, 1); }));
  t.push_back(
      value("--ffn-hidden-size", "F", "model.ffn_hidden_size (dense MLP layers)",
            [](S& s, V v) { s.run.model.ffn_hidden_size = as_count("--ffn-hidden-size", v, 1); }));
  t.push_back(value("--num-attention-heads", "N", "model.num_attention_heads", [](S& s, V v) {
    s.run.model.num_attention_heads = as_count("--num-attention-heads", v, 1);
  }));
  t.push_back(value("--num-query-groups", "N", "model.num_query_groups (kv heads)", [](S& s, V v) {
    s.run.model.num_query_groups = as_count("--num-query-groups", v, 1);
  }));
  t.push_back(toggle("--group-query-attention",
                     "accepted: grouped-query attention is on whenever --num-query-groups < "
                     "--num-attention-heads",
                     [](S&, V) {}));
  t.push_back(value("--kv-channels", "D", "model.kv_channels (head dim; 0: hidden / heads)",
                    [](S& s, V v) { s.run.model.kv_channels = as_count("--kv-channels", v, 0); }));
  t.push_back(
      value("--max-position-embeddings", "N", "model.max_position_embeddings", [](S& s, V v) {
        s.run.model.max_position_embeddings = as_count("--max-position-embeddings", v, 1);
      }));
  t.push_back(value("--vocab-size", "V",
                    "model.vocab_size (the built-in corpus needs >= 257: bytes + end of document)",
                    [](S& s, V v) { s.run.model.vocab_size = as_count("--vocab-size", v, 1); }));
  t.push_back(value("--norm-epsilon", "EPS", "model.norm_epsilon",
                    [](S& s, V v) { s.run.model.norm_epsilon = as_double("--norm-epsilon", v); }));
  t.push_back(value("--rotary-base", "THETA", "model.rotary_base",
                    [](S& s, V v) { s.run.model.rotary_base = as_double("--rotary-base", v); }));
  t.push_back(
      value("--init-method-std", "STD", "model.init_method_std (and the MoE block's)",
            [](S& s, V v) { s.run.model.init_method_std = as_double("--init-method-std", v); }));
  t.push_back(value(
      "--attention-dropout", "P",
      "model.attention_dropout: dropout on the attention probabilities in training "
      "(default: Megatron's 0.1, over the --model preset's or --load folder's own; the "
      "default run without flags: 0)",
      [](S& s, V v) { s.run.model.attention_dropout = as_double("--attention-dropout", v); }));
  t.push_back(
      value("--hidden-dropout", "P",
            "model.hidden_dropout: dropout on the embedding and on the attention / MLP "
            "outputs before each residual add, in training (default: Megatron's 0.1, over "
            "the --model preset's or --load folder's own; the default run without flags: 0)",
            [](S& s, V v) { s.run.model.hidden_dropout = as_double("--hidden-dropout", v); }));
  t.push_back(toggle("--qk-layernorm", "model.qk_layernorm = true",
                     [](S& s, V) { s.run.model.qk_layernorm = true; }));
  t.push_back(toggle("--add-qkv-bias", "model.add_qkv_bias = true",
                     [](S& s, V) { s.run.model.add_qkv_bias = true; }));
  t.push_back(toggle("--deterministic-mode",
                     "bitwise-reproducible gradients (cuDNN attention's deterministic backward)",
                     [](S& s, V) { s.run.model.deterministic_mode = true; }));
  t.push_back(toggle("--untie-embeddings-and-output-weights",
                     "model.untie_embeddings_and_output_weights = true",
                     [](S& s, V) { s.run.model.untie_embeddings_and_output_weights = true; }));
  t.push_back(toggle("--swiglu", "accepted: every MLP and expert is SwiGLU", [](S&, V) {}));
  t.push_back(toggle("--disable-bias-linear",
                     "accepted: no linear layer has a bias (besides "
                     "--add-qkv-bias)",
                     [](S&, V) {}));
  t.push_back(value("--normalization", "RMSNorm", "accepted: RMSNorm only",
                    [](S&, V v) { one_of("--normalization", v, {"RMSNorm"}); }));
  t.push_back(value("--position-embedding-type", "rope|yarn",
                    "rope, or yarn (YaRN-scaled rope: --rotary-scaling-factor, ...)", [](S&, V v) {
                      one_of("--position-embedding-type", v, {"rope", "yarn"});
                    }));
  t.push_back(value("--mtp-num-layers", "D", "model.mtp_num_layers", [](S& s, V v) {
    s.run.model.mtp_num_layers = as_count("--mtp-num-layers", v, 0);
  }));
  t.push_back(
      value("--mtp-loss-scaling-factor", "LAMBDA", "model.mtp_loss_scaling_factor", [](S& s, V v) {
        s.run.model.mtp_loss_scaling_factor = as_double("--mtp-loss-scaling-factor", v);
      }));
}

// MoE block (model.moe).
void add_moe_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(value("--num-experts", "E", "moe.num_experts", [](S& s, V v) {
    s.run.model.moe.num_experts = as_count("--num-experts", v, 1);
  }));
  t.push_back(value("--moe-ffn-hidden-size", "F", "moe.moe_ffn_hidden_size", [](S& s, V v) {
    s.run.model.moe.moe_ffn_hidden_size = as_count("--moe-ffn-hidden-size", v, 1);
  }));
  t.push_back(value("--moe-shared-expert-intermediate-size", "F",
                    "moe.moe_shared_expert_intermediate_size (0: none)", [](S& s, V v) {
                      s.run.model.moe.moe_shared_expert_intermediate_size =
                          as_count("--moe-shared-expert-intermediate-size", v, 0);
                    }));
  t.push_back(toggle("--moe-shared-expert-overlap",
                     "moe.moe_shared_expert_overlap = true: the shared expert computes while the "
                     "alltoall dispatcher's exchanges are in flight (same result)",
                     [](S& s, V) { s.run.model.moe.moe_shared_expert_overlap = true; }));
  t.push_back(toggle("--moe-shared-expert-gate",
                     "moe.moe_shared_expert_gate = true: a sigmoid gate on the shared expert's "
                     "output (Qwen2-MoE)",
                     [](S& s, V) { s.run.model.moe.moe_shared_expert_gate = true; }));
  t.push_back(toggle("--moe-router-padding-for-fp8",
                     "moe.moe_router_padding_for_fp8 = true: each expert's tokens padded to a "
                     "multiple of 16 (the layout fp8 GEMMs need)",
                     [](S& s, V) { s.run.model.moe.moe_router_padding_for_fp8 = true; }));
  t.push_back(value("--moe-layer-freq", "FREQ",
                    "the MoE layer pattern: N (layers 0, N, 2N, ...), [0,1,1] or ([0]*1+[1]*3)",
                    [](S& s, V v) { s.moe_layer_freq = v; }));
  t.push_back(value("--moe-router-topk", "K", "moe.moe_router_topk", [](S& s, V v) {
    s.run.model.moe.moe_router_topk = as_count("--moe-router-topk", v, 1);
  }));
  t.push_back(value("--moe-router-load-balancing-type", "TYPE",
                    "aux_loss | seq_aux_loss | global_aux_loss | sinkhorn | none", [](S& s, V v) {
                      s.run.model.moe.moe_router_load_balancing_type =
                          nn::parse_load_balancing_type(one_of(
                              "--moe-router-load-balancing-type", v,
                              {"aux_loss", "seq_aux_loss", "global_aux_loss", "sinkhorn", "none"}));
                    }));
  t.push_back(value("--moe-router-score-function", "FN", "softmax | sigmoid", [](S& s, V v) {
    s.run.model.moe.moe_router_score_function =
        nn::parse_score_function(one_of("--moe-router-score-function", v, {"softmax", "sigmoid"}));
  }));
  t.push_back(toggle("--moe-router-pre-softmax", "moe.moe_router_pre_softmax = true",
                     [](S& s, V) { s.run.model.moe.moe_router_pre_softmax = true; }));
  t.push_back(value("--moe-router-num-groups", "G", "moe.moe_router_num_groups", [](S& s, V v) {
    s.run.model.moe.moe_router_num_groups = as_count("--moe-router-num-groups", v, 0);
  }));
  t.push_back(value("--moe-router-group-topk", "G", "moe.moe_router_group_topk", [](S& s, V v) {
    s.run.model.moe.moe_router_group_topk = as_count("--moe-router-group-topk", v, 0);
  }));
  t.push_back(value("--moe-router-topk-scaling-factor", "X", "moe.moe_router_topk_scaling_factor",
                    [](S& s, V v) {
                      s.run.model.moe.moe_router_topk_scaling_factor =
                          as_double("--moe-router-topk-scaling-factor", v);
                    }));
  t.push_back(toggle("--moe-router-enable-expert-bias",
                     "moe.moe_router_enable_expert_bias = true (aux-loss-free balancing)",
                     [](S& s, V) { s.run.model.moe.moe_router_enable_expert_bias = true; }));
  t.push_back(
      value("--moe-router-bias-update-rate", "U", "moe.moe_router_bias_update_rate", [](S& s, V v) {
        s.run.model.moe.moe_router_bias_update_rate = as_double("--moe-router-bias-update-rate", v);
      }));
  t.push_back(value("--moe-router-dtype", "DTYPE", "fp32 | fp64", [](S& s, V v) {
    s.run.model.moe.moe_router_dtype =
        nn::parse_router_dtype(one_of("--moe-router-dtype", v, {"fp32", "fp64"}));
  }));
  t.push_back(toggle("--moe-router-force-load-balancing",
                     "moe.moe_router_force_load_balancing = true",
                     [](S& s, V) { s.run.model.moe.moe_router_force_load_balancing = true; }));
  t.push_back(value("--moe-aux-loss-coeff", "C", "moe.moe_aux_loss_coeff", [](S& s, V v) {
    s.run.model.moe.moe_aux_loss_coeff = as_double("--moe-aux-loss-coeff", v);
  }));
  t.push_back(value("--moe-z-loss-coeff", "C", "moe.moe_z_loss_coeff", [](S& s, V v) {
    s.run.model.moe.moe_z_loss_coeff = as_double("--moe-z-loss-coeff", v);
  }));
  t.push_back(value("--moe-input-jitter-eps", "EPS", "moe.moe_input_jitter_eps", [](S& s, V v) {
    s.run.model.moe.moe_input_jitter_eps = as_double("--moe-input-jitter-eps", v);
  }));
  t.push_back(value("--moe-token-dispatcher-type", "TYPE", "allgather | alltoall", [](S& s, V v) {
    s.run.model.moe.moe_token_dispatcher_type = nn::parse_dispatcher_type(
        one_of("--moe-token-dispatcher-type", v, {"allgather", "alltoall"}));
  }));
  t.push_back(
      value("--moe-expert-capacity-factor", "X", "moe.moe_expert_capacity_factor", [](S& s, V v) {
        s.run.model.moe.moe_expert_capacity_factor = as_double("--moe-expert-capacity-factor", v);
      }));
  t.push_back(value("--moe-expert-rank-capacity-factor", "X",
                    "moe.moe_expert_rank_capacity_factor (alltoall: fixed exchange slots, no "
                    "host sync)",
                    [](S& s, V v) {
                      s.run.model.moe.moe_expert_rank_capacity_factor =
                          as_double("--moe-expert-rank-capacity-factor", v);
                    }));
  t.push_back(toggle("--moe-pad-expert-input-to-capacity",
                     "moe.moe_pad_expert_input_to_capacity = true",
                     [](S& s, V) { s.run.model.moe.moe_pad_expert_input_to_capacity = true; }));
  t.push_back(value("--moe-token-drop-policy", "POLICY", "probs | position", [](S& s, V v) {
    s.run.model.moe.moe_token_drop_policy =
        nn::parse_drop_policy(one_of("--moe-token-drop-policy", v, {"probs", "position"}));
  }));
  t.push_back(toggle("--moe-grouped-gemm", "moe.moe_grouped_gemm = true (moecore's default)",
                     [](S& s, V) { s.run.model.moe.moe_grouped_gemm = true; }));
  t.push_back(value("--moe-grouped-gemm-backend", "NAME",
                    "moe.moe_grouped_gemm_backend: automatic | cutlass | per_expert_lt | ... "
                    "(moecore's; ops/grouped_gemm.h)",
                    [](S& s, V v) {
                      s.run.model.moe.moe_grouped_gemm_backend =
                          ops::parse_grouped_gemm_backend(std::string(v));
                    }));
}

}  // namespace moe::train::flags
