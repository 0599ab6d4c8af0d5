// CUDA grouped GEMM: the experts' products through cuBLAS, by one of two backends
// (GroupedGemmBackend in grouped_gemm.h says which runs when):
//   per_expert_lt    one cached cuBLASLt matmul (gemm_cuda.cu) per expert with rows;
//   grouped_batched  one cublasGemmGroupedBatchedEx_64 call; experts with equal row counts form
//                    one group. Its A/B/C pointer arrays must be in device memory: they go in
//                    one caching-allocator tensor, filled by one H2D copy from a pageable host
//                    vector (cudaMemcpyAsync from pageable memory returns once the bytes are
//                    staged, so the vector may die right after; the tensor's block is only
//                    reused by later work on the same stream, which runs after this GEMM).
// Both skip experts without rows; wgrad zeroes their gradients unless accumulating, and the
// forward zeroes y's rows past sum(counts). No host synchronisation here: the counts arrive
// on the host (read_counts_cuda is the one documented sync).
//
// Column-major view (gemm_cuda.cu explains the swap): with n_e rows for expert e,
//   forward  y_e [n_e, N] = x_e op(w_e):   C^T [N, n_e] = op(w_e)^T x_e^T
//            cuBLAS (m, n, k) = (N, n_e, K), A = w_e (op T if trans_w, lda = w_e's row length),
//            B = x_e (op N, ldb = K), C = y_e (ldc = N)
//   wgrad    dw_e [N, K] = dy_e^T x_e:     C^T [K, N] = x_e^T dy_e
//            cuBLAS (m, n, k) = (K, N, n_e), A = x_e (op N, lda = K),
//            B = dy_e (op T, ldb = N), C = dw_e (ldc = K)
#include <algorithm>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "moe/core/cuda_utils.h"
#include "moe/ops/cublas_handle.h"
#include "moe/ops/gemm_cuda.h"
#include "moe/ops/grouped_gemm.h"
#include "moe/ops/grouped_gemm_cuda.h"

namespace moe::ops {
namespace {

// Page-locked host memory for reading the counts (a D2H copy into pinned memory is a plain
// DMA; into pageable memory it is staged through a driver buffer). Per thread, grown as needed;
// every use is followed by a stream synchronisation, so reuse never races a pending copy.
struct PinnedBuffer {
  void* data = nullptr;
  size_t bytes = 0;
  ~PinnedBuffer() {
    if (data) (void)cudaFreeHost(data);
  }
  void* get(size_t needed) {
    if (needed > bytes) {
      if (data) MOE_CUDA_CHECK(cudaFreeHost(data));
      data = nullptr;
      bytes = 0;
      const size_t size = std::max<size_t>(needed, 4096);
      MOE_CUDA_CHECK(cudaHostAlloc(&data, size, cudaHostAllocPortable));
      bytes = size;
    }
    return data;
  }
};
thread_local PinnedBuffer tls_pinned_counts;

// Experts with rows and their row total.
struct Activity {
  int64_t experts = 0;
  int64_t rows = 0;
};
Activity activity(std::span<const int64_t> counts) {
  Activity a;
  for (int64_t n : counts) {
    if (n > 0) {
      ++a.experts;
      a.rows += n;
    }
  }
  return a;
}

// The rule documented at GroupedGemmBackend in grouped_gemm.h (measured on an H200,
// docs/perf.md: cuBLAS's grouped GEMM was slower than per-expert cuBLASLt at every MoE shape).
constexpr int64_t kThreadedMinExperts = 16;
constexpr int64_t kThreadedMaxMeanRows = 1024;

bool chunkable(std::span<const int64_t> counts) {
  for (int64_t n : counts)
    if (n % kGroupedGemmChunkRows != 0) return false;
  return true;
}

GroupedGemmBackend choose_backend(GroupedGemmBackend backend, std::span<const int64_t> counts,
                                  DType a_dtype, DType c_dtype) {
  // cutlass calls reach this file only when they do not qualify for it (grouped_gemm_cutlass.h).
  if (backend == GroupedGemmBackend::cutlass) backend = GroupedGemmBackend::per_expert_lt;
  if (backend == GroupedGemmBackend::automatic) {
    const Activity a = activity(counts);
    if (a.experts < kThreadedMinExperts) {
      backend = GroupedGemmBackend::per_expert_lt;
    } else if (chunkable(counts)) {
      backend = GroupedGemmBackend::chunked_batched;
    } else {
      backend = a.rows <= kThreadedMaxMeanRows * a.experts ? GroupedGemmBackend::per_expert_threads
                                                           : GroupedGemmBackend::per_expert_lt;
    }
  }
  // Chunks need whole multiples of the chunk rows; otherwise (and for wgrad, which the caller
  // never routes here) the launch threads.
  if (backend == GroupedGemmBackend::chunked_batched && !chunkable(counts))
    backend = GroupedGemmBackend::per_expert_threads;
  // cuBLAS's grouped GEMM has no bf16/f16 -> f32 form.
  if (backend == GroupedGemmBackend::grouped_batched && a_dtype != c_dtype)
    backend = GroupedGemmBackend::per_expert_lt;
  return backend;
}

// Side streams of the calling thread for one device, with the events that fork them from and
// join them into the caller's stream. Created on first use, destroyed at thread exit.
constexpr int kSideStreams = 4;
struct SideStreams {
  int device = -1;
  cudaStream_t streams[kSideStreams] = {};
  cudaEvent_t done[kSideStreams] = {};
  cudaEvent_t fork = nullptr;
  ~SideStreams() {
    if (device < 0) return;
    (void)cudaSetDevice(device);
    for (int i = 0; i < kSideStreams; ++i) {
      (void)cudaStreamSynchronize(streams[i]);
      (void)cudaStreamDestroy(streams[i]);
      (void)cudaEventDestroy(done[i]);
    }
    (void)cudaEventDestroy(fork);
  }
};
thread_local std::map<int, SideStreams> tls_side_streams;

SideStreams& side_streams(int device) {
  SideStreams& s = tls_side_streams[device];
  if (s.device < 0) {
    for (int i = 0; i < kSideStreams; ++i) {
      MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&s.streams[i], cudaStreamNonBlocking));
      MOE_CUDA_CHECK(cudaEventCreateWithFlags(&s.done[i], cudaEventDisableTiming));
    }
    MOE_CUDA_CHECK(cudaEventCreateWithFlags(&s.fork, cudaEventDisableTiming));
    s.device = device;
  }
  return s;
}

// Host threads that issue GEMM launches in parallel (per_expert_threads). Each worker runs
// its share of the problems on its own current stream, after waiting on the caller's fork
// event, and records a done event the caller's stream then waits on. One grouped GEMM uses
// the pool at a time (callers queue on `use`).
constexpr int kLaunchThreads = 8;
class LaunchPool {
 public:
  static LaunchPool& instance() {
    static auto* pool = new LaunchPool();  // leaked: workers outlive static destruction
    return *pool;
  }
  std::mutex use;

  // Runs work(worker) on every worker and returns when all have finished issuing.
  void run(const std::function<void(int worker)>& work) {
    std::unique_lock lock(mutex_);
    work_ = &work;
    pending_ = kLaunchThreads;
    ++generation_;
    wake_.notify_all();
    done_.wait(lock, [&] { return pending_ == 0; });
    work_ = nullptr;
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  LaunchPool() {
    for (int i = 0; i < kLaunchThreads; ++i) std::thread([this, i] { loop(i); }).detach();
  }
  void loop(int worker) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* work;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        work = work_;
      }
      std::exception_ptr error;
      try {
        (*work)(worker);
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard lock(mutex_);
      if (error && !error_) error_ = error;
      if (--pending_ == 0) done_.notify_all();
    }
  }
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* work_ = nullptr;
  int pending_ = 0;
  uint64_t generation_ = 0;
  std::exception_ptr error_;
};

// One expert's product in cuBLAS's column-major terms (see the file comment).
struct Problem {
  int64_t m, n, k, lda, ldb, ldc;
  const void* a;
  const void* b;
  void* c;
};

// Runs `problems` (all with the same transposes, dtypes and beta) as one grouped call. Problems
// with equal (m, n, k) share a group.
void run_grouped_batched(const std::vector<Problem>& problems, cublasOperation_t trans_a,
                         cublasOperation_t trans_b, DType a_dtype, DType c_dtype, double beta,
                         int device, cudaStream_t stream) {
  if (problems.empty()) return;
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::vector<size_t>> groups;
  for (size_t i = 0; i < problems.size(); ++i)
    groups[{problems[i].m, problems[i].n, problems[i].k}].push_back(i);

  const size_t group_count = groups.size(), total = problems.size();
  std::vector<cublasOperation_t> trans_a_array(group_count, trans_a),
      trans_b_array(group_count, trans_b);
  std::vector<int64_t> m(group_count), n(group_count), k(group_count), lda(group_count),
      ldb(group_count), ldc(group_count), group_size(group_count);
  // Pointer table, in group order: A pointers, then B, then C.
  std::vector<const void*> pointers(3 * total);
  size_t g = 0, slot = 0;
  for (const auto& [shape, members] : groups) {
    const Problem& first = problems[members.front()];
    m[g] = first.m;
    n[g] = first.n;
    k[g] = first.k;
    lda[g] = first.lda;  // leading dimensions follow from (m, n, k) and the transposes
    ldb[g] = first.ldb;
    ldc[g] = first.ldc;
    group_size[g] = static_cast<int64_t>(members.size());
    for (size_t i : members) {
      pointers[slot] = problems[i].a;
      pointers[total + slot] = problems[i].b;
      pointers[2 * total + slot] = problems[i].c;
      ++slot;
    }
    ++g;
  }

  Tensor device_pointers =
      Tensor::empty({static_cast<int64_t>(3 * total)}, DType::i64, Device::cuda(device));
  static_assert(sizeof(const void*) == sizeof(int64_t));
  MOE_CUDA_CHECK(cudaMemcpyAsync(device_pointers.raw(), pointers.data(),
                                 pointers.size() * sizeof(const void*), cudaMemcpyHostToDevice,
                                 stream));
  auto* table = static_cast<void**>(device_pointers.raw());

  const bool f64 = a_dtype == DType::f64;
  std::vector<double> alpha_d(group_count, 1.0), beta_d(group_count, beta);
  std::vector<float> alpha_f(group_count, 1.0f), beta_f(group_count, static_cast<float>(beta));
  const void* alpha = f64 ? static_cast<const void*>(alpha_d.data()) : alpha_f.data();
  const void* beta_array = f64 ? static_cast<const void*>(beta_d.data()) : beta_f.data();
  const cudaDataType_t ab_type = cuda::blas_dtype(a_dtype, "grouped_gemm"),
                       c_type = cuda::blas_dtype(c_dtype, "grouped_gemm");

  cublasHandle_t handle = cuda::cublas_handle(device, stream);
  MOE_CUBLAS_CHECK(cublasGemmGroupedBatchedEx_64(
      handle, trans_a_array.data(), trans_b_array.data(), m.data(), n.data(), k.data(), alpha,
      const_cast<const void* const*>(table), ab_type, lda.data(),
      const_cast<const void* const*>(table + total), ab_type, ldb.data(), beta_array,
      table + 2 * total, c_type, ldc.data(), static_cast<int64_t>(group_count), group_size.data(),
      f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F));
}

// LtMatmul's row-major shape and flags for a problem given in cuBLAS's column-major terms
// (operands are filled by the caller: row-major A is column-major B and vice versa).
LtMatmul row_major_args(const Problem& p, bool cm_trans_a, bool cm_trans_b, DType a_dtype,
                        DType c_dtype, double beta) {
  LtMatmul args;
  args.a_dtype = a_dtype;
  args.c_dtype = c_dtype;
  args.trans_a = cm_trans_b;
  args.trans_b = cm_trans_a;
  args.m = p.n;
  args.n = p.m;
  args.k = p.k;
  args.alpha = 1.0;
  args.beta = beta;
  return args;
}

// Runs `problems` one cuBLASLt matmul each. Problem fields are in column-major terms, so
// cuBLAS's A (our row-major second operand) and B (our first) swap back into LtMatmul's
// row-major convention.
void run_per_expert(const std::vector<Problem>& problems, bool cm_trans_a, bool cm_trans_b,
                    DType a_dtype, DType c_dtype, double beta, int device, cudaStream_t stream,
                    bool spread_over_streams) {
  SideStreams* side = nullptr;
  int used = 0;
  if (spread_over_streams && problems.size() > 1) {
    side = &side_streams(device);
    used = static_cast<int>(std::min<size_t>(problems.size(), kSideStreams));
    MOE_CUDA_CHECK(cudaEventRecord(side->fork, stream));
    for (int i = 0; i < used; ++i)
      MOE_CUDA_CHECK(cudaStreamWaitEvent(side->streams[i], side->fork));
  }
  for (size_t i = 0; i < problems.size(); ++i) {
    const Problem& p = problems[i];
    const cudaStream_t run_on = side ? side->streams[i % used] : stream;
    LtMatmul args = row_major_args(p, cm_trans_a, cm_trans_b, a_dtype, c_dtype, beta);
    args.a = p.b;  // row-major A is column-major B
    args.b = p.a;
    args.c = p.c;
    lt_matmul(args, device, reinterpret_cast<StreamHandle>(run_on));
  }
  if (side) {
    for (int i = 0; i < used; ++i) {
      MOE_CUDA_CHECK(cudaEventRecord(side->done[i], side->streams[i]));
      MOE_CUDA_CHECK(cudaStreamWaitEvent(stream, side->done[i]));
    }
  }
}

// chunked_batched (forward / dgrad): every expert's rows in chunks of kGroupedGemmChunkRows,
// all chunks of all experts in one cuBLASLt call batched through device pointer arrays.
// y_chunk [C, N] = x_chunk [C, K] op(w_e), w_e [N, K] (trans_w) or [K, N].
void run_chunked(const Tensor& x, const Tensor& w, bool trans_w, std::span<const int64_t> counts,
                 Tensor& y, int device, cudaStream_t stream) {
  const int64_t k = x.size(1), n = y.size(1), C = kGroupedGemmChunkRows;
  const size_t elem = dtype_size(x.dtype());
  std::vector<const void*> a, b, c;  // row-major operands: x chunks, weights, y chunks
  uint32_t alignment = 256;
  auto note = [&](const void* p) {
    const auto address = reinterpret_cast<uintptr_t>(p);
    if (address % alignment != 0) alignment = address % 16 == 0 ? 16 : static_cast<uint32_t>(elem);
  };
  int64_t start = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const char* weight = static_cast<const char*>(w.raw()) + static_cast<size_t>(e) * n * k * elem;
    for (int64_t row = start; row < start + counts[e]; row += C) {
      a.push_back(static_cast<const char*>(x.raw()) + static_cast<size_t>(row * k) * elem);
      b.push_back(weight);
      c.push_back(static_cast<char*>(y.raw()) + static_cast<size_t>(row * n) * elem);
      note(a.back());
      note(b.back());
      note(c.back());
    }
    start += counts[e];
  }
  const size_t chunks = a.size();
  if (chunks == 0) return;
  std::vector<const void*> table;
  table.reserve(3 * chunks);
  table.insert(table.end(), a.begin(), a.end());
  table.insert(table.end(), b.begin(), b.end());
  table.insert(table.end(), c.begin(), c.end());
  Tensor device_table = Tensor::empty({static_cast<int64_t>(3 * chunks)}, DType::i64, y.device());
  // From pageable memory: returns once the bytes are staged, so `table` may die after it.
  MOE_CUDA_CHECK(cudaMemcpyAsync(device_table.raw(), table.data(), table.size() * sizeof(void*),
                                 cudaMemcpyHostToDevice, stream));
  auto* pointers = static_cast<void**>(device_table.raw());
  LtMatmul args;
  args.a_dtype = x.dtype();
  args.c_dtype = y.dtype();
  args.trans_a = false;
  args.trans_b = trans_w;
  args.m = C;
  args.n = n;
  args.k = k;
  args.a = pointers;
  args.b = pointers + chunks;
  args.c = pointers + 2 * chunks;
  args.batch = static_cast<int64_t>(chunks);
  args.pointer_array = true;
  args.pointer_alignment = alignment;
  lt_matmul(args, device, reinterpret_cast<StreamHandle>(stream));
}

// chunked_batched for wgrad: with row counts in whole chunks, experts take few distinct
// shapes; the experts of each shape run as one cuBLASLt call batched through pointer arrays.
void run_batched_by_shape(const std::vector<Problem>& problems, bool cm_trans_a, bool cm_trans_b,
                          DType a_dtype, DType c_dtype, double beta, int device,
                          cudaStream_t stream) {
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::vector<size_t>> groups;
  for (size_t i = 0; i < problems.size(); ++i)
    groups[{problems[i].m, problems[i].n, problems[i].k}].push_back(i);
  std::vector<const void*> table;
  table.reserve(3 * problems.size());
  for (const auto& [shape, members] : groups)
    for (int operand = 0; operand < 3; ++operand)
      for (size_t i : members)
        table.push_back(operand == 0   ? problems[i].b
                        : operand == 1 ? problems[i].a
                                       : problems[i].c);
  Tensor device_table =
      Tensor::empty({static_cast<int64_t>(table.size())}, DType::i64, Device::cuda(device));
  MOE_CUDA_CHECK(cudaMemcpyAsync(device_table.raw(), table.data(), table.size() * sizeof(void*),
                                 cudaMemcpyHostToDevice, stream));
  auto* pointers = static_cast<void**>(device_table.raw());
  size_t offset = 0;
  for (const auto& [shape, members] : groups) {
    uint32_t alignment = 256;
    for (size_t i : members)
      for (const void* p :
           {problems[i].a, problems[i].b, static_cast<const void*>(problems[i].c)}) {
        const auto address = reinterpret_cast<uintptr_t>(p);
        if (address % alignment != 0)
          alignment = address % 16 == 0 ? 16 : static_cast<uint32_t>(dtype_size(a_dtype));
      }
    const size_t count = members.size();
    LtMatmul args =
        row_major_args(problems[members.front()], cm_trans_a, cm_trans_b, a_dtype, c_dtype, beta);
    args.a = pointers + offset;  // the table lists cuBLAS's second operand first
    args.b = pointers + offset + count;
    args.c = pointers + offset + 2 * count;
    args.batch = static_cast<int64_t>(count);
    args.pointer_array = true;
    args.pointer_alignment = alignment;
    lt_matmul(args, device, reinterpret_cast<StreamHandle>(stream));
    offset += 3 * count;
  }
}

// per_expert_threads: the problems dealt round-robin to the launch threads.
void run_per_expert_threaded(const std::vector<Problem>& problems, bool cm_trans_a, bool cm_trans_b,
                             DType a_dtype, DType c_dtype, double beta, int device,
                             cudaStream_t stream) {
  LaunchPool& pool = LaunchPool::instance();
  std::lock_guard use(pool.use);
  cudaEvent_t fork;
  MOE_CUDA_CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  MOE_CUDA_CHECK(cudaEventRecord(fork, stream));
  std::vector<cudaEvent_t> done(kLaunchThreads);
  for (cudaEvent_t& e : done) MOE_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  pool.run([&](int worker) {
    MOE_CUDA_CHECK(cudaSetDevice(device));
    const auto own = reinterpret_cast<cudaStream_t>(current_stream(device));
    MOE_CUDA_CHECK(cudaStreamWaitEvent(own, fork));
    std::vector<Problem> mine;
    for (size_t i = static_cast<size_t>(worker); i < problems.size(); i += kLaunchThreads)
      mine.push_back(problems[i]);
    run_per_expert(mine, cm_trans_a, cm_trans_b, a_dtype, c_dtype, beta, device, own, false);
    MOE_CUDA_CHECK(cudaEventRecord(done[worker], own));
  });
  for (cudaEvent_t e : done) {
    MOE_CUDA_CHECK(cudaStreamWaitEvent(stream, e));
    MOE_CUDA_CHECK(cudaEventDestroy(e));  // released once the wait is satisfied
  }
  MOE_CUDA_CHECK(cudaEventDestroy(fork));
}

void run(GroupedGemmBackend chosen, const std::vector<Problem>& problems,
         std::span<const int64_t> counts, bool cm_trans_a, bool cm_trans_b, DType a_dtype,
         DType c_dtype, double beta, int device, cudaStream_t stream) {
  const GroupedGemmBackend backend = choose_backend(chosen, counts, a_dtype, c_dtype);
  if (backend == GroupedGemmBackend::chunked_batched) {  // reached by wgrad
    run_batched_by_shape(problems, cm_trans_a, cm_trans_b, a_dtype, c_dtype, beta, device, stream);
  } else if (backend == GroupedGemmBackend::per_expert_threads && problems.size() > 1) {
    run_per_expert_threaded(problems, cm_trans_a, cm_trans_b, a_dtype, c_dtype, beta, device,
                            stream);
  } else if (backend == GroupedGemmBackend::grouped_batched) {
    run_grouped_batched(problems, cm_trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                        cm_trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, a_dtype, c_dtype, beta, device,
                        stream);
  } else {
    run_per_expert(problems, cm_trans_a, cm_trans_b, a_dtype, c_dtype, beta, device, stream,
                   backend == GroupedGemmBackend::per_expert_streams);
  }
}

const char* byte_ptr(const Tensor& t) {
  return static_cast<const char*>(t.raw());
}
char* byte_ptr(Tensor& t) {
  return static_cast<char*>(t.raw());
}

}  // namespace

std::vector<int64_t> read_counts_cuda(const Tensor& tokens_per_expert) {
  const int64_t experts = tokens_per_expert.numel();
  std::vector<int64_t> counts(static_cast<size_t>(experts));
  if (experts == 0) return counts;
  const cudaStream_t stream = cuda::stream_of(tokens_per_expert);
  void* host = tls_pinned_counts.get(tokens_per_expert.nbytes());
  MOE_CUDA_CHECK(cudaMemcpyAsync(host, tokens_per_expert.raw(), tokens_per_expert.nbytes(),
                                 cudaMemcpyDeviceToHost, stream));
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  dispatch<DType::i64, DType::i32>(tokens_per_expert.dtype(), "grouped_gemm", [&]<class I>() {
    const I* p = static_cast<const I*>(host);
    for (int64_t e = 0; e < experts; ++e)
      counts[static_cast<size_t>(e)] = static_cast<int64_t>(p[e]);
  });
  return counts;
}

void grouped_gemm_cuda(const Tensor& x, const Tensor& w, bool trans_w,
                       std::span<const int64_t> counts, Tensor& y, GroupedGemmBackend backend) {
  const int64_t rows = x.size(0), k = x.size(1), n = y.size(1);
  if (y.numel() == 0) return;
  const cudaStream_t stream = cuda::stream_of(y);  // also makes y's device current
  const int device = y.device().index;
  if (k == 0) {  // empty inner dimension: every product row is zero, like the padding
    MOE_CUDA_CHECK(cudaMemsetAsync(y.raw(), 0, y.nbytes(), stream));
    return;
  }
  const size_t elem = dtype_size(x.dtype());
  std::vector<Problem> problems;
  problems.reserve(counts.size());
  int64_t start = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t rows_e = counts[e];
    if (rows_e > 0) {
      Problem p;
      p.m = n;
      p.n = rows_e;
      p.k = k;
      p.lda = trans_w ? k : n;
      p.ldb = k;
      p.ldc = n;
      p.a = byte_ptr(w) + static_cast<size_t>(static_cast<int64_t>(e) * n * k) * elem;
      p.b = byte_ptr(x) + static_cast<size_t>(start * k) * elem;
      p.c = byte_ptr(y) + static_cast<size_t>(start * n) * elem;
      problems.push_back(p);
    }
    start += rows_e;
  }
  if (choose_backend(backend, counts, x.dtype(), y.dtype()) ==
      GroupedGemmBackend::chunked_batched) {
    run_chunked(x, w, trans_w, counts, y, device, stream);
  } else {
    run(backend, problems, counts, /*cm_trans_a=*/trans_w, /*cm_trans_b=*/false, x.dtype(),
        y.dtype(),
        /*beta=*/0.0, device, stream);
  }
  if (start < rows) {
    MOE_CUDA_CHECK(cudaMemsetAsync(byte_ptr(y) + static_cast<size_t>(start * n) * elem, 0,
                                   static_cast<size_t>((rows - start) * n) * elem, stream));
  }
}

void grouped_gemm_wgrad_cuda(const Tensor& dy, const Tensor& x, std::span<const int64_t> counts,
                             Tensor& dw, bool accumulate, GroupedGemmBackend backend) {
  const int64_t n = dy.size(1), k = x.size(1);
  if (dw.numel() == 0) return;
  const cudaStream_t stream = cuda::stream_of(dw);  // also makes dw's device current
  const int device = dw.device().index;
  const size_t elem = dtype_size(x.dtype()), dw_elem = dtype_size(dw.dtype());
  const size_t expert_bytes = static_cast<size_t>(n * k) * dw_elem;
  std::vector<Problem> problems;
  problems.reserve(counts.size());
  int64_t start = 0;
  size_t e = 0;
  while (e < counts.size()) {
    if (counts[e] == 0) {
      // A run of experts without rows: one memset for the run (unless accumulating, where
      // "+= 0" leaves them as they are).
      size_t end = e;
      while (end < counts.size() && counts[end] == 0) ++end;
      if (!accumulate) {
        MOE_CUDA_CHECK(
            cudaMemsetAsync(byte_ptr(dw) + e * expert_bytes, 0, (end - e) * expert_bytes, stream));
      }
      e = end;
      continue;
    }
    Problem p;
    p.m = k;
    p.n = n;
    p.k = counts[e];
    p.lda = k;
    p.ldb = n;
    p.ldc = k;
    p.a = byte_ptr(x) + static_cast<size_t>(start * k) * elem;
    p.b = byte_ptr(dy) + static_cast<size_t>(start * n) * elem;
    p.c = byte_ptr(dw) + e * expert_bytes;
    problems.push_back(p);
    start += counts[e];
    ++e;
  }
  run(backend, problems, counts, /*cm_trans_a=*/false, /*cm_trans_b=*/true, x.dtype(), dw.dtype(),
      accumulate ? 1.0 : 0.0, device, stream);
}

}  // namespace moe::ops
