// Reading one rank's box of a moecore tensor from a model folder, touching only what the box
// needs: under expert parallelism a rank holds experts [ep E/EP, +E/EP) of each stacked expert
// tensor, and under expert tensor parallelism the slice [etp F/ETP, +F/ETP) of each expert's
// FFN dim (nn::ParamLayout, nn/parameter.h: fc1 [E, 2F, H] viewed as [E, 2, F, H], fc2
// [E, H, F]). DeepSeek-V3 has 256 experts in each of 58 layers: a rank of EP 8 reads 1/8 of them.
// Under tensor parallelism the dense tensors a rank splits are boxes of the same kind (a dense
// MLP's fc1 [2F, H] viewed as [2, F, H], q_proj [Hq D, H] split by rows, o_proj [H, Hq D] by
// columns, embed_tokens / lm_head [V, H] by rows: nn/tensor_parallel.h).
//
// The moecore tensor's global shape G (hf_names.h) holds its HF parts as boxes: part p of
// expert e is the box (e, r_p, 0) of shape (1, R_p, C) of a stacked [E, R, C] tensor (r_p the
// rows of the parts before it), or (r_p, 0) of shape (R_p, C) of an unstacked fused one. The
// target box is a box of the parameter's view V. Both are re-read in the common refinement of G
// and V (view_refine.h); a part whose box meets the target box is needed, and of it only the
// rows that hold the common elements are read (TensorSource::load_rows: a row range of the
// memory-mapped file). So a rank of EP 8 reads the HF tensors of its own experts only; of a
// gate or up projection [F, H] under ETP 2 the rows [etp F/2, +F/2); of a down projection
// [H, F] every row, of which the columns [etp F/2, +F/2) are kept.
//
// FP8 parts (fp8_blocks.h) are dequantized from the block row that holds the first needed row
// to the last needed row: exactly the values a whole dequantization gives for those rows, as
// the block grid of a part starts at its row 0. A moecore folder stores the stacked tensor
// whole: its rows are experts, and the box's experts are read (an FP8 one dequantized per
// expert and part, then cut).
//
// The checks are load_weights's (model_io.h), on what is read: every needed part present,
// of a float dtype and its shape, the parts of one dtype, block scales for FP8; every value read
// finite (errors name the part, its file and its element).
#pragma once

#include <cstdint>
#include <vector>

#include "moe/checkpoint/fp8_blocks.h"
#include "moe/checkpoint/hf_names.h"
#include "moe/checkpoint/tensor_source.h"
#include "moe/core/tensor.h"

namespace moe::checkpoint {

// Where a rank's value sits in a moecore tensor: a box of a view (nn::ParamLayout with its
// defaults filled in). The value is the box's elements, row-major in `shape`.
struct TensorBox {
  Shape view;
  std::vector<int64_t> offset;
  Shape shape;
};

// The box of moecore tensor `mapping` from the Hugging Face tensors of `hf`: a CPU tensor of
// box.shape in the parts' dtype (FP8 parts: `dequantized_dtype`).
Tensor read_hf_box(const TensorMapping& mapping, const TensorSource& hf, const TensorBox& box,
                   Fp8BlockSize block, DType dequantized_dtype);

// The same from a moecore folder, whose tensor `mapping.name` is stored whole in G.
Tensor read_moecore_box(const TensorMapping& mapping, const TensorSource& moecore,
                        const TensorBox& box, Fp8BlockSize block, DType dequantized_dtype);

}  // namespace moe::checkpoint
