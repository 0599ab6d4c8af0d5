// Checkpoints that reload under another mapping (train_checkpoint.h, checkpoint_slices.h), on
// Local threads in f64: a run under mapping A saves at step 3; a run under mapping B loads it
// and trains 3 more steps; its losses of steps 4-6 and its final parameters must equal those of
// 6 steps under B from the start (1e-9 relative: the mappings sum in other orders). Pairs
// change the world size, TP (with and without sequence parallelism), CP, PP (stage count,
// virtual stages), EP, ETP, the distributed optimizer, and go from and to one rank without any
// parallel state (the one-rank checkpoint layout).
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <mutex>

#include "common/check.h"
#include "moe/dist/local_backend.h"
#include "moe/train/batch_source.h"
#include "moe/train/train_checkpoint.h"
#include "train/parallel_training_suite.h"

namespace moe::train::test {
namespace {

namespace fs = std::filesystem;

ParallelTrainingCase mapping(int world, int ep, int etp, bool zero, bool overlap = false) {
  return gqa_alltoall_case(world, ep, etp, zero, overlap);
}

// Pipeline parallelism on the case's 8-layer model (every pair of these below has 8 layers).
ParallelTrainingCase with_pp(ParallelTrainingCase c, int pp, int vpp = 1) {
  c.pp = pp;
  c.vpp = vpp;
  c.layers = 8;
  return c;
}

ParallelTrainingCase with_layers(ParallelTrainingCase c, int layers) {
  c.layers = layers;
  return c;
}

ParallelTrainingCase with_tp(ParallelTrainingCase c, int tp, bool sequence_parallel, int cp = 1) {
  c.tp = tp;
  c.sequence_parallel = sequence_parallel;
  c.cp = cp;
  return c;
}

// What a rank ends with: losses of the steps it ran, and its parameters (flattened, f64).
struct RankResult {
  std::vector<double> losses;
  std::map<std::string, Tensor> params;
};

// Runs `c` (world 0: one rank without a parallel state) for `steps` steps, loading `load` first
// and saving to `save` at the end when given. Returns every rank's result.
std::vector<RankResult> run(const ParallelTrainingCase& c, int steps, const std::string& load,
                            const std::string& save) {
  const int world = std::max(c.world, 1);
  std::vector<RankResult> out(static_cast<size_t>(world));
  std::mutex mutex;
  auto body = [&](const std::shared_ptr<dist::ProcessGroup>& group) {
    ParallelTrainingCase mc = c;
    nn::ModelGroups groups;
    TrainParallel parallel;
    if (c.world > 0)
      parallel = case_parallel(group, c, groups);
    else
      mc.ep = mc.etp = mc.tp = mc.cp = 1;
    TrainConfig tc = case_train_config();
    tc.train_iters = 6;
    const nn::ModelConfig config = case_model(mc, DType::f64);
    nn::GPTModel model(config, DType::f64, Device::cpu(), tc.seed, groups,
                       case_chunks(mc, config, parallel));
    TokenArraySource source(case_tokens(model.config().vocab_size), kCaseSeqLength, 7, true);
    Trainer trainer(model, tc, source, nullptr, parallel);
    if (!load.empty()) load_training_checkpoint(load, model, &trainer);
    RankResult r;
    for (int i = 0; i < steps; ++i) r.losses.push_back(trainer.train_step().loss);
    if (!save.empty()) save_training_checkpoint(save, model, trainer, nlohmann::json::object());
    for (nn::Parameter* p : model.parameters())
      r.params[p->name] = p->value.to(DType::f64).reshape({p->value.numel()});
    std::lock_guard lock(mutex);
    out[static_cast<size_t>(group ? group->rank() : 0)] = std::move(r);
  };
  if (c.world == 0)
    body(nullptr);
  else
    dist::run_local(world, body);
  return out;
}

class Resharding
    : public ::testing::TestWithParam<std::pair<ParallelTrainingCase, ParallelTrainingCase>> {};

TEST_P(Resharding, ResumesAsIfNothingChanged) {
  const auto [a, b] = GetParam();
  const fs::path dir = fs::temp_directory_path() / ("moe_resharding_" + std::to_string(::getpid()) +
                                                    "_" + case_name(a) + "_to_" + case_name(b));
  fs::remove_all(dir);
  run(a, 3, "", dir.string());
  ASSERT_TRUE(fs::exists(dir / "iter_0000003"));
  const std::vector<RankResult> resumed = run(b, 3, dir.string(), "");
  const std::vector<RankResult> straight = run(b, 6, "", "");
  for (size_t r = 0; r < straight.size(); ++r) {
    for (int i = 0; i < 3; ++i)
      EXPECT_NEAR(resumed[r].losses[static_cast<size_t>(i)],
                  straight[r].losses[static_cast<size_t>(i + 3)], 1e-9)
          << "rank " << r << ", step " << i + 4;
    for (const auto& [name, value] : straight[r].params)
      EXPECT_TRUE(moe::test::close(resumed[r].params.at(name), value, 1e-9,
                                   "rank " + std::to_string(r) + " " + name));
  }
  fs::remove_all(dir);
}

std::string pair_name(const ParallelTrainingCase& a, const ParallelTrainingCase& b) {
  auto n = [](const ParallelTrainingCase& c) {
    return c.world == 0 ? std::string("one_rank") : case_name(c).substr(4);  // drop "gqa_"
  };
  return n(a) + "_to_" + n(b);
}

INSTANTIATE_TEST_SUITE_P(
    Pairs, Resharding,
    ::testing::Values(
        std::pair{mapping(2, 2, 1, false), mapping(4, 2, 1, true)},        // world 2 -> 4, ZeRO on
        std::pair{mapping(4, 4, 1, true, true), mapping(2, 1, 1, false)},  // EP 4 -> 1, off
        std::pair{mapping(0, 1, 1, false), mapping(2, 2, 1, true)},        // one rank -> EP 2
        std::pair{mapping(4, 2, 2, true), mapping(0, 1, 1, false)},        // ETP 2 -> one rank
        std::pair{mapping(2, 1, 1, true), mapping(4, 1, 2, true)},         // DP 2 -> ETP 2, DP 4
        std::pair{mapping(4, 2, 1, true), mapping(4, 4, 1, true)},         // same world, EP 2 -> 4
        // TP 2 (sequence parallel) -> one rank; one rank -> TP 2 x EP 2 with ZeRO; TP 4 -> TP 2
        // with DP 2 and ZeRO; TP 2 -> EP 2 (no TP).
        std::pair{with_tp(mapping(2, 1, 1, false), 2, true), mapping(0, 1, 1, false)},
        std::pair{mapping(0, 1, 1, false), with_tp(mapping(4, 2, 1, true), 2, true)},
        std::pair{with_tp(mapping(4, 1, 1, false), 4, false),
                  with_tp(mapping(4, 1, 1, true), 2, true)},
        std::pair{with_tp(mapping(4, 2, 1, true, true), 2, true), mapping(2, 2, 1, false)},
        // CP 2 -> one rank; TP 2 (SP) x CP 2 -> CP 2 x DP 2 with ZeRO.
        std::pair{with_tp(mapping(2, 1, 1, false), 1, false, 2), mapping(0, 1, 1, false)},
        std::pair{with_tp(mapping(4, 1, 1, false), 2, true, 2),
                  with_tp(mapping(4, 1, 1, true), 1, false, 2)},
        // PP 2 -> PP 4; PP 4 with VPP 2 -> one rank; one rank -> PP 2 x EP 2 with ZeRO.
        std::pair{with_pp(mapping(2, 1, 1, false), 2), with_pp(mapping(4, 1, 1, false), 4)},
        std::pair{with_pp(mapping(4, 1, 1, false), 4, 2), with_pp(mapping(0, 1, 1, false), 1)},
        std::pair{with_pp(mapping(0, 1, 1, false), 1), with_pp(mapping(4, 2, 1, true), 2)},
        // PP 4 of 4 layers: rank 0 holds the dense first layer, no router -> one rank.
        std::pair{with_layers(with_pp(mapping(4, 1, 1, false), 4), 4),
                  with_layers(with_pp(mapping(0, 1, 1, false), 1), 4)}),
    [](const auto& info) { return pair_name(info.param.first, info.param.second); });

}  // namespace
}  // namespace moe::train::test
