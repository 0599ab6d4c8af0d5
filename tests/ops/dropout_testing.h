// Blocks of tensors for the dropout tests (CPU and CUDA): a slice along one dim and the
// concatenation of slices, so a test can run an op on the blocks a parallel rank would hold
// (positions of a sequence, heads) and compare with the one-rank call. Host copies, any dtype
// (values pass through f64 exactly); the result is on the CPU in the input's dtype.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::test {

// Elements [start, start + count) of `t` along `dim` (a copy).
inline Tensor slice_dim(const Tensor& t, int64_t dim, int64_t start, int64_t count) {
  const Shape& shape = t.shape();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= shape[size_t(d)];
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= shape[size_t(d)];
  const int64_t n = shape[size_t(dim)];
  const std::vector<double> v = t.to_double_vector();
  std::vector<double> out;
  out.reserve(size_t(outer * count * inner));
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = start; i < start + count; ++i)
      for (int64_t e = 0; e < inner; ++e) out.push_back(v[size_t((o * n + i) * inner + e)]);
  Shape result = shape;
  result[size_t(dim)] = count;
  return Tensor::from_vector(out, result).to(t.dtype());
}

// The tensors of `parts` (equal shapes but along `dim`, one dtype) joined along `dim`.
inline Tensor concat_dim(const std::vector<Tensor>& parts, int64_t dim) {
  const Shape& first = parts.at(0).shape();
  int64_t outer = 1, inner = 1, total = 0;
  for (int64_t d = 0; d < dim; ++d) outer *= first[size_t(d)];
  for (int64_t d = dim + 1; d < int64_t(first.size()); ++d) inner *= first[size_t(d)];
  std::vector<std::vector<double>> values;
  for (const Tensor& p : parts) {
    values.push_back(p.to_double_vector());
    total += p.size(dim);
  }
  std::vector<double> out;
  out.reserve(size_t(outer * total * inner));
  for (int64_t o = 0; o < outer; ++o)
    for (size_t k = 0; k < parts.size(); ++k) {
      const int64_t n = parts[k].size(dim);
      out.insert(out.end(), values[k].begin() + (o * n) * inner,
                 values[k].begin() + (o * n + n) * inner);
    }
  Shape result = first;
  result[size_t(dim)] = total;
  return Tensor::from_vector(out, result).to(parts[0].dtype());
}

}  // namespace moe::test
