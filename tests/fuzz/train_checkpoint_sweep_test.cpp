// The bad-input sweep of training checkpoint loading (docs/bad-input.md): a checkpoint saved by
// save_training_checkpoint (tiny MoE model, one step trained), its files mutated one at a time:
//   - the tracker (latest_checkpointed_iteration.txt) and manifest.json as they are: loading
//     must refuse or cope, naming the file;
//   - trainer_state.json, model_config.json, optimizer.safetensors and the model's safetensors
//     with manifest.json re-signed (size and CRC-32C of the mutant), so that the mutant gets
//     past the checksums to the parsers and the checks behind them;
//   - any file without re-signing: the manifest's checksum must refuse every changed byte.
// A checkpoint that loads is trained on for one step, as a resumed run does.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fuzz/sweep.h"
#include "moe/core/crc32c.h"
#include "moe/train/batch_source.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/trainer.h"
#include "nn/gpt_test_util.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using sweep::Mutant;

constexpr int64_t kSeq = 8;

nn::ModelConfig sweep_config() {
  nn::ModelConfig c = test::tiny_gpt_config(DType::f32);
  c.untie_embeddings_and_output_weights = true;
  c.moe.moe_router_enable_expert_bias = true;
  c.moe.moe_router_bias_update_rate = 1e-2;
  c.moe.init_method_std = c.init_method_std;
  return c;
}

TrainConfig sweep_train_config() {
  TrainConfig c;
  c.micro_batch_size = 2;
  c.global_batch_size = 2;
  c.seq_length = kSeq;
  c.train_iters = 100;
  c.seed = 5;
  c.schedule.lr = 1e-2;
  c.schedule.min_lr = 1e-3;
  c.schedule.warmup_iters = 2;
  c.schedule.decay_style = "cosine";
  return c;
}

std::vector<int32_t> tokens() {
  std::vector<int32_t> out;
  for (int i = 0; i < 12 * kSeq + 1; ++i) out.push_back((i * 7) % 10);
  return out;
}

struct TrainingRun {
  TrainingRun()
      : model(sweep_config(), DType::f32, Device::cpu(), 11),
        data(tokens(), kSeq, 5),
        trainer(model, sweep_train_config(), data) {}
  nn::GPTModel model;
  TokenArraySource data;
  Trainer trainer;
};

const std::vector<std::string>& checkpoint_words() {
  static const std::vector<std::string> words{"moecore-training-checkpoint",
                                              "moecore-trainer-state",
                                              "crc32c",
                                              "f32",
                                              "bf16",
                                              "f16",
                                              "fp8_e4m3",
                                              "i64",
                                              "",
                                              "model_config.json",
                                              "optimizer.safetensors",
                                              "trainer_state.json",
                                              "../trainer_state.json",
                                              "/etc/passwd",
                                              "model.safetensors",
                                              "00000000",
                                              "ffffffff",
                                              "philox4x32-10",
                                              "cosine",
                                              "wsd",
                                              "F32",
                                              "BF16",
                                              "I64",
                                              "U8"};
  return words;
}

std::string crc_hex(const std::string& bytes) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", crc32c(bytes.data(), bytes.size()));
  return text;
}

TEST(TrainCheckpointSweep, LoadTrainingCheckpoint) {
  sweep::ScratchDir dir;
  const std::string save = dir.path("ckpt");
  TrainingRun run;
  run.trainer.train_step();
  save_training_checkpoint(save, run.model, run.trainer,
                           json{{"lr", 0.01}, {"flags", {"--seed 5"}}});
  const fs::path folder = fs::path(save) / checkpoint_folder_name(1);
  const std::string manifest_path = (folder / "manifest.json").string();
  const std::string valid_manifest = sweep::read_file(manifest_path);
  const std::string tracker_path = (fs::path(save) / kTrackerFileName).string();
  const std::string valid_tracker = sweep::read_file(tracker_path);
  std::vector<std::string> files;
  const json manifest_files = json::parse(valid_manifest)["files"];
  for (const auto& [name, entry] : manifest_files.items()) files.push_back(name);
  ASSERT_GE(files.size(), 4u);

  sweep::Sweep sweep("training checkpoint");
  const auto load = [&] {
    load_training_checkpoint(save, run.model, &run.trainer);
    run.trainer.train_step();
  };
  EXPECT_TRUE(sweep.check({"unchanged", "", ""}, {"ckpt"}, load));

  // A mutant of one file; `resign` rewrites the manifest's entry for it. Restores afterwards.
  const auto run_file = [&](const std::string& name, const std::string& valid, Mutant m,
                            bool resign) {
    const std::string path = (folder / name).string();
    m.what = name + (resign ? " (re-signed): " : ": ") + m.what;
    sweep::write_file(path, m.bytes);
    if (resign) {
      json manifest = json::parse(valid_manifest);
      manifest["files"][name] = {{"size", m.bytes.size()}, {"crc32c", crc_hex(m.bytes)}};
      sweep::write_file(manifest_path, manifest.dump(2));
    }
    // Errors may name the file, or (for what the file says) the checkpoint folder.
    const bool accepted = sweep.check(m, {name, folder.filename().string()}, load);
    if (!resign && m.bytes != valid) {
      EXPECT_FALSE(accepted) << m.what << ": a changed file passed the manifest's checksum";
    }
    sweep::write_file(path, valid);
    sweep::write_file(manifest_path, valid_manifest);
    return accepted;
  };

  // The tracker.
  for (const char* text :
       {"", "-1", "abc", "2", "0", "1\n", "0001", "9999999", "10000000", "99999999999",
        "4611686018427387904", "999999999999999999999", " 1", "1 2", "\xff"}) {
    sweep::write_file(tracker_path, text);
    sweep.check({std::string("tracker '") + sweep::excerpt(text) + "'", text, ""},
                {kTrackerFileName}, load);
  }
  sweep::write_file(tracker_path, valid_tracker);

  // The manifest as it is.
  const auto run_manifest = [&](Mutant m) {
    m.what = "manifest.json: " + m.what;
    sweep::write_file(manifest_path, m.bytes);
    const bool accepted = sweep.check(m, {"manifest"}, load);
    sweep::write_file(manifest_path, valid_manifest);
    return accepted;
  };
  for (const Mutant& m : sweep::json_document_cases(valid_manifest)) run_manifest(m);
  for (const uint64_t i : sweep::random_cases(60))
    run_manifest(sweep::random_mutant("checkpoint manifest", i, [&](sweep::Rng& rng) {
      return sweep::mutate_json(valid_manifest, rng, checkpoint_words());
    }));

  // Every other file, re-signed and not.
  for (const std::string& name : files) {
    const std::string valid = sweep::read_file((folder / name).string());
    const bool is_json = name.size() > 5 && name.substr(name.size() - 5) == ".json";
    if (is_json) {
      for (const Mutant& m : sweep::json_document_cases(valid)) run_file(name, valid, m, true);
    } else {
      for (const Mutant& m : sweep::truncations(valid, 8)) run_file(name, valid, m, true);
    }
    const int64_t count = name == "trainer_state.json" ? 120 : 40;
    for (const uint64_t i : sweep::random_cases(count)) {
      sweep::Rng which(sweep::case_seed(sweep::base_seed(), "checkpoint resign " + name, i));
      const bool resign = which.percent(85);
      run_file(name, valid,
               sweep::random_mutant(
                   "checkpoint " + name, i,
                   [&](sweep::Rng& rng) {
                     if (is_json && rng.percent(85))
                       return sweep::mutate_json(valid, rng, checkpoint_words());
                     if (!is_json && rng.percent(50)) {
                       // Through the safetensors header, its length fixed up.
                       uint64_t n = 0;
                       for (int b = 7; b >= 0; --b)
                         n = (n << 8) | static_cast<uint8_t>(valid[size_t(b)]);
                       Mutant m = sweep::mutate_json(valid.substr(8, n), rng, checkpoint_words());
                       m.what = "header: " + m.what;
                       m.bytes = sweep::le_bytes(m.bytes.size(), 8) + m.bytes + valid.substr(8 + n);
                       return m;
                     }
                     return sweep::mutate_bytes(valid, rng, 256);
                   }),
               resign);
    }
  }
  // Values of the trainer state that a resumed run computes with.
  const std::string state_text = sweep::read_file((folder / "trainer_state.json").string());
  const json state = json::parse(state_text);
  for (const char* key : {"iteration", "consumed_samples", "skipped_iterations", "optimizer_steps",
                          "train_position", "valid_position"}) {
    for (const json& value : {json(-1), json(int64_t{1} << 62), json(9223372036854775807ll),
                              json(1.5), json("1"), json(nullptr)}) {
      json copy = state;
      copy[key] = value;
      run_file("trainer_state.json", state_text,
               {std::string(key) + " = " + value.dump(), copy.dump(2), ""}, true);
    }
  }
  for (const json& counts :
       {json::array(), json({-1}), json({1, 2, 3, 4, 5, 6, 7, 8, 9}), json("x"), json({1.5, 2})}) {
    json copy = state;
    copy["rng"]["router_forward_counts"] = counts;
    run_file("trainer_state.json", state_text,
             {"router_forward_counts = " + counts.dump(), copy.dump(2), ""}, true);
  }
  EXPECT_GT(sweep.refused(), 0);
}

}  // namespace
}  // namespace moe::train
