// Token batches, [S, B] <-> [B, S] and the next-token loss (forward_eval.h).
#include "moe/core/json_file.h"
#include "moe/checkpoint/forward_eval.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "moe/core/error.h"

namespace moe::checkpoint {

using nlohmann::json;

Tensor parse_token_batch(const json& ids, int64_t vocab_size) {
  MOE_CHECK(ids.is_array() && !ids.empty(),
            "token ids must be a non-empty list of rows [[id, ...], ...], got ",
            ids.is_array() ? "[]" : ids.type_name());
  const int64_t B = static_cast<int64_t>(ids.size());
  int64_t S = -1;
  std::vector<int64_t> values;
  for (int64_t b = 0; b < B; ++b) {
    const json& row = ids[static_cast<size_t>(b)];
    MOE_CHECK(row.is_array(), "token ids: row ", b, " is not a list of ids (got ", row.type_name(),
              "); expected [[id, ...], ...]");
    MOE_CHECK(!row.empty(), "token ids: row ", b, " is empty");
    const int64_t len = static_cast<int64_t>(row.size());
    if (S < 0) S = len;
    MOE_CHECK(len == S, "token ids: row ", b, " has ", len, " ids but row 0 has ", S,
              " (ragged rows; every row must have the same length)");
    for (int64_t s = 0; s < S; ++s) {
      const json& v = row[static_cast<size_t>(s)];
      MOE_CHECK(v.is_number_integer(), "token ids: row ", b, " position ", s,
                " is not an integer: ", json_excerpt(v));
      const int64_t id = v.get<int64_t>();
      MOE_CHECK(id >= 0 && (vocab_size <= 0 || id < vocab_size), "token ids: row ", b,
                " position ", s, " holds id ", id, ", outside the vocabulary [0, ", vocab_size,
                ")");
      values.push_back(id);
    }
  }
  return Tensor::from_vector(values, {B, S});
}

Tensor read_token_batch(const std::string& path, int64_t vocab_size) {
  const json ids = read_json_file(path, "token ids");
  try {
    return parse_token_batch(ids, vocab_size);
  } catch (const Error& e) {
    MOE_FAIL(path, ": ", e.what());
  }
}

std::optional<double> next_token_loss(const Tensor& logits, const Tensor& ids) {
  MOE_CHECK(logits.dim() == 3 && ids.dim() == 2 && logits.size(0) == ids.size(0) &&
                logits.size(1) == ids.size(1),
            "next_token_loss: logits ", shape_str(logits.shape()), " and ids ",
            shape_str(ids.shape()), " must be [B, S, V] and [B, S]");
  const int64_t B = logits.size(0), S = logits.size(1), V = logits.size(2);
  if (S < 2) return std::nullopt;
  const std::vector<double> z = logits.to(Device::cpu()).to_double_vector();
  const std::vector<double> y = ids.to(Device::cpu()).to_double_vector();
  double total = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s + 1 < S; ++s) {
      const double* row = z.data() + (b * S + s) * V;
      const auto label = static_cast<int64_t>(y[static_cast<size_t>(b * S + s + 1)]);
      MOE_CHECK(label >= 0 && label < V, "next_token_loss: id ", label, " outside [0, ", V, ")");
      double max = -std::numeric_limits<double>::infinity();
      for (int64_t v = 0; v < V; ++v) max = std::max(max, row[v]);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - max);
      total += max + std::log(sum) - row[label];
    }
  return total / static_cast<double>(B * (S - 1));
}

ForwardResult run_forward(nn::GPTModel& model, const Tensor& ids) {
  MOE_CHECK(ids.dim() == 2, "run_forward: token ids must be [B, S], got ", shape_str(ids.shape()));
  const int64_t B = ids.size(0), S = ids.size(1), V = model.config().vocab_size;
  // [B, S] -> [S, B] (i64 on the host; small).
  const std::vector<double> flat = ids.to(Device::cpu()).to_double_vector();
  std::vector<int64_t> sb(static_cast<size_t>(B * S));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) {
      const auto id = static_cast<int64_t>(flat[static_cast<size_t>(b * S + s)]);
      MOE_CHECK(id >= 0 && id < V, "run_forward: row ", b, " position ", s, " holds id ", id,
                ", outside the vocabulary [0, ", V, ")");
      sb[static_cast<size_t>(s * B + b)] = id;
    }
  const Tensor input = Tensor::from_vector(sb, {S, B}, model.device());
  const Tensor logits_sbv = model.logits(input).to(Device::cpu()).to(DType::f32);
  MOE_CHECK(logits_sbv.shape() == (Shape{S, B, V}), "run_forward: the model returned logits ",
            shape_str(logits_sbv.shape()), ", expected [S, B, V] = ", shape_str({S, B, V}));
  // [S, B, V] -> [B, S, V]: whole rows of V floats move.
  Tensor logits = Tensor::empty({B, S, V}, DType::f32);
  const float* src = logits_sbv.data<float>();
  float* dst = logits.data<float>();
  for (int64_t s = 0; s < S; ++s)
    for (int64_t b = 0; b < B; ++b)
      std::memcpy(dst + (b * S + s) * V, src + (s * B + b) * V, sizeof(float) * V);
  ForwardResult result;
  result.lm_loss = next_token_loss(logits, ids);
  result.logits = logits;
  return result;
}

}  // namespace moe::checkpoint
