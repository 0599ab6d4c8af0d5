// The `moe` program: one binary, subcommands, Megatron's flag names.
//   moe                   a one-layer demo: an MoE layer forward + backward, what it did
//   moe bench moe-layer   the MoE layer benchmark (bench/moe_layer_bench.h)
//   moe bench grouped-gemm  the experts' six grouped GEMMs by backend and cutlass tile
//                         configuration (bench/grouped_gemm_bench.h)
//   moe bench moe-ep      the MoE layer under expert parallelism on a launch's ranks: weak
//                         scaling and the dispatch/combine exchange (bench/moe_ep_bench.h)
//   moe bench attention   the attention benchmark, per backend (bench/attention_bench.h)
//   moe bench model       whole-model forward + backward (bench/model_bench.h)
//   moe bench tokenizer   single-thread tokenizer encoding speed (bench/tokenizer_bench.h)
//   moe bench comm        collectives per message size on any backend (bench/comm_bench.h)
//   moe bench pipeline    the pipeline schedule of Megatron's flags, drawn with its bubble
//   moe launch            start a node's ranks and run a subcommand in each (launch_cmd.h)
//   moe convert           Hugging Face <-> moecore model folders (convert_cmd.h)
//   moe forward           logits and next-token loss of a model folder on token ids (forward_cmd.h)
//   moe train             Megatron-style training; no flags: the default run (train_cmd.h)
//   moe generate          a text sample from a byte-level model or training save (generate_cmd.h)
//   moe info              a model's config and parameter counts (info_cmd.h)
//   moe preprocess        text/JSONL -> Megatron .bin/.idx token datasets (preprocess_cmd.h)
//   moe plot              a run's metrics JSONL as PNG charts: loss, expert load (plot_cmd.h)
// An error ends the program with status 1 and "moe: error: <what>"; a rank of a launch of
// several prints "[rank R host] error: <what>" instead (dist/fatal.h) and, once its world exists
// (dist/init.h), aborts it, so that the other ranks do not wait for this one.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>

#include "attention_bench.h"
#include "comm_bench.h"
#include "convert_cmd.h"
#include "forward_cmd.h"
#include "generate_cmd.h"
#include "grouped_gemm_bench.h"
#include "info_cmd.h"
#include "launch_cmd.h"
#include "layer_demo.h"
#include "model_bench.h"
#include "moe/core/error.h"
#include "moe/dist/fatal.h"
#include "moe/dist/init.h"
#include "moe/ops/attention.h"
#include "moe_bench_shapes.h"
#include "moe_ep_bench.h"
#include "moe_layer_bench.h"
#include "pipeline_bench.h"
#include "plot_cmd.h"
#include "preprocess_cmd.h"
#include "tokenizer_bench.h"
#include "train_cmd.h"

namespace {

// The top-level error report (see above): a rank of a world of several reports through
// dist/fatal.h, which aborts the world; otherwise the line, with the rank's prefix when the
// launch says it is one of several.
int report_error(const std::exception& error) {
  if (moe::dist::report_and_abort(error)) return 1;
  const std::string prefix = moe::dist::rank_prefix();
  std::fprintf(stderr, "%s%s: %s\n", prefix.c_str(), prefix.empty() ? "moe: error" : "error",
               error.what());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // The world of a multi-process run is held until main returns (after the error report).
  const moe::dist::WorldHold world_hold;
  CLI::App app{"moecore: train Mixture-of-Experts language models"};
  app.require_subcommand(0, 1);
  bool force_cpu = false;
  app.add_flag("--cpu", force_cpu, "run on the CPU even when a GPU is present");

  CLI::App* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  moe::bench::MoELayerBenchOptions layer_options;
  CLI::App* bench_layer = bench->add_subcommand("moe-layer", "MoE layer forward/backward");
  bench_layer->add_option("--shapes", layer_options.shapes,
                          "mixtral-8x7b qwen3-30b-a3b deepseek-v3 deepseek-v3-ep8 tiny");
  bench_layer->add_option("--tokens", layer_options.tokens, "token counts (default 8192 16384)");
  bench_layer->add_option("--routings", layer_options.routings, "balanced and/or skewed")
      ->check(CLI::IsMember({"balanced", "skewed"}));
  bench_layer->add_option("--moe-token-dispatcher-type", layer_options.dispatcher)
      ->check(CLI::IsMember({"allgather", "alltoall"}));
  bench_layer
      ->add_option("--grouped-gemm-backends", layer_options.gemm_backends,
                   "automatic per_expert_lt per_expert_streams per_expert_threads chunked_batched "
                   "grouped_batched cutlass (space- or comma-separated)")
      ->delimiter(',')
      ->check(moe::bench::grouped_gemm_backend_problem);
  bench_layer->add_option("--warmup", layer_options.warmup);
  bench_layer->add_option("--iters", layer_options.iters);
  bench_layer->add_flag("!--no-stages", layer_options.stages, "skip the per-stage breakdown");
  bench_layer->add_flag("--cuda-graph", layer_options.cuda_graph,
                        "also time the forward+backward replayed as one CUDA graph");

  moe::bench::GroupedGemmBenchOptions gemm_options;
  CLI::App* bench_gemm = bench->add_subcommand(
      "grouped-gemm", "the experts' grouped GEMMs by backend and cutlass tile configuration");
  bench_gemm->add_option("--shapes", gemm_options.shapes,
                         "mixtral-8x7b qwen3-30b-a3b deepseek-v3 deepseek-v3-ep8");
  bench_gemm->add_option("--tokens", gemm_options.tokens, "tokens T (rows T x top-k)");
  bench_gemm->add_option("--routings", gemm_options.routings, "balanced and/or skewed")
      ->check(CLI::IsMember({"balanced", "skewed"}));
  bench_gemm
      ->add_option("--columns", gemm_options.columns,
                   "backends (automatic, per_expert_lt, chunked_batched, ...) and cutlass:<tiles> "
                   "(by_shape, coop_128x128, coop_128x256, coop_256x128, pingpong_128x128, "
                   "pingpong_64x256); default: automatic, cutlass:by_shape and every tile")
      ->delimiter(',');
  bench_gemm->add_option("--warmup", gemm_options.warmup);
  bench_gemm->add_option("--iters", gemm_options.iters);

  moe::bench::MoEEpBenchOptions ep_options;
  CLI::App* bench_ep = moe::bench::add_moe_ep_bench_command(*bench, ep_options);

  moe::bench::AttentionBenchOptions attention_options;
  CLI::App* bench_attention =
      bench->add_subcommand("attention", "causal attention forward/backward per backend");
  bench_attention->add_option("--shapes", attention_options.shapes,
                              "gqa-s4096 mha-s8192 mla-s4096 tiny");
  bench_attention
      ->add_option("--backends", attention_options.backends,
                   "cudnn native automatic (default: cudnn native)")
      ->check([](const std::string& name) {
        (void)moe::ops::parse_attention_backend(name);  // throws, naming the choices
        return std::string();
      });
  bench_attention->add_option("--warmup", attention_options.warmup);
  bench_attention->add_option("--iters", attention_options.iters);

  moe::bench::ModelBenchOptions model_options;
  CLI::App* bench_model = moe::bench::add_model_bench_command(*bench, model_options);
  moe::bench::TokenizerBenchOptions tokenizer_bench_options;
  CLI::App* bench_tokenizer =
      moe::bench::add_tokenizer_bench_command(*bench, tokenizer_bench_options);
  moe::bench::CommBenchOptions comm_options;
  CLI::App* bench_comm = moe::bench::add_comm_bench_command(*bench, comm_options);
  moe::bench::PipelineBenchOptions pipeline_options;
  CLI::App* bench_pipeline = moe::bench::add_pipeline_bench_command(*bench, pipeline_options);

  moe::app::ConvertCommandOptions convert_options;
  CLI::App* convert = moe::app::add_convert_command(app, convert_options);
  moe::app::ForwardCommandOptions forward_options;
  CLI::App* forward = moe::app::add_forward_command(app, forward_options);
  moe::app::TrainCommandOptions train_options;
  CLI::App* train = moe::app::add_train_command(app, train_options);
  moe::app::GenerateCommandOptions generate_options;
  CLI::App* generate = moe::app::add_generate_command(app, generate_options);
  moe::app::InfoCommandOptions info_options;
  CLI::App* info = moe::app::add_info_command(app, info_options);
  moe::app::PlotCommandOptions plot_options;
  CLI::App* plot = moe::app::add_plot_command(app, plot_options);
  moe::app::PreprocessCommandOptions preprocess_options;
  CLI::App* preprocess = moe::app::add_preprocess_command(app, preprocess_options);
  moe::app::LaunchCommandOptions launch_options;
  CLI::App* launch = moe::app::add_launch_command(app, launch_options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (bench_layer->parsed()) {
      layer_options.cpu = force_cpu;
      return moe::bench::run_moe_layer_bench(layer_options);
    }
    if (bench_gemm->parsed()) return moe::bench::run_grouped_gemm_bench(gemm_options);
    if (bench_ep->parsed()) return moe::bench::run_moe_ep_bench(ep_options, force_cpu);
    if (bench_attention->parsed()) {
      attention_options.cpu = force_cpu;
      return moe::bench::run_attention_bench(attention_options);
    }
    if (bench_model->parsed()) {
      model_options.cpu = force_cpu;
      return moe::bench::run_model_bench(model_options);
    }
    if (bench_tokenizer->parsed()) return moe::bench::run_tokenizer_bench(tokenizer_bench_options);
    if (bench_comm->parsed()) return moe::bench::run_comm_bench(comm_options, force_cpu);
    if (bench_pipeline->parsed()) return moe::bench::run_pipeline_bench(pipeline_options);
    if (launch->parsed()) return moe::app::run_launch(*launch, launch_options, argv[0], force_cpu);
    if (convert->parsed()) return moe::app::run_convert(convert_options);
    if (forward->parsed()) return moe::app::run_forward(forward_options, force_cpu);
    if (train->parsed()) return moe::app::run_train(*train, force_cpu);
    if (generate->parsed()) return moe::app::run_generate(generate_options, force_cpu);
    if (info->parsed()) return moe::app::run_info(info_options);
    if (plot->parsed()) return moe::app::run_plot(plot_options);
    if (preprocess->parsed()) return moe::app::run_preprocess(preprocess_options);
    return moe::app::run_layer_demo(force_cpu);
  } catch (const std::exception& e) {
    return report_error(e);
  }
}
