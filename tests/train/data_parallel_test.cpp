// DataParallel (train/data_parallel.h) on Local threads: when the buckets' reductions start
// (--overlap-grad-reduce: during the last micro-batch's backward, never in the earlier ones),
// that every rank reduces its buckets in the same order, --grad-reduce-in-bf16's rounding, and
// that expert gradients are summed over the expert-data-parallel group only.
//
// The world is wrapped in a recording ProcessGroup (its subgroups too), which logs every
// all-reduce and reduce-scatter in one list with the model's on_grads_ready calls.
#include "moe/train/data_parallel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/core/error.h"
#include "moe/dist/local_backend.h"
#include "moe/dist/parallel_state.h"
#include "nn/gpt_test_util.h"

namespace moe::train {
namespace {

// One entry of a rank's log: a hook call, or a reduction started on a group.
struct Event {
  enum class Kind { grads_ready, all_reduce, reduce_scatter } kind;
  std::vector<nn::Parameter*> params;  // grads_ready: the group of parameters reported
  const void* data = nullptr;          // reductions: the tensor reduced (reduce-scatter: `in`)
  int64_t numel = 0;
  std::vector<int> ranks;  // the group's world ranks
};
using Log = std::vector<Event>;

// A ProcessGroup that logs the reductions it is asked for and forwards everything to `inner`;
// its subgroups log into the same list.
class RecordingGroup final : public dist::ProcessGroup {
 public:
  RecordingGroup(std::shared_ptr<dist::ProcessGroup> inner, std::shared_ptr<Log> log)
      : inner_(std::move(inner)), log_(std::move(log)) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::vector<int>& world_ranks() const override { return inner_->world_ranks(); }
  std::string backend() const override { return inner_->backend(); }

  std::unique_ptr<dist::Work> all_reduce_async(Tensor& t, dist::ReduceOp op) override {
    log_->push_back({Event::Kind::all_reduce, {}, t.raw(), t.numel(), world_ranks()});
    return inner_->all_reduce_async(t, op);
  }
  std::unique_ptr<dist::Work> reduce_scatter_async(const Tensor& in, Tensor& out,
                                                   dist::ReduceOp op) override {
    log_->push_back({Event::Kind::reduce_scatter, {}, in.raw(), in.numel(), world_ranks()});
    return inner_->reduce_scatter_async(in, out, op);
  }
  std::unique_ptr<dist::Work> all_gather_async(const Tensor& in, Tensor& out) override {
    return inner_->all_gather_async(in, out);
  }
  std::unique_ptr<dist::Work> all_gather_v_async(const Tensor& in, Tensor& out,
                                                 std::span<const int64_t> counts) override {
    return inner_->all_gather_v_async(in, out, counts);
  }
  std::unique_ptr<dist::Work> reduce_scatter_v_async(const Tensor& in, Tensor& out,
                                                     std::span<const int64_t> counts,
                                                     dist::ReduceOp op) override {
    return inner_->reduce_scatter_v_async(in, out, counts, op);
  }
  std::unique_ptr<dist::Work> all_to_all_v_async(const Tensor& in, Tensor& out,
                                                 std::span<const int64_t> send_counts,
                                                 std::span<const int64_t> recv_counts) override {
    return inner_->all_to_all_v_async(in, out, send_counts, recv_counts);
  }
  std::unique_ptr<dist::Work> broadcast_async(Tensor& t, int root) override {
    return inner_->broadcast_async(t, root);
  }
  std::unique_ptr<dist::Work> batch_p2p_async(std::span<const dist::P2POp> ops) override {
    return inner_->batch_p2p_async(ops);
  }
  void barrier() override { inner_->barrier(); }
  std::shared_ptr<dist::ProcessGroup> split(const std::vector<std::vector<int>>& groups) override {
    std::shared_ptr<dist::ProcessGroup> g = inner_->split(groups);
    return g ? std::make_shared<RecordingGroup>(g, log_) : nullptr;
  }
  void abort(const std::string& reason) override { inner_->abort(reason); }

 private:
  std::shared_ptr<dist::ProcessGroup> inner_;
  std::shared_ptr<Log> log_;
};

constexpr int64_t kSeq = 8;

// One rank: a recorded world, the parallel state, the tiny GPT model and its DataParallel, with
// the model's on_grads_ready calls logged before DataParallel sees them.
struct Rank {
  Rank(std::shared_ptr<dist::ProcessGroup> world, int ep, DType dtype, const DdpConfig& ddp)
      : log(std::make_shared<Log>()) {
    recorded = std::make_shared<RecordingGroup>(std::move(world), log);
    dist::ParallelConfig pc;
    pc.expert_model_parallel_size = ep;
    state = std::make_shared<dist::ParallelState>(recorded, pc);
    const nn::MoEGroups groups = nn::moe_groups_of(*state);
    nn::ModelConfig config = moe::test::tiny_gpt_config(dtype);
    config.untie_embeddings_and_output_weights = true;
    config.moe.expert_model_parallel_size = ep;
    model = std::make_unique<nn::GPTModel>(config, dtype, Device::cpu(), 1234, groups);
    dp = std::make_unique<DataParallel>(*model, *state, ddp);
    auto inner = model->on_grads_ready;
    model->on_grads_ready = [this, inner](const std::vector<nn::Parameter*>& ps) {
      log->push_back({Event::Kind::grads_ready, ps, nullptr, 0, {}});
      if (inner) inner(ps);
    };
    log->clear();  // the parallel state's setup
  }

  // One micro-batch's forward and backward on this rank's tokens.
  void micro_batch(bool last_of_step, uint64_t seed) {
    dp->start_micro_batch(last_of_step);
    const int64_t V = model->config().vocab_size;
    const uint64_t s = seed * 16 + static_cast<uint64_t>(recorded->rank());
    const Tensor ids = moe::test::random_tokens(kSeq, 1, V, s);
    const Tensor labels = moe::test::random_tokens(kSeq, 1, V, s + 1000);
    nn::GPTContext ctx;
    model->forward(ids, labels, ctx);
    model->backward(ctx, 0.5);
  }

  // The (buffer, bucket) a logged reduction reduced, or {-1, -1} for any other reduction.
  std::pair<int, int> bucket_of(const Event& e) {
    const std::vector<ParamAndGradBuffer*> bufs = dp->buffers();
    for (size_t k = 0; k < bufs.size(); ++k)
      for (size_t b = 0; b < bufs[k]->buckets().size(); ++b) {
        const Tensor g = bufs[k]->bucket_grads(static_cast<int>(b));
        if (g.raw() == e.data && g.numel() == e.numel)
          return {static_cast<int>(k), static_cast<int>(b)};
      }
    return {-1, -1};
  }
  // The buckets whose group has more than one rank: those a step reduces.
  int reducible_buckets() {
    int n = 0;
    for (ParamAndGradBuffer* buf : dp->buffers())
      if (buf->group_size() > 1) n += static_cast<int>(buf->buckets().size());
    return n;
  }

  std::shared_ptr<Log> log;
  std::shared_ptr<RecordingGroup> recorded;
  std::shared_ptr<dist::ParallelState> state;
  std::unique_ptr<nn::GPTModel> model;
  std::unique_ptr<DataParallel> dp;
};

bool is_reduction(const Event& e) {
  return e.kind != Event::Kind::grads_ready;
}

struct OverlapCase {
  int world, ep;
  bool overlap, distributed_optimizer;
};
std::string overlap_case_name(const OverlapCase& c) {
  return "world" + std::to_string(c.world) + "_ep" + std::to_string(c.ep) +
         (c.overlap ? "_overlap" : "_no_overlap") + (c.distributed_optimizer ? "_distopt" : "");
}

void PrintTo(const OverlapCase& c, std::ostream* out) {
  *out << overlap_case_name(c);
}

class GradReduceTiming : public ::testing::TestWithParam<OverlapCase> {};

// Two steps of two micro-batches each. The first micro-batch of a step starts no reduction;
// with overlap the last one starts every bucket inside its backward, the first of them before
// the backward of the last decoder layer to run (layer 0) ends, and finish_grad_sync starts
// none; without overlap every bucket starts in finish_grad_sync. Each bucket is reduced once per
// step, and every rank reduces the buckets in the same order.
TEST_P(GradReduceTiming, BucketsStartInTheLastMicroBatch) {
  const OverlapCase c = GetParam();
  DdpConfig ddp;
  ddp.bucket_size = 64;  // one bucket per parameter or two: many buckets
  ddp.overlap_grad_reduce = c.overlap;
  ddp.use_distributed_optimizer = c.distributed_optimizer;
  std::vector<std::vector<std::pair<int, int>>> order(static_cast<size_t>(c.world));
  std::mutex mu;
  dist::run_local(c.world, [&](std::shared_ptr<dist::ProcessGroup> world) {
    Rank r(world, c.ep, DType::f64, ddp);
    const int me = world->rank();
    const int reducible = r.reducible_buckets();
    ASSERT_GT(reducible, 2) << "rank " << me << ": the test needs several buckets";
    const std::vector<nn::Parameter*> layer0 = r.model->layers[0].parameters();
    const Event::Kind expected_kind =
        c.distributed_optimizer ? Event::Kind::reduce_scatter : Event::Kind::all_reduce;
    std::vector<std::pair<int, int>> my_order;
    for (int step = 0; step < 2; ++step) {
      SCOPED_TRACE("rank " + std::to_string(me) + ", step " + std::to_string(step + 1));
      r.model->zero_grad();
      r.log->clear();
      r.micro_batch(false, static_cast<uint64_t>(2 * step));
      for (const Event& e : *r.log)
        if (is_reduction(e)) {
          EXPECT_EQ(r.bucket_of(e).first, -1)
              << "a bucket was reduced in the backward of a micro-batch that is not the last";
        }
      r.log->clear();
      r.micro_batch(true, static_cast<uint64_t>(2 * step + 1));
      const size_t in_backward = r.log->size();
      r.dp->finish_grad_sync();

      std::map<std::pair<int, int>, int> count;
      size_t first_reduction = r.log->size(), layer0_ready = r.log->size();
      int started_in_backward = 0;
      for (size_t i = 0; i < r.log->size(); ++i) {
        const Event& e = (*r.log)[i];
        if (e.kind == Event::Kind::grads_ready && e.params == layer0) layer0_ready = i;
        if (!is_reduction(e)) continue;
        const auto where = r.bucket_of(e);
        if (where.first < 0) continue;
        EXPECT_EQ(e.kind, expected_kind);
        ++count[where];
        my_order.push_back(where);
        first_reduction = std::min(first_reduction, i);
        if (i < in_backward) ++started_in_backward;
      }
      EXPECT_EQ(static_cast<int>(count.size()), reducible) << "buckets reduced this step";
      for (const auto& [where, n] : count)
        EXPECT_EQ(n, 1) << "buffer " << where.first << " bucket " << where.second << " reduced "
                        << n << " times in one step";
      if (c.overlap) {
        EXPECT_EQ(started_in_backward, reducible)
            << "with --overlap-grad-reduce every bucket completes in the backward";
        EXPECT_LT(layer0_ready, r.log->size()) << "no on_grads_ready for decoder layer 0";
        EXPECT_LT(first_reduction, layer0_ready)
            << "no reduction started before the backward of the last layer ended";
      } else {
        EXPECT_EQ(started_in_backward, 0) << "reductions started without --overlap-grad-reduce";
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    order[static_cast<size_t>(me)] = std::move(my_order);
  });
  for (int r = 1; r < c.world; ++r)
    EXPECT_EQ(order[static_cast<size_t>(r)], order[0])
        << "rank " << r << " reduced its buckets in another order than rank 0";
}

INSTANTIATE_TEST_SUITE_P(DataParallel, GradReduceTiming,
                         ::testing::Values(OverlapCase{2, 1, true, false},
                                           OverlapCase{2, 1, false, false},
                                           OverlapCase{4, 2, true, false},
                                           OverlapCase{4, 2, true, true},
                                           OverlapCase{4, 2, false, true}),
                         [](const auto& info) { return overlap_case_name(info.param); });

// Gradient element j of a parameter on `rank`: values whose bf16 roundings differ from them.
double grad_value_at(int rank, size_t j, int64_t param_index) {
  return (1.0 + 1.0 / 3.0 + 0.01 * static_cast<double>(j % 97)) * static_cast<double>(rank + 1) *
         (param_index % 2 == 0 ? 1.0 : -0.37);
}

void fill_grads(nn::GPTModel& model, int rank) {
  int64_t index = 0;
  for (nn::Parameter* p : model.parameters()) {
    std::vector<float> v(static_cast<size_t>(p->value.numel()));
    for (size_t j = 0; j < v.size(); ++j) v[j] = static_cast<float>(grad_value_at(rank, j, index));
    p->grad_value().copy_(Tensor::from_vector(v, p->grad.shape()));
    ++index;
  }
}

class GradReduceInBf16 : public ::testing::TestWithParam<bool> {};

// The reduced gradient is the sum over the ranks, in rank order in fp32, of each rank's
// gradient rounded to bf16, rounded to bf16 once more (the Local backend's bf16 reduction); not
// the fp32 sum.
TEST_P(GradReduceInBf16, SumIsRoundedToBf16) {
  const bool distributed_optimizer = GetParam();
  constexpr int kWorld = 2;
  dist::run_local(kWorld, [&](std::shared_ptr<dist::ProcessGroup> world) {
    DdpConfig ddp;
    ddp.grad_reduce_in_bf16 = true;
    ddp.use_distributed_optimizer = distributed_optimizer;
    Rank r(world, 1, DType::f32, ddp);
    fill_grads(*r.model, world->rank());
    r.dp->finish_grad_sync();
    int64_t index = 0, checked = 0, differs_from_fp32 = 0;
    for (nn::Parameter* p : r.model->parameters()) {
      // The elements this rank holds reduced: all of them, or its owned pieces.
      std::vector<std::pair<int64_t, int64_t>> ranges;
      if (!distributed_optimizer) {
        ranges.push_back({0, p->value.numel()});
      } else {
        for (ParamAndGradBuffer* buf : r.dp->buffers())
          for (const ParamShard& s : buf->shards())
            if (buf->entries()[static_cast<size_t>(s.entry)].param == p)
              ranges.push_back({s.param_begin, s.param_end});
      }
      const std::vector<float> got = p->grad.reshape({p->grad.numel()}).to_vector<float>();
      for (const auto& [lo, hi] : ranges)
        for (int64_t j = lo; j < hi; ++j) {
          const size_t u = static_cast<size_t>(j);
          float acc = 0.0f;
          double exact = 0.0;
          for (int q = 0; q < kWorld; ++q) {
            const float x = static_cast<float>(grad_value_at(q, u, index));
            acc += static_cast<float>(bf16(x));
            exact += x;
          }
          const float want = static_cast<float>(bf16(acc));
          if (got[u] != want) {
            ADD_FAILURE() << "rank " << world->rank() << ": " << p->name << "[" << j << "] is "
                          << got[u] << ", the bf16 sum is " << want;
            return;
          }
          ++checked;
          if (static_cast<float>(exact) != want) ++differs_from_fp32;
        }
      ++index;
    }
    EXPECT_GT(checked, 0);
    EXPECT_GT(differs_from_fp32, checked / 2) << "the test's values do not tell bf16 from fp32";
  });
}

INSTANTIATE_TEST_SUITE_P(DataParallel, GradReduceInBf16, ::testing::Bool(), [](const auto& info) {
  return std::string(info.param ? "reduce_scatter" : "all_reduce");
});

// World 4, EP 2: EDP 2. The expert buffer reduces over the rank's EDP group (ranks r and r + 2),
// the dense buffer over all four: gradient rank + 1 on every rank sums to 1 + 2 + 3 + 4 = 10
// for dense parameters and to (r + 1) + (r + 3) for experts.
TEST(DataParallel, ExpertGradientsReduceOverExpertDataParallelOnly) {
  dist::run_local(4, [&](std::shared_ptr<dist::ProcessGroup> world) {
    Rank r(world, 2, DType::f64, DdpConfig{});
    const int me = world->rank();
    const std::vector<ParamAndGradBuffer*> bufs = r.dp->buffers();
    ASSERT_EQ(bufs.size(), 2u) << "rank " << me << ": dense and expert buffers";
    EXPECT_EQ(bufs[0]->group_size(), 4) << "rank " << me;
    EXPECT_EQ(bufs[1]->group_size(), 2) << "rank " << me;
    EXPECT_EQ(bufs[1]->group()->world_ranks(), (std::vector<int>{me % 2, me % 2 + 2}))
        << "rank " << me;
    EXPECT_EQ(bufs[1]->group()->world_ranks(), r.state->edp()->world_ranks());
    for (const BufferEntry& e : bufs[0]->entries())
      EXPECT_EQ(e.param->layout.grad_group, nn::GradGroup::dense) << e.param->name;
    int experts = 0;
    for (const BufferEntry& e : bufs[1]->entries()) {
      EXPECT_EQ(e.param->layout.grad_group, nn::GradGroup::expert) << e.param->name;
      ++experts;
    }
    EXPECT_GT(experts, 0);

    for (nn::Parameter* p : r.model->parameters()) p->grad_value().fill_(me + 1);
    r.dp->finish_grad_sync();
    const double expert_sum = (me % 2 + 1) + (me % 2 + 3);
    for (nn::Parameter* p : r.model->parameters()) {
      const bool expert = p->layout.grad_group == nn::GradGroup::expert;
      const Tensor want = Tensor::full(p->grad.shape(), expert ? expert_sum : 10.0, DType::f64);
      EXPECT_TRUE(moe::test::equal(p->grad, want, "rank " + std::to_string(me) + " " + p->name));
    }
  });
}

// A bf16 model keeps its routers' weights in fp32 (--moe-router-dtype; nn/router.cpp), so its
// dense parameters have two value dtypes. Data parallelism must take them (Megatron-Core keeps
// one buffer per parameter / gradient dtype pair) and reduce the gradients of both.
TEST(DataParallel, Bf16ModelWithFp32RouterWeights) {
  dist::run_local(2, [&](std::shared_ptr<dist::ProcessGroup> world) {
    const int me = world->rank();
    std::unique_ptr<Rank> r;
    try {
      r = std::make_unique<Rank>(world, 1, DType::bf16, DdpConfig{});
    } catch (const Error& e) {
      FAIL() << "rank " << me << ": DataParallel on a bf16 model: " << e.what();
    }
    bool fp32_router = false;
    for (nn::Parameter* p : r->model->parameters()) {
      fp32_router = fp32_router || p->value.dtype() == DType::f32;
      p->grad_value().fill_(me + 1);
    }
    EXPECT_TRUE(fp32_router) << "the model has no fp32 parameter: the test checks nothing";
    r->dp->finish_grad_sync();
    for (nn::Parameter* p : r->model->parameters())
      EXPECT_TRUE(moe::test::equal(p->grad, Tensor::full(p->grad.shape(), 3.0, DType::f32),
                                   "rank " + std::to_string(me) + " " + p->name));
  });
}

}  // namespace
}  // namespace moe::train
