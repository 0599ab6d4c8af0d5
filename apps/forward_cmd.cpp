#include "forward_cmd.h"

#include <cstdio>
#include <filesystem>

#include "moe/checkpoint/forward_eval.h"
#include "moe/checkpoint/model_io.h"
#include "moe/core/error.h"
#include "moe/io/npy.h"

namespace moe::app {

CLI::App* add_forward_command(CLI::App& app, ForwardCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "forward",
      "run a model folder (Hugging Face or moecore) on token ids: print the next-token loss, "
      "write the logits [B, S, V] as a float32 .npy");
  cmd->add_option("--model", o.model, "model folder (config.json or model_config.json)")
      ->required();
  cmd->add_option("--tokens", o.tokens,
                  "JSON file of token ids [[id, ...], ...]: B rows of S ids")
      ->required();
  cmd->add_option("--out", o.out, "output .npy of the logits, [B, S, V] float32")->required();
  cmd->add_option("--dtype", o.dtype, "f32 (CPU default), bf16 (GPU default; GPU only), f64 (CPU)")
      ->check(CLI::IsMember({"f32", "bf16", "f64"}));
  cmd->add_flag("--cpu", o.cpu, "run on the CPU even when a GPU is present");
  return cmd;
}

int run_forward(const ForwardCommandOptions& o, bool force_cpu) {
  // Before the model runs, not after: the logits are written last.
  MOE_CHECK(!std::filesystem::is_directory(o.out), "moe forward: --out ", o.out,
            " is a folder; give the .npy file to write the logits to");
  const bool gpu = !(o.cpu || force_cpu) && cuda_device_count() > 0;
  const Device device = gpu ? Device::cuda(0) : Device::cpu();
  const std::string dtype_text = o.dtype.empty() ? (gpu ? "bf16" : "f32") : o.dtype;
  const DType dtype = dtype_text == "bf16" ? DType::bf16 : dtype_text == "f64" ? DType::f64 : DType::f32;
  MOE_CHECK(gpu || dtype != DType::bf16,
            "moe forward: --dtype bf16 runs on a GPU; on the CPU use f32 or f64");
  MOE_CHECK(!gpu || dtype != DType::f64, "moe forward: --dtype f64 runs on the CPU (add --cpu)");

  auto model = checkpoint::load_model(o.model, dtype, device);
  const Tensor ids = checkpoint::read_token_batch(o.tokens, model->config().vocab_size);
  std::printf("model %s (%s) on %s in %s; tokens [B=%lld, S=%lld]\n",
              model->config().name.c_str(), model->config().family.c_str(), device.str().c_str(),
              dtype_name(dtype), static_cast<long long>(ids.size(0)),
              static_cast<long long>(ids.size(1)));
  const checkpoint::ForwardResult result = checkpoint::run_forward(*model, ids);
  if (result.lm_loss)
    std::printf("lm loss: %.9g\n", *result.lm_loss);
  else
    std::printf("lm loss: none (sequences of one token predict nothing)\n");
  io::write_npy(o.out, result.logits);
  std::printf("logits [%lld, %lld, %lld] float32 -> %s\n",
              static_cast<long long>(result.logits.size(0)),
              static_cast<long long>(result.logits.size(1)),
              static_cast<long long>(result.logits.size(2)), o.out.c_str());
  return 0;
}

}  // namespace moe::app
