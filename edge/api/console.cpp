#include "edge/api/console.hpp"

#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include "edge/core/sha256.hpp"

namespace edge::api {
namespace {

namespace bhttp = boost::beast::http;

constexpr std::string_view kPrefix = "/console";

std::string_view content_type(std::string_view name) {
  const auto dot = name.rfind('.');
  const std::string_view ext = dot == std::string_view::npos ? "" : name.substr(dot + 1);
  if (ext == "html")
    return "text/html; charset=utf-8";
  if (ext == "js")
    return "text/javascript; charset=utf-8";
  if (ext == "css")
    return "text/css; charset=utf-8";
  if (ext == "svg")
    return "image/svg+xml";
  return "application/octet-stream";
}

struct Entry {
  const ConsoleAsset* asset;
  std::string etag;
};

// The ETags, computed once: the files never change while the binary runs.
const std::vector<Entry>& entries() {
  static const std::vector<Entry> all = [] {
    std::vector<Entry> out;
    for (const auto& a : console_assets()) {
      char tag[24];
      std::snprintf(tag, sizeof tag, "\"%016" PRIx64 "\"", xxh3_64(a.bytes.data(), a.bytes.size()));
      out.push_back({&a, tag});
    }
    return out;
  }();
  return all;
}

}  // namespace

bool is_console_path(std::string_view path) {
  return path == kPrefix || path.starts_with("/console/");
}

Response console_response(const bhttp::request_header<>& req, std::string_view path) {
  if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head)
    return method_not_allowed("GET, HEAD", Route::kAdmin);
  Response r;
  r.route = Route::kAdmin;
  if (path == kPrefix) {
    r.status = 301;
    r.set("Location", "/console/");
    return r;
  }
  std::string_view name = path.substr(kPrefix.size() + 1);
  if (name.empty())
    name = "index.html";
  const Entry* found = nullptr;
  for (const auto& e : entries())
    if (e.asset->name == name)
      found = &e;
  if (found == nullptr) {
    return error_response(404, "not_found",
                          "the console has no file '" + std::string(name.substr(0, 200)) + "'",
                          Route::kAdmin);
  }
  r.set("ETag", found->etag);
  r.set("Cache-Control", "no-cache");
  r.set("X-Content-Type-Options", "nosniff");
  r.set("Referrer-Policy", "no-referrer");
  r.set("Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'");
  if (const auto inm = req.find(bhttp::field::if_none_match); inm != req.end()) {
    const std::string_view v(inm->value().data(), inm->value().size());
    if (v.find(found->etag) != std::string_view::npos || v == "*") {
      r.status = 304;
      return r;
    }
  }
  r.set("Content-Type", content_type(name));
  r.body.assign(found->asset->bytes);
  return r;
}

}  // namespace edge::api
