// --moe-per-layer-logging under data parallelism: every rank's collector, given the
// data-parallel group, reports the loads and losses of all ranks' micro-batches (the sums of
// what each rank alone observed).
#include <gtest/gtest.h>

#include <mutex>

#include "moe/dist/local_backend.h"
#include "moe/train/train_log.h"
#include "nn/gpt_test_util.h"

namespace moe::train {
namespace {

TEST(MoELayerStatsGroup, SumsEveryRanksCounts) {
  const nn::ModelConfig c = test::tiny_gpt_config(DType::f32);  // layer 1 is MoE (4 experts)
  constexpr int kRanks = 3;
  std::vector<std::vector<int64_t>> alone(kRanks), together(kRanks);
  std::vector<double> alone_aux(kRanks), together_aux(kRanks);
  std::mutex mutex;
  dist::run_local(kRanks, [&](std::shared_ptr<dist::ProcessGroup> world) {
    const int r = world->rank();
    nn::GPTModel model(c, DType::f32, Device::cpu(), 5);
    MoELayerStatsCollector mine, all;
    all.set_group(world);
    for (int i = 0; i < 2; ++i) {  // different tokens on every rank and micro-batch
      const Tensor ids = test::random_tokens(5, 2, c.vocab_size, 100 + 10 * r + i);
      nn::GPTContext ctx;
      model.forward(ids, ids, ctx);
      mine.observe(ctx);
      all.observe(ctx);
    }
    const std::vector<MoELayerStats> a = mine.take(), b = all.take();
    std::lock_guard lock(mutex);
    ASSERT_EQ(a.size(), 1u);
    ASSERT_EQ(b.size(), 1u);
    alone[static_cast<size_t>(r)] = a[0].expert_tokens;
    together[static_cast<size_t>(r)] = b[0].expert_tokens;
    alone_aux[static_cast<size_t>(r)] = a[0].aux_loss;
    together_aux[static_cast<size_t>(r)] = b[0].aux_loss;
  });
  std::vector<int64_t> sum(4, 0);
  double aux = 0;
  for (int r = 0; r < kRanks; ++r) {
    for (size_t e = 0; e < 4; ++e) sum[e] += alone[static_cast<size_t>(r)][e];
    aux += alone_aux[static_cast<size_t>(r)] / kRanks;  // the mean over all micro-batches
  }
  EXPECT_NE(alone[0], alone[1]);  // the ranks routed differently: the sum says something
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(together[static_cast<size_t>(r)], sum) << "rank " << r;
    EXPECT_NEAR(together_aux[static_cast<size_t>(r)], aux, 1e-6) << "rank " << r;
  }
}

}  // namespace
}  // namespace moe::train
