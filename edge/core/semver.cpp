#include "edge/core/semver.hpp"

#include <algorithm>
#include <charconv>

namespace edge {
namespace {

bool is_digits(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_ident_char(char c) noexcept {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

// A numeric identifier: digits, no leading zero unless it is "0" (semver §2, §9).
bool parse_number(std::string_view s, std::uint64_t& out) noexcept {
  if (!is_digits(s) || (s.size() > 1 && s[0] == '0'))
    return false;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

bool split_identifiers(std::string_view s, bool prerelease, std::vector<std::string>& out) {
  while (true) {
    const std::size_t dot = s.find('.');
    const std::string_view id = s.substr(0, dot);
    if (id.empty() || !std::all_of(id.begin(), id.end(), is_ident_char))
      return false;
    // Numeric prerelease identifiers must not have leading zeros (§9); build ones may (§10).
    if (prerelease && is_digits(id) && id.size() > 1 && id[0] == '0')
      return false;
    out.emplace_back(id);
    if (dot == std::string_view::npos)
      return true;
    s.remove_prefix(dot + 1);
  }
}

std::strong_ordering compare_identifier(const std::string& a, const std::string& b) noexcept {
  const bool an = is_digits(a);
  const bool bn = is_digits(b);
  if (an && bn) {
    // No leading zeros, so the longer one is larger; equal lengths compare as text.
    if (a.size() != b.size())
      return a.size() <=> b.size();
    return a.compare(b) <=> 0;
  }
  if (an != bn)
    return an ? std::strong_ordering::less : std::strong_ordering::greater;
  return a.compare(b) <=> 0;
}

}  // namespace

Result<SemVer> SemVer::parse(std::string_view text) noexcept {
  SemVer v;
  std::string_view core = text;
  std::string_view pre;
  std::string_view build;
  bool has_pre = false;
  bool has_build = false;
  if (const std::size_t plus = core.find('+'); plus != std::string_view::npos) {
    build = core.substr(plus + 1);
    core = core.substr(0, plus);
    has_build = true;
  }
  if (const std::size_t dash = core.find('-'); dash != std::string_view::npos) {
    pre = core.substr(dash + 1);
    core = core.substr(0, dash);
    has_pre = true;
  }
  const std::size_t d1 = core.find('.');
  if (d1 == std::string_view::npos)
    return Errc::kInvalidArgument;
  const std::size_t d2 = core.find('.', d1 + 1);
  if (d2 == std::string_view::npos)
    return Errc::kInvalidArgument;
  if (!parse_number(core.substr(0, d1), v.major) ||
      !parse_number(core.substr(d1 + 1, d2 - d1 - 1), v.minor) ||
      !parse_number(core.substr(d2 + 1), v.patch)) {
    return Errc::kInvalidArgument;
  }
  try {
    if (has_pre && !split_identifiers(pre, true, v.prerelease))
      return Errc::kInvalidArgument;
    if (has_build && !split_identifiers(build, false, v.build))
      return Errc::kInvalidArgument;
  } catch (const std::bad_alloc&) {
    return Errc::kTooLarge;
  }
  return v;
}

std::string SemVer::to_string() const {
  std::string out =
      std::to_string(major) + '.' + std::to_string(minor) + '.' + std::to_string(patch);
  for (std::size_t i = 0; i < prerelease.size(); ++i)
    out += (i == 0 ? "-" : ".") + prerelease[i];
  for (std::size_t i = 0; i < build.size(); ++i)
    out += (i == 0 ? "+" : ".") + build[i];
  return out;
}

std::strong_ordering operator<=>(const SemVer& a, const SemVer& b) noexcept {
  if (auto c = a.major <=> b.major; c != 0)
    return c;
  if (auto c = a.minor <=> b.minor; c != 0)
    return c;
  if (auto c = a.patch <=> b.patch; c != 0)
    return c;
  // A prerelease has lower precedence than the release (§11.3).
  if (a.prerelease.empty() != b.prerelease.empty()) {
    return a.prerelease.empty() ? std::strong_ordering::greater : std::strong_ordering::less;
  }
  const std::size_t n = std::min(a.prerelease.size(), b.prerelease.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (auto c = compare_identifier(a.prerelease[i], b.prerelease[i]); c != 0)
      return c;
  }
  return a.prerelease.size() <=> b.prerelease.size();
}

bool at_least(const SemVer& v, std::uint64_t major, std::uint64_t minor,
              std::uint64_t patch) noexcept {
  SemVer t;
  t.major = major;
  t.minor = minor;
  t.patch = patch;
  return !(v < t);
}

}  // namespace edge
