// The one-rank MoE layer with the cutlass grouped GEMM (counts read on the device) does not
// synchronise with the host: its forward and backward are captured into one CUDA graph. A
// stream capture fails at the first synchronisation (a device-to-host read of the counts, a
// blocking copy), so the capture succeeding is the proof; the graph's replay must then equal
// the eager run, and the eager run the synchronising (cuBLAS) layer's.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>

#include "moe/core/stream.h"
#include "moe/ops/grouped_gemm.h"
#include "nn/moe_test_util.h"

namespace moe {
namespace {

using nn::MoEConfig;
using nn::MoELayer;
using ops::GroupedGemmBackend;

struct Result {
  Tensor y, dx;
  std::vector<Tensor> grads;  // on the host, f32
};

Tensor host_f32(const Tensor& t) {
  return t.to(Device::cpu()).to(DType::f32);
}

Result gather(MoELayer& layer, const Tensor& y, const Tensor& dx) {
  Result r{host_f32(y), host_f32(dx), {}};
  for (nn::Parameter* p : layer.parameters()) r.grads.push_back(host_f32(p->grad_value()));
  return r;
}

void expect_close(const Result& got, const Result& want, double tol, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_TRUE(test::close(got.y, want.y, tol, "y"));
  EXPECT_TRUE(test::close(got.dx, want.dx, tol, "dx"));
  ASSERT_EQ(got.grads.size(), want.grads.size());
  for (size_t i = 0; i < got.grads.size(); ++i)
    EXPECT_TRUE(test::close(got.grads[i], want.grads[i], tol, "grad " + std::to_string(i)));
}

TEST(MoELayerSyncFreeCuda, OneRankLayerIsCapturedAsOneGraph) {
  MOE_REQUIRE_GPU();
  const Device gpu = Device::cuda();
  {
    const Tensor a = Tensor::zeros({8, 8}, DType::bf16, gpu);
    const Tensor b = Tensor::zeros({1, 8, 8}, DType::bf16, gpu);
    if (ops::grouped_gemm_reads_counts(GroupedGemmBackend::cutlass, a, b, a))
      GTEST_SKIP() << "the cutlass backend is not built or the GPU is not sm_90";
  }
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (nn::DispatcherType dispatcher :
       {nn::DispatcherType::allgather, nn::DispatcherType::alltoall}) {
    SCOPED_TRACE(nn::name(dispatcher));
    MoEConfig config = test::small_moe_config(DType::bf16);
    config.hidden_size = 64;  // row lengths multiples of 8: every grouped GEMM qualifies
    config.moe_ffn_hidden_size = 40;
    config.num_experts = 8;
    config.init_method_std = 0.1;
    config.moe_token_dispatcher_type = dispatcher;
    config.moe_grouped_gemm_backend = GroupedGemmBackend::cutlass;
    MoEConfig synchronising = config;
    synchronising.moe_grouped_gemm_backend = GroupedGemmBackend::per_expert_lt;
    MoELayer layer(config, gpu), reference(synchronising, gpu);  // one seed: equal weights

    const int64_t S = 37, B = 3;
    const Tensor x = test::random_normal({S, B, config.hidden_size}, DType::bf16, seed, gpu);
    const Tensor dy = test::random_normal(x.shape(), DType::bf16, seed + 1, gpu);
    nn::MoEContext ref_ctx, ctx;
    reference.zero_grad();
    const Tensor y_ref = reference.forward(x, ref_ctx);
    const Result want = gather(reference, y_ref, reference.backward(dy, ref_ctx));
    layer.zero_grad();
    const Tensor y_eager = layer.forward(x, ctx);
    const Result eager = gather(layer, y_eager, layer.backward(dy, ctx));
    expect_close(eager, want, test::tolerance(DType::bf16), "cutlass eager vs cuBLAS");

    layer.zero_grad();
    synchronize(gpu.index);
    const auto stream = reinterpret_cast<cudaStream_t>(current_stream(gpu.index));
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
    std::string error;
    Tensor y, dx;
    nn::MoEContext graph_ctx;
    try {
      y = layer.forward(x, graph_ctx);
      dx = layer.backward(dy, graph_ctx);
    } catch (const Error& e) {
      error = e.what();
    }
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    (void)cudaGetLastError();
    ASSERT_TRUE(error.empty()) << "the layer synchronised during the capture: " << error;
    ASSERT_EQ(ended, cudaSuccess) << "capture: " << cudaGetErrorString(ended);
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    // Nothing is allocated between the capture and the replay, so the temporaries the graph
    // reuses are still free.
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    expect_close(gather(layer, y, dx), eager, 1e-6, "graph replay vs eager");
    (void)cudaGraphExecDestroy(exec);
    (void)cudaGraphDestroy(graph);
  }
}

}  // namespace
}  // namespace moe
