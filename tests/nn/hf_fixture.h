// The Hugging Face parity fixtures (tests/fixtures/hf/<family>/, made by make_hf_fixtures.py
// with transformers' own model classes) and one parity run of a GPTModel on them.
//
// A fixture holds config.json + model.safetensors (the hub layout), input_ids.json (B x S),
// expected.safetensors (transformers' fp32 logits [B, S, V], loss, and grad.<HF name> for a
// handful of parameters) and meta.json (versions, routing margins, and how far transformers'
// own bf16 run is from its fp32 one: the GPU bf16 tests scale their tolerance by it).
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "moe/checkpoint/convert.h"
#include "moe/core/error.h"
#include "moe/io/safetensors.h"
#include "moe/nn/gpt_model.h"
#include "moe/ops/cross_entropy.h"

namespace moe::test {

inline const std::vector<std::string>& hf_fixture_families() {
  static const std::vector<std::string> families{"mixtral", "qwen2_moe", "qwen3_moe",
                                                 "deepseek_v2", "deepseek_v3"};
  return families;
}

struct HfFixture {
  std::string family;
  std::string dir;  // the folder load_model reads
  int64_t batch = 0, seq = 0, vocab = 0;
  Tensor input_ids;  // [S, B] i64 (the transpose of the file's B x S)
  Tensor labels;     // [S, B] i64: ids shifted left by one, the last position ignore_index
  Tensor logits;     // [S, B, V] f32 (transformers' [B, S, V] transposed)
  double loss = 0;   // transformers' loss: the mean next-token cross-entropy
  std::vector<std::pair<std::string, Tensor>> grads;  // HF name -> d loss / d w, f32 CPU
  nlohmann::json meta;
};

inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  MOE_CHECK(in.good(), "cannot open ", path);
  return nlohmann::json::parse(in);
}

inline HfFixture load_hf_fixture(const std::string& family) {
  HfFixture fx;
  fx.family = family;
  fx.dir = fixture_path("hf/" + family);
  fx.meta = read_json_file(fx.dir + "/meta.json");

  const nlohmann::json ids = read_json_file(fx.dir + "/input_ids.json");
  MOE_CHECK(ids.is_array() && !ids.empty() && ids[0].is_array(), fx.dir,
            "/input_ids.json must be a B x S list of lists");
  fx.batch = static_cast<int64_t>(ids.size());
  fx.seq = static_cast<int64_t>(ids[0].size());
  const int64_t B = fx.batch, S = fx.seq;
  std::vector<int64_t> sb(static_cast<size_t>(S * B)), labels(sb.size());
  for (int64_t b = 0; b < B; ++b) {
    MOE_CHECK(static_cast<int64_t>(ids[b].size()) == S, "ragged input_ids.json in ", fx.dir);
    for (int64_t s = 0; s < S; ++s) sb[s * B + b] = ids[b][s].get<int64_t>();
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      labels[s * B + b] = s + 1 < S ? sb[(s + 1) * B + b] : ops::kIgnoreIndex;
  fx.input_ids = Tensor::from_vector(sb, {S, B});
  fx.labels = Tensor::from_vector(labels, {S, B});

  const io::SafetensorsFile expected = io::SafetensorsFile::open(fx.dir + "/expected.safetensors");
  const std::vector<float> bsv = expected.load("logits", Device::cpu(), DType::f32)
                                     .to_vector<float>();
  const Shape& shape = expected.info("logits").shape;
  MOE_CHECK(shape.size() == 3 && shape[0] == B && shape[1] == S, "logits in ", fx.dir,
            " must be [B, S, V]");
  fx.vocab = shape[2];
  const int64_t V = fx.vocab;
  std::vector<float> sbv(bsv.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t v = 0; v < V; ++v) sbv[(s * B + b) * V + v] = bsv[(b * S + s) * V + v];
  fx.logits = Tensor::from_vector(sbv, {S, B, V});
  fx.loss = expected.load("loss", Device::cpu(), DType::f32).item();
  const std::string prefix = "grad.";
  for (const std::string& name : expected.names())
    if (name.rfind(prefix, 0) == 0)
      fx.grads.emplace_back(name.substr(prefix.size()),
                            expected.load(name, Device::cpu(), DType::f32));
  MOE_CHECK(!fx.grads.empty(), fx.dir, "/expected.safetensors holds no gradients");
  return fx;
}

// How far transformers' own bf16 run of the fixture is from its fp32 one (meta.json):
// "logits", "loss", or an HF parameter name for its gradient.
inline double hf_bf16_error(const HfFixture& fx, const std::string& what) {
  const nlohmann::json& info = fx.meta.at("info_bf16_transformers_vs_fp32");
  if (what == "logits") return info.at("logits_rel_err").get<double>();
  if (what == "loss") return info.at("loss_rel_err").get<double>();
  return info.at("grad_rel_err").at(what).get<double>();
}

struct HfParityResult {
  Tensor logits;  // [S, B, V] f32 CPU
  double loss = 0, lm_loss = 0, aux_loss = 0;
  std::map<std::string, Tensor> hf_grads;  // every parameter's gradient under its HF name(s)
};

// Forward (loss), backward (loss_scale 1) and logits of `model` on the fixture's tokens, on the
// model's device. The gradients (and the buffers, which the mapping needs) are mapped to HF
// names with checkpoint::moecore_to_hf: a fused moecore tensor (experts.gate_up_proj, ...)
// splits into the per-expert HF tensors the fixture names.
inline HfParityResult run_hf_parity(nn::GPTModel& model, const HfFixture& fx) {
  const Device device = model.device();
  const Tensor ids = fx.input_ids.to(device);
  const Tensor labels = fx.labels.to(device);
  HfParityResult r;
  model.zero_grad();
  nn::GPTContext ctx;
  const nn::GPTLoss loss = model.forward(ids, labels, ctx);
  model.backward(ctx);
  r.loss = host(loss.loss).item();
  r.lm_loss = host(loss.lm_loss).item();
  r.aux_loss = host(loss.aux_loss).item();
  r.logits = host(model.logits(ids)).to(DType::f32);

  std::map<std::string, Tensor> grads;
  for (nn::Parameter* p : model.parameters()) grads[p->name] = host(p->grad_value()).to(DType::f32);
  for (const nn::NamedBuffer& b : model.buffers()) grads[b.name] = host(*b.value).to(DType::f32);
  r.hf_grads = checkpoint::moecore_to_hf(model.config(), grads);
  return r;
}

// Relative error of a scalar.
inline double scalar_relative_error(double actual, double expected) {
  return relative_error(std::vector<double>{actual}, std::vector<double>{expected});
}

// Expects the run to match the fixture: logits (relative L2 error over the whole [S, B, V]
// tensor) within logits_tol, the loss within loss_tol, no aux loss (the fixtures switch it off),
// and every gradient the fixture lists within grad_tol(HF name).
template <class GradTol>
void expect_hf_parity(const HfFixture& fx, const HfParityResult& r, double logits_tol,
                      double loss_tol, const GradTol& grad_tol) {
  EXPECT_TRUE(close(r.logits, fx.logits, logits_tol, fx.family + " logits"));
  EXPECT_LE(scalar_relative_error(r.loss, fx.loss), loss_tol)
      << fx.family << ": loss " << r.loss << ", transformers " << fx.loss;
  EXPECT_LE(scalar_relative_error(r.lm_loss, fx.loss), loss_tol)
      << fx.family << ": lm_loss " << r.lm_loss << ", transformers " << fx.loss;
  EXPECT_EQ(r.aux_loss, 0.0) << fx.family << ": the fixture's config switches aux losses off";
  for (const auto& [name, expected] : fx.grads) {
    auto it = r.hf_grads.find(name);
    if (it == r.hf_grads.end()) {
      ADD_FAILURE() << fx.family << ": moecore_to_hf gives no tensor " << name;
      continue;
    }
    EXPECT_TRUE(close(it->second, expected, grad_tol(name), fx.family + " grad " + name));
  }
}

}  // namespace moe::test
