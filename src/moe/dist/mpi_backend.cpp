// The MPI backend (mpi_backend.h). Every operation works on host bytes: a host tensor's own
// memory, or a pinned copy of a CUDA tensor. Data movement is MPI_BYTE with byte counts and
// displacements; when one does not fit the message limit the operation runs as
// point-to-point pieces instead. Reductions never use MPI's (whose order is unspecified): the
// chunks travel, and each rank reduces what it received in rank order (local_reduce.h).
// Point-to-point traffic has a communicator of its own (a duplicate), so a batch_p2p message
// can never match a collective's pieces.
#include "moe/dist/mpi_backend.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <thread>

#include "moe/core/stream.h"
#include "moe/dist/call_watchdog.h"
#include "moe/dist/collective_checks.h"
#include "moe/dist/fatal.h"
#include "moe/dist/local_reduce.h"

#if MOE_WITH_MPI
// The C API only: Open MPI's mpi.h would otherwise pull in its deprecated C++ bindings, which
// need a library (libmpi_cxx) we do not link.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif
#if MOE_WITH_CUDA
#include "moe/core/cuda_utils.h"
#endif

namespace moe::dist {
namespace {

std::atomic<size_t> g_message_limit{static_cast<size_t>(INT_MAX)};

}  // namespace

void set_mpi_message_limit(size_t bytes) {
  g_message_limit = std::clamp<size_t>(bytes, 1, static_cast<size_t>(INT_MAX));
}
size_t mpi_message_limit() {
  return g_message_limit;
}

#if !MOE_WITH_MPI

bool have_mpi() {
  return false;
}

std::shared_ptr<ProcessGroup> init_mpi_world() {
  MOE_FAIL(
      "init_mpi_world: this build has no MPI backend (install Open MPI, "
      "libopenmpi-dev: scripts/setup.sh, and configure with MOE_WITH_MPI=ON)");
}

#else

bool have_mpi() {
  return true;
}

namespace {

using detail::CallRecord;

constexpr int kDataTag = 0;    // collective pieces; batch_p2p data
constexpr int kHeaderTag = 1;  // batch_p2p headers
// A batch_p2p header: dtype, number of dims, dims.
constexpr int kMaxHeaderDims = 14;
constexpr int kHeaderWords = 2 + kMaxHeaderDims;

// The thread that initialised MPI; with less than MPI_THREAD_MULTIPLE only it may call MPI.
std::thread::id g_mpi_thread;
bool g_thread_multiple = false;

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

// Host memory for a CUDA tensor's bytes: page-locked (so copies are DMA), kept and grown.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
#if MOE_WITH_CUDA
    if (data_ != nullptr) cudaFreeHost(data_);
#endif
  }
  char* get(size_t bytes) {
#if MOE_WITH_CUDA
    if (bytes > bytes_) {
      if (data_ != nullptr) MOE_CUDA_CHECK(cudaFreeHost(data_));
      data_ = nullptr;
      bytes_ = 0;
      MOE_CUDA_CHECK(cudaHostAlloc(&data_, bytes, cudaHostAllocPortable));
      bytes_ = bytes;
    }
    return static_cast<char*>(data_);
#else
    MOE_FAIL("MPI backend: a CUDA tensor, but this build has no CUDA (", bytes, " bytes)");
#endif
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Byte counts and offsets per rank.
struct Layout {
  std::vector<size_t> bytes;
  std::vector<size_t> offsets;
  size_t total = 0;
};

Layout layout_of(const std::vector<size_t>& bytes) {
  Layout l;
  l.bytes = bytes;
  for (size_t b : bytes) {
    l.offsets.push_back(l.total);
    l.total += b;
  }
  return l;
}

Layout rows_layout(std::span<const int64_t> rows, size_t row_bytes) {
  std::vector<size_t> bytes;
  for (int64_t r : rows) bytes.push_back(static_cast<size_t>(r) * row_bytes);
  return layout_of(bytes);
}

// Whether MPI's int counts and displacements can describe the layout within the limit.
bool fits(const Layout& l, size_t limit) {
  for (size_t i = 0; i < l.bytes.size(); ++i)
    if (l.bytes[i] > limit || l.offsets[i] > limit) return false;
  return true;
}

std::vector<int> as_ints(const std::vector<size_t>& values) {
  return std::vector<int>(values.begin(), values.end());
}

class MpiProcessGroup final : public ProcessGroup {
 public:
  // Takes ownership of `comm`.
  MpiProcessGroup(MPI_Comm comm, std::vector<int> world_ranks, bool check_calls)
      : comm_(comm), world_ranks_(std::move(world_ranks)), check_calls_(check_calls) {
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", "setup");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank", "setup");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size", "setup");
    MOE_CHECK(static_cast<int>(world_ranks_.size()) == size_, "MPI backend: a communicator of ",
              size_, " ranks for world ranks ", detail::list_str(world_ranks_));
    check(MPI_Comm_dup(comm_, &p2p_comm_), "MPI_Comm_dup", "setup");
    check(MPI_Comm_set_errhandler(p2p_comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler",
          "setup");
  }

  ~MpiProcessGroup() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // MPI_Finalize has released every communicator
    MPI_Comm_free(&p2p_comm_);
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }
  std::string backend() const override { return "mpi"; }

  std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override {
    const char* name = "all_reduce";
    const WatchedCall watch(name, world_ranks_);
    begin(name, [&] {
      detail::check_all_reduce(*this, t);
      CallRecord r = detail::call_record(name, t);
      r.op = op;
      return r;
    });
    // Element chunks as even as possible; reduce_scatter of them, then all_gather.
    const int64_t n = t.numel();
    const size_t esize = dtype_size(t.dtype());
    std::vector<size_t> chunk_bytes;
    for (int q = 0; q < size_; ++q)
      chunk_bytes.push_back(static_cast<size_t>(n * (q + 1) / size_ - n * q / size_) * esize);
    const Layout chunks = layout_of(chunk_bytes);
    const char* in = host_input(t, stage_in_);
    std::vector<char> mine(chunks.bytes[static_cast<size_t>(rank_)]);
    reduce_scatter_bytes(in, chunks, mine.data(), t.dtype(), op, name);
    char* out = host_output(t, stage_out_);
    all_gather_bytes(mine.data(), chunks, out, name);
    finish_output(t, out);
    return done();
  }

  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override {
    const char* name = "all_gather";
    const WatchedCall watch(name, world_ranks_);
    begin(name, [&] {
      detail::check_all_gather(*this, in, out);
      return detail::call_record(name, in);
    });
    const Layout blocks = layout_of(std::vector<size_t>(static_cast<size_t>(size_), in.nbytes()));
    const char* src = host_input(in, stage_in_);
    char* dst = host_output(out, stage_out_);
    all_gather_bytes(src, blocks, dst, name);
    finish_output(out, dst);
    return done();
  }

  std::unique_ptr<Work> all_gather_v_async(const Tensor& in, Tensor& out,
                                           std::span<const int64_t> counts) override {
    const char* name = "all_gather_v";
    const WatchedCall watch(name, world_ranks_);
    std::vector<int64_t> rows;
    begin(name, [&] {
      rows = detail::check_all_gather_v(*this, in, out, counts);
      CallRecord r = detail::call_record(name, in);
      r.counts = rows;
      return r;
    });
    const Layout blocks = rows_layout(rows, detail::row_bytes(in));
    const char* src = host_input(in, stage_in_);
    char* dst = host_output(out, stage_out_);
    all_gather_bytes(src, blocks, dst, name);
    finish_output(out, dst);
    return done();
  }

  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override {
    const char* name = "reduce_scatter";
    const WatchedCall watch(name, world_ranks_);
    int64_t n = 0;
    begin(name, [&] {
      n = detail::check_reduce_scatter(*this, in, out);
      CallRecord r = detail::call_record(name, in);
      r.op = op;
      return r;
    });
    const std::vector<int64_t> rows(static_cast<size_t>(size_), n);
    reduce_scatter_rows(in, out, rows, op, name);
    return done();
  }

  std::unique_ptr<Work> reduce_scatter_v_async(const Tensor& in, Tensor& out,
                                               std::span<const int64_t> counts,
                                               ReduceOp op) override {
    const char* name = "reduce_scatter_v";
    const WatchedCall watch(name, world_ranks_);
    std::vector<int64_t> rows;
    begin(name, [&] {
      rows = detail::check_reduce_scatter_v(*this, in, out, counts);
      CallRecord r = detail::call_record(name, in);
      r.op = op;
      r.counts = rows;
      return r;
    });
    reduce_scatter_rows(in, out, rows, op, name);
    return done();
  }

  std::unique_ptr<Work> all_to_all_v_async(const Tensor& in, Tensor& out,
                                           std::span<const int64_t> send_counts,
                                           std::span<const int64_t> recv_counts) override {
    const char* name = "all_to_all_v";
    const WatchedCall watch(name, world_ranks_);
    std::vector<int64_t> sends, recvs;
    const std::vector<CallRecord> records = begin(name, [&] {
      std::tie(sends, recvs) = detail::check_all_to_all_v(*this, in, out, send_counts, recv_counts);
      CallRecord r = detail::call_record(name, in);
      r.counts = sends;
      r.recv_counts = recvs;
      return r;
    });
    const size_t row_bytes = detail::row_bytes(in);
    const Layout send_layout = rows_layout(sends, row_bytes);
    const Layout recv_layout = rows_layout(recvs, row_bytes);
    // MPI_Alltoallv only if it fits on every rank; each rank knows its own counts, so the
    // gathered call records decide, or else a vote.
    const size_t limit = mpi_message_limit();
    bool collective = fits(send_layout, limit) && fits(recv_layout, limit);
    if (!records.empty()) {
      for (const CallRecord& r : records)
        collective = collective && fits(rows_layout(r.counts, row_bytes), limit) &&
                     fits(rows_layout(r.recv_counts, row_bytes), limit);
    } else {
      int vote = collective ? 1 : 0;
      check(MPI_Allreduce(MPI_IN_PLACE, &vote, 1, MPI_INT, MPI_LAND, comm_), "MPI_Allreduce", name);
      collective = vote != 0;
    }
    const char* src = host_input(in, stage_in_);
    char* dst = host_output(out, stage_out_);
    all_to_all_bytes(src, send_layout, dst, recv_layout, collective, name);
    finish_output(out, dst);
    return done();
  }

  std::unique_ptr<Work> broadcast_async(Tensor& t, int root) override {
    const char* name = "broadcast";
    const WatchedCall watch(name, world_ranks_);
    begin(name, [&] {
      detail::check_broadcast(*this, t, root);
      CallRecord r = detail::call_record(name, t);
      r.root = root;
      return r;
    });
    // The root's bytes travel; the others' are overwritten, so they need no copy in.
    char* data =
        rank_ == root ? const_cast<char*>(host_input(t, stage_in_)) : host_output(t, stage_out_);
    const size_t limit = mpi_message_limit();
    for (size_t offset = 0; offset < t.nbytes(); offset += limit) {
      const size_t piece = std::min(limit, t.nbytes() - offset);
      check(MPI_Bcast(data + offset, static_cast<int>(piece), MPI_BYTE, root, comm_), "MPI_Bcast",
            name);
    }
    if (rank_ != root) finish_output(t, data);
    return done();
  }

  std::unique_ptr<Work> batch_p2p_async(std::span<const P2POp> ops) override {
    const char* name = "batch_p2p";
    const WatchedCall watch(name, world_ranks_);
    check_thread(name);
    detail::check_batch_p2p(*this, ops);
    for (const P2POp& op : ops) {
      MOE_CHECK(op.tensor.dim() <= kMaxHeaderDims, detail::who(*this, name), ": a tensor of ",
                op.tensor.dim(), " dims (at most ", kMaxHeaderDims, ")");
      note_device(op.tensor);
    }
    // Host bytes of every tensor: its own memory, or a host copy of a CUDA tensor.
    std::vector<Tensor> host(ops.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      const Tensor& t = ops[i].tensor;
      if (!t.is_cuda())
        host[i] = t;
      else
        host[i] = ops[i].kind == P2POp::Kind::send ? t.to(Device::cpu())
                                                   : Tensor::empty(t.shape(), t.dtype());
    }
    // 1. Headers (dtype and shape) travel first: every receive checks its before data moves.
    std::vector<std::vector<int64_t> > headers(ops.size(), std::vector<int64_t>(kHeaderWords, 0));
    std::vector<MPI_Request> header_recvs, requests;
    for (size_t i = 0; i < ops.size(); ++i) {
      const P2POp& op = ops[i];
      MPI_Request request;
      if (op.kind == P2POp::Kind::recv) {
        check(MPI_Irecv(headers[i].data(), kHeaderWords, MPI_INT64_T, op.peer, kHeaderTag,
                        p2p_comm_, &request),
              "MPI_Irecv", name);
        header_recvs.push_back(request);
        continue;
      }
      headers[i][0] = static_cast<int64_t>(op.tensor.dtype());
      headers[i][1] = op.tensor.dim();
      for (int64_t d = 0; d < op.tensor.dim(); ++d)
        headers[i][static_cast<size_t>(2 + d)] = op.tensor.size(d);
      check(MPI_Isend(headers[i].data(), kHeaderWords, MPI_INT64_T, op.peer, kHeaderTag, p2p_comm_,
                      &request),
            "MPI_Isend", name);
      requests.push_back(request);
      post_pieces(static_cast<const char*>(host[i].raw()), host[i].nbytes(), op.peer, true,
                  p2p_comm_, requests, name);
    }
    wait_all(header_recvs, "MPI_Waitall", name);
    // 2. Receives: into the tensor when the header matches; else the message is still taken
    // (into scratch memory of the sender's size) so the sender completes, and this rank throws.
    std::string mismatch;
    std::vector<std::vector<char> > scratch;
    for (size_t i = 0; i < ops.size(); ++i) {
      const P2POp& op = ops[i];
      if (op.kind != P2POp::Kind::recv) continue;
      MOE_CHECK(headers[i][0] >= 0 && headers[i][0] <= static_cast<int64_t>(DType::u8) &&
                    headers[i][1] >= 0 && headers[i][1] <= kMaxHeaderDims,
                detail::who(*this, name), ": a malformed header from rank ", op.peer);
      const DType sent_dtype = static_cast<DType>(headers[i][0]);
      const Shape sent_shape(headers[i].begin() + 2, headers[i].begin() + 2 + headers[i][1]);
      char* dst = static_cast<char*>(host[i].raw());
      size_t bytes = host[i].nbytes();
      if (sent_dtype != op.tensor.dtype() || sent_shape != op.tensor.shape()) {
        try {
          detail::check_p2p_match(*this, op.peer, sent_dtype, sent_shape, op.tensor);
        } catch (const std::exception& e) {
          if (mismatch.empty()) mismatch = e.what();
        }
        bytes = dtype_size(sent_dtype);
        for (int64_t d : sent_shape) bytes *= static_cast<size_t>(d);
        scratch.emplace_back(bytes);
        dst = scratch.back().data();
      }
      post_pieces(dst, bytes, op.peer, false, p2p_comm_, requests, name);
    }
    wait_all(requests, "MPI_Waitall", name);
    if (!mismatch.empty()) throw Error(mismatch);
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i].kind == P2POp::Kind::recv && ops[i].tensor.is_cuda()) {
        Tensor dst = ops[i].tensor;
        dst.copy_(host[i]);  // waits for the copy: host[i] is freed on return
      }
    }
    return done();
  }

  void barrier() override {
    const char* name = "barrier";
    const WatchedCall watch(name, world_ranks_);
    begin(name, [&] {
      CallRecord r;
      r.collective = name;
      return r;
    });
    // CUDA: the work queued before the barrier on the current stream has completed.
    if (cuda_device_ >= 0) synchronize(cuda_device_);
    check(MPI_Barrier(comm_), "MPI_Barrier", name);
  }

  std::shared_ptr<ProcessGroup> split(const std::vector<std::vector<int> >& groups) override {
    const char* name = "split";
    const WatchedCall watch(name, world_ranks_);
    std::pair<int, int> mine{-1, -1};
    begin(name, [&] {
      mine = detail::check_split(*this, groups);
      CallRecord r;
      r.collective = name;
      r.groups = groups;
      return r;
    });
    const auto [index, position] = mine;
    MPI_Comm comm = MPI_COMM_NULL;
    check(MPI_Comm_split(comm_, index < 0 ? MPI_UNDEFINED : index, position, &comm),
          "MPI_Comm_split", name);
    if (comm == MPI_COMM_NULL) return nullptr;
    std::vector<int> members;
    for (int r : groups[static_cast<size_t>(index)])
      members.push_back(world_ranks_[static_cast<size_t>(r)]);
    return std::make_shared<MpiProcessGroup>(comm, std::move(members), check_calls_);
  }

  void abort(const std::string& reason) override {
    print_rank_line(reason);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);  // MPI_Abort does not return; should it, the rank must end all the same
  }

 private:
  static std::unique_ptr<Work> done() { return std::make_unique<CompletedWork>(); }

  void check(int code, const char* function, const char* operation) const {
    if (code == MPI_SUCCESS) return;
    MOE_FAIL(detail::who(*this, operation), ": ", function, " failed: ", mpi_error_string(code));
  }

  void check_thread(const char* operation) const {
    MOE_CHECK(g_thread_multiple || std::this_thread::get_id() == g_mpi_thread,
              detail::who(*this, operation),
              ": called from a thread other than the one that initialised MPI, which provides "
              "no MPI_THREAD_MULTIPLE");
  }

  void note_device(const Tensor& t) {
    if (t.defined() && t.is_cuda()) cuda_device_ = t.device().index;
  }

  // Runs this rank's argument checks (`checks` returns the call's record or throws). With call
  // checks on, every member's record is gathered: an argument error on any member, or calls
  // that disagree, throw on every member before any data moves.
  // Returns every member's record (none without call checks).
  template <class Checks>
  std::vector<CallRecord> begin(const char* operation, Checks&& checks) {
    check_thread(operation);
    if (!check_calls_) {
      (void)checks();
      return {};
    }
    CallRecord record;
    std::exception_ptr error;
    try {
      record = checks();
    } catch (const std::exception& e) {
      error = std::current_exception();
      record = CallRecord{};
      record.collective = operation;
      record.error = e.what();
    }
    const std::vector<CallRecord> records = gather_records(record, operation);
    if (error) std::rethrow_exception(error);
    for (size_t q = 0; q < records.size(); ++q) {
      if (!records[q].error.empty())
        throw Error("collective aborted: rank " + std::to_string(world_ranks_[q]) +
                    " failed: " + records[q].error);
    }
    detail::check_records_agree(records, world_ranks_);
    return records;
  }

  std::vector<CallRecord> gather_records(const CallRecord& mine, const char* operation) {
    const std::string bytes = detail::encode_record(mine);
    const int length = static_cast<int>(bytes.size());
    std::vector<int> lengths(static_cast<size_t>(size_));
    check(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm_), "MPI_Allgather",
          operation);
    std::vector<int> offsets(static_cast<size_t>(size_));
    int total = 0;
    for (int q = 0; q < size_; ++q) {
      offsets[static_cast<size_t>(q)] = total;
      total += lengths[static_cast<size_t>(q)];
    }
    std::string all(static_cast<size_t>(total), '\0');
    check(MPI_Allgatherv(bytes.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(),
                         MPI_CHAR, comm_),
          "MPI_Allgatherv", operation);
    std::vector<CallRecord> records;
    for (int q = 0; q < size_; ++q) {
      records.push_back(detail::decode_record(
          std::string_view(all).substr(static_cast<size_t>(offsets[static_cast<size_t>(q)]),
                                       static_cast<size_t>(lengths[static_cast<size_t>(q)]))));
    }
    return records;
  }

  // ---- host bytes of tensors --------------------------------------------------------------
  // An input's bytes: its memory, or a pinned copy made after the work queued on the current
  // stream (copy_bytes synchronises that stream).
  const char* host_input(const Tensor& t, PinnedBuffer& buffer) {
    if (!t.is_cuda()) return static_cast<const char*>(t.raw());
    note_device(t);
    char* host = buffer.get(t.nbytes());
    copy_bytes(host, Device::cpu(), t.raw(), t.device(), t.nbytes());
    return host;
  }
  // Where an output's bytes are written: its memory, or a pinned buffer for finish_output.
  char* host_output(const Tensor& t, PinnedBuffer& buffer) {
    if (!t.is_cuda()) return static_cast<char*>(t.raw());
    note_device(t);
    return buffer.get(t.nbytes());
  }
  // CUDA: copies the result in on the current stream and waits for it (the buffer is reused).
  static void finish_output(const Tensor& t, const char* host) {
    if (t.is_cuda()) copy_bytes(t.raw(), t.device(), host, Device::cpu(), t.nbytes());
  }

  // ---- data movement on host bytes --------------------------------------------------------
  // Posts the pieces (each at most the message limit) of one message to or from `peer`.
  void post_pieces(const char* data, size_t bytes, int peer, bool send, MPI_Comm comm,
                   std::vector<MPI_Request>& requests, const char* operation) const {
    const size_t limit = mpi_message_limit();
    for (size_t offset = 0; offset < bytes; offset += limit) {
      const int piece = static_cast<int>(std::min(limit, bytes - offset));
      MPI_Request request;
      if (send) {
        check(MPI_Isend(data + offset, piece, MPI_BYTE, peer, kDataTag, comm, &request),
              "MPI_Isend", operation);
      } else {
        check(MPI_Irecv(const_cast<char*>(data) + offset, piece, MPI_BYTE, peer, kDataTag, comm,
                        &request),
              "MPI_Irecv", operation);
      }
      requests.push_back(request);
    }
  }

  void wait_all(std::vector<MPI_Request>& requests, const char* function,
                const char* operation) const {
    if (requests.empty()) return;
    std::vector<MPI_Status> statuses(requests.size());
    const int code =
        MPI_Waitall(static_cast<int>(requests.size()), requests.data(), statuses.data());
    if (code == MPI_ERR_IN_STATUS) {
      for (const MPI_Status& s : statuses) check(s.MPI_ERROR, function, operation);
    }
    check(code, function, operation);
    requests.clear();
  }

  // Rank q's bytes [send.offsets[q], + send.bytes[q]) go to rank q, which receives them at
  // recv.offsets[this rank]: MPI_Alltoallv if `collective` (which every rank must decide
  // alike: the layouts of every rank fit MPI's ints and the limit), else point-to-point pieces.
  void all_to_all_bytes(const char* send, const Layout& sends, char* recv, const Layout& recvs,
                        bool collective, const char* operation) {
    if (collective) {
      const std::vector<int> sc = as_ints(sends.bytes), sd = as_ints(sends.offsets);
      const std::vector<int> rc = as_ints(recvs.bytes), rd = as_ints(recvs.offsets);
      check(MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(),
                          MPI_BYTE, comm_),
            "MPI_Alltoallv", operation);
      return;
    }
    std::vector<MPI_Request> requests;
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      post_pieces(recv + recvs.offsets[static_cast<size_t>(q)], recvs.bytes[static_cast<size_t>(q)],
                  q, false, comm_, requests, operation);
    }
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      post_pieces(send + sends.offsets[static_cast<size_t>(q)], sends.bytes[static_cast<size_t>(q)],
                  q, true, comm_, requests, operation);
    }
    const size_t me = static_cast<size_t>(rank_);
    if (recvs.bytes[me] > 0)
      std::memcpy(recv + recvs.offsets[me], send + sends.offsets[me], recvs.bytes[me]);
    wait_all(requests, "MPI_Waitall", operation);
  }

  // out at blocks.offsets[q] = rank q's blocks.bytes[q] bytes (this rank's from `mine`).
  void all_gather_bytes(const char* mine, const Layout& blocks, char* out, const char* operation) {
    const size_t limit = mpi_message_limit();
    const size_t me = static_cast<size_t>(rank_);
    if (fits(blocks, limit)) {
      const std::vector<int> counts = as_ints(blocks.bytes), offsets = as_ints(blocks.offsets);
      check(MPI_Allgatherv(mine, counts[me], MPI_BYTE, out, counts.data(), offsets.data(), MPI_BYTE,
                           comm_),
            "MPI_Allgatherv", operation);
      return;
    }
    // As an all-to-all: this rank's block to everyone, everyone's block to its place.
    const Layout sends =
        layout_of(std::vector<size_t>(static_cast<size_t>(size_), blocks.bytes[me]));
    Layout same = sends;
    std::fill(same.offsets.begin(), same.offsets.end(), 0);  // every rank is sent the same bytes
    all_to_all_bytes(mine, same, out, blocks, false, operation);
  }

  // This rank's chunk of the reduction: chunk q of `in` (chunks.bytes[q] at chunks.offsets[q])
  // goes to rank q; the size() pieces of this rank's chunk that arrive are reduced in rank order.
  void reduce_scatter_bytes(const char* in, const Layout& chunks, char* out, DType dtype,
                            ReduceOp op, const char* operation) {
    const size_t mine = chunks.bytes[static_cast<size_t>(rank_)];
    const Layout arriving = layout_of(std::vector<size_t>(static_cast<size_t>(size_), mine));
    // Every rank knows every rank's layouts (the chunks are the same on all), so all decide
    // alike whether MPI_Alltoallv can carry them.
    const size_t limit = mpi_message_limit();
    bool collective = fits(chunks, limit);
    for (size_t chunk : chunks.bytes)
      collective = collective &&
                   fits(layout_of(std::vector<size_t>(static_cast<size_t>(size_), chunk)), limit);
    std::vector<char> pieces(arriving.total);
    all_to_all_bytes(in, chunks, pieces.data(), arriving, collective, operation);
    std::vector<const void*> inputs;
    for (size_t q = 0; q < static_cast<size_t>(size_); ++q)
      inputs.push_back(pieces.data() + arriving.offsets[q]);
    detail::local_reduce_cpu(inputs, out, static_cast<int64_t>(mine / dtype_size(dtype)), dtype,
                             op);
  }

  void reduce_scatter_rows(const Tensor& in, Tensor& out, const std::vector<int64_t>& rows,
                           ReduceOp op, const char* operation) {
    const char* src = host_input(in, stage_in_);
    char* dst = host_output(out, stage_out_);
    reduce_scatter_bytes(src, rows_layout(rows, detail::row_bytes(in)), dst, in.dtype(), op,
                         operation);
    finish_output(out, dst);
  }

  MPI_Comm comm_ = MPI_COMM_NULL;      // collectives and their point-to-point pieces
  MPI_Comm p2p_comm_ = MPI_COMM_NULL;  // batch_p2p
  int rank_ = 0;
  int size_ = 1;
  std::vector<int> world_ranks_;
  bool check_calls_ = true;
  int cuda_device_ = -1;  // the last device of a CUDA tensor seen (barrier synchronises it)
  PinnedBuffer stage_in_, stage_out_;
};

bool check_calls_from_environment() {
  const char* value = std::getenv("MOE_MPI_CHECK_CALLS");
  if (value == nullptr || *value == '\0') return true;
  const std::string v = value;
  if (v == "0" || v == "false" || v == "off") return false;
  MOE_CHECK(v == "1" || v == "true" || v == "on", "MOE_MPI_CHECK_CALLS=", v,
            ": expected 1 or 0 (on or off)");
  return true;
}

void finalize_at_exit() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
}

}  // namespace

std::shared_ptr<ProcessGroup> init_mpi_world() {
  static std::mutex mutex;
  static std::shared_ptr<ProcessGroup> world;
  std::lock_guard lock(mutex);
  if (world) return world;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    const int code = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    MOE_CHECK(code == MPI_SUCCESS,
              "init_mpi_world: MPI_Init_thread failed: ", mpi_error_string(code));
    g_thread_multiple = provided >= MPI_THREAD_MULTIPLE;
    g_mpi_thread = std::this_thread::get_id();
    std::atexit(finalize_at_exit);
  } else {
    int provided = MPI_THREAD_SINGLE;
    MPI_Query_thread(&provided);
    g_thread_multiple = provided >= MPI_THREAD_MULTIPLE;
    g_mpi_thread = std::this_thread::get_id();
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<int> ranks(static_cast<size_t>(size));
  std::iota(ranks.begin(), ranks.end(), 0);
  MPI_Comm comm = MPI_COMM_NULL;
  const int code = MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  MOE_CHECK(code == MPI_SUCCESS, "init_mpi_world: MPI_Comm_dup failed: ", mpi_error_string(code));
  world = std::make_shared<MpiProcessGroup>(comm, std::move(ranks), check_calls_from_environment());
  register_world(world);
  return world;
}

#endif  // MOE_WITH_MPI

}  // namespace moe::dist
