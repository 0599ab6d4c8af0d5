// `moe train`'s flags -> the resolved run: the model (a zoo preset, the default tiny byte-level
// MoE, or a model_config.json, with Megatron's shape and MoE flags as overrides), the trainer's
// config (batches, schedules, AdamW, NaN action) and the run's own options (device, logging,
// checkpoints).
//
// Megatron-LM's flag names, one table (train_flags(): name, value, what it sets) documents every
// flag this build knows; `moe train --help` prints it. Sources, later overriding earlier:
//   1. the default run's values (default_train_run())
//   2. the --model preset's model
//   3. --config FILE.yaml: keys are the flag names without the leading dashes, with '-' or '_'
//      (num_layers: 4, moe-router-topk: 2, bf16: true, moe_layer_freq: [0, 1, 1])
//   4. the command line (--flag value, --flag=value; switches take no value)
// Flags are applied in the table's order, not the command line's: --model first, then the model
// overrides, then the rest, so `--num-layers 4 --model qwen3-30b-a3b` is the cut Qwen3.
//
// Defaults. `moe train` with no flags at all is the default run (default_train_run(), printed
// as "default run: ..."). With any flag given, an absent flag takes Megatron-LM's default
// (megatron_default_run(); tests/train/train_args_megatron_test.cpp holds them against
// Megatron's arguments.py): the model's own values come from --model (default: the built-in
// tiny MoE), as a Megatron recipe passes its model's flags, except --attention-dropout and
// --hidden-dropout, which are Megatron's 0.1 unless given (also over a --load model folder's
// own: kMegatronDropout); --lr, which Megatron has no default for, is required when iterations
// run (as Megatron stops without it); --micro-batch-size, --seq-length and --train-iters, which
// Megatron requires too (or --train-samples), take the default run's 8, 128 and 500 (the
// global batch: micro-batch x data-parallel size).
// Defaults that follow other flags (each said in its help line): --global-batch-size =
// --micro-batch-size x the data-parallel size when only that is given (Megatron's; the run
// multiplies, knowing the world: global_batch_follows_data_parallel),
// --lr-decay-iters = --train-iters, --lr-decay-samples = --train-samples (Megatron's
// sample-based training: --train-samples N runs N / global batch iterations, its schedule
// counted in samples; iteration- and sample-based flags exclude each other, as Megatron asserts);
// the head dim (--kv-channels) = --hidden-size / --num-attention-heads when either is given
// on a preset whose head dim is its own hidden / heads (Megatron's rule: the division must
// be exact unless --kv-channels is given); --moe-aux-loss-coeff = 0 when
// --moe-router-load-balancing-type sinkhorn or none is given without it (the preset's
// coefficient belongs to its aux-loss balancing). Float values must be finite.
//
// Never ignored: an unknown flag or YAML key, a flag this build refuses (--tensor-model-parallel-
// size, --pipeline-model-parallel-size and --context-parallel-size above 1, --fp16, ...) and an
// invalid combination all throw moe::Error naming the flag.
// --save / --load / --save-interval / --finetune / --no-load-optim are parsed here; the run
// refuses them unless the build wires training checkpoints (train_run.h's TrainHooks).
// --moe-use-upcycling needs --load and --save; what can be checked without the dense checkpoint
// (granularity, experts, shared expert) is checked here, the rest when --load is read.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/dist/init.h"
#include "moe/nn/model_config.h"
#include "moe/nn/pipeline_layout.h"
#include "moe/nn/recompute.h"
#include "moe/train/step_profiler.h"
#include "moe/train/trainer.h"

namespace moe::train {

struct TrainRunConfig {
  std::string model_preset = "default";  // --model: "default", a zoo name, a .json file or a
                                         // model folder
  bool model_from_load = false;          // no --model: the model of the --load model folder
  nn::ModelConfig model;                 // after the overrides; validate()d
  TrainConfig train;                     // after the overrides; validate()d

  bool bf16 = false;  // --bf16: bf16 parameters and activations, fp32 masters (GPU only)
  bool cpu = false;   // --cpu (moecore): the CPU even when a GPU is present
  // --distributed-backend, --distributed-timeout-minutes: how the ranks of a multi-process
  // launch meet (dist/init.h).
  dist::DistributedOptions distributed;
  // The parallel mapping of a multi-process run (dist/parallel_state.h): --expert-model-
  // parallel-size, --expert-tensor-parallel-size (0: --tensor-model-parallel-size, Megatron's
  // default), --tensor-model-parallel-size, --context-parallel-size,
  // --pipeline-model-parallel-size (its layout below). The model's
  // moe.expert_model_parallel_size / expert_tensor_parallel_size say the same sizes (resolved).
  // The world size is known at run time only: train_run.h checks that ETP x EP divides it.
  dist::ParallelConfig parallel;
  bool sequence_parallel = false;  // --sequence-parallel (with TP > 1)
  // Pipeline parallelism's layout flags (nn/pipeline_layout.h): --num-virtual-stages-per-
  // pipeline-rank, --decoder-first/last-pipeline-num-layers, --account-for-embedding/loss-in-
  // pipeline-split, --pipeline-model-parallel-layout; the sizes of the model and
  // --pipeline-model-parallel-size are filled in by the run.
  nn::PipelineLayoutOptions pipeline;
  // Activation recomputation (nn/recompute.h): --recompute-granularity, --recompute-method,
  // --recompute-num-layers, --recompute-modules, --moe-layer-recompute.
  nn::RecomputeConfig recompute;
  int64_t num_layers_per_virtual_pipeline_stage = 0;  // Megatron's flag (0: not given)
  std::string cp_comm_type = "p2p";  // --cp-comm-type: p2p (a ring), all_gather or a2a
  // Megatron's DDP options (train/data_parallel.h): --use-distributed-optimizer,
  // --overlap-grad-reduce, --overlap-param-gather, --ddp-bucket-size, --grad-reduce-in-bf16.
  // One rank has nothing to reduce or shard: they change nothing there.
  DdpConfig ddp;
  // --global-batch-size was not given but --micro-batch-size was: the global batch is Megatron's
  // micro x data-parallel size (train.global_batch_size holds micro x 1 until the run knows
  // the data-parallel size).
  bool global_batch_follows_data_parallel = false;
  // --exit-signal-handler: SIGTERM / SIGINT end the run after the current iteration (every rank
  // agrees), with a save when --save is given, and exit status 0 (exit_signal.h).
  bool exit_signal_handler = false;

  // Logging.
  std::string tensorboard_dir;         // --tensorboard-dir
  std::string log_dir;                 // --log-dir (moecore): metrics.jsonl goes there
  std::string metrics_jsonl;           // --metrics-jsonl (moecore): the JSONL file itself
  bool moe_per_layer_logging = false;  // --moe-per-layer-logging
  // --pipeline-timeline (moecore): after the first iteration, the schedule every pipeline rank
  // executed, drawn (train/pipeline_timeline_report.h).
  bool pipeline_timeline = false;
  // --profile, --profile-step-start / -end, --profile-ranks, --use-pytorch-profiler,
  // --profile-dir (moecore): train/step_profiler.h.
  ProfileConfig profile;

  // Checkpoints (train_run.h refuses them when the build has no checkpoint hooks).
  std::string save;            // --save DIR
  std::string load;            // --load DIR
  int64_t save_interval = 0;   // --save-interval (0: at the end only)
  bool finetune = false;       // --finetune: load the weights only, counters from 0
  bool no_load_optim = false;  // --no-load-optim
  // Upcycling (checkpoint/upcycle.h, train_upcycle.h): --load holds a dense checkpoint; the MoE
  // model of the flags is made from it and saved to --save as iteration 0 before training. A
  // --load that already holds an MoE checkpoint (the upcycled run, resumed) loads as usual.
  bool moe_use_upcycling = false;         // --moe-use-upcycling
  int64_t moe_upcycling_granularity = 1;  // --moe-upcycling-granularity g (1: the default scheme)

  // Data: Megatron's indexed datasets (data/gpt_dataset_builder.h). Empty data_path: the
  // built-in corpus (byte tokens).
  std::vector<std::string> data_path;  // --data-path [W1] PREFIX1 [W2] PREFIX2 ...
  std::string split = "969, 30, 1";    // --split
  std::string data_cache_path;         // --data-cache-path ("" : <prefix>/cache/...)
  std::string tokenizer_type;          // --tokenizer-type ("" : from --tokenizer-model)
  std::string tokenizer_model;         // --tokenizer-model (a tokenizer.json or its folder)
  // --mock-data: synthetic random tokens of the model's vocabulary (mock_batch_source.h) instead
  // of a corpus, as Megatron's (with --tokenizer-type NullTokenizer --vocab-size N); no sample.
  bool mock_data = false;

  int64_t sample_tokens = 200;  // --sample-tokens (moecore): text sampled after training

  std::string config_file;   // --config
  bool default_run = false;  // `moe train` without flags: default_train_run()
  // The flags that were given ("--name value"), in table order, for the run's log.
  std::vector<std::string> given;

  // Where the JSONL metrics go: --metrics-jsonl, else <--log-dir>/metrics.jsonl, else
  // <--save>/metrics.jsonl, else "" (none).
  std::string metrics_path() const;
};

struct TrainFlag {
  std::string name;        // "--num-layers"
  std::string value_name;  // "N", "STYLE", ...; empty for a switch
  std::string help;        // what it sets, its choices
  std::string refused;     // non-empty: why this build stops on the flag
};

// The table: every flag `moe train` knows, in the order they are applied.
std::vector<TrainFlag> train_flags();
// The help text of the table.
std::string train_flags_help();

// `moe train` with no arguments at all also saves its checkpoint here (relative to the working
// directory), so that `moe generate --load checkpoints/default` can read it.
inline constexpr const char* kDefaultRunSave = "checkpoints/default";

// Megatron-LM's --attention-dropout and --hidden-dropout: what a run with flags takes unless
// they are given.
inline constexpr double kMegatronDropout = 0.1;

// The default run: the built-in tiny byte-level MoE and the training values of `moe train`
// with no flags at all (describe() prints them as "default run: ...").
TrainRunConfig default_train_run();
// The default run's training values as flags (parse_train_args of them trains as it does).
std::vector<std::string> default_run_flags();
std::string default_run_flags_text();
// What any flag given starts from: the default model (--model default) and Megatron-LM's
// defaults for every training flag (min-lr 0, no warm-up, linear decay, weight decay 0.01,
// Adam betas 0.9 / 0.999, log interval 100, no evaluation during training, eval-iters 100, NaN
// checks on). Megatron has no default --lr: parse_train_args requires it when --train-iters > 0.
TrainRunConfig megatron_default_run();
// The default run's model ("--model default"): 4 layers, hidden 64, 8 experts top-2, the byte
// vocabulary (257 ids) padded to 384 as Megatron pads it (data/byte_tokenizer.h).
nn::ModelConfig default_train_model();

// argv after "train" -> the resolved run. `args` may hold --config FILE. No arguments at all:
// default_train_run() with --save kDefaultRunSave.
TrainRunConfig parse_train_args(const std::vector<std::string>& args);

// YAML file -> (flag name "--x-y", value text) pairs, in file order. Keys may use '_' or '-';
// lists become "[a,b,c]", booleans "true"/"false". Errors name the file and the key. The file
// is one mapping: a key given twice (also as num_layers and num-layers) and a second YAML
// document are errors naming their lines; a folder is named as one.
std::vector<std::pair<std::string, std::string>> read_train_yaml(const std::string& path);

// The resolved run for a checkpoint's record: {"model_preset", "flags" (as given), "model" (the
// model_config_json form), "train" (batches, schedule, optimizer)}.
nlohmann::json run_config_json(const TrainRunConfig& run);

// A few lines: the model, the device-independent training options, the flags given. With
// data_parallel_size > 1 the micro-batches are said per data-parallel rank.
std::string describe(const TrainRunConfig& run, int64_t data_parallel_size = 1);

}  // namespace moe::train
