#include "moe/train/distributed_optimizer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_map>

#include "moe/core/error.h"
#include "moe/ops/adamw.h"
#include "moe/ops/elementwise.h"

namespace moe::train {
namespace {

bool is_16_bit(DType d) {
  return d == DType::bf16 || d == DType::f16;
}

}  // namespace

struct DistributedOptimizer::Impl {
  // One parameter's piece of this rank's owned chunks.
  struct Piece {
    ParamAndGradBuffer* buffer = nullptr;
    nn::Parameter* param = nullptr;
    ParamShard shard;
    Tensor master;  // f32 for 16-bit models; undefined when the buffer's values are the master
    Tensor exp_avg, exp_avg_sq;
    bool decay = false;
    bool expert = false;

    Tensor grad() const { return buffer->grad_data().rows(shard.buffer_begin, shard.numel()); }
    Tensor value() const { return buffer->param_data().rows(shard.buffer_begin, shard.numel()); }
  };
  struct Gather {
    std::unique_ptr<dist::Work> work;
    Tensor sent;  // a copy of the owned chunk (the collective must not read what it writes)
  };

  std::vector<ParamAndGradBuffer*> buffers;
  OptimizerConfig config;
  GradNormGroups norm_groups;
  bool overlap = false;
  std::vector<Piece> pieces;
  // (buffer index, bucket) -> gather in flight; parameter -> (buffer index, bucket).
  std::map<std::pair<int, int>, Gather> in_flight;
  std::unordered_map<const nn::Parameter*, std::pair<int, int>> bucket_of;

  void start_gathers();
  void wait(std::pair<int, int> key);
};

void DistributedOptimizer::Impl::start_gathers() {
  for (size_t k = 0; k < buffers.size(); ++k) {
    ParamAndGradBuffer& buf = *buffers[k];
    if (buf.group_size() == 1) continue;
    for (size_t b = 0; b < buf.buckets().size(); ++b) {
      const auto [lo, hi] = buf.owned_range(static_cast<int>(b));
      Gather g;
      g.sent = buf.param_data().rows(lo, hi - lo).clone();
      Tensor out = buf.bucket_params(static_cast<int>(b));
      g.work = buf.group()->all_gather_async(g.sent, out);
      in_flight[{static_cast<int>(k), static_cast<int>(b)}] = std::move(g);
    }
  }
}

void DistributedOptimizer::Impl::wait(std::pair<int, int> key) {
  const auto it = in_flight.find(key);
  if (it == in_flight.end()) return;
  it->second.work->wait();
  in_flight.erase(it);
}

DistributedOptimizer::DistributedOptimizer(std::vector<ParamAndGradBuffer*> buffers,
                                           const OptimizerConfig& config,
                                           GradNormGroups norm_groups, bool overlap_param_gather)
    : impl_(std::make_unique<Impl>()) {
  MOE_CHECK(config.clip_grad >= 0, "--clip-grad must be >= 0, got ", config.clip_grad);
  for (DType d : {config.exp_avg_dtype, config.exp_avg_sq_dtype})
    MOE_CHECK(d == DType::f32 || d == DType::bf16,
              "--exp-avg-dtype / --exp-avg-sq-dtype must be fp32 or bf16, got ", d);
  Impl& m = *impl_;
  m.buffers = std::move(buffers);
  m.config = config;
  m.norm_groups = std::move(norm_groups);
  m.overlap = overlap_param_gather;
  for (size_t k = 0; k < m.buffers.size(); ++k) {
    ParamAndGradBuffer& buf = *m.buffers[k];
    for (const BufferEntry& e : buf.entries())
      m.bucket_of[e.param] = {static_cast<int>(k), e.bucket};
    for (const ParamShard& s : buf.shards()) {
      Impl::Piece p;
      p.buffer = &buf;
      p.param = buf.entries()[static_cast<size_t>(s.entry)].param;
      p.shard = s;
      p.decay = decays(*p.param);
      p.expert = p.param->layout.grad_group == nn::GradGroup::expert;
      const DType value = p.param->value.dtype();
      const Device device = p.param->value.device();
      if (is_16_bit(value)) p.master = p.value().to(DType::f32);
      const DType master = is_16_bit(value) ? DType::f32 : value;
      const DType ma = master == DType::f64 ? DType::f64 : config.exp_avg_dtype;
      const DType va = master == DType::f64 ? DType::f64 : config.exp_avg_sq_dtype;
      MOE_CHECK(ma == va,
                "the distributed optimizer: --exp-avg-dtype and --exp-avg-sq-dtype "
                "must be equal for now (got ",
                ma, " and ", va, ")");
      p.exp_avg = Tensor::zeros({s.numel()}, ma, device);
      p.exp_avg_sq = Tensor::zeros({s.numel()}, va, device);
      m.pieces.push_back(std::move(p));
    }
  }
}

DistributedOptimizer::~DistributedOptimizer() {
  try {
    finish_param_gather();
  } catch (...) {
    // A failed collective already ended the job (fatal.h); nothing to add while unwinding.
  }
}

double DistributedOptimizer::grad_norm() {
  Tensor dense, expert;
  for (const Impl::Piece& p : impl_->pieces) {
    if (!impl_->norm_groups.counts(*p.param)) continue;
    Tensor sq = ops::squared_norm(p.grad());
    if (sq.dtype() != DType::f64) sq = sq.to(DType::f32);
    Tensor& total = p.expert ? expert : dense;
    if (!total.defined())
      total = sq;
    else
      ops::add_(total, sq);
  }
  const Device device =
      impl_->buffers.empty() ? Device::cpu() : impl_->buffers[0]->grad_data().device();
  return global_grad_norm(dense, expert, impl_->norm_groups, device);
}

StepResult DistributedOptimizer::step(double lr, double weight_decay) {
  Impl& m = *impl_;
  finish_param_gather();  // the previous step's gathers (when a forward did not wait for them)
  StepResult result;
  result.grad_norm = grad_norm();
  if (!std::isfinite(result.grad_norm)) return result;
  const double coeff =
      m.config.clip_grad > 0 ? std::min(1.0, m.config.clip_grad / (result.grad_norm + 1e-6)) : 1.0;
  ++steps_;
  for (Impl::Piece& p : m.pieces) {
    ops::AdamWStep a;
    a.lr = lr;
    a.beta1 = m.config.beta1;
    a.beta2 = m.config.beta2;
    a.eps = m.config.eps;
    a.weight_decay = p.decay ? weight_decay : 0.0;
    a.step = steps_;
    a.grad_scale = coeff;
    Tensor value = p.value();
    if (p.master.defined())
      ops::adamw_step(p.master, p.grad(), p.exp_avg, p.exp_avg_sq, a, value);
    else
      ops::adamw_step(value, p.grad(), p.exp_avg, p.exp_avg_sq, a);
  }
  m.start_gathers();
  if (!m.overlap) finish_param_gather();
  result.taken = true;
  return result;
}

void DistributedOptimizer::wait_for_params(const std::vector<nn::Parameter*>& params) {
  Impl& m = *impl_;
  if (m.in_flight.empty()) return;
  for (const nn::Parameter* p : params) {
    const auto it = m.bucket_of.find(p);
    if (it != m.bucket_of.end()) m.wait(it->second);
  }
}

void DistributedOptimizer::finish_param_gather() {
  Impl& m = *impl_;
  while (!m.in_flight.empty()) m.wait(m.in_flight.begin()->first);
}

std::vector<NamedTensor> DistributedOptimizer::state() {
  std::vector<NamedTensor> named;
  for (Impl::Piece& p : impl_->pieces) {
    const int64_t b = p.shard.param_begin, e = p.shard.param_end;
    named.push_back({p.param->name + ".exp_avg", &p.exp_avg, p.param, b, e});
    named.push_back({p.param->name + ".exp_avg_sq", &p.exp_avg_sq, p.param, b, e});
    if (p.master.defined()) named.push_back({p.param->name + ".master", &p.master, p.param, b, e});
  }
  return named;
}

void DistributedOptimizer::reload_masters_from_model() {
  finish_param_gather();
  for (Impl::Piece& p : impl_->pieces)
    if (p.master.defined()) p.master = p.value().to(DType::f32);
}

int64_t DistributedOptimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const Impl::Piece& p : impl_->pieces)
    bytes += static_cast<int64_t>(p.exp_avg.nbytes() + p.exp_avg_sq.nbytes() +
                                  (p.master.defined() ? p.master.nbytes() : 0));
  return bytes;
}

}  // namespace moe::train
