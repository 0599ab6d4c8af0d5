#include "grouped_gemm_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>

#include "ceilings.h"
#include "moe/core/allocator.h"
#include "moe/core/device.h"
#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/ops/grouped_gemm.h"
#include "moe/ops/grouped_gemm_cutlass.h"
#include "moe_bench_shapes.h"

namespace moe::bench {
namespace {

constexpr int64_t kRowMultiple = 128;  // ops::kGroupedGemmChunkRows: chunked_batched runs too

// Rows per expert summing to `rows` (a multiple of kRowMultiple), each a multiple of it:
// balanced (equal), or skewed (linearly from twice the mean down to zero: max/mean 2, the last
// experts empty).
std::vector<int64_t> expert_counts(int64_t rows, int64_t experts, const std::string& routing) {
  const int64_t chunks = rows / kRowMultiple;
  std::vector<int64_t> counts(static_cast<size_t>(experts), 0);
  int64_t given = 0;
  for (int64_t e = 0; e < experts; ++e) {
    const double weight =
        routing == "balanced" || experts == 1
            ? 1.0 / static_cast<double>(experts)
            : 2.0 * (1.0 - static_cast<double>(e) / static_cast<double>(experts - 1)) /
                  static_cast<double>(experts);
    counts[e] = static_cast<int64_t>(std::floor(weight * static_cast<double>(chunks)));
    given += counts[e];
  }
  for (int64_t e = 0; given < chunks; e = (e + 1) % experts, ++given) ++counts[e];
  for (int64_t& c : counts) c *= kRowMultiple;
  return counts;
}

struct Column {
  std::string name;
  bool cutlass = false;
  ops::CutlassTiles tiles = ops::CutlassTiles::by_shape;
  ops::GroupedGemmBackend backend = ops::GroupedGemmBackend::automatic;
};

Column parse_column(const std::string& name) {
  Column c;
  c.name = name;
  if (name.rfind("cutlass:", 0) == 0) {
    c.cutlass = true;
    c.tiles = ops::parse_cutlass_tiles(name.substr(8));
    MOE_CHECK(ops::grouped_gemm_cutlass_built(), "bench grouped-gemm: ", name,
              ": this build has no cutlass backend");
  } else {
    c.backend = ops::parse_grouped_gemm_backend(name);
  }
  return c;
}

// One GEMM of the six (the header's table): its operands and how to run it with a column.
struct Problem {
  std::string name;
  bool wgrad = false;
  bool accumulate = false;
  const Tensor* a = nullptr;  // x (forward) or dy (wgrad)
  const Tensor* b = nullptr;  // w (forward) or x (wgrad)
  Tensor* out = nullptr;
  bool trans_w = true;
  int64_t n = 0, k = 0;  // out_e is [rows_e, n] (forward) or [n, k] (wgrad)
};

}  // namespace

int run_grouped_gemm_bench(const GroupedGemmBenchOptions& options) {
  check_shape_names(options.shapes, "bench grouped-gemm");
  MOE_CHECK(cuda_device_count() > 0, "bench grouped-gemm: needs a GPU");
  MOE_CHECK(options.tokens > 0, "bench grouped-gemm: --tokens must be positive");
  std::vector<std::string> column_names = options.columns;
  if (column_names.empty()) {
    column_names = {"automatic"};
    if (ops::grouped_gemm_cutlass_built()) {
      column_names.push_back("cutlass:by_shape");
      for (ops::CutlassTiles t : ops::all_cutlass_tiles())
        column_names.push_back(std::string("cutlass:") + ops::cutlass_tiles_name(t));
    }
  }
  std::vector<Column> columns;
  for (const std::string& name : column_names) columns.push_back(parse_column(name));

  const Device device = Device::cuda(0);
  const Ceilings ceilings = measure_ceilings(device);
  std::printf("device %s; measured ceilings: dense bf16 GEMM %.1f TFLOP/s, copy %.0f GB/s\n",
              device.str().c_str(), ceilings.gemm_tflops, ceilings.copy_gb_per_s);
  std::printf(
      "T = %lld tokens, bf16 operands, f32 weight gradients; %d warm-up + %d timed "
      "iterations (median); TFLOP/s (fraction of the dense GEMM)\n\n",
      static_cast<long long>(options.tokens), options.warmup, options.iters);
  std::string header = "| shape | routing | gemm | n x k |", rule = "|---|---|---|---|";
  for (const Column& c : columns) {
    header += " " + c.name + " |";
    rule += "---|";
  }
  std::printf("%s by_shape picks |\n%s---|\n", header.c_str(), rule.c_str());
  std::fflush(stdout);

  for (const Shape& shape : all_shapes()) {
    const bool wanted = options.shapes.empty()
                            ? shape.name != "tiny"
                            : std::find(options.shapes.begin(), options.shapes.end(), shape.name) !=
                                  options.shapes.end();
    if (!wanted) continue;
    const int64_t H = shape.hidden, F = shape.ffn, E = shape.experts;
    const int64_t R =
        (options.tokens * shape.topk + kRowMultiple - 1) / kRowMultiple * kRowMultiple;
    const DType bf16 = DType::bf16;
    {
      Tensor fc1 = Tensor::empty({E, 2 * F, H}, bf16, device);
      Tensor fc2 = Tensor::empty({E, H, F}, bf16, device);
      Tensor x = Tensor::empty({R, H}, bf16, device), h1 = Tensor::empty({R, 2 * F}, bf16, device);
      Tensor h = Tensor::empty({R, F}, bf16, device), y = Tensor::empty({R, H}, bf16, device);
      fill_normal(fc1, 1, 0.0, 0.02);
      fill_normal(fc2, 2, 0.0, 0.02);
      fill_normal(x, 3, 0.0, 1.0);
      fill_normal(h1, 4, 0.0, 1.0);
      fill_normal(h, 5, 0.0, 1.0);
      fill_normal(y, 6, 0.0, 1.0);
      Tensor dfc1 = Tensor::zeros({E, 2 * F, H}, DType::f32, device);
      Tensor dfc2 = Tensor::zeros({E, H, F}, DType::f32, device);
      Tensor out_h1 = Tensor::empty({R, 2 * F}, bf16, device);
      Tensor out_h = Tensor::empty({R, F}, bf16, device);
      Tensor out_x = Tensor::empty({R, H}, bf16, device);
      const std::vector<Problem> problems = {
          {"fc1.fwd", false, false, &x, &fc1, &out_h1, true, 2 * F, H},
          {"fc2.fwd", false, false, &h, &fc2, &out_x, true, H, F},
          {"fc2.dgrad", false, false, &y, &fc2, &out_h, false, F, H},
          {"fc1.dgrad", false, false, &h1, &fc1, &out_x, false, H, 2 * F},
          {"fc2.wgrad", true, false, &y, &h, &dfc2, false, H, F},
          {"fc1.wgrad", true, false, &h1, &x, &dfc1, false, 2 * F, H},
          {"fc2.wgrad+=", true, true, &y, &h, &dfc2, false, H, F},
          {"fc1.wgrad+=", true, true, &h1, &x, &dfc1, false, 2 * F, H},
      };
      for (const std::string& routing : options.routings) {
        const std::vector<int64_t> host_counts = expert_counts(R, E, routing);
        const Tensor counts = Tensor::from_vector<int64_t>(host_counts, {E}).to(device);
        for (const Problem& p : problems) {
          const double flops =
              2.0 * static_cast<double>(R) * static_cast<double>(p.n) * static_cast<double>(p.k);
          std::string row = "| " + shape.name + " | " + routing + " | " + p.name + " | " +
                            std::to_string(p.n) + " x " + std::to_string(p.k) + " |";
          for (const Column& c : columns) {
            std::function<void()> run;
            if (c.cutlass) {
              // (parse_column refused cutlass columns in a build without the backend)
              MOE_CUDA_ONLY(if (!ops::grouped_gemm_cutlass_qualifies(*p.a, *p.b, *p.out)) {
                row += " does not qualify |";
                continue;
              });
              run = [&] {
                MOE_CUDA_ONLY(
                    if (p.wgrad) {
                      ops::grouped_gemm_wgrad_cutlass(*p.a, *p.b, counts, *p.out, p.accumulate,
                                                      c.tiles);
                    } else {
                      ops::grouped_gemm_cutlass(*p.a, *p.b, p.trans_w, counts, *p.out, c.tiles);
                    });
              };
            } else {
              run = [&] {
                if (p.wgrad) {
                  ops::grouped_gemm_wgrad(*p.a, *p.b, counts, *p.out, p.accumulate, host_counts,
                                          c.backend);
                } else {
                  ops::grouped_gemm(*p.a, *p.b, p.trans_w, counts, *p.out, host_counts, c.backend);
                }
              };
            }
            const double ms = median_ms(device, options.warmup, options.iters, run);
            const double tflops = flops / (ms * 1e-3) / 1e12;
            char cell[64];
            std::snprintf(cell, sizeof cell, " %.0f (%.2f) |", tflops,
                          tflops / ceilings.gemm_tflops);
            row += cell;
          }
          const ops::CutlassTiles picked = ops::grouped_gemm_cutlass_built()
                                               ? ops::cutlass_tiles_for(p.wgrad, R, E, p.n, p.k)
                                               : ops::CutlassTiles::by_shape;
          std::printf(
              "%s %s |\n", row.c_str(),
              picked == ops::CutlassTiles::by_shape ? "-" : ops::cutlass_tiles_name(picked));
          std::fflush(stdout);
        }
      }
    }
    empty_cache();
  }
  return 0;
}

}  // namespace moe::bench
