// LaunchEnv: who this process is in a multi-process job, read from the variables its launcher
// set: the rank, the world size, the rank and count on this node, where rank 0's rendezvous
// listens, and which launcher it was. One pure function of a map of variables (tested), and a
// reader of the real environment.
//
// Launchers, in the order they are recognised (the first whose variables are present wins, so
// `torchrun` or `moe launch` inside a Slurm allocation, or `mpirun` inside one, read as
// themselves and not as the allocation):
//   torchrun   RANK, WORLD_SIZE (both required), LOCAL_RANK, LOCAL_WORLD_SIZE (default: RANK
//              and WORLD_SIZE: one node), MASTER_ADDR, MASTER_PORT. `moe launch` sets the same.
//   openmpi    OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE (required), OMPI_COMM_WORLD_LOCAL_RANK,
//              OMPI_COMM_WORLD_LOCAL_SIZE (mpirun sets all four).
//   slurm      SLURM_PROCID and SLURM_NTASKS (or SLURM_NPROCS) (required), SLURM_LOCALID; the
//              tasks on this node from SLURM_NTASKS_PER_NODE, else SLURM_STEP_TASKS_PER_NODE or
//              SLURM_TASKS_PER_NODE ("2(x3),1": Slurm's run-length form) at index SLURM_NODEID.
//   none       a single process: rank 0 of 1.
// The rendezvous address, for every launcher: MASTER_ADDR / MASTER_PORT when set. Under Slurm
// without MASTER_ADDR: the first host of SLURM_STEP_NODELIST, else SLURM_JOB_NODELIST, else
// SLURM_NODELIST (Slurm's hostlist grammar, "gpu[001-004,007],login1" -> gpu001: where task 0
// runs); without MASTER_PORT: 15000 + SLURM_JOB_ID % 20000 (the same on every task of a job,
// different between jobs sharing a node). Otherwise an unset address stays empty (port 0): the
// TCP rendezvous (tcp_store.h) then refuses to start, naming MASTER_ADDR; an MPI job needs none.
//
// Inconsistent values throw moe::Error naming the variable and its value: not an integer,
// negative, rank >= size, local rank >= local size, local size > size, a port outside
// [1, 65535], a malformed hostlist.
//
// Note: an sbatch script's own process (not started by srun) also carries SLURM_PROCID=0 and
// the allocation's SLURM_NTASKS; run each rank with `srun` (docs/distributed.md).
#pragma once

#include <map>
#include <string>
#include <vector>

namespace moe::dist {

enum class Launcher { none, torchrun, openmpi, slurm };
const char* launcher_name(Launcher launcher);  // "none", "torchrun", "openmpi", "slurm"

struct LaunchEnv {
  Launcher launcher = Launcher::none;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // the rank among the processes of this node
  int local_world_size = 1;  // the processes on this node
  std::string master_addr;   // rank 0's host for the TCP rendezvous; empty: not known
  int master_port = 0;       // 0: not known

  // "rank 3 of 8 (local 3 of 4), launcher torchrun, master 10.0.0.1:29500"
  std::string describe() const;
};

using EnvMap = std::map<std::string, std::string>;

// The launch of a process whose environment is `env` (see above).
LaunchEnv parse_launch_env(const EnvMap& env);
// This process's environment, and its launch.
EnvMap current_environment();
LaunchEnv read_launch_env();

// Slurm's hostlist grammar: comma-separated entries, each a host name in which bracketed lists
// of numbers and ranges stand for every value ("gpu[001-003,7]" -> gpu001 gpu002 gpu003 gpu7;
// a range keeps the zero padding of its lower bound; several brackets give every combination,
// "r[1-2]n[1-2]" -> r1n1 r1n2 r2n1 r2n2). Throws moe::Error naming `variable` on a malformed
// list or one of more than `max_hosts` hosts.
std::vector<std::string> expand_slurm_hostlist(const std::string& list,
                                               const std::string& variable = "hostlist",
                                               size_t max_hosts = 1 << 20);
// The first host of a hostlist, without expanding the rest.
std::string slurm_first_host(const std::string& list, const std::string& variable = "hostlist");
// Slurm's tasks-per-node form "2(x3),1" -> {2, 2, 2, 1}.
std::vector<int> expand_slurm_tasks_per_node(const std::string& value,
                                             const std::string& variable = "SLURM_TASKS_PER_NODE");

}  // namespace moe::dist
