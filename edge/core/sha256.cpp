#include "edge/core/sha256.hpp"

#include <cstdlib>
#include <cstring>

#include <xxhash.h>

#include <openssl/evp.h>

namespace edge {
namespace {

EVP_MD_CTX* as_ctx(void* p) noexcept {
  return static_cast<EVP_MD_CTX*>(p);
}

// Fetched once: with OpenSSL 3, EVP_sha256() makes every init look the implementation up
// again under a lock (a tenth of an /updates answer with a rollout, which hashes per
// device). The fetched method lives for the process.
const EVP_MD* sha256_md() noexcept {
  static EVP_MD* md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (m == nullptr)
      std::abort();  // no SHA-256 provider: nothing here can work
    return m;
  }();
  return md;
}

}  // namespace

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

std::uint64_t Sha256::leading_u64() const noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = v << 8 | bytes[i];
  return v;
}

Result<Sha256> Sha256::parse(std::string_view hex) noexcept {
  if (hex.size() != kSize * 2)
    return Errc::kInvalidArgument;
  Sha256 out;
  for (std::size_t i = 0; i < kSize; ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return Errc::kInvalidArgument;
    out.bytes[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

Result<Sha256> Sha256::from_bytes(std::span<const std::uint8_t> raw) noexcept {
  if (raw.size() != kSize)
    return Errc::kInvalidArgument;
  Sha256 out;
  std::memcpy(out.bytes.data(), raw.data(), kSize);
  return out;
}

std::string Sha256::hex() const {
  return to_hex(bytes);
}

std::string to_hex(std::span<const std::uint8_t> data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(data.size() * 2, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

std::size_t Sha256Hash::operator()(const Sha256& id) const noexcept {
  return static_cast<std::size_t>(XXH3_64bits(id.bytes.data(), id.bytes.size()));
}

Sha256Hasher::Sha256Hasher() : ctx_(EVP_MD_CTX_new()) {
  // Allocation failure of a 200-byte context is not a recoverable condition.
  if (ctx_ == nullptr || EVP_DigestInit_ex(as_ctx(ctx_), sha256_md(), nullptr) != 1)
    std::abort();
}

Sha256Hasher::~Sha256Hasher() {
  EVP_MD_CTX_free(as_ctx(ctx_));
}

Sha256Hasher::Sha256Hasher(Sha256Hasher&& other) noexcept : ctx_(other.ctx_) {
  other.ctx_ = nullptr;
}

Sha256Hasher& Sha256Hasher::operator=(Sha256Hasher&& other) noexcept {
  if (this != &other) {
    EVP_MD_CTX_free(as_ctx(ctx_));
    ctx_ = other.ctx_;
    other.ctx_ = nullptr;
  }
  return *this;
}

void Sha256Hasher::update(std::span<const std::uint8_t> data) noexcept {
  EVP_DigestUpdate(as_ctx(ctx_), data.data(), data.size());
}

void Sha256Hasher::update(std::string_view data) noexcept {
  EVP_DigestUpdate(as_ctx(ctx_), data.data(), data.size());
}

Sha256 Sha256Hasher::finish() noexcept {
  Sha256 out;
  unsigned int len = 0;
  EVP_DigestFinal_ex(as_ctx(ctx_), out.bytes.data(), &len);
  EVP_DigestInit_ex(as_ctx(ctx_), sha256_md(), nullptr);
  return out;
}

Sha256 sha256_of(std::span<const std::uint8_t> data) noexcept {
  Sha256 out;
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.bytes.data(), &len, sha256_md(), nullptr);
  return out;
}

Sha256 sha256_of(std::string_view data) noexcept {
  return sha256_of(std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
}

std::uint64_t xxh3_64(std::span<const std::uint8_t> data) noexcept {
  return XXH3_64bits(data.data(), data.size());
}

std::uint64_t xxh3_64(const void* data, std::size_t size) noexcept {
  return XXH3_64bits(data, size);
}

}  // namespace edge
