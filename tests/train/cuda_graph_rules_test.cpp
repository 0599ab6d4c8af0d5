// --cuda-graph-impl: Megatron's flag names parse (local with its modules, full_iteration, and
// the deprecated scope values), the modules moecore does not have are refused naming what it
// does, and the trainer refuses what a captured step or layer cannot do (dropout, router jitter,
// MoE layers that read their counts on the host, recomputation, the global aux loss in a
// captured MoE block, the CPU, per-layer MoE logging with a step graph), each naming the flag to
// change. The captures themselves run on a GPU (trainer_cuda_graph_cuda_test.cpp).
#include <gtest/gtest.h>

#include <optional>
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
  // Per-layer graphs: the modules as Megatron's words or a YAML list; none: the whole layer.
  const TrainRunConfig local = parse_train_args(
      {"--cuda-graph-scope", "attn", "moe", "--cuda-graph-impl", "local", "--lr", "1e-3"});
  EXPECT_EQ(local.train.cuda_graph_impl, CudaGraphImpl::local);
  ASSERT_TRUE(local.train.cuda_graph_modules.has_value());
  EXPECT_TRUE(local.train.cuda_graph_modules->attn);
  EXPECT_FALSE(local.train.cuda_graph_modules->mlp);
  EXPECT_TRUE(local.train.cuda_graph_modules->moe);
  EXPECT_EQ(nn::describe_layer_graph_modules(*local.train.cuda_graph_modules), "attn moe");
  const TrainRunConfig yaml = parse_train_args(
      {"--cuda-graph-impl", "local", "--cuda-graph-modules", "[mlp]", "--lr", "1e-3"});
  EXPECT_EQ(nn::describe_layer_graph_modules(*yaml.train.cuda_graph_modules), "mlp");
  EXPECT_FALSE(parse_train_args({"--cuda-graph-impl", "local", "--lr", "1e-3"})
                   .train.cuda_graph_modules.has_value());
  EXPECT_EQ(nn::describe_layer_graph_modules(
                *parse_train_args({"--cuda-graph-scope", "full", "--lr", "1e-3"})
                     .train.cuda_graph_modules),
            "whole layers");
}

TEST(CudaGraphFlags, RouterModulesParseAndOthersAreRefused) {
  // Megatron's pair for expert-parallel MoE layers.
  const TrainRunConfig router =
      parse_train_args({"--cuda-graph-impl", "local", "--cuda-graph-scope", "attn", "moe_router",
                        "moe_preprocess", "--lr", "1e-3"});
  EXPECT_TRUE(router.train.cuda_graph_modules->moe_router);
  EXPECT_TRUE(router.train.cuda_graph_modules->moe_preprocess);
  EXPECT_FALSE(router.train.cuda_graph_modules->moe);
  EXPECT_EQ(nn::describe_layer_graph_modules(*router.train.cuda_graph_modules),
            "attn moe_router moe_preprocess");
  const std::string alone = parse_error({"--cuda-graph-modules", "attn", "moe_preprocess"});
  EXPECT_NE(alone.find("add moe_router"), std::string::npos) << alone;
  EXPECT_NE(parse_error({"--cuda-graph-modules", "mamba"}).find("no Mamba"), std::string::npos);
  EXPECT_NE(parse_error({"--cuda-graph-modules", "attention"}).find("not a module"),
            std::string::npos);
  const std::string te = parse_error({"--cuda-graph-impl", "transformer_engine"});
  EXPECT_NE(te.find("--cuda-graph-impl local"), std::string::npos) << te;
  EXPECT_NE(parse_error({"--cuda-graph-impl", "everything"}).find("--cuda-graph-impl"),
            std::string::npos);
  EXPECT_NE(parse_error({"--cuda-graph-warmup-steps", "0"}).find("--cuda-graph-warmup-steps"),
            std::string::npos);
}

// The trainer's refusal for `model` with a full-iteration graph, or per-layer graphs of
// `modules` ("" when it accepts).
std::string trainer_error(const nn::ModelConfig& model_config,
                          std::optional<nn::LayerGraphModules> modules = std::nullopt,
                          const nn::RecomputeConfig& recompute = {}) {
  nn::GPTModel model(model_config, DType::f32, Device::cpu(), 5);
  model.set_recompute(recompute);
  TokenArraySource source(std::vector<int32_t>(200, 1), 8, 3);
  TrainConfig config;
  config.seq_length = 8;
  config.train_iters = 1;
  config.schedule.lr = 1e-3;
  config.cuda_graph_impl = modules ? CudaGraphImpl::local : CudaGraphImpl::full_iteration;
  if (modules && modules->any()) config.cuda_graph_modules = modules;
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

TEST(CudaGraphRules, TheTrainerRefusesWhatALayerGraphCannotDo) {
  const auto expect_says = [](const nn::ModelConfig& c, const nn::LayerGraphModules& modules,
                              const char* says, const nn::RecomputeConfig& recompute = {}) {
    const std::string e = trainer_error(c, modules, recompute);
    EXPECT_NE(e.find("--cuda-graph-impl local"), std::string::npos) << e;
    EXPECT_NE(e.find(says), std::string::npos) << "expected '" << says << "' in: " << e;
  };
  const nn::LayerGraphModules whole = nn::LayerGraphModules::whole_layer();
  const nn::LayerGraphModules attn{true, false, false};
  nn::ModelConfig dropout = graph_ready_config();
  dropout.attention_dropout = 0.1;
  expect_says(dropout, attn, "--attention-dropout 0 --hidden-dropout 0");
  nn::RecomputeConfig full;
  full.granularity = nn::RecomputeGranularity::full;
  full.num_layers = 1;
  expect_says(graph_ready_config(), attn, "--recompute-granularity", full);
  // A captured MoE block: the counts on the device, no global aux loss.
  nn::ModelConfig cublas = graph_ready_config();
  cublas.moe.moe_grouped_gemm_backend = ops::GroupedGemmBackend::automatic;
  expect_says(cublas, whole, "--moe-grouped-gemm-backend cutlass");
  nn::ModelConfig global_aux = graph_ready_config();
  global_aux.moe.moe_router_load_balancing_type = nn::LoadBalancingType::global_aux_loss;
  expect_says(global_aux, whole, "--moe-router-load-balancing-type");
  // The router's part: no frozen counters either.
  const nn::LayerGraphModules router{false, false, false, true, true};
  expect_says(global_aux, router, "--moe-router-load-balancing-type");
  nn::ModelConfig jitter = graph_ready_config();
  jitter.moe.moe_input_jitter_eps = 0.01;
  expect_says(jitter, router, "--moe-input-jitter-eps");
  expect_says(cublas, router, "captures GPU work");  // the experts run eagerly
  // ... which attention alone does not need: what remains is the device.
  expect_says(cublas, attn, "captures GPU work, but this run is on the cpu");
  expect_says(global_aux, attn, "captures GPU work");
  expect_says(graph_ready_config(), whole, "captures GPU work");
  // Modules need the per-layer implementation.
  nn::GPTModel model(graph_ready_config(), DType::f32, Device::cpu(), 5);
  TokenArraySource source(std::vector<int32_t>(200, 1), 8, 3);
  TrainConfig config;
  config.seq_length = 8;
  config.train_iters = 1;
  config.schedule.lr = 1e-3;
  config.cuda_graph_modules = attn;
  try {
    Trainer trainer(model, config, source);
    ADD_FAILURE() << "--cuda-graph-modules without --cuda-graph-impl local was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("need --cuda-graph-impl local"), std::string::npos)
        << e.what();
  }
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
