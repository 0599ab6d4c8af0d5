#include "moe_ep_bench.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "ceilings.h"
#include "moe/core/allocator.h"
#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/core/timer.h"
#include "moe/dist/parallel_state.h"
#include "moe/nn/moe_groups.h"
#include "moe/nn/moe_layer.h"
#include "moe/ops/grouped_gemm.h"
#include "moe_bench_shapes.h"
#include "world_options.h"

namespace moe::bench {
namespace {

constexpr const char* kCommand = "bench moe-ep";
// The stages timed for the exchange, in the table's order.
constexpr std::array<const char*, 4> kExchangeStages = {"dispatch", "combine", "combine.bwd",
                                                        "dispatch.bwd"};

// One rank's measurement of a row.
struct RankFigures {
  double step_ms = 0;                      // median fwd+bwd
  std::array<double, 4> stage_ms{};        // kExchangeStages, mean over the timed steps
  int64_t remote_slots = 0;                // routed slots whose expert is on another EP rank
  Tensor tokens_per_expert;                // this rank's routed counts [E] i64, last step
  int64_t slot_peak = -1, slot_rows = -1;  // sync-free exchange used: peak rows, slot rows
};

// Times `iters` steps (zero_grad, forward, backward) after `warmup` ones. The events of a step:
// its start, every stage's end (stage_hook), the end of the forward and of the backward; all
// are read after the last step, so the device runs the steps back to back.
RankFigures time_steps(nn::MoELayer& layer, const Tensor& x, const Tensor& dy, Device device,
                       int warmup, int iters, int ep_rank, dist::ProcessGroup& world) {
  nn::MoEContext ctx;
  for (int i = 0; i < warmup; ++i) {
    layer.zero_grad();  // one micro-batch per step, as a training step runs it
    layer.forward(x, ctx);
    layer.backward(dy, ctx);
  }
  layer.reset_slot_usage();  // the timed steps' peak only
  world.barrier();
  DeviceTimer timer(device);
  std::vector<std::string> marks;  // per event: the stage it ends, "" for the step's own
  std::vector<size_t> starts;      // each step's first event, then the end
  const auto mark = [&](const char* name) {
    timer.record();
    marks.emplace_back(name);
  };
  layer.stage_hook = [&](const char* stage) { mark(stage); };
  for (int i = 0; i < iters; ++i) {
    starts.push_back(timer.size());
    mark("");
    layer.zero_grad();
    layer.forward(x, ctx);
    mark("");  // combine.bwd starts with the backward, not at the forward's last stage
    layer.backward(dy, ctx);
    mark("");
  }
  layer.stage_hook = nullptr;
  starts.push_back(timer.size());

  RankFigures f;
  std::vector<double> steps;
  for (size_t i = 0; i + 1 < starts.size(); ++i) {
    const size_t first = starts[i], last = starts[i + 1] - 1;
    steps.push_back(timer.elapsed_ms(first, last));
    for (size_t e = first + 1; e <= last; ++e)
      for (size_t s = 0; s < kExchangeStages.size(); ++s)
        if (marks[e] == kExchangeStages[s]) f.stage_ms[s] += timer.elapsed_ms(e - 1, e) / iters;
  }
  std::nth_element(steps.begin(), steps.begin() + steps.size() / 2, steps.end());
  f.step_ms = steps[steps.size() / 2];

  // The last step's routing. EP rank p holds the experts [p El, (p + 1) El) (nn/experts.h).
  const int64_t local_experts = layer.config().num_local_experts();
  for (int32_t id : ctx.router.expert_ids.to_vector<int32_t>())
    if (id >= 0 && id / local_experts != ep_rank) ++f.remote_slots;
  f.tokens_per_expert = ctx.router.tokens_per_expert;
  const nn::TokenDispatcher::SlotUsage usage = layer.slot_usage();
  if (usage.peak_rows.defined()) {
    f.slot_peak = usage.peak_rows.to_vector<int64_t>()[0];
    f.slot_rows = usage.slot_rows;
  }
  return f;
}

// The shapes of the run: --shapes (each must split over EP; deepseek-v3-ep8, one rank's share
// of deepseek-v3 already, is refused), or by default the device's, those that split over EP.
std::vector<Shape> chosen_shapes(const MoEEpBenchOptions& o, bool gpu, int ep,
                                 std::vector<std::string>& skipped) {
  check_shape_names(o.shapes, kCommand);
  std::vector<Shape> out;
  for (const Shape& s : all_shapes()) {
    const bool named = std::find(o.shapes.begin(), o.shapes.end(), s.name) != o.shapes.end();
    if (named) {
      MOE_CHECK(s.name != "deepseek-v3-ep8", kCommand,
                ": --shapes deepseek-v3-ep8 is one rank's share of deepseek-v3 under EP 8; run "
                "deepseek-v3 with --expert-model-parallel-size 8 instead");
      MOE_CHECK(s.experts % ep == 0, kCommand, ": --shapes ", s.name, " has ", s.experts,
                " experts, which do not split over --expert-model-parallel-size ", ep);
      out.push_back(s);
    } else if (o.shapes.empty() && s.name != "deepseek-v3-ep8" &&
               (gpu ? s.name != "tiny" : s.name == "tiny")) {
      if (s.experts % ep == 0)
        out.push_back(s);
      else
        skipped.push_back(s.name);
    }
  }
  return out;
}

void check_options(const MoEEpBenchOptions& o) {
  const bool sync_free =
      std::find(o.exchanges.begin(), o.exchanges.end(), "sync-free") != o.exchanges.end();
  MOE_CHECK(!sync_free || o.dispatcher == "alltoall", kCommand,
            ": --exchanges sync-free needs --moe-token-dispatcher-type alltoall, got ",
            o.dispatcher);
  MOE_CHECK(o.rank_capacity_factor > 0, kCommand, ": --rank-capacity-factor must be positive");
  (void)ops::parse_grouped_gemm_backend(o.gemm_backend);  // throws, naming the choices
  for (int64_t T : o.tokens) MOE_CHECK(T > 0, kCommand, ": --tokens must be positive, got ", T);
}

// The table's row: the ranks' figures reduced (max of the times, min of the throughputs).
struct Row {
  double step_ms = 0;
  std::array<double, 4> stage_ms{};
  double dispatch_gbps = 0, combine_gbps = 0;  // 0: nothing sent to another rank
  double load_ratio = 0;
  int64_t slot_peak = -1, slot_rows = -1;
};

Row reduce_over_ranks(RankFigures& f, double row_bytes, dist::ProcessGroup& world, Device device) {
  const double bytes = static_cast<double>(f.remote_slots) * row_bytes;
  const double none = std::numeric_limits<double>::lowest();
  // Negated throughputs, so that the max is the slowest rank's; a rank that sends nothing
  // does not count.
  const auto minus_gbps = [&](double ms) {
    return bytes > 0 && ms > 0 ? -bytes / (ms * 1e-3) / 1e9 : none;
  };
  std::vector<double> values = {f.step_ms,
                                f.stage_ms[0],
                                f.stage_ms[1],
                                f.stage_ms[2],
                                f.stage_ms[3],
                                minus_gbps(f.stage_ms[0]),
                                minus_gbps(f.stage_ms[1]),
                                static_cast<double>(f.slot_peak),
                                static_cast<double>(f.slot_rows)};
  Tensor maxima =
      Tensor::from_vector<double>(values, {static_cast<int64_t>(values.size())}, device);
  world.all_reduce(maxima, dist::ReduceOp::max);
  values = maxima.to_vector<double>();
  Tensor load = f.tokens_per_expert.clone();
  world.all_reduce(load);

  Row r;
  r.step_ms = values[0];
  for (size_t s = 0; s < 4; ++s) r.stage_ms[s] = values[1 + s];
  r.dispatch_gbps = values[5] == none ? 0.0 : -values[5];
  r.combine_gbps = values[6] == none ? 0.0 : -values[6];
  r.slot_peak = static_cast<int64_t>(values[7]);
  r.slot_rows = static_cast<int64_t>(values[8]);
  double max_load = 0, total = 0;
  const std::vector<int64_t> counts = load.to_vector<int64_t>();
  for (int64_t n : counts) {
    max_load = std::max(max_load, static_cast<double>(n));
    total += static_cast<double>(n);
  }
  r.load_ratio = total > 0 ? max_load / (total / static_cast<double>(counts.size())) : 0.0;
  return r;
}

std::string slots_text(const std::string& exchange, const Row& r) {
  if (exchange != "sync-free") return "-";
  if (r.slot_rows < 0) return "unused";  // EP 1: nothing to exchange
  char text[96];
  std::snprintf(text, sizeof text, "%s: peak %lld of %lld",
                r.slot_peak > r.slot_rows ? "short" : "ok", static_cast<long long>(r.slot_peak),
                static_cast<long long>(r.slot_rows));
  return text;
}

std::string gbps_text(double gbps) {
  if (gbps <= 0) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", gbps);
  return text;
}

}  // namespace

CLI::App* add_moe_ep_bench_command(CLI::App& bench, MoEEpBenchOptions& o) {
  CLI::App* cmd = bench.add_subcommand(
      "moe-ep",
      "the MoE layer under expert parallelism on the ranks of a launch: fwd+bwd time per GPU "
      "(weak scaling) and the dispatch/combine exchange's throughput");
  cmd->add_option("--shapes", o.shapes, "mixtral-8x7b qwen3-30b-a3b deepseek-v3 tiny");
  cmd->add_option("--tokens", o.tokens, "tokens per rank (default 8192 on GPU, 64 on CPU)");
  cmd->add_option("--routings", o.routings, "balanced natural skewed (default balanced natural)")
      ->check(CLI::IsMember({"balanced", "natural", "skewed"}));
  cmd->add_option("--exchanges", o.exchanges,
                  "synchronising sync-free (default both; sync-free: the alltoall dispatcher's "
                  "fixed slots)")
      ->check(CLI::IsMember({"synchronising", "sync-free"}));
  cmd->add_option("--rank-capacity-factor,--moe-expert-rank-capacity-factor",
                  o.rank_capacity_factor, "the sync-free exchange's slot factor (default 1.5)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--expert-model-parallel-size", o.expert_model_parallel_size,
                  "EP (default: the world size; EDP = world / EP)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--moe-token-dispatcher-type", o.dispatcher, "alltoall (default) or allgather")
      ->check(CLI::IsMember({"allgather", "alltoall"}));
  cmd->add_option("--grouped-gemm-backend", o.gemm_backend,
                  "automatic per_expert_lt per_expert_streams per_expert_threads chunked_batched "
                  "grouped_batched cutlass (default automatic)")
      ->check(grouped_gemm_backend_problem);
  cmd->add_option("--warmup", o.warmup, "untimed steps first (default 3)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--iters", o.iters, "timed steps per row (default 10)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--cpu", o.cpu, "stay on the CPU (as the program's --cpu, or --device cpu)");
  cmd->add_option("--jsonl", o.jsonl, "append one JSON line per row to this file (rank 0)");
  add_world_options(*cmd, o.device, o.distributed);
  return cmd;
}

int run_moe_ep_bench(const MoEEpBenchOptions& options, bool force_cpu) {
  check_options(options);  // before joining the world: every rank fails alike
  MOE_CHECK(!(options.cpu && options.device == "cuda"), kCommand,
            ": --cpu and --device cuda contradict each other");
  dist::DistributedOptions dopt = options.distributed;
  dopt.cpu = force_cpu || options.cpu || options.device == "cpu";
  const dist::World w = dist::init_distributed(dopt);
  MOE_CHECK(options.device != "cuda" || w.device.is_cuda(), kCommand, ": --device cuda: rank ",
            w.rank(), " has no GPU");
  dist::ProcessGroup& world = *w.world;
  const int n = world.size();
  const int ep = options.expert_model_parallel_size > 0 ? options.expert_model_parallel_size : n;
  MOE_CHECK(n % ep == 0, kCommand, ": --expert-model-parallel-size ", ep,
            " does not divide the world size ", n);
  const bool gpu = w.device.is_cuda();
  std::vector<std::string> skipped;
  const std::vector<Shape> shapes = chosen_shapes(options, gpu, ep, skipped);
  std::vector<int64_t> token_counts = options.tokens;
  if (token_counts.empty()) token_counts = {gpu ? int64_t{8192} : int64_t{64}};

  dist::ParallelConfig mapping;
  mapping.expert_model_parallel_size = ep;
  const dist::ParallelState state(w.world, mapping);
  const nn::MoEGroups groups = nn::moe_groups_of(state);

  const bool lead = w.rank() == 0;
  std::ofstream jsonl;
  Ceilings ceilings;
  if (lead) {
    ceilings = measure_ceilings(w.device);  // rank 0's device stands for every rank's
    std::printf("%s", dist::describe_world(w, mapping).c_str());
    std::printf(
        "moe bench moe-ep: %d rank%s, EP %d x EDP %d (ETP 1), %s, dispatcher %s, grouped GEMM "
        "%s; %d warm-up + %d timed steps\n",
        n, n == 1 ? "" : "s", ep, n / ep, gpu ? "bf16 on cuda" : "f32 on cpu",
        options.dispatcher.c_str(), options.gemm_backend.c_str(), options.warmup, options.iters);
    std::printf("rank 0's measured ceilings: dense %s GEMM %.1f TFLOP/s, copy %.0f GB/s\n",
                gpu ? "bf16" : "f32", ceilings.gemm_tflops, ceilings.copy_gb_per_s);
    std::printf(
        "T = tokens per rank; ms: fwd+bwd median and stage means, the slowest rank's; TFLOP/s "
        "per GPU = 3 (6 T K H F + 6 T H S) / time; GB/s: rows sent to other EP ranks x H x "
        "element size / stage time, the slowest rank's; slots: sync-free peak rows to one rank "
        "vs slot rows (factor %.3g)\n",
        options.rank_capacity_factor);
    for (const std::string& name : skipped)
      std::printf("(%s skipped: its experts do not split over EP %d)\n", name.c_str(), ep);
    std::printf(
        "\n| shape | EP | T | routing | exchange | fwd+bwd ms | TFLOP/s/GPU | vs GEMM | max/mean "
        "load | dispatch ms | combine ms | combine.bwd ms | dispatch.bwd ms | dispatch GB/s | "
        "combine GB/s | slots |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    std::fflush(stdout);
    if (!options.jsonl.empty()) {
      jsonl.open(options.jsonl, std::ios::app);
      MOE_CHECK(jsonl.good(), kCommand, ": --jsonl: cannot open ", options.jsonl);
    }
  }
  world.barrier();

  for (const Shape& shape : shapes)
    for (int64_t T : token_counts)
      for (const std::string& routing : options.routings)
        for (const std::string& exchange : options.exchanges) {
          nn::MoEConfig config = config_for(shape, w.device, routing, options.dispatcher);
          config.expert_model_parallel_size = ep;
          config.moe_grouped_gemm_backend = ops::parse_grouped_gemm_backend(options.gemm_backend);
          if (exchange == "sync-free")
            config.moe_expert_rank_capacity_factor = options.rank_capacity_factor;
          RankFigures figures;
          {
            nn::MoELayer layer(config, w.device, groups);
            if (routing == "skewed") skew_expert_bias(layer, shape);
            Tensor x = Tensor::empty({T, shape.hidden}, config.params_dtype, w.device);
            fill_normal(x, 1000 + 2 * static_cast<uint64_t>(w.rank()), 0.0, 1.0);
            Tensor dy = Tensor::empty({T, shape.hidden}, config.params_dtype, w.device);
            fill_normal(dy, 1001 + 2 * static_cast<uint64_t>(w.rank()), 0.0, 1e-2);
            figures = time_steps(layer, x, dy, w.device, options.warmup, options.iters,
                                 groups.ep_rank(), world);
          }
          empty_cache();
          const double row_bytes = static_cast<double>(shape.hidden) *
                                   static_cast<double>(dtype_size(config.params_dtype));
          const Row r = reduce_over_ranks(figures, row_bytes, world, w.device);
          const double flops = 3.0 * (6.0 * T * shape.topk * shape.hidden * shape.ffn +
                                      6.0 * T * shape.hidden * shape.shared);
          const double tflops = flops / (r.step_ms * 1e-3) / 1e12;
          if (!lead) continue;
          const std::string slots = slots_text(exchange, r);
          std::printf(
              "| %s | %d | %lld | %s | %s | %.3f | %.3g | %.2f | %.2f | %.3f | %.3f | %.3f | "
              "%.3f | %s | %s | %s |\n",
              shape.name.c_str(), ep, static_cast<long long>(T), routing.c_str(), exchange.c_str(),
              r.step_ms, tflops, tflops / ceilings.gemm_tflops, r.load_ratio, r.stage_ms[0],
              r.stage_ms[1], r.stage_ms[2], r.stage_ms[3], gbps_text(r.dispatch_gbps).c_str(),
              gbps_text(r.combine_gbps).c_str(), slots.c_str());
          std::fflush(stdout);
          if (jsonl.is_open()) {
            nlohmann::json row = {{"shape", shape.name},
                                  {"world_size", n},
                                  {"ep", ep},
                                  {"edp", n / ep},
                                  {"tokens_per_rank", T},
                                  {"routing", routing},
                                  {"exchange", exchange},
                                  {"dispatcher", options.dispatcher},
                                  {"grouped_gemm_backend", options.gemm_backend},
                                  {"backend", w.backend},
                                  {"device", gpu ? "cuda" : "cpu"},
                                  {"iters", options.iters},
                                  {"fwd_bwd_ms", r.step_ms},
                                  {"tflops_per_gpu", tflops},
                                  {"vs_gemm", tflops / ceilings.gemm_tflops},
                                  {"max_mean_load", r.load_ratio},
                                  {"dispatch_gbps", r.dispatch_gbps},
                                  {"combine_gbps", r.combine_gbps}};
            for (size_t s = 0; s < kExchangeStages.size(); ++s) {
              std::string key = std::string(kExchangeStages[s]) + "_ms";  // combine_bwd_ms
              std::replace(key.begin(), key.end(), '.', '_');
              row[key] = r.stage_ms[s];
            }
            if (exchange == "sync-free") {
              row["rank_capacity_factor"] = options.rank_capacity_factor;
              row["slot_peak_rows"] = r.slot_peak;
              row["slot_rows"] = r.slot_rows;
              row["slots_short"] = r.slot_rows >= 0 && r.slot_peak > r.slot_rows;
            }
            jsonl << row.dump() << "\n";
            jsonl.flush();
          }
        }
  world.barrier();
  return 0;
}

}  // namespace moe::bench
