// Argument and agreement checks shared by the backends (collective_checks.h).
#include "moe/dist/collective_checks.h"

#include <cstring>
#include <functional>
#include <numeric>

#include "moe/dist/local_reduce.h"

namespace moe::dist::detail {

std::string groups_str(const std::vector<std::vector<int>>& groups) {
  std::string out = "[";
  for (size_t g = 0; g < groups.size(); ++g) out += (g ? ", " : "") + list_str(groups[g]);
  return out + "]";
}

int64_t sum_of(std::span<const int64_t> counts) {
  return std::accumulate(counts.begin(), counts.end(), int64_t{0});
}

int64_t row_elems(const Shape& shape) {
  int64_t n = 1;
  for (size_t d = 1; d < shape.size(); ++d) n *= shape[d];
  return n;
}

Shape row_shape(const Shape& shape) {
  return shape.empty() ? Shape{} : Shape(shape.begin() + 1, shape.end());
}

Shape with_rows(const Shape& shape, int64_t rows) {
  Shape out = shape;
  out[0] = rows;
  return out;
}

size_t row_bytes(const Tensor& t) {
  return static_cast<size_t>(row_elems(t.shape())) * dtype_size(t.dtype());
}

std::string who(const ProcessGroup& group, const char* collective) {
  return moe::detail::concat(collective, " (rank ", group.rank(), " of ", group.size(),
                             ", world ranks ", list_str(group.world_ranks()), ")");
}

void check_reducible(const ProcessGroup& group, const char* collective, DType dtype) {
  MOE_CHECK(reducible(dtype), who(group, collective), ": dtype ", dtype,
            " cannot be reduced; allowed: f64 f32 bf16 f16 i64 i32");
}

void check_in_out(const ProcessGroup& group, const char* collective, const Tensor& in,
                  const Tensor& out) {
  check_defined(in, collective, "in");
  check_defined(out, collective, "out");
  MOE_CHECK(in.dtype() == out.dtype(), who(group, collective), ": in is ", in.dtype(),
            " but out is ", out.dtype());
  MOE_CHECK(in.device() == out.device(), who(group, collective), ": in is on ", in.device(),
            " but out on ", out.device());
  MOE_CHECK(
      in.dim() >= 1 && out.dim() == in.dim() && row_shape(in.shape()) == row_shape(out.shape()),
      who(group, collective), ": in ", shape_str(in.shape()), " and out ", shape_str(out.shape()),
      " must be at least 1-D with the same shape after dim 0");
}

std::vector<int64_t> check_counts(const ProcessGroup& group, const char* collective,
                                  const char* what, std::span<const int64_t> counts) {
  std::vector<int64_t> rows(counts.begin(), counts.end());
  MOE_CHECK(static_cast<int>(rows.size()) == group.size(), who(group, collective), ": ", what, " ",
            list_str(rows), " has ", rows.size(), " entries for ", group.size(), " ranks");
  for (int64_t n : rows)
    MOE_CHECK(n >= 0, who(group, collective), ": negative entry in ", what, " ", list_str(rows));
  return rows;
}

void check_all_reduce(const ProcessGroup& group, const Tensor& t) {
  check_defined(t, "all_reduce", "t");
  check_reducible(group, "all_reduce", t.dtype());
}

void check_all_gather(const ProcessGroup& group, const Tensor& in, const Tensor& out) {
  const char* name = "all_gather";
  check_in_out(group, name, in, out);
  const Shape expected = with_rows(in.shape(), group.size() * in.size(0));
  MOE_CHECK(out.shape() == expected, who(group, name), ": out has shape ", shape_str(out.shape()),
            ", expected ", shape_str(expected), " = ", group.size(), " ranks x in ",
            shape_str(in.shape()));
}

std::vector<int64_t> check_all_gather_v(const ProcessGroup& group, const Tensor& in,
                                        const Tensor& out, std::span<const int64_t> counts) {
  const char* name = "all_gather_v";
  check_in_out(group, name, in, out);
  const std::vector<int64_t> rows = check_counts(group, name, "counts", counts);
  const int me = group.rank();
  MOE_CHECK(in.size(0) == rows[me], who(group, name), ": in has shape ", shape_str(in.shape()),
            " but counts[", me, "] = ", rows[me], " rows (counts ", list_str(rows), ")");
  const Shape expected = with_rows(in.shape(), sum_of(rows));
  MOE_CHECK(out.shape() == expected, who(group, name), ": out has shape ", shape_str(out.shape()),
            ", expected ", shape_str(expected), " (sum of counts ", list_str(rows), ")");
  return rows;
}

int64_t check_reduce_scatter(const ProcessGroup& group, const Tensor& in, const Tensor& out) {
  const char* name = "reduce_scatter";
  check_in_out(group, name, in, out);
  check_reducible(group, name, in.dtype());
  MOE_CHECK(in.size(0) % group.size() == 0, who(group, name), ": in has shape ",
            shape_str(in.shape()), ", whose ", in.size(0), " rows do not split over ", group.size(),
            " ranks");
  const int64_t n = in.size(0) / group.size();
  const Shape expected = with_rows(in.shape(), n);
  MOE_CHECK(out.shape() == expected, who(group, name), ": out has shape ", shape_str(out.shape()),
            ", expected ", shape_str(expected), " = in ", shape_str(in.shape()), " / ",
            group.size(), " ranks");
  return n;
}

std::vector<int64_t> check_reduce_scatter_v(const ProcessGroup& group, const Tensor& in,
                                            const Tensor& out, std::span<const int64_t> counts) {
  const char* name = "reduce_scatter_v";
  check_in_out(group, name, in, out);
  check_reducible(group, name, in.dtype());
  const std::vector<int64_t> rows = check_counts(group, name, "counts", counts);
  MOE_CHECK(in.size(0) == sum_of(rows), who(group, name), ": in has shape ", shape_str(in.shape()),
            " but the counts ", list_str(rows), " sum to ", sum_of(rows), " rows");
  const int me = group.rank();
  const Shape expected = with_rows(in.shape(), rows[me]);
  MOE_CHECK(out.shape() == expected, who(group, name), ": out has shape ", shape_str(out.shape()),
            ", expected ", shape_str(expected), " (counts[", me, "] of ", list_str(rows), ")");
  return rows;
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> check_all_to_all_v(
    const ProcessGroup& group, const Tensor& in, const Tensor& out,
    std::span<const int64_t> send_counts, std::span<const int64_t> recv_counts) {
  const char* name = "all_to_all_v";
  check_in_out(group, name, in, out);
  std::vector<int64_t> sends = check_counts(group, name, "send_counts", send_counts);
  std::vector<int64_t> recvs = check_counts(group, name, "recv_counts", recv_counts);
  MOE_CHECK(in.size(0) == sum_of(sends), who(group, name), ": in has shape ", shape_str(in.shape()),
            " but send_counts ", list_str(sends), " sum to ", sum_of(sends), " rows");
  const Shape expected = with_rows(in.shape(), sum_of(recvs));
  MOE_CHECK(out.shape() == expected, who(group, name), ": out has shape ", shape_str(out.shape()),
            ", expected ", shape_str(expected), " (recv_counts ", list_str(recvs), ")");
  return {std::move(sends), std::move(recvs)};
}

void check_broadcast(const ProcessGroup& group, const Tensor& t, int root) {
  check_defined(t, "broadcast", "t");
  MOE_CHECK(root >= 0 && root < group.size(), who(group, "broadcast"), ": root ", root,
            " is not a rank of a group of ", group.size());
}

void check_batch_p2p(const ProcessGroup& group, std::span<const P2POp> ops) {
  for (size_t i = 0; i < ops.size(); ++i) {
    const P2POp& op = ops[i];
    const char* kind = op.kind == P2POp::Kind::send ? "send" : "recv";
    MOE_CHECK(op.tensor.defined(), who(group, "batch_p2p"), ": op ", i, " (", kind,
              ") has an undefined tensor");
    MOE_CHECK(op.peer >= 0 && op.peer < group.size(), who(group, "batch_p2p"), ": op ", i, " (",
              kind, ") names peer ", op.peer, ", not a rank of a group of ", group.size());
  }
}

std::pair<int, int> check_split(const ProcessGroup& group,
                                const std::vector<std::vector<int>>& groups) {
  const char* name = "split";
  std::vector<bool> seen(static_cast<size_t>(group.size()), false);
  std::pair<int, int> mine{-1, -1};
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::vector<int>& ranks = groups[g];
    MOE_CHECK(!ranks.empty(), who(group, name), ": list ", g, " of ", groups_str(groups),
              " is empty");
    for (size_t i = 0; i < ranks.size(); ++i) {
      const int r = ranks[i];
      MOE_CHECK(r >= 0 && r < group.size(), who(group, name), ": rank ", r, " in ", list_str(ranks),
                " is not a rank of a group of ", group.size());
      MOE_CHECK(!seen[static_cast<size_t>(r)], who(group, name), ": rank ", r, " appears twice in ",
                groups_str(groups));
      seen[static_cast<size_t>(r)] = true;
      if (r == group.rank()) mine = {static_cast<int>(g), static_cast<int>(i)};
    }
  }
  return mine;
}

void check_p2p_match(const ProcessGroup& group, int sender, DType sent_dtype,
                     const Shape& sent_shape, const Tensor& recv) {
  MOE_CHECK(sent_dtype == recv.dtype() && sent_shape == recv.shape(), who(group, "batch_p2p"),
            ": rank ", sender, " sent ", sent_dtype, " ", shape_str(sent_shape), " but rank ",
            group.rank(), " receives into ", recv.dtype(), " ", shape_str(recv.shape()),
            " (sends and receives between two ranks match in the order they are issued)");
}

CallRecord call_record(const char* collective, const Tensor& t) {
  CallRecord r;
  r.collective = collective;
  r.dtype = t.dtype();
  r.cuda = t.device().is_cuda();
  r.shape = t.shape();
  return r;
}

namespace {

// Throws unless key(record) is the same for every member.
void check_agree(const std::string& collective, const std::vector<int>& world_ranks,
                 const char* what, const std::vector<CallRecord>& records,
                 const std::function<std::string(const CallRecord&)>& key) {
  const std::string first = key(records[0]);
  bool same = true;
  for (const CallRecord& c : records) same = same && key(c) == first;
  if (same) return;
  std::ostringstream all;
  for (size_t q = 0; q < records.size(); ++q)
    all << (q ? ", " : "") << "rank " << q << " " << key(records[q]);
  MOE_FAIL(collective, " on world ranks ", list_str(world_ranks), ": the ", what,
           " differs across ranks: ", all.str());
}

std::string shape_key(const CallRecord& c) {
  return shape_str(c.shape);
}
std::string row_shape_key(const CallRecord& c) {
  return shape_str(row_shape(c.shape));
}
std::string op_key(const CallRecord& c) {
  return reduce_op_name(c.op);
}
std::string counts_key(const CallRecord& c) {
  return list_str(c.counts);
}

}  // namespace

void check_records_agree(const std::vector<CallRecord>& records,
                         const std::vector<int>& world_ranks) {
  MOE_CHECK(!records.empty(), "check_records_agree: no records");
  check_agree("collective mismatch", world_ranks, "call", records,
              [](const CallRecord& c) { return c.collective; });
  const std::string& name = records[0].collective;
  if (name == "barrier") return;
  if (name == "split") {
    check_agree(name, world_ranks, "groups", records,
                [](const CallRecord& c) { return groups_str(c.groups); });
    return;
  }
  check_agree(name, world_ranks, "dtype", records,
              [](const CallRecord& c) { return std::string(dtype_name(c.dtype)); });
  check_agree(name, world_ranks, "device kind", records,
              [](const CallRecord& c) { return std::string(c.cuda ? "cuda" : "cpu"); });
  if (name == "all_reduce") {
    check_agree(name, world_ranks, "shape", records, shape_key);
    check_agree(name, world_ranks, "op", records, op_key);
  } else if (name == "all_gather") {
    check_agree(name, world_ranks, "in shape", records, shape_key);
  } else if (name == "all_gather_v") {
    check_agree(name, world_ranks, "counts", records, counts_key);
    check_agree(name, world_ranks, "row shape", records, row_shape_key);
  } else if (name == "reduce_scatter") {
    check_agree(name, world_ranks, "in shape", records, shape_key);
    check_agree(name, world_ranks, "op", records, op_key);
  } else if (name == "reduce_scatter_v") {
    check_agree(name, world_ranks, "counts", records, counts_key);
    check_agree(name, world_ranks, "in shape", records, shape_key);
    check_agree(name, world_ranks, "op", records, op_key);
  } else if (name == "all_to_all_v") {
    check_agree(name, world_ranks, "row shape", records, row_shape_key);
    const size_t n = records.size();
    for (size_t q = 0; q < n; ++q) {
      for (size_t r = 0; r < n; ++r) {
        MOE_CHECK(records[q].counts.size() == n && records[r].recv_counts.size() == n &&
                      records[q].counts[r] == records[r].recv_counts[q],
                  name, " on world ranks ", list_str(world_ranks), ": rank ", q, " sends ",
                  records[q].counts[r], " rows to rank ", r, ", which expects ",
                  records[r].recv_counts[q], " (send_counts of rank ", q, ": ",
                  list_str(records[q].counts), "; recv_counts of rank ", r, ": ",
                  list_str(records[r].recv_counts), ")");
      }
    }
  } else if (name == "broadcast") {
    check_agree(name, world_ranks, "root", records,
                [](const CallRecord& c) { return std::to_string(c.root); });
    check_agree(name, world_ranks, "shape", records, shape_key);
  }
}

// ---- encoding: int64 fields and length-prefixed strings, in the host's byte order (every rank
// runs the same binary on the same kind of host) -------------------------------------------

namespace {

void put_i64(std::string& out, int64_t v) {
  out.append(reinterpret_cast<const char*>(&v), 8);
}
void put_str(std::string& out, const std::string& s) {
  put_i64(out, static_cast<int64_t>(s.size()));
  out += s;
}
void put_vec(std::string& out, const std::vector<int64_t>& v) {
  put_i64(out, static_cast<int64_t>(v.size()));
  for (int64_t x : v) put_i64(out, x);
}

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  int64_t i64() {
    MOE_CHECK(pos_ + 8 <= bytes_.size(), "decode_record: truncated record of ", bytes_.size(),
              " bytes");
    int64_t v;
    std::memcpy(&v, bytes_.data() + pos_, 8);
    pos_ += 8;
    return v;
  }
  size_t length() {
    const int64_t n = i64();
    MOE_CHECK(n >= 0 && static_cast<size_t>(n) <= bytes_.size() - pos_,
              "decode_record: bad length ", n);
    return static_cast<size_t>(n);
  }
  std::string str() {
    const size_t n = length();
    std::string s(bytes_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  std::vector<int64_t> vec() {
    const size_t n = length();
    std::vector<int64_t> v(n);
    for (int64_t& x : v) x = i64();
    return v;
  }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

}  // namespace

std::string encode_record(const CallRecord& r) {
  std::string out;
  put_str(out, r.collective);
  put_i64(out, static_cast<int64_t>(r.dtype));
  put_i64(out, r.cuda ? 1 : 0);
  put_vec(out, std::vector<int64_t>(r.shape.begin(), r.shape.end()));
  put_i64(out, static_cast<int64_t>(r.op));
  put_i64(out, r.root);
  put_vec(out, r.counts);
  put_vec(out, r.recv_counts);
  put_i64(out, static_cast<int64_t>(r.groups.size()));
  for (const std::vector<int>& g : r.groups) put_vec(out, std::vector<int64_t>(g.begin(), g.end()));
  put_str(out, r.error);
  return out;
}

CallRecord decode_record(std::string_view bytes) {
  Reader in(bytes);
  CallRecord r;
  r.collective = in.str();
  r.dtype = static_cast<DType>(in.i64());
  r.cuda = in.i64() != 0;
  const std::vector<int64_t> shape = in.vec();
  r.shape = Shape(shape.begin(), shape.end());
  r.op = static_cast<ReduceOp>(in.i64());
  r.root = static_cast<int>(in.i64());
  r.counts = in.vec();
  r.recv_counts = in.vec();
  const size_t num_groups = in.length();
  for (size_t g = 0; g < num_groups; ++g) {
    const std::vector<int64_t> members = in.vec();
    r.groups.emplace_back(members.begin(), members.end());
  }
  r.error = in.str();
  return r;
}

}  // namespace moe::dist::detail
