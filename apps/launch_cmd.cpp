#include "launch_cmd.h"

#include <chrono>
#include <vector>

#include "moe/core/error.h"

namespace moe::app {

CLI::App* add_launch_command(CLI::App& app, LaunchCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "launch",
      "start this node's ranks of a multi-process job (torchrun's variables) and run a moe "
      "subcommand in each: moe launch --nproc-per-node 8 train ...");
  cmd->add_option("--nproc-per-node", o.launch.nproc_per_node, "ranks on this node (one per GPU)")
      ->required()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--nnodes", o.launch.nnodes, "nodes of the job (default 1)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--node-rank", o.launch.node_rank, "this node's index, 0 .. nnodes - 1")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--master-addr", o.launch.master_addr,
                  "node 0's address, where rank 0 serves the rendezvous (default 127.0.0.1)");
  cmd->add_option("--master-port", o.launch.master_port,
                  "the rendezvous port (default: a free one; required with --nnodes > 1)")
      ->check(CLI::Range(1, 65535));
  cmd->add_option("--grace-seconds", o.grace_seconds,
                  "after a rank fails: seconds between SIGTERM and SIGKILL to the others (5)")
      ->check(CLI::NonNegativeNumber);
  // Everything from the subcommand on belongs to the ranks.
  cmd->prefix_command();
  cmd->footer(
      "After the flags: the subcommand each rank runs and its arguments (moe launch "
      "--nproc-per-node 8 bench comm --max-size 64M). Each rank gets RANK, WORLD_SIZE, "
      "LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; docs/distributed.md.");
  return cmd;
}

int run_launch(CLI::App& cmd, LaunchCommandOptions& o, const char* argv0, bool force_cpu) {
  std::vector<std::string> args = cmd.remaining();
  MOE_CHECK(!args.empty(),
            "moe launch: give the subcommand the ranks run, e.g. moe launch "
            "--nproc-per-node 8 train ...");
  MOE_CHECK(args.front() != "launch", "moe launch: the ranks cannot run `launch` themselves");
  MOE_CHECK(args.front().rfind("-", 0) != 0, "moe launch: unknown flag '", args.front(),
            "' (moe launch --help lists its flags; the subcommand comes after them)");
  if (force_cpu) args.insert(args.begin(), "--cpu");
  o.launch.args = args;
  o.launch.argv0 = argv0;
  o.launch.grace = std::chrono::milliseconds(static_cast<int64_t>(o.grace_seconds * 1000.0 + 0.5));
  return dist::launch_ranks(o.launch).exit_code;
}

}  // namespace moe::app
