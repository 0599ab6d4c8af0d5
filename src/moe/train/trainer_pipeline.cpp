// The trainer's step under pipeline parallelism (trainer.h): this rank runs the action list of
// Megatron's schedule for its pipeline rank (pipeline_schedule.h: 1F1B, or interleaved 1F1B
// over its model chunks), the stages exchanging activations and their gradients with the
// runtime's batched point-to-point calls (a batch of the list is posted together, and waited
// for when a computation needs what it receives).
#include <algorithm>
#include <deque>
#include <map>
#include <utility>

#include "moe/core/error.h"
#include "moe/core/trace_range.h"
#include "moe/train/pipeline_schedule.h"
#include "moe/train/trainer.h"

namespace moe::train {
namespace {

// A posted batch of point-to-point transfers: its handle, the tensors it reads or fills (kept
// alive until it completes: a context may end before its send does), and the (micro-batch,
// chunk) pairs whose input activation / output gradient it receives.
struct PostedBatch {
  std::unique_ptr<dist::Work> work;
  std::vector<Tensor> tensors;
  std::vector<std::pair<int, int>> inputs, output_grads;
};

}  // namespace

void Trainer::run_pipeline(const std::vector<MicroBatch>& micro_batches,
                           const std::vector<int64_t>& first_samples, double scale,
                           bool forward_only, StepSums& sums) {
  const dist::ParallelState& state = *parallel_.state;
  const std::shared_ptr<dist::ProcessGroup>& pp = state.pp();
  const int M = static_cast<int>(micro_batches.size());
  const std::vector<PipelineAction> actions = pipeline_actions(M, forward_only);
  // Each (micro-batch, chunk)'s context lives from its forward to its backward.
  std::map<std::pair<int, int>, nn::GPTContext> contexts;
  if (!forward_only) executed_.clear();
  const auto record = [&](const PipelineAction& a) {
    if (!forward_only) executed_.push_back(a);
  };
  const auto context = [&](const PipelineAction& a) -> nn::GPTContext& {
    return contexts[{a.microbatch, a.chunk}];
  };
  // What crosses stages is in the model's dtype, as the receiver allocates it.
  const auto in_model_dtype = [&](const Tensor& t) {
    return t.dtype() == model_.dtype() ? t : t.to(model_.dtype());
  };
  // Batches are posted asynchronously, in the list's order (so the ranks' transfers meet in
  // order), and waited for only when a compute action needs what one receives, or at the end:
  // on NCCL the transfers run on the communication stream beside the compute in between.
  std::deque<PostedBatch> posted;
  const auto wait_until = [&](const std::vector<std::pair<int, int>> PostedBatch::*which,
                              std::pair<int, int> key) {
    const auto delivers = [&](const PostedBatch& b) {
      return std::find((b.*which).begin(), (b.*which).end(), key) != (b.*which).end();
    };
    if (std::none_of(posted.begin(), posted.end(), delivers)) return;
    bool found = false;
    const TraceRange range("pipeline.wait");
    while (!found) {  // the earlier batches first: they were posted first
      found = delivers(posted.front());
      posted.front().work->wait();
      posted.pop_front();
    }
  };
  for (size_t i = 0; i < actions.size();) {
    const PipelineAction& a = actions[i];
    if (is_p2p(a.kind)) {
      // The batch: consecutive actions with its number, posted together.
      std::vector<dist::P2POp> ops;
      PostedBatch batch;
      for (; i < actions.size() && actions[i].batch == a.batch && is_p2p(actions[i].kind); ++i) {
        const PipelineAction& p = actions[i];
        record(p);
        nn::GPTContext& ctx = context(p);
        const std::pair<int, int> key{p.microbatch, p.chunk};
        switch (p.kind) {
          case PipelineActionKind::recv_forward:
            ctx.stage_input = Tensor::empty(
                model_.stage_input_shape(p.chunk, config_.seq_length, config_.micro_batch_size),
                model_.dtype(), model_.device());
            ops.push_back({dist::P2POp::Kind::recv, ctx.stage_input, p.peer_rank});
            batch.inputs.push_back(key);
            break;
          case PipelineActionKind::send_forward:
            ops.push_back({dist::P2POp::Kind::send, in_model_dtype(ctx.stage_output), p.peer_rank});
            break;
          case PipelineActionKind::recv_backward:
            ctx.stage_output_grad = Tensor::empty(
                model_.stage_output_shape(p.chunk, config_.seq_length, config_.micro_batch_size),
                model_.dtype(), model_.device());
            ops.push_back({dist::P2POp::Kind::recv, ctx.stage_output_grad, p.peer_rank});
            batch.output_grads.push_back(key);
            break;
          case PipelineActionKind::send_backward:
            ops.push_back(
                {dist::P2POp::Kind::send, in_model_dtype(ctx.stage_input_grad), p.peer_rank});
            break;
          default:
            MOE_FAIL("pipeline: ", describe(p), " is not a point-to-point action");
        }
        batch.tensors.push_back(ops.back().tensor);
      }
      batch.work = traced("pipeline.p2p", [&] { return pp->batch_p2p_async(ops); });
      posted.push_back(std::move(batch));
      // What was sent is no longer the context's; a sent input gradient (or, forward only, a
      // sent output) ends the (micro-batch, chunk)'s context.
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
    const std::pair<int, int> key{a.microbatch, a.chunk};
    nn::GPTContext& ctx = context(a);
    const MicroBatch& mb = micro_batches[static_cast<size_t>(a.microbatch)];
    if (a.kind == PipelineActionKind::forward) {
      wait_until(&PostedBatch::inputs, key);
      ctx.chunk = a.chunk;
      if (!first_samples.empty()) {
        ctx.dropout_first_sample = first_samples[static_cast<size_t>(a.microbatch)];
        ctx.loss_scale_known_in_forward = scale;
      }
      const nn::GPTLoss loss =
          traced("forward", [&] { return model_.forward(mb.input_ids, mb.labels, ctx); });
      if (on_micro_batch && !forward_only) on_micro_batch(ctx);
      sums.add(loss, ctx);
      if (forward_only && model_.chunk(a.chunk).loss) contexts.erase(key);
    } else {
      wait_until(&PostedBatch::output_grads, key);
      // Reductions start in the last backward of each chunk (data_parallel.h).
      if (ddp_) ddp_->start_micro_batch(a.microbatch == M - 1);
      traced("backward", [&] { model_.backward(ctx, scale); });
      // The first stage sends nothing back: its context ends here.
      if (model_.chunk(a.chunk).embedding) contexts.erase(key);
    }
    ++i;
  }
  for (PostedBatch& b : posted) b.work->wait();
}

void Trainer::reduce_losses_over_stages(Tensor& sums) {
  if (!pipelined()) return;
  parallel_.state->pp()->all_reduce(sums, dist::ReduceOp::sum);
}

}  // namespace moe::train
