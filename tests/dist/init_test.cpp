// init_distributed without a launcher process: a single process (the Local backend), the
// default backend, the errors that come before any rendezvous (an unknown or impossible
// backend, no GPU for NCCL, no MASTER_ADDR), and ranks as threads meeting through the TCP
// rendezvous: the MPI backend refused after they met, a rank failing after the rendezvous
// ending the others' wait at once, a rank that never comes ending it at the timeout (with
// Slurm's hint under Slurm). describe_world's start-up lines for a mapping over two hosts.
#include "moe/dist/init.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "moe/core/error.h"
#include "moe/dist/nccl_backend.h"
#include "moe/dist/tcp_store.h"

namespace moe::dist {
namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "missing '" << part << "' in: " << text;
}

// The launch of rank `rank` of `size` by torchrun on one node, rendezvous at localhost:port.
LaunchEnv torchrun(int rank, int size, int port) {
  LaunchEnv e;
  e.launcher = Launcher::torchrun;
  e.rank = e.local_rank = rank;
  e.world_size = e.local_world_size = size;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  return e;
}

DistributedOptions cpu_options(const std::string& backend, double minutes = 0.5) {
  DistributedOptions o;
  o.backend = backend;
  o.cpu = true;
  o.timeout_minutes = minutes;
  return o;
}

// Each rank of `envs` calls init_distributed on its own thread; returns their errors.
std::vector<std::string> init_ranks(const DistributedOptions& options,
                                    const std::vector<LaunchEnv>& envs,
                                    const std::vector<EnvMap>& vars) {
  std::vector<std::string> errors(envs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < envs.size(); ++i)
    threads.emplace_back([&, i] {
      errors[i] = error_of([&] { (void)init_distributed(options, envs[i], vars[i]); });
    });
  for (std::thread& t : threads) t.join();
  return errors;
}

TEST(InitDistributed, SingleProcessIsALocalWorldOfOne) {
  const World w = init_distributed(cpu_options(""), LaunchEnv{}, {});
  EXPECT_EQ(w.backend, "local");
  EXPECT_EQ(w.size(), 1);
  EXPECT_EQ(w.rank(), 0);
  EXPECT_TRUE(w.device.is_cpu());
  ASSERT_TRUE(w.world);
  EXPECT_EQ(w.world->size(), 1);
  Tensor t = Tensor::full({4}, 2.0, DType::f32);
  w.world->all_reduce(t);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{2, 2, 2, 2}));
  ASSERT_EQ(w.places.size(), 1u);
  EXPECT_EQ(w.places[0].host, host_name());
  EXPECT_EQ(w.places[0].device, "cpu");
  EXPECT_EQ(w.store, nullptr);
  const WorldIdentity id = current_world_identity();
  EXPECT_TRUE(id.exists);
  EXPECT_EQ(id.size, 1);
  EXPECT_EQ(id.group, nullptr);  // no WorldHold in this test
  const std::string lines = describe_world(w);
  expect_contains(lines, "distributed: world size 1 = TP 1 x CP 1 x DP 1 x PP 1");
  expect_contains(lines, "backend local, launcher none");
  expect_contains(lines, host_name() + ", rank 0: cpu");
}

TEST(InitDistributed, DefaultBackend) {
  EXPECT_EQ(default_backend(LaunchEnv{}, false), "local");
  LaunchEnv two = torchrun(0, 2, 1234);
  EXPECT_EQ(default_backend(two, true), "mpi");  // on the CPU
  EXPECT_EQ(default_backend(two, false), cuda_device_count() > 0 && nccl_built() ? "nccl" : "mpi");
}

TEST(InitDistributed, ErrorsBeforeAnyRendezvous) {
  const LaunchEnv two = torchrun(0, 2, 1234);  // nobody listens: these must fail before
  expect_contains(error_of([&] { init_distributed(cpu_options("gloo"), two, {}); }),
                  "--distributed-backend 'gloo' is not one of nccl, mpi, local");
  expect_contains(error_of([&] { init_distributed(cpu_options("local"), two, {}); }),
                  "--distributed-backend local runs one process; this process was started by "
                  "torchrun or moe launch with world size 2");
  expect_contains(error_of([&] { init_distributed(cpu_options("nccl"), two, {}); }),
                  "--distributed-backend nccl needs a GPU per rank, and rank 0 was asked to run on "
                  "the CPU");
  LaunchEnv no_master = two;
  no_master.master_addr = "";
  no_master.master_port = 0;
  expect_contains(error_of([&] { init_distributed(cpu_options("mpi"), no_master, {}); }),
                  "the rendezvous needs rank 0's address: set MASTER_ADDR and MASTER_PORT");
  DistributedOptions bad = cpu_options("");
  bad.timeout_minutes = 0;
  expect_contains(error_of([&] { init_distributed(bad, LaunchEnv{}, {}); }),
                  "--distributed-timeout-minutes must be positive");
  expect_contains(error_of([&] {
                    init_distributed(cpu_options(""), LaunchEnv{},
                                     {{"MOE_TEST_FAIL_RANK", "0"}, {"MOE_TEST_FAIL_AT", "later"}});
                  }),
                  "MOE_TEST_FAIL_AT='later' is not before-rendezvous, after-rendezvous, hang or "
                  "hang-after-rendezvous");
  expect_contains(error_of([&] {
                    init_distributed(cpu_options(""), LaunchEnv{}, {{"MOE_TEST_FAIL_RANK", "0"}});
                  }),
                  "MOE_TEST_FAIL_RANK=0: rank 0 fails before the rendezvous");
}

TEST(InitDistributed, RanksMeetThenTheMpiBackendNeedsAnMpiLauncher) {
  const int port = find_free_port();
  const auto errors =
      init_ranks(cpu_options("mpi"), {torchrun(0, 2, port), torchrun(1, 2, port)}, {{}, {}});
  for (const std::string& e : errors)
    expect_contains(e,
                    "--distributed-backend mpi needs an MPI launcher (mpirun, or srun "
                    "--mpi=pmix); this process was started by torchrun or moe launch");
}

TEST(InitDistributed, RankFailingAfterTheRendezvousEndsTheOthersWait) {
  const int port = find_free_port();
  const auto start = std::chrono::steady_clock::now();
  const auto errors = init_ranks(
      cpu_options("mpi", 1.0), {torchrun(0, 3, port), torchrun(1, 3, port), torchrun(2, 3, port)},
      {{}, {{"MOE_TEST_FAIL_RANK", "1"}, {"MOE_TEST_FAIL_AT", "after-rendezvous"}}, {}});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  expect_contains(errors[1], "MOE_TEST_FAIL_RANK=1: rank 1 fails after the rendezvous");
  // Rank 0 waits at the place barrier, which rank 1 cannot reach: told at once that it left.
  expect_contains(errors[0], "barrier 'moe/started' failed: rank");
  // ("rank 1 left", or "ranks 1, 2 left" when rank 2 had gone as well by then)
  expect_contains(errors[0], " left (");
  EXPECT_TRUE(errors[0].find("rank 1 left") != std::string::npos ||
              errors[0].find("ranks 1, 2 left") != std::string::npos)
      << errors[0];
  // Rank 2 likewise, or, when rank 0 (its server) had already gone, told that.
  EXPECT_TRUE(errors[2].find("barrier 'moe/started' failed: rank") != std::string::npos ||
              errors[2].find("the connection to rank 0's store closed") != std::string::npos)
      << errors[2];
  EXPECT_LT(seconds, 30.0);  // not the minute of the timeout
}

TEST(InitDistributed, RankThatNeverComesEndsTheRendezvousAtTheTimeout) {
  const int port = find_free_port();
  // World 3; rank 2 never starts. 0.01 minutes: 0.6 s.
  const auto errors =
      init_ranks(cpu_options("mpi", 0.01), {torchrun(0, 3, port), torchrun(1, 3, port)}, {{}, {}});
  for (const std::string& e : errors)
    expect_contains(e, "rendezvous at 127.0.0.1:" + std::to_string(port) +
                           " timed out after 0.6 s: 2 of 3 ranks arrived (missing: rank 2)");
}

TEST(InitDistributed, SlurmTimeoutSaysToUseSrun) {
  LaunchEnv e = torchrun(0, 2, find_free_port());
  e.launcher = Launcher::slurm;
  const std::string error = error_of([&] { init_distributed(cpu_options("mpi", 0.01), e, {}); });
  expect_contains(error, "1 of 2 ranks arrived (missing: rank 1)");
  expect_contains(error, "under Slurm, start every rank with srun");
}

TEST(DescribeWorld, MappingAndHosts) {
  World w;
  w.env = torchrun(0, 8, 29500);
  w.backend = "nccl";
  w.timeout = std::chrono::minutes(10);
  for (int r = 0; r < 8; ++r)
    w.places.push_back({r, r < 4 ? "node-a" : "node-b", "cuda:" + std::to_string(r % 4)});
  ParallelConfig mapping;
  mapping.tensor_model_parallel_size = 2;
  mapping.expert_model_parallel_size = 4;
  const std::string lines = describe_world(w, mapping);
  EXPECT_EQ(lines,
            "distributed: world size 8 = TP 2 x CP 1 x DP 4 x PP 1, experts ETP 2 x EP 4 x EDP 1; "
            "backend nccl, launcher torchrun, timeout 10 min\n"
            "  node-a, ranks 0-3: cuda:0 cuda:1 cuda:2 cuda:3\n"
            "  node-b, ranks 4-7: cuda:0 cuda:1 cuda:2 cuda:3\n");
  // On another rank: its own place only.
  w.env.rank = 5;
  w.places = {{5, "node-b", "cuda:1"}};
  expect_contains(describe_world(w),
                  "  node-b, rank 5: cuda:1\n  (rank 5 knows its own place only)");
}

}  // namespace
}  // namespace moe::dist
