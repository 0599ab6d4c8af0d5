// grouped_gemm / grouped_gemm_wgrad: public entry points (checks, reading and validating the
// counts, device dispatch) and the CPU reference, a loop of dense gemm calls on row segments.
// Calls the cutlass backend takes skip the host counts: it reads them on the device.
#include <vector>

#include "moe/ops/gemm.h"
#include "moe/ops/grouped_gemm.h"
#include "moe/ops/grouped_gemm_cuda.h"
#include "moe/ops/grouped_gemm_cutlass.h"

namespace moe::ops {
namespace {

constexpr const char* kForward = "grouped_gemm";
constexpr const char* kWgrad = "grouped_gemm_wgrad";

bool is_half(DType dt) {
  return dt == DType::bf16 || dt == DType::f16;
}

void check_float_dtype(const Tensor& t, const char* op, const char* name) {
  MOE_CHECK(t.dtype() == DType::f64 || t.dtype() == DType::f32 || is_half(t.dtype()), op, ": ",
            name, " has dtype ", t.dtype(), "; allowed: f64 f32 bf16 f16");
}

void check_counts_tensor(const Tensor& counts, int64_t experts, const Tensor& x, const char* op) {
  check_dim(counts, 1, op, "tokens_per_expert");
  MOE_CHECK(counts.dtype() == DType::i64 || counts.dtype() == DType::i32, op,
            ": tokens_per_expert must be i64 or i32, got ", counts.dtype());
  MOE_CHECK(counts.size(0) == experts, op, ": tokens_per_expert has ", counts.size(0),
            " entries for ", experts, " experts");
  MOE_CHECK(counts.device() == x.device(), op, ": tokens_per_expert is on ", counts.device(),
            " but the activations are on ", x.device());
}

// The counts on the host: the caller's copy if given, else read from the tensor (on CUDA: the
// documented synchronisation). Checks that they describe row segments of `rows` rows.
std::vector<int64_t> host_counts(const Tensor& counts, std::span<const int64_t> given, int64_t rows,
                                 const char* op) {
  const int64_t experts = counts.size(0);
  std::vector<int64_t> out;
  if (!given.empty()) {
    MOE_CHECK(static_cast<int64_t>(given.size()) == experts, op, ": host_tokens_per_expert has ",
              given.size(), " entries for ", experts, " experts");
    out.assign(given.begin(), given.end());
  } else if (counts.is_cuda()) {
    MOE_CUDA_ONLY(out = read_counts_cuda(counts);)
  } else {
    out.resize(static_cast<size_t>(experts));
    dispatch<DType::i64, DType::i32>(counts.dtype(), op, [&]<class I>() {
      const I* p = counts.data<I>();
      for (int64_t e = 0; e < experts; ++e)
        out[static_cast<size_t>(e)] = static_cast<int64_t>(p[e]);
    });
  }
  int64_t total = 0;
  for (size_t e = 0; e < out.size(); ++e) {
    MOE_CHECK(out[e] >= 0, op, ": tokens_per_expert[", e, "] = ", out[e], " is negative");
    total += out[e];
  }
  MOE_CHECK(total <= rows, op, ": tokens_per_expert sums to ", total, " but there are only ", rows,
            " rows");
  return out;
}

// Whether the call (a, b -> out: grouped_gemm_cutlass_qualifies) runs on the cutlass backend:
// asked for, or automatic's choice (automatic_takes_cutlass). A weight gradient's out is
// dw [E, n, k]; a forward's b is w [E, ...].
bool runs_on_cutlass(GroupedGemmBackend backend, const Tensor& a, const Tensor& b,
                     const Tensor& out, bool accumulate) {
#if MOE_WITH_CUTLASS
  if (backend != GroupedGemmBackend::cutlass && backend != GroupedGemmBackend::automatic)
    return false;
  if (!grouped_gemm_cutlass_qualifies(a, b, out)) return false;
  const bool wgrad = out.dim() == 3;
  return backend == GroupedGemmBackend::cutlass ||
         automatic_takes_cutlass(wgrad, accumulate, a.size(0), wgrad ? out.size(0) : b.size(0));
#else
  (void)backend, (void)a, (void)b, (void)out, (void)accumulate;
  return false;
#endif
}

constexpr const char* kNoCutlass =
    "the cutlass grouped GEMM backend is not in this build (CUTLASS's headers were not found "
    "when it was configured: run scripts/setup.sh, or set MOE_CUTLASS_INCLUDE, and configure "
    "again)";

// The 2-D [a, b] view of expert e's matrix in a [E, a, b] tensor.
Tensor expert_matrix(const Tensor& w, int64_t e) {
  return w.rows(e, 1).reshape({w.size(1), w.size(2)});
}

void grouped_gemm_cpu(const Tensor& x, const Tensor& w, bool trans_w,
                      std::span<const int64_t> counts, Tensor& y) {
  int64_t start = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t rows = counts[e];
    if (rows > 0) {
      Tensor y_e = y.rows(start, rows);
      gemm(x.rows(start, rows), false, expert_matrix(w, static_cast<int64_t>(e)), trans_w, y_e);
    }
    start += rows;
  }
  Tensor padding = y.rows(start, y.size(0) - start);
  padding.zero_();
}

void grouped_gemm_wgrad_cpu(const Tensor& dy, const Tensor& x, std::span<const int64_t> counts,
                            Tensor& dw, bool accumulate) {
  int64_t start = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t rows = counts[e];
    Tensor dw_e = expert_matrix(dw, static_cast<int64_t>(e));
    if (rows > 0) {
      gemm(dy.rows(start, rows), true, x.rows(start, rows), false, dw_e, 1.0f,
           accumulate ? 1.0f : 0.0f);
    } else if (!accumulate) {
      dw_e.zero_();  // an expert without tokens has a zero gradient, not a stale one
    }
    start += rows;
  }
}

}  // namespace

bool grouped_gemm_reads_counts(GroupedGemmBackend backend, const Tensor& a, const Tensor& b,
                               const Tensor& out, bool accumulate) {
  return !runs_on_cutlass(backend, a, b, out, accumulate);
}

namespace {
constexpr GroupedGemmBackend kAllBackends[] = {GroupedGemmBackend::automatic,
                                               GroupedGemmBackend::per_expert_lt,
                                               GroupedGemmBackend::per_expert_streams,
                                               GroupedGemmBackend::per_expert_threads,
                                               GroupedGemmBackend::chunked_batched,
                                               GroupedGemmBackend::grouped_batched,
                                               GroupedGemmBackend::cutlass};
}  // namespace

const char* grouped_gemm_backend_name(GroupedGemmBackend backend) {
  switch (backend) {
    case GroupedGemmBackend::automatic:
      return "automatic";
    case GroupedGemmBackend::per_expert_lt:
      return "per_expert_lt";
    case GroupedGemmBackend::per_expert_streams:
      return "per_expert_streams";
    case GroupedGemmBackend::per_expert_threads:
      return "per_expert_threads";
    case GroupedGemmBackend::chunked_batched:
      return "chunked_batched";
    case GroupedGemmBackend::grouped_batched:
      return "grouped_batched";
    case GroupedGemmBackend::cutlass:
      return "cutlass";
  }
  return "?";
}

GroupedGemmBackend parse_grouped_gemm_backend(const std::string& name) {
  std::string names;
  for (GroupedGemmBackend b : kAllBackends) {
    if (name == grouped_gemm_backend_name(b)) {
      if (b == GroupedGemmBackend::cutlass && !MOE_WITH_CUTLASS)
        MOE_FAIL("grouped GEMM backend '", name, "': ", kNoCutlass);
      return b;
    }
    names += std::string(names.empty() ? "" : ", ") + grouped_gemm_backend_name(b);
  }
  MOE_FAIL("unknown grouped GEMM backend '", name,
           "' (--moe-grouped-gemm-backend); one of: ", names);
}

int64_t grouped_gemm_row_multiple(GroupedGemmBackend backend, Device device, DType dtype,
                                  int64_t num_local_experts) {
  const bool allowed =
      backend == GroupedGemmBackend::automatic || backend == GroupedGemmBackend::chunked_batched;
  const bool half = dtype == DType::bf16 || dtype == DType::f16;
  return device.is_cuda() && half && allowed && num_local_experts >= 16 ? kGroupedGemmChunkRows : 1;
}

void grouped_gemm(const Tensor& x, const Tensor& w, bool trans_w, const Tensor& tokens_per_expert,
                  Tensor& y, std::span<const int64_t> host_tokens_per_expert,
                  GroupedGemmBackend backend) {
  check_dim(x, 2, kForward, "x");
  check_dim(w, 3, kForward, "w");
  check_dim(y, 2, kForward, "y");
  check_float_dtype(x, kForward, "x");
  check_dtype(w, x.dtype(), kForward, "w");
  check_dtype(y, x.dtype(), kForward, "y");
  check_same_device(x, w, kForward);
  check_same_device(x, y, kForward);
  const int64_t experts = w.size(0), rows = x.size(0), k = x.size(1);
  const int64_t n = trans_w ? w.size(1) : w.size(2);
  const int64_t w_k = trans_w ? w.size(2) : w.size(1);
  MOE_CHECK(w_k == k, kForward, ": w ", shape_str(w.shape()), " (trans_w=", trans_w,
            ") does not match x ", shape_str(x.shape()), ": expected w ",
            trans_w ? "[E, N, " : "[E, ", k, trans_w ? "]" : ", N]");
  check_shape(y, {rows, n}, kForward, "y");
  check_counts_tensor(tokens_per_expert, experts, x, kForward);
  if (runs_on_cutlass(backend, x, w, y, false)) {
    MOE_CUDA_ONLY(return grouped_gemm_cutlass(x, w, trans_w, tokens_per_expert, y);)
  }
  const std::vector<int64_t> counts =
      host_counts(tokens_per_expert, host_tokens_per_expert, rows, kForward);
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(return grouped_gemm_cuda(x, w, trans_w, counts, y, backend);)
  }
  grouped_gemm_cpu(x, w, trans_w, counts, y);
}

void grouped_gemm_wgrad(const Tensor& dy, const Tensor& x, const Tensor& tokens_per_expert,
                        Tensor& dw, bool accumulate,
                        std::span<const int64_t> host_tokens_per_expert,
                        GroupedGemmBackend backend) {
  check_dim(dy, 2, kWgrad, "dy");
  check_dim(x, 2, kWgrad, "x");
  check_dim(dw, 3, kWgrad, "dw");
  check_float_dtype(x, kWgrad, "x");
  check_dtype(dy, x.dtype(), kWgrad, "dy");
  MOE_CHECK(dw.dtype() == x.dtype() || (is_half(x.dtype()) && dw.dtype() == DType::f32), kWgrad,
            ": dw must be ", x.dtype(), (is_half(x.dtype()) ? " or f32" : ""), " for ", x.dtype(),
            " inputs, got ", dw.dtype());
  check_same_device(x, dy, kWgrad);
  check_same_device(x, dw, kWgrad);
  const int64_t rows = x.size(0);
  MOE_CHECK(dy.size(0) == rows, kWgrad, ": dy ", shape_str(dy.shape()), " and x ",
            shape_str(x.shape()), " have different row counts");
  const int64_t experts = dw.size(0);
  check_shape(dw, {experts, dy.size(1), x.size(1)}, kWgrad, "dw");
  check_counts_tensor(tokens_per_expert, experts, x, kWgrad);
  if (runs_on_cutlass(backend, dy, x, dw, accumulate)) {
    MOE_CUDA_ONLY(return grouped_gemm_wgrad_cutlass(dy, x, tokens_per_expert, dw, accumulate);)
  }
  const std::vector<int64_t> counts =
      host_counts(tokens_per_expert, host_tokens_per_expert, rows, kWgrad);
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(return grouped_gemm_wgrad_cuda(dy, x, counts, dw, accumulate, backend);)
  }
  grouped_gemm_wgrad_cpu(dy, x, counts, dw, accumulate);
}

}  // namespace moe::ops
