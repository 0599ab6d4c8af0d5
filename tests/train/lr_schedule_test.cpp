// The LR schedule against values worked out by hand from Megatron's formulas.
#include <cmath>
#include <numbers>

#include <gtest/gtest.h>

#include "moe/core/error.h"
#include "moe/train/lr_schedule.h"

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

}  // namespace
}  // namespace moe::train
