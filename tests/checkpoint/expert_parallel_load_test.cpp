// Model folders loaded into expert-parallel models (load_weights, box_load.h): on Local threads,
// every rank of EP x ETP builds its model (holding only its box of each stacked expert tensor)
// and loads a Hugging Face folder (f32, bf16, DeepSeek-V3 FP8 with MTP and expert bias) or a
// moecore folder (FP8 kept included). Each rank's parameters and buffers must equal, bitwise,
// the box of the one-rank model's that load_model gives; a counting source records what each
// rank reads: only the HF tensors of its own experts, only the rows of its ETP slice of the gate
// and up projections, only its experts' rows of a moecore stacked tensor. A missing or
// non-finite expert tensor is an error of the rank that reads it, naming the tensor and file.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <regex>
#include <set>

#include "checkpoint/checkpoint_testing.h"
#include "moe/checkpoint/box_copy.h"
#include "moe/checkpoint/checkpoint_convert.h"
#include "moe/checkpoint/model_io.h"
#include "moe/checkpoint/tensor_source.h"
#include "moe/dist/local_backend.h"
#include "moe/nn/model_zoo.h"
#include "nn/moe_test_util.h"

namespace moe::checkpoint {
namespace {

namespace fs = std::filesystem;
using namespace moe::checkpoint::testing;
using io::testing::fails_with;
using CheckpointExpertParallelLoad = io::testing::ScratchFolder;

// Forwards to another source and records every read: the name and its rows (-1, -1: whole).
class CountingSource final : public TensorSource {
 public:
  struct Read {
    std::string name;
    int64_t begin = -1, end = -1;
  };
  explicit CountingSource(const TensorSource& inner) : inner_(inner) {}
  const std::vector<std::string>& names() const override { return inner_.names(); }
  bool contains(const std::string& name) const override { return inner_.contains(name); }
  SourceTensorInfo info(const std::string& name) const override { return inner_.info(name); }
  Tensor load(const std::string& name) const override {
    reads.push_back({name});
    return inner_.load(name);
  }
  Tensor load_rows(const std::string& name, int64_t begin, int64_t end) const override {
    reads.push_back({name, begin, end});
    return inner_.load_rows(name, begin, end);
  }
  std::string where(const std::string& name) const override { return inner_.where(name); }
  std::string description() const override { return inner_.description(); }

  mutable std::vector<Read> reads;

 private:
  const TensorSource& inner_;
};

struct Mapping {
  int ep = 1, etp = 1;
};

// A zoo model with other expert counts and sizes, still expressible as an HF config (Mixtral's
// experts are of the dense FFN size, DeepSeek's shared experts multiples of the routed size).
nn::ModelConfig sized(const std::string& name, int64_t experts, int64_t ffn) {
  nn::ModelConfig c = nn::model_zoo(name);
  if (c.family == "mixtral") c.ffn_hidden_size = ffn;
  if (c.family == "deepseek_v3")
    c.moe.moe_shared_expert_intermediate_size =
        c.moe.moe_shared_expert_intermediate_size / c.moe.moe_ffn_hidden_size * ffn;
  c.moe.num_experts = experts;
  c.moe.moe_ffn_hidden_size = ffn;
  c.validate();
  return c;
}

nn::ModelConfig mapped(nn::ModelConfig c, Mapping m) {
  c.moe.expert_model_parallel_size = m.ep;
  c.moe.expert_tensor_parallel_size = m.etp;
  c.moe.moe_token_dispatcher_type = nn::DispatcherType::alltoall;
  c.validate();
  return c;
}

// The box of `full` (the one-rank model's tensor) that `p` holds, as p's value is laid out.
Tensor box_of(const Tensor& full, const nn::Parameter& p) {
  const Shape view = nn::view_shape_of(p);
  Tensor out = Tensor::empty(p.value.shape(), full.dtype());
  const Tensor host = full.to(Device::cpu());
  copy_box(host.raw(), Box{std::vector<int64_t>(view.size(), 0), view}, out.raw(),
           Box{nn::box_offset_of(p), nn::box_shape_of(p)}, dtype_size(full.dtype()));
  return out;
}

// The expert of an HF expert tensor's name ("...experts.3.w1.weight"), or -1.
int64_t expert_of(const std::string& name) {
  static const std::regex pattern(R"(\.experts\.(\d+)\.)");
  std::smatch match;
  if (!std::regex_search(name, match, pattern)) return -1;
  return std::stoll(match[1].str());
}

bool is_gate_or_up(const std::string& name) {
  for (const char* part : {".w1.", ".w3.", ".gate_proj.", ".up_proj."})
    if (name.find(part) != std::string::npos) return true;
  return false;
}

// What one rank found wrong.
struct Failures {
  std::mutex mutex;
  std::vector<std::string> lines;
  void add(int rank, const std::string& what) {
    std::lock_guard lock(mutex);
    lines.push_back("rank " + std::to_string(rank) + ": " + what);
  }
  void report() {
    for (const std::string& line : lines) ADD_FAILURE() << line;
  }
};

// Every rank of `m` loads `dir` (format `format`, written for `file_config`) through a counting
// source and compares its tensors with the boxes of `reference`'s; `check_reads` then judges
// what the rank read.
void load_on_every_rank(const std::string& dir, CheckpointFormat format,
                        const nn::ModelConfig& file_config, nn::GPTModel& reference, Mapping m,
                        const std::function<void(const CountingSource&, int ep_rank, int etp_rank,
                                                 Failures&, int)>& check_reads) {
  std::map<std::string, const nn::Parameter*> ref_params;
  for (nn::Parameter* p : reference.parameters()) ref_params[p->name] = p;
  std::map<std::string, Tensor> ref_buffers;
  for (const nn::NamedBuffer& b : reference.buffers()) ref_buffers[b.name] = *b.value;
  const nn::ModelConfig config = mapped(file_config, m);
  Failures failures;
  dist::run_local(m.ep * m.etp, [&](std::shared_ptr<dist::ProcessGroup> world) {
    const int rank = world->rank();
    const nn::MoEGroups groups = test::expert_groups(world, m.ep, m.etp);
    nn::GPTModel model(config, DType::f32, Device::cpu(), 99, groups);
    const CheckpointTensorSource inner(dir);
    const CountingSource counting(inner);
    try {
      load_weights(model, counting, format, file_config, read_fp8_block_size(dir, format));
    } catch (const Error& e) {
      failures.add(rank, e.what());
      return;
    }
    int boxed = 0;
    for (nn::Parameter* p : model.parameters()) {
      const Tensor want = box_of(ref_params.at(p->name)->value, *p);
      boxed += nn::box_shape_of(*p) != nn::view_shape_of(*p);
      const ::testing::AssertionResult same = io::testing::same_bytes(p->value, want);
      if (!same) failures.add(rank, p->name + ": " + same.message());
    }
    for (const nn::NamedBuffer& b : model.buffers()) {
      const ::testing::AssertionResult same =
          io::testing::same_bytes(*b.value, ref_buffers.at(b.name));
      if (!same) failures.add(rank, b.name + ": " + same.message());
    }
    if (boxed == 0) failures.add(rank, "no parameter holds a box: the test tests nothing");
    check_reads(counting, groups.ep_rank(), groups.etp_rank(), failures, rank);
  });
  failures.report();
}

// The HF reads of a rank: expert tensors only of its experts, each of them read (all parts, in
// every MoE layer), by rows: of the gate and up projections only the rows of its ETP slice (from
// the FP8 block row holding its first row: `block_rows`), of the down projections all.
void check_hf_reads(const CountingSource& s, const nn::ModelConfig& c, Mapping m,
                    int64_t block_rows, int ep_rank, int etp_rank, Failures& f, int rank) {
  const int64_t E = c.moe.num_experts, El = E / m.ep, F = c.moe.moe_ffn_hidden_size, Fl = F / m.etp;
  std::set<std::string> experts_read;
  for (const CountingSource::Read& r : s.reads) {
    const int64_t e = expert_of(r.name);
    if (e < 0) continue;
    const std::string what =
        r.name + " rows [" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ")";
    if (e < ep_rank * El || e >= (ep_rank + 1) * El)
      f.add(rank, "read another rank's expert tensor " + what);
    if (r.begin < 0) f.add(rank, "read an expert tensor whole: " + what);
    const int64_t first = etp_rank * Fl - etp_rank * Fl % block_rows;
    if (r.name.ends_with(kScaleSuffix)) {
      // Block scales: of the gate and up projections the block rows of those rows.
      if (is_gate_or_up(r.name) && (r.begin != first / block_rows ||
                                    r.end != ((etp_rank + 1) * Fl + block_rows - 1) / block_rows))
        f.add(rank, "read other block scales than its rows': " + what);
    } else if (is_gate_or_up(r.name) && (r.begin != first || r.end != (etp_rank + 1) * Fl)) {
      f.add(rank, "read other rows than its ETP slice [" + std::to_string(etp_rank * Fl) + ", " +
                      std::to_string((etp_rank + 1) * Fl) + ") needs: " + what);
    } else if (!is_gate_or_up(r.name) && (r.begin != 0 || r.end != c.hidden_size)) {
      f.add(rank, "read other rows than all of the down projection: " + what);
    }
    experts_read.insert(r.name);
  }
  // Every part of each of its experts, in every layer with experts.
  std::set<std::string> expected;
  for (const UnitMapping& unit : hf_model_mapping(c))
    for (const TensorMapping& t : unit.tensors)
      if (t.stacked)
        for (int64_t e = ep_rank * El; e < (ep_rank + 1) * El; ++e)
          for (const std::string& name : t.hf_names[static_cast<size_t>(e)]) expected.insert(name);
  for (const std::string& name : expected)
    if (!experts_read.count(name)) f.add(rank, "did not read " + name);
}

const std::vector<Mapping>& mappings() {
  static const std::vector<Mapping> all{{2, 1}, {4, 1}, {2, 2}, {4, 2}};
  return all;
}

std::string mapping_name(Mapping m) {
  return "EP " + std::to_string(m.ep) + " ETP " + std::to_string(m.etp);
}

TEST_F(CheckpointExpertParallelLoad, HfFoldersFillEachRanksBoxReadingOnlyItsExperts) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  // Mixtral (w1/w2/w3 names) in f32, Qwen3 (QK-norm, a dense layer) in bf16.
  const std::vector<std::pair<nn::ModelConfig, DType>> cases{
      {sized("mixtral-tiny", 4, 86), DType::f32}, {sized("qwen3-moe-tiny", 8, 24), DType::bf16}};
  for (const auto& [config, dtype] : cases) {
    SCOPED_TRACE(config.name);
    const fs::path dir = dir_ / config.name;
    write_hf_folder(dir, config, random_hf_tensors(config, dtype, seed), dtype);
    auto reference = load_model(dir.string(), DType::f32, Device::cpu());
    for (const Mapping m : mappings()) {
      if (config.moe.num_experts % m.ep != 0) continue;
      SCOPED_TRACE(mapping_name(m));
      load_on_every_rank(dir.string(), CheckpointFormat::hf, config, *reference, m,
                         [&](const CountingSource& s, int ep, int etp, Failures& f, int rank) {
                           check_hf_reads(s, config, m, 1, ep, etp, f, rank);
                         });
    }
  }
}

// DeepSeek-V3: MLA, dense and MoE layers, shared experts, the expert bias (a buffer), an MTP
// layer, FP8 weights in blocks. F = 22 under ETP 2 cuts the gate and up projections at row 11:
// inside a block of 8 rows (read from row 8) and of 16 rows (read from row 0).
TEST_F(CheckpointExpertParallelLoad, Fp8HfFoldersDequantizeOnlyTheRowsRead) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = sized("deepseek-v3-tiny", 16, 22);
  for (const Fp8BlockSize block : {Fp8BlockSize{8, 8}, Fp8BlockSize{16, 32}}) {
    SCOPED_TRACE(std::to_string(block.rows) + "x" + std::to_string(block.cols));
    const std::string tag = "ds" + std::to_string(block.rows);
    write_hf_folder(dir_ / tag, config, random_hf_tensors(config, DType::bf16, seed, true, block),
                    DType::bf16, block);
    auto reference = load_model(path(tag), DType::f32, Device::cpu());
    for (const Mapping m : {Mapping{2, 2}, Mapping{4, 1}}) {
      SCOPED_TRACE(mapping_name(m));
      load_on_every_rank(path(tag), CheckpointFormat::hf, config, *reference, m,
                         [&](const CountingSource& s, int ep, int etp, Failures& f, int rank) {
                           check_hf_reads(s, config, m, block.rows, ep, etp, f, rank);
                         });
    }
  }
}

// A moecore folder stores the stacked tensors whole: a rank reads its experts' rows of them
// (and of their fused FP8 scales), never a whole stacked tensor.
TEST_F(CheckpointExpertParallelLoad, MoecoreFoldersReadOnlyTheBoxsExperts) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const auto check_moecore_reads = [](const nn::ModelConfig& c, Mapping m) {
    return [c, m](const CountingSource& s, int ep, int, Failures& f, int rank) {
      const int64_t El = c.moe.num_experts / m.ep;
      int stacked = 0;
      for (const CountingSource::Read& r : s.reads) {
        if (r.name.find(".mlp.experts.") == std::string::npos) continue;
        ++stacked;
        if (r.begin != ep * El || r.end != (ep + 1) * El)
          f.add(rank, "read rows [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
                          ") of " + r.name + ", its experts are [" + std::to_string(ep * El) +
                          ", " + std::to_string((ep + 1) * El) + ")");
      }
      if (stacked == 0) f.add(rank, "read no stacked expert tensor");
    };
  };
  // Saved from a one-rank model, in several files.
  {
    const nn::ModelConfig config = sized("qwen3-moe-tiny", 8, 24);
    nn::GPTModel source(config, DType::f32, Device::cpu(), seed);
    for (nn::Parameter* p : source.parameters())
      p->value.copy_(test::random_normal(p->value.shape(), DType::f32, seed + p->name.size(),
                                         Device::cpu(), 0.3));
    save_model(path("saved"), source, {.max_shard_bytes = 100'000});
    auto reference = load_model(path("saved"), DType::f32, Device::cpu());
    for (const Mapping m : mappings()) {
      SCOPED_TRACE(mapping_name(m));
      load_on_every_rank(path("saved"), CheckpointFormat::moecore, config, *reference, m,
                         check_moecore_reads(config, m));
    }
  }
  // FP8 kept by `moe convert --keep-fp8` (fused scales), DeepSeek-V3 with its MTP layer.
  {
    const nn::ModelConfig config = sized("deepseek-v3-tiny", 16, 22);
    const Fp8BlockSize block{8, 8};
    write_hf_folder(dir_ / "ds-hf", config,
                    random_hf_tensors(config, DType::bf16, seed, true, block), DType::bf16, block);
    ConvertCheckpointOptions keep;
    keep.keep_fp8 = true;
    convert_checkpoint(path("ds-hf"), path("ds-kept"), keep);
    auto reference = load_model(path("ds-kept"), DType::f32, Device::cpu());
    for (const Mapping m : {Mapping{2, 2}, Mapping{4, 1}}) {
      SCOPED_TRACE(mapping_name(m));
      load_on_every_rank(path("ds-kept"), CheckpointFormat::moecore, config, *reference, m,
                         check_moecore_reads(config, m));
    }
  }
}

// A rank reads and checks only its own experts: a missing or non-finite expert tensor is the
// error of the rank whose box holds it (naming the tensor and the folder or file), and the
// other ranks load.
TEST_F(CheckpointExpertParallelLoad, AnExpertTensorOfTheBoxIsMissingOrNotFinite) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = sized("mixtral-tiny", 4, 86);
  const TensorMap good = random_hf_tensors(config, DType::f32, seed);
  const std::string w2 = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
  const std::string w3 = "model.layers.2.block_sparse_moe.experts.2.w3.weight";
  TensorMap missing = good;
  missing.erase(w2);
  write_hf_folder(dir_ / "missing", config, missing, DType::f32);
  TensorMap nan = good;
  const Shape shape = nan.at(w3).shape();
  std::vector<float> values = nan.at(w3).to_vector<float>();
  values[static_cast<size_t>(50 * shape[1] + 7)] = std::numeric_limits<float>::quiet_NaN();
  nan[w3] = Tensor::from_vector(values, shape);
  write_hf_folder(dir_ / "nan", config, nan, DType::f32, std::nullopt, 1 << 30);

  const Mapping m{2, 2};  // experts 2 and 3 on EP rank 1; row 50 of w3 in ETP rank 1's half
  const nn::ModelConfig model_config = mapped(config, m);
  std::mutex mutex;
  std::map<int, std::string> missing_errors, nan_errors;  // by world rank
  dist::run_local(m.ep * m.etp, [&](std::shared_ptr<dist::ProcessGroup> world) {
    const nn::MoEGroups groups = test::expert_groups(world, m.ep, m.etp);
    nn::GPTModel model(model_config, DType::f32, Device::cpu(), 1, groups);
    const auto message = [&](const std::string& dir) -> std::string {
      try {
        load_weights(model, dir, CheckpointFormat::hf, config);
      } catch (const Error& e) {
        return e.what();
      }
      return "";
    };
    const std::string a = message(path("missing")), b = message(path("nan"));
    std::lock_guard lock(mutex);
    missing_errors[world->rank()] = a;
    nan_errors[world->rank()] = b;
  });
  // World rank = etp + 2 ep.
  for (int rank = 0; rank < 4; ++rank) {
    SCOPED_TRACE(rank);
    const int ep = rank / 2, etp = rank % 2;
    if (ep == 0) {
      EXPECT_EQ(missing_errors[rank], "");
      EXPECT_EQ(nan_errors[rank], "");
      continue;
    }
    EXPECT_NE(missing_errors[rank].find("missing tensor " + w2), std::string::npos)
        << missing_errors[rank];
    EXPECT_NE(missing_errors[rank].find(path("missing")), std::string::npos);
    if (etp == 0) {  // rows [0, 43) of w3: finite
      EXPECT_EQ(nan_errors[rank], "");
    } else {
      for (const std::string& part :
           {w3, std::string("model.safetensors"), std::string("non-finite"),
            "element " + std::to_string(50 * shape[1] + 7)})
        EXPECT_NE(nan_errors[rank].find(part), std::string::npos) << nan_errors[rank];
    }
  }
  // A one-rank model reads everything: both folders are refused.
  EXPECT_TRUE(fails_with([&] { load_model(path("missing"), DType::f32, Device::cpu()); }, {w2}));
  EXPECT_TRUE(fails_with([&] { load_model(path("nan"), DType::f32, Device::cpu()); },
                         {w3, "element " + std::to_string(50 * shape[1] + 7)}));
}

}  // namespace
}  // namespace moe::checkpoint
