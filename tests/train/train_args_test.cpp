// `moe train`'s flags: Megatron's names onto the model and trainer configs, zoo presets with
// overrides, YAML files under the command line, and the errors that name the flag (unknown
// flags and keys, refused flags, bad values, invalid combinations).
#include "moe/train/train_args.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "moe/core/error.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"
#include "moe/train/lr_schedule.h"
#include "moe/train/trainer.h"

namespace moe::train {
namespace {

using Args = std::vector<std::string>;

// parse_train_args with an explicit --lr added when neither the flags nor a --config name one:
// with any flag given, Megatron-LM (and so moe train) has no default learning rate.
TrainRunConfig parse(Args args) {
  const bool names_lr = std::find(args.begin(), args.end(), "--lr") != args.end();
  const bool has_config = std::find(args.begin(), args.end(), "--config") != args.end();
  if (!args.empty() && !names_lr && !has_config) args.insert(args.end(), {"--lr", "1e-3"});
  return parse_train_args(args);
}

// The message of the moe::Error that parsing `args` throws ("" when it does not throw).
std::string error_of(const Args& args) {
  try {
    parse(args);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The same without the --lr that parse() adds.
std::string error_of_without_lr(const Args& args) {
  try {
    parse_train_args(args);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_NAMES(args, ...)                              \
  do {                                                             \
    const std::string message = error_of(args);                    \
    ASSERT_FALSE(message.empty()) << "no error";                   \
    for (const char* part : {__VA_ARGS__})                         \
      EXPECT_NE(message.find(part), std::string::npos) << message; \
  } while (0)

std::string write_temp(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("moe_train_args_" + std::to_string(getpid()) + "_" + name);
  std::ofstream(path) << text;
  return path.string();
}

TEST(TrainArgs, NoArgumentsIsTheDefaultRunWhichSaves) {
  const TrainRunConfig run = parse({});
  const TrainRunConfig defaults = default_train_run();
  EXPECT_EQ(run.model_preset, "default");
  EXPECT_EQ(nn::model_config_to_json(run.model), nn::model_config_to_json(default_train_model()));
  EXPECT_EQ(run.model.vocab_size, 384);  // 257 byte ids padded as Megatron pads
  EXPECT_EQ(run.train.train_iters, defaults.train.train_iters);
  EXPECT_EQ(run.save, kDefaultRunSave);
  EXPECT_EQ(run.metrics_path(), std::string(kDefaultRunSave) + "/metrics.jsonl");
  // Any flag makes it an ordinary run: no implicit save.
  EXPECT_EQ(parse({"--train-iters", "5"}).save, "");
}

TEST(TrainArgs, ZooPresetWithOverridesInAnyOrder) {
  const Args a = {"--model", "qwen3-30b-a3b", "--num-layers", "4", "--seq-length", "256"};
  const Args b = {"--num-layers", "4", "--seq-length", "256", "--model", "qwen3-30b-a3b"};
  for (const Args& args : {a, b}) {
    const TrainRunConfig run = parse(args);
    nn::ModelConfig expected = nn::model_zoo("qwen3-30b-a3b");
    EXPECT_EQ(run.model_preset, "qwen3-30b-a3b");
    EXPECT_EQ(run.model.num_layers, 4);
    EXPECT_EQ(run.model.moe_layer_pattern, (std::vector<int>{1, 1, 1, 1}));
    EXPECT_EQ(run.model.hidden_size, expected.hidden_size);
    EXPECT_EQ(run.model.moe.num_experts, expected.moe.num_experts);
    EXPECT_EQ(run.model.vocab_size, expected.vocab_size);
    EXPECT_EQ(run.train.seq_length, 256);
  }
}

TEST(TrainArgs, CuttingAndExtendingTheLayerPattern) {
  // DeepSeek-V3-tiny's leading dense layer stays dense when cut; extending repeats the last.
  const nn::ModelConfig zoo = nn::model_zoo("deepseek-v3-tiny");
  ASSERT_EQ(zoo.moe_layer_pattern.front(), 0);
  const TrainRunConfig cut = parse({"--model", "deepseek-v3-tiny", "--num-layers", "2"});
  EXPECT_EQ(cut.model.moe_layer_pattern,
            std::vector<int>(zoo.moe_layer_pattern.begin(), zoo.moe_layer_pattern.begin() + 2));
  const TrainRunConfig longer = parse({"--num-layers", "6"});
  EXPECT_EQ(longer.model.moe_layer_pattern, std::vector<int>(6, 1));
  const TrainRunConfig freq = parse({"--num-layers", "4", "--moe-layer-freq", "([0]*1+[1]*3)"});
  EXPECT_EQ(freq.model.moe_layer_pattern, (std::vector<int>{0, 1, 1, 1}));
}

TEST(TrainArgs, ModelAndMoEFlagsMapOntoTheirFields) {
  const TrainRunConfig run = parse({"--hidden-size",
                                    "96",
                                    "--ffn-hidden-size",
                                    "200",
                                    "--num-attention-heads",
                                    "6",
                                    "--num-query-groups",
                                    "3",
                                    "--kv-channels",
                                    "16",
                                    "--max-position-embeddings",
                                    "1024",
                                    "--vocab-size",
                                    "300",
                                    "--num-experts",
                                    "6",
                                    "--moe-ffn-hidden-size",
                                    "40",
                                    "--moe-router-topk",
                                    "3",
                                    "--moe-aux-loss-coeff",
                                    "0.05",
                                    "--moe-z-loss-coeff",
                                    "0.002",
                                    "--moe-router-load-balancing-type",
                                    "seq_aux_loss",
                                    "--moe-router-score-function",
                                    "sigmoid",
                                    "--moe-router-enable-expert-bias",
                                    "--moe-router-bias-update-rate",
                                    "0.01",
                                    "--moe-token-dispatcher-type",
                                    "alltoall",
                                    "--moe-grouped-gemm",
                                    "--moe-shared-expert-intermediate-size",
                                    "32",
                                    "--init-method-std",
                                    "0.01",
                                    "--moe-router-dtype=fp64"});
  const nn::ModelConfig& m = run.model;
  EXPECT_EQ(m.hidden_size, 96);
  EXPECT_EQ(m.moe.hidden_size, 96);  // mirrored
  EXPECT_EQ(m.ffn_hidden_size, 200);
  EXPECT_EQ(m.num_attention_heads, 6);
  EXPECT_EQ(m.num_query_groups, 3);
  EXPECT_EQ(m.kv_channels, 16);
  EXPECT_EQ(m.max_position_embeddings, 1024);
  EXPECT_EQ(m.vocab_size, 300);
  EXPECT_EQ(m.moe.num_experts, 6);
  EXPECT_EQ(m.moe.moe_ffn_hidden_size, 40);
  EXPECT_EQ(m.moe.moe_router_topk, 3);
  EXPECT_DOUBLE_EQ(m.moe.moe_aux_loss_coeff, 0.05);
  EXPECT_DOUBLE_EQ(m.moe.moe_z_loss_coeff.value(), 0.002);
  EXPECT_EQ(m.moe.moe_router_load_balancing_type, nn::LoadBalancingType::seq_aux_loss);
  EXPECT_EQ(m.moe.moe_router_score_function, ops::ScoreFunction::sigmoid);
  EXPECT_TRUE(m.moe.moe_router_enable_expert_bias);
  EXPECT_DOUBLE_EQ(m.moe.moe_router_bias_update_rate, 0.01);
  EXPECT_EQ(m.moe.moe_token_dispatcher_type, nn::DispatcherType::alltoall);
  EXPECT_EQ(m.moe.moe_shared_expert_intermediate_size, 32);
  EXPECT_DOUBLE_EQ(m.init_method_std, 0.01);
  EXPECT_DOUBLE_EQ(m.moe.init_method_std, 0.01);
  EXPECT_EQ(m.moe.moe_router_dtype, nn::RouterDType::fp64);
}

TEST(TrainArgs, TrainingFlagsMapOntoTheTrainerConfig) {
  const TrainRunConfig run = parse({"--micro-batch-size",
                                    "2",
                                    "--global-batch-size",
                                    "8",
                                    "--train-iters",
                                    "500",
                                    "--lr",
                                    "6e-4",
                                    "--min-lr",
                                    "6e-5",
                                    "--lr-decay-style",
                                    "cosine",
                                    "--lr-decay-iters",
                                    "400",
                                    "--lr-warmup-iters",
                                    "20",
                                    "--lr-warmup-init",
                                    "1e-6",
                                    "--weight-decay",
                                    "0.05",
                                    "--clip-grad",
                                    "0.5",
                                    "--adam-beta1",
                                    "0.8",
                                    "--adam-beta2",
                                    "0.9",
                                    "--adam-eps",
                                    "1e-6",
                                    "--use-precision-aware-optimizer",
                                    "--exp-avg-dtype",
                                    "bf16",
                                    "--exp-avg-sq-dtype",
                                    "bf16",
                                    "--seed",
                                    "7",
                                    "--log-interval",
                                    "5",
                                    "--eval-interval",
                                    "50",
                                    "--eval-iters",
                                    "3",
                                    "--check-for-nan-in-loss-and-grad",
                                    "--tensorboard-dir",
                                    "tb",
                                    "--log-dir",
                                    "logs"});
  const TrainConfig& t = run.train;
  EXPECT_EQ(t.micro_batch_size, 2);
  EXPECT_EQ(t.global_batch_size, 8);
  EXPECT_EQ(t.num_microbatches(), 4);
  EXPECT_EQ(t.train_iters, 500);
  EXPECT_DOUBLE_EQ(t.schedule.lr, 6e-4);
  EXPECT_DOUBLE_EQ(t.schedule.min_lr, 6e-5);
  EXPECT_EQ(t.schedule.decay_style, "cosine");
  EXPECT_EQ(t.schedule.decay_iters, 400);
  EXPECT_EQ(t.schedule.warmup_iters, 20);
  EXPECT_DOUBLE_EQ(t.schedule.warmup_init, 1e-6);
  EXPECT_DOUBLE_EQ(t.schedule.start_weight_decay, 0.05);
  EXPECT_DOUBLE_EQ(t.schedule.end_weight_decay, 0.05);
  EXPECT_DOUBLE_EQ(t.optimizer.clip_grad, 0.5);
  EXPECT_DOUBLE_EQ(t.optimizer.beta1, 0.8);
  EXPECT_DOUBLE_EQ(t.optimizer.beta2, 0.9);
  EXPECT_DOUBLE_EQ(t.optimizer.eps, 1e-6);
  EXPECT_EQ(t.optimizer.exp_avg_dtype, DType::bf16);
  EXPECT_EQ(t.optimizer.exp_avg_sq_dtype, DType::bf16);
  EXPECT_EQ(t.seed, 7u);
  EXPECT_EQ(t.log_interval, 5);
  EXPECT_EQ(t.eval_interval, 50);
  EXPECT_EQ(t.eval_iters, 3);
  EXPECT_EQ(t.nan_action, NanAction::stop);
  EXPECT_EQ(run.tensorboard_dir, "tb");
  EXPECT_EQ(run.metrics_path(), "logs/metrics.jsonl");
}

TEST(TrainArgs, DerivedDefaults) {
  // --global-batch-size defaults to --micro-batch-size (one data-parallel rank); no warm-up
  // unless --lr-warmup-iters or --lr-warmup-fraction (of the decay iterations) is given.
  const TrainRunConfig a = parse({"--micro-batch-size", "4", "--train-iters", "50"});
  EXPECT_EQ(a.train.global_batch_size, 4);
  EXPECT_EQ(a.train.schedule.warmup_iters, 0);
  const TrainRunConfig b =
      parse({"--train-iters", "100", "--lr-decay-iters", "80", "--lr-warmup-fraction", "0.25"});
  EXPECT_EQ(b.train.schedule.warmup_iters, 0);
  EXPECT_DOUBLE_EQ(b.train.schedule.warmup_fraction, 0.25);
  // Megatron's warm-up: 0.25 x the 80 decay iterations' samples (not rounded to iterations).
  EXPECT_DOUBLE_EQ(LrSchedule(resolved_schedule(b.train)).warmup_steps(),
                   20.0 * static_cast<double>(b.train.global_batch_size));
  // --min-lr is Megatron's 0 unless given, so a small --lr alone is valid.
  EXPECT_DOUBLE_EQ(parse({"--lr", "1e-5"}).train.schedule.min_lr, 0.0);
  // Megatron checks for NaN by default: a run with flags stops on one; the default run skips.
  EXPECT_EQ(parse({"--seed", "1"}).train.nan_action, NanAction::stop);
  EXPECT_EQ(parse({"--nan-action", "skip"}).train.nan_action, NanAction::skip);
  EXPECT_EQ(parse({"--no-check-for-nan-in-loss-and-grad"}).train.nan_action, NanAction::skip);
  EXPECT_EQ(parse({}).train.nan_action, NanAction::skip);
  EXPECT_EQ(parse({"--metrics-jsonl", "m.jsonl", "--log-dir", "x"}).metrics_path(), "m.jsonl");
}

// Megatron's sample-based training: --train-samples N is N / global batch iterations (the
// remainder untrained), its schedule in samples; the iteration- and sample-based flags exclude
// each other as Megatron's validate_args asserts.
TEST(TrainArgs, TrainSamplesIsMegatronsSampleBasedTraining) {
  const TrainRunConfig a =
      parse({"--train-samples", "1003", "--micro-batch-size", "2", "--global-batch-size", "8",
             "--lr-warmup-samples", "100", "--lr-decay-samples", "900", "--lr-decay-style", "WSD",
             "--lr-wsd-decay-samples", "300"});
  const TrainConfig& t = a.train;
  EXPECT_EQ(t.train_samples, 1003);
  EXPECT_EQ(t.train_iters, 125);  // 1003 // 8
  EXPECT_EQ(t.schedule.warmup_samples, 100);
  EXPECT_EQ(t.schedule.decay_samples, 900);
  EXPECT_EQ(t.schedule.wsd_decay_samples, 300);
  EXPECT_EQ(t.schedule.decay_iters, 0);
  EXPECT_NE(describe(a).find("125 iterations of 8 samples"), std::string::npos) << describe(a);
  EXPECT_NE(describe(a).find("--train-samples 1003"), std::string::npos) << describe(a);
  EXPECT_NE(describe(a).find("warm-up 100 samples"), std::string::npos) << describe(a);
  const nlohmann::json j = run_config_json(a)["train"];
  EXPECT_EQ(j["train_samples"], 1003);
  EXPECT_EQ(j["lr_decay_samples"], 900);
  // The decay defaults to --train-samples; --lr-warmup-fraction is a fraction of that.
  const TrainRunConfig b = parse({"--train-samples", "640", "--lr-warmup-fraction", "0.1"});
  EXPECT_EQ(b.train.train_iters, 80);  // --global-batch-size: --micro-batch-size 8
  const LrSchedule schedule(resolved_schedule(b.train));
  EXPECT_EQ(schedule.decay_steps(), 640);
  EXPECT_DOUBLE_EQ(schedule.warmup_steps(), 64.0);
  // From a YAML file too.
  EXPECT_EQ(parse({"--config", write_temp("samples.yaml", "train_samples: 96\nlr: 1e-3\n")})
                .train.train_iters,
            12);

  EXPECT_ERROR_NAMES(Args({"--train-samples", "1000", "--train-iters", "10"}), "--train-iters",
                     "--train-samples", "use one");
  for (auto [iters, samples] : {std::pair{"--lr-decay-iters", "--lr-decay-samples"},
                                std::pair{"--lr-warmup-iters", "--lr-warmup-samples"},
                                std::pair{"--lr-wsd-decay-iters", "--lr-wsd-decay-samples"}}) {
    EXPECT_ERROR_NAMES(Args({"--train-samples", "1000", iters, "10"}), iters, samples);
    EXPECT_ERROR_NAMES(Args({"--train-iters", "100", samples, "10"}), samples, "--train-samples");
    EXPECT_ERROR_NAMES(Args({samples, "10"}), samples, "--train-samples");  // iterations: 500
  }
  EXPECT_ERROR_NAMES(
      Args({"--train-samples", "1000", "--lr-warmup-samples", "10", "--lr-warmup-fraction", "0.1"}),
      "--lr-warmup-fraction", "--lr-warmup-samples");
  EXPECT_ERROR_NAMES(Args({"--train-samples", "0"}), "--train-samples");
  EXPECT_ERROR_NAMES(
      Args({"--train-samples", "100", "--lr-decay-samples", "100", "--lr-warmup-samples", "100"}),
      "--lr-decay-samples 100", "--lr-warmup-samples");
  // Megatron has no default --lr: required when the samples make iterations.
  EXPECT_NE(error_of_without_lr({"--train-samples", "64"}).find("--lr is required"),
            std::string::npos);
  EXPECT_NO_THROW(parse_train_args({"--train-samples", "7", "--micro-batch-size", "8"}));
}

TEST(TrainArgs, YamlFileUnderTheCommandLine) {
  const std::string path = write_temp("run.yaml",
                                      "# a Megatron-style config\n"
                                      "model: mixtral-tiny\n"
                                      "num_layers: 2\n"
                                      "moe-router-topk: 3\n"
                                      "micro_batch_size: 2\n"
                                      "global_batch_size: 4\n"
                                      "lr: 1.0e-3\n"
                                      "moe_layer_freq: [0, 1]\n"
                                      "check_for_nan_in_loss_and_grad: true\n"
                                      "moe_router_enable_expert_bias: false\n");
  const TrainRunConfig run = parse({"--config", path, "--lr", "2e-3"});
  EXPECT_EQ(run.model_preset, "mixtral-tiny");
  EXPECT_EQ(run.model.num_layers, 2);
  EXPECT_EQ(run.model.moe_layer_pattern, (std::vector<int>{0, 1}));
  EXPECT_EQ(run.model.moe.moe_router_topk, 3);
  EXPECT_EQ(run.train.micro_batch_size, 2);
  EXPECT_EQ(run.train.global_batch_size, 4);
  EXPECT_DOUBLE_EQ(run.train.schedule.lr, 2e-3);  // the command line wins
  EXPECT_EQ(run.train.nan_action, NanAction::stop);
  EXPECT_FALSE(run.model.moe.moe_router_enable_expert_bias);  // a false switch is not given
  const auto pairs = read_train_yaml(path);
  ASSERT_EQ(pairs.size(), 9u);
  EXPECT_EQ(pairs[0], (std::pair<std::string, std::string>{"--model", "mixtral-tiny"}));
  EXPECT_EQ(pairs[6], (std::pair<std::string, std::string>{"--moe-layer-freq", "[0,1]"}));
}

TEST(TrainArgs, YamlErrorsNameTheKeyAndTheFile) {
  const std::string typo = write_temp("typo.yaml", "num_layer: 2\n");
  EXPECT_ERROR_NAMES(Args({"--config", typo}), "num_layer", "typo.yaml", "--num-layers");
  const std::string nested = write_temp("nested.yaml", "lr:\n  peak: 1\n");
  EXPECT_ERROR_NAMES(Args({"--config", nested}), "'lr'", "mapping");
  const std::string refused = write_temp("refused.yaml", "fp16: true\n");
  EXPECT_ERROR_NAMES(Args({"--config", refused}), "--fp16", "--bf16");
  // A list in YAML is a list flag's words, as on the command line.
  const std::string blend = write_temp("blend.yaml", "data_path: [0.3, /data/a, 0.7, /data/b]\n");
  EXPECT_EQ(parse({"--config", blend, "--lr", "1e-3"}).data_path,
            (std::vector<std::string>{"0.3", "/data/a", "0.7", "/data/b"}));
  EXPECT_EQ(parse({"--data-path", "0.3", "/data/a", "0.7", "/data/b", "--lr", "0.1"}).data_path,
            (std::vector<std::string>{"0.3", "/data/a", "0.7", "/data/b"}));
  EXPECT_ERROR_NAMES(Args({"--config", "/nonexistent/run.yaml"}), "cannot open",
                     "/nonexistent/run.yaml");
  const std::string bad = write_temp("bad.yaml", "lr: [1, 2\n");
  EXPECT_ERROR_NAMES(Args({"--config", bad}), "not valid YAML");
  const std::string bad_bool = write_temp("bool.yaml", "bf16: maybe\n");
  EXPECT_ERROR_NAMES(Args({"--config", bad_bool}), "--bf16", "maybe");
}

TEST(TrainArgs, UnknownFlagsAreNamed) {
  EXPECT_ERROR_NAMES(Args({"--num-layer", "2"}), "unknown flag --num-layer", "--num-layers");
  EXPECT_ERROR_NAMES(Args({"--frobnicate"}), "unknown flag --frobnicate");
  EXPECT_ERROR_NAMES(Args({"train.yaml"}), "unexpected argument 'train.yaml'");
}

TEST(TrainArgs, RefusedFlagsSayWhy) {
  EXPECT_ERROR_NAMES(Args({"--fp16"}), "--fp16", "--bf16");
  EXPECT_NO_THROW(parse({"--expert-model-parallel-size", "1"}));
}

TEST(TrainArgs, PipelineFlags) {
  const TrainRunConfig pp =
      parse({"--pipeline-model-parallel-size", "4", "--num-layers-per-virtual-pipeline-stage", "2",
             "--account-for-loss-in-pipeline-split",
             "--microbatch-group-size-per-virtual-pipeline-stage", "6"});
  EXPECT_EQ(pp.parallel.pipeline_model_parallel_size, 4);
  EXPECT_EQ(pp.train.microbatch_group_size_per_vp_stage, 6);
  EXPECT_EQ(pp.num_layers_per_virtual_pipeline_stage, 2);
  EXPECT_TRUE(pp.pipeline.account_for_loss_in_pipeline_split);
  EXPECT_NE(describe(pp).find("; PP 4 interleaved"), std::string::npos) << describe(pp);
  const TrainRunConfig layout = parse(
      {"--pipeline-model-parallel-size", "2", "--pipeline-model-parallel-layout", "Et|tL",
       "--decoder-first-pipeline-num-layers", "1", "--num-virtual-stages-per-pipeline-rank", "1"});
  EXPECT_EQ(layout.pipeline.layout, "Et|tL");
  EXPECT_EQ(layout.pipeline.decoder_first_pipeline_num_layers, 1);
  EXPECT_EQ(layout.pipeline.virtual_stages, 1);
  EXPECT_NE(describe(layout).find("; PP 2 (layout Et|tL)"), std::string::npos) << describe(layout);
  EXPECT_ERROR_NAMES(Args({"--pipeline-model-parallel-size", "0"}),
                     "--pipeline-model-parallel-size");
  EXPECT_ERROR_NAMES(Args({"--num-virtual-stages-per-pipeline-rank", "0"}),
                     "--num-virtual-stages-per-pipeline-rank");
}

TEST(TrainArgs, TensorParallelFlags) {
  const TrainRunConfig plain = parse({});
  EXPECT_EQ(plain.parallel.tensor_model_parallel_size, 1);
  EXPECT_FALSE(plain.sequence_parallel);
  const TrainRunConfig tp = parse({"--tensor-model-parallel-size", "4", "--sequence-parallel"});
  EXPECT_EQ(tp.parallel.tensor_model_parallel_size, 4);
  EXPECT_TRUE(tp.sequence_parallel);
  // Megatron's default expert tensor parallelism is TP.
  EXPECT_EQ(tp.model.moe.expert_tensor_parallel_size, 4);
  EXPECT_ERROR_NAMES(Args({"--tensor-model-parallel-size", "0"}), "--tensor-model-parallel-size");
  const TrainRunConfig cp = parse({"--context-parallel-size", "2", "--cp-comm-type", "all_gather"});
  EXPECT_EQ(cp.parallel.context_parallel_size, 2);
  EXPECT_EQ(cp.cp_comm_type, "all_gather");
  EXPECT_NE(describe(tp).find("; TP 4 with sequence parallelism"), std::string::npos)
      << describe(tp);
  EXPECT_NE(describe(cp).find("; CP 2 (keys and values all-gathered)"), std::string::npos)
      << describe(cp);
  EXPECT_EQ(describe(plain).find("; TP "), std::string::npos) << describe(plain);
  EXPECT_EQ(plain.cp_comm_type, "p2p");  // Megatron-LM's default
  EXPECT_EQ(parse({"--context-parallel-size", "2", "--cp-comm-type", "a2a"}).cp_comm_type, "a2a");
  EXPECT_ERROR_NAMES(Args({"--cp-comm-type", "a2a+p2p"}), "--cp-comm-type", "not built yet");
  EXPECT_ERROR_NAMES(Args({"--cp-comm-type", "ring"}), "--cp-comm-type");
}

// Megatron's expert-parallel and DDP flags onto TrainRunConfig::parallel / ::ddp and the model's
// MoE block; what can be checked before the world size is known is checked here.
TEST(TrainArgs, ParallelAndDataParallelFlags) {
  const TrainRunConfig plain = parse({"--train-iters", "5"});
  EXPECT_EQ(plain.parallel.expert_model_parallel_size, 1);
  EXPECT_EQ(plain.parallel.expert_tensor_parallel_size, 0);  // Megatron's default: TP
  EXPECT_EQ(plain.model.moe.expert_tensor_parallel_size, 1);
  EXPECT_FALSE(plain.ddp.use_distributed_optimizer || plain.ddp.overlap_grad_reduce ||
               plain.ddp.overlap_param_gather || plain.ddp.grad_reduce_in_bf16);
  EXPECT_EQ(plain.ddp.bucket_size, 0);
  EXPECT_FALSE(plain.exit_signal_handler);
  // Megatron's global batch without --global-batch-size: micro-batch x data-parallel size.
  EXPECT_TRUE(plain.global_batch_follows_data_parallel);
  EXPECT_FALSE(parse({"--global-batch-size", "16"}).global_batch_follows_data_parallel);

  const TrainRunConfig r =
      parse({"--expert-model-parallel-size", "4", "--expert-tensor-parallel-size", "2",
             "--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather",
             "--ddp-bucket-size", "1000000", "--grad-reduce-in-bf16",
             "--accumulate-allreduce-grads-in-fp32", "--exit-signal-handler"});
  EXPECT_EQ(r.parallel.expert_model_parallel_size, 4);
  EXPECT_EQ(r.parallel.expert_tensor_parallel_size, 2);
  EXPECT_EQ(r.parallel.tensor_model_parallel_size, 1);
  EXPECT_EQ(r.model.moe.expert_model_parallel_size, 4);
  EXPECT_EQ(r.model.moe.expert_tensor_parallel_size, 2);
  EXPECT_TRUE(r.ddp.use_distributed_optimizer);
  EXPECT_TRUE(r.ddp.overlap_grad_reduce);
  EXPECT_TRUE(r.ddp.overlap_param_gather);
  EXPECT_TRUE(r.ddp.grad_reduce_in_bf16);
  EXPECT_EQ(r.ddp.bucket_size, 1000000);
  EXPECT_TRUE(r.exit_signal_handler);

  // The default model has 8 experts of FFN 64.
  EXPECT_ERROR_NAMES(Args({"--expert-model-parallel-size", "3"}), "--num-experts 8",
                     "--expert-model-parallel-size 3");
  EXPECT_ERROR_NAMES(Args({"--expert-tensor-parallel-size", "3"}), "--moe-ffn-hidden-size 64",
                     "--expert-tensor-parallel-size 3");
  EXPECT_ERROR_NAMES(Args({"--expert-model-parallel-size", "0"}), "--expert-model-parallel-size",
                     ">= 1");
  EXPECT_ERROR_NAMES(Args({"--overlap-param-gather"}), "--overlap-param-gather",
                     "--use-distributed-optimizer");
  EXPECT_ERROR_NAMES(Args({"--use-distributed-optimizer", "--overlap-param-gather"}),
                     "--overlap-grad-reduce");
  EXPECT_ERROR_NAMES(Args({"--ddp-bucket-size", "0"}), "--ddp-bucket-size", ">= 1");
  EXPECT_NE(train_flags_help().find("always accumulates"), std::string::npos);

  EXPECT_TRUE(parse({"--calculate-per-token-loss"}).train.calculate_per_token_loss);
  EXPECT_ERROR_NAMES(Args({"--calculate-per-token-loss", "--mtp-num-layers", "1"}),
                     "--calculate-per-token-loss", "--mtp-num-layers");

  // Only --micro-batch-size: the global batch follows the data-parallel size (Megatron).
  const TrainRunConfig micro = parse({"--micro-batch-size", "4"});
  EXPECT_TRUE(micro.global_batch_follows_data_parallel);
  EXPECT_EQ(micro.train.global_batch_size, 4);
  EXPECT_FALSE(parse({"--micro-batch-size", "4", "--global-batch-size", "8"})
                   .global_batch_follows_data_parallel);
}

TEST(TrainArgs, BadValuesAndCombinationsNameTheFlags) {
  EXPECT_ERROR_NAMES(Args({"--num-layers", "two"}), "--num-layers", "'two'");
  EXPECT_ERROR_NAMES(Args({"--num-layers", "0"}), "--num-layers", ">= 1");
  EXPECT_ERROR_NAMES(Args({"--lr"}), "--lr needs a value");
  EXPECT_ERROR_NAMES(Args({"--bf16=true"}), "--bf16 is a switch");
  EXPECT_ERROR_NAMES(Args({"--lr-decay-style", "exp"}), "--lr-decay-style", "'exp'", "cosine");
  EXPECT_ERROR_NAMES(Args({"--micro-batch-size", "3", "--global-batch-size", "8"}),
                     "--global-batch-size 8", "--micro-batch-size 3");
  EXPECT_ERROR_NAMES(Args({"--exp-avg-dtype", "bf16"}), "--exp-avg-dtype",
                     "--use-precision-aware-optimizer");
  EXPECT_ERROR_NAMES(Args({"--lr-warmup-iters", "5", "--lr-warmup-fraction", "0.1"}),
                     "--lr-warmup-fraction", "--lr-warmup-iters");
  EXPECT_ERROR_NAMES(Args({"--vocab-size", "200"}), "--vocab-size 200", "byte");
  EXPECT_ERROR_NAMES(Args({"--seq-length", "1024"}), "--seq-length 1024",
                     "--max-position-embeddings");
  EXPECT_ERROR_NAMES(Args({"--check-for-nan-in-loss-and-grad", "--nan-action", "skip"}),
                     "--check-for-nan-in-loss-and-grad", "--nan-action skip");
  EXPECT_ERROR_NAMES(Args({"--save-interval", "10"}), "--save-interval needs --save");
  EXPECT_ERROR_NAMES(Args({"--finetune"}), "--finetune needs --load");
  EXPECT_ERROR_NAMES(Args({"--model", "mixtral-9x9b"}), "mixtral-9x9b");
  // The model's own validation names the flags too.
  EXPECT_ERROR_NAMES(Args({"--num-attention-heads", "5"}), "--num-query-groups");
  EXPECT_ERROR_NAMES(Args({"--moe-router-topk", "9"}), "--moe-router-topk");
}

// Megatron derives kv_channels = hidden_size // num_attention_heads when --kv-channels is not
// given, and refuses a hidden size the heads do not divide: so does --hidden-size 65 with the
// default run's 4 heads (it once trained, keeping the preset's head dim 16).
TEST(TrainArgs, HeadDimFollowsTheShapeFlagsAsMegatronDerivesIt) {
  EXPECT_ERROR_NAMES(Args({"--hidden-size", "65"}), "--hidden-size 65", "--num-attention-heads 4",
                     "--kv-channels");
  EXPECT_ERROR_NAMES(Args({"--num-attention-heads", "6", "--num-query-groups", "2"}),
                     "--hidden-size 64", "--num-attention-heads 6", "--kv-channels");
  // With --kv-channels the head dim is the user's, whatever the division.
  EXPECT_EQ(parse({"--hidden-size", "65", "--kv-channels", "16"}).model.head_dim(), 16);
  // A new hidden size gives a new head dim: 128 / 4 heads.
  EXPECT_EQ(parse({"--hidden-size", "128"}).model.head_dim(), 32);
  EXPECT_EQ(parse({"--num-layers", "2"}).model.head_dim(), 16);
  // A preset with a head dim of its own keeps it (Qwen3-30B-A3B: 128 for hidden 2048, 32 heads).
  const TrainRunConfig qwen =
      parse({"--model", "qwen3-30b-a3b", "--num-layers", "1", "--hidden-size", "1024"});
  EXPECT_EQ(qwen.model.head_dim(), 128);
}

// Every float flag refuses inf and nan where it is parsed, naming the flag (inf once reached
// the optimizer: "adamw_step: needs ... lr >= 0 (got -nan)").
TEST(TrainArgs, FloatFlagsMustBeFinite) {
  for (const char* flag : {"--lr", "--min-lr", "--adam-eps", "--adam-beta1", "--clip-grad",
                           "--weight-decay", "--init-method-std", "--moe-aux-loss-coeff",
                           "--moe-z-loss-coeff", "--rotary-base", "--lr-warmup-fraction"})
    for (const char* value : {"inf", "-inf", "nan", "1e999"}) {
      SCOPED_TRACE(std::string(flag) + " " + value);
      EXPECT_ERROR_NAMES(Args({flag, value}), flag, "finite", value);
    }
  // --lr is checked before --min-lr is derived from it: a negative --lr is named itself.
  const std::string message = error_of({"--lr", "-1"});
  EXPECT_NE(message.find("--lr must not be negative, got -1"), std::string::npos) << message;
  EXPECT_EQ(message.find("--min-lr"), std::string::npos) << message;
}

// The default run's aux-loss coefficient belongs to its aux-loss balancing: switching the
// balancing to sinkhorn or none drops it (it once advised dropping a --moe-aux-loss-coeff that
// was never given); a coefficient that is given is still refused, by name.
TEST(TrainArgs, BalancingWithoutCoefficientDropsThePresetsOne) {
  for (const char* type : {"sinkhorn", "none"}) {
    SCOPED_TRACE(type);
    const TrainRunConfig run = parse({"--moe-router-load-balancing-type", type});
    EXPECT_STREQ(nn::name(run.model.moe.moe_router_load_balancing_type), type);
    EXPECT_EQ(run.model.moe.moe_aux_loss_coeff, 0.0);
    EXPECT_ERROR_NAMES(
        Args({"--moe-router-load-balancing-type", type, "--moe-aux-loss-coeff", "0.01"}),
        "--moe-aux-loss-coeff", "0.01");
  }
  // Other balancing types keep the preset's coefficient.
  EXPECT_EQ(
      parse({"--moe-router-load-balancing-type", "seq_aux_loss"}).model.moe.moe_aux_loss_coeff,
      default_train_model().moe.moe_aux_loss_coeff);
}

// Sizes too large for any model are refused by name before anything is built from them.
TEST(TrainArgs, SizeFlagsAreBounded) {
  EXPECT_ERROR_NAMES(Args({"--num-layers", "1099511627776"}), "--num-layers 1099511627776",
                     "exceeds 4096");
  EXPECT_ERROR_NAMES(Args({"--vocab-size", "1099511627776"}), "--vocab-size", "32-bit");
  EXPECT_ERROR_NAMES(Args({"--num-experts", "100000000"}), "--num-experts 100000000");
}

// A YAML file is one mapping, each flag once: a repeated key (also spelt once with '_' and once
// with '-') and a second document were read without a word; a folder gave
// "basic_filebuf::underflow".
TEST(TrainArgs, YamlRefusesRepeatedKeysSecondDocumentsAndFolders) {
  const std::string twice = write_temp("twice.yaml", "lr: 1.0e-3\nseed: 3\nlr: 2.0e-3\n");
  EXPECT_ERROR_NAMES(Args({"--config", twice}), "twice.yaml", "'lr'", "line 3", "line 1");
  const std::string spelt = write_temp("spelt.yaml", "num_layers: 2\nnum-layers: 3\n");
  EXPECT_ERROR_NAMES(Args({"--config", spelt}), "spelt.yaml", "'num-layers'", "'num_layers'",
                     "line 2", "line 1");
  const std::string two = write_temp("two.yaml", "lr: 1.0e-3\n---\ntrain_iters: 5\n");
  EXPECT_ERROR_NAMES(Args({"--config", two}), "two.yaml", "second YAML document", "line 3");
  // A document marker at the start, or an empty document at the end, is still one mapping.
  const std::string marked = write_temp("marked.yaml", "---\nlr: 1.0e-3\n---\n");
  EXPECT_DOUBLE_EQ(parse({"--config", marked}).train.schedule.lr, 1e-3);
  const std::string folder = std::filesystem::temp_directory_path().string();
  EXPECT_ERROR_NAMES(Args({"--config", folder}), folder.c_str(), "is a folder");
}

TEST(TrainArgs, EveryFlagIsDocumentedOnce) {
  const std::vector<TrainFlag> flags = train_flags();
  const std::string help = train_flags_help();
  std::set<std::string> names;
  for (const TrainFlag& f : flags) {
    EXPECT_TRUE(names.insert(f.name).second) << "twice: " << f.name;
    EXPECT_EQ(f.name.rfind("--", 0), 0u) << f.name;
    EXPECT_FALSE(f.help.empty() && f.refused.empty()) << f.name << " has no help";
    // A long name stands on its own line, its help on the next.
    EXPECT_TRUE(help.find("  " + f.name + " ") != std::string::npos ||
                help.find("  " + f.name + "\n") != std::string::npos)
        << f.name;
  }
  for (const char* megatron : {"--num-layers",
                               "--hidden-size",
                               "--ffn-hidden-size",
                               "--num-attention-heads",
                               "--num-query-groups",
                               "--kv-channels",
                               "--seq-length",
                               "--max-position-embeddings",
                               "--num-experts",
                               "--moe-router-topk",
                               "--moe-ffn-hidden-size",
                               "--moe-aux-loss-coeff",
                               "--moe-z-loss-coeff",
                               "--moe-router-load-balancing-type",
                               "--moe-router-score-function",
                               "--moe-router-enable-expert-bias",
                               "--moe-token-dispatcher-type",
                               "--moe-grouped-gemm",
                               "--moe-layer-freq",
                               "--micro-batch-size",
                               "--global-batch-size",
                               "--train-iters",
                               "--lr",
                               "--min-lr",
                               "--lr-decay-style",
                               "--lr-decay-iters",
                               "--lr-warmup-iters",
                               "--lr-warmup-fraction",
                               "--lr-warmup-init",
                               "--lr-wsd-decay-style",
                               "--lr-wsd-decay-iters",
                               "--train-samples",
                               "--lr-decay-samples",
                               "--lr-warmup-samples",
                               "--lr-wsd-decay-samples",
                               "--weight-decay",
                               "--start-weight-decay",
                               "--end-weight-decay",
                               "--weight-decay-incr-style",
                               "--clip-grad",
                               "--adam-beta1",
                               "--adam-beta2",
                               "--adam-eps",
                               "--use-precision-aware-optimizer",
                               "--exp-avg-dtype",
                               "--exp-avg-sq-dtype",
                               "--bf16",
                               "--seed",
                               "--log-interval",
                               "--eval-interval",
                               "--eval-iters",
                               "--tensorboard-dir",
                               "--moe-per-layer-logging",
                               "--check-for-nan-in-loss-and-grad",
                               "--save",
                               "--load",
                               "--save-interval",
                               "--finetune",
                               "--no-load-optim",
                               "--data-path",
                               "--expert-model-parallel-size",
                               "--expert-tensor-parallel-size",
                               "--use-distributed-optimizer",
                               "--overlap-grad-reduce",
                               "--overlap-param-gather",
                               "--ddp-bucket-size",
                               "--grad-reduce-in-bf16",
                               "--accumulate-allreduce-grads-in-fp32",
                               "--exit-signal-handler",
                               "--calculate-per-token-loss"})
    EXPECT_TRUE(names.count(megatron)) << megatron;
}

TEST(TrainArgs, RunConfigJsonRecordsTheFlags) {
  const TrainRunConfig run = parse({"--model", "mixtral-tiny", "--lr", "0.01"});
  const nlohmann::json j = run_config_json(run);
  EXPECT_EQ(j["model_preset"], "mixtral-tiny");
  EXPECT_EQ(j["flags"], nlohmann::json::array({"--model mixtral-tiny", "--lr 0.01"}));
  EXPECT_DOUBLE_EQ(j["train"]["lr"].get<double>(), 0.01);
  EXPECT_EQ(nn::model_config_from_json(j["model"]).name, "mixtral-tiny");
  EXPECT_NE(describe(run).find("--lr 0.01"), std::string::npos);
}

TEST(TrainArgs, ProfileFlagsAreMegatronsWindow) {
  const TrainRunConfig defaults = parse({"--profile"});
  EXPECT_TRUE(defaults.profile.enabled);
  EXPECT_EQ(defaults.profile.step_start, 10);  // Megatron's defaults
  EXPECT_EQ(defaults.profile.step_end, 12);
  EXPECT_TRUE(defaults.profile.ranks.empty());
  const TrainRunConfig run =
      parse({"--profile", "--profile-step-start", "3", "--profile-step-end", "5", "--profile-ranks",
             "0", "2", "--use-pytorch-profiler", "--tensorboard-dir", "tb", "--nvtx-ranges"});
  EXPECT_EQ(run.profile.step_start, 3);
  EXPECT_EQ(run.profile.step_end, 5);
  EXPECT_EQ(run.profile.ranks, (std::vector<int64_t>{0, 2}));
  EXPECT_TRUE(run.profile.use_builtin);
  EXPECT_EQ(run.profile.trace_path(2, run.tensorboard_dir), "torch_profile/rank-2.json");
  EXPECT_EQ(parse({"--profile", "--profile-dir", "p"}).profile.dir, "p");
  // Megatron ignores --use-pytorch-profiler without --profile; so does moecore.
  EXPECT_FALSE(parse({"--use-pytorch-profiler"}).profile.enabled);

  EXPECT_ERROR_NAMES(Args({"--profile", "--profile-step-start", "5", "--profile-step-end", "5"}),
                     "--profile-step-end 5", "--profile-step-start 5");
  EXPECT_ERROR_NAMES(Args({"--profile-dir", "p"}), "--profile-dir p needs --profile");
  EXPECT_ERROR_NAMES(Args({"--profile", "--use-pytorch-profiler"}), "--use-pytorch-profiler",
                     "--tensorboard-dir", "--profile-dir");
  EXPECT_ERROR_NAMES(Args({"--profile", "--profile-ranks", "-1"}), "--profile-ranks");
  EXPECT_ERROR_NAMES(Args({"--profile", "--profile-step-start", "x"}), "--profile-step-start");
}

TEST(TrainArgs, RecomputeFlagsFollowMegatronsRules) {
  const TrainRunConfig full = parse({"--recompute-granularity", "full", "--recompute-method",
                                     "block", "--recompute-num-layers", "2"});
  EXPECT_TRUE(full.recompute.full());
  EXPECT_EQ(full.recompute.method, nn::RecomputeMethod::block);
  EXPECT_EQ(full.recompute.num_layers, 2);
  EXPECT_NE(describe(full).find("recompute full, block: the first 2 layers of each block"),
            std::string::npos);
  // selective: Megatron's default module core_attn (nothing to drop), or the modules given.
  const TrainRunConfig fused = parse({"--recompute-granularity", "selective"});
  EXPECT_FALSE(fused.recompute.moe || fused.recompute.mlp || fused.recompute.shared_experts);
  const TrainRunConfig sel = parse({"--recompute-granularity", "selective", "--recompute-modules",
                                    "moe", "shared_experts"});
  EXPECT_TRUE(sel.recompute.moe);
  EXPECT_TRUE(sel.recompute.shared_experts);
  EXPECT_FALSE(sel.recompute.mlp);
  // The older switches.
  const TrainRunConfig moe_layer = parse({"--moe-layer-recompute"});
  EXPECT_EQ(moe_layer.recompute.granularity, nn::RecomputeGranularity::selective);
  EXPECT_TRUE(moe_layer.recompute.moe);
  EXPECT_EQ(parse({"--recompute-activations"}).recompute.granularity,
            nn::RecomputeGranularity::selective);
  // Without a granularity the others change nothing, as in Megatron.
  EXPECT_EQ(parse({"--recompute-modules", "moe"}).recompute.granularity,
            nn::RecomputeGranularity::none);
  EXPECT_FALSE(parse({"--recompute-modules", "moe"}).recompute.moe);

  EXPECT_ERROR_NAMES(Args({"--recompute-granularity", "full", "--recompute-num-layers", "1"}),
                     "--recompute-method");
  EXPECT_ERROR_NAMES(Args({"--recompute-granularity", "full", "--recompute-method", "uniform"}),
                     "--recompute-num-layers");
  EXPECT_ERROR_NAMES(Args({"--recompute-granularity", "selective", "--recompute-num-layers", "1"}),
                     "--recompute-num-layers", "full");
  EXPECT_ERROR_NAMES(Args({"--recompute-granularity", "partial"}), "--recompute-granularity");
  EXPECT_ERROR_NAMES(Args({"--recompute-granularity", "full", "--recompute-method", "uniform",
                           "--recompute-num-layers", "1", "--moe-layer-recompute"}),
                     "--moe-layer-recompute", "full");
  EXPECT_ERROR_NAMES(Args({"--recompute-granularity", "selective", "--recompute-modules",
                           "moe_act"}),
                     "moe_act", "not built yet");
  EXPECT_ERROR_NAMES(Args({"--distribute-saved-activations"}), "--distribute-saved-activations");
}

}  // namespace
}  // namespace moe::train
