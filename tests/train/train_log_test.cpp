// `moe train`'s reporting: the Megatron-style log line, the JSONL metrics (interval averages,
// skipped iterations, validation), TensorBoard files, the model-FLOPs count, and the per-layer
// MoE statistics read from a real forward's router outputs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/printed_text.h"
#include "moe/nn/gpt_model.h"
#include "moe/train/train_log.h"
#include "nn/gpt_test_util.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("moe_train_log_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

LogRecord example_record() {
  LogRecord r;
  r.iteration = 100;
  r.train_iters = 1000;
  r.consumed_samples = 6400;
  r.ms_per_iteration = 412.34;
  r.learning_rate = 3e-4;
  r.global_batch_size = 64;
  r.lm_loss = 2.345678;
  r.load_balancing_loss = 0.0101234;
  r.grad_norm = 1.23456;
  r.skipped_iterations = 1;
  r.nan_iterations = 1;
  r.tokens_per_second = 19876.4;
  r.tflops_per_gpu = 1.234;
  r.mem_gib = 0.125;
  r.eta_seconds = 371.0;
  return r;
}

TEST(TrainLog, MegatronLineFormat) {
  const std::string line = format_log_line(example_record(), "[2026-11-28 12:00:00]");
  EXPECT_EQ(line,
            " [2026-11-28 12:00:00] iteration      100/    1000 | consumed samples:         6400 |"
            " elapsed time per iteration (ms): 412.3 | learning rate: 3.000000E-04 |"
            " global batch size:    64 | lm loss: 2.345678E+00 | load_balancing_loss: 1.012340E-02 |"
            " grad norm: 1.235 | number of skipped iterations:   1 | number of nan iterations:   1 |"
            " tokens/s: 19876 | TFLOP/s/GPU: 1.23 | mem GiB: 0.12 | ETA 0:06:11 (10.0%)");
  LogRecord gpu = example_record();
  gpu.mfu = 0.4567;
  gpu.mtp_loss = 0.5;
  const std::string gpu_line = format_log_line(gpu, "[t]");
  EXPECT_NE(gpu_line.find("| MFU: 45.7% |"), std::string::npos) << gpu_line;
  EXPECT_NE(gpu_line.find("| mtp loss: 5.000000E-01 |"), std::string::npos) << gpu_line;
  EXPECT_EQ(format_duration(3725.4), "1:02:05");
  // The timestamp is Megatron's bracketed local time.
  const std::string ts = log_timestamp();
  ASSERT_EQ(ts.size(), 21u) << ts;
  EXPECT_EQ(ts.front(), '[');
  EXPECT_EQ(ts[5], '-');
  EXPECT_EQ(ts.back(), ']');
}

TEST(TrainLog, JsonRecordAndNonFiniteValues) {
  LogRecord r = example_record();
  r.lm_loss = std::numeric_limits<double>::quiet_NaN();
  r.layers.push_back(MoELayerStats{3, 0.01, 0.002, 512, 0.5, 1.5, 0.25, 4});
  const nlohmann::json j = log_record_json(r);
  EXPECT_EQ(j["iteration"], 100);
  EXPECT_EQ(j["consumed_samples"], 6400);
  EXPECT_DOUBLE_EQ(j["learning_rate"].get<double>(), 3e-4);
  EXPECT_TRUE(j["lm_loss"].is_null());  // JSON has no NaN
  EXPECT_DOUBLE_EQ(j["grad_norm"].get<double>(), 1.23456);
  EXPECT_FALSE(j.contains("mfu"));
  EXPECT_FALSE(j.contains("mtp_loss"));
  ASSERT_EQ(j["moe_layers"].size(), 1u);
  EXPECT_EQ(j["moe_layers"][0]["layer"], 3);
  EXPECT_DOUBLE_EQ(j["moe_layers"][0]["load_cv"].get<double>(), 0.25);
  EXPECT_EQ(j["moe_layers"][0]["dropped"], 4);
  EXPECT_NE(format_layer_lines(r.layers).find("layer   3 | aux loss: 1.000000E-02"), std::string::npos);
}

StepMetrics step(int64_t iteration, double loss, bool skipped = false) {
  StepMetrics m;
  m.iteration = iteration;
  m.consumed_samples = iteration * 4;
  m.lr = 1e-3 * static_cast<double>(iteration);
  m.loss = loss;
  m.aux_loss = loss / 100.0;
  m.grad_norm = 10.0 * static_cast<double>(iteration);
  m.skipped = skipped;
  if (skipped) m.message = "iteration " + std::to_string(iteration) + ": skipped";
  m.tokens = 4 * 16;
  m.seconds = 0.5;
  return m;
}

TEST(TrainLog, LoggerAveragesTheIntervalAndWritesJsonlAndTensorBoard) {
  const fs::path dir = fresh_dir("logger");
  TrainLoggerOptions o;
  o.train_iters = 6;
  o.global_batch_size = 4;
  o.seq_length = 16;
  o.metrics_jsonl = (dir / "sub" / "metrics.jsonl").string();
  o.tensorboard_dir = (dir / "tb").string();
  const nn::ModelConfig model = test::tiny_gpt_config(DType::f32);
  std::FILE* out = std::tmpfile();
  {
    TrainLogger logger(model, o, out);
    logger.on_step(step(1, 4.0), false);
    logger.on_step(step(2, std::nan(""), /*skipped=*/true), false);
    logger.on_step(step(3, 2.0), true);  // interval 1..3: mean of the taken 4 and 2
    logger.on_eval(3, 12, 2.5);
    logger.on_step(step(4, 1.0), true);
    logger.note("saved checkpoint x");
  }
  const std::vector<nlohmann::json> lines = read_jsonl(o.metrics_jsonl);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["iteration"], 3);
  EXPECT_DOUBLE_EQ(lines[0]["lm_loss"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(lines[0]["load_balancing_loss"].get<double>(), 0.03);
  EXPECT_DOUBLE_EQ(lines[0]["grad_norm"].get<double>(), 30.0);  // the last taken iteration's
  EXPECT_EQ(lines[0]["skipped_iterations"], 1);
  EXPECT_EQ(lines[0]["nan_iterations"], 1);
  EXPECT_DOUBLE_EQ(lines[0]["ms_per_iteration"].get<double>(), 500.0);
  EXPECT_DOUBLE_EQ(lines[0]["tokens_per_second"].get<double>(), 128.0);  // 64 tokens / 0.5 s
  EXPECT_DOUBLE_EQ(lines[0]["eta_seconds"].get<double>(), 1.5);          // 3 left x 0.5 s
  EXPECT_DOUBLE_EQ(lines[0]["tflops_per_gpu"].get<double>(), model_flops(model, 16, 64) / 0.5 / 1e12);
  EXPECT_EQ(lines[1]["iteration"], 3);
  EXPECT_DOUBLE_EQ(lines[1]["valid_lm_loss"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(lines[1]["valid_ppl"].get<double>(), std::exp(2.5));
  EXPECT_EQ(lines[2]["iteration"], 4);
  EXPECT_DOUBLE_EQ(lines[2]["lm_loss"].get<double>(), 1.0);  // a new interval
  EXPECT_EQ(lines[2]["skipped_iterations"], 0);
  EXPECT_EQ(lines[3]["event"], "saved checkpoint x");

  const std::string text = test::printed_text(out);
  EXPECT_NE(text.find("iteration        3/       6 | consumed samples:           12 |"), std::string::npos) << text;
  EXPECT_NE(text.find("iteration 2: skipped"), std::string::npos) << text;
  EXPECT_NE(text.find("validation loss at iteration 3 | lm loss value: 2.500000E+00"), std::string::npos) << text;

  int event_files = 0;
  for (const auto& entry : fs::directory_iterator(dir / "tb"))
    event_files += entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_EQ(event_files, 1);
  // A fresh logger starts the JSONL afresh; a resumed one appends.
  { TrainLogger again(model, o, nullptr); }
  EXPECT_EQ(read_jsonl(o.metrics_jsonl).size(), 0u);
}

// The text sample of a byte-level model is arbitrary bytes, often not UTF-8: the note must
// still be written, as valid JSON (each invalid byte as U+FFFD), and the text log keeps the
// bytes as they are.
TEST(TrainLog, NotesWithBytesThatAreNotUtf8StayValidJson) {
  const fs::path dir = fresh_dir("utf8");
  TrainLoggerOptions o;
  o.train_iters = 1;
  o.global_batch_size = 1;
  o.seq_length = 8;
  o.metrics_jsonl = (dir / "metrics.jsonl").string();
  std::FILE* out = std::tmpfile();
  const std::string sample = "sample:\n\xD6\x8C&\xFF ok \xE2\x82";  // bad, bad, cut short
  {
    TrainLogger logger(test::tiny_gpt_config(DType::f32), o, out);
    logger.note(sample);
    logger.note("after");
  }
  const std::vector<nlohmann::json> lines = read_jsonl(o.metrics_jsonl);
  ASSERT_EQ(lines.size(), 2u);
  const std::string event = lines[0]["event"].get<std::string>();
  EXPECT_NE(event.find("sample:\n"), std::string::npos) << event;
  EXPECT_NE(event.find("\xEF\xBF\xBD"), std::string::npos) << event;  // U+FFFD
  EXPECT_NE(event.find(" ok "), std::string::npos) << event;
  EXPECT_EQ(lines[1]["event"], "after");
  EXPECT_EQ(json_line(nlohmann::json{{"x", "\xC3"}}), "{\"x\":\"\xEF\xBF\xBD\"}");
  const std::string text = test::printed_text(out);
  EXPECT_NE(text.find(sample), std::string::npos);
}

TEST(TrainLog, ModelFlopsKnownAnswer) {
  // Dense-free GQA MoE model, untied: per layer attention H Hq D + 2 H Hkv D + Hq D H, router
  // E H, k experts 3 H Fe; output V H; norms and embedding excluded.
  nn::ModelConfig c = test::tiny_gpt_config(DType::f32);  // H 8, Hq 4, Hkv 2, D 2, V 11
  c.moe_layer_pattern = {1, 1};
  c.untie_embeddings_and_output_weights = true;
  const double H = 8, Hq = 4, Hkv = 2, D = 2, E = 4, k = 2, Fe = 6, V = 11, L = 2;
  const double P = L * (H * Hq * D + 2 * H * Hkv * D + Hq * D * H + E * H + k * 3 * H * Fe) + V * H;
  const double S = 16, T = 64;
  EXPECT_DOUBLE_EQ(model_flops(c, 16, 64), 6 * T * P + 6 * T * L * (S / 2) * Hq * (D + D));
  // Tied: the output layer is still a matmul.
  c.untie_embeddings_and_output_weights = false;
  EXPECT_DOUBLE_EQ(model_flops(c, 16, 64), 6 * T * P + 6 * T * L * (S / 2) * Hq * (D + D));
}

TEST(TrainLog, PerLayerStatsFromTheRouters) {
  const nn::ModelConfig c = test::tiny_gpt_config(DType::f32);  // layer 1 is MoE (4 experts, top-2)
  nn::GPTModel model(c, DType::f32, Device::cpu(), 5);
  const int64_t S = 6, B = 3;
  const Tensor ids = test::random_tokens(S, B, c.vocab_size, 11);
  const Tensor labels = test::random_tokens(S, B, c.vocab_size, 12);
  MoELayerStatsCollector collector;
  std::vector<double> aux;
  std::vector<double> counts(4, 0.0);
  for (int i = 0; i < 2; ++i) {  // two micro-batches
    nn::GPTContext ctx;
    model.forward(ids, labels, ctx);
    collector.observe(ctx);
    aux.push_back(ctx.layers[1].moe.router.aux_loss.item());
    const std::vector<double> n = ctx.layers[1].moe.router.tokens_per_expert.to_double_vector();
    for (size_t e = 0; e < 4; ++e) counts[e] += n[e];
  }
  const std::vector<MoELayerStats> stats = collector.take();
  ASSERT_EQ(stats.size(), 1u);
  const MoELayerStats& s = stats[0];
  EXPECT_EQ(s.layer, 1);
  EXPECT_EQ(s.tokens, 2 * S * B * 2);  // every token routed to k = 2 experts
  EXPECT_DOUBLE_EQ(s.aux_loss, (aux[0] + aux[1]) / 2);
  EXPECT_GT(s.z_loss, 0.0);
  const double mean = (counts[0] + counts[1] + counts[2] + counts[3]) / 4;
  const double lo = *std::min_element(counts.begin(), counts.end());
  const double hi = *std::max_element(counts.begin(), counts.end());
  double var = 0;
  for (double n : counts) var += (n - mean) * (n - mean) / 4;
  EXPECT_DOUBLE_EQ(s.load_min, lo / mean);
  EXPECT_DOUBLE_EQ(s.load_max, hi / mean);
  EXPECT_NEAR(s.load_cv, std::sqrt(var) / mean, 1e-12);
  EXPECT_EQ(s.dropped, 0);  // dropless
  EXPECT_TRUE(collector.take().empty());  // reset

  // A collector told the model cannot drop gives the same figures without reading the ids.
  MoELayerStatsCollector dropless(/*capacity_may_drop=*/false);
  for (int i = 0; i < 2; ++i) {
    nn::GPTContext ctx;
    model.forward(ids, labels, ctx);
    dropless.observe(ctx);
  }
  const std::vector<MoELayerStats> again = dropless.take();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].tokens, s.tokens);
  EXPECT_EQ(again[0].expert_tokens, s.expert_tokens);
  EXPECT_EQ(again[0].dropped, 0);
}

// With a capacity factor some slots are dropped (id -1), and the collector counts them.
TEST(TrainLog, PerLayerStatsCountDroppedSlots) {
  nn::ModelConfig c = test::tiny_gpt_config(DType::f32);
  c.moe.moe_expert_capacity_factor = 0.5;  // half the average load fits: drops for sure
  nn::GPTModel model(c, DType::f32, Device::cpu(), 5);
  const Tensor ids = test::random_tokens(6, 3, c.vocab_size, 11);
  const Tensor labels = test::random_tokens(6, 3, c.vocab_size, 12);
  MoELayerStatsCollector collector(true);
  nn::GPTContext ctx;
  model.forward(ids, labels, ctx);
  collector.observe(ctx);
  const std::vector<int32_t> slots =
      ctx.layers[1].moe.router.expert_ids.to(DType::i32).to_vector<int32_t>();
  const int64_t expected = std::count_if(slots.begin(), slots.end(), [](int32_t e) { return e < 0; });
  const std::vector<MoELayerStats> stats = collector.take();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_GT(expected, 0);
  EXPECT_EQ(stats[0].dropped, expected);
}

}  // namespace
}  // namespace moe::train
