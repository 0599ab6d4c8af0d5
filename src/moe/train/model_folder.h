// Which folder `--load` means for commands that read a model (moe generate): a model folder
// itself (moecore: model_config.json, Hugging Face: config.json; checkpoint/model_io.h), or a
// training save folder (train_checkpoint.h):
//   <save>/latest_checkpointed_iteration.txt   "N": the last complete save
//   <save>/iter_NNNNNNN/                       a moecore model folder's files, the optimizer's
//                                              (ignored here) and manifest.json (checksums)
#pragma once

#include <string>
#include <vector>

namespace moe::train {

// The model folder `load` names (see above), read as `moe train --load` reads it
// (train_checkpoint.h's classify_load_folder). Errors name the folder and what is missing: not
// a folder, neither kind, a tracker that is not a number, iteration folders without a tracker.
// A training checkpoint (the tracker's iteration folder, or an iteration folder itself) is
// always verified against its manifest (sizes and CRC-32C: verify_training_checkpoint, the
// check `moe train` makes) before it is returned: one without manifest.json is refused.
std::string resolve_model_folder(const std::string& load);

// The Hugging Face tokenizer files present in `folder` (tokenizer.json, tokenizer.model,
// tokenizer_config.json, vocab.json, merges.txt, ...): a model with them was trained with a
// real tokenizer, not the byte-level one.
std::vector<std::string> tokenizer_files(const std::string& folder);

}  // namespace moe::train
