#include "moe/train/step_profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <unordered_map>

namespace moe::train {
namespace {

constexpr int64_t kNoParent = -1;

// The spans' nesting: parent[i] is the innermost span of the same thread that holds span i.
std::vector<int64_t> span_parents(const std::vector<TraceSpan>& spans) {
  std::vector<size_t> order(spans.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const TraceSpan& x = spans[a];
    const TraceSpan& y = spans[b];
    if (x.thread != y.thread) return x.thread < y.thread;
    if (x.begin_ns != y.begin_ns) return x.begin_ns < y.begin_ns;
    return x.depth < y.depth;  // the outer of two that begin together first
  });
  std::vector<int64_t> parent(spans.size(), kNoParent);
  std::vector<size_t> open;  // the chain of spans holding the current one
  int thread = -1;
  for (const size_t i : order) {
    const TraceSpan& s = spans[i];
    if (s.thread != thread) {
      open.clear();
      thread = s.thread;
    }
    while (!open.empty() &&
           !(spans[open.back()].begin_ns <= s.begin_ns && s.end_ns <= spans[open.back()].end_ns &&
             spans[open.back()].depth < s.depth))
      open.pop_back();
    if (!open.empty()) parent[i] = static_cast<int64_t>(open.back());
    open.push_back(i);
  }
  return parent;
}

std::string stage_path(const std::vector<TraceSpan>& spans, const std::vector<int64_t>& parent,
                       int64_t i) {
  std::vector<const std::string*> names;
  for (; i != kNoParent; i = parent[static_cast<size_t>(i)])
    names.push_back(&spans[static_cast<size_t>(i)].name);
  std::string path;
  for (auto it = names.rbegin(); it != names.rend(); ++it)
    path += (path.empty() ? "" : " > ") + **it;
  return path;
}

// The innermost span of `thread` that holds time t (kNoParent: none).
int64_t span_at(const std::vector<TraceSpan>& spans, int thread, int64_t t) {
  int64_t best = kNoParent;
  for (size_t i = 0; i < spans.size(); ++i) {
    const TraceSpan& s = spans[i];
    if (s.thread != thread || s.begin_ns > t || s.end_ns <= t) continue;
    if (best == kNoParent || s.depth > spans[static_cast<size_t>(best)].depth)
      best = static_cast<int64_t>(i);
  }
  return best;
}

std::string ms(int64_t ns, int decimals = 2) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, static_cast<double>(ns) * 1e-6);
  return buf;
}

double us_from(int64_t ns, int64_t origin) {
  return static_cast<double>(ns - origin) * 1e-3;
}

const char* kind_name(DeviceActivity::Kind k) {
  switch (k) {
    case DeviceActivity::Kind::kernel:
      return "kernel";
    case DeviceActivity::Kind::memcpy:
      return "memcpy";
    case DeviceActivity::Kind::memset:
      return "memset";
  }
  return "activity";
}

}  // namespace

StepProfileSummary summarize_step_profile(const std::vector<TraceSpan>& spans,
                                          const std::vector<DeviceActivity>& activities,
                                          const StepProfileOptions& options) {
  StepProfileSummary sum;
  if (spans.empty() && activities.empty()) return sum;
  sum.begin_ns = INT64_MAX;
  sum.end_ns = INT64_MIN;
  for (const TraceSpan& s : spans) {
    sum.begin_ns = std::min(sum.begin_ns, s.begin_ns);
    sum.end_ns = std::max(sum.end_ns, s.end_ns);
    if (s.name == "train_step") ++sum.steps;
  }
  for (const DeviceActivity& a : activities) {
    sum.begin_ns = std::min(sum.begin_ns, a.begin_ns);
    sum.end_ns = std::max(sum.end_ns, a.end_ns);
  }
  sum.has_device = !activities.empty();
  sum.activities = static_cast<int64_t>(activities.size());

  // Stages: host time once per outermost range of a name, device time by the launch's range.
  const std::vector<int64_t> parent = span_parents(spans);
  std::map<std::string, StageProfile> stages;
  for (size_t i = 0; i < spans.size(); ++i) {
    StageProfile& st = stages[spans[i].name];
    st.name = spans[i].name;
    ++st.calls;
    bool nested_in_same = false;
    for (int64_t p = parent[i]; p != kNoParent && !nested_in_same;
         p = parent[static_cast<size_t>(p)])
      nested_in_same = spans[static_cast<size_t>(p)].name == spans[i].name;
    const int64_t wall = spans[i].end_ns - spans[i].begin_ns;
    if (!nested_in_same) st.host_ns += wall;
    st.host_self_ns += wall;
    if (parent[i] != kNoParent)
      stages[spans[static_cast<size_t>(parent[i])].name].host_self_ns -= wall;
  }
  std::unordered_map<uint64_t, size_t> span_of_id;
  for (size_t i = 0; i < spans.size(); ++i) span_of_id.emplace(spans[i].id, i);
  for (const DeviceActivity& a : activities) {
    const int64_t duration = a.end_ns - a.begin_ns;
    const auto it = a.range_id != 0 ? span_of_id.find(a.range_id) : span_of_id.end();
    if (it == span_of_id.end()) {
      sum.unattributed_device_ns += duration;
      continue;
    }
    stages[spans[it->second].name].device_self_ns += duration;
    std::vector<const std::string*> seen;
    for (int64_t p = static_cast<int64_t>(it->second); p != kNoParent;
         p = parent[static_cast<size_t>(p)]) {
      const std::string& name = spans[static_cast<size_t>(p)].name;
      if (std::find_if(seen.begin(), seen.end(),
                       [&](const std::string* n) { return *n == name; }) != seen.end())
        continue;
      seen.push_back(&name);
      stages[name].device_inclusive_ns += duration;
      ++stages[name].activities;
    }
  }
  for (auto& [name, st] : stages) sum.stages.push_back(st);
  std::stable_sort(sum.stages.begin(), sum.stages.end(),
                   [](const StageProfile& a, const StageProfile& b) {
                     if (a.device_inclusive_ns != b.device_inclusive_ns)
                       return a.device_inclusive_ns > b.device_inclusive_ns;
                     return a.host_ns > b.host_ns;
                   });
  if (!sum.has_device) return sum;

  // Busy: the union of the activities' intervals (sorted by begin); each idle gap ends where the
  // next busy interval begins, with the activity that begins it.
  std::vector<size_t> order(activities.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return activities[a].begin_ns < activities[b].begin_ns;
  });
  std::vector<IdleGap> gaps;
  std::vector<const DeviceActivity*> gap_next;  // beside gaps: the work that ends each
  int64_t cursor = sum.begin_ns;                // the end of the busy time so far
  auto add_gap = [&](int64_t begin, int64_t end, const DeviceActivity* next) {
    if (end <= begin) return;
    sum.idle_ns += end - begin;
    if (end - begin < options.min_gap_ns) return;
    IdleGap g;
    g.begin_ns = begin;
    g.end_ns = end;
    if (next) {
      g.next = next->name;
      if (next->launch_ns > begin) g.queued_into_gap_ns = next->launch_ns - begin;
    }
    ++sum.gaps;
    sum.gaps_idle_ns += end - begin;
    if (g.queued_into_gap_ns >= 0) sum.host_bound_idle_ns += end - begin;
    gaps.push_back(std::move(g));
    gap_next.push_back(next);
  };
  for (const size_t i : order) {
    const DeviceActivity& a = activities[i];
    if (a.begin_ns > cursor) add_gap(cursor, a.begin_ns, &a);
    if (a.end_ns > cursor) {
      sum.busy_ns += a.end_ns - std::max(cursor, a.begin_ns);
      cursor = a.end_ns;
    }
  }
  if (sum.end_ns > cursor) add_gap(cursor, sum.end_ns, nullptr);

  // The largest gaps, explained: the next work's stage, and where its host thread was mid-gap.
  std::vector<size_t> by_length(gaps.size());
  for (size_t i = 0; i < by_length.size(); ++i) by_length[i] = i;
  std::stable_sort(by_length.begin(), by_length.end(), [&](size_t a, size_t b) {
    return gaps[a].end_ns - gaps[a].begin_ns > gaps[b].end_ns - gaps[b].begin_ns;
  });
  by_length.resize(std::min(by_length.size(), options.largest_gaps));
  for (const size_t g : by_length) {
    IdleGap gap = gaps[g];
    int thread = spans.empty() ? 0 : spans.front().thread;
    if (const DeviceActivity* next = gap_next[g]) {
      const auto it = next->range_id != 0 ? span_of_id.find(next->range_id) : span_of_id.end();
      if (it != span_of_id.end()) {
        gap.next_stage = stage_path(spans, parent, static_cast<int64_t>(it->second));
        thread = spans[it->second].thread;
      }
    }
    const int64_t mid = gap.begin_ns + (gap.end_ns - gap.begin_ns) / 2;
    const int64_t host = span_at(spans, thread, mid);
    if (host != kNoParent) gap.host_stage = stage_path(spans, parent, host);
    sum.largest_gaps.push_back(std::move(gap));
  }
  return sum;
}

std::string format_step_profile(const StepProfileSummary& s, int64_t first_iteration,
                                int64_t last_iteration, int rank, const std::string& device_note) {
  std::string out;
  char line[512];
  const int64_t wall = s.end_ns - s.begin_ns;
  std::snprintf(
      line, sizeof(line), "profile of iteration%s %lld%s%s on rank %d: %lld step%s in %s ms",
      first_iteration == last_iteration ? "" : "s", static_cast<long long>(first_iteration),
      first_iteration == last_iteration ? "" : "-",
      first_iteration == last_iteration ? "" : std::to_string(last_iteration).c_str(), rank,
      static_cast<long long>(s.steps), s.steps == 1 ? "" : "s", ms(wall).c_str());
  out += line;
  if (s.steps > 1) out += " (" + ms(wall / s.steps) + " ms a step)";
  out += "\n";
  if (!s.has_device) {
    out += "  device: no activity recorded" +
           (device_note.empty() ? std::string() : " (" + device_note + ")") + "\n";
  } else {
    const double busy_pct = wall > 0 ? 100.0 * static_cast<double>(s.busy_ns) / wall : 0.0;
    std::snprintf(line, sizeof(line),
                  "  device: busy %s ms (%.1f%%), idle %s ms; %lld gaps of 10 us or more hold %s "
                  "ms, %s ms of it waiting for the host to queue the next work\n",
                  ms(s.busy_ns).c_str(), busy_pct, ms(s.idle_ns).c_str(),
                  static_cast<long long>(s.gaps), ms(s.gaps_idle_ns).c_str(),
                  ms(s.host_bound_idle_ns).c_str());
    out += line;
  }
  std::snprintf(line, sizeof(line), "  %-24s %7s %10s %10s %15s %15s %10s\n", "stage", "calls",
                "host ms", "host self", "device ms self", "device ms incl.", "activities");
  out += line;
  for (const StageProfile& st : s.stages) {
    std::snprintf(line, sizeof(line), "  %-24s %7lld %10s %10s %15s %15s %10lld\n", st.name.c_str(),
                  static_cast<long long>(st.calls), ms(st.host_ns).c_str(),
                  ms(st.host_self_ns).c_str(), s.has_device ? ms(st.device_self_ns).c_str() : "-",
                  s.has_device ? ms(st.device_inclusive_ns).c_str() : "-",
                  static_cast<long long>(st.activities));
    out += line;
  }
  if (s.has_device && s.unattributed_device_ns > 0)
    out += "  device work queued outside every range: " + ms(s.unattributed_device_ns) + " ms\n";
  if (!s.largest_gaps.empty()) {
    out += "  largest idle gaps (at ms from the window's start):\n";
    for (const IdleGap& g : s.largest_gaps) {
      std::string text =
          "    " + ms(g.end_ns - g.begin_ns, 3) + " ms at " + ms(g.begin_ns - s.begin_ns, 3) + ": ";
      if (g.next.empty()) {
        text += "the window ends";
      } else {
        text += "then " + g.next;
        if (!g.next_stage.empty()) text += " (" + g.next_stage + ")";
        text += g.queued_into_gap_ns >= 0
                    ? ", queued " + ms(g.queued_into_gap_ns, 3) + " ms into the gap"
                    : ", queued before the gap";
      }
      if (!g.host_stage.empty()) text += "; host in " + g.host_stage;
      out += text + "\n";
    }
  }
  return out;
}

RankProfile rank_profile(const StepProfileSummary& s) {
  RankProfile p;
  p.profiled = true;
  p.has_device = s.has_device;
  p.steps = s.steps;
  p.wall_ns = s.end_ns - s.begin_ns;
  p.busy_ns = s.busy_ns;
  p.host_bound_idle_ns = s.host_bound_idle_ns;
  for (const StageProfile& st : s.stages) {
    if (st.name == "grad_sync") p.grad_sync_ns += st.host_ns;
    if (st.name == "pipeline.wait") p.pipeline_wait_ns += st.host_ns;
    if (st.name == "moe.dispatch" || st.name == "moe.combine" || st.name == "moe.dispatch.bwd" ||
        st.name == "moe.combine.bwd")
      p.moe_exchange_ns += st.host_ns;
  }
  return p;
}

std::vector<double> rank_profile_fields(const RankProfile& p) {
  const auto d = [](int64_t v) { return static_cast<double>(v); };
  return {
      p.profiled ? 1.0 : 0.0, p.has_device ? 1.0 : 0.0, d(p.steps),        d(p.wall_ns),
      d(p.busy_ns),           d(p.host_bound_idle_ns),  d(p.grad_sync_ns), d(p.pipeline_wait_ns),
      d(p.moe_exchange_ns)};
}

RankProfile rank_profile_of_fields(const double* f) {
  const auto i = [](double v) { return static_cast<int64_t>(std::llround(v)); };
  RankProfile p;
  p.profiled = f[0] != 0.0;
  p.has_device = f[1] != 0.0;
  p.steps = i(f[2]);
  p.wall_ns = i(f[3]);
  p.busy_ns = i(f[4]);
  p.host_bound_idle_ns = i(f[5]);
  p.grad_sync_ns = i(f[6]);
  p.pipeline_wait_ns = i(f[7]);
  p.moe_exchange_ns = i(f[8]);
  return p;
}

std::string format_rank_profiles(const std::vector<RankProfile>& ranks, int64_t first_iteration,
                                 int64_t last_iteration) {
  std::string out = "profile of iteration" +
                    (first_iteration == last_iteration ? " " + std::to_string(first_iteration)
                                                       : "s " + std::to_string(first_iteration) +
                                                             "-" + std::to_string(last_iteration)) +
                    ", every rank (ms a step; host ms a step in the ranges where ranks wait on "
                    "each other):\n";
  char line[256];
  std::snprintf(line, sizeof(line), "  %6s %10s %12s %14s %11s %14s %13s\n", "rank", "step ms",
                "device busy", "idle for host", "grad_sync", "pipeline.wait", "moe exchange");
  out += line;
  for (size_t r = 0; r < ranks.size(); ++r) {
    const RankProfile& p = ranks[r];
    if (!p.profiled || p.steps == 0) {
      std::snprintf(line, sizeof(line), "  %6zu   not profiled\n", r);
      out += line;
      continue;
    }
    const double steps = static_cast<double>(p.steps);
    const auto per_step = [&](int64_t ns) { return static_cast<double>(ns) * 1e-6 / steps; };
    char busy[32] = "-", idle[32] = "-";
    if (p.has_device && p.wall_ns > 0) {
      std::snprintf(busy, sizeof(busy), "%.1f%%",
                    100.0 * static_cast<double>(p.busy_ns) / static_cast<double>(p.wall_ns));
      std::snprintf(idle, sizeof(idle), "%.2f", per_step(p.host_bound_idle_ns));
    }
    std::snprintf(line, sizeof(line), "  %6zu %10.2f %12s %14s %11.2f %14.2f %13.2f\n", r,
                  per_step(p.wall_ns), busy, idle, per_step(p.grad_sync_ns),
                  per_step(p.pipeline_wait_ns), per_step(p.moe_exchange_ns));
    out += line;
  }
  return out;
}

nlohmann::json step_profile_trace(const std::vector<TraceSpan>& spans,
                                  const std::vector<DeviceActivity>& activities, int rank) {
  int64_t origin = INT64_MAX;
  for (const TraceSpan& s : spans) origin = std::min(origin, s.begin_ns);
  for (const DeviceActivity& a : activities) origin = std::min(origin, a.begin_ns);
  if (origin == INT64_MAX) origin = 0;
  // Process ids per rank, so that several ranks' files merge into one view: the host, then one
  // per device.
  const int host_pid = rank * 100;
  nlohmann::json events = nlohmann::json::array();
  events.push_back({{"name", "process_name"},
                    {"ph", "M"},
                    {"pid", host_pid},
                    {"args", {{"name", "rank " + std::to_string(rank) + " host"}}}});
  std::vector<int> threads, devices;
  for (const TraceSpan& s : spans)
    if (std::find(threads.begin(), threads.end(), s.thread) == threads.end())
      threads.push_back(s.thread);
  for (const int t : threads)
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", host_pid},
                      {"tid", t},
                      {"args", {{"name", "thread " + std::to_string(t)}}}});
  for (const DeviceActivity& a : activities)
    if (std::find(devices.begin(), devices.end(), a.device) == devices.end()) {
      devices.push_back(a.device);
      events.push_back(
          {{"name", "process_name"},
           {"ph", "M"},
           {"pid", host_pid + 1 + a.device},
           {"args",
            {{"name", "rank " + std::to_string(rank) + " GPU " + std::to_string(a.device)}}}});
    }
  for (const TraceSpan& s : spans)
    events.push_back({{"name", s.name},
                      {"ph", "X"},
                      {"cat", "host"},
                      {"pid", host_pid},
                      {"tid", s.thread},
                      {"ts", us_from(s.begin_ns, origin)},
                      {"dur", us_from(s.end_ns, s.begin_ns)}});
  const std::vector<int64_t> parent = span_parents(spans);
  std::unordered_map<uint64_t, size_t> span_of_id;
  for (size_t i = 0; i < spans.size(); ++i) span_of_id.emplace(spans[i].id, i);
  for (const DeviceActivity& a : activities) {
    nlohmann::json args = nlohmann::json::object();
    if (const auto it = a.range_id != 0 ? span_of_id.find(a.range_id) : span_of_id.end();
        it != span_of_id.end())
      args["stage"] = stage_path(spans, parent, static_cast<int64_t>(it->second));
    if (a.launch_ns >= 0) args["queued_us_before"] = us_from(a.begin_ns, a.launch_ns);
    if (a.bytes > 0) args["bytes"] = a.bytes;
    events.push_back({{"name", a.name},
                      {"ph", "X"},
                      {"cat", kind_name(a.kind)},
                      {"pid", host_pid + 1 + a.device},
                      {"tid", a.stream},
                      {"ts", us_from(a.begin_ns, origin)},
                      {"dur", us_from(a.end_ns, a.begin_ns)},
                      {"args", std::move(args)}});
  }
  return {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
}

}  // namespace moe::train
