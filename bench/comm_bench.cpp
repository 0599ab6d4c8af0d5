#include "comm_bench.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>

#include "moe/core/error.h"
#include "moe/core/stream.h"
#include "moe/core/tensor.h"
#include "moe/core/timer.h"
#include "world_options.h"

namespace moe::bench {
namespace {

constexpr const char* kOps[] = {"all_reduce", "all_gather", "reduce_scatter", "all_to_all",
                                "all_to_all_v"};

DType parse_bench_dtype(const std::string& name) {
  for (DType d : {DType::f32, DType::bf16, DType::f16, DType::f64, DType::i32, DType::i64})
    if (name == dtype_name(d)) return d;
  MOE_FAIL("--dtype '", name, "' is not one of f32, bf16, f16, f64, i32, i64");
}

std::string size_text(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double v = static_cast<double>(bytes);
  while (v >= 1024.0 && u < 4 && std::fmod(v, 1024.0) == 0.0) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f %s", v, units[u]);
  return buf;
}

// The value rank r puts in its input: small integers, exact in every dtype benchmarked.
// Reductions use 1 or 2 (sums up to 2n stay exact in bf16 for n <= 128); the others r % 64 + 1
// (which rank's data landed where).
double input_value(const std::string& op, int r) {
  const bool reduces = op == "all_reduce" || op == "reduce_scatter";
  return reduces ? 1.0 + r % 2 : 1.0 + r % 64;
}

// Rows rank `from` sends rank `to` in all_to_all_v, out of `total` (see comm_bench.h): a share
// proportional to 1 + (from + to) % n, the rounding left over going to the peer of the largest
// share. Every rank sends and receives `total` rows in all.
int64_t skewed_rows(int from, int to, int n, int64_t total) {
  const int64_t weights = static_cast<int64_t>(n) * (n + 1) / 2;
  const int64_t w = 1 + (from + to) % n;
  int64_t rows = total * w / weights;
  if ((from + to) % n == n - 1) {
    int64_t given = 0;
    for (int k = 0; k < n; ++k) given += total * (1 + k) / weights;
    rows += total - given;
  }
  return rows;
}

// The buffers of one (op, size) on this rank, and what the output must hold.
struct Call {
  Tensor in, out;  // all_reduce: in only (in place)
  std::vector<int64_t> send_counts, recv_counts;
};

Call make_call(const std::string& op, int64_t count, int rank, int n, DType dtype, Device device) {
  Call c;
  const int64_t chunk = count / n;
  if (op == "all_reduce") {
    c.in = Tensor::empty({count}, dtype, device);
  } else if (op == "all_gather") {
    c.in = Tensor::empty({chunk}, dtype, device);
    c.out = Tensor::empty({count}, dtype, device);
  } else if (op == "reduce_scatter") {
    c.in = Tensor::empty({count}, dtype, device);
    c.out = Tensor::empty({chunk}, dtype, device);
  } else {
    c.in = Tensor::empty({count}, dtype, device);
    c.out = Tensor::empty({count}, dtype, device);
    for (int p = 0; p < n; ++p) {
      c.send_counts.push_back(op == "all_to_all" ? chunk : skewed_rows(rank, p, n, count));
      c.recv_counts.push_back(op == "all_to_all" ? chunk : skewed_rows(p, rank, n, count));
    }
  }
  return c;
}

void run_call(dist::ProcessGroup& g, const std::string& op, Call& c) {
  if (op == "all_reduce") {
    g.all_reduce(c.in);
  } else if (op == "all_gather") {
    g.all_gather(c.in, c.out);
  } else if (op == "reduce_scatter") {
    g.reduce_scatter(c.in, c.out);
  } else {
    g.all_to_all_v(c.in, c.out, c.send_counts, c.recv_counts);
  }
}

// Elements of the output that differ from what the ranks' inputs make there.
int64_t count_wrong(const std::string& op, const Call& c, int n, DType dtype) {
  const Tensor& out = op == "all_reduce" ? c.in : c.out;
  double sum = 0;
  for (int r = 0; r < n; ++r) sum += input_value(op, r);
  // Output row -> the rank whose data it holds (gathers and all-to-all).
  std::vector<int64_t> ends;  // cumulative rows per source rank
  if (op == "all_gather") {
    for (int r = 0; r < n; ++r) ends.push_back((r + 1) * (out.numel() / n));
  } else if (op == "all_to_all" || op == "all_to_all_v") {
    int64_t at = 0;
    for (int64_t rows : c.recv_counts) ends.push_back(at += rows);
  }
  const double tolerance = dtype == DType::bf16 || dtype == DType::f16 ? 0.01 : 0.0;
  int64_t wrong = 0;
  constexpr int64_t kChunk = 1 << 20;
  int source = 0;
  for (int64_t start = 0; start < out.numel(); start += kChunk) {
    const int64_t len = std::min(kChunk, out.numel() - start);
    const std::vector<double> values = out.rows(start, len).to_double_vector();
    for (int64_t i = 0; i < len; ++i) {
      double expected = sum;
      if (!ends.empty()) {
        while (source < n && start + i >= ends[static_cast<size_t>(source)]) ++source;
        expected = input_value(op, source);
      }
      if (std::abs(values[static_cast<size_t>(i)] - expected) > tolerance * expected) ++wrong;
    }
  }
  return wrong;
}

void fill_inputs(const std::string& op, Call& c, int rank) {
  c.in.fill_(input_value(op, rank));
}

}  // namespace

int64_t parse_byte_size(const std::string& text, const std::string& flag) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  MOE_CHECK(i > 0 && i <= 15, flag, " '", text,
            "' is not a size (bytes, or a number with K, M, G)");
  const int64_t number = std::stoll(text.substr(0, i));
  std::string unit = text.substr(i);
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char ch) { return std::tolower(ch); });
  int64_t scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  if (unit == "k" || unit == "kib" || unit == "kb") scale = int64_t{1} << 10;
  if (unit == "m" || unit == "mib" || unit == "mb") scale = int64_t{1} << 20;
  if (unit == "g" || unit == "gib" || unit == "gb") scale = int64_t{1} << 30;
  MOE_CHECK(scale > 0, flag, " '", text, "': unknown unit '", text.substr(i), "' (K, M or G)");
  MOE_CHECK(number > 0, flag, " must be positive, got '", text, "'");
  return number * scale;
}

double bus_bandwidth_factor(const std::string& op, int n) {
  const double nd = static_cast<double>(n);
  if (op == "all_reduce") return 2.0 * (nd - 1.0) / nd;
  return (nd - 1.0) / nd;  // all_gather, reduce_scatter, all_to_all(_v)
}

CLI::App* add_comm_bench_command(CLI::App& bench, CommBenchOptions& o) {
  CLI::App* cmd = bench.add_subcommand(
      "comm",
      "collectives per message size: time, algorithm and bus bandwidth (nccl-tests' "
      "formulas) on any backend and world size");
  cmd->add_option("--ops", o.ops, "all_reduce all_gather reduce_scatter all_to_all all_to_all_v")
      ->check(CLI::IsMember(std::vector<std::string>(std::begin(kOps), std::end(kOps))));
  cmd->add_option("--min-size", o.min_size, "smallest message (default 1K; K, M, G = 1024^k)");
  cmd->add_option("--max-size", o.max_size, "largest message (default 1G)");
  cmd->add_option("--step-factor", o.step_factor, "size multiplier between steps (default 2)")
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--dtype", o.dtype, "f32 bf16 f16 f64 i32 i64 (default f32)")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "f64", "i32", "i64"}));
  cmd->add_option("--iters", o.iters, "timed calls per size (default 20)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", o.warmup, "untimed calls first (default 5)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("!--no-check", o.check, "skip checking each output once");
  cmd->add_option("--jsonl", o.jsonl, "append one JSON line per op and size to this file (rank 0)");
  add_world_options(*cmd, o.device, o.distributed);
  return cmd;
}

int run_comm_bench(const CommBenchOptions& options, bool force_cpu) {
  const DType dtype = parse_bench_dtype(options.dtype);
  const int64_t min_bytes = parse_byte_size(options.min_size, "--min-size");
  const int64_t max_bytes = parse_byte_size(options.max_size, "--max-size");
  MOE_CHECK(min_bytes <= max_bytes, "--min-size ", options.min_size, " exceeds --max-size ",
            options.max_size);
  dist::DistributedOptions dopt = options.distributed;
  dopt.cpu = force_cpu || options.device == "cpu";
  const dist::World w = dist::init_distributed(dopt);
  MOE_CHECK(options.device != "cuda" || w.device.is_cuda(), "--device cuda: rank ", w.rank(),
            " has no GPU");
  dist::ProcessGroup& g = *w.world;
  const int n = g.size();
  const bool lead = w.rank() == 0;
  const size_t esize = dtype_size(dtype);

  std::ofstream jsonl;
  if (lead) {
    std::printf("%s", dist::describe_world(w).c_str());
    std::printf(
        "moe bench comm: %d rank%s, backend %s, %s tensors on %s, %d iterations after %d "
        "warm-up; time = the slowest rank's mean\n",
        n, n == 1 ? "" : "s", w.backend.c_str(), dtype_name(dtype),
        w.device.is_cuda() ? "cuda" : "cpu", options.iters, options.warmup);
    std::printf("busbw = algbw x 2(n-1)/n for all_reduce, x (n-1)/n for the others (nccl-tests)\n");
    std::printf("%-15s %10s %12s %12s %13s %13s  %s\n", "op", "size", "count", "time (us)",
                "algbw (GB/s)", "busbw (GB/s)", "check");
    std::fflush(stdout);
    if (!options.jsonl.empty()) {
      jsonl.open(options.jsonl, std::ios::app);
      MOE_CHECK(jsonl.good(), "--jsonl: cannot open ", options.jsonl);
    }
  }

  for (const std::string& op : options.ops) {
    for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= options.step_factor) {
      int64_t count = static_cast<int64_t>(bytes / static_cast<int64_t>(esize)) / n * n;
      if (count == 0) count = n;
      Call call = make_call(op, count, w.rank(), n, dtype, w.device);
      std::string check = "skipped";
      if (options.check) {
        fill_inputs(op, call, w.rank());
        run_call(g, op, call);
        Tensor wrong = Tensor::full({1}, static_cast<double>(count_wrong(op, call, n, dtype)),
                                    DType::f64, w.device);
        g.all_reduce(wrong);
        const int64_t total = static_cast<int64_t>(wrong.item());
        check = total == 0 ? "ok" : std::to_string(total) + " wrong";
      }
      call.in.zero_();  // in-place all_reduce repeats: zeros stay zeros
      for (int i = 0; i < options.warmup; ++i) run_call(g, op, call);
      g.barrier();
      DeviceTimer timer(w.device);
      timer.record();
      for (int i = 0; i < options.iters; ++i) run_call(g, op, call);
      timer.record();
      const double local_us = timer.elapsed_ms(0, 1) * 1000.0 / options.iters;
      Tensor slowest = Tensor::full({1}, local_us, DType::f64, w.device);
      g.all_reduce(slowest, dist::ReduceOp::max);
      const double us = slowest.item();
      const int64_t size = count * static_cast<int64_t>(esize);
      const double algbw = static_cast<double>(size) / (us * 1e-6) / 1e9;
      const double busbw = algbw * bus_bandwidth_factor(op, n);
      if (lead) {
        std::printf("%-15s %10s %12lld %12.1f %13.2f %13.2f  %s\n", op.c_str(),
                    size_text(size).c_str(), static_cast<long long>(count), us, algbw, busbw,
                    check.c_str());
        std::fflush(stdout);
        if (jsonl.is_open()) {
          const nlohmann::json row = {{"op", op},
                                      {"bytes", size},
                                      {"count", count},
                                      {"dtype", dtype_name(dtype)},
                                      {"world_size", n},
                                      {"backend", w.backend},
                                      {"device", w.device.is_cuda() ? "cuda" : "cpu"},
                                      {"iters", options.iters},
                                      {"time_us", us},
                                      {"algbw_gbps", algbw},
                                      {"busbw_gbps", busbw},
                                      {"check", check}};
          jsonl << row.dump() << "\n";
          jsonl.flush();
        }
      }
      if (bytes > max_bytes / options.step_factor) break;  // the next step would overflow max
    }
  }
  g.barrier();
  return 0;
}

}  // namespace moe::bench
