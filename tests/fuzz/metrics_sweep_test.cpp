// The bad-input sweep of the metrics JSONL reader behind `moe plot` (docs/bad-input.md): a run's
// file (training points with per-layer expert counts, a validation point, events, a resumed
// branch), one line mutated at a time through its JSON, or the file at the byte level. A file
// that reads is then drawn as `moe plot` draws it (loss chart and one heatmap per layer, small).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fuzz/sweep.h"
#include "moe/plot/metrics_reader.h"
#include "moe/plot/training_plots.h"

namespace moe::plot {
namespace {

using sweep::Mutant;

std::string layers(int a, int b) {
  return R"(, "moe_layers": [{"layer": 1, "aux_loss": 0.01, "tokens": )" + std::to_string(a + b) +
         R"(, "load_min": 0.5, "load_max": 1.5, "expert_tokens": [)" + std::to_string(a) + ", " +
         std::to_string(b) + R"(, 7]}, {"layer": 3, "expert_tokens": [1, 2, 3]}])";
}

std::string valid_metrics() {
  return R"({"iteration": 10, "lm_loss": 4.5, "grad_norm": 1.0, "lr": 0.001)" + layers(30, 10) +
         "}\n" + R"({"iteration": 20, "lm_loss": null)" + layers(20, 20) + "}\n" + "\n" +
         R"({"iteration": 20, "consumed_samples": 80, "valid_lm_loss": 3.75, "valid_ppl": 42.5})" +
         "\n" + R"({"event": "saved checkpoint to ckpt/iter_0000020", "time": 1.0})" + "\n" +
         R"({"iteration": 30, "lm_loss": 3.0)" + layers(25, 15) + "}\n" +
         R"({"event": "resumed from iteration 20"})" + "\n" +
         R"({"iteration": 30, "lm_loss": 2.9)" + layers(5, 5) + "}\n" +
         R"({"iteration": 40, "lm_loss": 2.5)" + layers(6, 4) + "}\n";
}

const std::vector<std::string>& metrics_words() {
  static const std::vector<std::string> words{
      "iteration", "lm_loss", "valid_lm_loss", "event", "moe_layers", "expert_tokens", "layer", ""};
  return words;
}

TEST(MetricsSweep, MetricsJsonl) {
  sweep::ScratchDir dir;
  const std::string path = dir.path("metrics.jsonl");
  const std::string out = dir.path("plots");
  const std::string valid = valid_metrics();
  sweep::Sweep sweep("metrics JSONL");
  // Drawing costs more than reading (PNG compression): the cases of extreme values are drawn,
  // and one random case in 8.
  const auto run = [&](const Mutant& m, bool draw = true) {
    sweep::write_file(path, m.bytes);
    return sweep.check(m, {"metrics.jsonl"}, [&] {
      const TrainingMetrics metrics = read_metrics_jsonl(path);
      for (const LayerExpertLoads& layer : metrics.expert_loads) (void)expert_load_heatmap(layer);
      if (!draw) return;
      PlotOptions options;
      options.width = 480;
      (void)write_training_plots(metrics, out, options);
    });
  };
  EXPECT_TRUE(run({"unchanged", valid, ""}));
  for (const Mutant& m : sweep::truncations(valid, 24)) run(m, false);
  const std::vector<std::string> lines = sweep::split_lines(valid);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    for (const Mutant& m : sweep::json_document_cases(lines[i])) {
      std::vector<std::string> changed = lines;
      changed[i] = m.bytes;
      run({"line " + std::to_string(i + 1) + ": " + m.what, sweep::join_lines(changed), ""}, false);
    }
  }
  // Axes and heatmaps from extreme values.
  for (
      const char* edit :
      {R"({"iteration": 4611686018427387904, "lm_loss": 1.0})",
       R"({"iteration": -9223372036854775808, "lm_loss": 1.0})",
       R"({"iteration": 50, "lm_loss": 1e308})", R"({"iteration": 50, "lm_loss": -1e308})",
       R"({"iteration": 50, "lm_loss": 5e-324})",
       R"({"iteration": 50, "lm_loss": 1, "moe_layers": [{"layer": 1, "expert_tokens": [1e308, 1e308, 1e308]}]})",
       R"({"iteration": 50, "lm_loss": 1, "moe_layers": [{"layer": 9223372036854775807, "expert_tokens": [1]}]})",
       R"({"iteration": 50, "lm_loss": 1, "moe_layers": [{"layer": 1, "expert_tokens": [0, 0, 0]}]})"}) {
    run({std::string("appended ") + edit, valid + edit + "\n", ""});
    run({std::string("alone ") + edit, std::string(edit) + "\n", ""});
  }
  {
    std::string many =
        R"({"iteration": 50, "lm_loss": 1, "moe_layers": [{"layer": 1, "expert_tokens": [1)";
    for (int e = 0; e < 100000; ++e) many += ",1";
    run({"a layer of 100001 experts", many + "]}]}\n", ""});
    std::string points;
    for (int it = 1; it <= 20000; ++it)
      points += R"({"iteration": )" + std::to_string(it) +
                R"(, "lm_loss": 1.5, "moe_layers": [{"layer": 1, "expert_tokens": [1, 2]}]})"
                "\n";
    run({"20000 log points", points, ""});
  }

  for (const uint64_t i : sweep::random_cases(300)) {
    run(sweep::random_mutant("metrics", i,
                             [&](sweep::Rng& rng) {
                               if (rng.percent(20))
                                 return sweep::mutate_bytes(valid, rng, valid.size());
                               std::vector<std::string> changed = lines;
                               size_t line = rng.below(changed.size());
                               while (changed[line].empty()) line = rng.below(changed.size());
                               Mutant m = sweep::mutate_json(changed[line], rng, metrics_words());
                               changed[line] = m.bytes;
                               return Mutant{"line " + std::to_string(line + 1) + ": " + m.what,
                                             sweep::join_lines(changed), ""};
                             }),
        i % 8 == 0);
  }
  EXPECT_GT(sweep.refused(), 0);
}

}  // namespace
}  // namespace moe::plot
