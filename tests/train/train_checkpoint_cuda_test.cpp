// Exact resume on the GPU: a bf16 model (fp32 masters, cuDNN attention in --deterministic-mode,
// MoE layers with the expert bias) trained 6 steps straight, against 3 steps, a checkpoint, a
// fresh model (other initial weights) loaded from it, and 3 more: bitwise the same losses,
// gradient norms and final weights.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/nn/gpt_model.h"
#include "moe/train/batch_source.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/trainer.h"
#include "nn/gpt_test_util.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kSeq = 64;

nn::ModelConfig deterministic_config() {
  nn::ModelConfig c = test::small_gpt_config();  // GQA head dim 16: a cuDNN attention shape
  c.moe.moe_router_enable_expert_bias = true;
  c.moe.moe_router_bias_update_rate = 1e-2;
  c.moe.init_method_std = c.init_method_std;
  c.deterministic_mode = true;
  return c;
}

TrainConfig train_config(uint64_t seed) {
  TrainConfig c;
  c.micro_batch_size = 2;
  c.global_batch_size = 4;
  c.seq_length = kSeq;
  c.train_iters = 6;
  c.seed = seed;
  c.schedule.lr = 3e-3;
  c.schedule.min_lr = 3e-4;
  c.schedule.warmup_iters = 1;
  c.schedule.decay_style = "cosine";
  c.schedule.decay_iters = 6;
  return c;
}

std::vector<int32_t> token_stream(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> out;
  for (int64_t v : test::random_tokens(n, 1, vocab, seed).to_vector<int64_t>())
    out.push_back(static_cast<int32_t>(v));
  return out;
}

struct GpuRun {
  GpuRun(uint64_t seed, uint64_t init_seed)
      : model(deterministic_config(), DType::bf16, Device::cuda(), init_seed),
        data(token_stream(10 * kSeq + 1, deterministic_config().vocab_size, seed), kSeq, seed),
        trainer(model, train_config(seed), data) {}
  nn::GPTModel model;
  TokenArraySource data;
  Trainer trainer;
};

TEST(TrainCheckpointCuda, Bf16ResumeIsBitwiseExact) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const fs::path dir = fs::temp_directory_path() / ("moe_resume_cuda_" + std::to_string(seed));
  fs::remove_all(dir);

  GpuRun straight(seed, 7);
  std::vector<StepMetrics> expected;
  for (int i = 0; i < 6; ++i) expected.push_back(straight.trainer.train_step());

  std::vector<StepMetrics> resumed;
  {
    GpuRun first(seed, 7);
    for (int i = 0; i < 3; ++i) resumed.push_back(first.trainer.train_step());
    save_training_checkpoint(dir.string(), first.model, first.trainer, nlohmann::json::object());
  }
  GpuRun second(seed, 99);  // other initial weights: everything must come from the checkpoint
  load_training_checkpoint(dir.string(), second.model, &second.trainer);
  for (int i = 0; i < 3; ++i) resumed.push_back(second.trainer.train_step());

  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_FALSE(expected[i].skipped);
    EXPECT_EQ(resumed[i].loss, expected[i].loss);
    EXPECT_EQ(resumed[i].aux_loss, expected[i].aux_loss);
    EXPECT_EQ(resumed[i].grad_norm, expected[i].grad_norm);
    EXPECT_EQ(resumed[i].lr, expected[i].lr);
  }
  EXPECT_LT(expected.back().loss, expected.front().loss);
  std::map<std::string, Tensor> want;
  for (nn::Parameter* p : straight.model.parameters()) want[p->name] = test::host(p->value);
  for (nn::Parameter* p : second.model.parameters())
    EXPECT_TRUE(test::equal(test::host(p->value), want.at(p->name), p->name));
  auto straight_buffers = straight.model.buffers();
  auto second_buffers = second.model.buffers();
  ASSERT_EQ(straight_buffers.size(), second_buffers.size());
  for (size_t i = 0; i < straight_buffers.size(); ++i)
    EXPECT_TRUE(test::equal(test::host(*second_buffers[i].value),
                            test::host(*straight_buffers[i].value), second_buffers[i].name));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe::train
