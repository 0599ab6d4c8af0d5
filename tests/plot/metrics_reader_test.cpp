// Reading `moe train`'s JSONL: training points, validation points and events; null losses;
// resumed runs that repeat iterations; per-layer expert counts; and errors that name the file
// and line for malformed input, plus the plots' own errors for empty or load-less files.
#include "moe/plot/metrics_reader.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include "moe/core/error.h"
#include "moe/plot/training_plots.h"
#include "plot/plot_test_util.h"
#include "plot/png_testing.h"

namespace moe::plot {
namespace {

namespace fs = std::filesystem;

TrainingMetrics parse(const std::string& text) {
  std::istringstream in(text);
  return parse_metrics_jsonl(in, "run/metrics.jsonl");
}

std::string error_of(const std::string& text) {
  try {
    parse(text);
  } catch (const moe::Error& e) {
    return e.what();
  }
  return "";
}

std::string layers(int64_t a, int64_t b) {
  return R"(, "moe_layers": [{"layer": 1, "aux_loss": 0.01, "z_loss": 0.0, "tokens": )" +
         std::to_string(a + b) +
         R"(, "load_min": 0.5, "load_max": 1.5, "load_cv": 0.5, "dropped": 0, "expert_tokens": [)" +
         std::to_string(a) + ", " + std::to_string(b) + "]}]";
}

TEST(PlotMetricsReader, TrainingValidationEventsAndExpertCounts) {
  const TrainingMetrics m = parse(
      R"({"iteration": 10, "lm_loss": 4.5, "grad_norm": 1.0)" + layers(30, 10) + "}\n" +
      R"({"iteration": 20, "lm_loss": null)" + layers(20, 20) + "}\n" + "\n" +
      R"({"iteration": 20, "consumed_samples": 80, "valid_lm_loss": 3.75, "valid_ppl": 42.5})" +
      "\n" + R"({"event": "saved checkpoint to ckpt/iter_0000020", "time": 1.0})" + "\n" +
      R"({"iteration": 30, "lm_loss": 3.0)" + layers(25, 15) + "}\n");
  EXPECT_EQ(m.source, "run/metrics.jsonl");
  EXPECT_EQ(m.iterations, (std::vector<int64_t>{10, 20, 30}));
  ASSERT_EQ(m.lm_loss.size(), 3u);
  EXPECT_DOUBLE_EQ(m.lm_loss[0], 4.5);
  EXPECT_TRUE(std::isnan(m.lm_loss[1]));  // null: the interval took no update
  EXPECT_DOUBLE_EQ(m.lm_loss[2], 3.0);
  EXPECT_EQ(m.valid_iterations, (std::vector<int64_t>{20}));
  EXPECT_EQ(m.valid_lm_loss, (std::vector<double>{3.75}));
  EXPECT_TRUE(m.has_moe_layers);
  ASSERT_EQ(m.expert_loads.size(), 1u);
  EXPECT_EQ(m.expert_loads[0].layer, 1);
  ASSERT_EQ(m.expert_loads[0].points.size(), 3u);
  EXPECT_EQ(m.expert_loads[0].points[0].iteration, 10);
  EXPECT_EQ(m.expert_loads[0].points[0].tokens, (std::vector<double>{30, 10}));
  EXPECT_EQ(m.expert_loads[0].points[2].tokens, (std::vector<double>{25, 15}));
}

TEST(PlotMetricsReader, AResumedRunReplacesTheIterationsItRepeats) {
  // Logged up to 40 with an evaluation at 30, then resumed from the checkpoint at 20.
  const TrainingMetrics m = parse(R"({"iteration": 10, "lm_loss": 5.0)" + layers(1, 1) + "}\n" +
                                  R"({"iteration": 20, "lm_loss": 4.0)" + layers(2, 2) + "}\n" +
                                  R"({"iteration": 30, "lm_loss": 3.0)" + layers(3, 3) + "}\n" +
                                  R"({"iteration": 30, "valid_lm_loss": 3.1})" + "\n" +
                                  R"({"iteration": 40, "lm_loss": 2.0)" + layers(4, 4) + "}\n" +
                                  R"({"event": "resumed from iteration 20"})" + "\n" +
                                  R"({"iteration": 30, "lm_loss": 2.9)" + layers(5, 5) + "}\n");
  EXPECT_EQ(m.iterations, (std::vector<int64_t>{10, 20, 30}));
  EXPECT_EQ(m.lm_loss, (std::vector<double>{5.0, 4.0, 2.9}));
  EXPECT_TRUE(m.valid_iterations.empty());  // the evaluation belonged to the abandoned branch
  ASSERT_EQ(m.expert_loads[0].points.size(), 3u);
  EXPECT_EQ(m.expert_loads[0].points[2].tokens, (std::vector<double>{5, 5}));
}

TEST(PlotMetricsReader, MalformedLinesNameTheFileAndLine) {
  const std::string good = R"({"iteration": 10, "lm_loss": 4.5})"
                           "\n";
  std::string e = error_of(good + good + "{\"iteration\": 30, \"lm_loss\": 4.\n");  // cut short
  EXPECT_NE(e.find("run/metrics.jsonl, line 3: not valid JSON"), std::string::npos) << e;
  e = error_of(good + "[1, 2]\n");
  EXPECT_NE(e.find("line 2: not a JSON object"), std::string::npos) << e;
  e = error_of(good + R"({"iteration": "20", "lm_loss": 1.0})"
                      "\n");
  EXPECT_NE(e.find("line 2: \"iteration\" is not an integer"), std::string::npos) << e;
  e = error_of(R"({"iteration": 20, "lm_loss": "low"})"
               "\n");
  EXPECT_NE(e.find("line 1: \"lm_loss\" is not a number or null"), std::string::npos) << e;
  e = error_of(R"({"lm_loss": 1.0})"
               "\n");
  EXPECT_NE(e.find("line 1: no \"iteration\""), std::string::npos) << e;
  e = error_of(R"({"iteration": 5, "loss": 1.0})"
               "\n");
  EXPECT_NE(e.find("line 1: neither a training log point"), std::string::npos) << e;
  e = error_of(
      R"({"iteration": 5, "lm_loss": 1.0, "moe_layers": [{"layer": 1, "expert_tokens": [1, -2]}]})"
      "\n");
  EXPECT_NE(e.find("line 1: layer 1: expert token count -2"), std::string::npos) << e;
  e = error_of(
      R"({"iteration": 5, "lm_loss": 1.0)" + layers(1, 1) + "}\n" +
      R"({"iteration": 6, "lm_loss": 1.0, "moe_layers": [{"layer": 1, "expert_tokens": [1, 2, 3]}]})"
      "\n");
  EXPECT_NE(e.find("line 2: layer 1 has 3 expert counts, earlier lines 2"), std::string::npos) << e;
  EXPECT_NE(error_of("NaN\n").find("line 1"), std::string::npos);
}

TEST(PlotMetricsReader, MissingEmptyAndLoadlessFilesAreClearErrors) {
  const fs::path dir = test::fresh_plot_dir("reader_errors");
  const std::string missing = (dir / "nope.jsonl").string();
  try {
    read_metrics_jsonl(missing);
    FAIL() << "no error for a missing file";
  } catch (const moe::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open the metrics file " + missing),
              std::string::npos)
        << e.what();
  }

  auto plot_error = [&](const std::string& text, const PlotOptions& options) -> std::string {
    const std::string path = (dir / "metrics.jsonl").string();
    std::ofstream(path) << text;
    try {
      write_training_plots(read_metrics_jsonl(path), (dir / "out").string(), options);
    } catch (const moe::Error& e) {
      return e.what();
    }
    return "";
  };
  std::string e = plot_error("", {});
  EXPECT_NE(e.find("metrics.jsonl holds no training log points"), std::string::npos) << e;
  e = plot_error(R"({"event": "started"})"
                 "\n",
                 {});
  EXPECT_NE(e.find("holds no training log points"), std::string::npos) << e;
  // A run without --moe-per-layer-logging, and one written before expert counts existed.
  e = plot_error(R"({"iteration": 10, "lm_loss": 4.5})"
                 "\n",
                 {});
  EXPECT_NE(e.find("has no per-expert token counts (no \"moe_layers\" entries)"), std::string::npos)
      << e;
  EXPECT_NE(e.find("--moe-per-layer-logging"), std::string::npos) << e;
  e = plot_error(R"({"iteration": 10, "lm_loss": 4.5, "moe_layers": [{"layer": 1, "tokens": 8}]})"
                 "\n",
                 {});
  EXPECT_NE(e.find("written without \"expert_tokens\""), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "out" / "loss.png"));  // checked before anything is written
  e = plot_error(R"({"iteration": 10, "lm_loss": null})"
                 "\n",
                 PlotOptions{true, false, 1000});
  EXPECT_NE(e.find("every lm loss is null"), std::string::npos) << e;
  // The loss alone is fine without expert counts.
  EXPECT_EQ(plot_error(R"({"iteration": 10, "lm_loss": 4.5})"
                       "\n",
                       PlotOptions{true, false, 1000}),
            "");
  EXPECT_TRUE(fs::exists(dir / "out" / "loss.png"));
}

TEST(PlotMetricsReader, WritesTheLossChartAndOneHeatmapPerLayer) {
  const fs::path dir = test::fresh_plot_dir("reader_plots");
  std::string text;
  for (int i = 1; i <= 20; ++i) {
    const int64_t a = 10 + i, b = 30 - i;
    text += R"({"iteration": )" + std::to_string(10 * i) + R"(, "lm_loss": )" +
            std::to_string(6.0 / i) + R"(, "moe_layers": [{"layer": 1, "expert_tokens": [)" +
            std::to_string(a) + ", " + std::to_string(b) +
            R"(]}, {"layer": 3, "expert_tokens": [1, 1, 1, )" + std::to_string(i) + "]}]}\n";
    if (i % 5 == 0)
      text += R"({"iteration": )" + std::to_string(10 * i) + R"(, "valid_lm_loss": )" +
              std::to_string(6.5 / i) + "}\n";
  }
  const std::string path = (dir / "metrics.jsonl").string();
  std::ofstream(path) << text;
  const std::vector<std::string> written =
      write_training_plots(read_metrics_jsonl(path), (dir / "plots" / "run1").string(), {});
  ASSERT_EQ(written.size(), 3u);
  EXPECT_EQ(written[0], (dir / "plots" / "run1" / "loss.png").string());
  EXPECT_EQ(written[1], (dir / "plots" / "run1" / "expert_load_layer_1.png").string());
  EXPECT_EQ(written[2], (dir / "plots" / "run1" / "expert_load_layer_3.png").string());
  for (const std::string& p : written) {
    const test::DecodedPng png = test::decode_png(p);
    EXPECT_EQ(png.width, 1000) << p;
    EXPECT_GT(png.height, 300) << p;
  }
}

}  // namespace
}  // namespace moe::plot
