// `moe train`'s run: the resolved TrainRunConfig (train_args.h) -> the model on its device, the
// training / validation sources (Megatron's GPT datasets over --data-path, built as
// data/gpt_dataset_builder.h builds them, or else the built-in corpus), the Trainer, the
// logger; then the loop with evaluation every --eval-interval and the final evaluation.
//
// Hook points (TrainHooks), which `moe train` sets with standard_train_hooks() and tests replace:
//   prepare / load / save : training checkpoints. standard_train_hooks() sets them to
//     train_checkpoint.h's load_training_checkpoint / save_training_checkpoint. Without them
//     --load, --save, --save-interval, --finetune and --no-load-optim are refused before
//     anything runs ("not supported by this build yet"), never ignored.
//   after_training : standard_train_hooks() prints --sample-tokens bytes of text sampled from
//     the trained model (generate.h's generate_text) through the run's tokenizer (byte tokens
//     unless --tokenizer-model is given).
// --moe-per-layer-logging: the trainer's per-micro-batch callback feeds train_log.h's
// MoELayerStatsCollector.
// --load (standard_train_hooks; the kinds are train_checkpoint.h's classify_load_folder):
//   a training checkpoint (save folder or iteration folder): resumed (verified first);
//   a model folder (`moe convert` output, a Hugging Face folder): its weights, the optimizer
//     fresh, from iteration 0 (as --finetune), its tensor shapes must be the run's;
//   nothing there yet: from scratch, as Megatron, unless --finetune (then an error: there is
//     nothing to fine-tune); iteration folders without the tracker: an error listing them.
// --save never replaces a saved iteration of another run (standard_train_hooks): Megatron
// refuses to write into an existing iteration folder; moecore applies that rule before
// anything trains, refusing a --save folder that holds an iteration newer than the one the run
// starts from (it would get older iterations beside the newer ones, its tracker moved back,
// and sooner or later an iteration folder written over). A save of the very iteration the run
// loaded, with nothing trained since, is skipped. The default run (`moe train`, no flags)
// replaces its own earlier checkpoint in checkpoints/default, and says so.
// Every phase is reported to interrupt_report.h (what SIGINT / SIGTERM print).
// --moe-use-upcycling: the load hook first makes the MoE model from --load's dense checkpoint
// and saves it to --save as iteration 0 (train_upcycle.h); an MoE --load resumes as usual.
//
// Several ranks (moe launch, torchrun, srun, mpirun): every rank meets the others
// (dist::init_distributed), rank 0 prints the mapping and every rank's device, and the ranks
// train together (run_training_on):
//   mapping   dist::ParallelState over the world with --expert-model-parallel-size and
//             --expert-tensor-parallel-size (ETP x EP must divide the world size; TP = PP = CP =
//             1 in this build), so DP = world and EDP = world / (ETP x EP)
//   model     every rank builds the same global model (initialisation is by global index: a
//             rank's expert shard equals that part of the one-rank model), its MoE layers on
//             the ParallelState's groups (nn::moe_groups_of)
//   trainer   Trainer with TrainParallel{state, --use-distributed-optimizer, ...}: each rank
//             reads its part of each global batch (--global-batch-size must be a multiple of
//             --micro-batch-size x DP; given only --micro-batch-size it is micro x DP, as
//             Megatron's default), gradients reduced over DP (dense) and EDP (experts)
//   device    this rank's (init_distributed: the GPU of its local rank), the CPU with --cpu or
//             without GPUs
//   output    rank 0 alone prints the log and writes metrics.jsonl and TensorBoard; every rank
//             runs the same evaluations and the same sample forwards (an EP forward is
//             collective), and rank 0 prints its sample; all decisions (skip, stop, exit on a
//             signal) are every rank's
//   memory    rank 0 prints every rank's parameter, gradient and optimizer-state bytes at start
//             and its peak after the first iteration (memory_report.h)
//   checkpoints  every rank takes part in each save and load (train_checkpoint.h: each rank
//             writes the slices it owns; a load reads this rank's slices, so the mapping may
//             differ from the saved run's); not yet on several ranks: --moe-use-upcycling, and a
//             model folder in --load
// With one rank nothing of this runs: the run is the one-device run above.
// --exit-signal-handler (exit_signal.h): after each iteration the ranks agree whether SIGTERM or
// SIGINT arrived; if so the run saves (--save), says so and returns (TrainRunResult::exit_signal)
// without the final evaluation and the sample.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <vector>

#include "moe/dist/parallel_state.h"
#include "moe/dist/process_group.h"
#include "moe/nn/gpt_model.h"
#include "moe/nn/moe_groups.h"
#include "moe/train/batch_source.h"
#include "moe/train/train_args.h"
#include "moe/train/train_log.h"
#include "moe/train/trainer.h"

namespace moe::train {

// The ranks a run trains on, as this rank sees them.
struct TrainWorld {
  std::shared_ptr<dist::ProcessGroup> group;  // every rank; null: this rank alone
  Device device = Device::cpu();              // this rank's
  // The interrupt report (interrupt_report.h) is one per process: with ranks as threads of one
  // process (tests) only one of them may write it.
  bool reports_interrupts = true;

  int rank() const { return group ? group->rank() : 0; }
  int size() const { return group ? group->size() : 1; }
};

// What a hook sees: everything the run built.
struct TrainSession {
  const TrainRunConfig& config;
  nn::GPTModel& model;
  Trainer& trainer;
  BatchSource& train_data;
  BatchSource* valid_data;  // null without validation data
  TrainLogger& logger;      // prints and writes on rank 0 only
  const TrainWorld& world;
};

struct TrainHooks {
  // Before anything is built or written (the metrics file included): refuses --load / --save
  // folders the run cannot use.
  std::function<void(const TrainRunConfig&)> prepare;
  // --load DIR: restore model, optimizer and trainer state (honouring --finetune and
  // --no-load-optim) before the first step.
  std::function<void(TrainSession&)> load;
  // --save DIR: called every --save-interval iterations and once at the end.
  std::function<void(TrainSession&)> save;
  // After the last iteration and the final evaluation (and the final save).
  std::function<void(TrainSession&)> after_training;
};

struct TrainRunResult {
  int64_t iterations = 0;              // iterations run by this call
  std::vector<double> losses;          // lm loss of every iteration (NaN when skipped)
  std::vector<std::pair<int64_t, double>> valid_losses;  // (iteration, lm loss)
  double seconds = 0.0;                // wall time of the loop (evaluations included)
  // --exit-signal-handler: the signal that ended the run early (SIGTERM, SIGINT), 0 otherwise.
  int exit_signal = 0;
};

struct StandardHookOptions {
  // Saves may replace saved iterations of earlier runs in --save (the default run's own
  // checkpoints/default); otherwise such a --save is refused before training (see above).
  bool replace_earlier_saves = false;
};

// The hooks of the `moe` program: checkpoints and the text sample (see above).
TrainHooks standard_train_hooks(const StandardHookOptions& options = {});

// The device of a one-rank run: the first GPU unless --cpu or there is none.
Device train_device(const TrainRunConfig& config);

// Builds and runs everything; prints the setup and the log lines to `out`. Throws moe::Error
// for a refused combination (checkpoint flags without hooks, --bf16 on the CPU, ...) before
// training starts. A launch of several ranks meets the others first (see above).
TrainRunResult run_training(const TrainRunConfig& config, const TrainHooks& hooks = {},
                            std::FILE* out = stdout);

// The run on the ranks of `world`, after they met: every rank calls it with the same config
// (run_training does, and tests with ranks as threads of the Local backend). Only world rank 0
// writes to `out`.
TrainRunResult run_training_on(const TrainRunConfig& config, const TrainWorld& world,
                               const TrainHooks& hooks = {}, std::FILE* out = stdout);

}  // namespace moe::train
