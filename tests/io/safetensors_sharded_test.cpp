// Sharded checkpoints: the Hugging Face split and names, the index JSON as transformers writes
// it, SafetensorsCollection over a folder / an index / a file, and malformed indexes.
#include <gtest/gtest.h>

#include "common/check.h"
#include "io/safetensors_testing.h"
#include "moe/io/safetensors.h"

namespace moe::io {
namespace {

using namespace moe::io::testing;
using SafetensorsSharded = ScratchFolder;

// Tensors of 40, 24, 24, 100, 8, 16 and 0 bytes.
NamedTensors sample_tensors(uint64_t seed) {
  return {{"layers.0.w", test::random_normal({10}, DType::f32, seed)},
          {"layers.0.b", test::random_normal({3}, DType::f64, seed + 1)},
          {"layers.1.w", test::random_normal({12}, DType::bf16, seed + 2)},
          {"embed", test::random_normal({25}, DType::f32, seed + 3)},
          {"ids", Tensor::from_vector<int64_t>({7}, {1})},
          {"mask", Tensor::full({16}, 1, DType::u8)},
          {"empty", Tensor::empty({0}, DType::f32)}};
}

TEST_F(SafetensorsSharded, SplitsAsHuggingFaceAndRoundTrips) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const NamedTensors tensors = sample_tensors(seed);
  // Limit 64: [w 40] + b 24 = 64 fits; + 1.w 24 tips over -> new shard [1.w]; embed 100 > 64
  // gets its own shard (appended before the current one closes); ids, mask, empty join [1.w].
  const ShardedWriteResult result =
      write_safetensors_sharded(dir_.string(), tensors, 64, {{"format", "pt"}});
  EXPECT_EQ(result.files, (std::vector<std::string>{"model-00001-of-00003.safetensors",
                                                    "model-00002-of-00003.safetensors",
                                                    "model-00003-of-00003.safetensors"}));
  EXPECT_EQ(result.index_file, "model.safetensors.index.json");
  EXPECT_EQ(result.total_size, 40u + 24 + 24 + 100 + 8 + 16);
  EXPECT_EQ(read_bytes(path("model.safetensors.index.json")),
            "{\n"
            "  \"metadata\": {\n"
            "    \"total_size\": 212\n"
            "  },\n"
            "  \"weight_map\": {\n"
            "    \"embed\": \"model-00002-of-00003.safetensors\",\n"
            "    \"empty\": \"model-00003-of-00003.safetensors\",\n"
            "    \"ids\": \"model-00003-of-00003.safetensors\",\n"
            "    \"layers.0.b\": \"model-00001-of-00003.safetensors\",\n"
            "    \"layers.0.w\": \"model-00001-of-00003.safetensors\",\n"
            "    \"layers.1.w\": \"model-00003-of-00003.safetensors\",\n"
            "    \"mask\": \"model-00003-of-00003.safetensors\"\n"
            "  }\n"
            "}\n");
  EXPECT_EQ(listing().size(), 4u);  // three shards and the index; no temporaries

  for (const std::string& where : {dir_.string(), path("model.safetensors.index.json")}) {
    SCOPED_TRACE(where);
    const SafetensorsCollection c = SafetensorsCollection::open(where);
    EXPECT_EQ(c.names().size(), tensors.size());
    EXPECT_EQ(c.files().size(), 3u);
    EXPECT_EQ(c.metadata().at("total_size"), "212");
    EXPECT_EQ(c.index_path(), path("model.safetensors.index.json"));
    for (const auto& [name, tensor] : tensors)
      EXPECT_TRUE(same_bytes(c.load(name), tensor)) << name;
    EXPECT_EQ(c.file_of("embed").path(), path("model-00002-of-00003.safetensors"));
    EXPECT_EQ(c.file_of("embed").metadata().at("format"), "pt");
    EXPECT_EQ(c.view("ids").as<int64_t>()[0], 7);
    EXPECT_TRUE(fails_with([&] { (void)c.info("absent"); },
                           {"model.safetensors.index.json", "no tensor named 'absent'"}));
  }
}

TEST_F(SafetensorsSharded, OneShardIsASingleFileAndStaleFilesGo) {
  const NamedTensors tensors = sample_tensors(test::fresh_seed());
  write_safetensors_sharded(dir_.string(), tensors, 64);
  ASSERT_EQ(listing().size(), 4u);
  // Everything fits: one model.safetensors, no index, and the earlier shards are removed.
  write_bytes(path("model-00001-of-00007.safetensors"), "stale, other count");
  write_bytes(path("unrelated.txt"), "kept");
  const ShardedWriteResult one = write_safetensors_sharded(dir_.string(), tensors, 1u << 20);
  EXPECT_EQ(one.files, std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(one.index_file.empty());
  EXPECT_EQ(listing(), (std::set<std::string>{"model.safetensors", "unrelated.txt"}));
  const SafetensorsCollection c = SafetensorsCollection::open(dir_.string());
  EXPECT_TRUE(c.index_path().empty());
  EXPECT_EQ(c.names().size(), tensors.size());
  // And back to shards: the single file goes.
  write_safetensors_sharded(dir_.string(), tensors, 64);
  EXPECT_EQ(listing().count("model.safetensors"), 0u);
  EXPECT_EQ(SafetensorsCollection::open(dir_.string()).files().size(), 3u);
}

TEST_F(SafetensorsSharded, PrefixAndAllOversizedTensors) {
  const NamedTensors tensors = sample_tensors(test::fresh_seed());
  const ShardedWriteResult r = write_safetensors_sharded(path("ckpt"), tensors, 1, {}, "part");
  // Every non-empty tensor exceeds 1 byte: one shard each, plus the empty one's shard.
  EXPECT_EQ(r.files.size(), 7u);
  EXPECT_EQ(r.files.front(), "part-00001-of-00007.safetensors");
  EXPECT_EQ(r.index_file, "part.safetensors.index.json");
  const SafetensorsCollection c = SafetensorsCollection::open(path("ckpt"));
  for (const auto& [name, tensor] : tensors) EXPECT_TRUE(same_bytes(c.load(name), tensor)) << name;
  EXPECT_TRUE(fails_with([&] { write_safetensors_sharded(path("x"), tensors, 0); },
                         {"max_shard_bytes must be positive"}));
}

TEST_F(SafetensorsSharded, OpensASingleFileDirectly) {
  write_safetensors(path("one.safetensors"), {{"a", Tensor::full({2}, 1.5, DType::f32)}},
                    {{"format", "pt"}});
  for (const std::string& where : {path("one.safetensors"), dir_.string()}) {
    const SafetensorsCollection c = SafetensorsCollection::open(where);
    EXPECT_EQ(c.names(), std::vector<std::string>{"a"});
    EXPECT_EQ(c.metadata().at("format"), "pt");
    EXPECT_EQ(c.load("a").to_vector<float>(), (std::vector<float>{1.5f, 1.5f}));
  }
}

// ---- malformed indexes -------------------------------------------------------------------

class SafetensorsIndex : public ScratchFolder {
 protected:
  void SetUp() override {
    ScratchFolder::SetUp();
    write_safetensors(path("s1.safetensors"), {{"a", Tensor::zeros({2}, DType::f32)}});
    write_safetensors(path("s2.safetensors"), {{"b", Tensor::zeros({3}, DType::f32)}});
  }
  ::testing::AssertionResult rejects(const std::string& index,
                                     std::initializer_list<std::string> cause) {
    const std::string file = path("model.safetensors.index.json");
    write_bytes(file, index);
    std::vector<std::string> parts(cause);
    parts.push_back(file);
    try {
      (void)SafetensorsCollection::open(dir_.string());
    } catch (const Error& e) {
      const std::string message = e.what();
      for (const auto& part : parts)
        if (message.find(part) == std::string::npos)
          return ::testing::AssertionFailure() << "message lacks \"" << part << "\": " << message;
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "opened a malformed index";
  }
};

TEST_F(SafetensorsIndex, AcceptsAGoodIndex) {
  write_bytes(path("model.safetensors.index.json"),
              R"({"metadata": {"total_size": 20, "format": "pt"},
                  "weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  const SafetensorsCollection c = SafetensorsCollection::open(dir_.string());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c.metadata(), (SafetensorsMetadata{{"format", "pt"}, {"total_size", "20"}}));
  EXPECT_EQ(c.load("b").numel(), 3);
}

TEST_F(SafetensorsIndex, MissingShard) {
  EXPECT_TRUE(
      rejects(R"({"weight_map": {"a": "s1.safetensors", "c": "s3.safetensors"}})",
              {"shard 's3.safetensors'", "tensor 'c'", "is missing", path("s3.safetensors")}));
}

TEST_F(SafetensorsIndex, NameMappedToAShardThatLacksIt) {
  EXPECT_TRUE(rejects(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}})",
                      {"tensor 'b'", "shard 's1.safetensors'", "has no tensor of that name"}));
}

TEST_F(SafetensorsIndex, MalformedIndexes) {
  EXPECT_TRUE(rejects("{\"weight_map\": ", {"not valid JSON"}));
  EXPECT_TRUE(rejects("[]", {"must be a JSON object"}));
  EXPECT_TRUE(rejects(R"({"metadata": {}})", {"no \"weight_map\""}));
  EXPECT_TRUE(rejects(R"({"weight_map": {"a": 3}})", {"'a'", "shard file name"}));
  EXPECT_TRUE(
      rejects(R"({"weight_map": {"a": "s1.safetensors", "a": "s2.safetensors"}})", {"'a' twice"}));
  EXPECT_TRUE(rejects(R"({"weight_map": {"a": "../s1.safetensors"}})",
                      {"'../s1.safetensors'", "relative to the index's folder"}));
  EXPECT_TRUE(rejects(R"({"weight_map": {"a": "/etc/passwd"}})", {"relative"}));
}

TEST_F(SafetensorsIndex, ShardValidationErrorsNameTheShard) {
  write_bytes(path("s2.safetensors"), "short");
  write_bytes(path("model.safetensors.index.json"),
              R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  EXPECT_TRUE(fails_with([&] { (void)SafetensorsCollection::open(dir_.string()); },
                         {path("s2.safetensors"), "too short"}));
}

TEST_F(SafetensorsIndex, FolderWithoutACheckpoint) {
  EXPECT_TRUE(fails_with([&] { (void)SafetensorsCollection::open(dir_.string()); },
                         {dir_.string(), "not exactly one", "s1.safetensors", "s2.safetensors"}));
  fs::create_directories(dir_ / "empty");
  EXPECT_TRUE(
      fails_with([&] { (void)SafetensorsCollection::open(path("empty")); }, {"found: nothing"}));
}

}  // namespace
}  // namespace moe::io
