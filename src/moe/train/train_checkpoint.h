// Training checkpoints (`moe train --save / --load / --save-interval`, Megatron's layout in
// spirit): everything a run needs to continue exactly where it stopped.
//
//   <save>/latest_checkpointed_iteration.txt   the tracker: the iteration of the last save
//                                              ("100", as Megatron writes it)
//   <save>/iter_0000100/                       one folder per saved iteration (7 digits)
//     model_config.json + model*.safetensors   a moecore model folder (checkpoint::save_model):
//                                              parameters in the model's dtype and the buffers
//                                              (expert biases); `moe generate` / load_model
//                                              read it as it is
//     optimizer.safetensors                    AdamW::state(): "<param>.exp_avg",
//                                              "<param>.exp_avg_sq", "<param>.master" (the fp32
//                                              masters of a 16-bit model)
//     trainer_state.json                       TrainerState (iteration, consumed samples,
//                                              skipped iterations, optimizer steps, the
//                                              schedules' position in samples as Megatron's
//                                              scheduler num_steps, data positions), the seed,
//                                              the train config and the run's resolved flags
//                                              (run_config)
//     manifest.json                            {"files": {name: {"size", "crc32c"}}} for every
//                                              other file (CRC-32C, moe::crc32c), written last
//
// A run of several ranks writes the sharded layout instead (checkpoint_slices.h,
// docs/checkpoints.md): model_config.json (without the parallel mapping), trainer_state.json,
// index.json and shard_<r>_of_<w>.safetensors / shard_<r>.json of every rank, each rank writing
// only the slices it owns, all into rank 0's temporary folder, which rank 0 commits after a
// barrier. Any run loads either layout: a whole model reads whole tensors from a one-rank
// checkpoint as before; any other (a sharded checkpoint, or a model or optimizer holding parts
// of tensors) reads its own slices, so the mapping may change between save and load (world
// size, EP, ETP, the distributed optimizer on or off) and the run continues as if it had not.
//
// Saving is crash-safe: the iteration folder is filled under a hidden temporary name next to
// it (every file fsynced), renamed into place in one step (checkpoint::AtomicFolder: an
// existing folder of the same iteration is swapped out atomically), and only then is the
// tracker replaced (io::write_file_atomically). A save interrupted at any point leaves the
// previous checkpoint and the tracker as they were; its hidden temporary folder is ignored by
// loads and removed by the next save (checkpoint::remove_stale_temporaries: only folders of
// that naming whose process is gone and that predate this process).
//
// What --load names (classify_load_folder; `moe train` and `moe generate` read it alike):
//   a save folder (the tracker)        its tracker's iteration folder, verified
//   an iteration folder                itself, verified: one holding manifest.json,
//                                      trainer_state.json or optimizer.safetensors, or named
//                                      iter_NNNNNNN (a missing manifest is then an error)
//   a model folder                     model_config.json or config.json and none of the above
//                                      (`moe convert` output, a Hugging Face folder)
//   iter_NNNNNNN folders, no tracker   an error listing them: never "no checkpoint yet"
//   anything else                      no checkpoint yet
//
// Loading verifies every file against the manifest before reading any of it, checks that the
// checkpoint's model has the model's tensor shapes, and restores weights, buffers, optimizer
// and trainer state. Exactness: the trainer draws no random numbers and the data sources are
// functions of (seed, position) (batch_source.h), so with the same seed a resumed CPU run
// reproduces the uninterrupted run's losses bit for bit. The routers' jitter draw counters
// (--moe-input-jitter-eps) are saved too; a checkpoint written before they were resumes with
// other jitter draws, which LoadResult::warnings says.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "moe/nn/gpt_model.h"
#include "moe/train/trainer.h"

namespace moe::train {

inline constexpr const char* kTrackerFileName = "latest_checkpointed_iteration.txt";

// "iter_0000100" (Megatron's 'iter_{:07d}').
std::string checkpoint_folder_name(int64_t iteration);
// The inverse: "iter_0000100" -> 100; nullopt for any other name.
std::optional<int64_t> checkpoint_folder_iteration(const std::string& name);

// The tracker's iteration, or nullopt when `save_dir` holds no tracker (no checkpoint yet:
// Megatron then starts from scratch). A tracker that is not a non-negative integer is an error
// naming the file.
std::optional<int64_t> latest_checkpoint_iteration(const std::string& save_dir);

// The iterations of the iter_NNNNNNN folders in `dir`, ascending (none when it is not a
// folder). Complete or not: the names alone.
std::vector<int64_t> iteration_folders(const std::string& dir);

enum class LoadFolderKind {
  none,              // no checkpoint yet (missing, empty, or nothing of the kinds below)
  save_folder,       // holds the tracker
  iteration_folder,  // a training checkpoint's iteration folder
  model_folder,      // a model folder that is not a training checkpoint
};
// See "What --load names" above. Throws for a folder holding iter_NNNNNNN folders but no
// tracker, listing them and saying how to resume (recreate the tracker, or --load the
// iteration folder itself).
LoadFolderKind classify_load_folder(const std::string& dir);

// The training checkpoint's iteration folder that `load_dir` (a save folder or an iteration
// folder) names, `iteration` instead of the tracker's when given, verified against its
// manifest (verify_training_checkpoint). Errors name what is missing or wrong.
std::string training_checkpoint_folder(const std::string& load_dir,
                                       std::optional<int64_t> iteration = std::nullopt);

// Test hook: the environment variable MOE_TEST_SAVE_DELAY_MS (milliseconds, read once per
// process) makes every save sleep after the model and optimizer files are in the temporary
// folder and before the trainer state, the manifest and the commit: a window in which tests
// kill the process mid-save. Unset (always, outside tests): no delay.
inline constexpr const char* kTestSaveDelayVariable = "MOE_TEST_SAVE_DELAY_MS";

struct SaveResult {
  std::string folder;  // <save_dir>/iter_NNNNNNN
  // What the clean-up of earlier interrupted saves did ("removed .iter_0000004.tmp.1.2").
  std::vector<std::string> cleaned;
};

// Writes <save_dir>/iter_<trainer.iteration()>/ as described above and points the tracker at
// it. `save_dir` is created if missing. An existing folder of the same iteration is replaced
// atomically (whether a run may do that is the run's decision: train_run.h). `run_config`
// (the resolved flags) is stored for the record; it is not read back into anything. Removes
// the stale temporary folders of earlier interrupted saves first.
SaveResult save_training_checkpoint(const std::string& save_dir, nn::GPTModel& model,
                                    Trainer& trainer, const nlohmann::json& run_config);

struct LoadOptions {
  // Load this iteration instead of the tracker's (Megatron's --ckpt-step; not a `moe train`
  // flag: there, --load the iteration folder itself).
  std::optional<int64_t> iteration;
  // --finetune: weights and buffers only; the trainer starts at iteration 0 with a fresh
  // optimizer (zero moments, step 0, masters from the loaded weights) and data position 0.
  bool finetune = false;
  // --no-load-optim: weights, buffers and trainer counters, but a fresh optimizer (zero
  // moments, step count 0, so the lr schedule starts again as in Megatron).
  bool no_load_optim = false;
  // Accept a trainer whose --seed differs from the checkpoint's (the data order then differs
  // from the saved run's). No `moe train` flag sets it (--finetune skips the check).
  bool no_load_rng = false;
};

struct LoadResult {
  std::string folder;                 // the iteration folder that was read
  int64_t iteration = 0;              // the checkpoint's iteration
  TrainerState saved;                 // the trainer state as saved
  uint64_t seed = 0;                  // the saved run's --seed
  nlohmann::json run_config;          // the saved run's resolved flags
  bool loaded_optimizer = false;      // moments, masters and step count restored
  bool loaded_trainer_state = false;  // iteration, samples, data positions restored
  // Model config fields that differ without changing any tensor shape ("moe.moe_aux_loss_coeff:
  // checkpoint 0.01, model 0.02"), and other things the caller should log.
  std::vector<std::string> config_differences;
  std::vector<std::string> warnings;
};

// Loads the checkpoint `options.iteration`, or the tracker's, of `load_dir` (`load_dir` may
// also be an iteration folder itself: one holding manifest.json). In order:
//   - every file listed in manifest.json exists, has its size and its CRC-32C, and the
//     manifest lists the files a training checkpoint needs; else a moe::Error naming the file
//     and what is wrong (missing, truncated, checksum mismatch, malformed JSON);
//   - the checkpoint's model config gives the model's tensor layout; else an error naming every
//     differing config field with both values (fields that differ without changing shapes are
//     reported in config_differences);
//   - weights and buffers are loaded into `model`; parameters with an fp32 master in
//     optimizer.safetensors take the master (cast to the model's dtype: bit-equal to the saved
//     bf16 weights, and the full fp32 value for an f32 model);
//   - with `trainer` (built on `model`, fresh): optimizer state unless no_load_optim or
//     finetune, trainer state (Trainer::restore, which also positions the data sources) unless
//     finetune. Without `trainer` only the model is loaded.
LoadResult load_training_checkpoint(const std::string& load_dir, nn::GPTModel& model,
                                    Trainer* trainer, const LoadOptions& options = {});

// The manifest check alone on an iteration folder (what load does first): throws moe::Error
// naming the first bad file. `moe generate` and `moe train` both read checkpoints through it.
void verify_training_checkpoint(const std::string& folder);

// --load of a model folder (LoadFolderKind::model_folder: `moe convert` output, a Hugging Face
// folder): its weights and buffers into `model`, whose tensor shapes must be the folder's
// config's (else an error naming every differing config field, nothing loaded); with
// `trainer`, the optimizer's fp32 masters are taken from the loaded weights and the trainer
// starts at iteration 0 with fresh moments. Returns the config fields that differ without
// changing any tensor shape, and a line naming the MTP layers the model has beyond the
// folder's (they keep the model's initialisation: a Hugging Face DeepSeek-V3 saved without its
// MTP weights, fine-tuned with --mtp-num-layers).
std::vector<std::string> load_model_folder_weights(const std::string& folder, nn::GPTModel& model,
                                                   Trainer* trainer);

}  // namespace moe::train
