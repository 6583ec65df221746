#pragma once

#include <string>
#include <string_view>

namespace edge {

/// RFC 3986 percent-encoding: every byte but the unreserved characters (A-Z a-z 0-9 - . _ ~),
/// and '/' when `keep_slash`, becomes %XX with upper-case hex (what SigV4 signs and what an
/// URL path carries).
std::string percent_encode(std::string_view text, bool keep_slash);

}  // namespace edge
