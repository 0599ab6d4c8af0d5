// `moe train` as a process (the built program, MOE_BINARY from tests/CMakeLists.txt): killed
// with SIGKILL in the middle of a save, the last complete checkpoint is intact and loads, no
// half-written iteration is visible, and the next run removes the leftover and resumes;
// SIGTERM / SIGINT end it at once with a report of what was interrupted and what was saved, and
// the status 128 + signo; with --exit-signal-handler the first signal ends it after the iteration
// with a save and status 0, and a second one at once, as without the flag.
//
// The save is caught in progress through the test hook MOE_TEST_SAVE_DELAY_MS
// (train_checkpoint.h): each save sleeps after writing the model and optimizer files into its
// hidden temporary folder.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "moe/checkpoint/model_io.h"
#include "moe/train/model_folder.h"
#include "moe/train/train_checkpoint.h"

extern char** environ;

namespace moe::train {
namespace {

namespace fs = std::filesystem;

// Generous: the CI machine may be shared and slow.
constexpr auto kPatience = std::chrono::seconds(600);

fs::path fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("moe_train_process_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// `moe train` with `args`, stdout and stderr into <log>.out / <log>.err, `env` added to this
// process's environment.
struct Child {
  pid_t pid = -1;
  fs::path out, err;
};

Child start_moe_train(const std::vector<std::string>& args, const fs::path& log,
                      const std::vector<std::string>& env = {}) {
  Child child;
  child.out = log.string() + ".out";
  child.err = log.string() + ".err";
  std::vector<std::string> argv_text = {MOE_BINARY, "train"};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_text = env;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, kTestSaveDelayVariable, std::strlen(kTestSaveDelayVariable)) != 0)
      env_text.emplace_back(*e);
  std::vector<char*> envp;
  for (std::string& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, child.out.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, child.err.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int rc = posix_spawn(&child.pid, MOE_BINARY, &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0) << "cannot start " << MOE_BINARY << ": " << std::strerror(rc);
  return child;
}

// Polls `ready` every 10 ms; false when the child ended first or patience ran out.
bool wait_until(const Child& child, const std::function<bool()>& ready) {
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    int status = 0;
    if (waitpid(child.pid, &status, WNOHANG) == child.pid) return ready();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

int wait_status(const Child& child) {
  int status = 0;
  EXPECT_EQ(waitpid(child.pid, &status, 0), child.pid);
  return status;
}

// The hidden temporary folders of a save of `iteration` in `save`.
std::vector<fs::path> temporaries(const fs::path& save, int64_t iteration) {
  std::vector<fs::path> out;
  const std::string prefix = "." + checkpoint_folder_name(iteration) + ".tmp.";
  std::error_code ec;
  for (fs::directory_iterator it(save, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().rfind(prefix, 0) == 0) out.push_back(it->path());
  return out;
}

// A save of `iteration` is in progress: its temporary folder holds some files already.
bool saving(const fs::path& save, int64_t iteration) {
  for (const fs::path& t : temporaries(save, iteration)) {
    std::error_code ec;
    if (fs::exists(t / "optimizer.safetensors", ec)) return true;
  }
  return false;
}

std::set<std::string> visible_entries(const fs::path& save) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(save)) {
    const std::string name = e.path().filename().string();
    if (name[0] != '.') names.insert(name);
  }
  return names;
}

bool has_hidden_entries(const fs::path& save) {
  for (const auto& e : fs::directory_iterator(save))
    if (e.path().filename().string()[0] == '.') return true;
  return false;
}

// The default model, tiny batches: a few iterations take seconds on a CPU.
std::vector<std::string> tiny_run(const fs::path& save, int iterations) {
  std::vector<std::string> args = {"--train-iters", std::to_string(iterations), "--save",
                                   save.string(), "--lr", "3e-3"};
  for (const char* a : {"--cpu", "--save-interval", "2", "--seq-length", "32", "--micro-batch-size",
                        "2", "--global-batch-size", "2", "--eval-iters", "0", "--sample-tokens",
                        "0", "--log-interval", "1"})
    args.push_back(a);
  return args;
}

TEST(TrainProcess, KilledDuringASaveKeepsTheLastCheckpointAndTheNextRunResumes) {
  const fs::path dir = fresh_dir("kill");
  const fs::path save = dir / "ckpt";
  const Child child = start_moe_train(tiny_run(save, 6), dir / "first",
                                      {std::string(kTestSaveDelayVariable) + "=1500"});
  ASSERT_TRUE(wait_until(child, [&] { return saving(save, 4); }))
      << read_text(child.out) << read_text(child.err);
  ASSERT_EQ(kill(child.pid, SIGKILL), 0);
  const int status = wait_status(child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;

  // The tracker names the last complete iteration, which verifies and loads; the half-written
  // one is only a hidden temporary folder.
  EXPECT_EQ(latest_checkpoint_iteration(save.string()), 2);
  EXPECT_EQ(training_checkpoint_folder(save.string()), (save / "iter_0000002").string());
  auto model =
      checkpoint::load_model(resolve_model_folder(save.string()), DType::f32, Device::cpu());
  EXPECT_GT(model->parameters().size(), 0u);
  EXPECT_EQ(visible_entries(save),
            (std::set<std::string>{"iter_0000002", kTrackerFileName, "metrics.jsonl"}));
  const std::vector<fs::path> left = temporaries(save, 4);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_FALSE(fs::exists(left[0] / "manifest.json"));

  // The next run resumes from iteration 2, removes the leftover at its first save, and ends
  // with complete checkpoints and nothing hidden.
  std::vector<std::string> args = tiny_run(save, 6);
  args.insert(args.end(), {"--load", save.string()});
  const Child second = start_moe_train(args, dir / "second");
  const int second_status = wait_status(second);
  const std::string out = read_text(second.out);
  ASSERT_TRUE(WIFEXITED(second_status) && WEXITSTATUS(second_status) == 0)
      << out << read_text(second.err);
  EXPECT_NE(out.find("loaded checkpoint " + (save / "iter_0000002").string()), std::string::npos)
      << out;
  EXPECT_NE(out.find("removed " + left[0].filename().string()), std::string::npos) << out;
  EXPECT_FALSE(has_hidden_entries(save));
  EXPECT_EQ(latest_checkpoint_iteration(save.string()), 6);
  for (int64_t it : {2, 4, 6})
    EXPECT_NO_THROW(verify_training_checkpoint((save / checkpoint_folder_name(it)).string()));
  fs::remove_all(dir);
}

TEST(TrainProcess, SigtermDuringASaveReportsItAndExits143) {
  const fs::path dir = fresh_dir("sigterm");
  const fs::path save = dir / "ckpt";
  const Child child = start_moe_train(tiny_run(save, 6), dir / "run",
                                      {std::string(kTestSaveDelayVariable) + "=1500"});
  ASSERT_TRUE(wait_until(child, [&] { return saving(save, 4); }))
      << read_text(child.out) << read_text(child.err);
  ASSERT_EQ(kill(child.pid, SIGTERM), 0);
  const int status = wait_status(child);
  const std::string err = read_text(child.err);
  ASSERT_TRUE(WIFEXITED(status)) << status << " " << err;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  EXPECT_NE(err.find("moe train: interrupted by SIGTERM while saving " +
                     (save / "iter_0000004").string()),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("last checkpoint saved: " + (save / "iter_0000002").string() +
                     " (resume with --load " + save.string() + ")"),
            std::string::npos)
      << err;
  EXPECT_EQ(latest_checkpoint_iteration(save.string()), 2);
  EXPECT_FALSE(fs::exists(save / "iter_0000004"));
  fs::remove_all(dir);
}

TEST(TrainProcess, SigintDuringTrainingReportsTheIterationAndExits130) {
  const fs::path dir = fresh_dir("sigint");
  const fs::path save = dir / "ckpt";
  std::vector<std::string> args = tiny_run(save, 100000);
  args.insert(args.end(), {"--save-interval", "0"});  // at the end only: nothing saved yet
  const Child child = start_moe_train(args, dir / "run");
  ASSERT_TRUE(wait_until(child,
                         [&] {
                           return read_text(child.out).find("iteration        3/  100000") !=
                                  std::string::npos;
                         }))
      << read_text(child.out) << read_text(child.err);
  ASSERT_EQ(kill(child.pid, SIGINT), 0);
  const int status = wait_status(child);
  const std::string err = read_text(child.err);
  ASSERT_TRUE(WIFEXITED(status)) << status << " " << err;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT);
  EXPECT_NE(err.find("moe train: interrupted by SIGINT during iteration "), std::string::npos)
      << err;
  EXPECT_NE(err.find(" of 100000; this run saved no checkpoint"), std::string::npos) << err;
  EXPECT_FALSE(latest_checkpoint_iteration(save.string()).has_value());
  fs::remove_all(dir);
}

// --exit-signal-handler: SIGTERM (a scheduler's pre-emption) ends the run after the iteration
// in progress, with a complete save of that iteration, a message and exit status 0.
TEST(TrainProcess, ExitSignalHandlerSavesAfterTheIterationAndExits0) {
  const fs::path dir = fresh_dir("exit_signal");
  const fs::path save = dir / "ckpt";
  std::vector<std::string> args = tiny_run(save, 100000);
  args.insert(args.end(), {"--save-interval", "0", "--exit-signal-handler"});
  const Child child = start_moe_train(args, dir / "run");
  ASSERT_TRUE(wait_until(child,
                         [&] {
                           return read_text(child.out).find("iteration        3/  100000") !=
                                  std::string::npos;
                         }))
      << read_text(child.out) << read_text(child.err);
  ASSERT_EQ(kill(child.pid, SIGTERM), 0);
  const int status = wait_status(child);
  const std::string out = read_text(child.out);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << status << "\n" << out << read_text(child.err);
  const std::optional<int64_t> saved = latest_checkpoint_iteration(save.string());
  ASSERT_TRUE(saved.has_value()) << out;
  EXPECT_GE(*saved, 3);
  EXPECT_NO_THROW(verify_training_checkpoint((save / checkpoint_folder_name(*saved)).string()));
  EXPECT_NE(out.find("saved checkpoint " + (save / checkpoint_folder_name(*saved)).string()),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("exiting after iteration " + std::to_string(*saved) +
                     " of 100000: received SIGTERM (--exit-signal-handler)"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("sample ("), std::string::npos) << out;  // no sample after a signal
  EXPECT_NE(read_text(save / "metrics.jsonl").find("received SIGTERM"), std::string::npos);
  fs::remove_all(dir);
}

// --exit-signal-handler: a second signal does not wait for the save the first one started; it
// ends the process at once with the report, as without the flag.
TEST(TrainProcess, ExitSignalHandlerASecondSignalEndsTheRunAtOnce) {
  const fs::path dir = fresh_dir("exit_signal_twice");
  const fs::path save = dir / "ckpt";
  std::vector<std::string> args = tiny_run(save, 100000);
  args.insert(args.end(), {"--save-interval", "0", "--exit-signal-handler"});
  const Child child = start_moe_train(args, dir / "run",
                                      {std::string(kTestSaveDelayVariable) + "=3000"});
  ASSERT_TRUE(wait_until(child,
                         [&] {
                           return read_text(child.out).find("iteration        2/  100000") !=
                                  std::string::npos;
                         }))
      << read_text(child.out) << read_text(child.err);
  ASSERT_EQ(kill(child.pid, SIGINT), 0);
  // The first signal's save is in progress (held there by the test hook's delay).
  ASSERT_TRUE(wait_until(child, [&] {
    for (int64_t it = 2; it < 100; ++it)
      if (saving(save, it)) return true;
    return false;
  })) << read_text(child.out) << read_text(child.err);
  ASSERT_EQ(kill(child.pid, SIGINT), 0);
  const int status = wait_status(child);
  const std::string err = read_text(child.err);
  ASSERT_TRUE(WIFEXITED(status)) << status << " " << err;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT) << err;
  EXPECT_NE(err.find("moe train: interrupted by SIGINT while saving "), std::string::npos) << err;
  EXPECT_FALSE(latest_checkpoint_iteration(save.string()).has_value());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe::train
