// safetensors reading and writing, one file: round trips of every dtype, the exact bytes of the
// format (known answers checked against the Python library), every malformed header, views.
#include "moe/io/safetensors.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>

#include "common/check.h"
#include "io/safetensors_testing.h"

namespace moe::io {
namespace {

using namespace moe::io::testing;

constexpr DType kAllDTypes[] = {DType::f64, DType::f32,      DType::bf16,
                                DType::f16, DType::fp8_e4m3, DType::fp8_e5m2,
                                DType::i64, DType::i32,      DType::u8};

Tensor random_tensor(const Shape& shape, DType dtype, uint64_t seed) {
  if (is_floating(dtype)) return test::random_normal(shape, DType::f32, seed).to(dtype);
  Tensor t = test::random_uniform(shape, DType::f32, seed, 0.0, 200.0).to(dtype);
  return t;
}

using Safetensors = ScratchFolder;

// ---- round trips -------------------------------------------------------------------------

TEST_F(Safetensors, RoundTripsEveryDTypeAndShape) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  NamedTensors tensors;
  uint64_t s = seed;
  for (DType dtype : kAllDTypes) {
    const std::string d = dtype_name(dtype);
    tensors.emplace_back(d + ".matrix", random_tensor({3, 5}, dtype, s++));
    tensors.emplace_back(d + ".scalar", random_tensor({}, dtype, s++));  // 0-d: shape []
    tensors.emplace_back(d + ".empty", Tensor::empty({0, 4}, dtype));    // 0 bytes
    tensors.emplace_back(d + ".vector", random_tensor({7}, dtype, s++));
  }
  const std::string file = path("all.safetensors");
  write_safetensors(file, tensors, {{"format", "pt"}, {"note", "round trip"}});

  const SafetensorsFile st = SafetensorsFile::open(file);
  EXPECT_EQ(st.names().size(), tensors.size());
  EXPECT_TRUE(std::is_sorted(st.names().begin(), st.names().end()));
  EXPECT_EQ(st.metadata(), (SafetensorsMetadata{{"format", "pt"}, {"note", "round trip"}}));
  EXPECT_EQ(st.header_size() % 8, 0u);
  for (const auto& [name, tensor] : tensors) {
    SCOPED_TRACE(name);
    const SafetensorsTensorInfo& info = st.info(name);
    EXPECT_EQ(info.shape, tensor.shape());
    EXPECT_EQ(info.dtype, tensor.dtype());
    EXPECT_EQ(info.file_dtype, to_safetensors_dtype(tensor.dtype()));
    EXPECT_EQ(info.nbytes(), tensor.nbytes());
    EXPECT_TRUE(same_bytes(st.load(name), tensor));
    // The view is the same bytes, in place, aligned for the element type.
    const SafetensorsView view = st.view(name);
    ASSERT_EQ(view.bytes().size(), tensor.nbytes());
    if (tensor.nbytes() > 0) {
      EXPECT_EQ(std::memcmp(view.bytes().data(), tensor.raw(), tensor.nbytes()), 0);
    }
    EXPECT_EQ(reinterpret_cast<uintptr_t>(view.bytes().data()) % dtype_size(tensor.dtype()), 0u);
  }
  EXPECT_EQ(st.load("f64.scalar").dim(), 0);
  EXPECT_EQ(st.load("bf16.empty").numel(), 0);
}

TEST_F(Safetensors, LoadCastsToTheRequestedDType) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor w = random_tensor({4, 6}, DType::bf16, seed);
  write_safetensors(path("w.safetensors"), {{"w", w}});
  const SafetensorsFile st = SafetensorsFile::open(path("w.safetensors"));
  const Tensor as_f32 = st.load("w", Device::cpu(), DType::f32);
  EXPECT_EQ(as_f32.dtype(), DType::f32);
  EXPECT_TRUE(test::equal(as_f32, w.to(DType::f32), "bf16 widened to f32 is exact"));
  EXPECT_TRUE(same_bytes(st.load("w", Device::cpu(), DType::bf16), w));
  EXPECT_EQ(st.view("w").as<bf16>().size(), 24u);
  EXPECT_TRUE(
      fails_with([&] { (void)st.view("w").as<float>(); }, {"w.safetensors", "'w'", "BF16"}));
}

TEST_F(Safetensors, EmptyFileHasOnlyAHeader) {
  write_safetensors(path("none.safetensors"), {});
  EXPECT_EQ(read_bytes(path("none.safetensors")), le_u64(8) + "{}      ");
  const SafetensorsFile st = SafetensorsFile::open(path("none.safetensors"));
  EXPECT_TRUE(st.names().empty());
  EXPECT_TRUE(st.metadata().empty());
}

// ---- known bytes -------------------------------------------------------------------------

// The Rust library's own serialisation test: 64 header bytes, no padding needed.
TEST_F(Safetensors, WritesTheKnownBytesOfTheReferenceExample) {
  const Tensor t = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {1, 2, 3});
  const std::string expected_header =
      R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(expected_header.size(), 64u);
  std::string data(24, '\0');
  std::memcpy(data.data(), t.raw(), 24);  // little-endian host
  write_safetensors(path("a.safetensors"), {{"attn.0", t}});
  EXPECT_EQ(read_bytes(path("a.safetensors")), le_u64(64) + expected_header + data);
  EXPECT_EQ(safetensors_header({{"attn.0", t}}, {}), le_u64(64) + expected_header);
}

// Padding to 8 bytes with spaces, and "__metadata__" before the tensors (bytes as
// safetensors.numpy.save writes them).
TEST_F(Safetensors, PadsTheHeaderWithSpacesAndPutsMetadataFirst) {
  const Tensor t = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {1, 1, 2, 3});
  EXPECT_EQ(safetensors_header({{"attn0", t}}, {}),
            le_u64(72) + R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" +
                "       ");
  EXPECT_EQ(safetensors_header({}, {{"framework", "pt"}}),
            le_u64(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
}

// The data order of the Rust writer's `prepare`: dtype descending in its enum order, then name.
// Expected text produced by safetensors.serialize (Python, safetensors 0.8) for these tensors.
TEST_F(Safetensors, OrdersTensorsAsThePythonLibrary) {
  NamedTensors tensors = {
      {"b", Tensor::zeros({1}, DType::f32)},      {"a", Tensor::zeros({2}, DType::bf16)},
      {"c", Tensor::zeros({1}, DType::i64)},      {"d", Tensor::zeros({3}, DType::u8)},
      {"e", Tensor::zeros({}, DType::f64)},       {"z", Tensor::zeros({1}, DType::fp8_e4m3)},
      {"y", Tensor::zeros({2}, DType::fp8_e5m2)}, {"x", Tensor::zeros({1}, DType::i32)},
      {"w", Tensor::zeros({0, 2}, DType::f16)},   {"v", Tensor::zeros({1}, DType::f32)}};
  const std::string expected = R"({"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
                               R"("e":{"dtype":"F64","shape":[],"data_offsets":[8,16]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
                               R"("v":{"dtype":"F32","shape":[1],"data_offsets":[20,24]},)"
                               R"("x":{"dtype":"I32","shape":[1],"data_offsets":[24,28]},)"
                               R"("a":{"dtype":"BF16","shape":[2],"data_offsets":[28,32]},)"
                               R"("w":{"dtype":"F16","shape":[0,2],"data_offsets":[32,32]},)"
                               R"("z":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[32,33]},)"
                               R"("y":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[33,35]},)"
                               R"("d":{"dtype":"U8","shape":[3],"data_offsets":[35,38]}}   )";
  ASSERT_EQ(expected.size(), 560u);
  EXPECT_EQ(safetensors_header(tensors, {}), le_u64(560) + expected);
}

// A file written by hand: an unpadded header (so data is not 8-aligned), BOOL, and an I8
// tensor that moe::Tensor cannot hold.
TEST_F(Safetensors, ReadsAHandWrittenFile) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"flags":{"dtype":"BOOL","shape":[3],"data_offsets":[4,7]},)"
      R"("ids":{"dtype":"I8","shape":[2],"data_offsets":[7,9]},)"
      R"("x":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})";
  const std::string data = std::string("\x2a\x00\x00\x00", 4) + std::string("\x01\x00\x01", 3) +
                           std::string("\xff\x02", 2);
  write_bytes(path("hand.safetensors"), file_bytes(header, data));
  const SafetensorsFile st = SafetensorsFile::open(path("hand.safetensors"));
  EXPECT_EQ(st.names(), (std::vector<std::string>{"flags", "ids", "x"}));
  EXPECT_EQ(st.metadata().at("format"), "pt");
  EXPECT_EQ(st.load("x").to_vector<int32_t>(), std::vector<int32_t>{42});
  EXPECT_EQ(st.info("flags").file_dtype, SafetensorsDType::BOOL);
  EXPECT_EQ(st.load("flags").to_vector<uint8_t>(), (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(st.info("ids").dtype, std::nullopt);
  EXPECT_EQ(st.view("ids").bytes().size(), 2u);
  EXPECT_EQ(static_cast<int>(st.view("ids").bytes()[0]), 0xff);
  EXPECT_TRUE(fails_with([&] { (void)st.load("ids"); }, {"hand.safetensors", "'ids'", "I8"}));
  EXPECT_TRUE(
      fails_with([&] { (void)st.load("nope"); }, {"hand.safetensors", "no tensor", "'nope'"}));
  // The header is not a multiple of 8, so the I32 is not aligned in the mapping: as<> says so.
  ASSERT_NE((8 + header.size()) % 4, 0u);
  EXPECT_TRUE(fails_with([&] { (void)st.view("x").as<int32_t>(); }, {"not aligned"}));
}

// ---- malformed files ---------------------------------------------------------------------

class SafetensorsMalformed : public ScratchFolder {
 protected:
  // Writes the bytes to bad.safetensors and expects open() to fail naming it and `cause`.
  ::testing::AssertionResult rejects(const std::string& bytes,
                                     std::initializer_list<std::string> cause) {
    const std::string file = path("bad.safetensors");
    write_bytes(file, bytes);
    std::vector<std::string> parts(cause);
    parts.push_back(file);
    try {
      (void)SafetensorsFile::open(file);
    } catch (const Error& e) {
      const std::string message = e.what();
      for (const auto& part : parts)
        if (message.find(part) == std::string::npos)
          return ::testing::AssertionFailure() << "message lacks \"" << part << "\": " << message;
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "opened a malformed file";
  }
  // {e1,e2,...} (appended piecewise: GCC 12 warns falsely (-Wrestrict) on long + chains).
  static std::string obj(std::initializer_list<std::string> entries) {
    std::string s = "{";
    for (const std::string& e : entries) {
      if (s.size() > 1) s += ',';
      s += e;
    }
    s += '}';
    return s;
  }
  static std::string entry(const std::string& name, const std::string& dtype,
                           const std::string& shape, uint64_t begin, uint64_t end) {
    std::string s = "\"";
    s += name;
    s += "\":{\"dtype\":\"";
    s += dtype;
    s += "\",\"shape\":";
    s += shape;
    s += ",\"data_offsets\":[";
    s += std::to_string(begin);
    s += ',';
    s += std::to_string(end);
    s += "]}";
    return s;
  }
};

TEST_F(SafetensorsMalformed, TooShort) {
  EXPECT_TRUE(rejects("", {"too short", "0 bytes"}));
  EXPECT_TRUE(rejects(std::string("\x02\x00\x00", 3), {"too short", "3 bytes"}));
}

TEST_F(SafetensorsMalformed, HeaderLengthBeyondTheFile) {
  EXPECT_TRUE(rejects(le_u64(100) + "{}", {"header length 100", "beyond the end of the file"}));
  EXPECT_TRUE(rejects(le_u64(~0ull) + "{}", {"beyond the end of the file"}));
}

TEST_F(SafetensorsMalformed, HeaderLengthOverTheLimit) {
  // A sparse file just over the 100 MB header limit of the Rust reader: costs no disk.
  const std::string file = path("bad.safetensors");
  write_bytes(file, le_u64(100'000'001));
  ASSERT_EQ(::truncate(file.c_str(), 8 + 100'000'001), 0);
  EXPECT_TRUE(fails_with([&] { (void)SafetensorsFile::open(file); },
                         {file, "header length 100000001", "exceeds the limit"}));
}

TEST_F(SafetensorsMalformed, BadJson) {
  EXPECT_TRUE(rejects(file_bytes("{\"a\": {", ""), {"not valid JSON"}));
  EXPECT_TRUE(rejects(file_bytes("{} trailing", ""), {"not valid JSON"}));
  EXPECT_TRUE(rejects(file_bytes("{\"\xff\":1}", ""), {"not valid JSON"}));  // not UTF-8
  EXPECT_TRUE(rejects(file_bytes("[1, 2]   ", ""), {"must be a JSON object", "array"}));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":[1]})", ""), {"'a'", "entry must be an object"}));
  EXPECT_TRUE(
      rejects(file_bytes(R"({"a":{"shape":[],"data_offsets":[0,0]}})", ""), {"'a'", "\"dtype\""}));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"dtype":"U8","data_offsets":[0,0]}})", ""),
                      {"'a'", "\"shape\""}));
  EXPECT_TRUE(rejects(file_bytes(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0]}})", ""),
                      {"'a'", "data_offsets"}));
  EXPECT_TRUE(rejects(file_bytes(R"({"__metadata__":{"k":1}})", ""),
                      {"__metadata__", "'k'", "must be a string"}));
  EXPECT_TRUE(rejects(file_bytes(R"({"__metadata__":[]})", ""), {"__metadata__", "object"}));
}

TEST_F(SafetensorsMalformed, UnknownDType) {
  EXPECT_TRUE(rejects(file_bytes(obj({entry("w", "F17", "[1]", 0, 4)}), "abcd"),
                      {"'w'", "unknown dtype \"F17\""}));
}

TEST_F(SafetensorsMalformed, BadShape) {
  EXPECT_TRUE(rejects(file_bytes(obj({entry("w", "U8", "[-1]", 0, 0)}), ""),
                      {"'w'", "non-negative integers", "-1"}));
  EXPECT_TRUE(rejects(file_bytes(obj({entry("w", "U8", "[1.5]", 0, 0)}), ""),
                      {"'w'", "non-negative integers"}));
  EXPECT_TRUE(rejects(file_bytes(obj({entry("w", "F32", "[4294967296,4294967296]", 0, 0)}), ""),
                      {"'w'", "overflows"}));
  EXPECT_TRUE(rejects(file_bytes(obj({entry("w", "F4", "[3]", 0, 1)}), "a"),
                      {"'w'", "not a whole number of bytes"}));
}

TEST_F(SafetensorsMalformed, OffsetsOutOfRange) {
  EXPECT_TRUE(rejects(file_bytes(obj({entry("w", "F32", "[2]", 0, 8)}), "abcd"),
                      {"'w'", "out of range", "4 bytes"}));
  EXPECT_TRUE(rejects(file_bytes(obj({entry("w", "U8", "[0]", 4, 2)}), "abcd"),
                      {"'w'", "end before they begin"}));
}

TEST_F(SafetensorsMalformed, OffsetsNotMatchingShapeTimesDType) {
  EXPECT_TRUE(rejects(file_bytes(obj({entry("w", "F32", "[3]", 0, 8)}), "abcdefgh"),
                      {"'w'", "hold 8 bytes", "needs 12"}));
}

TEST_F(SafetensorsMalformed, OverlappingTensors) {
  const std::string header = obj({entry("a", "F32", "[2]", 0, 8), entry("b", "F32", "[1]", 4, 8)});
  EXPECT_TRUE(rejects(file_bytes(header, "abcdefgh"), {"'b'", "overlaps tensor 'a'"}));
  const std::string same = obj({entry("a", "U8", "[4]", 0, 4), entry("b", "U8", "[4]", 0, 4)});
  EXPECT_TRUE(rejects(file_bytes(same, "abcd"), {"overlaps"}));
}

TEST_F(SafetensorsMalformed, HoleInTheBuffer) {
  const std::string header = obj({entry("a", "U8", "[2]", 0, 2), entry("b", "U8", "[2]", 4, 6)});
  EXPECT_TRUE(
      rejects(file_bytes(header, "abcdef"), {"bytes [2, 4)", "belong to no tensor", "'b'"}));
  const std::string first = obj({entry("a", "U8", "[2]", 2, 4)});
  EXPECT_TRUE(rejects(file_bytes(first, "abcd"), {"bytes [0, 2)", "belong to no tensor"}));
}

TEST_F(SafetensorsMalformed, TrailingBytesBelongToNoTensor) {
  const std::string header = obj({entry("a", "U8", "[2]", 0, 2)});
  EXPECT_TRUE(rejects(file_bytes(header, "abcd"), {"bytes [2, 4)", "at the end"}));
  EXPECT_TRUE(rejects(file_bytes("{}", "x"), {"bytes [0, 1)", "at the end"}));
}

TEST_F(SafetensorsMalformed, DuplicateNames) {
  const std::string header = obj({entry("a", "U8", "[2]", 0, 2), entry("a", "U8", "[2]", 2, 4)});
  EXPECT_TRUE(rejects(file_bytes(header, "abcd"), {"'a' twice", "duplicate"}));
}

TEST_F(SafetensorsMalformed, MissingFileOrAFolder) {
  EXPECT_TRUE(fails_with([&] { (void)SafetensorsFile::open(path("absent.safetensors")); },
                         {path("absent.safetensors"), "cannot open"}));
  EXPECT_TRUE(fails_with([&] { (void)SafetensorsFile::open(dir_.string()); },
                         {dir_.string(), "not a regular file"}));
}

// Zero-sized tensors may sit anywhere the cursor is, as the Rust validator allows.
TEST_F(SafetensorsMalformed, AcceptsZeroSizedTensorsBetweenOthers) {
  const std::string header = obj({entry("a", "U8", "[2]", 0, 2), entry("e", "F32", "[0,3]", 2, 2),
                                  entry("b", "U8", "[2]", 2, 4)});
  write_bytes(path("ok.safetensors"), file_bytes(header, "abcd"));
  const SafetensorsFile st = SafetensorsFile::open(path("ok.safetensors"));
  EXPECT_EQ(st.load("e").shape(), (Shape{0, 3}));
  EXPECT_EQ(st.load("b").to_vector<uint8_t>(), (std::vector<uint8_t>{'c', 'd'}));
}

// ---- views and the mapping ---------------------------------------------------------------

TEST_F(Safetensors, ViewOutlivesTheFileAndSurvivesAnAtomicOverwrite) {
  const Tensor old_value = Tensor::from_vector<float>({1, 2, 3, 4}, {4});
  write_safetensors(path("v.safetensors"), {{"w", old_value}});
  SafetensorsView view;
  {
    const SafetensorsFile st = SafetensorsFile::open(path("v.safetensors"));
    view = st.view("w");
  }  // the file handle is gone; the view holds the mapping
  ASSERT_EQ(view.as<float>().size(), 4u);
  EXPECT_EQ(view.as<float>()[3], 4.0f);
  // Writing the same path renames a new file over it; the old mapping keeps the old inode.
  write_safetensors(path("v.safetensors"), {{"w", Tensor::from_vector<float>({9, 9}, {2})}});
  EXPECT_EQ(view.as<float>()[0], 1.0f);
  EXPECT_EQ(view.info().shape, (Shape{4}));
  EXPECT_EQ(SafetensorsFile::open(path("v.safetensors")).load("w").numel(), 2);
}

TEST_F(Safetensors, FileHandlesShareTheMapping) {
  write_safetensors(path("s.safetensors"), {{"w", Tensor::full({3}, 2.5, DType::f64)}});
  SafetensorsFile copy = SafetensorsFile::open(path("s.safetensors"));
  const SafetensorsFile second = copy;
  copy = SafetensorsFile::open(path("s.safetensors"));
  EXPECT_EQ(second.load("w").to_vector<double>(), (std::vector<double>{2.5, 2.5, 2.5}));
}

// ---- writer input checks -----------------------------------------------------------------

TEST_F(Safetensors, WriterRejectsBadInputBeforeWriting) {
  const Tensor t = Tensor::zeros({2}, DType::f32);
  EXPECT_TRUE(fails_with(
      [&] {
        write_safetensors(path("d.safetensors"), {{"a", t}, {"a", t}});
      },
      {"d.safetensors", "'a' is given twice"}));
  EXPECT_TRUE(fails_with(
      [&] {
        write_safetensors(path("d.safetensors"), {{"__metadata__", t}});
      },
      {"reserved"}));
  EXPECT_TRUE(fails_with(
      [&] {
        write_safetensors(path("d.safetensors"), {{"u", Tensor()}});
      },
      {"'u' is undefined"}));
  EXPECT_TRUE(fails_with(
      [&] {
        write_safetensors(path("d.safetensors"), {{std::string("bad\xff"), t}});
      },
      {"d.safetensors", "UTF-8"}));
  EXPECT_TRUE(listing().empty());
}

// ---- interoperability with the Python library --------------------------------------------
// Driven by tests/io/check_with_python.py, which sets MOE_SAFETENSORS_PY_DIR: reads the file
// the Python library wrote there, checks every byte, and writes the same tensors for Python to
// compare byte for byte. Without the variable there is nothing to compare against: skipped.

struct PySpec {
  const char* name;
  DType dtype;
  Shape shape;
};
const std::vector<PySpec>& python_spec() {  // keep in step with check_with_python.py
  static const std::vector<PySpec> spec = {{"model.embed.weight", DType::bf16, {4, 3}},
                                           {"layers.0.w", DType::f32, {2, 3}},
                                           {"layers.0.b", DType::f32, {3}},
                                           {"scale", DType::f64, {}},
                                           {"empty", DType::f16, {0, 5}},
                                           {"ids", DType::i64, {4}},
                                           {"counts", DType::i32, {2, 2}},
                                           {"mask", DType::u8, {5}},
                                           {"q.e4m3", DType::fp8_e4m3, {3, 3}},
                                           {"q.e5m2", DType::fp8_e5m2, {7}},
                                           {"h", DType::f16, {3}}};
  return spec;
}

// Byte k of tensor i is (37 i + 11 k + 5) mod 256, whatever the dtype.
Tensor python_tensor(size_t i) {
  const PySpec& s = python_spec()[i];
  Tensor t = Tensor::empty(s.shape, s.dtype);
  auto* p = static_cast<unsigned char*>(t.raw());
  for (size_t k = 0; k < t.nbytes(); ++k)
    p[k] = static_cast<unsigned char>((37 * i + 11 * k + 5) % 256);
  return t;
}

TEST(SafetensorsPython, ReadsPythonFilesAndWritesIdenticalOnes) {
  const char* dir = std::getenv("MOE_SAFETENSORS_PY_DIR");
  if (dir == nullptr) GTEST_SKIP() << "set by tests/io/check_with_python.py";
  const std::string folder = dir;
  const SafetensorsFile py = SafetensorsFile::open(folder + "/python.safetensors");
  NamedTensors tensors;
  for (size_t i = 0; i < python_spec().size(); ++i) {
    SCOPED_TRACE(python_spec()[i].name);
    tensors.emplace_back(python_spec()[i].name, python_tensor(i));
    EXPECT_TRUE(same_bytes(py.load(python_spec()[i].name), tensors.back().second));
  }
  EXPECT_EQ(py.names().size(), tensors.size());
  EXPECT_EQ(py.metadata(), (SafetensorsMetadata{{"format", "pt"}}));
  write_safetensors(folder + "/moecore.safetensors", tensors, {{"format", "pt"}});
  write_safetensors_sharded(folder + "/sharded", tensors, 40, {{"format", "pt"}});
}

}  // namespace
}  // namespace moe::io
