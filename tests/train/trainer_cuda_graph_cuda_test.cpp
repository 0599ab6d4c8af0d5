// CUDA graphs in training on a GPU: a small MoE model (cutlass grouped GEMM, so the MoE layers
// read their counts on the device) trains 7 steps eagerly, and 7 steps with graphs captured
// after 2 warm-up steps and replayed: --cuda-graph-impl full_iteration (the step as one graph),
// and --cuda-graph-impl local (per-layer graphs) of whole layers, of the attention blocks alone,
// of the MoE / dense MLP blocks alone, and of the MoE blocks' router part (with a shared expert,
// and the experts on the automatic backend, which reads the counts on the host between the
// graphs) with and without the attention blocks and the dispatcher's preprocessing. The losses,
// gradient norms and final weights agree (deterministic attention: the same kernels in the same
// order), the capture is reported with its memory, and a replay reads each step's new micro-batches
// (a graph that replayed the captured inputs would repeat one batch's loss). Two micro-batches a
// step: each layer's backward is captured twice, once writing the gradients after zero_grad, once
// accumulating.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/check.h"
#include "moe/ops/grouped_gemm.h"
#include "moe/train/batch_source.h"
#include "moe/train/trainer.h"
#include "nn/gpt_test_util.h"

namespace moe::train {
namespace {

struct TrainedRun {
  std::vector<double> loss, grad_norm;
  std::vector<std::string> notes;
  std::map<std::string, Tensor> weights;
};

// The model's MoE layers: the grouped GEMM's backend, and a shared expert or none.
struct MoEVariant {
  ops::GroupedGemmBackend backend = ops::GroupedGemmBackend::cutlass;
  bool shared_expert = false;
};

TrainedRun train(CudaGraphImpl impl, uint64_t seed,
                 std::optional<nn::LayerGraphModules> modules = std::nullopt,
                 MoEVariant variant = {}) {
  nn::ModelConfig c = test::small_gpt_config();
  c.deterministic_mode = true;
  c.moe.moe_grouped_gemm_backend = variant.backend;
  if (variant.shared_expert) c.moe.moe_shared_expert_intermediate_size = 32;
  nn::GPTModel model(c, DType::bf16, Device::cuda(0), seed);
  TrainConfig tc;
  tc.micro_batch_size = 2;
  tc.global_batch_size = 4;  // two micro-batches per step
  tc.seq_length = 16;
  tc.train_iters = 7;
  tc.schedule.lr = 1e-3;
  tc.schedule.min_lr = 1e-4;
  tc.schedule.decay_style = "linear";
  tc.cuda_graph_impl = impl;
  tc.cuda_graph_modules = modules;
  tc.cuda_graph_warmup_steps = 2;
  std::vector<int32_t> tokens;
  const Tensor ids = test::random_tokens(4096, 1, c.vocab_size, seed);
  for (int64_t v : ids.to_vector<int64_t>()) tokens.push_back(static_cast<int32_t>(v));
  TokenArraySource source(tokens, tc.seq_length, seed);
  Trainer trainer(model, tc, source);
  TrainedRun run;
  for (int i = 0; i < tc.train_iters; ++i) {
    const StepMetrics m = trainer.train_step();
    run.loss.push_back(m.loss);
    run.grad_norm.push_back(m.grad_norm);
    run.notes.push_back(m.note);
  }
  for (nn::Parameter* p : model.parameters())
    run.weights[p->name] = p->value.to(Device::cpu()).to(DType::f32);
  return run;
}

bool cutlass_runs() {
  const Tensor a = Tensor::zeros({8, 64}, DType::bf16, Device::cuda(0));
  const Tensor b = Tensor::zeros({1, 64, 64}, DType::bf16, Device::cuda(0));
  return !ops::grouped_gemm_reads_counts(ops::GroupedGemmBackend::cutlass, a, b, a);
}

void expect_same_training(const TrainedRun& graph, const TrainedRun& eager) {
  // The losses of different batches differ: a replay on stale inputs would show.
  EXPECT_NE(eager.loss[3], eager.loss[4]);
  for (size_t i = 0; i < eager.loss.size(); ++i) {
    EXPECT_NEAR(graph.loss[i], eager.loss[i], 1e-6 * std::abs(eager.loss[i])) << "step " << i;
    EXPECT_NEAR(graph.grad_norm[i], eager.grad_norm[i], 1e-5 * eager.grad_norm[i]) << "step " << i;
  }
  for (const auto& [name, w] : eager.weights)
    EXPECT_TRUE(test::close(graph.weights.at(name), w, 1e-6, name));
}

TEST(TrainerCudaGraph, ReplayedStepsEqualEagerSteps) {
  MOE_REQUIRE_GPU();
  if (!cutlass_runs()) GTEST_SKIP() << "the cutlass backend is not built or the GPU is not sm_90";
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const TrainedRun eager = train(CudaGraphImpl::none, seed);
  const TrainedRun graph = train(CudaGraphImpl::full_iteration, seed);
  EXPECT_EQ(graph.notes[1], "");
  EXPECT_NE(graph.notes[2].find("captured the forward and backward of 2 micro-batches as one "
                                "CUDA graph"),
            std::string::npos)
      << graph.notes[2];
  EXPECT_NE(graph.notes[2].find("MiB"), std::string::npos);
  expect_same_training(graph, eager);
}

TEST(TrainerCudaGraph, PerLayerGraphsEqualEagerSteps) {
  MOE_REQUIRE_GPU();
  if (!cutlass_runs()) GTEST_SKIP() << "the cutlass backend is not built or the GPU is not sm_90";
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const TrainedRun eager = train(CudaGraphImpl::none, seed);
  // The router's part with a shared expert, the experts on the automatic backend (which reads
  // the counts on the host: eager between the graphs).
  const MoEVariant routed{ops::GroupedGemmBackend::automatic, true};
  const TrainedRun eager_routed = train(CudaGraphImpl::none, seed, std::nullopt, routed);
  // The model has a dense layer and two MoE layers; a unit captures one forward and two
  // backwards (writing the gradients, then accumulating).
  struct Case {
    nn::LayerGraphModules modules;
    std::string name;
    int units;
    MoEVariant variant;
  };
  const std::vector<Case> cases = {
      {nn::LayerGraphModules::whole_layer(), "whole layers", 3, {}},
      {{true, false, false, false, false}, "attn", 3, {}},
      {{false, true, true, false, false}, "mlp moe", 3, {}},
      {{true, false, false, true, true}, "attn moe_router moe_preprocess", 5, routed},
      {{false, false, false, true, false}, "moe_router", 2, routed},
  };
  for (const auto& [modules, name, units, variant] : cases) {
    SCOPED_TRACE(name);
    const TrainedRun graph = train(CudaGraphImpl::local, seed, modules, variant);
    EXPECT_EQ(graph.notes[1], "");
    const std::string expected = "captured " + std::to_string(3 * units) +
                                 " per-layer CUDA graphs (--cuda-graph-impl local, " + name + ")";
    EXPECT_NE(graph.notes[2].find(expected), std::string::npos) << graph.notes[2];
    EXPECT_NE(graph.notes[2].find("MiB in their pools"), std::string::npos) << graph.notes[2];
    EXPECT_EQ(graph.notes[3], "");  // nothing new to capture after the first graphed step
    expect_same_training(graph, variant.shared_expert ? eager_routed : eager);
  }
}

// A block whose grouped GEMMs fall back to cuBLAS (expert rows of 12 bytes: no TMA loads) reads
// its counts on the host: the capture fails naming the layer, the block and the cause.
TEST(TrainerCudaGraph, ABlockThatWaitsForTheHostIsNamed) {
  MOE_REQUIRE_GPU();
  if (!cutlass_runs()) GTEST_SKIP() << "the cutlass backend is not built or the GPU is not sm_90";
  nn::ModelConfig c = test::small_gpt_config();
  c.moe.moe_grouped_gemm_backend = ops::GroupedGemmBackend::cutlass;
  c.moe.moe_ffn_hidden_size = 6;
  nn::GPTModel model(c, DType::bf16, Device::cuda(0), 3);
  TrainConfig tc;
  tc.micro_batch_size = 2;
  tc.global_batch_size = 2;
  tc.seq_length = 16;
  tc.train_iters = 2;
  tc.schedule.lr = 1e-3;
  tc.cuda_graph_impl = CudaGraphImpl::local;
  tc.cuda_graph_warmup_steps = 1;
  std::vector<int32_t> tokens(512, 1);
  TokenArraySource source(tokens, tc.seq_length, 3);
  Trainer trainer(model, tc, source);
  (void)trainer.train_step();
  try {
    (void)trainer.train_step();
    ADD_FAILURE() << "a layer that reads its counts on the host was captured";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("the forward of decoder layer 1's whole layer cannot be captured"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("--moe-grouped-gemm-backend cutlass"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace moe::train
