// Reads the JSONL metrics file that `moe train` writes (train/train_log.h) into series for
// `moe plot`. The file holds one JSON object per line:
//   a training log point   {"iteration", "lm_loss" (null if not finite), ..., "moe_layers": [
//                            {"layer", ..., "expert_tokens": [n_0, ..., n_{E-1}]}, ...]}
//                          (moe_layers only with --moe-per-layer-logging)
//   a validation point     {"iteration", "valid_lm_loss", "valid_ppl", ...}
//   an event               {"event": "saved checkpoint ...", "time"}
// A resumed run appends to the file and may repeat iterations that its checkpoint came before:
// a training point whose iteration is not after the previous one starts a new branch, and the
// earlier points (training, validation and expert loads) from that iteration on are dropped, so
// the series show the run that the final model came from.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

namespace moe::plot {

// One log point of one MoE layer: tokens routed to each expert, summed over the log interval.
struct ExpertLoadPoint {
  int64_t iteration = 0;
  std::vector<double> tokens;  // [E]
};

struct LayerExpertLoads {
  int64_t layer = 0;                    // decoder layer index (MTP layers: num_layers + depth)
  std::vector<ExpertLoadPoint> points;  // iterations increasing
};

struct TrainingMetrics {
  std::string source;               // the file name, for messages
  std::vector<int64_t> iterations;  // training log points, increasing
  std::vector<double> lm_loss;      // NaN where the file has null (no update taken)
  std::vector<int64_t> valid_iterations;
  std::vector<double> valid_lm_loss;
  std::vector<LayerExpertLoads> expert_loads;  // by layer; layers whose points carry counts
  bool has_moe_layers = false;  // some log point had "moe_layers" (with or without counts)
};

// Parses the lines of `in`; `source` names it in errors. A line that is not JSON, not an object,
// or whose fields have the wrong types (or an expert count that changes within a layer) throws
// moe::Error naming the source and the 1-based line number. Blank lines are skipped. An input
// without training log points is accepted here (the plots check what they need).
TrainingMetrics parse_metrics_jsonl(std::istream& in, const std::string& source);
// Opens and parses `path`; a missing or unreadable file throws moe::Error naming it.
TrainingMetrics read_metrics_jsonl(const std::string& path);

}  // namespace moe::plot
