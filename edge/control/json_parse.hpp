#pragma once

#include <cmath>
#include <string_view>

#include <boost/json.hpp>

namespace edge::control {

/// True if no number in `v` is infinite or NaN.
inline bool all_finite(const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::double_: return std::isfinite(v.get_double());
    case boost::json::kind::array:
      for (const auto& e : v.get_array()) {
        if (!all_finite(e))
          return false;
      }
      return true;
    case boost::json::kind::object:
      for (const auto& kv : v.get_object()) {
        if (!all_finite(kv.value()))
          return false;
      }
      return true;
    default: return true;
  }
}

/// boost::json::parse for bytes from the network: a number outside a double's range is an
/// error (`exponent_overflow`). Boost.JSON 1.81 reads 1e999 as infinity and writes it back as
/// `Infinity`, which is not JSON: a document kept and served again (a feed change, a fleet
/// status, an echoed field) would poison every reader after it. Depth stays bounded by
/// `options.max_depth` (the walk recurses no deeper than the parser did).
inline boost::json::value parse_finite(std::string_view text, boost::system::error_code& ec,
                                       boost::json::storage_ptr sp = {},
                                       const boost::json::parse_options& options = {}) {
  boost::json::value v = boost::json::parse(text, ec, std::move(sp), options);
  if (!ec && !all_finite(v)) {
    ec = boost::json::error::exponent_overflow;
    return nullptr;
  }
  return v;
}

}  // namespace edge::control
