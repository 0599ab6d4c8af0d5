// Training checkpoints: save, verify, load (train_checkpoint.h).
#include "moe/train/train_checkpoint.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "moe/checkpoint/atomic_folder.h"
#include "moe/checkpoint/hf_names.h"
#include "moe/checkpoint/model_io.h"
#include "moe/core/crc32c.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/io/atomic_file.h"
#include "moe/io/safetensors.h"
#include "moe/nn/model_config_json.h"
#include "moe/train/checkpoint_slices.h"
#include "moe/train/train_log.h"

namespace moe::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kManifest = "manifest.json";
constexpr const char* kTrainerState = "trainer_state.json";
constexpr const char* kOptimizer = "optimizer.safetensors";
constexpr const char* kModelConfig = "model_config.json";
constexpr const char* kManifestFormat = "moecore-training-checkpoint";
constexpr const char* kTrainerStateFormat = "moecore-trainer-state";
constexpr int kVersion = 1;
constexpr const char* kMasterSuffix = ".master";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct FileDigest {
  uint64_t size = 0;
  uint32_t crc = 0;
};

// Size and CRC-32C of a file, read back from the disk in 4 MiB pieces.
FileDigest digest_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "cannot open ", path.string(), " to checksum it");
  std::vector<char> buffer(size_t{4} << 20);
  FileDigest d;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize got = in.gcount();
    if (got <= 0) break;
    d.crc = crc32c(buffer.data(), static_cast<size_t>(got), d.crc);
    d.size += static_cast<uint64_t>(got);
  }
  MOE_CHECK(in.eof(), "reading ", path.string(), " failed after ", d.size, " bytes");
  return d;
}

std::string crc_hex(uint32_t crc) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", crc);
  return text;
}

// Every regular file under `folder` (relative, '/'-separated), the manifest left out.
std::vector<std::string> files_under(const fs::path& folder) {
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::recursive_directory_iterator(folder)) {
    if (!e.is_regular_file()) continue;
    const std::string name = fs::relative(e.path(), folder).generic_string();
    if (name != kManifest) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The routers' forward counts the trainer state records: this model's, one per router. Every
// forward passes every router once, so the counts are one value; under pipeline parallelism
// rank 0 may hold no router (a dense first stage), and the stages agree on that value first
// (a collective of the pipeline group), which is written as a list of one.
std::vector<uint64_t> router_counts_to_save(nn::GPTModel& model, const dist::ParallelState* state) {
  std::vector<uint64_t> counts = model.router_forward_counts();
  if (!state || state->pp_size() == 1) return counts;
  const double mine = counts.empty() ? 0.0 : static_cast<double>(counts.front());
  Tensor value = Tensor::full({1}, mine, DType::f64, model.device());
  state->pp()->all_reduce(value, dist::ReduceOp::max);
  return {static_cast<uint64_t>(value.item())};
}

json trainer_state_json(const Trainer& trainer, nn::GPTModel& model, const json& run_config,
                        const std::vector<uint64_t>& router_counts) {
  const DType model_dtype = model.dtype();
  const TrainerState s = trainer.state();
  const TrainConfig& c = trainer.config();
  return json{
      {"format", kTrainerStateFormat},
      {"version", kVersion},
      {"iteration", s.iteration},
      {"consumed_samples", s.consumed_samples},
      {"skipped_iterations", s.skipped_iterations},
      {"optimizer_steps", s.optimizer_steps},
      // Megatron's opt_param_scheduler num_steps: the samples of the updates taken.
      {"schedule_samples", s.schedule_samples},
      {"train_position", s.train_position},
      {"valid_position", s.valid_position},
      // The data order is a function of (seed, position).
      // The trainer draws nothing; the routers' input jitter draws Philox(seed, forward count).
      {"rng",
       {{"seed", c.seed},
        {"generator", "philox4x32-10"},
        {"router_forward_counts", router_counts}}},
      {"model_dtype", dtype_name(model_dtype)},
      {"train_config",
       {{"micro_batch_size", c.micro_batch_size},
        {"global_batch_size", c.global_batch_size},
        {"seq_length", c.seq_length},
        {"train_iters", c.train_iters},
        {"train_samples", c.train_samples},
        {"lr", c.schedule.lr},
        {"min_lr", c.schedule.min_lr},
        {"lr_decay_style", c.schedule.decay_style},
        {"clip_grad", c.optimizer.clip_grad},
        {"exp_avg_dtype", dtype_name(c.optimizer.exp_avg_dtype)},
        {"exp_avg_sq_dtype", dtype_name(c.optimizer.exp_avg_sq_dtype)}}},
      {"run_config", run_config},
  };
}

// The model config without its parallel mapping: a checkpoint holds global tensors, whatever
// mapping wrote it.
nn::ModelConfig without_mapping(nn::ModelConfig c) {
  c.moe.expert_model_parallel_size = 1;
  c.moe.expert_tensor_parallel_size = 1;
  return c;
}

// Writes the manifest of every file in `temp` (sizes and CRC-32C from the bytes on the disk).
void write_manifest(const fs::path& temp, int64_t iteration, const char* layout);

// A field of a checkpoint JSON file, with an error naming the file and the key.
template <class T>
T field(const json& object, const std::string& key, const fs::path& file) {
  const auto it = object.find(key);
  MOE_CHECK(it != object.end(), file.string(), " has no \"", key, "\"");
  try {
    return it->get<T>();
  } catch (const json::exception& e) {
    MOE_FAIL(file.string(), ": \"", key, "\" is ", json_excerpt(*it),
             ", not of the expected type (", e.what(), ")");
  }
}

// The largest counter a checkpoint may hold: far beyond any run, and far enough below 2^63 that
// the trainer's sums (samples + batch, ...) cannot overflow.
constexpr int64_t kMaxCounter = int64_t{1} << 62;

// A counter of the trainer state: an integer in [0, kMaxCounter], with an error naming the file
// and the key (a float or a negative value is a damaged or edited file).
int64_t counter_field(const json& object, const std::string& key, const fs::path& file) {
  const auto it = object.find(key);
  MOE_CHECK(it != object.end(), file.string(), " has no \"", key, "\"");
  MOE_CHECK(it->is_number_integer() && (it->is_number_unsigned() || it->get<int64_t>() >= 0) &&
                it->get<uint64_t>() <= static_cast<uint64_t>(kMaxCounter),
            file.string(), ": \"", key, "\" is ", json_excerpt(*it),
            ", not an integer in [0, 2^62]");
  return it->get<int64_t>();
}

// The model config as "path: value" leaves ("moe.num_experts": 4), for naming differences.
void flatten(const json& j, const std::string& prefix, std::map<std::string, json>& out) {
  if (j.is_object()) {
    for (const auto& [key, value] : j.items())
      flatten(value, prefix.empty() ? key : prefix + "." + key, out);
  } else {
    out[prefix] = j;
  }
}

std::vector<std::string> config_differences(const nn::ModelConfig& saved,
                                            const nn::ModelConfig& current) {
  std::map<std::string, json> a, b;
  flatten(nn::model_config_to_json(saved), "", a);
  flatten(nn::model_config_to_json(current), "", b);
  std::vector<std::string> out;
  for (const auto& [key, value] : a) {
    const auto it = b.find(key);
    const std::string other = it == b.end() ? "(absent)" : it->second.dump();
    if (it == b.end() || it->second != value)
      out.push_back(key + ": checkpoint " + value.dump() + ", model " + other);
  }
  for (const auto& [key, value] : b)
    if (!a.count(key)) out.push_back(key + ": checkpoint (absent), model " + value.dump());
  return out;
}

// Name -> shape of every tensor a config's model has (the moecore layout).
std::map<std::string, Shape> tensor_layout(const nn::ModelConfig& config) {
  std::map<std::string, Shape> layout;
  for (const checkpoint::UnitMapping& unit : checkpoint::hf_model_mapping(config))
    for (const checkpoint::TensorMapping& m : unit.tensors) layout[m.name] = m.shape;
  return layout;
}

std::string join(const std::vector<std::string>& parts, const std::string& separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? separator : "") + parts[i];
  return out;
}

// Whether `dir` is a training checkpoint's iteration folder (see the header), whatever its
// state: then it is read only through verify_training_checkpoint.
bool looks_like_iteration_folder(const fs::path& dir) {
  // "ckpt/iter_0000010/" is named by its last non-empty component.
  const fs::path name = dir.filename().empty() ? dir.parent_path().filename() : dir.filename();
  return fs::exists(dir / kManifest) || fs::exists(dir / kTrainerState) ||
         fs::exists(dir / kOptimizer) || checkpoint_folder_iteration(name.string()).has_value();
}

// MOE_TEST_SAVE_DELAY_MS, read once (train_checkpoint.h).
int64_t test_save_delay_ms() {
  static const int64_t delay = [] {
    const char* text = std::getenv(kTestSaveDelayVariable);
    if (text == nullptr || *text == '\0') return int64_t{0};
    char* end = nullptr;
    const long long ms = std::strtoll(text, &end, 10);
    MOE_CHECK(end != text && *end == '\0' && ms >= 0, kTestSaveDelayVariable, "=", text,
              " is not a number of milliseconds");
    return static_cast<int64_t>(ms);
  }();
  return delay;
}

void check_shape_of(const io::SafetensorsFile& file, const std::string& name,
                    const Tensor& target) {
  const io::SafetensorsTensorInfo& info = file.info(name);
  MOE_CHECK(info.shape == target.shape(), "tensor ", name, " of ", file.path(), " has shape ",
            shape_str(info.shape), ", the run's is ", shape_str(target.shape()));
}

// The file's tensor into `target`, cast to its dtype (round to nearest even) on its device.
void load_into(Tensor& target, const io::SafetensorsFile& file, const std::string& name) {
  target.copy_(file.load(name, target.device(), target.dtype()));
}

void write_manifest(const fs::path& temp, int64_t iteration, const char* layout) {
  // The manifest from the bytes on the disk, so that it vouches for what was written.
  json files = json::object();
  for (const std::string& name : files_under(temp)) {
    const FileDigest d = digest_file(temp / name);
    files[name] = {{"size", d.size}, {"crc32c", crc_hex(d.crc)}};
  }
  const json manifest{{"format", kManifestFormat}, {"version", kVersion},  {"iteration", iteration},
                      {"layout", layout},          {"checksum", "crc32c"}, {"files", files}};
  io::write_file_atomically((temp / kManifest).string(), json_line(manifest, 2) + "\n");
}

// A save of a run of several ranks (checkpoint_slices.h): every rank writes its slices into
// rank 0's temporary folder, rank 0 adds the index, the config, the trainer state and the
// manifest and commits; the iteration appears complete or not at all.
SaveResult save_sharded_checkpoint(const std::string& save_dir, nn::GPTModel& model,
                                   Trainer& trainer, const json& run_config,
                                   const dist::ParallelState& state) {
  dist::ProcessGroup& world = *state.world();
  const bool lead = world.rank() == 0;
  const int64_t iteration = trainer.iteration();
  const fs::path target = fs::path(save_dir) / checkpoint_folder_name(iteration);
  SaveResult result;
  result.folder = target.string();
  std::optional<checkpoint::AtomicFolder> folder;
  std::string temp;
  if (lead) {
    std::error_code ec;
    fs::create_directories(save_dir, ec);
    MOE_CHECK(!ec && fs::is_directory(save_dir), "--save ", save_dir,
              ": cannot create the folder: ", ec.message());
    result.cleaned = checkpoint::remove_stale_temporaries(save_dir, "iter_[0-9]{7}");
    folder.emplace(target.string(), /*overwrite=*/true);
    temp = folder->path();
  }
  temp = broadcast_string(world, temp, 0, model.device());
  const std::vector<uint64_t> router_counts = router_counts_to_save(model, &state);
  trainer.synchronize_parameters();
  checkpoint::write_shards(temp, world.rank(), world.size(),
                           owned_checkpoint_pieces(model, trainer.optimizer(), state));
  world.barrier();
  if (lead) {
    checkpoint::write_index(temp, world.size());
    io::write_file_atomically(
        (fs::path(temp) / kModelConfig).string(),
        nn::model_config_to_json(without_mapping(model.config())).dump(2) + "\n");
    if (const int64_t delay = test_save_delay_ms(); delay > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    io::write_file_atomically(
        (fs::path(temp) / kTrainerState).string(),
        json_line(trainer_state_json(trainer, model, run_config, router_counts), 2) + "\n");
    write_manifest(temp, iteration, "sharded");
    folder->commit();
    io::write_file_atomically((fs::path(save_dir) / kTrackerFileName).string(),
                              std::to_string(iteration));
  }
  world.barrier();  // every rank returns with the checkpoint in place
  return result;
}

// Whether loading into this model needs slices: a model or optimizer holding parts of tensors.
bool needs_slices(nn::GPTModel& model, Trainer* trainer) {
  if (trainer && trainer->parallel_state() && trainer->parallel_state()->world()->size() > 1)
    return true;
  for (nn::Parameter* p : model.parameters())
    if (p->layout.is_sharded() && nn::box_shape_of(*p) != nn::view_shape_of(*p)) return true;
  return false;
}

// The weights, buffers and optimizer state of a checkpoint (sharded, or a one-rank one) read as
// this rank's slices. Everything is checked before anything is changed.
void load_slices(const fs::path& folder, nn::GPTModel& model, Trainer* trainer, bool load_optim) {
  const CheckpointSliceReader reader(folder.string());
  const auto need = [&](const std::string& name, const char* what) {
    MOE_CHECK(reader.has(name), "training checkpoint ", folder.string(), " has no ", what, " ",
              name);
  };
  for (nn::Parameter* p : model.parameters()) need(p->name, "tensor");
  for (const nn::NamedBuffer& b : model.buffers()) need(b.name, "tensor");
  std::vector<NamedTensor> optimizer_state;
  if (trainer) {
    trainer->synchronize_parameters();
    optimizer_state = trainer->optimizer().state();
  }
  if (load_optim)
    for (const NamedTensor& s : optimizer_state)
      if (!ends_with(s.name, kMasterSuffix)) need(s.name, "optimizer tensor");

  // Weights: the fp32 master where saved (the 16-bit weights are its rounding).
  for (nn::Parameter* p : model.parameters()) {
    const std::string master = p->name + kMasterSuffix;
    Tensor flat = p->value.reshape({p->value.numel()});
    reader.read(reader.has(master) ? master : p->name, slice_of(*p), flat);
  }
  for (const nn::NamedBuffer& b : model.buffers())
    reader.read(b.name, checkpoint::TensorSlice{b.value->shape()}, *b.value);
  for (const NamedTensor& s : optimizer_state) {
    Tensor flat = s.value->reshape({s.value->numel()});
    const checkpoint::TensorSlice slice = slice_of(*s.param, s.begin, s.end);
    if (ends_with(s.name, kMasterSuffix))
      reader.read(reader.has(s.name) ? s.name : s.param->name, slice, flat);
    else if (load_optim)
      reader.read(s.name, slice, flat);
    else
      s.value->zero_();
  }
}

// The weights, buffers and optimizer state of a one-rank checkpoint into a whole model (every
// tensor read as it is). Everything is checked before anything is changed.
void load_whole(const fs::path& folder, nn::GPTModel& model, Trainer* trainer, bool load_optim,
                const nn::ModelConfig& file_config) {
  // Every check of optimizer.safetensors before anything is changed: a refused checkpoint
  // leaves the model and the trainer as they were.
  const io::SafetensorsFile optimizer_file =
      io::SafetensorsFile::open((folder / kOptimizer).string());
  std::map<std::string, nn::Parameter*> params;
  for (nn::Parameter* p : model.parameters()) params[p->name] = p;
  const auto master_of = [&](const std::string& name) -> nn::Parameter* {
    if (!ends_with(name, kMasterSuffix)) return nullptr;
    const auto it = params.find(name.substr(0, name.size() - std::string(kMasterSuffix).size()));
    return it == params.end() ? nullptr : it->second;
  };
  for (const std::string& name : optimizer_file.names())
    if (nn::Parameter* p = master_of(name)) check_shape_of(optimizer_file, name, p->value);
  std::vector<NamedTensor> optimizer_state;
  if (trainer) optimizer_state = trainer->optimizer().state();
  if (load_optim) {
    std::set<std::string> expected;
    for (const NamedTensor& s : optimizer_state) {
      expected.insert(s.name);
      if (master_of(s.name)) continue;  // masters may be absent (an f32 checkpoint)
      MOE_CHECK(optimizer_file.contains(s.name), "training checkpoint file ", optimizer_file.path(),
                " has no optimizer tensor ", s.name);
      check_shape_of(optimizer_file, s.name, *s.value);
    }
    for (const std::string& name : optimizer_file.names())
      MOE_CHECK(expected.count(name) || master_of(name), "training checkpoint file ",
                optimizer_file.path(), " holds optimizer tensor ", name,
                ", which this run's optimizer does not have");
  }

  checkpoint::load_weights(model, folder.string(), checkpoint::CheckpointFormat::moecore,
                           file_config);
  // fp32 masters, when saved, are the weights (the 16-bit weights are their rounding).
  for (const std::string& name : optimizer_file.names())
    if (nn::Parameter* p = master_of(name)) load_into(p->value, optimizer_file, name);

  if (!trainer) return;

  // The optimizer: loaded, or fresh (zero moments); masters are the loaded weights either way.
  const io::SafetensorsCollection weights = io::SafetensorsCollection::open(folder.string());
  for (const NamedTensor& s : optimizer_state) {
    if (nn::Parameter* p = master_of(s.name)) {
      if (optimizer_file.contains(s.name))
        load_into(*s.value, optimizer_file, s.name);
      else  // a checkpoint without masters (an f32 run): its weights, read again in f32
        s.value->copy_(weights.load(p->name, s.value->device(), s.value->dtype()));
    } else if (load_optim) {
      load_into(*s.value, optimizer_file, s.name);
    } else {
      s.value->zero_();
    }
  }
}

}  // namespace

std::string checkpoint_folder_name(int64_t iteration) {
  MOE_CHECK(iteration >= 0 && iteration <= 9'999'999,
            "checkpoint iteration must be in [0, 9999999], got ", iteration);
  char name[16];
  std::snprintf(name, sizeof name, "iter_%07lld", static_cast<long long>(iteration));
  return name;
}

std::optional<int64_t> checkpoint_folder_iteration(const std::string& name) {
  if (name.size() != 12 || name.compare(0, 5, "iter_") != 0) return std::nullopt;
  for (size_t i = 5; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return std::nullopt;
  return std::stoll(name.substr(5));
}

std::optional<int64_t> latest_checkpoint_iteration(const std::string& save_dir) {
  const fs::path tracker = fs::path(save_dir) / kTrackerFileName;
  if (!fs::exists(tracker)) return std::nullopt;
  std::ifstream in(tracker);
  MOE_CHECK(in.good(), "cannot open the checkpoint tracker ", tracker.string());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  bool digits = !text.empty() && text.size() <= 18;
  for (char c : text) digits = digits && std::isdigit(static_cast<unsigned char>(c));
  MOE_CHECK(digits, "the checkpoint tracker ", tracker.string(), " holds \"", text,
            "\", not an iteration number");
  const int64_t iteration = std::stoll(text);
  MOE_CHECK(iteration <= 9'999'999, "the checkpoint tracker ", tracker.string(), " holds ",
            iteration, ", beyond the 7 digits of a checkpoint folder (iter_NNNNNNN)");
  return iteration;
}

std::vector<int64_t> iteration_folders(const std::string& dir) {
  std::vector<int64_t> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::optional<int64_t> n = checkpoint_folder_iteration(it->path().filename().string());
    if (n && it->is_directory(ec)) out.push_back(*n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

LoadFolderKind classify_load_folder(const std::string& load_dir) {
  const fs::path dir(load_dir);
  if (!fs::is_directory(dir)) return LoadFolderKind::none;
  if (fs::exists(dir / kManifest)) return LoadFolderKind::iteration_folder;
  if (fs::exists(dir / kTrackerFileName)) return LoadFolderKind::save_folder;
  if (looks_like_iteration_folder(dir)) return LoadFolderKind::iteration_folder;
  if (fs::is_regular_file(dir / kModelConfig) || fs::is_regular_file(dir / "config.json"))
    return LoadFolderKind::model_folder;
  const std::vector<int64_t> iterations = iteration_folders(load_dir);
  if (!iterations.empty()) {
    // The tracker is gone (deleted, or not copied with the folders): starting from scratch
    // here would write new iterations over these. Say what is there and how to resume.
    std::vector<std::string> names;
    for (int64_t n : iterations) {
      const std::string name = checkpoint_folder_name(n);
      names.push_back(fs::exists(dir / name / kManifest) ? name : name + " (no manifest.json)");
    }
    const std::string newest = checkpoint_folder_name(iterations.back());
    MOE_FAIL("--load ", load_dir, " holds iteration folders (", join(names, ", "), ") but no ",
             kTrackerFileName,
             ", which names the one to resume from. Refusing to start from "
             "scratch over them. To resume from the newest, recreate the tracker (echo ",
             iterations.back(), " > ", (dir / kTrackerFileName).string(),
             ") or give that iteration folder itself (--load ", (dir / newest).string(),
             "); to start a new run, give --load and --save another folder");
  }
  return LoadFolderKind::none;
}

std::string training_checkpoint_folder(const std::string& load_dir,
                                       std::optional<int64_t> iteration) {
  const fs::path dir(load_dir);
  MOE_CHECK(fs::is_directory(dir), "--load ", load_dir, " is not a folder");
  fs::path folder;
  if (iteration) {  // asked for: <load_dir>/iter_<iteration>, whatever the tracker says
    MOE_CHECK(*iteration >= 0, "the checkpoint iteration must be >= 0, got ", *iteration);
    folder = dir / checkpoint_folder_name(*iteration);
    MOE_CHECK(fs::is_directory(folder), "training checkpoint ", folder.string(),
              " does not exist (iteration ", *iteration, " was asked for)");
  } else {
    const LoadFolderKind kind = classify_load_folder(load_dir);
    if (kind == LoadFolderKind::iteration_folder) {
      folder = dir;
    } else {
      MOE_CHECK(kind == LoadFolderKind::save_folder, "--load ", load_dir,
                kind == LoadFolderKind::model_folder
                    ? " is a model folder, not a training checkpoint"
                    : " holds no training checkpoint",
                " (no ", kTrackerFileName, ", no ", kManifest, ")");
      const int64_t latest = latest_checkpoint_iteration(load_dir).value();
      folder = dir / checkpoint_folder_name(latest);
      MOE_CHECK(fs::is_directory(folder), "training checkpoint ", folder.string(),
                " does not exist (named by ", (dir / kTrackerFileName).string(), ")");
    }
  }
  verify_training_checkpoint(folder.string());
  return folder.string();
}

SaveResult save_training_checkpoint(const std::string& save_dir, nn::GPTModel& model,
                                    Trainer& trainer, const nlohmann::json& run_config) {
  if (const dist::ParallelState* state = trainer.parallel_state();
      state && state->world()->size() > 1)
    return save_sharded_checkpoint(save_dir, model, trainer, run_config, *state);
  std::error_code ec;
  fs::create_directories(save_dir, ec);
  MOE_CHECK(!ec && fs::is_directory(save_dir), "--save ", save_dir,
            ": cannot create the folder: ", ec.message());
  const int64_t iteration = trainer.iteration();
  const fs::path target = fs::path(save_dir) / checkpoint_folder_name(iteration);
  SaveResult result;
  result.folder = target.string();
  // Hidden folders of earlier saves that were killed before their commit.
  result.cleaned = checkpoint::remove_stale_temporaries(save_dir, "iter_[0-9]{7}");

  // Everything goes into a hidden sibling folder first; commit() swaps it into place.
  checkpoint::AtomicFolder folder(target.string(), /*overwrite=*/true);
  const fs::path temp(folder.path());
  checkpoint::save_model(temp.string(), model);

  io::NamedTensors optimizer_tensors;
  for (const NamedTensor& s : trainer.optimizer().state())
    optimizer_tensors.emplace_back(s.name, *s.value);
  io::write_safetensors((temp / kOptimizer).string(), optimizer_tensors, {{"format", "pt"}});
  if (const int64_t delay = test_save_delay_ms(); delay > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));

  // json_line: the flags may hold bytes that are not UTF-8 (paths).
  io::write_file_atomically(
      (temp / kTrainerState).string(),
      json_line(trainer_state_json(trainer, model, run_config, model.router_forward_counts()), 2) +
          "\n");

  write_manifest(temp, iteration, "whole");
  folder.commit();

  // Megatron's tracker: the iteration number alone.
  io::write_file_atomically((fs::path(save_dir) / kTrackerFileName).string(),
                            std::to_string(iteration));
  return result;
}

void verify_training_checkpoint(const std::string& folder_name) {
  const fs::path folder(folder_name);
  const fs::path manifest_path = folder / kManifest;
  MOE_CHECK(fs::exists(manifest_path), "training checkpoint ", folder.string(), " has no ",
            kManifest, " (an interrupted save, or not a moecore training checkpoint)");
  const json manifest = read_json_file(manifest_path.string(), "checkpoint manifest");
  MOE_CHECK(manifest.is_object(), manifest_path.string(), " is not a JSON object");
  const std::string format = field<std::string>(manifest, "format", manifest_path);
  MOE_CHECK(format == kManifestFormat, manifest_path.string(), ": format \"", format,
            "\" is not \"", kManifestFormat, "\"");
  const int64_t version = field<int64_t>(manifest, "version", manifest_path);
  MOE_CHECK(version == kVersion, manifest_path.string(), ": version ", version,
            " is not supported (this build reads version ", kVersion, ")");
  const json files = field<json>(manifest, "files", manifest_path);
  MOE_CHECK(files.is_object(), manifest_path.string(), ": \"files\" is not an object");

  // A sharded checkpoint (several ranks wrote it) holds every tensor in its shards.
  const bool sharded = files.contains(checkpoint::kShardedIndexFile);
  bool has_weights = sharded;
  for (const char* required :
       {kModelConfig, sharded ? checkpoint::kShardedIndexFile : kOptimizer, kTrainerState})
    MOE_CHECK(files.contains(required), manifest_path.string(), " does not list ", required,
              ", which a training checkpoint needs");
  for (const auto& [name, entry] : files.items()) {
    const fs::path path = folder / name;
    MOE_CHECK(entry.is_object(), manifest_path.string(), ": the entry of ", name,
              " is not an object");
    const uint64_t size = field<uint64_t>(entry, "size", manifest_path);
    const std::string crc = field<std::string>(entry, "crc32c", manifest_path);
    MOE_CHECK(name.find("..") == std::string::npos && !fs::path(name).is_absolute(),
              manifest_path.string(), " lists ", name, ", a path outside the checkpoint");
    MOE_CHECK(fs::is_regular_file(path), "training checkpoint file ", path.string(),
              " is missing (listed in ", kManifest, ")");
    const FileDigest d = digest_file(path);
    MOE_CHECK(d.size == size, "training checkpoint file ", path.string(), " is ", d.size,
              " bytes, the manifest says ", size, d.size < size ? " (truncated)" : " (replaced?)");
    MOE_CHECK(crc_hex(d.crc) == crc, "training checkpoint file ", path.string(),
              " is corrupt: CRC-32C ", crc_hex(d.crc), ", the manifest says ", crc);
    if (name != kOptimizer && ends_with(name, ".safetensors")) has_weights = true;
  }
  MOE_CHECK(has_weights, manifest_path.string(), " lists no model safetensors file");
}

LoadResult load_training_checkpoint(const std::string& load_dir, nn::GPTModel& model,
                                    Trainer* trainer, const LoadOptions& options) {
  const fs::path folder = training_checkpoint_folder(load_dir, options.iteration);

  LoadResult result;
  result.folder = folder.string();

  // trainer_state.json: checked before anything is changed.
  const fs::path state_path = folder / kTrainerState;
  const json state = read_json_file(state_path.string(), "trainer state");
  MOE_CHECK(state.is_object(), state_path.string(), " is not a JSON object");
  const std::string format = field<std::string>(state, "format", state_path);
  MOE_CHECK(format == kTrainerStateFormat, state_path.string(), ": format \"", format,
            "\" is not \"", kTrainerStateFormat, "\"");
  TrainerState& saved = result.saved;
  saved.iteration = counter_field(state, "iteration", state_path);
  saved.consumed_samples = counter_field(state, "consumed_samples", state_path);
  saved.skipped_iterations = counter_field(state, "skipped_iterations", state_path);
  saved.optimizer_steps = counter_field(state, "optimizer_steps", state_path);
  // The schedules' position in samples. Checkpoints written before it was saved: the updates
  // taken x their global batch (their schedules counted updates of one global batch).
  if (state.contains("schedule_samples")) {
    saved.schedule_samples = counter_field(state, "schedule_samples", state_path);
  } else {
    const json train_config = field<json>(state, "train_config", state_path);
    const int64_t batch = counter_field(train_config, "global_batch_size", state_path);
    MOE_CHECK(batch == 0 || saved.optimizer_steps <= kMaxCounter / batch, state_path.string(),
              ": optimizer_steps ", saved.optimizer_steps, " x global_batch_size ", batch,
              " overflows");
    saved.schedule_samples = saved.optimizer_steps * batch;
  }
  saved.train_position = counter_field(state, "train_position", state_path);
  saved.valid_position = counter_field(state, "valid_position", state_path);
  result.iteration = saved.iteration;
  const json rng = field<json>(state, "rng", state_path);
  MOE_CHECK(rng.is_object(), state_path.string(), ": \"rng\" is ", json_excerpt(rng),
            ", not an object");
  result.seed = field<uint64_t>(rng, "seed", state_path);
  result.run_config = field<json>(state, "run_config", state_path);
  if (folder.filename().string().rfind("iter_", 0) == 0)
    MOE_CHECK(saved.iteration <= 9'999'999 &&
                  folder.filename().string() == checkpoint_folder_name(saved.iteration),
              state_path.string(), " says iteration ", saved.iteration, ", but its folder is ",
              folder.filename().string());
  // The routers' jitter draw counters (absent in checkpoints written before they were saved):
  // one per router of the model that wrote it (rank 0's routers under pipeline parallelism).
  // Every forward passes every router once, so the counts are one value; a list of another
  // length (another pipeline stage's routers) fits when it holds one value.
  std::optional<std::vector<uint64_t>> router_counts;
  if (rng.contains("router_forward_counts")) {
    const json& counts = rng["router_forward_counts"];
    const size_t routers = model.router_forward_counts().size();
    MOE_CHECK(counts.is_array(), state_path.string(), ": rng.router_forward_counts is ",
              json_excerpt(counts), ", not a list of counts");
    router_counts.emplace();
    for (const json& c : counts) {
      MOE_CHECK(c.is_number_unsigned(), state_path.string(), ": rng.router_forward_counts holds ",
                json_excerpt(c), ", not a count");
      router_counts->push_back(c.get<uint64_t>());
    }
    if (router_counts->size() != routers) {
      const bool one_value = !router_counts->empty() &&
                             std::all_of(router_counts->begin(), router_counts->end(),
                                         [&](uint64_t c) { return c == router_counts->front(); });
      MOE_CHECK(one_value || routers == 0, state_path.string(), ": rng.router_forward_counts is ",
                json_excerpt(counts), ", not a list of ", routers,
                " counts (one per router of the model) nor one count for every router");
      router_counts->assign(routers, one_value ? router_counts->front() : 0);
    }
  }

  // The model: the checkpoint's tensor layout must be this model's.
  const nn::ModelConfig file_config = nn::load_model_config((folder / kModelConfig).string());
  result.config_differences =
      config_differences(without_mapping(file_config), without_mapping(model.config()));
  // The layouts are compared name by name, but building the file's alone walks every layer and
  // every expert it claims (num_experts 2^31 - 1 validates). Other layer counts, or MoE layers
  // with another expert count, are another layout anyway: refused before it is built.
  const nn::ModelConfig& ours = model.config();
  const bool file_has_moe =
      std::any_of(file_config.moe_layer_pattern.begin(), file_config.moe_layer_pattern.end(),
                  [](int moe) { return moe != 0; });
  const bool same_counts = file_config.num_layers == ours.num_layers &&
                           file_config.mtp_num_layers == ours.mtp_num_layers &&
                           (!file_has_moe || file_config.moe.num_experts == ours.moe.num_experts);
  if (!same_counts ||
      tensor_layout(without_mapping(file_config)) != tensor_layout(without_mapping(ours)))
    MOE_FAIL("training checkpoint ", folder.string(), " holds a model of other tensor shapes ",
             "than this run's: ",
             result.config_differences.empty() ? std::string("(no config field differs)")
                                               : join(result.config_differences, "; "));

  // Only flags `moe train` has: --seed, or --finetune (weights only, the data from the start).
  if (trainer && !options.finetune && !options.no_load_rng)
    MOE_CHECK(trainer->config().seed == result.seed, "training checkpoint ", folder.string(),
              " was trained with --seed ", result.seed, ", this run has --seed ",
              trainer->config().seed, ": the data order would differ. Pass --seed ", result.seed,
              " to resume the run, or --finetune to start a new one from its weights");

  const bool load_optim = trainer && !options.finetune && !options.no_load_optim;
  const bool slices = is_sharded_checkpoint(folder.string()) || needs_slices(model, trainer);
  if (slices) load_slices(folder, model, trainer, load_optim);
  if (!slices) load_whole(folder, model, trainer, load_optim, file_config);
  if (!trainer) return result;

  // The routers' jitter draw counters (absent in checkpoints written before they were saved).
  if (!options.finetune && router_counts) {
    model.set_router_forward_counts(*router_counts);
  } else if (model.config().moe.moe_input_jitter_eps && !options.finetune) {
    result.warnings.push_back(
        "--moe-input-jitter-eps: this checkpoint has no router draw counters; the resumed run "
        "draws other jitter than the uninterrupted one would");
  }

  result.loaded_optimizer = load_optim;

  if (options.finetune) {
    trainer->restore(TrainerState{});  // iteration 0, data from the start, optimizer step 0
  } else {
    TrainerState s = saved;
    if (!load_optim) s.optimizer_steps = s.schedule_samples = 0;  // Megatron: no scheduler
    trainer->restore(s);
    result.loaded_trainer_state = true;
  }
  return result;
}

std::vector<std::string> load_model_folder_weights(const std::string& folder, nn::GPTModel& model,
                                                   Trainer* trainer) {
  const checkpoint::CheckpointFormat format = checkpoint::detect_format(folder);
  const nn::ModelConfig file_config = checkpoint::read_model_config(folder, format);
  // The folder holds global tensors; this run's model may hold boxes of them (its expert
  // parallel mapping), which load_weights reads alone: compared without the mapping.
  nn::ModelConfig file_global = without_mapping(file_config);
  const nn::ModelConfig model_global = without_mapping(model.config());
  // MTP layers the folder does not have (a Hugging Face DeepSeek-V3 saved without them, or a
  // run asking for --mtp-num-layers) start as a new model's: load_weights keeps them.
  std::string fresh_mtp;
  if (model_global.mtp_num_layers > file_global.mtp_num_layers) {
    fresh_mtp = moe::detail::concat(
        "MTP layers ", model_global.num_layers + file_global.mtp_num_layers, "..",
        model_global.num_layers + model_global.mtp_num_layers - 1, " (--mtp-num-layers ",
        model_global.mtp_num_layers, ") are not in the folder, which has ",
        file_global.mtp_num_layers, ": they start as a new model's");
    file_global.mtp_num_layers = model_global.mtp_num_layers;
  }
  std::vector<std::string> differences = config_differences(file_global, model_global);
  if (tensor_layout(file_global) != tensor_layout(model_global)) {
    const std::string hint =
        format == checkpoint::CheckpointFormat::moecore
            ? "--model " + (fs::path(folder) / kModelConfig).string() + " trains its model"
            : "`moe convert --from hf --to moecore` it, then --model <out>/model_config.json "
              "trains its model";
    MOE_FAIL(
        "model folder ", folder, " holds a model of other tensor shapes than this run's (", hint,
        "): ",
        differences.empty() ? std::string("(no config field differs)") : join(differences, "; "));
  }
  checkpoint::load_weights(model, folder, format, file_config);
  if (!fresh_mtp.empty()) differences.push_back(fresh_mtp);
  if (trainer) {
    // A fresh trainer: iteration 0, zero moments; the fp32 masters are the loaded weights.
    for (const NamedTensor& s : trainer->optimizer().state())
      if (!ends_with(s.name, kMasterSuffix)) s.value->zero_();
    trainer->optimizer().reload_masters_from_model();
    trainer->restore(TrainerState{});
  }
  return differences;
}

}  // namespace moe::train
