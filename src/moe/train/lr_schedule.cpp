#include "moe/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>

#include "moe/core/error.h"

namespace moe::train {
namespace {

bool one_of(const std::string& value, std::initializer_list<const char*> choices) {
  return std::any_of(choices.begin(), choices.end(),
                     [&](const char* c) { return value == c; });
}

// An iteration-based length in samples (x the global batch), as Megatron multiplies it.
int64_t in_samples(int64_t iterations, int64_t global_batch, const char* flag) {
  MOE_CHECK(iterations >= 0, flag, " must be >= 0, got ", iterations);
  MOE_CHECK(iterations <= std::numeric_limits<int64_t>::max() / global_batch, flag, " ",
            iterations, " x the global batch ", global_batch, " samples overflows");
  return iterations * global_batch;
}

}  // namespace

LrSchedule::LrSchedule(const LrScheduleConfig& c) : config_(c) {
  MOE_CHECK(c.lr >= 0 && c.min_lr >= 0 && c.min_lr <= c.lr, "--min-lr ", c.min_lr,
            " must be in [0, --lr ", c.lr, "]");
  MOE_CHECK(c.warmup_init >= 0, "--lr-warmup-init must be >= 0, got ", c.warmup_init);
  MOE_CHECK(one_of(c.decay_style, {"constant", "linear", "cosine", "inverse-square-root", "WSD"}),
            "--lr-decay-style ", c.decay_style,
            " is not one of constant, linear, cosine, inverse-square-root, WSD");
  MOE_CHECK(c.global_batch_size >= 1, "the schedule's global batch must be positive, got ",
            c.global_batch_size);
  MOE_CHECK(c.warmup_fraction < 0 || c.warmup_fraction <= 1.0,
            "--lr-warmup-fraction must be in [0, 1], got ", c.warmup_fraction);
  const bool samples = c.sample_based();
  // The flags of this kind of schedule, for the messages.
  const char* decay_flag = samples ? "--lr-decay-samples" : "--lr-decay-iters";
  const char* wsd_flag = samples ? "--lr-wsd-decay-samples" : "--lr-wsd-decay-iters";
  const char* warmup_flag = c.warmup_fraction >= 0 ? "--lr-warmup-fraction"
                            : samples              ? "--lr-warmup-samples"
                                                   : "--lr-warmup-iters";
  if (samples) {
    MOE_CHECK(c.warmup_iters == 0 && c.decay_iters == 0 && c.wsd_decay_iters == 0,
              "--lr-warmup-iters, --lr-decay-iters and --lr-wsd-decay-iters are iteration-based: "
              "with --train-samples give --lr-warmup-samples, --lr-decay-samples and "
              "--lr-wsd-decay-samples");
    MOE_CHECK(c.warmup_samples >= 0 && c.decay_samples >= 0 && c.wsd_decay_samples >= 0,
              "--lr-warmup-samples, --lr-decay-samples and --lr-wsd-decay-samples must be >= 0");
    decay_ = c.decay_samples;
    wsd_decay_ = c.wsd_decay_samples;
    wd_incr_ = c.train_samples;
    warmup_ = static_cast<double>(c.warmup_samples);
  } else {
    MOE_CHECK(c.warmup_samples == 0 && c.decay_samples == 0 && c.wsd_decay_samples == 0,
              "--lr-warmup-samples, --lr-decay-samples and --lr-wsd-decay-samples are "
              "sample-based: they need --train-samples (with --train-iters give "
              "--lr-warmup-iters, --lr-decay-iters and --lr-wsd-decay-iters)");
    const int64_t G = c.global_batch_size;
    decay_ = in_samples(c.decay_iters, G, "--lr-decay-iters");
    wsd_decay_ = in_samples(c.wsd_decay_iters, G, "--lr-wsd-decay-iters");
    wd_incr_ = in_samples(c.train_iters, G, "--train-iters");
    warmup_ = static_cast<double>(in_samples(c.warmup_iters, G, "--lr-warmup-iters"));
  }
  if (c.warmup_fraction >= 0) {
    MOE_CHECK(c.warmup_iters == 0 && c.warmup_samples == 0, "--lr-warmup-fraction and ",
              samples ? "--lr-warmup-samples" : "--lr-warmup-iters", " are both given: use one");
    warmup_ = c.warmup_fraction * static_cast<double>(decay_);  // Megatron's, not rounded
  }
  // The lengths as the flags give them (iterations or samples), for the messages.
  const double unit = samples ? 1.0 : static_cast<double>(c.global_batch_size);
  const double decay_given = static_cast<double>(decay_) / unit;
  const double warmup_given = warmup_ / unit;
  // Decay and warm-up both 0 is the schedule of a run of no steps (--train-iters 0: the initial
  // model saved, as an initialisation is exported); lr() is then the peak.
  const bool no_steps = decay_ == 0 && warmup_ == 0.0;
  if (c.decay_style != "constant" && c.decay_style != "inverse-square-root" && !no_steps)
    MOE_CHECK(static_cast<double>(decay_) > warmup_, decay_flag, " ", decay_given,
              " must exceed the warm-up (", warmup_flag, ": ", warmup_given,
              samples ? " samples" : " iterations", ") for --lr-decay-style ", c.decay_style);
  if (c.decay_style == "WSD" && !no_steps) {
    MOE_CHECK(one_of(c.wsd_decay_style, {"linear", "cosine", "exponential", "minus_sqrt"}),
              "--lr-wsd-decay-style ", c.wsd_decay_style,
              " is not one of linear, cosine, exponential, minus_sqrt");
    MOE_CHECK(wsd_decay_ > 0 && static_cast<double>(wsd_decay_) <= double(decay_) - warmup_,
              wsd_flag, " ", static_cast<double>(wsd_decay_) / unit, " must be in [1, ",
              decay_flag, " - the warm-up = ", decay_given - warmup_given,
              "] for --lr-decay-style WSD");
  }
  MOE_CHECK(one_of(c.weight_decay_incr_style, {"constant", "linear", "cosine"}),
            "--weight-decay-incr-style ", c.weight_decay_incr_style,
            " is not one of constant, linear, cosine");
  MOE_CHECK(c.start_weight_decay >= 0 && c.end_weight_decay >= 0,
            "--start-weight-decay and --end-weight-decay must be >= 0");
  if (c.weight_decay_incr_style != "constant")
    MOE_CHECK(wd_incr_ > 0, "--weight-decay-incr-style ", c.weight_decay_incr_style,
              " needs --train-iters or --train-samples");
}

double LrSchedule::lr(int64_t num_steps) const {
  const LrScheduleConfig& c = config_;
  const double W = warmup_, D = static_cast<double>(decay_), n = static_cast<double>(num_steps);
  if (W > 0 && n <= W) return c.warmup_init + (c.lr - c.warmup_init) * n / W;
  if (c.decay_style == "constant") return c.lr;
  if (decay_ == 0 && W == 0.0) return c.lr;  // no steps: nothing decays
  if (num_steps > decay_) return c.min_lr;
  if (c.decay_style == "inverse-square-root") {
    const double warmup = std::max(W, 1.0), s = std::max(n, 1.0);
    return std::max(c.min_lr, c.lr * std::sqrt(warmup) / std::sqrt(s));
  }
  const double ratio = (n - W) / (D - W);
  double coeff = 1.0;
  if (c.decay_style == "linear") {
    coeff = 1.0 - ratio;
  } else if (c.decay_style == "cosine") {
    coeff = 0.5 * (std::cos(std::numbers::pi * ratio) + 1.0);
  } else {  // WSD: stable, then the annealing phase of its last Dw samples
    const int64_t anneal_start = decay_ - wsd_decay_;
    if (num_steps > anneal_start) {
      const double s =
          static_cast<double>(num_steps - anneal_start) / static_cast<double>(wsd_decay_);
      if (c.wsd_decay_style == "linear")
        coeff = 1.0 - s;
      else if (c.wsd_decay_style == "cosine")
        coeff = 0.5 * (std::cos(std::numbers::pi * s) + 1.0);
      else if (c.wsd_decay_style == "exponential")
        coeff = 2.0 * std::pow(0.5, s) - 1.0;
      else
        coeff = 1.0 - std::sqrt(s);
    }
  }
  return c.min_lr + coeff * (c.lr - c.min_lr);
}

double LrSchedule::weight_decay(int64_t num_steps) const {
  const LrScheduleConfig& c = config_;
  if (num_steps > wd_incr_ || c.weight_decay_incr_style == "constant") return c.end_weight_decay;
  const double ratio = static_cast<double>(num_steps) / static_cast<double>(wd_incr_);
  const double delta = c.end_weight_decay - c.start_weight_decay;
  const double coeff = c.weight_decay_incr_style == "linear"
                           ? ratio
                           : 0.5 * (std::cos(std::numbers::pi * (1.0 - ratio)) + 1.0);
  return c.start_weight_decay + coeff * delta;
}

}  // namespace moe::train
