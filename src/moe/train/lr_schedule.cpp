#include "moe/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "moe/core/error.h"

namespace moe::train {
namespace {

bool one_of(const std::string& value, std::initializer_list<const char*> choices) {
  return std::any_of(choices.begin(), choices.end(),
                     [&](const char* c) { return value == c; });
}

}  // namespace

LrSchedule::LrSchedule(const LrScheduleConfig& c) : config_(c) {
  MOE_CHECK(c.lr >= 0 && c.min_lr >= 0 && c.min_lr <= c.lr, "--min-lr ", c.min_lr,
            " must be in [0, --lr ", c.lr, "]");
  MOE_CHECK(c.warmup_init >= 0, "--lr-warmup-init must be >= 0, got ", c.warmup_init);
  MOE_CHECK(one_of(c.decay_style, {"constant", "linear", "cosine", "inverse-square-root", "WSD"}),
            "--lr-decay-style ", c.decay_style,
            " is not one of constant, linear, cosine, inverse-square-root, WSD");
  MOE_CHECK(c.warmup_iters >= 0, "--lr-warmup-iters must be >= 0, got ", c.warmup_iters);
  // decay_iters = warmup_iters = 0 is the schedule of a run of no steps (--train-iters 0: the
  // initial model saved, as an initialisation is exported); lr() is then the peak.
  const bool no_steps = c.decay_iters == 0 && c.warmup_iters == 0;
  if (c.decay_style != "constant" && c.decay_style != "inverse-square-root" && !no_steps)
    MOE_CHECK(c.decay_iters > c.warmup_iters, "--lr-decay-iters ", c.decay_iters,
              " must exceed --lr-warmup-iters ", c.warmup_iters, " for --lr-decay-style ",
              c.decay_style);
  if (c.decay_style == "WSD" && !no_steps) {
    MOE_CHECK(one_of(c.wsd_decay_style, {"linear", "cosine", "exponential", "minus_sqrt"}),
              "--lr-wsd-decay-style ", c.wsd_decay_style,
              " is not one of linear, cosine, exponential, minus_sqrt");
    MOE_CHECK(c.wsd_decay_iters > 0 && c.wsd_decay_iters <= c.decay_iters - c.warmup_iters,
              "--lr-wsd-decay-iters ", c.wsd_decay_iters, " must be in [1, --lr-decay-iters - "
              "--lr-warmup-iters = ", c.decay_iters - c.warmup_iters, "] for --lr-decay-style WSD");
  }
  MOE_CHECK(one_of(c.weight_decay_incr_style, {"constant", "linear", "cosine"}),
            "--weight-decay-incr-style ", c.weight_decay_incr_style,
            " is not one of constant, linear, cosine");
  MOE_CHECK(c.start_weight_decay >= 0 && c.end_weight_decay >= 0,
            "--start-weight-decay and --end-weight-decay must be >= 0");
  if (c.weight_decay_incr_style != "constant")
    MOE_CHECK(c.train_iters > 0, "--weight-decay-incr-style ", c.weight_decay_incr_style,
              " needs --train-iters");
}

double LrSchedule::lr(int64_t n) const {
  const LrScheduleConfig& c = config_;
  const double W = double(c.warmup_iters), D = double(c.decay_iters), step = double(n);
  if (c.warmup_iters > 0 && n <= c.warmup_iters)
    return c.warmup_init + (c.lr - c.warmup_init) * step / W;
  if (c.decay_style == "constant") return c.lr;
  if (c.decay_style == "inverse-square-root") {
    const double warmup = std::max(W, 1.0), s = std::max(step, 1.0);
    return std::max(c.min_lr, c.lr * std::sqrt(warmup) / std::sqrt(s));
  }
  if (c.decay_iters == 0 && c.warmup_iters == 0) return c.lr;  // no steps: nothing decays
  if (n > c.decay_iters) return c.min_lr;
  const double ratio = (step - W) / (D - W);
  double coeff = 1.0;
  if (c.decay_style == "linear") {
    coeff = 1.0 - ratio;
  } else if (c.decay_style == "cosine") {
    coeff = 0.5 * (std::cos(std::numbers::pi * ratio) + 1.0);
  } else {  // WSD: stable, then the annealing phase of its last wsd_decay_iters
    const double anneal_start = D - double(c.wsd_decay_iters);
    if (step > anneal_start) {
      const double s = (step - anneal_start) / double(c.wsd_decay_iters);
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

double LrSchedule::weight_decay(int64_t n) const {
  const LrScheduleConfig& c = config_;
  if (c.weight_decay_incr_style == "constant") return c.end_weight_decay;
  const double ratio = std::min(1.0, double(n) / double(c.train_iters));
  const double delta = c.end_weight_decay - c.start_weight_decay;
  const double coeff = c.weight_decay_incr_style == "linear"
                           ? ratio
                           : 0.5 * (std::cos(std::numbers::pi * (1.0 - ratio)) + 1.0);
  return c.start_weight_decay + coeff * delta;
}

}  // namespace moe::train
