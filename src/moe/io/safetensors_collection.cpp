// A checkpoint as one collection of tensors: a single safetensors file, or the shards listed by
// a Hugging Face index JSON ({"metadata": {...}, "weight_map": {tensor: shard file}}).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>

#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/io/safetensors.h"

namespace moe::io {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Which file a folder stands for: the Hugging Face names first, else the only candidate.
std::string resolve_folder(const std::string& folder) {
  const fs::path dir(folder);
  if (fs::is_regular_file(dir / "model.safetensors.index.json"))
    return (dir / "model.safetensors.index.json").string();
  if (fs::is_regular_file(dir / "model.safetensors")) return (dir / "model.safetensors").string();
  std::vector<std::string> indexes, files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.' || !entry.is_regular_file()) continue;  // temporaries
    if (ends_with(name, ".safetensors.index.json")) indexes.push_back(entry.path().string());
    if (ends_with(name, ".safetensors")) files.push_back(entry.path().string());
  }
  if (indexes.size() == 1) return indexes[0];
  if (indexes.empty() && files.size() == 1) return files[0];
  std::ostringstream found;
  for (const auto& f : indexes) found << " " << fs::path(f).filename().string();
  for (const auto& f : files) found << " " << fs::path(f).filename().string();
  MOE_FAIL(folder,
           ": no model.safetensors.index.json or model.safetensors, and not exactly one "
           "other index or file to choose (found:",
           found.str().empty() ? " nothing" : found.str(), ")");
}

// Parses the index, reporting a weight_map name given twice (nlohmann would keep one).
json parse_index(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), path, ": cannot open the index");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t depth = json_nesting_depth(text);
  MOE_CHECK(depth <= kMaxJsonDepth, path, ": the index nests arrays and objects ", depth,
            " levels deep (an index has 2)");
  std::string top_key, duplicate;
  std::set<std::string> seen;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event != json::parse_event_t::key) return true;
    const std::string& key = parsed.get_ref<const std::string&>();
    if (depth == 1) top_key = key;
    if (depth == 2 && top_key == "weight_map" && !seen.insert(key).second && duplicate.empty())
      duplicate = key;
    return true;
  };
  json index;
  try {
    index = json::parse(text, on_event);
  } catch (const json::exception& e) {
    MOE_FAIL(path, ": the index is not valid JSON: ", e.what());
  }
  MOE_CHECK(index.is_object(), path, ": the index must be a JSON object");
  MOE_CHECK(duplicate.empty(), path, ": weight_map names tensor '", duplicate, "' twice");
  auto weight_map = index.find("weight_map");
  MOE_CHECK(weight_map != index.end() && weight_map->is_object(), path,
            ": the index has no \"weight_map\" object");
  for (const auto& [name, shard] : weight_map->items())
    MOE_CHECK(shard.is_string(), path, ": weight_map entry for '", name,
              "' must be a shard file name, got ", json_excerpt(shard));
  return index;
}

// A shard name for a message: names past 200 bytes are cut (a corrupt index may hold anything).
std::string brief(const std::string& name) {
  return name.size() <= 200 ? name : name.substr(0, 200) + "...";
}

// A shard is a file next to the index: an absolute path or a way out of the folder is refused,
// and so is a name no file system holds (a part longer than 255 bytes, a NUL byte).
void check_shard_name(const std::string& index_path, const std::string& shard) {
  const fs::path p(shard);
  bool escapes = p.is_absolute() || shard.empty();
  for (const auto& part : p) escapes = escapes || part == "..";
  MOE_CHECK(!escapes, index_path, ": shard name '", brief(shard),
            "' must be a file name relative to the index's folder");
  bool possible = shard.find('\0') == std::string::npos;
  for (const auto& part : p) possible = possible && part.native().size() <= 255;
  MOE_CHECK(possible, index_path, ": shard name '", brief(shard), "' is not a possible file name");
}

}  // namespace

struct SafetensorsCollection::State {
  std::vector<SafetensorsFile> files;
  std::unordered_map<std::string, size_t> file_of;  // tensor name -> index into files
  std::vector<std::string> names;
  SafetensorsMetadata metadata;
  std::string index_path;
};

SafetensorsCollection SafetensorsCollection::open(const std::string& path_in) {
  std::string path = path_in;
  if (fs::is_directory(path)) path = resolve_folder(path);

  auto state = std::make_shared<State>();
  if (!ends_with(path, ".json")) {
    state->files.push_back(SafetensorsFile::open(path));
    const SafetensorsFile& file = state->files.back();
    state->names = file.names();
    for (const auto& name : state->names) state->file_of[name] = 0;
    state->metadata = file.metadata();
  } else {
    state->index_path = path;
    const json index = parse_index(path);
    if (auto meta = index.find("metadata"); meta != index.end() && meta->is_object()) {
      for (const auto& [key, value] : meta->items())
        state->metadata[key] = value.is_string() ? value.get<std::string>() : value.dump();
    }
    const fs::path folder = fs::path(path).parent_path();
    const json& weight_map = index.at("weight_map");
    // Open every shard once, in file-name order, before looking up names.
    std::map<std::string, size_t> shard_slot;
    std::map<std::string, std::string> first_tensor_of;
    for (const auto& [name, shard] : weight_map.items()) {
      const std::string& file = shard.get_ref<const std::string&>();
      check_shard_name(path, file);
      shard_slot.emplace(file, 0);
      first_tensor_of.emplace(file, name);
    }
    for (auto& [file, slot] : shard_slot) {
      const fs::path shard_path = folder / file;
      std::error_code error;
      MOE_CHECK(fs::is_regular_file(shard_path, error), path, ": shard '", file,
                "' (listed for tensor '", brief(first_tensor_of[file]),
                "' and maybe others) is missing: no file ", shard_path.string(),
                error ? " (" + error.message() + ")" : std::string());
      slot = state->files.size();
      state->files.push_back(SafetensorsFile::open(shard_path.string()));
    }
    for (const auto& [name, shard] : weight_map.items()) {
      const size_t slot = shard_slot.at(shard.get<std::string>());
      const SafetensorsFile& file = state->files[slot];
      MOE_CHECK(file.contains(name), path, ": weight_map maps tensor '", name, "' to shard '",
                shard.get<std::string>(), "', which has no tensor of that name (", file.path(),
                ")");
      state->file_of[name] = slot;
      state->names.push_back(name);
    }
    std::sort(state->names.begin(), state->names.end());
  }
  SafetensorsCollection result;
  result.state_ = std::move(state);
  return result;
}

const std::vector<std::string>& SafetensorsCollection::names() const {
  return state_->names;
}
bool SafetensorsCollection::contains(const std::string& name) const {
  return state_->file_of.count(name) != 0;
}
const SafetensorsMetadata& SafetensorsCollection::metadata() const {
  return state_->metadata;
}
const std::vector<SafetensorsFile>& SafetensorsCollection::files() const {
  return state_->files;
}
const std::string& SafetensorsCollection::index_path() const {
  return state_->index_path;
}

const SafetensorsFile& SafetensorsCollection::file_of(const std::string& name) const {
  auto it = state_->file_of.find(name);
  if (it == state_->file_of.end()) {
    const std::string& where =
        state_->index_path.empty() ? state_->files.front().path() : state_->index_path;
    MOE_FAIL(where, ": no tensor named '", name, "'");
  }
  return state_->files[it->second];
}

const SafetensorsTensorInfo& SafetensorsCollection::info(const std::string& name) const {
  return file_of(name).info(name);
}

Tensor SafetensorsCollection::load(const std::string& name, Device device,
                                   std::optional<DType> dtype) const {
  return file_of(name).load(name, device, dtype);
}

SafetensorsView SafetensorsCollection::view(const std::string& name) const {
  return file_of(name).view(name);
}

}  // namespace moe::io
