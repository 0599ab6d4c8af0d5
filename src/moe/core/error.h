// Errors that name their cause. MOE_CHECK(cond, parts...) throws moe::Error carrying
// file:line, the failed condition and a message assembled from `parts` (anything that
// streams into std::ostream), so a bad shape reports the shapes, not just "failed".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace moe {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

[[noreturn]] void throw_error(const char* file, int line, const char* condition,
                              const std::string& message);

}  // namespace detail
}  // namespace moe

#define MOE_CHECK(cond, ...)                                                            \
  do {                                                                                  \
    if (!(cond)) [[unlikely]]                                                           \
      ::moe::detail::throw_error(__FILE__, __LINE__, #cond,                             \
                                 ::moe::detail::concat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)

#define MOE_FAIL(...) \
  ::moe::detail::throw_error(__FILE__, __LINE__, nullptr, ::moe::detail::concat(__VA_ARGS__))
