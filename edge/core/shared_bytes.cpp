#include "edge/core/shared_bytes.hpp"

namespace edge {

SharedBytes SharedBytes::of(std::vector<std::uint8_t> bytes) {
  auto v = std::make_shared<const std::vector<std::uint8_t>>(std::move(bytes));
  const std::uint8_t* data = v->data();
  const std::size_t size = v->size();
  return {std::move(v), data, size};
}

SharedBytes SharedBytes::uninitialized(std::size_t n, std::uint8_t*& writable) {
  // new[] of a trivial type default-initializes: no memset of bytes about to be received.
  std::shared_ptr<std::uint8_t[]> block(new std::uint8_t[n == 0 ? 1 : n]);
  writable = block.get();
  return {std::shared_ptr<const void>(block, block.get()), block.get(), n};
}

}  // namespace edge
