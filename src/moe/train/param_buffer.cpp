#include "moe/train/param_buffer.h"

#include <algorithm>

#include "moe/core/error.h"

namespace moe::train {
namespace {

int64_t round_up(int64_t n, int64_t multiple) {
  return (n + multiple - 1) / multiple * multiple;
}

}  // namespace

ParamAndGradBuffer::ParamAndGradBuffer(std::vector<nn::Parameter*> params,
                                       std::shared_ptr<dist::ProcessGroup> group,
                                       int64_t bucket_size, int64_t pad_multiple)
    : group_(std::move(group)) {
  MOE_CHECK(!params.empty(), "ParamAndGradBuffer: no parameters");
  MOE_CHECK(pad_multiple >= 1, "ParamAndGradBuffer: pad multiple must be positive, got ",
            pad_multiple);
  const DType dtype = params[0]->value.dtype();
  const DType grad_dtype = params[0]->grad.dtype();
  const Device device = params[0]->value.device();

  // Place the parameters; close a bucket once it holds bucket_size elements.
  int64_t offset = 0, bucket_begin = 0;
  auto close_bucket = [&] {
    BufferBucket b;
    b.begin = bucket_begin;
    b.end = bucket_begin + round_up(offset - bucket_begin, pad_multiple);
    offset = b.end;
    bucket_begin = b.end;
    buckets_.push_back(std::move(b));
  };
  for (nn::Parameter* p : params) {
    MOE_CHECK(p && p->value.defined() && p->grad.defined(),
              "ParamAndGradBuffer: an undefined parameter or gradient");
    MOE_CHECK(
        p->value.dtype() == dtype && p->grad.dtype() == grad_dtype && p->value.device() == device,
        "ParamAndGradBuffer: ", p->name, " is ", p->value.str(), " with a ", p->grad.dtype(),
        " gradient; the buffer holds ", dtype, " values with ", grad_dtype, " gradients on ",
        device.str());
    offset = round_up(offset, kParamAlignment);
    BufferEntry e;
    e.param = p;
    e.offset = offset;
    e.numel = p->value.numel();
    e.bucket = static_cast<int>(buckets_.size());
    offset += e.numel;
    entries_.push_back(e);
    if (bucket_size > 0 && offset - bucket_begin >= bucket_size) close_bucket();
  }
  if (offset > bucket_begin || buckets_.empty()) close_bucket();
  numel_ = offset;
  for (size_t i = 0; i < entries_.size(); ++i)
    buckets_[static_cast<size_t>(entries_[i].bucket)].entries.push_back(static_cast<int>(i));

  // The buffers, zeroed (padding stays zero); the parameters become views into them.
  param_data_ = Tensor::zeros({numel_}, dtype, device);
  grad_data_ = Tensor::zeros({numel_}, grad_dtype, device);
  for (const BufferEntry& e : entries_) {
    nn::Parameter& p = *e.param;
    Tensor value = param_data_.rows(e.offset, e.numel).reshape(p.value.shape());
    value.copy_(p.value);
    Tensor grad = grad_data_.rows(e.offset, e.numel).reshape(p.grad.shape());
    if (!p.grad_is_zero) grad.copy_(p.grad);
    p.value = value;
    p.grad = grad;
  }
}

Tensor ParamAndGradBuffer::bucket_params(int b) const {
  const BufferBucket& k = buckets_.at(static_cast<size_t>(b));
  return param_data_.rows(k.begin, k.end - k.begin);
}

Tensor ParamAndGradBuffer::bucket_grads(int b) const {
  const BufferBucket& k = buckets_.at(static_cast<size_t>(b));
  return grad_data_.rows(k.begin, k.end - k.begin);
}

std::pair<int64_t, int64_t> ParamAndGradBuffer::owned_range(int b) const {
  const BufferBucket& k = buckets_.at(static_cast<size_t>(b));
  const int64_t n = group_size(), chunk = (k.end - k.begin) / n;
  MOE_CHECK(chunk * n == k.end - k.begin, "ParamAndGradBuffer: bucket ", b, " of ", k.end - k.begin,
            " elements does not split over ", n,
            " ranks (build the buffer with the group size as the pad multiple)");
  const int64_t begin = k.begin + chunk * group_rank();
  return {begin, begin + chunk};
}

std::vector<ParamShard> ParamAndGradBuffer::shards() const {
  std::vector<ParamShard> out;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const auto [lo, hi] = owned_range(static_cast<int>(b));
    for (int i : buckets_[b].entries) {
      const BufferEntry& e = entries_[static_cast<size_t>(i)];
      const int64_t begin = std::max(lo, e.offset), end = std::min(hi, e.offset + e.numel);
      if (begin >= end) continue;
      out.push_back({i, begin - e.offset, end - e.offset, begin});
    }
  }
  return out;
}

void ParamAndGradBuffer::materialise_grads(int b) {
  for (int i : buckets_.at(static_cast<size_t>(b)).entries)
    entries_[static_cast<size_t>(i)].param->grad_value();
}

}  // namespace moe::train
