// The one differential harness for every test (STYLE.md, after ggml's test-backend-ops):
// tolerances come from one per-dtype table, comparisons use the relative L2 error
// ||a - b|| / ||b|| (NaN never passes), and gradients are checked against central finite
// differences in fp64 on the CPU.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::test {

// Relative L2 tolerance of a result computed in `dtype` against a higher-precision reference.
//   f64 1e-12 | f32 1e-5 | f16 2e-3 | bf16 1e-2 | fp8_e4m3 6e-2 | fp8_e5m2 1.2e-1
// The finite-difference check (fp64, central differences, step 1e-6) uses kGradCheckTol.
double tolerance(DType dtype);
inline constexpr double kGradCheckTol = 1e-6;

// ||a - b|| / max(||b||, tiny); +inf if any element of a is NaN/Inf while b's is finite.
double relative_error(const Tensor& a, const Tensor& b);
double relative_error(const std::vector<double>& a, const std::vector<double>& b);

// Expects relative_error(actual, expected) <= tol and equal shapes; `what` names the value.
::testing::AssertionResult close(const Tensor& actual, const Tensor& expected, double tol,
                                 const std::string& what = "");
::testing::AssertionResult close_as(const Tensor& actual, const Tensor& expected, DType dtype,
                                    const std::string& what = "");
#define EXPECT_CLOSE(actual, expected, tol) \
  EXPECT_TRUE(::moe::test::close(actual, expected, tol, #actual))

// Exact equality of integer (or any) tensors, elementwise.
::testing::AssertionResult equal(const Tensor& actual, const Tensor& expected,
                                 const std::string& what = "");

// Central-difference gradient of a scalar function of the fp64 CPU tensor `x` (modified in
// place and restored): grad[i] = (f(x + h e_i) - f(x - h e_i)) / 2h.
Tensor numerical_gradient(const std::function<double()>& loss, Tensor& x, double step = 1e-6);

// Random tensor from the counter-based RNG (same values on CPU and CUDA for the same seed).
Tensor random_normal(const Shape& shape, DType dtype, uint64_t seed, Device device = Device::cpu(),
                     double stddev = 1.0);
Tensor random_uniform(const Shape& shape, DType dtype, uint64_t seed, double lo, double hi,
                      Device device = Device::cpu());

// A fresh seed per call (tests must not run on the same inputs forever); printed on failure
// by SCOPED_TRACE so a failure can be reproduced with MOE_TEST_SEED=<seed>.
uint64_t fresh_seed();

// The path of a file under tests/fixtures/ (e.g. "hf/mixtral-tiny/config.json"): from
// $MOE_TEST_DATA_DIR if set, else the source tree this binary was configured from, else
// tests/fixtures relative to the working directory (a build run on another machine from the
// repository root).
std::string fixture_path(const std::string& relative);

// Sum over all elements of a * b (a dot product through the double conversion): used to turn
// a tensor output into a scalar loss L = <out, weights> whose gradient is `weights`.
double dot(const Tensor& a, const Tensor& b);

bool have_gpu();

// Copies to the first GPU / to the host (shorthands for the CUDA-vs-CPU tests); an undefined
// tensor stays undefined.
inline Tensor gpu(const Tensor& t) {
  return t.defined() ? t.to(Device::cuda()) : Tensor();
}
inline Tensor host(const Tensor& t) {
  return t.defined() ? t.to(Device::cpu()) : Tensor();
}

// The dtype a CPU reference computes a kernel dtype in: f32 for bf16/f16 (on the same rounded
// values), the dtype itself otherwise.
inline DType reference_dtype(DType dt) {
  return dt == DType::bf16 || dt == DType::f16 ? DType::f32 : dt;
}

// A GPU copy of `values` starting one element past an aligned address (forces the kernels'
// unvectorised paths).
Tensor misaligned_gpu(const Tensor& values);

// One random input twice: `dev` on the GPU in the kernel dtype, `ref` on the CPU in
// reference_dtype(dtype) holding the same (rounded) values.
struct PairedInput {
  Tensor ref;
  Tensor dev;
};
PairedInput paired_input(const Shape& shape, DType dtype, uint64_t seed, bool misaligned = false,
                         double stddev = 1.0);
#define MOE_REQUIRE_GPU() \
  if (!::moe::test::have_gpu()) GTEST_SKIP() << "no CUDA device"

// The message of the std::exception `fn` throws, or "" when it returns: for tests of errors.
std::string message_of(const std::function<void()>& fn);

// That `message` holds every one of the parts that follow (strings).
#define EXPECT_SAYS(message, ...)                                                   \
  do {                                                                              \
    const std::string said_ = (message);                                            \
    for (const std::string& part : std::initializer_list<std::string>{__VA_ARGS__}) \
      EXPECT_NE(said_.find(part), std::string::npos) << part << "\n" << said_;      \
  } while (0)

}  // namespace moe::test
