#include "moe/train/model_folder.h"

#include <filesystem>
#include <optional>

#include "moe/core/error.h"
#include "moe/train/train_checkpoint.h"

namespace fs = std::filesystem;

namespace moe::train {
namespace {

bool is_model_folder(const fs::path& dir) {
  return fs::is_regular_file(dir / "model_config.json") || fs::is_regular_file(dir / "config.json");
}

}  // namespace

std::string resolve_model_folder(const std::string& load) {
  const fs::path dir(load);
  MOE_CHECK(fs::is_directory(dir), "--load ", load, " is not a folder");
  fs::path chosen = dir;
  if (!is_model_folder(dir)) {
    const std::optional<int64_t> iteration = latest_checkpoint_iteration(load);
    MOE_CHECK(iteration.has_value(), "--load ", load,
              " is neither a model folder (model_config.json or config.json) nor a training "
              "save folder (",
              kTrackerFileName, ")");
    chosen = dir / checkpoint_folder_name(*iteration);
    MOE_CHECK(fs::is_directory(chosen), (dir / kTrackerFileName).string(), " names iteration ",
              *iteration, " but ", chosen.string(), " is not a folder");
    MOE_CHECK(fs::is_regular_file(chosen / "model_config.json"), chosen.string(),
              " holds no model_config.json (not a complete moecore checkpoint)");
  }
  if (fs::is_regular_file(chosen / "manifest.json")) verify_training_checkpoint(chosen.string());
  return chosen.string();
}

std::vector<std::string> tokenizer_files(const std::string& folder) {
  static const char* const kNames[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                       "vocab.json",     "merges.txt",      "vocab.txt",
                                       "spiece.model"};
  std::vector<std::string> found;
  for (const char* name : kNames)
    if (fs::is_regular_file(fs::path(folder) / name)) found.push_back(name);
  return found;
}

}  // namespace moe::train
