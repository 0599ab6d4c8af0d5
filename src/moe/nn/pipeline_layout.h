// Which parts of a GPT model each pipeline stage builds: the embedding, a contiguous range of
// decoder layers, the MTP layers and the loss (final norm + output layer + loss), computed from
// Megatron-LM's pipeline flags with Megatron's rules and refusals. Host-only; the stage
// execution (schedules, point-to-point exchange) builds on this.
//
// Stages. With P = --pipeline-model-parallel-size and V virtual stages (model chunks) per rank,
// there are P * V stages; stage s = v * P + p is chunk v of pipeline rank p (Megatron's order).
// Data flows through the stages in order s = 0, 1, ..., P * V - 1, so decoder layers are
// numbered contiguously along s, and each rank holds V chunks spread over the model:
//   L = 8, P = 2, V = 2:  rank 0: [0, 1] [4, 5]    rank 1: [2, 3] [6, 7]
// Stage 0 builds the embedding, stage P * V - 1 the loss; by default the MTP layers too.
//
// Flags (the options below carry them):
//   --num-layers L, --mtp-num-layers D       decoder layers, MTP layers (D = 0: none)
//   --pipeline-model-parallel-size P
//   --num-virtual-stages-per-pipeline-rank V (1 or unset: no virtual stages; V > 1 needs P > 1,
//                                             and Megatron's interleaved schedule P > 2 unless
//                                             --overlap-p2p-comm: the schedule's check, not here)
//   --num-layers-per-virtual-pipeline-stage N  V = (L [+1 +1]) / P / N, see
//                                               virtual_stages_from_layers_per_virtual_stage()
//   Even split (none of the flags below): every stage holds (L / P) / V layers; L must divide by
//     P, and L / P by V.
//   --decoder-first-pipeline-num-layers F, --decoder-last-pipeline-num-layers G: rank 0 holds F
//     layers, rank P - 1 holds G, the M = L - F - G others divide evenly over the P - k middle
//     ranks (k = how many of F, G are set). F, G > 0; with V > 1, F, G and M / (P - k) must
//     divide by V, and each chunk of a rank holds its rank's count / V. M = 0 exactly when there
//     are no middle ranks. Not with the account-for flags below.
//   --account-for-embedding-in-pipeline-split / --account-for-loss-in-pipeline-split: the
//     embedding (the loss) counts as one layer of the split: L + 1 (+ 1) slots divide evenly as
//     above (by P, then by V) and stage 0 (stage P * V - 1) holds one decoder layer fewer.
//   --pipeline-model-parallel-layout TEXT: the stages spelt out, below. Not with any of the
//     flags above except P (and V, when it equals the layout's stage count / P); V is the
//     layout's stage count / P.
//
// Layout grammar (Megatron's parse_str_to_list):
//   layout := item*                   stages are separated by '|': n separators, n + 1 stages
//   item   := symbol ['*' count] | '(' symbol ['*' count] ... ')' '*' count
//   symbol := 'E' embedding | 't' decoder layer | 'm' MTP layer | 'L' loss | '|'
// `x*N` repeats one symbol N times ("t*3" = "ttt", "|*2" = "||"), `(...)*N` repeats a group
// (the '*N' is required; groups do not nest); N is digits, 0 to 4096. Commas are cosmetic and
// dropped before anything else, wherever they stand; spaces and any other character are errors.
// Stages may be empty.
//   "Et*3|(tt|)*29,m|L"  DeepSeek-V3 (L 61, D 1) on P 16, V 2: stage 0 "Ettt", stages 1-29 "tt",
//                        stage 30 (rank 14, chunk 1) "m", stage 31 (rank 15, chunk 1) "L".
//   "E|(t|)*3,m|L"       P 3, V 2 (or P 6): embedding alone, one layer a stage, then m, then L.
// Rules (Megatron's validate_layer_layout; E and L are tighter here, because the model builds
// its embedding on stage 0 and its loss on the last stage whatever the layout says): the stage
// count divides by P (equals P * V when V is given); E once, as the first symbol of stage 0;
// L once, as the last symbol of the last stage; t exactly --num-layers times; m exactly
// --mtp-num-layers times, after every t, all in one stage, and that stage is the last chunk of
// its rank (v = V - 1). MTP on a rank other than P - 1 is Megatron's "standalone MTP"
// (mtp_standalone()).
//
// Every refusal is a moe::Error: a malformed layout names the character index (0-based, in
// the text as given, commas included) and what was expected there; a broken rule names the
// numbers (counts, stages, ranks, flags).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moe::nn {

struct PipelineLayoutOptions {
  int64_t num_layers = 0;      // --num-layers: decoder layers
  int64_t mtp_num_layers = 0;  // --mtp-num-layers (0: none)
  int pipeline_size = 1;       // --pipeline-model-parallel-size
  // --num-virtual-stages-per-pipeline-rank; unset: the layout's stage count / P, else 1.
  std::optional<int> virtual_stages;
  std::optional<int64_t> decoder_first_pipeline_num_layers;
  std::optional<int64_t> decoder_last_pipeline_num_layers;
  bool account_for_embedding_in_pipeline_split = false;
  bool account_for_loss_in_pipeline_split = false;
  std::string layout;  // --pipeline-model-parallel-layout (empty: none)
};

// What one stage builds, in the order data passes through it: the embedding, decoder layers
// [first_layer, first_layer + num_layers), MTP layers [first_mtp_layer, first_mtp_layer +
// num_mtp_layers) (depths, 0-based), the loss. Empty ranges start where the next one would.
struct PipelineStage {
  bool embedding = false;
  int64_t first_layer = 0;
  int64_t num_layers = 0;
  int64_t first_mtp_layer = 0;
  int64_t num_mtp_layers = 0;
  bool loss = false;
};

class PipelineLayout {
 public:
  // Validates the options as Megatron does (file comment) and computes every stage; throws
  // moe::Error naming the flag, the numbers or the layout position.
  explicit PipelineLayout(const PipelineLayoutOptions& options);

  int pipeline_size() const { return pipeline_size_; }                 // P
  int virtual_stages() const { return virtual_stages_; }               // V
  int num_stages() const { return static_cast<int>(stages_.size()); }  // P * V
  int64_t num_layers() const { return num_layers_; }
  int64_t mtp_num_layers() const { return mtp_num_layers_; }

  const std::vector<PipelineStage>& stages() const { return stages_; }
  const PipelineStage& stage(int s) const;
  // s = chunk * P + pp_rank, and back.
  int stage_index(int pp_rank, int chunk) const;
  const PipelineStage& stage_of(int pp_rank, int chunk) const;
  int pp_rank_of(int s) const;
  int chunk_of(int s) const;
  int first_stage() const { return 0; }
  int last_stage() const { return num_stages() - 1; }

  // The stage that builds decoder layer `layer` (0-based) / MTP layer `depth`.
  int stage_of_layer(int64_t layer) const;
  int stage_of_mtp_layer(int64_t depth) const;
  // MTP layers on a rank other than the last (only a layout can place them so).
  bool mtp_standalone() const;

  // The layout in the grammar above, runs of equal stages grouped ("Et*3|(tt|)*29,m|L");
  // parsing it gives this layout back.
  std::string to_string() const;

 private:
  int pipeline_size_ = 1;
  int virtual_stages_ = 1;
  int64_t num_layers_ = 0;
  int64_t mtp_num_layers_ = 0;
  std::vector<PipelineStage> stages_;
};

// The grammar alone: each stage's symbols after repetition is unrolled and commas dropped
// ("E|(t|)*2,m" -> {"E", "t", "t", "m"}). Throws moe::Error with the character index and what
// was expected there when the text is malformed.
std::vector<std::string> parse_pipeline_layout(std::string_view layout);

// V from --num-layers-per-virtual-pipeline-stage N, as Megatron's arguments derive it:
// (L + [1 with account_for_embedding] + [1 with account_for_loss]) must divide by P and the
// quotient by N; V = quotient / N. Refused together with --decoder-first/last-pipeline-num-layers
// (Megatron: use --num-virtual-stages-per-pipeline-rank there), a layout, or a given V.
int virtual_stages_from_layers_per_virtual_stage(const PipelineLayoutOptions& options,
                                                 int64_t layers_per_virtual_stage);

}  // namespace moe::nn
