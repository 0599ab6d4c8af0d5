#include "attention_bench.h"

#include <algorithm>
#include <cstdio>
#include <exception>

#include "ceilings.h"
#include "moe/core/allocator.h"
#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/core/tensor.h"
#include "moe/ops/attention.h"

namespace moe::bench {
namespace {

struct AttentionBenchShape {
  std::string name;
  int64_t batch, seq, q_heads, kv_heads, head_dim, v_head_dim;
  bool gpu;  // part of the default GPU set (else of the CPU set)
};

// ~16k tokens each (B * S = 16384).
const std::vector<AttentionBenchShape>& all_shapes() {
  static const std::vector<AttentionBenchShape> shapes = {
      {"gqa-s4096", 4, 4096, 32, 8, 128, 128, true},   // Llama-style GQA, 4 query heads per kv head
      {"mha-s8192", 2, 8192, 16, 16, 128, 128, true},  // long context, MHA
      {"mla-s4096", 4, 4096, 16, 16, 192, 128, true},  // DeepSeek MLA head dims (qk 192, v 128)
      {"tiny", 1, 256, 4, 2, 64, 64, false},
  };
  return shapes;
}

double forward_flops(const AttentionBenchShape& s) {
  const double pairs = static_cast<double>(s.seq) * static_cast<double>(s.seq) / 2.0;  // causal
  return 2.0 * static_cast<double>(s.batch * s.q_heads) * pairs *
         static_cast<double>(s.head_dim + s.v_head_dim);
}

double tflops(double flops, double ms) {
  return flops / (ms * 1e-3) / 1e12;
}

// Every --shapes name must be a shape: an unknown one is an error listing them, not a row
// silently missing from the table.
void check_shape_names(const std::vector<std::string>& names) {
  std::string known;
  for (const AttentionBenchShape& s : all_shapes()) known += (known.empty() ? "" : ", ") + s.name;
  for (const std::string& name : names) {
    const auto& shapes = all_shapes();
    const bool found = std::any_of(shapes.begin(), shapes.end(),
                                   [&](const AttentionBenchShape& s) { return s.name == name; });
    MOE_CHECK(found, "bench attention: --shapes '", name,
              "' is not a shape; the shapes are: ", known);
  }
}

}  // namespace

int run_attention_bench(const AttentionBenchOptions& options) {
  check_shape_names(options.shapes);  // before any measurement
  const bool gpu = !options.cpu && cuda_device_count() > 0;
  const Device device = gpu ? Device::cuda(0) : Device::cpu();
  const DType dtype = gpu ? DType::bf16 : DType::f32;
  const Ceilings ceilings = measure_ceilings(device);
  std::printf("device %s; measured ceiling: dense %s GEMM %.1f TFLOP/s\n", device.str().c_str(),
              gpu ? "bf16" : "f32", ceilings.gemm_tflops);
  std::printf("causal attention, %s; %d warm-up + %d timed iterations (median)\n",
              dtype_name(dtype), options.warmup, options.iters);
  std::printf(
      "FLOPs (FlashAttention's convention): fwd = 2 B Hq (S^2/2) (D + Dv) "
      "[= 4 B S^2/2 Hq D for D = Dv], bwd = 2.5 fwd, fwd+bwd = 3.5 fwd\n\n");
  std::printf(
      "| shape | B | S | Hq/Hkv | D/Dv | backend | fwd ms | fwd TFLOP/s | bwd ms | "
      "bwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | fwd vs GEMM | fwd+bwd vs GEMM |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);

  // On the CPU every backend is the reference: one row.
  const std::vector<std::string> backends =
      gpu ? options.backends : std::vector<std::string>{"native"};
  for (const AttentionBenchShape& shape : all_shapes()) {
    const bool wanted = options.shapes.empty()
                            ? shape.gpu == gpu
                            : std::find(options.shapes.begin(), options.shapes.end(), shape.name) !=
                                  options.shapes.end();
    if (!wanted) continue;
    Tensor q =
        Tensor::empty({shape.batch, shape.seq, shape.q_heads, shape.head_dim}, dtype, device);
    Tensor k =
        Tensor::empty({shape.batch, shape.seq, shape.kv_heads, shape.head_dim}, dtype, device);
    Tensor v =
        Tensor::empty({shape.batch, shape.seq, shape.kv_heads, shape.v_head_dim}, dtype, device);
    Tensor dout =
        Tensor::empty({shape.batch, shape.seq, shape.q_heads, shape.v_head_dim}, dtype, device);
    fill_normal(q, 21, 0.0, 1.0);
    fill_normal(k, 22, 0.0, 1.0);
    fill_normal(v, 23, 0.0, 1.0);
    fill_normal(dout, 24, 0.0, 1.0);
    const double fwd_flops = forward_flops(shape);
    char dims[64], heads[64];
    std::snprintf(heads, sizeof heads, "%lld/%lld", static_cast<long long>(shape.q_heads),
                  static_cast<long long>(shape.kv_heads));
    std::snprintf(dims, sizeof dims, "%lld/%lld", static_cast<long long>(shape.head_dim),
                  static_cast<long long>(shape.v_head_dim));

    for (const std::string& name : backends) {
      ops::AttentionOptions attn;
      attn.backend = ops::parse_attention_backend(name);
      std::string label = gpu ? name : "cpu";
      std::string reason;
      const ops::AttentionBackend resolved = ops::attention_backend_for(q, k, v, attn, &reason);
      if (gpu && attn.backend == ops::AttentionBackend::cudnn &&
          resolved != ops::AttentionBackend::cudnn) {
        std::printf("| %s | %lld | %lld | %s | %s | cudnn | unavailable: %s |\n",
                    shape.name.c_str(), static_cast<long long>(shape.batch),
                    static_cast<long long>(shape.seq), heads, dims, reason.c_str());
        std::fflush(stdout);
        continue;
      }
      if (gpu && attn.backend == ops::AttentionBackend::automatic)
        label += std::string(" (") + ops::attention_backend_name(resolved) + ")";
      try {
        ops::AttentionOutput saved = ops::attention_forward(q, k, v, attn);
        const double fwd_ms = median_ms(device, options.warmup, options.iters,
                                        [&] { (void)ops::attention_forward(q, k, v, attn); });
        const double bwd_ms = median_ms(device, options.warmup, options.iters, [&] {
          (void)ops::attention_backward(dout, q, k, v, saved.out, saved.lse, attn);
        });
        const double step_ms = median_ms(device, options.warmup, options.iters, [&] {
          const ops::AttentionOutput f = ops::attention_forward(q, k, v, attn);
          (void)ops::attention_backward(dout, q, k, v, f.out, f.lse, attn);
        });
        const double fwd_tf = tflops(fwd_flops, fwd_ms);
        const double step_tf = tflops(3.5 * fwd_flops, step_ms);
        std::printf(
            "| %s | %lld | %lld | %s | %s | %s | %.3f | %.3g | %.3f | %.3g | %.3f | %.3g | "
            "%.2f | %.2f |\n",
            shape.name.c_str(), static_cast<long long>(shape.batch),
            static_cast<long long>(shape.seq), heads, dims, label.c_str(), fwd_ms, fwd_tf, bwd_ms,
            tflops(2.5 * fwd_flops, bwd_ms), step_ms, step_tf, fwd_tf / ceilings.gemm_tflops,
            step_tf / ceilings.gemm_tflops);
      } catch (const std::exception& e) {
        std::printf("| %s | %lld | %lld | %s | %s | %s | failed: %s |\n", shape.name.c_str(),
                    static_cast<long long>(shape.batch), static_cast<long long>(shape.seq), heads,
                    dims, label.c_str(), e.what());
      }
      std::fflush(stdout);
    }
    q = k = v = dout = Tensor();
    empty_cache();
  }
  return 0;
}

}  // namespace moe::bench
