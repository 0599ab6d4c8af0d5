// The value parsers and entry makers of `moe train`'s flag table (train_flag_table.h).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "moe/core/error.h"
#include "moe/train/train_flag_table.h"

namespace moe::train::flags {

bool head_dim_is_derived(const nn::ModelConfig& m) {
  return m.attention_type == nn::AttentionType::gqa &&
         (m.kv_channels == 0 || m.kv_channels * m.num_attention_heads == m.hidden_size);
}

int64_t as_int(const std::string& flag, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  MOE_CHECK(!v.empty() && end && *end == '\0' && errno == 0, flag, ": expected an integer, got '",
            v, "'");
  return x;
}

int64_t as_count(const std::string& flag, const std::string& v, int64_t min) {
  const int64_t x = as_int(flag, v);
  MOE_CHECK(x >= min, flag, " must be >= ", min, ", got ", x);
  return x;
}

double as_double(const std::string& flag, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  MOE_CHECK(!v.empty() && end && *end == '\0', flag, ": expected a number, got '", v, "'");
  MOE_CHECK(errno == 0 && std::isfinite(x), flag, ": expected a finite number, got '", v, "'");
  return x;
}

bool as_bool(const std::string& flag, const std::string& v) {
  std::string t = v;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "true" || t == "yes" || t == "on" || t == "1") return true;
  if (t == "false" || t == "no" || t == "off" || t == "0") return false;
  MOE_FAIL(flag, ": expected true or false, got '", v, "'");
}

std::vector<std::string> split_values(const std::string& v) {
  std::string text = v;
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']')
    text = text.substr(1, text.size() - 2);
  std::replace(text.begin(), text.end(), ',', ' ');
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

std::string one_of(const std::string& flag, const std::string& v,
                   std::initializer_list<const char*> choices) {
  std::string list;
  for (const char* c : choices) {
    if (v == c) return v;
    list += (list.empty() ? "" : ", ") + std::string(c);
  }
  MOE_FAIL(flag, ": '", v, "' is not one of ", list);
}

Entry value(std::string name, std::string value_name, std::string help, Apply apply) {
  return Entry{TrainFlag{std::move(name), std::move(value_name), std::move(help), ""},
               std::move(apply)};
}
Entry toggle(std::string name, std::string help, Apply apply) {
  return Entry{TrainFlag{std::move(name), "", std::move(help), ""}, std::move(apply)};
}
Entry refused(std::string name, std::string value_name, std::string why) {
  return Entry{TrainFlag{std::move(name), std::move(value_name), "", std::move(why)}, {}};
}

}  // namespace moe::train::flags
