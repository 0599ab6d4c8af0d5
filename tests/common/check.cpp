#include "common/check.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "moe/core/rng.h"

namespace moe::test {

double tolerance(DType dtype) {
  switch (dtype) {
    case DType::f64: return 1e-12;
    case DType::f32: return 1e-5;
    case DType::f16: return 2e-3;
    case DType::bf16: return 1e-2;
    case DType::fp8_e4m3: return 6e-2;
    case DType::fp8_e5m2: return 1.2e-1;
    default: return 0.0;  // integers compare exactly
  }
}

double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) && std::isfinite(b[i])) return INFINITY;
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  if (norm == 0) return std::sqrt(diff);
  return std::sqrt(diff / norm);
}

double relative_error(const Tensor& a, const Tensor& b) {
  return relative_error(a.to_double_vector(), b.to_double_vector());
}

::testing::AssertionResult close(const Tensor& actual, const Tensor& expected, double tol,
                                 const std::string& what) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(actual.shape())
                                         << " != expected " << shape_str(expected.shape());
  const double err = relative_error(actual, expected);
  if (err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << err << " > tolerance "
                                       << tol << " (" << actual.str() << " vs "
                                       << expected.str() << ")";
}

::testing::AssertionResult close_as(const Tensor& actual, const Tensor& expected, DType dtype,
                                    const std::string& what) {
  return close(actual, expected, tolerance(dtype), what);
}

::testing::AssertionResult equal(const Tensor& actual, const Tensor& expected,
                                 const std::string& what) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(actual.shape())
                                         << " != expected " << shape_str(expected.shape());
  auto a = actual.to_double_vector(), b = expected.to_double_vector();
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i])
      return ::testing::AssertionFailure() << what << ": element " << i << " is " << a[i]
                                           << ", expected " << b[i];
  return ::testing::AssertionSuccess();
}

Tensor numerical_gradient(const std::function<double()>& loss, Tensor& x, double step) {
  MOE_CHECK(x.dtype() == DType::f64 && x.device().is_cpu(),
            "numerical_gradient needs an f64 CPU tensor, got ", x.str());
  Tensor grad = Tensor::zeros(x.shape(), DType::f64);
  double* p = x.data<double>();
  double* g = grad.data<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double saved = p[i];
    p[i] = saved + step;
    const double up = loss();
    p[i] = saved - step;
    const double down = loss();
    p[i] = saved;
    g[i] = (up - down) / (2 * step);
  }
  return grad;
}

Tensor random_normal(const Shape& shape, DType dtype, uint64_t seed, Device device, double stddev) {
  Tensor t = Tensor::empty(shape, dtype, device);
  fill_normal(t, seed, 0.0, stddev);
  return t;
}

Tensor random_uniform(const Shape& shape, DType dtype, uint64_t seed, double lo, double hi,
                      Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  fill_uniform(t, seed, lo, hi);
  return t;
}

uint64_t fresh_seed() {
  static uint64_t next = []() -> uint64_t {
    if (const char* env = std::getenv("MOE_TEST_SEED")) return std::strtoull(env, nullptr, 10);
    return static_cast<uint64_t>(
        std::chrono::high_resolution_clock::now().time_since_epoch().count());
  }();
  return next++;
}

std::string fixture_path(const std::string& relative) {
  namespace fs = std::filesystem;
  std::vector<fs::path> roots;
  if (const char* env = std::getenv("MOE_TEST_DATA_DIR")) roots.emplace_back(env);
  roots.emplace_back(MOE_TEST_DATA_DIR);
  roots.emplace_back("tests/fixtures");
  for (const fs::path& root : roots)
    if (fs::exists(root / relative)) return (root / relative).string();
  MOE_FAIL("fixture ", relative, " is in none of $MOE_TEST_DATA_DIR, ", MOE_TEST_DATA_DIR,
           ", ./tests/fixtures");
}

double dot(const Tensor& a, const Tensor& b) {
  auto x = a.to_double_vector(), y = b.to_double_vector();
  MOE_CHECK(x.size() == y.size(), "dot: sizes ", x.size(), " and ", y.size());
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

bool have_gpu() { return cuda_device_count() > 0; }

Tensor misaligned_gpu(const Tensor& values) {
  Tensor flat = Tensor::zeros({values.numel() + 8}, values.dtype(), Device::cuda());
  Tensor view = flat.rows(1, values.numel()).reshape(values.shape());
  view.copy_(values);
  return view;
}

PairedInput paired_input(const Shape& shape, DType dtype, uint64_t seed, bool misaligned,
                         double stddev) {
  const Tensor v = random_normal(shape, DType::f32, seed, Device::cpu(), stddev).to(dtype);
  return {v.to(reference_dtype(dtype)), misaligned ? misaligned_gpu(gpu(v)) : gpu(v)};
}

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace moe::test
