// `moe forward`: logits and the next-token loss of a model on a batch of token ids.
//
// Token ids come as JSON [[...], [...]] (B rows of S ids, a data loader's [B, S]); GPTModel
// works sequence-major, so ids are transposed to [S, B] for it and its logits [S, B, V] back to
// [B, S, V]. The loss is the language-model loss: labels are the ids shifted left by one
// (position s predicts ids[b][s + 1]), the last position of each row predicts nothing, and
//   lm_loss = mean over the B (S - 1) predicted positions of  -log softmax(logits[b, s])[ids[b][s + 1]]
// computed in f64 from the logits (as transformers' loss with labels = input_ids).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "moe/core/tensor.h"
#include "moe/nn/gpt_model.h"

namespace moe::checkpoint {

// JSON [[ids...], ...] -> i64 [B, S]. Errors: not a list of lists, no rows, an empty row, rows
// of different lengths (ragged), ids that are not integers, and (vocab_size > 0) ids outside
// [0, vocab_size); each names the row and position.
Tensor parse_token_batch(const nlohmann::json& ids, int64_t vocab_size = 0);
// From a file; errors name the path.
Tensor read_token_batch(const std::string& path, int64_t vocab_size = 0);

// lm_loss of logits [B, S, V] (any float dtype) for ids [B, S] (i64 / i32), as above; nullopt
// when S < 2 (nothing is predicted).
std::optional<double> next_token_loss(const Tensor& logits, const Tensor& ids);

struct ForwardResult {
  Tensor logits;                 // [B, S, V] f32 on the CPU
  std::optional<double> lm_loss;
};

// Runs model.logits on ids [B, S] (moved to the model's device) and returns the logits in the
// [B, S, V] order with the loss.
ForwardResult run_forward(nn::GPTModel& model, const Tensor& ids);

}  // namespace moe::checkpoint
