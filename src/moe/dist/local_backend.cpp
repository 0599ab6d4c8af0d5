// The Local backend (local_backend.h). A collective is two barriers around the data movement:
//   1. each member publishes its call and a pointer to its input in its slot, then waits;
//   2. every member checks all published calls agree (so all members throw the same error),
//      then reads its peers' inputs into its own output (copy or reduce, in rank order);
//   3. it waits again, so no member returns, and so reuses or frees its input or its slot,
//      while a peer may still be reading them.
// Point-to-point messages are copies queued in per-pair mailboxes of the communicator.
// All communicators of a world share one lock and condition variable: an abort (or a rank's
// function returning) wakes every waiter at once.
#include "moe/dist/local_backend.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <numeric>
#include <thread>
#include <utility>

#include "moe/core/stream.h"
#include "moe/dist/collective_checks.h"
#include "moe/dist/local_reduce.h"

namespace moe::dist {
namespace {

using detail::CallRecord;
using detail::list_str;
using detail::row_elems;

// What a member publishes for the collective in flight: the call as it made it (so every
// member can check that all calls agree) and where its input lives (so peers can read it).
struct Contribution {
  CallRecord call;
  const void* data = nullptr;  // this member's input (all_reduce: a private copy of it)
  Device device;
};

class LocalComm;

// State shared by every rank of one run_local.
class LocalWorld {
 public:
  explicit LocalWorld(int size) : finished_(static_cast<size_t>(size), false) {}

  std::mutex mutex;
  std::condition_variable cv;

  // Records the first failure and wakes every waiter; later failures keep the first record.
  void abort(int world_rank, const std::string& what) {
    std::lock_guard lock(mutex);
    if (!aborted_) {
      aborted_ = true;
      abort_rank_ = world_rank;
      abort_what_ = what;
    }
    cv.notify_all();
  }
  int abort_rank() {
    std::lock_guard lock(mutex);
    return abort_rank_;
  }
  bool aborted_locked() const { return aborted_; }
  [[noreturn]] void throw_aborted_locked() const {
    throw Error("collective aborted: rank " + std::to_string(abort_rank_) +
                " failed: " + abort_what_);
  }
  void throw_if_aborted() {
    std::lock_guard lock(mutex);
    if (aborted_) throw_aborted_locked();
  }

  // A rank's function has returned (or thrown): it will never join another collective.
  void mark_finished(int world_rank) {
    std::lock_guard lock(mutex);
    finished_[static_cast<size_t>(world_rank)] = true;
    cv.notify_all();
  }
  bool finished_locked(int world_rank) const { return finished_[static_cast<size_t>(world_rank)]; }

 private:
  bool aborted_ = false;
  int abort_rank_ = -1;
  std::string abort_what_;
  std::vector<bool> finished_;
};

// One communicator: its members (as world ranks, in group order), their slots, a reusable
// barrier and the point-to-point mailboxes. Guarded by the world's lock.
class LocalComm {
 public:
  explicit LocalComm(std::vector<int> world_ranks)
      : world_ranks_(std::move(world_ranks)),
        slots_(world_ranks_.size()),
        mailboxes_(world_ranks_.size() * world_ranks_.size()) {}

  const std::vector<int>& world_ranks() const { return world_ranks_; }
  int size() const { return static_cast<int>(world_ranks_.size()); }
  // Slot r is written only by member r, before the first barrier of a collective, and read by
  // everyone between the two barriers; the lock taken by the barrier orders those accesses.
  std::vector<Contribution>& slots() { return slots_; }

  // Blocks until every member has arrived. Throws instead when the world is (or becomes)
  // aborted, or when a member's function has returned, so it can never arrive.
  void arrive_and_wait(LocalWorld& world, const char* collective) {
    std::unique_lock lock(world.mutex);
    if (world.aborted_locked()) world.throw_aborted_locked();
    const uint64_t generation = generation_;
    if (++arrived_ == size()) {
      arrived_ = 0;
      ++generation_;
      world.cv.notify_all();
      return;
    }
    int gone = -1;
    world.cv.wait(lock, [&] {
      if (generation_ != generation || world.aborted_locked()) return true;
      for (int r : world_ranks_) {
        if (world.finished_locked(r)) {
          gone = r;
          return true;
        }
      }
      return false;
    });
    if (generation_ != generation) return;  // completed: wins over a later abort
    if (world.aborted_locked()) world.throw_aborted_locked();
    MOE_FAIL(collective, " on world ranks ", list_str(world_ranks_), ": world rank ", gone,
             " returned from its function without joining this collective");
  }

  // The communicator of list `index` of the split in flight (called by its members between
  // the split's two barriers, with the lists every member agreed on). The first member to ask
  // builds the communicators of every list; the barrier generation tells one split from the
  // next.
  std::shared_ptr<LocalComm> split_member(LocalWorld& world,
                                          const std::vector<std::vector<int>>& groups,
                                          size_t index) {
    std::lock_guard lock(world.mutex);
    if (split_generation_ != generation_) {
      split_generation_ = generation_;
      split_comms_.clear();
      for (const std::vector<int>& ranks : groups) {
        std::vector<int> members;
        for (int r : ranks) members.push_back(world_ranks_[static_cast<size_t>(r)]);
        split_comms_.push_back(std::make_shared<LocalComm>(std::move(members)));
      }
    }
    return split_comms_[index];
  }

  // Queues a message from group rank `src` to `dst` (a copy the receiver will read).
  void post(LocalWorld& world, int src, int dst, Tensor message) {
    std::lock_guard lock(world.mutex);
    mailbox(src, dst).push_back(std::move(message));
    world.cv.notify_all();
  }

  // The oldest message from `src` to `dst`, waiting for one. Throws when the world aborts or
  // `src` can never send it (its function returned; or src == dst and nothing was queued).
  Tensor take(LocalWorld& world, int src, int dst, const std::string& who) {
    std::unique_lock lock(world.mutex);
    std::deque<Tensor>& box = mailbox(src, dst);
    const int src_world = world_ranks_[static_cast<size_t>(src)];
    MOE_CHECK(!box.empty() || src != dst, who, ": receives from itself, but no send to itself ",
              "was issued before (a batch publishes its sends before its receives wait)");
    world.cv.wait(lock, [&] {
      return !box.empty() || world.aborted_locked() || world.finished_locked(src_world);
    });
    if (box.empty()) {
      if (world.aborted_locked()) world.throw_aborted_locked();
      MOE_FAIL(who, ": receives from rank ", src, " (world rank ", src_world,
               "), whose function returned without sending");
    }
    Tensor message = std::move(box.front());
    box.pop_front();
    return message;
  }

 private:
  std::deque<Tensor>& mailbox(int src, int dst) {
    return mailboxes_[static_cast<size_t>(src) * world_ranks_.size() + static_cast<size_t>(dst)];
  }

  std::vector<int> world_ranks_;
  std::vector<Contribution> slots_;
  std::vector<std::deque<Tensor>> mailboxes_;  // [src * size + dst]
  int arrived_ = 0;
  uint64_t generation_ = 0;
  uint64_t split_generation_ = ~uint64_t{0};
  std::vector<std::shared_ptr<LocalComm>> split_comms_;
};

class LocalProcessGroup final : public ProcessGroup {
 public:
  LocalProcessGroup(std::shared_ptr<LocalWorld> world, std::shared_ptr<LocalComm> comm, int rank)
      : world_(std::move(world)), comm_(std::move(comm)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return comm_->size(); }
  const std::vector<int>& world_ranks() const override { return comm_->world_ranks(); }
  std::string backend() const override { return "local"; }

  std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override {
    guarded([&] {
      detail::check_all_reduce(*this, t);
      // Peers read this copy while this rank overwrites t with the result.
      const Tensor copy = t.clone();
      Contribution mine = contribution("all_reduce", copy);
      mine.call.op = op;
      exchange(std::move(mine), t.device(),
               [&](const std::vector<Contribution>& slots) { reduce_into(slots, 0, t, op); });
    });
    return done();
  }

  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override {
    guarded([&] {
      detail::check_all_gather(*this, in, out);
      exchange(contribution("all_gather", in), out.device(),
               [&](const std::vector<Contribution>& slots) {
                 const int64_t n = in.size(0);
                 for (int q = 0; q < size(); ++q) copy_rows(slots[q], 0, out, q * n, n);
               });
    });
    return done();
  }

  std::unique_ptr<Work> all_gather_v_async(const Tensor& in, Tensor& out,
                                           std::span<const int64_t> counts) override {
    guarded([&] {
      const std::vector<int64_t> rows = detail::check_all_gather_v(*this, in, out, counts);
      Contribution mine = contribution("all_gather_v", in);
      mine.call.counts = rows;
      exchange(std::move(mine), out.device(), [&](const std::vector<Contribution>& slots) {
        int64_t offset = 0;
        for (int q = 0; q < size(); ++q) {
          copy_rows(slots[q], 0, out, offset, rows[q]);
          offset += rows[q];
        }
      });
    });
    return done();
  }

  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, Tensor& out,
                                             ReduceOp op) override {
    guarded([&] {
      const int64_t n = detail::check_reduce_scatter(*this, in, out);
      Contribution mine = contribution("reduce_scatter", in);
      mine.call.op = op;
      exchange(std::move(mine), out.device(), [&](const std::vector<Contribution>& slots) {
        reduce_into(slots, detail::row_bytes(in) * static_cast<size_t>(rank_ * n), out, op);
      });
    });
    return done();
  }

  std::unique_ptr<Work> reduce_scatter_v_async(const Tensor& in, Tensor& out,
                                               std::span<const int64_t> counts,
                                               ReduceOp op) override {
    guarded([&] {
      const std::vector<int64_t> rows = detail::check_reduce_scatter_v(*this, in, out, counts);
      Contribution mine = contribution("reduce_scatter_v", in);
      mine.call.op = op;
      mine.call.counts = rows;
      exchange(std::move(mine), out.device(), [&](const std::vector<Contribution>& slots) {
        const int64_t offset = std::accumulate(rows.begin(), rows.begin() + rank_, int64_t{0});
        reduce_into(slots, detail::row_bytes(in) * static_cast<size_t>(offset), out, op);
      });
    });
    return done();
  }

  std::unique_ptr<Work> all_to_all_v_async(const Tensor& in, Tensor& out,
                                           std::span<const int64_t> send_counts,
                                           std::span<const int64_t> recv_counts) override {
    guarded([&] {
      auto [sends, recvs] =
          detail::check_all_to_all_v(*this, in, out, send_counts, recv_counts);
      Contribution mine = contribution("all_to_all_v", in);
      mine.call.counts = sends;
      mine.call.recv_counts = recvs;
      exchange(std::move(mine), out.device(), [&](const std::vector<Contribution>& slots) {
        int64_t dst_offset = 0;
        for (int q = 0; q < size(); ++q) {
          const std::vector<int64_t>& peer_sends = slots[q].call.counts;
          const int64_t src_offset =
              std::accumulate(peer_sends.begin(), peer_sends.begin() + rank_, int64_t{0});
          copy_rows(slots[q], src_offset, out, dst_offset, recvs[q]);
          dst_offset += recvs[q];
        }
      });
    });
    return done();
  }

  std::unique_ptr<Work> broadcast_async(Tensor& t, int root) override {
    guarded([&] {
      detail::check_broadcast(*this, t, root);
      Contribution mine = contribution("broadcast", t);
      mine.call.root = root;
      exchange(std::move(mine), t.device(), [&](const std::vector<Contribution>& slots) {
        if (rank_ != root)
          copy_bytes(t.raw(), t.device(), slots[root].data, slots[root].device, t.nbytes());
      });
    });
    return done();
  }

  std::unique_ptr<Work> batch_p2p_async(std::span<const P2POp> ops) override {
    guarded([&] {
      detail::check_batch_p2p(*this, ops);
      // Publish every send first (copies, complete before they are queued), so that the
      // receives below can never wait on a send of this batch.
      std::vector<Tensor> messages;
      for (const P2POp& op : ops)
        if (op.kind == P2POp::Kind::send) messages.push_back(op.tensor.clone());
      for (const Tensor& m : messages)
        if (m.is_cuda()) synchronize(m.device().index);
      size_t next = 0;
      for (const P2POp& op : ops)
        if (op.kind == P2POp::Kind::send) comm_->post(*world_, rank_, op.peer, messages[next++]);
      const std::string name = detail::who(*this, "batch_p2p");
      for (const P2POp& op : ops) {
        if (op.kind != P2POp::Kind::recv) continue;
        const Tensor message = comm_->take(*world_, op.peer, rank_, name);
        detail::check_p2p_match(*this, op.peer, message.dtype(), message.shape(), op.tensor);
        copy_bytes(op.tensor.raw(), op.tensor.device(), message.raw(), message.device(),
                   message.nbytes());
        // The message may be freed once this returns: the copy must be done.
        if (op.tensor.is_cuda()) synchronize(op.tensor.device().index);
      }
    });
    return done();
  }

  void barrier() override {
    guarded([&] {
      Contribution mine;
      mine.call.collective = "barrier";
      exchange(std::move(mine), Device::cpu(), [](const std::vector<Contribution>&) {});
    });
  }

  std::shared_ptr<ProcessGroup> split(const std::vector<std::vector<int>>& groups) override {
    std::shared_ptr<ProcessGroup> group;
    guarded([&] {
      const auto [index, position] = detail::check_split(*this, groups);
      Contribution mine;
      mine.call.collective = "split";
      mine.call.groups = groups;
      exchange(std::move(mine), Device::cpu(), [&](const std::vector<Contribution>&) {
        if (index < 0) return;
        group = std::make_shared<LocalProcessGroup>(
            world_, comm_->split_member(*world_, groups, static_cast<size_t>(index)), position);
      });
    });
    return group;
  }

  void abort(const std::string& reason) override { world_->abort(world_rank(), reason); }

 private:
  int world_rank() const { return comm_->world_ranks()[static_cast<size_t>(rank_)]; }

  static std::unique_ptr<Work> done() { return std::make_unique<CompletedWork>(); }

  // Runs one call; any error in it breaks the communicator (peers may be waiting on this
  // rank), so it aborts the world before propagating.
  template <class Body>
  void guarded(Body&& body) {
    try {
      world_->throw_if_aborted();
      body();
    } catch (const std::exception& e) {
      world_->abort(world_rank(), e.what());
      throw;
    }
  }

  static Contribution contribution(const char* collective, const Tensor& in) {
    Contribution c;
    c.call = detail::call_record(collective, in);
    c.data = in.raw();
    c.device = in.device();
    return c;
  }

  // Publishes `mine`, waits for every member, checks the calls agree, runs `move` (which
  // writes this rank's output on `out_device`), then waits again.
  template <class Move>
  void exchange(Contribution mine, Device out_device, Move&& move) {
    const std::string name = mine.call.collective;
    // The producer: the input must be complete before a peer reads it.
    if (mine.device.is_cuda()) synchronize(mine.device.index);
    std::vector<Contribution>& slots = comm_->slots();
    slots[static_cast<size_t>(rank_)] = std::move(mine);
    comm_->arrive_and_wait(*world_, name.c_str());
    std::vector<CallRecord> records;
    for (const Contribution& c : slots) records.push_back(c.call);
    detail::check_records_agree(records, world_ranks());
    move(slots);
    // The consumer: our reads of the peers' inputs must be done before they may go on.
    if (out_device.is_cuda()) synchronize(out_device.index);
    comm_->arrive_and_wait(*world_, name.c_str());
  }

  // out rows [dst_row, dst_row + rows) = the peer's input rows [src_row, src_row + rows).
  static void copy_rows(const Contribution& src, int64_t src_row, Tensor& out, int64_t dst_row,
                        int64_t rows) {
    const size_t bytes_per_row =
        static_cast<size_t>(row_elems(src.call.shape)) * dtype_size(src.call.dtype);
    if (rows == 0 || bytes_per_row == 0) return;
    Tensor dst = out.rows(dst_row, rows);
    copy_bytes(dst.raw(), dst.device(),
               static_cast<const char*>(src.data) + static_cast<size_t>(src_row) * bytes_per_row,
               src.device, static_cast<size_t>(rows) * bytes_per_row);
  }

  // out = op over members (in rank order) of out.numel() elements at byte `offset` of each
  // member's input.
  void reduce_into(const std::vector<Contribution>& slots, size_t offset, Tensor& out,
                   ReduceOp op) const {
    const int64_t n = out.numel();
    if (n == 0) return;
    if (out.is_cuda()) {
      // Gather the peers' chunks next to each other on this rank's device, then one kernel.
      MOE_CUDA_ONLY(const size_t bytes = static_cast<size_t>(n) * dtype_size(out.dtype());
                    Tensor staging = Tensor::empty({size(), n}, out.dtype(), out.device());
                    for (int q = 0; q < size(); ++q) {
                      copy_bytes(static_cast<char*>(staging.raw()) + static_cast<size_t>(q) * bytes,
                                 out.device(), static_cast<const char*>(slots[q].data) + offset,
                                 slots[q].device, bytes);
                    } detail::local_reduce_cuda(staging, out, op);
                    return;)
    }
    std::vector<const void*> inputs;
    for (const Contribution& c : slots) inputs.push_back(static_cast<const char*>(c.data) + offset);
    detail::local_reduce_cpu(inputs, out.raw(), n, out.dtype(), op);
  }

  std::shared_ptr<LocalWorld> world_;
  std::shared_ptr<LocalComm> comm_;
  int rank_;
};

}  // namespace

void run_local(int world_size, const std::function<void(std::shared_ptr<ProcessGroup> world)>& fn) {
  MOE_CHECK(world_size >= 1, "run_local: world_size must be at least 1, got ", world_size);
  auto world = std::make_shared<LocalWorld>(world_size);
  std::vector<int> all(static_cast<size_t>(world_size));
  std::iota(all.begin(), all.end(), 0);
  auto comm = std::make_shared<LocalComm>(all);

  std::vector<std::exception_ptr> errors(static_cast<size_t>(world_size));
  std::vector<int> error_order;  // ranks in the order their functions threw
  std::mutex error_mutex;
  auto body = [&](int rank) {
    std::exception_ptr error;
    std::string what;
    try {
      fn(std::make_shared<LocalProcessGroup>(world, comm, rank));
    } catch (const std::exception& e) {
      error = std::current_exception();
      what = e.what();
    } catch (...) {
      error = std::current_exception();
      what = "unknown exception";
    }
    if (error) {
      {
        std::lock_guard lock(error_mutex);
        errors[static_cast<size_t>(rank)] = error;
        error_order.push_back(rank);
      }
      world->abort(rank, what);
    }
    world->mark_finished(rank);
  };

  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(world_size));
  try {
    for (int r = 0; r < world_size; ++r) threads.emplace_back(body, r);
  } catch (const std::exception& e) {
    // Ranks that never started can never join: release the ones that did.
    const int missing = static_cast<int>(threads.size());
    world->abort(missing, std::string("could not start its thread: ") + e.what());
    for (int r = missing; r < world_size; ++r) world->mark_finished(r);
    for (std::thread& t : threads) t.join();
    throw;
  }
  for (std::thread& t : threads) t.join();

  const int first = world->abort_rank();
  if (first >= 0 && first < world_size && errors[static_cast<size_t>(first)])
    std::rethrow_exception(errors[static_cast<size_t>(first)]);
  if (!error_order.empty())
    std::rethrow_exception(errors[static_cast<size_t>(error_order.front())]);
}

}  // namespace moe::dist
