// The `moe` program's own checks of its flags, run as a user runs it: a bad value stops with a
// message naming the flag (exit status 1), before any work, instead of an empty result or a
// message about something else.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "common/check.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

struct Outcome {
  int status = -1;     // exit status
  std::string output;  // stdout and stderr
};

// The program built with these tests (tests/CMakeLists.txt), else the one beside this binary's
// folder (a build folder moved to another machine).
std::string moe_program() {
  if (fs::exists(MOE_BINARY)) return MOE_BINARY;
  std::error_code ec;
  const fs::path beside =
      fs::read_symlink("/proc/self/exe", ec).parent_path().parent_path() / "moe";
  return beside.string();
}

// Runs `moe <args>` through the shell (args are quoted by the caller).
Outcome run_moe(const std::string& args) {
  const std::string program = moe_program();
  EXPECT_TRUE(fs::exists(program)) << "the moe program is not at " << program;
  const std::string command = "'" + program + "' " + args + " 2>&1";
  Outcome out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    out.output.append(buffer.data(), n);
  const int raw = ::pclose(pipe);
  out.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  return out;
}

class MoeProgram : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           (std::string("moe_program_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

// Exit status 1 (moe's error), and a message holding every part.
#define EXPECT_FAILS_NAMING(outcome, ...)                                                        \
  do {                                                                                           \
    const Outcome result_ = (outcome);                                                           \
    EXPECT_EQ(result_.status, 1) << result_.output;                                              \
    for (const char* part : {__VA_ARGS__})                                                       \
      EXPECT_NE(result_.output.find(part), std::string::npos) << part << "\n" << result_.output; \
  } while (0)

TEST_F(MoeProgram, BenchShapesMustBeKnown) {
  // Not an empty table with status 0: an error listing the shapes.
  EXPECT_FAILS_NAMING(run_moe("--cpu bench moe-layer --shapes nope"), "--shapes 'nope'",
                      "mixtral-8x7b", "tiny");
  EXPECT_FAILS_NAMING(run_moe("--cpu bench attention --shapes tiny nope"), "--shapes 'nope'",
                      "gqa-s4096", "tiny");
  EXPECT_FAILS_NAMING(run_moe("--cpu bench model --models nope:2"), "--models nope:2",
                      "qwen3-moe-tiny");
}

// `moe bench pipeline` draws the schedule of the flags: the interleaved one of PP 2, V 2 and 4
// micro-batches has the bubble of Megatron's formula, 1 / (2 x 4); what Megatron refuses
// (fewer micro-batches than stages, interleaved) is refused naming the flag.
TEST_F(MoeProgram, BenchPipelineDrawsTheScheduleAndItsBubble) {
  const Outcome o = run_moe(
      "bench pipeline --pipeline-model-parallel-size 2 --num-virtual-stages-per-pipeline-rank 2 "
      "--num-microbatches 4");
  EXPECT_EQ(o.status, 0) << o.output;
  for (const char* part :
       {"rank 0 |abab", "rank 1 |.aba", "idle / busy = 12.5%", "(PP - 1) / (V M) = 12.5%"})
    EXPECT_NE(o.output.find(part), std::string::npos) << part << "\n" << o.output;
  EXPECT_FAILS_NAMING(run_moe("bench pipeline --pipeline-model-parallel-size 4 "
                              "--num-virtual-stages-per-pipeline-rank 2 --num-microbatches 2"),
                      "--microbatch-group-size-per-virtual-pipeline-stage");
}

TEST_F(MoeProgram, PreprocessWorkersMustBeAtLeastOne) {
  const fs::path input = dir_ / "in.txt";
  FILE* f = std::fopen(input.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("a document\n", f);
  std::fclose(f);
  const Outcome o = run_moe("preprocess --input '" + input.string() + "' --output-prefix '" +
                            (dir_ / "out").string() + "' --workers 0");
  EXPECT_FAILS_NAMING(o, "--workers must be at least 1");
  EXPECT_EQ(o.output.find("1.79"), std::string::npos) << o.output;  // no double range
}

TEST_F(MoeProgram, ForwardOutMustNotBeAFolder) {
  // Refused before the model runs, naming the path (not "rename from  failed").
  const fs::path out = dir_ / "logits";
  fs::create_directories(out);
  const std::string fixture = test::fixture_path("hf/qwen3_moe");
  const fs::path ids = dir_ / "ids.json";
  FILE* f = std::fopen(ids.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("[[1, 2, 3]]", f);
  std::fclose(f);
  const Outcome o = run_moe("--cpu forward --model '" + fixture + "' --tokens '" + ids.string() +
                            "' --out '" + out.string() + "'");
  EXPECT_FAILS_NAMING(o, out.c_str(), "is a folder");
  EXPECT_EQ(o.output.find("lm loss"), std::string::npos) << o.output;
}

}  // namespace
}  // namespace moe
