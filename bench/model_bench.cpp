#include "model_bench.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <limits>
#include <memory>
#include <random>

#include "ceilings.h"
#include "moe/core/allocator.h"
#include "moe/core/error.h"
#include "moe/core/tensor.h"
#include "moe/core/timer.h"
#include "moe/nn/gpt_model.h"
#include "moe/nn/model_zoo.h"
#include "moe/nn/param_count.h"
#include "moe/ops/attention.h"
#include "moe/train/train_log.h"

namespace moe::bench {
namespace {

// Dense bf16 tensor-core peak of an H100 / H200 SXM (no sparsity), the MFU denominator.
constexpr double kPeakBf16Flops = 989e12;

double gib(int64_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0);
}

// The index of the median of `values` (the upper one for an even count, as median_ms).
size_t median_index(const std::vector<double>& values) {
  std::vector<size_t> order(values.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::nth_element(order.begin(), order.begin() + order.size() / 2, order.end(),
                   [&](size_t a, size_t b) { return values[a] < values[b]; });
  return order[order.size() / 2];
}

// Query / key and value head dims of the attention core.
struct HeadDims {
  int64_t qk = 0, v = 0;
};

HeadDims head_dims(const nn::ModelConfig& c) {
  if (c.attention_type == nn::AttentionType::mla)
    return {c.mla.qk_head_dim + c.mla.qk_pos_emb_head_dim, c.mla.v_head_dim};
  return {c.head_dim(), c.head_dim()};
}

// Random token ids: S + 1 rows of B ids, uniform over the vocabulary; input = rows [0, S),
// labels = rows [1, S + 1) (the next token of each sequence).
struct Batch {
  Tensor input_ids, labels;  // [S, B] i32
};

Batch random_batch(int64_t seq, int64_t batch, int64_t vocab, uint64_t seed, Device device) {
  std::mt19937_64 engine(seed);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>((seq + 1) * batch));
  for (int32_t& v : ids) v = id(engine);
  const auto rows = [&](int64_t first) {
    return Tensor::from_vector(
        std::vector<int32_t>(ids.begin() + first * batch, ids.begin() + (first + seq) * batch),
        {seq, batch}, device);
  };
  return {rows(0), rows(1)};
}

// The backend causal attention takes for this model's [S, B, heads, dim] tensors (the sbhd
// layout the attention modules use): cudnn or native, from ops::attention_backend_for.
std::string attention_backend_label(const nn::ModelConfig& c, int64_t seq, int64_t batch,
                                    DType dtype, Device device) {
  if (!device.is_cuda()) return "cpu";
  const HeadDims dims = head_dims(c);
  const int64_t q_heads = c.num_attention_heads;
  const int64_t kv_heads =
      c.attention_type == nn::AttentionType::mla ? q_heads : c.num_query_groups;
  try {
    const Tensor q = Tensor::empty({seq, batch, q_heads, dims.qk}, dtype, device);
    const Tensor k = Tensor::empty({seq, batch, kv_heads, dims.qk}, dtype, device);
    const Tensor v = Tensor::empty({seq, batch, kv_heads, dims.v}, dtype, device);
    ops::AttentionOptions options;
    options.layout = ops::AttentionLayout::sbhd;
    return ops::attention_backend_name(ops::attention_backend_for(q, k, v, options));
  } catch (const std::exception&) {
    return "?";
  }
}

// The worst MoE layer's max / mean routed load of the last forward (1 when no MoE layer).
double worst_load_imbalance(const nn::GPTModel& model, const nn::GPTContext& ctx) {
  double worst = 1.0;
  for (size_t l = 0; l < model.layers.size() && l < ctx.layers.size(); ++l) {
    if (!model.layers[l].is_moe()) continue;
    const Tensor& counts = ctx.layers[l].moe.router.tokens_per_expert;
    if (!counts.defined()) continue;
    const std::vector<int64_t> load = counts.to_vector<int64_t>();
    double max_load = 0, total = 0;
    for (int64_t n : load) {
      max_load = std::max(max_load, static_cast<double>(n));
      total += static_cast<double>(n);
    }
    if (total > 0) worst = std::max(worst, max_load * static_cast<double>(load.size()) / total);
  }
  return worst;
}

}  // namespace

nn::ModelConfig bench_model_config(const std::string& spec) {
  const size_t colon = spec.rfind(':');
  const std::string name = spec.substr(0, colon);
  nn::ModelConfig config = nn::model_zoo(name);
  if (colon != std::string::npos) {
    const std::string count = spec.substr(colon + 1);
    int64_t layers = 0;
    size_t used = 0;
    try {
      layers = std::stoll(count, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    MOE_CHECK(used == count.size() && !count.empty(), "bench model: '", spec,
              "': the layer count after ':' must be an integer");
    MOE_CHECK(layers >= 1 && layers <= config.num_layers, "bench model: '", spec, "': ", name,
              " has ", config.num_layers, " layers; ask for 1 to ", config.num_layers);
    config.num_layers = layers;
    config.moe_layer_pattern.resize(static_cast<size_t>(layers));
  }
  config.mtp_num_layers = 0;
  config.name = spec;
  config.validate();
  return config;
}

StepFlops model_step_flops(const nn::ModelConfig& config, int64_t seq_length,
                           int64_t micro_batch_size) {
  const train::ModelFlops f =
      train::model_flops_breakdown(config, seq_length, seq_length * micro_batch_size);
  return {f.matmul_params, f.matmul, f.attention};
}

CLI::App* add_model_bench_command(CLI::App& bench, ModelBenchOptions& options) {
  CLI::App* command = bench.add_subcommand(
      "model", "whole-model forward+backward (no optimizer) of zoo models cut to N layers");
  command->add_option("--models", options.models,
                      "zoo-name:layers ... (default on the GPU: mixtral-8x7b:4 qwen3-30b-a3b:8; "
                      "on the CPU: qwen3-moe-tiny:2)");
  command
      ->add_option("--seq-length", options.seq_length,
                   "tokens per sequence (default 4096; 64 on the CPU)")
      ->check(CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max()));
  command->add_option("--micro-batch-size", options.micro_batch_size, "sequences per step")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max()));
  command->add_option("--warmup", options.warmup)
      ->capture_default_str()
      ->check(CLI::Range(0, std::numeric_limits<int>::max()));
  command->add_option("--iters", options.iters)
      ->capture_default_str()
      ->check(CLI::Range(1, std::numeric_limits<int>::max()));
  command->add_option("--seed", options.seed, "parameters and token ids")->capture_default_str();
  command->add_flag("--moe-router-force-load-balancing", options.force_balance,
                    "balanced routing (benchmark mode) instead of the untrained router's choice");
  return command;
}

int run_model_bench(const ModelBenchOptions& options) {
  const bool gpu = !options.cpu && cuda_device_count() > 0;
  const Device device = gpu ? Device::cuda(0) : Device::cpu();
  const DType dtype = gpu ? DType::bf16 : DType::f32;
  const int64_t S = options.seq_length > 0 ? options.seq_length : (gpu ? 4096 : 64);
  const int64_t B = options.micro_batch_size;
  MOE_CHECK(B >= 1, "bench model: --micro-batch-size must be positive, got ", B);
  MOE_CHECK(options.iters >= 1 && options.warmup >= 0,
            "bench model: --iters must be positive and --warmup not negative");
  std::vector<std::string> models = options.models;
  if (models.empty())
    models = gpu ? std::vector<std::string>{"mixtral-8x7b:4", "qwen3-30b-a3b:8"}
                 : std::vector<std::string>{"qwen3-moe-tiny:2"};
  // A misspelt --models entry is an error (naming the zoo), before any measurement; the
  // table's "failed" rows are for models that exist but cannot run (out of memory, ...).
  for (const std::string& spec : models) {
    try {
      (void)bench_model_config(spec);
    } catch (const Error& e) {
      MOE_FAIL("bench model: --models ", spec, ": ", e.what());
    }
  }

  const Ceilings ceilings = measure_ceilings(device);
  std::printf("device %s; measured ceilings: dense %s GEMM %.4g TFLOP/s, copy %.4g GB/s\n",
              device.str().c_str(), gpu ? "bf16" : "f32", ceilings.gemm_tflops,
              ceilings.copy_gb_per_s);
  std::printf(
      "whole model, forward + backward (zero_grad + forward + backward per step; NO optimizer "
      "step; the output layer's loss backward runs inside the forward, as in training, so it "
      "counts in fwd ms): %s parameters%s, seq %lld x micro-batch %lld = %lld tokens, random ids (seed "
      "%llu), %s routing; %d warm-up + %d timed steps (median)\n",
      dtype_name(dtype), gpu ? " with fp32 main gradients" : "", static_cast<long long>(S),
      static_cast<long long>(B), static_cast<long long>(S * B),
      static_cast<unsigned long long>(options.seed),
      options.force_balance ? "forced balanced" : "the untrained router's", options.warmup,
      options.iters);
  std::printf(
      "model FLOPs per step = 6 T P + 6 T L (S/2) Hq (Dqk + Dv), P = active matmul parameters "
      "(output layer and routers in, embedding and norms out); MFU against %.0f TFLOP/s\n\n",
      kPeakBf16Flops / 1e12);
  std::printf(
      "| model | layers (MoE) | P active matmul | TFLOP/step (attn %%) | attention | fwd ms | "
      "bwd ms | step ms | tokens/s | TFLOP/s | MFU | vs GEMM | max/mean load | lm loss | "
      "resident GiB | peak GiB |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);

  for (const std::string& spec : models) {
    try {
      nn::ModelConfig config = bench_model_config(spec);
      config.moe.moe_router_force_load_balancing = options.force_balance;
      const StepFlops flops = model_step_flops(config, S, B);
      int64_t moe_layers = 0;
      for (int64_t l = 0; l < config.num_layers; ++l) moe_layers += config.is_moe_layer(l) ? 1 : 0;
      const std::string backend = attention_backend_label(config, S, B, dtype, device);

      auto model = std::make_unique<nn::GPTModel>(config, dtype, device, options.seed);
      const Batch batch = random_batch(S, B, config.vocab_size, options.seed + 1, device);
      // Parameters, gradients and the batch; the peak adds the step's activations and workspace.
      const int64_t resident = memory_stats(device).allocated_bytes;
      reset_peak_memory(device);

      nn::GPTContext ctx;
      // As the trainer runs it: the output layer's loss backward inside the forward.
      ctx.loss_scale_known_in_forward = 1.0;
      nn::GPTLoss loss;
      for (int i = 0; i < options.warmup; ++i) {
        model->zero_grad();
        loss = model->forward(batch.input_ids, batch.labels, ctx);
        model->backward(ctx);
      }
      // Three timestamps per step: before forward, between forward and backward, after
      // backward. zero_grad is lazy (a flag per parameter): no device work between steps.
      DeviceTimer timer(device);
      for (int i = 0; i < options.iters; ++i) {
        model->zero_grad();
        timer.record();
        loss = model->forward(batch.input_ids, batch.labels, ctx);
        timer.record();
        model->backward(ctx);
        timer.record();
      }
      // The median step, and the forward / backward split of that same step (so the two add
      // up to it; medians taken apart need not).
      std::vector<double> step;
      for (size_t i = 0; i < static_cast<size_t>(options.iters); ++i)
        step.push_back(timer.elapsed_ms(3 * i, 3 * i + 2));
      const size_t median_step = median_index(step);
      const double step_ms = step[median_step];
      const double fwd_ms = timer.elapsed_ms(3 * median_step, 3 * median_step + 1);
      const double bwd_ms = timer.elapsed_ms(3 * median_step + 1, 3 * median_step + 2);
      const double peak = gib(memory_stats(device).peak_allocated_bytes);
      const double tflops = flops.total() / (step_ms * 1e-3) / 1e12;
      const double tokens_per_s = static_cast<double>(S * B) / (step_ms * 1e-3);
      char mfu[32] = "-";
      if (gpu) std::snprintf(mfu, sizeof mfu, "%.3f", tflops * 1e12 / kPeakBf16Flops);
      std::printf(
          "| %s | %lld (%lld) | %s | %.3g (%.0f%%) | %s | %.2f | %.2f | %.2f | %.0f | %.3g | %s | "
          "%.2f | %.2f | %.3f | %.3g | %.3g |\n",
          spec.c_str(), static_cast<long long>(config.num_layers),
          static_cast<long long>(moe_layers), nn::format_param_count(flops.matmul_params).c_str(),
          flops.total() / 1e12, 100.0 * flops.attention / flops.total(), backend.c_str(), fwd_ms,
          bwd_ms, step_ms, tokens_per_s, tflops, mfu, tflops / ceilings.gemm_tflops,
          worst_load_imbalance(*model, ctx), loss.lm_loss.item(), gib(resident), peak);
    } catch (const std::exception& e) {
      std::printf("| %s | failed: %s |\n", spec.c_str(), e.what());
    }
    std::fflush(stdout);
    empty_cache();  // the next model starts from the driver's memory, not this one's cache
  }
  return 0;
}

}  // namespace moe::bench
