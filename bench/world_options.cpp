#include "world_options.h"

#include <CLI/CLI.hpp>
#include <iterator>
#include <vector>

namespace moe::bench {

void add_world_options(CLI::App& cmd, std::string& device, dist::DistributedOptions& distributed) {
  cmd.add_option("--device", device, "cpu or cuda (default: cuda when the rank has a GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd.add_option("--distributed-backend", distributed.backend,
                 "nccl | mpi | local (default: local for one process, nccl with GPUs, else mpi)")
      ->check(CLI::IsMember(std::vector<std::string>(std::begin(dist::kDistributedBackends),
                                                     std::end(dist::kDistributedBackends))));
  cmd.add_option("--distributed-timeout-minutes", distributed.timeout_minutes,
                 "rendezvous and collective timeout (default 10)")
      ->check(CLI::PositiveNumber);
}

}  // namespace moe::bench
