#include "edge/http/encoding.hpp"

#include <limits>

#include <zlib.h>

namespace edge::http {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] + 32) : a[i];
    if (x != b[i])
      return false;
  }
  return true;
}

// The q-value of a member's parameters (RFC 9110 §12.4.2): 1 when absent; nullopt when
// malformed (the member is then skipped).
std::optional<double> q_value(std::string_view params) {
  double q = 1.0;
  while (!params.empty()) {
    const auto semi = params.find(';');
    const std::string_view p = trim(params.substr(0, semi));
    params = semi == std::string_view::npos ? std::string_view() : params.substr(semi + 1);
    const auto eq = p.find('=');
    if (eq == std::string_view::npos)
      continue;
    if (!iequals(trim(p.substr(0, eq)), "q"))
      continue;
    // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
    const std::string_view v = trim(p.substr(eq + 1));
    if (v.empty() || v.size() > 5 || (v[0] != '0' && v[0] != '1'))
      return std::nullopt;
    if (v.size() > 1 && v[1] != '.')
      return std::nullopt;
    double frac = 0;
    double scale = 0.1;
    for (std::size_t i = 2; i < v.size(); ++i) {
      if (v[i] < '0' || v[i] > '9' || (v[0] == '1' && v[i] != '0'))
        return std::nullopt;
      frac += (v[i] - '0') * scale;
      scale /= 10;
    }
    q = (v[0] - '0') + frac;
  }
  return q;
}

}  // namespace

bool accepts_gzip(std::string_view value) {
  std::optional<double> gzip_q;
  std::optional<double> any_q;
  while (!value.empty()) {
    const auto comma = value.find(',');
    const std::string_view member = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
    const auto semi = member.find(';');
    const std::string_view coding = trim(member.substr(0, semi));
    const auto q =
        q_value(semi == std::string_view::npos ? std::string_view() : member.substr(semi + 1));
    if (!q)
      continue;
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) {
      gzip_q = gzip_q ? std::max(*gzip_q, *q) : *q;
    } else if (coding == "*") {
      any_q = *q;
    }
  }
  if (gzip_q)
    return *gzip_q > 0;
  return any_q && *any_q > 0;
}

std::optional<std::string> gzip(std::string_view in, int level) {
  z_stream z{};
  // windowBits 15 + 16: a gzip header and trailer instead of zlib's; memLevel 8 (default).
  if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return std::nullopt;
  std::string out;
  out.resize(deflateBound(&z, static_cast<uLong>(in.size())));
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int r = in.size() <= std::numeric_limits<uInt>::max() ? deflate(&z, Z_FINISH) : Z_BUF_ERROR;
  const std::size_t n = z.total_out;
  deflateEnd(&z);
  if (r != Z_STREAM_END)
    return std::nullopt;
  out.resize(n);
  return out;
}

}  // namespace edge::http
