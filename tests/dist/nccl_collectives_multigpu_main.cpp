// moe_nccl_tests: the backend suite (collective_suite.h) on the NCCL backend, one process per
// GPU. The program starts its ranks itself, so it needs no launcher:
//   moe_nccl_tests [--ranks N] [--timeout-s S] [GoogleTest flags]
// makes NCCL's unique id, starts N copies of itself (default: one per visible GPU; fewer than
// two GPUs: it says so and exits 77, which ctest reports as skipped), rank r on cuda:r, and
// waits for them: when a rank fails the others are ended, and so are all of them after S
// seconds (default 600). Rank 0 prints GoogleTest's report; every rank prints its failures
// prefixed "[rank R]"; the exit status is non-zero when any rank failed.
//
// What runs where. The suite expects reductions bitwise in rank order; NCCL sums floats in its
// ring or tree order, which agrees bitwise only for two ranks (a + b). So:
//   - every case without reductions runs on the world (all N ranks);
//   - the cases with reductions run on pairs of ranks (split from the world; with an odd N the
//     last rank is a group of one), concurrently on every pair;
//   - NcclManyRanks checks reductions on the world against fp64 sums, within each dtype's
//     tolerance (integers exactly), including one large all-reduce (many NCCL channels).
// The cases that break calls on purpose need cross-rank call checks, which NCCL does not make
// (a disagreeing call hangs until the timeout): skipped.
// Then the parallel-equals-serial training suite (train/parallel_training_suite.h) on the world,
// in bf16, one GPU per rank: the mappings of the world's size (NcclParallelTraining.*).
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "collective_suite.h"
#include "common/check.h"
#include "moe/dist/nccl_backend.h"
#include "train/parallel_training_suite.h"

extern char** environ;

namespace moe::dist::test {
namespace {

constexpr int kSkipped = 77;
constexpr const char* kRankEnv = "MOE_NCCL_TEST_RANK";
constexpr const char* kWorldEnv = "MOE_NCCL_TEST_WORLD";
constexpr const char* kIdEnv = "MOE_NCCL_TEST_ID";

std::shared_ptr<ProcessGroup> g_world;
std::shared_ptr<ProcessGroup> g_pair;  // the group of two (or one) this rank's reductions run on

bool has_reductions(const SuiteCase& c) {
  for (const char* name :
       {"all_reduce", "reduce_scatter", "reduce_scatter_v", "async_reverse_wait"}) {
    if (std::strcmp(c.name, name) == 0) return true;
  }
  return false;
}

std::vector<SuiteCase> cases(bool reductions) {
  std::vector<SuiteCase> out;
  for (const SuiteCase& c : collective_suite())
    if (!c.breaks_calls && has_reductions(c) == reductions) out.push_back(c);
  return out;
}

std::string case_name(const ::testing::TestParamInfo<SuiteCase>& info) {
  return info.param.name;
}

class NcclWorld : public ::testing::TestWithParam<SuiteCase> {};
TEST_P(NcclWorld, Case) {
  GetParam().run(*g_world, Device::cuda(g_world->rank()));
}
INSTANTIATE_TEST_SUITE_P(Nccl, NcclWorld, ::testing::ValuesIn(cases(false)), case_name);

class NcclPairs : public ::testing::TestWithParam<SuiteCase> {};
TEST_P(NcclPairs, Case) {
  GetParam().run(*g_pair, Device::cuda(g_world->rank()));
}
INSTANTIATE_TEST_SUITE_P(Nccl, NcclPairs, ::testing::ValuesIn(cases(true)), case_name);

// Rank q's k-th input, which every rank can draw.
Tensor input(const Shape& shape, DType dtype, uint64_t seed, int q, int k) {
  const uint64_t s =
      seed + 1000003ULL * static_cast<uint64_t>(q) + 7919ULL * static_cast<uint64_t>(k);
  if (is_floating(dtype)) return moe::test::random_normal(shape, dtype, s, Device::cpu(), 3.0);
  return moe::test::random_uniform(shape, DType::f64, s, -1000, 1000).to(dtype);
}

// The sum (or mean) over every rank's input, in fp64.
Tensor reference(const ProcessGroup& g, const Shape& shape, DType dtype, uint64_t seed, int k,
                 ReduceOp op) {
  std::vector<double> acc(static_cast<size_t>(input(shape, dtype, seed, 0, k).numel()), 0.0);
  for (int q = 0; q < g.size(); ++q) {
    const std::vector<double> x = input(shape, dtype, seed, q, k).to_double_vector();
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += x[i];
  }
  if (op == ReduceOp::avg)
    for (double& a : acc) a /= g.size();
  return Tensor::from_vector(acc, shape);
}

uint64_t shared_seed(ProcessGroup& g) {
  Tensor seed = Tensor::from_vector(
      std::vector<int64_t>{static_cast<int64_t>(moe::test::fresh_seed() >> 1)}, {1});
  g.broadcast(seed, 0);  // a host tensor: staged through the device
  return static_cast<uint64_t>(seed.to_vector<int64_t>()[0]);
}

// Reductions on every rank of the world, against fp64 sums: floats within four times the
// dtype's tolerance (NCCL's order and per-step rounding), integers exactly.
TEST(NcclManyRanks, ReductionsAgainstFp64) {
  ProcessGroup& g = *g_world;
  const Device dev = Device::cuda(g.rank());
  const uint64_t seed = shared_seed(g);
  SCOPED_TRACE("seed " + std::to_string(seed) + ", rank " + std::to_string(g.rank()));
  const int n = g.size(), r = g.rank();
  int k = 0;
  for (DType dtype : {DType::f64, DType::f32, DType::bf16, DType::f16, DType::i64, DType::i32}) {
    const double tol = is_floating(dtype) ? 4 * moe::test::tolerance(dtype) : 0.0;
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
      if (!is_floating(dtype) && op == ReduceOp::avg) continue;  // the suite checks it on pairs
      const std::string what = std::string(dtype_name(dtype)) + " " + reduce_op_name(op);
      {
        const Shape shape = {257, 3};
        Tensor t = input(shape, dtype, seed, r, k).to(dev);
        g.all_reduce(t, op);
        EXPECT_TRUE(moe::test::close(t.to(Device::cpu()).to(DType::f64),
                                     reference(g, shape, dtype, seed, k, op), tol,
                                     "all_reduce " + what));
        ++k;
      }
      {
        const Shape shape = {5 * n, 7};
        Tensor out = Tensor::zeros({5, 7}, dtype, dev);
        g.reduce_scatter(input(shape, dtype, seed, r, k).to(dev), out, op);
        EXPECT_TRUE(moe::test::close(out.to(Device::cpu()).to(DType::f64),
                                     reference(g, shape, dtype, seed, k, op).rows(5 * r, 5), tol,
                                     "reduce_scatter " + what));
        ++k;
      }
      {
        std::vector<int64_t> counts;
        for (int q = 0; q < n; ++q) counts.push_back((2 * q + 1) % 3 * 4);  // 4, 0, 8, 4, ...
        int64_t total = 0, offset = 0;
        for (int q = 0; q < n; ++q) {
          if (q == r) offset = total;
          total += counts[static_cast<size_t>(q)];
        }
        const Shape shape = {total, 3};
        Tensor out = Tensor::zeros({counts[static_cast<size_t>(r)], 3}, dtype, dev);
        g.reduce_scatter_v(input(shape, dtype, seed, r, k).to(dev), out, counts, op);
        EXPECT_TRUE(moe::test::close(
            out.to(Device::cpu()).to(DType::f64),
            reference(g, shape, dtype, seed, k, op).rows(offset, counts[static_cast<size_t>(r)]),
            tol, "reduce_scatter_v " + what));
        ++k;
      }
    }
  }
  // One large all-reduce (64 MiB of f32): rank r contributes r + 1 everywhere.
  Tensor big = Tensor::full({16 << 20}, r + 1, DType::f32, dev);
  g.all_reduce(big);
  const std::vector<float> got = big.to_vector<float>();
  const float expected = static_cast<float>(n * (n + 1) / 2);
  size_t wrong = 0;
  for (float v : got) wrong += v != expected;
  EXPECT_EQ(wrong, 0u) << "of " << got.size() << " elements, expected " << expected;
}

std::string to_hex(const NcclUniqueId& id) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (char c : id) {
    const auto b = static_cast<unsigned char>(c);
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

class NcclTraining : public ::testing::Test {
 public:
  NcclTraining(train::test::ParallelTrainingCase c, Device device)
      : case_(std::move(c)), device_(device) {}
  void TestBody() override { train::test::run_parallel_training_case(g_world, case_, device_); }

 private:
  train::test::ParallelTrainingCase case_;
  Device device_;
};

NcclUniqueId from_hex(const std::string& hex) {
  NcclUniqueId id{};
  if (hex.size() != 2 * id.size()) throw std::invalid_argument("bad " + std::string(kIdEnv));
  for (size_t i = 0; i < id.size(); ++i)
    id[i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return id;
}

// One rank: joins the world, runs the tests, agrees with the others on the exit status.
int run_rank(int argc, char** argv, int rank, int world_size, const NcclUniqueId& id) {
  ::testing::InitGoogleTest(&argc, argv);
  NcclOptions options;
  options.timeout = std::chrono::minutes(2);  // a hung collective ends this rank, then the job
  g_world = make_nccl_world(id, rank, world_size, rank, options);
  std::vector<std::vector<int>> pairs;
  for (int q = 0; q < world_size; q += 2)
    pairs.push_back(q + 1 < world_size ? std::vector<int>{q, q + 1} : std::vector<int>{q});
  g_pair = g_world->split(pairs);

  // The training cases depend on the world's size: registered now, in the same order on every
  // rank.
  for (const train::test::ParallelTrainingCase& c : train::test::process_runner_cases(world_size)) {
    const std::string name = train::test::case_name(c);
    ::testing::RegisterTest(
        "NcclParallelTraining", name.c_str(), nullptr, name.c_str(), __FILE__, __LINE__,
        [c, rank]() -> ::testing::Test* { return new NcclTraining(c, Device::cuda(rank)); });
  }

  const int status = run_tests_on_ranks(*g_world, "moe_nccl_tests", Device::cuda(rank));
  g_pair.reset();
  g_world.reset();
  return status;
}

// The launcher: starts the ranks and watches them.
int run_ranks(int argc, char** argv, int ranks, int timeout_s) {
  const NcclUniqueId id = nccl_unique_id();  // its bootstrap root lives in this process
  const std::string id_env = std::string(kIdEnv) + "=" + to_hex(id);
  const std::string world_env = std::string(kWorldEnv) + "=" + std::to_string(ranks);
  std::vector<pid_t> children;
  for (int r = 0; r < ranks; ++r) {
    std::vector<std::string> env_strings = {id_env, world_env,
                                            std::string(kRankEnv) + "=" + std::to_string(r)};
    std::vector<char*> envp;
    for (std::string& s : env_strings) envp.push_back(s.data());
    for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
    envp.push_back(nullptr);
    pid_t pid = 0;
    const int status = posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data());
    if (status != 0) {
      std::fprintf(stderr, "moe_nccl_tests: cannot start rank %d: %s\n", r, std::strerror(status));
      for (pid_t c : children) kill(c, SIGKILL);
      return 1;
    }
    children.push_back(pid);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  int worst = 0;
  size_t running = children.size();
  bool ending = false;
  auto end_all = [&](const char* why) {
    if (ending) return;
    ending = true;
    std::fprintf(stderr, "moe_nccl_tests: %s; ending every rank\n", why);
    for (pid_t c : children)
      if (c > 0) kill(c, SIGTERM);
    std::this_thread::sleep_for(std::chrono::seconds(5));
    for (pid_t c : children)
      if (c > 0) kill(c, SIGKILL);
  };
  while (running > 0) {
    int status = 0;
    const pid_t done = waitpid(-1, &status, WNOHANG);
    if (done > 0) {
      for (size_t r = 0; r < children.size(); ++r) {
        if (children[r] != done) continue;
        children[r] = -1;
        --running;
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (code != 0) {
          worst = 1;
          const std::string why =
              "rank " + std::to_string(r) + " ended with status " + std::to_string(code);
          end_all(why.c_str());
        }
      }
      continue;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      worst = 1;
      end_all(("still running after " + std::to_string(timeout_s) + " s").c_str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return worst;
}

int main_impl(int argc, char** argv) {
  if (const char* rank = std::getenv(kRankEnv)) {
    const char* world = std::getenv(kWorldEnv);
    const char* id = std::getenv(kIdEnv);
    if (world == nullptr || id == nullptr)
      throw std::invalid_argument(std::string(kRankEnv) + " without " + kWorldEnv + " and " +
                                  kIdEnv);
    // The launcher's own arguments are passed on with GoogleTest's; drop them here.
    std::vector<char*> args;
    for (int i = 0; i < argc; ++i) {
      const std::string a = argv[i];
      if ((a == "--ranks" || a == "--timeout-s") && i + 1 < argc) {
        ++i;
        continue;
      }
      args.push_back(argv[i]);
    }
    int count = static_cast<int>(args.size());
    args.push_back(nullptr);
    return run_rank(count, args.data(), std::atoi(rank), std::atoi(world), from_hex(id));
  }
  int ranks = -1, timeout_s = 600;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--ranks" && i + 1 < argc) ranks = std::atoi(argv[++i]);
    if (a == "--timeout-s" && i + 1 < argc) timeout_s = std::atoi(argv[++i]);
    if (a == "--gtest_list_tests") {  // what every rank would run
      ::testing::InitGoogleTest(&argc, argv);
      return RUN_ALL_TESTS();
    }
  }
  if (!nccl_built()) {
    std::printf("moe_nccl_tests: this build has no NCCL; skipped\n");
    return kSkipped;
  }
  const int gpus = cuda_device_count();
  if (ranks < 0) ranks = gpus;
  if (ranks < 2 || ranks > gpus) {
    std::printf("moe_nccl_tests: needs 2 or more GPUs (one per rank), sees %d%s; skipped\n", gpus,
                ranks > gpus ? " (fewer than --ranks)" : "");
    return kSkipped;
  }
  std::printf("moe_nccl_tests: %d ranks, one per GPU, NCCL %d\n", ranks, nccl_version());
  std::fflush(stdout);
  return run_ranks(argc, argv, ranks, timeout_s);
}

}  // namespace
}  // namespace moe::dist::test

int main(int argc, char** argv) {
  try {
    return moe::dist::test::main_impl(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe_nccl_tests: error: %s\n", e.what());
    std::fflush(stderr);
    // Not through static destructors: a rank's groups may still hold communicators whose
    // peers are gone.
    std::_Exit(1);
  }
}
