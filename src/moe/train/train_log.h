// What `moe train` reports, in the forms a Megatron-LM user reads: every --log-interval one
// line as Megatron's training_log() prints it, followed by moecore's throughput and progress,
//
//  [2026-11-28 12:00:00] iteration      100/    1000 | consumed samples:         6400 |
//  elapsed time per iteration (ms): 412.3 | learning rate: 3.000000E-04 | global batch size:
//  64 | lm loss: 2.345678E+00 | load_balancing_loss: 1.012345E-02 | grad norm: 1.234 |
//  number of skipped iterations:   0 | number of nan iterations:   0 | tokens/s: 19876 |
//  TFLOP/s/GPU: 1.2 | MFU: 0.1% | mem GiB: 0.12 | ETA 0:06:11 (10.0%)
//
// (one line; MFU only on a GPU), the validation line ("validation loss at iteration N | lm loss
// value: ... | lm loss PPL: ..."), a JSONL metrics file (one object per log point and per
// evaluation) and TensorBoard scalars under Megatron's tag names ("lm loss", "learning-rate",
// "grad-norm", "batch-size", "iteration-time", "load_balancing_loss", "lm loss validation",
// "lm loss validation ppl", "moe/load_balancing_loss_layer_<l>", ...).
//
// Averages as Megatron's: the losses are the mean over the interval's iterations whose update
// was taken; the grad norm is the last taken iteration's; skipped / nan count the interval's
// iterations whose update was dropped (every moecore skip is a NaN/Inf, so the two agree).
//
// Model FLOPs of one iteration (docs: issue 4's benchmark definition), T = tokens:
//   6 T P + 6 T L (S/2) Hq (Dqk + Dv)
// P = active matmul parameters (nn::count_parameters' active count minus the embedding lookup
// and the norm weights, plus the output layer V H when it is tied to the embedding), L = decoder
// + MTP layers, S/2 = a causal token's mean attended keys, Dqk / Dv the q.k and p.v head dims
// (GQA: both the head dim; MLA: nope + rope and v_head_dim). MFU = model FLOP/s / 989e12 (dense
// bf16 peak of an H100 / H200 SXM). bench/model_bench.h computes the same: to be deduplicated.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "moe/core/device.h"
#include "moe/dist/process_group.h"
#include "moe/nn/gpt_model.h"
#include "moe/nn/model_config.h"
#include "moe/train/tensorboard.h"
#include "moe/train/trainer.h"

namespace moe::train {

inline constexpr double kPeakBf16FlopsPerGpu = 989e12;  // H100 / H200 SXM dense bf16

// Model FLOPs of one forward + backward over `tokens` tokens of sequences of `seq_length`:
// 6 T P + 6 T L (S/2) Hq (Dqk + Dv), P the active matmul parameters (output layer, routers and
// MTP layers in; embedding, norms and biases out), L the layers with attention (MTP included).
struct ModelFlops {
  int64_t matmul_params = 0;  // P
  double matmul = 0.0;        // 6 T P
  double attention = 0.0;     // 6 T L (S/2) Hq (Dqk + Dv)
  double total() const { return matmul + attention; }
};
ModelFlops model_flops_breakdown(const nn::ModelConfig& config, int64_t seq_length,
                                 int64_t tokens);
double model_flops(const nn::ModelConfig& config, int64_t seq_length, int64_t tokens);

// One MoE layer over the micro-batches of a log point (--moe-per-layer-logging).
struct MoELayerStats {
  int64_t layer = 0;       // decoder layer index (MTP layers: num_layers + depth)
  double aux_loss = 0.0;   // load-balancing loss with its coefficient, mean over micro-batches
  double z_loss = 0.0;     // z-loss with its coefficient, same mean
  int64_t tokens = 0;      // routed (token, expert) slots, before dropping
  double load_min = 0.0;   // min_e n_e / mean_e n_e (n_e = slots routed to expert e)
  double load_max = 0.0;   // max_e n_e / mean_e n_e
  double load_cv = 0.0;    // std_e n_e / mean_e n_e (population std)
  int64_t dropped = 0;     // slots the capacity dropped (expert id -1)
  // n_e per expert, summed over the interval's micro-batches (the counts the load figures above
  // come from; JSONL "expert_tokens", for `moe plot`'s load heatmap). Empty when the router
  // reported no counts.
  std::vector<int64_t> expert_tokens{};
};

// Collects the router outputs of each MoE layer from the micro-batches' contexts. Reading them
// synchronises with the device, so only --moe-per-layer-logging does it.
class MoELayerStatsCollector {
 public:
  // capacity_may_drop: whether the model drops tokens (--moe-expert-capacity-factor); without
  // it no expert id is -1 and the [T, K] ids are not copied to the host to count drops.
  explicit MoELayerStatsCollector(bool capacity_may_drop = true)
      : capacity_may_drop_(capacity_may_drop) {}
  // Under data parallelism: the loads of all ranks (Megatron logs the counts reduced over the
  // data-parallel group). take() then sums the interval's counts, losses and drops over
  // `group`, so every rank of it must call take() at the same points. The sums travel in a
  // tensor on `device` (the rank's GPU under NCCL, which takes no host tensors).
  void set_group(std::shared_ptr<dist::ProcessGroup> group, Device device = Device::cpu()) {
    group_ = std::move(group);
    group_device_ = device;
  }
  void observe(const nn::GPTContext& ctx);
  // The layers' stats since the last take(), then resets. Empty when nothing was observed.
  std::vector<MoELayerStats> take();

 private:
  struct Sum {
    int64_t layer = 0;
    double aux = 0.0, z = 0.0;
    int64_t calls = 0, dropped = 0;
    std::vector<double> counts;
  };
  void add(int64_t layer, const nn::RouterContext& router);
  void reduce_over_group();
  bool capacity_may_drop_;
  std::vector<Sum> sums_;
  std::shared_ptr<dist::ProcessGroup> group_;
  Device group_device_ = Device::cpu();
};

// One log point: what the line and the JSONL object hold.
struct LogRecord {
  int64_t iteration = 0;
  int64_t train_iters = 0;
  int64_t consumed_samples = 0;
  double ms_per_iteration = 0.0;
  double learning_rate = 0.0;
  int64_t global_batch_size = 0;
  double lm_loss = 0.0;
  double load_balancing_loss = 0.0;  // MoE aux + z losses
  std::optional<double> mtp_loss;    // models with MTP layers
  double grad_norm = 0.0;
  int64_t skipped_iterations = 0;    // in the interval
  int64_t nan_iterations = 0;        // in the interval
  double tokens_per_second = 0.0;
  double tflops_per_gpu = 0.0;
  std::optional<double> mfu;         // fraction, GPU runs only
  double mem_gib = 0.0;              // peak tensor memory of the device, GiB
  double eta_seconds = 0.0;
  std::vector<MoELayerStats> layers; // --moe-per-layer-logging
};

// "[YYYY-MM-DD hh:mm:ss]" of the local time now.
std::string log_timestamp();
// The line (no newline), and the per-layer lines when record.layers is not empty.
std::string format_log_line(const LogRecord& record, const std::string& timestamp);
std::string format_layer_lines(const std::vector<MoELayerStats>& layers);
// "h:mm:ss".
std::string format_duration(double seconds);
nlohmann::json log_record_json(const LogRecord& record);
// `object` as JSON text that never throws on strings that are not UTF-8 (the byte-level text
// sample, paths): each invalid byte becomes U+FFFD. Every JSON file `moe train` writes goes
// through it. indent -1: one line.
std::string json_line(const nlohmann::json& object, int indent = -1);

struct TrainLoggerOptions {
  int64_t train_iters = 0;
  int64_t global_batch_size = 0;
  int64_t seq_length = 0;
  Device device = Device::cpu();
  // The ranks the iterations' work is spread over: TFLOP/s/GPU and MFU are per rank (the
  // model FLOPs of the global batch / world size).
  int64_t world_size = 1;
  std::string metrics_jsonl;    // "" for none
  bool append_metrics = false;  // keep the file's lines (a resumed run); else start it afresh
  std::string tensorboard_dir;  // "" for none
};

// Turns the trainer's per-iteration metrics into the log lines, JSONL and TensorBoard scalars.
class TrainLogger {
 public:
  TrainLogger(const nn::ModelConfig& model, const TrainLoggerOptions& options, std::FILE* out);
  // Every iteration. Prints at `log_now` (the caller's --log-interval rule) with the interval's
  // averages; `layers` are the interval's per-layer stats (may be empty).
  void on_step(const StepMetrics& step, bool log_now, std::vector<MoELayerStats> layers = {});
  void on_eval(int64_t iteration, int64_t consumed_samples, double lm_loss);
  // A line to the output and, as {"event": ...}, to the JSONL file.
  void note(const std::string& text);
  // The learning rate the log shows is Megatron's: the optimizer's rate after the scheduler has
  // stepped for this iteration's update (lr(samples of the updates taken)), i.e. the next
  // update's rate; a skipped update leaves it at the rate that update would have used. Without
  // a trainer to follow, the step's own rate (StepMetrics::lr) is shown.
  void follow(const Trainer& trainer) { trainer_ = &trainer; }
  const std::string& metrics_path() const { return options_.metrics_jsonl; }

 private:
  void write_json(const nlohmann::json& object);

  nn::ModelConfig model_;
  const Trainer* trainer_ = nullptr;
  TrainLoggerOptions options_;
  std::FILE* out_;
  double flops_per_iteration_ = 0.0;
  std::unique_ptr<std::ofstream> jsonl_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  // The current interval.
  int64_t steps_ = 0, taken_ = 0, skipped_ = 0;
  double loss_sum_ = 0.0, aux_sum_ = 0.0, mtp_sum_ = 0.0, seconds_ = 0.0;
  double last_grad_norm_ = 0.0;
  // The whole run, for the ETA.
  int64_t run_steps_ = 0;
  double run_seconds_ = 0.0;
};

}  // namespace moe::train
