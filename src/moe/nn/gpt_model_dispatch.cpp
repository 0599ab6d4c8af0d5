// GPTModel's view of its MoE layers' sync-free exchange (gpt_model.h: take_slot_overflow,
// set_synchronising_dispatch), which the trainer checks at the end of each step.
#include <algorithm>
#include <limits>

#include "moe/nn/gpt_model.h"

namespace moe::nn {

std::vector<MoELayer*> GPTModel::moe_layers() {
  std::vector<MoELayer*> out;
  for (TransformerLayer& layer : layers)
    if (layer.moe) out.push_back(layer.moe.get());
  for (MtpLayer& mtp : mtp_layers)
    if (mtp.layer.moe) out.push_back(mtp.layer.moe.get());
  return out;
}

std::optional<GPTModel::SlotOverflow> GPTModel::take_slot_overflow() {
  const std::vector<MoELayer*> layers = moe_layers();
  std::vector<TokenDispatcher::SlotUsage> used;
  for (MoELayer* moe : layers) {
    TokenDispatcher::SlotUsage u = moe->slot_usage();
    if (u.peak_rows.defined()) used.push_back(std::move(u));
  }
  if (used.empty()) return std::nullopt;
  // The layers' peaks side by side on the device, then one read.
  Tensor peaks = Tensor::empty({static_cast<int64_t>(used.size())}, DType::i64,
                               used.front().peak_rows.device());
  for (size_t i = 0; i < used.size(); ++i) {
    Tensor slot = peaks.rows(static_cast<int64_t>(i), 1);
    slot.copy_(used[i].peak_rows);
  }
  const std::vector<int64_t> host = peaks.to_vector<int64_t>();
  for (MoELayer* moe : layers) moe->reset_slot_usage();
  SlotOverflow out{std::numeric_limits<int64_t>::min(), 0.0};
  for (size_t i = 0; i < used.size(); ++i) {
    out.over_rows = std::max(out.over_rows, host[i] - used[i].slot_rows);
    if (used[i].even_rows > 0)
      out.needed_factor =
          std::max(out.needed_factor, static_cast<double>(host[i]) / used[i].even_rows);
  }
  return out;
}

void GPTModel::set_synchronising_dispatch(bool on) {
  for (MoELayer* moe : moe_layers()) moe->set_synchronising_dispatch(on);
}

}  // namespace moe::nn
