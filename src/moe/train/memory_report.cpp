// The per-rank memory report (memory_report.h).
#include "moe/train/memory_report.h"

#include <sys/resource.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "moe/core/allocator.h"
#include "moe/core/error.h"
#include "moe/train/data_parallel.h"
#include "moe/train/distributed_optimizer.h"

namespace moe::train {
namespace {

constexpr int kFields = 4;  // parameters, gradients, optimizer, peak

double mib(int64_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

// VmHWM of /proc/self/status in bytes; 0 when the file or the line is missing.
int64_t proc_peak_rss() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) != 0) continue;
    std::istringstream fields(line.substr(6));
    int64_t kib = 0;
    if (fields >> kib) return kib * 1024;
  }
  return 0;
}

}  // namespace

RankMemory rank_memory(nn::GPTModel& model, Trainer& trainer) {
  RankMemory m;
  if (DataParallel* ddp = trainer.data_parallel()) {
    for (ParamAndGradBuffer* b : ddp->buffers()) {
      m.parameter_bytes += static_cast<int64_t>(b->param_data().nbytes());
      m.gradient_bytes += static_cast<int64_t>(b->grad_data().nbytes());
    }
  } else {
    for (nn::Parameter* p : model.parameters()) {
      m.parameter_bytes += static_cast<int64_t>(p->value.nbytes());
      if (p->grad.defined()) m.gradient_bytes += static_cast<int64_t>(p->grad.nbytes());
    }
  }
  Optimizer& optimizer = trainer.optimizer();
  if (const auto* distributed = dynamic_cast<const DistributedOptimizer*>(&optimizer)) {
    m.optimizer_bytes = distributed->state_bytes();
  } else {
    for (const NamedTensor& t : optimizer.state())
      if (t.value && t.value->defined())
        m.optimizer_bytes += static_cast<int64_t>(t.value->nbytes());
  }
  return m;
}

int64_t measure_peak_memory(Device device) {
  if (device.is_cuda()) return memory_stats(device).peak_allocated_bytes;
  if (const int64_t rss = proc_peak_rss()) return rss;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux: KiB
}

std::vector<RankMemory> gather_rank_memory(const RankMemory& mine,
                                           const std::shared_ptr<dist::ProcessGroup>& world,
                                           Device device) {
  if (!world || world->size() == 1) return {mine};
  const std::vector<int64_t> local = {mine.parameter_bytes, mine.gradient_bytes,
                                      mine.optimizer_bytes, mine.peak_bytes};
  const Tensor in = Tensor::from_vector(local, {kFields}, device);
  Tensor out = Tensor::zeros({static_cast<int64_t>(world->size()) * kFields}, DType::i64, device);
  world->all_gather(in, out);
  const std::vector<int64_t> all = out.to(Device::cpu()).to_vector<int64_t>();
  std::vector<RankMemory> ranks(static_cast<size_t>(world->size()));
  for (size_t r = 0; r < ranks.size(); ++r) {
    const int64_t* f = all.data() + r * kFields;
    ranks[r] = RankMemory{f[0], f[1], f[2], f[3]};
  }
  return ranks;
}

std::string format_memory_report(const std::vector<RankMemory>& ranks) {
  std::string text =
      "memory per rank (MiB): parameters | gradients (fp32 main) | optimizer state (masters + "
      "moments)\n";
  char line[160];
  for (size_t r = 0; r < ranks.size(); ++r) {
    std::snprintf(line, sizeof line, "  rank %zu: %10.2f | %10.2f | %10.2f\n", r,
                  mib(ranks[r].parameter_bytes), mib(ranks[r].gradient_bytes),
                  mib(ranks[r].optimizer_bytes));
    text += line;
  }
  return text;
}

std::string format_peak_memory(const std::vector<RankMemory>& ranks, int64_t iteration,
                               Device device) {
  std::string text = detail::concat(
      "peak memory after iteration ", iteration,
      device.is_cuda() ? " (MiB, tensors on the GPU):" : " (MiB, process peak RSS):");
  char item[64];
  for (size_t r = 0; r < ranks.size(); ++r) {
    std::snprintf(item, sizeof item, "%s rank %zu %.1f", r ? "," : "", r, mib(ranks[r].peak_bytes));
    text += item;
  }
  return text + "\n";
}

}  // namespace moe::train
