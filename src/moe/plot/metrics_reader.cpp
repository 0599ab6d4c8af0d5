#include "moe/plot/metrics_reader.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/core/json_file.h"

namespace moe::plot {
namespace {

using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Errors of one line name the file and the line.
struct LineContext {
  const std::string& source;
  size_t line;
  [[noreturn]] void fail(const std::string& what) const {
    MOE_FAIL("metrics file ", source, ", line ", line, ": ", what);
  }
};

int64_t integer_field(const json& object, const char* key, const LineContext& at) {
  const auto it = object.find(key);
  if (it == object.end()) at.fail(std::string("no \"") + key + "\"");
  if (!it->is_number_integer())
    at.fail(std::string("\"") + key + "\" is not an integer: " + json_excerpt(*it));
  return it->get<int64_t>();
}

// A loss: a number, or null for "not finite".
double loss_field(const json& object, const char* key, const LineContext& at) {
  const json& v = object.at(key);
  if (v.is_null()) return kNaN;
  if (!v.is_number())
    at.fail(std::string("\"") + key + "\" is not a number or null: " + json_excerpt(v));
  return v.get<double>();
}

// Drops every point at or after `iteration`: a resumed run's branch replaces them.
void truncate_from(TrainingMetrics& m, int64_t iteration) {
  auto keep = [&](std::vector<int64_t>& its, auto&... series) {
    const size_t n =
        static_cast<size_t>(std::lower_bound(its.begin(), its.end(), iteration) - its.begin());
    its.resize(n);
    (series.resize(n), ...);
  };
  keep(m.iterations, m.lm_loss);
  keep(m.valid_iterations, m.valid_lm_loss);
  for (LayerExpertLoads& layer : m.expert_loads)
    std::erase_if(layer.points, [&](const ExpertLoadPoint& p) { return p.iteration >= iteration; });
}

void read_moe_layers(const json& layers, int64_t iteration, TrainingMetrics& m,
                     const LineContext& at) {
  if (!layers.is_array()) at.fail("\"moe_layers\" is not an array");
  m.has_moe_layers = true;
  for (const json& entry : layers) {
    if (!entry.is_object())
      at.fail("a \"moe_layers\" entry is not an object: " + json_excerpt(entry));
    const int64_t layer = integer_field(entry, "layer", at);
    const auto counts = entry.find("expert_tokens");
    if (counts == entry.end()) continue;  // written before per-expert counts existed
    if (!counts->is_array() || counts->empty())
      at.fail("layer " + std::to_string(layer) + ": \"expert_tokens\" is not a non-empty array");
    ExpertLoadPoint point{iteration, {}};
    for (const json& n : *counts) {
      if (!n.is_number() || n.get<double>() < 0.0 || !std::isfinite(n.get<double>()))
        at.fail("layer " + std::to_string(layer) + ": expert token count " + json_excerpt(n) +
                " is not a non-negative number");
      point.tokens.push_back(n.get<double>());
    }
    auto it = std::find_if(m.expert_loads.begin(), m.expert_loads.end(),
                           [&](const LayerExpertLoads& l) { return l.layer == layer; });
    if (it == m.expert_loads.end()) {
      m.expert_loads.push_back(LayerExpertLoads{layer, {}});
      it = m.expert_loads.end() - 1;
    }
    if (!it->points.empty() && it->points.back().tokens.size() != point.tokens.size())
      at.fail("layer " + std::to_string(layer) + " has " + std::to_string(point.tokens.size()) +
              " expert counts, earlier lines " + std::to_string(it->points.back().tokens.size()));
    if (!it->points.empty() && it->points.back().iteration == iteration)
      at.fail("layer " + std::to_string(layer) + " appears twice");
    it->points.push_back(std::move(point));
  }
}

void read_line(const json& object, TrainingMetrics& m, const LineContext& at) {
  if (!object.is_object()) at.fail("not a JSON object");
  if (object.contains("event")) return;  // notes such as "saved checkpoint ..."
  if (object.contains("valid_lm_loss")) {
    const int64_t iteration = integer_field(object, "iteration", at);
    const double loss = loss_field(object, "valid_lm_loss", at);
    // Evaluations repeat an iteration only across a resume: the later one stands.
    while (!m.valid_iterations.empty() && m.valid_iterations.back() >= iteration) {
      m.valid_iterations.pop_back();
      m.valid_lm_loss.pop_back();
    }
    m.valid_iterations.push_back(iteration);
    m.valid_lm_loss.push_back(loss);
    return;
  }
  if (!object.contains("lm_loss"))
    at.fail(
        "neither a training log point (\"lm_loss\"), a validation point (\"valid_lm_loss\") "
        "nor an event (\"event\")");
  const int64_t iteration = integer_field(object, "iteration", at);
  const double loss = loss_field(object, "lm_loss", at);
  if (!m.iterations.empty() && iteration <= m.iterations.back()) truncate_from(m, iteration);
  m.iterations.push_back(iteration);
  m.lm_loss.push_back(loss);
  if (const auto layers = object.find("moe_layers"); layers != object.end())
    read_moe_layers(*layers, iteration, m, at);
}

}  // namespace

TrainingMetrics parse_metrics_jsonl(std::istream& in, const std::string& source) {
  TrainingMetrics m;
  m.source = source;
  std::string text;
  for (size_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const LineContext at{source, line};
    json object;
    if (const size_t depth = json_nesting_depth(text); depth > kMaxJsonDepth)
      at.fail("nests arrays and objects " + std::to_string(depth) + " levels deep; at most " +
              std::to_string(kMaxJsonDepth) + " are read");
    try {
      object = json::parse(text);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e999
      at.fail(std::string("not valid JSON (") + e.what() + ")");
    }
    read_line(object, m, at);
  }
  MOE_CHECK(in.eof(), "metrics file ", source, ": read error");
  std::sort(m.expert_loads.begin(), m.expert_loads.end(),
            [](const LayerExpertLoads& a, const LayerExpertLoads& b) { return a.layer < b.layer; });
  std::erase_if(m.expert_loads, [](const LayerExpertLoads& l) { return l.points.empty(); });
  return m;
}

TrainingMetrics read_metrics_jsonl(const std::string& path) {
  std::ifstream in(path);
  MOE_CHECK(in.is_open(), "cannot open the metrics file ", path, ": ", std::strerror(errno));
  return parse_metrics_jsonl(in, path);
}

}  // namespace moe::plot
