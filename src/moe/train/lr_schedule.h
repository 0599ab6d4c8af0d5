// Learning-rate and weight-decay schedules, as Megatron's OptimizerParamScheduler computes them
// (--lr, --min-lr, --lr-warmup-iters / --lr-warmup-fraction, --lr-warmup-init,
// --lr-decay-style, --lr-decay-iters, --lr-wsd-decay-style, --lr-wsd-decay-iters,
// --start-weight-decay, --end-weight-decay, --weight-decay-incr-style).
//
// Megatron counts these schedules in samples (iterations x global batch); with a fixed global
// batch that is the same curve over iterations, which is what this class counts. lr(n) is the
// rate of the optimizer step taken after n completed steps (so the first step uses lr(0), as
// Megatron's scheduler, stepped after each optimizer step, gives it):
//   warm-up    n <= W (W > 0):  init + (max - init) n / W
//   constant   max
//   n > D:     min                                         (D = decay iters)
//   otherwise  r = (n - W) / (D - W),  lr = min + c (max - min) with
//     linear   c = 1 - r
//     cosine   c = (cos(pi r) + 1) / 2
//     inverse-square-root  lr = max(min, max sqrt(max(W,1)) / sqrt(max(n,1)))   (no D)
//     WSD      c = 1 until n > D - Dw (Dw = --lr-wsd-decay-iters), then with s = (n - D + Dw)/Dw
//              linear 1 - s | cosine (cos(pi s) + 1) / 2 | exponential 2 (0.5^s) - 1 |
//              minus_sqrt 1 - sqrt(s)
// A schedule of no steps (decay and warm-up iters both 0, as --train-iters 0 resolves) is
// accepted and stays at max.
// The logged rate (Megatron's training_log): the scheduler steps after each taken update, so
// iteration k's log line shows lr(updates taken after k), the rate of the next update.
// Weight decay over n in [0, N] (N = --train-iters): constant = end; linear / cosine go from
// start to end like the lr's linear / cosine decay.
#pragma once

#include <cstdint>
#include <string>

namespace moe::train {

struct LrScheduleConfig {
  double lr = 1e-4;               // --lr (the peak)
  double min_lr = 0.0;            // --min-lr
  double warmup_init = 0.0;       // --lr-warmup-init
  int64_t warmup_iters = 0;       // --lr-warmup-iters (or --lr-warmup-fraction x decay iters)
  std::string decay_style = "linear";  // --lr-decay-style constant|linear|cosine|
                                       // inverse-square-root|WSD
  int64_t decay_iters = 0;        // --lr-decay-iters (default: --train-iters)
  std::string wsd_decay_style = "exponential";  // --lr-wsd-decay-style
  int64_t wsd_decay_iters = 0;    // --lr-wsd-decay-iters
  double start_weight_decay = 0.01;  // --start-weight-decay (= --weight-decay by default)
  double end_weight_decay = 0.01;    // --end-weight-decay
  std::string weight_decay_incr_style = "constant";  // --weight-decay-incr-style
  int64_t train_iters = 0;        // the weight-decay schedule's length
};

class LrSchedule {
 public:
  // Checks the combination and names the flags of anything inconsistent.
  explicit LrSchedule(const LrScheduleConfig& config);
  double lr(int64_t completed_steps) const;
  double weight_decay(int64_t completed_steps) const;
  const LrScheduleConfig& config() const { return config_; }

 private:
  LrScheduleConfig config_;
};

}  // namespace moe::train
