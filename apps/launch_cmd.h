// `moe launch`: start this node's ranks of a multi-process job, as torchrun does, and run a
// `moe` subcommand in each:
//   moe launch --nproc-per-node 8 train --model qwen3-30b-a3b ...
//   moe launch --nproc-per-node 8 --nnodes 2 --node-rank 0 --master-addr node-a
//              --master-port 29500 bench comm
// Each rank is this executable with torchrun's variables (dist/launcher.h); the ranks read them
// back (dist/launch_env.h) and meet (dist/init.h). `torchrun --no-python ... moe ...`, `srun moe
// ...` and `mpirun moe ...` start the same ranks without it. docs/distributed.md.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "moe/dist/launcher.h"

namespace moe::app {

struct LaunchCommandOptions {
  dist::LaunchOptions launch;
  double grace_seconds = 5.0;  // SIGTERM -> SIGKILL
};

// Adds the `launch` subcommand: its flags, then the subcommand the ranks run with its arguments
// (everything after the first word that is not a flag of `launch`).
CLI::App* add_launch_command(CLI::App& app, LaunchCommandOptions& options);
// `argv0`: how this program was called (the ranks' argv[0]); `force_cpu`: `moe --cpu launch`
// passes --cpu on to the ranks.
int run_launch(CLI::App& cmd, LaunchCommandOptions& options, const char* argv0, bool force_cpu);

}  // namespace moe::app
