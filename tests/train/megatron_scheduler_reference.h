// Megatron-LM's learning-rate scheduler, transcribed statement by statement for the tests to
// hold moecore's schedule against: the lengths as megatron/training/training.py's
// get_optimizer_param_scheduler (and update_train_iters) derives them from the arguments, and
// megatron/core/optimizer_param_scheduler.py's OptimizerParamScheduler (step, get_lr, get_wd).
// Written from Megatron's code, not from moecore's lr_schedule.cpp: a test compares the two.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <optional>
#include <stdexcept>
#include <string>

namespace moe::test {

// The arguments that feed the scheduler (Megatron's names; std::nullopt is Python's None).
struct MegatronSchedulerArgs {
  std::optional<int64_t> train_iters, train_samples;
  int64_t global_batch_size = 1;
  double lr = 0.0, min_lr = 0.0, lr_warmup_init = 0.0;
  std::optional<double> lr_warmup_fraction;
  int64_t lr_warmup_iters = 0, lr_warmup_samples = 0;
  std::optional<int64_t> lr_decay_iters, lr_decay_samples;
  std::string lr_decay_style = "linear";
  std::optional<int64_t> lr_wsd_decay_iters, lr_wsd_decay_samples;
  std::string lr_wsd_decay_style = "exponential";
  double start_weight_decay = 0.01, end_weight_decay = 0.01;
  std::string weight_decay_incr_style = "constant";
};

class MegatronScheduler {
 public:
  explicit MegatronScheduler(MegatronSchedulerArgs args) : args_(std::move(args)) {
    const MegatronSchedulerArgs& a = args_;
    if (a.train_iters) {  // iteration-based
      const int64_t decay_iters = a.lr_decay_iters.value_or(*a.train_iters);
      lr_decay_steps_ = double(decay_iters * a.global_batch_size);
      wd_incr_steps_ = double(*a.train_iters * a.global_batch_size);
      if (a.lr_wsd_decay_iters)
        wsd_decay_steps_ = double(*a.lr_wsd_decay_iters * a.global_batch_size);
      lr_warmup_steps_ = a.lr_warmup_fraction ? *a.lr_warmup_fraction * lr_decay_steps_
                                              : double(a.lr_warmup_iters * a.global_batch_size);
    } else if (a.train_samples) {                             // sample-based
      train_iters_ = *a.train_samples / a.global_batch_size;  // update_train_iters
      lr_decay_steps_ = double(a.lr_decay_samples.value_or(*a.train_samples));
      wd_incr_steps_ = double(*a.train_samples);
      if (a.lr_wsd_decay_samples) wsd_decay_steps_ = double(*a.lr_wsd_decay_samples);
      lr_warmup_steps_ = a.lr_warmup_fraction ? *a.lr_warmup_fraction * lr_decay_steps_
                                              : double(a.lr_warmup_samples);
    } else {
      throw std::invalid_argument("either train-iters or train-samples should be provided.");
    }
    if (a.train_iters) train_iters_ = *a.train_iters;
    step(0);
  }

  // OptimizerParamScheduler.step: num_steps += increment, then the optimizer's lr and wd.
  void step(int64_t increment) {
    num_steps_ += increment;
    lr_ = get_lr();
    wd_ = get_wd();
  }
  double lr() const { return lr_; }  // the optimizer's param_group['lr']
  double wd() const { return wd_; }
  int64_t num_steps() const { return num_steps_; }
  int64_t train_iters() const { return train_iters_; }

 private:
  double get_wd() const {
    const MegatronSchedulerArgs& a = args_;
    if (double(num_steps_) > wd_incr_steps_) return a.end_weight_decay;
    if (a.weight_decay_incr_style == "constant") return a.end_weight_decay;
    const double incr_ratio = double(num_steps_) / wd_incr_steps_;
    const double delta_wd = a.end_weight_decay - a.start_weight_decay;
    const double coeff = a.weight_decay_incr_style == "linear"
                             ? incr_ratio
                             : 0.5 * (std::cos(std::numbers::pi * (1 - incr_ratio)) + 1.0);
    return a.start_weight_decay + coeff * delta_wd;
  }

  double get_lr() const {
    const MegatronSchedulerArgs& a = args_;
    const double max_lr = a.lr, min_lr = a.min_lr, n = double(num_steps_);
    if (lr_warmup_steps_ > 0 && n <= lr_warmup_steps_)
      return a.lr_warmup_init + (max_lr - a.lr_warmup_init) * n / lr_warmup_steps_;
    if (a.lr_decay_style == "constant") return max_lr;
    if (n > lr_decay_steps_) return min_lr;
    if (a.lr_decay_style == "inverse-square-root") {
      const double warmup_steps = std::max(lr_warmup_steps_, 1.0);
      const double num_steps = std::max(n, 1.0);
      const double lr = max_lr * std::pow(warmup_steps, 0.5) / std::pow(num_steps, 0.5);
      return std::max(min_lr, lr);
    }
    const double num_steps_ = n - lr_warmup_steps_;
    const double decay_steps_ = lr_decay_steps_ - lr_warmup_steps_;
    const double decay_ratio = num_steps_ / decay_steps_;
    const double delta_lr = max_lr - min_lr;
    double coeff = 0.0;
    if (a.lr_decay_style == "linear") {
      coeff = 1.0 - decay_ratio;
    } else if (a.lr_decay_style == "cosine") {
      coeff = 0.5 * (std::cos(std::numbers::pi * decay_ratio) + 1.0);
    } else if (a.lr_decay_style == "WSD") {
      const double wsd_anneal_start_ = lr_decay_steps_ - wsd_decay_steps_;
      if (n <= wsd_anneal_start_) {
        coeff = 1.0;
      } else {
        const double wsd_steps = n - wsd_anneal_start_;
        const double wsd_decay_ratio = wsd_steps / wsd_decay_steps_;
        if (a.lr_wsd_decay_style == "linear")
          coeff = 1.0 - wsd_decay_ratio;
        else if (a.lr_wsd_decay_style == "cosine")
          coeff = 0.5 * (std::cos(std::numbers::pi * wsd_decay_ratio) + 1.0);
        else if (a.lr_wsd_decay_style == "exponential")
          coeff = (2.0 * std::pow(0.5, wsd_decay_ratio)) - 1.0;
        else if (a.lr_wsd_decay_style == "minus_sqrt")
          coeff = 1.0 - std::sqrt(wsd_decay_ratio);
      }
    } else {
      throw std::invalid_argument(a.lr_decay_style + " decay style is not supported.");
    }
    return min_lr + coeff * delta_lr;
  }

  MegatronSchedulerArgs args_;
  int64_t train_iters_ = 0;
  double lr_warmup_steps_ = 0, lr_decay_steps_ = 0, wsd_decay_steps_ = 0, wd_incr_steps_ = 0;
  int64_t num_steps_ = 0;
  double lr_ = 0, wd_ = 0;
};

}  // namespace moe::test
