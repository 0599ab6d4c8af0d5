#include "moe_layer_bench.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>

#include "ceilings.h"
#include "moe/core/allocator.h"
#include "moe/core/cuda_graph.h"
#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/core/timer.h"
#include "moe/nn/moe_layer.h"
#include "moe/ops/grouped_gemm.h"
#include "moe_bench_shapes.h"

namespace moe::bench {
namespace {

double gib(int64_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0);
}

}  // namespace

int run_moe_layer_bench(const MoELayerBenchOptions& options) {
  check_shape_names(options.shapes, "bench moe-layer");  // before any measurement
  const bool gpu = !options.cpu && cuda_device_count() > 0;
  const Device device = gpu ? Device::cuda(0) : Device::cpu();
  const Ceilings ceilings = measure_ceilings(device);
  std::printf("device %s; measured ceilings: dense %s GEMM %.1f TFLOP/s, copy %.0f GB/s\n",
              device.str().c_str(), gpu ? "bf16" : "f32", ceilings.gemm_tflops,
              ceilings.copy_gb_per_s);
  std::printf("dispatcher %s, %d warm-up + %d timed iterations (median)\n\n",
              options.dispatcher.c_str(), options.warmup, options.iters);
  std::printf(
      "| shape | T | routing | gemm | max/mean load | fwd ms | fwd TFLOP/s | fwd+bwd ms | "
      "fwd+bwd TFLOP/s | vs GEMM | vs torch | peak GiB |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);

  std::vector<std::string> stage_rows;
  for (const Shape& shape : all_shapes()) {
    const bool wanted = options.shapes.empty()
                            ? (gpu ? shape.name != "tiny" : shape.name == "tiny")
                            : std::find(options.shapes.begin(), options.shapes.end(), shape.name) !=
                                  options.shapes.end();
    if (!wanted) continue;
    std::vector<int64_t> token_counts = options.tokens;
    if (token_counts.empty())
      token_counts = gpu ? std::vector<int64_t>{8192, 16384} : std::vector<int64_t>{256};
    for (const std::string& routing : options.routings)
      for (const std::string& backend : options.gemm_backends) {
        nn::MoEConfig config = config_for(shape, device, routing, options.dispatcher);
        config.moe_grouped_gemm_backend = ops::parse_grouped_gemm_backend(backend);
        std::optional<nn::MoELayer> layer;
        layer.emplace(config, device);  // the same weights for every backend (one seed)
        if (routing == "skewed") skew_expert_bias(*layer, shape);
        for (int64_t T : token_counts) {
          Tensor x = Tensor::empty({T, shape.hidden}, config.params_dtype, device);
          fill_normal(x, 11, 0.0, 1.0);
          Tensor dy = Tensor::empty({T, shape.hidden}, config.params_dtype, device);
          fill_normal(dy, 12, 0.0, 1e-2);
          nn::MoEContext ctx;
          const double fwd_ms =
              median_ms(device, options.warmup, options.iters, [&] { layer->forward(x, ctx); });
          reset_peak_memory(device);
          const double step_ms = median_ms(device, options.warmup, options.iters, [&] {
            layer->zero_grad();  // one micro-batch per step, as a training step runs it
            layer->forward(x, ctx);
            layer->backward(dy, ctx);
          });
          const double peak = gib(memory_stats(device).peak_allocated_bytes);
          // Load balance of the last routing.
          const std::vector<int64_t> load = ctx.router.tokens_per_expert.to_vector<int64_t>();
          double max_load = 0, total = 0;
          for (int64_t n : load) {
            max_load = std::max(max_load, static_cast<double>(n));
            total += static_cast<double>(n);
          }
          const double imbalance = max_load / (total / static_cast<double>(load.size()));
          const double fwd_flops = 6.0 * T * shape.topk * shape.hidden * shape.ffn +
                                   6.0 * T * shape.hidden * shape.shared;
          const double fwd_tflops = fwd_flops / (fwd_ms * 1e-3) / 1e12;
          const double step_tflops = 3.0 * fwd_flops / (step_ms * 1e-3) / 1e12;
          char peer[32] = "-";
          if (shape.peer_tflops > 0 && T == 8192 && gpu)
            std::snprintf(peer, sizeof peer, "%.2fx", step_tflops / shape.peer_tflops);
          std::printf(
              "| %s | %lld | %s | %s | %.2f | %.2f | %.3g | %.2f | %.3g | %.2f | %s | %.3g |\n",
              shape.name.c_str(), static_cast<long long>(T), routing.c_str(), backend.c_str(),
              imbalance, fwd_ms, fwd_tflops, step_ms, step_tflops,
              step_tflops / ceilings.gemm_tflops, peer, peak);
          std::fflush(stdout);

          if (options.cuda_graph && gpu) {
            // The same forward+backward captured as one CUDA graph and replayed: what the
            // host's launches cost (only a layer that reads its counts on the device captures).
            CudaGraph graph;
            std::string failure;
            try {
              graph.capture(device, [&] {
                nn::MoEContext graph_ctx;
                layer->zero_grad();
                layer->forward(x, graph_ctx);
                layer->backward(dy, graph_ctx);
              });
            } catch (const Error& e) {
              failure = e.what();
            }
            if (failure.empty()) {
              const double graph_ms =
                  median_ms(device, options.warmup, options.iters, [&] { graph.replay(); });
              const double graph_tflops = 3.0 * fwd_flops / (graph_ms * 1e-3) / 1e12;
              std::printf(
                  "| %s | %lld | %s | %s+graph | %.2f | - | - | %.2f | %.3g | %.2f | - | "
                  "%.3g (pool) |\n",
                  shape.name.c_str(), static_cast<long long>(T), routing.c_str(), backend.c_str(),
                  imbalance, graph_ms, graph_tflops, graph_tflops / ceilings.gemm_tflops,
                  gib(graph.pool_bytes()));
            } else {
              std::printf("| %s | %lld | %s | %s+graph | not capturable: %.80s |\n",
                          shape.name.c_str(), static_cast<long long>(T), routing.c_str(),
                          backend.c_str(), failure.c_str());
            }
            std::fflush(stdout);
          }

          if (options.stages) {
            DeviceTimer timer(device);
            std::map<std::string, double> stage_ms;
            std::vector<std::string> order;
            const int reps = std::max(1, options.iters / 2);
            for (int rep = 0; rep < reps; ++rep) {
              std::vector<std::string> names;
              timer.reset();
              timer.record();
              layer->stage_hook = [&](const char* stage) {
                timer.record();
                names.emplace_back(stage);
              };
              layer->zero_grad();
              layer->forward(x, ctx);
              layer->backward(dy, ctx);
              layer->stage_hook = nullptr;
              for (size_t i = 0; i < names.size(); ++i) {
                if (rep == 0) order.push_back(names[i]);
                stage_ms[names[i]] += timer.elapsed_ms(i, i + 1) / reps;
              }
            }
            std::string row = "| " + shape.name + " | " + std::to_string(T) + " | " + routing +
                              " | " + backend + " |";
            for (const std::string& name : order) {
              char cell[64];
              std::snprintf(cell, sizeof cell, " %s %.2f |", name.c_str(), stage_ms[name]);
              row += cell;
            }
            stage_rows.push_back(row);
          }
        }
        layer.reset();
        empty_cache();
      }
  }
  if (!stage_rows.empty()) {
    std::printf("\nWhere the time goes (ms per stage, forward then backward):\n\n");
    for (const std::string& row : stage_rows) std::printf("%s\n", row.c_str());
  }
  return 0;
}

}  // namespace moe::bench
