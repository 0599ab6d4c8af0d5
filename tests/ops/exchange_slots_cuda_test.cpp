// CUDA exchange slots against the CPU reference: both maps of make_send_slots and
// make_received_slots compared exactly on fresh random counts for P = 1, 2, 3, 8 ranks,
// El = 1, 3, 32 local experts and C = 0, 1, 7, 1000 slot rows (empty experts, destinations over
// their budget, sources that fill their slot exactly), plus one exchange of about a million slot
// rows; gather_rows in f32, bf16, f16 and f64 at H odd and H = 4096, on [N] rows and on a
// misaligned view, and its zero rows for out-of-range indices.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "common/check.h"
#include "moe/ops/exchange_slots.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;

// Tokens per expert for P*El experts: a quarter of the experts empty, the rest up to about
// twice a fair share of C, so some destinations overflow and some are empty.
std::vector<int64_t> random_tokens(int64_t experts, int64_t local, int64_t slot_rows,
                                   std::mt19937_64& gen) {
  const int64_t share = std::max<int64_t>(2 * slot_rows / local + 2, 2);
  std::vector<int64_t> n(static_cast<size_t>(experts));
  for (int64_t& v : n) v = gen() % 4 == 0 ? 0 : static_cast<int64_t>(gen() % share);
  if (experts > local && gen() % 2 == 0)  // one destination with nothing routed
    std::fill(n.begin(), n.begin() + local, 0);
  return n;
}

// Received counts [S, El], every source's row sum <= C (some exactly C, some zero).
std::vector<int64_t> random_counts(int64_t sources, int64_t local, int64_t slot_rows,
                                   std::mt19937_64& gen) {
  std::vector<int64_t> c(static_cast<size_t>(sources * local), 0);
  for (int64_t s = 0; s < sources; ++s) {
    const uint64_t kind = gen() % 4;  // 0: empty source, 1: full slot, else partial
    if (kind == 0 || slot_rows == 0) continue;
    int64_t left = kind == 1 ? slot_rows : static_cast<int64_t>(gen() % (slot_rows + 1));
    for (int64_t i = 0; left > 0; ++i) {  // spread `left` rows, some experts left empty
      const int64_t le = static_cast<int64_t>(gen() % local);
      const int64_t take = i > 4 * local ? left : static_cast<int64_t>(gen() % (left + 1));
      c[s * local + le] += take;
      left -= take;
    }
  }
  return c;
}

void expect_same_send(const SendSlots& g, const SendSlots& c) {
  EXPECT_TRUE(g.slot_to_row.is_cuda() && g.row_to_slot.is_cuda() && g.counts.is_cuda() &&
              g.peak_rows.is_cuda());
  EXPECT_TRUE(test::equal(host(g.slot_to_row), c.slot_to_row, "slot_to_row"));
  EXPECT_TRUE(test::equal(host(g.row_to_slot), c.row_to_slot, "row_to_slot"));
  EXPECT_TRUE(test::equal(host(g.counts), c.counts, "counts"));
  EXPECT_TRUE(test::equal(host(g.peak_rows), c.peak_rows, "peak_rows"));
}

void expect_same_received(const ReceivedSlots& g, const ReceivedSlots& c) {
  EXPECT_TRUE(g.row_to_received.is_cuda() && g.received_to_row.is_cuda() &&
              g.tokens_per_expert.is_cuda());
  EXPECT_TRUE(test::equal(host(g.row_to_received), c.row_to_received, "row_to_received"));
  EXPECT_TRUE(test::equal(host(g.received_to_row), c.received_to_row, "received_to_row"));
  EXPECT_TRUE(test::equal(host(g.tokens_per_expert), c.tokens_per_expert, "tokens_per_expert"));
}

TEST(ExchangeSlotsCuda, MapsMatchCpuExactly) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 gen(seed);
  for (int64_t ranks : {1, 2, 3, 8}) {
    for (int64_t local : {1, 3, 32}) {
      for (int64_t slot_rows : {0, 1, 7, 1000}) {
        for (int rep = 0; rep < 3; ++rep) {
          SCOPED_TRACE(testing::Message()
                       << "P=" << ranks << " El=" << local << " C=" << slot_rows << " #" << rep);
          const int64_t experts = ranks * local;
          const std::vector<int64_t> n = random_tokens(experts, local, slot_rows, gen);
          int64_t total = 0;
          for (int64_t v : n) total += v;
          const int64_t num_rows = total + static_cast<int64_t>(gen() % 5);
          const Tensor tokens = Tensor::from_vector(n, {experts});
          expect_same_send(make_send_slots(gpu(tokens), ranks, slot_rows, num_rows),
                           make_send_slots(tokens, ranks, slot_rows, num_rows));

          const Tensor counts =
              Tensor::from_vector(random_counts(ranks, local, slot_rows, gen), {ranks, local});
          expect_same_received(make_received_slots(gpu(counts), slot_rows),
                               make_received_slots(counts, slot_rows));
        }
      }
    }
  }
}

TEST(ExchangeSlotsCuda, LargeExchangeMatchesCpu) {
  // C * P ~ 1e6 slot rows (many blocks of the grid-stride fill), E = 256 experts.
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 gen(seed);
  const int64_t ranks = 8, local = 32, slot_rows = 131'071;
  const std::vector<int64_t> n = random_tokens(ranks * local, local, slot_rows, gen);
  int64_t total = 0;
  for (int64_t v : n) total += v;
  const Tensor tokens = Tensor::from_vector(n, {ranks * local});
  expect_same_send(make_send_slots(gpu(tokens), ranks, slot_rows, total + 3),
                   make_send_slots(tokens, ranks, slot_rows, total + 3));
  const Tensor counts =
      Tensor::from_vector(random_counts(ranks, local, slot_rows, gen), {ranks, local});
  expect_same_received(make_received_slots(gpu(counts), slot_rows),
                       make_received_slots(counts, slot_rows));
}

TEST(ExchangeSlotsCuda, PeakAccumulatesOnTheDevice) {
  MOE_REQUIRE_GPU();
  Tensor peak = Tensor::zeros({1}, DType::i64, Device::cuda(0));
  const auto send = [&](std::vector<int64_t> n) {
    make_send_slots(gpu(Tensor::from_vector(n, {4})), 2, 3, 8, peak);
    return host(peak).to_vector<int64_t>().front();
  };
  EXPECT_EQ(send({2, 0, 1, 3}), 4);
  EXPECT_EQ(send({1, 1, 0, 2}), 4);  // lower: kept
  EXPECT_EQ(send({6, 0, 0, 0}), 6);  // higher: raised
}

TEST(ExchangeSlotsCuda, ManyExperts) {
  // E = 4096 and S*El = 4096: several rounds of the single-block scans.
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 gen(seed);
  const int64_t ranks = 64, local = 64, slot_rows = 300;
  const std::vector<int64_t> n = random_tokens(ranks * local, local, slot_rows, gen);
  int64_t total = 0;
  for (int64_t v : n) total += v;
  const Tensor tokens = Tensor::from_vector(n, {ranks * local});
  expect_same_send(make_send_slots(gpu(tokens), ranks, slot_rows, total),
                   make_send_slots(tokens, ranks, slot_rows, total));
  const Tensor counts =
      Tensor::from_vector(random_counts(ranks, local, slot_rows, gen), {ranks, local});
  expect_same_received(make_received_slots(gpu(counts), slot_rows),
                       make_received_slots(counts, slot_rows));
}

// ---- gather_rows -----------------------------------------------------------------------------

// index [n] into `rows` source rows: a fifth of them -1, the rest any row (repeats allowed).
Tensor random_index(int64_t n, int64_t rows, std::mt19937_64& gen) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& i : v) i = gen() % 5 == 0 ? -1 : static_cast<int32_t>(gen() % rows);
  return Tensor::from_vector(v, {n});
}

TEST(ExchangeSlotsCuda, GatherRowsMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 gen(seed);
  const int64_t src_rows = 300, out_rows = 517;
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (const Shape& shape : {Shape{src_rows}, Shape{src_rows, 259}, Shape{src_rows, 4096}}) {
      for (bool misaligned : {false, true}) {
        SCOPED_TRACE(testing::Message() << dtype_name(dt) << " " << shape_str(shape)
                                        << (misaligned ? " misaligned" : ""));
        const Tensor x = test::random_normal(shape, DType::f32, gen()).to(dt);
        const Tensor index = random_index(out_rows, src_rows, gen);
        const Tensor x_gpu = misaligned ? test::misaligned_gpu(gpu(x)) : gpu(x);
        const Tensor got = gather_rows(x_gpu, gpu(index));
        EXPECT_TRUE(got.is_cuda());
        EXPECT_EQ(got.dtype(), dt);
        EXPECT_TRUE(test::equal(host(got), gather_rows(x, index), "gathered rows"));
      }
    }
  }
}

TEST(ExchangeSlotsCuda, GatherRowsOutOfRangeGivesZeros) {
  // The CPU rejects an index >= x.size(0); CUDA cannot without a sync and writes zeros.
  MOE_REQUIRE_GPU();
  const Tensor x = test::random_normal({4, 33}, DType::f32, 7);
  const Tensor index = Tensor::from_vector(std::vector<int32_t>{1, 4, 1000, -1, 3}, {5});
  const Tensor got = host(gather_rows(gpu(x), gpu(index)));
  const Tensor safe = Tensor::from_vector(std::vector<int32_t>{1, -1, -1, -1, 3}, {5});
  EXPECT_TRUE(test::equal(got, gather_rows(x, safe), "gathered rows"));
  EXPECT_EQ(gather_rows(gpu(x), gpu(Tensor::empty({0}, DType::i32))).shape(), (Shape{0, 33}));
}

}  // namespace
}  // namespace moe::ops
