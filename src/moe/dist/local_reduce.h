// Internal to the Local backend: the element-wise reduction over ranks. One template serves the
// CPU loop and the CUDA kernel, so both sum in the same order with the same accumulator and
// give bitwise the same result:
//   out[i] = finish(op, (((in_0[i] (+) in_1[i]) (+) in_2[i]) ... (+) in_{R-1}[i]))
// with (+) the op (sum, max, min; avg sums) applied in the accumulation type (fp32 for bf16 and
// f16, the element type otherwise), and finish dividing by R for avg. Rank order 0, 1, 2, ...
// makes results reproducible and identical on every rank.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>

#include "moe/core/dtype.h"
#include "moe/core/host_device.h"
#include "moe/core/tensor.h"
#include "moe/dist/process_group.h"

namespace moe::dist::detail {

// fp32 accumulation for the 16-bit floats; f64, f32 and the integers accumulate in themselves.
template <class T>
using ReduceAcc = std::conditional_t<std::is_same_v<T, bf16> || std::is_same_v<T, f16>, float, T>;

template <class A>
MOE_HD A reduce_combine(ReduceOp op, A acc, A x) {
  switch (op) {
    case ReduceOp::max:
      return x > acc ? x : acc;
    case ReduceOp::min:
      return x < acc ? x : acc;
    case ReduceOp::sum:
    case ReduceOp::avg:
      break;
  }
  return acc + x;
}

// Reduces load(0), load(1), ..., load(num_ranks - 1) in that order.
template <class T, class Load>
MOE_HD T reduce_over_ranks(ReduceOp op, int num_ranks, Load load) {
  using A = ReduceAcc<T>;
  A acc = static_cast<A>(load(0));
  for (int r = 1; r < num_ranks; ++r) acc = reduce_combine<A>(op, acc, static_cast<A>(load(r)));
  if (op == ReduceOp::avg) acc = acc / static_cast<A>(num_ranks);
  return T(acc);
}

// Whether the reductions support `dtype`: f64, f32, bf16, f16, i64, i32.
bool reducible(DType dtype);

// CPU: out[i] = reduction over inputs[0..R)[i], i < numel; all of `dtype`.
void local_reduce_cpu(std::span<const void* const> inputs, void* out, int64_t numel, DType dtype,
                      ReduceOp op);

// CUDA: out (any shape, n elements) = reduction over the rows of staging [R, n], both on the
// same device; queued on the calling thread's current stream of that device.
void local_reduce_cuda(const Tensor& staging, Tensor& out, ReduceOp op);

}  // namespace moe::dist::detail
