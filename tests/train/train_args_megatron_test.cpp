// moe train against Megatron-LM: the defaults an absent flag takes (a table of Megatron-LM's
// defaults, read from megatron/training/arguments.py and its config dataclasses at commit
// d98e8a64ddf34856e74b24714e3bedb2f5a39553, 2026-08-22), and the Megatron-Core MoE guide's
// Mixtral 8x7B command line through the parser.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "moe/train/train_args.h"
#include "moe/train/train_run.h"

namespace moe::train {
namespace {

TEST(TrainArgsMegatron, AbsentFlagsTakeMegatronsDefaults) {
  // Any flag given: every absent training flag is Megatron's.
  const TrainRunConfig r = parse_train_args({"--lr", "1e-4"});
  const TrainConfig& t = r.train;
  EXPECT_DOUBLE_EQ(t.schedule.min_lr, 0.0);                  // --min-lr 0.0
  EXPECT_EQ(t.schedule.decay_style, "linear");               // --lr-decay-style linear
  EXPECT_EQ(t.schedule.warmup_iters, 0);                     // --lr-warmup-iters 0
  EXPECT_DOUBLE_EQ(t.schedule.warmup_init, 0.0);             // --lr-warmup-init 0.0
  EXPECT_EQ(t.schedule.decay_iters, 0);                      // --lr-decay-iters None: train-iters
  EXPECT_EQ(t.schedule.wsd_decay_style, "exponential");      // --lr-wsd-decay-style exponential
  EXPECT_DOUBLE_EQ(t.schedule.start_weight_decay, 0.01);     // --weight-decay 0.01
  EXPECT_DOUBLE_EQ(t.schedule.end_weight_decay, 0.01);
  EXPECT_EQ(t.schedule.weight_decay_incr_style, "constant");  // --weight-decay-incr-style
  EXPECT_DOUBLE_EQ(t.optimizer.beta1, 0.9);                  // --adam-beta1 0.9
  EXPECT_DOUBLE_EQ(t.optimizer.beta2, 0.999);                // --adam-beta2 0.999
  EXPECT_DOUBLE_EQ(t.optimizer.eps, 1e-8);                   // --adam-eps 1e-08
  EXPECT_DOUBLE_EQ(t.optimizer.clip_grad, 1.0);              // --clip-grad 1.0
  EXPECT_EQ(t.seed, 1234u);                                  // --seed 1234
  EXPECT_EQ(t.log_interval, 100);                            // --log-interval 100
  EXPECT_EQ(t.eval_interval, 0);                             // --eval-interval None: none
  EXPECT_EQ(t.eval_iters, 100);                              // --eval-iters 100
  EXPECT_EQ(t.nan_action, NanAction::stop);  // --check-for-nan-in-loss-and-grad on by default
  EXPECT_TRUE(r.global_batch_follows_data_parallel);  // --global-batch-size None: micro x dp
  EXPECT_FALSE(r.bf16);                               // --bf16 off
  EXPECT_EQ(r.split, "969, 30, 1");                   // --split's documented default
  EXPECT_EQ(r.parallel.expert_model_parallel_size, 1);  // --expert-model-parallel-size 1
  EXPECT_FALSE(r.ddp.use_distributed_optimizer || r.ddp.overlap_grad_reduce ||
               r.ddp.overlap_param_gather);
  EXPECT_FALSE(r.exit_signal_handler);
  EXPECT_EQ(r.save_interval, 0);
  EXPECT_DOUBLE_EQ(r.model.attention_dropout, 0.1);           // --attention-dropout 0.1
  EXPECT_DOUBLE_EQ(r.model.hidden_dropout, 0.1);              // --hidden-dropout 0.1
  // Over a --model preset's own (0 for moecore's presets), as every absent flag is Megatron's.
  const TrainRunConfig preset = parse_train_args({"--model", "mixtral-tiny", "--lr", "1e-4"});
  EXPECT_DOUBLE_EQ(preset.model.attention_dropout, 0.1);
  EXPECT_DOUBLE_EQ(preset.model.hidden_dropout, 0.1);
  EXPECT_EQ(t.train_samples, 0);                             // --train-samples None
  EXPECT_EQ(t.schedule.warmup_samples, 0);                   // --lr-warmup-samples 0
  EXPECT_EQ(t.schedule.decay_samples, 0);                    // --lr-decay-samples None
  EXPECT_LT(t.schedule.warmup_fraction, 0.0);                // --lr-warmup-fraction None
  // The default run (no flags at all) keeps its model's: no dropout.
  const TrainRunConfig none = parse_train_args({});
  EXPECT_EQ(none.model.attention_dropout, 0.0);
  EXPECT_EQ(none.model.hidden_dropout, 0.0);
  // The model's own values come from --model; the struct defaults (what a model_config.json
  // without the key gets) are Megatron's.
  const nn::ModelConfig m;
  EXPECT_DOUBLE_EQ(m.norm_epsilon, 1e-5);        // --norm-epsilon 1e-05
  EXPECT_DOUBLE_EQ(m.rotary_base, 10000.0);      // --rotary-base 10000
  EXPECT_DOUBLE_EQ(m.rotary_percent, 1.0);       // --rotary-percent 1.0
  EXPECT_DOUBLE_EQ(m.init_method_std, 0.02);     // --init-method-std 0.02
  EXPECT_DOUBLE_EQ(m.mtp_loss_scaling_factor, 0.1);  // --mtp-loss-scaling-factor 0.1
  EXPECT_EQ(m.mtp_num_layers, 0);                // --mtp-num-layers None
  EXPECT_FALSE(m.qk_layernorm || m.add_qkv_bias);
  EXPECT_EQ(m.mla.qk_head_dim, 128);             // --qk-head-dim 128
  EXPECT_EQ(m.mla.qk_pos_emb_head_dim, 64);      // --qk-pos-emb-head-dim 64
  EXPECT_EQ(m.mla.v_head_dim, 128);              // --v-head-dim 128
  const nn::MoEConfig& e = m.moe;
  EXPECT_EQ(e.moe_router_topk, 2);                            // --moe-router-topk 2
  EXPECT_EQ(e.moe_router_load_balancing_type, nn::LoadBalancingType::aux_loss);  // aux_loss
  EXPECT_EQ(e.moe_router_score_function, ops::ScoreFunction::softmax);           // softmax
  EXPECT_DOUBLE_EQ(e.moe_aux_loss_coeff, 0.0);                // 0.0
  EXPECT_FALSE(e.moe_z_loss_coeff.has_value());               // None
  EXPECT_FALSE(e.moe_input_jitter_eps.has_value());           // None
  EXPECT_FALSE(e.moe_expert_capacity_factor.has_value());     // None
  EXPECT_DOUBLE_EQ(e.moe_router_bias_update_rate, 1e-3);      // 0.001
  EXPECT_EQ(e.moe_token_dispatcher_type, nn::DispatcherType::allgather);  // allgather
  EXPECT_EQ(e.moe_token_drop_policy, ops::DropPolicy::probs);           // probs
  EXPECT_FALSE(e.moe_router_pre_softmax || e.moe_router_enable_expert_bias ||
               e.moe_pad_expert_input_to_capacity || e.moe_shared_expert_gate ||
               e.moe_router_padding_for_fp8 || e.moe_router_force_load_balancing);
  // Megatron has no default --lr: with flags and iterations to run, it is required.
  try {
    parse_train_args({"--train-iters", "10"});
    ADD_FAILURE() << "no --lr accepted";
  } catch (const std::exception& error) {
    EXPECT_NE(std::string(error.what()).find("--lr is required"), std::string::npos);
  }
  EXPECT_NO_THROW(parse_train_args({"--train-iters", "0", "--save", "/tmp/x"}));
}

TEST(TrainArgsMegatron, TheDefaultRunIsItsFlags) {
  const TrainRunConfig a = default_train_run();
  const TrainRunConfig b = parse_train_args(default_run_flags());
  EXPECT_EQ(run_config_json(a)["train"], run_config_json(b)["train"]);
  TrainRunConfig none = parse_train_args({});
  EXPECT_NE(describe(none).find("default run (moe train without flags): --micro-batch-size 8"),
            std::string::npos)
      << describe(none);
}

// The guide's Mixtral 8x7B command (megatron-core-moe.md, "Examples"). Edits, for a test on one
// CPU process: the parallel sizes are 1 (--expert-model-parallel-size 8 and
// --pipeline-model-parallel-size 4 need 8 / 4 ranks; --num-layers-per-virtual-pipeline-stage
// belongs to pipeline parallelism and is left out); the data flags (Llama2Tokenizer, a corpus)
// are left out for the built-in corpus; the paths are a temporary folder. --attention-dropout
// and --hidden-dropout are passed when this build has them.
std::vector<std::string> mixtral_args(const std::string& dir) {
  std::vector<std::string> a = {
      "--disable-bias-linear", "--seq-length", "4096", "--max-position-embeddings", "32768",
      "--num-layers", "32", "--hidden-size", "4096", "--ffn-hidden-size", "14336",
      "--num-attention-heads", "32", "--init-method-std", "0.01", "--normalization", "RMSNorm",
      "--position-embedding-type", "rope", "--swiglu", "--untie-embeddings-and-output-weights",
      "--group-query-attention", "--num-query-groups", "8", "--no-masked-softmax-fusion",
      "--no-position-embedding",
      "--num-experts", "8", "--expert-model-parallel-size", "1",
      "--moe-router-load-balancing-type", "aux_loss", "--moe-router-topk", "2",
      "--moe-aux-loss-coeff", "1e-2", "--moe-grouped-gemm", "--moe-permute-fusion",
      "--moe-token-dispatcher-type", "alltoall",
      "--micro-batch-size", "1", "--global-batch-size", "128", "--lr", "1e-4", "--train-iters",
      "500000", "--lr-decay-iters", "320000", "--lr-decay-style", "cosine", "--min-lr", "1.0e-5",
      "--weight-decay", "0.1", "--lr-warmup-iters", "500", "--clip-grad", "1.0", "--bf16",
      "--overlap-grad-reduce", "--overlap-param-gather",
      "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "1",
      "--sequence-parallel", "--use-distributed-optimizer",
      "--log-interval", "1", "--save-interval", "10000", "--eval-interval", "1000",
      "--eval-iters", "10", "--save", dir, "--load", dir, "--tensorboard-dir", dir + "/tensorboard",
      "--ckpt-format", "torch_dist", "--auto-detect-ckpt-format"};
  for (const TrainFlag& f : train_flags())
    if (f.name == "--attention-dropout" || f.name == "--hidden-dropout")
      a.insert(a.end(), {f.name, "0.0"});
  return a;
}

TEST(TrainArgsMegatron, TheGuidesMixtralCommandParses) {
  const TrainRunConfig r = parse_train_args(mixtral_args("/tmp/moe_mixtral_ckpt"));
  EXPECT_EQ(r.model.num_layers, 32);
  EXPECT_EQ(r.model.hidden_size, 4096);
  EXPECT_EQ(r.model.num_query_groups, 8);
  EXPECT_EQ(r.model.moe.num_experts, 8);
  EXPECT_EQ(r.model.moe.moe_ffn_hidden_size, 14336);  // Megatron: --ffn-hidden-size's
  EXPECT_DOUBLE_EQ(r.model.init_method_std, 0.01);
  EXPECT_EQ(r.train.global_batch_size, 128);
  EXPECT_EQ(r.train.schedule.decay_iters, 320000);
  EXPECT_DOUBLE_EQ(r.train.schedule.min_lr, 1e-5);
  EXPECT_TRUE(r.bf16);
  // Refused with their reason, not ignored.
  for (const char* flag : {"--moe-enable-deepep", "--moe-single-grouped-weight", "--moe-paged-stash"}) {
    try {
      parse_train_args({flag, "--lr", "1e-4"});
      ADD_FAILURE() << flag << " accepted";
    } catch (const std::exception& error) {
      EXPECT_NE(std::string(error.what()).find("not built yet"), std::string::npos) << flag;
    }
  }
  EXPECT_ANY_THROW(parse_train_args({"--ckpt-format", "torch", "--lr", "1e-4"}));
}

// The guide's Mixtral command trains: a few iterations of it, cut to a tiny size, on the CPU.
TEST(TrainArgsMegatron, TheGuidesMixtralCommandTrainsCutToATinySize) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("moe_mixtral_run_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::vector<std::string> a = mixtral_args(dir.string());
  auto set = [&](const std::string& flag, const std::string& value) {
    const auto it = std::find(a.begin(), a.end(), flag);
    ASSERT_NE(it, a.end()) << flag;
    *(it + 1) = value;
  };
  // Edits of the guide's command, besides mixtral_args' (parallel sizes 1, the built-in corpus):
  set("--num-layers", "2");            // 32 layers -> 2
  set("--hidden-size", "64");          // 4096 -> 64
  set("--ffn-hidden-size", "96");      // 14336 -> 96 (the experts' size too, as in Megatron)
  set("--num-attention-heads", "4");   // 32 -> 4 (head dim 16)
  set("--num-query-groups", "2");      // 8 -> 2
  set("--num-experts", "4");           // 8 -> 4
  set("--seq-length", "32");           // 4096 -> 32
  set("--global-batch-size", "2");     // 128 -> 2 (two micro-batches of 1)
  set("--train-iters", "3");           // 500000 -> 3
  set("--lr-decay-iters", "3");        // 320000 -> 3
  set("--lr-warmup-iters", "1");       // 500 -> 1
  set("--eval-interval", "2");         // 1000 -> 2
  set("--eval-iters", "1");            // 10 -> 1
  a.erase(std::find(a.begin(), a.end(), "--bf16"));  // --bf16 trains on a GPU; this test: CPU
  const TrainRunConfig config = parse_train_args(a);
  std::FILE* out = std::tmpfile();
  const TrainRunResult r = run_training(config, standard_train_hooks(), out);
  std::fclose(out);
  ASSERT_EQ(r.iterations, 3);
  for (double loss : r.losses) EXPECT_TRUE(std::isfinite(loss)) << loss;
  ASSERT_FALSE(r.valid_losses.empty());
  EXPECT_EQ(r.valid_losses.front().first, 2);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moe::train
