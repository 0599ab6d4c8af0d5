#include "moe/train/train_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <string>

#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/data/builtin_corpus.h"
#include "moe/data/byte_tokenizer.h"
#include "moe/data/gpt_dataset_builder.h"
#include "moe/data/indexed_dataset.h"
#include "moe/data/tokenizer.h"
#include "moe/dist/init.h"
#include "moe/train/exit_signal.h"
#include "moe/train/generate.h"
#include "moe/train/gpt_batch_source.h"
#include "moe/train/interrupt_report.h"
#include "moe/train/memory_report.h"
#include "moe/train/mock_batch_source.h"
#include "moe/train/pipeline_timeline_report.h"
#include "moe/train/step_profiler.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/train_upcycle.h"

namespace moe::train {
namespace {

// The checkpoint flags act through the hooks: a caller of run_training that passes none (a
// test, a program embedding the loop) gets them refused rather than silently not saving.
void require_checkpoint_hooks(const TrainRunConfig& c, const TrainHooks& hooks) {
  const char* none =
      " needs the checkpoint hooks (standard_train_hooks(), which the moe program passes); "
      "this caller of run_training gave none";
  MOE_CHECK(c.load.empty() || hooks.load, "--load", none);
  MOE_CHECK(c.save.empty() || hooks.save, "--save", none);
  MOE_CHECK(c.save_interval == 0 || hooks.save, "--save-interval", none);
  MOE_CHECK(!c.finetune || hooks.load, "--finetune", none);
  MOE_CHECK(!c.no_load_optim || hooks.load, "--no-load-optim", none);
}

// What a step captured as one CUDA graph cannot do besides the trainer's rules (trainer.h).
void check_cuda_graph_flags(const TrainRunConfig& c) {
  if (c.train.cuda_graph_impl != CudaGraphImpl::full_iteration) return;
  MOE_CHECK(!c.moe_per_layer_logging,
            "--moe-per-layer-logging reads every micro-batch's routing on the host, which a "
            "replayed step does not run: not with --cuda-graph-impl full_iteration");
}

namespace fs = std::filesystem;

// What the checkpoint hooks share within one run.
struct CheckpointHookState {
  StandardHookOptions options;
  std::string loaded_folder;  // the training checkpoint the run resumed from ("" : none)
  int64_t loaded_iteration = -1;
};

// The iteration of a training checkpoint's iteration folder: its name, else its manifest's
// "iteration"; nullopt when neither says (the load will name the problem).
std::optional<int64_t> iteration_folder_iteration(const fs::path& folder) {
  const fs::path name =
      folder.filename().empty() ? folder.parent_path().filename() : folder.filename();
  if (const auto n = checkpoint_folder_iteration(name.string())) return n;
  try {
    const nlohmann::json manifest =
        read_json_file((folder / "manifest.json").string(), "checkpoint manifest");
    return manifest.at("iteration").get<int64_t>();
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// Before anything is built: --load is something the run can start from, and --save holds no
// iteration newer than the one the run starts from (train_run.h).
void prepare_checkpoints(const TrainRunConfig& c, const CheckpointHookState& state) {
  std::optional<int64_t> start = 0;  // nullopt: unknown until the load
  std::string from = "from scratch";
  if (!c.load.empty()) {
    const LoadFolderKind kind = classify_load_folder(c.load);  // iteration folders, no tracker
    MOE_CHECK(!c.finetune || kind != LoadFolderKind::none, "--finetune: --load ", c.load,
              " holds no training checkpoint (", kTrackerFileName,
              ", or an iteration folder) and no model folder (model_config.json or config.json) "
              "to fine-tune from");
    if (c.finetune) {
      from = "--finetune starts at iteration 0";
    } else if (kind == LoadFolderKind::save_folder) {
      start = latest_checkpoint_iteration(c.load);
      from = "the checkpoint of --load " + c.load;
    } else if (kind == LoadFolderKind::iteration_folder) {
      start = iteration_folder_iteration(c.load);
      from = "the checkpoint of --load " + c.load;
    } else if (kind == LoadFolderKind::model_folder) {
      from = "the model folder --load " + c.load + " starts at iteration 0";
    }
  }
  // --moe-use-upcycling: a dense --load starts a new run at iteration 0 and the upcycling step
  // itself refuses a --save that holds any checkpoint (train_upcycle.h); an MoE --load resumes
  // and its saves are checked one by one (save_checkpoint).
  if (c.save.empty() || !start || state.options.replace_earlier_saves || c.moe_use_upcycling)
    return;
  const std::vector<int64_t> saved = iteration_folders(c.save);
  int64_t newest = saved.empty() ? -1 : saved.back();
  if (const std::optional<int64_t> tracked = latest_checkpoint_iteration(c.save))
    newest = std::max(newest, *tracked);
  if (newest <= *start) return;
  std::string names;
  for (size_t i = 0; i < saved.size(); ++i)
    names += (i ? ", " : "") + checkpoint_folder_name(saved[i]);
  MOE_FAIL("--save ", c.save, " already holds iteration ", newest,
           names.empty() ? std::string() : " (" + names + ")", ", newer than iteration ", *start,
           ", where this run starts (", from,
           "). Saving there would put this run's iterations beside those, move ", kTrackerFileName,
           " back and, at a common iteration, write over a complete checkpoint (Megatron "
           "refuses to write into an existing iteration folder). To continue that run, --load ",
           c.save, "; to keep both runs, --save another folder; or move those folders away");
}

void load_checkpoint(TrainSession& s, CheckpointHookState& state) {
  // --moe-use-upcycling: a dense --load becomes the run's MoE model (saved as iteration 0);
  // an MoE --load (the upcycled run, resumed) loads below as usual.
  if (s.config.moe_use_upcycling && upcycle_dense_checkpoint(s)) return;
  const std::string& dir = s.config.load;
  const LoadFolderKind kind = classify_load_folder(dir);
  if (kind == LoadFolderKind::none) {
    MOE_CHECK(!s.config.finetune, "--finetune: --load ", dir,
              " holds no checkpoint and no model folder to fine-tune from");
    s.logger.note("--load " + dir + ": no checkpoint there yet; training from scratch");
    return;
  }
  if (kind == LoadFolderKind::model_folder) {
    // A model, not a training checkpoint: weights only, whatever --finetune says. Each rank
    // reads its own slices (an expert-parallel rank only its experts: checkpoint/model_io.h).
    const std::vector<std::string> differences =
        load_model_folder_weights(dir, s.model, &s.trainer);
    if (s.world.reports_interrupts) interrupt_report_loaded(dir);
    s.logger.note("loaded the weights of the model folder " + dir +
                  " (not a training checkpoint: fresh optimizer, counters from 0)");
    for (const std::string& d : differences) s.logger.note("  config differs: " + d);
    return;
  }
  LoadOptions options;
  options.finetune = s.config.finetune;
  options.no_load_optim = s.config.no_load_optim;
  const LoadResult r = load_training_checkpoint(dir, s.model, &s.trainer, options);
  state.loaded_folder = r.folder;
  state.loaded_iteration = s.trainer.iteration();
  if (s.world.reports_interrupts) interrupt_report_loaded(r.folder);
  s.logger.note(moe::detail::concat("loaded checkpoint ", r.folder, " (iteration ", r.iteration,
                                    ")", r.loaded_optimizer ? "" : "; optimizer not loaded",
                                    r.loaded_trainer_state ? "" : "; counters from 0"));
  for (const std::string& d : r.config_differences) s.logger.note("  config differs: " + d);
  for (const std::string& w : r.warnings) s.logger.note("  warning: " + w);
}

bool same_folder(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec) && !ec;
}

void save_checkpoint(TrainSession& s, const CheckpointHookState& state) {
  const int64_t iteration = s.trainer.iteration();
  const fs::path target = fs::path(s.config.save) / checkpoint_folder_name(iteration);
  if (fs::exists(target)) {
    if (iteration == state.loaded_iteration && same_folder(target, state.loaded_folder)) {
      s.logger.note("not saved: " + target.string() +
                    " is the checkpoint this run loaded, and nothing was trained since");
      return;
    }
    MOE_CHECK(state.options.replace_earlier_saves, "--save: ", target.string(),
              " already exists; refusing to write over a complete checkpoint of another run "
              "(Megatron refuses to write into an existing iteration folder). Give --save "
              "another folder, or move that one away");
    s.logger.note("replacing " + target.string() + ", the default run's earlier checkpoint");
  }
  if (s.world.reports_interrupts) interrupt_report_saving(target.string());
  const SaveResult r =
      save_training_checkpoint(s.config.save, s.model, s.trainer, run_config_json(s.config));
  if (s.world.reports_interrupts) interrupt_report_saved(r.folder, s.config.save);
  for (const std::string& c : r.cleaned)
    s.logger.note("--save " + s.config.save + ": " + c + " (left by an interrupted save)");
  s.logger.note("saved checkpoint " + r.folder);
}

// generate_text's sample from an empty prompt on a rank of several. The forward of a model
// with expert parallelism is collective (the token dispatch), so every rank must run as many
// forwards as the others: generation does not stop at the end-of-document id (a rank's own
// sample could reach it at another step than rank 0's), and the text is cut there afterwards.
// The same text as generate_text when the ranks' logits agree.
std::string sample_on_every_rank(nn::GPTModel& model, const data::Tokenizer& tokenizer,
                                 GenerateOptions options) {
  MOE_CHECK(model.config().vocab_size >= tokenizer.vocab_size(), "model ", model.config().name,
            " has ", model.config().vocab_size, " vocabulary ids, fewer than the tokenizer's ",
            tokenizer.vocab_size(), " (", tokenizer.description(), ")");
  options.sampled_vocab_size = tokenizer.vocab_size();
  // The KV cache runs on one rank's whole model: under TP or CP every step recomputes the window.
  if (model.groups().tp.active() || model.groups().cp.active()) options.kv_cache = false;
  const std::optional<int64_t> end = tokenizer.end_of_document();
  options.end_of_document_id.reset();
  std::vector<int64_t> prompt = tokenizer.encode_document("");
  if (prompt.empty() && end) prompt.push_back(*end);
  MOE_CHECK(!prompt.empty(), "generate: ", tokenizer.description(),
            " gives no ids for an empty prompt and has no end-of-document id");
  std::vector<int64_t> generated = generate(model, prompt, options);
  if (end) generated.erase(std::find(generated.begin(), generated.end(), *end), generated.end());
  return tokenizer.decode(generated);
}

void print_sample(TrainSession& s) {
  if (s.config.sample_tokens <= 0) return;
  if (!s.model.is_whole()) {
    s.logger.note(
        "no text sample: generation runs on a rank that holds the whole model, and each "
        "pipeline rank holds its stages (moe generate --load the checkpoint)");
    return;
  }
  // The corpus's tokenizer: --tokenizer-*, else the tokenizer.json of a --load model folder (a
  // Hugging Face folder fine-tuned as it is: the sample is text in its vocabulary), else byte
  // tokens (the built-in corpus).
  std::string tokenizer_model = s.config.tokenizer_model;
  if (s.config.tokenizer_type.empty() && tokenizer_model.empty() && !s.config.load.empty() &&
      std::filesystem::is_regular_file(std::filesystem::path(s.config.load) / "tokenizer.json"))
    tokenizer_model = s.config.load;
  const std::unique_ptr<data::Tokenizer> tokenizer =
      data::make_tokenizer(s.config.tokenizer_type, tokenizer_model);
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
  const std::string text = s.world.size() > 1 ? sample_on_every_rank(s.model, *tokenizer, options)
                                              : generate_text(s.model, *tokenizer, "", options);
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
  d.description = moe::detail::concat("data: built-in corpus ", corpus.source, ": ", corpus.files,
                                      " files, ", corpus.train_documents, " training documents (",
                                      corpus.train.size(), " byte tokens, ", train->num_samples(),
                                      " samples), ", corpus.valid_documents,
                                      " validation documents (", corpus.valid.size(), " tokens)");
  d.train = std::move(train);
  d.valid = std::move(valid);
  return d;
}

// --mock-data: random tokens of the model's vocabulary (mock_batch_source.h), the validation
// stream drawn with the next seed.
RunData mock_data(const TrainRunConfig& c) {
  const TrainConfig& tc = c.train;
  const int64_t vocab = c.model.vocab_size;
  RunData d;
  d.train = std::make_unique<MockTokenSource>(vocab, tc.seq_length, tc.seed);
  d.valid = std::make_unique<MockTokenSource>(vocab, tc.seq_length, tc.seed + 1);
  d.description = moe::detail::concat("data: --mock-data, random tokens of the ", vocab,
                                      "-id vocabulary (seed ", tc.seed, ")");
  return d;
}

// --data-path: Megatron's GPT datasets, split and blended as Megatron builds them, with the
// sample counts of Megatron's schedule (--train-samples, or train_iters x global batch, and the
// evaluations').
RunData megatron_data(const TrainRunConfig& c) {
  const TrainConfig& tc = c.train;
  data::SampleCountArgs counts;
  counts.train_iters = tc.train_iters;
  if (tc.train_samples > 0) counts.train_samples = tc.train_samples;  // Megatron's, as given
  counts.global_batch_size = tc.global_batch_size;
  counts.eval_interval =
      tc.eval_interval > 0 ? tc.eval_interval : std::max<int64_t>(tc.train_iters, 1);
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
    if (config.blend.weights) corpora += moe::detail::concat((*config.blend.weights)[i], " x ");
    corpora += config.blend.prefixes[i];
  }
  RunData d;
  d.description =
      moe::detail::concat("data: ", splits[0]->size(), " training samples of ", tc.seq_length + 1,
                          " tokens from ", corpora, " (--split ", c.split, ")");
  if (splits[1]) {
    d.description += moe::detail::concat("; ", splits[1]->size(), " validation samples");
  } else {
    d.description += "; no validation split (--split gives it no documents)";
  }
  d.train = std::make_unique<GPTBatchSource>(splits[0]);
  if (splits[1]) d.valid = std::make_unique<GPTBatchSource>(splits[1]);
  return d;
}

// The ranks of one expert group: ETP x EP (ETP 0: TP, Megatron's default).
int64_t expert_group_size(const dist::ParallelConfig& p) {
  const int etp = p.expert_tensor_parallel_size == 0 ? p.tensor_model_parallel_size
                                                     : p.expert_tensor_parallel_size;
  return int64_t{etp} * p.expert_model_parallel_size;
}

// ETP x EP must divide the world (the rest of the ranks are expert data-parallel); known only
// now, so checked here, naming the flags.
void check_expert_mapping(const TrainRunConfig& c, int world_size) {
  const dist::ParallelConfig& p = c.parallel;
  const int64_t n = expert_group_size(p);
  if (world_size % n == 0) return;
  MOE_FAIL("--expert-tensor-parallel-size ", n / p.expert_model_parallel_size,
           " x --expert-model-parallel-size ", p.expert_model_parallel_size, " = ", n,
           " ranks per expert group does not divide the world size ", world_size,
           world_size == 1 ? " (one process: start several with moe launch, torchrun, srun or "
                             "mpirun)"
                           : " (the ranks of the launch)");
}

// The parallel flags' rules that need the model and the world: tensor parallelism's (Megatron-LM's
// arguments.py, and the sequence split), and what a run of several ranks cannot do yet:
// --moe-use-upcycling (the upcycling step builds and saves the MoE model from the dense one on
// one rank: train_upcycle.h). Training checkpoints save and load under any mapping
// (train_checkpoint.h), and model folders load into any mapping (each rank its slices).
// The pipeline layout of the flags (nn/pipeline_layout.h), validated as Megatron does.
nn::PipelineLayout pipeline_layout(const TrainRunConfig& c) {
  nn::PipelineLayoutOptions o = c.pipeline;
  o.num_layers = c.model.num_layers;
  o.mtp_num_layers = c.model.mtp_num_layers;
  o.pipeline_size = c.parallel.pipeline_model_parallel_size;
  if (c.num_layers_per_virtual_pipeline_stage > 0)
    o.virtual_stages = nn::virtual_stages_from_layers_per_virtual_stage(
        o, c.num_layers_per_virtual_pipeline_stage);
  return nn::PipelineLayout(o);
}

// This pipeline rank's chunks (empty: the whole model).
std::vector<nn::PipelineStage> pipeline_chunks(const TrainRunConfig& c,
                                               const dist::ParallelState* state) {
  if (!state || state->pp_size() == 1) return {};
  const nn::PipelineLayout layout = pipeline_layout(c);
  std::vector<nn::PipelineStage> chunks;
  for (int v = 0; v < layout.virtual_stages(); ++v)
    chunks.push_back(layout.stage_of(state->pp_rank(), v));
  return chunks;
}

void check_parallel_flags(const TrainRunConfig& c, int world_size) {
  const int tp = c.parallel.tensor_model_parallel_size;
  const nn::PipelineLayout layout = pipeline_layout(c);  // throws naming a bad layout flag
  MOE_CHECK(!c.pipeline_timeline || layout.pipeline_size() > 1,
            "--pipeline-timeline draws the schedule of pipeline stages: it needs "
            "--pipeline-model-parallel-size above 1");
  if (layout.pipeline_size() > 1) {
    MOE_CHECK(!c.moe_per_layer_logging,
              "--moe-per-layer-logging under --pipeline-model-parallel-size ",
              layout.pipeline_size(), " is not built yet; leave it out");
  }
  // Megatron-LM's rules for tensor parallelism (arguments.py), and what splitting needs.
  MOE_CHECK(!(tp > 1 && c.parallel.expert_model_parallel_size > 1 && c.model.moe.num_experts > 0) ||
                c.sequence_parallel,
            "--tensor-model-parallel-size ", tp, " with --expert-model-parallel-size ",
            c.parallel.expert_model_parallel_size,
            " needs --sequence-parallel (Megatron-LM: \"When using expert parallelism and tensor "
            "parallelism, sequence parallelism must be used\")");
  const int cp = c.parallel.context_parallel_size;
  MOE_CHECK(c.train.seq_length % (2 * cp) == 0 || cp == 1, "--seq-length ", c.train.seq_length,
            " is not divisible by 2 x --context-parallel-size ", cp,
            " (each CP rank holds two load-balanced chunks of every sequence)");
  if (cp > 1 && c.cp_comm_type == "a2a") {
    // Ulysses splits each TP rank's heads over CP (MLA: as many key/value heads as queries).
    const int64_t heads = c.model.num_attention_heads;
    const int64_t kv_heads =
        c.model.attention_type == nn::AttentionType::mla ? heads : c.model.num_query_groups;
    MOE_CHECK(
        heads % tp == 0 && kv_heads % tp == 0 && heads / tp % cp == 0 && kv_heads / tp % cp == 0,
        "--cp-comm-type a2a splits each tensor-parallel rank's attention heads over the "
        "--context-parallel-size ",
        cp, " ranks, but --num-attention-heads ", heads, " and ",
        c.model.attention_type == nn::AttentionType::mla ? "its key/value heads "
                                                         : "--num-query-groups ",
        kv_heads, " over --tensor-model-parallel-size ", tp,
        " do not divide by it; use --cp-comm-type p2p or all_gather");
  }
  if (tp > 1 && (c.sequence_parallel || c.model.moe.num_experts > 0))
    MOE_CHECK(c.train.seq_length / cp % tp == 0, "--seq-length ", c.train.seq_length,
              cp > 1 ? moe::detail::concat(" / --context-parallel-size ", cp) : std::string(),
              " is not divisible by --tensor-model-parallel-size ", tp,
              c.sequence_parallel ? " (--sequence-parallel splits the sequence)"
                                  : " (the MoE layers route 1/TP of the sequence on each rank)");
  if (world_size <= 1) return;
  MOE_CHECK(!c.moe_use_upcycling, "world size ", world_size,
            ": --moe-use-upcycling is not supported by a run of several ranks yet; upcycle on one "
            "rank (it saves the MoE model to --save as iteration 0), then --load that on several");
}

nn::ContextParallel::Exchange cp_exchange(const std::string& cp_comm_type) {
  if (cp_comm_type == "all_gather") return nn::ContextParallel::Exchange::all_gather;
  if (cp_comm_type == "a2a") return nn::ContextParallel::Exchange::a2a;
  return nn::ContextParallel::Exchange::p2p;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The run's data on every rank. Several ranks with --data-path: rank 0 builds (and caches) the
// indices first, then the others read them (Megatron's order), so that they do not all build
// and write the same cache at once.
RunData run_data(const TrainRunConfig& c, const TrainWorld& world) {
  if (c.mock_data) return mock_data(c);
  const auto make = [&] { return c.data_path.empty() ? builtin_data(c.train) : megatron_data(c); };
  if (world.size() == 1 || c.data_path.empty()) return make();
  RunData data;
  if (world.rank() == 0) data = make();
  world.group->barrier();
  if (world.rank() != 0) data = make();
  return data;
}

}  // namespace

TrainHooks standard_train_hooks(const StandardHookOptions& options) {
  auto state = std::make_shared<CheckpointHookState>();
  state->options = options;
  TrainHooks hooks;
  hooks.prepare = [state](const TrainRunConfig& c) { prepare_checkpoints(c, *state); };
  hooks.load = [state](TrainSession& s) { load_checkpoint(s, *state); };
  hooks.save = [state](TrainSession& s) { save_checkpoint(s, *state); };
  hooks.after_training = print_sample;
  return hooks;
}

Device train_device(const TrainRunConfig& c) {
  return !c.cpu && cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
}

TrainRunResult run_training(const TrainRunConfig& config, const TrainHooks& hooks, std::FILE* out) {
  const int launched = dist::read_launch_env().world_size;
  if (launched <= 1)
    return run_training_on(config, TrainWorld{nullptr, train_device(config), true}, hooks, out);
  // Several ranks (moe launch, torchrun, srun, mpirun): they meet and rank 0 says where each
  // is (with the mapping, when the world divides into it; else the refusal below names it).
  interrupt_report_reset();
  require_checkpoint_hooks(config, hooks);
  dist::DistributedOptions options = config.distributed;
  options.cpu = options.cpu || config.cpu;
  const dist::World world = dist::init_distributed(options);
  if (world.rank() == 0 && out) {
    const bool fits = world.size() % expert_group_size(config.parallel) == 0;
    std::fprintf(
        out, "%s",
        dist::describe_world(world, fits ? config.parallel : dist::ParallelConfig{}).c_str());
    std::fflush(out);
  }
  world.world->barrier();  // on a shared terminal the start-up lines come first
  return run_training_on(config, TrainWorld{world.world, world.device, true}, hooks, out);
}

TrainRunResult run_training_on(const TrainRunConfig& config, const TrainWorld& world,
                               const TrainHooks& hooks, std::FILE* all_out) {
  // Process-wide state (the interrupt report) is one rank's when ranks share the process.
  const auto report = [&](const auto& update) {
    if (world.reports_interrupts) update();
  };
  report([] { interrupt_report_reset(); });
  require_checkpoint_hooks(config, hooks);
  check_cuda_graph_flags(config);
  check_expert_mapping(config, world.size());
  check_parallel_flags(config, world.size());
  for (const int64_t r : config.profile.ranks)
    MOE_CHECK(r < world.size(), "--profile-ranks ", r, ": the run has ", world.size(), " rank",
              world.size() == 1 ? "" : "s", " (0 to ", world.size() - 1, ")");
  std::FILE* out = world.rank() == 0 ? all_out : nullptr;
  if (hooks.prepare) hooks.prepare(config);
  const Device device = world.device;
  MOE_CHECK(!config.bf16 || device.is_cuda(),
            "--bf16 trains on a GPU; on the CPU the model trains in f32 (drop --bf16)");
  const DType dtype = config.bf16 ? DType::bf16 : DType::f32;

  // The mapping (null on one rank: nothing of it exists there).
  std::shared_ptr<dist::ParallelState> state;
  if (world.size() > 1) state = std::make_shared<dist::ParallelState>(world.group, config.parallel);
  const int64_t dp = state ? state->dp_size() : 1;  // CP ranks share their samples
  TrainRunConfig run = config;                      // with what the mapping decides
  TrainConfig& tc = run.train;
  if (run.global_batch_follows_data_parallel) tc.global_batch_size = tc.micro_batch_size * dp;
  // --train-samples: Megatron's update_train_iters, for the global batch the mapping gives.
  if (tc.train_samples > 0) tc.train_iters = tc.iterations_of_samples();
  if (state) {
    run.model.moe.expert_model_parallel_size = state->ep_size();
    run.model.moe.expert_tensor_parallel_size = state->etp_size();
  }

  const RunData data = run_data(run, world);
  nn::GPTModel model(
      run.model, dtype, device, tc.seed,
      state ? nn::model_groups_of(*state, run.sequence_parallel, cp_exchange(run.cp_comm_type))
            : nn::ModelGroups{},
      pipeline_chunks(run, state.get()));
  model.set_recompute(run.recompute);
  Trainer trainer(model, tc, *data.train, tc.eval_iters > 0 ? data.valid.get() : nullptr,
                  state ? TrainParallel{state, run.ddp} : TrainParallel{});

  TrainLoggerOptions log_options;
  log_options.train_iters = tc.train_iters;
  log_options.global_batch_size = tc.global_batch_size;
  log_options.seq_length = tc.seq_length;
  log_options.device = device;
  log_options.world_size = world.size();
  if (world.rank() == 0) {
    log_options.metrics_jsonl = run.metrics_path();
    log_options.tensorboard_dir = run.tensorboard_dir;
  }
  log_options.append_metrics = !run.load.empty();
  TrainLogger logger(run.model, log_options, out);
  logger.follow(trainer);

  if (out) {
    std::fprintf(out, "%s", describe(run, dp).c_str());
    std::fprintf(out, "%s\n", data.description.c_str());
    std::fprintf(
        out, "device: %s, %s%s%s%s\n", device.str().c_str(), dtype_name(dtype),
        log_options.metrics_jsonl.empty() ? "" : "; metrics -> ", log_options.metrics_jsonl.c_str(),
        run.tensorboard_dir.empty() ? "" : ("; tensorboard -> " + run.tensorboard_dir).c_str());
    std::fflush(out);
  }
  if (state) {  // every rank's holdings, gathered to rank 0
    const std::vector<RankMemory> ranks =
        gather_rank_memory(rank_memory(model, trainer), world.group, device);
    if (out) {
      std::fprintf(out, "%s", format_memory_report(ranks).c_str());
      std::fflush(out);
    }
  }

  TrainSession session{run, model, trainer, *data.train, data.valid.get(), logger, world};
  if (!config.load.empty()) hooks.load(session);

  TrainRunResult result;
  const auto start = std::chrono::steady_clock::now();
  auto evaluate = [&] {
    report([&] { interrupt_report_evaluation(trainer.iteration()); });
    const double loss = trainer.evaluate();
    logger.on_eval(trainer.iteration(), trainer.consumed_samples(), loss);
    result.valid_losses.emplace_back(trainer.iteration(), loss);
  };
  const bool can_eval = tc.eval_iters > 0 && data.valid != nullptr;
  int64_t saved_iteration = -1;  // the iteration the last save in the loop wrote
  // --moe-per-layer-logging: every rank observes its micro-batches; at a log point the ranks
  // sum what they saw (the global batch's statistics), which rank 0 logs.
  MoELayerStatsCollector layer_stats(config.model.moe.moe_expert_capacity_factor.has_value());
  if (state) layer_stats.set_group(state->dp_cp(), device);
  if (config.moe_per_layer_logging)
    trainer.on_micro_batch = [&](const nn::GPTContext& ctx) { layer_stats.observe(ctx); };
  // --profile: its window's steps recorded; rank 0 prints its summary, each rank with a trace
  // folder writes its own there.
  StepProfiler profiler(config.profile, world.rank(), config.tensorboard_dir, device.is_cuda(),
                        out);
  if (world.size() > 1)
    profiler.set_gather([&](const RankProfile& mine) {
      const std::vector<double> all =
          dist::all_gather_values(*world.group, rank_profile_fields(mine), device);
      std::vector<RankProfile> ranks;
      for (int r = 0; r < world.size(); ++r)
        ranks.push_back(rank_profile_of_fields(all.data() + r * kRankProfileFields));
      return ranks;
    });
  while (trainer.iteration() < tc.train_iters) {
    report([&] { interrupt_report_iteration(trainer.iteration() + 1, tc.train_iters); });
    profiler.before_step(trainer.iteration());
    const StepMetrics m = trainer.train_step();
    ++result.iterations;
    result.losses.push_back(m.skipped ? std::numeric_limits<double>::quiet_NaN() : m.loss);
    if (config.pipeline_timeline && state && result.iterations == 1) {
      const std::vector<std::vector<PipelineAction>> ranks =
          gather_pipeline_actions(trainer.executed_pipeline_actions(), state->pp(), device);
      if (out) {
        std::fprintf(out, "%s", format_pipeline_timeline(ranks, m.iteration).c_str());
        std::fflush(out);
      }
    }
    if (state && result.iterations == 1) {  // the peaks after the first iteration
      RankMemory mine;
      mine.peak_bytes = measure_peak_memory(device);
      const std::vector<RankMemory> ranks = gather_rank_memory(mine, world.group, device);
      if (out) {
        std::fprintf(out, "%s", format_peak_memory(ranks, m.iteration, device).c_str());
        std::fflush(out);
      }
    }
    const bool last = m.iteration == tc.train_iters;
    const bool log_now = last || m.iteration % tc.log_interval == 0;
    logger.on_step(m, log_now,
                   log_now && config.moe_per_layer_logging ? layer_stats.take()
                                                           : std::vector<MoELayerStats>{});
    if (can_eval && tc.eval_interval > 0 && m.iteration % tc.eval_interval == 0 && !last)
      evaluate();
    if (hooks.save && config.save_interval > 0 && m.iteration % config.save_interval == 0 &&
        !last) {
      hooks.save(session);
      saved_iteration = m.iteration;
    }
    profiler.after_step(m.iteration);
    if (config.exit_signal_handler) {
      result.exit_signal = agreed_exit_signal(exit_signal_received(), world.group, device);
      if (result.exit_signal != 0) break;
    }
  }
  profiler.finish(trainer.iteration());
  if (result.exit_signal != 0) {
    // --exit-signal-handler: save what was trained (unless just saved) and stop; no final
    // evaluation, no sample (a pre-empted job has seconds left).
    if (hooks.save && !config.save.empty() && saved_iteration != trainer.iteration())
      hooks.save(session);
    result.seconds = seconds_since(start);
    logger.note(moe::detail::concat(
        "exiting after iteration ", trainer.iteration(), " of ", tc.train_iters, ": received ",
        exit_signal_name(result.exit_signal), " (--exit-signal-handler); trained ",
        result.iterations, " iterations in ", format_duration(result.seconds)));
    return result;
  }
  if (can_eval && result.iterations > 0) evaluate();  // Megatron evaluates after training too
  if (hooks.save && !config.save.empty()) hooks.save(session);
  result.seconds = seconds_since(start);
  if (out) {
    std::fprintf(out, "trained %lld iterations in %s\n", static_cast<long long>(result.iterations),
                 format_duration(result.seconds).c_str());
    std::fflush(out);
  }
  report([&] {
    interrupt_report_phase("after training (" + std::to_string(result.iterations) +
                           " iterations done), while sampling text");
  });
  if (hooks.after_training) hooks.after_training(session);
  return result;
}

}  // namespace moe::train
