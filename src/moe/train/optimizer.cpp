#include "moe/train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "moe/core/error.h"
#include "moe/ops/adamw.h"
#include "moe/ops/elementwise.h"

namespace moe::train {
namespace {

bool is_16_bit(DType d) {
  return d == DType::bf16 || d == DType::f16;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool Optimizer::decays(const nn::Parameter& p) {
  return p.value.dim() > 1 && !ends_with(p.name, ".bias");
}

AdamW::AdamW(std::vector<nn::Parameter*> params, const OptimizerConfig& config,
             GradNormGroups norm_groups)
    : config_(config), norm_groups_(std::move(norm_groups)) {
  MOE_CHECK(config.clip_grad >= 0, "--clip-grad must be >= 0, got ", config.clip_grad);
  for (DType d : {config.exp_avg_dtype, config.exp_avg_sq_dtype})
    MOE_CHECK(d == DType::f32 || d == DType::bf16,
              "--exp-avg-dtype / --exp-avg-sq-dtype must be fp32 or bf16, got ", d);
  slots_.reserve(params.size());
  for (nn::Parameter* p : params) {
    MOE_CHECK(p != nullptr && p->value.defined(), "AdamW: an undefined parameter");
    Slot s{p, Tensor(), Tensor(), Tensor(), decays(*p)};
    const DType value = p->value.dtype();
    const DType master = is_16_bit(value) ? DType::f32 : value;
    if (is_16_bit(value)) s.master = p->value.to(DType::f32);
    // f64 models (CPU checks) keep f64 states; otherwise the configured state dtypes.
    const DType m = master == DType::f64 ? DType::f64 : config.exp_avg_dtype;
    const DType v = master == DType::f64 ? DType::f64 : config.exp_avg_sq_dtype;
    MOE_CHECK(m == v, "AdamW: --exp-avg-dtype and --exp-avg-sq-dtype must be equal for now (got ",
              m, " and ", v, ")");
    s.exp_avg = Tensor::zeros(p->value.shape(), m, p->value.device());
    s.exp_avg_sq = Tensor::zeros(p->value.shape(), v, p->value.device());
    slots_.push_back(std::move(s));
  }
}

double global_grad_norm(const Tensor& dense_sq, const Tensor& expert_sq,
                        const GradNormGroups& groups, Device device) {
  // Each part in f64 (many ranks' parts add without rounding differently with the rank count),
  // reduced as a tensor on the ranks' device: NCCL takes GPU memory only, and every rank must
  // pass the same kind of tensor even when it holds no piece of one part.
  auto part = [&](const Tensor& sq, const std::vector<std::shared_ptr<dist::ProcessGroup>>& gs) {
    const double local = sq.defined() ? sq.to(Device::cpu()).to_double_vector()[0] : 0.0;
    Tensor t = Tensor::full({1}, local, DType::f64, device);
    for (const auto& g : gs)
      if (g && g->size() > 1) g->all_reduce(t, dist::ReduceOp::sum);
    return t.to(Device::cpu()).to_double_vector()[0];
  };
  return std::sqrt(part(dense_sq, groups.dense) + part(expert_sq, groups.expert));
}

double AdamW::grad_norm() {
  if (slots_.empty() && norm_groups_.empty()) return 0.0;
  if (!norm_groups_.empty()) {
    // Dense and expert parts separately, each reduced over its groups (GradNormGroups).
    Tensor dense, expert;
    for (Slot& s : slots_) {
      if (s.param->grad_is_zero || !norm_groups_.counts(*s.param)) continue;
      Tensor sq = ops::squared_norm(s.param->grad);
      if (sq.dtype() != DType::f64) sq = sq.to(DType::f32);
      Tensor& total = s.param->layout.grad_group == nn::GradGroup::expert ? expert : dense;
      if (!total.defined())
        total = sq;
      else
        ops::add_(total, sq);
    }
    return global_grad_norm(dense, expert, norm_groups_,
                            slots_.empty() ? Device::cpu() : slots_[0].param->value.device());
  }
  // Per-tensor squared norms, added on the device in parameter order (reproducible).
  Tensor total;
  for (Slot& s : slots_) {
    if (s.param->grad_is_zero) continue;
    Tensor sq = ops::squared_norm(s.param->grad);
    if (sq.dtype() != DType::f64) sq = sq.to(DType::f32);
    if (!total.defined())
      total = sq;
    else
      ops::add_(total, sq);
  }
  if (!total.defined()) return 0.0;
  return std::sqrt(total.to(Device::cpu()).to_double_vector()[0]);
}

StepResult AdamW::step(double lr, double weight_decay) {
  StepResult result;
  result.grad_norm = grad_norm();
  if (!std::isfinite(result.grad_norm)) return result;
  const double coeff =
      config_.clip_grad > 0 ? std::min(1.0, config_.clip_grad / (result.grad_norm + 1e-6)) : 1.0;
  ++steps_;
  for (Slot& s : slots_) {
    ops::AdamWStep a;
    a.lr = lr;
    a.beta1 = config_.beta1;
    a.beta2 = config_.beta2;
    a.eps = config_.eps;
    a.weight_decay = s.decay ? weight_decay : 0.0;
    a.step = steps_;
    a.grad_scale = coeff;
    ops::adamw_step(master_of(s), s.param->grad_value(), s.exp_avg, s.exp_avg_sq, a,
                    s.master.defined() ? s.param->value : Tensor());
  }
  result.taken = true;
  return result;
}

std::vector<NamedTensor> AdamW::state() {
  std::vector<NamedTensor> named;
  for (Slot& s : slots_) {
    const int64_t n = s.param->value.numel();
    named.push_back({s.param->name + ".exp_avg", &s.exp_avg, s.param, 0, n});
    named.push_back({s.param->name + ".exp_avg_sq", &s.exp_avg_sq, s.param, 0, n});
    if (s.master.defined()) named.push_back({s.param->name + ".master", &s.master, s.param, 0, n});
  }
  return named;
}

void AdamW::reload_masters_from_model() {
  for (Slot& s : slots_)
    if (s.master.defined()) s.master = s.param->value.to(DType::f32);
}

}  // namespace moe::train
