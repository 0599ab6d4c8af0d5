#include "moe/train/pipeline_timeline.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "moe/core/error.h"

namespace moe::train {

PipelineTimeline pipeline_timeline(const std::vector<std::vector<PipelineAction>>& schedules,
                                   const PipelineDurations& durations) {
  MOE_CHECK(durations.forward >= 0 && durations.backward >= 0 && durations.p2p >= 0,
            "pipeline timeline: negative duration (forward ", durations.forward, ", backward ",
            durations.backward, ", p2p ", durations.p2p, ")");
  const auto times =
      run_pipeline_schedules(schedules, durations.forward, durations.backward, durations.p2p);
  const int pp = static_cast<int>(schedules.size());
  PipelineTimeline t;
  t.ranks.resize(pp);
  t.busy.assign(pp, 0.0);
  for (int r = 0; r < pp; ++r) {
    for (size_t i = 0; i < schedules[r].size(); ++i) {
      const PipelineAction& a = schedules[r][i];
      t.makespan = std::max(t.makespan, times[r][i].end);
      if (is_p2p(a.kind)) continue;
      t.ranks[r].push_back({a.kind, a.microbatch, a.chunk, times[r][i].start, times[r][i].end});
      t.busy[r] += times[r][i].end - times[r][i].start;
    }
  }
  double idle = 0.0, busy = 0.0;
  for (int r = 0; r < pp; ++r) {
    t.idle.push_back(t.makespan - t.busy[r]);
    t.rank_bubble_fraction.push_back(t.makespan > 0 ? t.idle[r] / t.makespan : 0.0);
    idle += t.idle[r];
    busy += t.busy[r];
  }
  t.bubble_fraction = t.makespan > 0 ? idle / (pp * t.makespan) : 0.0;
  t.bubble_ratio = busy > 0 ? idle / busy : 0.0;
  return t;
}

namespace {

std::string percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%", 100.0 * x);
  return buf;
}

std::string number(double x) {
  std::ostringstream out;
  out << x;
  return out.str();
}

}  // namespace

std::string render_pipeline_timeline(const PipelineTimeline& t, double time_unit) {
  MOE_CHECK(time_unit > 0, "render_pipeline_timeline: time unit ", time_unit, " must be > 0");
  const int pp = static_cast<int>(t.ranks.size());
  const int columns = static_cast<int>(std::ceil(t.makespan / time_unit - 1e-9));
  bool chunks = false;
  for (const auto& row : t.ranks)
    for (const auto& s : row) chunks = chunks || s.chunk > 0;

  std::ostringstream out;
  out << "pipeline timeline: " << pp << " ranks, makespan " << number(t.makespan)
      << " (a column = " << number(time_unit)
      << "); forward a, b, .. = micro-batch 0, 1, ..; backward A, B, ..; '.' idle\n";
  for (int r = 0; r < pp; ++r) {
    std::string row(columns, '.'), chunk_row(columns, ' ');
    for (const auto& s : t.ranks[r]) {
      const int from = static_cast<int>(std::floor(s.start / time_unit + 1e-9));
      const int to = std::min(columns, static_cast<int>(std::ceil(s.end / time_unit - 1e-9)));
      const char letter = static_cast<char>((s.kind == PipelineActionKind::forward ? 'a' : 'A') +
                                            s.microbatch % 26);
      const char chunk = static_cast<char>('0' + s.chunk % 10);
      for (int c = from; c < to; ++c) {
        row[c] = letter;
        chunk_row[c] = chunk;
      }
    }
    std::string name = "rank " + std::to_string(r);
    name.resize(std::max<size_t>(name.size(), 5 + std::to_string(pp - 1).size()), ' ');
    out << name << " |" << row << "| idle " << number(t.idle[r]) << " ("
        << percent(t.rank_bubble_fraction[r]) << ")\n";
    if (chunks) out << std::string(name.size(), ' ') << " |" << chunk_row << "| chunk\n";
  }
  double idle = 0.0, busy = 0.0;
  for (int r = 0; r < pp; ++r) {
    idle += t.idle[r];
    busy += t.busy[r];
  }
  out << "bubble: idle " << number(idle) << " of " << number(idle + busy) << " = "
      << percent(t.bubble_fraction) << " of the time; idle / busy = " << percent(t.bubble_ratio)
      << "\n";
  return out.str();
}

}  // namespace moe::train
