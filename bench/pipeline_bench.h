// `moe bench pipeline`: the pipeline schedule that Megatron's flags give, drawn before any run
// (train/pipeline_schedule.h, pipeline_timeline.h): every rank's forwards and backwards in time
// with --forward-time / --backward-time per chunk (default 1 and 2, the backward about twice
// the forward), the makespan and the bubble, beside Megatron's formula for it ((PP - 1) / M for
// 1F1B, (PP - 1) / (V M) interleaved). A user picks PP, V and the micro-batch count with it;
// `moe train --pipeline-timeline` draws what a run actually executed.
#pragma once

namespace CLI {
class App;
}

namespace moe::bench {

struct PipelineBenchOptions {
  int pipeline_size = 4;          // --pipeline-model-parallel-size
  int virtual_stages = 1;         // --num-virtual-stages-per-pipeline-rank
  int num_microbatches = 8;       // --num-microbatches
  int microbatch_group_size = 0;  // --microbatch-group-size-per-virtual-pipeline-stage (0: PP)
  double forward_time = 1.0;      // --forward-time
  double backward_time = 2.0;     // --backward-time
};

// Adds `pipeline` to `bench` (the `moe bench` app), writing into `options` (which must outlive
// the parse).
CLI::App* add_pipeline_bench_command(CLI::App& bench, PipelineBenchOptions& options);

// Prints the timeline and the bubble; throws moe::Error for what Megatron refuses.
int run_pipeline_bench(const PipelineBenchOptions& options);

}  // namespace moe::bench
