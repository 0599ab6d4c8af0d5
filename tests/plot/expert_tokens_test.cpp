// The per-expert counts `moe plot` draws: a tiny model's routers, observed by the trainer's
// collector over two log intervals of two micro-batches each, written by the logger to the
// JSONL file and read back; each interval's "expert_tokens" equal the routers' own
// tokens_per_expert summed over that interval, next to the fields that were there before.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/nn/gpt_model.h"
#include "moe/plot/metrics_reader.h"
#include "moe/train/train_log.h"
#include "nn/gpt_test_util.h"
#include "plot/plot_test_util.h"

namespace moe::plot {
namespace {

TEST(PlotExpertTokens, JsonlCountsEqualTheRoutersCountsOverEachInterval) {
  const nn::ModelConfig c = test::tiny_gpt_config(DType::f32);  // layer 1: MoE, 4 experts, top-2
  nn::GPTModel model(c, DType::f32, Device::cpu(), 7);
  const int64_t S = 5, B = 3;
  const std::string path = (test::fresh_plot_dir("expert_tokens") / "metrics.jsonl").string();
  train::TrainLoggerOptions o;
  o.train_iters = 4;
  o.global_batch_size = B;
  o.seq_length = S;
  o.metrics_jsonl = path;
  std::vector<std::vector<int64_t>> expected;  // per interval
  {
    train::TrainLogger logger(c, o, nullptr);
    train::MoELayerStatsCollector collector;
    uint64_t seed = 100;
    for (int64_t iteration = 1; iteration <= 4; ++iteration) {
      if (iteration % 2 == 1) expected.emplace_back(4, 0);
      for (int micro = 0; micro < 2; ++micro) {
        // Different tokens each micro-batch, so the counts differ between intervals.
        const Tensor ids = test::random_tokens(S, B, c.vocab_size, ++seed);
        const Tensor labels = test::random_tokens(S, B, c.vocab_size, ++seed);
        nn::GPTContext ctx;
        model.forward(ids, labels, ctx);
        collector.observe(ctx);
        const std::vector<int64_t> n =
            ctx.layers[1].moe.router.tokens_per_expert.to(Device::cpu()).to_vector<int64_t>();
        ASSERT_EQ(n.size(), 4u);
        for (size_t e = 0; e < 4; ++e) expected.back()[e] += n[e];
      }
      train::StepMetrics step;
      step.iteration = iteration;
      step.consumed_samples = iteration * B;
      step.loss = 2.0;
      step.tokens = S * B;
      step.seconds = 0.1;
      const bool log_now = iteration % 2 == 0;
      logger.on_step(step, log_now,
                     log_now ? collector.take() : std::vector<train::MoELayerStats>{});
    }
  }
  ASSERT_EQ(expected.size(), 2u);
  EXPECT_NE(expected[0], expected[1]);
  for (const std::vector<int64_t>& interval : expected) {
    int64_t total = 0;
    for (int64_t n : interval) total += n;
    EXPECT_EQ(total,
              2 * 2 * S * B * 2);  // 2 iterations x 2 micro-batches, each token to k = 2 experts
  }

  // Read back by the plot reader.
  const TrainingMetrics m = read_metrics_jsonl(path);
  EXPECT_EQ(m.iterations, (std::vector<int64_t>{2, 4}));
  ASSERT_EQ(m.expert_loads.size(), 1u);
  EXPECT_EQ(m.expert_loads[0].layer, 1);
  ASSERT_EQ(m.expert_loads[0].points.size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(m.expert_loads[0].points[k].iteration, static_cast<int64_t>(2 * (k + 1)));
    const std::vector<double> want(expected[k].begin(), expected[k].end());
    EXPECT_EQ(m.expert_loads[0].points[k].tokens, want) << "interval " << k;
  }
  // The raw JSON: integers, and the fields that were there before are still there.
  std::ifstream in(path);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  const nlohmann::json layer = nlohmann::json::parse(line)["moe_layers"][0];
  for (const char* key :
       {"layer", "aux_loss", "z_loss", "tokens", "load_min", "load_max", "load_cv", "dropped"})
    EXPECT_TRUE(layer.contains(key)) << key;
  ASSERT_TRUE(layer["expert_tokens"].is_array());
  for (const nlohmann::json& n : layer["expert_tokens"]) EXPECT_TRUE(n.is_number_integer());
  EXPECT_EQ(layer["expert_tokens"].get<std::vector<int64_t>>(), expected[0]);
  EXPECT_EQ(layer["tokens"].get<int64_t>(), 2 * 2 * S * B * 2);
}

}  // namespace
}  // namespace moe::plot
