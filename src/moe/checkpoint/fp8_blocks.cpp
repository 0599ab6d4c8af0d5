// Block-scaled FP8 dequantization (fp8_blocks.h).
#include "moe/checkpoint/fp8_blocks.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include "moe/core/error.h"
#include "moe/core/json_file.h"

namespace moe::checkpoint {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs fn(begin, end) over [0, n) rows in a few host threads when the work is large (a
// DeepSeek-V3 expert stack is 10^8 values); small tensors stay on the calling thread.
template <class Fn>
void parallel_rows(int64_t n, int64_t row_cost, Fn&& fn) {
  const int64_t work = n * std::max<int64_t>(row_cost, 1);
  const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t threads = std::min<int64_t>({hw, n, std::max<int64_t>(1, work / (1 << 20))});
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t chunk = ceil_div(n, threads);
  for (int64_t begin = 0; begin < n; begin += chunk)
    pool.emplace_back([&fn, begin, end = std::min(n, begin + chunk)] { fn(begin, end); });
  for (std::thread& t : pool) t.join();
}

void check_block(Fp8BlockSize block) {
  MOE_CHECK(block.rows > 0 && block.cols > 0, "FP8 block size must be positive, got [",
            block.rows, ", ", block.cols, "]");
}

}  // namespace

Shape fp8_scale_shape(const Shape& weight_shape, Fp8BlockSize block) {
  check_block(block);
  MOE_CHECK(weight_shape.size() == 2, "block-scaled FP8 weights are 2-D, got shape ",
            shape_str(weight_shape));
  return {ceil_div(weight_shape[0], block.rows), ceil_div(weight_shape[1], block.cols)};
}

Tensor dequantize_fp8_blocks(const Tensor& weight, const Tensor& scale_inv, DType out_dtype,
                             Fp8BlockSize block, const std::string& what) {
  MOE_CHECK(weight.defined() && scale_inv.defined(), "dequantize_fp8_blocks(", what,
            "): undefined tensor");
  MOE_CHECK(weight.dtype() == DType::fp8_e4m3 || weight.dtype() == DType::fp8_e5m2,
            "dequantize_fp8_blocks(", what, "): the weight is ", weight.dtype(),
            ", not fp8_e4m3 / fp8_e5m2");
  MOE_CHECK(weight.dim() == 2, "dequantize_fp8_blocks(", what, "): the weight must be 2-D, got ",
            shape_str(weight.shape()));
  const Shape expected = fp8_scale_shape(weight.shape(), block);
  MOE_CHECK(scale_inv.shape() == expected, "dequantize_fp8_blocks(", what, "): ", what,
            kScaleSuffix, " has shape ", shape_str(scale_inv.shape()), ", but a ",
            shape_str(weight.shape()), " weight in ", block.rows, "x", block.cols,
            " blocks needs ", shape_str(expected));
  MOE_CHECK(!weight.is_cuda() && !scale_inv.is_cuda(), "dequantize_fp8_blocks(", what,
            "): CPU tensors only");
  const std::vector<double> scales_d = scale_inv.to_double_vector();  // any float dtype
  const std::vector<float> scales(scales_d.begin(), scales_d.end());
  const int64_t R = weight.size(0), C = weight.size(1), SC = expected[1];
  Tensor out = Tensor::empty(weight.shape(), out_dtype);
  dispatch<DType::fp8_e4m3, DType::fp8_e5m2>(weight.dtype(), "dequantize_fp8_blocks", [&]<class Q>() {
    dispatch<DType::f32, DType::bf16, DType::f16, DType::f64>(
        out_dtype, "dequantize_fp8_blocks output", [&]<class T>() {
          const Q* w = weight.data<Q>();
          T* y = out.data<T>();
          parallel_rows(R, C, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
              const float* srow = scales.data() + (i / block.rows) * SC;
              for (int64_t j = 0; j < C; ++j)
                y[i * C + j] = T(static_cast<float>(w[i * C + j]) * srow[j / block.cols]);
            }
          });
        });
  });
  return out;
}

std::pair<Tensor, Tensor> quantize_fp8_blocks(const Tensor& weight, Fp8BlockSize block) {
  MOE_CHECK(weight.dim() == 2, "quantize_fp8_blocks: the weight must be 2-D, got ",
            shape_str(weight.shape()));
  const Shape scale_shape = fp8_scale_shape(weight.shape(), block);
  const std::vector<double> w = weight.to(Device::cpu()).to_double_vector();
  const int64_t R = weight.size(0), C = weight.size(1);
  std::vector<float> scales(static_cast<size_t>(scale_shape[0] * scale_shape[1]), 0.0f);
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) {
      float& s = scales[static_cast<size_t>((i / block.rows) * scale_shape[1] + j / block.cols)];
      s = std::max(s, static_cast<float>(std::abs(w[static_cast<size_t>(i * C + j)])));
    }
  for (float& s : scales) s = s > 0 ? s / 448.0f : 1.0f;
  std::vector<fp8_e4m3> q(static_cast<size_t>(R * C));
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) {
      const float s = scales[static_cast<size_t>((i / block.rows) * scale_shape[1] + j / block.cols)];
      q[static_cast<size_t>(i * C + j)] =
          fp8_e4m3(static_cast<float>(w[static_cast<size_t>(i * C + j)]) / s);
    }
  return {Tensor::from_vector(q, weight.shape()), Tensor::from_vector(scales, scale_shape)};
}

std::optional<Fp8BlockSize> fp8_block_size_of(const nlohmann::json& q) {
  if (q.is_null()) return std::nullopt;
  MOE_CHECK(q.is_object(), "quantization_config must be a JSON object, got ", json_excerpt(q));
  const auto method = q.find("quant_method");
  MOE_CHECK(method != q.end() && method->is_string() && method->get<std::string>() == "fp8",
            "quantization_config ", json_excerpt(q),
            ": only DeepSeek's block-scaled FP8 (quant_method \"fp8\") is supported");
  if (const auto fmt = q.find("fmt"); fmt != q.end() && !fmt->is_null())
    MOE_CHECK(fmt->is_string() && fmt->get<std::string>() == "e4m3", "quantization_config ",
              json_excerpt(q), ": fmt must be \"e4m3\"");
  const auto size = q.find("weight_block_size");
  MOE_CHECK(size != q.end() && size->is_array() && size->size() == 2 &&
                (*size)[0].is_number_integer() && (*size)[1].is_number_integer() &&
                (*size)[0].get<int64_t>() > 0 && (*size)[1].get<int64_t>() > 0,
            "quantization_config ", json_excerpt(q),
            ": weight_block_size must be two positive integers such as [128, 128]");
  return Fp8BlockSize{(*size)[0].get<int64_t>(), (*size)[1].get<int64_t>()};
}

nlohmann::json fp8_quantization_config(Fp8BlockSize block) {
  return {{"activation_scheme", "dynamic"},
          {"fmt", "e4m3"},
          {"quant_method", "fp8"},
          {"weight_block_size", {block.rows, block.cols}}};
}

}  // namespace moe::checkpoint
