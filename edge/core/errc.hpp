#pragma once

#include <string>
#include <system_error>
#include <utility>

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace edge {

/// Every error the data plane reports, in one category (like beast::http::error).
/// Values are stable: they appear in logs and metrics.
enum class Errc {
  kOk = 0,
  kInvalidArgument = 1,       ///< a caller-supplied value is malformed (bad hex, bad semver, ...)
  kNotFound = 2,              ///< the chunk, blob or key does not exist
  kChecksumMismatch = 3,      ///< bytes do not hash to the id they claim
  kCorrupt = 4,               ///< bytes at rest failed their checksum or structure check
  kBadMagic = 5,              ///< a file does not start with the magic it must have
  kUnsupportedVersion = 6,    ///< a schema or record version this build does not read
  kIo = 7,                    ///< the operating system failed a read, write or sync
  kTooLarge = 8,              ///< a value exceeds a configured or structural limit
  kShutdown = 9,              ///< the component is stopping and took no new work
  kDatabase = 10,             ///< RocksDB reported an error (see the log for its status)
  kRangeNotSatisfiable = 11,  ///< no requested byte range overlaps the entity
  kStorageFull = 12,          ///< the data directory is below store.min_free; writes are refused
  kUnavailable = 13,  ///< a backend (PostgreSQL, S3) is unreachable or read-only: retry later
  kConflict = 14      ///< the shared state moved under a write: catch up and retry
};

/// The category of Errc; name() is "edge".
const boost::system::error_category& edge_category() noexcept;

inline boost::system::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), edge_category()};
}

/// The result of a synchronous call that can fail. [[nodiscard]] because Boost 1.81's
/// result is not, and a dropped error is how data gets lost.
template <class T>
class [[nodiscard]] Result : public boost::system::result<T, boost::system::error_code> {
  using Base = boost::system::result<T, boost::system::error_code>;

 public:
  using Base::Base;
  Result(Errc e) : Base(boost::system::in_place_error, make_error_code(e)) {}  // NOLINT
  // Explicit in_place_error: Result<bool> would otherwise read an error_code as a bool.
  Result(const boost::system::error_code& ec)  // NOLINT(google-explicit-constructor)
      : Base(boost::system::in_place_error, ec) {}
};

template <>
class [[nodiscard]] Result<void> : public boost::system::result<void, boost::system::error_code> {
  using Base = boost::system::result<void, boost::system::error_code>;

 public:
  using Base::Base;
  Result(Errc e) : Base(make_error_code(e)) {}  // NOLINT(google-explicit-constructor)
};

}  // namespace edge

namespace boost::system {
template <>
struct is_error_code_enum<edge::Errc> : std::true_type {};
}  // namespace boost::system
