// The memory report under pipeline parallelism: the peak of the activations in flight over a
// rank's schedule (memory_report.h in_flight_activations) against Megatron's 1F1B counts
// (stage p of PP holds min(PP - p, M) micro-batches), its interleaving penalty on the first
// stage and an interleaved schedule walked by hand; and what pipeline ranks report (ranks as
// threads of the Local backend): the activations of their own layers only, the output layer's
// inputs on the last stage alone, times the micro-batches in flight.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>
#include <vector>

#include "moe/core/error.h"
#include "moe/dist/local_backend.h"
#include "moe/dist/parallel_state.h"
#include "moe/nn/model_groups.h"
#include "moe/nn/pipeline_layout.h"
#include "moe/train/batch_source.h"
#include "moe/train/memory_report.h"
#include "moe/train/pipeline_schedule.h"
#include "moe/train/train_args.h"

namespace moe::train {
namespace {

// The peak count of (micro-batch, chunk) pairs in flight: every chunk one "byte".
int64_t peak_pairs(int pp, int rank, int m, int vpp = 1) {
  const InFlightActivations a =
      in_flight_activations(pipeline_schedule(pp, rank, m, vpp), std::vector<int64_t>(vpp, 1));
  EXPECT_EQ(a.bytes, a.pairs);
  return a.pairs;
}

TEST(MemoryReportPipeline, OneFOneBHoldsMegatronsMicroBatchesInFlight) {
  // Narayanan et al. 2021 / Megatron's memory accounting: stage p keeps min(PP - p, M).
  for (const int pp : {2, 4})
    for (const int m : {1, 2, 3, 4, 8, 9}) {
      for (int p = 0; p < pp; ++p) {
        SCOPED_TRACE("PP " + std::to_string(pp) + " M " + std::to_string(m) + " stage " +
                     std::to_string(p));
        EXPECT_EQ(peak_pairs(pp, p, m), std::min(pp - p, m));
      }
    }
  // Without pipeline parallelism one micro-batch at a time, however many.
  EXPECT_EQ(peak_pairs(1, 0, 1), 1);
  EXPECT_EQ(peak_pairs(1, 0, 8), 1);
}

TEST(MemoryReportPipeline, InterleavedFirstStageHoldsMegatronsPenalty) {
  // Megatron's theoretical memory: the first stage holds PP micro-batches of its whole stage
  // (v chunks) times 1 + (PP - 1) / (PP v): PP v + PP - 1 chunks' micro-batches.
  struct Case {
    int pp, vpp, m;
  };
  for (const Case c : {Case{2, 2, 4}, Case{2, 2, 8}, Case{4, 2, 8}, Case{4, 3, 8}, Case{4, 2, 16},
                       Case{3, 2, 6}}) {
    SCOPED_TRACE("PP " + std::to_string(c.pp) + " VPP " + std::to_string(c.vpp) + " M " +
                 std::to_string(c.m));
    const double penalty = 1.0 + (c.pp - 1.0) / (c.pp * c.vpp);
    EXPECT_EQ(peak_pairs(c.pp, 0, c.m, c.vpp), std::llround(c.pp * c.vpp * penalty));
    // More than 1F1B's PP micro-batches of the same layers (PP v chunk micro-batches).
    EXPECT_GT(peak_pairs(c.pp, 0, c.m, c.vpp), c.pp * c.vpp);
  }
}

// PP 2, VPP 2, M 4 (G = 2), walked by hand from Megatron's order (pipeline_schedule.h): virtual
// micro-batches k = 0..7 are (mb 0, c 0) (mb 1, c 0) (mb 0, c 1) (mb 1, c 1), then the same for
// mb 2, 3; backward k runs chunk 1 - (its forward's chunk).
//   rank 1 (warm-up 2): F(0,0) F(1,0) | F(0,1) B(0,1) F(1,1) B(1,1) F(2,0) B(0,0) F(3,0) B(1,0)
//     F(2,1) B(2,1) F(3,1) B(3,1) | B(2,0) B(3,0); held after each forward (chunk 0, chunk 1):
//     (1,0) (2,0) (2,1) (2,1) (3,0) (3,0) (2,1) (2,1)
//   rank 0 (warm-up 4): F(0,0) F(1,0) F(0,1) F(1,1) | F(2,0) B(0,1) F(3,0) B(1,1) F(2,1) B(0,0)
//     F(3,1) B(1,0) ...; held: (1,0) (2,0) (2,1) (2,2) (3,2) (4,1) (4,1) (3,2)
TEST(MemoryReportPipeline, InterleavedPeakIsTheLargestSumOverTheWalk) {
  const auto run = [](int rank, std::vector<int64_t> bytes) {
    return in_flight_activations(pipeline_schedule(2, rank, 4, 2), bytes);
  };
  EXPECT_EQ(peak_pairs(2, 1, 4, 2), 3);
  EXPECT_EQ(peak_pairs(2, 0, 4, 2), 5);
  // A heavy last chunk (the loss): rank 1 peaks at (2,1), not at (3,0).
  InFlightActivations a = run(1, {1, 100});
  EXPECT_EQ(a.bytes, 102);
  EXPECT_EQ(a.pairs, 3);
  EXPECT_EQ(a.per_chunk, (std::vector<int64_t>{2, 1}));
  // A heavy first chunk: at (3,0), 300, less than the per-chunk maxima's 3 x 100 + 1.
  a = run(1, {100, 1});
  EXPECT_EQ(a.bytes, 300);
  EXPECT_EQ(a.per_chunk, (std::vector<int64_t>{3, 0}));
  a = run(0, {1, 100});
  EXPECT_EQ(a.bytes, 203);
  EXPECT_EQ(a.per_chunk, (std::vector<int64_t>{3, 2}));
  a = run(0, {100, 1});
  EXPECT_EQ(a.bytes, 401);
  EXPECT_EQ(a.pairs, 5);
  EXPECT_EQ(a.per_chunk, (std::vector<int64_t>{4, 1}));
}

TEST(MemoryReportPipeline, PeakIsTheMaximumOverMomentsOfTheSum) {
  const auto action = [](PipelineActionKind kind, int mb, int chunk) {
    PipelineAction a;
    a.kind = kind;
    a.microbatch = mb;
    a.chunk = chunk;
    return a;
  };
  using K = PipelineActionKind;
  // Chunk 0 holds two micro-batches, then none; chunk 1 one, after: 2 x 10 at most, never
  // 2 x 10 + 7 (the sum of each chunk's own maximum). p2p actions hold nothing.
  const std::vector<PipelineAction> actions = {
      action(K::forward, 0, 0),  action(K::send_forward, 0, 0), action(K::forward, 1, 0),
      action(K::backward, 0, 0), action(K::backward, 1, 0),     action(K::forward, 0, 1),
      action(K::backward, 0, 1)};
  const InFlightActivations a = in_flight_activations(actions, {10, 7});
  EXPECT_EQ(a.bytes, 20);
  EXPECT_EQ(a.pairs, 2);
  EXPECT_EQ(a.per_chunk, (std::vector<int64_t>{2, 0}));
  // A chunk of no bytes still counts its pairs.
  EXPECT_EQ(in_flight_activations(actions, {0, 0}).pairs, 2);
  // Refusals: a chunk this rank does not hold, a backward of a pair not in flight.
  EXPECT_THROW(in_flight_activations(actions, {10}), Error);
  EXPECT_THROW(in_flight_activations({action(K::backward, 0, 0)}, {10}), Error);
}

// ---- what pipeline ranks report ---------------------------------------------------------------

std::vector<int32_t> tokens() {
  std::vector<int32_t> t(4096);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>((i * 7) % 251);
  return t;
}

constexpr int64_t kSeq = 8, kMicroBatch = 2, kMicroBatches = 4;

// One micro-batch's bytes of decoder layers [first, first + n) of f32 `c`, MTP depths [0, mtp),
// plus the final norm's and output layer's 2 h when `loss`: layer_activations summed here, on
// one TP and CP rank (every per-token element whole).
int64_t layers_bytes(const nn::ModelConfig& c, int64_t first, int64_t n, int64_t mtp, bool loss) {
  double per_token = loss ? 2.0 * static_cast<double>(c.hidden_size) : 0.0;
  const auto add = [&](int64_t l) {
    const LayerActivations a = layer_activations(c, l);
    per_token += a.between + a.gathered + a.split;
  };
  for (int64_t l = first; l < first + n; ++l) add(l);
  for (int64_t d = 0; d < mtp; ++d) add(c.num_layers + d);
  return std::llround(per_token * kSeq * kMicroBatch * 4);
}

// Every rank's figures (rank order) of `config` under PP `pp` x VPP `vpp` (DP 1).
std::vector<RankMemory> memory_on_pipeline(const nn::ModelConfig& config, int pp, int vpp) {
  std::vector<RankMemory> gathered;
  std::mutex mutex;
  dist::run_local(pp, [&](std::shared_ptr<dist::ProcessGroup> world) {
    dist::ParallelConfig mapping;
    mapping.pipeline_model_parallel_size = pp;
    auto state = std::make_shared<dist::ParallelState>(world, mapping);
    nn::PipelineLayoutOptions o;
    o.num_layers = config.num_layers;
    o.mtp_num_layers = config.mtp_num_layers;
    o.pipeline_size = pp;
    o.virtual_stages = vpp;
    const nn::PipelineLayout layout(o);
    std::vector<nn::PipelineStage> chunks;
    for (int v = 0; v < layout.virtual_stages(); ++v)
      chunks.push_back(layout.stage_of(state->pp_rank(), v));
    nn::GPTModel model(config, DType::f32, Device::cpu(), 1234, nn::model_groups_of(*state, false),
                       chunks);
    TokenArraySource source(tokens(), kSeq, kMicroBatch, false);
    TrainConfig tc;
    tc.micro_batch_size = kMicroBatch;
    tc.global_batch_size = kMicroBatch * kMicroBatches;
    tc.seq_length = kSeq;
    tc.train_iters = 1;
    tc.schedule.lr = 1e-3;
    Trainer trainer(model, tc, source, nullptr, TrainParallel{state, {}});
    EXPECT_EQ(trainer.num_microbatches(), kMicroBatches);
    const std::vector<RankMemory> all =
        gather_rank_memory(rank_memory(model, trainer), world, Device::cpu());
    std::lock_guard lock(mutex);
    if (world->rank() == 0) gathered = all;
  });
  return gathered;
}

TEST(MemoryReportPipeline, TwoStagesHoldTheirLayersTimesTheMicroBatchesInFlight) {
  nn::ModelConfig c = default_train_model();  // 4 MoE layers
  c.mtp_num_layers = 1;
  c.validate();
  const std::vector<RankMemory> ranks = memory_on_pipeline(c, 2, 1);
  ASSERT_EQ(ranks.size(), 2u);
  // The first stage: layers 0, 1, two micro-batches in flight, no output layer term.
  const int64_t first = layers_bytes(c, 0, 2, 0, false);
  EXPECT_EQ(ranks[0].pipeline_size, 2);
  EXPECT_EQ(ranks[0].in_flight, 2);
  EXPECT_EQ(ranks[0].activation_bytes, 2 * first);
  // The last: layers 2, 3, the MTP depth and the output layer's inputs, one micro-batch.
  const int64_t last = layers_bytes(c, 2, 2, 1, true);
  EXPECT_EQ(ranks[1].in_flight, 1);
  EXPECT_EQ(ranks[1].activation_bytes, last);
  // One micro-batch of both stages is the whole model's.
  ActivationShape shape;
  shape.micro_batch_size = kMicroBatch;
  shape.seq_length = kSeq;
  shape.dtype = DType::f32;
  EXPECT_NEAR(static_cast<double>(first + last),
              static_cast<double>(activation_bytes_estimate(c, shape)), 1.0);
  // The output layer's term is on the last stage alone: 2 h per token.
  EXPECT_EQ(last - layers_bytes(c, 2, 2, 1, false), 2 * c.hidden_size * kSeq * kMicroBatch * 4);

  const std::string report = format_memory_report(ranks);
  EXPECT_NE(report.find("| activations in flight (estimate: peak of the pipeline schedule"),
            std::string::npos)
      << report;
  EXPECT_EQ(report.find("one micro-batch"), std::string::npos) << report;
  EXPECT_NE(report.find(" (2 in flight)\n  rank 1:"), std::string::npos) << report;
  EXPECT_NE(report.find(" (1 in flight)\n"), std::string::npos) << report;
}

TEST(MemoryReportPipeline, MiddleStagesHoldNeitherEnd) {
  const nn::ModelConfig c = default_train_model();  // 4 layers: one a stage under PP 4
  const std::vector<RankMemory> ranks = memory_on_pipeline(c, 4, 1);
  ASSERT_EQ(ranks.size(), 4u);
  for (int p = 0; p < 4; ++p) {
    SCOPED_TRACE("stage " + std::to_string(p));
    const int64_t held = std::min<int64_t>(4 - p, kMicroBatches);
    EXPECT_EQ(ranks[static_cast<size_t>(p)].in_flight, held);
    EXPECT_EQ(ranks[static_cast<size_t>(p)].activation_bytes,
              held * layers_bytes(c, p, 1, 0, /*loss=*/p == 3));
  }
}

TEST(MemoryReportPipeline, InterleavedRanksPeakAtTheHeaviestMoment) {
  // PP 2, VPP 2 over 4 layers: rank 0 holds layers 0 and 2, rank 1 layers 1 and 3 + the loss.
  // Every layer keeps the same (x); with the loss's y > 0 more on rank 1's chunk 1, the walk in
  // InterleavedPeakIsTheLargestSumOverTheWalk peaks at (2, 1): 2 x + (x + y), 3 pairs; rank 0
  // at 5 pairs of x.
  const nn::ModelConfig c = default_train_model();
  const std::vector<RankMemory> ranks = memory_on_pipeline(c, 2, 2);
  ASSERT_EQ(ranks.size(), 2u);
  const int64_t x = layers_bytes(c, 0, 1, 0, false);
  ASSERT_EQ(layers_bytes(c, 3, 1, 0, false), x);
  EXPECT_EQ(ranks[0].in_flight, 5);
  EXPECT_EQ(ranks[0].activation_bytes, 5 * x);
  EXPECT_EQ(ranks[1].in_flight, 3);
  EXPECT_EQ(ranks[1].activation_bytes, 2 * x + layers_bytes(c, 3, 1, 0, true));
}

TEST(MemoryReportPipeline, OneRankKeepsOneMicroBatchAndItsWording) {
  nn::ModelConfig c = default_train_model();
  c.mtp_num_layers = 1;
  c.validate();
  nn::GPTModel model(c, DType::f32, Device::cpu(), 1234);
  TokenArraySource source(tokens(), kSeq, kMicroBatch, false);
  TrainConfig tc;
  tc.micro_batch_size = kMicroBatch;
  tc.global_batch_size = kMicroBatch * kMicroBatches;
  tc.seq_length = kSeq;
  tc.train_iters = 1;
  tc.schedule.lr = 1e-3;
  Trainer trainer(model, tc, source);
  const RankMemory m = rank_memory(model, trainer);
  ActivationShape shape;
  shape.micro_batch_size = kMicroBatch;
  shape.seq_length = kSeq;
  shape.dtype = DType::f32;
  EXPECT_EQ(m.activation_bytes, activation_bytes_estimate(c, shape));
  EXPECT_EQ(m.activation_bytes, layers_bytes(c, 0, 4, 1, true));
  EXPECT_EQ(m.in_flight, 1);
  EXPECT_EQ(m.pipeline_size, 1);
  const std::string report = format_memory_report({m});
  EXPECT_NE(report.find("| activations of one micro-batch (estimate)\n"), std::string::npos)
      << report;
  EXPECT_EQ(report.find("in flight"), std::string::npos) << report;
}

TEST(MemoryReportPipeline, GatherCarriesTheInFlightCounts) {
  std::vector<RankMemory> gathered;
  dist::run_local(3, [&](std::shared_ptr<dist::ProcessGroup> world) {
    const int64_t r = world->rank();
    RankMemory mine{1, 2, 3, (r + 1) << 20, 5};
    mine.pipeline_size = 3;
    mine.in_flight = 3 - r;
    const std::vector<RankMemory> all = gather_rank_memory(mine, world, Device::cpu());
    if (r == 0) gathered = all;
  });
  ASSERT_EQ(gathered.size(), 3u);
  for (int64_t r = 0; r < 3; ++r) {
    EXPECT_EQ(gathered[static_cast<size_t>(r)].pipeline_size, 3);
    EXPECT_EQ(gathered[static_cast<size_t>(r)].in_flight, 3 - r);
  }
  EXPECT_NE(format_memory_report(gathered).find("|       3.00 (1 in flight)\n"), std::string::npos)
      << format_memory_report(gathered);
}

}  // namespace
}  // namespace moe::train
