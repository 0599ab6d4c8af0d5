// `moe info` (model_info.h).
#include "moe/checkpoint/model_info.h"

#include <filesystem>
#include <map>
#include <sstream>

#include "moe/checkpoint/model_io.h"
#include "moe/core/error.h"
#include "moe/io/safetensors.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"
#include "moe/nn/param_count.h"

namespace moe::checkpoint {

namespace fs = std::filesystem;

nn::ModelConfig resolve_model_config(const std::string& model) {
  if (fs::is_directory(model)) return read_model_config(model, detect_format(model));
  try {
    return nn::model_zoo(model);
  } catch (const Error& e) {
    MOE_FAIL("--model ", model, " is not a model folder, and not a zoo model: ", e.what());
  }
}

std::string model_info(const std::string& model) {
  const nn::ModelConfig config = resolve_model_config(model);
  std::ostringstream out;
  const bool folder = fs::is_directory(model);
  const nn::ModelParamCount count = nn::count_parameters(config);
  out << "model " << config.name << " (family " << config.family << "), from "
      << (folder ? std::string(format_name(detect_format(model))) + " folder " + model
                 : std::string("the model zoo"))
      << "\n\nconfig:\n"
      // (replace: a name taken from a folder's bytes need not be UTF-8)
      << nn::model_config_to_json(config).dump(2, ' ', false,
                                               nlohmann::json::error_handler_t::replace)
      << "\n\n"
      << nn::describe(count);
  if (count.mtp_checkpoint_copies > 0)
    out << "  (a Hugging Face checkpoint also stores " << nn::format_param_count(count.mtp_checkpoint_copies)
        << " in the MTP layers' copies of the embedding and output head: "
        << nn::format_param_count(count.checkpoint_total()) << " in all)\n";
  if (folder) {
    const io::SafetensorsCollection c = io::SafetensorsCollection::open(model);
    std::map<std::string, std::pair<int64_t, uint64_t>> by_dtype;  // tensors, bytes
    uint64_t bytes = 0;
    for (const std::string& name : c.names()) {
      const io::SafetensorsTensorInfo& i = c.info(name);
      auto& entry = by_dtype[io::safetensors_dtype_name(i.file_dtype)];
      ++entry.first;
      entry.second += i.nbytes();
      bytes += i.nbytes();
    }
    out << "\ncheckpoint: " << c.names().size() << " tensors, " << bytes << " bytes in "
        << c.files().size() << " file(s)\n";
    for (const auto& [dtype, entry] : by_dtype)
      out << "  " << dtype << ": " << entry.first << " tensors, " << entry.second << " bytes\n";
  }
  return out.str();
}

}  // namespace moe::checkpoint
