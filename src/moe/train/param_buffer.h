// ParamAndGradBuffer: the parameters of one gradient group (dense, or expert) in two contiguous
// buffers, values and fp32 main gradients, split into buckets (Megatron-Core's
// _ParamAndGradBuffer; docs/distributed-training.md).
//
// Layout. Parameters are placed in the order given, which the data-parallel wrapper makes the
// reverse of the forward order: the backward finishes them in roughly that order, so the first
// bucket is complete first and its reduction starts while the backward goes on. Each
// parameter's first element is aligned to kParamAlignment elements (GEMM outputs stay 256-byte
// aligned). A bucket closes after the parameter that brings it to bucket_size elements or
// more; a bucket's length is padded to a multiple of pad_multiple (the reducing group's size
// with the distributed optimizer, so a reduce-scatter gives every rank an equal chunk; 1
// otherwise). Padding elements hold zeros and are never read as parameters.
//
// After construction every Parameter::value and ::grad of the buffer is a view into
// param_data() / grad_data() (the values are copied in, so the model is unchanged); gradients
// keep the lazy-zero rule of parameter.h, and materialise_grads() writes the zeros of
// parameters the backward did not touch before a bucket is reduced.
//
// The distributed optimizer (ZeRO-1) gives rank r of the group the r-th of the group-size equal
// chunks of each bucket: owned_range(b). shards() lists, per owned range, the pieces of the
// parameters it covers.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "moe/dist/process_group.h"
#include "moe/nn/parameter.h"

namespace moe::train {

inline constexpr int64_t kParamAlignment = 64;

struct BufferEntry {
  nn::Parameter* param = nullptr;
  int64_t offset = 0;  // first element in the buffers
  int64_t numel = 0;
  int bucket = 0;
};

struct BufferBucket {
  int64_t begin = 0, end = 0;  // element range in the buffers (end - begin: padded length)
  std::vector<int> entries;    // indices into entries(), in buffer order
};

// A piece of one parameter inside this rank's owned range of a bucket.
struct ParamShard {
  int entry = 0;            // index into entries()
  int64_t param_begin = 0;  // element range within the parameter's value (flattened)
  int64_t param_end = 0;
  int64_t buffer_begin = 0;  // the same elements' offset in the buffers
  int64_t numel() const { return param_end - param_begin; }
};

class ParamAndGradBuffer {
 public:
  // `group` reduces the gradients (DP x CP for dense, EDP for expert; null: this rank alone).
  // Every parameter must have the same value dtype and device and an fp32 (f64 for f64
  // values) gradient. bucket_size <= 0: one bucket.
  ParamAndGradBuffer(std::vector<nn::Parameter*> params, std::shared_ptr<dist::ProcessGroup> group,
                     int64_t bucket_size, int64_t pad_multiple);
  ParamAndGradBuffer(const ParamAndGradBuffer&) = delete;
  ParamAndGradBuffer& operator=(const ParamAndGradBuffer&) = delete;

  const std::shared_ptr<dist::ProcessGroup>& group() const { return group_; }
  int group_size() const { return group_ ? group_->size() : 1; }
  int group_rank() const { return group_ ? group_->rank() : 0; }

  Tensor& param_data() { return param_data_; }  // [numel] in the parameters' dtype
  Tensor& grad_data() { return grad_data_; }    // [numel] fp32 (f64 for f64 parameters)
  Tensor bucket_params(int b) const;            // views of one bucket
  Tensor bucket_grads(int b) const;

  const std::vector<BufferEntry>& entries() const { return entries_; }
  const std::vector<BufferBucket>& buckets() const { return buckets_; }
  int64_t numel() const { return numel_; }

  // The element range of bucket b this rank owns under the distributed optimizer.
  std::pair<int64_t, int64_t> owned_range(int b) const;
  // The parameter pieces in every owned range, bucket by bucket, in buffer order.
  std::vector<ParamShard> shards() const;

  // Writes the zeros of a lazy zero_grad() for the parameters of bucket b (parameter.h).
  void materialise_grads(int b);

 private:
  std::shared_ptr<dist::ProcessGroup> group_;
  std::vector<BufferEntry> entries_;
  std::vector<BufferBucket> buckets_;
  int64_t numel_ = 0;
  Tensor param_data_, grad_data_;
};

}  // namespace moe::train
