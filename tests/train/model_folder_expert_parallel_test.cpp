// --load of a model folder (load_model_folder_weights) into runs of an expert-parallel mapping,
// on Local threads in f64: each rank's model holds only its box of the expert tensors and reads
// only that; the fresh trainer takes its masters from the loaded weights. The losses of the
// first steps must equal those of one rank loading the same folder (1e-9 relative: the mappings
// sum in other orders), and no config field is reported as differing (the folder's config has
// no mapping, the run's has EP and ETP).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

#include "moe/checkpoint/model_io.h"
#include "moe/dist/local_backend.h"
#include "moe/train/batch_source.h"
#include "moe/train/train_checkpoint.h"
#include "train/parallel_training_suite.h"

namespace moe::train::test {
namespace {

namespace fs = std::filesystem;

constexpr int kSteps = 2;

class ModelFolderExpertParallel : public ::testing::TestWithParam<ParallelTrainingCase> {};

TEST_P(ModelFolderExpertParallel, LoadsEachRanksBoxAndTrainsAsOneRank) {
  const ParallelTrainingCase c = GetParam();
  const fs::path dir = fs::temp_directory_path() /
                       ("moe_model_folder_ep_" + std::to_string(::getpid()) + "_" + case_name(c));
  fs::remove_all(dir);
  ParallelTrainingCase one = c;
  one.ep = one.etp = 1;
  const TrainConfig tc = case_train_config();
  {
    // The folder: a model of other weights than any run below starts with.
    nn::GPTModel source(case_model(one, DType::f64), DType::f64, Device::cpu(), tc.seed + 17);
    checkpoint::save_model(dir.string(), source);
  }
  // One rank without any parallel state.
  std::vector<double> expected;
  {
    nn::GPTModel model(case_model(one, DType::f64), DType::f64, Device::cpu(), tc.seed);
    TokenArraySource data(case_tokens(model.config().vocab_size), kCaseSeqLength, 7, true);
    Trainer trainer(model, tc, data, nullptr, TrainParallel{});
    EXPECT_TRUE(load_model_folder_weights(dir.string(), model, &trainer).empty());
    for (int i = 0; i < kSteps; ++i) expected.push_back(trainer.train_step().loss);
  }
  std::mutex mutex;
  std::vector<std::string> failures;
  dist::run_local(c.world, [&](std::shared_ptr<dist::ProcessGroup> world) {
    nn::ModelGroups groups;
    const TrainParallel parallel = case_parallel(world, c, groups);
    nn::GPTModel model(case_model(c, DType::f64), DType::f64, Device::cpu(), tc.seed, groups);
    TokenArraySource data(case_tokens(model.config().vocab_size), kCaseSeqLength, 7, true);
    Trainer trainer(model, tc, data, nullptr, parallel);
    const std::vector<std::string> differences =
        load_model_folder_weights(dir.string(), model, &trainer);
    std::vector<double> losses;
    for (int i = 0; i < kSteps; ++i) losses.push_back(trainer.train_step().loss);
    std::lock_guard lock(mutex);
    const std::string rank = "rank " + std::to_string(world->rank()) + ": ";
    for (const std::string& d : differences) failures.push_back(rank + "differs: " + d);
    for (int i = 0; i < kSteps; ++i) {
      const double want = expected[static_cast<size_t>(i)], got = losses[static_cast<size_t>(i)];
      if (std::abs(got - want) > 1e-9 * std::abs(want))
        failures.push_back(rank + "step " + std::to_string(i + 1) + " loss " + std::to_string(got) +
                           ", one rank " + std::to_string(want));
    }
  });
  for (const std::string& f : failures) ADD_FAILURE() << f;
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Mappings, ModelFolderExpertParallel,
                         ::testing::Values(gqa_alltoall_case(2, 2, 1, false),
                                           gqa_alltoall_case(4, 2, 2, true),
                                           gqa_alltoall_case(4, 4, 1, true)),
                         [](const auto& info) { return case_name(info.param); });

}  // namespace
}  // namespace moe::train::test
