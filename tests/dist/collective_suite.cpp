// The cases of the backend suite (collective_suite.h). Inputs: rank r's k-th tensor of a case is
// drawn from (seed, r, k), the seed broadcast from rank 0, so every rank can compute every
// other rank's input and so the expected result. Floats are random normals (their sums depend
// on the order, which makes the bitwise comparison a check of the rank order), integers
// uniform in [-1000, 1000], u8 in [0, 255]. Shapes are odd; some ranks have zero rows.
#include "collective_suite.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <numeric>
#include <sstream>

#include "common/check.h"
#include "moe/dist/fatal.h"

namespace moe::dist::test {
namespace {

using ::moe::test::message_of;

constexpr DType kReduceDTypes[] = {DType::f64, DType::f32, DType::bf16,
                                   DType::f16, DType::i64, DType::i32};
constexpr ReduceOp kOps[] = {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min};

std::string where(const ProcessGroup& g, const std::string& what) {
  return "rank " + std::to_string(g.rank()) + " of " + std::to_string(g.size()) + ", " + what;
}

std::string describe(const char* collective, DType dtype, const Shape& shape,
                     const char* extra = "") {
  std::ostringstream out;
  out << collective << " " << dtype_name(dtype) << " " << shape_str(shape) << extra;
  return out.str();
}

// Same shape, dtype and bytes (so -0.0 differs from 0.0, and NaNs compare by their bits).
::testing::AssertionResult bitwise_equal(const Tensor& actual_any_device, const Tensor& expected,
                                         const std::string& what) {
  const Tensor actual = actual_any_device.to(Device::cpu());
  if (actual.dtype() != expected.dtype() || actual.shape() != expected.shape())
    return ::testing::AssertionFailure()
           << what << ": got " << dtype_name(actual.dtype()) << " " << shape_str(actual.shape())
           << ", expected " << dtype_name(expected.dtype()) << " " << shape_str(expected.shape());
  if (actual.nbytes() == 0 || std::memcmp(actual.raw(), expected.raw(), actual.nbytes()) == 0)
    return ::testing::AssertionSuccess();
  const std::vector<double> a = actual.to_double_vector(), b = expected.to_double_vector();
  const size_t esize = dtype_size(actual.dtype());
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(static_cast<const char*>(actual.raw()) + i * esize,
                    static_cast<const char*>(expected.raw()) + i * esize, esize) != 0)
      return ::testing::AssertionFailure() << what << ": element " << i << " of " << a.size()
                                           << " is " << a[i] << ", expected " << b[i];
  }
  return ::testing::AssertionFailure() << what << ": bytes differ";
}

// One seed for every rank: rank 0's, broadcast.
uint64_t shared_seed(ProcessGroup& g) {
  Tensor seed = Tensor::from_vector(
      std::vector<int64_t>{static_cast<int64_t>(moe::test::fresh_seed() >> 1)}, {1});
  g.broadcast(seed, 0);
  return static_cast<uint64_t>(seed.to_vector<int64_t>()[0]);
}

// Rank r's k-th input (on the host).
Tensor input(const Shape& shape, DType dtype, uint64_t seed, int rank, int k) {
  const uint64_t s =
      seed + 1000003ULL * static_cast<uint64_t>(rank) + 7919ULL * static_cast<uint64_t>(k);
  if (is_floating(dtype)) return moe::test::random_normal(shape, dtype, s, Device::cpu(), 3.0);
  const double hi = dtype == DType::u8 ? 255 : 1000;
  const double lo = dtype == DType::u8 ? 0 : -1000;
  return moe::test::random_uniform(shape, DType::f64, s, lo, hi).to(dtype);
}

// Every rank's k-th input, rank q's of shape shape_of(q).
template <class ShapeOf>
std::vector<Tensor> inputs_of_all(const ProcessGroup& g, ShapeOf shape_of, DType dtype,
                                  uint64_t seed, int k) {
  std::vector<Tensor> all;
  for (int q = 0; q < g.size(); ++q) all.push_back(input(shape_of(q), dtype, seed, q, k));
  return all;
}
std::vector<Tensor> inputs_of_all(const ProcessGroup& g, const Shape& shape, DType dtype,
                                  uint64_t seed, int k) {
  return inputs_of_all(
      g, [&](int) { return shape; }, dtype, seed, k);
}

// The reduction, written out: rank order, accumulator A (fp32 for bf16 and f16), avg = sum / R.
template <class A>
std::vector<A> reduce_in_rank_order(const std::vector<std::vector<A>>& values, ReduceOp op) {
  std::vector<A> acc = values[0];
  for (size_t r = 1; r < values.size(); ++r) {
    for (size_t i = 0; i < acc.size(); ++i) {
      const A x = values[r][i];
      if (op == ReduceOp::max)
        acc[i] = x > acc[i] ? x : acc[i];
      else if (op == ReduceOp::min)
        acc[i] = x < acc[i] ? x : acc[i];
      else
        acc[i] = acc[i] + x;
    }
  }
  if (op == ReduceOp::avg)
    for (A& a : acc) a = a / static_cast<A>(values.size());
  return acc;
}

Tensor reference_reduce(const std::vector<Tensor>& inputs, ReduceOp op) {
  const DType dtype = inputs[0].dtype();
  const Shape& shape = inputs[0].shape();
  auto run = [&]<class A>(DType accumulate_in) {
    std::vector<std::vector<A>> values;
    for (const Tensor& t : inputs) values.push_back(t.to(accumulate_in).template to_vector<A>());
    return Tensor::from_vector(reduce_in_rank_order(values, op), shape).to(dtype);
  };
  switch (dtype) {
    case DType::f64:
      return run.template operator()<double>(DType::f64);
    case DType::f32:
    case DType::bf16:
    case DType::f16:
      return run.template operator()<float>(DType::f32);
    case DType::i64:
      return run.template operator()<int64_t>(DType::i64);
    case DType::i32:
      return run.template operator()<int32_t>(DType::i32);
    default:
      ADD_FAILURE() << "reference_reduce: dtype " << dtype_name(dtype);
      return Tensor();
  }
}

// Rows [start, start + count) of each input.
std::vector<Tensor> rows_of(const std::vector<Tensor>& inputs, int64_t start, int64_t count) {
  std::vector<Tensor> out;
  for (const Tensor& t : inputs) out.push_back(t.rows(start, count));
  return out;
}

// The parts one after another along dim 0 (all of one row shape and dtype).
Tensor concat_rows(const std::vector<Tensor>& parts) {
  int64_t rows = 0;
  for (const Tensor& p : parts) rows += p.size(0);
  Shape shape = parts[0].shape();
  shape[0] = rows;
  Tensor out = Tensor::empty(shape, parts[0].dtype());
  size_t offset = 0;
  for (const Tensor& p : parts) {
    if (p.nbytes() > 0) std::memcpy(static_cast<char*>(out.raw()) + offset, p.raw(), p.nbytes());
    offset += p.nbytes();
  }
  return out;
}

std::vector<int64_t> uneven_counts(int size, int64_t scale) {
  std::vector<int64_t> counts;
  for (int q = 0; q < size; ++q) counts.push_back((2 * q + 1) % 3 * scale);  // 1, 0, 2, 1, ...
  return counts;
}

int64_t sum_before(const std::vector<int64_t>& counts, int end) {
  return std::accumulate(counts.begin(), counts.begin() + end, int64_t{0});
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text)

// ---- cases --------------------------------------------------------------------------------------

void ranks_and_sizes(ProcessGroup& g, Device dev) {
  EXPECT_GE(g.rank(), 0);
  EXPECT_LT(g.rank(), g.size());
  EXPECT_EQ(static_cast<int>(g.world_ranks().size()), g.size());
  EXPECT_FALSE(g.backend().empty());
  // The world group: member q is world rank q; gathering the ranks finds each once.
  Tensor mine = Tensor::from_vector(std::vector<int32_t>{g.rank()}, {1}).to(dev);
  Tensor all = Tensor::zeros({g.size()}, DType::i32, dev);
  g.all_gather(mine, all);
  std::vector<int32_t> expected(static_cast<size_t>(g.size()));
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_TRUE(bitwise_equal(all, Tensor::from_vector(expected, {g.size()}), where(g, "ranks")));
  EXPECT_EQ(g.world_ranks(), std::vector<int>(expected.begin(), expected.end()));
}

void all_reduce(ProcessGroup& g, Device dev) {
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed));
  int k = 0;
  for (DType dtype : kReduceDTypes) {
    for (ReduceOp op : kOps) {
      for (const Shape& shape : {Shape{5, 3}, Shape{}, Shape{0, 4}, Shape{1001}}) {
        const std::vector<Tensor> inputs = inputs_of_all(g, shape, dtype, seed, k++);
        Tensor t = inputs[static_cast<size_t>(g.rank())].to(dev);
        g.all_reduce(t, op);
        EXPECT_TRUE(bitwise_equal(
            t, reference_reduce(inputs, op),
            where(g, describe("all_reduce", dtype, shape) + " " + reduce_op_name(op))));
      }
    }
  }
}

void all_gather(ProcessGroup& g, Device dev) {
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed));
  int k = 0;
  for (DType dtype : {DType::f32, DType::bf16, DType::i64, DType::u8}) {
    for (const Shape& shape : {Shape{2, 3}, Shape{0, 3}, Shape{5, 1, 3}, Shape{7}}) {
      const std::vector<Tensor> inputs = inputs_of_all(g, shape, dtype, seed, k++);
      const Tensor expected = concat_rows(inputs);
      Tensor out = Tensor::zeros(expected.shape(), dtype, dev);
      g.all_gather(inputs[static_cast<size_t>(g.rank())].to(dev), out);
      EXPECT_TRUE(bitwise_equal(out, expected, where(g, describe("all_gather", dtype, shape))));
    }
  }
}

void all_gather_v(ProcessGroup& g, Device dev) {
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int n = g.size();
  std::vector<int64_t> last_only(static_cast<size_t>(n), 0);
  last_only.back() = 3;
  int k = 0;
  for (const std::vector<int64_t>& counts :
       {uneven_counts(n, 1), uneven_counts(n, 5), std::vector<int64_t>(static_cast<size_t>(n), 0),
        last_only}) {
    for (DType dtype : {DType::f32, DType::bf16, DType::i32}) {
      const std::vector<Tensor> inputs = inputs_of_all(
          g,
          [&](int q) {
            return Shape{counts[static_cast<size_t>(q)], 2, 3};
          },
          dtype, seed, k++);
      const Tensor expected = concat_rows(inputs);
      Tensor out = Tensor::zeros(expected.shape(), dtype, dev);
      g.all_gather_v(inputs[static_cast<size_t>(g.rank())].to(dev), out, counts);
      EXPECT_TRUE(bitwise_equal(out, expected,
                                where(g, describe("all_gather_v", dtype, expected.shape()) +
                                             " counts " + ::testing::PrintToString(counts))));
    }
  }
}

void reduce_scatter(ProcessGroup& g, Device dev) {
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int n = g.size(), r = g.rank();
  int k = 0;
  for (DType dtype : kReduceDTypes) {
    for (ReduceOp op : kOps) {
      for (int64_t rows : {3, 0}) {
        const std::vector<Tensor> inputs = inputs_of_all(g, Shape{n * rows, 5}, dtype, seed, k++);
        Tensor out = Tensor::zeros({rows, 5}, dtype, dev);
        g.reduce_scatter(inputs[static_cast<size_t>(r)].to(dev), out, op);
        EXPECT_TRUE(bitwise_equal(
            out, reference_reduce(rows_of(inputs, r * rows, rows), op),
            where(g, describe("reduce_scatter", dtype, {n * rows, 5}) + " " + reduce_op_name(op))));
      }
    }
  }
}

void reduce_scatter_v(ProcessGroup& g, Device dev) {
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int n = g.size(), r = g.rank();
  int k = 0;
  for (const std::vector<int64_t>& counts : {uneven_counts(n, 1), uneven_counts(n, 7),
                                             std::vector<int64_t>(static_cast<size_t>(n), 0)}) {
    const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
    const int64_t mine = counts[static_cast<size_t>(r)];
    for (DType dtype : {DType::f64, DType::bf16, DType::f16, DType::i32}) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
        const std::vector<Tensor> inputs = inputs_of_all(g, Shape{total, 3}, dtype, seed, k++);
        Tensor out = Tensor::zeros({mine, 3}, dtype, dev);
        g.reduce_scatter_v(inputs[static_cast<size_t>(r)].to(dev), out, counts, op);
        EXPECT_TRUE(bitwise_equal(
            out, reference_reduce(rows_of(inputs, sum_before(counts, r), mine), op),
            where(g, describe("reduce_scatter_v", dtype, {total, 3}) + " " + reduce_op_name(op) +
                         " counts " + ::testing::PrintToString(counts))));
      }
    }
  }
}

// Rank s sends rows(s, d) rows to rank d; rows [sum_{d' < d} rows(s, d'), + rows(s, d)) of its
// input.
void check_all_to_all(ProcessGroup& g, Device dev, const std::function<int64_t(int, int)>& rows,
                      uint64_t seed, int& k, const char* label) {
  const int n = g.size(), r = g.rank();
  auto sends_of = [&](int s) {
    std::vector<int64_t> c;
    for (int d = 0; d < n; ++d) c.push_back(rows(s, d));
    return c;
  };
  std::vector<int64_t> recvs;
  for (int s = 0; s < n; ++s) recvs.push_back(rows(s, r));
  for (DType dtype : {DType::f32, DType::i64, DType::u8, DType::bf16}) {
    const std::vector<Tensor> inputs = inputs_of_all(
        g,
        [&](int s) {
          const std::vector<int64_t> c = sends_of(s);
          return Shape{std::accumulate(c.begin(), c.end(), int64_t{0}), 3};
        },
        dtype, seed, k++);
    std::vector<Tensor> parts;
    for (int s = 0; s < n; ++s)
      parts.push_back(inputs[static_cast<size_t>(s)].rows(sum_before(sends_of(s), r), rows(s, r)));
    const Tensor expected = concat_rows(parts);
    Tensor out = Tensor::zeros(expected.shape(), dtype, dev);
    g.all_to_all_v(inputs[static_cast<size_t>(r)].to(dev), out, sends_of(r), recvs);
    EXPECT_TRUE(bitwise_equal(out, expected,
                              where(g, describe("all_to_all_v", dtype, expected.shape(), label))));
  }
}

void all_to_all_v(ProcessGroup& g, Device dev) {
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed));
  int k = 0;
  check_all_to_all(
      g, dev, [](int s, int d) -> int64_t { return (s + 2 * d) % 3; }, seed, k,
      " (s + 2d) mod 3 rows");
  check_all_to_all(
      g, dev, [](int s, int d) -> int64_t { return (s + d) % 2 * 9; }, seed, k,
      " 9 rows when s + d is odd");
  // Rank 0 neither sends nor receives anything.
  check_all_to_all(
      g, dev, [](int s, int d) -> int64_t { return s == 0 || d == 0 ? 0 : 2; }, seed, k,
      " rank 0 idle");
}

void broadcast(ProcessGroup& g, Device dev) {
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed));
  int k = 0;
  for (int root = 0; root < g.size(); ++root) {
    for (DType dtype : {DType::f32, DType::bf16, DType::i32, DType::u8, DType::f64}) {
      for (const Shape& shape : {Shape{4, 3}, Shape{}, Shape{0, 3}, Shape{257}}) {
        const std::vector<Tensor> inputs = inputs_of_all(g, shape, dtype, seed, k++);
        Tensor t = inputs[static_cast<size_t>(g.rank())].to(dev);
        g.broadcast(t, root);
        EXPECT_TRUE(bitwise_equal(
            t, inputs[static_cast<size_t>(root)],
            where(g, describe("broadcast", dtype, shape) + " root " + std::to_string(root))));
      }
    }
  }
}

void barrier(ProcessGroup& g, Device dev) {
  for (int round = 1; round <= 3; ++round) {
    g.barrier();
    Tensor t = Tensor::full({2}, round, DType::i64, dev);
    g.all_reduce(t);
    EXPECT_EQ(t.to(Device::cpu()).to_vector<int64_t>()[1], int64_t{round} * g.size())
        << where(g, "round " + std::to_string(round));
  }
  g.barrier();
}

// A group made by split: its members, its rank (position in its list), and a sum, a gather and
// a ring of sends over it.
void check_subgroup(ProcessGroup& parent, const std::shared_ptr<ProcessGroup>& group,
                    const std::vector<std::vector<int>>& lists, Device dev, const char* label) {
  const int me = parent.rank();
  const std::vector<int>* list = nullptr;
  for (const std::vector<int>& l : lists)
    if (std::find(l.begin(), l.end(), me) != l.end()) list = &l;
  const std::string what = where(parent, std::string("split ") + label);
  EXPECT_EQ(group == nullptr, list == nullptr) << what;
  if (group == nullptr || list == nullptr) return;
  const int position = static_cast<int>(std::find(list->begin(), list->end(), me) - list->begin());
  std::vector<int> members;
  for (int q : *list) members.push_back(parent.world_ranks()[static_cast<size_t>(q)]);
  EXPECT_EQ(group->size(), static_cast<int>(list->size())) << what;
  EXPECT_EQ(group->rank(), position) << what;
  EXPECT_EQ(group->world_ranks(), members) << what;
  EXPECT_EQ(group->backend(), parent.backend()) << what;
  if (group->size() != static_cast<int>(list->size()) || group->rank() != position) return;

  const int world_rank = parent.world_ranks()[static_cast<size_t>(me)];
  Tensor sum = Tensor::full({3}, world_rank + 1, DType::i64, dev);
  group->all_reduce(sum);
  EXPECT_EQ(sum.to(Device::cpu()).to_vector<int64_t>()[2],
            std::accumulate(members.begin(), members.end(), int64_t{0}) + group->size())
      << what;
  Tensor mine = Tensor::full({1}, world_rank, DType::i32, dev);
  Tensor all = Tensor::zeros({group->size()}, DType::i32, dev);
  group->all_gather(mine, all);
  EXPECT_TRUE(bitwise_equal(
      all,
      Tensor::from_vector(std::vector<int32_t>(members.begin(), members.end()), {group->size()}),
      what + " all_gather (list order)"));
  const int n = group->size(), r = group->rank();
  Tensor from_left = Tensor::zeros({2}, DType::i32, dev);
  const P2POp ops[] = {
      {P2POp::Kind::send, Tensor::full({2}, world_rank, DType::i32, dev), (r + 1) % n},
      {P2POp::Kind::recv, from_left, (r + n - 1) % n}};
  group->batch_p2p(ops);
  EXPECT_EQ(from_left.to(Device::cpu()).to_vector<int32_t>()[1],
            members[static_cast<size_t>((r + n - 1) % n)])
      << what << " ring";
}

void split(ProcessGroup& g, Device dev) {
  const int n = g.size();
  // Pairs; with an odd size the last rank is a group of one.
  std::vector<std::vector<int>> pairs;
  for (int q = 0; q < n; q += 2)
    pairs.push_back(q + 1 < n ? std::vector<int>{q, q + 1} : std::vector<int>{q});
  const std::shared_ptr<ProcessGroup> pair = g.split(pairs);
  check_subgroup(g, pair, pairs, dev, "pairs");

  // Strided by parity, each listed backwards: group order is list order.
  std::vector<std::vector<int>> strided(n > 1 ? 2 : 1);
  for (int q = n - 1; q >= 0; --q) strided[static_cast<size_t>(q % 2)].push_back(q);
  const std::shared_ptr<ProcessGroup> parity = g.split(strided);
  check_subgroup(g, parity, strided, dev, "strided");

  // One list of one rank: every other rank is in no group.
  const std::vector<std::vector<int>> single = {{n - 1}};
  check_subgroup(g, g.split(single), single, dev, "single");

  // Only the even ranks, in a group; the odd ones in none.
  std::vector<std::vector<int>> evens(1);
  for (int q = 0; q < n; q += 2) evens[0].push_back(q);
  check_subgroup(g, g.new_subgroup(evens[0]), evens, dev, "new_subgroup of the even ranks");

  // A split of a split takes ranks of its parent: the strided group in halves.
  if (parity) {
    std::vector<std::vector<int>> halves(1);
    for (int q = 0; q < parity->size(); ++q) {
      if (q == (parity->size() + 1) / 2) halves.emplace_back();
      halves.back().push_back(q);
    }
    check_subgroup(*parity, parity->split(halves), halves, dev, "strided, halved");
  }

  // The same lists twice: two groups, used interleaved.
  std::vector<int> everyone(static_cast<size_t>(n));
  std::iota(everyone.begin(), everyone.end(), 0);
  const std::shared_ptr<ProcessGroup> a = g.new_subgroup(everyone);
  const std::shared_ptr<ProcessGroup> b = g.new_subgroup(everyone);
  EXPECT_NE(a, nullptr);
  EXPECT_NE(b, nullptr);
  if (a && b) {
    Tensor x = Tensor::full({2}, 1.0, DType::f32, dev);
    Tensor y = Tensor::full({2}, g.rank(), DType::f32, dev);
    a->all_reduce(x);
    b->broadcast(y, n - 1);
    a->barrier();
    EXPECT_EQ(x.to(Device::cpu()).to_vector<float>()[0], static_cast<float>(n)) << where(g, "a");
    EXPECT_EQ(y.to(Device::cpu()).to_vector<float>()[1], static_cast<float>(n - 1))
        << where(g, "b");
  }
}

// Each rank sends to its right neighbour and receives from its left with the blocking forms:
// even ranks send first, odd ranks receive first, so no cycle waits.
void p2p_ring(ProcessGroup& g, Device dev) {
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int n = g.size(), r = g.rank(), right = (r + 1) % n, left = (r + n - 1) % n;
  int k = 0;
  for (DType dtype : {DType::f32, DType::bf16, DType::i64, DType::u8}) {
    for (const Shape& shape : {Shape{4, 3}, Shape{}, Shape{0, 3}, Shape{1001}}) {
      const Tensor mine = input(shape, dtype, seed, r, k);
      const Tensor expected = input(shape, dtype, seed, left, k);
      ++k;
      Tensor received = Tensor::zeros(shape, dtype, dev);
      if (n == 1) {
        const P2POp ops[] = {{P2POp::Kind::send, mine.to(dev), 0},
                             {P2POp::Kind::recv, received, 0}};
        g.batch_p2p(ops);
      } else if (r % 2 == 0) {
        g.send(mine.to(dev), right);
        g.recv(received, left);
      } else {
        g.recv(received, left);
        g.send(mine.to(dev), right);
      }
      EXPECT_TRUE(bitwise_equal(received, expected, where(g, describe("ring", dtype, shape))));
    }
  }
}

// One batch with receives before sends, to and from both neighbours (the same rank when the
// size is 2, this rank when it is 1: messages between two ranks match in issue order); then a
// batch of several messages to one neighbour.
void p2p_batch_neighbours(ProcessGroup& g, Device dev) {
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int n = g.size(), r = g.rank(), right = (r + 1) % n, left = (r + n - 1) % n;
  for (int round = 0; round < 3; ++round) {
    const int k = 10 * round;
    // Rightward messages are f32 [3, 5], leftward i32 [7]: a mismatch in the matching would show.
    Tensor from_left = Tensor::zeros({3, 5}, DType::f32, dev);
    Tensor from_right = Tensor::zeros({7}, DType::i32, dev);
    const P2POp ops[] = {
        {P2POp::Kind::recv, from_left, left},
        {P2POp::Kind::recv, from_right, right},
        {P2POp::Kind::send, input({3, 5}, DType::f32, seed, r, k).to(dev), right},
        {P2POp::Kind::send, input({7}, DType::i32, seed, r, k + 1).to(dev), left},
    };
    g.batch_p2p(ops);
    EXPECT_TRUE(bitwise_equal(from_left, input({3, 5}, DType::f32, seed, left, k),
                              where(g, "batch: from the left, round " + std::to_string(round))));
    EXPECT_TRUE(bitwise_equal(from_right, input({7}, DType::i32, seed, right, k + 1),
                              where(g, "batch: from the right, round " + std::to_string(round))));
  }
  // Three messages of growing sizes to the right neighbour, in one batch: they arrive in order.
  std::vector<P2POp> ops;
  std::vector<Tensor> received;
  for (int m = 0; m < 3; ++m) {
    received.push_back(Tensor::zeros({m + 1, 2}, DType::f64, dev));
    ops.push_back(
        {P2POp::Kind::send, input({m + 1, 2}, DType::f64, seed, r, 100 + m).to(dev), right});
  }
  for (int m = 0; m < 3; ++m)
    ops.push_back({P2POp::Kind::recv, received[static_cast<size_t>(m)], left});
  g.batch_p2p(ops);
  for (int m = 0; m < 3; ++m) {
    EXPECT_TRUE(bitwise_equal(received[static_cast<size_t>(m)],
                              input({m + 1, 2}, DType::f64, seed, left, 100 + m),
                              where(g, "batch of three, message " + std::to_string(m))));
  }
}

// Several operations issued before any wait, waited in reverse order.
void async_reverse_wait(ProcessGroup& g, Device dev) {
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int n = g.size(), r = g.rank();
  const std::vector<Tensor> sums = inputs_of_all(g, Shape{33}, DType::f32, seed, 0);
  const std::vector<Tensor> maxes = inputs_of_all(g, Shape{5, 2}, DType::i64, seed, 1);
  const std::vector<Tensor> gathered = inputs_of_all(g, Shape{3, 3}, DType::bf16, seed, 2);
  const std::vector<Tensor> sent = inputs_of_all(g, Shape{4}, DType::f64, seed, 3);
  const std::vector<Tensor> roots = inputs_of_all(g, Shape{6}, DType::i32, seed, 4);

  Tensor sum = sums[static_cast<size_t>(r)].to(dev);
  Tensor max = maxes[static_cast<size_t>(r)].to(dev);
  Tensor all = Tensor::zeros({3 * n, 3}, DType::bf16, dev);
  Tensor from_left = Tensor::zeros({4}, DType::f64, dev);
  Tensor root = roots[static_cast<size_t>(r)].to(dev);
  const P2POp ops[] = {{P2POp::Kind::send, sent[static_cast<size_t>(r)].to(dev), (r + 1) % n},
                       {P2POp::Kind::recv, from_left, (r + n - 1) % n}};
  std::vector<std::unique_ptr<Work>> works;
  works.push_back(g.all_reduce_async(sum));
  works.push_back(g.all_reduce_async(max, ReduceOp::max));
  works.push_back(g.all_gather_async(gathered[static_cast<size_t>(r)].to(dev), all));
  works.push_back(g.batch_p2p_async(ops));
  works.push_back(g.broadcast_async(root, n - 1));
  for (auto it = works.rbegin(); it != works.rend(); ++it) {
    (*it)->wait();
    EXPECT_TRUE((*it)->is_completed()) << where(g, "after wait");
  }
  for (auto& w : works) w->synchronize();
  EXPECT_TRUE(bitwise_equal(sum, reference_reduce(sums, ReduceOp::sum), where(g, "async sum")));
  EXPECT_TRUE(bitwise_equal(max, reference_reduce(maxes, ReduceOp::max), where(g, "async max")));
  EXPECT_TRUE(bitwise_equal(all, concat_rows(gathered), where(g, "async all_gather")));
  EXPECT_TRUE(bitwise_equal(from_left, sent[static_cast<size_t>((r + n - 1) % n)],
                            where(g, "async batch_p2p")));
  EXPECT_TRUE(bitwise_equal(root, roots[static_cast<size_t>(n - 1)], where(g, "async broadcast")));
}

// The last rank passes an input of another shape: every rank throws, naming both shapes.
void disagreeing_calls(ProcessGroup& g, Device dev) {
  const int n = g.size(), r = g.rank();
  if (n == 1) return;
  const int64_t rows = r == n - 1 ? 3 : 2;
  Tensor in = Tensor::zeros({rows, 3}, DType::f32, dev);
  Tensor out = Tensor::zeros({n * rows, 3}, DType::f32, dev);
  const std::string m = message_of([&] { g.all_gather(in, out); });
  EXPECT_CONTAINS(m, "all_gather on world ranks [0, 1");
  EXPECT_CONTAINS(m, "the in shape differs across ranks: rank 0 [2, 3]");
  EXPECT_CONTAINS(m, "rank " + std::to_string(n - 1) + " [3, 3]");
}

// The last rank's output has a wrong shape: it throws naming the shapes, and the others throw
// instead of waiting for it.
void bad_argument_on_one_rank(ProcessGroup& g, Device dev) {
  const int n = g.size(), r = g.rank(), bad = n - 1;
  Tensor in = Tensor::zeros({2, 3}, DType::f32, dev);
  Tensor out = Tensor::zeros({2 * n - (r == bad ? 1 : 0), 3}, DType::f32, dev);
  const std::string m = message_of([&] { g.all_gather(in, out); });
  const std::string bad_call =
      "all_gather (rank " + std::to_string(bad) + " of " + std::to_string(n) + ", world ranks [";
  if (r == bad) {
    EXPECT_CONTAINS(m, bad_call);
    EXPECT_CONTAINS(m, "out has shape [" + std::to_string(2 * n - 1) + ", 3], expected [" +
                           std::to_string(2 * n) + ", 3]");
  } else {
    EXPECT_CONTAINS(m, "collective aborted: rank " + std::to_string(g.world_ranks().back()) +
                           " failed: " + bad_call);
  }
}

// A receive into a tensor of another shape: the receiver throws, naming both ranks and shapes.
void p2p_mismatch(ProcessGroup& g, Device dev) {
  if (g.size() == 1) return;
  if (g.rank() == 0) {
    g.send(Tensor::zeros({2, 3}, DType::f32, dev), 1);
  } else if (g.rank() == 1) {
    Tensor t = Tensor::zeros({3, 3}, DType::f32, dev);
    const std::string m = message_of([&] { g.recv(t, 0); });
    EXPECT_CONTAINS(m, "batch_p2p (rank 1 of ");
    EXPECT_CONTAINS(m, "rank 0 sent f32 [2, 3] but rank 1 receives into f32 [3, 3]");
  }
}

}  // namespace

const std::vector<SuiteCase>& collective_suite() {
  static const std::vector<SuiteCase> cases = {
      {"ranks_and_sizes", ranks_and_sizes},
      {"all_reduce", all_reduce},
      {"all_gather", all_gather},
      {"all_gather_v", all_gather_v},
      {"reduce_scatter", reduce_scatter},
      {"reduce_scatter_v", reduce_scatter_v},
      {"all_to_all_v", all_to_all_v},
      {"broadcast", broadcast},
      {"barrier", barrier},
      {"split", split},
      {"p2p_ring", p2p_ring},
      {"p2p_batch_neighbours", p2p_batch_neighbours},
      {"async_reverse_wait", async_reverse_wait},
      {"disagreeing_calls", disagreeing_calls, true},
      {"bad_argument_on_one_rank", bad_argument_on_one_rank, true},
      {"p2p_mismatch", p2p_mismatch, true},
  };
  return cases;
}

std::vector<LocalSuiteParam> local_suite_params() {
  std::vector<LocalSuiteParam> out;
  for (const SuiteCase& c : collective_suite())
    for (int world : {1, 2, 3, 4}) out.push_back({c, world});
  return out;
}

std::string local_suite_param_name(const LocalSuiteParam& p) {
  return std::string(p.suite_case.name) + "_world" + std::to_string(p.world);
}

void RankFailurePrinter::OnTestStart(const ::testing::TestInfo& test) {
  test_ = std::string(test.test_suite_name()) + "." + test.name();
}

void RankFailurePrinter::OnTestPartResult(const ::testing::TestPartResult& result) {
  if (!result.failed()) return;
  std::fprintf(stderr, "[rank %d] failure in %s at %s:%d\n%s\n", rank_, test_.c_str(),
               result.file_name() ? result.file_name() : "?", result.line_number(),
               result.summary());
}

int run_tests_on_ranks(ProcessGroup& world, const std::string& program, Device device) {
  GTEST_FLAG_SET(catch_exceptions, false);
  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (world.rank() != 0) delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new RankFailurePrinter(world.rank()));
  const int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  Tensor any = Tensor::full({1}, failed, DType::i32, device);
  world.all_reduce(any, ReduceOp::max);
  if (failed)
    print_rank_line(program + ": FAILED (failures above, prefixed [rank " +
                    std::to_string(world.rank()) + "])");
  return any.item() != 0 ? 1 : 0;
}

}  // namespace moe::dist::test
