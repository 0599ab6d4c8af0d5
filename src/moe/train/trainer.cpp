#include "moe/train/trainer.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include "moe/core/cuda_graph.h"
#include "moe/core/error.h"
#include "moe/core/trace_range.h"
#include "moe/ops/elementwise.h"
#include "moe/train/distributed_optimizer.h"

namespace moe::train {

LrScheduleConfig resolved_schedule(const TrainConfig& c) {
  LrScheduleConfig s = c.schedule;
  s.global_batch_size = c.global_batch_size;
  if (c.train_samples > 0) {
    // Sample-based: --lr-decay-samples and the weight-decay increment run over --train-samples.
    s.train_samples = c.train_samples;
    if (s.decay_samples == 0) s.decay_samples = c.train_samples;
    return s;
  }
  // Megatron's defaults: --lr-decay-iters and the weight-decay schedule run over --train-iters.
  if (s.decay_iters == 0) s.decay_iters = c.train_iters;
  if (s.train_iters == 0) s.train_iters = c.train_iters;
  return s;
}

namespace {

// The data-parallel size: the ranks that read different samples (the CP ranks of a replica read
// the same samples and split their sequences).
int64_t dp_of(const TrainParallel& p) {
  return p.state ? p.state->dp_size() : 1;
}

const TrainConfig& validated(const TrainConfig& c, const TrainParallel& p) {
  c.validate(dp_of(p));
  return c;
}

std::unique_ptr<Optimizer> make_optimizer(nn::GPTModel& model, const TrainConfig& c,
                                          DataParallel* ddp) {
  if (!ddp) return std::make_unique<AdamW>(model.parameters(), c.optimizer);
  if (ddp->config().use_distributed_optimizer)
    return std::make_unique<DistributedOptimizer>(ddp->buffers(), c.optimizer, ddp->norm_groups(),
                                                  ddp->config().overlap_param_gather);
  return std::make_unique<AdamW>(model.parameters(), c.optimizer, ddp->norm_groups());
}

// The MoE layers of a captured step (Trainer::check_cuda_graph_rules).
void check_cuda_graph_moe_rules(const nn::MoEConfig& moe, const char* flag) {
  MOE_CHECK(!moe.moe_input_jitter_eps, flag,
            ": --moe-input-jitter-eps draws new noise every step from a counter a graph would "
            "freeze; leave it out");
  MOE_CHECK(moe.moe_grouped_gemm, flag,
            ": the sequential experts read their counts on the host; leave --moe-grouped-gemm on");
  MOE_CHECK(moe.moe_grouped_gemm_backend == ops::GroupedGemmBackend::cutlass ||
                moe.moe_pad_expert_input_to_capacity,
            flag,
            ": the MoE layers read their routed counts on the host with the cuBLAS grouped GEMMs, "
            "which a capture cannot; add --moe-grouped-gemm-backend cutlass (it reads them on the "
            "GPU), or drop and pad (--moe-expert-capacity-factor with "
            "--moe-pad-expert-input-to-capacity)");
}

// acc[i] += value (0-d), on the device: the losses are read back once per step.
void accumulate(Tensor& acc, int64_t i, const Tensor& value) {
  if (!value.defined()) return;
  Tensor slot = acc.rows(i, 1);
  const Tensor v = value.reshape({1});
  ops::add_(slot, v.dtype() == acc.dtype() ? v : v.to(acc.dtype()));
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

void Trainer::StepSums::add(const nn::GPTLoss& loss, const nn::GPTContext& ctx) {
  if (!sums.defined()) sums = Tensor::zeros({4}, loss.lm_loss.dtype(), loss.lm_loss.device());
  accumulate(sums, 0, loss.lm_loss);
  accumulate(sums, 1, loss.aux_loss);
  accumulate(sums, 2, loss.mtp_loss);
  if (per_token && ctx.cross_entropy.weight_sum.defined())
    accumulate(sums, 3, ctx.cross_entropy.weight_sum);
}

void TrainConfig::validate(int64_t dp) const {
  MOE_CHECK(micro_batch_size >= 1, "--micro-batch-size must be positive, got ", micro_batch_size);
  MOE_CHECK(global_batch_size >= 1, "--global-batch-size must be positive, got ",
            global_batch_size);
  MOE_CHECK(global_batch_size % (micro_batch_size * dp) == 0, "--global-batch-size ",
            global_batch_size, " is not a multiple of --micro-batch-size ", micro_batch_size,
            dp == 1 ? std::string(" (on one device the number of micro-batches is global / micro)")
                    : detail::concat(" x the data-parallel size ", dp,
                                     " (each data-parallel rank runs global / (micro x DP) "
                                     "micro-batches per step)"));
  MOE_CHECK(seq_length >= 1, "--seq-length must be positive, got ", seq_length);
  MOE_CHECK(train_iters >= 0, "--train-iters must be >= 0, got ", train_iters);
  MOE_CHECK(train_samples >= 0, "--train-samples must be >= 0, got ", train_samples);
  MOE_CHECK(train_samples == 0 || train_iters == iterations_of_samples(), "--train-samples ",
            train_samples, " is ", iterations_of_samples(), " iterations of --global-batch-size ",
            global_batch_size, ", but the run says ", train_iters,
            " (train_iters must be train_samples / global_batch_size)");
  MOE_CHECK(eval_interval >= 0, "--eval-interval must be >= 0, got ", eval_interval);
  MOE_CHECK(eval_iters >= 0, "--eval-iters must be >= 0, got ", eval_iters);
  MOE_CHECK(log_interval >= 1, "--log-interval must be positive, got ", log_interval);
  MOE_CHECK(max_consecutive_skipped >= 1,
            "the limit of skipped iterations in a row must be positive, got ",
            max_consecutive_skipped);
}

Trainer::Trainer(nn::GPTModel& model, const TrainConfig& config, BatchSource& train,
                 BatchSource* valid, TrainParallel parallel)
    : model_(model),
      config_(validated(config, parallel)),
      train_(train),
      valid_(valid),
      schedule_(resolved_schedule(config)),
      parallel_(std::move(parallel)) {
  if (parallel_.state)
    ddp_ = std::make_unique<DataParallel>(model, *parallel_.state, parallel_.ddp);
  if (pipelined())  // Megatron's rules for the schedule (micro-batches vs stages), checked now
    pipeline_actions(num_microbatches(), /*forward_only=*/false);
  optimizer_ = make_optimizer(model, config_, ddp_.get());
  if (auto* dopt = dynamic_cast<DistributedOptimizer*>(optimizer_.get());
      dopt && parallel_.ddp.overlap_param_gather)
    model.on_params_needed = [dopt](const std::vector<nn::Parameter*>& params) {
      dopt->wait_for_params(params);
    };
  if (config_.cuda_graph_impl == CudaGraphImpl::full_iteration) check_cuda_graph_rules();
  MOE_CHECK(!config_.cuda_graph_modules || config_.cuda_graph_impl == CudaGraphImpl::local,
            "--cuda-graph-modules ", nn::describe_layer_graph_modules(*config_.cuda_graph_modules),
            ": per-layer graph modules need --cuda-graph-impl local");
  if (config_.cuda_graph_impl == CudaGraphImpl::local) {
    const nn::LayerGraphModules modules =
        config_.cuda_graph_modules.value_or(nn::LayerGraphModules::whole_layer());
    check_layer_graph_rules(modules);
    model_.set_layer_graphs(modules);
  }
  if (config_.calculate_per_token_loss) {
    MOE_CHECK(model.config().mtp_num_layers == 0,
              "--calculate-per-token-loss with --mtp-num-layers is not supported yet (the MTP "
              "loss is a mean per depth); drop one of them");
    model.cross_entropy.reduction = ops::CrossEntropyReduction::sum;
  }
  const int64_t S = config_.seq_length;
  MOE_CHECK(S > model.config().mtp_num_layers, "--seq-length ", S, " must exceed --mtp-num-layers ",
            model.config().mtp_num_layers);
  MOE_CHECK(train.sample_length() == S + 1, "training data: samples of ", train.sample_length(),
            " tokens, but --seq-length ", S, " needs ", S + 1);
  if (valid)
    MOE_CHECK(valid->sample_length() == S + 1, "validation data: samples of ",
              valid->sample_length(), " tokens, but --seq-length ", S, " needs ", S + 1);
}

Trainer::~Trainer() {
  model_.on_params_needed = nullptr;  // the hook points at this trainer's optimizer
}

std::vector<PipelineAction> Trainer::pipeline_actions(int64_t num_microbatches,
                                                      bool forward_only) const {
  const dist::ParallelState* s = parallel_.state.get();
  return pipeline_schedule(s ? s->pp_size() : 1, s ? s->pp_rank() : 0,
                           static_cast<int>(num_microbatches), model_.num_chunks(),
                           static_cast<int>(config_.microbatch_group_size_per_vp_stage),
                           forward_only);
}

int64_t Trainer::data_parallel_size() const {
  return dp_of(parallel_);
}

void Trainer::synchronize_parameters() {
  optimizer_->wait_for_parameters();
}

Tensor Trainer::next_samples(BatchSource& source) {
  const int64_t B = config_.micro_batch_size, dp = data_parallel_size();
  if (dp == 1) return source.next(B);
  // Megatron's MegatronPretrainingSampler: DP x B consecutive samples per micro-batch step,
  // rank r takes [r B, (r + 1) B) of them. position() stays the global count.
  const int64_t start = source.position(), r = parallel_.state->dp_rank();
  source.set_position(start + r * B);
  Tensor mine = source.next(B);
  source.set_position(start + dp * B);
  return mine;
}

void Trainer::scale_gradients(double factor) {
  if (ddp_) {
    for (ParamAndGradBuffer* b : ddp_->buffers()) ops::scale_(b->grad_data(), factor);
    return;
  }
  for (nn::Parameter* p : model_.parameters()) ops::scale_(p->grad_value(), factor);
}

void Trainer::reduce_losses(Tensor& sums) {
  // The TP and CP ranks of a replica hold the same losses (the model reduces them): one replica
  // each.
  if (!parallel_.state || parallel_.state->dp_size() == 1) return;
  parallel_.state->dp()->all_reduce(sums, dist::ReduceOp::sum);
}

Trainer::MicroBatch Trainer::load(BatchSource& source, const char* which) {
  const int64_t B = config_.micro_batch_size, S = config_.seq_length, L = S + 1;
  const int64_t V = model_.config().vocab_size;
  Tensor sample = next_samples(source);
  MOE_CHECK(sample.device().is_cpu() && sample.shape() == Shape({B, L}), which,
            " data: a micro-batch must be [", B, ", ", L, "] on the host, got ", sample.str());
  if (sample.dtype() != DType::i64) sample = sample.to(DType::i64);
  const int64_t* ids = sample.data<int64_t>();
  // [B, S + 1] -> inputs [S, B] = sample[:, :-1]^T, labels [S, B] = sample[:, 1:]^T.
  std::vector<int64_t> inputs(static_cast<size_t>(S * B)), labels(static_cast<size_t>(S * B));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < L; ++t) {
      const int64_t id = ids[b * L + t];
      MOE_CHECK(id >= 0 && id < V, which, " data: token id ", id, " (sample ", b, ", position ", t,
                ") is outside the vocabulary [0, ", V, ")");
      if (t < S) inputs[static_cast<size_t>(t * B + b)] = id;
      if (t > 0) labels[static_cast<size_t>((t - 1) * B + b)] = id;
    }
  }
  MicroBatch mb;
  mb.input_ids = Tensor::from_vector(inputs, {S, B}, model_.device());
  mb.labels = Tensor::from_vector(labels, {S, B}, model_.device());
  return mb;
}

StepMetrics Trainer::train_step() {
  const TraceRange range("train_step");
  const auto start = std::chrono::steady_clock::now();
  const int64_t M = num_microbatches();
  const bool per_token = config_.calculate_per_token_loss;
  // Every micro-batch's loss is scaled by 1 / (all micro-batches of the global batch): the
  // data-parallel sum of the gradients is then their mean (data_parallel.h). Per-token loss:
  // the sums are backpropagated unscaled and divided by the global token count below.
  const double mean_scale = 1.0 / static_cast<double>(M * data_parallel_size());
  const double scale = per_token ? 1.0 : mean_scale;
  StepMetrics m;
  m.iteration = iteration_ + 1;

  // This rank's first sample in the training stream (next_samples' order): the dropout masks'
  // counter, the same under any data-parallel mapping and restored with the data.
  const int64_t rank_offset =
      data_parallel_size() > 1 ? parallel_.state->dp_rank() * config_.micro_batch_size : 0;
  // Every stage reads the step's micro-batches (the first embeds the ids, the last scores the
  // labels); kept, so a step can be run again.
  std::vector<MicroBatch> micro_batches;
  std::vector<int64_t> first_samples;
  for (int64_t i = 0; i < M; ++i) {
    first_samples.push_back(train_.position() + rank_offset);
    micro_batches.push_back(load(train_, "training"));
  }
  // Forward and backward of every micro-batch: gradients, and [lm, aux, mtp, labelled tokens]
  // summed over the micro-batches on the device.
  const auto forward_backward = [&](const std::vector<MicroBatch>& inputs,
                                    bool report_micro_batches) {
    model_.zero_grad();
    StepSums step;
    step.per_token = per_token;
    if (pipelined()) {
      run_pipeline(inputs, first_samples, scale, /*forward_only=*/false, step);
    } else {
      for (int64_t i = 0; i < M; ++i) {
        if (ddp_) ddp_->start_micro_batch(i == M - 1);
        nn::GPTContext ctx;
        ctx.dropout_first_sample = first_samples[static_cast<size_t>(i)];
        // The scale is known now: the output layer's loss backward runs inside the forward.
        ctx.loss_scale_known_in_forward = scale;
        const MicroBatch& mb = inputs[static_cast<size_t>(i)];
        const nn::GPTLoss loss =
            traced("forward", [&] { return model_.forward(mb.input_ids, mb.labels, ctx); });
        if (on_micro_batch && report_micro_batches) on_micro_batch(ctx);
        traced("backward", [&] { model_.backward(ctx, scale); });
        step.add(loss, ctx);
      }
    }
    if (ddp_) ddp_->finish_grad_sync();
    return step;
  };
  const std::vector<uint64_t> router_counts = model_.router_forward_counts();
  StepSums step;
  const bool warmed_up = eager_steps_ >= config_.cuda_graph_warmup_steps;
  if (config_.cuda_graph_impl == CudaGraphImpl::full_iteration && warmed_up) {
    step = replay_step_graph(
        micro_batches,
        [&](const std::vector<MicroBatch>& inputs) { return forward_backward(inputs, false); },
        m.note);
  } else if (config_.cuda_graph_impl == CudaGraphImpl::local && warmed_up) {
    // Per-layer graphs: the layers capture at their first calls, then replay.
    const int64_t captured = model_.layer_graph_use().graphs;
    struct GraphsOn {
      nn::GPTModel& model;
      explicit GraphsOn(nn::GPTModel& m) : model(m) { model.set_layer_graphs_on(true); }
      ~GraphsOn() { model.set_layer_graphs_on(false); }
    };
    {
      const GraphsOn on(model_);
      step = forward_backward(micro_batches, true);
    }
    const nn::GPTModel::LayerGraphUse use = model_.layer_graph_use();
    if (use.graphs > captured)
      m.note = detail::concat(
          "iteration ", iteration_ + 1, ": captured ", use.graphs - captured,
          " per-layer CUDA graphs (--cuda-graph-impl local, ",
          nn::describe_layer_graph_modules(
              config_.cuda_graph_modules.value_or(nn::LayerGraphModules::whole_layer())),
          "); the layers' graphs hold ",
          std::llround(static_cast<double>(use.pool_bytes) / (1 << 20)), " MiB in their pools");
  } else {
    step = forward_backward(micro_batches, true);
    ++eager_steps_;
  }
  // The sync-free expert exchange: a slot that overflowed left rows behind, so the step runs
  // again with the host-sized exchange (the same routing: the routers' counters are restored),
  // and the result is the one of any other mapping.
  const std::optional<nn::GPTModel::SlotOverflow> over = slot_overflow();
  if (over && over->over_rows > 0) {
    m.note = detail::concat("iteration ", m.iteration,
                            ": the expert exchange's slots were short by up to ", over->over_rows,
                            " rows (--moe-expert-rank-capacity-factor ",
                            *model_.config().moe.moe_expert_rank_capacity_factor, "; ",
                            std::ceil(over->needed_factor * 100) / 100,
                            " would have held them); the step was run again, synchronising");
    model_.discard_step();
    model_.set_router_forward_counts(router_counts);
    model_.set_synchronising_dispatch(true);
    step = forward_backward(micro_batches, false);
    model_.set_synchronising_dispatch(false);
    ++redone_steps_;
  }
  Tensor& sums = step.sums;
  // Each TP and CP rank's aux loss covers its own tokens (the lm and MTP losses are whole on
  // every rank): their sum is the replica's.
  if (parallel_.state && parallel_.state->tp_cp_size() > 1) {
    Tensor aux = sums.rows(1, 1).clone();
    parallel_.state->tp_cp()->all_reduce(aux, dist::ReduceOp::sum);
    Tensor slot = sums.rows(1, 1);
    slot.copy_(aux);
  }
  const std::vector<double> host = traced("losses", [&] {
    reduce_losses_over_stages(sums);
    reduce_losses(sums);
    return sums.to_double_vector();  // the step's one loss read-back
  });
  if (per_token) {
    // Megatron's finalize_model_grads: every gradient / the global batch's labelled tokens.
    const double tokens = std::max(host[3], 1.0);
    scale_gradients(1.0 / tokens);
    m.loss = host[0] / tokens;
  } else {
    m.loss = host[0] * scale;
  }
  m.aux_loss = host[1] * mean_scale;
  m.mtp_loss = host[2] * mean_scale;

  // Megatron's scheduler position: the samples of the updates taken so far.
  m.lr = schedule_.lr(schedule_samples_);
  m.weight_decay = schedule_.weight_decay(schedule_samples_);

  // The first value that is not finite, if any: the losses, then the gradient norm (which the
  // optimizer computes and refuses on).
  std::string bad;
  double bad_value = 0.0;
  for (auto [name, value] : {std::pair{"lm loss", m.loss}, std::pair{"aux loss", m.aux_loss},
                             std::pair{"mtp loss", m.mtp_loss}}) {
    if (bad.empty() && !std::isfinite(value)) {
      bad = name;
      bad_value = value;
    }
  }
  if (bad.empty()) {
    const StepResult r =
        traced("optimizer", [&] { return optimizer_->step(m.lr, m.weight_decay); });
    m.grad_norm = r.grad_norm;
    if (!r.taken) {
      bad = "gradient norm";
      bad_value = r.grad_norm;
    }
  } else {
    m.grad_norm = std::numeric_limits<double>::quiet_NaN();  // not computed
  }

  if (!bad.empty()) {
    MOE_CHECK(config_.nan_action != NanAction::stop, "iteration ", m.iteration, ": the ", bad,
              " is ", bad_value,
              " (--check-for-nan-in-loss-and-grad / --nan-action stop); the model and the "
              "optimizer are unchanged");
    model_.discard_step();
    ++skipped_;
    ++skipped_in_a_row_;
    MOE_CHECK(skipped_in_a_row_ < config_.max_consecutive_skipped, "iteration ", m.iteration,
              ": the ", bad, " is ", bad_value, "; ", skipped_in_a_row_,
              " updates in a row were skipped (--nan-action skip stops at ",
              config_.max_consecutive_skipped,
              "): a skipped update leaves the weights unchanged, so these come from the weights "
              "or the learning rate (",
              m.lr,
              " at this step), not from one batch. Stopping "
              "without saving; lower --lr, or resume from the last checkpoint with --load");
    m.skipped = true;
    m.message = detail::concat("iteration ", m.iteration, ": the ", bad, " is ", bad_value,
                               "; update skipped (", skipped_, " skipped so far)");
  } else {
    model_.finish_step();
    skipped_in_a_row_ = 0;
    // Megatron: opt_param_scheduler.step(increment=global_batch_size) after a taken update.
    schedule_samples_ += config_.global_batch_size;
  }

  ++iteration_;
  consumed_samples_ += config_.global_batch_size;
  m.consumed_samples = consumed_samples_;
  m.tokens = config_.global_batch_size * config_.seq_length;
  m.seconds = seconds_since(start);
  return m;
}

void Trainer::check_cuda_graph_rules() const {
  const char* flag = "--cuda-graph-impl full_iteration";
  const nn::ModelConfig& c = model_.config();
  MOE_CHECK(c.hidden_dropout == 0 && c.attention_dropout == 0, flag,
            ": dropout draws new masks every step from counters a graph would freeze; add "
            "--attention-dropout 0 --hidden-dropout 0");
  if (c.moe.num_experts > 0) check_cuda_graph_moe_rules(c.moe, flag);
  MOE_CHECK(model_.device().is_cuda(), flag, " captures GPU work, but this run is on the ",
            model_.device());
  MOE_CHECK(!parallel_.state, flag,
            " runs on one rank (a capture spanning the ranks' collectives is not built yet)");
}

void Trainer::check_layer_graph_rules(const nn::LayerGraphModules& modules) const {
  const char* flag = "--cuda-graph-impl local";
  const nn::ModelConfig& c = model_.config();
  MOE_CHECK(c.hidden_dropout == 0 && c.attention_dropout == 0, flag,
            ": dropout draws new masks every step from counters a graph would freeze; add "
            "--attention-dropout 0 --hidden-dropout 0");
  MOE_CHECK(
      !pipelined(), flag,
      ": a pipeline schedule keeps several micro-batches in flight, and a layer's graph "
      "holds the buffers of one; leave --pipeline-model-parallel-size at 1 (or use no graphs)");
  MOE_CHECK(model_.recompute().granularity == nn::RecomputeGranularity::none, flag,
            ": a recomputed layer runs its forward again inside its backward, which the layer's "
            "graphs do not follow; leave out --recompute-granularity");
  const dist::ParallelState* ps = parallel_.state.get();
  const auto size = [ps](int (dist::ParallelState::*of)() const) { return ps ? (ps->*of)() : 1; };
  if (modules.attn)
    MOE_CHECK(size(&dist::ParallelState::tp_size) == 1 && size(&dist::ParallelState::cp_size) == 1,
              flag,
              " with attn: the attention's tensor- and context-parallel collectives are "
              "not captured; --tensor-model-parallel-size and --context-parallel-size must be 1");
  const bool any_moe = c.moe.num_experts > 0 && modules.moe;
  const bool any_dense = modules.mlp;
  if (any_dense || any_moe)
    MOE_CHECK(size(&dist::ParallelState::tp_size) == 1, flag,
              " with mlp or moe: the MLP's tensor-parallel collectives are not captured; "
              "--tensor-model-parallel-size must be 1");
  // moe_router (without moe): the norm, the router and the shared expert; moe_preprocess adds
  // the dispatcher's preprocessing.
  const bool router_part = c.moe.num_experts > 0 && modules.moe_router && !modules.moe;
  if (any_moe || router_part) {  // a captured router freezes what it counts on the host
    const char* module = any_moe ? "moe" : "moe_router";
    MOE_CHECK(!c.moe.moe_input_jitter_eps, flag, " with ", module,
              ": --moe-input-jitter-eps draws new noise every step from a counter a graph would "
              "freeze; leave it out");
    MOE_CHECK(c.moe.load_balancing() != nn::LoadBalancingType::global_aux_loss, flag, " with ",
              module,
              ": the global aux loss averages the counts over a step's micro-batches so far, a "
              "number a graph would freeze; use another --moe-router-load-balancing-type, or "
              "leave ",
              module, " out of --cuda-graph-modules");
  }
  if (any_moe) {
    MOE_CHECK(size(&dist::ParallelState::ep_size) == 1 && size(&dist::ParallelState::etp_size) == 1,
              flag,
              " with moe: the expert exchange is not captured; --expert-model-parallel-size and "
              "--expert-tensor-parallel-size must be 1 (capture attn alone with experts spread)");
    check_cuda_graph_moe_rules(c.moe, flag);
  }
  if (router_part) {
    MOE_CHECK(size(&dist::ParallelState::tp_size) == 1 && size(&dist::ParallelState::cp_size) == 1,
              flag,
              " with moe_router: the router's counts are summed over the tensor- and "
              "context-parallel ranks inside it; --tensor-model-parallel-size and "
              "--context-parallel-size must be 1");
    const bool expert_parallel =
        size(&dist::ParallelState::ep_size) * size(&dist::ParallelState::etp_size) > 1;
    MOE_CHECK(!modules.moe_preprocess || !expert_parallel ||
                  c.moe.dispatcher() == nn::DispatcherType::allgather ||
                  c.moe.moe_pad_expert_input_to_capacity || c.moe.moe_expert_rank_capacity_factor,
              flag,
              " with moe_preprocess: the alltoall dispatcher's preprocessing gathers the routed "
              "counts of the expert-parallel ranks and reads them on the host; capture it with "
              "drop-and-pad (--moe-expert-capacity-factor with "
              "--moe-pad-expert-input-to-capacity) or the sync-free exchange "
              "(--moe-expert-rank-capacity-factor), or leave moe_preprocess out");
  }
  MOE_CHECK(model_.device().is_cuda(), flag, " captures GPU work, but this run is on the ",
            model_.device());
}

Trainer::StepSums Trainer::replay_step_graph(
    const std::vector<MicroBatch>& micro_batches,
    const std::function<StepSums(const std::vector<MicroBatch>&)>& run, std::string& note) {
  if (!step_graph_) {
    // The buffers the graph reads (allocated before the capture, outside its pool), holding
    // this step's micro-batches; the capture records the step without running it.
    graph_inputs_.clear();
    for (const MicroBatch& mb : micro_batches)
      graph_inputs_.push_back({mb.input_ids.clone(), mb.labels.clone()});
    auto graph = std::make_unique<CudaGraph>();
    traced("cuda_graph.capture",
           [&] { graph->capture(model_.device(), [&] { graph_sums_ = run(graph_inputs_); }); });
    step_graph_ = std::move(graph);
    note = detail::concat("iteration ", iteration_ + 1, ": captured the forward and backward of ",
                          micro_batches.size(),
                          " micro-batches as one CUDA graph (--cuda-graph-impl full_iteration); "
                          "its memory pool holds ",
                          std::llround(static_cast<double>(step_graph_->pool_bytes()) / (1 << 20)),
                          " MiB");
  } else {
    for (size_t i = 0; i < micro_batches.size(); ++i) {
      graph_inputs_[i].input_ids.copy_(micro_batches[i].input_ids);
      graph_inputs_[i].labels.copy_(micro_batches[i].labels);
    }
  }
  traced("cuda_graph.replay", [&] { step_graph_->replay(); });
  // The graph writes the same sums tensor every replay: the step keeps its own copy.
  StepSums step = graph_sums_;
  step.sums = graph_sums_.sums.clone();
  return step;
}

std::optional<nn::GPTModel::SlotOverflow> Trainer::slot_overflow() {
  const nn::MoEConfig& moe = model_.config().moe;
  if (!moe.moe_expert_rank_capacity_factor || !parallel_.state ||
      moe.expert_model_parallel_size * moe.expert_tensor_parallel_size == 1)
    return std::nullopt;
  // Every rank takes part (a stage without MoE layers too): one decision for the world.
  const std::optional<nn::GPTModel::SlotOverflow> mine = model_.take_slot_overflow();
  const double none = static_cast<double>(std::numeric_limits<int64_t>::min());
  Tensor worst = Tensor::from_vector<double>(
      {mine ? static_cast<double>(mine->over_rows) : none, mine ? mine->needed_factor : 0.0}, {2},
      model_.device());
  parallel_.state->world()->all_reduce(worst, dist::ReduceOp::max);
  const std::vector<double> host = worst.to_vector<double>();
  return nn::GPTModel::SlotOverflow{static_cast<int64_t>(host[0]), host[1]};
}

double Trainer::evaluate() {
  MOE_CHECK(valid_ != nullptr, "evaluate: no validation data was given to the trainer");
  MOE_CHECK(config_.eval_iters > 0, "evaluate: --eval-iters must be positive, got ",
            config_.eval_iters);
  // Megatron's evaluate(): eval_iters iterations of a global batch each, forward only.
  const int64_t count = config_.eval_iters * num_microbatches();
  StepSums step;  // [lm loss, aux, mtp, labelled tokens]
  step.per_token = config_.calculate_per_token_loss;
  // Forward only, off the training's hot path: the host-sized expert exchange, which cannot
  // overflow, rather than a redo machinery for evaluation.
  model_.set_synchronising_dispatch(true);
  if (pipelined()) {
    for (int64_t it = 0; it < config_.eval_iters; ++it) {
      std::vector<MicroBatch> micro_batches;
      for (int64_t i = 0; i < num_microbatches(); ++i)
        micro_batches.push_back(load(*valid_, "validation"));
      run_pipeline(micro_batches, {}, 1.0, /*forward_only=*/true, step);
    }
  } else {
    for (int64_t i = 0; i < count; ++i) {
      MicroBatch mb = load(*valid_, "validation");
      nn::GPTContext ctx;
      step.add(model_.forward(mb.input_ids, mb.labels, ctx), ctx);
    }
  }
  model_.set_synchronising_dispatch(false);
  // The forward passes counted routed tokens for the expert-bias update: not training data.
  model_.discard_step();
  Tensor& sum = step.sums;
  reduce_losses_over_stages(sum);
  reduce_losses(sum);
  const std::vector<double> host = sum.to_double_vector();
  if (config_.calculate_per_token_loss) return host[0] / std::max(host[3], 1.0);
  return host[0] / static_cast<double>(count * data_parallel_size());
}

TrainerState Trainer::state() const {
  TrainerState s;
  s.iteration = iteration_;
  s.consumed_samples = consumed_samples_;
  s.skipped_iterations = skipped_;
  s.optimizer_steps = optimizer_->steps_taken();
  s.schedule_samples = schedule_samples_;
  s.train_position = train_.position();
  s.valid_position = valid_ ? valid_->position() : 0;
  return s;
}

void Trainer::restore(const TrainerState& s) {
  MOE_CHECK(s.iteration >= 0 && s.consumed_samples >= 0 && s.skipped_iterations >= 0 &&
                s.optimizer_steps >= 0 && s.schedule_samples >= 0,
            "Trainer::restore: negative counters (iteration ", s.iteration, ", consumed samples ",
            s.consumed_samples, ", skipped ", s.skipped_iterations, ", optimizer steps ",
            s.optimizer_steps, ", schedule samples ", s.schedule_samples, ")");
  iteration_ = s.iteration;
  consumed_samples_ = s.consumed_samples;
  skipped_ = s.skipped_iterations;
  skipped_in_a_row_ = 0;
  optimizer_->set_steps_taken(s.optimizer_steps);
  schedule_samples_ = s.schedule_samples;
  train_.set_position(s.train_position);
  if (valid_) valid_->set_position(s.valid_position);
}

}  // namespace moe::train
