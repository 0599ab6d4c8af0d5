// Upcycling (Megatron's --moe-use-upcycling / --moe-upcycling-granularity; arXiv 2410.07524,
// "Upcycling Large Language Models into Mixture of Experts"): the weights of an MoE model made
// from a trained dense one, so that MoE training starts where dense training stopped.
//
// Notation: the dense SwiGLU MLP fc1 [2F, H] = [gate; up], fc2 [H, F]; the MoE block has E
// experts of width F_e = --moe-ffn-hidden-size, top-k routing.
//   g = F / F_e       granularity (--moe-upcycling-granularity; 1 = the default scheme)
//   r = E / g         expansion rate: how many "virtual groups" of g experts there are
//   s = r g^2 / k     with --moe-router-pre-softmax, else s = g     (activation scale)
//   c = s^(1/3)       weight scale: the experts are SwiGLU (gated), as Megatron's GLU case;
//                     Megatron uses s^(1/2) for plain gelu / silu MLPs, which moecore has not
// Expert e takes piece j = e mod g of the dense MLP, scaled by c:
//   fc1_e = c [gate rows j F_e .. (j+1) F_e; up rows j F_e .. (j+1) F_e]   [2 F_e, H]
//   fc2_e = c fc2[:, j F_e .. (j+1) F_e]                                   [H, F_e]
// Router: rows i = 0 .. r-1 of the MoE model's fresh router, each repeated g times
//   W_r[i g + m] = W_fresh[i]   (m = 0 .. g-1)
// so the g experts of virtual group i share one router row and together hold the whole dense
// MLP. Everything that is not an MoE layer's MLP (embedding, attention, norms, the output
// layer, the MTP modules' projections and norms, and the MLPs of layers that stay dense under
// --moe-layer-freq) is copied unchanged. Expert biases start at zero, as fresh.
// The formulas are Megatron's upcycling_utils.py: s depends only on --moe-router-pre-softmax
// (not on the score function or --moe-router-topk-scaling-factor), and it applies at g = 1
// too, so with --moe-router-pre-softmax even the default scheme scales the copies by
// (E / k)^(1/3).
//
// What the scheme preserves exactly (tests/checkpoint/upcycle_test.cpp checks each in f64):
//   - g = 1 without pre-softmax: the MoE layer computes the dense MLP exactly whenever the k
//     chosen probabilities sum to 1: softmax after top-k (any k), sigmoid with k > 1 (its probs
//     are renormalised), softmax with expert bias, and no --moe-router-topk-scaling-factor, no
//     capacity dropping. Then MoE(x) = sum_j p_j MLP(x) = MLP(x): the upcycled model's logits
//     are the dense model's.
//   - g > 1 (and pre-softmax at any g): SiLU is not homogeneous (silu(c z) != c silu(z)), so the
//     dense function is kept only up to that: when k is a multiple of g the top-k picks k / g
//     whole virtual groups (equal logits within a group; ties go to the lower index), and
//       post-softmax:  MoE(x) = sum_groups (q_i / g) c^2 fc2 (silu(c gate x) * up x) = MLP_c(x)
//       pre-softmax with a uniform router (the paper's argument: a fresh router is uniform in
//       expectation; exactly so for zero router weights): the k chosen probs are 1 / E each,
//       MoE(x) = (k / g) (1 / E) c^2 fc2 (silu(c gate x) * up x) = MLP_c(x) as well,
//     where MLP_c is the dense MLP with SiLU replaced by silu(c z) / c = z sigmoid(c z): the
//     gate rows times c, fc2 divided by c. c = 1 (g = 1, post-softmax) is the dense MLP.
//   - k not a multiple of g splits groups; nothing is preserved then (Megatron allows it).
//
// Refused (moe::Error): a source that is not dense (any MoE layer), shape flags that differ
// from the dense model's, F not a multiple of g, F_e != F / g, E not a multiple of g, and
// shared experts (Megatron leaves a shared expert at its random initialisation, which adds a
// random MLP to the dense function; refused here rather than silently changing the model).
// Layers kept dense by --moe-layer-freq take the dense MLP unchanged (Megatron's converter
// fails on such models: its first "mlp" must be an MoE layer and the extra expert keys break
// its strict load; copying is the only function-preserving choice, and needs the MoE model's
// --ffn-hidden-size to equal the dense one).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/core/tensor.h"
#include "moe/nn/gpt_model.h"
#include "moe/nn/model_config.h"

namespace moe::checkpoint {

struct UpcyclingScale {
  int64_t granularity = 1;        // g
  int64_t expansion_rate = 1;     // r = E / g
  double activation_scale = 1.0;  // s
  double weight_scale = 1.0;      // c = s^(1/3)
};

// The numbers above for an MoE block `moe` and granularity g. Errors: g < 1, E % g != 0.
UpcyclingScale upcycling_scale(const nn::MoEConfig& moe, int64_t granularity);

// The checks that need only the MoE run's own flags (train_args.h calls it): g >= 1, at least
// one MoE layer, E a multiple of g, no shared expert. Errors name the flags.
void check_upcycling_target(const nn::ModelConfig& moe, int64_t granularity);

// The dense model's config against the MoE model's (both complete): the source is dense, the
// shape flags agree (--num-layers, --hidden-size, heads, query groups, head dim, attention
// kind and MLA ranks, --qk-layernorm, --add-qkv-bias, --vocab-size, tied embeddings,
// --mtp-num-layers, and --ffn-hidden-size when the MoE model keeps dense layers), g divides
// the dense --ffn-hidden-size and --moe-ffn-hidden-size = dense --ffn-hidden-size / g. Every
// error names the flag and both values. Returns notes for fields that differ without changing
// any tensor (--norm-epsilon, --rotary-base, ...): the MoE model computes with its own.
std::vector<std::string> check_upcycling_configs(const nn::ModelConfig& dense,
                                                 const nn::ModelConfig& moe, int64_t granularity);

// The scheme on single tensors, in f64 on the host; results in the input's dtype on the
// input's device (fresh tensors).
// dense_fc1 [2F, H] -> experts' fc1 [E, 2 F/g, H] (E = scale.expansion_rate * g).
Tensor upcycle_expert_fc1(const Tensor& dense_fc1, const UpcyclingScale& scale);
// dense_fc2 [H, F] -> experts' fc2 [E, H, F/g].
Tensor upcycle_expert_fc2(const Tensor& dense_fc2, const UpcyclingScale& scale);
// fresh_router [E, H] -> [E, H] with row i g + m = fresh row i (i < E / g).
Tensor upcycle_router(const Tensor& fresh_router, int64_t granularity);

struct UpcyclingReport {
  UpcyclingScale scale;
  int64_t moe_layers = 0;          // MoE blocks filled (MTP layers included)
  int64_t dense_mlps_copied = 0;   // MLPs of layers the MoE model keeps dense
  int64_t tensors_copied = 0;      // every other tensor taken over unchanged
  // check_upcycling_configs' notes, then the routing options under which the MoE model does
  // not start from the dense function (k not a multiple of g, sigmoid top-1, a top-k scaling
  // factor, a capacity factor).
  std::vector<std::string> notes;
};

// Fills `moe` (built from the MoE config; its routers are the fresh routers the scheme starts
// from) from `dense` (any dtypes and devices: values are cast to the MoE model's). Checks the
// configs first (check_upcycling_configs); every tensor of `moe` is written, and a tensor
// `moe` needs that `dense` lacks, or of another shape, is an error naming it.
UpcyclingReport upcycle_model(nn::GPTModel& dense, nn::GPTModel& moe, int64_t granularity);

}  // namespace moe::checkpoint
