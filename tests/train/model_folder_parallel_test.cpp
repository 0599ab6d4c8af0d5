// Hugging Face model folders (and the same weights as a moecore folder) loaded into
// tensor-, context- and expert-parallel models (load_model_folder_weights), on Local threads in
// f64. Under TP each rank holds its box of q/k/v/o_proj, gate/up/down_proj (dense MLPs and shared
// experts), MLA's q_b_proj / kv_b_proj, embed_tokens and lm_head (split by vocabulary), and reads
// only that from the folder; under CP every rank holds the dense weights whole and its two
// load-balanced chunks of the sequence (nn/context_parallel.h); under EP its experts. Every
// rank's logits (logits(): all positions on every rank) and forward()'s lm loss must equal those
// of one rank loading the same folder (1e-10 relative: the mappings sum in other orders) and
// transformers' stored outputs (1e-4, as tests/nn/hf_parity_test.cpp).
//
// The folders are the parity fixtures (tests/fixtures/hf/, made by transformers); under TP they
// are padded so that TP 2 divides what it splits: the fixtures' vocabularies (293-311) and FFN
// widths (21-45) are odd on purpose. A padded FFN row of gate/up_proj and column of down_proj are
// zero, so the padded unit adds silu(0) * 0 = 0: the logits do not change. A padded vocabulary
// row of lm_head is zero, so its logit is 0: the real logits do not change, and the loss is the
// cross-entropy of transformers' logits with that one 0 logit appended. CP splits no weight: its
// mappings without TP read the fixture folders as they are.
//
// Sequences: the fixtures' 13 tokens are cut to 12 (MoE layers under TP route sequence shards,
// CP 2 cuts 2 CP = 4 chunks, and TP 2 x CP 2 shards each rank's 6 rows in 3 + 3): with causal
// attention the first 12 positions' logits are transformers' own. The whole 13 tokens are run
// too: logits() pads them itself where the mapping does not divide them, and forward() gets them
// padded at the end (the last token repeated, labels ignore_index there) up to a multiple of
// TP x 2 CP: causal attention keeps the padding out of the real positions, and the ignored labels
// out of the loss, which is then transformers' stored loss (the padded vocabulary's 0 logit aside).
//
// The models route in f64 (f64_router below) so that a position's logits do not depend on how many
// tokens a rank routes.
//
// Mappings: TP 2, TP 2 with --sequence-parallel, TP 2 x EP 2 (ETP 1, DP 2) with
// --sequence-parallel on 4 ranks, CP 2, TP 2 x CP 2 with --sequence-parallel on 4 ranks, and
// CP 2 x EP 2 on 2 ranks (the expert grid folds CP into EP). Mixtral's 5 experts leave EP 2 out.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <set>

#include "common/printed_text.h"
#include "moe/checkpoint/model_io.h"
#include "moe/checkpoint/tensor_source.h"
#include "moe/dist/local_backend.h"
#include "moe/dist/parallel_state.h"
#include "moe/io/safetensors.h"
#include "moe/train/train_args.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/train_run.h"
#include "nn/hf_fixture.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;
using test::HfFixture;

constexpr int kTp = 2;
constexpr int kCp = 2;
constexpr int64_t kSeq = 12;               // the fixtures' 13 cut (see above)
constexpr double kMappingTol = 1e-10;      // f64, sums in another order
constexpr double kTransformersTol = 1e-4;  // f64 against transformers' f32 (hf_parity_test)

int64_t round_up(int64_t n) {
  return (n + kTp - 1) / kTp * kTp;
}

// A path under the temporary directory, named after the process and `name`, removed when the
// test ends (failed or not).
struct ScratchPath {
  explicit ScratchPath(const std::string& name)
      : path(fs::temp_directory_path() /
             ("moe_model_folder_parallel_" + std::to_string(::getpid()) + "_" + name)) {
    fs::remove_all(path);
  }
  ~ScratchPath() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  fs::path path;
};

// A copy of `t` [R, C] (f32 on the host) with zero rows / columns appended up to [rows, cols].
Tensor pad_matrix(const Tensor& t, int64_t rows, int64_t cols) {
  const int64_t R = t.size(0), C = t.size(1);
  const std::vector<float> in = t.to(DType::f32).to_vector<float>();
  std::vector<float> out(static_cast<size_t>(rows * cols), 0.0f);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) out[r * cols + c] = in[r * C + c];
  return Tensor::from_vector(out, {rows, cols});
}

// The fixture's folder with its vocabulary and FFN widths rounded up to multiples of kTp (see
// above), written to `dir`.
void write_padded_folder(const HfFixture& fx, const fs::path& dir) {
  fs::create_directories(dir);
  nlohmann::json config = test::read_json_file(fx.dir + "/config.json");
  // Each FFN width of the config (DeepSeek's shared experts are one MLP of n_shared_experts
  // times the expert width) and what it becomes.
  std::map<int64_t, int64_t> widths;
  const int64_t shared = config.value("n_shared_experts", int64_t{0});
  if (shared > 0) {
    const int64_t f = config.at("moe_intermediate_size").get<int64_t>();
    widths[shared * f] = shared * round_up(f);
  }
  for (const char* key : {"vocab_size", "intermediate_size", "moe_intermediate_size",
                          "shared_expert_intermediate_size"}) {
    if (!config.contains(key)) continue;
    const int64_t n = config[key].get<int64_t>();
    if (std::string(key) != "vocab_size") widths[n] = round_up(n);
    config[key] = round_up(n);
  }
  std::ofstream(dir / "config.json") << config.dump(2) << "\n";
  const auto padded_width = [&](int64_t n) {
    const auto it = widths.find(n);
    return it == widths.end() ? n : it->second;
  };

  const io::SafetensorsFile weights = io::SafetensorsFile::open(fx.dir + "/model.safetensors");
  // Matrices whose rows are FFN units (gate / up, Mixtral's w1 / w3), whose columns are (down,
  // w2), and whose rows are the vocabulary.
  const std::regex ffn_rows(R"(.*\.(gate_proj|up_proj|w1|w3)\.weight)");
  const std::regex ffn_columns(R"(.*\.(down_proj|w2)\.weight)");
  const std::regex vocab_rows(R"((model\.embed_tokens|lm_head)\.weight)");
  io::NamedTensors padded;
  for (const std::string& name : weights.names()) {
    Tensor t = weights.load(name, Device::cpu(), DType::f32);
    if (std::regex_match(name, vocab_rows))
      t = pad_matrix(t, round_up(t.size(0)), t.size(1));
    else if (std::regex_match(name, ffn_rows))
      t = pad_matrix(t, padded_width(t.size(0)), t.size(1));
    else if (std::regex_match(name, ffn_columns))
      t = pad_matrix(t, t.size(0), padded_width(t.size(1)));
    padded.emplace_back(name, t);
  }
  io::write_safetensors((dir / "model.safetensors").string(), padded);
}

// The fixture's tokens and labels [S, B] cut to the first kSeq positions (the labels keep the
// next token of position kSeq - 1).
Tensor first_positions(const Tensor& sb) {
  return sb.rows(0, kSeq).clone();
}

// A copy of tokens [S, B] padded at its end to `rows` with `fill` (-1: the last token repeated).
Tensor pad_sequence(const Tensor& sb, int64_t rows, int64_t fill) {
  const int64_t S = sb.size(0), B = sb.size(1);
  std::vector<int64_t> v = sb.to_vector<int64_t>();
  for (int64_t s = S; s < rows; ++s)
    for (int64_t b = 0; b < B; ++b) v.push_back(fill < 0 ? v[(S - 1) * B + b] : fill);
  return Tensor::from_vector(v, {rows, B});
}

// The mean cross-entropy of transformers' logits [S, B, V] on the first `seq` positions with
// `padding` zero logits appended to each row (the padded vocabulary's).
double transformers_loss(const HfFixture& fx, int64_t padding, int64_t seq) {
  const int64_t B = fx.batch, V = fx.vocab;
  const std::vector<float> logits = fx.logits.to_vector<float>();
  const std::vector<int64_t> labels = fx.labels.to_vector<int64_t>();
  double sum = 0;
  int64_t count = 0;
  for (int64_t row = 0; row < seq * B; ++row) {
    const int64_t label = labels[row];
    if (label == ops::kIgnoreIndex) continue;
    const float* l = logits.data() + row * V;
    double max = padding > 0 ? 0.0 : l[0];
    for (int64_t v = 0; v < V; ++v) max = std::max(max, static_cast<double>(l[v]));
    double z = static_cast<double>(padding) * std::exp(-max);
    for (int64_t v = 0; v < V; ++v) z += std::exp(l[v] - max);
    sum += std::log(z) + max - l[label];
    ++count;
  }
  return sum / static_cast<double>(count);
}

// The logits [S, B, V'] of a padded model without the padded vocabulary: [S, B, V] f32.
Tensor real_vocabulary(const Tensor& logits, int64_t vocab) {
  const int64_t rows = logits.size(0) * logits.size(1), padded = logits.size(2);
  const std::vector<double> in = logits.to(DType::f64).to_vector<double>();
  std::vector<float> out(static_cast<size_t>(rows * vocab));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t v = 0; v < vocab; ++v) out[r * vocab + v] = static_cast<float>(in[r * padded + v]);
  return Tensor::from_vector(out, {logits.size(0), logits.size(1), vocab});
}

struct Mapping {
  int world = kTp;
  int tp = kTp;
  int cp = 1;
  int ep = 1;
  bool sequence_parallel = false;
};

std::string mapping_name(const Mapping& m) {
  std::string name;
  const auto axis = [&](const char* what, int n) {
    if (n <= 1) return;
    if (!name.empty()) name += '_';
    name += what;
    name += std::to_string(n);
  };
  axis("tp", m.tp);
  axis("cp", m.cp);
  axis("ep", m.ep);
  return name + (m.sequence_parallel ? "_sp" : "");
}
void PrintTo(const Mapping& m, std::ostream* out) {
  *out << mapping_name(m);
}

// What the model gives for one input: its logits [S, B, V'] f64 and lm loss.
struct Outputs {
  Tensor logits;
  double loss = 0;
};

// The fixture's two inputs, as the ranks of `m` run them: its first kSeq tokens, and its whole
// sequence (13 tokens), which forward() gets padded at the end to what `m` divides (see above)
// and logits() as it is.
struct Inputs {
  Tensor ids, labels;                           // [kSeq, B]
  Tensor whole_ids, padded_ids, padded_labels;  // [S, B] and [S', B], S' >= S
};

Inputs inputs_for(const HfFixture& fx, const Mapping& m) {
  const int64_t unit = int64_t{m.tp} * (m.cp > 1 ? 2 * m.cp : 1);
  const int64_t padded = (fx.seq + unit - 1) / unit * unit;
  return {first_positions(fx.input_ids), first_positions(fx.labels), fx.input_ids,
          pad_sequence(fx.input_ids, padded, -1),
          pad_sequence(fx.labels, padded, ops::kIgnoreIndex)};
}

struct Results {
  Outputs cut, whole;  // the kSeq tokens, the whole sequence (logits of its S positions)
};

Results run(nn::GPTModel& model, const Inputs& in) {
  const auto loss = [&](const Tensor& ids, const Tensor& labels) {
    nn::GPTContext ctx;
    return model.forward(ids, labels, ctx).lm_loss.item();
  };
  return {{model.logits(in.ids), loss(in.ids, in.labels)},
          {model.logits(in.whole_ids), loss(in.padded_ids, in.padded_labels)}};
}

// The router in f64 as the rest of the model. Its default (--moe-router-dtype fp32, Megatron's)
// computes its logits with an f32 GEMM (OpenBLAS sgemm) whose sums for one token depend on how
// many tokens it routes at once: a one-rank model's logits of the first 4 positions of a sequence
// of 4 and of 12 are 1e-8 to 1e-7 apart (Qwen3-MoE, DeepSeek-V2/V3), and so are the mappings,
// whose ranks route other numbers of tokens.
void f64_router(nn::ModelConfig& config) {
  config.moe.moe_router_dtype = nn::RouterDType::fp64;
}
// What load_model_folder_weights then reports of a Hugging Face folder (whose config has no
// router dtype: Megatron's default).
const std::string kRouterDifference = R"(moe.moe_router_dtype: checkpoint "fp32", model "fp64")";

using Case = std::tuple<std::string, Mapping>;

class ModelFolderParallel : public ::testing::TestWithParam<Case> {};

TEST_P(ModelFolderParallel, EveryRankGivesTheOneRankLogitsAndLoss) {
  const auto& [family, mapping] = GetParam();
  const HfFixture fx = test::load_hf_fixture(family);
  const ScratchPath scratch(family + "_" + mapping_name(mapping));
  // Only TP splits the vocabulary and the FFN widths: the other mappings read the fixture as is.
  const fs::path dir = mapping.tp > 1 ? scratch.path : fs::path(fx.dir);
  if (mapping.tp > 1) write_padded_folder(fx, dir);
  // Each rank gets the same inputs; one rank runs the unpadded whole sequence.
  const Inputs in = inputs_for(fx, mapping);
  ASSERT_GT(in.padded_ids.size(0), fx.seq) << "the whole sequence is padded in forward()";
  const Tensor expected_cut = fx.logits.rows(0, kSeq).clone();

  // One rank, the folder read whole (checkpoint::load_model): transformers' outputs.
  auto reference = checkpoint::load_model(dir.string(), DType::f64, Device::cpu(), f64_router);
  const int64_t padding = reference->config().vocab_size - fx.vocab;
  ASSERT_EQ(padding > 0, mapping.tp > 1) << "the fixtures' vocabularies are odd";
  const Results one =
      run(*reference, Inputs{in.ids, in.labels, in.whole_ids, in.whole_ids, fx.labels});
  const double hf_cut = transformers_loss(fx, padding, kSeq);
  const double hf_whole = transformers_loss(fx, padding, fx.seq);
  if (padding == 0) {
    ASSERT_LE(test::scalar_relative_error(hf_whole, fx.loss), 1e-6)
        << "the recomputed loss is transformers' stored one";
  }
  ASSERT_TRUE(test::close(real_vocabulary(one.cut.logits, fx.vocab), expected_cut, kTransformersTol,
                          family + " one-rank logits"));
  ASSERT_TRUE(test::close(real_vocabulary(one.whole.logits, fx.vocab), fx.logits, kTransformersTol,
                          family + " one-rank logits of the whole sequence"));
  ASSERT_LE(test::scalar_relative_error(one.cut.loss, hf_cut), kTransformersTol);
  ASSERT_LE(test::scalar_relative_error(one.whole.loss, hf_whole), kTransformersTol);
  // The same weights as a moecore folder (fused gate_up_proj, stacked experts).
  const ScratchPath moecore(family + "_" + mapping_name(mapping) + "_moecore");
  checkpoint::save_model(moecore.path.string(), *reference);

  std::mutex mutex;
  std::vector<std::string> failures;
  dist::run_local(mapping.world, [&](std::shared_ptr<dist::ProcessGroup> world) {
    const std::string rank = family + " rank " + std::to_string(world->rank()) + ": ";
    dist::ParallelConfig pc;
    pc.tensor_model_parallel_size = mapping.tp;
    pc.context_parallel_size = mapping.cp;
    pc.expert_model_parallel_size = mapping.ep;
    pc.expert_tensor_parallel_size = 1;
    const auto state = std::make_shared<dist::ParallelState>(world, pc);
    nn::ModelConfig config =
        checkpoint::read_model_config(dir.string(), checkpoint::CheckpointFormat::hf);
    config.moe.expert_model_parallel_size = mapping.ep;
    config.moe.expert_tensor_parallel_size = 1;
    f64_router(config);
    for (const fs::path& folder : {dir, moecore.path}) {
      nn::GPTModel model(config, DType::f64, Device::cpu(), 99,
                         nn::model_groups_of(*state, mapping.sequence_parallel));
      const std::vector<std::string> differences =
          load_model_folder_weights(folder.string(), model, nullptr);
      const Results got = run(model, in);
      std::lock_guard lock(mutex);
      const std::string where = rank + folder.filename().string() + ": ";
      // The folder's config differs from the model's in the router's dtype only (the moecore
      // folder was saved from the f64-router reference).
      const std::vector<std::string> expected_differences =
          folder == dir ? std::vector<std::string>{kRouterDifference} : std::vector<std::string>{};
      if (differences != expected_differences)
        for (const std::string& d : differences) failures.push_back(where + "differs: " + d);
      const auto compare = [&](const std::string& what, const Outputs& mine, const Outputs& ref,
                               const Tensor& hf_logits, double hf_loss) {
        const std::string at = where + what + ": ";
        if (const auto same = test::close(mine.logits, ref.logits, kMappingTol, "logits"); !same)
          failures.push_back(at + "against one rank: " + same.message());
        if (const auto same = test::close(real_vocabulary(mine.logits, fx.vocab), hf_logits,
                                          kTransformersTol, "logits");
            !same)
          failures.push_back(at + "against transformers: " + same.message());
        if (test::scalar_relative_error(mine.loss, ref.loss) > kMappingTol)
          failures.push_back(at + "lm loss " + std::to_string(mine.loss) + ", one rank " +
                             std::to_string(ref.loss));
        if (test::scalar_relative_error(mine.loss, hf_loss) > kTransformersTol)
          failures.push_back(at + "lm loss " + std::to_string(mine.loss) + ", transformers " +
                             std::to_string(hf_loss));
      };
      compare("first " + std::to_string(kSeq) + " tokens", got.cut, one.cut, expected_cut, hf_cut);
      compare("whole sequence", got.whole, one.whole, fx.logits, hf_whole);
    }
  });
  for (const std::string& f : failures) ADD_FAILURE() << f;
}

// Forwards to another source and records every read: the name and its rows (-1, -1: whole).
class CountingSource final : public checkpoint::TensorSource {
 public:
  struct Read {
    std::string name;
    int64_t begin = -1, end = -1;
  };
  explicit CountingSource(const TensorSource& inner) : inner_(inner) {}
  const std::vector<std::string>& names() const override { return inner_.names(); }
  bool contains(const std::string& name) const override { return inner_.contains(name); }
  checkpoint::SourceTensorInfo info(const std::string& name) const override {
    return inner_.info(name);
  }
  Tensor load(const std::string& name) const override {
    std::lock_guard lock(mutex_);
    reads.push_back({name});
    return inner_.load(name);
  }
  Tensor load_rows(const std::string& name, int64_t begin, int64_t end) const override {
    {
      std::lock_guard lock(mutex_);
      reads.push_back({name, begin, end});
    }
    return inner_.load_rows(name, begin, end);
  }
  std::string where(const std::string& name) const override { return inner_.where(name); }
  std::string description() const override { return inner_.description(); }

  mutable std::vector<Read> reads;

 private:
  const TensorSource& inner_;
  mutable std::mutex mutex_;
};

// What a TP rank reads: of a column-parallel tensor (q/k/v_proj and their biases, MLA's q_proj /
// q_b_proj / kv_b_proj, a dense MLP's or shared expert's gate/up_proj, embed_tokens, lm_head)
// only its own half of the rows; of a row-parallel one (o_proj, down_proj) every row, of which
// it keeps its half of the columns. Replicated tensors and the routed experts (EP 1) are read
// whole.
TEST(ModelFolderTensorParallelReads, EachRankReadsOnlyItsRowsOfColumnParallelTensors) {
  for (const std::string& family : {std::string("qwen2_moe"), std::string("deepseek_v3")}) {
    SCOPED_TRACE(family);
    const HfFixture fx = test::load_hf_fixture(family);
    const ScratchPath scratch("reads_" + family);
    const fs::path& dir = scratch.path;
    write_padded_folder(fx, dir);
    const checkpoint::CheckpointFormat hf = checkpoint::CheckpointFormat::hf;
    const nn::ModelConfig config = checkpoint::read_model_config(dir.string(), hf);
    const std::regex column_parallel(
        R"(.*\.(q_proj|k_proj|v_proj|q_b_proj|kv_b_proj|gate_proj|up_proj)\.(weight|bias)|)"
        R"((model\.embed_tokens|lm_head)\.weight)");
    const std::regex row_parallel(R"(.*\.(o_proj|down_proj)\.weight)");
    std::mutex mutex;
    std::vector<std::string> failures;
    dist::run_local(kTp, [&](std::shared_ptr<dist::ProcessGroup> world) {
      dist::ParallelConfig pc;
      pc.tensor_model_parallel_size = kTp;
      pc.expert_tensor_parallel_size = 1;
      const auto state = std::make_shared<dist::ParallelState>(world, pc);
      nn::ModelConfig mapped = config;
      mapped.moe.expert_tensor_parallel_size = 1;
      nn::GPTModel model(mapped, DType::f64, Device::cpu(), 99, nn::model_groups_of(*state, true));
      const checkpoint::CheckpointTensorSource inner(dir.string());
      const CountingSource counting(inner);
      checkpoint::load_weights(model, counting, hf, config, std::nullopt);
      const int r = world->rank();
      std::set<std::string> split_read;
      std::lock_guard lock(mutex);
      const std::string rank = "rank " + std::to_string(r) + ": ";
      for (const CountingSource::Read& read : counting.reads) {
        const std::string what = read.name + " rows [" + std::to_string(read.begin) + ", " +
                                 std::to_string(read.end) + ")";
        if (read.name.find(".experts.") != std::string::npos) continue;
        const int64_t rows = counting.info(read.name).shape.at(0);
        if (std::regex_match(read.name, column_parallel)) {
          split_read.insert(read.name);
          if (read.begin != r * rows / kTp || read.end != (r + 1) * rows / kTp)
            failures.push_back(rank + "read other rows than its half: " + what);
        } else if (std::regex_match(read.name, row_parallel)) {
          split_read.insert(read.name);
          if (read.begin > 0 || (read.end >= 0 && read.end != rows))
            failures.push_back(rank + "read a row-parallel tensor in part: " + what);
        }
      }
      // Every TP-split tensor of the folder was read, by this rank.
      for (const std::string& name : counting.names())
        if (name.find(".experts.") == std::string::npos &&
            (std::regex_match(name, column_parallel) || std::regex_match(name, row_parallel)) &&
            !split_read.count(name))
          failures.push_back(rank + "never read " + name);
      if (split_read.empty()) failures.push_back(rank + "read no TP-split tensor at all");
    });
    for (const std::string& f : failures) ADD_FAILURE() << f;
  }
}

// `moe train --load HF_DIR --finetune` (no --model: the folder's model) under TP 2, with and
// without --sequence-parallel, TP 2 x EP 2 (DP 2), CP 2, TP 2 x CP 2 with --sequence-parallel,
// CP 2 x EP 2, PP 2 (uneven) and PP 2 (a layout) x TP 2 with --sequence-parallel: every rank trains
// the model one rank trains from the folder (the same training and validation losses within 1e-5
// relative, f32), rank 0 reports the load and the save, and the run ends with its sample (not under
// PP).
TEST(ModelFolderParallelTraining, FineTunesAHuggingFaceFolderAsOneRank) {
  const HfFixture fx = test::load_hf_fixture("qwen3_moe");
  const ScratchPath scratch("train"), saves("train_save");
  const fs::path& dir = scratch.path;
  const std::string save = saves.path.string();
  write_padded_folder(fx, dir);
  // clang-format off
  const std::vector<std::string> run = {
      "--cpu", "--load", dir.string(), "--finetune", "--lr", "1e-3", "--train-iters", "3",
      "--seq-length", "16", "--micro-batch-size", "2", "--global-batch-size", "4",
      "--eval-iters", "1", "--eval-interval", "2", "--sample-tokens", "4", "--save", save};
  // clang-format on
  const TrainRunResult one =
      run_training_on(parse_train_args(run), TrainWorld{nullptr, Device::cpu(), true},
                      standard_train_hooks(), nullptr);
  ASSERT_EQ(one.losses.size(), 3u);
  struct Parallel {
    int world;
    std::vector<std::string> flags;
    bool sample = true;  // pipeline ranks print none (no rank holds the whole model)
  };
  for (const Parallel& p :
       {Parallel{2, {"--tensor-model-parallel-size", "2"}},
        Parallel{2, {"--tensor-model-parallel-size", "2", "--sequence-parallel"}},
        Parallel{4,
                 {"--tensor-model-parallel-size", "2", "--sequence-parallel",
                  "--expert-model-parallel-size", "2", "--expert-tensor-parallel-size", "1"}},
        Parallel{2, {"--context-parallel-size", "2"}},
        Parallel{4,
                 {"--tensor-model-parallel-size", "2", "--sequence-parallel",
                  "--context-parallel-size", "2"}},
        Parallel{2,
                 {"--context-parallel-size", "2", "--expert-model-parallel-size", "2",
                  "--expert-tensor-parallel-size", "1"}},
        // The fixture's 3 layers: 1 on the first stage, 2 on the last.
        Parallel{
            2,
            {"--pipeline-model-parallel-size", "2", "--decoder-first-pipeline-num-layers", "1"},
            false},
        Parallel{4,
                 {"--pipeline-model-parallel-size", "2", "--pipeline-model-parallel-layout",
                  "Et|ttL", "--tensor-model-parallel-size", "2", "--sequence-parallel"},
                 false}}) {
    std::vector<std::string> args = run;
    args.insert(args.end(), p.flags.begin(), p.flags.end());
    SCOPED_TRACE(::testing::PrintToString(args));
    const TrainRunConfig config = parse_train_args(args);
    fs::remove_all(save);  // each run saves its own iterations
    std::FILE* out = std::tmpfile();
    std::mutex mutex;
    std::vector<TrainRunResult> results(static_cast<size_t>(p.world));
    dist::run_local(p.world, [&](std::shared_ptr<dist::ProcessGroup> world) {
      const int r = world->rank();
      TrainRunResult result = run_training_on(config, TrainWorld{world, Device::cpu(), r == 0},
                                              standard_train_hooks(), out);
      std::lock_guard lock(mutex);
      results[static_cast<size_t>(r)] = std::move(result);
    });
    const std::string text = test::printed_text(out);
    EXPECT_NE(text.find("loaded the weights of the model folder " + dir.string()),
              std::string::npos)
        << text;
    for (size_t r = 0; r < results.size(); ++r) {
      ASSERT_EQ(results[r].losses.size(), one.losses.size()) << "rank " << r;
      for (size_t i = 0; i < one.losses.size(); ++i)
        EXPECT_NEAR(results[r].losses[i], one.losses[i], 1e-5 * std::abs(one.losses[i]))
            << "rank " << r << ", iteration " << i + 1;
      ASSERT_EQ(results[r].valid_losses.size(), one.valid_losses.size()) << "rank " << r;
      for (size_t i = 0; i < one.valid_losses.size(); ++i)
        EXPECT_NEAR(results[r].valid_losses[i].second, one.valid_losses[i].second,
                    1e-5 * std::abs(one.valid_losses[i].second))
            << "rank " << r << ", evaluation " << i + 1;
    }
    EXPECT_NE(text.find("saved checkpoint " + save + "/iter_0000003"), std::string::npos) << text;
    EXPECT_EQ(text.find("sample (4 tokens at most") != std::string::npos, p.sample) << text;
  }
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const std::string& family : test::hf_fixture_families()) {
    // Mixtral's 5 experts do not divide over EP 2.
    const bool ep = family != "mixtral";
    all.emplace_back(family, Mapping{.world = kTp, .tp = kTp});
    all.emplace_back(family, Mapping{.world = kTp, .tp = kTp, .sequence_parallel = true});
    if (ep)  // DP 2
      all.emplace_back(family,
                       Mapping{.world = 2 * kTp, .tp = kTp, .ep = 2, .sequence_parallel = true});
    all.emplace_back(family, Mapping{.world = kCp, .tp = 1, .cp = kCp});
    all.emplace_back(family,
                     Mapping{.world = kTp * kCp, .tp = kTp, .cp = kCp, .sequence_parallel = true});
    if (ep) all.emplace_back(family, Mapping{.world = kCp, .tp = 1, .cp = kCp, .ep = 2});
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelFolderParallel, ::testing::ValuesIn(cases()),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" +
                                  mapping_name(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace moe::train
