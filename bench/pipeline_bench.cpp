#include "pipeline_bench.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "moe/core/error.h"
#include "moe/train/pipeline_schedule.h"
#include "moe/train/pipeline_timeline.h"

namespace moe::bench {

CLI::App* add_pipeline_bench_command(CLI::App& bench, PipelineBenchOptions& options) {
  CLI::App* command = bench.add_subcommand(
      "pipeline", "the pipeline schedule of Megatron's flags drawn in time, with its bubble");
  command->add_option("--pipeline-model-parallel-size", options.pipeline_size, "PP")
      ->capture_default_str();
  command
      ->add_option("--num-virtual-stages-per-pipeline-rank", options.virtual_stages,
                   "V (interleaved 1F1B when above 1)")
      ->capture_default_str();
  command
      ->add_option("--num-microbatches", options.num_microbatches,
                   "M: global batch / (micro batch x DP)")
      ->capture_default_str();
  command
      ->add_option("--microbatch-group-size-per-virtual-pipeline-stage",
                   options.microbatch_group_size, "interleaved: 0 means PP")
      ->capture_default_str();
  command->add_option("--forward-time", options.forward_time, "one chunk's forward (units)")
      ->capture_default_str();
  command->add_option("--backward-time", options.backward_time, "one chunk's backward (units)")
      ->capture_default_str();
  return command;
}

int run_pipeline_bench(const PipelineBenchOptions& o) {
  MOE_CHECK(o.forward_time > 0 && o.backward_time > 0,
            "--forward-time and --backward-time must be positive, got ", o.forward_time, " and ",
            o.backward_time);
  const std::vector<std::vector<train::PipelineAction>> schedules = train::pipeline_schedules(
      o.pipeline_size, o.num_microbatches, o.virtual_stages, o.microbatch_group_size);
  train::PipelineDurations durations;
  durations.forward = o.forward_time;
  durations.backward = o.backward_time;
  const train::PipelineTimeline timeline = train::pipeline_timeline(schedules, durations);
  std::printf(
      "PP %d, %d virtual stage(s) per rank, %d micro-batches; a forward %g, a backward %g\n",
      o.pipeline_size, o.virtual_stages, o.num_microbatches, o.forward_time, o.backward_time);
  // A column per time unit while the picture stays readable; coarser for long schedules.
  const double unit = timeline.makespan > 160 ? timeline.makespan / 160 : 1.0;
  std::printf("%s", train::render_pipeline_timeline(timeline, unit).c_str());
  const double formula = static_cast<double>(o.pipeline_size - 1) /
                         (static_cast<double>(o.virtual_stages) * o.num_microbatches);
  std::printf("Megatron's bubble formula (PP - 1) / (V M) = %.1f%% of the ideal time\n",
              100.0 * formula);
  return 0;
}

}  // namespace moe::bench
