// --cuda-graph-impl: Megatron's flag names parse (full_iteration, and the deprecated scope
// value), per-layer graphs are refused naming full_iteration, and the trainer refuses what a
// captured step cannot do (dropout, router jitter, MoE layers that read their counts on the
// host, the CPU, several ranks, per-layer MoE logging), each naming the flag to change. The
// capture itself runs on a GPU (trainer_cuda_graph_cuda_test.cpp).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/check.h"
#include "moe/train/batch_source.h"
#include "moe/train/train_args.h"
#include "moe/train/train_run.h"
#include "moe/train/trainer.h"
#include "nn/gpt_test_util.h"

namespace moe::train {
namespace {

std::string parse_error(std::vector<std::string> args) {
  args.insert(args.end(), {"--lr", "1e-3"});
  try {
    parse_train_args(args);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CudaGraphFlags, MegatronNamesParse) {
  EXPECT_EQ(parse_train_args({"--lr", "1e-3"}).train.cuda_graph_impl, CudaGraphImpl::none);
  const TrainRunConfig full = parse_train_args(
      {"--cuda-graph-impl", "full_iteration", "--cuda-graph-warmup-steps", "2", "--lr", "1e-3"});
  EXPECT_EQ(full.train.cuda_graph_impl, CudaGraphImpl::full_iteration);
  EXPECT_EQ(full.train.cuda_graph_warmup_steps, 2);
  for (const char* flag : {"--cuda-graph-scope", "--cuda-graph-modules"})
    EXPECT_EQ(parse_train_args({flag, "full_iteration", "--lr", "1e-3"}).train.cuda_graph_impl,
              CudaGraphImpl::full_iteration)
        << flag;
  EXPECT_EQ(parse_train_args({"--cuda-graph-impl", "none", "--lr", "1e-3"}).train.cuda_graph_impl,
            CudaGraphImpl::none);
}

TEST(CudaGraphFlags, PerLayerGraphsAreRefusedNamingFullIteration) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--cuda-graph-impl", "local"},
        std::vector<std::string>{"--cuda-graph-impl", "transformer_engine"},
        std::vector<std::string>{"--cuda-graph-scope", "attn"},
        std::vector<std::string>{"--cuda-graph-modules", "[moe_router,moe_preprocess]"}}) {
    const std::string e = parse_error(args);
    EXPECT_NE(e.find("per-layer CUDA graphs are not built yet"), std::string::npos) << e;
    EXPECT_NE(e.find("--cuda-graph-impl full_iteration"), std::string::npos) << e;
  }
  EXPECT_NE(parse_error({"--cuda-graph-impl", "everything"}).find("--cuda-graph-impl"),
            std::string::npos);
  EXPECT_NE(parse_error({"--cuda-graph-warmup-steps", "0"}).find("--cuda-graph-warmup-steps"),
            std::string::npos);
}

// The trainer's refusal for `model` with a full-iteration graph ("" when it accepts).
std::string trainer_error(const nn::ModelConfig& model_config) {
  nn::GPTModel model(model_config, DType::f32, Device::cpu(), 5);
  TokenArraySource source(std::vector<int32_t>(200, 1), 8, 3);
  TrainConfig config;
  config.seq_length = 8;
  config.train_iters = 1;
  config.schedule.lr = 1e-3;
  config.cuda_graph_impl = CudaGraphImpl::full_iteration;
  try {
    Trainer trainer(model, config, source);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

nn::ModelConfig graph_ready_config() {
  nn::ModelConfig c = test::tiny_gpt_config(DType::f32);
  c.moe.moe_grouped_gemm_backend = ops::GroupedGemmBackend::cutlass;
  return c;
}

TEST(CudaGraphRules, TheTrainerRefusesWhatACaptureCannotDo) {
  const auto expect_says = [](const nn::ModelConfig& c, const char* says) {
    const std::string e = trainer_error(c);
    EXPECT_NE(e.find("--cuda-graph-impl full_iteration"), std::string::npos) << e;
    EXPECT_NE(e.find(says), std::string::npos) << "expected '" << says << "' in: " << e;
  };
  nn::ModelConfig dropout = graph_ready_config();
  dropout.hidden_dropout = 0.1;
  expect_says(dropout, "--attention-dropout 0 --hidden-dropout 0");
  nn::ModelConfig jitter = graph_ready_config();
  jitter.moe.moe_input_jitter_eps = 0.01;
  expect_says(jitter, "--moe-input-jitter-eps");
  nn::ModelConfig cublas = graph_ready_config();
  cublas.moe.moe_grouped_gemm_backend = ops::GroupedGemmBackend::automatic;
  expect_says(cublas, "--moe-grouped-gemm-backend cutlass");
  nn::ModelConfig sequential = graph_ready_config();
  sequential.moe.moe_grouped_gemm = false;
  expect_says(sequential, "--moe-grouped-gemm");
  // What remains: the device (this test's model is on the CPU).
  expect_says(graph_ready_config(), "captures GPU work, but this run is on the cpu");
  nn::ModelConfig padded = graph_ready_config();  // drop-and-pad: the counts are known
  padded.moe.moe_grouped_gemm_backend = ops::GroupedGemmBackend::automatic;
  padded.moe.moe_expert_capacity_factor = 1.0;
  padded.moe.moe_pad_expert_input_to_capacity = true;
  expect_says(padded, "captures GPU work");
  nn::ModelConfig dense = test::tiny_gpt_config(DType::f32);  // no MoE layer: no MoE rule
  dense.moe_layer_pattern = {0, 0};
  dense.moe.num_experts = 0;
  dense.moe.moe_router_topk = 0;
  expect_says(dense, "captures GPU work");
}

TEST(CudaGraphRules, PerLayerLoggingIsRefused) {
  const TrainRunConfig c =
      parse_train_args({"--cuda-graph-impl", "full_iteration", "--moe-per-layer-logging",
                        "--train-iters", "1", "--lr", "1e-3", "--cpu"});
  try {
    run_training(c, standard_train_hooks(), nullptr);
    ADD_FAILURE() << "--moe-per-layer-logging with a step graph was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--moe-per-layer-logging"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moe::train
