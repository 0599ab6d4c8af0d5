// Optimizer math: public entry points (checks, device dispatch) and the CPU reference.
#include <cmath>
#include <type_traits>

#include "moe/ops/adamw.h"
#include "moe/ops/adamw_cuda.h"

namespace moe::ops {
namespace {

bool is_float(DType d) {
  return d == DType::f64 || d == DType::f32 || d == DType::bf16 || d == DType::f16;
}

void check_adamw(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                 const Tensor& exp_avg_sq, const AdamWStep& s, const Tensor& model_param) {
  const char* op = "adamw_step";
  check_defined(param, op, "param");
  MOE_CHECK(param.dtype() == DType::f32 || (param.dtype() == DType::f64 && !param.is_cuda()), op,
            ": the master param must be f32 (or f64 on the CPU), got ", param.dtype());
  check_defined(grad, op, "grad");
  check_dtype(grad, param.dtype(), op, "grad");
  check_shape(grad, param.shape(), op, "grad");
  check_same_device(param, grad, op);
  for (const Tensor* state : {&exp_avg, &exp_avg_sq}) {
    const char* name = state == &exp_avg ? "exp_avg" : "exp_avg_sq";
    check_defined(*state, op, name);
    MOE_CHECK(state->dtype() == param.dtype() || state->dtype() == DType::bf16, op, ": ", name,
              " must be ", param.dtype(), " or bf16, got ", state->dtype());
    check_shape(*state, param.shape(), op, name);
    check_same_device(param, *state, op);
  }
  if (model_param.defined()) {
    MOE_CHECK(is_float(model_param.dtype()), op, ": model_param must be a float tensor, got ",
              model_param.dtype());
    check_shape(model_param, param.shape(), op, "model_param");
    check_same_device(param, model_param, op);
  }
  MOE_CHECK(s.step >= 1, op, ": step counts from 1, got ", s.step);
  MOE_CHECK(s.beta1 >= 0 && s.beta1 < 1 && s.beta2 >= 0 && s.beta2 < 1, op,
            ": betas must be in [0, 1), got ", s.beta1, ", ", s.beta2);
  MOE_CHECK(s.eps > 0 && s.lr >= 0 && s.weight_decay >= 0, op,
            ": needs eps > 0, lr >= 0, weight_decay >= 0 (got ", s.eps, ", ", s.lr, ", ",
            s.weight_decay, ")");
}

// The CPU reference: the formulas of adamw.h, in A (f64 for f64 masters, else f32).
template <class P, class S, class M>
void adamw_cpu(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
               const AdamWStep& s, Tensor& model_param) {
  using A = std::conditional_t<std::is_same_v<P, double>, double, float>;
  P* p = param.data<P>();
  const P* g = grad.data<P>();
  S* m = exp_avg.data<S>();
  S* v = exp_avg_sq.data<S>();
  M* out = model_param.defined() ? model_param.data<M>() : nullptr;
  const A lr = A(s.lr), b1 = A(s.beta1), b2 = A(s.beta2), eps = A(s.eps), wd = A(s.weight_decay);
  const A scale = A(s.grad_scale);
  const A c1 = A(1) - A(std::pow(s.beta1, double(s.step)));
  const A c2 = A(1) - A(std::pow(s.beta2, double(s.step)));
  for (int64_t i = 0, n = param.numel(); i < n; ++i) {
    const A gi = scale * A(g[i]);
    const A mi = b1 * A(m[i]) + (A(1) - b1) * gi;
    const A vi = b2 * A(v[i]) + (A(1) - b2) * gi * gi;
    m[i] = S(mi);
    v[i] = S(vi);
    const A update = (mi / c1) / (std::sqrt(vi / c2) + eps) + wd * A(p[i]);
    const A pi = A(p[i]) - lr * update;
    p[i] = P(pi);
    if (out) out[i] = M(pi);
  }
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWStep& step, Tensor model_param) {
  check_adamw(param, grad, exp_avg, exp_avg_sq, step, model_param);
  if (param.is_cuda()) {
    MOE_CUDA_ONLY({
      detail::AdamWCoefficients c{};
      c.lr = float(step.lr);
      c.beta1 = float(step.beta1);
      c.beta2 = float(step.beta2);
      c.eps = float(step.eps);
      c.weight_decay = float(step.weight_decay);
      c.grad_scale = float(step.grad_scale);
      c.bias_correction1 = float(1.0 - std::pow(step.beta1, double(step.step)));
      c.bias_correction2 = float(1.0 - std::pow(step.beta2, double(step.step)));
      detail::adamw_step_cuda(param, grad, exp_avg, exp_avg_sq, c, model_param);
      return;
    })
  }
  // Without a model copy, M is irrelevant: use the master's type.
  const DType out_dtype = model_param.defined() ? model_param.dtype() : param.dtype();
  dispatch<DType::f64, DType::f32>(param.dtype(), "adamw_step", [&]<class P>() {
    dispatch<DType::f64, DType::f32, DType::bf16>(exp_avg.dtype(), "adamw_step", [&]<class S>() {
      MOE_CHECK(exp_avg_sq.dtype() == exp_avg.dtype(),
                "adamw_step: exp_avg and exp_avg_sq must share a dtype, got ", exp_avg.dtype(),
                " and ", exp_avg_sq.dtype());
      dispatch_float(out_dtype, "adamw_step", [&]<class M>() {
        adamw_cpu<P, S, M>(param, grad, exp_avg, exp_avg_sq, step, model_param);
      });
    });
  });
}

Tensor squared_norm(const Tensor& x) {
  const char* op = "squared_norm";
  check_defined(x, op, "x");
  MOE_CHECK(is_float(x.dtype()), op, ": x must be a float tensor, got ", x.dtype());
  const DType out_dtype = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor out = Tensor::empty({}, out_dtype, x.device());
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::squared_norm_cuda(x, out); return out;)
  }
  dispatch_float(x.dtype(), op, [&]<class T>() {
    const T* p = x.data<T>();
    if constexpr (std::is_same_v<T, double>) {
      double sum = 0;
      for (int64_t i = 0, n = x.numel(); i < n; ++i) sum += p[i] * p[i];
      *out.data<double>() = sum;
    } else {
      // Accumulated in f64 and rounded once: the CPU is the oracle for the CUDA sum.
      double sum = 0;
      for (int64_t i = 0, n = x.numel(); i < n; ++i) {
        const double v = static_cast<float>(p[i]);
        sum += v * v;
      }
      *out.data<float>() = static_cast<float>(sum);
    }
  });
  return out;
}

}  // namespace moe::ops
