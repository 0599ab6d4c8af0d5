#include "moe/train/checkpoint_slices.h"

#include <filesystem>
#include <map>
#include <optional>

#include "moe/checkpoint/box_copy.h"
#include "moe/core/error.h"
#include "moe/io/safetensors.h"

namespace moe::train {

namespace fs = std::filesystem;

checkpoint::TensorSlice slice_of(const nn::Parameter& p, int64_t begin, int64_t end) {
  checkpoint::TensorSlice s;
  s.global_shape = nn::global_shape_of(p);
  s.view_shape = nn::view_shape_of(p);
  s.box_offset = nn::box_offset_of(p);
  s.box_shape = nn::box_shape_of(p);
  s.begin = begin;
  s.end = end;
  return s;
}

std::vector<checkpoint::ShardPiece> owned_checkpoint_pieces(nn::GPTModel& model,
                                                            Optimizer& optimizer,
                                                            const dist::ParallelState& state) {
  // One replica of each replicated tensor writes it; of a tensor replicated over TP, TP rank 0.
  // Of the embedding both the first and the last pipeline stage hold, the first's.
  const auto tp_writes = [&](const nn::Parameter& p) {
    return (!p.layout.tp_replicated || state.tp_rank() == 0) && !p.layout.pp_copy;
  };
  const auto writes = [&](const nn::Parameter& p) {
    return p.layout.grad_group == nn::GradGroup::expert ? state.edp_rank() == 0
                                                        : state.dp_cp_rank() == 0 && tp_writes(p);
  };
  std::vector<checkpoint::ShardPiece> pieces;
  for (nn::Parameter* p : model.parameters())
    if (writes(*p)) pieces.push_back({p->name, slice_of(*p), p->value});
  // Buffers (the expert bias) are the same on every rank of a stage: one rank of each writes.
  if (state.tp_rank() == 0 && state.dp_cp_rank() == 0)
    for (const nn::NamedBuffer& b : model.buffers())
      pieces.push_back({b.name, checkpoint::TensorSlice{b.value->shape()}, *b.value});
  for (const NamedTensor& s : optimizer.state()) {
    if (optimizer.shards_state() ? !tp_writes(*s.param) : !writes(*s.param)) continue;
    pieces.push_back({s.name, slice_of(*s.param, s.begin, s.end), *s.value});
  }
  return pieces;
}

bool is_sharded_checkpoint(const std::string& folder) {
  return fs::exists(fs::path(folder) / checkpoint::kShardedIndexFile);
}

struct CheckpointSliceReader::Impl {
  std::unique_ptr<checkpoint::ShardedCheckpointReader> sharded;
  // One-rank checkpoints: the model's files and the optimizer's.
  std::optional<io::SafetensorsCollection> weights;
  std::optional<io::SafetensorsFile> optimizer;
};

CheckpointSliceReader::CheckpointSliceReader(const std::string& folder)
    : impl_(std::make_unique<Impl>()) {
  if (is_sharded_checkpoint(folder)) {
    impl_->sharded = std::make_unique<checkpoint::ShardedCheckpointReader>(folder);
    return;
  }
  impl_->weights = io::SafetensorsCollection::open(folder);
  const fs::path optimizer = fs::path(folder) / "optimizer.safetensors";
  if (fs::exists(optimizer)) impl_->optimizer = io::SafetensorsFile::open(optimizer.string());
}

CheckpointSliceReader::~CheckpointSliceReader() = default;

bool CheckpointSliceReader::sharded() const {
  return impl_->sharded != nullptr;
}

bool CheckpointSliceReader::has(const std::string& name) const {
  if (impl_->sharded) return impl_->sharded->has(name);
  return impl_->weights->contains(name) || (impl_->optimizer && impl_->optimizer->contains(name));
}

void CheckpointSliceReader::read(const std::string& name, const checkpoint::TensorSlice& slice,
                                 Tensor& out) const {
  if (impl_->sharded) {
    impl_->sharded->read(name, slice, out);
    return;
  }
  // A whole tensor of a one-rank checkpoint: load it on the host in the target dtype, cut the
  // box out of it (the view is a reshape of the global tensor), then the flat range.
  const Tensor full = impl_->weights->contains(name)
                          ? impl_->weights->load(name, Device::cpu(), out.dtype())
                          : impl_->optimizer->load(name, Device::cpu(), out.dtype());
  const checkpoint::TensorSlice s = slice.resolved();
  MOE_CHECK(full.shape() == s.global_shape, "checkpoint tensor ", name, " has shape ",
            shape_str(full.shape()), ", this run's is ", shape_str(s.global_shape));
  const checkpoint::Box whole{std::vector<int64_t>(s.view_shape.size(), 0), s.view_shape};
  const checkpoint::Box box{s.box_offset, s.box_shape};
  Tensor cut = Tensor::empty({box.numel()}, out.dtype(), Device::cpu());
  checkpoint::copy_box(full.raw(), whole, cut.raw(), box, dtype_size(out.dtype()));
  out.copy_(cut.rows(s.begin, s.end - s.begin).reshape(out.shape()));
}

std::string broadcast_string(dist::ProcessGroup& group, const std::string& text, int root,
                             Device device) {
  Tensor length = Tensor::full({1}, static_cast<double>(text.size()), DType::i64, device);
  group.broadcast(length, root);
  const int64_t n = length.to(Device::cpu()).to_vector<int64_t>()[0];
  std::vector<int64_t> codes(text.begin(), text.end());
  codes.resize(static_cast<size_t>(n));
  Tensor bytes = Tensor::from_vector(codes, {n}, device);
  if (n > 0) group.broadcast(bytes, root);
  const std::vector<int64_t> got = bytes.to(Device::cpu()).to_vector<int64_t>();
  return std::string(got.begin(), got.end());
}

}  // namespace moe::train
