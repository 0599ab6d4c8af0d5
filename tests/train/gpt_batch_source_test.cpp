// The trainer's stream over a Megatron dataset: batches are dataset[p], dataset[p + 1], ...,
// set_position resumes exactly, and the stream wraps at the end of the dataset.
#include "moe/train/gpt_batch_source.h"

#include <gtest/gtest.h>

#include "data/memory_corpus.h"
#include "moe/core/error.h"
#include "moe/data/gpt_dataset.h"

namespace moe::train {
namespace {

std::shared_ptr<data::GPTDataset> dataset() {
  auto corpus =
      std::make_shared<data::testing::MemoryCorpus>(data::testing::random_lengths(80, 50, 3));
  data::GPTDatasetConfig c;
  c.sequence_length = 12;
  c.random_seed = 99;
  c.split = "1";
  return std::make_shared<data::GPTDataset>(corpus, "mem", std::pair<int64_t, int64_t>{0, 80},
                                            std::nullopt, data::Split::train, c);
}

std::vector<int64_t> row(const Tensor& batch, int64_t b) {
  const std::vector<int64_t> all = batch.to_vector<int64_t>();
  const int64_t L = batch.shape()[1];
  return {all.begin() + b * L, all.begin() + (b + 1) * L};
}

TEST(GPTBatchSource, BatchesAreConsecutiveDatasetSamples) {
  auto ds = dataset();
  GPTBatchSource source(ds);
  EXPECT_EQ(source.sample_length(), 13);
  const Tensor first = source.next(4);
  EXPECT_EQ(first.shape(), (Shape{4, 13}));
  EXPECT_EQ(first.dtype(), DType::i64);
  for (int64_t b = 0; b < 4; ++b) EXPECT_EQ(row(first, b), ds->sample(b));
  const Tensor second = source.next(3);
  for (int64_t b = 0; b < 3; ++b) EXPECT_EQ(row(second, b), ds->sample(4 + b));
  EXPECT_EQ(source.position(), 7);
}

TEST(GPTBatchSource, SetPositionResumesExactly) {
  auto ds = dataset();
  GPTBatchSource straight(ds);
  straight.next(5);
  straight.next(5);
  const int64_t saved = straight.position();
  const Tensor expected = straight.next(6);
  GPTBatchSource resumed(ds);
  resumed.set_position(saved);
  EXPECT_EQ(resumed.next(6).to_vector<int64_t>(), expected.to_vector<int64_t>());
  EXPECT_EQ(resumed.position(), straight.position());
  EXPECT_THROW(resumed.set_position(-1), moe::Error);
  EXPECT_THROW(resumed.next(0), moe::Error);
}

TEST(GPTBatchSource, WrapsAtTheEnd) {
  auto ds = dataset();
  GPTBatchSource source(ds, ds->size() - 1);
  const Tensor batch = source.next(2);
  EXPECT_EQ(row(batch, 0), ds->sample(ds->size() - 1));
  EXPECT_EQ(row(batch, 1), ds->sample(0));
}

}  // namespace
}  // namespace moe::train
