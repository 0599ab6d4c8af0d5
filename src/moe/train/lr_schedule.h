// Learning-rate and weight-decay schedules, as Megatron's OptimizerParamScheduler computes them
// (--lr, --min-lr, --lr-warmup-iters / --lr-warmup-samples / --lr-warmup-fraction,
// --lr-warmup-init, --lr-decay-style, --lr-decay-iters / --lr-decay-samples,
// --lr-wsd-decay-style, --lr-wsd-decay-iters / --lr-wsd-decay-samples, --start-weight-decay,
// --end-weight-decay, --weight-decay-incr-style).
//
// Megatron counts these schedules in samples: its scheduler steps by the global batch after each
// taken update (scheduler.step(increment=global_batch_size)), so its position n (num_steps) is
// the samples of the updates taken so far. The lengths, in samples (training.py's
// get_optimizer_param_scheduler):
//   iteration-based (--train-iters)       sample-based (--train-samples)
//   D  = --lr-decay-iters x G              --lr-decay-samples (default --train-samples)
//        (default --train-iters x G)
//   W  = --lr-warmup-iters x G             --lr-warmup-samples
//   Dw = --lr-wsd-decay-iters x G          --lr-wsd-decay-samples
//   T  = --train-iters x G                 --train-samples     (the weight-decay increment)
// with G the global batch; --lr-warmup-fraction X gives W = X D in both (not rounded: W may be
// fractional, as Megatron's). lr(n) is the rate of the update taken after n samples of updates
// (the first update uses lr(0), as Megatron's scheduler, stepped after each update, gives it):
//   warm-up    W > 0 and n <= W:  init + (max - init) n / W
//   constant   max
//   n > D:     min
//   inverse-square-root  max(min, max sqrt(max(W, 1)) / sqrt(max(n, 1)))
//   otherwise  r = (n - W) / (D - W),  lr = min + c (max - min) with
//     linear   c = 1 - r
//     cosine   c = (cos(pi r) + 1) / 2
//     WSD      c = 1 until n > D - Dw, then with s = (n - D + Dw) / Dw
//              linear 1 - s | cosine (cos(pi s) + 1) / 2 | exponential 2 (0.5^s) - 1 |
//              minus_sqrt 1 - sqrt(s)
// A schedule of no steps (decay and warm-up both 0, as --train-iters 0 resolves) is accepted and
// stays at max.
// The logged rate (Megatron's training_log): the scheduler steps after each taken update, so
// iteration k's log line shows lr(samples of the updates taken after k), the next update's rate.
// Weight decay over n: n > T: end; constant: end; linear / cosine go from start to end like the
// lr's linear / cosine decay with ratio n / T.
#pragma once

#include <cstdint>
#include <string>

namespace moe::train {

struct LrScheduleConfig {
  double lr = 1e-4;               // --lr (the peak)
  double min_lr = 0.0;            // --min-lr
  double warmup_init = 0.0;       // --lr-warmup-init
  int64_t warmup_iters = 0;       // --lr-warmup-iters
  std::string decay_style = "linear";  // --lr-decay-style constant|linear|cosine|
                                       // inverse-square-root|WSD
  int64_t decay_iters = 0;        // --lr-decay-iters (default: --train-iters)
  std::string wsd_decay_style = "exponential";  // --lr-wsd-decay-style
  int64_t wsd_decay_iters = 0;    // --lr-wsd-decay-iters
  double start_weight_decay = 0.01;  // --start-weight-decay (= --weight-decay by default)
  double end_weight_decay = 0.01;    // --end-weight-decay
  std::string weight_decay_incr_style = "constant";  // --weight-decay-incr-style
  int64_t train_iters = 0;        // the weight-decay schedule's length (iteration-based)
  // --lr-warmup-fraction X (< 0: not given): the warm-up is X x the decay length, instead of
  // --lr-warmup-iters / --lr-warmup-samples.
  double warmup_fraction = -1.0;
  // Sample-based schedules (--train-samples): train_samples > 0 makes every length samples and
  // the *_iters fields must be 0.
  int64_t train_samples = 0;      // --train-samples (the weight-decay schedule's length)
  int64_t warmup_samples = 0;     // --lr-warmup-samples
  int64_t decay_samples = 0;      // --lr-decay-samples (default: --train-samples)
  int64_t wsd_decay_samples = 0;  // --lr-wsd-decay-samples
  // Samples per update: an iteration-based schedule's lengths are x this, as Megatron's.
  int64_t global_batch_size = 1;

  bool sample_based() const { return train_samples > 0; }
};

class LrSchedule {
 public:
  // Checks the combination and names the flags of anything inconsistent.
  explicit LrSchedule(const LrScheduleConfig& config);
  // At Megatron's scheduler position: the samples of the updates taken so far (with the default
  // global_batch_size 1 of an iteration-based config, the updates taken).
  double lr(int64_t num_steps) const;
  double weight_decay(int64_t num_steps) const;
  const LrScheduleConfig& config() const { return config_; }
  // The lengths in samples (the header's W, D, Dw, T).
  double warmup_steps() const { return warmup_; }
  int64_t decay_steps() const { return decay_; }

 private:
  LrScheduleConfig config_;
  double warmup_ = 0.0;
  int64_t decay_ = 0, wsd_decay_ = 0, wd_incr_ = 0;
};

}  // namespace moe::train
