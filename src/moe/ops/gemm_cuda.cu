// CUDA gemm through cuBLASLt, with the matmul descriptors and the heuristic's algorithm cached
// per shape.
//
// Row-major to column-major: cuBLASLt is column-major, and a row-major [r, c] matrix is the
// column-major [c, r] matrix with leading dimension c. So the row-major C = op(A) op(B) is the
// column-major C^T = op(B)^T op(A)^T: we pass B as cuBLAS's first operand and A as its second,
// with m and n swapped, and every operand keeps its own transpose flag.
//
// Precision: bf16/f16 inputs run with CUBLAS_COMPUTE_32F (fp32 accumulation, fp32 alpha/beta);
// f32 runs with CUBLAS_COMPUTE_32F, which never uses TF32 (the router needs true fp32); f64
// with CUBLAS_COMPUTE_64F.
//
// Cost per call once a shape is cached: one hash lookup and one cublasLtMatmul. A new shape
// costs one cublasLtMatmulAlgoGetHeuristic query (tens of microseconds). The cache key holds
// the pointers' alignment classes, because the heuristic only returns algorithms valid for the
// alignment it is told (default 256 B): the grouped GEMM passes row segments of x and y whose
// addresses may be only element-aligned.
#include <cublasLt.h>

#include <list>
#include <memory>
#include <unordered_map>
#include <utility>

#include "moe/core/cuda_utils.h"
#include "moe/ops/cublas_handle.h"
#include "moe/ops/gemm_cuda.h"

namespace moe::ops {
namespace {

// The alignment we promise cuBLASLt for a buffer: 256 B (its default), 16 B (what vectorised
// and TMA loads need), or just the element size. Promising less than the address has is always
// safe (an algorithm for a weaker alignment runs on a stronger one); three classes instead of
// every power of two keep the plan cache small when row segments start anywhere.
uint32_t alignment_class(const void* p, DType dtype) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  if (address % 256 == 0) return 256;
  if (address % 16 == 0) return 16;
  return static_cast<uint32_t>(dtype_size(dtype));
}

struct PlanKey {
  int device;
  DType a_dtype, c_dtype;
  bool trans_a, trans_b;
  int64_t m, n, k;
  uint32_t align_a, align_b, align_c;
  int64_t batch = 0;  // > 0: batched through device arrays of pointers
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(static_cast<uint64_t>(key.device));
    mix(static_cast<uint64_t>(key.a_dtype) | (static_cast<uint64_t>(key.c_dtype) << 8) |
        (static_cast<uint64_t>(key.trans_a) << 16) | (static_cast<uint64_t>(key.trans_b) << 17));
    mix(static_cast<uint64_t>(key.m));
    mix(static_cast<uint64_t>(key.n));
    mix(static_cast<uint64_t>(key.k));
    mix(key.align_a | (static_cast<uint64_t>(key.align_b) << 16) |
        (static_cast<uint64_t>(key.align_c) << 32));
    mix(static_cast<uint64_t>(key.batch));
    return static_cast<size_t>(h);
  }
};

// Descriptors and the chosen algorithm for one key. In cuBLAS's column-major terms:
// operand "A" is our B, operand "B" is our A, and C/D (one layout, in place) is our C^T.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr, layout_b = nullptr, layout_c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool f64 = false;  // scale type double (else float)

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (layout_c) (void)cublasLtMatrixLayoutDestroy(layout_c);
    if (layout_b) (void)cublasLtMatrixLayoutDestroy(layout_b);
    if (layout_a) (void)cublasLtMatrixLayoutDestroy(layout_a);
    if (desc) (void)cublasLtMatmulDescDestroy(desc);
  }
};

struct Preference {
  cublasLtMatmulPreference_t pref = nullptr;
  Preference() { MOE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref)); }
  ~Preference() { (void)cublasLtMatmulPreferenceDestroy(pref); }
  Preference(const Preference&) = delete;
  Preference& operator=(const Preference&) = delete;
  template <class V>
  void set(cublasLtMatmulPreferenceAttributes_t attribute, V value) {
    MOE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attribute, &value, sizeof(value)));
  }
};

std::unique_ptr<Plan> make_plan(const PlanKey& key, cublasLtHandle_t handle) {
  auto plan = std::make_unique<Plan>();
  plan->f64 = key.a_dtype == DType::f64;
  const cublasComputeType_t compute = plan->f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
  const cudaDataType_t scale = plan->f64 ? CUDA_R_64F : CUDA_R_32F;
  MOE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, compute, scale));
  // Column-major operand 1 is our B, operand 2 our A (header comment).
  const cublasOperation_t op1 = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op2 = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  MOE_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op1, sizeof(op1)));
  MOE_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op2, sizeof(op2)));
  // A row-major [r, c] buffer is column-major (rows c, cols r, ld c).
  const uint64_t b_rows = static_cast<uint64_t>(key.trans_b ? key.k : key.n);  // B's row length
  const uint64_t b_cols = static_cast<uint64_t>(key.trans_b ? key.n : key.k);
  const uint64_t a_rows = static_cast<uint64_t>(key.trans_a ? key.m : key.k);  // A's row length
  const uint64_t a_cols = static_cast<uint64_t>(key.trans_a ? key.k : key.m);
  const cudaDataType_t ab_type = cuda::blas_dtype(key.a_dtype, "gemm");
  const cudaDataType_t c_type = cuda::blas_dtype(key.c_dtype, "gemm");
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->layout_a, ab_type, b_rows, b_cols,
                                              static_cast<int64_t>(b_rows)));
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->layout_b, ab_type, a_rows, a_cols,
                                              static_cast<int64_t>(a_rows)));
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->layout_c, c_type, static_cast<uint64_t>(key.n),
                                              static_cast<uint64_t>(key.m), key.n));
  if (key.batch > 0) {  // matrices found through device arrays of pointers
    const int32_t count = static_cast<int32_t>(key.batch);
    const auto mode = static_cast<int32_t>(CUBLASLT_BATCH_MODE_POINTER_ARRAY);
    for (cublasLtMatrixLayout_t layout : {plan->layout_a, plan->layout_b, plan->layout_c}) {
      MOE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                        &count, sizeof(count)));
      MOE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_MODE,
                                                        &mode, sizeof(mode)));
    }
  }

  Preference pref;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
           static_cast<uint64_t>(cuda::kBlasWorkspaceBytes));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b);  // operand 1 is our B
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c);

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->layout_a, plan->layout_b,
                                     plan->layout_c, plan->layout_c, pref.pref, 1, &result, &found);
  MOE_CHECK(status == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS,
            "gemm: cuBLASLt has no algorithm for ", key.a_dtype, " -> ", key.c_dtype, " M=", key.m,
            " N=", key.n, " K=", key.k, " batch=", key.batch, " trans_a=", key.trans_a,
            " trans_b=", key.trans_b, " (alignments ", key.align_a, "/", key.align_b, "/",
            key.align_c, " B; heuristic status ", cublasGetStatusName(status), ")");
  plan->algo = result.algo;
  return plan;
}

// Plans by key, least recently used evicted past kMaxPlans. Per thread (handles are per
// thread). MoE row counts change every step, so the shapes seen keep growing slowly; a Plan is
// well under 1 KiB of host memory, and the bound keeps a long run's cache in check without
// throwing away the hot shapes.
class PlanCache {
 public:
  static constexpr size_t kMaxPlans = 16384;

  const Plan& get(const PlanKey& key, cublasLtHandle_t handle) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      order_.splice(order_.begin(), order_, it->second);  // now the most recent
      return *it->second->second;
    }
    std::unique_ptr<Plan> plan = make_plan(key, handle);  // may throw: nothing inserted yet
    if (index_.size() >= kMaxPlans) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
    order_.emplace_front(key, std::move(plan));
    index_.emplace(key, order_.begin());
    return *order_.front().second;
  }

 private:
  using Entry = std::pair<PlanKey, std::unique_ptr<Plan>>;
  std::list<Entry> order_;  // most recently used first
  std::unordered_map<PlanKey, std::list<Entry>::iterator, PlanKeyHash> index_;
};
thread_local PlanCache tls_plans;

template <class T, class S>
__global__ void scale_kernel(T* c, int64_t n, S beta) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<T, double>)
      c[i] *= beta;
    else
      cuda::store_float(&c[i], cuda::load_float(&c[i]) * beta);
  }
}

// C = beta * C (the K = 0 product); beta = 0 writes zeros, so NaNs in C do not survive.
void scale_cuda(Tensor& c, float beta, cudaStream_t stream) {
  if (c.numel() == 0 || beta == 1.0f) return;
  if (beta == 0.0f) {
    MOE_CUDA_CHECK(cudaMemsetAsync(c.raw(), 0, c.nbytes(), stream));
    return;
  }
  dispatch_float(c.dtype(), "gemm", [&]<class T>() {
    constexpr int kThreads = 256;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    scale_kernel<T, S><<<cuda::blocks_for(c.numel(), kThreads), kThreads, 0, stream>>>(
        c.data<T>(), c.numel(), static_cast<S>(beta));
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

bool lt_supports(DType a_dtype, DType c_dtype) {
  const bool half = a_dtype == DType::bf16 || a_dtype == DType::f16;
  const bool known = half || a_dtype == DType::f32 || a_dtype == DType::f64;
  return known && (c_dtype == a_dtype || (half && c_dtype == DType::f32));
}

void lt_matmul(const LtMatmul& args, int device, StreamHandle stream_handle) {
  MOE_CHECK(args.m > 0 && args.n > 0 && args.k > 0, "lt_matmul: empty product M=", args.m,
            " N=", args.n, " K=", args.k, " (callers handle zero sizes)");
  MOE_CHECK(lt_supports(args.a_dtype, args.c_dtype), "gemm: cuBLASLt does not run ", args.a_dtype,
            " inputs with ", args.c_dtype, " output");
  const auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  cublasLtHandle_t handle = cuda::cublaslt_handle(device);
  const PlanKey key{
      device,
      args.a_dtype,
      args.c_dtype,
      args.trans_a,
      args.trans_b,
      args.m,
      args.n,
      args.k,
      args.pointer_array ? args.pointer_alignment : alignment_class(args.a, args.a_dtype),
      args.pointer_array ? args.pointer_alignment : alignment_class(args.b, args.a_dtype),
      args.pointer_array ? args.pointer_alignment : alignment_class(args.c, args.c_dtype),
      args.pointer_array ? args.batch : 0};
  const Plan& plan = tls_plans.get(key, handle);
  const cuda::BlasWorkspace workspace = cuda::blas_workspace(device, stream);
  const float alpha_f = static_cast<float>(args.alpha), beta_f = static_cast<float>(args.beta);
  const void* alpha = plan.f64 ? static_cast<const void*>(&args.alpha) : &alpha_f;
  const void* beta = plan.f64 ? static_cast<const void*>(&args.beta) : &beta_f;
  MOE_CUBLAS_CHECK(cublasLtMatmul(handle, plan.desc, alpha, args.b, plan.layout_a, args.a,
                                  plan.layout_b, beta, args.c, plan.layout_c, args.c, plan.layout_c,
                                  &plan.algo, workspace.data, workspace.bytes, stream));
}

void gemm_cuda(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
               float beta) {
  const int64_t m = c.size(0), n = c.size(1);
  const int64_t k = trans_a ? a.size(0) : a.size(1);
  if (m == 0 || n == 0) return;
  const cudaStream_t stream = cuda::stream_of(c);  // also makes c's device current
  if (k == 0) {
    scale_cuda(c, beta, stream);
    return;
  }
  LtMatmul args;
  args.a_dtype = a.dtype();
  args.c_dtype = c.dtype();
  args.trans_a = trans_a;
  args.trans_b = trans_b;
  args.m = m;
  args.n = n;
  args.k = k;
  args.a = a.raw();
  args.b = b.raw();
  args.c = c.raw();
  args.alpha = alpha;
  args.beta = beta;
  lt_matmul(args, c.device().index, reinterpret_cast<StreamHandle>(stream));
}

}  // namespace moe::ops
