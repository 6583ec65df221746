#pragma once

#include <span>
#include <string_view>

#include <boost/beast/http/message.hpp>

#include "edge/api/response.hpp"

namespace edge::api {

/// One static file of the web console (console/ in the source tree), built into the binary.
struct ConsoleAsset {
  std::string_view name;   ///< path below /console/, e.g. "index.html"
  std::string_view bytes;  ///< the file's contents
};

/// Every file of the console; defined by the source cmake/embed_files.cmake generates.
std::span<const ConsoleAsset> console_assets();

/// True for the paths the console answers: /console and everything below /console/.
bool is_console_path(std::string_view path);

/// GET|HEAD of the console's static files on the admin listener (DESIGN §11). They need no
/// token (the page asks for one and sends it with every API call it makes); the API routes
/// still do. /console redirects to /console/, which is index.html; a file answers with its
/// Content-Type, a strong ETag (304 on If-None-Match), `Cache-Control: no-cache` and a
/// Content-Security-Policy that allows this origin only. 404 for an unknown file, 405 for
/// other methods.
Response console_response(const boost::beast::http::request_header<>& req, std::string_view path);

}  // namespace edge::api
