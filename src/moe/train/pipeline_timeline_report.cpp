#include "moe/train/pipeline_timeline_report.h"

#include <sstream>

#include "moe/core/error.h"
#include "moe/train/pipeline_timeline.h"

namespace moe::train {
namespace {

constexpr int64_t kFields = 5;  // kind, micro-batch, chunk, peer, batch

}  // namespace

std::vector<std::vector<PipelineAction>> gather_pipeline_actions(
    const std::vector<PipelineAction>& mine, const std::shared_ptr<dist::ProcessGroup>& pp,
    Device device) {
  const int P = pp->size();
  // The lists' lengths first (the stages' lists differ: the first receives no activations).
  const std::vector<int64_t> n =
      dist::all_gather_values(*pp, std::vector<int64_t>{static_cast<int64_t>(mine.size())}, device);
  std::vector<int64_t> flat;
  for (const PipelineAction& a : mine)
    for (int64_t v : {static_cast<int64_t>(a.kind), int64_t{a.microbatch}, int64_t{a.chunk},
                      int64_t{a.peer_rank}, int64_t{a.batch}})
      flat.push_back(v);
  std::vector<int64_t> rows(n.begin(), n.end());
  int64_t total = 0;
  for (int64_t r : rows) total += r;
  Tensor all = Tensor::empty({total, kFields}, DType::i64, device);
  pp->all_gather_v(Tensor::from_vector(flat, {static_cast<int64_t>(mine.size()), kFields}, device),
                   all, rows);
  const std::vector<int64_t> values = all.to_vector<int64_t>();
  std::vector<std::vector<PipelineAction>> out(static_cast<size_t>(P));
  size_t at = 0;
  for (int r = 0; r < P; ++r)
    for (int64_t i = 0; i < n[static_cast<size_t>(r)]; ++i, at += kFields) {
      PipelineAction a;
      a.kind = static_cast<PipelineActionKind>(values[at]);
      a.microbatch = static_cast<int>(values[at + 1]);
      a.chunk = static_cast<int>(values[at + 2]);
      a.peer_rank = static_cast<int>(values[at + 3]);
      a.batch = static_cast<int>(values[at + 4]);
      out[static_cast<size_t>(r)].push_back(a);
    }
  return out;
}

std::string format_pipeline_timeline(const std::vector<std::vector<PipelineAction>>& ranks,
                                     int64_t iteration) {
  std::ostringstream out;
  out << "pipeline schedule as executed in iteration " << iteration
      << " (a row per pipeline rank; a forward 1 unit, a backward 2):\n"
      << render_pipeline_timeline(pipeline_timeline(ranks));
  return out.str();
}

}  // namespace moe::train
