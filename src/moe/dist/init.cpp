#include "moe/dist/init.h"

#include <unistd.h>

#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "moe/core/error.h"
#include "moe/core/stream.h"
#include "moe/dist/call_watchdog.h"
#include "moe/dist/fatal.h"
#include "moe/dist/local_backend.h"
#include "moe/dist/mpi_backend.h"
#include "moe/dist/nccl_backend.h"
#include "moe/dist/tcp_store.h"

namespace moe::dist {
namespace {

std::mutex g_identity_mutex;
WorldIdentity g_identity;
int g_holds = 0;  // live WorldHolds

const std::string* lookup(const EnvMap& vars, const char* name) {
  auto it = vars.find(name);
  return it == vars.end() ? nullptr : &it->second;
}

// MOE_TEST_FAIL_RANK / MOE_TEST_FAIL_AT (init.h).
void test_fault_point(const LaunchEnv& env, const EnvMap& vars, const std::string& point) {
  const std::string* rank = lookup(vars, "MOE_TEST_FAIL_RANK");
  if (!rank || *rank != std::to_string(env.rank)) return;
  const std::string* at = lookup(vars, "MOE_TEST_FAIL_AT");
  const std::string where = at ? *at : "before-rendezvous";
  if (where != "before-rendezvous" && where != "after-rendezvous" && where != "hang" &&
      where != "hang-after-rendezvous")
    MOE_FAIL("MOE_TEST_FAIL_AT='", where,
             "' is not before-rendezvous, after-rendezvous, hang or hang-after-rendezvous");
  if ((where == "hang" && point == "before-rendezvous") ||
      (where == "hang-after-rendezvous" && point == where)) {
    while (true) std::this_thread::sleep_for(std::chrono::hours(1));  // until killed
  }
  if (where == point)
    MOE_FAIL("MOE_TEST_FAIL_RANK=", *rank, ": rank ", env.rank, " fails ",
             point == "before-rendezvous" ? "before" : "after",
             " the rendezvous (a test of the failure path)");
}

// Whether this process was started by an MPI launcher (its library can then initialise).
bool mpi_launched(const LaunchEnv& env, const EnvMap& vars) {
  if (env.launcher == Launcher::openmpi) return true;
  return env.launcher == Launcher::slurm &&
         (lookup(vars, "PMIX_RANK") != nullptr || lookup(vars, "PMI_RANK") != nullptr);
}

Device pick_device(const DistributedOptions& options, const LaunchEnv& env, bool need_gpu) {
  const int count = options.cpu ? 0 : cuda_device_count();
  if (count == 0) {
    if (need_gpu)
      MOE_FAIL("--distributed-backend nccl needs a GPU per rank, and rank ", env.rank,
               options.cpu ? " was asked to run on the CPU" : " sees none",
               " (on the CPU, use --distributed-backend mpi under mpirun)");
    return Device::cpu();
  }
  if (options.share_devices) return Device::cuda(env.local_rank % count);
  if (env.local_rank < count) return Device::cuda(env.local_rank);
  if (count == 1) return Device::cuda(0);  // the launcher gave each rank its own GPU
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  MOE_FAIL("local rank ", env.local_rank, " of ", env.local_world_size,
           " has no GPU of its own: ", "this process sees ", count, " GPUs",
           visible ? std::string(" (CUDA_VISIBLE_DEVICES=") + visible + ")" : std::string(),
           "; start at most ", count, " ranks per node (one per GPU)");
}

std::string place_text(const std::string& host, Device device) {
  return host + "\t" + device.str();
}

RankPlace parse_place(int rank, const std::string& text) {
  const size_t tab = text.find('\t');
  return RankPlace{rank, text.substr(0, tab),
                   tab == std::string::npos ? std::string("?") : text.substr(tab + 1)};
}

// Every rank's place through a group (MPI: CPU tensors): fixed 256-byte records.
std::vector<RankPlace> gather_places(ProcessGroup& group, const std::string& mine) {
  constexpr int64_t kBytes = 256;
  Tensor in = Tensor::zeros({1, kBytes}, DType::u8);
  std::memcpy(in.raw(), mine.data(), std::min<size_t>(mine.size(), kBytes - 1));
  Tensor out = Tensor::zeros({group.size(), kBytes}, DType::u8);
  group.all_gather(in, out);
  std::vector<RankPlace> places;
  const char* bytes = static_cast<const char*>(out.raw());
  for (int r = 0; r < group.size(); ++r)
    places.push_back(parse_place(r, std::string(bytes + r * kBytes)));
  return places;
}

// MPI has no timeout of its own, and MPI_Init waits for every rank of the job: a rank that never
// starts it would hang the others. This watchdog ends this rank, and through mpirun the job,
// when the MPI rendezvous (MPI_Init and the exchange of places) outlasts the timeout.
class MpiRendezvousWatchdog {
 public:
  MpiRendezvousWatchdog(std::chrono::milliseconds timeout, std::string message)
      : thread_([this, timeout, message = std::move(message)] {
          std::unique_lock<std::mutex> lock(mutex_);
          if (done_changed_.wait_for(lock, timeout, [this] { return done_; })) return;
          std::fprintf(stderr, "%s\n", message.c_str());
          std::fflush(stderr);
          std::_Exit(1);  // MPI_Abort needs MPI_Init done; mpirun ends the job on this exit
        }) {}
  ~MpiRendezvousWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    done_changed_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable done_changed_;
  bool done_ = false;
  std::thread thread_;  // last: it starts once the members above exist
};

std::string backend_list() {
  std::string list;
  for (const char* b : kDistributedBackends) list += (list.empty() ? "" : ", ") + std::string(b);
  return list;
}

// The single-process world: the Local backend with one rank.
std::shared_ptr<ProcessGroup> single_process_group() {
  std::shared_ptr<ProcessGroup> group;
  run_local(1, [&](std::shared_ptr<ProcessGroup> g) { group = std::move(g); });
  return group;
}

NcclOptions nccl_options(std::chrono::milliseconds timeout) {
  NcclOptions o;
  o.timeout = timeout;
  o.exit_on_failure = true;
  return o;
}

std::string ranges_text(const std::vector<int>& ranks) {
  std::ostringstream out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    out << (i ? "," : "") << ranks[i];
    if (j > i) out << "-" << ranks[j];
    i = j + 1;
  }
  return out.str();
}

}  // namespace

std::chrono::milliseconds DistributedOptions::timeout() const {
  MOE_CHECK(timeout_minutes > 0, "--distributed-timeout-minutes must be positive, got ",
            timeout_minutes);
  return std::chrono::milliseconds(static_cast<int64_t>(timeout_minutes * 60000.0 + 0.5));
}

std::string default_backend(const LaunchEnv& env, bool cpu) {
  if (env.world_size == 1) return "local";
  if (nccl_built() && !cpu && cuda_device_count() > 0) return "nccl";
  return "mpi";
}

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "?";
  return name;
}

World init_distributed(const DistributedOptions& options) {
  return init_distributed(options, read_launch_env(), current_environment());
}

World init_distributed(const DistributedOptions& options, const LaunchEnv& env,
                       const EnvMap& vars) {
  World w;
  w.env = env;
  w.timeout = options.timeout();
  w.backend = options.backend.empty() ? default_backend(env, options.cpu) : options.backend;
  bool known = false;
  for (const char* b : kDistributedBackends) known = known || w.backend == b;
  if (!known) MOE_FAIL("--distributed-backend '", w.backend, "' is not one of ", backend_list());
  w.host = host_name();
  w.device = pick_device(options, env, w.backend == "nccl");
  if (w.device.is_cuda()) (void)current_stream(w.device.index);  // makes it current
  const std::string mine = place_text(w.host, w.device);
  const bool by_mpi = mpi_launched(env, vars);
  const std::string launched_by =
      env.launcher == Launcher::torchrun ? "this process was started by torchrun or moe launch"
      : env.launcher == Launcher::slurm  ? "this process was started by srun without PMIx/PMI"
      : env.launcher == Launcher::none   ? "this process was started without a launcher"
                                         : "this process was started by mpirun";

  test_fault_point(env, vars, "before-rendezvous");
  if (w.backend == "local") {
    if (env.world_size != 1)
      MOE_FAIL("--distributed-backend local runs one process; ", launched_by, " with world size ",
               env.world_size, ": use --distributed-backend nccl (GPUs) or mpi");
    w.world = single_process_group();
    w.places = {RankPlace{0, w.host, w.device.str()}};
  } else if (have_mpi() && (w.backend == "mpi" ? by_mpi || env.world_size == 1 : by_mpi)) {
    // MPI_Init is the rendezvous. NCCL's id travels on an MPI bootstrap group.
    std::ostringstream late;
    late << "[rank " << env.rank << " " << w.host << "] error: the MPI rendezvous (MPI_Init) "
         << "timed out after " << static_cast<double>(w.timeout.count()) / 1000.0 << " s: not all "
         << env.world_size << " ranks of the job arrived "
         << "(--distributed-timeout-minutes " << options.timeout_minutes << ")";
    std::optional<MpiRendezvousWatchdog> watchdog(std::in_place, w.timeout, late.str());
    std::shared_ptr<ProcessGroup> mpi = init_mpi_world();
    if (mpi->rank() != env.rank || mpi->size() != env.world_size)
      MOE_FAIL("MPI says rank ", mpi->rank(), " of ", mpi->size(),
               ", the launcher's variables rank ", env.rank, " of ", env.world_size);
    test_fault_point(env, vars, "after-rendezvous");
    w.places = gather_places(*mpi, mine);
    watchdog.reset();
    if (w.backend == "mpi") {
      w.world = mpi;
      // Every MPI call from now on ends this rank (and mpirun the job) when it outlasts the
      // timeout: MPI has no timeout of its own (call_watchdog.h).
      std::ostringstream who;
      who << "[rank " << env.rank << " " << w.host << "]";
      set_call_timeout(w.timeout, who.str(), [](const std::string& message) {
        std::fprintf(stderr, "%s\n", message.c_str());
        std::fflush(stderr);
        std::_Exit(1);
      });
      test_fault_point(env, vars, "hang-after-rendezvous");
    } else {
      Tensor id = Tensor::zeros({static_cast<int64_t>(sizeof(NcclUniqueId))}, DType::u8);
      if (env.rank == 0) {
        const NcclUniqueId made = nccl_unique_id();
        std::memcpy(id.raw(), made.data(), made.size());
      }
      mpi->broadcast(id, 0);
      NcclUniqueId got;
      std::memcpy(got.data(), id.raw(), got.size());
      w.bootstrap = mpi;
      w.world =
          make_nccl_world(got, env.rank, env.world_size, w.device.index, nccl_options(w.timeout));
    }
  } else if (w.backend == "mpi" && (by_mpi || env.world_size == 1)) {
    MOE_FAIL(
        "--distributed-backend mpi: this build has no MPI (scripts/setup.sh installs "
        "libopenmpi-dev; then rebuild)");
  } else {
    // A TCP rendezvous at MASTER_ADDR:MASTER_PORT.
    if (env.world_size > 1) {
      if (env.master_addr.empty() || env.master_port <= 0)
        MOE_FAIL("the rendezvous needs rank 0's address: set MASTER_ADDR and MASTER_PORT (",
                 launched_by, by_mpi ? ", and this build has no MPI to carry NCCL's id" : "",
                 "; mpirun -x MASTER_ADDR=<host> -x MASTER_PORT=<port> passes them)");
      TcpStoreOptions so;
      so.host = env.master_addr;
      so.port = env.master_port;
      so.rank = env.rank;
      so.world_size = env.world_size;
      so.timeout = w.timeout;
      try {
        w.store = std::make_shared<TcpStore>(so);
      } catch (const Error& e) {
        if (env.launcher != Launcher::slurm) throw;
        MOE_FAIL(e.what(),
                 " (under Slurm, start every rank with srun: a batch script's own process also "
                 "reads as rank 0 of SLURM_NTASKS)");
      }
    }
    test_fault_point(env, vars, "after-rendezvous");
    if (w.store) {
      // Everyone's place, and a wait for all: a rank that failed since the rendezvous ends it
      // at once ("rank 1 left").
      w.store->set("moe/place/" + std::to_string(env.rank), mine);
      w.store->barrier("moe/started");
      if (env.rank == 0) {
        for (int r = 0; r < env.world_size; ++r)
          w.places.push_back(parse_place(r, w.store->get("moe/place/" + std::to_string(r))));
      } else {
        w.places = {RankPlace{env.rank, w.host, w.device.str()}};
      }
    } else {
      w.places = {RankPlace{env.rank, w.host, w.device.str()}};
    }
    if (w.backend == "mpi")
      MOE_FAIL("--distributed-backend mpi needs an MPI launcher (mpirun, or srun --mpi=pmix); ",
               launched_by, have_mpi() ? "" : ", and this build has no MPI",
               ". On GPUs use --distributed-backend nccl");
    NcclUniqueId id{};
    if (!w.store) {
      id = nccl_unique_id();  // a world of one
    } else if (env.rank == 0) {
      id = nccl_unique_id();
      w.store->set("moe/nccl_unique_id", std::string(id.data(), id.size()));
    } else {
      const std::string bytes = w.store->get("moe/nccl_unique_id");
      if (bytes.size() != id.size())
        MOE_FAIL("NCCL's unique id from the store has ", bytes.size(), " bytes, not ", id.size());
      std::memcpy(id.data(), bytes.data(), id.size());
    }
    w.world =
        make_nccl_world(id, env.rank, env.world_size, w.device.index, nccl_options(w.timeout));
  }

  register_world(w.world);  // for report_and_abort (fatal.h); init_mpi_world registers its own
  std::lock_guard<std::mutex> lock(g_identity_mutex);
  g_identity =
      WorldIdentity{true, env.rank, env.world_size, w.host, g_holds > 0 ? w.world : nullptr};
  return w;
}

WorldIdentity current_world_identity() {
  std::lock_guard<std::mutex> lock(g_identity_mutex);
  return g_identity;
}

WorldHold::WorldHold() {
  std::lock_guard<std::mutex> lock(g_identity_mutex);
  ++g_holds;
}

WorldHold::~WorldHold() {
  std::shared_ptr<ProcessGroup> last;  // released outside the lock
  std::lock_guard<std::mutex> lock(g_identity_mutex);
  if (--g_holds == 0) last = std::move(g_identity.group);
}

std::string rank_prefix() {
  const WorldIdentity id = current_world_identity();
  if (id.exists)
    return id.size > 1 ? moe::detail::concat("[rank ", id.rank, " ", id.host, "] ") : "";
  // No world yet (an error before or during the rendezvous): the launch says who this is.
  try {
    const LaunchEnv env = read_launch_env();
    if (env.world_size > 1) return moe::detail::concat("[rank ", env.rank, " ", host_name(), "] ");
  } catch (const Error&) {
    // The launch's own variables are what is wrong: the error says so, without a prefix.
  }
  return "";
}

std::string describe_world(const World& world, const ParallelConfig& mapping) {
  const ParallelSizes s = resolve_parallel_sizes(world.size(), mapping);
  std::ostringstream out;
  out << "distributed: world size " << s.world << " = TP " << s.tp << " x CP " << s.cp << " x DP "
      << s.dp << " x PP " << s.pp << ", experts ETP " << s.etp << " x EP " << s.ep << " x EDP "
      << s.edp << "; backend " << world.backend << ", launcher "
      << launcher_name(world.env.launcher);
  if (world.store) out << ", rendezvous " << world.store->address();
  out << ", timeout " << static_cast<double>(world.timeout.count()) / 60000.0 << " min\n";
  // One line per host, hosts in order of their first rank.
  std::vector<std::string> hosts;
  std::vector<std::vector<const RankPlace*>> by_host;
  for (const RankPlace& p : world.places) {
    size_t h = 0;
    while (h < hosts.size() && hosts[h] != p.host) ++h;
    if (h == hosts.size()) {
      hosts.push_back(p.host);
      by_host.emplace_back();
    }
    by_host[h].push_back(&p);
  }
  constexpr size_t kHosts = 64, kPerHost = 16;
  for (size_t h = 0; h < hosts.size() && h < kHosts; ++h) {
    std::vector<int> ranks;
    for (const RankPlace* p : by_host[h]) ranks.push_back(p->rank);
    out << "  " << hosts[h] << (ranks.size() == 1 ? ", rank " : ", ranks ") << ranges_text(ranks)
        << ":";
    for (size_t i = 0; i < by_host[h].size() && i < kPerHost; ++i)
      out << " " << by_host[h][i]->device;
    if (by_host[h].size() > kPerHost) out << " ... (" << by_host[h].size() - kPerHost << " more)";
    out << "\n";
  }
  if (hosts.size() > kHosts) out << "  ... and " << hosts.size() - kHosts << " more hosts\n";
  if (world.places.size() < static_cast<size_t>(world.size()))
    out << "  (rank " << world.rank() << " knows its own place only)\n";
  return out.str();
}

}  // namespace moe::dist
