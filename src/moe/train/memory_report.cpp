// The per-rank memory report (memory_report.h).
#include "moe/train/memory_report.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "moe/core/allocator.h"
#include "moe/core/error.h"
#include "moe/dist/parallel_state.h"
#include "moe/train/data_parallel.h"
#include "moe/train/distributed_optimizer.h"

namespace moe::train {
namespace {

// parameters, gradients, optimizer, activations, peak, pipeline size, in flight
constexpr int kFields = 7;

double mib(int64_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

// VmHWM of /proc/self/status in bytes; 0 when the file or the line is missing.
int64_t proc_peak_rss() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) != 0) continue;
    std::istringstream fields(line.substr(6));
    int64_t kib = 0;
    if (fields >> kib) return kib * 1024;
  }
  return 0;
}

}  // namespace

LayerActivations layer_activations(const nn::ModelConfig& c, int64_t layer) {
  const double h = static_cast<double>(c.hidden_size);
  LayerActivations a;
  const bool mtp = layer >= c.num_layers;
  if (mtp) {
    // enorm's and hnorm's inputs, eh_proj's input [T, 2H], the final norm's, the output layer's
    a.between += 6 * h;
  }
  a.between += 2 * h;  // input_layernorm's and post_attention_layernorm's inputs
  a.between += h;      // attention's input
  const double qk_norm = c.qk_layernorm ? 1.0 : 0.0;
  if (c.attention_type == nn::AttentionType::mla) {
    const nn::MlaConfig& m = c.mla;
    const double heads = static_cast<double>(c.num_attention_heads);
    const double qk = static_cast<double>(m.qk_head_dim + m.qk_pos_emb_head_dim);
    const double v = static_cast<double>(m.v_head_dim);
    // The replicated latents (and the latent norms' inputs) on every token of the sequence.
    a.gathered += (1 + qk_norm) * static_cast<double>(m.q_lora_rank + m.kv_lora_rank);
    a.split += heads * (2 * qk + 2 * v);  // q, k, v, the attention output
    a.keys_values = heads * (qk + v);
  } else {
    const int64_t groups = c.num_query_groups > 0 ? c.num_query_groups : c.num_attention_heads;
    const double q = static_cast<double>(c.num_attention_heads * c.head_dim());
    const double kv = static_cast<double>(groups * c.head_dim());
    a.split += (2 + qk_norm) * (q + kv);  // q, k, v, the output (+ the QK-norms' inputs)
    a.keys_values = 2 * kv;
  }
  const bool moe = c.is_moe_layer(mtp ? c.num_layers - 1 : layer);
  if (!moe) {
    a.between += h;  // the dense MLP's input
    a.split += 3 * static_cast<double>(c.ffn_hidden_size);
    a.block_split = 3 * static_cast<double>(c.ffn_hidden_size);
    a.block_input_counted = true;
    return a;
  }
  const nn::MoEConfig& e = c.moe;
  const double k = static_cast<double>(e.moe_router_topk);
  const double etp = static_cast<double>(std::max(e.expert_tensor_parallel_size, 1));
  // On the sequence shard: the router's input, the rows the experts receive (top-k copies of
  // each token, gathered over ETP) and their fc1 output and activation at width F / ETP.
  a.split += h + k * etp * h + 3 * k * static_cast<double>(e.moe_ffn_hidden_size);
  a.block_split = h + k * etp * h + 3 * k * static_cast<double>(e.moe_ffn_hidden_size);
  if (e.moe_shared_expert_intermediate_size > 0) {
    a.between += h;  // the shared expert's input
    a.shared_split = 3 * static_cast<double>(e.moe_shared_expert_intermediate_size);
    a.split += a.shared_split;
    a.block_split += a.shared_split;
    a.block_input_counted = true;
  }
  return a;
}

int64_t activation_bytes_estimate(const nn::ModelConfig& c, const ActivationShape& shape) {
  return stage_activation_bytes(
      c, nn::PipelineStage{true, 0, c.num_layers, 0, c.mtp_num_layers, true}, shape);
}

int64_t stage_activation_bytes(const nn::ModelConfig& c, const nn::PipelineStage& stage,
                               const ActivationShape& shape) {
  MOE_CHECK(shape.tensor_parallel >= 1, "activation estimate: TP size ", shape.tensor_parallel,
            " must be at least 1");
  const double t = shape.tensor_parallel;
  const double t_sp = shape.sequence_parallel ? t : 1.0;
  const double h = static_cast<double>(c.hidden_size);
  MOE_CHECK(shape.context_parallel >= 1, "activation estimate: CP size ", shape.context_parallel,
            " must be at least 1");
  MOE_CHECK(stage.first_layer >= 0 && stage.num_layers >= 0 &&
                stage.first_layer + stage.num_layers <= c.num_layers,
            "activation estimate: the stage's decoder layers [", stage.first_layer, ", ",
            stage.first_layer + stage.num_layers, ") are not within the model's ", c.num_layers);
  MOE_CHECK(stage.first_mtp_layer >= 0 && stage.num_mtp_layers >= 0 &&
                stage.first_mtp_layer + stage.num_mtp_layers <= c.mtp_num_layers,
            "activation estimate: the stage's MTP layers [", stage.first_mtp_layer, ", ",
            stage.first_mtp_layer + stage.num_mtp_layers, ") are not within the model's ",
            c.mtp_num_layers);
  const double cp = shape.context_parallel;
  // The final norm's input and the output layer's input, on the stage of the loss.
  double per_token = stage.loss ? 2 * h / t_sp : 0.0;
  double gathered_keys_values = 0;  // per token of the whole sequence, under CP
  const nn::RecomputeConfig& recompute = shape.recompute;
  const auto add = [&](int64_t l) {
    LayerActivations a = layer_activations(c, l);
    if (recompute.granularity == nn::RecomputeGranularity::selective) {
      const bool moe = c.is_moe_layer(std::min(l, c.num_layers - 1));
      if (moe ? recompute.moe : recompute.mlp) {
        a.split -= a.block_split;
        if (!a.block_input_counted) a.between += h;  // the block's input, kept
      } else if (moe && recompute.shared_experts) {
        a.split -= a.shared_split;
      }
    }
    per_token += a.between / t_sp + a.gathered + a.split / t;
    if (cp > 1 && shape.gathers_keys_values) gathered_keys_values += a.keys_values / t;
  };
  // Full recomputation: a unit's layers keep its input alone.
  std::vector<int> kept(static_cast<size_t>(stage.num_layers), 1);  // 1 all, 2 input, 0 none
  for (const auto& [first, end] : nn::recompute_units(recompute, stage.num_layers))
    for (int64_t i = first; i < end; ++i) kept[static_cast<size_t>(i)] = i == first ? 2 : 0;
  for (int64_t l = stage.first_layer; l < stage.first_layer + stage.num_layers; ++l) {
    const int keep = kept[static_cast<size_t>(l - stage.first_layer)];
    if (keep == 1) add(l);
    if (keep == 2) per_token += h / t_sp;
  }
  for (int64_t d = stage.first_mtp_layer; d < stage.first_mtp_layer + stage.num_mtp_layers; ++d)
    add(c.num_layers + d);  // layers past num_layers are MTP depths (layer_activations)
  const double tokens = static_cast<double>(shape.micro_batch_size * shape.seq_length);
  return static_cast<int64_t>(std::llround(tokens * (per_token / cp + gathered_keys_values) *
                                           static_cast<double>(dtype_size(shape.dtype))));
}

InFlightActivations in_flight_activations(const std::vector<PipelineAction>& actions,
                                          const std::vector<int64_t>& chunk_bytes) {
  const size_t chunks = chunk_bytes.size();
  std::vector<int64_t> held(chunks, 0);
  // The pairs in flight, to refuse a backward of one that is not.
  std::set<std::pair<int, int>> in_flight;
  InFlightActivations peak;
  peak.per_chunk.assign(chunks, 0);
  int64_t bytes = 0;
  for (const PipelineAction& a : actions) {
    if (a.kind != PipelineActionKind::forward && a.kind != PipelineActionKind::backward) continue;
    MOE_CHECK(a.chunk >= 0 && static_cast<size_t>(a.chunk) < chunks,
              "activation estimate: ", describe(a), " names a chunk past this rank's ", chunks);
    const size_t c = static_cast<size_t>(a.chunk);
    if (a.kind == PipelineActionKind::backward) {
      MOE_CHECK(in_flight.erase({a.microbatch, a.chunk}) == 1, "activation estimate: ", describe(a),
                " backwards a micro-batch that is not in flight");
      --held[c];
      bytes -= chunk_bytes[c];
      continue;
    }
    in_flight.insert({a.microbatch, a.chunk});
    ++held[c];
    bytes += chunk_bytes[c];
    // Only a forward adds, so the moments after forwards hold every maximum; of equal bytes
    // (chunks of none) the moment of the most pairs.
    const int64_t pairs = static_cast<int64_t>(in_flight.size());
    if (bytes > peak.bytes || (bytes == peak.bytes && pairs > peak.pairs)) {
      peak.bytes = bytes;
      peak.pairs = pairs;
      peak.per_chunk = held;
    }
  }
  return peak;
}

RankMemory rank_memory(nn::GPTModel& model, Trainer& trainer) {
  RankMemory m;
  ActivationShape shape;
  shape.micro_batch_size = trainer.config().micro_batch_size;
  shape.seq_length = trainer.config().seq_length;
  shape.dtype = model.dtype();
  shape.tensor_parallel = model.groups().tp.size();
  shape.sequence_parallel = model.groups().tp.sequence_parallel;
  shape.context_parallel = model.groups().cp.size();
  shape.gathers_keys_values =
      model.groups().cp.exchange == nn::ContextParallel::Exchange::all_gather;
  shape.recompute = model.recompute();
  // Each chunk's micro-batch, over the schedule the trainer runs (trainer_pipeline.cpp's call;
  // without pipeline parallelism the list alternates forward and backward: one micro-batch).
  std::vector<int64_t> chunk_bytes;
  for (int c = 0; c < model.num_chunks(); ++c)
    chunk_bytes.push_back(stage_activation_bytes(model.config(), model.chunk(c), shape));
  const dist::ParallelState* state = trainer.parallel_state();
  const int pp_size = state ? state->pp_size() : 1;
  const InFlightActivations in_flight = in_flight_activations(
      trainer.pipeline_actions(trainer.num_microbatches(), /*forward_only=*/false), chunk_bytes);
  m.activation_bytes = in_flight.bytes;
  m.pipeline_size = pp_size;
  m.in_flight = in_flight.pairs;
  if (DataParallel* ddp = trainer.data_parallel()) {
    for (ParamAndGradBuffer* b : ddp->buffers()) {
      m.parameter_bytes += static_cast<int64_t>(b->param_data().nbytes());
      m.gradient_bytes += static_cast<int64_t>(b->grad_data().nbytes());
    }
  } else {
    for (nn::Parameter* p : model.parameters()) {
      m.parameter_bytes += static_cast<int64_t>(p->value.nbytes());
      if (p->grad.defined()) m.gradient_bytes += static_cast<int64_t>(p->grad.nbytes());
    }
  }
  Optimizer& optimizer = trainer.optimizer();
  if (const auto* distributed = dynamic_cast<const DistributedOptimizer*>(&optimizer)) {
    m.optimizer_bytes = distributed->state_bytes();
  } else {
    for (const NamedTensor& t : optimizer.state())
      if (t.value && t.value->defined())
        m.optimizer_bytes += static_cast<int64_t>(t.value->nbytes());
  }
  return m;
}

int64_t measure_peak_memory(Device device) {
  if (device.is_cuda()) return memory_stats(device).peak_allocated_bytes;
  if (const int64_t rss = proc_peak_rss()) return rss;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux: KiB
}

std::vector<RankMemory> gather_rank_memory(const RankMemory& mine,
                                           const std::shared_ptr<dist::ProcessGroup>& world,
                                           Device device) {
  if (!world || world->size() == 1) return {mine};
  const std::vector<int64_t> local = {
      mine.parameter_bytes, mine.gradient_bytes, mine.optimizer_bytes, mine.activation_bytes,
      mine.peak_bytes,      mine.pipeline_size,  mine.in_flight};
  const std::vector<int64_t> all = dist::all_gather_values(*world, local, device);
  std::vector<RankMemory> ranks(static_cast<size_t>(world->size()));
  for (size_t r = 0; r < ranks.size(); ++r) {
    const int64_t* f = all.data() + r * kFields;
    ranks[r] = RankMemory{f[0], f[1], f[2], f[3], f[4], f[5], f[6]};
  }
  return ranks;
}

std::string format_memory_report(const std::vector<RankMemory>& ranks) {
  const bool pipelined = std::any_of(ranks.begin(), ranks.end(),
                                     [](const RankMemory& r) { return r.pipeline_size > 1; });
  std::string text =
      "memory per rank (MiB): parameters | gradients (fp32 main) | optimizer state (masters + "
      "moments) | ";
  text += pipelined ? "activations in flight (estimate: peak of the pipeline schedule, "
                      "(micro-batch, chunk) pairs held)\n"
                    : "activations of one micro-batch (estimate)\n";
  char line[160];
  for (size_t r = 0; r < ranks.size(); ++r) {
    std::snprintf(line, sizeof line, "  rank %zu: %10.2f | %10.2f | %10.2f | %10.2f", r,
                  mib(ranks[r].parameter_bytes), mib(ranks[r].gradient_bytes),
                  mib(ranks[r].optimizer_bytes), mib(ranks[r].activation_bytes));
    text += line;
    if (pipelined) text += detail::concat(" (", ranks[r].in_flight, " in flight)");
    text += "\n";
  }
  return text;
}

std::string format_peak_memory(const std::vector<RankMemory>& ranks, int64_t iteration,
                               Device device) {
  std::string text = detail::concat(
      "peak memory after iteration ", iteration,
      device.is_cuda() ? " (MiB, tensors on the GPU):" : " (MiB, process peak RSS):");
  char item[64];
  for (size_t r = 0; r < ranks.size(); ++r) {
    std::snprintf(item, sizeof item, "%s rank %zu %.1f", r ? "," : "", r, mib(ranks[r].peak_bytes));
    text += item;
  }
  return text + "\n";
}

}  // namespace moe::train
