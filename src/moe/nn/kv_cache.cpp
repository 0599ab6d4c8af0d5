// The KV cache's attention and decode step (kv_cache.h).
#include "moe/nn/kv_cache.h"

#include <algorithm>

#include "moe/core/error.h"
#include "moe/nn/gpt_model.h"
#include "moe/ops/elementwise.h"
#include "moe/ops/embedding.h"
#include "moe/ops/gemm.h"

namespace moe::nn {
namespace {

constexpr const char* kOp = "KV cache";

// Room for `needed` rows in a cache tensor [capacity, 1, heads, D] (doubling, at least 16),
// keeping its first `kept` rows.
void reserve_rows(Tensor& t, int64_t needed, int64_t kept, int64_t heads, int64_t dim, DType dtype,
                  Device device) {
  if (t.defined() && t.size(0) >= needed) return;
  const int64_t capacity = std::max<int64_t>({needed, 16, t.defined() ? 2 * t.size(0) : 0});
  Tensor grown = Tensor::empty({capacity, 1, heads, dim}, dtype, device);
  if (kept > 0) grown.rows(0, kept).copy_(t.rows(0, kept));
  t = std::move(grown);
}

// One decoder layer on the new tokens: TransformerLayer::forward with the cached attention.
Tensor layer_step(TransformerLayer& layer, const Tensor& x, KvStep& step) {
  RMSNormContext input_norm, post_norm;
  const Tensor normed_x = layer.input_layernorm.forward(x, input_norm);
  Tensor h = layer.is_mla() ? layer.mla_attention->forward_cached(normed_x, step)
                            : layer.self_attention.forward_cached(normed_x, step);
  ops::add_(h, x);
  const Tensor normed = layer.post_attention_layernorm.forward(h, post_norm);
  Tensor out;
  if (layer.moe) {
    MoEContext ctx;
    out = layer.moe->forward(normed, ctx);
  } else {
    DenseMLPContext ctx;
    out = layer.mlp->forward(normed, ctx);
  }
  ops::add_(out, h);
  return out;
}

}  // namespace

Tensor cached_attention(const Tensor& q, const Tensor& k, const Tensor& v, KvStep& step,
                        const ops::AttentionOptions& options) {
  check_dim(q, 4, kOp, "q");
  const int64_t S = q.size(0), B = q.size(1), Hq = q.size(2), Dk = q.size(3);
  const int64_t Hkv = k.size(2), Dv = v.size(3);
  MOE_CHECK(S == 1 || B == 1, kOp, ": a step is one token of each sequence or one sequence's ",
            "tokens, got [S, B] = [", S, ", ", B, "]");
  MOE_CHECK(static_cast<int64_t>(step.caches.size()) == B, kOp, ": ", step.caches.size(),
            " caches for ", B, " sequences");
  // Rows of sequence b in the [S * B, ...] views: b * S .. b * S + S - 1 (S == 1 or B == 1).
  const Tensor q2 = q.reshape({S * B, Hq, Dk});
  const Tensor k2 = k.reshape({S * B, Hkv, Dk});
  const Tensor v2 = v.reshape({S * B, Hkv, Dv});
  Tensor out = Tensor::empty({S * B, Hq, Dv}, q.dtype(), q.device());
  ops::AttentionOptions o = options;
  o.layout = ops::AttentionLayout::sbhd;
  o.causal = true;
  for (int64_t b = 0; b < B; ++b) {
    SequenceKvCache& cache = *step.caches[static_cast<size_t>(b)];
    if (cache.layers.size() <= static_cast<size_t>(step.layer))
      cache.layers.resize(static_cast<size_t>(step.layer) + 1);
    KvBlock& block = cache.layers[static_cast<size_t>(step.layer)];
    const int64_t n0 = cache.length, n = n0 + S;
    reserve_rows(block.k, n, n0, Hkv, Dk, k.dtype(), k.device());
    reserve_rows(block.v, n, n0, Hkv, Dv, v.dtype(), v.device());
    block.k.rows(n0, S).copy_(k2.rows(b * S, S).reshape({S, 1, Hkv, Dk}));
    block.v.rows(n0, S).copy_(v2.rows(b * S, S).reshape({S, 1, Hkv, Dv}));
    // The op takes as many queries as keys: the new ones in the last S rows (causal, so row
    // n0 + s sees keys 0..n0 + s), zeros before them (their outputs are dropped).
    Tensor queries = q2.rows(b * S, S).reshape({S, 1, Hq, Dk});
    if (n0 > 0) {
      Tensor padded = Tensor::zeros({n, 1, Hq, Dk}, q.dtype(), q.device());
      padded.rows(n0, S).copy_(queries);
      queries = padded;
    }
    const ops::AttentionOutput a =
        ops::attention_forward(queries, block.k.rows(0, n), block.v.rows(0, n), o);
    out.rows(b * S, S).copy_(a.out.rows(n0, S).reshape({S, Hq, Dv}));
  }
  return out.reshape({S, B, Hq, Dv});
}

Tensor decode_step(GPTModel& model, const Tensor& input_ids,
                   const std::vector<SequenceKvCache*>& caches) {
  check_dim(input_ids, 2, kOp, "input_ids");
  MOE_CHECK(input_ids.dtype() == DType::i64 || input_ids.dtype() == DType::i32, kOp,
            ": input_ids must be i32 or i64, got ", input_ids.dtype());
  MOE_CHECK(input_ids.device() == model.device(), kOp, ": input_ids are on ", input_ids.device(),
            " but the model is on ", model.device());
  const int64_t S = input_ids.size(0), B = input_ids.size(1);
  MOE_CHECK(S >= 1 && B >= 1 && (S == 1 || B == 1), kOp,
            ": a step is one token of each sequence or one sequence's tokens, got input_ids [", S,
            ", ", B, "]");
  MOE_CHECK(static_cast<int64_t>(caches.size()) == B, kOp, ": ", caches.size(), " caches for ", B,
            " sequences");
  const ModelConfig& config = model.config();
  std::vector<int64_t> positions(static_cast<size_t>(S * B));
  for (int64_t b = 0; b < B; ++b) {
    MOE_CHECK(caches[static_cast<size_t>(b)] != nullptr, kOp, ": no cache for sequence ", b);
    const int64_t length = caches[static_cast<size_t>(b)]->length;
    MOE_CHECK(length + S <= config.max_position_embeddings, kOp, ": sequence ", b, " would hold ",
              length + S, " tokens, more than max_position_embeddings ",
              config.max_position_embeddings);
    for (int64_t s = 0; s < S; ++s) positions[static_cast<size_t>(s * B + b)] = length + s;
  }
  KvStep step;
  step.caches = caches;
  step.new_tokens = S;
  step.positions = Tensor::from_vector(positions, {S, B}, model.device());

  if (model.on_params_needed) model.on_params_needed({&model.embed_tokens});
  Tensor x = ops::embedding_forward(input_ids, model.embed_tokens.value);  // [S, B, H]
  for (size_t l = 0; l < model.layers.size(); ++l) {
    if (model.on_params_needed) model.on_params_needed(model.layers[l].parameters());
    step.layer = static_cast<int64_t>(l);
    x = layer_step(model.layers[l], x, step);
  }
  const int64_t H = config.hidden_size;
  const Tensor last = x.rows(S - 1, 1).reshape({B, H});
  RMSNormContext norm;
  if (model.on_params_needed) {
    std::vector<Parameter*> head{&model.final_norm.weight};
    if (config.untie_embeddings_and_output_weights) head.push_back(&model.lm_head);
    model.on_params_needed(head);
  }
  const Tensor hidden = model.final_norm.forward(last, norm);
  Tensor logits = ops::matmul(hidden, model.output_weight().value, false, true);  // [B, V]
  for (SequenceKvCache* cache : caches) cache->length += S;
  return logits;
}

}  // namespace moe::nn
