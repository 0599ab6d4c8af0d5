// Pipeline stage layout from Megatron's flags (pipeline_layout.h).
#include "moe/nn/pipeline_layout.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "moe/core/error.h"
#include "moe/nn/config_limits.h"

namespace moe::nn {
namespace {

constexpr const char* kLayoutFlag = "--pipeline-model-parallel-layout";
// A repetition count above this is refused (no model has more layers: config_limits.h), and
// so is a layout unrolling to more symbols than kMaxSymbols, before it is unrolled.
constexpr int64_t kMaxRepeat = kLayerLimit.max;
constexpr int64_t kMaxSymbols = int64_t{1} << 20;

// One unrolled symbol and the index of the character it came from.
struct Symbol {
  char kind;  // E t m L |
  int64_t pos;
};

bool is_symbol(char c) {
  return c == 'E' || c == 't' || c == 'm' || c == 'L' || c == '|';
}

// Recursive descent over the text with its commas dropped (each remaining character keeps its
// index in the text as given, for the messages). Groups do not nest, so the depth is one.
class LayoutParser {
 public:
  explicit LayoutParser(std::string_view text) : text_(text) {
    for (size_t i = 0; i < text.size(); ++i)
      if (text[i] != ',') chars_.push_back({text[i], static_cast<int64_t>(i)});
  }

  std::vector<Symbol> parse() { return sequence(/*in_group=*/false); }

 private:
  std::vector<Symbol> sequence(bool in_group) {
    std::vector<Symbol> out;
    while (i_ < chars_.size()) {
      const char c = chars_[i_].c;
      if (is_symbol(c)) {
        const Symbol s{c, chars_[i_].pos};
        ++i_;
        append(out, {s}, optional_count(), s.pos);
      } else if (c == '(') {
        if (in_group)
          fail_here("a layer symbol (E t m L), '|', or ')' closing the group opened at character " +
                    std::to_string(group_open_) + " (groups do not nest)");
        group_open_ = chars_[i_].pos;
        ++i_;
        std::vector<Symbol> body = sequence(/*in_group=*/true);
        if (i_ == chars_.size())
          fail_here("')' closing the group opened at character " + std::to_string(group_open_));
        if (body.empty())
          fail_here("a layer symbol (E t m L) or '|' inside the group opened at character " +
                    std::to_string(group_open_) + " (a group is never empty)");
        ++i_;  // ')'
        if (i_ == chars_.size() || chars_[i_].c != '*')
          fail_here(
              "'*' and a repetition count after the group's ')' (a group is written "
              "(...)*N)");
        ++i_;
        append(out, body, count(), group_open_);
      } else if (c == ')' && in_group) {
        return out;
      } else if (c == ')') {
        fail_here("a layer symbol (E t m L), '|' or '(' (this ')' closes no group)");
      } else if (c == '*') {
        fail_here(std::string(in_group ? "a layer symbol (E t m L), '|' or ')'"
                                       : "a layer symbol (E t m L), '|' or '('") +
                  " ('*' repeats the one symbol or group just before it, once: \"t*3\", "
                  "\"(tt|)*2\")");
      } else {
        fail_here(
            std::string(in_group ? "a layer symbol (E t m L), '|' or ')'"
                                 : "a layer symbol (E t m L), '|' or '('") +
            (c == ' ' ? " (spaces are not allowed; commas are the cosmetic separators)" : ""));
      }
    }
    return out;
  }

  // '*' count after a symbol, else 1.
  int64_t optional_count() {
    if (i_ == chars_.size() || chars_[i_].c != '*') return 1;
    ++i_;
    return count();
  }

  // Digits (after '*'), as Megatron's int(): leading zeros allowed, 0 allowed (repeats nothing).
  int64_t count() {
    if (i_ == chars_.size() || !std::isdigit(static_cast<unsigned char>(chars_[i_].c)))
      fail_here("a repetition count (digits) after '*'");
    const int64_t start = chars_[i_].pos;
    int64_t n = 0;
    while (i_ < chars_.size() && std::isdigit(static_cast<unsigned char>(chars_[i_].c))) {
      n = n * 10 + (chars_[i_].c - '0');
      if (n > kMaxRepeat)
        fail_at(start, "a repetition count of at most " + std::to_string(kMaxRepeat) +
                           " (no model has more layers)");
      ++i_;
    }
    return n;
  }

  // `times` copies of `body`, written at character `pos` (the symbol, or the group's '(').
  void append(std::vector<Symbol>& out, const std::vector<Symbol>& body, int64_t times,
              int64_t pos) {
    const int64_t added = static_cast<int64_t>(body.size()) * times;
    if (total_ + added > kMaxSymbols)
      fail_at(pos, "a layout of at most " + std::to_string(kMaxSymbols) +
                       " symbols once repetition is unrolled");
    total_ += added;
    for (int64_t k = 0; k < times; ++k) out.insert(out.end(), body.begin(), body.end());
  }

  [[noreturn]] void fail_here(const std::string& expected) const {
    if (i_ == chars_.size())
      MOE_FAIL(kLayoutFlag, " \"", text_, "\": at character ", text_.size(),
               " (the end of the text): expected ", expected);
    fail_at(chars_[i_].pos, expected);
  }

  [[noreturn]] void fail_at(int64_t pos, const std::string& expected) const {
    MOE_FAIL(kLayoutFlag, " \"", text_, "\": at character ", pos, " ('", text_[pos],
             "'): expected ", expected);
  }

  struct Char {
    char c;
    int64_t pos;
  };
  std::string_view text_;
  std::vector<Char> chars_;
  size_t i_ = 0;
  int64_t group_open_ = -1;
  int64_t total_ = 0;
};

std::vector<std::vector<Symbol>> split_stages(const std::vector<Symbol>& symbols) {
  std::vector<std::vector<Symbol>> stages(1);
  for (const Symbol& s : symbols) {
    if (s.kind == '|')
      stages.emplace_back();
    else
      stages.back().push_back(s);
  }
  return stages;
}

std::string where(int s, int pp, int chunk, int v) {
  std::ostringstream out;
  out << "stage " << s << " (pipeline rank " << s % pp;
  if (v > 1) out << ", virtual stage " << chunk;
  out << ")";
  return out.str();
}

std::string positions(const std::vector<int64_t>& pos) {
  std::ostringstream out;
  for (size_t i = 0; i < pos.size(); ++i) out << (i ? ", " : "") << pos[i];
  return out.str();
}

// The layout's stages checked against Megatron's rules (validate_layer_layout, tightened for E
// and L), then counted. `v` is the virtual stage count already matched to the stage count.
std::vector<PipelineStage> stages_from_layout(const std::string& text,
                                              const std::vector<std::vector<Symbol>>& parsed,
                                              int pp, int v, int64_t num_layers, int64_t mtp) {
  const int n = static_cast<int>(parsed.size());
  auto here = [&](int s) { return where(s, pp, s / pp, v); };
  std::vector<int64_t> e_pos, l_pos;
  int64_t t_count = 0, m_count = 0;
  for (const auto& stage : parsed)
    for (const Symbol& x : stage) {
      if (x.kind == 'E') e_pos.push_back(x.pos);
      if (x.kind == 'L') l_pos.push_back(x.pos);
      t_count += x.kind == 't';
      m_count += x.kind == 'm';
    }
  const std::string flag = std::string(kLayoutFlag) + " \"" + text + "\"";

  MOE_CHECK(!e_pos.empty(), flag, ": has no E; the embedding is the first symbol of stage 0");
  MOE_CHECK(e_pos.size() == 1, flag, ": has E ", e_pos.size(), " times (characters ",
            positions(e_pos), "); the embedding is built once, first in stage 0");
  MOE_CHECK(!parsed[0].empty() && parsed[0].front().kind == 'E', flag, ": E (character ", e_pos[0],
            ") must be the first symbol of stage 0, where the embedding is built");
  MOE_CHECK(!l_pos.empty(), flag, ": has no L; the loss is the last symbol of the last stage");
  MOE_CHECK(l_pos.size() == 1, flag, ": has L ", l_pos.size(), " times (characters ",
            positions(l_pos), "); the loss is built once, last in the last stage");
  MOE_CHECK(!parsed[n - 1].empty() && parsed[n - 1].back().kind == 'L', flag, ": L (character ",
            l_pos[0], ") must be the last symbol of the last stage, ", here(n - 1),
            ", where the loss is built");
  MOE_CHECK(t_count == num_layers, flag, ": has ", t_count,
            " decoder layers (t), but --num-layers is ", num_layers);
  MOE_CHECK(m_count == mtp, flag, ": has ", m_count, " MTP layers (m), but --mtp-num-layers is ",
            mtp);

  std::vector<PipelineStage> stages(n);
  int mtp_stage = -1;
  int64_t first_m_pos = -1;
  int64_t layer = 0, depth = 0;
  for (int s = 0; s < n; ++s) {
    PipelineStage& st = stages[s];
    st.first_layer = layer;
    st.first_mtp_layer = depth;
    for (const Symbol& x : parsed[s]) {
      if (x.kind == 'E') st.embedding = true;
      if (x.kind == 'L') st.loss = true;
      if (x.kind == 't') {
        MOE_CHECK(first_m_pos < 0, flag, ": decoder layer t at character ", x.pos,
                  " comes after the MTP layer m at character ", first_m_pos,
                  "; MTP layers follow every decoder layer");
        ++st.num_layers;
        ++layer;
      }
      if (x.kind == 'm') {
        if (first_m_pos < 0) first_m_pos = x.pos;
        MOE_CHECK(s / pp == v - 1, flag, ": MTP layer m at character ", x.pos, " is in ", here(s),
                  "; MTP layers go in a rank's last virtual stage (", v - 1, ")");
        MOE_CHECK(mtp_stage < 0 || mtp_stage == s, flag, ": MTP layers are split over ",
                  here(mtp_stage), " and ", here(s), " (the m at character ", x.pos, "); all ", mtp,
                  " MTP layers go in one stage");
        mtp_stage = s;
        ++st.num_mtp_layers;
        ++depth;
      }
    }
  }
  return stages;
}

// --decoder-first/last-pipeline-num-layers: the layer count of each pipeline rank.
std::vector<int64_t> uneven_rank_layers(const PipelineLayoutOptions& o, int pp, int v) {
  const auto& first = o.decoder_first_pipeline_num_layers;
  const auto& last = o.decoder_last_pipeline_num_layers;
  MOE_CHECK(!o.account_for_embedding_in_pipeline_split && !o.account_for_loss_in_pipeline_split,
            "--decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers cannot be "
            "combined with --account-for-embedding-in-pipeline-split or "
            "--account-for-loss-in-pipeline-split");
  int64_t middle_layers = o.num_layers;
  int middle_ranks = pp;
  for (const auto& [value, name] : {std::pair{first, "--decoder-first-pipeline-num-layers"},
                                    std::pair{last, "--decoder-last-pipeline-num-layers"}}) {
    if (!value) continue;
    MOE_CHECK(*value > 0, name, " must be positive, got ", *value);
    MOE_CHECK(*value % v == 0, name, " ", *value, " must divide by the virtual stages per rank (",
              v,
              "): each chunk of the rank "
              "holds an equal share");
    middle_layers -= *value;
    middle_ranks -= 1;
  }
  MOE_CHECK(middle_ranks >= 0,
            "--decoder-first-pipeline-num-layers and "
            "--decoder-last-pipeline-num-layers together need --pipeline-model-parallel-size of "
            "at least 2, got ",
            pp);
  const int64_t first_last = o.num_layers - middle_layers;
  MOE_CHECK(middle_layers >= 0, "--decoder-first/last-pipeline-num-layers take ", first_last,
            " layers, more than --num-layers ", o.num_layers);
  MOE_CHECK((middle_layers > 0) == (middle_ranks > 0),
            "--decoder-first/last-pipeline-num-layers "
            "leave ",
            middle_layers, " of --num-layers ", o.num_layers, " for ", middle_ranks,
            " middle pipeline ranks (--pipeline-model-parallel-size ", pp,
            "); there must be both or neither");
  int64_t per_middle = 0;
  if (middle_ranks > 0) {
    MOE_CHECK(middle_layers % middle_ranks == 0, "the ", middle_layers,
              " layers left by --decoder-first/last-pipeline-num-layers must divide by the ",
              middle_ranks, " middle pipeline ranks");
    per_middle = middle_layers / middle_ranks;
    MOE_CHECK(per_middle % v == 0, "each middle pipeline rank's ", per_middle,
              " layers (--decoder-first/last-pipeline-num-layers) must divide by the virtual "
              "stages per rank (",
              v, ")");
  }
  std::vector<int64_t> per_rank(pp, per_middle);
  if (first) per_rank.front() = *first;
  if (last) per_rank.back() = *last;
  return per_rank;
}

// Even split, the embedding and the loss optionally counting as a layer each.
std::vector<int64_t> even_stage_layers(const PipelineLayoutOptions& o, int pp, int v) {
  const bool emb = o.account_for_embedding_in_pipeline_split;
  const bool loss = o.account_for_loss_in_pipeline_split;
  const int64_t slots = o.num_layers + emb + loss;
  const std::string what = emb || loss
                               ? std::string("--num-layers ") + std::to_string(o.num_layers) +
                                     " + " + std::to_string(emb + loss) + " (" +
                                     (emb ? (loss ? "embedding and loss" : "embedding") : "loss") +
                                     " accounted in the split) = " + std::to_string(slots)
                               : std::string("--num-layers ") + std::to_string(o.num_layers);
  MOE_CHECK(slots % pp == 0, what, " must divide by --pipeline-model-parallel-size ", pp,
            " (or use --decoder-first/last-pipeline-num-layers or ", kLayoutFlag, ")");
  MOE_CHECK((slots / pp) % v == 0, what, " gives ", slots / pp,
            " layers per pipeline rank, which must divide by the virtual stages per rank ", v);
  const int64_t per_stage = slots / pp / v;
  std::vector<int64_t> counts(static_cast<size_t>(pp) * v, per_stage);
  counts.front() -= emb;
  counts.back() -= loss;  // per_stage >= 1: slots > 0 divides by P * V
  return counts;
}

std::string stage_string(const PipelineStage& st) {
  std::string out;
  auto add = [&](char c, int64_t n) {
    if (n == 0) return;
    if (n <= 2)
      out.append(static_cast<size_t>(n), c);
    else
      out += std::string(1, c) + "*" + std::to_string(n);
  };
  if (st.embedding) out += 'E';
  add('t', st.num_layers);
  add('m', st.num_mtp_layers);
  if (st.loss) out += 'L';
  return out;
}

}  // namespace

std::vector<std::string> parse_pipeline_layout(std::string_view layout) {
  std::vector<std::string> out;
  for (const auto& stage : split_stages(LayoutParser(layout).parse())) {
    std::string s;
    for (const Symbol& x : stage) s += x.kind;
    out.push_back(std::move(s));
  }
  return out;
}

int virtual_stages_from_layers_per_virtual_stage(const PipelineLayoutOptions& o,
                                                 int64_t layers_per_virtual_stage) {
  const int64_t n = layers_per_virtual_stage;
  MOE_CHECK(n > 0, "--num-layers-per-virtual-pipeline-stage must be positive, got ", n);
  MOE_CHECK(o.layout.empty() && !o.virtual_stages,
            "--num-layers-per-virtual-pipeline-stage cannot be combined with ",
            o.layout.empty() ? "--num-virtual-stages-per-pipeline-rank" : kLayoutFlag,
            "; give one of them");
  MOE_CHECK(!o.decoder_first_pipeline_num_layers && !o.decoder_last_pipeline_num_layers,
            "--num-layers-per-virtual-pipeline-stage cannot be combined with "
            "--decoder-first/last-pipeline-num-layers; give --num-virtual-stages-per-pipeline-rank "
            "instead");
  check_size("--num-layers", o.num_layers, 1, kLayerLimit);
  check_size("--pipeline-model-parallel-size", o.pipeline_size, 1, kLayerLimit);
  const int64_t slots = o.num_layers + o.account_for_embedding_in_pipeline_split +
                        o.account_for_loss_in_pipeline_split;
  MOE_CHECK(slots % o.pipeline_size == 0, "--num-layers ", o.num_layers,
            (slots != o.num_layers ? " (+ the accounted embedding/loss)" : ""), " = ", slots,
            " must divide by --pipeline-model-parallel-size ", o.pipeline_size);
  const int64_t per_rank = slots / o.pipeline_size;
  MOE_CHECK(per_rank % n == 0, "the ", per_rank,
            " layers per pipeline rank must divide by "
            "--num-layers-per-virtual-pipeline-stage ",
            n);
  return static_cast<int>(per_rank / n);
}

PipelineLayout::PipelineLayout(const PipelineLayoutOptions& o)
    : pipeline_size_(o.pipeline_size),
      num_layers_(o.num_layers),
      mtp_num_layers_(o.mtp_num_layers) {
  check_size("--num-layers", o.num_layers, 1, kLayerLimit);
  check_size("--mtp-num-layers", o.mtp_num_layers, 0, kLayerLimit);
  check_size("--pipeline-model-parallel-size", o.pipeline_size, 1, kLayerLimit);
  if (o.virtual_stages)
    check_size("--num-virtual-stages-per-pipeline-rank", *o.virtual_stages, 1, kLayerLimit);
  const int pp = o.pipeline_size;

  if (!o.layout.empty()) {
    MOE_CHECK(!o.decoder_first_pipeline_num_layers && !o.decoder_last_pipeline_num_layers &&
                  !o.account_for_embedding_in_pipeline_split &&
                  !o.account_for_loss_in_pipeline_split,
              kLayoutFlag,
              " cannot be combined with --decoder-first/last-pipeline-num-layers, "
              "--account-for-embedding-in-pipeline-split or --account-for-loss-in-pipeline-split "
              "(the layout places every layer)");
    const auto parsed = split_stages(LayoutParser(o.layout).parse());
    const int n = static_cast<int>(parsed.size());
    if (o.virtual_stages) {
      MOE_CHECK(n == static_cast<int64_t>(pp) * *o.virtual_stages, kLayoutFlag, " \"", o.layout,
                "\": has ", n, " stages, but --pipeline-model-parallel-size ", pp,
                " x --num-virtual-stages-per-pipeline-rank ", *o.virtual_stages, " = ",
                static_cast<int64_t>(pp) * *o.virtual_stages);
    } else {
      MOE_CHECK(n % pp == 0, kLayoutFlag, " \"", o.layout, "\": has ", n,
                " stages, which must be a multiple of --pipeline-model-parallel-size ", pp,
                " (P x the virtual stages per rank)");
    }
    virtual_stages_ = n / pp;
    MOE_CHECK(virtual_stages_ == 1 || pp > 1, kLayoutFlag, " \"", o.layout, "\": has ", n,
              " stages on one pipeline rank; virtual stages need --pipeline-model-parallel-size "
              "above 1");
    stages_ =
        stages_from_layout(o.layout, parsed, pp, virtual_stages_, o.num_layers, o.mtp_num_layers);
    return;
  }

  const int v = o.virtual_stages.value_or(1);
  virtual_stages_ = v;
  MOE_CHECK(v == 1 || pp > 1, "--num-virtual-stages-per-pipeline-rank ", v,
            " needs --pipeline-model-parallel-size above 1");
  std::vector<int64_t> counts;
  if (o.decoder_first_pipeline_num_layers || o.decoder_last_pipeline_num_layers) {
    const std::vector<int64_t> per_rank = uneven_rank_layers(o, pp, v);
    for (int s = 0; s < pp * v; ++s) counts.push_back(per_rank[s % pp] / v);
  } else {
    counts = even_stage_layers(o, pp, v);
  }
  const int n = pp * v;
  stages_.resize(n);
  int64_t layer = 0;
  for (int s = 0; s < n; ++s) {
    stages_[s].first_layer = layer;
    stages_[s].num_layers = counts[s];
    layer += counts[s];
  }
  stages_.front().embedding = true;
  stages_.back().loss = true;
  stages_.back().num_mtp_layers = o.mtp_num_layers;
}

const PipelineStage& PipelineLayout::stage(int s) const {
  MOE_CHECK(s >= 0 && s < num_stages(), "pipeline stage ", s, " out of range [0, ", num_stages(),
            ")");
  return stages_[s];
}

int PipelineLayout::stage_index(int pp_rank, int chunk) const {
  MOE_CHECK(pp_rank >= 0 && pp_rank < pipeline_size_, "pipeline rank ", pp_rank,
            " out of range [0, ", pipeline_size_, ")");
  MOE_CHECK(chunk >= 0 && chunk < virtual_stages_, "virtual stage ", chunk, " out of range [0, ",
            virtual_stages_, ")");
  return chunk * pipeline_size_ + pp_rank;
}

const PipelineStage& PipelineLayout::stage_of(int pp_rank, int chunk) const {
  return stages_[stage_index(pp_rank, chunk)];
}

int PipelineLayout::pp_rank_of(int s) const {
  stage(s);
  return s % pipeline_size_;
}

int PipelineLayout::chunk_of(int s) const {
  stage(s);
  return s / pipeline_size_;
}

int PipelineLayout::stage_of_layer(int64_t layer) const {
  MOE_CHECK(layer >= 0 && layer < num_layers_, "decoder layer ", layer, " out of range [0, ",
            num_layers_, ")");
  for (int s = 0; s < num_stages(); ++s)
    if (layer < stages_[s].first_layer + stages_[s].num_layers) return s;
  MOE_FAIL("decoder layer ", layer, " is in no pipeline stage");
}

int PipelineLayout::stage_of_mtp_layer(int64_t depth) const {
  MOE_CHECK(depth >= 0 && depth < mtp_num_layers_, "MTP layer ", depth, " out of range [0, ",
            mtp_num_layers_, ")");
  for (int s = 0; s < num_stages(); ++s)
    if (depth < stages_[s].first_mtp_layer + stages_[s].num_mtp_layers) return s;
  MOE_FAIL("MTP layer ", depth, " is in no pipeline stage");
}

bool PipelineLayout::mtp_standalone() const {
  for (int s = 0; s < num_stages(); ++s)
    if (stages_[s].num_mtp_layers > 0 && pp_rank_of(s) != pipeline_size_ - 1) return true;
  return false;
}

std::string PipelineLayout::to_string() const {
  std::vector<std::string> parts;
  for (const PipelineStage& st : stages_) parts.push_back(stage_string(st));
  // Runs of 3 or more equal stages become "(c|)*k," (the group's last '|' separates it from
  // what follows). The last stage is never in a run: only it holds the loss.
  std::string out;
  for (size_t i = 0; i < parts.size();) {
    size_t j = i;
    while (j < parts.size() && parts[j] == parts[i]) ++j;
    if (j - i >= 3) {
      out += "(" + parts[i] + "|)*" + std::to_string(j - i) + ",";
    } else {
      for (size_t r = i; r < j; ++r) out += parts[i] + (r + 1 < parts.size() ? "|" : "");
    }
    i = j;
  }
  return out;
}

}  // namespace moe::nn
