// .npy writing and reading: the header numpy writes (checked byte for byte against numpy's own
// output for the same shapes), values read back, and malformed files. The Python cross-check
// (tests/io/check_with_python.py) runs NpyPython.* against numpy itself.
#include <gtest/gtest.h>

#include <cstdlib>

#include "common/check.h"
#include "io/safetensors_testing.h"
#include "moe/io/npy.h"

namespace moe::io {
namespace {

using namespace moe::io::testing;
using Npy = ScratchFolder;

// numpy 2.x: np.save(f, np.zeros(shape, np.float32)), the header up to and including '\n'.
std::string numpy_header(const std::string& shape_text) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text + ", }";
  dict.resize(117, ' ');
  return std::string("\x93NUMPY\x01\x00\x76\x00", 10) + dict + "\n";
}

TEST_F(Npy, HeaderIsNumpys) {
  EXPECT_EQ(npy_header({2, 3}), numpy_header("(2, 3)"));
  EXPECT_EQ(npy_header({5}), numpy_header("(5,)"));
  EXPECT_EQ(npy_header({}), numpy_header("()"));
  EXPECT_EQ(npy_header({1, 7, 300}), numpy_header("(1, 7, 300)"));
  for (const Shape& shape : {Shape{2, 3}, Shape{123456789, 2, 3, 4, 5, 6, 7}})
    EXPECT_EQ(npy_header(shape).size() % 64, 0u);
}

TEST_F(Npy, WritesFloat32AndReadsBack) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const Shape& shape : {Shape{2, 3, 5}, Shape{7}, Shape{}, Shape{0, 4}}) {
    SCOPED_TRACE(shape_str(shape));
    const Tensor t = test::random_normal(shape, DType::f32, seed);
    write_npy(path("a.npy"), t);
    const Tensor back = read_npy(path("a.npy"));
    EXPECT_TRUE(same_bytes(back, t));
    EXPECT_EQ(read_bytes(path("a.npy")).size(), npy_header(shape).size() + t.nbytes());
  }
  // Other dtypes are written as float32 values.
  const Tensor x = test::random_normal({3, 4}, DType::bf16, seed + 1);
  write_npy(path("b.npy"), x);
  EXPECT_TRUE(same_bytes(read_npy(path("b.npy")), x.to(DType::f32)));
  const Tensor d = test::random_normal({3, 4}, DType::f64, seed + 2);
  write_npy(path("c.npy"), d);
  EXPECT_TRUE(same_bytes(read_npy(path("c.npy")), d.to(DType::f32)));
  EXPECT_EQ(listing(), (std::set<std::string>{"a.npy", "b.npy", "c.npy"}));  // no temporaries
}

TEST_F(Npy, BadFilesAreErrors) {
  EXPECT_TRUE(fails_with([&] { write_npy(path("i.npy"), Tensor::zeros({2}, DType::i64)); },
                         {"i.npy", "i64"}));
  EXPECT_TRUE(fails_with([&] { read_npy(path("absent.npy")); }, {"absent.npy"}));
  write_bytes(path("magic.npy"), "NUMPY not really");
  EXPECT_TRUE(fails_with([&] { read_npy(path("magic.npy")); }, {"magic.npy", "magic"}));
  const std::string header = npy_header({2, 3});
  write_bytes(path("short.npy"), header + std::string(20, '\0'));
  EXPECT_TRUE(fails_with([&] { read_npy(path("short.npy")); }, {"short.npy", "20 bytes", "24"}));
  std::string fortran = header;
  fortran.replace(fortran.find("False"), 5, "True ");
  write_bytes(path("fortran.npy"), fortran + std::string(24, '\0'));
  EXPECT_TRUE(fails_with([&] { read_npy(path("fortran.npy")); }, {"fortran.npy", "Fortran"}));
  std::string big_endian = header;
  big_endian.replace(big_endian.find("<f4"), 3, ">f4");
  write_bytes(path("be.npy"), big_endian + std::string(24, '\0'));
  EXPECT_TRUE(fails_with([&] { read_npy(path("be.npy")); }, {"be.npy", ">f4"}));
}

// Run by tests/io/check_with_python.py with MOE_NPY_PY_DIR set: numpy wrote python.npy
// (float32 [2, 3, 5], value k * 0.25 - 3 at flat index k); we check it and write moecore.npy
// with the same values, which the script compares with numpy's bytes and np.load.
TEST(NpyPython, AgreesWithNumpy) {
  const char* dir = std::getenv("MOE_NPY_PY_DIR");
  if (!dir) GTEST_SKIP() << "run by tests/io/check_with_python.py";
  std::vector<float> values(30);
  for (size_t k = 0; k < values.size(); ++k) values[k] = static_cast<float>(k) * 0.25f - 3.0f;
  const Tensor expected = Tensor::from_vector(values, {2, 3, 5});
  EXPECT_TRUE(same_bytes(read_npy(std::string(dir) + "/python.npy"), expected));
  write_npy(std::string(dir) + "/moecore.npy", expected);
}

}  // namespace
}  // namespace moe::io
