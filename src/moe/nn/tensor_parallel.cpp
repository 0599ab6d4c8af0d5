#include "moe/nn/tensor_parallel.h"

#include "moe/core/error.h"
#include "moe/core/rng.h"

namespace moe::nn {
namespace {

constexpr const char* kOp = "tensor parallelism";

void check_rows(const Tensor& x, const char* what) {
  MOE_CHECK(x.dim() >= 1, kOp, ": ", what, " of a 0-d tensor");
}

}  // namespace

int64_t TensorParallel::local(int64_t n, const char* what) const {
  const int p = size();
  MOE_CHECK(n % p == 0, what, " (", n, ") is not divisible by --tensor-model-parallel-size ", p);
  return n / p;
}

Tensor sequence_shard(const Tensor& x, const TensorParallel& tp) {
  if (!tp.active()) return x;
  check_rows(x, "a sequence shard");
  const int64_t n = tp.local(x.size(0), "the sequence length");
  return x.rows(tp.rank() * n, n);
}

Tensor PendingTensor::get() {
  if (work_) {
    work_->wait();
    work_.reset();
  }
  return value_;
}

namespace {

// Every rank's rows concatenated (all-gather), started.
PendingTensor gather_start(const Tensor& x, const TensorParallel& tp) {
  if (!tp.active()) return {x, nullptr};
  check_rows(x, "a sequence gather");
  Tensor out = Tensor::empty(with_dim0(x.shape(), x.size(0) * tp.size()), x.dtype(), x.device());
  std::unique_ptr<dist::Work> work = tp.group->all_gather_async(x, out);
  return {std::move(out), std::move(work)};
}

// The sum over TP of partial results, started: this rank's rows of it under sequence
// parallelism (reduce-scatter), else all of it (all-reduce of a copy).
PendingTensor sum_start(const Tensor& x, const TensorParallel& tp) {
  if (!tp.active()) return {x, nullptr};
  if (tp.sequence_parallel) {
    check_rows(x, "a sequence reduce-scatter");
    const int64_t n = tp.local(x.size(0), "the sequence length");
    Tensor out = Tensor::empty(with_dim0(x.shape(), n), x.dtype(), x.device());
    std::unique_ptr<dist::Work> work = tp.group->reduce_scatter_async(x, out, dist::ReduceOp::sum);
    return {std::move(out), std::move(work)};
  }
  Tensor sum = x.clone();
  std::unique_ptr<dist::Work> work = tp.group->all_reduce_async(sum, dist::ReduceOp::sum);
  return {std::move(sum), std::move(work)};
}

}  // namespace

Tensor sequence_gather(const Tensor& x, const TensorParallel& tp) {
  return gather_start(x, tp).get();
}

Tensor tp_enter_forward(const Tensor& x, const TensorParallel& tp) {
  return tp.sequence_parallel ? sequence_gather(x, tp) : x;
}

Tensor tp_enter_backward(const Tensor& dx, const TensorParallel& tp) {
  return sum_start(dx, tp).get();
}

Tensor tp_exit_forward(const Tensor& y, const TensorParallel& tp) {
  return sum_start(y, tp).get();
}

Tensor tp_exit_backward(const Tensor& dy, const TensorParallel& tp) {
  return tp.sequence_parallel ? sequence_gather(dy, tp) : dy;
}

Tensor tp_saved_input(const Tensor& saved, const TensorParallel& tp) {
  return tp_saved_input_start(saved, tp).get();
}

PendingTensor tp_saved_input_start(const Tensor& saved, const TensorParallel& tp) {
  return tp.sequence_parallel ? gather_start(saved, tp) : PendingTensor{saved, nullptr};
}

PendingTensor tp_enter_backward_start(const Tensor& dx, const TensorParallel& tp) {
  return sum_start(dx, tp);
}

void set_tp_split(Parameter& p, const Shape& global, const Shape& view, int split_dim,
                  const TensorParallel& tp) {
  if (!tp.active()) return;
  MOE_CHECK(split_dim >= 0 && split_dim < static_cast<int>(view.size()), kOp, ": ", p.name,
            " split along dim ", split_dim, " of the view ", shape_str(view));
  Shape box = view;
  box[static_cast<size_t>(split_dim)] =
      tp.local(view[static_cast<size_t>(split_dim)], p.name.c_str());
  std::vector<int64_t> offset(view.size(), 0);
  offset[static_cast<size_t>(split_dim)] = tp.rank() * box[static_cast<size_t>(split_dim)];
  int64_t box_numel = 1;
  for (int64_t d : box) box_numel *= d;
  MOE_CHECK(box_numel == p.value.numel(), kOp, ": ", p.name, " holds ", p.value.numel(),
            " elements, its block of ", shape_str(view), " along dim ", split_dim, " has ",
            box_numel);
  p.layout.global_shape = global;
  p.layout.view_shape = view;
  p.layout.box_offset = std::move(offset);
  p.layout.box_shape = std::move(box);
}

void set_tp_replicated(Parameter& p, const TensorParallel& tp, bool partial_grad) {
  if (!tp.active()) return;
  p.layout.tp_replicated = true;
  p.layout.tp_partial_grad = partial_grad;
}

void fill_normal_box(Parameter& p, uint64_t seed, double mean, double stddev) {
  const Shape view = view_shape_of(p), box = box_shape_of(p);
  const std::vector<int64_t> offset = box_offset_of(p);
  const int64_t n = static_cast<int64_t>(view.size());
  // The box is read as runs: dims after `k` are whole in the box, so one run spans them and
  // box[k] elements of dim k, contiguous both in the global tensor and in the value.
  int64_t k = n - 1;
  while (k > 0 && box[static_cast<size_t>(k)] == view[static_cast<size_t>(k)]) --k;
  std::vector<int64_t> stride(static_cast<size_t>(n), 1);
  for (int64_t d = n - 1; d > 0; --d)
    stride[static_cast<size_t>(d - 1)] =
        stride[static_cast<size_t>(d)] * view[static_cast<size_t>(d)];
  const int64_t run = n == 0 ? 1 : box[static_cast<size_t>(k)] * stride[static_cast<size_t>(k)];
  if (p.value.numel() == 0) return;
  Tensor flat = p.value.reshape({p.value.numel()});
  std::vector<int64_t> index(static_cast<size_t>(k), 0);  // position within the box, dims < k
  for (int64_t local = 0; local < flat.numel(); local += run) {
    int64_t global = n == 0 ? 0 : offset[static_cast<size_t>(k)] * stride[static_cast<size_t>(k)];
    for (int64_t d = 0; d < k; ++d)
      global += (offset[static_cast<size_t>(d)] + index[static_cast<size_t>(d)]) *
                stride[static_cast<size_t>(d)];
    Tensor part = flat.rows(local, run);
    fill_normal(part, seed, mean, stddev, static_cast<uint64_t>(global));
    for (int64_t d = k - 1; d >= 0; --d) {  // next outer index, last dim fastest
      if (++index[static_cast<size_t>(d)] < box[static_cast<size_t>(d)]) break;
      index[static_cast<size_t>(d)] = 0;
    }
  }
}

}  // namespace moe::nn
