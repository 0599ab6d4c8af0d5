#include "moe/train/train_run.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "moe/core/error.h"
#include <filesystem>

#include "moe/data/builtin_corpus.h"
#include "moe/data/byte_tokenizer.h"
#include "moe/data/gpt_dataset_builder.h"
#include "moe/data/indexed_dataset.h"
#include "moe/data/tokenizer.h"
#include "moe/dist/init.h"
#include "moe/train/gpt_batch_source.h"
#include "moe/train/generate.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/train_upcycle.h"

namespace moe::train {
namespace {

void refuse_unwired(const TrainRunConfig& c, const TrainHooks& hooks) {
  const char* later = " is not supported by this build yet (training checkpoints are not wired "
                      "into `moe train`); remove it";
  MOE_CHECK(c.load.empty() || hooks.load, "--load", later);
  MOE_CHECK(c.save.empty() || hooks.save, "--save", later);
  MOE_CHECK(c.save_interval == 0 || hooks.save, "--save-interval", later);
  MOE_CHECK(!c.finetune || hooks.load, "--finetune", later);
  MOE_CHECK(!c.no_load_optim || hooks.load, "--no-load-optim", later);
}

void load_checkpoint(TrainSession& s) {
  // --moe-use-upcycling: a dense --load becomes the run's MoE model (saved as iteration 0);
  // an MoE --load (the upcycled run, resumed) loads below as usual.
  if (s.config.moe_use_upcycling && upcycle_dense_checkpoint(s)) return;
  const std::string& dir = s.config.load;
  const bool iteration_folder = std::filesystem::exists(std::filesystem::path(dir) / "manifest.json");
  if (!iteration_folder && !latest_checkpoint_iteration(dir)) {
    s.logger.note("--load " + dir + ": no checkpoint there yet; training from scratch");
    return;
  }
  LoadOptions options;
  options.finetune = s.config.finetune;
  options.no_load_optim = s.config.no_load_optim;
  const LoadResult r = load_training_checkpoint(dir, s.model, &s.trainer, options);
  s.logger.note(moe::detail::concat("loaded checkpoint ", r.folder, " (iteration ", r.iteration, ")",
                               r.loaded_optimizer ? "" : "; optimizer not loaded",
                               r.loaded_trainer_state ? "" : "; counters from 0"));
  for (const std::string& d : r.config_differences) s.logger.note("  config differs: " + d);
  for (const std::string& w : r.warnings) s.logger.note("  warning: " + w);
}

void save_checkpoint(TrainSession& s) {
  save_training_checkpoint(s.config.save, s.model, s.trainer, run_config_json(s.config));
  s.logger.note(moe::detail::concat("saved checkpoint ", s.config.save, "/",
                               checkpoint_folder_name(s.trainer.iteration())));
}

void print_sample(TrainSession& s) {
  if (s.config.sample_tokens <= 0) return;
  // The corpus's tokenizer (byte tokens for the built-in corpus and by default).
  const std::unique_ptr<data::Tokenizer> tokenizer =
      data::make_tokenizer(s.config.tokenizer_type, s.config.tokenizer_model);
  if (tokenizer->description() == "byte" &&
      !data::ByteTokenizer::fits_model_vocab(s.model.config().vocab_size)) {
    s.logger.note(moe::detail::concat("no text sample: the vocabulary of ",
                                      s.model.config().vocab_size,
                                      " ids is not a byte-level one (give --tokenizer-model)"));
    return;
  }
  GenerateOptions options;
  options.max_new_tokens = s.config.sample_tokens;
  options.sampling.temperature = 0.8;
  options.sampling.top_p = 0.95;
  options.seed = s.config.train.seed;
  options.max_sequence_length = s.config.train.seq_length;
  const std::string text = generate_text(s.model, *tokenizer, "", options);
  s.logger.note(moe::detail::concat("sample (", s.config.sample_tokens,
                                    " tokens at most, temperature 0.8, top-p 0.95):\n", text));
}

// The run's sample streams and the line that describes them.
struct RunData {
  std::unique_ptr<BatchSource> train, valid;  // valid: null when there is none
  std::string description;
};

RunData builtin_data(const TrainConfig& tc) {
  const data::BuiltinCorpus corpus = data::load_builtin_corpus();
  // Different streams for the two splits: the order of the validation samples does not depend
  // on the training seed's permutation.
  auto train = std::make_unique<TokenArraySource>(corpus.train, tc.seq_length, tc.seed, true);
  auto valid = std::make_unique<TokenArraySource>(corpus.valid, tc.seq_length, tc.seed + 1, false);
  MOE_CHECK(train->num_samples() > 0 && valid->num_samples() > 0, "--seq-length ", tc.seq_length,
            " is longer than the built-in corpus's splits (", corpus.train.size(), " / ",
            corpus.valid.size(), " tokens)");
  RunData d;
  d.description = moe::detail::concat(
      "data: built-in corpus ", corpus.source, ": ", corpus.files, " files, ",
      corpus.train_documents, " training documents (", corpus.train.size(), " byte tokens, ",
      train->num_samples(), " samples), ", corpus.valid_documents, " validation documents (",
      corpus.valid.size(), " tokens)");
  d.train = std::move(train);
  d.valid = std::move(valid);
  return d;
}

// --data-path: Megatron's GPT datasets, split and blended as Megatron builds them, with the
// sample counts of Megatron's schedule (train_iters x global batch, and the evaluations').
RunData megatron_data(const TrainRunConfig& c) {
  const TrainConfig& tc = c.train;
  data::SampleCountArgs counts;
  counts.train_iters = tc.train_iters;
  counts.global_batch_size = tc.global_batch_size;
  counts.eval_interval = tc.eval_interval > 0 ? tc.eval_interval : std::max<int64_t>(tc.train_iters, 1);
  counts.eval_iters = tc.eval_iters;
  data::GPTDataConfig config;
  config.blend = data::parse_data_path(c.data_path);
  config.split = c.split;
  config.sequence_length = tc.seq_length;
  config.seed = static_cast<int64_t>(tc.seed);
  config.data_cache_path = c.data_cache_path;
  config.num_samples = data::megatron_sample_counts(counts);
  const auto splits = data::build_gpt_datasets(config, [](const std::string& prefix) {
    return std::make_shared<data::IndexedDataset>(prefix);
  });
  MOE_CHECK(splits[0] != nullptr, "--split ", c.split,
            " gives the training split no documents; nothing to train on");
  std::string corpora;
  for (size_t i = 0; i < config.blend.prefixes.size(); ++i) {
    if (i > 0) corpora += ", ";
    if (config.blend.weights)
      corpora += moe::detail::concat((*config.blend.weights)[i], " x ");
    corpora += config.blend.prefixes[i];
  }
  RunData d;
  d.description = moe::detail::concat("data: ", splits[0]->size(), " training samples of ",
                                      tc.seq_length + 1, " tokens from ", corpora, " (--split ",
                                      c.split, ")");
  if (splits[1]) {
    d.description += moe::detail::concat("; ", splits[1]->size(), " validation samples");
  } else {
    d.description += "; no validation split (--split gives it no documents)";
  }
  d.train = std::make_unique<GPTBatchSource>(splits[0]);
  if (splits[1]) d.valid = std::make_unique<GPTBatchSource>(splits[1]);
  return d;
}

}  // namespace

TrainHooks standard_train_hooks() {
  TrainHooks hooks;
  hooks.load = load_checkpoint;
  hooks.save = save_checkpoint;
  hooks.after_training = print_sample;
  return hooks;
}

Device train_device(const TrainRunConfig& c) {
  return !c.cpu && cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
}

TrainRunResult run_training(const TrainRunConfig& config, const TrainHooks& hooks, std::FILE* out) {
  refuse_unwired(config, hooks);
  if (dist::read_launch_env().world_size > 1) {
    // Several ranks (moe launch, torchrun, srun, mpirun): they meet and rank 0 says where each
    // is, so the launch path is exercised; then every rank refuses, honestly.
    dist::DistributedOptions options = config.distributed;
    options.cpu = options.cpu || config.cpu;
    const dist::World world = dist::init_distributed(options);
    if (world.rank() == 0 && out) {
      std::fprintf(out, "%s", dist::describe_world(world).c_str());
      std::fflush(out);
    }
    world.world->barrier();  // on a shared terminal the start-up lines come first
    MOE_FAIL("world size ", world.size(), ": data-parallel training is not in this build yet");
  }
  const Device device = train_device(config);
  MOE_CHECK(!config.bf16 || device.is_cuda(),
            "--bf16 trains on a GPU; on the CPU the model trains in f32 (drop --bf16)");
  const DType dtype = config.bf16 ? DType::bf16 : DType::f32;

  const TrainConfig& tc = config.train;
  const RunData data = config.data_path.empty() ? builtin_data(tc) : megatron_data(config);

  nn::GPTModel model(config.model, dtype, device, tc.seed);
  Trainer trainer(model, tc, *data.train, tc.eval_iters > 0 ? data.valid.get() : nullptr);

  TrainLoggerOptions log_options;
  log_options.train_iters = tc.train_iters;
  log_options.global_batch_size = tc.global_batch_size;
  log_options.seq_length = tc.seq_length;
  log_options.device = device;
  log_options.metrics_jsonl = config.metrics_path();
  log_options.append_metrics = !config.load.empty();
  log_options.tensorboard_dir = config.tensorboard_dir;
  TrainLogger logger(config.model, log_options, out);

  if (out) {
    std::fprintf(out, "%s", describe(config).c_str());
    std::fprintf(out, "%s\n", data.description.c_str());
    std::fprintf(out, "device: %s, %s%s%s%s\n", device.str().c_str(), dtype_name(dtype),
                 log_options.metrics_jsonl.empty() ? "" : "; metrics -> ",
                 log_options.metrics_jsonl.c_str(),
                 config.tensorboard_dir.empty() ? "" : ("; tensorboard -> " + config.tensorboard_dir).c_str());
    std::fflush(out);
  }

  TrainSession session{config, model, trainer, *data.train, data.valid.get(), logger};
  if (!config.load.empty()) hooks.load(session);

  TrainRunResult result;
  const auto start = std::chrono::steady_clock::now();
  auto evaluate = [&] {
    const double loss = trainer.evaluate();
    logger.on_eval(trainer.iteration(), trainer.consumed_samples(), loss);
    result.valid_losses.emplace_back(trainer.iteration(), loss);
  };
  const bool can_eval = tc.eval_iters > 0 && data.valid != nullptr;
  // --moe-per-layer-logging
  MoELayerStatsCollector layer_stats(config.model.moe.moe_expert_capacity_factor.has_value());
  if (config.moe_per_layer_logging)
    trainer.on_micro_batch = [&](const nn::GPTContext& ctx) { layer_stats.observe(ctx); };
  while (trainer.iteration() < tc.train_iters) {
    const StepMetrics m = trainer.train_step();
    ++result.iterations;
    result.losses.push_back(m.skipped ? std::numeric_limits<double>::quiet_NaN() : m.loss);
    const bool last = m.iteration == tc.train_iters;
    const bool log_now = last || m.iteration % tc.log_interval == 0;
    logger.on_step(m, log_now,
                   log_now && config.moe_per_layer_logging ? layer_stats.take()
                                                           : std::vector<MoELayerStats>{});
    if (can_eval && tc.eval_interval > 0 && m.iteration % tc.eval_interval == 0 && !last) evaluate();
    if (hooks.save && config.save_interval > 0 && m.iteration % config.save_interval == 0 && !last)
      hooks.save(session);
  }
  if (can_eval && result.iterations > 0) evaluate();  // Megatron evaluates after training too
  if (hooks.save && !config.save.empty()) hooks.save(session);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (out) {
    std::fprintf(out, "trained %lld iterations in %s\n", static_cast<long long>(result.iterations),
                 format_duration(result.seconds).c_str());
    std::fflush(out);
  }
  if (hooks.after_training) hooks.after_training(session);
  return result;
}

}  // namespace moe::train
