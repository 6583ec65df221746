#pragma once

#include <cstddef>
#include <cstdint>

namespace edge {

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and
/// RocksDB. Protects segment record headers. `crc` continues a previous value (start at 0).
std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0) noexcept;

}  // namespace edge
