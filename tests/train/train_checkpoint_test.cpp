// Training checkpoints: the layout on disk, exact resume (bitwise the uninterrupted run's
// losses), checksummed files with errors that name the file, config mismatches, --finetune,
// --no-load-optim, the tracker, and saves that were interrupted.
#include "moe/train/train_checkpoint.h"

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/check.h"
#include "io/safetensors_testing.h"
#include "moe/checkpoint/model_io.h"
#include "moe/core/crc32c.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/io/safetensors.h"
#include "moe/train/batch_source.h"
#include "moe/train/trainer.h"
#include "nn/gpt_test_util.h"
#include "train/megatron_scheduler_reference.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;
using io::testing::fails_with;
using io::testing::same_bytes;
using nlohmann::json;

constexpr int64_t kSeq = 8;

// The tiny MoE model (dense layer, then 4 experts top-2) with the aux-loss-free expert bias, so
// that a buffer the optimizer does not own changes every step and must be in the checkpoint.
nn::ModelConfig bias_config() {
  nn::ModelConfig c = test::tiny_gpt_config(DType::f32);
  c.untie_embeddings_and_output_weights = true;
  c.moe.moe_router_enable_expert_bias = true;
  c.moe.moe_router_bias_update_rate = 1e-2;
  // tiny_gpt_config leaves moe.init_method_std at its default, which model_config.json refuses
  // to read back (the two must agree).
  c.moe.init_method_std = c.init_method_std;
  return c;
}

std::vector<int32_t> random_stream(int64_t n, uint64_t seed) {
  const Tensor t = test::random_tokens(n, 1, 10, seed);
  std::vector<int32_t> out;
  for (int64_t v : t.to_vector<int64_t>()) out.push_back(static_cast<int32_t>(v));
  return out;
}

TrainConfig train_config(uint64_t seed) {
  TrainConfig c;
  c.micro_batch_size = 2;
  c.global_batch_size = 4;
  c.seq_length = kSeq;
  c.train_iters = 20;
  c.seed = seed;
  c.schedule.lr = 1e-2;
  c.schedule.min_lr = 1e-3;
  c.schedule.warmup_iters = 2;
  c.schedule.decay_style = "cosine";
  c.schedule.start_weight_decay = c.schedule.end_weight_decay = 0.01;
  return c;
}

// One run as `moe train` builds it: the data (shuffled, 3 iterations an epoch) and the trainer
// from the run's seed; the initial weights from `init_seed`.
struct TrainingRun {
  TrainingRun(const nn::ModelConfig& mc, uint64_t seed, uint64_t init_seed)
      : model(mc, DType::f32, Device::cpu(), init_seed),
        data(random_stream(12 * kSeq + 1, seed), kSeq, seed, /*shuffle=*/true),
        trainer(model, train_config(seed), data) {}
  TrainingRun(uint64_t seed, uint64_t init_seed) : TrainingRun(bias_config(), seed, init_seed) {}

  std::vector<StepMetrics> steps(int n) {
    std::vector<StepMetrics> out;
    for (int i = 0; i < n; ++i) out.push_back(trainer.train_step());
    return out;
  }

  nn::GPTModel model;
  TokenArraySource data;
  Trainer trainer;
};

// Every parameter and buffer, by name.
std::map<std::string, Tensor> model_tensors(nn::GPTModel& model) {
  std::map<std::string, Tensor> out;
  for (nn::Parameter* p : model.parameters()) out[p->name] = p->value.clone();
  for (const nn::NamedBuffer& b : model.buffers()) out[b.name] = b.value->clone();
  return out;
}

::testing::AssertionResult same_model(nn::GPTModel& a, nn::GPTModel& b) {
  const auto ta = model_tensors(a), tb = model_tensors(b);
  if (ta.size() != tb.size()) return ::testing::AssertionFailure() << "tensor counts differ";
  for (const auto& [name, t] : ta) {
    ::testing::AssertionResult same = same_bytes(t, tb.at(name));
    if (!same) return same << " (" << name << ")";
  }
  return ::testing::AssertionSuccess();
}

bool all_zero(const Tensor& t) {
  for (double v : t.to_double_vector())
    if (v != 0.0) return false;
  return true;
}

void flip_byte(const fs::path& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

class TrainCheckpoint : public io::testing::ScratchFolder {
 protected:
  std::string save_dir() const { return path("ckpt"); }
  fs::path iter_dir(int64_t iteration) const {
    return fs::path(save_dir()) / checkpoint_folder_name(iteration);
  }
  // A run of `steps` iterations saved to save_dir(); returns the run for comparisons.
  std::unique_ptr<TrainingRun> saved_run(uint64_t seed, int steps) {
    auto run = std::make_unique<TrainingRun>(seed, seed);
    run->steps(steps);
    save_training_checkpoint(save_dir(), run->model, run->trainer, json{{"lr", 0.01}});
    return run;
  }
};

// ---- layout ----------------------------------------------------------------------------------

TEST(TrainCheckpointNames, FolderNamesAreMegatrons) {
  EXPECT_EQ(checkpoint_folder_name(100), "iter_0000100");
  EXPECT_EQ(checkpoint_folder_name(0), "iter_0000000");
  EXPECT_THROW(checkpoint_folder_name(-1), Error);
}

TEST_F(TrainCheckpoint, WritesTheModelFolderOptimizerStateAndAManifest) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto run = saved_run(seed, 3);
  const fs::path folder = iter_dir(3);
  for (const char* name : {"model_config.json", "model.safetensors", "optimizer.safetensors",
                           "trainer_state.json", "manifest.json"})
    EXPECT_TRUE(fs::is_regular_file(folder / name)) << name;
  EXPECT_EQ(io::testing::read_bytes((fs::path(save_dir()) / kTrackerFileName).string()), "3");
  EXPECT_EQ(latest_checkpoint_iteration(save_dir()), 3);

  const json state = read_json_file((folder / "trainer_state.json").string(), "state");
  EXPECT_EQ(state["iteration"], 3);
  EXPECT_EQ(state["consumed_samples"], 12);
  EXPECT_EQ(state["optimizer_steps"], 3);
  EXPECT_EQ(state["schedule_samples"], 12);  // 3 updates of 4 samples
  EXPECT_EQ(state["train_position"], 12);
  EXPECT_EQ(state["rng"]["seed"], seed);
  EXPECT_EQ(state["run_config"], json({{"lr", 0.01}}));

  const json manifest = read_json_file((folder / "manifest.json").string(), "manifest");
  EXPECT_EQ(manifest["files"].size(), 4u);  // everything but the manifest itself
  EXPECT_EQ(manifest["files"]["optimizer.safetensors"]["size"],
            fs::file_size(folder / "optimizer.safetensors"));

  // The folder is a moecore model folder with the expert biases (not all zero after 3 steps).
  auto loaded = checkpoint::load_model(folder.string(), DType::f32, Device::cpu());
  EXPECT_TRUE(same_model(*loaded, run->model));
  bool bias_moved = false;
  for (const nn::NamedBuffer& b : run->model.buffers()) bias_moved |= !all_zero(*b.value);
  EXPECT_TRUE(bias_moved);
  // The optimizer's moments, by AdamW::state() names.
  const io::SafetensorsFile optimizer =
      io::SafetensorsFile::open((folder / "optimizer.safetensors").string());
  for (const NamedTensor& s : run->trainer.optimizer().state())
    EXPECT_TRUE(same_bytes(optimizer.load(s.name), *s.value)) << s.name;
  // No hidden temporaries are left.
  for (const auto& e : fs::directory_iterator(save_dir()))
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
}

// ---- exact resume --------------------------------------------------------------------------

TEST_F(TrainCheckpoint, ResumedRunReproducesTheUninterruptedLossesBitwise) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  constexpr int kTotal = 8, kFirst = 4;  // 3 iterations an epoch: the save is mid-epoch

  TrainingRun straight(seed, seed);
  const std::vector<StepMetrics> expected = straight.steps(kTotal);

  auto first = saved_run(seed, kFirst);
  // Other initial weights: everything must come from the checkpoint.
  TrainingRun resumed(seed, seed + 1);
  {
    TrainingRun control(seed, seed + 1);  // the same, without loading: a different run
    EXPECT_NE(control.trainer.train_step().loss, expected[kFirst].loss);
  }
  const LoadResult r = load_training_checkpoint(save_dir(), resumed.model, &resumed.trainer);
  EXPECT_EQ(r.iteration, kFirst);
  EXPECT_TRUE(r.loaded_optimizer);
  EXPECT_TRUE(r.loaded_trainer_state);
  EXPECT_TRUE(r.config_differences.empty()) << r.config_differences.front();
  EXPECT_EQ(r.run_config, json({{"lr", 0.01}}));
  EXPECT_EQ(resumed.trainer.iteration(), kFirst);
  EXPECT_EQ(resumed.trainer.optimizer_steps(), kFirst);
  EXPECT_EQ(resumed.data.position(), first->data.position());
  EXPECT_TRUE(same_model(resumed.model, first->model));

  const std::vector<StepMetrics> rest = resumed.steps(kTotal - kFirst);
  for (int i = kFirst; i < kTotal; ++i) {
    const StepMetrics& m = rest[static_cast<size_t>(i - kFirst)];
    const StepMetrics& e = expected[static_cast<size_t>(i)];
    EXPECT_EQ(m.iteration, e.iteration);
    EXPECT_EQ(m.loss, e.loss) << "iteration " << i + 1;
    EXPECT_EQ(m.aux_loss, e.aux_loss) << "iteration " << i + 1;
    EXPECT_EQ(m.grad_norm, e.grad_norm) << "iteration " << i + 1;
    EXPECT_EQ(m.lr, e.lr) << "iteration " << i + 1;
    EXPECT_EQ(m.consumed_samples, e.consumed_samples);
  }
  EXPECT_TRUE(same_model(resumed.model, straight.model));
}

TEST_F(TrainCheckpoint, LoadsFromAnIterationFolderAndWithoutATrainer) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto run = saved_run(seed, 2);
  nn::GPTModel model(bias_config(), DType::f32, Device::cpu(), seed + 5);
  const LoadResult r = load_training_checkpoint(iter_dir(2).string(), model, nullptr);
  EXPECT_EQ(r.iteration, 2);
  EXPECT_FALSE(r.loaded_optimizer);
  EXPECT_FALSE(r.loaded_trainer_state);
  EXPECT_TRUE(same_model(model, run->model));
}

// ---- bad checkpoints -----------------------------------------------------------------------

TEST_F(TrainCheckpoint, AFlippedByteIsReportedWithTheFileAndNothingIsLoaded) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  saved_run(seed, 2);
  for (const char* name : {"optimizer.safetensors", "model.safetensors", "trainer_state.json"}) {
    SCOPED_TRACE(name);
    const fs::path file = iter_dir(2) / name;
    flip_byte(file, fs::file_size(file) / 2);
    TrainingRun target(seed, seed + 1);
    const auto before = model_tensors(target.model);
    EXPECT_TRUE(
        fails_with([&] { load_training_checkpoint(save_dir(), target.model, &target.trainer); },
                   {file.string(), "corrupt", "CRC-32C"}));
    for (const auto& [n, t] : model_tensors(target.model))
      EXPECT_TRUE(same_bytes(t, before.at(n))) << n;
    EXPECT_EQ(target.trainer.iteration(), 0);
    flip_byte(file, fs::file_size(file) / 2);  // undo
    EXPECT_NO_THROW(verify_training_checkpoint(iter_dir(2).string()));
  }
}

TEST_F(TrainCheckpoint, ATruncatedSafetensorsFileIsReported) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  saved_run(seed, 2);
  const fs::path file = iter_dir(2) / "model.safetensors";
  fs::resize_file(file, fs::file_size(file) - 10);
  TrainingRun target(seed, seed);
  EXPECT_TRUE(
      fails_with([&] { load_training_checkpoint(save_dir(), target.model, &target.trainer); },
                 {file.string(), "truncated"}));
}

TEST_F(TrainCheckpoint, MissingOrMalformedFilesAreReported) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  saved_run(seed, 2);
  TrainingRun target(seed, seed);
  const auto load = [&] { load_training_checkpoint(save_dir(), target.model, &target.trainer); };
  const fs::path folder = iter_dir(2);

  const std::string manifest = io::testing::read_bytes((folder / "manifest.json").string());
  io::testing::write_bytes((folder / "manifest.json").string(), "{\"files\": ");
  EXPECT_TRUE(fails_with(load, {(folder / "manifest.json").string(), "not valid JSON"}));
  fs::remove(folder / "manifest.json");
  EXPECT_TRUE(fails_with(load, {folder.string(), "no manifest.json"}));
  io::testing::write_bytes((folder / "manifest.json").string(), manifest);
  EXPECT_NO_THROW(verify_training_checkpoint(folder.string()));

  fs::rename(folder / "optimizer.safetensors", folder / "moved");
  EXPECT_TRUE(fails_with(load, {(folder / "optimizer.safetensors").string(), "missing"}));
  fs::rename(folder / "moved", folder / "optimizer.safetensors");

  // A manifest that leaves out a required file (a hand-made or foreign folder).
  json edited = json::parse(manifest);
  edited["files"].erase("trainer_state.json");
  io::testing::write_bytes((folder / "manifest.json").string(), edited.dump());
  EXPECT_TRUE(fails_with(load, {"manifest.json", "does not list trainer_state.json"}));
  io::testing::write_bytes((folder / "manifest.json").string(), manifest);

  // No checkpoint at all, a tracker that is not a number, a tracker naming a missing folder.
  EXPECT_FALSE(latest_checkpoint_iteration(path("none")).has_value());
  fs::create_directories(path("empty"));
  EXPECT_TRUE(
      fails_with([&] { load_training_checkpoint(path("empty"), target.model, &target.trainer); },
                 {kTrackerFileName}));
  const std::string tracker = (fs::path(save_dir()) / kTrackerFileName).string();
  io::testing::write_bytes(tracker, "release");
  EXPECT_TRUE(fails_with(load, {tracker, "release"}));
  io::testing::write_bytes(tracker, "7\n");
  EXPECT_TRUE(fails_with(load, {"iter_0000007", "does not exist"}));
  io::testing::write_bytes(tracker, "2");
  EXPECT_NO_THROW(load());
}

TEST_F(TrainCheckpoint, AModelOfOtherShapesIsRefusedNamingTheField) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  saved_run(seed, 2);
  nn::ModelConfig other = bias_config();
  other.moe.num_experts = 8;
  TrainingRun target(other, seed, seed);
  EXPECT_TRUE(
      fails_with([&] { load_training_checkpoint(save_dir(), target.model, &target.trainer); },
                 {"other tensor shapes", "moe.num_experts: checkpoint 4, model 8"}));
  nn::ModelConfig wider = bias_config();
  wider.ffn_hidden_size = 16;
  TrainingRun target2(wider, seed, seed);
  EXPECT_TRUE(
      fails_with([&] { load_training_checkpoint(save_dir(), target2.model, &target2.trainer); },
                 {"ffn_hidden_size: checkpoint 12, model 16"}));

  // A field that changes no shape loads, and is reported.
  nn::ModelConfig coeff = bias_config();
  coeff.moe.moe_aux_loss_coeff = 0.02;
  TrainingRun target3(coeff, seed, seed);
  const LoadResult r = load_training_checkpoint(save_dir(), target3.model, &target3.trainer);
  ASSERT_EQ(r.config_differences.size(), 1u);
  EXPECT_NE(r.config_differences[0].find("moe.moe_aux_loss_coeff"), std::string::npos);
}

TEST_F(TrainCheckpoint, ADifferentSeedIsRefusedUnlessNoLoadRng) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  saved_run(seed, 2);
  TrainingRun target(seed + 1, seed);
  std::string message;
  try {
    load_training_checkpoint(save_dir(), target.model, &target.trainer);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("--seed " + std::to_string(seed)), std::string::npos) << message;
  // Only flags `moe train` has: --finetune, not Megatron's --no-load-rng (not a flag here).
  EXPECT_NE(message.find("--finetune"), std::string::npos) << message;
  EXPECT_EQ(message.find("--no-load-rng"), std::string::npos) << message;
  LoadOptions options;
  options.no_load_rng = true;
  EXPECT_EQ(load_training_checkpoint(save_dir(), target.model, &target.trainer, options).iteration,
            2);
  EXPECT_EQ(target.trainer.iteration(), 2);
}

// ---- --finetune, --no-load-optim -------------------------------------------------------------

TEST_F(TrainCheckpoint, FinetuneLoadsWeightsAndStartsAtIterationZero) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto saved = saved_run(seed, 3);
  TrainingRun target(seed + 1, seed + 1);  // --finetune accepts another seed
  LoadOptions options;
  options.finetune = true;
  const LoadResult r = load_training_checkpoint(save_dir(), target.model, &target.trainer, options);
  EXPECT_EQ(r.iteration, 3);
  EXPECT_FALSE(r.loaded_optimizer);
  EXPECT_FALSE(r.loaded_trainer_state);
  EXPECT_TRUE(same_model(target.model, saved->model));
  EXPECT_EQ(target.trainer.iteration(), 0);
  EXPECT_EQ(target.trainer.consumed_samples(), 0);
  EXPECT_EQ(target.trainer.optimizer_steps(), 0);
  EXPECT_EQ(target.data.position(), 0);
  for (const NamedTensor& s : target.trainer.optimizer().state())
    EXPECT_TRUE(all_zero(*s.value)) << s.name;
  const StepMetrics m = target.trainer.train_step();
  EXPECT_EQ(m.iteration, 1);
  EXPECT_EQ(m.lr, target.trainer.schedule().lr(0));
}

TEST_F(TrainCheckpoint, NoLoadOptimKeepsWeightsAndCountersWithAFreshOptimizer) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto saved = saved_run(seed, 3);
  TrainingRun target(seed, seed + 1);
  // Give the target's optimizer some state, which the load must clear.
  target.trainer.train_step();
  LoadOptions options;
  options.no_load_optim = true;
  const LoadResult r = load_training_checkpoint(save_dir(), target.model, &target.trainer, options);
  EXPECT_FALSE(r.loaded_optimizer);
  EXPECT_TRUE(r.loaded_trainer_state);
  EXPECT_TRUE(same_model(target.model, saved->model));
  EXPECT_EQ(target.trainer.iteration(), 3);
  EXPECT_EQ(target.trainer.consumed_samples(), 12);
  EXPECT_EQ(target.data.position(), 12);
  EXPECT_EQ(target.trainer.optimizer_steps(), 0);
  for (const NamedTensor& s : target.trainer.optimizer().state())
    EXPECT_TRUE(all_zero(*s.value)) << s.name;
  EXPECT_EQ(target.trainer.train_step().iteration, 4);
}

// ---- the schedule's position -------------------------------------------------------------------

// A sample-based run (--train-samples): 60 samples, warm-up 6 samples, cosine decay over 50.
TrainConfig sample_based_config(uint64_t seed, int64_t global_batch) {
  TrainConfig c = train_config(seed);
  c.global_batch_size = global_batch;
  c.train_samples = 60;
  c.train_iters = c.iterations_of_samples();
  c.schedule.warmup_iters = 0;
  c.schedule.warmup_samples = 6;
  c.schedule.decay_samples = 50;
  return c;
}

// The checkpoint holds the schedule's position in samples (Megatron's scheduler num_steps): a
// sample-based run resumes there, also with another global batch, where the updates taken x
// the new batch would be another position (Megatron's too: its scheduler state is in samples).
TEST_F(TrainCheckpoint, ASampleBasedScheduleResumesAtItsSamples) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::GPTModel model(bias_config(), DType::f32, Device::cpu(), seed);
  TokenArraySource data(random_stream(12 * kSeq + 1, seed), kSeq, seed, /*shuffle=*/true);
  Trainer trainer(model, sample_based_config(seed, 4), data);
  test::MegatronSchedulerArgs args;
  args.train_samples = 60;
  args.global_batch_size = 4;
  args.lr = 1e-2;
  args.min_lr = 1e-3;
  args.lr_warmup_samples = 6;
  args.lr_decay_samples = 50;
  args.lr_decay_style = "cosine";
  test::MegatronScheduler megatron(args);
  for (int i = 0; i < 3; ++i) {
    EXPECT_DOUBLE_EQ(trainer.train_step().lr, megatron.lr());
    megatron.step(4);
  }
  EXPECT_EQ(trainer.schedule_samples(), 12);
  save_training_checkpoint(save_dir(), model, trainer, json{{"lr", 0.01}});
  const json state = read_json_file((iter_dir(3) / "trainer_state.json").string(), "state");
  EXPECT_EQ(state["schedule_samples"], 12);
  EXPECT_EQ(state["train_config"]["train_samples"], 60);

  // Resumed with global batches of 2 (one micro-batch).
  nn::GPTModel resumed_model(bias_config(), DType::f32, Device::cpu(), seed + 1);
  TokenArraySource resumed_data(random_stream(12 * kSeq + 1, seed), kSeq, seed, true);
  Trainer resumed(resumed_model, sample_based_config(seed, 2), resumed_data);
  load_training_checkpoint(save_dir(), resumed_model, &resumed);
  EXPECT_EQ(resumed.schedule_samples(), 12);
  EXPECT_EQ(resumed.optimizer_steps(), 3);
  EXPECT_NE(resumed.schedule().lr(12), resumed.schedule().lr(3 * 2));  // the check can fail
  for (int i = 0; i < 3; ++i) {
    const StepMetrics m = resumed.train_step();
    EXPECT_DOUBLE_EQ(m.lr, megatron.lr()) << "iteration " << m.iteration;
    megatron.step(2);
  }
  EXPECT_EQ(resumed.schedule_samples(), 18);
}

// A checkpoint written before the schedule's position was saved resumes at the updates taken x
// its global batch (its schedule counted updates of that batch).
TEST_F(TrainCheckpoint, ACheckpointWithoutTheScheduleSamplesResumesAtItsUpdates) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto saved = saved_run(seed, 3);
  const fs::path state_path = iter_dir(3) / "trainer_state.json";
  json state = read_json_file(state_path.string(), "state");
  ASSERT_TRUE(state.contains("schedule_samples"));
  state.erase("schedule_samples");
  const std::string text = state.dump(2);
  io::testing::write_bytes(state_path.string(), text);
  // The manifest's size and CRC-32C of the edited file, as an older build wrote them.
  json manifest = read_json_file((iter_dir(3) / "manifest.json").string(), "manifest");
  char crc[9];
  std::snprintf(crc, sizeof crc, "%08x", crc32c(text.data(), text.size()));
  manifest["files"]["trainer_state.json"] = {{"size", text.size()}, {"crc32c", crc}};
  io::testing::write_bytes((iter_dir(3) / "manifest.json").string(), manifest.dump(2));

  TrainingRun target(seed, seed + 1);
  load_training_checkpoint(save_dir(), target.model, &target.trainer);
  EXPECT_EQ(target.trainer.schedule_samples(), 3 * 4);
  const StepMetrics m = target.trainer.train_step();
  EXPECT_EQ(m.lr, saved->trainer.train_step().lr);
}

// ---- the tracker and interrupted saves -------------------------------------------------------

TEST_F(TrainCheckpoint, TheTrackerPointsToTheNewestSaveAndOlderOnesStayLoadable) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  TrainingRun run(seed, seed);
  run.steps(2);
  save_training_checkpoint(save_dir(), run.model, run.trainer, json{{"save", 1}});
  const auto at_two = model_tensors(run.model);
  run.steps(2);
  save_training_checkpoint(save_dir(), run.model, run.trainer, json{{"save", 2}});
  EXPECT_EQ(latest_checkpoint_iteration(save_dir()), 4);
  EXPECT_TRUE(fs::is_directory(iter_dir(2)));

  TrainingRun latest(seed, seed + 1);
  EXPECT_EQ(load_training_checkpoint(save_dir(), latest.model, &latest.trainer).iteration, 4);
  EXPECT_TRUE(same_model(latest.model, run.model));

  TrainingRun older(seed, seed + 1);
  LoadOptions options;
  options.iteration = 2;
  const LoadResult r = load_training_checkpoint(save_dir(), older.model, &older.trainer, options);
  EXPECT_EQ(r.iteration, 2);
  EXPECT_EQ(r.run_config, json({{"save", 1}}));
  EXPECT_EQ(older.trainer.iteration(), 2);
  for (const auto& [name, t] : model_tensors(older.model))
    EXPECT_TRUE(same_bytes(t, at_two.at(name))) << name;

  // Saving the same iteration again replaces its folder (and leaves nothing hidden behind).
  save_training_checkpoint(save_dir(), run.model, run.trainer, json{{"save", 3}});
  TrainingRun again(seed, seed + 1);
  EXPECT_EQ(load_training_checkpoint(save_dir(), again.model, &again.trainer).run_config,
            json({{"save", 3}}));
  for (const auto& e : fs::directory_iterator(save_dir()))
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
}

// The resolved flags are stored as given; a path that is not UTF-8 must not make the save
// throw (nlohmann's strict dump did: "invalid UTF-8 byte").
TEST_F(TrainCheckpoint, RunConfigWithBytesThatAreNotUtf8IsSaved) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  TrainingRun run(seed, seed);
  run.steps(1);
  save_training_checkpoint(save_dir(), run.model, run.trainer,
                           json{{"flags", {"--data-path /data/caf\xE9/x"}}});
  EXPECT_EQ(latest_checkpoint_iteration(save_dir()), 1);
  TrainingRun loaded(seed, seed + 1);
  const LoadResult r = load_training_checkpoint(save_dir(), loaded.model, &loaded.trainer);
  EXPECT_EQ(r.run_config["flags"][0], "--data-path /data/caf\xEF\xBF\xBD/x");  // U+FFFD
}

// Iteration folders without the tracker (deleted, or not copied) are never "no checkpoint
// yet": the error lists them and says how to resume.
TEST_F(TrainCheckpoint, IterationFoldersWithoutTheTrackerAreAnErrorListingThem) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  TrainingRun run(seed, seed);
  run.steps(2);
  save_training_checkpoint(save_dir(), run.model, run.trainer, json::object());
  run.steps(2);
  save_training_checkpoint(save_dir(), run.model, run.trainer, json::object());
  EXPECT_EQ(classify_load_folder(save_dir()), LoadFolderKind::save_folder);
  EXPECT_EQ(iteration_folders(save_dir()), (std::vector<int64_t>{2, 4}));
  fs::remove(fs::path(save_dir()) / kTrackerFileName);
  const std::string listed = "iter_0000002, iter_0000004";
  const std::string no_tracker = "no " + std::string(kTrackerFileName);
  const std::string recreate = "echo 4 > " + (fs::path(save_dir()) / kTrackerFileName).string();
  const std::string by_folder = "--load " + iter_dir(4).string();
  EXPECT_TRUE(fails_with([&] { classify_load_folder(save_dir()); },
                         {listed, no_tracker, recreate, by_folder}));
  TrainingRun target(seed, seed + 1);
  EXPECT_TRUE(
      fails_with([&] { load_training_checkpoint(save_dir(), target.model, &target.trainer); },
                 {listed, no_tracker, recreate, by_folder}));
  // The way out the message gives: the iteration folder itself.
  EXPECT_EQ(classify_load_folder(iter_dir(4).string()), LoadFolderKind::iteration_folder);
  EXPECT_EQ(load_training_checkpoint(iter_dir(4).string(), target.model, &target.trainer).iteration,
            4);
  // Other folders: nothing there yet, or a model folder.
  EXPECT_EQ(classify_load_folder(path("missing")), LoadFolderKind::none);
  fs::create_directories(path("empty"));
  EXPECT_EQ(classify_load_folder(path("empty")), LoadFolderKind::none);
  checkpoint::save_model(path("model"), run.model);
  EXPECT_EQ(classify_load_folder(path("model")), LoadFolderKind::model_folder);
}

// An iteration folder that lost its manifest is a training checkpoint all the same (its name
// or its optimizer / trainer state say so): refused, never read as a bare model folder.
TEST_F(TrainCheckpoint, AnIterationFolderWithoutItsManifestIsRefused) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  saved_run(seed, 2);
  fs::remove(iter_dir(2) / "manifest.json");
  EXPECT_EQ(classify_load_folder(iter_dir(2).string()), LoadFolderKind::iteration_folder);
  EXPECT_TRUE(
      fails_with([&] { training_checkpoint_folder(iter_dir(2).string()); }, {"no manifest.json"}));
  EXPECT_TRUE(fails_with([&] { training_checkpoint_folder(save_dir()); }, {"no manifest.json"}));
  fs::rename(iter_dir(2), path("renamed"));  // the name no longer says it; its files do
  EXPECT_EQ(classify_load_folder(path("renamed")), LoadFolderKind::iteration_folder);
}

// --load of a model folder (`moe convert` output): the weights, a fresh optimizer whose fp32
// masters are those weights, iteration 0; a model of other shapes is refused naming the field.
TEST_F(TrainCheckpoint, AModelFolderLoadsItsWeightsWithAFreshTrainer) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  TrainingRun source(seed, seed);
  source.steps(2);
  checkpoint::save_model(path("model"), source.model);
  TrainingRun target(seed + 1, seed + 1);
  target.trainer.train_step();  // state that the load must reset
  EXPECT_TRUE(load_model_folder_weights(path("model"), target.model, &target.trainer).empty());
  EXPECT_TRUE(same_model(target.model, source.model));
  EXPECT_EQ(target.trainer.iteration(), 0);
  EXPECT_EQ(target.trainer.optimizer_steps(), 0);
  for (const NamedTensor& s : target.trainer.optimizer().state())
    if (!s.name.ends_with(".master")) {
      EXPECT_TRUE(all_zero(*s.value)) << s.name;
    }
  const StepMetrics first = target.trainer.train_step();
  EXPECT_EQ(first.iteration, 1);
  EXPECT_EQ(first.lr, target.trainer.schedule().lr(0));

  nn::ModelConfig other = bias_config();
  other.moe.num_experts = 8;
  TrainingRun wrong(other, seed, seed);
  EXPECT_TRUE(fails_with([&] { load_model_folder_weights(path("model"), wrong.model, nullptr); },
                         {"other tensor shapes", "moe.num_experts: checkpoint 4, model 8",
                          "--model " + (fs::path(path("model")) / "model_config.json").string()}));
}

TEST_F(TrainCheckpoint, AnInterruptedSaveDoesNotBreakLoading) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  TrainingRun run(seed, seed);
  run.steps(2);
  save_training_checkpoint(save_dir(), run.model, run.trainer, json::object());
  // A save of iteration 4 killed mid-way: its hidden temporary folder holds part of the files,
  // the tracker still says 2.
  run.steps(2);
  const fs::path leftover = fs::path(save_dir()) / ".iter_0000004.tmp.12345.678";
  fs::create_directories(leftover);
  io::testing::write_bytes((leftover / "model_config.json").string(), "{\"num_la");
  io::testing::write_bytes((leftover / "model.safetensors").string(), "partial");
  EXPECT_EQ(latest_checkpoint_iteration(save_dir()), 2);

  TrainingRun resumed(seed, seed + 1);
  EXPECT_EQ(load_training_checkpoint(save_dir(), resumed.model, &resumed.trainer).iteration, 2);

  // The next save goes through, and the tracker moves to it. It removes the leftover (its
  // process, pid 12345 here, is gone and it predates this process) and nothing else.
  if (::kill(12345, 0) != 0) {  // (on the rare machine where 12345 is alive it stays)
    fs::last_write_time(leftover, fs::file_time_type::clock::now() - std::chrono::hours(1));
  }
  io::testing::write_bytes(path("ckpt/.iter_0000004.notes"), "mine");
  const SaveResult saved =
      save_training_checkpoint(save_dir(), run.model, run.trainer, json::object());
  EXPECT_EQ(saved.folder, iter_dir(4).string());
  if (::kill(12345, 0) != 0) {
    EXPECT_FALSE(fs::exists(leftover));
    EXPECT_EQ(saved.cleaned, std::vector<std::string>{"removed .iter_0000004.tmp.12345.678"});
  }
  EXPECT_TRUE(fs::exists(path("ckpt/.iter_0000004.notes")));
  EXPECT_EQ(latest_checkpoint_iteration(save_dir()), 4);
  TrainingRun latest(seed, seed + 1);
  EXPECT_EQ(load_training_checkpoint(save_dir(), latest.model, &latest.trainer).iteration, 4);
  EXPECT_TRUE(same_model(latest.model, run.model));
}

}  // namespace
}  // namespace moe::train
