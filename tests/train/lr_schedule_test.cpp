// The LR schedule against values worked out by hand from Megatron's formulas, and against
// Megatron's scheduler itself (megatron_scheduler_reference.h) for iteration- and sample-based
// runs.
#include <cmath>
#include <numbers>

#include <gtest/gtest.h>

#include "common/check.h"
#include "moe/core/error.h"
#include "moe/train/lr_schedule.h"
#include "moe/train/trainer.h"
#include "train/megatron_scheduler_reference.h"

namespace moe::train {
namespace {

LrScheduleConfig base(const std::string& style) {
  LrScheduleConfig c;
  c.lr = 1.0;
  c.min_lr = 0.1;
  c.warmup_iters = 10;
  c.decay_iters = 110;
  c.decay_style = style;
  return c;
}

TEST(LrSchedule, WarmupIsLinearFromTheInitValue) {
  LrScheduleConfig c = base("cosine");
  c.warmup_init = 0.2;
  const LrSchedule s(c);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.2);  // the first step (Megatron's step(0))
  EXPECT_DOUBLE_EQ(s.lr(5), 0.6);
  EXPECT_DOUBLE_EQ(s.lr(10), 1.0);
}

TEST(LrSchedule, DecayStyles) {
  EXPECT_DOUBLE_EQ(LrSchedule(base("linear")).lr(60), 0.1 + 0.5 * 0.9);
  EXPECT_DOUBLE_EQ(LrSchedule(base("cosine")).lr(60), 0.1 + 0.5 * 0.9);  // cos(pi/2) = 0
  EXPECT_NEAR(LrSchedule(base("cosine")).lr(35),
              0.1 + 0.9 * 0.5 * (std::cos(std::numbers::pi * 0.25) + 1), 1e-15);
  EXPECT_DOUBLE_EQ(LrSchedule(base("constant")).lr(1000), 1.0);
  EXPECT_DOUBLE_EQ(LrSchedule(base("linear")).lr(111), 0.1);  // past the decay: min
  EXPECT_DOUBLE_EQ(LrSchedule(base("inverse-square-root")).lr(40), std::sqrt(10.0 / 40.0));
  EXPECT_DOUBLE_EQ(LrSchedule(base("inverse-square-root")).lr(100000), 0.1);  // floored
}

TEST(LrSchedule, WsdHoldsThenAnneals) {
  LrScheduleConfig c = base("WSD");
  c.wsd_decay_iters = 20;  // anneals over iterations 90..110
  for (const char* style : {"linear", "cosine", "exponential", "minus_sqrt"}) {
    SCOPED_TRACE(style);
    c.wsd_decay_style = style;
    const LrSchedule s(c);
    EXPECT_DOUBLE_EQ(s.lr(50), 1.0);
    EXPECT_DOUBLE_EQ(s.lr(90), 1.0);
    EXPECT_NEAR(s.lr(110), 0.1, 1e-15);
  }
  c.wsd_decay_style = "exponential";
  EXPECT_NEAR(LrSchedule(c).lr(100), 0.1 + 0.9 * (2 * std::pow(0.5, 0.5) - 1), 1e-15);
  c.wsd_decay_style = "minus_sqrt";
  EXPECT_NEAR(LrSchedule(c).lr(95), 0.1 + 0.9 * (1 - std::sqrt(0.25)), 1e-15);
}

TEST(LrSchedule, WeightDecayIncrement) {
  LrScheduleConfig c = base("constant");
  c.start_weight_decay = 0.0;
  c.end_weight_decay = 0.1;
  c.train_iters = 100;
  c.weight_decay_incr_style = "linear";
  EXPECT_DOUBLE_EQ(LrSchedule(c).weight_decay(25), 0.025);
  c.weight_decay_incr_style = "cosine";
  EXPECT_NEAR(LrSchedule(c).weight_decay(50), 0.05, 1e-15);
  c.weight_decay_incr_style = "constant";
  EXPECT_DOUBLE_EQ(LrSchedule(c).weight_decay(25), 0.1);
}

TEST(LrSchedule, BadFlagsAreNamed) {
  LrScheduleConfig c = base("cosine");
  c.decay_style = "step";
  EXPECT_THROW(LrSchedule{c}, Error);
  c = base("cosine");
  c.decay_iters = 5;  // shorter than the warm-up
  try {
    LrSchedule s(c);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--lr-decay-iters"), std::string::npos) << e.what();
  }
  c = base("WSD");
  c.wsd_decay_iters = 0;
  EXPECT_THROW(LrSchedule{c}, Error);
  c = base("linear");
  c.min_lr = 2.0;
  EXPECT_THROW(LrSchedule{c}, Error);
}

// ---- against Megatron's scheduler ------------------------------------------------------------

// The same run as Megatron's arguments.
test::MegatronSchedulerArgs megatron_args(const TrainConfig& t) {
  const LrScheduleConfig& l = t.schedule;
  test::MegatronSchedulerArgs a;
  if (t.train_samples > 0) {
    a.train_samples = t.train_samples;
    if (l.decay_samples > 0) a.lr_decay_samples = l.decay_samples;
    if (l.wsd_decay_samples > 0) a.lr_wsd_decay_samples = l.wsd_decay_samples;
    a.lr_warmup_samples = l.warmup_samples;
  } else {
    a.train_iters = t.train_iters;
    if (l.decay_iters > 0) a.lr_decay_iters = l.decay_iters;
    if (l.wsd_decay_iters > 0) a.lr_wsd_decay_iters = l.wsd_decay_iters;
    a.lr_warmup_iters = l.warmup_iters;
  }
  if (l.warmup_fraction >= 0) a.lr_warmup_fraction = l.warmup_fraction;
  a.global_batch_size = t.global_batch_size;
  a.lr = l.lr;
  a.min_lr = l.min_lr;
  a.lr_warmup_init = l.warmup_init;
  a.lr_decay_style = l.decay_style;
  a.lr_wsd_decay_style = l.wsd_decay_style;
  a.start_weight_decay = l.start_weight_decay;
  a.end_weight_decay = l.end_weight_decay;
  a.weight_decay_incr_style = l.weight_decay_incr_style;
  return a;
}

// Every update of the run and a few past its end: the rate and weight decay of the update taken
// after k updates (Megatron: the optimizer's values after k steps of the global batch).
void expect_megatrons(const TrainConfig& t) {
  test::MegatronScheduler megatron(megatron_args(t));
  const LrSchedule schedule(resolved_schedule(t));
  EXPECT_EQ(megatron.train_iters(), t.train_iters);
  const int64_t G = t.global_batch_size;
  for (int64_t k = 0; k <= t.train_iters + 3; ++k) {
    EXPECT_DOUBLE_EQ(schedule.lr(k * G), megatron.lr()) << "after " << k << " updates";
    EXPECT_DOUBLE_EQ(schedule.weight_decay(k * G), megatron.wd()) << "after " << k << " updates";
    megatron.step(G);
  }
}

TrainConfig run_of(int64_t global_batch, int64_t train_iters, int64_t train_samples) {
  TrainConfig t;
  t.micro_batch_size = 1;
  t.global_batch_size = global_batch;
  t.train_samples = train_samples;
  t.train_iters = train_samples > 0 ? t.iterations_of_samples() : train_iters;
  t.schedule.lr = 3e-3;
  t.schedule.min_lr = 3e-5;
  t.schedule.warmup_init = 1e-5;
  return t;
}

TEST(LrScheduleMegatron, SampleBasedSchedulesStepInSamples) {
  // --train-samples 1003 of global batches of 8: 125 iterations, the last 3 samples untrained;
  // the decay defaults to the 1003 samples.
  for (const char* style : {"linear", "cosine", "constant", "inverse-square-root", "WSD"}) {
    SCOPED_TRACE(style);
    TrainConfig t = run_of(8, 0, 1003);
    EXPECT_EQ(t.train_iters, 125);
    t.schedule.decay_style = style;
    t.schedule.warmup_samples = 100;  // not a multiple of the batch: 12.5 iterations
    t.schedule.wsd_decay_samples = 301;
    t.schedule.wsd_decay_style = "cosine";
    t.schedule.weight_decay_incr_style = "cosine";
    t.schedule.start_weight_decay = 0.0;
    t.schedule.end_weight_decay = 0.1;
    expect_megatrons(t);
    t.schedule.decay_samples = 700;  // decays before the end: min after it
    t.schedule.wsd_decay_samples = 250;
    expect_megatrons(t);
    t.schedule.warmup_samples = 0;
    t.schedule.warmup_fraction = 0.13;  // 91 samples of the 700
    expect_megatrons(t);
  }
  const LrSchedule s(resolved_schedule(run_of(8, 0, 1003)));
  EXPECT_EQ(s.decay_steps(), 1003);
  // The rate of the 2nd update (after 8 samples) of a linear decay over 1003 samples.
  EXPECT_DOUBLE_EQ(s.lr(8), 3e-5 + (3e-3 - 3e-5) * (1.0 - 8.0 / 1003.0));
}

TEST(LrScheduleMegatron, IterationBasedSchedulesAreMegatronsInSamplesToo) {
  for (const char* style : {"linear", "cosine", "constant", "inverse-square-root", "WSD"}) {
    SCOPED_TRACE(style);
    TrainConfig t = run_of(8, 40, 0);
    t.schedule.decay_style = style;
    t.schedule.warmup_iters = 5;
    t.schedule.decay_iters = 30;
    t.schedule.wsd_decay_iters = 7;
    t.schedule.weight_decay_incr_style = "linear";
    t.schedule.start_weight_decay = 0.02;
    t.schedule.end_weight_decay = 0.2;
    expect_megatrons(t);
    // A warm-up fraction that is not a whole number of iterations: 0.1 x 37 = 3.7 iterations
    // (29.6 samples), not rounded down to 3 as the iterations count.
    t.schedule.warmup_iters = 0;
    t.schedule.decay_iters = 37;
    t.schedule.warmup_fraction = 0.1;
    expect_megatrons(t);
    // No warm-up: inverse-square-root's max(W, 1) is one sample, not one iteration.
    t.schedule.warmup_fraction = -1.0;
    expect_megatrons(t);
  }
  TrainConfig t = run_of(8, 40, 0);
  t.schedule.decay_style = "cosine";
  t.schedule.decay_iters = 37;
  t.schedule.warmup_fraction = 0.1;
  const LrSchedule s(resolved_schedule(t));
  EXPECT_DOUBLE_EQ(s.warmup_steps(), 0.1 * 37 * 8);
  EXPECT_DOUBLE_EQ(s.lr(3 * 8), 1e-5 + (3e-3 - 1e-5) * 24.0 / (0.1 * 37 * 8));  // still warming
  t.schedule.decay_style = "inverse-square-root";
  t.schedule.warmup_fraction = -1.0;
  EXPECT_DOUBLE_EQ(LrSchedule(resolved_schedule(t)).lr(4 * 8), 3e-3 / std::sqrt(32.0));
}

// The message of the schedule's refusal of `t` ("" when it accepts it).
std::string refusal(const TrainConfig& t) {
  return moe::test::message_of([&] { LrSchedule{resolved_schedule(t)}; });
}

TEST(LrScheduleMegatron, IterationAndSampleFlagsDoNotMix) {
  TrainConfig t = run_of(8, 0, 1000);
  t.schedule.decay_iters = 50;
  EXPECT_NE(refusal(t).find("--lr-decay-samples"), std::string::npos) << refusal(t);
  t = run_of(8, 100, 0);
  t.schedule.warmup_samples = 50;
  EXPECT_NE(refusal(t).find("--train-samples"), std::string::npos) << refusal(t);
  t = run_of(8, 0, 1000);
  t.schedule.decay_style = "WSD";
  EXPECT_NE(refusal(t).find("--lr-wsd-decay-samples"), std::string::npos) << refusal(t);
  t.schedule.wsd_decay_samples = 1001;  // longer than the decay
  EXPECT_NE(refusal(t).find("--lr-wsd-decay-samples"), std::string::npos) << refusal(t);
  t.schedule.wsd_decay_samples = 1000;
  EXPECT_EQ(refusal(t), "");
  t.schedule.warmup_samples = 1000;  // as long as the decay
  EXPECT_NE(refusal(t).find("--lr-warmup-samples"), std::string::npos) << refusal(t);
}

}  // namespace
}  // namespace moe::train
