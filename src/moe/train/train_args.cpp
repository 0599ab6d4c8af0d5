#include "moe/train/train_args.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "moe/checkpoint/upcycle.h"
#include "moe/core/error.h"
#include "moe/data/byte_tokenizer.h"
#include "moe/data/dataset_split.h"
#include "moe/data/gpt_dataset_builder.h"
#include "moe/data/tokenizer.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"
#include "moe/nn/param_count.h"

namespace moe::train {
namespace {

// What the flags write while they are applied; finish() turns the pending parts (those that
// depend on several flags) into the final config.
struct ParseState {
  TrainRunConfig run;
  std::string moe_layer_freq;         // --moe-layer-freq, applied once num_layers is final
  double warmup_fraction = -1.0;      // --lr-warmup-fraction (< 0: not given)
  bool start_wd_given = false, end_wd_given = false;
  bool precision_aware = false;       // --use-precision-aware-optimizer
  std::string exp_avg_dtype, exp_avg_sq_dtype;
  bool nan_check = false;             // --check-for-nan-in-loss-and-grad
  std::string nan_action;             // --nan-action
  // The preset's head dim is its hidden / heads (kv_channels 0 or equal to it): it follows
  // --hidden-size / --num-attention-heads as Megatron's derived kv_channels does (finish()).
  bool preset_head_dim_derived = true;
  std::map<std::string, std::string> values;  // every given flag -> its text
};

// Megatron's kv_channels: a model whose head dim is hidden / heads has none of its own.
bool head_dim_is_derived(const nn::ModelConfig& m) {
  return m.attention_type == nn::AttentionType::gqa &&
         (m.kv_channels == 0 || m.kv_channels * m.num_attention_heads == m.hidden_size);
}

using Apply = std::function<void(ParseState&, const std::string& value)>;

struct Entry {
  TrainFlag flag;
  Apply apply;  // unset when refused
};

// ---- value parsers: errors name the flag ----------------------------------------------------

int64_t as_int(const std::string& flag, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  MOE_CHECK(!v.empty() && end && *end == '\0' && errno == 0, flag, ": expected an integer, got '",
            v, "'");
  return x;
}

int64_t as_count(const std::string& flag, const std::string& v, int64_t min) {
  const int64_t x = as_int(flag, v);
  MOE_CHECK(x >= min, flag, " must be >= ", min, ", got ", x);
  return x;
}

// Every float flag goes through here: inf and nan (which strtod reads) are refused at parse
// time, naming the flag, rather than reaching the optimizer or the schedule.
double as_double(const std::string& flag, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  MOE_CHECK(!v.empty() && end && *end == '\0', flag, ": expected a number, got '", v, "'");
  MOE_CHECK(errno == 0 && std::isfinite(x), flag, ": expected a finite number, got '", v, "'");
  return x;
}

bool as_bool(const std::string& flag, const std::string& v) {
  std::string t = v;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "true" || t == "yes" || t == "on" || t == "1") return true;
  if (t == "false" || t == "no" || t == "off" || t == "0") return false;
  MOE_FAIL(flag, ": expected true or false, got '", v, "'");
}

// A list value: "a b c" (the command line's words after the flag) or "[a,b,c]" (YAML).
std::vector<std::string> split_values(const std::string& v) {
  std::string text = v;
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']')
    text = text.substr(1, text.size() - 2);
  std::replace(text.begin(), text.end(), ',', ' ');
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

std::string one_of(const std::string& flag, const std::string& v,
                   std::initializer_list<const char*> choices) {
  std::string list;
  for (const char* c : choices) {
    if (v == c) return v;
    list += (list.empty() ? "" : ", ") + std::string(c);
  }
  MOE_FAIL(flag, ": '", v, "' is not one of ", list);
}

// ---- the table -------------------------------------------------------------------------------

Entry value(std::string name, std::string value_name, std::string help, Apply apply) {
  return Entry{TrainFlag{std::move(name), std::move(value_name), std::move(help), ""},
               std::move(apply)};
}
Entry toggle(std::string name, std::string help, Apply apply) {
  return Entry{TrainFlag{std::move(name), "", std::move(help), ""}, std::move(apply)};
}
Entry refused(std::string name, std::string value_name, std::string why) {
  return Entry{TrainFlag{std::move(name), std::move(value_name), "", std::move(why)}, {}};
}
// A parallel size: this build trains on one device.
Entry single_device(std::string name) {
  const std::string flag = name;
  return value(std::move(name), "1", "only 1: moe train runs on one device in this build",
               [flag](ParseState&, const std::string& v) {
                 MOE_CHECK(as_int(flag, v) == 1, flag, " ", v,
                           " is not supported by this build yet: moe train runs on one device "
                           "(1 only)");
               });
}

nn::ModelConfig preset_model(const std::string& preset) {
  if (preset == "default") return default_train_model();
  const bool is_file = preset.size() > 5 && preset.substr(preset.size() - 5) == ".json";
  if (is_file) return nn::load_model_config(preset);
  return nn::model_zoo(preset);  // an unknown name lists the zoo
}

std::vector<Entry> build_table() {
  using S = ParseState;
  using V = const std::string&;
  std::vector<Entry> t;
  // Model: the preset first, then its overrides.
  t.push_back(value("--model", "NAME",
                    "the model: 'default' (the built-in tiny byte-level MoE), a zoo name (moe "
                    "info lists them) or a model_config.json file; later flags override it",
                    [](S& s, V v) {
                      s.run.model_preset = v;
                      s.run.model = preset_model(v);
                      s.preset_head_dim_derived = head_dim_is_derived(s.run.model);
                    }));
  t.push_back(value("--num-layers", "N", "model.num_layers (the MoE layer pattern is cut or "
                                         "extended with its last entry)",
                    [](S& s, V v) { s.run.model.num_layers = as_count("--num-layers", v, 1); }));
  t.push_back(value("--hidden-size", "H", "model.hidden_size",
                    [](S& s, V v) { s.run.model.hidden_size = as_count("--hidden-size", v, 1); }));
  t.push_back(value("--ffn-hidden-size", "F", "model.ffn_hidden_size (dense MLP layers)",
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
  t.push_back(value("--max-position-embeddings", "N", "model.max_position_embeddings",
                    [](S& s, V v) {
                      s.run.model.max_position_embeddings = as_count("--max-position-embeddings", v, 1);
                    }));
  t.push_back(value("--vocab-size", "V",
                    "model.vocab_size (the built-in corpus needs >= 257: bytes + end of document)",
                    [](S& s, V v) { s.run.model.vocab_size = as_count("--vocab-size", v, 1); }));
  t.push_back(value("--norm-epsilon", "EPS", "model.norm_epsilon",
                    [](S& s, V v) { s.run.model.norm_epsilon = as_double("--norm-epsilon", v); }));
  t.push_back(value("--rotary-base", "THETA", "model.rotary_base",
                    [](S& s, V v) { s.run.model.rotary_base = as_double("--rotary-base", v); }));
  t.push_back(value("--init-method-std", "STD", "model.init_method_std (and the MoE block's)",
                    [](S& s, V v) { s.run.model.init_method_std = as_double("--init-method-std", v); }));
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
  t.push_back(toggle("--disable-bias-linear", "accepted: no linear layer has a bias (besides "
                                              "--add-qkv-bias)",
                     [](S&, V) {}));
  t.push_back(value("--normalization", "RMSNorm", "accepted: RMSNorm only", [](S&, V v) {
    one_of("--normalization", v, {"RMSNorm"});
  }));
  t.push_back(value("--position-embedding-type", "rope", "accepted: rope only", [](S&, V v) {
    one_of("--position-embedding-type", v, {"rope"});
  }));
  t.push_back(value("--mtp-num-layers", "D", "model.mtp_num_layers",
                    [](S& s, V v) { s.run.model.mtp_num_layers = as_count("--mtp-num-layers", v, 0); }));
  t.push_back(value("--mtp-loss-scaling-factor", "LAMBDA", "model.mtp_loss_scaling_factor",
                    [](S& s, V v) {
                      s.run.model.mtp_loss_scaling_factor = as_double("--mtp-loss-scaling-factor", v);
                    }));

  // MoE block (model.moe).
  t.push_back(value("--num-experts", "E", "moe.num_experts",
                    [](S& s, V v) { s.run.model.moe.num_experts = as_count("--num-experts", v, 1); }));
  t.push_back(value("--moe-ffn-hidden-size", "F", "moe.moe_ffn_hidden_size", [](S& s, V v) {
    s.run.model.moe.moe_ffn_hidden_size = as_count("--moe-ffn-hidden-size", v, 1);
  }));
  t.push_back(value("--moe-shared-expert-intermediate-size", "F",
                    "moe.moe_shared_expert_intermediate_size (0: none)", [](S& s, V v) {
                      s.run.model.moe.moe_shared_expert_intermediate_size =
                          as_count("--moe-shared-expert-intermediate-size", v, 0);
                    }));
  t.push_back(value("--moe-layer-freq", "FREQ",
                    "the MoE layer pattern: N (layers 0, N, 2N, ...), [0,1,1] or ([0]*1+[1]*3)",
                    [](S& s, V v) { s.moe_layer_freq = v; }));
  t.push_back(value("--moe-router-topk", "K", "moe.moe_router_topk", [](S& s, V v) {
    s.run.model.moe.moe_router_topk = as_count("--moe-router-topk", v, 1);
  }));
  t.push_back(value("--moe-router-load-balancing-type", "TYPE",
                    "aux_loss | seq_aux_loss | global_aux_loss | sinkhorn | none", [](S& s, V v) {
                      s.run.model.moe.moe_router_load_balancing_type =
                          one_of("--moe-router-load-balancing-type", v,
                                 {"aux_loss", "seq_aux_loss", "global_aux_loss", "sinkhorn", "none"});
                    }));
  t.push_back(value("--moe-router-score-function", "FN", "softmax | sigmoid", [](S& s, V v) {
    s.run.model.moe.moe_router_score_function =
        one_of("--moe-router-score-function", v, {"softmax", "sigmoid"});
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
  t.push_back(value("--moe-router-bias-update-rate", "U", "moe.moe_router_bias_update_rate",
                    [](S& s, V v) {
                      s.run.model.moe.moe_router_bias_update_rate =
                          as_double("--moe-router-bias-update-rate", v);
                    }));
  t.push_back(value("--moe-router-dtype", "DTYPE", "fp32 | fp64", [](S& s, V v) {
    s.run.model.moe.moe_router_dtype = one_of("--moe-router-dtype", v, {"fp32", "fp64"});
  }));
  t.push_back(toggle("--moe-router-force-load-balancing", "moe.moe_router_force_load_balancing = true",
                     [](S& s, V) { s.run.model.moe.moe_router_force_load_balancing = true; }));
  t.push_back(value("--moe-aux-loss-coeff", "C", "moe.moe_aux_loss_coeff", [](S& s, V v) {
    s.run.model.moe.moe_aux_loss_coeff = as_double("--moe-aux-loss-coeff", v);
  }));
  t.push_back(value("--moe-z-loss-coeff", "C", "moe.moe_z_loss_coeff",
                    [](S& s, V v) { s.run.model.moe.moe_z_loss_coeff = as_double("--moe-z-loss-coeff", v); }));
  t.push_back(value("--moe-input-jitter-eps", "EPS", "moe.moe_input_jitter_eps", [](S& s, V v) {
    s.run.model.moe.moe_input_jitter_eps = as_double("--moe-input-jitter-eps", v);
  }));
  t.push_back(value("--moe-token-dispatcher-type", "TYPE", "allgather | alltoall", [](S& s, V v) {
    s.run.model.moe.moe_token_dispatcher_type =
        one_of("--moe-token-dispatcher-type", v, {"allgather", "alltoall"});
  }));
  t.push_back(value("--moe-expert-capacity-factor", "X", "moe.moe_expert_capacity_factor",
                    [](S& s, V v) {
                      s.run.model.moe.moe_expert_capacity_factor =
                          as_double("--moe-expert-capacity-factor", v);
                    }));
  t.push_back(toggle("--moe-pad-expert-input-to-capacity",
                     "moe.moe_pad_expert_input_to_capacity = true",
                     [](S& s, V) { s.run.model.moe.moe_pad_expert_input_to_capacity = true; }));
  t.push_back(value("--moe-token-drop-policy", "POLICY", "probs | position", [](S& s, V v) {
    s.run.model.moe.moe_token_drop_policy = one_of("--moe-token-drop-policy", v, {"probs", "position"});
  }));
  t.push_back(toggle("--moe-grouped-gemm", "moe.moe_grouped_gemm = true (moecore's default)",
                     [](S& s, V) { s.run.model.moe.moe_grouped_gemm = true; }));
  t.push_back(single_device("--tensor-model-parallel-size"));
  t.push_back(single_device("--pipeline-model-parallel-size"));
  t.push_back(single_device("--context-parallel-size"));
  t.push_back(single_device("--expert-model-parallel-size"));
  t.push_back(single_device("--expert-tensor-parallel-size"));
  t.push_back(value("--distributed-backend", "BACKEND",
                    "nccl | mpi | local: the backend several ranks meet on (default: local for "
                    "one process, nccl with GPUs, else mpi; docs/distributed.md)",
                    [](S& s, V v) {
                      s.run.distributed.backend =
                          one_of("--distributed-backend", v, {"nccl", "mpi", "local"});
                    }));
  t.push_back(value("--distributed-timeout-minutes", "MIN",
                    "rendezvous and collective timeout in minutes (default 10; fractions allowed)",
                    [](S& s, V v) {
                      const double minutes = as_double("--distributed-timeout-minutes", v);
                      MOE_CHECK(minutes > 0, "--distributed-timeout-minutes must be positive, got ",
                                v);
                      s.run.distributed.timeout_minutes = minutes;
                    }));

  // Batches and length.
  t.push_back(value("--seq-length", "S", "train.seq_length (<= --max-position-embeddings)",
                    [](S& s, V v) { s.run.train.seq_length = as_count("--seq-length", v, 1); }));
  t.push_back(value("--micro-batch-size", "B", "train.micro_batch_size", [](S& s, V v) {
    s.run.train.micro_batch_size = as_count("--micro-batch-size", v, 1);
  }));
  t.push_back(value("--global-batch-size", "B",
                    "train.global_batch_size (a multiple of --micro-batch-size; default: "
                    "--micro-batch-size when that is given)",
                    [](S& s, V v) {
                      s.run.train.global_batch_size = as_count("--global-batch-size", v, 1);
                    }));
  t.push_back(value("--train-iters", "N", "train.train_iters",
                    [](S& s, V v) { s.run.train.train_iters = as_count("--train-iters", v, 0); }));
  t.push_back(refused("--train-samples", "N",
                      "not supported by this build yet: give --train-iters (iterations of "
                      "--global-batch-size samples)"));
  t.push_back(value("--seed", "SEED", "train.seed: the model's initialisation and the data order",
                    [](S& s, V v) { s.run.train.seed = static_cast<uint64_t>(as_count("--seed", v, 0)); }));

  // Learning rate and weight decay (lr_schedule.h).
  t.push_back(value("--lr", "LR", "schedule.lr (the peak)",
                    [](S& s, V v) { s.run.train.schedule.lr = as_double("--lr", v); }));
  t.push_back(value("--min-lr", "LR", "schedule.min_lr (default: --lr / 10)",
                    [](S& s, V v) { s.run.train.schedule.min_lr = as_double("--min-lr", v); }));
  t.push_back(value("--lr-decay-style", "STYLE",
                    "constant | linear | cosine | inverse-square-root | WSD", [](S& s, V v) {
                      s.run.train.schedule.decay_style =
                          one_of("--lr-decay-style", v,
                                 {"constant", "linear", "cosine", "inverse-square-root", "WSD"});
                    }));
  t.push_back(value("--lr-decay-iters", "N", "schedule.decay_iters (default: --train-iters)",
                    [](S& s, V v) {
                      s.run.train.schedule.decay_iters = as_count("--lr-decay-iters", v, 0);
                    }));
  t.push_back(value("--lr-warmup-iters", "N", "schedule.warmup_iters (default: --train-iters / 10)", [](S& s, V v) {
    s.run.train.schedule.warmup_iters = as_count("--lr-warmup-iters", v, 0);
  }));
  t.push_back(value("--lr-warmup-fraction", "X",
                    "schedule.warmup_iters = X * decay iters (not with --lr-warmup-iters)",
                    [](S& s, V v) {
                      s.warmup_fraction = as_double("--lr-warmup-fraction", v);
                      MOE_CHECK(s.warmup_fraction >= 0.0 && s.warmup_fraction <= 1.0,
                                "--lr-warmup-fraction must be in [0, 1], got ", v);
                    }));
  t.push_back(value("--lr-warmup-init", "LR", "schedule.warmup_init", [](S& s, V v) {
    s.run.train.schedule.warmup_init = as_double("--lr-warmup-init", v);
  }));
  t.push_back(value("--lr-wsd-decay-style", "STYLE", "linear | cosine | exponential | minus_sqrt",
                    [](S& s, V v) {
                      s.run.train.schedule.wsd_decay_style =
                          one_of("--lr-wsd-decay-style", v,
                                 {"linear", "cosine", "exponential", "minus_sqrt"});
                    }));
  t.push_back(value("--lr-wsd-decay-iters", "N", "schedule.wsd_decay_iters", [](S& s, V v) {
    s.run.train.schedule.wsd_decay_iters = as_count("--lr-wsd-decay-iters", v, 0);
  }));
  t.push_back(value("--weight-decay", "WD", "start and end weight decay", [](S& s, V v) {
    const double wd = as_double("--weight-decay", v);
    s.run.train.schedule.start_weight_decay = s.run.train.schedule.end_weight_decay = wd;
  }));
  t.push_back(value("--start-weight-decay", "WD", "schedule.start_weight_decay", [](S& s, V v) {
    s.run.train.schedule.start_weight_decay = as_double("--start-weight-decay", v);
    s.start_wd_given = true;
  }));
  t.push_back(value("--end-weight-decay", "WD", "schedule.end_weight_decay", [](S& s, V v) {
    s.run.train.schedule.end_weight_decay = as_double("--end-weight-decay", v);
    s.end_wd_given = true;
  }));
  t.push_back(value("--weight-decay-incr-style", "STYLE", "constant | linear | cosine",
                    [](S& s, V v) {
                      s.run.train.schedule.weight_decay_incr_style =
                          one_of("--weight-decay-incr-style", v, {"constant", "linear", "cosine"});
                    }));

  // Optimizer (optimizer.h).
  t.push_back(value("--optimizer", "adam", "accepted: adam only (AdamW, decoupled weight decay)",
                    [](S&, V v) { one_of("--optimizer", v, {"adam"}); }));
  t.push_back(value("--clip-grad", "NORM", "optimizer.clip_grad (0: off)",
                    [](S& s, V v) { s.run.train.optimizer.clip_grad = as_double("--clip-grad", v); }));
  t.push_back(value("--adam-beta1", "B1", "optimizer.beta1",
                    [](S& s, V v) { s.run.train.optimizer.beta1 = as_double("--adam-beta1", v); }));
  t.push_back(value("--adam-beta2", "B2", "optimizer.beta2",
                    [](S& s, V v) { s.run.train.optimizer.beta2 = as_double("--adam-beta2", v); }));
  t.push_back(value("--adam-eps", "EPS", "optimizer.eps",
                    [](S& s, V v) { s.run.train.optimizer.eps = as_double("--adam-eps", v); }));
  t.push_back(toggle("--use-precision-aware-optimizer",
                     "allows --exp-avg-dtype / --exp-avg-sq-dtype bf16",
                     [](S& s, V) { s.precision_aware = true; }));
  t.push_back(value("--exp-avg-dtype", "DTYPE", "optimizer.exp_avg_dtype: fp32 | bf16", [](S& s, V v) {
    s.exp_avg_dtype = one_of("--exp-avg-dtype", v, {"fp32", "bf16"});
  }));
  t.push_back(value("--exp-avg-sq-dtype", "DTYPE", "optimizer.exp_avg_sq_dtype: fp32 | bf16",
                    [](S& s, V v) { s.exp_avg_sq_dtype = one_of("--exp-avg-sq-dtype", v, {"fp32", "bf16"}); }));

  // Precision and device.
  t.push_back(toggle("--bf16", "bf16 parameters and activations, fp32 master weights and "
                               "gradients (GPU only); default f32",
                     [](S& s, V) { s.run.bf16 = true; }));
  t.push_back(refused("--fp16", "", "not supported by this build: use --bf16"));
  t.push_back(toggle("--cpu", "moecore: run on the CPU even when a GPU is present",
                     [](S& s, V) { s.run.cpu = true; }));

  // NaN handling.
  t.push_back(toggle("--check-for-nan-in-loss-and-grad",
                     "stop on a NaN/Inf loss or gradient (= --nan-action stop)",
                     [](S& s, V) { s.nan_check = true; }));
  t.push_back(value("--nan-action", "ACTION",
                    "moecore: skip (drop the update, the default) | stop", [](S& s, V v) {
                      s.nan_action = one_of("--nan-action", v, {"skip", "stop"});
                    }));

  // Evaluation and logging.
  t.push_back(value("--log-interval", "N", "train.log_interval: a log line every N iterations",
                    [](S& s, V v) { s.run.train.log_interval = as_count("--log-interval", v, 1); }));
  t.push_back(value("--eval-interval", "N", "train.eval_interval (0: no evaluation)",
                    [](S& s, V v) { s.run.train.eval_interval = as_count("--eval-interval", v, 0); }));
  t.push_back(value("--eval-iters", "N", "train.eval_iters: global batches per evaluation",
                    [](S& s, V v) { s.run.train.eval_iters = as_count("--eval-iters", v, 0); }));
  t.push_back(value("--tensorboard-dir", "DIR", "TensorBoard event files",
                    [](S& s, V v) { s.run.tensorboard_dir = v; }));
  t.push_back(value("--log-dir", "DIR", "moecore: metrics.jsonl in DIR",
                    [](S& s, V v) { s.run.log_dir = v; }));
  t.push_back(value("--metrics-jsonl", "FILE", "moecore: the JSONL metrics file",
                    [](S& s, V v) { s.run.metrics_jsonl = v; }));
  t.push_back(toggle("--moe-per-layer-logging",
                     "per MoE layer: aux loss, z loss, expert load min/max/cv, dropped tokens",
                     [](S& s, V) { s.run.moe_per_layer_logging = true; }));

  // Checkpoints (train_run.h refuses them without the build's checkpoint hooks).
  t.push_back(value("--save", "DIR", "checkpoint folder to write", [](S& s, V v) { s.run.save = v; }));
  t.push_back(value("--load", "DIR", "checkpoint folder to resume from",
                    [](S& s, V v) { s.run.load = v; }));
  t.push_back(value("--save-interval", "N", "a checkpoint every N iterations (0: at the end)",
                    [](S& s, V v) { s.run.save_interval = as_count("--save-interval", v, 0); }));
  t.push_back(toggle("--finetune", "--load the weights only; counters from 0",
                     [](S& s, V) { s.run.finetune = true; }));
  t.push_back(toggle("--no-load-optim", "--load without the optimizer state",
                     [](S& s, V) { s.run.no_load_optim = true; }));
  t.push_back(toggle("--moe-use-upcycling",
                     "upcycling (arXiv 2410.07524): --load holds a dense checkpoint (training "
                     "checkpoint or model folder); the MoE model of these flags is made from it "
                     "(every expert a copy of the dense MLP, the router fresh; non-MLP tensors "
                     "copied; the shape flags must match the dense model's) and saved to --save "
                     "as iteration 0, then training starts. A --load that holds an MoE "
                     "checkpoint resumes it as usual. No shared experts",
                     [](S& s, V) { s.run.moe_use_upcycling = true; }));
  t.push_back(value("--moe-upcycling-granularity", "G",
                    "granular upcycling: the dense FFN split in G pieces (expert e takes piece "
                    "e mod G, E / G virtual groups share a router row, weights scaled by s^(1/3), "
                    "s = G, or E G / topk with --moe-router-pre-softmax); needs "
                    "--moe-ffn-hidden-size = the dense --ffn-hidden-size / G and --num-experts a "
                    "multiple of G. Default 1: plain copies",
                    [](S& s, V v) {
                      s.run.moe_upcycling_granularity = as_count("--moe-upcycling-granularity", v, 1);
                    }));

  // Data.
  t.push_back(value("--data-path", "[W] PREFIX ...",
                    "Megatron indexed datasets (PREFIX.bin / PREFIX.idx, e.g. from `moe "
                    "preprocess`): one prefix, several (blended by size), or weight-prefix pairs "
                    "(--data-path 0.3 a 0.7 b); a YAML list works too. Without it the built-in "
                    "corpus is used",
                    [](S& s, V v) { s.run.data_path = split_values(v); }));
  t.push_back(value("--split", "SPLIT",
                    "train / validation / test shares of every --data-path corpus's documents "
                    "(default \"969, 30, 1\")",
                    [](S& s, V v) { s.run.split = v; }));
  t.push_back(value("--data-cache-path", "DIR",
                    "where the sample / shuffle indices are cached (default: beside the data, "
                    "<prefix>/cache/GPTDataset_indices)",
                    [](S& s, V v) { s.run.data_cache_path = v; }));
  t.push_back(value("--tokenizer-type", "TYPE",
                    "HuggingFaceTokenizer (with --tokenizer-model) or byte; the tokenizer the "
                    "--data-path corpus was made with",
                    [](S& s, V v) {
                      s.run.tokenizer_type = one_of("--tokenizer-type", v, {"HuggingFaceTokenizer", "byte"});
                    }));
  t.push_back(value("--tokenizer-model", "PATH",
                    "a Hugging Face tokenizer.json (or its folder): sets the default model's "
                    "vocabulary (padded to a multiple of 128, as Megatron pads it) and decodes "
                    "the sample",
                    [](S& s, V v) { s.run.tokenizer_model = v; }));

  t.push_back(value("--sample-tokens", "N",
                    "moecore: after training, print N bytes of text sampled from the model (byte "
                    "vocabularies only; 0: none)",
                    [](S& s, V v) { s.run.sample_tokens = as_count("--sample-tokens", v, 0); }));
  t.push_back(value("--config", "FILE.yaml",
                    "YAML file of flags (keys without dashes); the command line overrides it",
                    [](S& s, V v) { s.run.config_file = v; }));
  return t;
}

const std::vector<Entry>& table() {
  static const std::vector<Entry> t = build_table();
  return t;
}

const Entry* find(const std::string& name) {
  for (const Entry& e : table())
    if (e.flag.name == name) return &e;
  return nullptr;
}

// Levenshtein distance, for "did you mean".
size_t distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string unknown_flag_message(const std::string& name, const std::string& where) {
  std::string best;
  size_t best_d = 4;  // suggest only close names
  for (const Entry& e : table()) {
    const size_t d = distance(name, e.flag.name);
    if (d < best_d) {
      best_d = d;
      best = e.flag.name;
    }
  }
  return moe::detail::concat("moe train: unknown flag ", name, where,
                        best.empty() ? std::string() : " (did you mean " + best + "?)",
                        "; `moe train --help` lists the flags");
}

// Megatron's --moe-layer-freq / --num-layers interplay, and the other derived values.
void finish(ParseState& s) {
  TrainRunConfig& r = s.run;
  nn::ModelConfig& m = r.model;
  auto given = [&](const char* flag) { return s.values.count(flag) > 0; };

  // The sizes before anything is computed from them (the layer pattern below).
  m.validate_sizes();
  // Megatron (validate_args): without --kv-channels, kv_channels = hidden_size //
  // num_attention_heads, and hidden_size must be divisible by num_attention_heads. A preset
  // whose head dim is its hidden / heads has no head dim of its own, so a new --hidden-size or
  // --num-attention-heads gives a new one (validate() then requires the division to be exact);
  // a preset with its own (Qwen3: 128 for hidden 2048 / 32 heads) keeps it, as its recipe
  // passes --kv-channels.
  // The derived value is written out (not left 0), so the config says the head dim it has and a
  // Hugging Face export reads back the same model; an inexact division stays 0 for validate()
  // to refuse, naming --kv-channels.
  if (s.preset_head_dim_derived && !given("--kv-channels") &&
      (given("--hidden-size") || given("--num-attention-heads"))) {
    const bool exact = m.num_attention_heads > 0 && m.hidden_size % m.num_attention_heads == 0;
    m.kv_channels = exact ? m.hidden_size / m.num_attention_heads : 0;
  }

  if (!s.moe_layer_freq.empty()) {
    m.moe_layer_pattern = nn::parse_moe_layer_freq(s.moe_layer_freq, m.num_layers);
  } else if (static_cast<int64_t>(m.moe_layer_pattern.size()) != m.num_layers) {
    // --num-layers on a preset: its first layers, or its pattern extended with the last entry
    // (DeepSeek's leading dense layers stay dense).
    const int last = m.moe_layer_pattern.empty() ? 1 : m.moe_layer_pattern.back();
    m.moe_layer_pattern.resize(static_cast<size_t>(m.num_layers), last);
  }
  m.moe.hidden_size = m.hidden_size;
  m.moe.init_method_std = m.init_method_std;
  if (given("--num-experts") && !given("--moe-router-topk"))
    m.moe.moe_router_topk = std::min(m.moe.moe_router_topk, m.moe.num_experts);
  // A preset's --moe-aux-loss-coeff belongs to its aux-loss balancing: a balancing type that
  // takes no coefficient (sinkhorn, none), given without --moe-aux-loss-coeff, drops it
  // (Megatron's default coefficient is 0), so only a coefficient the user gave is refused.
  const std::string& balancing = m.moe.moe_router_load_balancing_type;
  if (given("--moe-router-load-balancing-type") && !given("--moe-aux-loss-coeff") &&
      (balancing == "sinkhorn" || balancing == "none"))
    m.moe.moe_aux_loss_coeff = 0.0;

  TrainConfig& t = r.train;
  if (given("--micro-batch-size") && !given("--global-batch-size"))
    t.global_batch_size = t.micro_batch_size;  // Megatron: micro x data-parallel size (1)
  // --lr before what derives from it (--min-lr = --lr / 10), so a bad --lr is named itself.
  MOE_CHECK(t.schedule.lr >= 0, "--lr must not be negative, got ", t.schedule.lr);
  if (given("--lr") && !given("--min-lr")) t.schedule.min_lr = t.schedule.lr / 10.0;  // as default
  if (s.warmup_fraction >= 0.0) {
    MOE_CHECK(!given("--lr-warmup-iters"),
              "--lr-warmup-fraction and --lr-warmup-iters are both given: use one");
    const int64_t decay = t.schedule.decay_iters > 0 ? t.schedule.decay_iters : t.train_iters;
    t.schedule.warmup_iters = static_cast<int64_t>(s.warmup_fraction * static_cast<double>(decay));
  } else if (!given("--lr-warmup-iters")) {
    t.schedule.warmup_iters = t.train_iters / 10;  // moecore's default warm-up: 10%
  }
  MOE_CHECK(s.start_wd_given == s.end_wd_given,
            "--start-weight-decay and --end-weight-decay go together (Megatron's rule)");
  if (s.start_wd_given)
    MOE_CHECK(given("--weight-decay-incr-style") && t.schedule.weight_decay_incr_style != "constant",
              "--start-weight-decay / --end-weight-decay need --weight-decay-incr-style linear or "
              "cosine");

  for (auto [flag, text, dtype] :
       {std::tuple{"--exp-avg-dtype", s.exp_avg_dtype, &t.optimizer.exp_avg_dtype},
        std::tuple{"--exp-avg-sq-dtype", s.exp_avg_sq_dtype, &t.optimizer.exp_avg_sq_dtype}}) {
    if (text.empty()) continue;
    MOE_CHECK(text == "fp32" || s.precision_aware, flag, " ", text,
              " needs --use-precision-aware-optimizer");
    *dtype = text == "bf16" ? DType::bf16 : DType::f32;
  }

  if (s.nan_check) {
    MOE_CHECK(s.nan_action != "skip",
              "--check-for-nan-in-loss-and-grad stops on NaN, but --nan-action skip was given");
    t.nan_action = NanAction::stop;
  } else if (!s.nan_action.empty()) {
    t.nan_action = s.nan_action == "stop" ? NanAction::stop : NanAction::skip;
  }

  MOE_CHECK(t.seq_length <= m.max_position_embeddings, "--seq-length ", t.seq_length,
            " exceeds --max-position-embeddings ", m.max_position_embeddings, " of --model ",
            r.model_preset);
  if (r.data_path.empty()) {
    MOE_CHECK(r.tokenizer_type.empty() && r.tokenizer_model.empty(),
              "--tokenizer-type / --tokenizer-model describe a --data-path corpus; without "
              "--data-path the built-in corpus (byte tokens) is used");
    MOE_CHECK(!given("--split") && !given("--data-cache-path"),
              given("--split") ? "--split" : "--data-cache-path", " needs --data-path");
    // The built-in corpus needs the byte vocabulary.
    MOE_CHECK(m.vocab_size >= data::ByteTokenizer::kVocabSize, "--vocab-size ", m.vocab_size,
              " is too small for the built-in corpus's byte tokens (",
              data::ByteTokenizer::kVocabSize, " ids: 256 bytes + end of document)");
  } else {
    (void)data::parse_data_path(r.data_path);  // malformed lists fail here, naming the flag
    (void)data::parse_split(r.split);
    const std::unique_ptr<data::Tokenizer> tokenizer =
        data::make_tokenizer(r.tokenizer_type, r.tokenizer_model);
    const int64_t tokens = tokenizer->vocab_size();
    // Megatron sizes the embedding from the tokenizer (_vocab_size_with_padding); a zoo model
    // or --vocab-size keeps its own, which must hold every id.
    if (r.model_preset == "default" && !given("--vocab-size"))
      m.vocab_size = (tokens + 127) / 128 * 128;
    MOE_CHECK(m.vocab_size >= tokens, "--vocab-size ", m.vocab_size, " of --model ",
              r.model_preset, " is smaller than the tokenizer's ", tokens, " ids (",
              tokenizer->description(), ")");
  }
  MOE_CHECK(r.save_interval == 0 || !r.save.empty(), "--save-interval needs --save");
  MOE_CHECK(!r.finetune || !r.load.empty(), "--finetune needs --load");
  MOE_CHECK(!r.no_load_optim || !r.load.empty(), "--no-load-optim needs --load");

  m.validate();
  t.validate();
  if (r.moe_use_upcycling) {
    MOE_CHECK(!r.load.empty(), "--moe-use-upcycling needs --load: the dense checkpoint to upcycle "
                               "(a training checkpoint folder or a model folder)");
    MOE_CHECK(!r.save.empty(), "--moe-use-upcycling needs --save: the upcycled model is saved "
                               "there as iteration 0 before training");
    checkpoint::check_upcycling_target(m, r.moe_upcycling_granularity);
  } else {
    MOE_CHECK(r.moe_upcycling_granularity == 1, "--moe-upcycling-granularity ",
              r.moe_upcycling_granularity, " needs --moe-use-upcycling");
  }
  LrScheduleConfig schedule = t.schedule;  // as the trainer will see it
  if (schedule.decay_iters == 0) schedule.decay_iters = t.train_iters;
  if (schedule.train_iters == 0) schedule.train_iters = t.train_iters;
  (void)LrSchedule(schedule);  // names the flags of an inconsistent schedule
}

std::string yaml_value_text(const YAML::Node& node, const std::string& key, const std::string& path) {
  if (node.IsScalar()) return node.Scalar();
  if (node.IsSequence()) {
    std::string text = "[";
    for (size_t i = 0; i < node.size(); ++i) {
      MOE_CHECK(node[i].IsScalar(), "--config ", path, ": key '", key,
                "' holds a nested list; expected scalars");
      text += (i ? "," : "") + node[i].Scalar();
    }
    return text + "]";
  }
  MOE_FAIL("--config ", path, ": key '", key, "' must be a value or a list, not ",
           node.IsMap() ? "a mapping" : "empty");
}

}  // namespace

std::string TrainRunConfig::metrics_path() const {
  if (!metrics_jsonl.empty()) return metrics_jsonl;
  if (!log_dir.empty()) return (std::filesystem::path(log_dir) / "metrics.jsonl").string();
  if (!save.empty()) return (std::filesystem::path(save) / "metrics.jsonl").string();
  return "";
}

std::vector<TrainFlag> train_flags() {
  std::vector<TrainFlag> flags;
  for (const Entry& e : table()) flags.push_back(e.flag);
  return flags;
}

std::string train_flags_help() {
  std::ostringstream out;
  out << "moe train [--config FILE.yaml] [flags]: Megatron-LM's flag names. With no flags: the "
         "default run\n(the built-in tiny byte-level MoE on Debian's fortunes text).\n\n";
  for (const Entry& e : table()) {
    std::string head = "  " + e.flag.name + (e.flag.value_name.empty() ? "" : " " + e.flag.value_name);
    out << head;
    if (head.size() < 44) out << std::string(44 - head.size(), ' ');
    else out << "\n" << std::string(44, ' ');
    out << (e.flag.refused.empty() ? e.flag.help : "refused: " + e.flag.refused) << "\n";
  }
  return out.str();
}

nn::ModelConfig default_train_model() {
  nn::ModelConfig c;
  c.name = "default-tiny-moe";
  c.family = "qwen3_moe";  // GQA with q/k norms, every layer MoE, softmax top-k
  c.num_layers = 4;
  c.hidden_size = 64;
  c.ffn_hidden_size = 128;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.kv_channels = 16;
  c.qk_layernorm = true;
  c.norm_epsilon = 1e-6;
  c.vocab_size = data::ByteTokenizer::padded_vocab_size();  // 257 padded to 384, as Megatron
  c.max_position_embeddings = 512;
  c.rotary_base = 10000.0;
  c.untie_embeddings_and_output_weights = true;
  c.init_method_std = 0.02;
  c.moe_layer_pattern = {1, 1, 1, 1};
  c.moe.hidden_size = c.hidden_size;
  c.moe.init_method_std = c.init_method_std;
  c.moe.num_experts = 8;
  c.moe.moe_ffn_hidden_size = 64;
  c.moe.moe_router_topk = 2;
  c.moe.moe_aux_loss_coeff = 1e-2;
  c.moe.moe_z_loss_coeff = 1e-3;
  c.validate();
  return c;
}

TrainRunConfig default_train_run() {
  TrainRunConfig r;
  r.model_preset = "default";
  r.model = default_train_model();
  TrainConfig& t = r.train;
  t.seq_length = 128;
  t.micro_batch_size = 8;
  t.global_batch_size = 16;
  t.train_iters = 500;
  t.log_interval = 10;
  t.eval_interval = 100;
  t.eval_iters = 2;
  t.seed = 1234;
  t.schedule.lr = 3e-3;
  t.schedule.min_lr = 3e-4;
  t.schedule.decay_style = "cosine";
  t.schedule.warmup_iters = 50;  // --train-iters / 10
  t.schedule.start_weight_decay = t.schedule.end_weight_decay = 0.1;
  t.optimizer.beta1 = 0.9;
  t.optimizer.beta2 = 0.95;
  t.optimizer.eps = 1e-8;
  t.optimizer.clip_grad = 1.0;
  t.nan_action = NanAction::skip;
  return r;
}

std::vector<std::pair<std::string, std::string>> read_train_yaml(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  MOE_CHECK(fs::exists(status), "--config: cannot open ", path, ": no such file");
  MOE_CHECK(!fs::is_directory(status), "--config ", path,
            " is a folder; give the YAML file of flags");
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAllFromFile(path);
  } catch (const YAML::BadFile&) {
    MOE_FAIL("--config: cannot open ", path, " (unreadable)");
  } catch (const YAML::Exception& e) {
    MOE_FAIL("--config ", path, " is not valid YAML: ", e.what());
  } catch (const std::exception& e) {  // the stream's own errors (e.g. not a regular file)
    MOE_FAIL("--config: cannot read ", path, ": ", e.what());
  }
  // One document: a second one ("---") would otherwise be dropped without a word. Empty
  // documents (a trailing "---") hold nothing to drop.
  for (size_t i = 1; i < documents.size(); ++i)
    MOE_CHECK(documents[i].IsNull(), "--config ", path, ": a second YAML document starts at line ",
              documents[i].Mark().line + 1, "; a config file is one mapping of flag names");
  std::vector<std::pair<std::string, std::string>> out;
  if (documents.empty() || documents[0].IsNull()) return out;  // an empty file
  const YAML::Node& root = documents[0];
  MOE_CHECK(root.IsMap(), "--config ", path, ": expected a mapping of flag names to values");
  std::map<std::string, std::pair<std::string, int>> seen;  // flag -> (key, line)
  for (auto it = root.begin(); it != root.end(); ++it) {
    MOE_CHECK(it->first.IsScalar(), "--config ", path, ": line ", it->first.Mark().line + 1,
              ": keys are flag names");
    const std::string key = it->first.Scalar();
    const int line = it->first.Mark().line + 1;
    std::string flag = "--" + key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    MOE_CHECK(find(flag) != nullptr,
              unknown_flag_message(flag, " (key '" + key + "' in --config " + path + ")"));
    MOE_CHECK(flag != "--config", "--config ", path, ": a config file cannot name another (key '",
              key, "')");
    // A repeated key (or the same flag spelt with '_' and '-') is a conflict, not an override.
    const auto [first, inserted] = seen.emplace(flag, std::pair{key, line});
    MOE_CHECK(inserted, "--config ", path, ": key '", key, "' at line ", line, " repeats ",
              first->second.first == key ? "it" : "'" + first->second.first + "'", " (", flag,
              ") from line ", first->second.second, "; give each flag once");
    out.emplace_back(flag, yaml_value_text(it->second, key, path));
  }
  return out;
}

TrainRunConfig parse_train_args(const std::vector<std::string>& args) {
  if (args.empty()) {
    // The default run (the README's main command) keeps its checkpoint.
    TrainRunConfig run = default_train_run();
    run.save = kDefaultRunSave;
    run.given.push_back(std::string("--save ") + kDefaultRunSave + " (the default run's)");
    return run;
  }
  // The command line, checked flag by flag.
  std::vector<std::pair<std::string, std::string>> cli;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    MOE_CHECK(arg.rfind("--", 0) == 0 && arg.size() > 2, "moe train: unexpected argument '", arg,
              "' (flags start with --; `moe train --help` lists them)");
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(0, eq);
    const Entry* e = find(name);
    MOE_CHECK(e != nullptr, unknown_flag_message(name, ""));
    std::string text;
    if (e->flag.value_name.empty() && e->flag.refused.empty()) {
      MOE_CHECK(eq == std::string::npos, name, " is a switch and takes no value (got '", arg, "')");
      text = "true";
    } else if (eq != std::string::npos) {
      text = arg.substr(eq + 1);
    } else if (!e->flag.value_name.empty()) {
      MOE_CHECK(i + 1 < args.size(), name, " needs a value (", e->flag.value_name, ")");
      text = args[++i];
      // A list flag ("... ..." in its value name) takes every word up to the next flag.
      if (e->flag.value_name.find("...") != std::string::npos)
        while (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) text += " " + args[++i];
    }
    cli.emplace_back(name, text);
  }

  ParseState s;
  s.run = default_train_run();
  s.preset_head_dim_derived = head_dim_is_derived(s.run.model);
  // The YAML file first, the command line over it.
  for (const auto& [name, text] : cli)
    if (name == "--config") s.values["--config"] = text;
  std::set<std::string> from_yaml;  // flags whose value is the YAML file's
  if (s.values.count("--config"))
    for (const auto& [name, text] : read_train_yaml(s.values["--config"])) {
      s.values[name] = text;
      from_yaml.insert(name);
    }
  for (const auto& [name, text] : cli) {
    s.values[name] = text;
    from_yaml.erase(name);
  }

  for (const Entry& e : table()) {
    auto it = s.values.find(e.flag.name);
    if (it == s.values.end()) continue;
    MOE_CHECK(e.flag.refused.empty(), e.flag.name, ": ", e.flag.refused);
    if (e.flag.value_name.empty()) {
      // A switch: YAML may say false (then it is not given).
      if (!as_bool(e.flag.name, it->second)) {
        s.values.erase(it);
        continue;
      }
      s.run.given.push_back(e.flag.name);
    } else {
      s.run.given.push_back(e.flag.name + " " + it->second);
    }
    if (!from_yaml.count(e.flag.name)) {
      e.apply(s, it->second);
      continue;
    }
    // A value from the YAML file: its errors say which file and key (a zoo lookup, say, names
    // neither on its own).
    try {
      e.apply(s, it->second);
    } catch (const Error& error) {
      throw Error("--config " + s.values["--config"] + ", key " + e.flag.name.substr(2) + ": " +
                  error.what());
    }
  }
  finish(s);
  return s.run;
}

nlohmann::json run_config_json(const TrainRunConfig& r) {
  const TrainConfig& t = r.train;
  const LrScheduleConfig& l = t.schedule;
  const OptimizerConfig& o = t.optimizer;
  return {{"model_preset", r.model_preset},
          {"flags", r.given},
          {"model", nn::model_config_to_json(r.model)},
          {"bf16", r.bf16},
          {"train",
           {{"micro_batch_size", t.micro_batch_size}, {"global_batch_size", t.global_batch_size},
            {"seq_length", t.seq_length}, {"train_iters", t.train_iters}, {"seed", t.seed},
            {"eval_interval", t.eval_interval}, {"eval_iters", t.eval_iters},
            {"log_interval", t.log_interval},
            {"nan_action", t.nan_action == NanAction::stop ? "stop" : "skip"},
            {"lr", l.lr}, {"min_lr", l.min_lr}, {"lr_warmup_init", l.warmup_init},
            {"lr_warmup_iters", l.warmup_iters}, {"lr_decay_style", l.decay_style},
            {"lr_decay_iters", l.decay_iters}, {"lr_wsd_decay_style", l.wsd_decay_style},
            {"lr_wsd_decay_iters", l.wsd_decay_iters},
            {"start_weight_decay", l.start_weight_decay}, {"end_weight_decay", l.end_weight_decay},
            {"weight_decay_incr_style", l.weight_decay_incr_style},
            {"adam_beta1", o.beta1}, {"adam_beta2", o.beta2}, {"adam_eps", o.eps},
            {"clip_grad", o.clip_grad}, {"exp_avg_dtype", dtype_name(o.exp_avg_dtype)},
            {"exp_avg_sq_dtype", dtype_name(o.exp_avg_sq_dtype)}}}};
}

std::string describe(const TrainRunConfig& r) {
  const nn::ModelConfig& m = r.model;
  const TrainConfig& t = r.train;
  const nn::ModelParamCount count = nn::count_parameters(m);
  std::ostringstream out;
  out << "model " << m.name << " (--model " << r.model_preset << "): " << m.num_layers
      << " layers, hidden " << m.hidden_size << ", " << m.num_attention_heads << " heads / "
      << m.num_query_groups << " query groups, " << m.moe.num_experts << " experts top-"
      << m.moe.moe_router_topk << ", vocab " << m.vocab_size << "; parameters "
      << nn::format_param_count(count.total()) << " total, "
      << nn::format_param_count(count.main.active() + count.mtp.active()) << " active\n";
  out << "training: " << t.train_iters << " iterations of " << t.global_batch_size
      << " samples (" << t.num_microbatches() << " micro-batches of " << t.micro_batch_size
      << ") x " << t.seq_length << " tokens; lr " << t.schedule.lr << " " << t.schedule.decay_style
      << " to " << t.schedule.min_lr << ", warm-up " << t.schedule.warmup_iters << "; weight decay "
      << t.schedule.start_weight_decay << "; clip " << t.optimizer.clip_grad << "; seed " << t.seed
      << "; nan action " << (t.nan_action == NanAction::stop ? "stop" : "skip") << "\n";
  if (!r.given.empty()) {
    out << "flags:";
    for (const std::string& g : r.given) out << " " << g;
    out << "\n";
  }
  return out.str();
}

}  // namespace moe::train
