// --mock-data (mock_batch_source.h): the synthetic stream is a function of (seed, position),
// its ids lie in the vocabulary, the flags follow Megatron's (NullTokenizer, --vocab-size), and
// a short run trains on it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "common/printed_text.h"
#include "moe/train/mock_batch_source.h"
#include "moe/train/train_args.h"
#include "moe/train/train_run.h"

namespace moe::train {
namespace {

std::vector<int64_t> ids_of(const Tensor& t) {
  return t.to_vector<int64_t>();
}

TEST(MockData, StreamIsAFunctionOfSeedAndPosition) {
  MockTokenSource a(100, 8, 7), b(100, 8, 7), other(100, 8, 8);
  EXPECT_EQ(a.sample_length(), 9);
  const std::vector<int64_t> first = ids_of(a.next(3));
  ASSERT_EQ(first.size(), 27u);
  EXPECT_EQ(a.position(), 3);
  std::set<int64_t> distinct(first.begin(), first.end());
  EXPECT_GT(distinct.size(), 10u);  // random, not constant
  for (int64_t id : first) EXPECT_TRUE(id >= 0 && id < 100) << id;
  EXPECT_EQ(ids_of(b.next(3)), first);
  EXPECT_NE(ids_of(other.next(3)), first);
  // Resuming: position 1 reads what samples 1 and 2 were.
  const std::vector<int64_t> later = ids_of(a.next(2));
  b.set_position(1);
  const std::vector<int64_t> again = ids_of(b.next(2));
  EXPECT_EQ(std::vector<int64_t>(again.begin(), again.begin() + 18),
            std::vector<int64_t>(first.begin() + 9, first.end()));
  b.set_position(3);
  EXPECT_EQ(ids_of(b.next(2)), later);
}

std::string error_of(const std::vector<std::string>& args) {
  try {
    parse_train_args(args);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(MockData, FlagsAsMegatrons) {
  const TrainRunConfig r = parse_train_args(
      {"--mock-data", "--tokenizer-type", "NullTokenizer", "--vocab-size", "1000", "--lr", "1"});
  EXPECT_TRUE(r.mock_data);
  EXPECT_EQ(r.model.vocab_size, 1000);
  EXPECT_EQ(r.sample_tokens, 0);
  EXPECT_NE(error_of({"--tokenizer-type", "NullTokenizer", "--vocab-size", "10", "--lr", "1"})
                .find("--mock-data"),
            std::string::npos);
  EXPECT_NE(error_of({"--mock-data", "--tokenizer-type", "NullTokenizer", "--lr", "1"})
                .find("--vocab-size"),
            std::string::npos);
  EXPECT_NE(error_of({"--mock-data", "--data-path", "x", "--lr", "1"}).find("exclude"),
            std::string::npos);
  EXPECT_NE(error_of({"--mock-data", "--sample-tokens", "5", "--lr", "1"}).find("--sample-tokens"),
            std::string::npos);
}

TEST(MockData, ShortRunTrainsOnIt) {
  const TrainRunConfig config = parse_train_args({"--cpu",
                                                  "--mock-data",
                                                  "--tokenizer-type",
                                                  "NullTokenizer",
                                                  "--vocab-size",
                                                  "200",
                                                  "--num-layers",
                                                  "1",
                                                  "--hidden-size",
                                                  "32",
                                                  "--num-attention-heads",
                                                  "2",
                                                  "--num-query-groups",
                                                  "1",
                                                  "--num-experts",
                                                  "4",
                                                  "--moe-ffn-hidden-size",
                                                  "32",
                                                  "--seq-length",
                                                  "16",
                                                  "--micro-batch-size",
                                                  "2",
                                                  "--train-iters",
                                                  "3",
                                                  "--lr",
                                                  "1e-3",
                                                  "--eval-interval",
                                                  "2",
                                                  "--eval-iters",
                                                  "1"});
  std::FILE* out = std::tmpfile();
  const TrainRunResult r = run_training(config, standard_train_hooks(), out);
  const std::string text = test::printed_text(out);
  ASSERT_EQ(r.iterations, 3);
  for (double loss : r.losses) EXPECT_NEAR(loss, std::log(200.0), 0.5);  // random tokens
  EXPECT_NE(text.find("--mock-data, random tokens of the 200-id vocabulary"), std::string::npos)
      << text;
}

}  // namespace
}  // namespace moe::train
