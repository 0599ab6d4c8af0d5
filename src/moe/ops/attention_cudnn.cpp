// The cudnn backend of attention (attention_cudnn.h): cuDNN's fused flash SDPA forward and
// backward as frontend graphs, one per problem, cached per thread. Plain C++ compiled by the host
// compiler (the frontend is a large header-only library; nvcc gains nothing on it).
//
// Layouts. cuDNN describes q, k, v, o as logical [B, H, S, D] tensors with arbitrary strides, so
// bshd and sbhd are the same graph with other strides (AttentionShape::strides), and no copy.
// The forward's "Stats" output is [B, Hq, Sq, 1] f32 and, per the frontend's documentation
// (SDPA_attributes::set_stats_use_log2), is in natural-log units: max_j s_ij + ln sum_j
// exp(s_ij - max) with s_ij = attn_scale * <q_i, k_j> -- exactly the op's lse, in the op's
// [B, Hq, Sq] f32 layout. So lse is passed through as it is, and a native forward can feed a cuDNN
// backward and the reverse (the tests mix them). GQA: k, v (and dk, dv) have Hkv heads; cuDNN
// maps query head h to kv head h / (Hq / Hkv), as the op does, and sums dk, dv over the group.
// Causal: the top-left-aligned diagonal band with right bound causal_offset, i.e. key j is kept
// for query row i when j - i <= right bound: the op's mask j <= i + causal_offset, for any Sq and
// Sk (the frontend's diagonal_band_mask, row = the Sq index, column = the Sk index); offset 0 is
// the plain decoder mask (right bound 0). The graph and its cache key carry Sq, Sk and the
// offset; a cuDNN without a kernel for the band (or for Sq != Sk) rejects the graph, and
// use_cudnn_attention applies the backend rule.
#if MOE_WITH_CUDA

#include "moe/ops/attention_cudnn.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <set>
#include <string>

#include "moe/core/error.h"
#include "moe/core/stream.h"
#include "moe/core/tensor.h"

#if MOE_WITH_CUDNN
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <array>
#include <map>
#include <memory>
#include <unordered_map>
#endif

namespace moe::ops::detail {
namespace {

// cuDNN's flash kernels take 16-bit inputs with head dims in multiples of 8 (16-byte rows) up
// to 256 on Hopper; beyond that the native kernels run.
constexpr int64_t kCudnnMaxHeadDim = 256;
constexpr int64_t kCudnnHeadDimMultiple = 8;
constexpr uintptr_t kCudnnAlignment = 16;

// The checks that need no cuDNN call; empty when they pass.
std::string static_rejection(const AttentionShape& s,
                             std::initializer_list<const Tensor*> tensors) {
  const Tensor& q = **tensors.begin();
  if (q.dtype() != DType::bf16)
    return std::string("cuDNN SDPA runs bf16 here, got ") + dtype_name(q.dtype());
  for (int64_t dim : {s.head_dim, s.v_head_dim})
    if (dim % kCudnnHeadDimMultiple != 0 || dim > kCudnnMaxHeadDim)
      return "cuDNN SDPA needs head dims that are multiples of 8 up to 256, got D = " +
             std::to_string(s.head_dim) + ", Dv = " + std::to_string(s.v_head_dim);
  for (const Tensor* t : tensors)
    if (reinterpret_cast<uintptr_t>(t->raw()) % kCudnnAlignment != 0)
      return "cuDNN SDPA needs 16-byte aligned tensors, got " + t->str() + " at an offset";
  return {};
}

// Logs `message` once per process (the ranks of the Local backend are threads of one process).
void log_once(const std::string& message) {
  static std::mutex mutex;
  static std::set<std::string> logged;
  const std::lock_guard<std::mutex> lock(mutex);
  if (!logged.insert(message).second) return;
  std::fprintf(stderr, "moe: attention: %s\n", message.c_str());
}

}  // namespace

#if MOE_WITH_CUDNN

namespace fe = cudnn_frontend;

#define MOE_CUDNN_CHECK(expr)                                                            \
  do {                                                                                   \
    cudnnStatus_t moe_cudnn_status_ = (expr);                                            \
    MOE_CHECK(moe_cudnn_status_ == CUDNN_STATUS_SUCCESS, "cuDNN error in ", #expr, ": ", \
              cudnnGetErrorString(moe_cudnn_status_));                                   \
  } while (0)

namespace {

std::string describe(const AttentionShape& s, DType dtype) {
  const std::string seq =
      s.q_seq == s.kv_seq ? " S=" + std::to_string(s.q_seq)
                          : " Sq=" + std::to_string(s.q_seq) + " Sk=" + std::to_string(s.kv_seq);
  std::string mask = s.causal ? " causal " : " full ";
  if (s.causal_offset != 0) mask = " causal offset " + std::to_string(s.causal_offset) + " ";
  return "B=" + std::to_string(s.batch) + seq + " Hq=" + std::to_string(s.q_heads) +
         " Hkv=" + std::to_string(s.kv_heads) + " D=" + std::to_string(s.head_dim) +
         " Dv=" + std::to_string(s.v_head_dim) + mask + dtype_name(dtype);
}

// Tensor ids in the graphs' variant packs.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kGradO, kGradQ, kGradK, kGradV };

// Everything a graph depends on. The scale is baked into the graph (a pass-by-value scalar), so
// its float bits are part of the key.
using GraphKey = std::array<int64_t, 15>;

GraphKey key_of(CudnnPass pass, const AttentionShape& s, DType dtype, int device,
                bool deterministic) {
  const float scale = static_cast<float>(s.scale);
  uint32_t scale_bits = 0;
  std::memcpy(&scale_bits, &scale, sizeof scale_bits);
  const bool backward = pass == CudnnPass::backward;
  return {device,
          backward ? 1 : 0,
          static_cast<int64_t>(dtype),
          s.batch,
          s.q_seq,
          s.kv_seq,
          s.q_heads,
          s.kv_heads,
          s.head_dim,
          s.v_head_dim,
          scale_bits,
          s.causal ? 1 : 0,
          s.causal_offset,
          static_cast<int64_t>(s.layout),
          backward && deterministic ? 1 : 0};
}

struct CachedGraph {
  std::shared_ptr<fe::graph::Graph> graph;  // null: cuDNN rejected the problem
  std::string reason;                       // why, when rejected
  int64_t workspace_bytes = 0;
};

struct ThreadCudnn {
  std::map<int, cudnnHandle_t> handles;
  std::map<GraphKey, CachedGraph> graphs;
  int64_t built = 0;

  ~ThreadCudnn() {
    graphs.clear();  // the plans before the handles that built them
    // Statuses are ignored: at process exit the driver may already be tearing down.
    for (auto& [device, handle] : handles) (void)cudnnDestroy(handle);
  }
};

thread_local ThreadCudnn tls_cudnn;

// The calling thread's handle for `device`, which current_stream() has made current.
cudnnHandle_t handle_for(int device) {
  auto it = tls_cudnn.handles.find(device);
  if (it != tls_cudnn.handles.end()) return it->second;
  cudnnHandle_t handle = nullptr;
  MOE_CUDNN_CHECK(cudnnCreate(&handle));
  return tls_cudnn.handles.emplace(device, handle).first->second;
}

fe::DataType_t fe_dtype(DType dtype) {
  switch (dtype) {
    case DType::bf16:
      return fe::DataType_t::BFLOAT16;
    case DType::f16:
      return fe::DataType_t::HALF;
    default:
      MOE_FAIL("attention (cuDNN): no cuDNN SDPA for dtype ", dtype);
  }
}

// [B, H, seq, dim] logical dims with the layout's strides (attention_cuda.h); seq is Sq for q,
// o and their gradients, Sk for k, v and theirs.
fe::graph::Tensor_attributes& describe_bhsd(fe::graph::Tensor_attributes& t, const char* name,
                                            Uid uid, const AttentionShape& s, int64_t seq,
                                            int64_t heads, int64_t dim) {
  const AttentionStrides st = s.strides(seq, heads, dim);
  return t.set_name(name)
      .set_uid(uid)
      .set_dim({s.batch, heads, seq, dim})
      .set_stride({st.batch, st.head, st.token, 1});
}

std::shared_ptr<fe::graph::Tensor_attributes> input_bhsd(fe::graph::Graph& graph, const char* name,
                                                         Uid uid, const AttentionShape& s,
                                                         int64_t seq, int64_t heads, int64_t dim) {
  fe::graph::Tensor_attributes t;
  describe_bhsd(t, name, uid, s, seq, heads, dim);
  return graph.tensor(t);
}

// lse / Stats: [B, Hq, Sq, 1] f32, contiguous: the op's [B, Hq, Sq].
fe::graph::Tensor_attributes& describe_stats(fe::graph::Tensor_attributes& t,
                                             const AttentionShape& s) {
  return t.set_name("stats")
      .set_uid(kStats)
      .set_dim({s.batch, s.q_heads, s.q_seq, 1})
      .set_stride({s.q_heads * s.q_seq, s.q_seq, 1, 1})
      .set_data_type(fe::DataType_t::FLOAT);
}

// The causal mask j <= i + causal_offset as a top-left-aligned band (see the file comment);
// nothing for full attention. Attributes: SDPA_attributes or SDPA_backward_attributes.
template <class Attributes>
void set_causal_band(Attributes& attributes, const AttentionShape& s) {
  if (!s.causal) return;
  attributes.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
      .set_diagonal_band_right_bound(static_cast<int>(s.causal_offset));
}

std::shared_ptr<fe::graph::Graph> new_graph(DType dtype) {
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(fe_dtype(dtype))
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return graph;
}

std::shared_ptr<fe::graph::Graph> forward_graph(const AttentionShape& s, DType dtype) {
  auto graph = new_graph(dtype);
  auto q = input_bhsd(*graph, "q", kQ, s, s.q_seq, s.q_heads, s.head_dim);
  auto k = input_bhsd(*graph, "k", kK, s, s.kv_seq, s.kv_heads, s.head_dim);
  auto v = input_bhsd(*graph, "v", kV, s, s.kv_seq, s.kv_heads, s.v_head_dim);
  auto attributes = fe::graph::SDPA_attributes()
                        .set_name("sdpa_forward")
                        .set_generate_stats(true)
                        .set_attn_scale(static_cast<float>(s.scale));
  set_causal_band(attributes, s);
  auto [o, stats] = graph->sdpa(q, k, v, attributes);
  describe_bhsd(*o, "o", kO, s, s.q_seq, s.q_heads, s.v_head_dim).set_output(true);
  describe_stats(*stats, s).set_output(true);
  return graph;
}

std::shared_ptr<fe::graph::Graph> backward_graph(const AttentionShape& s, DType dtype,
                                                 bool deterministic) {
  auto graph = new_graph(dtype);
  auto q = input_bhsd(*graph, "q", kQ, s, s.q_seq, s.q_heads, s.head_dim);
  auto k = input_bhsd(*graph, "k", kK, s, s.kv_seq, s.kv_heads, s.head_dim);
  auto v = input_bhsd(*graph, "v", kV, s, s.kv_seq, s.kv_heads, s.v_head_dim);
  auto o = input_bhsd(*graph, "o", kO, s, s.q_seq, s.q_heads, s.v_head_dim);
  auto grad_o = input_bhsd(*graph, "grad_o", kGradO, s, s.q_seq, s.q_heads, s.v_head_dim);
  fe::graph::Tensor_attributes stats_attributes;
  auto stats = graph->tensor(describe_stats(stats_attributes, s));
  auto attributes = fe::graph::SDPA_backward_attributes()
                        .set_name("sdpa_backward")
                        .set_attn_scale(static_cast<float>(s.scale))
                        .set_deterministic_algorithm(deterministic);
  set_causal_band(attributes, s);
  auto [dq, dk, dv] = graph->sdpa_backward(q, k, v, o, grad_o, stats, attributes);
  describe_bhsd(*dq, "grad_q", kGradQ, s, s.q_seq, s.q_heads, s.head_dim).set_output(true);
  describe_bhsd(*dk, "grad_k", kGradK, s, s.kv_seq, s.kv_heads, s.head_dim).set_output(true);
  describe_bhsd(*dv, "grad_v", kGradV, s, s.kv_seq, s.kv_heads, s.v_head_dim).set_output(true);
  return graph;
}

// "9.14.0": the library loaded at run time (CUDNN_VERSION = major * 10000 + minor * 100 + patch).
std::string runtime_version() {
  const size_t v = cudnnGetVersion();
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

// The cached graph of this problem, built on the first ask (a rejection is cached too: it
// depends only on the key and the installed cuDNN).
const CachedGraph& cached_graph(CudnnPass pass, const AttentionShape& s, DType dtype, int device,
                                bool deterministic) {
  const GraphKey key = key_of(pass, s, dtype, device, deterministic);
  auto it = tls_cudnn.graphs.find(key);
  if (it != tls_cudnn.graphs.end()) return it->second;

  (void)current_stream(device);  // makes `device` current for the handle and the build
  const cudnnHandle_t handle = handle_for(device);
  CachedGraph entry;
  std::string failure;
  try {
    std::shared_ptr<fe::graph::Graph> graph = pass == CudnnPass::forward
                                                  ? forward_graph(s, dtype)
                                                  : backward_graph(s, dtype, deterministic);
    fe::error_t status = graph->build(handle, {fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
    if (status.is_good()) status = graph->get_workspace_size(entry.workspace_bytes);
    if (status.is_good())
      entry.graph = std::move(graph);
    else
      failure = status.get_message();
  } catch (const std::exception& e) {  // the frontend's older layers report by exception
    failure = e.what();
  }
  if (!entry.graph) {
    entry.reason = "cuDNN " + runtime_version() + " has no SDPA " +
                   (pass == CudnnPass::forward ? "forward" : "backward") + " for " +
                   describe(s, dtype) + (deterministic ? " deterministic" : "") + ": " + failure;
  }
  ++tls_cudnn.built;
  return tls_cudnn.graphs.emplace(key, std::move(entry)).first->second;
}

void execute(const CachedGraph& entry, std::unordered_map<int64_t, void*>& pack, Device device) {
  const cudnnHandle_t handle = handle_for(device.index);
  MOE_CUDNN_CHECK(
      cudnnSetStream(handle, reinterpret_cast<cudaStream_t>(current_stream(device.index))));
  // From the caching allocator on this stream: freed after the call, reused only by later work
  // of the same stream, so the kernel is done with it by then.
  Tensor workspace;
  void* workspace_ptr = nullptr;
  if (entry.workspace_bytes > 0) {
    workspace = Tensor::empty({entry.workspace_bytes}, DType::u8, device);
    workspace_ptr = workspace.raw();
  }
  fe::error_t status = entry.graph->execute(handle, pack, workspace_ptr);
  MOE_CHECK(status.is_good(), "attention (cuDNN): execution failed: ", status.get_message());
}

}  // namespace

bool cudnn_attention_compiled() {
  return true;
}

bool cudnn_attention_can_run(CudnnPass pass, const AttentionShape& shape, bool deterministic,
                             std::initializer_list<const Tensor*> tensors, std::string* reason) {
  const Tensor& q = **tensors.begin();
  std::string why = static_rejection(shape, tensors);
  if (why.empty()) {
    why = cached_graph(pass, shape, q.dtype(), q.device().index, deterministic).reason;
  }
  if (reason) *reason = why;
  return why.empty();
}

void attention_forward_cudnn(const AttentionShape& shape, const Tensor& q, const Tensor& k,
                             const Tensor& v, Tensor& out, Tensor& lse) {
  const CachedGraph& entry =
      cached_graph(CudnnPass::forward, shape, q.dtype(), q.device().index, false);
  MOE_CHECK(entry.graph, "attention_forward (cuDNN): ", entry.reason);
  std::unordered_map<int64_t, void*> pack = {
      {kQ, q.raw()}, {kK, k.raw()}, {kV, v.raw()}, {kO, out.raw()}, {kStats, lse.raw()}};
  execute(entry, pack, q.device());
}

void attention_backward_cudnn(const AttentionShape& shape, bool deterministic,
                              const Tensor& grad_out, const Tensor& q, const Tensor& k,
                              const Tensor& v, const Tensor& out, const Tensor& lse, Tensor& dq,
                              Tensor& dk, Tensor& dv) {
  const CachedGraph& entry =
      cached_graph(CudnnPass::backward, shape, q.dtype(), q.device().index, deterministic);
  MOE_CHECK(entry.graph, "attention_backward (cuDNN): ", entry.reason);
  std::unordered_map<int64_t, void*> pack = {
      {kQ, q.raw()},      {kK, k.raw()},       {kV, v.raw()},
      {kO, out.raw()},    {kStats, lse.raw()}, {kGradO, grad_out.raw()},
      {kGradQ, dq.raw()}, {kGradK, dk.raw()},  {kGradV, dv.raw()}};
  execute(entry, pack, q.device());
}

int64_t cudnn_attention_graphs_built() {
  return tls_cudnn.built;
}

#else  // !MOE_WITH_CUDNN: a CUDA build without the frontend headers

namespace {
constexpr const char* kNotBuilt =
    "this build has no cuDNN attention (the cuDNN frontend headers were not found at configure "
    "time: scripts/setup.sh installs them, then re-run CMake)";
}  // namespace

bool cudnn_attention_compiled() {
  return false;
}

bool cudnn_attention_can_run(CudnnPass, const AttentionShape&, bool,
                             std::initializer_list<const Tensor*>, std::string* reason) {
  if (reason) *reason = kNotBuilt;
  return false;
}

void attention_forward_cudnn(const AttentionShape&, const Tensor&, const Tensor&, const Tensor&,
                             Tensor&, Tensor&) {
  MOE_FAIL("attention_forward: ", kNotBuilt);
}

void attention_backward_cudnn(const AttentionShape&, bool, const Tensor&, const Tensor&,
                              const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&,
                              Tensor&, Tensor&) {
  MOE_FAIL("attention_backward: ", kNotBuilt);
}

int64_t cudnn_attention_graphs_built() {
  return 0;
}

#endif  // MOE_WITH_CUDNN

bool use_cudnn_attention(CudnnPass pass, const AttentionShape& shape,
                         const AttentionOptions& options,
                         std::initializer_list<const Tensor*> tensors) {
  if (options.backend == AttentionBackend::native) return false;
  if (shape.batch == 0 || shape.q_seq == 0) return false;  // nothing to compute: either backend
  const char* op = pass == CudnnPass::forward ? "attention_forward" : "attention_backward";
  if (options.backend == AttentionBackend::cudnn) {
    std::string reason;
    MOE_CHECK(cudnn_attention_can_run(pass, shape, options.deterministic, tensors, &reason), op,
              ": backend cudnn cannot run this problem: ", reason);
    return true;
  }
  // automatic: the static rejections (f32, odd dims) are the documented rule and stay quiet;
  // what passes them but cuDNN still rejects is worth a line.
  if (!cudnn_attention_compiled()) return false;
  if (!static_rejection(shape, tensors).empty()) return false;
  std::string reason;
  if (cudnn_attention_can_run(pass, shape, options.deterministic, tensors, &reason)) return true;
  log_once(std::string(op) + ": using the native kernel: " + reason);
  return false;
}

}  // namespace moe::ops::detail

#endif  // MOE_WITH_CUDA
