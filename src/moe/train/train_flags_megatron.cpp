// The rest of Megatron-LM's flag surface that MoE training scripts pass (train_flag_table.h):
// the switches moecore accepts because it always does what they ask (fusions, grouped GEMMs,
// flash attention), the checkpoint-format flags that select moecore's own checkpoint, and the
// --moe-* options this build refuses, each with its reason and what to use instead.
#include "moe/core/error.h"
#include "moe/train/train_flag_table.h"

namespace moe::train::flags {
namespace {

Entry always(std::string name, std::string what) {
  return toggle(std::move(name), "accepted: " + what, [](ParseState&, const std::string&) {});
}

// A flag accepted at Megatron's default value only (the value moecore always has).
Entry at_default(std::string name, std::string value_name, std::string default_text,
                 std::string why) {
  const std::string flag = name;
  return value(std::move(name), value_name, "accepted at " + default_text + " only: " + why,
               [flag, default_text, why](ParseState&, const std::string& v) {
                 MOE_CHECK(v == default_text, flag, " ", v, ": only ", default_text,
                           " is supported (", why, ")");
               });
}

Entry not_built(std::string name, std::string value_name, std::string what) {
  return refused(std::move(name), std::move(value_name), "not built yet: " + what);
}

}  // namespace

void add_megatron_surface_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  // Fusions and kernels moecore always uses.
  t.push_back(
      always("--moe-permute-fusion", "moecore's token permutation is always one fused kernel"));
  t.push_back(always("--moe-router-fusion",
                     "moecore's router (scores, top-k, aux-loss statistics) is always fused"));
  t.push_back(always("--use-flash-attn", "attention is always a fused (flash) kernel"));
  t.push_back(always("--no-masked-softmax-fusion",
                     "moecore has no masked-softmax kernel: causal attention is one fused kernel"));
  t.push_back(always("--no-bias-swiglu-fusion", "moecore's SwiGLU is always fused, bias-free"));
  t.push_back(always("--no-bias-dropout-fusion", "moecore has no bias-dropout fusion to turn off"));
  t.push_back(always("--no-rope-fusion", "rotary embedding is applied by moecore's own kernel"));
  t.push_back(always("--no-gradient-accumulation-fusion",
                     "gradients accumulate into fp32 main grads by moecore's own kernels"));
  t.push_back(always("--attention-softmax-in-fp32", "the attention softmax is always fp32"));
  t.push_back(toggle("--sequence-parallel",
                     "sequence_parallel: the norms, residuals and dropouts between the "
                     "tensor-parallel blocks act on 1/TP of the sequence (all-gather before, "
                     "reduce-scatter after each block); --seq-length must divide by TP; with "
                     "--tensor-model-parallel-size 1 it changes nothing (Megatron turns it off)",
                     [](S& s, V) { s.run.sequence_parallel = true; }));
  t.push_back(value("--attention-backend", "BACKEND",
                    "accepted: flash | fused | auto (moecore picks its fused kernel: cuDNN when "
                    "built, else its own); unfused and local are refused",
                    [](S&, V v) {
                      one_of("--attention-backend", v, {"flash", "fused", "auto"});
                    }));
  t.push_back(at_default("--transformer-impl", "IMPL", "transformer_engine",
                         "moecore's own kernels stand where Transformer Engine's would"));
  // Checkpoint formats: moecore writes its own distributed checkpoint.
  t.push_back(value("--ckpt-format", "FORMAT",
                    "accepted: torch_dist selects moecore's own distributed checkpoint (the "
                    "files are moecore's, not PyTorch's; `moe convert` exports Hugging Face "
                    "folders); torch, torch_dcp and fsdp_dtensor are refused",
                    [](S&, V v) {
                      MOE_CHECK(v == "torch_dist", "--ckpt-format ", v,
                                " cannot be written by moecore: give torch_dist (moecore's own "
                                "distributed checkpoint) or leave it out; `moe convert` exports "
                                "Hugging Face folders");
                    }));
  t.push_back(always("--auto-detect-ckpt-format",
                     "--load reads moecore's checkpoints and model folders (moecore or Hugging "
                     "Face) whatever --ckpt-format says"));
  t.push_back(always("--no-position-embedding",
                     "moecore has no learned absolute position embedding (rotary only)"));
  t.push_back(always("--use-mcore-models", "moecore's models are Megatron-Core's layout"));

  // --moe-* options this build refuses.
  t.push_back(not_built("--moe-apply-probs-on-input", "",
                        "the routing probabilities scale each expert's output (Megatron's "
                        "default); leave it out"));
  t.push_back(
      at_default("--moe-dispatch-fwd-dtype", "DTYPE", "bf16", "mxfp8 dispatch is not built yet"));
  t.push_back(
      at_default("--moe-combine-bwd-dtype", "DTYPE", "bf16", "mxfp8 combine is not built yet"));
  for (const char* flag :
       {"--moe-enable-deepep", "--moe-ncclep-zero-copy", "--moe-permute-fusion-into-hybridep",
        "--moe-hybridep-pad-uneven-dispatch-inputs"})
    t.push_back(not_built(flag, "",
                          "DeepEP / HybridEP / NCCL-EP (the flex dispatcher) are not built yet; "
                          "use --moe-token-dispatcher-type alltoall"));
  for (const char* flag :
       {"--moe-deepep-num-sms", "--moe-flex-dispatcher-num-sms",
        "--moe-hybridep-num-blocks-permute", "--moe-hybridep-num-blocks-unpermute",
        "--moe-hybridep-num-sms", "--moe-hybridep-num-sms-preprocessing"})
    t.push_back(not_built(flag, "N",
                          "the flex dispatcher (DeepEP / HybridEP) is not built yet; use "
                          "--moe-token-dispatcher-type alltoall"));
  t.push_back(not_built("--moe-flex-dispatcher-backend", "BACKEND",
                        "the flex dispatcher is not built yet; use --moe-token-dispatcher-type "
                        "alltoall"));
  t.push_back(not_built("--moe-enable-routing-replay", "",
                        "routing replay (recorded routes replayed) is not built yet"));
  t.push_back(not_built("--moe-latent-size", "N",
                        "the latent MoE projection is not built yet; leave it out"));
  t.push_back(not_built("--moe-mlp-glu-interleave-size", "N",
                        "interleaved GLU weights are not built yet: moecore's experts keep gate "
                        "and up apart"));
  t.push_back(not_built("--moe-shared-expert-glu-interleave-size", "N",
                        "interleaved GLU weights are not built yet: the shared expert keeps gate "
                        "and up apart"));
  t.push_back(not_built("--moe-pad-experts-for-cuda-graph-inference", "",
                        "CUDA graphs are not built yet (an inference option)"));
  for (const char* flag : {"--moe-paged-stash"})
    t.push_back(not_built(flag, "", "the paged activation stash is not built yet"));
  for (const char* flag :
       {"--moe-paged-stash-buffer-size-factor-cpu", "--moe-paged-stash-buffer-size-factor-cuda",
        "--moe-paged-stash-page-size"})
    t.push_back(not_built(flag, "X", "the paged activation stash is not built yet"));
  t.push_back(not_built("--moe-router-force-biased", "X",
                        "forced router biases are not built yet; --moe-router-enable-expert-bias "
                        "is the learned bias"));
  t.push_back(not_built("--moe-router-padding-for-quantization", "",
                        "fp8 / fp4 expert GEMMs are not built yet (moecore computes experts in "
                        "bf16 or fp32)"));
  t.push_back(not_built("--moe-router-quantile-balancing-ema", "X",
                        "quantile balancing is not built yet; use --moe-router-load-balancing-type "
                        "aux_loss, seq_aux_loss or global_aux_loss, or the expert bias"));
  t.push_back(not_built("--moe-single-grouped-weight", "",
                        "moecore stores each expert's weights apart (its grouped GEMM reads them "
                        "so); leave it out"));
  t.push_back(not_built("--moe-single-grouped-bias", "",
                        "moecore's experts have no bias (--disable-bias-linear)"));
  t.push_back(not_built("--moe-use-grouped-tensor", "",
                        "Transformer Engine's grouped tensors are not used: moecore's grouped "
                        "GEMM is its own"));
  for (const char* flag :
       {"--moe-routing-trace-capture-hidden-states", "--moe-routing-trace-capture-logits",
        "--moe-routing-trace-dump-weights"})
    t.push_back(not_built(flag, "",
                          "routing traces are not built yet; --moe-per-layer-logging "
                          "logs each layer's expert loads"));
  t.push_back(not_built("--moe-routing-trace-max-training-iters", "N",
                        "routing traces are not built yet; --moe-per-layer-logging logs each "
                        "layer's expert loads"));
  t.push_back(not_built("--moe-routing-trace-path", "PATH",
                        "routing traces are not built yet; --moe-per-layer-logging logs each "
                        "layer's expert loads"));
}

}  // namespace moe::train::flags
