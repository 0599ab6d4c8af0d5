// The flag table of `moe train` (train_args.h) as the files that fill it share it: what the
// flags write while they are applied (ParseState), a table entry (Entry), the value parsers
// (their errors name the flag), and one function per part of the run config the flags fill.
// build_table() (train_args.cpp) concatenates the parts in a fixed order, which is the order
// the flags are applied in and `moe train --help` lists them:
//   model (train_flags_model.cpp), MLA (train_flags_mla.cpp), MoE (train_flags_model.cpp);
//   parallel, batches, schedule, optimizer, precision (train_flags_training.cpp); logging,
//   profiling, checkpoints, data (train_flags_io.cpp).
// Internal to train_args: nothing else includes it.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "moe/train/train_args.h"

namespace moe::train::flags {

// What the flags write while they are applied; finish() turns the pending parts (those that
// depend on several flags) into the final config.
struct ParseState {
  TrainRunConfig run;
  std::string moe_layer_freq;  // --moe-layer-freq, applied once num_layers is final
  bool start_wd_given = false, end_wd_given = false;
  bool precision_aware = false;  // --use-precision-aware-optimizer
  std::string exp_avg_dtype, exp_avg_sq_dtype;
  bool nan_check = false;  // --check-for-nan-in-loss-and-grad
  std::string nan_action;  // --nan-action
  // The preset's head dim is its hidden / heads (kv_channels 0 or equal to it): it follows
  // --hidden-size / --num-attention-heads as Megatron's derived kv_channels does (finish()).
  bool preset_head_dim_derived = true;
  std::string rope_type;                      // --rope-type ("": MLA's yarn, else rope)
  std::map<std::string, std::string> values;  // every given flag -> its text
};

// Megatron's kv_channels: a model whose head dim is hidden / heads has none of its own.
bool head_dim_is_derived(const nn::ModelConfig& m);
// --model's value: "default", a model folder (HF or moecore), an HF config.json, a
// model_config.json file, or a zoo name.
nn::ModelConfig preset_model(const std::string& preset);

using Apply = std::function<void(ParseState&, const std::string& value)>;

struct Entry {
  TrainFlag flag;
  Apply apply;  // unset when refused
};

// ---- value parsers: errors name the flag ----------------------------------------------------
int64_t as_int(const std::string& flag, const std::string& v);
// An integer >= min.
int64_t as_count(const std::string& flag, const std::string& v, int64_t min);
// Every float flag goes through here: inf and nan (which strtod reads) are refused at parse
// time, naming the flag, rather than reaching the optimizer or the schedule.
double as_double(const std::string& flag, const std::string& v);
bool as_bool(const std::string& flag, const std::string& v);
// A list value: "a b c" (the command line's words after the flag) or "[a,b,c]" (YAML).
std::vector<std::string> split_values(const std::string& v);
// v itself when it is one of the choices.
std::string one_of(const std::string& flag, const std::string& v,
                   std::initializer_list<const char*> choices);

// ---- entries -----------------------------------------------------------------------------------
Entry value(std::string name, std::string value_name, std::string help, Apply apply);
Entry toggle(std::string name, std::string help, Apply apply);
Entry refused(std::string name, std::string value_name, std::string why);

// ---- the parts of the table, in build_table()'s order ------------------------------------------
void add_model_flags(std::vector<Entry>& t);  // --model and the model's shape (model)
// --multi-latent-attention, its shape and YaRN (train_flags_mla.cpp); finish_mla_flags checks
// and completes them once every flag is applied.
void add_mla_flags(std::vector<Entry>& t);
void finish_mla_flags(ParseState& s);
void add_moe_flags(std::vector<Entry>& t);        // the MoE block (model.moe)
void add_parallel_flags(std::vector<Entry>& t);   // parallel sizes, DDP, distributed backend
void add_batch_flags(std::vector<Entry>& t);      // batches, length, iterations, seed (train)
void add_schedule_flags(std::vector<Entry>& t);   // lr and weight decay (train.schedule)
void add_optimizer_flags(std::vector<Entry>& t);  // AdamW (train.optimizer)
void add_precision_flags(std::vector<Entry>& t);  // precision, device, NaN handling
void add_logging_flags(std::vector<Entry>& t);    // evaluation and logging
void add_profile_flags(std::vector<Entry>& t);    // --profile and its window (profile)
// Activation recomputation (train_flags_recompute.cpp); finish_recompute_flags applies
// Megatron's rules once every flag is applied.
void add_recompute_flags(std::vector<Entry>& t);
void finish_recompute_flags(ParseState& s);
void add_checkpoint_flags(std::vector<Entry>& t);  // --save, --load, upcycling
void add_data_flags(std::vector<Entry>& t);        // data, tokenizer, the sample, --config
// Megatron flags accepted because moecore always does it, checkpoint formats, refused --moe-*.
void add_megatron_surface_flags(std::vector<Entry>& t);

}  // namespace moe::train::flags
