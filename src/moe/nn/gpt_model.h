// GPTModel: the decoder-only language model around the MoE layer (Megatron's GPTModel; HF's
// MixtralForCausalLM / Qwen3MoeForCausalLM / DeepseekV3ForCausalLM):
//
//   input_ids [S, B] -> embedding [S, B, H]
//     -> layers l = 0..L-1: TransformerLayer (dense MLP, or MoE when config.is_moe_layer(l);
//        GQA or MLA attention)
//     -> final RMSNorm -> hidden h_0 [T, H] (T = S * B, rows in [S, B] order)
//     -> fused output layer + cross-entropy (ops::linear_cross_entropy_*: never the [T, V]
//        logits), with the output weight tied to the embedding, or a separate lm_head
//   loss = lm_loss + aux_loss + mtp_loss,
//          lm_loss = mean over labelled tokens (labels == -100 and loss_mask == 0 are left out;
//          CrossEntropyOptions can ask for a sum instead),
//          aux_loss = sum over MoE layers (MTP layers included) of the router's aux_loss
//          (coefficient included) and z_loss.
//
// Multi-token prediction (DeepSeek-V3; Megatron's --mtp-num-layers D,
// --mtp-loss-scaling-factor lambda; mtp_layer.h): for depth k = 1..D
//   ids_k[s]    = ids[s + k]     (0 for s + k >= S: Megatron's roll_tensor fills 0)
//   labels_k[s] = labels[s + k]  (ignored for s + k >= S), loss_mask_k[s] = loss_mask[s + k]
//   h_k = MtpLayer_k(embedding(ids_k), h_{k-1})   (h_0: the decoder output after the final norm)
//   loss_k = cross-entropy of the shared output layer on h_k against labels_k (mean over the
//            labelled, unmasked positions of depth k)
//   mtp_loss = lambda / D * sum_k loss_k
// The embedding and the output layer are shared: their gradients collect every depth's part.
// The sequence must be longer than D (each depth keeps S - k positions per sequence). The MTP
// modules are layers num_layers .. num_layers + D - 1 of the parameter names. logits() is the
// main head only. MTP needs the mean reduction (Megatron's calculate_per_token_loss rescaling
// of the sum form is not implemented).
//
// Token order: Megatron keeps activations sequence-major, [S, B, H], and so does this model,
// so input_ids, labels and loss_mask are [S, B] (the transpose of a data loader's [B, S]).
// Positions for rotary are the sequence index s (no packed-sequence positions yet), in the MTP
// layers as well.
//
// backward(ctx, loss_scale) computes loss_scale * d(loss)/d(parameters): the cross-entropy
// gradient starts at loss_scale (loss_scale * lambda / D for each MTP depth) and every MoE
// layer's aux / z-loss gradient is scaled by the same factor (Megatron's
// MoEAuxLossAutoScaler and MTPLossAutoScaler). Gradient rule: parameter gradients accumulate
// (micro-batches add up) and are written lazily after zero_grad (parameter.h); read them with
// Parameter::grad_value(). The output weight's gradient is materialised before the
// cross-entropy backward, which always accumulates.
//
// Parameter names follow Hugging Face where a tensor matches one of HF's (model.embed_tokens,
// model.layers.<l>.input_layernorm, self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm,
// post_attention_layernorm, model.norm, lm_head; MTP: model.layers.<L + k>.{enorm, hnorm,
// eh_proj, shared_head.norm}) and say what is fused where it does not
// (mlp.gate_up_proj.weight = [gate_proj; up_proj], mlp.experts.gate_up_proj [E, 2F, H],
// mlp.experts.down_proj [E, H, F]); the checkpoint converter maps them onto HF's.
// Initialisation: param_init.h (Megatron: normal(0, init_method_std), residual-writing layers
// scaled by 1 / sqrt(2 L), norms one, biases zero), seeded per tensor from `seed`.
//
// Dropout (training forwards only, GPTContext::dropout_first_sample): hidden dropout on the
// embedding output (the decoder's and each MTP depth's: Megatron's embedding_dropout) and in
// every layer (transformer_layer.h), attention dropout on the softmax output.
//
// Tensor parallelism (ModelGroups::tp; tensor_parallel.h): the embedding and the output layer
// are split by vocabulary rows (Megatron's VocabParallelEmbedding and vocab-parallel
// cross-entropy: rank r holds [r V/P, (r + 1) V/P); the [T, V] logits are never gathered: each
// rank's (max, sum-exp, label logit) per token are all-gathered and combined,
// ops/cross_entropy.h), the layers split themselves, and with sequence parallelism the
// activations between them are sequence shards: the embedding output is reduce-scattered, the
// final norm's output gathered before the output layer. Every TP rank holds the whole
// input_ids and labels and computes the same lm and MTP losses; each reports its own tokens'
// share of the aux loss (the trainer sums it over TP). V and, with sequence parallelism or MoE
// layers, S must divide by P.
//
// Context parallelism (ModelGroups::cp; context_parallel.h): every CP rank gets the whole
// input_ids and labels and keeps its two chunks of the sequence (MTP shifts the whole ids and
// labels first, then keeps its chunks); the loss is the micro-batch's, its sum and token count
// all-reduced over CP (a host read of the two numbers per micro-batch), so each rank's gradients
// are its tokens' share and their sum over CP is the micro-batch's. S must divide by 2 CP (and
// S / CP by TP under sequence parallelism or MoE layers).
//
// Pipeline parallelism (pipeline_layout.h): a model built with `chunks` (the stages of this
// pipeline rank, one per virtual stage, in chunk order) holds only their parts: the decoder
// layers of its chunks (global indices, so names and initial values are the one-rank model's),
// the embedding when a chunk holds it, the final norm, output layer, loss and MTP layers when a
// chunk holds the loss, and the embedding again there when the output layer is tied to it or
// MTP embeds (the two copies' gradients are summed by the trainer's data-parallel wrapper, as
// Megatron's embedding group does). forward() and backward() run one chunk (GPTContext::chunk):
// a chunk without the embedding starts from GPTContext::stage_input (the previous stage's
// output, [S_local, B, H]); one without the loss leaves GPTContext::stage_output, returns only
// its layers' aux loss (lm and MTP losses 0), and its backward starts from
// GPTContext::stage_output_grad; a chunk without the embedding leaves stage_input_grad. The
// final norm sits where the decoder ends: in the MTP layers' stage when there are MTP layers.
// Standalone MTP (Megatron's layout "...,m|L": the MTP layers in a stage before the loss's):
// the MTP stage sends [h_0; h_1; ...; h_D] ((1 + D) S_local rows) and the loss stage, holding
// the output layer and the loss only, scores every depth and sends their gradients back.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moe/nn/model_config.h"
#include "moe/nn/model_groups.h"
#include "moe/nn/mtp_layer.h"
#include "moe/nn/parameter.h"
#include "moe/nn/pipeline_layout.h"
#include "moe/nn/rmsnorm_module.h"
#include "moe/nn/transformer_layer.h"
#include "moe/ops/cross_entropy.h"

namespace moe::nn {

// A checkpointed tensor that is not a Parameter (no gradient): `value` points into the model.
struct NamedBuffer {
  std::string name;
  Tensor* value = nullptr;
};

// One MTP depth's state (k = depth + 1): its shifted tokens, labels and mask, the layer's
// context, its output h_k and its cross-entropy.
struct MtpDepthContext {
  Tensor input_ids;  // [S_cp, B] this rank's rows of the ids shifted left by k
  Tensor labels;     // [T] its rows of the labels shifted left by k, ignore_index past the end
  Tensor loss_mask;  // [T] f32 its rows of the shifted mask (0 past the end), or undefined
  MtpLayerContext layer;
  Tensor hidden;      // [T, H] h_k (this rank's rows under sequence parallelism)
  Tensor hidden_all;  // what the output layer's backward reads (GPTModel::output_loss)
  ops::CrossEntropyResult cross_entropy;
};

struct GPTContext {
  Shape tokens_shape;      // [S, B]
  Tensor input_ids;        // [S, B]
  Tensor sequence_labels;  // [S, B] the micro-batch's labels (MTP shifts them)
  Tensor sequence_mask;    // [S, B] f32 its loss mask, or undefined
  Tensor local_ids;        // [S_cp, B] this rank's rows of input_ids (context parallelism: its
                           // two chunks; else input_ids): what the embedding read
  Tensor labels;           // [T] this rank's rows' labels (T = S_cp * B)
  Tensor loss_mask;        // [T] f32, or undefined
  std::vector<TransformerLayerContext> layers;
  // Full activation recomputation (recompute.h): per layer of the chunk, the input of the
  // recomputed unit that starts there (undefined elsewhere, and once the backward used it).
  std::vector<Tensor> recompute_inputs;
  RMSNormContext final_norm;
  Tensor hidden;      // [T, H] the final norm's output (this rank's rows under sequence
                      // parallelism)
  Tensor hidden_all;  // what the output layer's backward reads (GPTModel::output_loss)
  ops::CrossEntropyResult cross_entropy;
  // Set before forward() by a caller that already knows backward()'s loss_scale (the trainer):
  // the output layer's cross-entropy then runs its backward inside the forward
  // (ops::linear_cross_entropy_forward_backward: on the GPU one [T, V, H] GEMM fewer), adding
  // its dW during forward(); backward() must then be called with this same scale.
  std::optional<double> loss_scale_known_in_forward;
  Tensor output_grad_hidden;  // [T, H] d loss / d hidden from that fused pass
  // Set before forward() by a training forward (the trainer): turns on the config's dropout
  // (--hidden-dropout, --attention-dropout) with this micro-batch's first sample index in the
  // training stream (ops/dropout.h: the masks depend on it, not on the parallel mapping).
  // Unset (evaluation, logits, generation): no dropout.
  std::optional<int64_t> dropout_first_sample;
  LayerDropout dropout;              // the dropout of this forward (filled by forward())
  std::vector<MtpDepthContext> mtp;  // one per MTP depth
  // Pipeline parallelism (see GPTModel): the chunk this forward runs (set before forward()),
  // and the activations that cross stages, [S_local, B, H] in the model's dtype.
  int chunk = 0;
  Tensor stage_input;        // set before forward() for a chunk without the embedding
  Tensor stage_output;       // after forward() of a chunk without the loss
  Tensor stage_output_grad;  // set before backward() of a chunk without the loss
  Tensor stage_input_grad;   // after backward() of a chunk without the embedding
};

// 0-d tensors on the model's device (f64 for f64 models, else f32); nothing is synchronised.
struct GPTLoss {
  Tensor loss;      // lm_loss + aux_loss + mtp_loss: what backward differentiates
  Tensor lm_loss;   // the main next-token cross-entropy
  Tensor aux_loss;  // sum of the MoE layers' aux and z losses, MTP layers' included (0 without
                    // MoE layers)
  Tensor mtp_loss;  // lambda / D * sum_k loss_k (0 without MTP)
};

class GPTModel {
 public:
  // Parameters in `dtype` (f64/f32 on the CPU, f32/bf16 on CUDA) on `device`. `groups` are the
  // tensor-parallel group of the dense parts and the expert grid's groups of the MoE layers
  // (default: this rank alone).
  // `chunks`: this pipeline rank's stages (empty: the whole model, one chunk).
  GPTModel(const ModelConfig& config, DType dtype, Device device, uint64_t seed = 1234,
           const ModelGroups& groups = {}, std::vector<PipelineStage> chunks = {});

  // input_ids, labels [S, B] (i32 or i64; labels may hold ignore_index), loss_mask undefined or
  // f32 [S, B]; S > mtp_num_layers. Saves in ctx what backward needs.
  GPTLoss forward(const Tensor& input_ids, const Tensor& labels, GPTContext& ctx,
                  const Tensor& loss_mask = Tensor());
  // Accumulates loss_scale * d(loss)/d(parameter) into every parameter's gradient.
  void backward(GPTContext& ctx, double loss_scale = 1.0);

  // Logits [S, B, V] for input_ids [S, B] (inference and parity checks: holds the full logits;
  // under TP every rank gets all of them).
  Tensor logits(const Tensor& input_ids);

  // Each tensor once (a tied output weight is the embedding): the embedding, the decoder
  // layers, the MTP layers, the final norm, lm_head.
  std::vector<Parameter*> parameters();
  // Checkpointed tensors that are not trained by gradients: the expert bias of each MoE layer
  // (MTP layers included) with --moe-router-enable-expert-bias,
  // named "model.layers.<l>.mlp.gate.e_score_correction_bias" (DeepSeek-V3's name), [E] f32.
  std::vector<NamedBuffer> buffers();
  void zero_grad();
  // End of an optimizer step: the MoE layers' expert-bias updates and per-step accumulators.
  void finish_step();
  // The step's accumulators reset without any expert-bias update (skipped steps, evaluation).
  void discard_step();
  // Every router's forward count (decoder layers, then MTP layers; Router::forward_count):
  // the input jitter's draw counters, for checkpoints. set_ takes a list of the same length.
  std::vector<uint64_t> router_forward_counts();
  void set_router_forward_counts(const std::vector<uint64_t>& counts);

  // The MoE layers this rank holds: decoder layers, then MTP layers.
  std::vector<MoELayer*> moe_layers();
  // The sync-free expert exchange (--moe-expert-rank-capacity-factor; alltoall_dispatcher.h)
  // since the last call, over this rank's MoE layers (gpt_model_dispatch.cpp): over_rows, the
  // most rows one forward routed to a destination past its slot (<= 0: every slot held its
  // rows), and needed_factor, the least factor that would have held them all. One read of the
  // device; the layers' peaks are reset. nullopt when no layer exchanged in that mode.
  struct SlotOverflow {
    int64_t over_rows = 0;
    double needed_factor = 0.0;
  };
  std::optional<SlotOverflow> take_slot_overflow();
  // Every MoE layer's dispatcher exchanges with the host-sized (synchronising) exchange while
  // on: the redo of a step whose slots overflowed, and evaluation.
  void set_synchronising_dispatch(bool on);
  // Activation recomputation (recompute.h; --recompute-granularity, --recompute-method,
  // --recompute-num-layers, --recompute-modules): full recomputes units of each chunk's decoder
  // layers, selective parts of every layer (MTP layers' too). Training is the same either way.
  void set_recompute(const RecomputeConfig& config);
  const RecomputeConfig& recompute() const { return recompute_; }
  // Per-layer CUDA graphs of the decoder layers (layer_graphs.h; --cuda-graph-impl local):
  // set_layer_graphs chooses the blocks (their graphs share one memory pool); set_layer_graphs_on
  // turns capture and replay on and off (the trainer: on for its training steps after the
  // warm-up). MTP layers run eagerly.
  void set_layer_graphs(const LayerGraphModules& modules);
  void set_layer_graphs_on(bool on);
  // The graphs the decoder layers captured so far, and the bytes their pools hold (the shared
  // pool and any of their own).
  struct LayerGraphUse {
    int64_t graphs = 0;
    int64_t pool_bytes = 0;
  };
  LayerGraphUse layer_graph_use() const;

  // Optional hooks for the data-parallel wrapper (train/data_parallel.h). on_params_needed is
  // called in forward() and logits() before a group of parameters is first read (the
  // embedding, each decoder layer, the final norm with lm_head, each MTP layer): an
  // overlapped parameter all-gather waits there. on_grads_ready is called in backward() as soon
  // as a group's gradients for this micro-batch are complete (the MTP layers, the final norm
  // with lm_head, each decoder layer, last the embedding): an overlapped gradient reduction
  // starts the buckets they complete. Unset: no cost.
  std::function<void(const std::vector<Parameter*>&)> on_params_needed;
  std::function<void(const std::vector<Parameter*>&)> on_grads_ready;

  Parameter& output_weight() {
    return config_.untie_embeddings_and_output_weights ? lm_head : embed_tokens;
  }
  const ModelConfig& config() const { return config_; }
  const ModelGroups& groups() const { return groups_; }
  // The activations between pipeline stages for micro-batches [S, B]: [S_local, B, H] (S / CP
  // rows, of which 1 / TP under sequence parallelism); between a standalone MTP stage and the
  // loss's (1 + D) S_local rows, the hidden states of every depth. What chunk c receives
  // (GPTContext::stage_input) and sends (stage_output).
  Shape stage_input_shape(int c, int64_t seq_length, int64_t batch) const;
  Shape stage_output_shape(int c, int64_t seq_length, int64_t batch) const;
  // Pipeline parallelism: this rank's chunks (one for the whole model without it).
  int num_chunks() const { return static_cast<int>(chunks_.size()); }
  const PipelineStage& chunk(int c) const;
  // Whether this rank holds the whole model (one chunk with the embedding and the loss).
  bool is_whole() const;
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  Parameter embed_tokens;  // [V, H] model.embed_tokens.weight (undefined on a pipeline rank
                           // that needs none)
  std::vector<TransformerLayer> layers;    // this rank's decoder layers, chunk after chunk
  std::vector<MtpLayer> mtp_layers;        // config.mtp_num_layers MTP modules
  RMSNorm final_norm;                      // model.norm.weight
  Parameter lm_head;                       // [V, H] lm_head.weight, only when untied
  ops::CrossEntropyOptions cross_entropy;  // ignore_index, reduction, CUDA chunk size

 private:
  // The final norm's weight and, when untied, lm_head: the parameters after the decoder.
  std::vector<Parameter*> head_parameters();
  // The MoE layers' routers, decoder layers first, then MTP layers.
  std::vector<Router*> routers();
  // Embedding and layers and final norm: the hidden states [T, H] the output layer reads.
  Tensor trunk(const Tensor& input_ids, GPTContext& ctx);
  // The MTP depths' layers from h_0 = ctx.hidden (fills ctx.mtp's ids, layer contexts and
  // hidden h_k), adding their aux losses to aux_loss.
  void mtp_layers_forward(GPTContext& ctx, Tensor& aux_loss);
  // The depths' cross-entropies on ctx.mtp's hidden states (their labels and masks filled
  // here): lambda / D * sum_k loss_k.
  Tensor mtp_losses(GPTContext& ctx);
  // d h_k of each depth's cross-entropy (accumulating the output weight's gradient).
  std::vector<Tensor> mtp_losses_backward(GPTContext& ctx, double loss_scale);
  // From those, through the MTP layers (accumulating their and the embedding's gradients):
  // the MTP layers' part of d h_0.
  Tensor mtp_layers_backward(GPTContext& ctx, std::vector<Tensor> dh, double loss_scale);
  // The loss stage's backward down to the final norm's input: d x [T_local, H] (output layer,
  // MTP depths, final norm); after a standalone MTP stage, d [h_0; ...; h_D] for it.
  Tensor loss_backward(GPTContext& ctx, double loss_scale);

  // The dropout a forward with `ctx` uses (none unless ctx.dropout_first_sample is set), for
  // sequences of `seq_length`.
  LayerDropout dropout_for(const GPTContext& ctx, int64_t seq_length) const;
  // Whether the output layer's backward runs inside the forward (the loss scale is known and
  // the whole vocabulary and sequence are this rank's: no TP, no CP).
  bool fuses_output_backward(const GPTContext& ctx) const;
  // The sequence rows this rank holds between the layers (S / P under sequence parallelism).
  int64_t local_seq_length(int64_t seq_length) const;
  // The embedding of ids [S, B] (vocab-parallel under TP): this rank's rows [S_local, B, H].
  Tensor embed(const Tensor& ids);
  // Its backward from dy [S_local, B, H]: accumulates (or writes) embed_tokens.grad.
  void embed_backward(const Tensor& dy, const Tensor& ids);
  // The output layer's cross-entropy on this rank's rows hidden [T_local, H] against the whole
  // labels [T]; saved_input receives what the backward reads (every row, or under sequence
  // parallelism this rank's: tp_input_to_save).
  ops::CrossEntropyResult output_loss(const Tensor& hidden, const Tensor& labels,
                                      const Tensor& loss_mask, Tensor& saved_input);
  // Under context parallelism, the loss of the micro-batch from this rank's tokens' result:
  // their weighted sum and count all-reduced over CP (mean: sum / count); `local` otherwise.
  ops::CrossEntropyResult over_sequence(ops::CrossEntropyResult local) const;
  // Its backward: accumulates the output weight's gradient, returns d hidden [T_local, H].
  Tensor output_loss_backward(double grad_loss, const Tensor& saved_input, const Tensor& labels,
                              const Tensor& loss_mask, const ops::CrossEntropyResult& saved);

  // The chunk's decoder layers: layers[chunk_begin_[c], chunk_begin_[c] + chunk(c).num_layers).
  size_t chunk_begin(int c) const { return chunk_begin_[static_cast<size_t>(c)]; }
  bool builds_embedding() const;
  bool builds_loss() const;
  // Where the decoder ends (the final norm): the MTP layers' stage, else the loss's.
  bool ends_decoder(const PipelineStage& st) const;
  // Standalone MTP (the MTP layers' stage before the loss's): the MTP stage sends, and the loss
  // stage receives, [h_0; h_1; ...; h_D] ((1 + D) S_local rows) instead of one activation.
  bool sends_mtp_hidden(const PipelineStage& st) const;
  bool receives_mtp_hidden(const PipelineStage& st) const;

  ModelConfig config_;
  ModelGroups groups_;
  std::shared_ptr<GraphMemoryPool> layer_graph_pool_;  // set_layer_graphs' shared pool
  RecomputeConfig recompute_;
  std::vector<PipelineStage> chunks_;
  std::vector<size_t> chunk_begin_;
  DType dtype_;
  Device device_;
  uint64_t seed_ = 0;  // the dropout masks' seed (ops/dropout.h)
};

}  // namespace moe::nn
