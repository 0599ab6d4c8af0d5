#include "moe/train/train_log.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <limits>

#include "moe/core/allocator.h"
#include "moe/core/error.h"
#include "moe/nn/param_count.h"

namespace moe::train {
namespace {

std::string printf_string(const char* format, auto... args) {
  const int n = std::snprintf(nullptr, 0, format, args...);
  std::string s(static_cast<size_t>(n), '\0');
  std::snprintf(s.data(), s.size() + 1, format, args...);
  return s;
}

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Norm weights and biases are parameters but not matmul weights.
int64_t non_matmul_attention_params(const nn::ModelConfig& c) {
  if (c.attention_type == nn::AttentionType::mla)
    return c.qk_layernorm ? c.mla.q_lora_rank + c.mla.kv_lora_rank : 0;
  const int64_t D = c.head_dim();
  int64_t n = c.qk_layernorm ? 2 * D : 0;
  if (c.add_qkv_bias) n += (c.num_attention_heads + 2 * c.num_query_groups) * D;
  return n;
}

}  // namespace

std::string json_line(const nlohmann::json& object, int indent) {
  // Notes carry arbitrary bytes (the byte-level text sample, paths): dump()'s default strict
  // handler throws on bytes that are not UTF-8. error_handler_t::replace writes each invalid
  // byte as U+FFFD instead, so the line stays valid JSON (the exact bytes are not kept; the
  // text log has them).
  return object.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

ModelFlops model_flops_breakdown(const nn::ModelConfig& c, int64_t seq_length, int64_t tokens) {
  const nn::ModelParamCount count = nn::count_parameters(c);
  const int64_t layers = c.num_layers + c.mtp_num_layers;
  const int64_t output = c.vocab_size * c.hidden_size;
  ModelFlops flops;
  flops.matmul_params = count.main.active() + count.mtp.active() - count.main.embedding -
                        count.main.norms - count.mtp.norms -
                        layers * non_matmul_attention_params(c);
  if (!c.untie_embeddings_and_output_weights)
    flops.matmul_params += output;                   // tied: still a matmul
  flops.matmul_params += c.mtp_num_layers * output;  // each MTP depth runs the output layer
  double dqk, dv;
  if (c.attention_type == nn::AttentionType::mla) {
    dqk = static_cast<double>(c.mla.qk_head_dim + c.mla.qk_pos_emb_head_dim);
    dv = static_cast<double>(c.mla.v_head_dim);
  } else {
    dqk = dv = static_cast<double>(c.head_dim());
  }
  const double T = static_cast<double>(tokens);
  flops.matmul = 6.0 * T * static_cast<double>(flops.matmul_params);
  flops.attention = 6.0 * T * static_cast<double>(layers) *
                    (static_cast<double>(seq_length) / 2.0) *
                    static_cast<double>(c.num_attention_heads) * (dqk + dv);
  return flops;
}

double model_flops(const nn::ModelConfig& c, int64_t seq_length, int64_t tokens) {
  return model_flops_breakdown(c, seq_length, tokens).total();
}

// ---- per-layer MoE stats -------------------------------------------------------------------

void MoELayerStatsCollector::add(int64_t layer, const nn::RouterContext& router) {
  auto it =
      std::find_if(sums_.begin(), sums_.end(), [&](const Sum& s) { return s.layer == layer; });
  if (it == sums_.end()) {
    sums_.push_back(Sum{});
    it = sums_.end() - 1;
    it->layer = layer;
  }
  Sum& s = *it;
  if (router.aux_loss.defined()) s.aux += router.aux_loss.item();
  if (router.z_loss.defined()) s.z += router.z_loss.item();
  ++s.calls;
  if (router.tokens_per_expert.defined()) {
    const std::vector<double> n = router.tokens_per_expert.to_double_vector();
    if (s.counts.empty()) s.counts.assign(n.size(), 0.0);
    for (size_t e = 0; e < n.size() && e < s.counts.size(); ++e) s.counts[e] += n[e];
  }
  if (capacity_may_drop_ && router.expert_ids.defined() && router.expert_ids.numel() > 0) {
    const Tensor ids = router.expert_ids.dtype() == DType::i32 ? router.expert_ids
                                                               : router.expert_ids.to(DType::i32);
    for (int32_t id : ids.to(Device::cpu()).to_vector<int32_t>()) s.dropped += id < 0 ? 1 : 0;
  }
}

void MoELayerStatsCollector::observe(const nn::GPTContext& ctx) {
  for (size_t l = 0; l < ctx.layers.size(); ++l)
    if (ctx.layers[l].moe.router.probs.defined())
      add(static_cast<int64_t>(l), ctx.layers[l].moe.router);
  const int64_t first_mtp = static_cast<int64_t>(ctx.layers.size());
  for (size_t k = 0; k < ctx.mtp.size(); ++k)
    if (ctx.mtp[k].layer.layer.moe.router.probs.defined())
      add(first_mtp + static_cast<int64_t>(k), ctx.mtp[k].layer.layer.moe.router);
}

void MoELayerStatsCollector::reduce_over_group() {
  if (!group_ || group_->size() == 1 || sums_.empty()) return;
  // Every rank observed the same layers in the same order (one model): one f64 all-reduce of
  // [aux, z, calls, dropped, counts...] per layer.
  std::vector<double> packed;
  for (const Sum& s : sums_) {
    packed.insert(packed.end(),
                  {s.aux, s.z, static_cast<double>(s.calls), static_cast<double>(s.dropped)});
    packed.insert(packed.end(), s.counts.begin(), s.counts.end());
  }
  Tensor t = Tensor::from_vector(packed, {static_cast<int64_t>(packed.size())}, group_device_);
  group_->all_reduce(t, dist::ReduceOp::sum);
  const std::vector<double> sum = t.to_double_vector();
  size_t i = 0;
  for (Sum& s : sums_) {
    s.aux = sum[i++];
    s.z = sum[i++];
    s.calls = std::llround(sum[i++]);
    s.dropped = std::llround(sum[i++]);
    for (double& n : s.counts) n = sum[i++];
  }
}

std::vector<MoELayerStats> MoELayerStatsCollector::take() {
  reduce_over_group();
  std::vector<MoELayerStats> out;
  for (const Sum& s : sums_) {
    MoELayerStats st;
    st.layer = s.layer;
    const double calls = static_cast<double>(std::max<int64_t>(s.calls, 1));
    st.aux_loss = s.aux / calls;
    st.z_loss = s.z / calls;
    st.dropped = s.dropped;
    if (!s.counts.empty()) {
      double total = 0.0, lo = s.counts[0], hi = s.counts[0];
      for (double n : s.counts) {
        total += n;
        lo = std::min(lo, n);
        hi = std::max(hi, n);
      }
      const double mean = total / static_cast<double>(s.counts.size());
      double var = 0.0;
      for (double n : s.counts) var += (n - mean) * (n - mean);
      var /= static_cast<double>(s.counts.size());
      st.tokens = static_cast<int64_t>(total);
      for (double n : s.counts) st.expert_tokens.push_back(std::llround(n));
      if (mean > 0.0) {
        st.load_min = lo / mean;
        st.load_max = hi / mean;
        st.load_cv = std::sqrt(var) / mean;
      }
    }
    out.push_back(st);
  }
  sums_.clear();
  std::sort(out.begin(), out.end(),
            [](const MoELayerStats& a, const MoELayerStats& b) { return a.layer < b.layer; });
  return out;
}

// ---- formatting ----------------------------------------------------------------------------

std::string log_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char text[32];
  std::strftime(text, sizeof(text), "[%Y-%m-%d %H:%M:%S]", &local);
  return text;
}

std::string format_duration(double seconds) {
  const int64_t s = std::max<int64_t>(0, static_cast<int64_t>(std::llround(seconds)));
  return printf_string("%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                       static_cast<long long>((s / 60) % 60), static_cast<long long>(s % 60));
}

std::string format_log_line(const LogRecord& r, const std::string& timestamp) {
  // Megatron's training_log(): ' iteration {:8d}/{:8d} |', ' consumed samples: {:12d} |', ...
  std::string line = " " + timestamp;
  line += printf_string(" iteration %8lld/%8lld |", static_cast<long long>(r.iteration),
                        static_cast<long long>(r.train_iters));
  line += printf_string(" consumed samples: %12lld |", static_cast<long long>(r.consumed_samples));
  line += printf_string(" elapsed time per iteration (ms): %.1f |", r.ms_per_iteration);
  line += printf_string(" learning rate: %.6E |", r.learning_rate);
  line += printf_string(" global batch size: %5lld |", static_cast<long long>(r.global_batch_size));
  line += printf_string(" lm loss: %.6E |", r.lm_loss);
  line += printf_string(" load_balancing_loss: %.6E |", r.load_balancing_loss);
  if (r.mtp_loss) line += printf_string(" mtp loss: %.6E |", *r.mtp_loss);
  line += printf_string(" grad norm: %.3f |", r.grad_norm);
  line += printf_string(" number of skipped iterations: %3lld |",
                        static_cast<long long>(r.skipped_iterations));
  line +=
      printf_string(" number of nan iterations: %3lld |", static_cast<long long>(r.nan_iterations));
  line += printf_string(" tokens/s: %.0f |", r.tokens_per_second);
  line += printf_string(" TFLOP/s/GPU: %.3g |", r.tflops_per_gpu);
  if (r.mfu) line += printf_string(" MFU: %.1f%% |", *r.mfu * 100.0);
  line += printf_string(" mem GiB: %.2f |", r.mem_gib);
  const double progress = r.train_iters > 0 ? 100.0 * static_cast<double>(r.iteration) /
                                                  static_cast<double>(r.train_iters)
                                            : 100.0;
  line += " ETA " + format_duration(r.eta_seconds) + printf_string(" (%.1f%%)", progress);
  return line;
}

std::string format_layer_lines(const std::vector<MoELayerStats>& layers) {
  std::string text;
  for (const MoELayerStats& s : layers)
    text += printf_string(
        "    layer %3lld | aux loss: %.6E | z loss: %.6E | expert load min/max/cv: %.3f / %.3f / "
        "%.3f | dropped tokens: %lld\n",
        static_cast<long long>(s.layer), s.aux_loss, s.z_loss, s.load_min, s.load_max, s.load_cv,
        static_cast<long long>(s.dropped));
  return text;
}

nlohmann::json log_record_json(const LogRecord& r) {
  nlohmann::json j = {{"iteration", r.iteration},
                      {"train_iters", r.train_iters},
                      {"consumed_samples", r.consumed_samples},
                      {"ms_per_iteration", r.ms_per_iteration},
                      {"learning_rate", r.learning_rate},
                      {"global_batch_size", r.global_batch_size},
                      {"lm_loss", r.lm_loss},
                      {"load_balancing_loss", r.load_balancing_loss},
                      {"grad_norm", r.grad_norm},
                      {"skipped_iterations", r.skipped_iterations},
                      {"nan_iterations", r.nan_iterations},
                      {"tokens_per_second", r.tokens_per_second},
                      {"tflops_per_gpu", r.tflops_per_gpu},
                      {"mem_gib", r.mem_gib},
                      {"eta_seconds", r.eta_seconds}};
  if (r.mtp_loss) j["mtp_loss"] = *r.mtp_loss;
  if (r.mfu) j["mfu"] = *r.mfu;
  // JSON has no NaN: a loss that was not finite is written as null.
  for (auto& [key, v] : j.items())
    if (v.is_number_float() && !std::isfinite(v.get<double>())) v = nullptr;
  if (!r.layers.empty()) {
    nlohmann::json layers = nlohmann::json::array();
    for (const MoELayerStats& s : r.layers) {
      layers.push_back({{"layer", s.layer},
                        {"aux_loss", s.aux_loss},
                        {"z_loss", s.z_loss},
                        {"tokens", s.tokens},
                        {"load_min", s.load_min},
                        {"load_max", s.load_max},
                        {"load_cv", s.load_cv},
                        {"dropped", s.dropped}});
      if (!s.expert_tokens.empty()) layers.back()["expert_tokens"] = s.expert_tokens;
    }
    j["moe_layers"] = layers;
  }
  return j;
}

// ---- the logger ----------------------------------------------------------------------------

TrainLogger::TrainLogger(const nn::ModelConfig& model, const TrainLoggerOptions& options,
                         std::FILE* out)
    : model_(model), options_(options), out_(out) {
  flops_per_iteration_ =
      model_flops(model, options.seq_length, options.global_batch_size * options.seq_length);
  if (!options_.metrics_jsonl.empty()) {
    const std::filesystem::path path(options_.metrics_jsonl);
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    jsonl_ = std::make_unique<std::ofstream>(
        path, options_.append_metrics ? std::ios::app : std::ios::trunc);
    MOE_CHECK(jsonl_->good(), "cannot open the metrics file ", options_.metrics_jsonl);
  }
  if (!options_.tensorboard_dir.empty())
    tensorboard_ = std::make_unique<TensorBoardWriter>(options_.tensorboard_dir);
}

void TrainLogger::write_json(const nlohmann::json& object) {
  if (!jsonl_) return;
  *jsonl_ << json_line(object) << '\n';
  jsonl_->flush();
}

void TrainLogger::note(const std::string& text) {
  if (out_) {
    std::fprintf(out_, "%s\n", text.c_str());
    std::fflush(out_);
  }
  write_json({{"event", text}, {"time", wall_time()}});
}

void TrainLogger::on_step(const StepMetrics& m, bool log_now, std::vector<MoELayerStats> layers) {
  ++steps_;
  ++run_steps_;
  seconds_ += m.seconds;
  run_seconds_ += m.seconds;
  if (m.skipped) {
    ++skipped_;
  } else {
    ++taken_;
    loss_sum_ += m.loss;
    aux_sum_ += m.aux_loss;
    mtp_sum_ += m.mtp_loss;
    last_grad_norm_ = m.grad_norm;
  }
  if (m.skipped && out_) std::fprintf(out_, " %s\n", m.message.c_str());
  if (!m.note.empty() && out_) std::fprintf(out_, " %s\n", m.note.c_str());
  if (!log_now) return;

  LogRecord r;
  r.iteration = m.iteration;
  r.train_iters = options_.train_iters;
  r.consumed_samples = m.consumed_samples;
  r.ms_per_iteration = 1000.0 * seconds_ / static_cast<double>(steps_);
  r.learning_rate = trainer_ ? trainer_->schedule().lr(trainer_->schedule_samples()) : m.lr;
  r.global_batch_size = options_.global_batch_size;
  const double taken = static_cast<double>(taken_);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  r.lm_loss = taken_ ? loss_sum_ / taken : nan;
  r.load_balancing_loss = taken_ ? aux_sum_ / taken : nan;
  if (model_.mtp_num_layers > 0) r.mtp_loss = taken_ ? mtp_sum_ / taken : nan;
  r.grad_norm = taken_ ? last_grad_norm_ : nan;
  r.skipped_iterations = skipped_;
  r.nan_iterations = skipped_;
  const double seconds = std::max(seconds_, 1e-12);
  r.tokens_per_second = static_cast<double>(steps_ * m.tokens) / seconds;
  const double flops_per_second = flops_per_iteration_ * static_cast<double>(steps_) / seconds /
                                  static_cast<double>(std::max<int64_t>(options_.world_size, 1));
  r.tflops_per_gpu = flops_per_second / 1e12;
  if (options_.device.is_cuda()) r.mfu = flops_per_second / kPeakBf16FlopsPerGpu;
  r.mem_gib = static_cast<double>(memory_stats(options_.device).peak_allocated_bytes) /
              static_cast<double>(int64_t{1} << 30);
  const int64_t remaining = std::max<int64_t>(0, options_.train_iters - m.iteration);
  r.eta_seconds = run_seconds_ / static_cast<double>(run_steps_) * static_cast<double>(remaining);
  r.layers = std::move(layers);

  if (out_) {
    std::fprintf(out_, "%s\n%s", format_log_line(r, log_timestamp()).c_str(),
                 format_layer_lines(r.layers).c_str());
    std::fflush(out_);
  }
  nlohmann::json j = log_record_json(r);
  j["time"] = wall_time();
  write_json(j);
  if (tensorboard_) {
    const int64_t it = r.iteration;
    tensorboard_->add_scalar("learning-rate", r.learning_rate, it);
    tensorboard_->add_scalar("batch-size", static_cast<double>(r.global_batch_size), it);
    if (taken_) {
      tensorboard_->add_scalar("lm loss", r.lm_loss, it);
      tensorboard_->add_scalar("lm loss vs samples", r.lm_loss, r.consumed_samples);
      tensorboard_->add_scalar("load_balancing_loss", r.load_balancing_loss, it);
      if (r.mtp_loss) tensorboard_->add_scalar("mtp_loss", *r.mtp_loss, it);
      tensorboard_->add_scalar("grad-norm", r.grad_norm, it);
    }
    tensorboard_->add_scalar("iteration-time", r.ms_per_iteration / 1000.0, it);
    tensorboard_->add_scalar("throughput", r.tflops_per_gpu, it);
    tensorboard_->add_scalar("tokens-per-second", r.tokens_per_second, it);
    tensorboard_->add_scalar("mem-max-allocated-bytes", r.mem_gib * (1 << 30), it);
    tensorboard_->add_scalar("skipped-iterations", static_cast<double>(r.skipped_iterations), it);
    for (const MoELayerStats& s : r.layers) {
      const std::string l = std::to_string(s.layer);
      tensorboard_->add_scalar("moe/load_balancing_loss_layer_" + l, s.aux_loss, it);
      tensorboard_->add_scalar("moe/z_loss_layer_" + l, s.z_loss, it);
      tensorboard_->add_scalar("moe/expert_load_max_layer_" + l, s.load_max, it);
      tensorboard_->add_scalar("moe/expert_load_min_layer_" + l, s.load_min, it);
      tensorboard_->add_scalar("moe/expert_load_cv_layer_" + l, s.load_cv, it);
      tensorboard_->add_scalar("moe/dropped_tokens_layer_" + l, static_cast<double>(s.dropped), it);
    }
    tensorboard_->flush();
  }
  steps_ = taken_ = skipped_ = 0;
  loss_sum_ = aux_sum_ = mtp_sum_ = seconds_ = 0.0;
}

void TrainLogger::on_eval(int64_t iteration, int64_t consumed_samples, double lm_loss) {
  const double ppl = std::exp(std::min(lm_loss, 20.0));  // Megatron caps the exponent at 20
  if (out_) {
    const std::string text = printf_string(
        " validation loss at iteration %lld | lm loss value: %.6E | lm loss PPL: %.6E |",
        static_cast<long long>(iteration), lm_loss, ppl);
    const std::string rule(text.size(), '-');
    std::fprintf(out_, "%s\n%s\n%s\n", rule.c_str(), text.c_str(), rule.c_str());
    std::fflush(out_);
  }
  nlohmann::json j = {{"iteration", iteration},
                      {"consumed_samples", consumed_samples},
                      {"valid_lm_loss", lm_loss},
                      {"valid_ppl", ppl},
                      {"time", wall_time()}};
  if (!std::isfinite(lm_loss)) j["valid_lm_loss"] = nullptr, j["valid_ppl"] = nullptr;
  write_json(j);
  if (tensorboard_) {
    tensorboard_->add_scalar("lm loss validation", lm_loss, iteration);
    tensorboard_->add_scalar("lm loss validation vs samples", lm_loss, consumed_samples);
    tensorboard_->add_scalar("lm loss validation ppl", ppl, iteration);
    tensorboard_->flush();
  }
}

}  // namespace moe::train
