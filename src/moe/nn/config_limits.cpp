// Size-field bounds (config_limits.h).
#include "moe/nn/config_limits.h"

#include "moe/core/error.h"

namespace moe::nn {

void check_size(std::string_view field, int64_t value, int64_t min, const SizeLimit& limit) {
  if (value < min) {
    if (min == 1) MOE_FAIL(field, " must be positive, got ", value);
    if (min == 0) MOE_FAIL(field, " must not be negative, got ", value);
    MOE_FAIL(field, " must be at least ", min, ", got ", value);
  }
  MOE_CHECK(value <= limit.max, field, " ", value, " exceeds ", limit.max, " (", limit.reason, ")");
}

}  // namespace moe::nn
