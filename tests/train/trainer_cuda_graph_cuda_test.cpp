// --cuda-graph-impl full_iteration on a GPU: a small MoE model (cutlass grouped GEMM, so the MoE
// layers read their counts on the device) trains 7 steps eagerly and 7 steps with the step
// captured after 2 warm-up steps and replayed; the losses, gradient norms and final weights
// agree (deterministic attention: the same kernels in the same order), the capture is reported
// with its memory, and a replay reads each step's new micro-batches (a graph that replayed the
// captured inputs would repeat one batch's loss).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
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

TrainedRun train(bool graph, uint64_t seed) {
  nn::ModelConfig c = test::small_gpt_config();
  c.deterministic_mode = true;
  c.moe.moe_grouped_gemm_backend = ops::GroupedGemmBackend::cutlass;
  nn::GPTModel model(c, DType::bf16, Device::cuda(0), seed);
  TrainConfig tc;
  tc.micro_batch_size = 2;
  tc.global_batch_size = 4;  // two micro-batches per step
  tc.seq_length = 16;
  tc.train_iters = 7;
  tc.schedule.lr = 1e-3;
  tc.schedule.min_lr = 1e-4;
  tc.schedule.decay_style = "linear";
  if (graph) {
    tc.cuda_graph_impl = CudaGraphImpl::full_iteration;
    tc.cuda_graph_warmup_steps = 2;
  }
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

TEST(TrainerCudaGraph, ReplayedStepsEqualEagerSteps) {
  MOE_REQUIRE_GPU();
  {
    const Tensor a = Tensor::zeros({8, 64}, DType::bf16, Device::cuda(0));
    const Tensor b = Tensor::zeros({1, 64, 64}, DType::bf16, Device::cuda(0));
    if (ops::grouped_gemm_reads_counts(ops::GroupedGemmBackend::cutlass, a, b, a))
      GTEST_SKIP() << "the cutlass backend is not built or the GPU is not sm_90";
  }
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const TrainedRun eager = train(false, seed);
  const TrainedRun graph = train(true, seed);
  EXPECT_EQ(graph.notes[1], "");
  EXPECT_NE(graph.notes[2].find("captured the forward and backward of 2 micro-batches as one "
                                "CUDA graph"),
            std::string::npos)
      << graph.notes[2];
  EXPECT_NE(graph.notes[2].find("MiB"), std::string::npos);
  // The losses of different batches differ: a replay on stale inputs would show.
  EXPECT_NE(eager.loss[3], eager.loss[4]);
  for (size_t i = 0; i < eager.loss.size(); ++i) {
    EXPECT_NEAR(graph.loss[i], eager.loss[i], 1e-6 * std::abs(eager.loss[i])) << "step " << i;
    EXPECT_NEAR(graph.grad_norm[i], eager.grad_norm[i], 1e-5 * eager.grad_norm[i]) << "step " << i;
  }
  for (const auto& [name, w] : eager.weights)
    EXPECT_TRUE(test::close(graph.weights.at(name), w, 1e-6, name));
}

}  // namespace
}  // namespace moe::train
