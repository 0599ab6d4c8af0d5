// Exchange slots on the CPU, as a specification: hand-worked send and receive maps (a
// destination over its budget, empty experts and destinations, C = 0, one source, rows past the
// counted total), the inverse property of each pair of maps, gather_rows with empty rows in
// several dtypes and shapes, the round trip make_send_slots -> a simulated exchange between P
// ranks -> make_received_slots against a straightforward reference, and every argument error.
#include "moe/ops/exchange_slots.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "common/check.h"

namespace moe::ops {
namespace {

std::vector<int32_t> ints(const Tensor& t) {
  return t.to_vector<int32_t>();
}
std::vector<int64_t> longs(const Tensor& t) {
  return t.to_vector<int64_t>();
}
Tensor longs_of(const std::vector<int64_t>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape);
}
Tensor index_of(const std::vector<int32_t>& v) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
}

// a and b are inverse where they are >= 0: b[a[i]] == i and a[b[j]] == j, in range.
::testing::AssertionResult inverse(const Tensor& a_t, const Tensor& b_t) {
  const std::vector<int32_t> a = ints(a_t), b = ints(b_t);
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] < 0) continue;
    if (static_cast<size_t>(a[i]) >= b.size() || b[a[i]] != static_cast<int32_t>(i))
      return ::testing::AssertionFailure() << "entry " << i << " -> " << a[i] << " not mapped back";
  }
  for (size_t j = 0; j < b.size(); ++j) {
    if (b[j] < 0) continue;
    if (static_cast<size_t>(b[j]) >= a.size() || a[b[j]] != static_cast<int32_t>(j))
      return ::testing::AssertionFailure() << "entry " << j << " <- " << b[j] << " not mapped back";
  }
  return ::testing::AssertionSuccess();
}

void expect_send(const SendSlots& s, const std::vector<int32_t>& slot_to_row,
                 const std::vector<int32_t>& row_to_slot, const std::vector<int64_t>& counts,
                 const Shape& counts_shape, int64_t peak) {
  EXPECT_EQ(ints(s.slot_to_row), slot_to_row);
  EXPECT_EQ(ints(s.row_to_slot), row_to_slot);
  EXPECT_EQ(s.counts.shape(), counts_shape);
  EXPECT_EQ(longs(s.counts), counts);
  EXPECT_EQ(s.peak_rows.shape(), (Shape{1}));
  EXPECT_EQ(longs(s.peak_rows), std::vector<int64_t>{peak});
  EXPECT_TRUE(inverse(s.slot_to_row, s.row_to_slot));
}

// ---- make_send_slots -------------------------------------------------------------------------

TEST(ExchangeSlots, SendWorkedExample) {
  // P = 2, El = 2, C = 3; n = [2, 0 | 1, 3], R = 8 (rows 6, 7 past the counted total).
  // o = [0, 2, 2, 3]. Destination 0 (rows 0-1, r = 2) fits; destination 1 (rows 2-5, r = 4) is
  // over budget: it keeps expert 2's row 2 and the first two of expert 3's rows 3-5.
  const SendSlots s = make_send_slots(longs_of({2, 0, 1, 3}, {4}), 2, 3, 8);
  expect_send(s, {0, 1, -1, 2, 3, 4}, {0, 1, 3, 4, 5, -1, -1, -1}, {2, 0, 1, 2}, {2, 2}, 4);
}

TEST(ExchangeSlots, SendZeroSlotRows) {
  // C = 0: nothing is sent, but the peak still reports the routed rows.
  const SendSlots s = make_send_slots(longs_of({2, 0, 1, 3}, {4}), 2, 0, 8);
  expect_send(s, {}, std::vector<int32_t>(8, -1), {0, 0, 0, 0}, {2, 2}, 4);
}

TEST(ExchangeSlots, SendOneDestination) {
  // P = 1, El = 3, C = 10: everything fits; slot rows past the 5 rows are empty.
  const SendSlots s = make_send_slots(longs_of({3, 0, 2}, {3}), 1, 10, 5);
  expect_send(s, {0, 1, 2, 3, 4, -1, -1, -1, -1, -1}, {0, 1, 2, 3, 4}, {3, 0, 2}, {1, 3}, 5);
}

TEST(ExchangeSlots, SendEmptyAndOverflowingDestinations) {
  // P = 3, El = 1, C = 2; n = [0, 5, 1], R = 7. Destination 0 is empty, destination 1 keeps
  // rows 0-1 of its 5, destination 2 sends row 5; row 6 is past the total.
  const SendSlots s = make_send_slots(longs_of({0, 5, 1}, {3}), 3, 2, 7);
  expect_send(s, {-1, -1, 0, 1, 5, -1}, {2, 3, -1, -1, -1, 4, -1}, {0, 2, 1}, {3, 1}, 5);
}

TEST(ExchangeSlots, SendNothingRouted) {
  const SendSlots s = make_send_slots(longs_of({0, 0, 0, 0}, {4}), 4, 2, 3);
  expect_send(s, std::vector<int32_t>(8, -1), {-1, -1, -1}, {0, 0, 0, 0}, {4, 1}, 0);
}

TEST(ExchangeSlots, PeakAccumulatesOverCalls) {
  // The caller's accumulator keeps the running maximum: 4 (destination 1 of the first call),
  // then a call peaking at 2 leaves it, then one at 6 raises it; zeroing starts over.
  Tensor peak = Tensor::zeros({1}, DType::i64);
  make_send_slots(longs_of({2, 0, 1, 3}, {4}), 2, 3, 8, peak);
  EXPECT_EQ(longs(peak), std::vector<int64_t>{4});
  const SendSlots s = make_send_slots(longs_of({1, 1, 0, 2}, {4}), 2, 3, 8, peak);
  EXPECT_EQ(longs(peak), std::vector<int64_t>{4});
  EXPECT_EQ(longs(s.peak_rows), std::vector<int64_t>{4});  // the same storage
  make_send_slots(longs_of({6, 0, 0, 0}, {4}), 2, 3, 8, peak);
  EXPECT_EQ(longs(peak), std::vector<int64_t>{6});
  peak.zero_();
  make_send_slots(longs_of({1, 0, 0, 0}, {4}), 2, 3, 8, peak);
  EXPECT_EQ(longs(peak), std::vector<int64_t>{1});
  const Tensor n = longs_of({2, 0, 1, 3}, {4});
  EXPECT_SAYS(
      test::message_of([&] { make_send_slots(n, 2, 3, 8, Tensor::zeros({2}, DType::i64)); }),
      "peak_rows");
  EXPECT_SAYS(
      test::message_of([&] { make_send_slots(n, 2, 3, 8, Tensor::zeros({1}, DType::i32)); }),
      "peak_rows");
}

// ---- make_received_slots ---------------------------------------------------------------------

void expect_received(const ReceivedSlots& r, const std::vector<int32_t>& row_to_received,
                     const std::vector<int32_t>& received_to_row,
                     const std::vector<int64_t>& tokens_per_expert) {
  EXPECT_EQ(ints(r.row_to_received), row_to_received);
  EXPECT_EQ(ints(r.received_to_row), received_to_row);
  EXPECT_EQ(longs(r.tokens_per_expert), tokens_per_expert);
  EXPECT_TRUE(inverse(r.row_to_received, r.received_to_row));
}

TEST(ExchangeSlots, ReceivedWorkedExample) {
  // S = 3, El = 2, C = 4; c = [[1, 2], [0, 0], [3, 1]].
  //   source 0, slot rows 0-3:  le 0 at 0; le 1 at 1, 2; row 3 empty
  //   source 1, slot rows 4-7:  empty
  //   source 2, slot rows 8-11: le 0 at 8, 9, 10; le 1 at 11
  // Grouped [le][s]: le 0: 0 | - | 8 9 10; le 1: 1 2 | - | 11; then 5 empty rows.
  const ReceivedSlots r = make_received_slots(longs_of({1, 2, 0, 0, 3, 1}, {3, 2}), 4);
  expect_received(r, {0, 8, 9, 10, 1, 2, 11, -1, -1, -1, -1, -1},
                  {0, 4, 5, -1, -1, -1, -1, -1, 1, 2, 3, 6}, {4, 3});
}

TEST(ExchangeSlots, ReceivedOneSource) {
  // S = 1, El = 3, C = 5; c = [[2, 0, 1]]: the slot is already grouped by expert.
  const ReceivedSlots r = make_received_slots(longs_of({2, 0, 1}, {1, 3}), 5);
  expect_received(r, {0, 1, 2, -1, -1}, {0, 1, 2, -1, -1}, {2, 0, 1});
}

TEST(ExchangeSlots, ReceivedZeroSlotRows) {
  const ReceivedSlots r = make_received_slots(longs_of({0, 0, 0, 0}, {2, 2}), 0);
  expect_received(r, {}, {}, {0, 0});
  EXPECT_EQ(r.row_to_received.shape(), (Shape{0}));
}

TEST(ExchangeSlots, ReceivedFullSlots) {
  // Every source fills its slot exactly: no empty rows at all.
  const ReceivedSlots r = make_received_slots(longs_of({1, 1, 2, 0}, {2, 2}), 2);
  // Grouped: le 0: 0 | 2 3; le 1: 1.
  expect_received(r, {0, 2, 3, 1}, {0, 3, 1, 2}, {3, 1});
}

// ---- gather_rows -----------------------------------------------------------------------------

// x[i] = (i + 1) * 10 + column (exact in every dtype), from f64.
Tensor numbered_rows(const Shape& shape, DType dtype) {
  Tensor x = Tensor::empty(shape, DType::f64);
  const int64_t rows = shape[0], cols = rows == 0 ? 0 : x.numel() / rows;
  double* p = x.data<double>();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < cols; ++c) p[i * cols + c] = double((i + 1) * 10 + c);
  return x.to(dtype);
}

TEST(ExchangeSlots, GatherRowsWithEmptyRows) {
  const std::vector<int32_t> index{2, -1, 0, -1, 3, 2};
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::i64}) {
    for (const Shape& shape : {Shape{4}, Shape{4, 3}, Shape{4, 2, 3}}) {
      SCOPED_TRACE(testing::Message() << dtype_name(dt) << " " << shape_str(shape));
      const Tensor x = numbered_rows(shape, dt);
      const Tensor out = gather_rows(x, index_of(index));
      EXPECT_EQ(out.shape(), with_dim0(shape, 6));
      EXPECT_EQ(out.dtype(), dt);
      // The expected rows, written out: row r of x is (r + 1) * 10 + column.
      const int64_t cols = x.numel() / 4;
      std::vector<double> expected;
      for (int32_t r : index)
        for (int64_t c = 0; c < cols; ++c) expected.push_back(r < 0 ? 0.0 : (r + 1) * 10.0 + c);
      EXPECT_EQ(out.to_double_vector(), expected);
    }
  }
}

TEST(ExchangeSlots, GatherRowsEmpty) {
  const Tensor x = numbered_rows({3, 5}, DType::f32);
  EXPECT_EQ(gather_rows(x, index_of({})).shape(), (Shape{0, 5}));
  // No source rows: only empty rows can be asked for.
  const Tensor none = Tensor::empty({0, 5}, DType::f32);
  EXPECT_TRUE(
      test::equal(gather_rows(none, index_of({-1, -1})), Tensor::zeros({2, 5}, DType::f32)));
}

TEST(ExchangeSlots, GatherAlongEitherMapIsTheInverse) {
  // Moving the worked example's rows into the slots and back gives the sent rows, zeros elsewhere.
  const SendSlots s = make_send_slots(longs_of({2, 0, 1, 3}, {4}), 2, 3, 8);
  const Tensor x = numbered_rows({8, 3}, DType::f32);
  const Tensor slots = gather_rows(x, s.slot_to_row);
  const Tensor back = gather_rows(slots, s.row_to_slot);
  const std::vector<double> xs = x.to_double_vector(), bs = back.to_double_vector();
  const std::vector<int32_t> r2s = ints(s.row_to_slot);
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t c = 0; c < 3; ++c)
      EXPECT_EQ(bs[r * 3 + c], r2s[r] < 0 ? 0.0 : xs[r * 3 + c]) << "row " << r;
}

// ---- round trip through a simulated exchange ---------------------------------------------------

struct Exchange {
  int64_t ranks;  // P (= S)
  int64_t local;  // El
  int64_t slot_rows;
  int64_t hidden;
};

// Rank p's permuted rows: row r of rank p is (p + 1, r + 1, ...) so zeros mean "empty".
Tensor rank_rows(int64_t rank, int64_t rows, int64_t hidden) {
  std::vector<int64_t> v(static_cast<size_t>(rows * hidden));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < hidden; ++h) v[r * hidden + h] = h == 0 ? rank + 1 : (r + 1) * 100 + h;
  return Tensor::from_vector(v, {rows, hidden});
}

void round_trip(const Exchange& ex, uint64_t seed) {
  const int64_t P = ex.ranks, El = ex.local, E = P * El, C = ex.slot_rows, H = ex.hidden;
  std::mt19937_64 gen(seed);
  // Per rank: tokens per expert (a third of the experts empty), R = their sum + a few unused.
  std::vector<std::vector<int64_t>> n(static_cast<size_t>(P));
  std::vector<int64_t> num_rows(static_cast<size_t>(P));
  const int64_t per_expert = std::max<int64_t>(2 * C / El + 2, 2);
  for (int64_t p = 0; p < P; ++p) {
    int64_t total = 0;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t v = gen() % 3 == 0 ? 0 : static_cast<int64_t>(gen() % per_expert);
      n[p].push_back(v);
      total += v;
    }
    num_rows[p] = total + static_cast<int64_t>(gen() % 4);
  }
  // Send side.
  std::vector<SendSlots> send;
  std::vector<Tensor> send_buf;
  for (int64_t p = 0; p < P; ++p) {
    send.push_back(make_send_slots(longs_of(n[p], {E}), P, C, num_rows[p]));
    send_buf.push_back(gather_rows(rank_rows(p, num_rows[p], H), send.back().slot_to_row));
    EXPECT_TRUE(inverse(send.back().slot_to_row, send.back().row_to_slot));
  }
  // The exchange: rank q receives slot q of every source s, in source order, with its counts.
  for (int64_t q = 0; q < P; ++q) {
    SCOPED_TRACE(testing::Message() << "rank " << q);
    Tensor received = Tensor::empty({P * C, H}, DType::i64);
    Tensor counts = Tensor::empty({P, El}, DType::i64);
    for (int64_t s = 0; s < P; ++s) {
      received.rows(s * C, C).copy_(send_buf[s].rows(q * C, C));
      counts.rows(s, 1).copy_(send[s].counts.rows(q, 1));
    }
    const ReceivedSlots rs = make_received_slots(counts, C);
    EXPECT_TRUE(inverse(rs.row_to_received, rs.received_to_row));
    const Tensor grouped = gather_rows(received, rs.row_to_received);

    // Reference: destination q's rows on source s are its experts' rows in order; the first C
    // of them travel; group them by local expert, [le][s].
    std::vector<int64_t> expected;
    std::vector<int64_t> expected_tokens(static_cast<size_t>(El), 0);
    for (int64_t le = 0; le < El; ++le) {
      for (int64_t s = 0; s < P; ++s) {
        int64_t first_row = 0, before = 0;  // o_e on source s; destination q's rows before e
        for (int64_t e = 0; e < q * El + le; ++e) {
          first_row += n[s][e];
          if (e >= q * El) before += n[s][e];
        }
        const int64_t e = q * El + le;
        for (int64_t i = 0; i < n[s][e] && before + i < C; ++i) {
          const std::vector<int64_t> row =
              longs(rank_rows(s, num_rows[s], H).rows(first_row + i, 1));
          expected.insert(expected.end(), row.begin(), row.end());
          ++expected_tokens[le];
        }
      }
    }
    expected.resize(static_cast<size_t>(P * C * H), 0);
    EXPECT_EQ(longs(grouped), expected);
    EXPECT_EQ(longs(rs.tokens_per_expert), expected_tokens);
    // And back: the grouped rows return to their received rows (empty rows stay zero).
    EXPECT_EQ(longs(gather_rows(grouped, rs.received_to_row)), longs(received));
  }
  // Peak: the most rows any source routed to one destination.
  for (int64_t p = 0; p < P; ++p) {
    int64_t peak = 0;
    for (int64_t d = 0; d < P; ++d) {
      int64_t routed = 0;
      for (int64_t le = 0; le < El; ++le) routed += n[p][d * El + le];
      peak = std::max(peak, routed);
    }
    EXPECT_EQ(longs(send[p].peak_rows), std::vector<int64_t>{peak});
  }
}

TEST(ExchangeSlots, RoundTripThroughSimulatedExchange) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t case_seed = seed;
  for (const Exchange& ex : {Exchange{1, 1, 4, 2}, Exchange{2, 2, 3, 3}, Exchange{3, 3, 7, 2},
                             Exchange{4, 1, 1, 1}, Exchange{2, 3, 0, 2}, Exchange{5, 2, 9, 2}}) {
    SCOPED_TRACE(testing::Message()
                 << "P=" << ex.ranks << " El=" << ex.local << " C=" << ex.slot_rows);
    for (int rep = 0; rep < 4; ++rep) round_trip(ex, ++case_seed);
  }
}

// ---- errors ----------------------------------------------------------------------------------

TEST(ExchangeSlots, SendErrors) {
  const Tensor n = longs_of({2, 0, 1, 3}, {4});
  EXPECT_SAYS(test::message_of([&] { make_send_slots(n.to(DType::i32), 2, 3, 8); }),
              "make_send_slots", "tokens_per_expert");
  EXPECT_SAYS(test::message_of([&] {
                make_send_slots(n.reshape({2, 2}), 2, 3, 8);
              }),
              "make_send_slots", "tokens_per_expert");
  EXPECT_SAYS(test::message_of([&] { make_send_slots(n, 3, 3, 8); }), "make_send_slots",
              "tokens_per_expert", "multiple of 3");
  EXPECT_SAYS(test::message_of([&] { make_send_slots(n, 0, 3, 8); }), "destinations");
  EXPECT_SAYS(test::message_of([&] { make_send_slots(n, 2, -1, 8); }), "slot_rows");
  EXPECT_SAYS(test::message_of([&] { make_send_slots(n, 2, 3, -1); }), "num_rows");
  EXPECT_SAYS(test::message_of([&] { make_send_slots(n, 2, 3, 5); }), "num_rows = 5",
              "tokens_per_expert");
  EXPECT_SAYS(test::message_of([&] {
                make_send_slots(longs_of({2, -1, 1, 3}, {4}), 2, 3, 8);
              }),
              "tokens_per_expert[1]", "negative");
  EXPECT_SAYS(test::message_of([&] { make_send_slots(n, 2, int64_t(1) << 30, 8); }), "i32");
  EXPECT_SAYS(test::message_of([&] { make_send_slots(Tensor(), 2, 3, 8); }), "tokens_per_expert");
  // Exactly R rows is fine.
  EXPECT_NO_THROW(make_send_slots(n, 2, 3, 6));
}

TEST(ExchangeSlots, ReceivedErrors) {
  const Tensor c = longs_of({1, 2, 0, 0, 3, 1}, {3, 2});
  EXPECT_SAYS(test::message_of([&] { make_received_slots(c.to(DType::i32), 4); }),
              "make_received_slots", "counts");
  EXPECT_SAYS(test::message_of([&] { make_received_slots(c.reshape({6}), 4); }),
              "make_received_slots", "counts");
  EXPECT_SAYS(test::message_of([&] {
                make_received_slots(Tensor::empty({0, 2}, DType::i64), 4);
              }),
              "counts", "[0, 2]");
  EXPECT_SAYS(test::message_of([&] { make_received_slots(c, -1); }), "slot_rows");
  EXPECT_SAYS(test::message_of([&] { make_received_slots(c, 3); }), "source 2", "4 rows",
              "slot of 3");
  EXPECT_SAYS(test::message_of([&] {
                make_received_slots(longs_of({1, 2, 0, -1, 3, 1}, {3, 2}), 4);
              }),
              "counts[1][1]", "negative");
  EXPECT_SAYS(test::message_of([&] { make_received_slots(c, int64_t(1) << 30); }), "i32");
}

TEST(ExchangeSlots, GatherErrors) {
  const Tensor x = numbered_rows({4, 3}, DType::f32);
  EXPECT_SAYS(test::message_of([&] {
                gather_rows(x, index_of({0, 4}));
              }),
              "gather_rows", "index[1] = 4", "4 rows");
  EXPECT_SAYS(test::message_of([&] {
                gather_rows(x, index_of({0, 1}).to(DType::i64));
              }),
              "gather_rows", "index");
  EXPECT_SAYS(test::message_of([&] {
                gather_rows(x, index_of({0, 1, 2, 3}).reshape({2, 2}));
              }),
              "gather_rows", "index");
  EXPECT_SAYS(
      test::message_of([&] { gather_rows(Tensor::scalar(1.0, DType::f32), index_of({0})); }),
      "gather_rows", "x");
  EXPECT_SAYS(test::message_of([&] { gather_rows(Tensor(), index_of({0})); }), "gather_rows", "x");
  EXPECT_SAYS(test::message_of([&] { gather_rows(x, Tensor()); }), "gather_rows", "index");
}

}  // namespace
}  // namespace moe::ops
