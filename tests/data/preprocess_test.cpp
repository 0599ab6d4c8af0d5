// `moe preprocess` when a worker thread cannot start (std::thread's constructor throws
// std::system_error under a thread or memory limit, e.g. --workers 400 with little memory):
// an error naming --workers, the threads already started stopped and joined (not a
// std::terminate), and no output or temporary left behind.
#include "moe/data/preprocess.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <system_error>

#include "io/safetensors_testing.h"
#include "moe/data/tokenizer.h"

namespace moe::data {
namespace {

using io::testing::fails_with;
using io::testing::ScratchFolder;
using io::testing::write_bytes;
namespace fs = std::filesystem;

using PreprocessWorkers = ScratchFolder;

TEST_F(PreprocessWorkers, AThreadThatCannotStartIsAnErrorNamingTheWorkers) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text += "document " + std::to_string(i) + "\n";
  write_bytes(path("in.txt"), text);

  PreprocessOptions options;
  options.inputs = {path("in.txt")};
  options.output_prefix = path("out/corpus");
  options.append_eod = true;
  options.workers = 4;
  // The first two threads start and run; the third fails as std::thread does at a limit.
  std::atomic<int> started{0}, finished{0};
  options.start_worker = [&](std::function<void()> body) {
    if (started == 2)
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                              "thread creation failed");
    ++started;
    return std::thread([body = std::move(body), &finished] {
      body();
      ++finished;
    });
  };
  EXPECT_TRUE(fails_with([&] { preprocess(options, ByteLevelTokenizer(), nullptr); },
                         {"--workers 4", "thread 3", "fewer --workers"}));
  EXPECT_EQ(started, 2);
  EXPECT_EQ(finished, 2);  // both were told to stop and were joined
  // Neither the outputs nor their temporaries.
  ASSERT_TRUE(fs::exists(dir_ / "out"));
  EXPECT_TRUE(fs::is_empty(dir_ / "out"));

  // The same options with every thread starting write the dataset.
  options.start_worker = nullptr;
  const PreprocessSummary summary = preprocess(options, ByteLevelTokenizer(), nullptr);
  EXPECT_EQ(summary.documents, 1000);
  EXPECT_TRUE(fs::exists(path("out/corpus_text_document.bin")));
}

}  // namespace
}  // namespace moe::data
