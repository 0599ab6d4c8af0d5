// PipelineLayout: the stages built from Megatron-LM's pipeline flags. The layer offsets of the
// even, uneven and account-for splits are checked against Megatron's own offset formulas
// (get_transformer_layer_offset, restated below), the layouts against Megatron's documented
// examples, and every malformed layout or broken rule against the position / numbers its
// message must name.
#include "moe/nn/pipeline_layout.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/core/error.h"

namespace moe::nn {
namespace {

// The moe::Error's message ("" when none was thrown).
std::string error_of(const std::function<void()>& f) {
  return test::message_of(f);
}

PipelineLayoutOptions layout_options(std::string layout, int64_t layers, int64_t mtp, int pp) {
  PipelineLayoutOptions o;
  o.layout = std::move(layout);
  o.num_layers = layers;
  o.mtp_num_layers = mtp;
  o.pipeline_size = pp;
  return o;
}

PipelineLayoutOptions split_options(int64_t layers, int pp, int v) {
  PipelineLayoutOptions o;
  o.num_layers = layers;
  o.pipeline_size = pp;
  o.virtual_stages = v;
  return o;
}

// Each stage's decoder layer counts, in stage order.
std::vector<int64_t> counts(const PipelineLayout& l) {
  std::vector<int64_t> out;
  for (const PipelineStage& s : l.stages()) out.push_back(s.num_layers);
  return out;
}

// Invariants of every layout: layer ranges contiguous in stage order covering [0, L), MTP
// layers [0, D) likewise, E only on stage 0, L only on the last; to_string() parses back to
// the same stages; stage_of_layer / stage_of_mtp_layer agree with the ranges.
void expect_consistent(const PipelineLayout& l, const PipelineLayoutOptions& given) {
  int64_t layer = 0, depth = 0;
  for (int s = 0; s < l.num_stages(); ++s) {
    const PipelineStage& st = l.stage(s);
    EXPECT_EQ(st.first_layer, layer) << "stage " << s;
    EXPECT_EQ(st.first_mtp_layer, depth) << "stage " << s;
    EXPECT_GE(st.num_layers, 0);
    EXPECT_EQ(st.embedding, s == 0);
    EXPECT_EQ(st.loss, s == l.num_stages() - 1);
    EXPECT_EQ(&l.stage_of(l.pp_rank_of(s), l.chunk_of(s)), &st);
    for (int64_t k = 0; k < st.num_layers; ++k) EXPECT_EQ(l.stage_of_layer(layer + k), s);
    for (int64_t k = 0; k < st.num_mtp_layers; ++k) EXPECT_EQ(l.stage_of_mtp_layer(depth + k), s);
    layer += st.num_layers;
    depth += st.num_mtp_layers;
  }
  EXPECT_EQ(layer, l.num_layers());
  EXPECT_EQ(depth, l.mtp_num_layers());
  EXPECT_EQ(l.num_stages(), l.pipeline_size() * l.virtual_stages());

  PipelineLayoutOptions again;
  again.num_layers = given.num_layers;
  again.mtp_num_layers = given.mtp_num_layers;
  again.pipeline_size = given.pipeline_size;
  again.layout = l.to_string();
  const PipelineLayout back(again);
  ASSERT_EQ(back.num_stages(), l.num_stages()) << again.layout;
  for (int s = 0; s < l.num_stages(); ++s) {
    const PipelineStage &a = l.stage(s), &b = back.stage(s);
    EXPECT_TRUE(a.embedding == b.embedding && a.first_layer == b.first_layer &&
                a.num_layers == b.num_layers && a.first_mtp_layer == b.first_mtp_layer &&
                a.num_mtp_layers == b.num_mtp_layers && a.loss == b.loss)
        << "stage " << s << " of " << again.layout;
  }
}

// Megatron's get_transformer_layer_offset for the flag-driven splits (no layout), restated:
// the reference the computed first_layer of each (rank, chunk) must equal.
int64_t megatron_offset(const PipelineLayoutOptions& o, int pp_rank, int vp_stage) {
  const int pp = o.pipeline_size;
  const int v = o.virtual_stages.value_or(1);
  if (pp == 1) return 0;
  const auto& first = o.decoder_first_pipeline_num_layers;
  const auto& last = o.decoder_last_pipeline_num_layers;
  if (first || last) {
    const int64_t middle_stages = pp - (first ? 1 : 0) - (last ? 1 : 0);
    const int64_t f = first.value_or(0), g = last.value_or(0);
    const int64_t middle_layers = o.num_layers - f - g;
    const int64_t middle_rank = first ? pp_rank - 1 : pp_rank;
    if (v > 1) {
      const int64_t total_chunk = f / v + middle_layers / v + g / v;
      if (pp_rank == 0) return vp_stage * total_chunk;
      return vp_stage * total_chunk + f / v + middle_rank * (middle_layers / v / middle_stages);
    }
    const int64_t per_rank = middle_stages > 0 ? middle_layers / middle_stages : 0;
    return pp_rank == 0 ? 0 : middle_rank * per_rank + f;
  }
  const int64_t slots = o.num_layers + o.account_for_embedding_in_pipeline_split +
                        o.account_for_loss_in_pipeline_split;
  const int64_t per_rank = slots / pp;
  int64_t offset = v > 1 ? vp_stage * (slots / v) + pp_rank * (per_rank / v) : pp_rank * per_rank;
  if (o.account_for_embedding_in_pipeline_split && !(vp_stage == 0 && pp_rank == 0)) offset -= 1;
  return offset;
}

void expect_megatron_offsets(const PipelineLayout& l, const PipelineLayoutOptions& o) {
  for (int p = 0; p < l.pipeline_size(); ++p)
    for (int v = 0; v < l.virtual_stages(); ++v)
      EXPECT_EQ(l.stage_of(p, v).first_layer, megatron_offset(o, p, v))
          << "rank " << p << " chunk " << v;
}

// ---- Megatron's documented layouts --------------------------------------------------------

TEST(PipelineLayout, DeepSeekV3LayoutFromMegatronsDocs) {
  // docs/user-guide/features/pipeline_parallel_layout.md: 61 decoder layers, one MTP layer,
  // PP 16, VPP 2.
  const PipelineLayoutOptions o = layout_options("Et*3|(tt|)*29,m|L", 61, 1, 16);
  const PipelineLayout l(o);
  EXPECT_EQ(l.num_stages(), 32);
  EXPECT_EQ(l.virtual_stages(), 2);
  // | PP \ VPP | 0                  | 1         |
  // | 0        | embedding + 3 x t  | 2 x t     |
  // | 1~13     | 2 x t              | 2 x t     |
  // | 14       | 2 x t              | mtp       |
  // | 15       | 2 x t              | loss      |
  EXPECT_TRUE(l.stage_of(0, 0).embedding);
  EXPECT_EQ(l.stage_of(0, 0).first_layer, 0);
  EXPECT_EQ(l.stage_of(0, 0).num_layers, 3);
  EXPECT_EQ(l.stage_of(0, 1).first_layer, 33);  // 3 + 15 ranks x 2
  EXPECT_EQ(l.stage_of(0, 1).num_layers, 2);
  for (int p = 1; p < 16; ++p) EXPECT_EQ(l.stage_of(p, 0).num_layers, 2) << p;
  for (int p = 1; p < 14; ++p) EXPECT_EQ(l.stage_of(p, 1).num_layers, 2) << p;
  EXPECT_EQ(l.stage_of(14, 1).num_layers, 0);
  EXPECT_EQ(l.stage_of(14, 1).num_mtp_layers, 1);
  EXPECT_EQ(l.stage_of(14, 1).first_layer, 61);
  EXPECT_EQ(l.stage_of(15, 1).num_layers, 0);
  EXPECT_TRUE(l.stage_of(15, 1).loss);
  EXPECT_EQ(l.stage_of_layer(60), l.stage_index(13, 1));
  EXPECT_EQ(l.stage_of_mtp_layer(0), 30);
  EXPECT_TRUE(l.mtp_standalone());  // MTP on rank 14, not the last
  EXPECT_EQ(l.to_string(), "Et*3|(tt|)*29,m|L");
  expect_consistent(l, o);

  PipelineLayoutOptions given_v = o;
  given_v.virtual_stages = 2;
  EXPECT_EQ(PipelineLayout(given_v).num_stages(), 32);
  given_v.virtual_stages = 1;
  EXPECT_SAYS(error_of([&] { PipelineLayout{given_v}; }), "has 32 stages",
              "--pipeline-model-parallel-size 16 x --num-virtual-stages-per-pipeline-rank 1 = 16");
}

TEST(PipelineLayout, MegatronsConfigAndTestLayouts) {
  // TransformerConfig's docstring: 'E|(tt|)*2,(t|)*4,mL' on 4 ranks, 2 chunks each.
  {
    const PipelineLayoutOptions o = layout_options("E|(tt|)*2,(t|)*4,mL", 8, 1, 4);
    const PipelineLayout l(o);
    EXPECT_EQ(l.virtual_stages(), 2);
    EXPECT_EQ(counts(l), (std::vector<int64_t>{0, 2, 2, 1, 1, 1, 1, 0}));
    EXPECT_EQ(l.stage_of(3, 1).num_mtp_layers, 1);
    EXPECT_TRUE(l.stage_of(3, 1).loss);
    EXPECT_FALSE(l.mtp_standalone());
    expect_consistent(l, o);
  }
  // Functional tests' DeepSeek-V3 proxies and MoE cases.
  {
    const PipelineLayoutOptions o = layout_options("Et*2|(tt|)*5t|tmL", 14, 1, 4);
    const PipelineLayout l(o);
    EXPECT_EQ(l.virtual_stages(), 2);
    EXPECT_EQ(counts(l), (std::vector<int64_t>{2, 2, 2, 2, 2, 2, 1, 1}));
    expect_consistent(l, o);
  }
  {
    const PipelineLayoutOptions o = layout_options("Et*3|(tt|)*6mL", 15, 1, 2);
    const PipelineLayout l(o);
    EXPECT_EQ(l.virtual_stages(), 4);
    EXPECT_EQ(counts(l), (std::vector<int64_t>{3, 2, 2, 2, 2, 2, 2, 0}));
    EXPECT_EQ(l.stage_of(1, 3).num_mtp_layers, 1);
    expect_consistent(l, o);
  }
  {
    const PipelineLayoutOptions o = layout_options("Et*7|t*7mL", 14, 1, 2);
    const PipelineLayout l(o);
    EXPECT_EQ(counts(l), (std::vector<int64_t>{7, 7}));
    EXPECT_EQ(l.to_string(), "Et*7|t*7mL");
    expect_consistent(l, o);
  }
  // test_transformer_block.py's golden layer numbers: PP 4, VPP 2, an empty stage.
  {
    const PipelineLayoutOptions o = layout_options("E|t|tt|t||t|t|ttL", 8, 0, 4);
    const PipelineLayout l(o);
    const std::vector<std::vector<std::vector<int64_t>>> golden{
        {{}, {}}, {{1}, {5}}, {{2, 3}, {6}}, {{4}, {7, 8}}};  // 1-based layer numbers
    for (int p = 0; p < 4; ++p)
      for (int v = 0; v < 2; ++v) {
        std::vector<int64_t> numbers;
        const PipelineStage& st = l.stage_of(p, v);
        for (int64_t k = 0; k < st.num_layers; ++k) numbers.push_back(st.first_layer + k + 1);
        EXPECT_EQ(numbers, golden[p][v]) << "rank " << p << " chunk " << v;
      }
    expect_consistent(l, o);
  }
  // Its accepted list layouts, as strings (7 layers, PP 2, VPP 2), empty stage included.
  for (const char* text : {"Et|t*4|t|tL", "E|t*7||L", "E|t*6|t|L"}) {
    const PipelineLayoutOptions o = layout_options(text, 7, 0, 2);
    const PipelineLayout l(o);
    EXPECT_EQ(l.virtual_stages(), 2) << text;
    expect_consistent(l, o);
  }
  // The small one from pipeline_layout.h: 3 layers, one MTP layer, on PP 3 (VPP 2) or PP 6.
  for (int pp : {3, 6}) {
    const PipelineLayoutOptions o = layout_options("E|(t|)*3,m|L", 3, 1, pp);
    const PipelineLayout l(o);
    EXPECT_EQ(l.num_stages(), 6);
    EXPECT_EQ(l.stage_of_mtp_layer(0), 4);
    EXPECT_TRUE(l.mtp_standalone());
    EXPECT_EQ(l.to_string(), "E|(t|)*3,m|L");
    expect_consistent(l, o);
  }
}

// ---- the grammar --------------------------------------------------------------------------

TEST(PipelineLayout, GrammarUnrollsAsMegatron) {
  using V = std::vector<std::string>;
  // parse_str_to_list's docstring example, shortened.
  EXPECT_EQ(parse_pipeline_layout("Ettt|(tt|)*2,m|L"), (V{"Ettt", "tt", "tt", "m", "L"}));
  EXPECT_EQ(parse_pipeline_layout("Et*3|L"), (V{"Ettt", "L"}));
  EXPECT_EQ(parse_pipeline_layout("E|*2L"), (V{"E", "", "L"}));  // '|' repeats too
  EXPECT_EQ(parse_pipeline_layout("E(t|)*2,L"), (V{"Et", "t", "L"}));
  EXPECT_EQ(parse_pipeline_layout("(|t)*2"), (V{"", "t", "t"}));
  EXPECT_EQ(parse_pipeline_layout("E(t*2|)*2L"), (V{"Ett", "tt", "L"}));  // x*N in a group
  EXPECT_EQ(parse_pipeline_layout("Et*0|t*03|L"), (V{"E", "ttt", "L"}));  // as Python's int()
  EXPECT_EQ(parse_pipeline_layout("E,|,t*1,2,|L"), (V{"E", std::string(12, 't'), "L"}))
      << "commas are dropped before anything else, even inside a count";
  EXPECT_EQ(parse_pipeline_layout("E||L"), (V{"E", "", "L"}));
  EXPECT_EQ(parse_pipeline_layout("(tt|)*10,tL").size(), 11u);
}

struct Malformed {
  const char* text;
  int64_t position;
  const char* expected;
};

TEST(PipelineLayout, MalformedLayoutsNameThePositionAndWhatWasExpected) {
  const Malformed cases[] = {
      {"Et*|L", 3, "expected a repetition count (digits) after '*'"},
      {"Et*", 3, "(the end of the text): expected a repetition count"},
      {"E(tt|)L", 6, "expected '*' and a repetition count after the group's ')'"},
      {"E(tt|)", 6, "(the end of the text): expected '*' and a repetition count"},
      {"E(tt|", 5, "expected ')' closing the group opened at character 1"},
      {"E()*3|L", 2, "inside the group opened at character 1 (a group is never empty)"},
      {"E(,)*3|L", 3, "a group is never empty"},
      {"E((t|)*2)*3|L", 2, "groups do not nest"},
      {"Et)|L", 2, "this ')' closes no group"},
      {"E t|L", 1, "spaces are not allowed"},
      {"Ex|L", 1, "expected a layer symbol (E t m L), '|' or '('"},
      {"ET|L", 1, "expected a layer symbol (E t m L)"},  // case matters
      {"E(tX|)*2L", 3, "expected a layer symbol (E t m L), '|' or ')'"},
      {"E**2|L", 2, "expected a repetition count (digits) after '*'"},
      {"E|t*2*3|L", 5, "'*' repeats the one symbol or group just before it, once"},
      {"Et*2*3|L", 4, "'*' repeats the one symbol or group"},
      {"E(tt|)*2*3L", 8, "'*' repeats the one symbol or group"},
      {"*3", 0, "'*' repeats"},
      {"E,,x", 3, "('x')"},  // indices count the commas
      {"Et*99999|L", 3, "a repetition count of at most 4096"},
      {"E(t*4096|)*4096L", 1, "at most 1048576 symbols"},
  };
  for (const Malformed& c : cases) {
    const std::string m = error_of([&] { parse_pipeline_layout(c.text); });
    EXPECT_SAYS(m, std::string("--pipeline-model-parallel-layout \"") + c.text + "\"",
                "at character " + std::to_string(c.position) + " ", c.expected);
    // The same message from the layout itself.
    EXPECT_EQ(error_of([&] { PipelineLayout{layout_options(c.text, 4, 0, 1)}; }), m) << c.text;
  }
}

struct BrokenRule {
  const char* text;
  int64_t layers, mtp;
  int pp;
  std::vector<std::string> says;
};

TEST(PipelineLayout, LayoutRuleViolationsNameTheNumbers) {
  const BrokenRule cases[] = {
      {"t*4|tL", 5, 0, 2, {"has no E"}},
      {"Et*2|EtL", 4, 0, 2, {"has E 2 times (characters 0, 5)"}},
      {"|Et*2|tL", 3, 0, 3, {"E (character 1) must be the first symbol of stage 0"}},
      {"tE|tL", 2, 0, 2, {"E (character 1) must be the first symbol of stage 0"}},
      {"Et*4|t", 5, 0, 2, {"has no L"}},
      {"EtL|tL", 2, 0, 2, {"has L 2 times (characters 2, 5)"}},
      {"Et*2|tL|", 3, 0, 3, {"L (character 6) must be the last symbol of the last stage, stage 2"}},
      {"Et*3|tL", 5, 0, 2, {"has 4 decoder layers (t), but --num-layers is 5"}},
      {"Et*2|ttmL", 4, 2, 2, {"has 1 MTP layers (m), but --mtp-num-layers is 2"}},
      {"Et*2|ttmL", 4, 0, 2, {"has 1 MTP layers (m), but --mtp-num-layers is 0"}},
      {"Et*2|tmtL",
       4,
       1,
       2,
       {"decoder layer t at character 7", "after the MTP layer m at character 6"}},
      {"Et|tm||L",
       2,
       1,
       2,
       {"MTP layer m at character 4 is in stage 1 (pipeline rank 1, virtual stage 0)",
        "a rank's last virtual stage (1)"}},
      {"Et|t|m|mL",
       2,
       2,
       2,
       {"MTP layers are split over stage 2 (pipeline rank 0, virtual stage 1) and stage 3 "
        "(pipeline rank 1, virtual stage 1) (the m at character 7)",
        "all 2 MTP layers go in one stage"}},
      {"Et|t|tL", 3, 0, 2, {"has 3 stages", "multiple of --pipeline-model-parallel-size 2"}},
      {"Et|tL", 2, 0, 1, {"has 2 stages on one pipeline rank", "above 1"}},
  };
  for (const BrokenRule& c : cases) {
    const std::string m =
        error_of([&] { PipelineLayout{layout_options(c.text, c.layers, c.mtp, c.pp)}; });
    EXPECT_SAYS(m, std::string("\"") + c.text + "\"");
    for (const std::string& part : c.says) EXPECT_SAYS(m, part);
  }
}

TEST(PipelineLayout, LayoutRefusesTheSplitFlags) {
  PipelineLayoutOptions o = layout_options("Et|tL", 2, 0, 2);
  EXPECT_NO_THROW(PipelineLayout{o});
  for (int k = 0; k < 4; ++k) {
    PipelineLayoutOptions bad = o;
    if (k == 0) bad.decoder_first_pipeline_num_layers = 1;
    if (k == 1) bad.decoder_last_pipeline_num_layers = 1;
    if (k == 2) bad.account_for_embedding_in_pipeline_split = true;
    if (k == 3) bad.account_for_loss_in_pipeline_split = true;
    EXPECT_SAYS(error_of([&] { PipelineLayout{bad}; }),
                "--pipeline-model-parallel-layout cannot be combined with");
  }
}

// ---- flag-driven splits -------------------------------------------------------------------

TEST(PipelineLayout, EvenSplitMatchesMegatronsOffsets) {
  for (int pp : {1, 2, 4})
    for (int v : {1, 2}) {
      if (pp == 1 && v == 2) continue;
      for (int64_t mtp : {0, 2}) {
        PipelineLayoutOptions o = split_options(16, pp, v);
        o.mtp_num_layers = mtp;
        const PipelineLayout l(o);
        SCOPED_TRACE("P " + std::to_string(pp) + " V " + std::to_string(v));
        EXPECT_EQ(l.num_stages(), pp * v);
        for (const PipelineStage& st : l.stages()) EXPECT_EQ(st.num_layers, 16 / (pp * v));
        EXPECT_EQ(l.stage(l.last_stage()).num_mtp_layers, mtp);
        EXPECT_FALSE(l.mtp_standalone());
        expect_megatron_offsets(l, o);
        expect_consistent(l, o);
      }
    }
  // Megatron's comment: 8 layers, 2 ranks, 2 chunks -> rank 0 [0, 1] [4, 5], rank 1 [2, 3] [6, 7].
  const PipelineLayout l(split_options(8, 2, 2));
  EXPECT_EQ(l.stage_of(0, 1).first_layer, 4);
  EXPECT_EQ(l.stage_of(1, 0).first_layer, 2);
  EXPECT_EQ(l.stage_of(1, 1).first_layer, 6);
  EXPECT_EQ(l.stage_of_layer(5), l.stage_index(0, 1));
  EXPECT_EQ(l.to_string(), "Ett|tt|tt|ttL");
  PipelineLayoutOptions with_mtp = split_options(8, 4, 1);
  with_mtp.mtp_num_layers = 1;
  EXPECT_EQ(PipelineLayout(with_mtp).to_string(), "Ett|tt|tt|ttmL");
  EXPECT_EQ(PipelineLayout(split_options(16, 8, 1)).to_string(), "Ett|(tt|)*6,ttL");
  EXPECT_EQ(PipelineLayout(split_options(16, 4, 1)).to_string(), "Et*4|t*4|t*4|t*4L");
  PipelineLayoutOptions unset_v = split_options(8, 4, 1);
  unset_v.virtual_stages.reset();
  EXPECT_EQ(PipelineLayout(unset_v).virtual_stages(), 1);
}

TEST(PipelineLayout, EvenSplitRefusals) {
  EXPECT_SAYS(error_of([] { PipelineLayout{split_options(6, 4, 1)}; }),
              "--num-layers 6 must divide by --pipeline-model-parallel-size 4");
  EXPECT_SAYS(
      error_of([] { PipelineLayout{split_options(6, 2, 2)}; }),
      "gives 3 layers per pipeline rank, which must divide by the virtual stages per rank 2");
  EXPECT_SAYS(
      error_of([] { PipelineLayout{split_options(8, 1, 2)}; }),
      "--num-virtual-stages-per-pipeline-rank 2 needs --pipeline-model-parallel-size above 1");
  EXPECT_SAYS(error_of([] { PipelineLayout{split_options(0, 2, 1)}; }),
              "--num-layers must be positive, got 0");
  EXPECT_SAYS(error_of([] { PipelineLayout{split_options(8, 0, 1)}; }),
              "--pipeline-model-parallel-size must be positive, got 0");
  EXPECT_SAYS(error_of([] { PipelineLayout{split_options(8, 2, 0)}; }),
              "--num-virtual-stages-per-pipeline-rank must be positive, got 0");
}

struct Uneven {
  int64_t layers;
  int pp, v;
  std::optional<int64_t> first, last;
  std::vector<int64_t> stage_layers;
};

TEST(PipelineLayout, UnevenFirstAndLastStagesMatchMegatronsOffsets) {
  const Uneven cases[] = {
      {10, 4, 1, 1, 3, {1, 3, 3, 3}},
      {10, 3, 1, 2, std::nullopt, {2, 4, 4}},
      {10, 3, 1, std::nullopt, 2, {4, 4, 2}},
      {10, 2, 1, 4, 6, {4, 6}},
      {10, 2, 1, 4, std::nullopt, {4, 6}},
      {61, 8, 1, 5, std::nullopt, {5, 8, 8, 8, 8, 8, 8, 8}},
      {16, 4, 2, 2, 2, {1, 3, 3, 1, 1, 3, 3, 1}},
      {20, 4, 2, 2, std::nullopt, {1, 3, 3, 3, 1, 3, 3, 3}},
      {8, 1, 1, 8, std::nullopt, {8}},
  };
  for (const Uneven& c : cases) {
    PipelineLayoutOptions o = split_options(c.layers, c.pp, c.v);
    o.decoder_first_pipeline_num_layers = c.first;
    o.decoder_last_pipeline_num_layers = c.last;
    o.mtp_num_layers = 1;
    const PipelineLayout l(o);
    SCOPED_TRACE(l.to_string());
    EXPECT_EQ(counts(l), c.stage_layers);
    expect_megatron_offsets(l, o);
    expect_consistent(l, o);
  }
}

TEST(PipelineLayout, UnevenRefusals) {
  auto uneven = [](int64_t layers, int pp, int v, std::optional<int64_t> first,
                   std::optional<int64_t> last) {
    PipelineLayoutOptions o = split_options(layers, pp, v);
    o.decoder_first_pipeline_num_layers = first;
    o.decoder_last_pipeline_num_layers = last;
    return error_of([&] { PipelineLayout{o}; });
  };
  EXPECT_SAYS(uneven(10, 4, 1, 0, std::nullopt),
              "--decoder-first-pipeline-num-layers must be positive, got 0");
  EXPECT_SAYS(uneven(12, 4, 2, 3, 3),
              "--decoder-first-pipeline-num-layers 3 must divide by the "
              "virtual stages per rank (2)");
  EXPECT_SAYS(uneven(12, 4, 2, 2, 3), "--decoder-last-pipeline-num-layers 3 must divide");
  EXPECT_SAYS(uneven(10, 4, 1, 1, 2), "the 7 layers left", "by the 2 middle pipeline ranks");
  EXPECT_SAYS(uneven(10, 4, 2, 2, 2), "each middle pipeline rank's 3 layers",
              "virtual stages per rank (2)");
  EXPECT_SAYS(uneven(10, 2, 1, 4, 5), "leave 1 of --num-layers 10 for 0 middle pipeline ranks");
  EXPECT_SAYS(uneven(10, 3, 1, 5, 5), "leave 0 of --num-layers 10 for 1 middle pipeline ranks");
  EXPECT_SAYS(uneven(4, 3, 1, 3, 3), "take 6 layers, more than --num-layers 4");
  EXPECT_SAYS(uneven(8, 1, 1, 4, 4), "together need --pipeline-model-parallel-size of at least 2");
  PipelineLayoutOptions o = split_options(10, 4, 1);
  o.decoder_first_pipeline_num_layers = 1;
  o.decoder_last_pipeline_num_layers = 3;
  o.account_for_loss_in_pipeline_split = true;
  EXPECT_SAYS(error_of([&] { PipelineLayout{o}; }),
              "cannot be combined with --account-for-embedding-in-pipeline-split or "
              "--account-for-loss-in-pipeline-split");
}

TEST(PipelineLayout, AccountForEmbeddingAndLossMatchMegatronsOffsets) {
  struct Case {
    int64_t layers;
    int pp, v;
    bool emb, loss;
    std::vector<int64_t> stage_layers;
  };
  const Case cases[] = {
      {6, 4, 1, true, true, {1, 2, 2, 1}},
      {7, 4, 1, true, false, {1, 2, 2, 2}},
      {7, 4, 1, false, true, {2, 2, 2, 1}},
      {6, 2, 2, true, true, {1, 2, 2, 1}},
      {14, 4, 2, true, true, {1, 2, 2, 2, 2, 2, 2, 1}},
      {2, 4, 1, true, true, {0, 1, 1, 0}},
      {61, 2, 1, true, false, {30, 31}},
  };
  for (const Case& c : cases) {
    PipelineLayoutOptions o = split_options(c.layers, c.pp, c.v);
    o.account_for_embedding_in_pipeline_split = c.emb;
    o.account_for_loss_in_pipeline_split = c.loss;
    const PipelineLayout l(o);
    SCOPED_TRACE(l.to_string());
    EXPECT_EQ(counts(l), c.stage_layers);
    expect_megatron_offsets(l, o);
    expect_consistent(l, o);
  }
  PipelineLayoutOptions o = split_options(7, 4, 1);
  o.account_for_embedding_in_pipeline_split = true;
  o.account_for_loss_in_pipeline_split = true;
  EXPECT_SAYS(error_of([&] { PipelineLayout{o}; }),
              "--num-layers 7 + 2 (embedding and loss accounted in the split) = 9 must divide by "
              "--pipeline-model-parallel-size 4");
  o = split_options(6, 2, 4);
  o.account_for_loss_in_pipeline_split = true;
  EXPECT_SAYS(error_of([&] { PipelineLayout{o}; }), "(loss accounted in the split) = 7");
  o = split_options(5, 2, 2);
  o.account_for_embedding_in_pipeline_split = true;
  EXPECT_SAYS(
      error_of([&] { PipelineLayout{o}; }),
      "gives 3 layers per pipeline rank, which must divide by the virtual stages per rank 2");
}

TEST(PipelineLayout, VirtualStagesFromLayersPerVirtualStage) {
  PipelineLayoutOptions o = split_options(16, 2, 1);
  o.virtual_stages.reset();
  EXPECT_EQ(virtual_stages_from_layers_per_virtual_stage(o, 2), 4);
  EXPECT_EQ(virtual_stages_from_layers_per_virtual_stage(o, 8), 1);
  EXPECT_SAYS(error_of([&] { virtual_stages_from_layers_per_virtual_stage(o, 3); }),
              "the 8 layers per pipeline rank must divide by "
              "--num-layers-per-virtual-pipeline-stage 3");
  EXPECT_SAYS(error_of([&] { virtual_stages_from_layers_per_virtual_stage(o, 0); }),
              "--num-layers-per-virtual-pipeline-stage must be positive, got 0");
  PipelineLayoutOptions acc = o;
  acc.num_layers = 6;
  acc.account_for_embedding_in_pipeline_split = true;
  acc.account_for_loss_in_pipeline_split = true;
  EXPECT_EQ(virtual_stages_from_layers_per_virtual_stage(acc, 2), 2);
  acc.account_for_loss_in_pipeline_split = false;
  EXPECT_SAYS(error_of([&] { virtual_stages_from_layers_per_virtual_stage(acc, 1); }),
              "--num-layers 6 (+ the accounted embedding/loss) = 7 must divide by "
              "--pipeline-model-parallel-size 2");
  PipelineLayoutOptions bad = o;
  bad.decoder_first_pipeline_num_layers = 4;
  EXPECT_SAYS(error_of([&] { virtual_stages_from_layers_per_virtual_stage(bad, 2); }),
              "give --num-virtual-stages-per-pipeline-rank instead");
  bad = o;
  bad.virtual_stages = 2;
  EXPECT_SAYS(error_of([&] { virtual_stages_from_layers_per_virtual_stage(bad, 2); }),
              "cannot be combined with --num-virtual-stages-per-pipeline-rank");
  bad = o;
  bad.layout = "Et*8|t*8L";
  EXPECT_SAYS(error_of([&] { virtual_stages_from_layers_per_virtual_stage(bad, 2); }),
              "cannot be combined with --pipeline-model-parallel-layout");
}

TEST(PipelineLayout, LookupsRefuseOutOfRange) {
  const PipelineLayout l(split_options(8, 2, 2));
  EXPECT_SAYS(error_of([&] { l.stage_of(2, 0); }), "pipeline rank 2 out of range [0, 2)");
  EXPECT_SAYS(error_of([&] { l.stage_of(0, 2); }), "virtual stage 2 out of range [0, 2)");
  EXPECT_SAYS(error_of([&] { l.stage(4); }), "pipeline stage 4 out of range [0, 4)");
  EXPECT_SAYS(error_of([&] { l.stage_of_layer(8); }), "decoder layer 8 out of range [0, 8)");
  EXPECT_SAYS(error_of([&] { l.stage_of_mtp_layer(0); }), "MTP layer 0 out of range [0, 0)");
  EXPECT_EQ(l.pp_rank_of(3), 1);
  EXPECT_EQ(l.chunk_of(3), 1);
  EXPECT_EQ(l.first_stage(), 0);
  EXPECT_EQ(l.last_stage(), 3);
}

}  // namespace
}  // namespace moe::nn
