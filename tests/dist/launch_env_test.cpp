// LaunchEnv: each launcher's variables (torchrun / moe launch, OpenMPI, Slurm, none), which
// launcher wins when several are present, MASTER_ADDR / MASTER_PORT and Slurm's fallbacks
// (hostlist grammar, job-id port), and the errors on inconsistent values, each naming the
// variable.
#include "moe/dist/launch_env.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "moe/core/error.h"

namespace moe::dist {
namespace {

// Expects parse_launch_env to throw a message containing every one of `parts`.
void expect_error(const EnvMap& env, std::initializer_list<const char*> parts) {
  try {
    const LaunchEnv e = parse_launch_env(env);
    ADD_FAILURE() << "no error; got " << e.describe();
  } catch (const Error& err) {
    for (const char* p : parts)
      EXPECT_NE(std::string(err.what()).find(p), std::string::npos)
          << "missing '" << p << "' in: " << err.what();
  }
}

TEST(LaunchEnv, NoLauncherIsOneProcess) {
  const LaunchEnv e = parse_launch_env({{"HOME", "/root"}, {"PATH", "/bin"}});
  EXPECT_EQ(e.launcher, Launcher::none);
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(e.local_world_size, 1);
  EXPECT_EQ(e.master_addr, "");
  EXPECT_EQ(e.master_port, 0);
  EXPECT_STREQ(launcher_name(e.launcher), "none");
}

TEST(LaunchEnv, Torchrun) {
  const LaunchEnv e = parse_launch_env({{"RANK", "13"},
                                        {"WORLD_SIZE", "16"},
                                        {"LOCAL_RANK", "5"},
                                        {"LOCAL_WORLD_SIZE", "8"},
                                        {"MASTER_ADDR", "node-a"},
                                        {"MASTER_PORT", "29500"}});
  EXPECT_EQ(e.launcher, Launcher::torchrun);
  EXPECT_EQ(e.rank, 13);
  EXPECT_EQ(e.world_size, 16);
  EXPECT_EQ(e.local_rank, 5);
  EXPECT_EQ(e.local_world_size, 8);
  EXPECT_EQ(e.master_addr, "node-a");
  EXPECT_EQ(e.master_port, 29500);
  EXPECT_EQ(e.describe(), "rank 13 of 16 (local 5 of 8), launcher torchrun, master node-a:29500");
}

TEST(LaunchEnv, TorchrunLocalDefaultsToOneNode) {
  const LaunchEnv e = parse_launch_env({{"RANK", "2"}, {"WORLD_SIZE", "4"}});
  EXPECT_EQ(e.local_rank, 2);
  EXPECT_EQ(e.local_world_size, 4);
  EXPECT_EQ(e.master_addr, "");  // the TCP rendezvous names MASTER_ADDR when it needs it
  EXPECT_EQ(e.master_port, 0);
}

TEST(LaunchEnv, OpenMpi) {
  const LaunchEnv e = parse_launch_env({{"OMPI_COMM_WORLD_RANK", "3"},
                                        {"OMPI_COMM_WORLD_SIZE", "4"},
                                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(e.launcher, Launcher::openmpi);
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 2);
  EXPECT_EQ(e.master_addr, "");  // MPI needs none
}

TEST(LaunchEnv, Slurm) {
  const LaunchEnv e = parse_launch_env({{"SLURM_PROCID", "9"},
                                        {"SLURM_NTASKS", "16"},
                                        {"SLURM_LOCALID", "1"},
                                        {"SLURM_NTASKS_PER_NODE", "8"},
                                        {"SLURM_JOB_NODELIST", "gpu[001-004,007],login1"},
                                        {"SLURM_JOB_ID", "4242"}});
  EXPECT_EQ(e.launcher, Launcher::slurm);
  EXPECT_EQ(e.rank, 9);
  EXPECT_EQ(e.world_size, 16);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 8);
  EXPECT_EQ(e.master_addr, "gpu001");  // zero padding kept
  EXPECT_EQ(e.master_port, 15000 + 4242);
}

TEST(LaunchEnv, SlurmTasksPerNodeAtThisNode) {
  EnvMap env{{"SLURM_PROCID", "6"},        {"SLURM_NTASKS", "7"},
             {"SLURM_LOCALID", "0"},       {"SLURM_TASKS_PER_NODE", "2(x3),1"},
             {"SLURM_NODEID", "3"},        {"SLURM_NODELIST", "n[7-9],n10"},
             {"SLURM_JOB_ID", "123456789"}};
  LaunchEnv e = parse_launch_env(env);
  EXPECT_EQ(e.local_world_size, 1);
  EXPECT_EQ(e.master_addr, "n7");
  EXPECT_EQ(e.master_port, 15000 + 123456789 % 20000);
  env["SLURM_NODEID"] = "1";
  env["SLURM_LOCALID"] = "1";
  EXPECT_EQ(parse_launch_env(env).local_world_size, 2);
  // The step's list (srun) wins over the job's.
  env["SLURM_STEP_TASKS_PER_NODE"] = "3,4";
  EXPECT_EQ(parse_launch_env(env).local_world_size, 4);
  env["SLURM_NODEID"] = "2";
  expect_error(env, {"SLURM_NODEID=2", "SLURM_STEP_TASKS_PER_NODE=3,4"});
}

TEST(LaunchEnv, SlurmNodelistOrderAndMasterOverride) {
  EnvMap env{{"SLURM_PROCID", "0"},
             {"SLURM_NTASKS", "2"},
             {"SLURM_NODELIST", "old[1-2]"},
             {"SLURM_JOB_NODELIST", "job[05-06]"}};
  EXPECT_EQ(parse_launch_env(env).master_addr, "job05");
  env["SLURM_STEP_NODELIST"] = "step[3,5]";
  EXPECT_EQ(parse_launch_env(env).master_addr, "step3");
  EXPECT_EQ(parse_launch_env(env).master_port, 0);  // no job id: unknown
  env["MASTER_ADDR"] = "10.1.2.3";
  env["MASTER_PORT"] = "6000";
  const LaunchEnv e = parse_launch_env(env);
  EXPECT_EQ(e.master_addr, "10.1.2.3");
  EXPECT_EQ(e.master_port, 6000);
  EXPECT_EQ(e.local_world_size, 2);  // no per-node count: one node
}

TEST(LaunchEnv, FirstLauncherWins) {
  // torchrun (or moe launch) inside a Slurm allocation and under mpirun: its own variables.
  const EnvMap slurm{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"SLURM_JOB_ID", "7"}};
  EnvMap env = slurm;
  env.insert({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1234"}});
  LaunchEnv e = parse_launch_env(env);
  EXPECT_EQ(e.launcher, Launcher::torchrun);
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.master_port, 1234);
  // mpirun inside an allocation: the batch step's SLURM_PROCID=0 / SLURM_NTASKS must not count.
  env = slurm;
  env.insert({{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "6"}});
  e = parse_launch_env(env);
  EXPECT_EQ(e.launcher, Launcher::openmpi);
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 6);
  EXPECT_EQ(e.master_port, 0);  // Slurm's job-id port belongs to Slurm launches
}

TEST(LaunchEnv, ErrorsNameTheVariable) {
  expect_error({{"RANK", "4"}, {"WORLD_SIZE", "4"}}, {"RANK=4", "WORLD_SIZE=4", "not below"});
  expect_error({{"RANK", "-1"}, {"WORLD_SIZE", "4"}}, {"RANK=-1", "non-negative"});
  expect_error({{"RANK", "one"}, {"WORLD_SIZE", "4"}}, {"RANK='one'", "not an integer"});
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "0"}}, {"WORLD_SIZE=0", "positive"});
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", " 2"}}, {"WORLD_SIZE=' 2'"});
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "2x"}}, {"WORLD_SIZE='2x'"});
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", ""}}, {"WORLD_SIZE=''"});
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "99999999999999999999"}}, {"WORLD_SIZE"});
  expect_error({{"RANK", "1"}}, {"WORLD_SIZE is not set"});
  expect_error({{"WORLD_SIZE", "2"}}, {"RANK is not set"});
  expect_error({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}},
               {"LOCAL_RANK=2", "LOCAL_WORLD_SIZE=2"});
  expect_error({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_WORLD_SIZE", "4"}},
               {"LOCAL_WORLD_SIZE=4", "exceeds", "WORLD_SIZE=2"});
  expect_error({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}},
               {"MASTER_PORT=70000", "TCP port"});
  expect_error({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "http"}},
               {"MASTER_PORT='http'"});
  expect_error({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", ""}}, {"MASTER_ADDR", "empty"});
  expect_error({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}},
               {"OMPI_COMM_WORLD_RANK=2", "OMPI_COMM_WORLD_SIZE=2"});
  expect_error({{"OMPI_COMM_WORLD_RANK", "0"}}, {"OMPI_COMM_WORLD_SIZE is not set"});
  expect_error({{"OMPI_COMM_WORLD_RANK", "0"},
                {"OMPI_COMM_WORLD_SIZE", "2"},
                {"OMPI_COMM_WORLD_LOCAL_RANK", "x"}},
               {"OMPI_COMM_WORLD_LOCAL_RANK='x'"});
  expect_error({{"SLURM_PROCID", "8"}, {"SLURM_NTASKS", "8"}},
               {"SLURM_PROCID=8", "SLURM_NTASKS=8"});
  expect_error({{"SLURM_PROCID", "1"}, {"SLURM_NPROCS", "1"}},
               {"SLURM_PROCID=1", "SLURM_NPROCS=1"});
  expect_error({{"SLURM_PROCID", "0"}}, {"SLURM_NTASKS"});
  expect_error({{"SLURM_PROCID", "0"},
                {"SLURM_NTASKS", "4"},
                {"SLURM_LOCALID", "4"},
                {"SLURM_NTASKS_PER_NODE", "4"}},
               {"SLURM_LOCALID=4", "SLURM_NTASKS_PER_NODE=4"});
  expect_error({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_NODELIST", "gpu[1-2"}},
               {"SLURM_NODELIST", "gpu[1-2", "bracket"});
  expect_error({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_JOB_ID", "abc"}},
               {"SLURM_JOB_ID='abc'"});
}

TEST(SlurmHostlist, Expands) {
  using V = std::vector<std::string>;
  EXPECT_EQ(expand_slurm_hostlist("gpu[001-004,007],login1"),
            (V{"gpu001", "gpu002", "gpu003", "gpu004", "gpu007", "login1"}));
  EXPECT_EQ(expand_slurm_hostlist("node1"), (V{"node1"}));
  EXPECT_EQ(expand_slurm_hostlist("a,b,c"), (V{"a", "b", "c"}));
  EXPECT_EQ(expand_slurm_hostlist("n[8-11]"), (V{"n8", "n9", "n10", "n11"}));
  EXPECT_EQ(expand_slurm_hostlist("n[08-11]"), (V{"n08", "n09", "n10", "n11"}));
  EXPECT_EQ(expand_slurm_hostlist("n[098-101]"), (V{"n098", "n099", "n100", "n101"}));
  EXPECT_EQ(expand_slurm_hostlist("r[1-2]n[01-02]-ib"),
            (V{"r1n01-ib", "r1n02-ib", "r2n01-ib", "r2n02-ib"}));
  EXPECT_EQ(expand_slurm_hostlist("[1-2]x"), (V{"1x", "2x"}));
  EXPECT_EQ(expand_slurm_hostlist("dgx-a100-[3,1]"), (V{"dgx-a100-3", "dgx-a100-1"}));
  EXPECT_EQ(expand_slurm_hostlist("gpu[0001-1024]").size(), 1024u);
  EXPECT_EQ(expand_slurm_hostlist("gpu[0001-1024]").back(), "gpu1024");
}

TEST(SlurmHostlist, FirstHost) {
  EXPECT_EQ(slurm_first_host("gpu[001-004,007],login1"), "gpu001");
  EXPECT_EQ(slurm_first_host("login1,gpu[001-004]"), "login1");
  EXPECT_EQ(slurm_first_host("r[07-08]n[3-4]"), "r07n3");
  EXPECT_EQ(slurm_first_host("big[000001-999999]"), "big000001");  // nothing expanded
  EXPECT_EQ(slurm_first_host("h"), "h");
}

TEST(SlurmHostlist, Malformed) {
  for (const char* bad : {"", "gpu[1-2", "gpu1-2]", "gpu[]", "gpu[a-b]", "gpu[3-1]", "gpu[1,]",
                          "a,,b", "a,", "gpu[[1]]", "gpu[1-]", "gpu[-2]"}) {
    EXPECT_THROW(expand_slurm_hostlist(bad, "SLURM_JOB_NODELIST"), Error) << bad;
    EXPECT_THROW(slurm_first_host(bad, "SLURM_JOB_NODELIST"), Error) << bad;
  }
  try {
    expand_slurm_hostlist("gpu[3-1]", "SLURM_JOB_NODELIST");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("SLURM_JOB_NODELIST='gpu[3-1]'"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(expand_slurm_hostlist("n[1-100000]", "L", 1000), Error);
}

TEST(SlurmTasksPerNode, RunLengthForm) {
  EXPECT_EQ(expand_slurm_tasks_per_node("2(x3),1"), (std::vector<int>{2, 2, 2, 1}));
  EXPECT_EQ(expand_slurm_tasks_per_node("8"), (std::vector<int>{8}));
  EXPECT_EQ(expand_slurm_tasks_per_node("4,8(x2)"), (std::vector<int>{4, 8, 8}));
  for (const char* bad : {"", "x", "2(x", "2(x0)", "2(xy)", "2,", "-1"})
    EXPECT_THROW(expand_slurm_tasks_per_node(bad), Error) << bad;
}

TEST(LaunchEnv, ReadsTheProcessEnvironment) {
  ::setenv("MOE_LAUNCH_ENV_TEST_VARIABLE", "a=b", 1);
  const EnvMap env = current_environment();
  ASSERT_EQ(env.count("MOE_LAUNCH_ENV_TEST_VARIABLE"), 1u);
  EXPECT_EQ(env.at("MOE_LAUNCH_ENV_TEST_VARIABLE"), "a=b");
  ::unsetenv("MOE_LAUNCH_ENV_TEST_VARIABLE");
}

}  // namespace
}  // namespace moe::dist
