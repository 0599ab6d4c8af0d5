// The per-rank memory report: what a rank holds for parameters, gradients and optimizer state
// (the distributed optimizer's share falls as 1 / DP), gathered in rank order, and its lines.
// Ranks are threads of the Local backend.
#include "moe/train/memory_report.h"

#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <vector>

#include "moe/dist/local_backend.h"
#include "moe/dist/parallel_state.h"
#include "moe/train/batch_source.h"
#include "moe/train/train_args.h"
#include "moe/train/train_run.h"

namespace moe::train {
namespace {

TrainConfig small_train_config() {
  TrainConfig c;
  c.micro_batch_size = 1;
  c.global_batch_size = 4;
  c.seq_length = 8;
  c.train_iters = 1;
  c.schedule.lr = 1e-3;
  return c;
}

std::vector<int32_t> tokens() {
  std::vector<int32_t> t(4096);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>((i * 7) % 251);
  return t;
}

// Every rank's figures of the default model on `ranks` data-parallel ranks (EP `ep`).
std::vector<RankMemory> memory_on_ranks(int ranks, int ep, bool distributed_optimizer) {
  std::vector<RankMemory> gathered;
  std::mutex mutex;
  dist::run_local(ranks, [&](std::shared_ptr<dist::ProcessGroup> world) {
    dist::ParallelConfig mapping;
    mapping.expert_model_parallel_size = ep;
    auto state = std::make_shared<dist::ParallelState>(world, mapping);
    nn::ModelConfig config = default_train_model();
    config.moe.expert_model_parallel_size = ep;
    nn::GPTModel model(config, DType::f32, Device::cpu(), 1234, nn::moe_groups_of(*state));
    TokenArraySource source(tokens(), 8, 1, false);
    DdpConfig ddp;
    ddp.use_distributed_optimizer = distributed_optimizer;
    Trainer trainer(model, small_train_config(), source, nullptr, TrainParallel{state, ddp});
    const std::vector<RankMemory> all =
        gather_rank_memory(rank_memory(model, trainer), world, Device::cpu());
    std::lock_guard lock(mutex);
    if (world->rank() == 0) gathered = all;
  });
  return gathered;
}

// One rank, AdamW: f32 model, so two f32 moments per parameter and no masters.
int64_t one_rank_optimizer_bytes(int64_t* parameter_bytes) {
  nn::GPTModel model(default_train_model(), DType::f32, Device::cpu(), 1234);
  TokenArraySource source(tokens(), 8, 1, false);
  Trainer trainer(model, small_train_config(), source);
  const RankMemory m = rank_memory(model, trainer);
  *parameter_bytes = m.parameter_bytes;
  EXPECT_EQ(m.gradient_bytes, m.parameter_bytes);  // fp32 gradients of fp32 weights
  return m.optimizer_bytes;
}

TEST(MemoryReport, DistributedOptimizerStateFallsAsOneOverDataParallelSize) {
  int64_t parameter_bytes = 0;
  const int64_t total = one_rank_optimizer_bytes(&parameter_bytes);
  EXPECT_EQ(total, 2 * parameter_bytes);
  for (int dp : {2, 4}) {
    SCOPED_TRACE("DP " + std::to_string(dp));
    const std::vector<RankMemory> ranks = memory_on_ranks(dp, 1, true);
    ASSERT_EQ(ranks.size(), static_cast<size_t>(dp));
    int64_t sum = 0;
    for (const RankMemory& r : ranks) {
      // Each rank keeps its chunk of every bucket: 1 / DP of the state, up to where the
      // parameters' alignment gaps and the bucket padding fall.
      EXPECT_NEAR(static_cast<double>(r.optimizer_bytes), static_cast<double>(total) / dp,
                  0.05 * static_cast<double>(total) / dp);
      // Parameters and gradients stay whole on every rank (ZeRO-1), in the padded buffers.
      EXPECT_GE(r.parameter_bytes, parameter_bytes);
      EXPECT_LT(r.parameter_bytes, parameter_bytes + parameter_bytes / 20);
      EXPECT_EQ(r.gradient_bytes, r.parameter_bytes);
      sum += r.optimizer_bytes;
    }
    EXPECT_EQ(sum, total);  // every parameter element's state on exactly one rank
  }
  // Without the distributed optimizer every rank holds all of it.
  for (const RankMemory& r : memory_on_ranks(2, 1, false)) EXPECT_EQ(r.optimizer_bytes, total);
}

TEST(MemoryReport, ExpertParallelRanksHoldTheirExperts) {
  int64_t parameter_bytes = 0;
  const int64_t total = one_rank_optimizer_bytes(&parameter_bytes);
  // EP 2 over 2 ranks: each holds the dense weights and half of the experts, so the state of the
  // two ranks is the whole model's plus one more copy of the dense part.
  const std::vector<RankMemory> ranks = memory_on_ranks(2, 2, false);
  ASSERT_EQ(ranks.size(), 2u);
  EXPECT_EQ(ranks[0].optimizer_bytes, ranks[1].optimizer_bytes);
  EXPECT_LT(ranks[0].optimizer_bytes, total);
  EXPECT_GT(ranks[0].optimizer_bytes, total / 2);
}

TEST(MemoryReport, GathersInRankOrderAndFormatsEveryRank) {
  std::vector<RankMemory> gathered;
  dist::run_local(3, [&](std::shared_ptr<dist::ProcessGroup> world) {
    const int64_t r = world->rank();
    const RankMemory mine{(r + 1) << 20, (r + 2) << 20, (r + 3) << 20, (r + 4) << 20,
                          (r + 5) << 20};
    const std::vector<RankMemory> all = gather_rank_memory(mine, world, Device::cpu());
    if (r == 0) gathered = all;
  });
  ASSERT_EQ(gathered.size(), 3u);
  for (int64_t r = 0; r < 3; ++r) {
    EXPECT_EQ(gathered[static_cast<size_t>(r)].parameter_bytes, (r + 1) << 20);
    EXPECT_EQ(gathered[static_cast<size_t>(r)].activation_bytes, (r + 4) << 20);
    EXPECT_EQ(gathered[static_cast<size_t>(r)].peak_bytes, (r + 5) << 20);
  }
  const std::string report = format_memory_report(gathered);
  EXPECT_NE(report.find("memory per rank (MiB): parameters | gradients"), std::string::npos);
  EXPECT_NE(report.find("| activations of one micro-batch (estimate)\n"), std::string::npos)
      << report;
  EXPECT_NE(report.find("  rank 2:       3.00 |       4.00 |       5.00 |       6.00\n"),
            std::string::npos)
      << report;
  const std::string peaks = format_peak_memory(gathered, 1, Device::cpu());
  EXPECT_EQ(peaks,
            "peak memory after iteration 1 (MiB, process peak RSS): rank 0 5.0, rank 1 6.0, "
            "rank 2 7.0\n");
  // One rank: no communication at all.
  EXPECT_EQ(
      gather_rank_memory(RankMemory{1, 2, 3, 4, 5}, nullptr, Device::cpu())[0].optimizer_bytes, 3);
  EXPECT_GT(measure_peak_memory(Device::cpu()), 0);
}

}  // namespace
}  // namespace moe::train
