#include "moe/train/train_args.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
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
#include "moe/nn/param_count.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/train_flag_table.h"

namespace moe::train {
namespace {

// Whether --load names a model folder (not a training checkpoint). A folder --load cannot use
// is not one here: the run's load says what is wrong with it.
bool is_model_folder(const std::string& dir) {
  try {
    return classify_load_folder(dir) == LoadFolderKind::model_folder;
  } catch (const Error&) {
    return false;
  }
}

using flags::as_bool;
using flags::Entry;
using flags::head_dim_is_derived;
using flags::ParseState;

std::vector<Entry> build_table() {
  std::vector<Entry> t;
  flags::add_model_flags(t);
  flags::add_mla_flags(t);
  flags::add_moe_flags(t);
  flags::add_parallel_flags(t);
  flags::add_batch_flags(t);
  flags::add_schedule_flags(t);
  flags::add_optimizer_flags(t);
  flags::add_precision_flags(t);
  flags::add_recompute_flags(t);
  flags::add_logging_flags(t);
  flags::add_profile_flags(t);
  flags::add_checkpoint_flags(t);
  flags::add_data_flags(t);
  flags::add_megatron_surface_flags(t);
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

// --profile's window and destination (step_profiler.h). Megatron ignores
// --use-pytorch-profiler without --profile, and so does moecore; its own --profile-dir is refused
// there, since it would record nothing.
void check_profile_flags(const TrainRunConfig& r) {
  const ProfileConfig& p = r.profile;
  if (!p.enabled) {
    MOE_CHECK(p.dir.empty(), "--profile-dir ", p.dir,
              " needs --profile: it is where the profiled iterations' trace goes");
    return;
  }
  MOE_CHECK(p.step_end > p.step_start, "--profile-step-end ", p.step_end,
            " must be above --profile-step-start ", p.step_start,
            " (the window is the iterations after the start up to the end)");
  MOE_CHECK(!p.use_builtin || !p.dir.empty() || !r.tensorboard_dir.empty(),
            "--use-pytorch-profiler writes its trace beside --tensorboard-dir (in "
            "<dir>/../torch_profile, as Megatron does): give --tensorboard-dir, or --profile-dir "
            "DIR for the trace's folder");
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
  flags::finish_mla_flags(s);
  // Megatron-LM's --attention-dropout and --hidden-dropout default to 0.1: with flags given, an
  // absent one is Megatron's, whatever the --model preset or the --load model folder holds (as
  // a Megatron recipe that wants none passes 0). The default run (no flags) and model folders
  // read for inference keep their own values.
  if (!given("--attention-dropout")) m.attention_dropout = kMegatronDropout;
  if (!given("--hidden-dropout")) m.hidden_dropout = kMegatronDropout;

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
  // Megatron (validate_args): --moe-ffn-hidden-size None takes --ffn-hidden-size, as the guide's
  // Mixtral command sizes its experts.
  if (given("--ffn-hidden-size") && !given("--moe-ffn-hidden-size"))
    m.moe.moe_ffn_hidden_size = m.ffn_hidden_size;
  if (given("--num-experts") && !given("--moe-router-topk"))
    m.moe.moe_router_topk = std::min(m.moe.moe_router_topk, m.moe.num_experts);
  // A preset's --moe-aux-loss-coeff belongs to its aux-loss balancing: a balancing type that
  // takes no coefficient (sinkhorn, none), given without --moe-aux-loss-coeff, drops it
  // (Megatron's default coefficient is 0), so only a coefficient the user gave is refused.
  const nn::LoadBalancingType balancing = m.moe.moe_router_load_balancing_type;
  if (given("--moe-router-load-balancing-type") && !given("--moe-aux-loss-coeff") &&
      (balancing == nn::LoadBalancingType::sinkhorn || balancing == nn::LoadBalancingType::none))
    m.moe.moe_aux_loss_coeff = 0.0;

  TrainConfig& t = r.train;
  if (given("--global-batch-size")) r.global_batch_follows_data_parallel = false;
  if (given("--micro-batch-size") && !given("--global-batch-size")) {
    t.global_batch_size = t.micro_batch_size;  // Megatron: micro x data-parallel size (1 here)
    r.global_batch_follows_data_parallel = true;
  }
  // --lr before what derives from it (--min-lr = --lr / 10), so a bad --lr is named itself.
  MOE_CHECK(t.schedule.lr >= 0, "--lr must not be negative, got ", t.schedule.lr);
  // Iteration- or sample-based training (Megatron's validate_args): one of --train-iters and
  // --train-samples, and the schedule's flags of the same kind.
  if (given("--train-samples")) {
    MOE_CHECK(!given("--train-iters"),
              "--train-iters and --train-samples are both given: use one (iteration- or "
              "sample-based training, as Megatron-LM asserts)");
    for (auto [iters, samples] : {std::pair{"--lr-decay-iters", "--lr-decay-samples"},
                                  std::pair{"--lr-warmup-iters", "--lr-warmup-samples"},
                                  std::pair{"--lr-wsd-decay-iters", "--lr-wsd-decay-samples"}})
      MOE_CHECK(!given(iters), iters,
                " is iteration-based, but --train-samples makes the run "
                "sample-based (Megatron-LM asserts so): give ",
                samples);
    // Megatron's update_train_iters (no batch-size ramp-up): the run knows the global batch
    // only with the data-parallel size, and sets it again then (train_run.cpp).
    t.train_iters = t.iterations_of_samples();
  } else {
    for (auto [samples, iters] : {std::pair{"--lr-decay-samples", "--lr-decay-iters"},
                                  std::pair{"--lr-warmup-samples", "--lr-warmup-iters"},
                                  std::pair{"--lr-wsd-decay-samples", "--lr-wsd-decay-iters"}})
      MOE_CHECK(!given(samples), samples,
                " is sample-based: it needs --train-samples (with "
                "--train-iters, Megatron-LM asserts; give ",
                iters, ")");
  }
  for (const char* warmup : {"--lr-warmup-iters", "--lr-warmup-samples"})
    MOE_CHECK(!given("--lr-warmup-fraction") || !given(warmup), "--lr-warmup-fraction and ", warmup,
              " are both given: use one");
  MOE_CHECK(s.start_wd_given == s.end_wd_given,
            "--start-weight-decay and --end-weight-decay go together (Megatron's rule)");
  if (s.start_wd_given)
    MOE_CHECK(
        given("--weight-decay-incr-style") && t.schedule.weight_decay_incr_style != "constant",
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

  // The expert split, as the MoE block reads it (validate() below names --num-experts or
  // --moe-ffn-hidden-size when a size does not divide them).
  const dist::ParallelConfig& p = r.parallel;
  m.moe.expert_model_parallel_size = p.expert_model_parallel_size;
  m.moe.expert_tensor_parallel_size = p.expert_tensor_parallel_size == 0
                                          ? p.tensor_model_parallel_size
                                          : p.expert_tensor_parallel_size;
  MOE_CHECK(!r.ddp.overlap_param_gather || r.ddp.use_distributed_optimizer,
            "--overlap-param-gather needs --use-distributed-optimizer (it overlaps the "
            "all-gather of the distributed optimizer's updated shards with the next forward)");
  MOE_CHECK(!r.ddp.overlap_param_gather || r.ddp.overlap_grad_reduce,
            "--overlap-param-gather needs --overlap-grad-reduce too, as in Megatron-LM");

  MOE_CHECK(t.seq_length <= m.max_position_embeddings, "--seq-length ", t.seq_length,
            " exceeds --max-position-embeddings ", m.max_position_embeddings, " of --model ",
            r.model_preset);
  const bool null_tokenizer = r.tokenizer_type == "NullTokenizer";
  MOE_CHECK(!null_tokenizer || r.mock_data,
            "--tokenizer-type NullTokenizer has ids but no text: it goes with --mock-data");
  if (r.mock_data) {
    // Megatron: --mock-data with --tokenizer-type NullTokenizer --vocab-size N; the tokens are
    // drawn from the model's vocabulary, so there is no text to sample.
    MOE_CHECK(r.data_path.empty(), "--mock-data and --data-path exclude each other");
    MOE_CHECK(r.tokenizer_type.empty() || null_tokenizer,
              "--mock-data draws token ids without a tokenizer: give --tokenizer-type "
              "NullTokenizer or none, not ",
              r.tokenizer_type);
    MOE_CHECK(r.tokenizer_model.empty(), "--mock-data takes no --tokenizer-model");
    MOE_CHECK(!null_tokenizer || given("--vocab-size"),
              "--tokenizer-type NullTokenizer needs --vocab-size (its ids)");
    MOE_CHECK(!given("--split") && !given("--data-cache-path"),
              given("--split") ? "--split" : "--data-cache-path", " needs --data-path");
    MOE_CHECK(!given("--sample-tokens") || r.sample_tokens == 0,
              "--sample-tokens: --mock-data has no tokenizer to print text with");
    r.sample_tokens = 0;
  } else if (r.data_path.empty()) {
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
    // No tokenizer named: a --load model folder's tokenizer.json (the data was made with it).
    if (r.tokenizer_type.empty() && r.tokenizer_model.empty() && !r.load.empty() &&
        std::filesystem::is_regular_file(std::filesystem::path(r.load) / "tokenizer.json") &&
        is_model_folder(r.load))
      r.tokenizer_model = (std::filesystem::path(r.load) / "tokenizer.json").string();
    const std::unique_ptr<data::Tokenizer> tokenizer =
        data::make_tokenizer(r.tokenizer_type, r.tokenizer_model);
    const int64_t tokens = tokenizer->vocab_size();
    // Megatron sizes the embedding from the tokenizer (_vocab_size_with_padding); a zoo model
    // or --vocab-size keeps its own, which must hold every id.
    if (r.model_preset == "default" && !given("--vocab-size"))
      m.vocab_size = (tokens + 127) / 128 * 128;
    MOE_CHECK(m.vocab_size >= tokens, "--vocab-size ", m.vocab_size, " of --model ", r.model_preset,
              " is smaller than the tokenizer's ", tokens, " ids (", tokenizer->description(), ")");
  }
  MOE_CHECK(r.save_interval == 0 || !r.save.empty(), "--save-interval needs --save");
  check_profile_flags(r);
  flags::finish_recompute_flags(s);
  MOE_CHECK(!r.finetune || !r.load.empty(), "--finetune needs --load");
  MOE_CHECK(!r.no_load_optim || !r.load.empty(), "--no-load-optim needs --load");

  m.validate();
  t.validate();
  MOE_CHECK(!t.calculate_per_token_loss || m.mtp_num_layers == 0,
            "--calculate-per-token-loss with --mtp-num-layers is not supported yet (the MTP loss "
            "is a mean per depth); drop one of them");
  if (r.moe_use_upcycling) {
    MOE_CHECK(!r.load.empty(),
              "--moe-use-upcycling needs --load: the dense checkpoint to upcycle "
              "(a training checkpoint folder or a model folder)");
    MOE_CHECK(!r.save.empty(),
              "--moe-use-upcycling needs --save: the upcycled model is saved "
              "there as iteration 0 before training");
    checkpoint::check_upcycling_target(m, r.moe_upcycling_granularity);
  } else {
    MOE_CHECK(r.moe_upcycling_granularity == 1, "--moe-upcycling-granularity ",
              r.moe_upcycling_granularity, " needs --moe-use-upcycling");
  }
  // Megatron-LM has no default learning rate (--lr None: its scheduler stops on it). `moe train`
  // with no flags at all is the default run; with flags, --lr is needed unless no iteration runs.
  MOE_CHECK(given("--lr") || t.train_iters == 0,
            "moe train: --lr is required when flags are given and iterations run (--train-iters "
            "or --train-samples; Megatron-LM has no default learning rate); `moe train` with no "
            "flags is the default run: ",
            default_run_flags_text());
  (void)LrSchedule(resolved_schedule(t));  // names the flags of an inconsistent schedule
}

// A dropout probability for the run's description; Megatron's default said as such.
std::string dropout_text(const TrainRunConfig& r, const std::string& flag, double p) {
  const bool given = std::any_of(r.given.begin(), r.given.end(),
                                 [&](const std::string& g) { return g.rfind(flag + " ", 0) == 0; });
  const bool megatron_default = !r.default_run && !given && p == kMegatronDropout;
  return moe::detail::concat(p, megatron_default ? " (Megatron's default)" : "");
}

// The warm-up as the flags give it.
std::string warmup_text(const LrScheduleConfig& l) {
  if (l.warmup_fraction >= 0) return moe::detail::concat(l.warmup_fraction, " of the decay");
  if (l.warmup_samples > 0) return moe::detail::concat(l.warmup_samples, " samples");
  return std::to_string(l.warmup_iters);
}

std::string yaml_value_text(const YAML::Node& node, const std::string& key,
                            const std::string& path) {
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
    std::string head =
        "  " + e.flag.name + (e.flag.value_name.empty() ? "" : " " + e.flag.value_name);
    out << head;
    if (head.size() < 44)
      out << std::string(44 - head.size(), ' ');
    else
      out << "\n" << std::string(44, ' ');
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

std::vector<std::string> default_run_flags() {
  // default_train_run() as flags: parse_train_args(default_run_flags()) gives the same training
  // settings (a test holds the two together).
  return {"--micro-batch-size",
          "8",
          "--global-batch-size",
          "16",
          "--seq-length",
          "128",
          "--train-iters",
          "500",
          "--lr",
          "3e-3",
          "--min-lr",
          "3e-4",
          "--lr-decay-style",
          "cosine",
          "--lr-warmup-iters",
          "50",
          "--weight-decay",
          "0.1",
          "--adam-beta2",
          "0.95",
          "--log-interval",
          "10",
          "--eval-interval",
          "100",
          "--eval-iters",
          "2",
          "--nan-action",
          "skip"};
}

std::string default_run_flags_text() {
  std::string text;
  for (const std::string& f : default_run_flags()) text += (text.empty() ? "" : " ") + f;
  return text;
}

TrainRunConfig megatron_default_run() {
  TrainRunConfig r;
  r.model_preset = "default";
  r.model = default_train_model();
  TrainConfig& t = r.train;
  // Megatron-LM's defaults (megatron/training/arguments.py and its config dataclasses).
  // --micro-batch-size, --seq-length and --train-iters have none in Megatron (it stops without
  // them): moecore takes the default run's (8, 128, 500), with Megatron's global batch of
  // micro-batch x data-parallel size.
  t.micro_batch_size = 8;
  t.global_batch_size = 8;
  r.global_batch_follows_data_parallel = true;
  t.seq_length = 128;
  t.train_iters = 500;
  t.log_interval = 100;  // LoggerConfig.log_interval
  t.eval_interval = 0;   // ValidationConfig.eval_interval None: no evaluation during training
  t.eval_iters = 100;    // ValidationConfig.eval_iters
  t.seed = 1234;         // RNGConfig.seed
  LrScheduleConfig& l = t.schedule;
  l.lr = 0.0;  // --lr None: required when iterations are run
  l.min_lr = 0.0;
  l.warmup_init = 0.0;
  l.warmup_iters = 0;
  l.decay_style = "linear";
  l.decay_iters = 0;  // None: --train-iters
  l.wsd_decay_style = "exponential";
  l.wsd_decay_iters = 0;
  l.start_weight_decay = l.end_weight_decay = 0.01;  // --weight-decay
  l.weight_decay_incr_style = "constant";
  t.optimizer.beta1 = 0.9;
  t.optimizer.beta2 = 0.999;
  t.optimizer.eps = 1e-8;
  t.optimizer.clip_grad = 1.0;
  // --check-for-nan-in-loss-and-grad is on by default (--no-check-for-nan-in-loss-and-grad
  // turns it off): a NaN stops the run.
  t.nan_action = NanAction::stop;
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
    run.default_run = true;
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
  s.run = megatron_default_run();
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

  // No --model and --load of a model folder (a Hugging Face folder, `moe convert` output): the
  // run's model is that folder's, as `moe train --load HF_DIR --finetune` expects. Later model
  // flags override it, as they override --model.
  if (!s.values.count("--model") && s.values.count("--load") &&
      is_model_folder(s.values["--load"])) {
    s.run.model_preset = s.values["--load"];
    s.run.model = flags::preset_model(s.run.model_preset);
    s.run.model_from_load = true;
    s.preset_head_dim_derived = head_dim_is_derived(s.run.model);
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
           {{"micro_batch_size", t.micro_batch_size},
            {"global_batch_size", t.global_batch_size},
            {"seq_length", t.seq_length},
            {"train_iters", t.train_iters},
            {"seed", t.seed},
            {"eval_interval", t.eval_interval},
            {"eval_iters", t.eval_iters},
            {"log_interval", t.log_interval},
            {"nan_action", t.nan_action == NanAction::stop ? "stop" : "skip"},
            {"train_samples", t.train_samples},
            {"lr", l.lr},
            {"min_lr", l.min_lr},
            {"lr_warmup_init", l.warmup_init},
            {"lr_warmup_iters", l.warmup_iters},
            {"lr_warmup_samples", l.warmup_samples},
            {"lr_warmup_fraction",
             l.warmup_fraction >= 0 ? nlohmann::json(l.warmup_fraction) : nlohmann::json()},
            {"lr_decay_style", l.decay_style},
            {"lr_decay_iters", l.decay_iters},
            {"lr_decay_samples", l.decay_samples},
            {"lr_wsd_decay_style", l.wsd_decay_style},
            {"lr_wsd_decay_iters", l.wsd_decay_iters},
            {"lr_wsd_decay_samples", l.wsd_decay_samples},
            {"start_weight_decay", l.start_weight_decay},
            {"end_weight_decay", l.end_weight_decay},
            {"weight_decay_incr_style", l.weight_decay_incr_style},
            {"adam_beta1", o.beta1},
            {"adam_beta2", o.beta2},
            {"adam_eps", o.eps},
            {"clip_grad", o.clip_grad},
            {"exp_avg_dtype", dtype_name(o.exp_avg_dtype)},
            {"exp_avg_sq_dtype", dtype_name(o.exp_avg_sq_dtype)}}}};
}

std::string describe(const TrainRunConfig& r, int64_t dp) {
  const nn::ModelConfig& m = r.model;
  const TrainConfig& t = r.train;
  const nn::ModelParamCount count = nn::count_parameters(m);
  std::ostringstream out;
  out << "model " << m.name << " (" << (r.model_from_load ? "the --load model folder " : "--model ")
      << r.model_preset << "): " << m.num_layers << " layers, hidden " << m.hidden_size << ", "
      << m.num_attention_heads << " heads / " << m.num_query_groups << " query groups, "
      << m.moe.num_experts << " experts top-" << m.moe.moe_router_topk << ", vocab " << m.vocab_size
      << "; parameters " << nn::format_param_count(count.total()) << " total, "
      << nn::format_param_count(count.main.active() + count.mtp.active()) << " active\n";
  out << "training: " << t.train_iters << " iterations of " << t.global_batch_size << " samples ("
      << t.num_microbatches(dp) << " micro-batches of " << t.micro_batch_size;
  if (dp > 1) out << " on each of " << dp << " data-parallel ranks";
  out << ") x " << t.seq_length << " tokens";
  if (t.train_samples > 0)
    out << " (--train-samples " << t.train_samples << " / the global batch"
        << (t.train_samples % t.global_batch_size
                ? moe::detail::concat(": the last ", t.train_samples % t.global_batch_size,
                                      " samples are not trained")
                : std::string())
        << "; the schedules count samples)";
  const dist::ParallelConfig& p = r.parallel;
  if (p.tensor_model_parallel_size > 1)
    out << "; TP " << p.tensor_model_parallel_size
        << (r.sequence_parallel ? " with sequence parallelism" : " without sequence parallelism");
  if (p.pipeline_model_parallel_size > 1) {
    out << "; PP " << p.pipeline_model_parallel_size;
    if (r.pipeline.virtual_stages.value_or(1) > 1 || r.num_layers_per_virtual_pipeline_stage > 0)
      out << " interleaved";
    if (!r.pipeline.layout.empty()) out << " (layout " << r.pipeline.layout << ")";
  }
  if (p.context_parallel_size > 1)
    out << "; CP " << p.context_parallel_size << " ("
        << (r.cp_comm_type == "all_gather" ? "keys and values all-gathered"
            : r.cp_comm_type == "a2a"      ? "a2a: heads traded for the sequence"
                                           : "p2p: a ring of key/value exchanges")
        << ")";
  if (r.recompute.granularity != nn::RecomputeGranularity::none)
    out << "; recompute " << nn::describe_recompute(r.recompute);
  out << "; dropout " << dropout_text(r, "--attention-dropout", m.attention_dropout)
      << " attention, " << dropout_text(r, "--hidden-dropout", m.hidden_dropout) << " hidden";
  out << "; lr " << t.schedule.lr << " " << t.schedule.decay_style << " to " << t.schedule.min_lr
      << ", warm-up " << warmup_text(t.schedule) << "; weight decay "
      << t.schedule.start_weight_decay << "; clip " << t.optimizer.clip_grad << "; seed " << t.seed
      << "; nan action " << (t.nan_action == NanAction::stop ? "stop" : "skip") << "\n";
  if (r.default_run) {
    out << "default run (moe train without flags): " << default_run_flags_text() << " --save "
        << kDefaultRunSave << "\n";
  } else if (!r.given.empty()) {
    out << "flags:";
    for (const std::string& g : r.given) out << " " << g;
    out << "\n";
  }
  return out.str();
}

}  // namespace moe::train
