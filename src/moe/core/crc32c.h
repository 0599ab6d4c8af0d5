// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of TensorBoard's record
// files (TFRecord) and of moecore's checkpoint manifests. Debian ships no library for it
// (zlib's crc32 is the other polynomial), so it is the classic table-driven loop here.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moe {

// CRC-32C of `size` bytes, continuing from `crc` (0 to start): crc32c("123456789") = 0xE3069283.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace moe
