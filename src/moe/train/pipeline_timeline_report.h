// moe train --pipeline-timeline (moecore): the picture of the pipeline schedule a run executed
// (pipeline_timeline.h), drawn from the actions every pipeline rank recorded in a training step
// (Trainer::executed_pipeline_actions), so the user sees what their flags do: which micro-batch
// and chunk each stage computes when, and the bubble.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "moe/core/device.h"
#include "moe/dist/process_group.h"
#include "moe/train/pipeline_schedule.h"

namespace moe::train {

// Every pipeline rank's actions, gathered over the pipeline group `pp` (a collective of its
// members), index = pipeline rank. Tensors of the exchange live on `device`.
std::vector<std::vector<PipelineAction>> gather_pipeline_actions(
    const std::vector<PipelineAction>& mine, const std::shared_ptr<dist::ProcessGroup>& pp,
    Device device);

// The text printed for the run: a heading naming the iteration, the timeline of `ranks`
// (forward 1 unit, backward 2) and its bubble.
std::string format_pipeline_timeline(const std::vector<std::vector<PipelineAction>>& ranks,
                                     int64_t iteration);

}  // namespace moe::train
