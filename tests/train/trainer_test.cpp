// The single-device training loop: learning on a repetitive stream, gradient accumulation,
// NaN handling (skip and stop), config errors, determinism, evaluation, resuming from the
// checkpoint counters, and the in-memory token source.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/train/batch_source.h"
#include "moe/train/trainer.h"
#include "nn/gpt_test_util.h"

namespace moe::train {
namespace {

constexpr int64_t kSeq = 8;
constexpr int64_t kPoison = 10;  // the vocabulary's last id: never in the streams below

// tiny_gpt_config (f32 router unless dtype is f64; 2 layers, hidden 8, vocabulary 11): dense, or dense then MoE (4
// experts top-2). Untied embeddings, so an input token's embedding row is read only where the
// token occurs.
nn::ModelConfig tiny_config(bool moe, bool aux_loss = true, DType dtype = DType::f32) {
  nn::ModelConfig c = test::tiny_gpt_config(dtype);
  c.untie_embeddings_and_output_weights = true;
  if (!moe) c.moe_layer_pattern = {0, 0};
  if (!aux_loss) c.moe.moe_aux_loss_coeff = 0.0;
  return c;
}

// 0, 1, ..., 9, 0, 1, ...: the next token is a function of the current one.
std::vector<int32_t> repetitive_tokens(int64_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = static_cast<int32_t>(i % 10);
  return t;
}

// Random tokens in [0, 10).
std::vector<int32_t> random_stream(int64_t n, uint64_t seed) {
  const Tensor t = test::random_tokens(n, 1, 10, seed);
  std::vector<int32_t> out;
  for (int64_t v : t.to_vector<int64_t>()) out.push_back(static_cast<int32_t>(v));
  return out;
}

TrainConfig small_train_config(int64_t micro, int64_t global, int64_t iters) {
  TrainConfig c;
  c.micro_batch_size = micro;
  c.global_batch_size = global;
  c.seq_length = kSeq;
  c.train_iters = iters;
  c.schedule.lr = 1e-2;
  c.schedule.min_lr = 1e-3;
  c.schedule.decay_style = "linear";
  c.schedule.start_weight_decay = c.schedule.end_weight_decay = 0.01;
  return c;
}

std::map<std::string, Tensor> snapshot(nn::GPTModel& model) {
  std::map<std::string, Tensor> s;
  for (nn::Parameter* p : model.parameters()) s[p->name] = p->value.clone();
  return s;
}

// ---- TokenArraySource ----------------------------------------------------------------------

TEST(TokenArraySource, CutsOverlappingSamplesAsGPTDatasetDoes) {
  std::vector<int32_t> tokens(25);
  for (int i = 0; i < 25; ++i) tokens[static_cast<size_t>(i)] = i;
  TokenArraySource source(tokens, 4, 7, /*shuffle=*/false);
  EXPECT_EQ(source.num_samples(), 6);  // (25 - 1) / 4
  EXPECT_EQ(source.sample_length(), 5);
  const Tensor batch = source.next(2);
  ASSERT_EQ(batch.shape(), Shape({2, 5}));
  EXPECT_EQ(batch.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4, 4, 5, 6, 7, 8}));
  EXPECT_EQ(source.position(), 2);
  // Epochs repeat: samples 4, 5, then 0 of the second epoch.
  source.next(2);
  EXPECT_EQ(source.next(3).to_vector<int64_t>()[10], 0);
  EXPECT_THROW(TokenArraySource(std::vector<int32_t>(4, 1), 4, 7), Error);
  EXPECT_THROW(TokenArraySource(tokens, 0, 7), Error);
}

TEST(TokenArraySource, ShufflesEachEpochAndResumesExactly) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  TokenArraySource a(random_stream(20 * kSeq + 1, seed), kSeq, seed);
  ASSERT_EQ(a.num_samples(), 20);
  std::vector<int64_t> epoch0, epoch1;
  for (int64_t p = 0; p < 20; ++p) epoch0.push_back(a.sample_at(p));
  for (int64_t p = 20; p < 40; ++p) epoch1.push_back(a.sample_at(p));
  std::vector<int64_t> sorted0 = epoch0, sorted1 = epoch1;
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  for (int64_t i = 0; i < 20; ++i) {  // each epoch is a permutation of the samples
    EXPECT_EQ(sorted0[static_cast<size_t>(i)], i);
    EXPECT_EQ(sorted1[static_cast<size_t>(i)], i);
  }
  EXPECT_NE(epoch0, epoch1);  // 1 in 20! to fail by chance
  std::vector<int64_t> identity(20);
  for (int64_t i = 0; i < 20; ++i) identity[static_cast<size_t>(i)] = i;
  EXPECT_NE(epoch0, identity);

  // The stream from position 13 after set_position equals the stream read straight through.
  TokenArraySource b(random_stream(20 * kSeq + 1, seed), kSeq, seed);
  a.set_position(0);
  a.next(13);
  const Tensor straight = a.next(11);  // crosses into the second epoch
  b.set_position(13);
  EXPECT_TRUE(test::equal(b.next(11), straight));
  EXPECT_EQ(b.position(), 24);

  TokenArraySource other(random_stream(20 * kSeq + 1, seed), kSeq, seed + 1);
  std::vector<int64_t> other0;
  for (int64_t p = 0; p < 20; ++p) other0.push_back(other.sample_at(p));
  EXPECT_NE(other0, epoch0);
}

// ---- training ------------------------------------------------------------------------------

TEST(Trainer, LossFallsOnARepetitiveStream) {
  nn::GPTModel model(tiny_config(/*moe=*/true), DType::f32, Device::cpu(), 11);
  TokenArraySource data(repetitive_tokens(64 * kSeq + 1), kSeq, 5);
  TrainConfig config = small_train_config(2, 4, 30);
  config.schedule.warmup_iters = 3;
  Trainer trainer(model, config, data);
  std::vector<double> losses;
  for (int i = 0; i < 30; ++i) {
    const StepMetrics m = trainer.train_step();
    ASSERT_FALSE(m.skipped) << m.message;
    EXPECT_EQ(m.iteration, i + 1);
    EXPECT_EQ(m.consumed_samples, 4 * (i + 1));
    EXPECT_EQ(m.tokens, 4 * kSeq);
    EXPECT_GT(m.aux_loss, 0.0);  // aux + z losses of the MoE layer
    EXPECT_EQ(m.mtp_loss, 0.0);
    EXPECT_TRUE(std::isfinite(m.grad_norm));
    EXPECT_DOUBLE_EQ(m.lr, trainer.schedule().lr(4 * i));  // samples of the updates taken
    losses.push_back(m.loss);
  }
  SCOPED_TRACE(::testing::PrintToString(losses));
  EXPECT_GT(losses[0], 2.0);  // ln 11 = 2.40 for a uniform guess; the start knows nothing
  const double last = (losses[27] + losses[28] + losses[29]) / 3;
  EXPECT_LT(last, 0.4 * losses[0]);
  EXPECT_EQ(trainer.optimizer_steps(), 30);
  EXPECT_EQ(trainer.schedule_samples(), 30 * 4);
  EXPECT_EQ(trainer.skipped_iterations(), 0);
}

// Global batch 4 as 2 micro-batches of 2 against 1 micro-batch of 4, same data: the gradients
// and the parameters after the step agree up to rounding. Exact only where the loss is a mean
// of per-token terms over equal-sized micro-batches: the dense model, and the MoE model with
// the z-loss but without the aux loss (token-choice top-k routes each token alone and no
// capacity drops tokens; the aux loss multiplies batch-wide averages, so its mean over
// micro-batches is not the whole batch's value).
void expect_accumulation_equivalence(const nn::ModelConfig& model_config, DType dtype) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const double tol = test::tolerance(dtype);
  nn::GPTModel one(model_config, dtype, Device::cpu(), seed);
  nn::GPTModel two(model_config, dtype, Device::cpu(), seed);
  const auto before = snapshot(one);
  TokenArraySource data_one(random_stream(32 * kSeq + 1, seed), kSeq, seed);
  TokenArraySource data_two(random_stream(32 * kSeq + 1, seed), kSeq, seed);
  TrainConfig c_one = small_train_config(4, 4, 10), c_two = small_train_config(2, 4, 10);
  c_one.optimizer.clip_grad = c_two.optimizer.clip_grad = 0.0;
  // AdamW's first step is lr * g / (|g| + eps): with the usual eps it is sign-like, and a
  // gradient element that cancels to ~0 flips sign with rounding. eps = 1 makes the step
  // ~lr * g, so rounding in g stays rounding in the step.
  c_one.optimizer.eps = c_two.optimizer.eps = 1.0;
  Trainer t_one(one, c_one, data_one), t_two(two, c_two, data_two);
  const StepMetrics m_one = t_one.train_step(), m_two = t_two.train_step();
  EXPECT_NEAR(m_two.loss, m_one.loss, tol * m_one.loss);
  EXPECT_NEAR(m_two.aux_loss, m_one.aux_loss, tol * std::abs(m_one.aux_loss) + 1e-300);
  EXPECT_NEAR(m_two.grad_norm, m_one.grad_norm, tol * m_one.grad_norm);

  const auto p_one = one.parameters(), p_two = two.parameters();
  ASSERT_EQ(p_one.size(), p_two.size());
  for (size_t i = 0; i < p_one.size(); ++i) {
    SCOPED_TRACE(p_one[i]->name);
    // The gradients are still there after the step (zero_grad comes with the next one).
    EXPECT_TRUE(test::close(p_two[i]->grad_value(), p_one[i]->grad_value(), tol, "grad"));
    EXPECT_TRUE(test::close(p_two[i]->value, p_one[i]->value, tol, "weight"));
    if (dtype == DType::f64) {
      // The change itself (in f32 it is too close to the weights' rounding to compare).
      Tensor d_one = p_one[i]->value.clone(), d_two = p_two[i]->value.clone();
      ops::add_(d_one, before.at(p_one[i]->name), -1.0);
      ops::add_(d_two, before.at(p_one[i]->name), -1.0);
      EXPECT_TRUE(test::close(d_two, d_one, 100 * tol, "update"));
    }
  }
}

TEST(Trainer, GradientAccumulationMatchesOneMicroBatchDense) {
  expect_accumulation_equivalence(tiny_config(/*moe=*/false), DType::f32);
  expect_accumulation_equivalence(tiny_config(/*moe=*/false, true, DType::f64), DType::f64);
}

TEST(Trainer, GradientAccumulationMatchesOneMicroBatchMoEWithoutAuxLoss) {
  expect_accumulation_equivalence(tiny_config(/*moe=*/true, /*aux_loss=*/false), DType::f32);
  expect_accumulation_equivalence(tiny_config(/*moe=*/true, /*aux_loss=*/false, DType::f64),
                                  DType::f64);
}

TEST(Trainer, SameSeedGivesBitwiseIdenticalLosses) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  auto run = [&](uint64_t data_seed) {
    nn::GPTModel model(tiny_config(/*moe=*/true), DType::f32, Device::cpu(), seed);
    TokenArraySource data(random_stream(40 * kSeq + 1, seed), kSeq, data_seed);
    Trainer trainer(model, small_train_config(2, 4, 5), data);
    std::vector<double> values;
    for (int i = 0; i < 5; ++i) {
      const StepMetrics m = trainer.train_step();
      values.insert(values.end(), {m.loss, m.aux_loss, m.grad_norm});
    }
    return values;
  };
  const std::vector<double> a = run(seed), b = run(seed);
  EXPECT_EQ(a, b);  // bitwise: == on doubles
  EXPECT_NE(run(seed + 1), a);  // another data order: other losses
}

// A data source whose `poisoned_call`-th micro-batch (from 0) carries the token kPoison, whose
// input-embedding row the tests set to NaN: a corrupt sample whose NaN reaches the loss and
// every gradient through the real forward and backward.
class PoisonedSource : public BatchSource {
 public:
  PoisonedSource(BatchSource& inner, int64_t poisoned_call)
      : inner_(inner), poisoned_call_(poisoned_call) {}
  int64_t sample_length() const override { return inner_.sample_length(); }
  Tensor next(int64_t batch_size) override {
    Tensor t = inner_.next(batch_size);
    if (calls_++ == poisoned_call_) t.data<int64_t>()[3] = kPoison;
    return t;
  }
  int64_t position() const override { return inner_.position(); }
  void set_position(int64_t p) override { inner_.set_position(p); }

 private:
  BatchSource& inner_;
  int64_t poisoned_call_;
  int64_t calls_ = 0;
};

void poison_embedding(nn::GPTModel& model) {
  Tensor& e = model.embed_tokens.value;  // [V, H] f32
  const int64_t H = e.size(1);
  for (int64_t h = 0; h < H; ++h)
    e.data<float>()[kPoison * H + h] = std::numeric_limits<float>::quiet_NaN();
}

// Every parameter bitwise equal, the embedding's NaN row left out.
void expect_unchanged(nn::GPTModel& model, const std::map<std::string, Tensor>& before) {
  for (nn::Parameter* p : model.parameters()) {
    SCOPED_TRACE(p->name);
    if (p == &model.embed_tokens) {
      EXPECT_TRUE(test::equal(p->value.rows(0, kPoison), before.at(p->name).rows(0, kPoison)));
    } else {
      EXPECT_TRUE(test::equal(p->value, before.at(p->name)));
    }
  }
}

TEST(Trainer, NanSkipDropsTheUpdateAndKeepsTheSchedule) {
  nn::GPTModel model(tiny_config(/*moe=*/false), DType::f32, Device::cpu(), 21);
  poison_embedding(model);
  TokenArraySource inner(random_stream(40 * kSeq + 1, 3), kSeq, 3);
  PoisonedSource data(inner, /*poisoned_call=*/2);  // iteration 3 (one micro-batch a step)
  TrainConfig config = small_train_config(2, 2, 10);
  config.nan_action = NanAction::skip;
  Trainer trainer(model, config, data);
  for (int i = 0; i < 2; ++i) ASSERT_FALSE(trainer.train_step().skipped);

  const auto before = snapshot(model);
  const StepMetrics bad = trainer.train_step();
  EXPECT_TRUE(bad.skipped);
  EXPECT_TRUE(std::isnan(bad.loss));
  EXPECT_NE(bad.message.find("iteration 3"), std::string::npos) << bad.message;
  EXPECT_NE(bad.message.find("lm loss"), std::string::npos) << bad.message;
  EXPECT_EQ(bad.consumed_samples, 6);
  EXPECT_DOUBLE_EQ(bad.lr, trainer.schedule().lr(2 * 2));  // 2 updates of 2 samples
  expect_unchanged(model, before);
  EXPECT_EQ(trainer.skipped_iterations(), 1);
  EXPECT_EQ(trainer.optimizer_steps(), 2);

  // The next iteration runs at the schedule's step 2 again and is taken (the NaN gradients of
  // the skipped step are gone after zero_grad).
  const StepMetrics next = trainer.train_step();
  EXPECT_FALSE(next.skipped) << next.message;
  EXPECT_TRUE(next.message.empty());
  EXPECT_TRUE(std::isfinite(next.loss));
  EXPECT_TRUE(std::isfinite(next.grad_norm));
  EXPECT_DOUBLE_EQ(next.lr, trainer.schedule().lr(2 * 2));
  EXPECT_NE(trainer.schedule().lr(2 * 2), trainer.schedule().lr(3 * 2));  // it can fail
  const TrainerState s = trainer.state();
  EXPECT_EQ(s.iteration, 4);
  EXPECT_EQ(s.optimizer_steps, 3);
  EXPECT_EQ(s.schedule_samples, 3 * 2);  // the skipped update's samples do not count
  EXPECT_EQ(s.skipped_iterations, 1);
  EXPECT_EQ(s.consumed_samples, 8);
  EXPECT_EQ(s.train_position, 8);
}

TEST(Trainer, NanStopThrowsNamingTheIterationAndTheValue) {
  nn::GPTModel model(tiny_config(/*moe=*/false), DType::f32, Device::cpu(), 21);
  poison_embedding(model);
  TokenArraySource inner(random_stream(40 * kSeq + 1, 3), kSeq, 3);
  PoisonedSource data(inner, /*poisoned_call=*/3);  // iteration 2, second micro-batch
  TrainConfig config = small_train_config(2, 4, 10);
  config.nan_action = NanAction::stop;
  Trainer trainer(model, config, data);
  ASSERT_FALSE(trainer.train_step().skipped);
  const auto before = snapshot(model);
  try {
    trainer.train_step();
    ADD_FAILURE() << "no error for a NaN loss with --nan-action stop";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("iteration 2"), std::string::npos) << what;
    EXPECT_NE(what.find("lm loss"), std::string::npos) << what;
    EXPECT_NE(what.find("nan"), std::string::npos) << what;
  }
  expect_unchanged(model, before);
  EXPECT_EQ(trainer.iteration(), 1);
  EXPECT_EQ(trainer.optimizer_steps(), 1);
}

// The same, poisoning every micro-batch whose call number (from 0) is in `calls`.
class PoisonedCallsSource : public BatchSource {
 public:
  PoisonedCallsSource(BatchSource& inner, std::set<int64_t> calls)
      : inner_(inner), calls_(std::move(calls)) {}
  int64_t sample_length() const override { return inner_.sample_length(); }
  Tensor next(int64_t batch_size) override {
    Tensor t = inner_.next(batch_size);
    if (calls_.count(count_++)) t.data<int64_t>()[3] = kPoison;
    return t;
  }
  int64_t position() const override { return inner_.position(); }
  void set_position(int64_t p) override { inner_.set_position(p); }

 private:
  BatchSource& inner_;
  std::set<int64_t> calls_;
  int64_t count_ = 0;
};

// --nan-action skip does not skip forever: the limit-th skipped update in a row stops the run,
// naming the iteration and the value; isolated skips (a good step between) never add up.
TEST(Trainer, NanSkipStopsAfterTooManySkippedUpdatesInARow) {
  EXPECT_EQ(TrainConfig{}.max_consecutive_skipped, kMaxConsecutiveSkippedIterations);
  nn::GPTModel model(tiny_config(/*moe=*/false), DType::f32, Device::cpu(), 21);
  poison_embedding(model);
  TokenArraySource inner(random_stream(40 * kSeq + 1, 3), kSeq, 3);
  // Iterations 2, 4, 6 (isolated), then 8 on: one micro-batch a step.
  std::set<int64_t> poisoned = {1, 3, 5};
  for (int64_t c = 7; c < 40; ++c) poisoned.insert(c);
  PoisonedCallsSource data(inner, poisoned);
  TrainConfig config = small_train_config(2, 2, 30);
  config.nan_action = NanAction::skip;
  config.max_consecutive_skipped = 3;
  Trainer trainer(model, config, data);
  for (int i = 1; i <= 9; ++i) {
    const StepMetrics m = trainer.train_step();
    EXPECT_EQ(m.skipped, i % 2 == 0 || i >= 8) << "iteration " << i;
  }
  EXPECT_EQ(trainer.skipped_iterations(), 5);
  try {
    trainer.train_step();  // iteration 10: the third skip in a row
    ADD_FAILURE() << "no error at the third skipped update in a row";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("iteration 10"), std::string::npos) << what;
    EXPECT_NE(what.find("the lm loss is "), std::string::npos) << what;
    EXPECT_NE(what.find("nan"), std::string::npos) << what;
    EXPECT_NE(what.find("3 updates in a row were skipped"), std::string::npos) << what;
    EXPECT_NE(what.find("--lr"), std::string::npos) << what;
  }
  EXPECT_EQ(trainer.iteration(), 9);  // the failing iteration is not counted

  config.max_consecutive_skipped = 0;
  EXPECT_THROW(config.validate(), Error);
}

TEST(Trainer, BadConfigurationsNameTheirFlags) {
  nn::GPTModel model(tiny_config(/*moe=*/false), DType::f32, Device::cpu(), 1);
  TokenArraySource data(repetitive_tokens(16 * kSeq + 1), kSeq, 1);
  auto message_of = [&](const TrainConfig& c, BatchSource& source) {
    try {
      Trainer t(model, c, source);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  TrainConfig c = small_train_config(4, 6, 10);
  std::string m = message_of(c, data);
  EXPECT_NE(m.find("--global-batch-size 6"), std::string::npos) << m;
  EXPECT_NE(m.find("--micro-batch-size 4"), std::string::npos) << m;
  c = small_train_config(0, 4, 10);
  m = message_of(c, data);
  EXPECT_NE(m.find("--micro-batch-size must be positive"), std::string::npos) << m;
  c = small_train_config(2, 4, 10);
  c.log_interval = 0;
  m = message_of(c, data);
  EXPECT_NE(m.find("--log-interval"), std::string::npos) << m;
  c = small_train_config(2, 4, 10);
  c.seq_length = kSeq + 1;  // the source cuts samples of kSeq + 1 tokens
  m = message_of(c, data);
  EXPECT_NE(m.find("--seq-length 9"), std::string::npos) << m;
  c = small_train_config(2, 4, 10);  // linear decay that ends before the warm-up does
  c.schedule.decay_iters = 3;
  c.schedule.warmup_iters = 5;
  m = message_of(c, data);
  EXPECT_NE(m.find("--lr-decay-iters 3"), std::string::npos) << m;

  // A token outside the vocabulary, and evaluation without validation data.
  std::vector<int32_t> tokens = repetitive_tokens(16 * kSeq + 1);
  tokens[5] = 11;
  TokenArraySource bad(tokens, kSeq, 1, /*shuffle=*/false);
  Trainer t(model, small_train_config(2, 2, 10), bad);
  EXPECT_THROW(
      {
        try {
          t.train_step();
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("outside the vocabulary [0, 11)"),
                    std::string::npos)
              << e.what();
          throw;
        }
      },
      Error);
  EXPECT_THROW(t.evaluate(), Error);
}

// evaluate(): the mean lm loss of the validation micro-batches, by the model's forward here,
// and no trace in training: expert biases and weights after step, evaluate, step equal those
// after step, step.
TEST(Trainer, EvaluateIsTheMeanValidationLossAndLeavesTrainingAlone) {
  nn::ModelConfig mc = tiny_config(/*moe=*/true);
  mc.moe.moe_router_enable_expert_bias = true;
  mc.moe.moe_router_bias_update_rate = 1e-2;
  nn::GPTModel a(mc, DType::f32, Device::cpu(), 8), b(mc, DType::f32, Device::cpu(), 8);
  const std::vector<int32_t> train_tokens = random_stream(40 * kSeq + 1, 8);
  TokenArraySource train_a(train_tokens, kSeq, 8), train_b(train_tokens, kSeq, 8);
  const std::vector<int32_t> valid_tokens = random_stream(12 * kSeq + 1, 9);
  TokenArraySource valid(valid_tokens, kSeq, 9, /*shuffle=*/false);
  TrainConfig config = small_train_config(2, 4, 10);
  config.eval_iters = 2;  // 2 iterations x 2 micro-batches of 2: samples 0..7
  Trainer ta(a, config, train_a, &valid), tb(b, config, train_b);
  ta.train_step();
  tb.train_step();

  // The expected value from the model directly, on samples 0..7 in order.
  double expected = 0;
  for (int64_t m = 0; m < 4; ++m) {
    std::vector<int64_t> ids(kSeq * 2), labels(kSeq * 2);
    for (int64_t bb = 0; bb < 2; ++bb)
      for (int64_t s = 0; s < kSeq; ++s) {
        const size_t start = static_cast<size_t>((m * 2 + bb) * kSeq + s);
        ids[static_cast<size_t>(s * 2 + bb)] = valid_tokens[start];
        labels[static_cast<size_t>(s * 2 + bb)] = valid_tokens[start + 1];
      }
    nn::GPTContext ctx;
    expected += b.forward(Tensor::from_vector(ids, {kSeq, 2}),
                          Tensor::from_vector(labels, {kSeq, 2}), ctx)
                    .lm_loss.item();
  }
  expected /= 4;
  const double loss = ta.evaluate();
  EXPECT_NEAR(loss, expected, 1e-6 * expected);
  EXPECT_EQ(valid.position(), 8);
  EXPECT_EQ(ta.state().valid_position, 8);
}

TEST(Trainer, EvaluateDoesNotTouchTheExpertBiasUpdate) {
  nn::ModelConfig mc = tiny_config(/*moe=*/true);
  mc.moe.moe_router_enable_expert_bias = true;
  mc.moe.moe_router_bias_update_rate = 1e-2;
  nn::GPTModel a(mc, DType::f32, Device::cpu(), 8), b(mc, DType::f32, Device::cpu(), 8);
  const std::vector<int32_t> train_tokens = random_stream(40 * kSeq + 1, 8);
  TokenArraySource train_a(train_tokens, kSeq, 8), train_b(train_tokens, kSeq, 8);
  // One repeated token: every validation token routes to the same two experts, so counting
  // them would flip the update's sign for those experts.
  TokenArraySource valid(std::vector<int32_t>(12 * kSeq + 1, 7), kSeq, 9);
  TrainConfig config = small_train_config(2, 4, 10);
  config.eval_iters = 4;
  Trainer ta(a, config, train_a, &valid), tb(b, config, train_b);
  ta.train_step();
  tb.train_step();
  ta.evaluate();
  // Nothing of the evaluation is pending: an expert-bias update right now has no counts to act
  // on (b_e += u sign(mean(n) - n_e) with n = 0) and changes nothing. Had the validation
  // tokens been counted, all of them on the same two experts would move every bias.
  std::vector<Tensor> biases;
  for (const nn::NamedBuffer& buffer : a.buffers()) biases.push_back(buffer.value->clone());
  a.finish_step();
  for (size_t i = 0; i < biases.size(); ++i)
    EXPECT_TRUE(test::equal(*a.buffers()[i].value, biases[i]));
  ta.train_step();
  tb.train_step();
  ASSERT_FALSE(a.buffers().empty());
  for (size_t i = 0; i < a.buffers().size(); ++i) {
    SCOPED_TRACE(a.buffers()[i].name);
    EXPECT_TRUE(test::equal(*a.buffers()[i].value, *b.buffers()[i].value));
    // The biases did move (the check above is not between two zero vectors).
    EXPECT_GT(test::dot(*a.buffers()[i].value, *a.buffers()[i].value), 0.0);
  }
  const auto pa = a.parameters(), pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(test::equal(pa[i]->value, pb[i]->value));
}

// The checkpoint counters: a trainer rebuilt from the state, the weights and the optimizer's
// tensors after 2 steps continues exactly as the uninterrupted run.
TEST(Trainer, RestoredStateResumesExactly) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig mc = tiny_config(/*moe=*/true);
  const std::vector<int32_t> tokens = random_stream(12 * kSeq + 1, seed);  // 3 steps an epoch
  TrainConfig config = small_train_config(2, 4, 10);

  nn::GPTModel straight(mc, DType::f32, Device::cpu(), seed);
  TokenArraySource data_straight(tokens, kSeq, seed);
  Trainer t_straight(straight, config, data_straight);
  std::vector<double> expected;
  for (int i = 0; i < 5; ++i) expected.push_back(t_straight.train_step().loss);

  nn::GPTModel first(mc, DType::f32, Device::cpu(), seed);
  TokenArraySource data_first(tokens, kSeq, seed);
  Trainer t_first(first, config, data_first);
  t_first.train_step();
  t_first.train_step();
  const TrainerState saved = t_first.state();
  EXPECT_EQ(saved.iteration, 2);
  EXPECT_EQ(saved.consumed_samples, 8);
  EXPECT_EQ(saved.optimizer_steps, 2);
  EXPECT_EQ(saved.train_position, 8);

  nn::GPTModel resumed(mc, DType::f32, Device::cpu(), seed + 1);  // other initial weights
  TokenArraySource data_resumed(tokens, kSeq, seed);
  Trainer t_resumed(resumed, config, data_resumed);
  const auto from = first.parameters(), to = resumed.parameters();
  for (size_t i = 0; i < from.size(); ++i) to[i]->value.copy_(from[i]->value);
  const auto s_from = t_first.optimizer().state(), s_to = t_resumed.optimizer().state();
  ASSERT_EQ(s_from.size(), s_to.size());
  for (size_t i = 0; i < s_from.size(); ++i) s_to[i].value->copy_(*s_from[i].value);
  t_resumed.restore(saved);
  EXPECT_EQ(t_resumed.iteration(), 2);
  for (int i = 2; i < 5; ++i) {
    const StepMetrics m = t_resumed.train_step();
    EXPECT_EQ(m.iteration, i + 1);
    EXPECT_EQ(m.loss, expected[static_cast<size_t>(i)]) << "iteration " << i + 1;
  }
}

}  // namespace
}  // namespace moe::train
