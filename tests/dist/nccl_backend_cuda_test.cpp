// The NCCL backend on one GPU, as a world of one rank (the unique id made in this process):
// every collective and dtype, split, point-to-point to self, the stream semantics of Work
// (checked against a stream held by a StreamGate, so "not yet run" is certain), record_stream
// of the operation's tensors, abort, and the watchdog's timeout (which a world of one rank can
// reach by holding the caller's stream: the operation then never starts). Several ranks are
// the multigpu runner's.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"
#include "core/event_testing.h"
#include "moe/core/allocator.h"
#include "moe/core/stream.h"
#include "moe/dist/nccl_backend.h"

namespace moe::dist {
namespace {

using ::moe::test::message_of;

constexpr Device kGpu = Device::cuda(0);

#define MOE_REQUIRE_NCCL() \
  MOE_REQUIRE_GPU();       \
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL"

NcclOptions test_options() {
  NcclOptions options;
  options.timeout = std::chrono::seconds(60);
  options.exit_on_failure = false;  // a failing test throws instead of ending the binary
  options.watchdog_interval = std::chrono::milliseconds(10);
  return options;
}

std::shared_ptr<ProcessGroup> world_of_one(const NcclOptions& options = test_options()) {
  return make_nccl_world(nccl_unique_id(), 0, 1, 0, options);
}

// Random host values of any dtype (integers: truncated uniforms in the type's range).
Tensor input(const Shape& shape, DType dt, uint64_t seed) {
  if (dt == DType::u8) return test::random_uniform(shape, DType::f64, seed, 0, 250).to(dt);
  if (!is_floating(dt)) return test::random_uniform(shape, DType::f64, seed, -1000, 1000).to(dt);
  return test::random_normal(shape, DType::f32, seed, Device::cpu(), 3.0).to(dt);
}

// A device tensor of `shape` filled with a value no collective here produces.
Tensor poisoned(const Shape& shape, DType dt) {
  return Tensor::full(shape, 77, dt, kGpu);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const std::vector<DType> kReducible = {DType::f64, DType::f32, DType::bf16, DType::f16,
                                       DType::i64, DType::i32, DType::u8};
const std::vector<DType> kAll = {DType::f64, DType::f32,      DType::bf16,
                                 DType::f16, DType::i64,      DType::i32,
                                 DType::u8,  DType::fp8_e4m3, DType::fp8_e5m2};

TEST(NcclBackendCuda, WorldOfOne) {
  MOE_REQUIRE_NCCL();
  auto pg = world_of_one();
  EXPECT_EQ(pg->rank(), 0);
  EXPECT_EQ(pg->size(), 1);
  EXPECT_EQ(pg->world_ranks(), std::vector<int>{0});
  EXPECT_EQ(pg->backend(), "nccl");
  EXPECT_GE(nccl_version(), 21800);
}

// With one rank every reduction is the identity (avg divides by 1): results must be bitwise
// equal to the input, which also checks that NCCL read and wrote the right bytes.
TEST(NcclBackendCuda, ReductionsEveryDtypeAndOp) {
  MOE_REQUIRE_NCCL();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto pg = world_of_one();
  int k = 0;
  for (DType dt : kReducible) {
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + reduce_op_name(op));
      for (const Shape& shape : {Shape{257, 3}, Shape{0, 5}, Shape{}}) {
        const Tensor host = input(shape, dt, seed + k++);
        Tensor t = host.to(kGpu);
        pg->all_reduce(t, op);
        EXPECT_TRUE(test::equal(t.to(Device::cpu()), host)) << "all_reduce";
      }
      if (op == ReduceOp::max || op == ReduceOp::min) continue;
      const Tensor host = input({13, 7}, dt, seed + k++);
      Tensor out = poisoned({13, 7}, dt);
      pg->reduce_scatter(host.to(kGpu), out, op);
      EXPECT_TRUE(test::equal(out.to(Device::cpu()), host)) << "reduce_scatter";
      const std::vector<int64_t> counts = {13};
      Tensor out_v = poisoned({13, 7}, dt);
      pg->reduce_scatter_v(host.to(kGpu), out_v, counts, op);
      EXPECT_TRUE(test::equal(out_v.to(Device::cpu()), host)) << "reduce_scatter_v";
    }
  }
}

TEST(NcclBackendCuda, DataMovementEveryDtype) {
  MOE_REQUIRE_NCCL();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto pg = world_of_one();
  int k = 0;
  for (DType dt : kAll) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor host = input({37, 5}, dt, seed + k++);
    const Tensor in = host.to(kGpu);

    Tensor gathered = poisoned({37, 5}, dt);
    pg->all_gather(in, gathered);
    EXPECT_TRUE(test::equal(gathered.to(Device::cpu()), host)) << "all_gather";

    const std::vector<int64_t> counts = {37};
    Tensor gathered_v = poisoned({37, 5}, dt);
    pg->all_gather_v(in, gathered_v, counts);
    EXPECT_TRUE(test::equal(gathered_v.to(Device::cpu()), host)) << "all_gather_v";

    Tensor exchanged = poisoned({37, 5}, dt);
    pg->all_to_all_v(in, exchanged, counts, counts);
    EXPECT_TRUE(test::equal(exchanged.to(Device::cpu()), host)) << "all_to_all_v";

    Tensor t = in.clone();
    pg->broadcast(t, 0);
    EXPECT_TRUE(test::equal(t.to(Device::cpu()), host)) << "broadcast";
  }
  // Zero rows move nothing and still complete.
  const std::vector<int64_t> none = {0};
  Tensor empty_in = Tensor::empty({0, 5}, DType::f32, kGpu);
  Tensor empty_out = Tensor::empty({0, 5}, DType::f32, kGpu);
  pg->all_gather_v(empty_in, empty_out, none);
  pg->all_to_all_v(empty_in, empty_out, none, none);
  pg->all_gather(empty_in, empty_out);
}

// Sends and receives to this same rank in one batch, matched in the order issued.
TEST(NcclBackendCuda, PointToPointToSelf) {
  MOE_REQUIRE_NCCL();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto pg = world_of_one();
  const Tensor a1 = input({100, 3}, DType::bf16, seed).to(kGpu);
  const Tensor a2 = input({7}, DType::i64, seed + 1).to(kGpu);
  Tensor b1 = poisoned({100, 3}, DType::bf16);
  Tensor b2 = poisoned({7}, DType::i64);
  const std::vector<P2POp> ops = {{P2POp::Kind::send, a1, 0},
                                  {P2POp::Kind::send, a2, 0},
                                  {P2POp::Kind::recv, b1, 0},
                                  {P2POp::Kind::recv, b2, 0}};
  pg->batch_p2p(ops);
  EXPECT_TRUE(test::equal(b1.to(Device::cpu()), a1.to(Device::cpu())));
  EXPECT_TRUE(test::equal(b2.to(Device::cpu()), a2.to(Device::cpu())));
  const std::vector<P2POp> bad = {{P2POp::Kind::send, a1, 1}};
  EXPECT_TRUE(contains(message_of([&] { pg->batch_p2p(bad); }), "peer 1"));
}

TEST(NcclBackendCuda, Split) {
  MOE_REQUIRE_NCCL();
  auto pg = world_of_one();
  std::shared_ptr<ProcessGroup> sub = pg->split({{0}});
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->rank(), 0);
  EXPECT_EQ(sub->world_ranks(), std::vector<int>{0});
  EXPECT_EQ(sub->backend(), "nccl");
  Tensor t = Tensor::full({5}, 3.0, DType::f32, kGpu);
  sub->all_reduce(t);
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(5, 3.0f));
  // A split of the split, and a rank left out of every group.
  std::shared_ptr<ProcessGroup> subsub = sub->new_subgroup({0});
  ASSERT_NE(subsub, nullptr);
  subsub->barrier();
  EXPECT_EQ(pg->split({}), nullptr);
  // The world still works beside its subgroups.
  pg->all_reduce(t);
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(5, 3.0f));

  EXPECT_TRUE(contains(message_of([&] { pg->split({{0}, {0}}); }), "appears twice"));
  EXPECT_TRUE(contains(message_of([&] { pg->split({{1}}); }), "rank 1"));
  EXPECT_TRUE(contains(message_of([&] { pg->split({{}}); }), "is empty"));
}

TEST(NcclBackendCuda, ArgumentErrorsNameTheCall) {
  MOE_REQUIRE_NCCL();
  auto pg = world_of_one();
  Tensor in = Tensor::zeros({4, 3}, DType::f32, kGpu);
  Tensor wrong = Tensor::zeros({5, 3}, DType::f32, kGpu);
  std::string m = message_of([&] { pg->all_gather(in, wrong); });
  EXPECT_TRUE(contains(m, "all_gather (rank 0 of 1") && contains(m, "[5, 3]")) << m;
  Tensor fp8 = Tensor::zeros({4}, DType::fp8_e4m3, kGpu);
  m = message_of([&] { pg->all_reduce(fp8); });
  EXPECT_TRUE(contains(m, "dtype fp8_e4m3 cannot be reduced")) << m;
  const std::vector<int64_t> two = {2, 2};
  m = message_of([&] { pg->all_gather_v(in, in, two); });
  EXPECT_TRUE(contains(m, "all_gather_v") && contains(m, "2 entries")) << m;
  m = message_of([&] { pg->broadcast(in, 1); });
  EXPECT_TRUE(contains(m, "root 1")) << m;
  // A rejected call leaves the group usable.
  pg->all_reduce(in);
}

// Host tensors travel through device copies and are complete when the call returns.
TEST(NcclBackendCuda, HostTensors) {
  MOE_REQUIRE_NCCL();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto pg = world_of_one();
  const Tensor values = input({6, 4}, DType::f32, seed);
  Tensor t = values.clone();
  pg->all_reduce(t, ReduceOp::max);
  EXPECT_TRUE(test::equal(t, values));
  Tensor gathered = Tensor::zeros({6, 4}, DType::f32);
  std::unique_ptr<Work> work = pg->all_gather_async(values, gathered);
  EXPECT_TRUE(work->is_completed());
  EXPECT_TRUE(test::equal(gathered, values));
  Tensor scattered = Tensor::zeros({6, 4}, DType::f32);
  const std::vector<int64_t> counts = {6};
  pg->reduce_scatter_v(values, scattered, counts);
  EXPECT_TRUE(test::equal(scattered, values));
  // A host send received into a device tensor, and a device send into a host tensor.
  Tensor on_device = Tensor::zeros({6, 4}, DType::f32, kGpu);
  Tensor on_host = Tensor::zeros({6, 4}, DType::f32);
  const std::vector<P2POp> ops = {{P2POp::Kind::send, values, 0},
                                  {P2POp::Kind::send, values.to(kGpu), 0},
                                  {P2POp::Kind::recv, on_device, 0},
                                  {P2POp::Kind::recv, on_host, 0}};
  pg->batch_p2p(ops);
  EXPECT_TRUE(test::equal(on_device.to(Device::cpu()), values));
  EXPECT_TRUE(test::equal(on_host, values));
  // in and out on different devices are refused.
  Tensor device_out = Tensor::zeros({6, 4}, DType::f32, kGpu);
  const std::string m = message_of([&] { pg->all_gather(values, device_out); });
  EXPECT_TRUE(contains(m, "all_gather (rank 0 of 1") && contains(m, "cpu")) << m;
}

// The operation waits for the caller's stream (its inputs), and Work::wait() makes the caller's
// stream wait for the operation without blocking the host.
TEST(NcclBackendCuda, WorkOrdersStreams) {
  MOE_REQUIRE_NCCL();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto pg = world_of_one();
  const Tensor host = input({1000, 33}, DType::f32, seed);
  const Tensor in = host.to(kGpu);
  Tensor out = poisoned({1000, 33}, DType::f32);
  synchronize(0);

  test::StreamGate gate(current_stream(0));  // the inputs are "still being written"
  std::unique_ptr<Work> work = pg->all_gather_async(in, out);
  test::settle();
  EXPECT_FALSE(work->is_completed()) << "the operation did not wait for the caller's stream";
  ASSERT_NE(work->event(), nullptr);
  EXPECT_TRUE(work->event()->recorded());

  test::TestStream consumer;
  Event consumed;
  {
    StreamGuard guard(0, consumer.handle());
    work->wait();  // returns at once: the consumer stream waits on the device
    consumed.record(0, consumer.handle());
  }
  test::settle();
  EXPECT_FALSE(consumed.query()) << "wait() did not order the caller's stream after the operation";
  gate.release();
  work->synchronize();
  EXPECT_TRUE(work->is_completed());
  consumed.synchronize();
  EXPECT_TRUE(test::equal(out.to(Device::cpu()), host));

  // Inputs written on the caller's stream just before the call are what is sent.
  Tensor fresh = Tensor::empty({1000, 33}, DType::f32, kGpu);
  fresh.fill_(-2.5);
  pg->all_gather(fresh, out);
  EXPECT_TRUE(test::equal(out.to(Device::cpu()), Tensor::full({1000, 33}, -2.5, DType::f32)));
}

// The operation's blocks are recorded on the communication stream: freed by the caller while
// the operation has not run, they are not handed out again.
TEST(NcclBackendCuda, FreedTensorsAreNotReusedWhileInFlight) {
  MOE_REQUIRE_NCCL();
  auto pg = world_of_one();
  empty_cache();
  const Shape shape = {1500, 1001};  // ~6 MiB in f32, a size no other test here uses
  const void* freed = nullptr;
  test::StreamGate gate(current_stream(0));
  {
    Tensor in = Tensor::empty(shape, DType::f32, kGpu);
    Tensor out = Tensor::empty(shape, DType::f32, kGpu);
    freed = out.raw();
    std::unique_ptr<Work> work = pg->all_gather_async(in, out);
    EXPECT_FALSE(work->is_completed());
  }  // the Work, in and out are gone; the operation is still queued behind the gate
  Tensor again = Tensor::empty(shape, DType::f32, kGpu);
  Tensor again2 = Tensor::empty(shape, DType::f32, kGpu);
  EXPECT_NE(again.raw(), freed) << "a block the communication still writes was handed out";
  EXPECT_NE(again2.raw(), freed);
  gate.release();
  synchronize(0);
}

TEST(NcclBackendCuda, BarrierWaitsForTheCallersStream) {
  MOE_REQUIRE_NCCL();
  auto pg = world_of_one();
  test::StreamGate gate(current_stream(0));
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    gate.release();
  });
  pg->barrier();
  EXPECT_TRUE(gate.passed()) << "barrier returned before the caller's earlier work completed";
  opener.join();
}

// abort() on one rank: no NCCL kernel may still be queued on an aborted communicator (it would
// run on freed state), so the operation in flight has run on the device, but the watchdog has
// not looked at it yet (it never polls here): abort fails it.
TEST(NcclBackendCuda, AbortEndsTheGroupAndItsSubgroups) {
  MOE_REQUIRE_NCCL();
  NcclOptions options = test_options();
  options.watchdog_interval = std::chrono::hours(1);
  auto pg = world_of_one(options);
  std::shared_ptr<ProcessGroup> sub = pg->split({{0}});
  Tensor t = Tensor::full({8}, 1.0, DType::f32, kGpu);
  std::unique_ptr<Work> work = pg->all_reduce_async(t);
  work->event()->synchronize();
  pg->abort("test stop");
  std::string m = message_of([&] { work->wait(); });
  EXPECT_TRUE(contains(m, "test stop")) << m;
  m = message_of([&] { pg->all_reduce(t); });
  EXPECT_TRUE(contains(m, "aborted") && contains(m, "test stop")) << m;
  m = message_of([&] { sub->all_reduce(t); });
  EXPECT_TRUE(contains(m, "aborted") && contains(m, "test stop")) << m;
}

// Holds the caller's stream so that an operation cannot start, until the watchdog reports it:
// then (from on_failure, before the communicators are aborted) lets it run to its end, so no
// kernel is left queued on an aborted communicator.
struct HeldOperation {
  std::unique_ptr<test::StreamGate> gate;
  std::atomic<Work*> work{nullptr};
  std::atomic<int> failures{0};
  std::string reported;

  void on_failure(const std::string& message) {
    reported = message;
    for (int i = 0; i < 10000 && work.load() == nullptr; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    gate->release();
    if (Work* w = work.load()) w->event()->synchronize();
    ++failures;
  }
};

// The watchdog: an operation that cannot start (its caller's stream is held) times out; the
// communicators are aborted and the Work, and every later call, throw naming the operation,
// the rank and the time.
TEST(NcclBackendCuda, TimeoutAbortsAndThrows) {
  MOE_REQUIRE_NCCL();
  HeldOperation held;
  NcclOptions options = test_options();
  options.timeout = std::chrono::milliseconds(300);
  options.on_failure = [&](const std::string& message) { held.on_failure(message); };
  auto pg = world_of_one(options);
  Tensor t = Tensor::full({8}, 1.0, DType::f32, kGpu);
  synchronize(0);
  held.gate = std::make_unique<test::StreamGate>(current_stream(0));
  std::unique_ptr<Work> work = pg->all_reduce_async(t);
  held.work.store(work.get());
  const std::string m = message_of([&] { work->synchronize(); });
  EXPECT_TRUE(contains(m, "[rank 0 ") && contains(m, "NCCL all_reduce #") &&
              contains(m, "timed out after"))
      << m;
  for (int i = 0; i < 10000 && held.failures.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(held.failures.load(), 1);
  EXPECT_TRUE(contains(held.reported, "timed out after")) << held.reported;
  const std::string later = message_of([&] { pg->all_reduce(t); });
  EXPECT_TRUE(contains(later, "failed earlier") && contains(later, "timed out")) << later;
  synchronize(0);
}

// By default (PyTorch's behaviour) the watchdog ends the process after aborting. Run in a
// child process started afresh (CUDA does not survive fork).
TEST(NcclBackendCudaDeathTest, TimeoutEndsTheProcessByDefault) {
  MOE_REQUIRE_NCCL();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        HeldOperation held;
        NcclOptions options;  // exit_on_failure = true
        options.timeout = std::chrono::milliseconds(300);
        options.watchdog_interval = std::chrono::milliseconds(10);
        options.on_failure = [&](const std::string& message) { held.on_failure(message); };
        // The child is a fresh process: its first communicator pays CUDA's and NCCL's start-up
        // (about a second on an H200), longer than the 300 ms under test, which the creation
        // of a communicator obeys too. A first world with the test's usual timeout takes that.
        (void)world_of_one();
        auto pg = make_nccl_world(nccl_unique_id(), 0, 1, 0, options);
        Tensor t = Tensor::full({8}, 1.0, DType::f32, kGpu);
        synchronize(0);
        held.gate = std::make_unique<test::StreamGate>(current_stream(0));
        std::unique_ptr<Work> work = pg->all_reduce_async(t);
        held.work.store(work.get());
        work->wait();                                           // the host is not blocked...
        std::this_thread::sleep_for(std::chrono::seconds(60));  // ...the watchdog ends it
      },
      ::testing::ExitedWithCode(1), "NCCL all_reduce #1 on world ranks \\[0\\] timed out after");
}

}  // namespace
}  // namespace moe::dist
