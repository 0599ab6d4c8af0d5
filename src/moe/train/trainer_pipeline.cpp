// The trainer's step under pipeline parallelism (trainer.h): this rank runs the action list of
// Megatron's schedule for its pipeline rank (pipeline_schedule.h: 1F1B, or interleaved 1F1B
// over its model chunks), the stages exchanging activations and their gradients with the
// runtime's batched point-to-point calls (a batch of the list is posted together).
#include <map>
#include <utility>

#include "moe/core/error.h"
#include "moe/ops/elementwise.h"
#include "moe/train/pipeline_schedule.h"
#include "moe/train/trainer.h"

namespace moe::train {
void Trainer::run_pipeline(const std::vector<MicroBatch>& micro_batches,
                           const std::vector<int64_t>& first_samples, double scale,
                           bool forward_only, StepSums& sums) {
  const dist::ParallelState& state = *parallel_.state;
  const std::shared_ptr<dist::ProcessGroup>& pp = state.pp();
  const int M = static_cast<int>(micro_batches.size());
  const std::vector<PipelineAction> actions =
      pipeline_schedule(state.pp_size(), state.pp_rank(), M, model_.num_chunks(),
                        /*microbatch_group_size=*/0, forward_only);
  const Shape activation =
      model_.stage_activation_shape(config_.seq_length, config_.micro_batch_size);
  // Each (micro-batch, chunk)'s context lives from its forward to its backward.
  std::map<std::pair<int, int>, nn::GPTContext> contexts;
  if (!forward_only) executed_.clear();
  const auto record = [&](const PipelineAction& a) {
    if (!forward_only) executed_.push_back(a);
  };
  const auto context = [&](const PipelineAction& a) -> nn::GPTContext& {
    return contexts[{a.microbatch, a.chunk}];
  };
  for (size_t i = 0; i < actions.size();) {
    const PipelineAction& a = actions[i];
    if (is_p2p(a.kind)) {
      // The batch: consecutive actions with its number, posted together.
      std::vector<dist::P2POp> ops;
      for (; i < actions.size() && actions[i].batch == a.batch && is_p2p(actions[i].kind); ++i) {
        const PipelineAction& p = actions[i];
        record(p);
        nn::GPTContext& ctx = context(p);
        switch (p.kind) {
          case PipelineActionKind::recv_forward:
            ctx.stage_input = Tensor::empty(activation, model_.dtype(), model_.device());
            ops.push_back({dist::P2POp::Kind::recv, ctx.stage_input, p.peer_rank});
            break;
          case PipelineActionKind::send_forward:
            ops.push_back({dist::P2POp::Kind::send, ctx.stage_output, p.peer_rank});
            break;
          case PipelineActionKind::recv_backward:
            ctx.stage_output_grad = Tensor::empty(activation, model_.dtype(), model_.device());
            ops.push_back({dist::P2POp::Kind::recv, ctx.stage_output_grad, p.peer_rank});
            break;
          case PipelineActionKind::send_backward:
            ops.push_back({dist::P2POp::Kind::send, ctx.stage_input_grad, p.peer_rank});
            break;
          default:
            MOE_FAIL("pipeline: ", describe(p), " is not a point-to-point action");
        }
      }
      pp->batch_p2p(ops);
      // What was sent is no longer needed; a sent input gradient (or, forward only, a sent
      // output) ends the (micro-batch, chunk)'s context.
      for (size_t j = i - ops.size(); j < i; ++j) {
        const PipelineAction& p = actions[j];
        if (p.kind == PipelineActionKind::send_backward ||
            (forward_only && p.kind == PipelineActionKind::send_forward))
          contexts.erase({p.microbatch, p.chunk});
        else if (p.kind == PipelineActionKind::send_forward)
          context(p).stage_output = Tensor();
      }
      continue;
    }
    record(a);
    nn::GPTContext& ctx = context(a);
    const MicroBatch& mb = micro_batches[static_cast<size_t>(a.microbatch)];
    if (a.kind == PipelineActionKind::forward) {
      ctx.chunk = a.chunk;
      if (!first_samples.empty()) {
        ctx.dropout_first_sample = first_samples[static_cast<size_t>(a.microbatch)];
        ctx.loss_scale_known_in_forward = scale;
      }
      const nn::GPTLoss loss = model_.forward(mb.input_ids, mb.labels, ctx);
      if (on_micro_batch && !forward_only) on_micro_batch(ctx);
      sums.add(loss, ctx);
      if (forward_only && model_.chunk(a.chunk).loss) contexts.erase({a.microbatch, a.chunk});
    } else {
      // Reductions start in the last backward of each chunk (data_parallel.h).
      if (ddp_) ddp_->start_micro_batch(a.microbatch == M - 1);
      model_.backward(ctx, scale);
      // The first stage sends nothing back: its context ends here.
      if (model_.chunk(a.chunk).embedding) contexts.erase({a.microbatch, a.chunk});
    }
    ++i;
  }
}

void Trainer::reduce_losses_over_stages(Tensor& sums) {
  if (!pipelined()) return;
  parallel_.state->pp()->all_reduce(sums, dist::ReduceOp::sum);
}

}  // namespace moe::train
