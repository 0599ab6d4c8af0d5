#include "moe/train/train_upcycle.h"

#include <filesystem>
#include <optional>

#include "moe/checkpoint/model_io.h"
#include "moe/checkpoint/upcycle.h"
#include "moe/core/error.h"
#include "moe/train/model_folder.h"
#include "moe/train/train_checkpoint.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;

bool has_moe_layer(const nn::ModelConfig& config) {
  for (int64_t l = 0; l < config.num_layers; ++l)
    if (config.is_moe_layer(l)) return true;
  return false;
}

bool holds_checkpoint(const std::string& dir) {
  const fs::path p(dir);
  return fs::is_directory(p) &&
         (fs::is_regular_file(p / "model_config.json") || fs::is_regular_file(p / "config.json") ||
          fs::is_regular_file(p / kTrackerFileName));
}

}  // namespace

bool upcycle_dense_checkpoint(TrainSession& s) {
  const TrainRunConfig& c = s.config;
  MOE_CHECK(holds_checkpoint(c.load), "--moe-use-upcycling: --load ", c.load,
            " holds no checkpoint to upcycle (expected a training save folder with ",
            kTrackerFileName, ", an iteration folder or a model folder)");
  const std::string folder = resolve_model_folder(c.load);
  const checkpoint::CheckpointFormat format = checkpoint::detect_format(folder);
  const nn::ModelConfig source = checkpoint::read_model_config(folder, format);
  const bool training_checkpoint = fs::is_regular_file(fs::path(folder) / "manifest.json");

  if (has_moe_layer(source)) {
    MOE_CHECK(training_checkpoint, "--moe-use-upcycling: --load ", c.load,
              " holds an MoE model folder, not a dense checkpoint; to resume an upcycled run, "
              "give --load the folder its --save wrote");
    s.logger.note("--moe-use-upcycling: --load " + c.load +
                  " holds an MoE checkpoint (the upcycled run): resuming it");
    return false;
  }

  const std::optional<int64_t> existing = latest_checkpoint_iteration(c.save);
  MOE_CHECK(!existing.has_value(), "--moe-use-upcycling: --save ", c.save,
            " already holds a checkpoint (iteration ", existing.value_or(0),
            "); upcycling starts a new run there, once. To resume the upcycled run, give --load ",
            c.save);

  std::unique_ptr<nn::GPTModel> dense =
      checkpoint::load_model(folder, s.model.dtype(), s.model.device());
  const checkpoint::UpcyclingReport report =
      checkpoint::upcycle_model(*dense, s.model, c.moe_upcycling_granularity);
  dense.reset();
  s.trainer.optimizer().reload_masters_from_model();

  const checkpoint::UpcyclingScale& scale = report.scale;
  s.logger.note(moe::detail::concat(
      "upcycled the dense model ", folder, " into ", report.moe_layers, " MoE layers: granularity ",
      scale.granularity, ", ", scale.expansion_rate, " virtual groups, activation scale ",
      scale.activation_scale, ", weight scale ", scale.weight_scale, "; ", report.tensors_copied,
      " tensors copied (", report.dense_mlps_copied, " dense MLPs kept)"));
  for (const std::string& note : report.notes) s.logger.note("  note: " + note);
  save_training_checkpoint(c.save, s.model, s.trainer, run_config_json(c));
  s.logger.note(moe::detail::concat("saved the upcycled model as ", c.save, "/",
                                    checkpoint_folder_name(s.trainer.iteration())));
  return true;
}

}  // namespace moe::train
