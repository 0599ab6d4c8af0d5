// The NCCL backend (nccl_backend.h). Three objects:
//  - NcclWorld: what every group of one process's world shares: the device, the options, the
//    lock under which NCCL is called (and communicators are aborted), the operations in flight,
//    the failure once there is one, and the watchdog thread;
//  - NcclComm: one communicator, its stream, its members and the communicators split from it;
//  - NcclProcessGroup: the ProcessGroup over one NcclComm.
// Locks: `nccl_mutex` (NCCL calls, aborts) is taken before `state_mutex` (registry, work list,
// failure), never the other way round. The watchdog polls under `state_mutex` only, so it can
// see a failure while a caller is inside an NCCL call; every loop that holds `nccl_mutex` and
// waits on NCCL also watches `abort_requested`, so the watchdog gets the lock to abort.
#include "moe/dist/nccl_backend.h"

#include "moe/core/error.h"

#if MOE_WITH_NCCL
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <numeric>
#include <sstream>
#include <thread>
#include <utility>

#include "moe/core/allocator.h"
#include "moe/core/cuda_utils.h"
#include "moe/core/stream.h"
#include "moe/dist/collective_checks.h"
#endif

namespace moe::dist {

#if MOE_WITH_NCCL
namespace {

using detail::list_str;
using detail::row_bytes;

static_assert(sizeof(NcclUniqueId) == sizeof(ncclUniqueId),
              "NcclUniqueId must hold an ncclUniqueId");

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "?";
  return name;
}

std::string nccl_error(ncclResult_t status, ncclComm_t comm) {
  std::string text = ncclGetErrorString(status);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') text += std::string(" (") + last + ")";
  return text;
}

// Waits briefly between polls: a yield first (most operations are enqueued at once), then
// short sleeps so a long wait does not burn a core.
class Backoff {
 public:
  void pause() {
    if (++polls_ < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(polls_ < 5000 ? 50 : 1000));
    }
  }

 private:
  int polls_ = 0;
};

// NCCL's own type for a reduction; NCCL also reduces u8, which the other backends do not.
ncclDataType_t reduction_type(DType dt, const std::string& who) {
  switch (dt) {
    case DType::f64:
      return ncclFloat64;
    case DType::f32:
      return ncclFloat32;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    case DType::i64:
      return ncclInt64;
    case DType::i32:
      return ncclInt32;
    case DType::u8:
      return ncclUint8;
    case DType::fp8_e4m3:
    case DType::fp8_e5m2:
      break;
  }
  MOE_FAIL(who, ": dtype ", dt, " cannot be reduced; allowed: f64 f32 bf16 f16 i64 i32 u8");
}

ncclRedOp_t reduction_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::avg:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
    case ReduceOp::min:
      return ncclMin;
  }
  return ncclSum;
}

// Row `row` of a contiguous tensor, as a byte address.
char* row_ptr(const Tensor& t, int64_t row) {
  int64_t elems = 1;
  for (int64_t d = 1; d < t.dim(); ++d) elems *= t.size(d);
  return static_cast<char*>(t.raw()) + static_cast<size_t>(row * elems) * dtype_size(t.dtype());
}

// ---- one operation in flight --------------------------------------------------------------

struct WorkState {
  WorkState(std::string name, const void* comm, int device)
      : name(std::move(name)), comm(comm), device(device), start(Clock::now()) {}

  const std::string name;  // "all_reduce #12 on world ranks [0, 1]"
  const void* const comm;  // the NcclComm it runs on (identity only)
  const int device;
  const Clock::time_point start;
  Event done;  // recorded once, before the state is shared

  void fail(const std::string& message) {
    std::lock_guard lock(mutex_);
    if (failed_.load()) return;
    failure_ = message;
    failed_.store(true, std::memory_order_release);
  }
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  std::string failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
  }

 private:
  mutable std::mutex mutex_;
  std::atomic<bool> failed_{false};
  std::string failure_;
};

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<WorkState> state, std::vector<Tensor> tensors)
      : state_(std::move(state)), tensors_(std::move(tensors)) {}

  void wait() override {
    throw_if_failed();
    state_->done.block(current_stream(state_->device));
  }
  void synchronize() override {
    Backoff backoff;
    while (!state_->done.query()) {
      throw_if_failed();
      backoff.pause();
    }
    throw_if_failed();
  }
  bool is_completed() override { return state_->failed() || state_->done.query(); }
  const Event* event() const override { return &state_->done; }

 private:
  void throw_if_failed() const {
    if (state_->failed()) throw Error(state_->name + " failed: " + state_->failure());
  }

  std::shared_ptr<WorkState> state_;
  std::vector<Tensor> tensors_;  // keeps the operation's storage alive while the Work lives
};

// ---- the world ----------------------------------------------------------------------------

struct NcclComm;

class NcclWorld {
 public:
  NcclWorld(int rank, int size, int device, NcclOptions options)
      : rank(rank), size(size), device(device), options(std::move(options)), host(host_name()) {
    watchdog_ = std::thread([this] { watch(); });
  }
  ~NcclWorld() {
    {
      std::lock_guard lock(state_mutex);
      stop_ = true;
    }
    cv_.notify_all();
    watchdog_.join();
  }
  NcclWorld(const NcclWorld&) = delete;
  NcclWorld& operator=(const NcclWorld&) = delete;

  const int rank;  // in the world
  const int size;
  const int device;
  const NcclOptions options;
  const std::string host;

  std::mutex nccl_mutex;   // held while calling NCCL on any communicator of this world
  std::mutex state_mutex;  // guards what follows, and NcclComm::aborted
  std::atomic<bool> abort_requested{false};

  std::string prefix() const { return "[rank " + std::to_string(rank) + " " + host + "] "; }

  void add(NcclComm* comm) {
    std::lock_guard lock(state_mutex);
    comms_.push_back(comm);
  }
  void remove(NcclComm* comm) {
    std::lock_guard lock(state_mutex);
    comms_.erase(std::remove(comms_.begin(), comms_.end(), comm), comms_.end());
    // Its destructor waits for them (bounded by the timeout) instead of the watchdog.
    std::erase_if(in_flight_, [&](const auto& work) { return work->comm == comm; });
  }
  void track(std::shared_ptr<WorkState> work) {
    std::lock_guard lock(state_mutex);
    in_flight_.push_back(std::move(work));
  }

  // The failure that ended this world, or "" while it is healthy.
  std::string failure() {
    std::lock_guard lock(state_mutex);
    return failure_;
  }

  // Records the failure (the first one wins), fails every operation in flight, aborts every
  // communicator and, with exit_on_failure, ends the process. `holding_nccl_mutex`: the
  // caller is inside an NCCL call sequence and already holds nccl_mutex.
  void fail(const std::string& what, bool holding_nccl_mutex);

  // Aborts the given communicators (nccl_mutex held by the caller) and fails the operations in
  // flight on them with `reason`.
  void abort_locked(const std::vector<NcclComm*>& targets, const std::string& reason);

 private:
  void watch();

  std::vector<NcclComm*> comms_;
  std::list<std::shared_ptr<WorkState>> in_flight_;  // in the order they were issued
  std::string failure_;
  bool stop_ = false;
  std::condition_variable cv_;
  std::thread watchdog_;
};

struct NcclComm {
  NcclComm(std::shared_ptr<NcclWorld> world_in, ncclComm_t comm_in, std::vector<int> ranks,
           int rank_in)
      : world(std::move(world_in)), comm(comm_in), world_ranks(std::move(ranks)), rank(rank_in) {
    const cudaError_t status = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    if (status != cudaSuccess) {
      (void)ncclCommAbort(comm);
      MOE_FAIL(world->prefix(),
               "NCCL: cannot create the communication stream: ", cudaGetErrorString(status));
    }
    world->add(this);
  }

  // Waits (at most the timeout) for the work queued on the stream, then frees the
  // communicator; aborts it instead if that does not complete in time.
  ~NcclComm() {
    world->remove(this);
    bool stream_idle = false;
    const Clock::time_point deadline = Clock::now() + world->options.timeout;
    Backoff backoff;
    while (Clock::now() < deadline && !world->abort_requested.load()) {
      const cudaError_t status = cudaStreamQuery(stream);
      if (status == cudaSuccess) {
        stream_idle = true;
        break;
      }
      if (status != cudaErrorNotReady) break;
      backoff.pause();
    }
    (void)cudaGetLastError();
    std::lock_guard lock(world->nccl_mutex);
    bool aborted_now = false;
    {
      std::lock_guard state(world->state_mutex);
      aborted_now = aborted;
    }
    if (!aborted_now) {
      ncclResult_t state = stream_idle ? ncclCommFinalize(comm) : ncclInvalidUsage;
      while (state == ncclInProgress && Clock::now() < deadline && !world->abort_requested.load()) {
        backoff.pause();
        ncclResult_t async = ncclInProgress;
        state = ncclCommGetAsyncError(comm, &async) == ncclSuccess ? async : ncclSystemError;
      }
      if (state == ncclSuccess) {
        (void)ncclCommDestroy(comm);
      } else {
        (void)ncclCommAbort(comm);
        stream_idle = cudaStreamQuery(stream) == cudaSuccess;
        (void)cudaGetLastError();
      }
    }
    if (stream_idle) {
      // Nothing queued there still uses any block; the stream can go.
      release_stream_blocks(world->device, reinterpret_cast<StreamHandle>(stream));
      (void)cudaStreamDestroy(stream);
    }
    // Else the stream is left to the driver: the allocator may still record events on it for
    // blocks it used.
  }
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  std::shared_ptr<NcclWorld> world;
  ncclComm_t comm;
  cudaStream_t stream = nullptr;
  std::vector<int> world_ranks;  // members, in group order
  int rank;                      // in this group
  uint64_t next_seq = 0;
  bool aborted = false;                           // guarded by world->state_mutex
  std::string abort_reason;                       // likewise
  std::vector<std::weak_ptr<NcclComm>> children;  // split from this one; under nccl_mutex
};

void NcclWorld::abort_locked(const std::vector<NcclComm*>& targets, const std::string& reason) {
  std::lock_guard lock(state_mutex);
  for (NcclComm* c : targets) {
    if (c->aborted) continue;
    (void)ncclCommAbort(c->comm);
    c->aborted = true;
    c->abort_reason = reason;
  }
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    const bool hit =
        std::any_of(targets.begin(), targets.end(), [&](NcclComm* c) { return c == (*it)->comm; });
    if (hit) {
      (*it)->fail(reason);
      it = in_flight_.erase(it);
    } else {
      ++it;
    }
  }
}

void NcclWorld::fail(const std::string& what, bool holding_nccl_mutex) {
  const std::string message = prefix() + what;
  {
    std::lock_guard lock(state_mutex);
    if (!failure_.empty()) return;
    failure_ = message;
    for (auto& work : in_flight_) work->fail(message);
    in_flight_.clear();
  }
  abort_requested.store(true);
  if (options.exit_on_failure) {
    std::fprintf(stderr, "%s; aborting the NCCL communicators and ending the process\n",
                 message.c_str());
    std::fflush(stderr);
    // ncclCommAbort can itself hang on a broken machine: the process ends regardless.
    std::thread([] {
      std::this_thread::sleep_for(std::chrono::seconds(30));
      std::_Exit(1);
    }).detach();
  }
  if (options.on_failure) options.on_failure(message);
  {
    std::unique_lock nccl_lock(nccl_mutex, std::defer_lock);
    if (!holding_nccl_mutex) nccl_lock.lock();
    std::vector<NcclComm*> all;
    {
      std::lock_guard lock(state_mutex);
      all = comms_;
    }
    abort_locked(all, message);
  }
  if (options.exit_on_failure) std::_Exit(1);
}

void NcclWorld::watch() {
  std::unique_lock lock(state_mutex);
  while (!stop_) {
    cv_.wait_for(lock, options.watchdog_interval, [&] { return stop_; });
    if (stop_ || !failure_.empty()) continue;
    std::string what;
    for (NcclComm* c : comms_) {
      if (c->aborted) continue;
      ncclResult_t state = ncclSuccess;
      const ncclResult_t status = ncclCommGetAsyncError(c->comm, &state);
      if (status != ncclSuccess) state = status;
      if (state != ncclSuccess && state != ncclInProgress) {
        what = "NCCL error on the communicator of world ranks " + list_str(c->world_ranks) + ": " +
               nccl_error(state, c->comm);
        break;
      }
    }
    for (auto it = in_flight_.begin(); what.empty() && it != in_flight_.end();) {
      const std::shared_ptr<WorkState>& work = *it;
      bool done = false;
      try {
        done = work->failed() || work->done.query();
      } catch (const Error& e) {
        what = "NCCL " + work->name + ": " + e.what();
        break;
      }
      if (done) {
        it = in_flight_.erase(it);
        continue;
      }
      const Clock::duration elapsed = Clock::now() - work->start;
      if (elapsed > options.timeout) {
        std::ostringstream out;
        out.precision(3);
        out << "NCCL " << work->name << " timed out after " << seconds(elapsed) << " s (timeout "
            << seconds(options.timeout) << " s)";
        what = out.str();
      }
      break;  // the oldest operation still running is the first to be late
    }
    if (!what.empty()) {
      lock.unlock();
      fail(what, /*holding_nccl_mutex=*/false);
      lock.lock();
    }
  }
}

// Group calls: ncclGroupEnd is called even when a call inside the group throws, so the
// thread's group depth stays balanced.
class NcclGroup {
 public:
  NcclGroup() { status_ = ncclGroupStart(); }
  ~NcclGroup() {
    if (open_) (void)ncclGroupEnd();
  }
  ncclResult_t start_status() const { return status_; }
  ncclResult_t end() {
    open_ = false;
    return ncclGroupEnd();
  }
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

 private:
  ncclResult_t status_;
  bool open_ = true;
};

// Creates a non-blocking communicator configuration.
ncclConfig_t nonblocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

// ---- the process group --------------------------------------------------------------------

class NcclProcessGroup final : public ProcessGroup {
 public:
  explicit NcclProcessGroup(std::shared_ptr<NcclComm> comm) : comm_(std::move(comm)) {}

  int rank() const override { return comm_->rank; }
  int size() const override { return static_cast<int>(comm_->world_ranks.size()); }
  const std::vector<int>& world_ranks() const override { return comm_->world_ranks; }
  std::string backend() const override { return "nccl"; }

  std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override {
    const char* name = "all_reduce";
    check_defined(t, name, "t");
    if (t.device().is_cpu()) {
      Tensor staged = t.to(device());
      all_reduce_async(staged, op)->wait();
      return copied_back(staged, t);
    }
    check_on_device(name, t, "t");
    const ncclDataType_t type = reduction_type(t.dtype(), who(name));
    return run(name, {t}, [&](ncclComm_t comm, cudaStream_t stream) {
      if (t.numel() == 0) return;
      call(name, "ncclAllReduce",
           ncclAllReduce(t.raw(), t.raw(), static_cast<size_t>(t.numel()), type, reduction_op(op),
                         comm, stream));
    });
  }

  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override {
    const char* name = "all_gather";
    detail::check_all_gather(*this, in, out);
    if (in.device().is_cpu()) {
      Tensor staged = staged_output(out);
      all_gather_async(in.to(device()), staged)->wait();
      return copied_back(staged, out);
    }
    check_on_device(name, in, "in");
    return run(name, {in, out}, [&](ncclComm_t comm, cudaStream_t stream) {
      if (in.nbytes() == 0) return;
      call(name, "ncclAllGather",
           ncclAllGather(in.raw(), out.raw(), in.nbytes(), ncclUint8, comm, stream));
    });
  }

  std::unique_ptr<Work> all_gather_v_async(const Tensor& in, Tensor& out,
                                           std::span<const int64_t> counts) override {
    const char* name = "all_gather_v";
    const std::vector<int64_t> rows = detail::check_all_gather_v(*this, in, out, counts);
    if (in.device().is_cpu()) {
      Tensor staged = staged_output(out);
      all_gather_v_async(in.to(device()), staged, counts)->wait();
      return copied_back(staged, out);
    }
    check_on_device(name, in, "in");
    return run(name, {in, out}, [&](ncclComm_t comm, cudaStream_t stream) {
      NcclGroup group;
      call(name, "ncclGroupStart", group.start_status());
      int64_t offset = 0;
      for (int q = 0; q < size(); ++q) {
        if (rows[rank()] > 0)
          call(name, "ncclSend", ncclSend(in.raw(), in.nbytes(), ncclUint8, q, comm, stream));
        const size_t bytes = static_cast<size_t>(rows[q]) * row_bytes(out);
        if (bytes > 0)
          call(name, "ncclRecv", ncclRecv(row_ptr(out, offset), bytes, ncclUint8, q, comm, stream));
        offset += rows[q];
      }
      call(name, "ncclGroupEnd", group.end());
    });
  }

  // The shared reduce_scatter checks, with NCCL's reducible dtypes.
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override {
    const char* name = "reduce_scatter";
    detail::check_in_out(*this, name, in, out);
    if (in.device().is_cpu()) {
      Tensor staged = staged_output(out);
      reduce_scatter_async(in.to(device()), staged, op)->wait();
      return copied_back(staged, out);
    }
    check_on_device(name, in, "in");
    const ncclDataType_t type = reduction_type(in.dtype(), who(name));
    MOE_CHECK(in.size(0) % size() == 0, who(name), ": in has shape ", shape_str(in.shape()),
              ", whose ", in.size(0), " rows do not split over ", size(), " ranks");
    const Shape expected = detail::with_rows(in.shape(), in.size(0) / size());
    MOE_CHECK(out.shape() == expected, who(name), ": out has shape ", shape_str(out.shape()),
              ", expected ", shape_str(expected), " = in ", shape_str(in.shape()), " / ", size(),
              " ranks");
    return run(name, {in, out}, [&](ncclComm_t comm, cudaStream_t stream) {
      if (out.numel() == 0) return;
      call(name, "ncclReduceScatter",
           ncclReduceScatter(in.raw(), out.raw(), static_cast<size_t>(out.numel()), type,
                             reduction_op(op), comm, stream));
    });
  }

  // One ncclReduce per destination rank q (root q) over rows [offset_q, offset_q + counts[q])
  // of every rank's in, in one group call (see the header for why not sends + a local sum).
  std::unique_ptr<Work> reduce_scatter_v_async(const Tensor& in, Tensor& out,
                                               std::span<const int64_t> counts,
                                               ReduceOp op) override {
    const char* name = "reduce_scatter_v";
    detail::check_in_out(*this, name, in, out);
    if (in.device().is_cpu()) {
      Tensor staged = staged_output(out);
      reduce_scatter_v_async(in.to(device()), staged, counts, op)->wait();
      return copied_back(staged, out);
    }
    check_on_device(name, in, "in");
    const ncclDataType_t type = reduction_type(in.dtype(), who(name));
    const std::vector<int64_t> rows = detail::check_counts(*this, name, "counts", counts);
    MOE_CHECK(in.size(0) == detail::sum_of(rows), who(name), ": in has shape ",
              shape_str(in.shape()), " but the counts ", list_str(rows), " sum to ",
              detail::sum_of(rows), " rows");
    const Shape expected = detail::with_rows(in.shape(), rows[rank()]);
    MOE_CHECK(out.shape() == expected, who(name), ": out has shape ", shape_str(out.shape()),
              ", expected ", shape_str(expected), " (counts[", rank(), "] of ", list_str(rows),
              ")");
    return run(name, {in, out}, [&](ncclComm_t comm, cudaStream_t stream) {
      const int64_t row_elems = in.size(0) == 0 ? 0 : in.numel() / in.size(0);
      NcclGroup group;
      call(name, "ncclGroupStart", group.start_status());
      int64_t offset = 0;
      for (int q = 0; q < size(); ++q) {
        if (rows[q] > 0) {
          const char* send = row_ptr(in, offset);
          // Only the root's receive buffer is written; the others pass their send slice.
          void* recv = q == rank() ? out.raw() : const_cast<char*>(send);
          call(name, "ncclReduce",
               ncclReduce(send, recv, static_cast<size_t>(rows[q] * row_elems), type,
                          reduction_op(op), q, comm, stream));
        }
        offset += rows[q];
      }
      call(name, "ncclGroupEnd", group.end());
    });
  }

  std::unique_ptr<Work> all_to_all_v_async(const Tensor& in, Tensor& out,
                                           std::span<const int64_t> send_counts,
                                           std::span<const int64_t> recv_counts) override {
    const char* name = "all_to_all_v";
    const auto [sends, recvs] =
        detail::check_all_to_all_v(*this, in, out, send_counts, recv_counts);
    if (in.device().is_cpu()) {
      Tensor staged = staged_output(out);
      all_to_all_v_async(in.to(device()), staged, send_counts, recv_counts)->wait();
      return copied_back(staged, out);
    }
    check_on_device(name, in, "in");
    return run(name, {in, out}, [&](ncclComm_t comm, cudaStream_t stream) {
      const size_t in_row = row_bytes(in), out_row = row_bytes(out);
      NcclGroup group;
      call(name, "ncclGroupStart", group.start_status());
      int64_t send_offset = 0, recv_offset = 0;
      for (int q = 0; q < size(); ++q) {
        if (sends[q] > 0)
          call(name, "ncclSend",
               ncclSend(row_ptr(in, send_offset), static_cast<size_t>(sends[q]) * in_row, ncclUint8,
                        q, comm, stream));
        if (recvs[q] > 0)
          call(name, "ncclRecv",
               ncclRecv(row_ptr(out, recv_offset), static_cast<size_t>(recvs[q]) * out_row,
                        ncclUint8, q, comm, stream));
        send_offset += sends[q];
        recv_offset += recvs[q];
      }
      call(name, "ncclGroupEnd", group.end());
    });
  }

  std::unique_ptr<Work> broadcast_async(Tensor& t, int root) override {
    const char* name = "broadcast";
    detail::check_broadcast(*this, t, root);
    if (t.device().is_cpu()) {
      Tensor staged = t.to(device());
      broadcast_async(staged, root)->wait();
      return copied_back(staged, t);
    }
    check_on_device(name, t, "t");
    return run(name, {t}, [&](ncclComm_t comm, cudaStream_t stream) {
      if (t.nbytes() == 0) return;
      call(name, "ncclBroadcast",
           ncclBroadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, comm, stream));
    });
  }

  std::unique_ptr<Work> batch_p2p_async(std::span<const P2POp> ops) override {
    const char* name = "batch_p2p";
    detail::check_batch_p2p(*this, ops);
    if (std::any_of(ops.begin(), ops.end(),
                    [](const P2POp& op) { return op.tensor.device().is_cpu(); })) {
      std::vector<P2POp> staged(ops.begin(), ops.end());
      for (P2POp& op : staged) {
        if (!op.tensor.device().is_cpu()) continue;
        op.tensor =
            op.kind == P2POp::Kind::send ? op.tensor.to(device()) : staged_output(op.tensor);
      }
      batch_p2p_async(staged)->wait();
      for (size_t i = 0; i < ops.size(); ++i) {
        if (ops[i].kind == P2POp::Kind::recv && ops[i].tensor.device().is_cpu()) {
          Tensor host = ops[i].tensor;  // shares the caller's storage
          host.copy_(staged[i].tensor);
        }
      }
      return std::make_unique<CompletedWork>();
    }
    std::vector<Tensor> tensors;
    for (size_t i = 0; i < ops.size(); ++i) {
      const std::string what = "op " + std::to_string(i) + "'s tensor";
      check_on_device(name, ops[i].tensor, what.c_str());
      tensors.push_back(ops[i].tensor);
    }
    return run(name, std::move(tensors), [&](ncclComm_t comm, cudaStream_t stream) {
      NcclGroup group;
      call(name, "ncclGroupStart", group.start_status());
      for (const P2POp& op : ops) {
        const Tensor& t = op.tensor;
        if (t.nbytes() == 0) continue;
        if (op.kind == P2POp::Kind::send) {
          call(name, "ncclSend", ncclSend(t.raw(), t.nbytes(), ncclUint8, op.peer, comm, stream));
        } else {
          call(name, "ncclRecv", ncclRecv(t.raw(), t.nbytes(), ncclUint8, op.peer, comm, stream));
        }
      }
      call(name, "ncclGroupEnd", group.end());
    });
  }

  // An all-reduce of one element, waited for on the host: every member has entered, and what
  // this rank queued on its current stream before has completed (the communication stream
  // waited for it).
  void barrier() override {
    Tensor token = Tensor::zeros({1}, DType::f32, Device::cuda(world().device));
    all_reduce_async(token, ReduceOp::sum)->synchronize();
  }

  std::shared_ptr<ProcessGroup> split(const std::vector<std::vector<int>>& groups) override {
    const char* name = "split";
    const auto [index, position] = detail::check_split(*this, groups);
    const int color = index >= 0 ? index : NCCL_SPLIT_NOCOLOR;
    const int key = index >= 0 ? position : 0;
    check_same_groups(groups);

    std::lock_guard lock(world().nccl_mutex);
    check_usable(name);
    ncclConfig_t config = nonblocking_config();
    // A non-blocking split writes the new communicator's handle when it completes, possibly
    // after this call has given up on it (timeout, abort): the slot outlives that case.
    auto slot = std::make_unique<ncclComm_t>(nullptr);
    try {
      call(name, "ncclCommSplit", ncclCommSplit(comm_->comm, color, key, slot.get(), &config));
      wait_ready(name, comm_->comm);  // the parent carries the split until it completes
      if (*slot != nullptr) wait_ready(name, *slot);
    } catch (...) {
      (void)slot.release();
      throw;
    }
    const ncclComm_t child = *slot;
    if (color == NCCL_SPLIT_NOCOLOR) {
      MOE_CHECK(child == nullptr, who(name), ": a rank in no group got a communicator");
      return nullptr;
    }
    MOE_CHECK(child != nullptr, who(name), ": ncclCommSplit returned no communicator");
    std::vector<int> members;
    for (int r : groups[static_cast<size_t>(color)]) members.push_back(comm_->world_ranks[r]);
    auto comm = std::make_shared<NcclComm>(comm_->world, child, std::move(members), key);
    comm_->children.push_back(comm);
    return std::make_shared<NcclProcessGroup>(std::move(comm));
  }

  void abort(const std::string& reason) override {
    std::vector<std::shared_ptr<NcclComm>> keep;  // released after the locks
    {
      std::lock_guard lock(world().nccl_mutex);
      std::vector<NcclComm*> targets;
      collect(comm_, keep, targets);
      world().abort_locked(targets, world().prefix() + "aborted: " + reason);
    }
  }

 private:
  NcclWorld& world() const { return *comm_->world; }

  // "all_gather (rank 1 of 4, world ranks [0, 1, 2, 3])", as every backend names a call.
  std::string who(const char* op) const { return detail::who(*this, op); }

  Device device() const { return Device::cuda(world().device); }

  // Host tensors travel through device copies: the operation runs on those, and the results
  // are copied back before it returns (a completed Work: host results are complete after
  // wait()). For the odd small host tensor (a seed, a flag); bulk data belongs on the device.
  Tensor staged_output(const Tensor& host) const {
    return Tensor::empty(host.shape(), host.dtype(), device());
  }
  static std::unique_ptr<Work> copied_back(const Tensor& staged, Tensor& host) {
    host.copy_(staged);  // on the current stream, which waited for the operation; synchronised
    return std::make_unique<CompletedWork>();
  }

  void check_on_device(const char* op, const Tensor& t, const char* what) const {
    MOE_CHECK(t.device() == Device::cuda(world().device), who(op), ": ", what, " is on ",
              t.device(), "; this NCCL group communicates tensors on cuda:", world().device);
  }

  // The groups of a split, as every member passed them: all must agree, or ncclCommSplit
  // would build groups nobody asked for.
  void check_same_groups(const std::vector<std::vector<int>>& groups) {
    uint64_t hash = 1469598103934665603ull;  // FNV-1a over the lists and their lengths
    auto mix = [&](int64_t v) {
      for (int b = 0; b < 8; ++b) {
        hash ^= static_cast<uint64_t>(v >> (8 * b)) & 0xff;
        hash *= 1099511628211ull;
      }
    };
    mix(static_cast<int64_t>(groups.size()));
    for (const auto& g : groups) {
      mix(static_cast<int64_t>(g.size()));
      for (int r : g) mix(r);
    }
    const Device dev = Device::cuda(world().device);
    Tensor mine = Tensor::from_vector<int64_t>({static_cast<int64_t>(hash)}, {1}, dev);
    Tensor all = Tensor::zeros({size()}, DType::i64, dev);
    std::unique_ptr<Work> work = all_gather_async(mine, all);
    work->synchronize();  // throws, rather than reading garbage, if the world failed meanwhile
    work->wait();
    const std::vector<int64_t> hashes = all.to_vector<int64_t>();
    std::vector<int> differ;
    for (int r = 0; r < size(); ++r)
      if (hashes[r] != hashes[rank()]) differ.push_back(r);
    MOE_CHECK(differ.empty(), who("split"), ": ranks ", list_str(differ),
              " passed other groups than this rank's; every member must pass the same groups");
  }

  void check_usable(const char* op) const {
    NcclWorld& w = world();
    const std::string failure = w.failure();
    MOE_CHECK(failure.empty(), who(op), ": the NCCL world failed earlier: ", failure);
    std::lock_guard lock(w.state_mutex);
    MOE_CHECK(!comm_->aborted, who(op), ": the group was aborted: ", comm_->abort_reason);
  }

  void call(const char* op, const char* fn, ncclResult_t status) const {
    if (status == ncclSuccess || status == ncclInProgress) return;
    MOE_FAIL(who(op), ": ", fn, " failed: ", nccl_error(status, comm_->comm));
  }

  // A non-blocking communicator may return from a call before its work is queued: polls until
  // it is (the stream then holds the kernels), NCCL reports an error, the world fails, or the
  // timeout passes (which fails the world). nccl_mutex is held.
  void wait_ready(const char* op, ncclComm_t comm) {
    NcclWorld& w = world();
    const Clock::time_point start = Clock::now();
    Backoff backoff;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t status = ncclCommGetAsyncError(comm, &state);
      if (status != ncclSuccess) state = status;
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) MOE_FAIL(who(op), ": NCCL error: ", nccl_error(state, comm));
      if (w.abort_requested.load()) MOE_FAIL(who(op), ": the NCCL world failed: ", w.failure());
      const Clock::duration elapsed = Clock::now() - start;
      if (elapsed > w.options.timeout) {
        std::ostringstream what;
        what.precision(3);
        what << who(op) << ": still in progress after " << seconds(elapsed) << " s (timeout "
             << seconds(w.options.timeout) << " s)";
        w.fail(what.str(), /*holding_nccl_mutex=*/true);
        MOE_FAIL(what.str(), "; the communicators were aborted");
      }
      backoff.pause();
    }
  }

  // Runs one operation: the communication stream waits for the caller's current stream, the
  // NCCL calls of `issue` go on the communication stream, and a completion event follows them.
  template <class Issue>
  std::unique_ptr<Work> run(const char* op, std::vector<Tensor> tensors, Issue&& issue) {
    NcclWorld& w = world();
    const StreamHandle caller = current_stream(w.device);  // also makes the device current
    std::lock_guard lock(w.nccl_mutex);
    check_usable(op);
    const auto stream = reinterpret_cast<StreamHandle>(comm_->stream);
    inputs_ready_.record(w.device, caller);
    inputs_ready_.block(stream);
    issue(comm_->comm, comm_->stream);
    wait_ready(op, comm_->comm);
    for (const Tensor& t : tensors) {
      if (t.nbytes() > 0) record_stream(t.raw(), t.device(), stream);
    }
    auto state =
        std::make_shared<WorkState>(std::string(op) + " #" + std::to_string(++comm_->next_seq) +
                                        " on world ranks " + list_str(world_ranks()),
                                    comm_.get(), w.device);
    state->done.record(w.device, stream);
    w.track(state);
    return std::make_unique<NcclWork>(std::move(state), std::move(tensors));
  }

  static void collect(const std::shared_ptr<NcclComm>& comm,
                      std::vector<std::shared_ptr<NcclComm>>& keep,
                      std::vector<NcclComm*>& targets) {
    keep.push_back(comm);
    targets.push_back(comm.get());
    for (const auto& weak : comm->children) {
      if (auto child = weak.lock()) collect(child, keep, targets);
    }
  }

  std::shared_ptr<NcclComm> comm_;
  Event inputs_ready_;  // re-recorded by each operation (a stream wait takes its state then)
};

}  // namespace

bool nccl_built() {
  return true;
}

int nccl_version() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return 0;
  return version;
}

NcclUniqueId nccl_unique_id() {
  ncclUniqueId id;
  const ncclResult_t status = ncclGetUniqueId(&id);
  MOE_CHECK(status == ncclSuccess, "ncclGetUniqueId failed: ", nccl_error(status, nullptr));
  NcclUniqueId bytes;
  std::memcpy(bytes.data(), id.internal, bytes.size());
  return bytes;
}

std::shared_ptr<ProcessGroup> make_nccl_world(const NcclUniqueId& id, int rank, int size,
                                              int device, const NcclOptions& options) {
  MOE_CHECK(size >= 1 && rank >= 0 && rank < size, "make_nccl_world: rank ", rank,
            " is not a rank of a world of ", size);
  MOE_CHECK(device >= 0, "make_nccl_world: rank ", rank, ": device ", device, " is not a device");
  MOE_CHECK(options.timeout.count() > 0, "make_nccl_world: the timeout must be positive");
  MOE_CHECK(options.watchdog_interval.count() > 0,
            "make_nccl_world: the watchdog interval must be positive");
  MOE_CUDA_CHECK(cudaSetDevice(device));
  auto world = std::make_shared<NcclWorld>(rank, size, device, options);

  ncclUniqueId unique;
  std::memcpy(unique.internal, id.data(), id.size());
  ncclConfig_t config = nonblocking_config();
  ncclComm_t comm = nullptr;
  ncclResult_t status = ncclCommInitRankConfig(&comm, size, unique, rank, &config);
  const Clock::time_point start = Clock::now();
  Backoff backoff;
  while (status == ncclInProgress) {
    if (Clock::now() - start > options.timeout) {
      (void)ncclCommAbort(comm);
      std::ostringstream what;
      what.precision(3);
      what << world->prefix() << "NCCL initialisation of rank " << rank << " of " << size
           << " on cuda:" << device << " timed out after " << seconds(Clock::now() - start)
           << " s: not every rank joined (same unique id? same world size?)";
      MOE_FAIL(what.str());
    }
    backoff.pause();
    ncclResult_t state = ncclInProgress;
    const ncclResult_t query = ncclCommGetAsyncError(comm, &state);
    status = query == ncclSuccess ? state : query;
  }
  if (status != ncclSuccess) {
    const std::string error = nccl_error(status, comm);
    if (comm != nullptr) (void)ncclCommAbort(comm);
    MOE_FAIL(world->prefix(), "NCCL initialisation of rank ", rank, " of ", size,
             " on cuda:", device, " failed: ", error);
  }
  std::vector<int> ranks(static_cast<size_t>(size));
  std::iota(ranks.begin(), ranks.end(), 0);
  auto root = std::make_shared<NcclComm>(world, comm, std::move(ranks), rank);
  return std::make_shared<NcclProcessGroup>(std::move(root));
}

#else  // a build without NCCL

bool nccl_built() {
  return false;
}
int nccl_version() {
  return 0;
}

NcclUniqueId nccl_unique_id() {
  MOE_FAIL("nccl_unique_id: this build has no NCCL (configure with CUDA and NCCL installed)");
}

std::shared_ptr<ProcessGroup> make_nccl_world(const NcclUniqueId&, int rank, int size, int device,
                                              const NcclOptions&) {
  MOE_CHECK(size >= 1 && rank >= 0 && rank < size, "make_nccl_world: rank ", rank,
            " is not a rank of a world of ", size);
  MOE_FAIL("make_nccl_world: rank ", rank, " on cuda:", device,
           ": this build has no NCCL (configure with CUDA and NCCL installed)");
}

#endif

}  // namespace moe::dist
