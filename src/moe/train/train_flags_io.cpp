// `moe train`'s flags for what a run reads and writes: evaluation and logging, checkpoints and
// upcycling, data and tokenizer, the text sample and the config file (train_flag_table.h).
#include "moe/core/error.h"
#include "moe/train/train_flag_table.h"

namespace moe::train::flags {

// Evaluation and logging.
void add_logging_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(
      value("--log-interval", "N", "train.log_interval: a log line every N iterations",
            [](S& s, V v) { s.run.train.log_interval = as_count("--log-interval", v, 1); }));
  t.push_back(
      value("--eval-interval", "N", "train.eval_interval (0: no evaluation)",
            [](S& s, V v) { s.run.train.eval_interval = as_count("--eval-interval", v, 0); }));
  t.push_back(value("--eval-iters", "N", "train.eval_iters: global batches per evaluation",
                    [](S& s, V v) { s.run.train.eval_iters = as_count("--eval-iters", v, 0); }));
  t.push_back(value("--tensorboard-dir", "DIR", "TensorBoard event files",
                    [](S& s, V v) { s.run.tensorboard_dir = v; }));
  t.push_back(value("--log-dir", "DIR", "moecore: metrics.jsonl in DIR",
                    [](S& s, V v) { s.run.log_dir = v; }));
  t.push_back(value("--metrics-jsonl", "FILE", "moecore: the JSONL metrics file",
                    [](S& s, V v) { s.run.metrics_jsonl = v; }));
  t.push_back(toggle("--moe-per-layer-logging",
                     "per MoE layer: aux loss, z loss, expert load min/max/cv, dropped tokens",
                     [](S& s, V) { s.run.moe_per_layer_logging = true; }));
  t.push_back(toggle("--pipeline-timeline",
                     "moecore: after the first iteration, print the pipeline schedule every "
                     "stage executed as a timeline (micro-batch and chunk per time unit) with "
                     "its bubble",
                     [](S& s, V) { s.run.pipeline_timeline = true; }));
}

// Profiling (step_profiler.h): Megatron-LM's window flags, and where moecore's trace goes.
void add_profile_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(toggle("--profile",
                     "profile iterations (--profile-step-start, --profile-step-end]: a summary "
                     "per stage (host and device time, the device's idle gaps and their cause); "
                     "without --profile-dir / --use-pytorch-profiler the window is Nsight "
                     "Systems' capture range (nsys profile --capture-range=cudaProfilerApi)",
                     [](S& s, V) { s.run.profile.enabled = true; }));
  t.push_back(
      value("--profile-step-start", "N", "--profile starts after iteration N (default 10)",
            [](S& s, V v) { s.run.profile.step_start = as_count("--profile-step-start", v, 0); }));
  t.push_back(
      value("--profile-step-end", "N", "--profile ends after iteration N (default 12)",
            [](S& s, V v) { s.run.profile.step_end = as_count("--profile-step-end", v, 1); }));
  t.push_back(value("--profile-ranks", "R ...",
                    "the global ranks --profile profiles (default: all)", [](S& s, V v) {
                      s.run.profile.ranks.clear();
                      for (const std::string& r : split_values(v))
                        s.run.profile.ranks.push_back(as_count("--profile-ranks", r, 0));
                    }));
  t.push_back(toggle("--use-pytorch-profiler",
                     "with --profile: moecore's own recorder (host ranges and the device's "
                     "kernels, copies and memsets from CUPTI) writes a Chrome trace per rank to "
                     "<--tensorboard-dir>/../torch_profile/rank-R.json, where Megatron writes "
                     "PyTorch's",
                     [](S& s, V) { s.run.profile.use_builtin = true; }));
  t.push_back(value("--profile-dir", "DIR",
                    "moecore: with --profile, record the device too and write each profiled "
                    "rank's Chrome trace (rank-R.json) and summary (rank-R.txt) to DIR",
                    [](S& s, V v) { s.run.profile.dir = v; }));
  t.push_back(toggle("--nvtx-ranges",
                     "moecore's NVTX ranges (route, dispatch, experts, combine, attention, "
                     "communication, optimizer) are always on: they cost nothing until a "
                     "profiler attaches",
                     [](S&, V) {}));
}

// Checkpoints (train_run.h refuses them without the build's checkpoint hooks).
void add_checkpoint_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(
      value("--save", "DIR", "checkpoint folder to write", [](S& s, V v) { s.run.save = v; }));
  t.push_back(value("--load", "DIR", "checkpoint folder to resume from",
                    [](S& s, V v) { s.run.load = v; }));
  t.push_back(value("--save-interval", "N", "a checkpoint every N iterations (0: at the end)",
                    [](S& s, V v) { s.run.save_interval = as_count("--save-interval", v, 0); }));
  t.push_back(toggle("--finetune", "--load the weights only; counters from 0",
                     [](S& s, V) { s.run.finetune = true; }));
  t.push_back(toggle("--no-load-optim", "--load without the optimizer state",
                     [](S& s, V) { s.run.no_load_optim = true; }));
  t.push_back(toggle("--exit-signal-handler",
                     "on SIGTERM (a scheduler's pre-emption) or SIGINT, every rank finishes the "
                     "iteration in progress, --save saves, and the run exits with status 0; "
                     "without it the signal ends the run at once with a report",
                     [](S& s, V) { s.run.exit_signal_handler = true; }));
  t.push_back(toggle("--moe-use-upcycling",
                     "upcycling (arXiv 2410.07524): --load holds a dense checkpoint (training "
                     "checkpoint or model folder); the MoE model of these flags is made from it "
                     "(every expert a copy of the dense MLP, the router fresh; non-MLP tensors "
                     "copied; the shape flags must match the dense model's) and saved to --save "
                     "as iteration 0, then training starts. A --load that holds an MoE "
                     "checkpoint resumes it as usual. No shared experts",
                     [](S& s, V) { s.run.moe_use_upcycling = true; }));
  t.push_back(value("--moe-upcycling-granularity", "G",
                    "granular upcycling: the dense FFN split in G pieces (expert e takes piece "
                    "e mod G, E / G virtual groups share a router row, weights scaled by s^(1/3), "
                    "s = G, or E G / topk with --moe-router-pre-softmax); needs "
                    "--moe-ffn-hidden-size = the dense --ffn-hidden-size / G and --num-experts a "
                    "multiple of G. Default 1: plain copies",
                    [](S& s, V v) {
                      s.run.moe_upcycling_granularity =
                          as_count("--moe-upcycling-granularity", v, 1);
                    }));
}

// Data.
void add_data_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(value("--data-path", "[W] PREFIX ...",
                    "Megatron indexed datasets (PREFIX.bin / PREFIX.idx, e.g. from `moe "
                    "preprocess`): one prefix, several (blended by size), or weight-prefix pairs "
                    "(--data-path 0.3 a 0.7 b); a YAML list works too. Without it the built-in "
                    "corpus is used",
                    [](S& s, V v) { s.run.data_path = split_values(v); }));
  t.push_back(toggle("--mock-data",
                     "synthetic data: random tokens of the model's vocabulary, the same for a seed "
                     "on every machine (Megatron's, with --tokenizer-type NullTokenizer "
                     "--vocab-size N); no corpus, no text sample",
                     [](S& s, V) { s.run.mock_data = true; }));
  t.push_back(value("--split", "SPLIT",
                    "train / validation / test shares of every --data-path corpus's documents "
                    "(default \"969, 30, 1\")",
                    [](S& s, V v) { s.run.split = v; }));
  t.push_back(value("--data-cache-path", "DIR",
                    "where the sample / shuffle indices are cached (default: beside the data, "
                    "<prefix>/cache/GPTDataset_indices)",
                    [](S& s, V v) { s.run.data_cache_path = v; }));
  t.push_back(
      value("--tokenizer-type", "TYPE",
            "HuggingFaceTokenizer, SentencePieceTokenizer or Llama2Tokenizer (with "
            "--tokenizer-model), or byte; the tokenizer the --data-path corpus was made with; "
            "NullTokenizer (ids without text) with --mock-data and --vocab-size",
            [](S& s, V v) {
              s.run.tokenizer_type = one_of("--tokenizer-type", v,
                                            {"HuggingFaceTokenizer", "SentencePieceTokenizer",
                                             "Llama2Tokenizer", "byte", "NullTokenizer"});
            }));
  t.push_back(value("--tokenizer-model", "PATH",
                    "a Hugging Face tokenizer.json (or its folder): sets the default model's "
                    "vocabulary (padded to a multiple of 128, as Megatron pads it) and decodes "
                    "the sample",
                    [](S& s, V v) { s.run.tokenizer_model = v; }));

  t.push_back(value("--sample-tokens", "N",
                    "moecore: after training, print N bytes of text sampled from the model (byte "
                    "vocabularies only; 0: none)",
                    [](S& s, V v) { s.run.sample_tokens = as_count("--sample-tokens", v, 0); }));
  t.push_back(value("--config", "FILE.yaml",
                    "YAML file of flags (keys without dashes); the command line overrides it",
                    [](S& s, V v) { s.run.config_file = v; }));
}

}  // namespace moe::train::flags
