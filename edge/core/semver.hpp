#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "edge/core/errc.hpp"

namespace edge {

/// A Semantic Versioning 2.0.0 version (https://semver.org). Build metadata is kept for
/// display but, per §10 of the spec, ignored by comparison.
struct SemVer {
  std::uint64_t major = 0;
  std::uint64_t minor = 0;
  std::uint64_t patch = 0;
  std::vector<std::string> prerelease;  ///< dot-separated identifiers after '-'
  std::vector<std::string> build;       ///< dot-separated identifiers after '+'

  /// Strict parse of MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]: numeric parts without leading
  /// zeros, identifiers of [0-9A-Za-z-], none empty. Anything else is Errc::kInvalidArgument.
  static Result<SemVer> parse(std::string_view text) noexcept;

  /// The canonical text form (what parse() would accept and round-trip).
  std::string to_string() const;

  /// Precedence per semver §11: numeric fields, then a version with a prerelease is lower
  /// than the same version without; prerelease identifiers compare numerically when both
  /// are numeric, numeric ones are lower than alphanumeric, a longer list wins ties.
  friend std::strong_ordering operator<=>(const SemVer& a, const SemVer& b) noexcept;
  /// Equal precedence (build metadata ignored).
  friend bool operator==(const SemVer& a, const SemVer& b) noexcept {
    return (a <=> b) == std::strong_ordering::equal;
  }
};

/// True if `v` has at least the precedence of major.minor.patch (a prerelease of that
/// version counts as older), e.g. plugin-version thresholds.
bool at_least(const SemVer& v, std::uint64_t major, std::uint64_t minor,
              std::uint64_t patch) noexcept;

}  // namespace edge
