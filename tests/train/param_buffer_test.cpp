// ParamAndGradBuffer (train/param_buffer.h): the layout of parameters in buckets (alignment,
// bucket closing, padding), the parameters as views of the buffers, the lazy-zero rule, and the
// owned ranges of the distributed optimizer tiling every bucket over the ranks of a group.
#include "moe/train/param_buffer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/core/error.h"
#include "moe/dist/local_backend.h"

namespace moe::train {
namespace {

// Parameters of the given element counts (1-D, f32 values with f32 gradients), each value
// holding distinct numbers: 1000 i + j for element j of parameter i.
std::vector<nn::Parameter> make_params(const std::vector<int64_t>& sizes) {
  std::vector<nn::Parameter> ps;
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::string name = "p";
    name += std::to_string(i);
    nn::Parameter p = nn::Parameter::make(name, {sizes[i]}, DType::f32, Device::cpu());
    std::vector<float> v(static_cast<size_t>(sizes[i]));
    for (size_t j = 0; j < v.size(); ++j) v[j] = static_cast<float>(1000 * i + j);
    p.value = Tensor::from_vector(v, {sizes[i]});
    ps.push_back(std::move(p));
  }
  return ps;
}

double max_abs(const Tensor& t) {
  double m = 0.0;
  for (double v : t.to_double_vector()) m = std::max(m, std::abs(v));
  return m;
}

std::vector<nn::Parameter*> pointers(std::vector<nn::Parameter>& ps) {
  std::vector<nn::Parameter*> out;
  for (nn::Parameter& p : ps) out.push_back(&p);
  return out;
}

// The rules of param_buffer.h for any buffer: entries in the given order, aligned, inside
// their bucket without overlap; a bucket closes at the first parameter that brings it to
// bucket_size or more; buckets are contiguous and padded to the pad multiple.
void expect_layout_rules(ParamAndGradBuffer& buf, const std::vector<int64_t>& sizes,
                         int64_t bucket_size, int64_t pad) {
  const auto& entries = buf.entries();
  const auto& buckets = buf.buckets();
  ASSERT_EQ(entries.size(), sizes.size());
  ASSERT_FALSE(buckets.empty());
  int64_t previous_end = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const BufferEntry& e = entries[i];
    EXPECT_EQ(e.numel, sizes[i]) << "entry " << i;
    EXPECT_EQ(e.offset % kParamAlignment, 0) << "entry " << i << " at " << e.offset;
    EXPECT_GE(e.offset, previous_end) << "entry " << i << " overlaps the one before";
    previous_end = e.offset + e.numel;
    ASSERT_GE(e.bucket, 0);
    ASSERT_LT(e.bucket, static_cast<int>(buckets.size()));
    const BufferBucket& b = buckets[static_cast<size_t>(e.bucket)];
    EXPECT_GE(e.offset, b.begin) << "entry " << i;
    EXPECT_LE(e.offset + e.numel, b.end) << "entry " << i;
  }
  int64_t begin = 0;
  for (size_t k = 0; k < buckets.size(); ++k) {
    const BufferBucket& b = buckets[k];
    EXPECT_EQ(b.begin, begin) << "bucket " << k << " does not follow the one before";
    EXPECT_EQ((b.end - b.begin) % pad, 0) << "bucket " << k << " of " << b.end - b.begin;
    ASSERT_FALSE(b.entries.empty()) << "bucket " << k;
    for (size_t j = 0; j < b.entries.size(); ++j) {
      const BufferEntry& e = entries[static_cast<size_t>(b.entries[j])];
      EXPECT_EQ(e.bucket, static_cast<int>(k));
      if (j > 0) {
        EXPECT_EQ(b.entries[j], b.entries[j - 1] + 1) << "bucket " << k;
      }
      const int64_t filled = e.offset + e.numel - b.begin;
      const bool last_of_bucket = j + 1 == b.entries.size();
      const bool last_bucket = k + 1 == buckets.size();
      if (bucket_size > 0 && !last_of_bucket) {
        EXPECT_LT(filled, bucket_size)
            << "bucket " << k << " should have closed at entry " << b.entries[j];
      }
      if (bucket_size > 0 && last_of_bucket && !last_bucket) {
        EXPECT_GE(filled, bucket_size) << "bucket " << k << " closed early";
      }
    }
    begin = b.end;
  }
  EXPECT_EQ(buf.numel(), buckets.back().end);
  EXPECT_EQ(buf.param_data().numel(), buf.numel());
  EXPECT_EQ(buf.grad_data().numel(), buf.numel());
}

TEST(ParamBuffer, LayoutOfAnExample) {
  // bucket_size 100, pad 1:
  //   p0 [0, 5)  p1 [64, 134) -> 134 >= 100: bucket 0 = [0, 134)
  //   p2 [192, 195)  p3 [256, 386) -> 252 >= 100: bucket 1 = [134, 386)
  //   p4 [448, 449): bucket 2 = [386, 449)
  const std::vector<int64_t> sizes{5, 70, 3, 130, 1};
  auto ps = make_params(sizes);
  ParamAndGradBuffer buf(pointers(ps), nullptr, 100, 1);
  expect_layout_rules(buf, sizes, 100, 1);
  std::vector<int64_t> offsets;
  for (const BufferEntry& e : buf.entries()) offsets.push_back(e.offset);
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 64, 192, 256, 448}));
  ASSERT_EQ(buf.buckets().size(), 3u);
  EXPECT_EQ(buf.buckets()[0].end, 134);
  EXPECT_EQ(buf.buckets()[1].end, 386);
  EXPECT_EQ(buf.buckets()[2].end, 449);
  EXPECT_EQ(buf.group_size(), 1);
  EXPECT_EQ(buf.group_rank(), 0);
}

TEST(ParamBuffer, PaddingToTheMultiple) {
  // pad 192 (3 ranks x the alignment): bucket 0 = [0, 192); p2 [192, 195), p3 [256, 386):
  // 194 >= 100, padded to 384: bucket 1 = [192, 576); p4 [576, 577): bucket 2 = [576, 768).
  const std::vector<int64_t> sizes{5, 70, 3, 130, 1};
  auto ps = make_params(sizes);
  ParamAndGradBuffer buf(pointers(ps), nullptr, 100, 192);
  expect_layout_rules(buf, sizes, 100, 192);
  ASSERT_EQ(buf.buckets().size(), 3u);
  EXPECT_EQ(buf.buckets()[0].end, 192);
  EXPECT_EQ(buf.buckets()[1].end, 576);
  EXPECT_EQ(buf.buckets()[2].end, 768);
  // The padding holds zeros.
  const std::vector<float> values = buf.param_data().to_vector<float>();
  EXPECT_EQ(values[577], 0.0f);
  EXPECT_EQ(values[767], 0.0f);
}

TEST(ParamBuffer, LayoutRulesOverManySizes) {
  const std::vector<int64_t> sizes{1, 63, 64, 65, 7, 200, 3, 3, 128, 31, 1, 500, 2};
  for (int64_t bucket_size : {1, 50, 64, 100, 129, 300, 1000, 100000})
    for (int64_t pad : {1, 2, 3, 64, 128, 192, 256}) {
      SCOPED_TRACE("bucket_size " + std::to_string(bucket_size) + ", pad " + std::to_string(pad));
      auto ps = make_params(sizes);
      ParamAndGradBuffer buf(pointers(ps), nullptr, bucket_size, pad);
      expect_layout_rules(buf, sizes, bucket_size, pad);
      if (bucket_size == 1) {
        EXPECT_EQ(buf.buckets().size(), sizes.size());  // one bucket per parameter
      }
    }
}

TEST(ParamBuffer, OneBucketWithoutABucketSize) {
  const std::vector<int64_t> sizes{5, 70, 3, 130, 1};
  for (int64_t bucket_size : {0, -1}) {
    auto ps = make_params(sizes);
    ParamAndGradBuffer buf(pointers(ps), nullptr, bucket_size, 128);
    expect_layout_rules(buf, sizes, bucket_size, 128);
    ASSERT_EQ(buf.buckets().size(), 1u) << "bucket_size " << bucket_size;
    EXPECT_EQ(buf.buckets()[0].entries.size(), sizes.size());
    EXPECT_EQ(buf.buckets()[0].end, 512);  // p4 ends at 449
  }
}

TEST(ParamBuffer, ParametersBecomeViewsOfTheBuffers) {
  const std::vector<int64_t> sizes{5, 70, 3, 130, 1};
  auto ps = make_params(sizes);
  // A 2-D parameter too: its view keeps its shape.
  ps.push_back(nn::Parameter::make("w", {3, 4}, DType::f32, Device::cpu()));
  ps.back().value =
      Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  std::vector<Tensor> before;
  for (const nn::Parameter& p : ps) before.push_back(p.value.clone());
  ParamAndGradBuffer buf(pointers(ps), nullptr, 100, 1);

  auto* values = buf.param_data().data<float>();
  auto* grads = buf.grad_data().data<float>();
  for (size_t i = 0; i < ps.size(); ++i) {
    const nn::Parameter& p = ps[i];
    const BufferEntry& e = buf.entries()[i];
    EXPECT_EQ(p.value.shape(), before[i].shape()) << p.name;
    EXPECT_EQ(p.grad.shape(), before[i].shape()) << p.name;
    EXPECT_EQ(p.value.data<float>(), values + e.offset) << p.name << "'s value is not a view";
    EXPECT_EQ(p.grad.data<float>(), grads + e.offset) << p.name << "'s gradient is not a view";
    EXPECT_TRUE(moe::test::equal(p.value, before[i], p.name + " after the move"));
  }
  // Writing through a parameter shows in the buffers, and the other way round.
  nn::Parameter& w = ps.back();
  const int64_t w_offset = buf.entries().back().offset;
  w.value.fill_(-3.0);
  w.grad_value().fill_(7.0);
  EXPECT_EQ(values[w_offset], -3.0f);
  EXPECT_EQ(values[w_offset + 11], -3.0f);
  EXPECT_EQ(grads[w_offset + 5], 7.0f);
  values[buf.entries()[1].offset + 69] = 42.0f;
  EXPECT_EQ(ps[1].value.to_vector<float>()[69], 42.0f);
  // Neighbours are untouched.
  EXPECT_TRUE(moe::test::equal(ps[4].value, before[4], "p4"));
}

TEST(ParamBuffer, Bf16ValuesWithFp32Gradients) {
  std::vector<nn::Parameter> ps;
  ps.push_back(nn::Parameter::make("a", {10}, DType::bf16, Device::cpu()));
  ps.push_back(nn::Parameter::make("b", {2, 50}, DType::bf16, Device::cpu()));
  ps[0].value.fill_(1.5);
  ps[1].value.fill_(-0.25);
  ParamAndGradBuffer buf(pointers(ps), nullptr, 0, 1);
  EXPECT_EQ(buf.param_data().dtype(), DType::bf16);
  EXPECT_EQ(buf.grad_data().dtype(), DType::f32);
  const std::vector<double> v = buf.param_data().to_double_vector();
  EXPECT_EQ(v[0], 1.5);
  EXPECT_EQ(v[static_cast<size_t>(buf.entries()[1].offset + 99)], -0.25);
}

TEST(ParamBuffer, RejectsMixedDtypes) {
  std::vector<nn::Parameter> ps;
  ps.push_back(nn::Parameter::make("a", {10}, DType::f32, Device::cpu()));
  ps.push_back(nn::Parameter::make("b", {10}, DType::bf16, Device::cpu()));
  EXPECT_THROW(ParamAndGradBuffer(pointers(ps), nullptr, 0, 1), Error);
}

TEST(ParamBuffer, LazyZeroGradients) {
  const std::vector<int64_t> sizes{5, 70, 3, 130, 1};
  auto ps = make_params(sizes);
  // Before the move: p0 holds a written gradient, p1 a stale one behind a lazy zero.
  ps[0].grad.fill_(2.0);
  ps[0].grad_is_zero = false;
  ps[1].grad.fill_(9.0);
  ps[1].grad_is_zero = true;
  ParamAndGradBuffer buf(pointers(ps), nullptr, 100, 1);
  EXPECT_TRUE(moe::test::equal(ps[0].grad, Tensor::full({5}, 2.0, DType::f32), "written grad"));
  EXPECT_TRUE(ps[1].grad_is_zero);
  EXPECT_TRUE(moe::test::equal(ps[1].grad, Tensor::zeros({70}, DType::f32), "lazy zero grad"));

  // A step later: every gradient holds old values, then zero_grad() marks them lazily zero.
  for (nn::Parameter& p : ps) {
    p.grad_value().fill_(5.0);
    p.zero_grad();
  }
  // The backward wrote p3 (bucket 1) since.
  ps[3].take_grad_beta();
  ps[3].grad.fill_(1.0);
  buf.materialise_grads(1);  // p2, p3
  EXPECT_FALSE(ps[2].grad_is_zero);
  EXPECT_TRUE(moe::test::equal(ps[2].grad, Tensor::zeros({3}, DType::f32), "p2 materialised"));
  EXPECT_TRUE(moe::test::equal(ps[3].grad, Tensor::full({130}, 1.0, DType::f32), "p3 kept"));
  // Bucket 0 is not materialised yet: still lazy, its memory still stale.
  EXPECT_TRUE(ps[0].grad_is_zero);
  EXPECT_EQ(buf.grad_data().to_vector<float>()[0], 5.0f);
  buf.materialise_grads(0);
  buf.materialise_grads(2);
  for (int i : {0, 1, 4}) {
    EXPECT_FALSE(ps[static_cast<size_t>(i)].grad_is_zero) << "p" << i;
    EXPECT_EQ(max_abs(ps[static_cast<size_t>(i)].grad), 0.0) << "p" << i;
  }
}

// Every rank of a group of `size` builds the same buffer; what each rank owns, collected.
struct Ownership {
  std::vector<std::vector<std::pair<int64_t, int64_t>>> ranges;  // [rank][bucket]
  std::vector<std::vector<ParamShard>> shards;                   // [rank]
  std::vector<BufferEntry> entries;                              // rank 0's (the same on all)
  std::vector<BufferBucket> buckets;
};

Ownership ownership(int size, const std::vector<int64_t>& sizes, int64_t bucket_size, int64_t pad) {
  Ownership o;
  o.ranges.resize(static_cast<size_t>(size));
  o.shards.resize(static_cast<size_t>(size));
  std::mutex mu;
  dist::run_local(size, [&](std::shared_ptr<dist::ProcessGroup> world) {
    auto ps = make_params(sizes);
    ParamAndGradBuffer buf(pointers(ps), world, bucket_size, pad);
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (size_t b = 0; b < buf.buckets().size(); ++b)
      ranges.push_back(buf.owned_range(static_cast<int>(b)));
    std::vector<ParamShard> shards = buf.shards();
    std::lock_guard<std::mutex> lock(mu);
    const size_t r = static_cast<size_t>(world->rank());
    o.ranges[r] = std::move(ranges);
    o.shards[r] = std::move(shards);
    if (r == 0) {
      o.entries = buf.entries();
      o.buckets = buf.buckets();
    }
  });
  return o;
}

TEST(ParamBuffer, OwnedRangesTileEveryBucketOnce) {
  const std::vector<int64_t> sizes{1, 63, 64, 65, 7, 200, 3, 3, 128, 31, 1, 500, 2};
  for (int size : {1, 2, 3, 4})
    for (int64_t bucket_size : {0, 1, 100, 300})
      for (int64_t pad_per_rank : {int64_t{1}, kParamAlignment}) {
        const int64_t pad = size * pad_per_rank;
        SCOPED_TRACE("group of " + std::to_string(size) + ", bucket_size " +
                     std::to_string(bucket_size) + ", pad " + std::to_string(pad));
        const Ownership o = ownership(size, sizes, bucket_size, pad);
        // Owned ranges: rank r holds the r-th of `size` equal chunks of every bucket.
        for (size_t b = 0; b < o.buckets.size(); ++b) {
          const int64_t chunk = (o.buckets[b].end - o.buckets[b].begin) / size;
          int64_t next = o.buckets[b].begin;
          for (int r = 0; r < size; ++r) {
            const auto [lo, hi] = o.ranges[static_cast<size_t>(r)][b];
            EXPECT_EQ(lo, next) << "rank " << r << ", bucket " << b;
            EXPECT_EQ(hi - lo, chunk) << "rank " << r << ", bucket " << b;
            next = hi;
          }
          EXPECT_EQ(next, o.buckets[b].end) << "bucket " << b;
        }
        // Shards: every element of every parameter exactly once over the ranks, inside the
        // owner's range, at the element's place in the buffer.
        std::vector<std::vector<int>> seen;
        for (int64_t n : sizes) seen.emplace_back(static_cast<size_t>(n), 0);
        for (int r = 0; r < size; ++r) {
          for (const ParamShard& s : o.shards[static_cast<size_t>(r)]) {
            ASSERT_GE(s.entry, 0);
            ASSERT_LT(s.entry, static_cast<int>(sizes.size()));
            const BufferEntry& e = o.entries[static_cast<size_t>(s.entry)];
            EXPECT_LT(s.param_begin, s.param_end) << "an empty shard on rank " << r;
            EXPECT_GE(s.param_begin, 0);
            EXPECT_LE(s.param_end, e.numel);
            EXPECT_EQ(s.buffer_begin, e.offset + s.param_begin) << "rank " << r;
            const auto [lo, hi] = o.ranges[static_cast<size_t>(r)][static_cast<size_t>(e.bucket)];
            EXPECT_GE(s.buffer_begin, lo) << "rank " << r << ", entry " << s.entry;
            EXPECT_LE(s.buffer_begin + s.numel(), hi) << "rank " << r << ", entry " << s.entry;
            for (int64_t j = std::max<int64_t>(s.param_begin, 0);
                 j < std::min(s.param_end, e.numel); ++j)
              ++seen[static_cast<size_t>(s.entry)][static_cast<size_t>(j)];
          }
        }
        for (size_t i = 0; i < sizes.size(); ++i)
          for (size_t j = 0; j < seen[i].size(); ++j)
            if (seen[i][j] != 1) {
              ADD_FAILURE() << "element " << j << " of p" << i << " is owned " << seen[i][j]
                            << " times";
              break;
            }
      }
}

TEST(ParamBuffer, OwnedRangeNeedsTheGroupSizeAsPadMultiple) {
  // Bucket [0, 5) does not split over two ranks: owned_range names the bucket and the fix.
  dist::run_local(2, [](std::shared_ptr<dist::ProcessGroup> world) {
    auto ps = make_params({5});
    ParamAndGradBuffer buf(pointers(ps), world, 0, 1);
    try {
      buf.owned_range(0);
      ADD_FAILURE() << "owned_range split 5 elements over 2 ranks";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("does not split over 2 ranks"), std::string::npos)
          << e.what();
    }
  });
}

}  // namespace
}  // namespace moe::train
