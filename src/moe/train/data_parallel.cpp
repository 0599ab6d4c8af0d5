#include "moe/train/data_parallel.h"

#include <algorithm>

#include "moe/core/error.h"
#include "moe/core/trace_range.h"
#include "moe/ops/elementwise.h"

namespace moe::train {

// One buffer and the reduction state of its buckets within a step.
struct DataParallel::BufferState {
  std::unique_ptr<ParamAndGradBuffer> buffer;
  std::vector<bool> ready;       // per entry: its gradient is complete this step
  std::vector<int> ready_count;  // per bucket
  std::vector<bool> started;     // per bucket
  struct InFlight {
    int bucket = 0;
    std::unique_ptr<dist::Work> work;
    Tensor sent;    // what the collective reads (the bucket, or its bf16 copy)
    Tensor result;  // where the result lands before it is copied back (or undefined)
  };
  std::vector<InFlight> in_flight;
};

namespace {

int64_t default_bucket_size(int dp_cp) {
  // Megatron-Core: max(40M, 1M x DP) elements, so large data-parallel groups get fewer, larger
  // collectives.
  return std::max<int64_t>(40'000'000, int64_t{1'000'000} * dp_cp);
}

}  // namespace

DataParallel::DataParallel(nn::GPTModel& model, const dist::ParallelState& state,
                           const DdpConfig& config)
    : model_(model), state_(state), config_(config) {
  MOE_CHECK(config.bucket_size >= 0, "--ddp-bucket-size must be >= 0, got ", config.bucket_size);
  MOE_CHECK(!config.overlap_param_gather || config.use_distributed_optimizer,
            "--overlap-param-gather needs --use-distributed-optimizer");
  bucket_size_ =
      config.bucket_size > 0 ? config.bucket_size : default_bucket_size(state.dp_cp_size());

  // The reverse of the forward order: the backward completes the last layers first.
  std::vector<nn::Parameter*> params = model.parameters();
  std::reverse(params.begin(), params.end());
  std::vector<nn::Parameter*> dense, expert;
  for (nn::Parameter* p : params)
    (p->layout.grad_group == nn::GradGroup::expert ? expert : dense).push_back(p);

  auto add = [&](std::vector<nn::Parameter*> group_params,
                 const std::shared_ptr<dist::ProcessGroup>& group) {
    if (group_params.empty()) return;
    const int64_t size = group ? group->size() : 1;
    // The distributed optimizer's reduce-scatter needs equal chunks; keep them aligned too.
    const int64_t pad = config_.use_distributed_optimizer ? size * kParamAlignment : 1;
    auto s = std::make_unique<BufferState>();
    s->buffer =
        std::make_unique<ParamAndGradBuffer>(std::move(group_params), group, bucket_size_, pad);
    s->ready.assign(s->buffer->entries().size(), false);
    s->ready_count.assign(s->buffer->buckets().size(), 0);
    s->started.assign(s->buffer->buckets().size(), false);
    states_.push_back(std::move(s));
  };
  // One buffer per value dtype within a gradient group (Megatron-Core: per param / grad dtype
  // pair): a bf16 model's routers keep fp32 weights.
  auto add_by_dtype = [&](const std::vector<nn::Parameter*>& group_params,
                          const std::shared_ptr<dist::ProcessGroup>& group) {
    std::vector<DType> dtypes;
    for (nn::Parameter* p : group_params)
      if (std::find(dtypes.begin(), dtypes.end(), p->value.dtype()) == dtypes.end())
        dtypes.push_back(p->value.dtype());
    for (DType d : dtypes) {
      std::vector<nn::Parameter*> same;
      for (nn::Parameter* p : group_params)
        if (p->value.dtype() == d) same.push_back(p);
      add(std::move(same), group);
    }
  };
  add_by_dtype(dense, state.dp_cp());
  add_by_dtype(expert, state.edp());
  for (size_t k = 0; k < states_.size(); ++k) {
    const auto& entries = states_[k]->buffer->entries();
    for (size_t i = 0; i < entries.size(); ++i)
      where_[entries[i].param] = {static_cast<int>(k), static_cast<int>(i)};
  }

  if (state.tp_size() > 1)
    for (nn::Parameter* p : params)
      if (p->layout.tp_partial_grad) tp_summed_[p] = false;

  // The pipeline ranks that hold a copy of the shared embedding (the first stage, and the loss's
  // and MTP's stages when they need it): every pipeline rank learns them.
  if (state.pp_size() > 1) {
    const bool holds = std::any_of(params.begin(), params.end(),
                                   [](const nn::Parameter* p) { return p->layout.pp_shared; });
    const std::vector<int64_t> flags =
        dist::all_gather_values(*state.pp(), std::vector<int64_t>{holds ? 1 : 0}, model.device());
    for (int r = 0; r < state.pp_size(); ++r)
      if (flags[static_cast<size_t>(r)] != 0) pp_shared_holders_.push_back(r);
  }

  if (config_.overlap_grad_reduce)
    model_.on_grads_ready = [this](const std::vector<nn::Parameter*>& ps) { grads_ready(ps); };
}

void DataParallel::sum_partial_grads_over_tp(const std::vector<nn::Parameter*>& params) {
  if (tp_summed_.empty()) return;
  std::vector<nn::Parameter*> todo;
  for (nn::Parameter* p : params) {
    const auto it = tp_summed_.find(p);
    if (it == tp_summed_.end() || it->second) continue;
    it->second = true;
    todo.push_back(p);
  }
  // One all-reduce per gradient dtype, over the gradients packed back to back.
  while (!todo.empty()) {
    const DType dtype = todo.front()->grad.dtype();
    std::vector<nn::Parameter*> same;
    int64_t total = 0;
    for (nn::Parameter* p : todo)
      if (p->grad.dtype() == dtype) {
        same.push_back(p);
        total += p->grad.numel();
      }
    std::erase_if(todo, [&](nn::Parameter* p) { return p->grad.dtype() == dtype; });
    Tensor packed = Tensor::empty({total}, dtype, same.front()->grad.device());
    int64_t at = 0;
    for (nn::Parameter* p : same) {
      const int64_t n = p->grad.numel();
      packed.rows(at, n).copy_(p->grad_value().reshape({n}));
      at += n;
    }
    state_.tp()->all_reduce(packed, dist::ReduceOp::sum);
    at = 0;
    for (nn::Parameter* p : same) {
      const int64_t n = p->grad.numel();
      Tensor g = p->grad.reshape({n});
      g.copy_(packed.rows(at, n));
      at += n;
    }
  }
}

void DataParallel::sum_pipeline_shared_grads() {
  const std::vector<int>& holders = pp_shared_holders_;
  const int me = state_.pp_rank();
  if (holders.size() < 2 || std::find(holders.begin(), holders.end(), me) == holders.end()) return;
  // Every holder sends its copy's gradient to the others and adds them all up in pipeline-rank
  // order: the same sum, bit for bit, on every holder.
  for (nn::Parameter* p : model_.parameters()) {
    if (!p->layout.pp_shared) continue;
    Tensor& mine = p->grad_value();
    std::vector<Tensor> copies;
    std::vector<dist::P2POp> ops;
    for (int h : holders) {
      copies.push_back(h == me ? mine : Tensor::empty(mine.shape(), mine.dtype(), mine.device()));
      if (h == me) continue;
      ops.push_back({dist::P2POp::Kind::send, mine, h});
      ops.push_back({dist::P2POp::Kind::recv, copies.back(), h});
    }
    state_.pp()->batch_p2p(ops);
    Tensor sum = copies.front().clone();
    for (size_t i = 1; i < copies.size(); ++i) ops::add_(sum, copies[i]);
    mine.copy_(sum);
  }
}

DataParallel::~DataParallel() {
  if (config_.overlap_grad_reduce) model_.on_grads_ready = nullptr;
}

std::vector<ParamAndGradBuffer*> DataParallel::buffers() {
  std::vector<ParamAndGradBuffer*> out;
  for (auto& s : states_) out.push_back(s->buffer.get());
  return out;
}

GradNormGroups DataParallel::norm_groups() const {
  GradNormGroups g;
  if (config_.use_distributed_optimizer) {
    g.dense.push_back(state_.dp_cp());
    g.expert.push_back(state_.edp());
  }
  g.dense.push_back(state_.tp());
  g.count_tp_replicated = state_.tp_rank() == 0;
  g.expert.push_back(state_.tp_ep());
  // Pipeline stages hold different parameters: their parts add up over PP.
  g.dense.push_back(state_.pp());
  g.expert.push_back(state_.pp());
  // Groups of one rank reduce nothing: leave them out so a one-rank mapping keeps the one-rank
  // arithmetic.
  auto prune = [](std::vector<std::shared_ptr<dist::ProcessGroup>>& gs) {
    std::erase_if(gs, [](const auto& p) { return !p || p->size() == 1; });
  };
  prune(g.dense);
  prune(g.expert);
  return g;
}

void DataParallel::start_micro_batch(bool last_of_step) {
  last_micro_batch_ = last_of_step;
}

void DataParallel::grads_ready(const std::vector<nn::Parameter*>& params) {
  if (!last_micro_batch_) return;
  sum_partial_grads_over_tp(params);
  for (nn::Parameter* p : params) {
    const auto it = where_.find(p);
    // The copies of a pipeline-shared parameter are summed in finish_grad_sync (the other
    // stage completes its copy at another time): its bucket starts there.
    if (it == where_.end() || p->layout.pp_shared) continue;
    BufferState& s = *states_[static_cast<size_t>(it->second.first)];
    const size_t i = static_cast<size_t>(it->second.second);
    if (s.ready[i]) continue;
    s.ready[i] = true;
    const int b = s.buffer->entries()[i].bucket;
    if (++s.ready_count[static_cast<size_t>(b)] ==
        static_cast<int>(s.buffer->buckets()[static_cast<size_t>(b)].entries.size()))
      start_bucket(s, b);
  }
}

void DataParallel::start_bucket(BufferState& s, int b) {
  if (s.started[static_cast<size_t>(b)]) return;
  s.started[static_cast<size_t>(b)] = true;
  ParamAndGradBuffer& buf = *s.buffer;
  buf.materialise_grads(b);           // the optimizer reads the buffer: no lazy zeros left
  if (buf.group_size() == 1) return;  // nothing to reduce
  BufferState::InFlight f;
  f.bucket = b;
  Tensor grads = buf.bucket_grads(b);
  f.sent = config_.grad_reduce_in_bf16 ? grads.to(DType::bf16) : grads;
  if (config_.use_distributed_optimizer) {
    const int64_t chunk = grads.numel() / buf.group_size();
    f.result = Tensor::empty({chunk}, f.sent.dtype(), f.sent.device());
    f.work = buf.group()->reduce_scatter_async(f.sent, f.result, dist::ReduceOp::sum);
  } else {
    f.work = buf.group()->all_reduce_async(f.sent, dist::ReduceOp::sum);
  }
  s.in_flight.push_back(std::move(f));
}

void DataParallel::finish_grad_sync() {
  const TraceRange range("grad_sync");
  // Same order on every rank: the partial TP gradients not summed during the backward, the
  // buckets the backward started, then the rest in buffer order.
  std::vector<nn::Parameter*> partial;
  for (const auto& [p, summed] : tp_summed_)
    if (!summed) partial.push_back(const_cast<nn::Parameter*>(p));
  std::sort(partial.begin(), partial.end(), [&](const nn::Parameter* a, const nn::Parameter* b) {
    return where_.at(a) < where_.at(b);
  });
  sum_partial_grads_over_tp(partial);
  for (auto& [p, summed] : tp_summed_) summed = false;  // the next step sums again
  sum_pipeline_shared_grads();
  for (auto& s : states_)
    for (size_t b = 0; b < s->started.size(); ++b) start_bucket(*s, static_cast<int>(b));
  for (auto& s : states_) {
    ParamAndGradBuffer& buf = *s->buffer;
    for (BufferState::InFlight& f : s->in_flight) {
      f.work->wait();
      Tensor grads = buf.bucket_grads(f.bucket);
      if (config_.use_distributed_optimizer) {
        const auto [lo, hi] = buf.owned_range(f.bucket);
        Tensor owned = buf.grad_data().rows(lo, hi - lo);
        owned.copy_(f.result.dtype() == owned.dtype() ? f.result : f.result.to(owned.dtype()));
      } else if (f.sent.raw() != grads.raw()) {
        grads.copy_(f.sent.to(grads.dtype()));
      }
    }
    s->in_flight.clear();
    std::fill(s->ready.begin(), s->ready.end(), false);
    std::fill(s->ready_count.begin(), s->ready_count.end(), 0);
    std::fill(s->started.begin(), s->started.end(), false);
  }
}

}  // namespace moe::train
