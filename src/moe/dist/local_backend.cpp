// The Local backend (local_backend.h). A collective is two barriers around the data movement:
//   1. each member publishes its call and a pointer to its input in its slot, then waits;
//   2. every member checks all published calls agree (so all members throw the same error),
//      then reads its peers' inputs into its own output (copy or reduce, in rank order);
//   3. it waits again, so no member returns, and so reuses or frees its input or its slot,
//      while a peer may still be reading them.
// All communicators of a world share one lock and condition variable: an abort (or a rank's
// function returning) wakes every waiter at once.
#include "moe/dist/local_backend.h"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <numeric>
#include <sstream>
#include <thread>
#include <utility>

#include "moe/core/stream.h"
#include "moe/dist/local_reduce.h"

namespace moe::dist {
namespace {

template <class Range>
std::string list_str(const Range& values) {
  std::ostringstream out;
  out << "[";
  bool first = true;
  for (const auto& v : values) {
    out << (first ? "" : ", ") << v;
    first = false;
  }
  out << "]";
  return out.str();
}

int64_t sum_of(const std::vector<int64_t>& counts) {
  return std::accumulate(counts.begin(), counts.end(), int64_t{0});
}

// Elements per row (along dim 0) of a tensor of this shape.
int64_t row_elems(const Shape& shape) {
  int64_t n = 1;
  for (size_t d = 1; d < shape.size(); ++d) n *= shape[d];
  return n;
}

Shape row_shape(const Shape& shape) {
  return Shape(shape.begin() + 1, shape.end());
}

Shape with_rows(const Shape& shape, int64_t rows) {
  Shape out = shape;
  out[0] = rows;
  return out;
}

// What a member publishes for the collective in flight: the call as it made it (so every
// member can check that all calls agree) and where its input lives (so peers can read it).
struct Contribution {
  const char* collective = "";
  const void* data = nullptr;  // this member's input (all_reduce: a private copy of it)
  Device device;
  DType dtype = DType::u8;
  Shape shape;
  ReduceOp op = ReduceOp::sum;
  int root = -1;
  std::vector<int64_t> counts;       // all_gather_v, reduce_scatter_v; all_to_all_v: sends
  std::vector<int64_t> recv_counts;  // all_to_all_v
};

class LocalComm;

// State shared by every rank of one run_local.
class LocalWorld {
 public:
  explicit LocalWorld(int size) : finished_(static_cast<size_t>(size), false), calls_(size) {}

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

  // The communicator of the k-th new_subgroup call for this set of members made by
  // `world_rank`: the first member to arrive creates it, the others join it.
  std::shared_ptr<LocalComm> join_subgroup(int world_rank, const std::vector<int>& members);

 private:
  bool aborted_ = false;
  int abort_rank_ = -1;
  std::string abort_what_;
  std::vector<bool> finished_;
  // Per world rank: member set (sorted) -> number of new_subgroup calls made for it so far.
  std::vector<std::map<std::vector<int>, int>> calls_;
  struct Forming {
    std::shared_ptr<LocalComm> comm;
    int joined = 0;
  };
  std::map<std::pair<std::vector<int>, int>, Forming> forming_;  // (set, call index)
};

// One communicator: its members (as world ranks, in group order), their slots and a
// reusable barrier. Guarded by the world's lock.
class LocalComm {
 public:
  explicit LocalComm(std::vector<int> world_ranks)
      : world_ranks_(std::move(world_ranks)), slots_(world_ranks_.size()) {}

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

 private:
  std::vector<int> world_ranks_;
  std::vector<Contribution> slots_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

std::shared_ptr<LocalComm> LocalWorld::join_subgroup(int world_rank,
                                                     const std::vector<int>& members) {
  std::vector<int> key = members;
  std::sort(key.begin(), key.end());
  std::lock_guard lock(mutex);
  if (aborted_) throw_aborted_locked();
  const int call = calls_[static_cast<size_t>(world_rank)][key]++;
  auto it = forming_.find({key, call});
  if (it == forming_.end())
    it = forming_
             .emplace(std::make_pair(key, call), Forming{std::make_shared<LocalComm>(members), 0})
             .first;
  Forming& forming = it->second;
  MOE_CHECK(forming.comm->world_ranks() == members, "new_subgroup: world rank ", world_rank,
            " lists the members as world ranks ", list_str(members), " but another member lists ",
            list_str(forming.comm->world_ranks()),
            "; every member must pass the same ranks in the same order");
  std::shared_ptr<LocalComm> comm = forming.comm;
  if (++forming.joined == comm->size()) forming_.erase(it);
  return comm;
}

class LocalProcessGroup final : public ProcessGroup {
 public:
  LocalProcessGroup(std::shared_ptr<LocalWorld> world, std::shared_ptr<LocalComm> comm, int rank)
      : world_(std::move(world)), comm_(std::move(comm)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return comm_->size(); }
  const std::vector<int>& world_ranks() const override { return comm_->world_ranks(); }
  std::string backend() const override { return "local"; }

  void all_reduce(Tensor& t, ReduceOp op) override {
    guarded([&] {
      const char* name = "all_reduce";
      check_defined(t, name, "t");
      check_reducible(name, t.dtype());
      // Peers read this copy while this rank overwrites t with the result.
      const Tensor copy = t.clone();
      Contribution mine = contribution(name, copy);
      mine.op = op;
      exchange(std::move(mine), t.device(), [&](const std::vector<Contribution>& slots) {
        check_agree(name, "shape", slots, [](const Contribution& c) { return shape_str(c.shape); });
        check_agree(name, "op", slots,
                    [](const Contribution& c) { return std::string(reduce_op_name(c.op)); });
        reduce_into(slots, 0, t, op);
      });
    });
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    guarded([&] {
      const char* name = "all_gather";
      check_in_out(name, in, out);
      const Shape expected = with_rows(in.shape(), size() * in.size(0));
      MOE_CHECK(out.shape() == expected, who(name), ": out has shape ", shape_str(out.shape()),
                ", expected ", shape_str(expected), " = ", size(), " ranks x in ",
                shape_str(in.shape()));
      exchange(contribution(name, in), out.device(), [&](const std::vector<Contribution>& slots) {
        check_agree(name, "in shape", slots,
                    [](const Contribution& c) { return shape_str(c.shape); });
        const int64_t n = in.size(0);
        for (int q = 0; q < size(); ++q) copy_rows(slots[q], 0, out, q * n, n);
      });
    });
  }

  void all_gather_v(const Tensor& in, Tensor& out, std::span<const int64_t> counts) override {
    guarded([&] {
      const char* name = "all_gather_v";
      check_in_out(name, in, out);
      const std::vector<int64_t> rows = check_counts(name, "counts", counts);
      MOE_CHECK(in.size(0) == rows[rank_], who(name), ": in has shape ", shape_str(in.shape()),
                " but counts[", rank_, "] = ", rows[rank_], " rows (counts ", list_str(rows), ")");
      const Shape expected = with_rows(in.shape(), sum_of(rows));
      MOE_CHECK(out.shape() == expected, who(name), ": out has shape ", shape_str(out.shape()),
                ", expected ", shape_str(expected), " (sum of counts ", list_str(rows), ")");
      Contribution mine = contribution(name, in);
      mine.counts = rows;
      exchange(std::move(mine), out.device(), [&](const std::vector<Contribution>& slots) {
        check_agree(name, "counts", slots,
                    [](const Contribution& c) { return list_str(c.counts); });
        check_agree(name, "row shape", slots,
                    [](const Contribution& c) { return shape_str(row_shape(c.shape)); });
        int64_t offset = 0;
        for (int q = 0; q < size(); ++q) {
          copy_rows(slots[q], 0, out, offset, rows[q]);
          offset += rows[q];
        }
      });
    });
  }

  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    guarded([&] {
      const char* name = "reduce_scatter";
      check_in_out(name, in, out);
      check_reducible(name, in.dtype());
      MOE_CHECK(in.size(0) % size() == 0, who(name), ": in has shape ", shape_str(in.shape()),
                ", whose ", in.size(0), " rows do not split over ", size(), " ranks");
      const int64_t n = in.size(0) / size();
      const Shape expected = with_rows(in.shape(), n);
      MOE_CHECK(out.shape() == expected, who(name), ": out has shape ", shape_str(out.shape()),
                ", expected ", shape_str(expected), " = in ", shape_str(in.shape()), " / ", size(),
                " ranks");
      Contribution mine = contribution(name, in);
      mine.op = op;
      exchange(std::move(mine), out.device(), [&](const std::vector<Contribution>& slots) {
        check_agree(name, "in shape", slots,
                    [](const Contribution& c) { return shape_str(c.shape); });
        check_agree(name, "op", slots,
                    [](const Contribution& c) { return std::string(reduce_op_name(c.op)); });
        reduce_into(slots, row_bytes(in) * static_cast<size_t>(rank_ * n), out, op);
      });
    });
  }

  void reduce_scatter_v(const Tensor& in, Tensor& out, std::span<const int64_t> counts,
                        ReduceOp op) override {
    guarded([&] {
      const char* name = "reduce_scatter_v";
      check_in_out(name, in, out);
      check_reducible(name, in.dtype());
      const std::vector<int64_t> rows = check_counts(name, "counts", counts);
      MOE_CHECK(in.size(0) == sum_of(rows), who(name), ": in has shape ", shape_str(in.shape()),
                " but the counts ", list_str(rows), " sum to ", sum_of(rows), " rows");
      const Shape expected = with_rows(in.shape(), rows[rank_]);
      MOE_CHECK(out.shape() == expected, who(name), ": out has shape ", shape_str(out.shape()),
                ", expected ", shape_str(expected), " (counts[", rank_, "] of ", list_str(rows),
                ")");
      Contribution mine = contribution(name, in);
      mine.op = op;
      mine.counts = rows;
      exchange(std::move(mine), out.device(), [&](const std::vector<Contribution>& slots) {
        check_agree(name, "counts", slots,
                    [](const Contribution& c) { return list_str(c.counts); });
        check_agree(name, "in shape", slots,
                    [](const Contribution& c) { return shape_str(c.shape); });
        check_agree(name, "op", slots,
                    [](const Contribution& c) { return std::string(reduce_op_name(c.op)); });
        const int64_t offset = std::accumulate(rows.begin(), rows.begin() + rank_, int64_t{0});
        reduce_into(slots, row_bytes(in) * static_cast<size_t>(offset), out, op);
      });
    });
  }

  void all_to_all_v(const Tensor& in, Tensor& out, std::span<const int64_t> send_counts,
                    std::span<const int64_t> recv_counts) override {
    guarded([&] {
      const char* name = "all_to_all_v";
      check_in_out(name, in, out);
      const std::vector<int64_t> sends = check_counts(name, "send_counts", send_counts);
      const std::vector<int64_t> recvs = check_counts(name, "recv_counts", recv_counts);
      MOE_CHECK(in.size(0) == sum_of(sends), who(name), ": in has shape ", shape_str(in.shape()),
                " but send_counts ", list_str(sends), " sum to ", sum_of(sends), " rows");
      const Shape expected = with_rows(in.shape(), sum_of(recvs));
      MOE_CHECK(out.shape() == expected, who(name), ": out has shape ", shape_str(out.shape()),
                ", expected ", shape_str(expected), " (recv_counts ", list_str(recvs), ")");
      Contribution mine = contribution(name, in);
      mine.counts = sends;
      mine.recv_counts = recvs;
      exchange(std::move(mine), out.device(), [&](const std::vector<Contribution>& slots) {
        check_agree(name, "row shape", slots,
                    [](const Contribution& c) { return shape_str(row_shape(c.shape)); });
        for (int q = 0; q < size(); ++q) {
          for (int r = 0; r < size(); ++r) {
            MOE_CHECK(slots[q].counts[r] == slots[r].recv_counts[q], name, " on world ranks ",
                      list_str(world_ranks()), ": rank ", q, " sends ", slots[q].counts[r],
                      " rows to rank ", r, ", which expects ", slots[r].recv_counts[q],
                      " (send_counts of rank ", q, ": ", list_str(slots[q].counts),
                      "; recv_counts of rank ", r, ": ", list_str(slots[r].recv_counts), ")");
          }
        }
        int64_t dst_offset = 0;
        for (int q = 0; q < size(); ++q) {
          const std::vector<int64_t>& peer_sends = slots[q].counts;
          const int64_t src_offset =
              std::accumulate(peer_sends.begin(), peer_sends.begin() + rank_, int64_t{0});
          copy_rows(slots[q], src_offset, out, dst_offset, recvs[q]);
          dst_offset += recvs[q];
        }
      });
    });
  }

  void broadcast(Tensor& t, int root) override {
    guarded([&] {
      const char* name = "broadcast";
      check_defined(t, name, "t");
      MOE_CHECK(root >= 0 && root < size(), who(name), ": root ", root,
                " is not a rank of a group of ", size());
      Contribution mine = contribution(name, t);
      mine.root = root;
      exchange(std::move(mine), t.device(), [&](const std::vector<Contribution>& slots) {
        check_agree(name, "root", slots,
                    [](const Contribution& c) { return std::to_string(c.root); });
        check_agree(name, "shape", slots, [](const Contribution& c) { return shape_str(c.shape); });
        if (rank_ != root)
          copy_bytes(t.raw(), t.device(), slots[root].data, slots[root].device, t.nbytes());
      });
    });
  }

  void barrier() override {
    guarded([&] {
      Contribution mine;
      mine.collective = "barrier";
      exchange(std::move(mine), Device::cpu(), [](const std::vector<Contribution>&) {});
    });
  }

  std::shared_ptr<ProcessGroup> new_subgroup(const std::vector<int>& ranks) override {
    std::shared_ptr<ProcessGroup> group;
    guarded([&] {
      const char* name = "new_subgroup";
      MOE_CHECK(!ranks.empty(), who(name), ": empty list of ranks");
      std::vector<int> members;
      std::vector<bool> seen(static_cast<size_t>(size()), false);
      int my_index = -1;
      for (size_t i = 0; i < ranks.size(); ++i) {
        const int r = ranks[i];
        MOE_CHECK(r >= 0 && r < size(), who(name), ": rank ", r, " in ", list_str(ranks),
                  " is not a rank of a group of ", size());
        MOE_CHECK(!seen[static_cast<size_t>(r)], who(name), ": rank ", r, " appears twice in ",
                  list_str(ranks));
        seen[static_cast<size_t>(r)] = true;
        members.push_back(world_ranks()[static_cast<size_t>(r)]);
        if (r == rank_) my_index = static_cast<int>(i);
      }
      MOE_CHECK(my_index >= 0, who(name), ": this rank is not in ", list_str(ranks),
                "; only the members call new_subgroup");
      group = std::make_shared<LocalProcessGroup>(
          world_, world_->join_subgroup(world_rank(), members), my_index);
    });
    return group;
  }

 private:
  int world_rank() const { return comm_->world_ranks()[static_cast<size_t>(rank_)]; }

  // "all_gather (rank 1 of 4, world ranks [0, 2, 4, 6])": the start of this rank's messages.
  std::string who(const char* collective) const {
    return moe::detail::concat(collective, " (rank ", rank_, " of ", size(), ", world ranks ",
                               list_str(world_ranks()), ")");
  }

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

  Contribution contribution(const char* collective, const Tensor& in) const {
    Contribution c;
    c.collective = collective;
    c.data = in.raw();
    c.device = in.device();
    c.dtype = in.dtype();
    c.shape = in.shape();
    return c;
  }

  // Publishes `mine`, waits for every member, checks the calls agree, runs `move` (which
  // writes this rank's output on `out_device`), then waits again.
  template <class Move>
  void exchange(Contribution mine, Device out_device, Move&& move) {
    const char* name = mine.collective;
    // The producer: the input must be complete before a peer reads it.
    if (mine.device.is_cuda()) synchronize(mine.device.index);
    std::vector<Contribution>& slots = comm_->slots();
    slots[static_cast<size_t>(rank_)] = std::move(mine);
    comm_->arrive_and_wait(*world_, name);
    check_agree("collective mismatch", "call", slots,
                [](const Contribution& c) { return std::string(c.collective); });
    if (std::string(name) != "barrier") {
      check_agree(name, "dtype", slots,
                  [](const Contribution& c) { return std::string(dtype_name(c.dtype)); });
      check_agree(name, "device kind", slots, [](const Contribution& c) {
        return std::string(c.device.is_cuda() ? "cuda" : "cpu");
      });
    }
    move(slots);
    // The consumer: our reads of the peers' inputs must be done before they may go on.
    if (out_device.is_cuda()) synchronize(out_device.index);
    comm_->arrive_and_wait(*world_, name);
  }

  // Throws (on every member alike) unless `key` is the same for all members' calls.
  template <class Key>
  void check_agree(const char* collective, const char* what, const std::vector<Contribution>& slots,
                   Key key) const {
    const std::string first = key(slots[0]);
    bool same = true;
    for (const Contribution& c : slots) same = same && key(c) == first;
    if (same) return;
    std::ostringstream all;
    for (size_t q = 0; q < slots.size(); ++q)
      all << (q ? ", " : "") << "rank " << q << " " << key(slots[q]);
    MOE_FAIL(collective, " on world ranks ", list_str(world_ranks()), ": the ", what,
             " differs across ranks: ", all.str());
  }

  void check_reducible(const char* collective, DType dtype) const {
    MOE_CHECK(detail::reducible(dtype), who(collective), ": dtype ", dtype,
              " cannot be reduced; allowed: f64 f32 bf16 f16 i64 i32");
  }

  // Both defined, same dtype and device, at least 1-D (split along dim 0), same row shape.
  void check_in_out(const char* collective, const Tensor& in, const Tensor& out) const {
    check_defined(in, collective, "in");
    check_defined(out, collective, "out");
    MOE_CHECK(in.dtype() == out.dtype(), who(collective), ": in is ", in.dtype(), " but out is ",
              out.dtype());
    MOE_CHECK(in.device() == out.device(), who(collective), ": in is on ", in.device(),
              " but out on ", out.device());
    MOE_CHECK(
        in.dim() >= 1 && out.dim() == in.dim() && row_shape(in.shape()) == row_shape(out.shape()),
        who(collective), ": in ", shape_str(in.shape()), " and out ", shape_str(out.shape()),
        " must be at least 1-D with the same shape after dim 0");
  }

  std::vector<int64_t> check_counts(const char* collective, const char* what,
                                    std::span<const int64_t> counts) const {
    std::vector<int64_t> rows(counts.begin(), counts.end());
    MOE_CHECK(static_cast<int>(rows.size()) == size(), who(collective), ": ", what, " ",
              list_str(rows), " has ", rows.size(), " entries for ", size(), " ranks");
    for (int64_t n : rows)
      MOE_CHECK(n >= 0, who(collective), ": negative entry in ", what, " ", list_str(rows));
    return rows;
  }

  static size_t row_bytes(const Tensor& t) {
    return static_cast<size_t>(row_elems(t.shape())) * dtype_size(t.dtype());
  }

  // out rows [dst_row, dst_row + rows) = the peer's input rows [src_row, src_row + rows).
  static void copy_rows(const Contribution& src, int64_t src_row, Tensor& out, int64_t dst_row,
                        int64_t rows) {
    const size_t bytes_per_row = static_cast<size_t>(row_elems(src.shape)) * dtype_size(src.dtype);
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
