// The options of a benchmark that runs on the ranks of a launch (`moe bench comm`, `moe bench
// moe-ep`): the rank's device and how it joins the world (dist/init.h), under one spelling.
#pragma once

#include <string>

#include "moe/dist/init.h"

namespace CLI {
class App;
}

namespace moe::bench {

// Adds --device (cpu | cuda; "" leaves the choice to init_distributed: cuda when the rank has a
// GPU), --distributed-backend and --distributed-timeout-minutes to `cmd`.
void add_world_options(CLI::App& cmd, std::string& device, dist::DistributedOptions& distributed);

}  // namespace moe::bench
