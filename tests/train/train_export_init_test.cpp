// `moe train --train-iters 0 --save DIR`: the initial model is saved (how an initialisation is
// exported), with no --lr and no learning-rate schedule error; and the logged learning rate is
// Megatron's (the rate after the scheduler has stepped for the logged iteration).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "moe/train/lr_schedule.h"
#include "moe/train/train_args.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/train_run.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;

TEST(TrainExportInit, ZeroIterationsSaveTheInitialModel) {
  const fs::path dir =
      fs::temp_directory_path() / ("moe_export_init_" + std::to_string(getpid()));
  fs::remove_all(dir);
  const TrainRunConfig config = parse_train_args(
      {"--cpu", "--train-iters", "0", "--save", dir.string(), "--sample-tokens", "0"});
  const TrainRunResult r = run_training(config, standard_train_hooks(), nullptr);
  EXPECT_EQ(r.iterations, 0);
  EXPECT_EQ(latest_checkpoint_iteration(dir.string()), 0);
  fs::remove_all(dir);
}

TEST(TrainExportInit, AScheduleOfNoStepsIsAccepted) {
  LrScheduleConfig c;
  c.lr = 1e-3;
  c.decay_style = "cosine";
  EXPECT_DOUBLE_EQ(LrSchedule(c).lr(0), 1e-3);
  c.warmup_iters = 2;  // a warm-up longer than the decay is still refused, naming the flags
  EXPECT_ANY_THROW(LrSchedule{c});
}

}  // namespace
}  // namespace moe::train
