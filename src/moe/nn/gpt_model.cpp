#include "moe/nn/gpt_model.h"

#include <algorithm>
#include <array>

#include "moe/core/rng.h"
#include "moe/core/trace_range.h"
#include "moe/nn/param_init.h"
#include "moe/ops/dropout.h"
#include "moe/ops/elementwise.h"
#include "moe/ops/embedding.h"
#include "moe/ops/gemm.h"

namespace moe::nn {
namespace {

constexpr const char* kOp = "GPTModel";

// ModelConfig::validate() checks the shapes and options; these are the model's own limits.
void check_model_config(const ModelConfig& c, DType dtype) {
  c.validate();
  MOE_CHECK(dtype == DType::f64 || dtype == DType::f32 || dtype == DType::bf16, kOp,
            ": parameters must be f64, f32 or bf16, got ", dtype);
}

void check_tokens(const Tensor& t, const char* name, Device device) {
  check_defined(t, kOp, name);
  check_dim(t, 2, kOp, name);
  MOE_CHECK(t.dtype() == DType::i32 || t.dtype() == DType::i64, kOp, ": ", name,
            " must be i32 or i64, got ", t.dtype());
  MOE_CHECK(t.device() == device, kOp, ": ", name, " is on ", t.device(), " but the model is on ",
            device);
}

// t [S, B] shifted left by k along the sequence: out[s] = t[s + k], `fill` where s + k >= S
// (Megatron's roll_tensor applied k times: torch.roll then the vacated positions set).
Tensor shift_left(const Tensor& t, int64_t k, double fill) {
  const int64_t S = t.size(0);
  Tensor out = Tensor::full(t.shape(), fill, t.dtype(), t.device());
  if (k < S) out.rows(0, S - k).copy_(t.rows(k, S - k));
  return out;
}

void add_router_losses(const TransformerLayer& layer, const TransformerLayerContext& ctx,
                       Tensor& aux_loss) {
  if (!layer.is_moe()) return;
  const RouterContext& router = ctx.moe.router;
  if (router.aux_loss.defined()) ops::add_(aux_loss, router.aux_loss);
  if (router.z_loss.defined()) ops::add_(aux_loss, router.z_loss);
}

// The stages a pipeline rank was given must be parts of this model, the MTP layers in the
// loss's stage.
void check_chunks(const std::vector<PipelineStage>& chunks, const ModelConfig& c) {
  for (size_t i = 0; i < chunks.size(); ++i) {
    const PipelineStage& st = chunks[i];
    MOE_CHECK(
        st.first_layer >= 0 && st.num_layers >= 0 && st.first_layer + st.num_layers <= c.num_layers,
        kOp, ": pipeline chunk ", i, " holds decoder layers [", st.first_layer, ", ",
        st.first_layer + st.num_layers, ") of a model of ", c.num_layers);
    MOE_CHECK(st.num_mtp_layers == 0 || st.num_mtp_layers == c.mtp_num_layers, kOp,
              ": pipeline chunk ", i, " holds ", st.num_mtp_layers, " of the ", c.mtp_num_layers,
              " MTP layers (they must be in one stage)");
    MOE_CHECK(st.num_mtp_layers == 0 || st.first_layer + st.num_layers == c.num_layers, kOp,
              ": pipeline chunk ", i, " holds the MTP layers but not the last decoder layer");
  }
}

}  // namespace

GPTModel::GPTModel(const ModelConfig& config, DType dtype, Device device, uint64_t seed,
                   const ModelGroups& groups, std::vector<PipelineStage> chunks)
    : config_(config),
      groups_(groups),
      chunks_(std::move(chunks)),
      dtype_(dtype),
      device_(device),
      seed_(seed) {
  check_model_config(config_, dtype);
  if (chunks_.empty())
    chunks_.push_back({true, 0, config_.num_layers, 0, config_.mtp_num_layers, true});
  check_chunks(chunks_, config_);
  const TensorParallel& tp = groups_.tp;
  const int64_t V = config_.vocab_size, H = config_.hidden_size;
  const int64_t Vl = tp.local(V, "--vocab-size (the padded vocabulary)");
  // The vocabulary rows [r V/P, (r + 1) V/P) of the embedding (and of lm_head).
  auto vocab_rows = [&](const char* name, const char* salt) {
    Parameter p = Parameter::make(name, {Vl, H}, dtype, device);
    set_tp_split(p, {V, H}, {V, H}, 0, tp);
    fill_normal_box(p, parameter_seed(seed, -1, salt), 0.0, config_.init_method_std);
    return p;
  };
  if (builds_embedding()) {
    embed_tokens = vocab_rows("model.embed_tokens.weight", "embed_tokens");
    // Held by the first stage and, for the tied output layer or MTP's embedding, by the loss's
    // and MTP's stages: the copies' gradients are summed (train/data_parallel.h), the copies
    // after the first stage's counted and written by the first.
    const bool first = std::any_of(chunks_.begin(), chunks_.end(),
                                   [](const PipelineStage& st) { return st.embedding; });
    embed_tokens.layout.pp_shared =
        !is_whole() && (!config_.untie_embeddings_and_output_weights || config_.mtp_num_layers > 0);
    embed_tokens.layout.pp_copy = embed_tokens.layout.pp_shared && !first;
  }
  for (const PipelineStage& st : chunks_) {
    chunk_begin_.push_back(layers.size());
    for (int64_t l = st.first_layer; l < st.first_layer + st.num_layers; ++l)
      layers.emplace_back(config_, l, dtype, device, seed, groups);
  }
  const bool mtp_here = std::any_of(chunks_.begin(), chunks_.end(),
                                    [](const PipelineStage& st) { return st.num_mtp_layers > 0; });
  if (mtp_here) {
    mtp_layers.reserve(static_cast<size_t>(config_.mtp_num_layers));
    for (int64_t k = 0; k < config_.mtp_num_layers; ++k)
      mtp_layers.emplace_back(config_, k, dtype, device, seed, groups);
  }
  if (std::any_of(chunks_.begin(), chunks_.end(),
                  [&](const PipelineStage& st) { return ends_decoder(st); })) {
    final_norm = RMSNorm("model.norm.weight", H, config_.norm_epsilon, dtype, device);
    set_tp_replicated(final_norm.weight, tp, tp.sequence_parallel);
  }
  // Megatron initialises the output layer with init_method (not the scaled output-layer one).
  if (builds_loss() && config_.untie_embeddings_and_output_weights)
    lm_head = vocab_rows("lm_head.weight", "lm_head");
}

bool GPTModel::ends_decoder(const PipelineStage& st) const {
  return config_.mtp_num_layers > 0 ? st.num_mtp_layers > 0 : st.loss;
}

bool GPTModel::sends_mtp_hidden(const PipelineStage& st) const {
  return st.num_mtp_layers > 0 && !st.loss;
}

bool GPTModel::receives_mtp_hidden(const PipelineStage& st) const {
  return st.loss && config_.mtp_num_layers > 0 && st.num_mtp_layers == 0;
}

Shape GPTModel::stage_input_shape(int c, int64_t seq_length, int64_t batch) const {
  const int64_t rows = local_seq_length(seq_length);
  const int64_t depths = receives_mtp_hidden(chunk(c)) ? 1 + config_.mtp_num_layers : 1;
  return {depths * rows, batch, config_.hidden_size};
}

Shape GPTModel::stage_output_shape(int c, int64_t seq_length, int64_t batch) const {
  const int64_t rows = local_seq_length(seq_length);
  const int64_t depths = sends_mtp_hidden(chunk(c)) ? 1 + config_.mtp_num_layers : 1;
  return {depths * rows, batch, config_.hidden_size};
}

const PipelineStage& GPTModel::chunk(int c) const {
  MOE_CHECK(c >= 0 && c < num_chunks(), kOp, ": chunk ", c, " of a rank with ", num_chunks());
  return chunks_[static_cast<size_t>(c)];
}

bool GPTModel::is_whole() const {
  const PipelineStage& st = chunks_.front();
  return chunks_.size() == 1 && st.embedding && st.loss && st.num_layers == config_.num_layers;
}

bool GPTModel::builds_loss() const {
  return std::any_of(chunks_.begin(), chunks_.end(),
                     [](const PipelineStage& st) { return st.loss; });
}

bool GPTModel::builds_embedding() const {
  // The first stage's lookup, MTP's lookups of the shifted tokens, the tied output layer.
  return std::any_of(chunks_.begin(), chunks_.end(), [&](const PipelineStage& st) {
    return st.embedding || st.num_mtp_layers > 0 ||
           (st.loss && !config_.untie_embeddings_and_output_weights);
  });
}

bool GPTModel::fuses_output_backward(const GPTContext& ctx) const {
  return ctx.loss_scale_known_in_forward && !groups_.tp.active() && !groups_.cp.active() &&
         !receives_mtp_hidden(chunk(ctx.chunk));
}

int64_t GPTModel::local_seq_length(int64_t seq_length) const {
  const int64_t cp_rows = seq_length / groups_.cp.size();
  return groups_.tp.sequence_parallel ? cp_rows / groups_.tp.size() : cp_rows;
}

Tensor GPTModel::embed(const Tensor& ids) {
  const TraceRange range("embedding");
  const TensorParallel& tp = groups_.tp;
  if (!tp.active()) return ops::embedding_forward(ids, embed_tokens.value);
  ops::EmbeddingArgs args;
  args.vocab_start = tp.rank() * embed_tokens.value.size(0);
  args.vocab_size = config_.vocab_size;
  // Each rank looks up its vocabulary rows (zeros elsewhere); the exit sums them.
  return tp_exit_forward(ops::embedding_forward(ids, embed_tokens.value, args), tp);
}

void GPTModel::embed_backward(const Tensor& dy, const Tensor& ids) {
  const TraceRange range("embedding.bwd");
  const TensorParallel& tp = groups_.tp;
  const bool accumulate = embed_tokens.take_grad_beta() != 0.0f;
  ops::EmbeddingArgs args;
  if (tp.active()) {
    args.vocab_start = tp.rank() * embed_tokens.value.size(0);
    args.vocab_size = config_.vocab_size;
  }
  ops::embedding_backward(tp_exit_backward(dy, tp), ids, embed_tokens.grad, accumulate, args);
}

ops::CrossEntropyResult GPTModel::output_loss(const Tensor& hidden, const Tensor& labels,
                                              const Tensor& loss_mask, Tensor& saved_input) {
  const TraceRange range("output_layer");
  const TensorParallel& tp = groups_.tp;
  const Tensor& weight = output_weight().value;
  const Tensor all = tp_enter_forward(hidden, tp);
  saved_input = tp_input_to_save(hidden, all, tp);
  if (!tp.active())
    return over_sequence(
        ops::linear_cross_entropy_forward(all, weight, labels, loss_mask, cross_entropy));
  // Vocab-parallel: this rank's (max, sum-exp, label logit) per token, every rank's gathered
  // ([P, 3, T], a few numbers per token) and combined in rank order on every rank.
  const int64_t T = labels.numel(), P = tp.size();
  const ops::CrossEntropyPartials mine = ops::linear_cross_entropy_partials(
      all, weight, labels, tp.rank() * weight.size(0), cross_entropy);
  Tensor packed = Tensor::empty({3, T}, mine.max.dtype(), mine.max.device());
  packed.rows(0, 1).copy_(mine.max.reshape({1, T}));
  packed.rows(1, 1).copy_(mine.sum_exp.reshape({1, T}));
  packed.rows(2, 1).copy_(mine.label_logit.reshape({1, T}));
  Tensor gathered = Tensor::empty({P * 3, T}, packed.dtype(), packed.device());
  tp.group->all_gather(packed, gathered);
  std::vector<ops::CrossEntropyPartials> shards(static_cast<size_t>(P));
  for (int64_t r = 0; r < P; ++r) {
    shards[static_cast<size_t>(r)].max = gathered.rows(3 * r, 1).reshape({T});
    shards[static_cast<size_t>(r)].sum_exp = gathered.rows(3 * r + 1, 1).reshape({T});
    shards[static_cast<size_t>(r)].label_logit = gathered.rows(3 * r + 2, 1).reshape({T});
  }
  return over_sequence(
      ops::cross_entropy_combine(shards, labels, loss_mask, config_.vocab_size, cross_entropy));
}

ops::CrossEntropyResult GPTModel::over_sequence(ops::CrossEntropyResult local) const {
  const ContextParallel& cp = groups_.cp;
  if (!cp.active()) return local;
  // [sum_t w_t l_t, N] of this rank's tokens, summed over CP: the micro-batch's.
  const bool mean = cross_entropy.reduction == ops::CrossEntropyReduction::mean;
  const double n = local.weight_sum.item();
  const double sum = mean ? local.loss.item() * n : local.loss.item();
  Tensor packed = Tensor::from_vector(std::vector<double>{sum, n}, {2}, Device::cpu())
                      .to(local.loss.dtype())
                      .to(local.loss.device());
  cp.group->all_reduce(packed, dist::ReduceOp::sum);
  const std::vector<double> total = packed.to_double_vector();
  const double loss = mean ? (total[1] > 0 ? total[0] / total[1] : 0.0) : total[0];
  local.loss = Tensor::full({}, loss, local.loss.dtype(), local.loss.device());
  local.weight_sum =
      Tensor::full({}, total[1], local.weight_sum.dtype(), local.weight_sum.device());
  return local;
}

Tensor GPTModel::output_loss_backward(double grad_loss, const Tensor& saved_input,
                                      const Tensor& labels, const Tensor& loss_mask,
                                      const ops::CrossEntropyResult& saved) {
  const TraceRange range("output_layer.bwd");
  const TensorParallel& tp = groups_.tp;
  Parameter& weight = output_weight();
  // The fused cross-entropy accumulates dW (+=): materialise a lazily zeroed gradient first.
  Tensor& weight_grad = weight.grad_value();
  const Tensor dh = ops::linear_cross_entropy_backward(
      grad_loss, tp_saved_input(saved_input, tp), weight.value, labels, loss_mask, saved,
      weight_grad, cross_entropy, tp.rank() * weight.value.size(0));
  return tp_enter_backward(dh, tp);  // this rank's vocabulary's share, summed
}

LayerDropout GPTModel::dropout_for(const GPTContext& ctx, int64_t seq_length) const {
  LayerDropout d;
  if (!ctx.dropout_first_sample) return d;
  MOE_CHECK(*ctx.dropout_first_sample >= 0, kOp, ": dropout_first_sample must be >= 0, got ",
            *ctx.dropout_first_sample);
  d.hidden = config_.hidden_dropout;
  d.attention = config_.attention_dropout;
  d.seed = seed_;
  d.first_sample = *ctx.dropout_first_sample;
  if (groups_.tp.sequence_parallel || groups_.cp.active()) {
    // The token tensors hold this rank's positions: its CP chunks (or the whole sequence), of
    // which its TP shard under sequence parallelism.
    const ContextParallel& cp = groups_.cp;
    const int64_t cp_rows = seq_length / cp.size(), rows = local_seq_length(seq_length);
    const int64_t first = groups_.tp.sequence_parallel ? groups_.tp.rank() * rows : 0;
    const int64_t chunk = cp.active() ? cp.chunk(seq_length) : cp_rows;
    const std::array<int64_t, 2> starts =
        cp.active() ? cp.chunk_starts(seq_length) : std::array<int64_t, 2>{0, cp_rows};
    for (int64_t i = first; i < first + rows;) {  // split where the chunks meet
      const int64_t c = i / chunk, end = std::min(first + rows, (c + 1) * chunk);
      d.segments.push_back({i - first, end - i, starts[static_cast<size_t>(c)] + i - c * chunk});
      i = end;
    }
    d.seq_total = seq_length;
  }
  return d;
}

Tensor GPTModel::trunk(const Tensor& input_ids, GPTContext& ctx) {
  check_tokens(input_ids, "input_ids", device_);
  const int64_t S = input_ids.size(0), B = input_ids.size(1);
  const TensorParallel& tp = groups_.tp;
  const ContextParallel& cp = groups_.cp;
  if (cp.active()) cp.chunk(S);  // checks that 2 CP divides S
  const int64_t cp_rows = S / cp.size();
  if (tp.active() && (tp.sequence_parallel || config_.moe.num_experts > 0))
    MOE_CHECK(cp_rows % tp.size() == 0, kOp, ": the sequence length ", S,
              cp.active() ? detail::concat(" / --context-parallel-size ", cp.size(), " = ", cp_rows)
                          : std::string(),
              " is not divisible by --tensor-model-parallel-size ", tp.size(),
              tp.sequence_parallel ? " (--sequence-parallel splits it)"
                                   : " (the MoE layers route a sequence shard per rank)");
  ctx.tokens_shape = input_ids.shape();
  ctx.input_ids = input_ids;
  ctx.local_ids = context_parallel_rows(input_ids, cp);
  const PipelineStage& st = chunk(ctx.chunk);
  const Shape local_shape{local_seq_length(S), B, config_.hidden_size};
  if (receives_mtp_hidden(st)) {  // the loss after a standalone MTP stage: h_0 of its depths
    MOE_CHECK(ctx.stage_input.defined(), kOp, ": pipeline chunk ", ctx.chunk,
              " starts from the MTP stage's output, but stage_input is not set");
    check_shape(ctx.stage_input, stage_input_shape(ctx.chunk, S, B), kOp, "stage_input");
    if (on_params_needed) {
      if (embed_tokens.value.defined()) on_params_needed({&embed_tokens});
      on_params_needed(head_parameters());
    }
    ctx.layers.clear();
    return ctx.stage_input.rows(0, local_shape[0]).reshape({local_shape[0] * B, local_shape[2]});
  }
  Tensor x;
  if (st.embedding) {
    if (on_params_needed) on_params_needed({&embed_tokens});
    x = embed(ctx.local_ids);  // [S_local, B, H]
    ctx.dropout.apply_(x, -1, ops::DropoutSite::embedding);
  } else {
    MOE_CHECK(ctx.stage_input.defined(), kOp, ": pipeline chunk ", ctx.chunk,
              " starts from the previous stage's output, but stage_input is not set");
    check_shape(ctx.stage_input, local_shape, kOp, "stage_input");
    x = ctx.stage_input;
  }
  const size_t begin = chunk_begin(ctx.chunk);
  ctx.layers.assign(static_cast<size_t>(st.num_layers), TransformerLayerContext{});
  ctx.recompute_inputs.assign(ctx.layers.size(), Tensor());
  // Full recomputation: a unit's layers keep their router outputs only, its first its input.
  std::vector<bool> recomputed(ctx.layers.size(), false), unit_first(ctx.layers.size(), false);
  for (const auto& [first, end] : recompute_units(recompute_, st.num_layers)) {
    unit_first[static_cast<size_t>(first)] = true;
    for (int64_t i = first; i < end; ++i) recomputed[static_cast<size_t>(i)] = true;
  }
  for (size_t i = 0; i < ctx.layers.size(); ++i) {
    TransformerLayer& layer = layers[begin + i];
    if (on_params_needed) on_params_needed(layer.parameters());
    if (unit_first[i]) ctx.recompute_inputs[i] = x;
    x = layer.forward(x, ctx.layers[i], ctx.dropout);
    if (recomputed[i]) ctx.layers[i] = ctx.layers[i].outputs();
  }
  if (!ends_decoder(st)) {
    ctx.stage_output = x;
    return Tensor();
  }
  if (on_params_needed) {
    if (!st.embedding && embed_tokens.value.defined()) on_params_needed({&embed_tokens});
    on_params_needed(head_parameters());
  }
  return final_norm.forward(x, ctx.final_norm).reshape({local_shape[0] * B, local_shape[2]});
}

GPTLoss GPTModel::forward(const Tensor& input_ids, const Tensor& labels, GPTContext& ctx,
                          const Tensor& loss_mask) {
  const std::optional<double> loss_scale_known = ctx.loss_scale_known_in_forward;  // inputs
  const std::optional<int64_t> dropout_first_sample = ctx.dropout_first_sample;
  const int chunk_index = ctx.chunk;
  const Tensor stage_input = ctx.stage_input;
  ctx = GPTContext{};
  ctx.loss_scale_known_in_forward = loss_scale_known;
  ctx.dropout_first_sample = dropout_first_sample;
  ctx.chunk = chunk_index;
  ctx.stage_input = stage_input;
  ctx.dropout = dropout_for(ctx, input_ids.dim() == 2 ? input_ids.size(0) : 0);
  check_tokens(input_ids, "input_ids", device_);
  check_tokens(labels, "labels", device_);
  check_shape(labels, input_ids.shape(), kOp, "labels");
  const int64_t D = config_.mtp_num_layers;
  if (D > 0) {
    MOE_CHECK(input_ids.size(0) > D, kOp, ": the sequence length ", input_ids.size(0),
              " (input_ids [S, B] = ", shape_str(input_ids.shape()),
              ") must exceed --mtp-num-layers ", D,
              ": multi-token prediction depth k predicts token s + k + 1 from position s");
    MOE_CHECK(cross_entropy.reduction == ops::CrossEntropyReduction::mean, kOp,
              ": multi-token prediction (--mtp-num-layers ", D,
              ") needs the mean cross-entropy reduction");
  }
  ctx.sequence_labels = labels;
  const Tensor my_labels = context_parallel_rows(labels, groups_.cp);
  ctx.labels = my_labels.reshape({my_labels.numel()});
  if (loss_mask.defined()) {
    check_shape(loss_mask, input_ids.shape(), kOp, "loss_mask");
    ctx.sequence_mask = loss_mask;
    const Tensor my_mask = context_parallel_rows(loss_mask, groups_.cp);
    ctx.loss_mask = my_mask.reshape({my_mask.numel()});
  }
  ctx.hidden = trunk(input_ids, ctx);
  const PipelineStage& st = chunk(ctx.chunk);
  const size_t begin = chunk_begin(ctx.chunk);
  // The losses' dtype: f64 for f64 models, else f32 (ops/cross_entropy.h).
  const DType loss_dtype = dtype_ == DType::f64 ? DType::f64 : DType::f32;
  GPTLoss out;
  out.aux_loss = Tensor::zeros({}, loss_dtype, device_);
  for (size_t i = 0; i < ctx.layers.size(); ++i)
    add_router_losses(layers[begin + i], ctx.layers[i], out.aux_loss);
  if (!st.loss) {  // a pipeline stage before the loss's: its layers' aux loss
    if (sends_mtp_hidden(st)) {
      // Standalone MTP: the depths' hidden states go on to the loss stage, [h_0; ...; h_D].
      mtp_layers_forward(ctx, out.aux_loss);
      const int64_t rows = ctx.hidden.size(0), S_local = local_seq_length(input_ids.size(0));
      ctx.stage_output =
          Tensor::empty(stage_output_shape(ctx.chunk, input_ids.size(0), input_ids.size(1)),
                        ctx.hidden.dtype(), device_);
      ctx.stage_output.rows(0, S_local)
          .copy_(ctx.hidden.reshape({S_local, rows / S_local, config_.hidden_size}));
      for (int64_t d = 0; d < D; ++d)
        ctx.stage_output.rows((d + 1) * S_local, S_local)
            .copy_(ctx.mtp[static_cast<size_t>(d)].hidden.reshape(
                {S_local, rows / S_local, config_.hidden_size}));
    }
    out.lm_loss = Tensor::zeros({}, loss_dtype, device_);
    out.mtp_loss = Tensor::zeros({}, loss_dtype, device_);
    out.loss = out.aux_loss.clone();
    return out;
  }
  if (fuses_output_backward(ctx)) {
    const TraceRange range("output_layer");  // its backward too (the loss's scale is known)
    ops::CrossEntropyWithGrad fused = ops::linear_cross_entropy_forward_backward(
        *ctx.loss_scale_known_in_forward, ctx.hidden, output_weight().value, ctx.labels,
        ctx.loss_mask, output_weight().grad_value(), cross_entropy);
    ctx.cross_entropy = std::move(fused.result);
    ctx.output_grad_hidden = std::move(fused.grad_hidden);
    ctx.hidden_all = ctx.hidden;
  } else {
    ctx.cross_entropy = output_loss(ctx.hidden, ctx.labels, ctx.loss_mask, ctx.hidden_all);
  }
  out.lm_loss = ctx.cross_entropy.loss;
  if (D > 0) {
    if (receives_mtp_hidden(st)) {  // h_1 .. h_D from the MTP stage
      const int64_t S_local = local_seq_length(input_ids.size(0));
      ctx.mtp.resize(static_cast<size_t>(D));
      for (int64_t d = 0; d < D; ++d)
        ctx.mtp[static_cast<size_t>(d)].hidden =
            ctx.stage_input.rows((d + 1) * S_local, S_local).reshape(ctx.hidden.shape());
    } else {
      mtp_layers_forward(ctx, out.aux_loss);
    }
    out.mtp_loss = mtp_losses(ctx);
  } else {
    out.mtp_loss = Tensor::zeros({}, out.lm_loss.dtype(), device_);
  }
  out.loss = out.lm_loss.clone();
  ops::add_(out.loss, out.aux_loss);
  ops::add_(out.loss, out.mtp_loss);
  return out;
}

void GPTModel::mtp_layers_forward(GPTContext& ctx, Tensor& aux_loss) {
  const TraceRange range("mtp");
  const int64_t S = ctx.tokens_shape[0], B = ctx.tokens_shape[1];
  const int64_t Sl = local_seq_length(S), H = config_.hidden_size, D = config_.mtp_num_layers;
  const ContextParallel& cp = groups_.cp;
  Tensor prev = ctx.hidden.reshape({Sl, B, H});  // h_0: after the final norm
  ctx.mtp.resize(static_cast<size_t>(D));
  for (int64_t d = 0; d < D; ++d) {
    const int64_t k = d + 1;
    MtpDepthContext& m = ctx.mtp[static_cast<size_t>(d)];
    // Shifted over the whole sequence, then this rank's rows.
    m.input_ids = context_parallel_rows(shift_left(ctx.input_ids, k, 0.0), cp);
    Tensor embedded = embed(m.input_ids);
    MtpLayer& mtp = mtp_layers[static_cast<size_t>(d)];
    ctx.dropout.apply_(embedded, mtp.index(), ops::DropoutSite::embedding);
    if (on_params_needed) on_params_needed(mtp.parameters());
    prev = mtp.forward(embedded, prev, m.layer, ctx.dropout);
    m.hidden = prev.reshape({Sl * B, H});
    add_router_losses(mtp.layer, m.layer.layer, aux_loss);
  }
}

Tensor GPTModel::mtp_losses(GPTContext& ctx) {
  const int64_t D = config_.mtp_num_layers;
  const ContextParallel& cp = groups_.cp;
  Tensor mtp_loss = Tensor::zeros({}, ctx.cross_entropy.loss.dtype(), device_);
  for (int64_t d = 0; d < D; ++d) {
    const int64_t k = d + 1;
    MtpDepthContext& m = ctx.mtp[static_cast<size_t>(d)];
    const Tensor shifted = context_parallel_rows(
        shift_left(ctx.sequence_labels, k, static_cast<double>(cross_entropy.ignore_index)), cp);
    m.labels = shifted.reshape({shifted.numel()});
    if (ctx.sequence_mask.defined()) {
      const Tensor mask = context_parallel_rows(shift_left(ctx.sequence_mask, k, 0.0), cp);
      m.loss_mask = mask.reshape({mask.numel()});
    }
    m.cross_entropy = output_loss(m.hidden, m.labels, m.loss_mask, m.hidden_all);
    ops::add_(mtp_loss, m.cross_entropy.loss);
  }
  ops::scale_(mtp_loss, config_.mtp_loss_scaling_factor / static_cast<double>(D));
  return mtp_loss;
}

std::vector<Tensor> GPTModel::mtp_losses_backward(GPTContext& ctx, double loss_scale) {
  const int64_t D = config_.mtp_num_layers;
  const double depth_scale = loss_scale * config_.mtp_loss_scaling_factor / static_cast<double>(D);
  std::vector<Tensor> dh(static_cast<size_t>(D));
  for (int64_t d = D; d-- > 0;) {
    MtpDepthContext& m = ctx.mtp[static_cast<size_t>(d)];
    dh[static_cast<size_t>(d)] =
        output_loss_backward(depth_scale, m.hidden_all, m.labels, m.loss_mask, m.cross_entropy);
  }
  return dh;
}

Tensor GPTModel::mtp_layers_backward(GPTContext& ctx, std::vector<Tensor> dh, double loss_scale) {
  const TraceRange range("mtp.bwd");
  const int64_t S = ctx.tokens_shape[0], B = ctx.tokens_shape[1];
  const int64_t Sl = local_seq_length(S), H = config_.hidden_size, D = config_.mtp_num_layers;
  Tensor d_next;  // d h_k from depth k + 1's layer
  for (int64_t d = D; d-- > 0;) {
    MtpDepthContext& m = ctx.mtp[static_cast<size_t>(d)];
    Tensor& dh_d = dh[static_cast<size_t>(d)];
    if (d_next.defined()) ops::add_(dh_d, d_next.reshape({Sl * B, H}));
    MtpLayer& mtp = mtp_layers[static_cast<size_t>(d)];
    MtpLayerGrads grads = mtp.backward(dh_d.reshape({Sl, B, H}), m.layer, loss_scale);
    const Tensor d_embedding =
        ctx.dropout.backward(grads.embedding, mtp.index(), ops::DropoutSite::embedding);
    embed_backward(d_embedding, m.input_ids);
    d_next = std::move(grads.prev_hidden);
  }
  if (on_grads_ready)
    for (MtpLayer& mtp : mtp_layers) on_grads_ready(mtp.parameters());
  return d_next.reshape({Sl * B, H});
}

void GPTModel::backward(GPTContext& ctx, double loss_scale) {
  MOE_CHECK(!ctx.tokens_shape.empty(), kOp, ": backward without a forward");
  const PipelineStage& st = chunk(ctx.chunk);
  MOE_CHECK(static_cast<int64_t>(ctx.layers.size()) == st.num_layers, kOp, ": the context holds ",
            ctx.layers.size(), " layers, the model's chunk ", ctx.chunk, " ", st.num_layers);
  const int64_t S = ctx.tokens_shape[0], B = ctx.tokens_shape[1];
  const int64_t Sl = local_seq_length(S), H = config_.hidden_size;
  if (receives_mtp_hidden(st)) {  // the loss after a standalone MTP stage: no layers
    ctx.stage_input_grad = loss_backward(ctx, loss_scale);
    if (embed_tokens.value.defined() && on_grads_ready) on_grads_ready({&embed_tokens});
    return;
  }
  Tensor dx;
  if (st.loss) {
    dx = loss_backward(ctx, loss_scale).reshape({Sl, B, H});
  } else {
    MOE_CHECK(ctx.stage_output_grad.defined(), kOp, ": pipeline chunk ", ctx.chunk,
              " ends before the loss: its backward needs stage_output_grad");
    check_shape(ctx.stage_output_grad, stage_output_shape(ctx.chunk, S, B), kOp,
                "stage_output_grad");
    dx = ctx.stage_output_grad;
    if (sends_mtp_hidden(st)) {
      // Standalone MTP: d [h_0; ...; h_D] from the loss stage, through the MTP layers (their
      // d h_0 adds to the main loss's), then the final norm.
      std::vector<Tensor> dh(static_cast<size_t>(config_.mtp_num_layers));
      for (size_t d = 0; d < dh.size(); ++d)
        dh[d] = dx.rows(static_cast<int64_t>(d + 1) * Sl, Sl).reshape({Sl * B, H});
      Tensor dh0 = dx.rows(0, Sl).reshape({Sl * B, H});
      ops::add_(dh0, mtp_layers_backward(ctx, std::move(dh), loss_scale));
      dx = final_norm.backward(dh0.reshape({Sl, B, H}), ctx.final_norm);
      if (on_grads_ready) on_grads_ready(head_parameters());
    }
  }
  const size_t begin = chunk_begin(ctx.chunk);
  const std::vector<std::pair<int64_t, int64_t>> units = recompute_units(recompute_, st.num_layers);
  for (size_t i = ctx.layers.size(); i-- > 0;) {
    for (const auto& [first, end] : units) {
      if (static_cast<size_t>(end) != i + 1) continue;
      // The unit ending here: its forward again, from its input, with the contexts it fills.
      const TraceRange range("recompute");
      Tensor y = std::move(ctx.recompute_inputs[static_cast<size_t>(first)]);
      MOE_CHECK(y.defined(), kOp, ": the recomputed layers ", first, "-", end - 1,
                " have no saved input (a second backward of one forward?)");
      for (int64_t j = first; j < end; ++j)
        y = layers[begin + static_cast<size_t>(j)].forward(y, ctx.layers[static_cast<size_t>(j)],
                                                           ctx.dropout);
    }
    dx = layers[begin + i].backward(dx, ctx.layers[i], loss_scale);
    if (on_grads_ready) on_grads_ready(layers[begin + i].parameters());
  }
  if (!st.embedding) {
    ctx.stage_input_grad = std::move(dx);
    // This stage's copy of the embedding (tied output layer, MTP) is complete.
    if (embed_tokens.value.defined() && on_grads_ready) on_grads_ready({&embed_tokens});
    return;
  }
  // With tied weights the embedding gradient already holds the output layer's part: add to it.
  dx = ctx.dropout.backward(dx, -1, ops::DropoutSite::embedding);
  embed_backward(dx, ctx.local_ids);
  if (on_grads_ready) on_grads_ready({&embed_tokens});
}

Tensor GPTModel::loss_backward(GPTContext& ctx, double loss_scale) {
  const PipelineStage& st = chunk(ctx.chunk);
  const int64_t D = config_.mtp_num_layers;
  MOE_CHECK(static_cast<int64_t>(ctx.mtp.size()) == D, kOp, ": the context holds ", ctx.mtp.size(),
            " MTP depths, the model ", D);
  Tensor dh;
  if (fuses_output_backward(ctx)) {  // the cross-entropy's backward ran in the forward
    MOE_CHECK(*ctx.loss_scale_known_in_forward == loss_scale, kOp,
              ": backward(loss_scale = ", loss_scale,
              ") after a forward told loss_scale = ", *ctx.loss_scale_known_in_forward);
    MOE_CHECK(ctx.output_grad_hidden.defined(), kOp, ": backward called twice on one forward");
    dh = std::move(ctx.output_grad_hidden);
    ctx.output_grad_hidden = Tensor();
  } else {
    dh = output_loss_backward(loss_scale, ctx.hidden_all, ctx.labels, ctx.loss_mask,
                              ctx.cross_entropy);
  }
  const int64_t S = ctx.tokens_shape[0], B = ctx.tokens_shape[1];
  const int64_t Sl = local_seq_length(S), H = config_.hidden_size;
  if (receives_mtp_hidden(st)) {
    // d [h_0; h_1; ...; h_D] back to the MTP stage.
    std::vector<Tensor> dh_mtp = mtp_losses_backward(ctx, loss_scale);
    Tensor packed = Tensor::empty(stage_input_shape(ctx.chunk, S, B), dh.dtype(), device_);
    packed.rows(0, Sl).copy_(dh.reshape({Sl, B, H}));
    for (int64_t d = 0; d < D; ++d)
      packed.rows((d + 1) * Sl, Sl).copy_(dh_mtp[static_cast<size_t>(d)].reshape({Sl, B, H}));
    if (on_grads_ready) on_grads_ready(head_parameters());
    return packed;
  }
  // h_0 also feeds the first MTP layer (hnorm): its gradient adds to the main loss's.
  if (D > 0)
    ops::add_(dh, mtp_layers_backward(ctx, mtp_losses_backward(ctx, loss_scale), loss_scale));
  Tensor dx = final_norm.backward(dh.reshape({Sl, B, H}), ctx.final_norm);
  if (on_grads_ready) on_grads_ready(head_parameters());
  return dx;
}

std::vector<Parameter*> GPTModel::head_parameters() {
  std::vector<Parameter*> params;
  if (final_norm.weight.value.defined()) params.push_back(&final_norm.weight);
  if (lm_head.value.defined()) params.push_back(&lm_head);
  return params;
}

Tensor GPTModel::logits(const Tensor& input_ids) {
  check_tokens(input_ids, "input_ids", device_);
  MOE_CHECK(is_whole(), kOp, ": logits() needs the whole model; this pipeline rank holds ",
            num_chunks(), " chunk(s) of it");
  const int64_t S = input_ids.size(0), B = input_ids.size(1);
  // Under TP and CP a sequence that does not split into the ranks' shards is padded at its end
  // (repeating its last token): causal attention keeps the padding out of the real positions'
  // logits.
  const int64_t unit =
      int64_t{groups_.tp.size()} * (groups_.cp.active() ? 2 * groups_.cp.size() : 1);
  Tensor ids = input_ids;
  if (S % unit != 0) {
    const int64_t padded = (S + unit - 1) / unit * unit;
    ids = Tensor::empty({padded, B}, input_ids.dtype(), device_);
    ids.rows(0, S).copy_(input_ids);
    for (int64_t s = S; s < padded; ++s) ids.rows(s, 1).copy_(input_ids.rows(S - 1, 1));
  }
  GPTContext ctx;
  const Tensor hidden = tp_enter_forward(trunk(ids, ctx), groups_.tp);
  // Under TP the vocabulary rows of the output weight are gathered: every rank gets all logits.
  const Tensor weight = sequence_gather(output_weight().value, groups_.tp);
  const Tensor mine = ops::matmul(hidden, weight, false, true);  // this rank's rows [S_cp B, V]
  const Tensor all =
      context_parallel_gather(mine.reshape({mine.size(0) / B, B, config_.vocab_size}), groups_.cp);
  return all.rows(0, S);
}

std::vector<Parameter*> GPTModel::parameters() {
  std::vector<Parameter*> params;
  if (embed_tokens.value.defined()) params.push_back(&embed_tokens);
  for (TransformerLayer& layer : layers)
    for (Parameter* p : layer.parameters()) params.push_back(p);
  for (MtpLayer& mtp : mtp_layers)
    for (Parameter* p : mtp.parameters()) params.push_back(p);
  for (Parameter* p : head_parameters()) params.push_back(p);
  return params;
}

std::vector<NamedBuffer> GPTModel::buffers() {
  std::vector<NamedBuffer> named;
  auto add = [&](TransformerLayer& layer) {
    if (layer.moe && layer.moe->config().moe_router_enable_expert_bias)
      named.push_back(
          {"model.layers." + std::to_string(layer.index()) + ".mlp.gate.e_score_correction_bias",
           &layer.moe->router.expert_bias});
  };
  for (TransformerLayer& layer : layers) add(layer);
  for (MtpLayer& mtp : mtp_layers) add(mtp.layer);
  return named;
}

void GPTModel::set_recompute(const RecomputeConfig& config) {
  for (const PipelineStage& st : chunks_) (void)recompute_units(config, st.num_layers);  // checks
  recompute_ = config;
  for (TransformerLayer& layer : layers) layer.set_recompute(config);
  for (MtpLayer& mtp : mtp_layers) mtp.layer.set_recompute(config);
}

void GPTModel::set_layer_graphs(const LayerGraphModules& modules) {
  layer_graph_pool_ = std::make_shared<GraphMemoryPool>();
  for (TransformerLayer& layer : layers) layer.set_graphs(modules, layer_graph_pool_);
}

void GPTModel::set_layer_graphs_on(bool on) {
  for (TransformerLayer& layer : layers) layer.set_graphs_on(on);
}

GPTModel::LayerGraphUse GPTModel::layer_graph_use() const {
  LayerGraphUse use;
  if (layer_graph_pool_) use.pool_bytes = layer_graph_pool_->bytes();
  for (const TransformerLayer& layer : layers) {
    use.graphs += layer.graphs();
    use.pool_bytes += layer.graph_own_pool_bytes();
  }
  return use;
}

void GPTModel::zero_grad() {
  for (Parameter* p : parameters()) p->zero_grad();
}

void GPTModel::finish_step() {
  for (TransformerLayer& layer : layers)
    if (layer.moe) layer.moe->finish_step();
  for (MtpLayer& mtp : mtp_layers)
    if (mtp.layer.moe) mtp.layer.moe->finish_step();
}

void GPTModel::discard_step() {
  for (TransformerLayer& layer : layers)
    if (layer.moe) layer.moe->discard_step();
  for (MtpLayer& mtp : mtp_layers)
    if (mtp.layer.moe) mtp.layer.moe->discard_step();
}

std::vector<Router*> GPTModel::routers() {
  std::vector<Router*> out;
  for (TransformerLayer& layer : layers)
    if (layer.moe) out.push_back(&layer.moe->router);
  for (MtpLayer& mtp : mtp_layers)
    if (mtp.layer.moe) out.push_back(&mtp.layer.moe->router);
  return out;
}

std::vector<uint64_t> GPTModel::router_forward_counts() {
  std::vector<uint64_t> counts;
  for (Router* r : routers()) counts.push_back(r->forward_count());
  return counts;
}

void GPTModel::set_router_forward_counts(const std::vector<uint64_t>& counts) {
  const std::vector<Router*> all = routers();
  MOE_CHECK(counts.size() == all.size(), kOp, ": ", counts.size(),
            " router forward counts for a model with ", all.size(), " routers");
  for (size_t i = 0; i < all.size(); ++i) all[i]->set_forward_count(counts[i]);
}

}  // namespace moe::nn
