// The training loop on one device (Megatron's train() / train_step() / evaluate() of
// pretrain_gpt, without the parallel pieces): gradient accumulation over micro-batches, the
// AdamW step with the lr / weight-decay schedules, the expert-bias update, NaN handling, and the
// counters a checkpoint needs to resume.
//
// One iteration (train_step):
//   zero_grad
//   for m = 1..M (M = global_batch_size / micro_batch_size micro-batches):
//     sample = source.next(micro_batch_size)            [B, S + 1]
//     input_ids = sample[:, :-1]^T, labels = sample[:, 1:]^T   [S, B] (GPTModel's layout)
//     forward; backward(loss_scale = 1 / M)
//       -> gradients are the mean of the micro-batch means, the MoE aux / z losses and the MTP
//          loss scaled by the same 1 / M (Megatron's MoEAuxLossAutoScaler / MTPLossAutoScaler
//          get loss_scale / num_microbatches)
//   the alltoall dispatcher's sync-free exchange (--moe-expert-rank-capacity-factor): when a
//     slot overflowed on any rank (one world all-reduce), every micro-batch's forward and
//     backward runs again with the host-sized exchange, the routers' jitter counters restored
//     (StepMetrics::note says so)
//   reported lm / aux / mtp loss = (1 / M) sum_m (the micro-batch's value)   (one read-back)
//   non-finite loss or gradient norm:
//     skip: no update, no expert-bias update, the schedule's step count stays, skipped += 1;
//           the max_consecutive_skipped-th skip in a row throws moe::Error naming the
//           iteration and the value (the run stops, nothing more is saved)
//     stop: throw moe::Error naming the iteration and the value (Megatron's
//           --check-for-nan-in-loss-and-grad); model and optimizer unchanged
//   else: AdamW step at lr(n), weight_decay(n) with n = the samples of the updates taken so far
//         (Megatron's scheduler position: each taken update adds the global batch; LrSchedule:
//         the first step uses lr(0)), then model.finish_step() (expert bias)
//   iteration += 1, consumed_samples += global_batch_size (skipped iterations count: the data
//   was consumed, as Megatron counts them).
//
// Determinism: the trainer draws no random numbers; given the model's weights and the sources'
// streams, the CPU run is bitwise reproducible.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "moe/dist/parallel_state.h"
#include "moe/nn/gpt_model.h"
#include "moe/train/batch_source.h"
#include "moe/train/data_parallel.h"
#include "moe/train/lr_schedule.h"
#include "moe/train/optimizer.h"
#include "moe/train/pipeline_schedule.h"

namespace moe {
class CudaGraph;
}

namespace moe::train {

// --cuda-graph-impl (Megatron's name). full_iteration: after cuda_graph_warmup_steps eager
// steps, the forward and backward of every micro-batch of a step are captured as one CUDA graph
// (core/cuda_graph.h) and replayed each step after, the micro-batches copied into the buffers
// the graph reads; the optimizer, the loss read-back and the logging run eagerly. One rank, no
// dropout or router jitter (their counters change every step and a graph would freeze them),
// and MoE layers that do not read their counts on the host (--moe-grouped-gemm-backend
// cutlass, or drop-and-pad): the trainer refuses anything else, naming it.
// local (Megatron's CudaGraphManager): per-layer graphs (nn/layer_graphs.h) of the blocks
// cuda_graph_modules names (attn, mlp, moe; by default the whole layer), captured at the first
// training step after the warm-up and replayed every micro-batch after; between them the
// collectives (data- and expert-parallel), host reads and the optimizer run eagerly, so it works
// on several ranks. No pipeline schedule or recomputation (a graph's buffers hold one
// micro-batch), no dropout or jitter; a captured block has no collective inside (attn: TP = CP
// = 1; mlp: TP = 1; moe: TP = EP = ETP = 1, the MoE rules above, no global aux loss, whose
// per-micro-batch average a graph would freeze). Refused otherwise, naming the flag.
enum class CudaGraphImpl { none, local, full_iteration };

enum class NanAction {
  skip,  // moecore's --nan-action skip: drop the update and go on (up to a limit, below)
  stop,  // Megatron's --check-for-nan-in-loss-and-grad: raise
};

// --nan-action skip stops the run at this many skipped updates in a row. A skipped update
// leaves the weights as they were, so a non-finite value caused by one batch does not come
// back with the next one; when it does ten times running, the weights or the learning rate
// cause it and every later step would be skipped too (a run at --lr 1e30 would otherwise
// "train" to the end and save weights that never changed since they broke). Megatron has no
// skip mode for bf16/fp32 runs: its --check-for-nan-in-loss-and-grad stops at the first NaN
// (NanAction::stop); this is the same stop after a tolerance for isolated bad batches.
inline constexpr int64_t kMaxConsecutiveSkippedIterations = 10;

struct TrainConfig {
  int64_t micro_batch_size = 1;   // --micro-batch-size
  int64_t global_batch_size = 1;  // --global-batch-size (a multiple of --micro-batch-size on
                                  // one device: num_microbatches = global / micro)
  int64_t seq_length = 128;       // --seq-length
  int64_t train_iters = 0;        // --train-iters (the run's length, and the schedules' default)
  // --train-samples (0: iteration-based). The run is then train_samples / global_batch_size
  // iterations (Megatron's update_train_iters: the remainder is not trained), which train_iters
  // must hold (the run sets it once the global batch is known: iterations_of_samples()), and
  // the schedules count samples (--lr-decay-samples, ...: lr_schedule.h).
  int64_t train_samples = 0;
  int64_t eval_interval = 0;  // --eval-interval (0: no evaluation; run_training)
  int64_t eval_iters = 0;     // --eval-iters (iterations of global_batch_size samples each)
  int64_t log_interval = 1;   // --log-interval
  uint64_t seed = 1234;       // --seed: the caller builds the model and the data sources
                              // from it; the trainer itself draws nothing
  LrScheduleConfig schedule;  // --lr ... ; decay_iters / decay_samples = 0 and
                              // train_iters / train_samples = 0 default to the run's
                              // length, as Megatron's --lr-decay-iters / -samples do
                              // (resolved_schedule())
  OptimizerConfig optimizer;  // --adam-beta1 ... --clip-grad
  NanAction nan_action = NanAction::skip;  // --nan-action skip|stop
  // --calculate-per-token-loss (Megatron): the lm loss of a step is the sum over the global
  // batch's labelled tokens / their count (not the mean of the micro-batch means): every
  // micro-batch backpropagates its loss sum (aux losses at scale 1, as Megatron's
  // MoEAuxLossAutoScaler then gets), and after the data-parallel reduction every gradient is
  // divided by the global token count. Not with MTP.
  bool calculate_per_token_loss = false;
  // NanAction::skip: this many skipped updates in a row stop the run (>= 1; see above).
  int64_t max_consecutive_skipped = kMaxConsecutiveSkippedIterations;
  CudaGraphImpl cuda_graph_impl = CudaGraphImpl::none;  // --cuda-graph-impl (above)
  // --cuda-graph-modules (--cuda-graph-scope): local's blocks; unset: the whole layer.
  std::optional<nn::LayerGraphModules> cuda_graph_modules;
  int64_t cuda_graph_warmup_steps = 3;  // --cuda-graph-warmup-steps (>= 1)

  // Micro-batches per rank and step: global / (micro x data-parallel size).
  int64_t num_microbatches(int64_t data_parallel_size = 1) const {
    return global_batch_size / (micro_batch_size * data_parallel_size);
  }
  // --microbatch-group-size-per-virtual-pipeline-stage (0: the pipeline size, Megatron's
  // default): micro-batches run per virtual stage before the next (interleaved 1F1B).
  int64_t microbatch_group_size_per_vp_stage = 0;
  // Checks the batch and interval flags; names the flags of anything inconsistent.
  void validate(int64_t data_parallel_size = 1) const;
  // --train-samples' iterations for this global batch: train_samples / global_batch_size.
  int64_t iterations_of_samples() const { return train_samples / global_batch_size; }
};

// The schedule the trainer runs for `config` (Megatron's get_optimizer_param_scheduler): the
// decay and the weight-decay increment over the run's length (--train-iters, or --train-samples
// for a sample-based run) unless given, and the global batch an iteration-based schedule's
// lengths are multiplied by.
LrScheduleConfig resolved_schedule(const TrainConfig& config);

// The parallel mapping of a run (null state: one rank) and Megatron's DDP options.
struct TrainParallel {
  std::shared_ptr<dist::ParallelState> state;
  DdpConfig ddp;
};

struct StepMetrics {
  int64_t iteration = 0;         // this iteration's number, from 1 (Megatron's logged iteration)
  int64_t consumed_samples = 0;  // after this iteration
  double lr = 0.0;               // the rate the step used (or would have used, when skipped)
  double weight_decay = 0.0;
  double loss = 0.0;       // lm loss: mean over the global batch's micro-batches
  double aux_loss = 0.0;   // MoE aux + z losses, same mean
  double mtp_loss = 0.0;   // lambda / D sum_k loss_k, same mean
  double grad_norm = 0.0;  // before clipping; NaN when the loss was already not finite
  bool skipped = false;
  std::string message;   // why the step was skipped ("" when it was taken)
  std::string note;      // what else the log should say about the step ("" : nothing)
  int64_t tokens = 0;    // tokens processed: global_batch_size * seq_length
  double seconds = 0.0;  // host wall time of train_step (the read-backs synchronise)
};

// What a checkpoint stores besides the model's tensors and optimizer.state() (the lead writes
// the files). restore() puts a fresh trainer back at the saved point.
struct TrainerState {
  int64_t iteration = 0;           // iterations run, skipped ones included
  int64_t consumed_samples = 0;    // training samples consumed
  int64_t skipped_iterations = 0;  // iterations whose update was dropped (NaN/Inf)
  int64_t optimizer_steps = 0;     // updates taken (AdamW's step count)
  // The samples of the updates taken (each adds its global batch): the schedules' position,
  // Megatron's OptimizerParamScheduler num_steps.
  int64_t schedule_samples = 0;
  int64_t train_position = 0;  // train BatchSource::position()
  int64_t valid_position = 0;  // validation BatchSource::position() (0 without one)
};

class Trainer {
 public:
  // The model, the sources and (through the optimizer) the parameters must outlive the
  // trainer. `valid` may be null (no evaluation). Checks the config and that the sources'
  // samples are seq_length + 1 tokens long.
  // With a parallel state of data-parallel size DP (x CP), this rank reads its part of each
  // global batch (Megatron's sampler: of every DP x micro_batch_size consecutive samples, the
  // dp_rank-th micro-batch), the gradients are reduced as data_parallel.h says, the reported
  // losses are the means over all ranks, and every rank takes the same decisions (skip, stop).
  Trainer(nn::GPTModel& model, const TrainConfig& config, BatchSource& train,
          BatchSource* valid = nullptr, TrainParallel parallel = {});
  ~Trainer();

  // Called after each training micro-batch's forward with its context (the routers' counts and
  // losses per layer), before its backward: per-layer MoE logging reads it there.
  std::function<void(const nn::GPTContext&)> on_micro_batch;

  StepMetrics train_step();
  // Mean lm loss over eval_iters x num_microbatches validation micro-batches (forward only;
  // the model's step accumulators, e.g. the expert-bias token counts, are left as they were).
  double evaluate();

  TrainerState state() const;
  void restore(const TrainerState& state);

  int64_t iteration() const { return iteration_; }
  int64_t consumed_samples() const { return consumed_samples_; }
  int64_t skipped_iterations() const { return skipped_; }
  // Steps run a second time with the host-sized expert exchange because a slot of the
  // sync-free one overflowed (--moe-expert-rank-capacity-factor, dropless models).
  int64_t redone_steps() const { return redone_steps_; }
  int64_t optimizer_steps() const { return optimizer_->steps_taken(); }
  // The schedules' position: the samples of the updates taken (TrainerState::schedule_samples).
  int64_t schedule_samples() const { return schedule_samples_; }
  Optimizer& optimizer() { return *optimizer_; }
  // Null on one rank.
  const dist::ParallelState* parallel_state() const { return parallel_.state.get(); }
  DataParallel* data_parallel() { return ddp_.get(); }
  int64_t data_parallel_size() const;
  // Waits for the distributed optimizer's overlapped parameter all-gathers (--overlap-param-
  // gather), so the model's values are the updated ones (before a checkpoint reads them).
  void synchronize_parameters();
  // This rank's micro-batches per step.
  int64_t num_microbatches() const { return config_.num_microbatches(data_parallel_size()); }
  const LrSchedule& schedule() const { return schedule_; }
  const TrainConfig& config() const { return config_; }
  // This rank's schedule for a step of `num_microbatches` (pipeline_schedule.h; without
  // pipeline parallelism a forward and a backward per micro-batch), with the run's
  // micro-batch group size per virtual stage.
  std::vector<PipelineAction> pipeline_actions(int64_t num_microbatches, bool forward_only) const;
  // Pipeline parallelism: the actions this rank ran in its last training step, in order (empty
  // without pipeline parallelism).
  const std::vector<PipelineAction>& executed_pipeline_actions() const { return executed_; }

 private:
  struct MicroBatch {
    Tensor input_ids;  // [S, B] i64 on the model's device
    Tensor labels;     // [S, B] i64 on the model's device
  };
  MicroBatch load(BatchSource& source, const char* which);

  nn::GPTModel& model_;
  TrainConfig config_;
  BatchSource& train_;
  BatchSource* valid_;
  // This rank's next micro-batch of the source: skips the other data-parallel ranks' parts.
  Tensor next_samples(BatchSource& source);
  // Multiplies every gradient by `factor` (the buffers under data parallelism).
  void scale_gradients(double factor);
  // Sums the step's loss sums over DP x CP (nothing on one rank).
  void reduce_losses(Tensor& sums);

  // Pipeline parallelism (trainer_pipeline.cpp). What one micro-batch's forward of one chunk
  // adds to the step: its losses into `sums` [lm, aux, mtp, labelled tokens].
  struct StepSums {
    Tensor sums;
    bool per_token = false;
    void add(const nn::GPTLoss& loss, const nn::GPTContext& ctx);
  };
  bool pipelined() const { return parallel_.state && parallel_.state->pp_size() > 1; }
  // The sync-free expert exchange's overflow since the last call, over the whole world (a
  // collective, at the end of each step); nullopt when the mode is off.
  std::optional<nn::GPTModel::SlotOverflow> slot_overflow();
  // --cuda-graph-impl full_iteration: refuses what a captured step cannot do, naming it.
  void check_cuda_graph_rules() const;
  // --cuda-graph-impl local: the same for per-layer graphs of `modules`.
  void check_layer_graph_rules(const nn::LayerGraphModules& modules) const;
  // The step's forward and backward as a replay of the step graph, captured first when there
  // is none (`note` then says so, with the graph's memory).
  StepSums replay_step_graph(const std::vector<MicroBatch>& micro_batches,
                             const std::function<StepSums(const std::vector<MicroBatch>&)>& run,
                             std::string& note);
  // Runs this pipeline rank's schedule (pipeline_schedule.h) over the step's micro-batches:
  // forwards (and, unless forward_only, backwards scaled by `scale`) of its chunks, the
  // activations and their gradients sent between the stages. first_samples[m]: micro-batch m's
  // first training sample (the dropout masks'; empty: no dropout, evaluation).
  void run_pipeline(const std::vector<MicroBatch>& micro_batches,
                    const std::vector<int64_t>& first_samples, double scale, bool forward_only,
                    StepSums& sums);
  // Sums the step's loss sums over the pipeline stages (each holds its layers' parts).
  void reduce_losses_over_stages(Tensor& sums);

  LrSchedule schedule_;
  TrainParallel parallel_;
  std::unique_ptr<DataParallel> ddp_;  // null on one rank
  std::unique_ptr<Optimizer> optimizer_;
  int64_t iteration_ = 0;
  int64_t consumed_samples_ = 0;
  int64_t skipped_ = 0;
  int64_t skipped_in_a_row_ = 0;  // not saved: a resumed run counts again from 0
  int64_t schedule_samples_ = 0;
  int64_t redone_steps_ = 0;  // steps run again after the expert exchange's slots overflowed
  // --cuda-graph-impl full_iteration and local: eager steps run so far (the warm-up);
  // full_iteration: the step graph,
  // the micro-batch buffers it reads and the loss sums it writes.
  int64_t eager_steps_ = 0;
  std::unique_ptr<CudaGraph> step_graph_;
  std::vector<MicroBatch> graph_inputs_;
  StepSums graph_sums_;
  std::vector<PipelineAction> executed_;  // run_pipeline's record of the last training step
};

}  // namespace moe::train
