#include "moe/train/model_folder.h"

#include <filesystem>
#include <optional>

#include "moe/core/error.h"
#include "moe/train/train_checkpoint.h"

namespace fs = std::filesystem;

namespace moe::train {

std::string resolve_model_folder(const std::string& load) {
  const fs::path dir(load);
  MOE_CHECK(fs::is_directory(dir), "--load ", load, " is not a folder");
  // The classification and the verification `moe train --load` uses (train_checkpoint.h).
  switch (classify_load_folder(load)) {
    case LoadFolderKind::model_folder:
      return load;
    case LoadFolderKind::save_folder:
    case LoadFolderKind::iteration_folder:
      return training_checkpoint_folder(load);
    case LoadFolderKind::none:
      break;
  }
  MOE_FAIL("--load ", load,
           " is neither a model folder (model_config.json or config.json) nor a training "
           "save folder (",
           kTrackerFileName, ")");
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
