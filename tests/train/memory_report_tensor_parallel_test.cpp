// The memory report under tensor and sequence parallelism: the activation estimate
// (memory_report.h) against Korthikanti et al.'s per-layer formula for the paper's layer, the
// elements it counts for GQA, MLA and MoE layers, and what TP ranks report (ranks as threads of
// the Local backend): the parameters, gradients and optimizer state of their blocks of the split
// tensors (about half of them under TP 2) and of the replicated ones, and an activation estimate
// that falls under sequence parallelism as the formula says.
#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "moe/dist/local_backend.h"
#include "moe/dist/parallel_state.h"
#include "moe/train/batch_source.h"
#include "moe/train/memory_report.h"
#include "moe/train/train_args.h"

namespace moe::train {
namespace {

// The paper's layer: multi-head attention (Hq D = h), an MLP keeping 8 h per token (the paper's
// GeLU input and output at 4 h; SwiGLU keeps 3 F), no MoE.
nn::ModelConfig papers_model(int64_t layers) {
  nn::ModelConfig c;
  c.name = "paper";
  c.family = "qwen3_moe";
  c.num_layers = layers;
  c.hidden_size = 96;
  c.ffn_hidden_size = 256;  // 3 F = 8 h
  c.num_attention_heads = 8;
  c.num_query_groups = 8;
  c.vocab_size = 512;
  c.moe_layer_pattern.assign(static_cast<size_t>(layers), 0);
  c.validate();
  return c;
}

int64_t estimate(const nn::ModelConfig& c, int64_t b, int64_t s, DType dtype, int t, bool sp,
                 int cp = 1, bool gathers_keys_values = false) {
  ActivationShape shape;
  shape.micro_batch_size = b;
  shape.seq_length = s;
  shape.dtype = dtype;
  shape.tensor_parallel = t;
  shape.sequence_parallel = sp;
  shape.context_parallel = cp;
  shape.gathers_keys_values = gathers_keys_values;
  return activation_bytes_estimate(c, shape);
}

TEST(MemoryReportTensorParallel, ContextParallelHoldsItsChunksAndTheGatheredKeysAndValues) {
  const int64_t L = 3, b = 2, s = 64;
  const nn::ModelConfig c = papers_model(L);
  const double sbh = static_cast<double>(s * b * c.hidden_size);
  for (const int t : {1, 2})
    for (const int cp : {2, 4}) {
      SCOPED_TRACE("t " + std::to_string(t) + " cp " + std::to_string(cp));
      // Everything per token falls by CP (the ring); with the all-gather exchange the keys and
      // values of the whole sequence (2 h per token of multi-head attention, / t) are kept once
      // per layer too, in 16-bit.
      const double ring = static_cast<double>(estimate(c, b, s, DType::bf16, t, true)) / cp;
      EXPECT_NEAR(static_cast<double>(estimate(c, b, s, DType::bf16, t, true, cp)), ring, 1.0);
      EXPECT_NEAR(static_cast<double>(estimate(c, b, s, DType::bf16, t, true, cp, true)),
                  ring + sbh * L * 2 * 2.0 / t, 1.0);
      EXPECT_LT(estimate(c, b, s, DType::bf16, t, true, cp),
                estimate(c, b, s, DType::bf16, t, true));
    }
}

TEST(MemoryReportTensorParallel, ActivationEstimateOfThePapersLayer) {
  const int64_t L = 3, b = 2, s = 64;
  const nn::ModelConfig c = papers_model(L);
  const double sbh = static_cast<double>(s * b * c.hidden_size);
  for (const int t : {1, 2, 4, 8}) {
    for (const bool sp : {false, true}) {
      SCOPED_TRACE("t " + std::to_string(t) + (sp ? " with" : " without") + " SP");
      const double t_sp = sp ? t : 1.0;
      // In 16-bit: s b h (8 / t_sp + 24 / t) per layer (the paper's 24 / t inside attention
      // and the MLP; its 10 between them less the 2 of masks, all sequence shards under
      // sequence parallelism), and the final norm's and output layer's inputs.
      const double per_layer = 8 / t_sp + 24.0 / t;
      const double expected = sbh * (L * per_layer + 4 / t_sp);
      EXPECT_EQ(estimate(c, b, s, DType::bf16, t, sp), static_cast<int64_t>(expected));
      // The element size scales it: f32 twice, f64 four times.
      EXPECT_EQ(estimate(c, b, s, DType::f32, t, sp), static_cast<int64_t>(2 * expected));
      EXPECT_EQ(estimate(c, b, s, DType::f64, t, sp), static_cast<int64_t>(4 * expected));
    }
    // What sequence parallelism saves: the parts between the blocks, (1 - 1 / t) of them; what
    // TP saves: (1 - 1 / t) of the 24 s b h inside attention and the MLP.
    const int64_t without = estimate(c, b, s, DType::bf16, t, false);
    const int64_t with = estimate(c, b, s, DType::bf16, t, true);
    EXPECT_EQ(without - with, static_cast<int64_t>(sbh * (8 * L + 4) * (1 - 1.0 / t)));
    EXPECT_EQ(estimate(c, b, s, DType::bf16, 1, false) - without,
              static_cast<int64_t>(sbh * 24 * L * (1 - 1.0 / t)));
  }
  // Linear in the tokens of the micro-batch.
  EXPECT_EQ(estimate(c, 2 * b, s, DType::bf16, 2, true),
            2 * estimate(c, b, s, DType::bf16, 2, true));
  EXPECT_EQ(estimate(c, b, 2 * s, DType::bf16, 2, true),
            2 * estimate(c, b, s, DType::bf16, 2, true));
}

TEST(MemoryReportTensorParallel, ActivationElementsOfGqaMlaAndMoELayers) {
  // The default model: GQA (4 heads, 2 groups, D 16) with QK-norm, h 64, every layer MoE
  // (top-2 of experts of width 64), no shared expert.
  nn::ModelConfig c = default_train_model();
  LayerActivations a = layer_activations(c, 0);
  EXPECT_EQ(a.between, 3 * 64);  // the two norms' and attention's inputs (no shared expert)
  EXPECT_EQ(a.gathered, 0);
  // q 64, k 32, v 32, output 64, the QK-norms' inputs 64 + 32; the router's input 64, top-2
  // rows 2 x 64, fc1's output and the activation 2 x 3 x 64.
  EXPECT_EQ(a.split, (64 + 32 + 32 + 64 + 96) + 64 + 2 * 64 + 2 * 3 * 64);
  // ETP 2: the experts receive the rows of both ETP ranks, at half the width each.
  c.moe.expert_tensor_parallel_size = 2;
  EXPECT_EQ(layer_activations(c, 0).split, (64 + 32 + 32 + 64 + 96) + 64 + 2 * 2 * 64 + 6 * 64);
  c.moe.expert_tensor_parallel_size = 1;
  // A shared expert of width 32: its input and 3 x 32 of its width.
  c.moe.moe_shared_expert_intermediate_size = 32;
  a = layer_activations(c, 0);
  EXPECT_EQ(a.between, 4 * 64);
  EXPECT_EQ(a.split, (64 + 32 + 32 + 64 + 96) + 64 + 2 * 64 + 6 * 64 + 3 * 32);
  // A dense layer: its MLP's input and 3 F = 3 x 128.
  c.moe_layer_pattern = {0, 1, 1, 1};
  a = layer_activations(c, 0);
  EXPECT_EQ(a.between, 4 * 64);
  EXPECT_EQ(a.split, (64 + 32 + 32 + 64 + 96) + 3 * 128);
  // An MTP depth: a layer of the last layer's kind (MoE) and the MTP module's own tensors.
  c.mtp_num_layers = 1;
  const LayerActivations last = layer_activations(c, 3), mtp = layer_activations(c, 4);
  EXPECT_EQ(mtp.between, last.between + 6 * 64);
  EXPECT_EQ(mtp.gathered, last.gathered);
  EXPECT_EQ(mtp.split, last.split);

  // MLA (DeepSeek-V3's shape, smaller): 6 heads, dn 10, dr 6, dv 10, ranks 28 / 20, latent
  // norms; a dense layer of width 46.
  nn::ModelConfig m = default_train_model();
  m.attention_type = nn::AttentionType::mla;
  m.num_attention_heads = 6;
  m.num_query_groups = 6;
  m.kv_channels = 0;
  m.mla = nn::MlaConfig{28, 20, 10, 6, 10};
  m.ffn_hidden_size = 46;
  m.moe_layer_pattern = {0, 1, 1, 1};
  a = layer_activations(m, 0);
  EXPECT_EQ(a.gathered, 2 * (28 + 20));  // the latents and their norms' inputs
  EXPECT_EQ(a.between, 4 * 64);          // the norms', attention's and the MLP's inputs
  EXPECT_EQ(a.split, 6 * (2 * 16 + 2 * 10) + 3 * 46);
}

std::vector<int32_t> tokens() {
  std::vector<int32_t> t(4096);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>((i * 7) % 251);
  return t;
}

TrainConfig train_config() {
  TrainConfig c;
  c.micro_batch_size = 2;
  c.global_batch_size = 2;
  c.seq_length = 8;
  c.train_iters = 1;
  c.schedule.lr = 1e-3;
  return c;
}

// Every rank's figures of the default model under TP `tp` (ETP = TP, as Megatron's default),
// and each rank's parameter bytes as the one-rank model's tensors would give them: the
// replicated ones whole, the split ones 1 / TP (classified by the rank's parameter layouts).
struct TpRun {
  std::vector<RankMemory> ranks;
  std::vector<double> expected_parameter_bytes;
  double split_share = 0;  // of the one-rank model's bytes
};

// The default model with ETP = TP, as Megatron's default.
nn::ModelConfig tp_config(int tp) {
  nn::ModelConfig c = default_train_model();
  c.moe.expert_tensor_parallel_size = tp;
  return c;
}

TpRun memory_under_tp(int tp, bool sequence_parallel) {
  const nn::ModelConfig config = default_train_model();
  std::map<std::string, double> one_rank_bytes;
  double total = 0;
  {
    nn::GPTModel one(config, DType::f32, Device::cpu(), 1234);
    for (nn::Parameter* p : one.parameters()) {
      one_rank_bytes[p->name] = static_cast<double>(p->value.nbytes());
      total += static_cast<double>(p->value.nbytes());
    }
  }
  TpRun run;
  run.expected_parameter_bytes.resize(static_cast<size_t>(tp));
  std::mutex mutex;
  dist::run_local(tp, [&](std::shared_ptr<dist::ProcessGroup> world) {
    dist::ParallelConfig mapping;
    mapping.tensor_model_parallel_size = tp;
    auto state = std::make_shared<dist::ParallelState>(world, mapping);
    nn::GPTModel model(tp_config(tp), DType::f32, Device::cpu(), 1234,
                       nn::model_groups_of(*state, sequence_parallel));
    TokenArraySource source(tokens(), 8, 1, false);
    Trainer trainer(model, train_config(), source, nullptr, TrainParallel{state, DdpConfig{}});
    const std::vector<RankMemory> all =
        gather_rank_memory(rank_memory(model, trainer), world, Device::cpu());
    double expected = 0, split = 0;
    for (nn::Parameter* p : model.parameters()) {
      const double whole = one_rank_bytes.at(p->name);
      const bool is_split = p->layout.is_sharded() && !p->layout.tp_replicated;
      expected += is_split ? whole / tp : whole;
      split += is_split ? whole : 0;
    }
    std::lock_guard lock(mutex);
    run.expected_parameter_bytes[static_cast<size_t>(world->rank())] = expected;
    run.split_share = split / total;
    if (world->rank() == 0) run.ranks = all;
  });
  return run;
}

TEST(MemoryReportTensorParallel, TensorParallelRanksHoldTheirBlocksAndFewerActivations) {
  const TpRun one = memory_under_tp(1, false);
  ASSERT_EQ(one.ranks.size(), 1u);
  const double one_rank = static_cast<double>(one.ranks[0].parameter_bytes);
  for (const bool sp : {false, true}) {
    SCOPED_TRACE(sp ? "TP 2 with SP" : "TP 2");
    const TpRun two = memory_under_tp(2, sp);
    ASSERT_EQ(two.ranks.size(), 2u);
    // Nearly every byte of the default model is split (attention, experts by ETP, embedding
    // and output layer by vocabulary); the norms and routers are replicated.
    EXPECT_GT(two.split_share, 0.9);
    for (size_t r = 0; r < 2; ++r) {
      const RankMemory& m = two.ranks[r];
      const double expected = two.expected_parameter_bytes[r];
      // The data-parallel buffers pad and align: within 5 %.
      EXPECT_GE(static_cast<double>(m.parameter_bytes), expected) << "rank " << r;
      EXPECT_LT(static_cast<double>(m.parameter_bytes), 1.05 * expected) << "rank " << r;
      EXPECT_LT(static_cast<double>(m.parameter_bytes), 0.6 * one_rank) << "rank " << r;
      EXPECT_GT(static_cast<double>(m.parameter_bytes), 0.45 * one_rank) << "rank " << r;
      EXPECT_EQ(m.gradient_bytes, m.parameter_bytes) << "rank " << r;
      // AdamW of an f32 model: two moments per element it holds.
      EXPECT_NEAR(static_cast<double>(m.optimizer_bytes), 2 * expected, 1e-9) << "rank " << r;
      EXPECT_EQ(m.activation_bytes, estimate(tp_config(2), 2, 8, DType::f32, 2, sp))
          << "rank " << r;
    }
  }
  // The estimate a TP 2 rank reports falls under sequence parallelism by half of the parts
  // between the blocks: the norms' and attention's inputs of 4 MoE layers without a shared
  // expert (3 h each) and the final norm's and output layer's inputs, s b h (3 L + 2) elements
  // of 4 bytes; and either is below the one-rank estimate.
  const TpRun without = memory_under_tp(2, false), with = memory_under_tp(2, true);
  const int64_t sbh = 8 * 2 * 64;
  EXPECT_EQ(without.ranks[0].activation_bytes - with.ranks[0].activation_bytes,
            sbh * (3 * 4 + 2) * 4 / 2);
  EXPECT_LT(without.ranks[0].activation_bytes, one.ranks[0].activation_bytes);
}

// Activation recomputation: full keeps one [S, B, H] input per unit (and nothing of its
// layers); selective drops the recomputed blocks' inner activations and keeps their input.
TEST(MemoryReportTensorParallel, RecomputationKeepsTheUnitsInputs) {
  nn::ModelConfig c = default_train_model();  // 4 MoE layers, h 64, no shared expert
  c.moe.moe_shared_expert_intermediate_size = 32;
  c.moe_layer_pattern = {0, 1, 1, 1};
  const int64_t b = 2, s = 16, h = 64;
  ActivationShape shape;
  shape.micro_batch_size = b;
  shape.seq_length = s;
  shape.dtype = DType::bf16;
  const int64_t plain = activation_bytes_estimate(c, shape);
  const int64_t per_token_bytes = b * s * 2;  // bf16
  const int64_t ends = 2 * h;                 // the final norm's and the output layer's inputs

  shape.recompute.granularity = nn::RecomputeGranularity::full;
  shape.recompute.method = nn::RecomputeMethod::uniform;
  shape.recompute.num_layers = 2;  // units {0, 1}, {2, 3}: two inputs
  EXPECT_EQ(activation_bytes_estimate(c, shape), per_token_bytes * (2 * h + ends));
  shape.recompute.num_layers = 1;  // four units
  EXPECT_EQ(activation_bytes_estimate(c, shape), per_token_bytes * (4 * h + ends));
  shape.recompute.method = nn::RecomputeMethod::block;  // layer 0 alone
  const LayerActivations dense = layer_activations(c, 0);
  EXPECT_EQ(activation_bytes_estimate(c, shape),
            plain - per_token_bytes * static_cast<int64_t>(dense.between + dense.split - h));

  // Selective: the MoE blocks of layers 1-3 keep their input only (the shared expert's input,
  // counted already); the dense MLP of layer 0 drops its 3 F; shared_experts alone its 3 F_shared.
  shape.recompute = nn::RecomputeConfig{};
  shape.recompute.granularity = nn::RecomputeGranularity::selective;
  shape.recompute.moe = shape.recompute.mlp = true;
  const LayerActivations moe = layer_activations(c, 1);
  EXPECT_EQ(moe.block_split, h + 2 * h + 2 * 3 * 64 + 3 * 32);
  EXPECT_EQ(
      activation_bytes_estimate(c, shape),
      plain - per_token_bytes * static_cast<int64_t>(3 * moe.block_split + dense.block_split));
  shape.recompute.moe = shape.recompute.mlp = false;
  shape.recompute.shared_experts = true;
  EXPECT_EQ(activation_bytes_estimate(c, shape), plain - per_token_bytes * 3 * 3 * 32);
  // Without a shared expert the MoE block's input is not counted otherwise: it is added.
  c.moe.moe_shared_expert_intermediate_size = 0;
  shape.recompute.shared_experts = false;
  shape.recompute.moe = true;
  ActivationShape none = shape;
  none.recompute = nn::RecomputeConfig{};
  const int64_t no_shared = activation_bytes_estimate(c, none);
  const LayerActivations bare = layer_activations(c, 1);
  EXPECT_FALSE(bare.block_input_counted);
  EXPECT_EQ(activation_bytes_estimate(c, shape),
            no_shared - per_token_bytes * static_cast<int64_t>(3 * (bare.block_split - h)));
}

}  // namespace
}  // namespace moe::train
