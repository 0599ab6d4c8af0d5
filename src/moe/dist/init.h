// init_distributed: how a rank of a multi-process job joins its world (Megatron's
// _initialize_distributed, torch.distributed.init_process_group). Reads the launch
// (launch_env.h), picks this rank's device, meets the other ranks, builds the world group on
// the chosen backend and gathers every rank's host and device to rank 0 for the start-up line.
//
// Backends (--distributed-backend):
//   nccl   one GPU per rank. NCCL's unique id is made by rank 0 and reaches the others through
//          MPI (MPI_Bcast on an MPI bootstrap group) when the job was started by an MPI launcher
//          and the build has MPI, else through the TCP store at MASTER_ADDR:MASTER_PORT.
//   mpi    processes of an MPI launcher (mpirun, or srun with PMIx/PMI); CPU tensors, CUDA
//          tensors staged through the host. Started any other way it stops, saying so.
//   local  one process (world size 1): no communication library at all.
// The default: local for a single process; otherwise nccl when the build has NCCL and this
// process sees a GPU (and the run is not asked to stay on the CPU), else mpi. Megatron's
// default is nccl; mpi is the one that works on a machine without GPUs.
//
// Devices: one GPU per local rank, cuda:LOCAL_RANK. When a rank sees a single GPU (a launcher
// that binds one GPU per task through CUDA_VISIBLE_DEVICES, e.g. srun --gpus-per-task=1) that
// GPU is cuda:0. With share_devices (tests: 8 ranks on fewer GPUs) cuda:(LOCAL_RANK % count).
// On the CPU (no GPU, or options.cpu): cpu.
//
// Order, and why. For ranks not started by MPI with world size > 1, the TCP rendezvous comes
// first (tcp_store.h: every rank started, the same world size, no rank twice; a rank that never
// comes ends the others at the timeout with the count of those that did); then every rank
// publishes its host and device and waits for all the others (a rank that failed in between
// ends that wait at once: "rank 1 left"), and only then is the backend built (NCCL's id through
// the store). So an error that every rank hits (no MPI launcher for --distributed-backend mpi,
// say) is reported after all ranks have met. Under MPI, MPI_Init is the rendezvous.
//
// Every blocking step of the rendezvous has the timeout (Megatron's
// --distributed-timeout-minutes, default 10), which also becomes NCCL's collective timeout and,
// for the MPI backend (which has none), the limit of a watchdog over MPI_Init and then every MPI
// call (call_watchdog.h).
//
// A test hook, so that CI can exercise the failure paths of a real launch: with
// MOE_TEST_FAIL_RANK=R, rank R fails at MOE_TEST_FAIL_AT, one of
//   before-rendezvous (the default)  throws moe::Error before meeting the others
//   after-rendezvous                 throws after the rendezvous, before the backend
//   hang                             never arrives at the rendezvous (sleeps until killed)
//   hang-after-rendezvous            (MPI backend) sleeps until killed after the rendezvous, so
//                                    the others wait for it in their first collective
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/device.h"
#include "moe/dist/launch_env.h"
#include "moe/dist/parallel_state.h"
#include "moe/dist/process_group.h"

namespace moe::dist {

class TcpStore;

struct DistributedOptions {
  std::string backend;          // --distributed-backend nccl | mpi | local; "": the default
  double timeout_minutes = 10;  // --distributed-timeout-minutes (fractions allowed)
  bool cpu = false;             // keep this rank on the CPU even when it sees a GPU
  bool share_devices = false;   // ranks of a node share the GPUs round-robin (tests)

  std::chrono::milliseconds timeout() const;
};

// One rank's place, as the start-up line shows it.
struct RankPlace {
  int rank = 0;
  std::string host;
  std::string device;  // "cuda:3", "cpu"
};

struct World {
  std::shared_ptr<ProcessGroup> world;  // every rank, on `backend`
  LaunchEnv env;
  std::string backend;  // "nccl", "mpi", "local"
  Device device;        // this rank's
  std::string host;     // this rank's host name
  std::chrono::milliseconds timeout{};
  // Every rank's place, in rank order, on rank 0; this rank's only on the others.
  std::vector<RankPlace> places;
  // The TCP store of a non-MPI launch (null otherwise), and the MPI group that carried NCCL's
  // id under an MPI launcher (null otherwise). Both live as long as the world.
  std::shared_ptr<TcpStore> store;
  std::shared_ptr<ProcessGroup> bootstrap;

  int rank() const { return env.rank; }
  int size() const { return env.world_size; }
};

// Names accepted by --distributed-backend.
inline constexpr const char* kDistributedBackends[] = {"nccl", "mpi", "local"};

// The backend for a launch when none is asked for (see above).
std::string default_backend(const LaunchEnv& env, bool cpu);

// Joins the world of this process's launch (read_launch_env()).
World init_distributed(const DistributedOptions& options);
// The same for a given launch and environment (tests; `vars` is the environment the MPI and
// test-hook checks read).
World init_distributed(const DistributedOptions& options, const LaunchEnv& env, const EnvMap& vars);

// What the process-wide error handling needs of the world made last in this process: whether
// there is one, this rank, its host, and its group (to abort it). Set by init_distributed; the
// group is held while a WorldHold exists (the `moe` program holds one for the whole of main, so
// that its top-level error report can still abort the world after the code that made it has
// unwound), and released when the last WorldHold ends (before static destruction, when tearing
// down a communicator is no longer safe).
struct WorldIdentity {
  bool exists = false;
  int rank = 0;
  int size = 1;
  std::string host;
  std::shared_ptr<ProcessGroup> group;  // null when no WorldHold holds it
};
WorldIdentity current_world_identity();

class WorldHold {
 public:
  WorldHold();
  ~WorldHold();
  WorldHold(const WorldHold&) = delete;
  WorldHold& operator=(const WorldHold&) = delete;
};

// "[rank 3 gpu001] " for a rank of a world of more than one (before init_distributed: as the
// launch says); "" otherwise.
std::string rank_prefix();

// The start-up lines (rank 0 prints them): the world size and its mapping, the backend, the
// launcher, the rendezvous and every rank's host and device.
//   distributed: world size 8 = TP 2 x CP 1 x DP 4 x PP 1, experts ETP 1 x EP 4 x EDP 2;
//     backend nccl, launcher torchrun, rendezvous node-a:29500, timeout 10 min
//     node-a: rank 0 cuda:0, rank 1 cuda:1, ...
std::string describe_world(const World& world, const ParallelConfig& mapping = {});

// This host's name (gethostname).
std::string host_name();

}  // namespace moe::dist
