#include "edge/s3/s3_client.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "edge/core/sha256.hpp"
#include "edge/core/uri.hpp"

#include <curl/curl.h>

namespace edge::s3 {
namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// One easy handle per thread: reset before each request, so it keeps only its connection
// cache (keep-alive to the store) between requests.
struct Handle {
  CURL* curl = nullptr;
  Handle() {
    global_init();
    curl = curl_easy_init();
  }
  ~Handle() {
    if (curl != nullptr)
      curl_easy_cleanup(curl);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
};

// An error body (S3's XML) may be longer than a small object's limit: it is read up to this.
constexpr std::uint64_t kMaxErrorBody = 64 << 10;

struct Sink {
  std::vector<std::uint8_t>* out;
  std::uint64_t max;
  CURL* curl;
  bool too_large = false;
};

std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const std::size_t len = size * n;
  long status = 0;
  curl_easy_getinfo(sink->curl, CURLINFO_RESPONSE_CODE, &status);
  const bool success = status >= 200 && status < 300;
  const std::uint64_t max = success ? sink->max : std::max(sink->max, kMaxErrorBody);
  if (sink->out->size() + len > max) {
    sink->too_large = true;
    return 0;  // CURLE_WRITE_ERROR: the rest is not read
  }
  sink->out->insert(sink->out->end(), data, data + len);
  return len;
}

// The text between <tag> and </tag> from `from` on, XML entities decoded; npos-safe.
std::optional<std::string> element(std::string_view xml, std::string_view tag, std::size_t& from) {
  const std::string open = "<" + std::string(tag) + ">";
  const std::string close = "</" + std::string(tag) + ">";
  const auto a = xml.find(open, from);
  if (a == std::string_view::npos)
    return std::nullopt;
  const auto b = xml.find(close, a + open.size());
  if (b == std::string_view::npos)
    return std::nullopt;
  from = b + close.size();
  std::string out;
  const std::string_view raw = xml.substr(a + open.size(), b - a - open.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '&') {
      out += raw[i];
      continue;
    }
    static constexpr std::pair<std::string_view, char> kEntities[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    bool done = false;
    for (const auto& [name, c] : kEntities) {
      if (raw.substr(i).starts_with(name)) {
        out += c;
        i += name.size() - 1;
        done = true;
        break;
      }
    }
    if (!done)
      out += '&';
  }
  return out;
}

const char* op_name(store::ObjectStoreStats::Op op) {
  using Op = store::ObjectStoreStats::Op;
  switch (op) {
    case Op::kPut: return "PUT";
    case Op::kGet: return "GET";
    case Op::kHead: return "HEAD";
    case Op::kDelete: return "DELETE";
    default: return "LIST";
  }
}

}  // namespace

std::optional<Credentials> Credentials::from_env() {
  const char* id = std::getenv("AWS_ACCESS_KEY_ID");
  const char* secret = std::getenv("AWS_SECRET_ACCESS_KEY");
  if (id == nullptr || secret == nullptr || *id == '\0' || *secret == '\0')
    return std::nullopt;
  Credentials c{id, secret, {}};
  if (const char* token = std::getenv("AWS_SESSION_TOKEN"); token != nullptr)
    c.session_token = token;
  return c;
}

Result<Endpoint> parse_endpoint(std::string_view e) {
  Endpoint out;
  if (e.starts_with("https://")) {
    out.scheme = "https";
    e.remove_prefix(8);
  } else if (e.starts_with("http://")) {
    out.scheme = "http";
    e.remove_prefix(7);
  } else {
    return Errc::kInvalidArgument;
  }
  if (e.ends_with('/'))
    e.remove_suffix(1);
  if (e.empty() || e.find_first_of("/?#@ ") != std::string_view::npos)
    return Errc::kInvalidArgument;
  // "[v6]:port", "host:port" or "host".
  std::size_t colon = std::string_view::npos;
  if (e.front() == '[') {
    const auto close = e.find(']');
    if (close == std::string_view::npos)
      return Errc::kInvalidArgument;
    if (close + 1 < e.size()) {
      if (e[close + 1] != ':')
        return Errc::kInvalidArgument;
      colon = close + 1;
    }
  } else {
    colon = e.find(':');
  }
  out.host = std::string(e.substr(0, colon));
  if (colon != std::string_view::npos) {
    out.port = std::string(e.substr(colon + 1));
    if (out.port.empty() || out.port.size() > 5 ||
        !std::all_of(out.port.begin(), out.port.end(),
                     [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoul(out.port) == 0 || std::stoul(out.port) > 65535)
      return Errc::kInvalidArgument;
  }
  if (out.host.empty() || out.host == "[]")
    return Errc::kInvalidArgument;
  return out;
}

Target object_target(const Endpoint& endpoint, const S3Options& options, std::string_view key,
                     std::string_view query) {
  const std::string port = endpoint.port.empty() ? "" : ":" + endpoint.port;
  Target t;
  std::string path;
  if (options.path_style) {
    t.host = endpoint.host + port;
    path = "/" + percent_encode(options.bucket, false);
    if (!key.empty())
      path += "/" + percent_encode(key, true);
  } else {
    t.host = options.bucket + "." + endpoint.host + port;
    path = "/" + percent_encode(key, true);
  }
  t.url = endpoint.scheme + "://" + t.host + path;
  if (!query.empty())
    t.url += "?" + std::string(query);
  return t;
}

std::string list_query(std::string_view prefix, std::string_view continuation) {
  // SigV4 signs the query sorted by name: continuation-token < list-type < prefix.
  std::string q;
  if (!continuation.empty())
    q = "continuation-token=" + percent_encode(continuation, false) + "&";
  q += "list-type=2&prefix=" + percent_encode(prefix, false);
  return q;
}

StatusMeaning map_status(long status, bool is_delete) {
  if (status >= 200 && status < 300)
    return {};
  if (status == 404)
    return {is_delete ? Errc::kOk : Errc::kNotFound, false};
  // 5xx: the store is failing or overloaded (503 SlowDown); 429 the same; 408 a timeout.
  const bool retry = status >= 500 || status == 429 || status == 408;
  return {Errc::kIo, retry};
}

std::string error_code_of(std::string_view xml_body) {
  std::size_t at = 0;
  return element(xml_body, "Code", at).value_or("");
}

std::int64_t parse_timestamp(std::string_view text) {
  // "2026-12-07T01:02:03.000Z" (ListObjectsV2's LastModified); fractions are dropped.
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  char tail = 0;
  const std::string copy(text.substr(0, 64));
  if (std::sscanf(copy.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &s, &tail) < 6)
    return -1;
  if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60 ||
      h < 0 || mi < 0 || s < 0)
    return -1;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  const std::time_t t = ::timegm(&tm);
  return t < 0 ? -1 : static_cast<std::int64_t>(t);
}

Result<store::ObjectListing> parse_listing(std::string_view xml) {
  if (xml.find("<ListBucketResult") == std::string_view::npos)
    return Errc::kCorrupt;
  store::ObjectListing out;
  std::size_t at = 0;
  while (true) {
    const auto a = xml.find("<Contents>", at);
    if (a == std::string_view::npos)
      break;
    const auto b = xml.find("</Contents>", a);
    if (b == std::string_view::npos)
      return Errc::kCorrupt;
    const std::string_view item = xml.substr(a, b - a);
    std::size_t k = 0, s = 0, m = 0;
    auto key = element(item, "Key", k);
    auto size = element(item, "Size", s);
    auto modified = element(item, "LastModified", m);
    if (!key)
      return Errc::kCorrupt;
    store::ObjectListing::Entry e{std::move(*key), 0, -1};
    if (modified)
      e.modified_s = parse_timestamp(*modified);
    if (size) {
      char* end = nullptr;
      e.size = std::strtoull(size->c_str(), &end, 10);
    }
    out.objects.push_back(std::move(e));
    at = b + 11;
  }
  std::size_t t = 0, n = 0;
  const auto truncated = element(xml, "IsTruncated", t);
  if (truncated && *truncated == "true") {
    out.next = element(xml, "NextContinuationToken", n).value_or("");
    if (out.next.empty())
      return Errc::kCorrupt;  // more pages, and no way to ask for them
  }
  return out;
}

Result<Reply> perform(const SignedRequest& req, const Credentials& credentials,
                      std::string* error) {
  thread_local Handle handle;
  CURL* h = handle.curl;
  if (h == nullptr) {
    *error = "curl_easy_init failed";
    return Errc::kIo;
  }
  curl_easy_reset(h);
  Reply reply;
  Sink sink{&reply.body, req.max_body, h};
  char curl_error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(h, CURLOPT_URL, req.target.url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_error);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(req.timeout_ms));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::min<std::uint32_t>(req.timeout_ms, 10'000)));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  const std::string sigv4 = "aws:amz:" + req.region + ":" + req.service;
  curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4.c_str());
  curl_easy_setopt(h, CURLOPT_USERNAME, credentials.access_key.c_str());
  curl_easy_setopt(h, CURLOPT_PASSWORD, credentials.secret_key.c_str());
  if (req.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (req.method == "PUT" || req.method == "POST") {
    // The body as POSTFIELDS under the request's own method: libcurl sends it with a
    // Content-Length (no chunked encoding, which S3 refuses for a plain PUT).
    // Never a null pointer: libcurl would then read the body from stdin.
    static const char kEmpty[] = "";
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    curl_easy_setopt(h, CURLOPT_POSTFIELDS,
                     req.body.empty() ? kEmpty : reinterpret_cast<const char*>(req.body.data()));
    if (req.method != "POST")
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  } else if (req.method != "GET") {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }
  // Host is sent (and so signed) exactly as the URL names it, port included: libcurl would
  // otherwise sign the host without a non-default port, which a strict store refuses.
  curl_slist* headers = nullptr;
  const auto add = [&headers](const std::string& line) {
    headers = curl_slist_append(headers, line.c_str());
  };
  add("Host: " + req.target.host);
  if (!req.amz_date.empty())
    add("X-Amz-Date: " + req.amz_date);
  if (!req.content_sha256.empty())
    add("x-amz-content-sha256: " + req.content_sha256);
  if (!credentials.session_token.empty())
    add("x-amz-security-token: " + credentials.session_token);
  if (req.method == "PUT" || req.method == "POST")
    add("Content-Type: application/octet-stream");
  for (const auto& [name, value] : req.headers)
    add(name + ": " + value);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  const CURLcode rc = curl_easy_perform(h);
  curl_slist_free_all(headers);
  // Nothing of the credentials may outlive the request in the reused handle.
  curl_easy_setopt(h, CURLOPT_USERNAME, "");
  curl_easy_setopt(h, CURLOPT_PASSWORD, "");
  if (sink.too_large)
    return Errc::kTooLarge;
  if (rc != CURLE_OK) {
    *error = curl_error[0] != '\0' ? curl_error : curl_easy_strerror(rc);
    return Errc::kIo;
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &reply.status);
  return reply;
}

S3Client::S3Client(S3Options options, Credentials credentials)
    : options_(std::move(options)), credentials_(std::move(credentials)) {
  auto e = parse_endpoint(options_.endpoint);
  if (!e) {
    throw std::invalid_argument(
        "blobs.endpoint: expected http(s)://host[:port] with no path, got '" + options_.endpoint +
        "'");
  }
  endpoint_ = std::move(*e);
  if (options_.bucket.empty() || options_.bucket.size() > 63 ||
      options_.bucket.find_first_of("/?#% ") != std::string::npos) {
    throw std::invalid_argument("blobs.bucket: expected an S3 bucket name, got '" +
                                options_.bucket + "'");
  }
  global_init();
}

S3Client::~S3Client() = default;

std::string S3Client::describe() const {
  return "s3 bucket " + options_.bucket + " at " + endpoint_.scheme + "://" + endpoint_.host +
         (endpoint_.port.empty() ? "" : ":" + endpoint_.port) + " (region " + options_.region +
         ", " + (options_.path_style ? "path" : "virtual-host") + " style)";
}

Result<Reply> S3Client::call(Op op, const char* method, std::string_view key,
                             std::string_view query, std::span<const std::uint8_t> body,
                             std::uint64_t max_body) {
  using Outcome = store::ObjectStoreStats::Outcome;
  SignedRequest req;
  req.method = method;
  req.target = object_target(endpoint_, options_, key, query);
  req.region = options_.region;
  req.content_sha256 = sha256_of(body).hex();
  req.body = body;
  req.timeout_ms = options_.timeout_ms;
  req.max_body = max_body;
  const bool is_delete = op == Op::kDelete;
  for (unsigned attempt = 0;; ++attempt) {
    std::string error;
    auto reply = perform(req, credentials_, &error);
    if (!reply && reply.error() == Errc::kTooLarge) {
      stats_.count(op, Outcome::kError);
      stats_.set_error(std::string(op_name(op)) + " " + std::string(key) + ": larger than " +
                       std::to_string(max_body) + " bytes");
      return reply.error();
    }
    StatusMeaning m{Errc::kIo, true};
    if (reply) {
      m = map_status(reply->status, is_delete);
      if (!reply->body.empty() && (op == Op::kGet || op == Op::kList) && m.errc == Errc::kOk)
        stats_.bytes_received.fetch_add(reply->body.size(), std::memory_order_relaxed);
    }
    if (reply && m.errc == Errc::kOk) {
      stats_.count(op, Outcome::kOk);
      stats_.reachable.store(1, std::memory_order_relaxed);
      if (op == Op::kPut)
        stats_.bytes_sent.fetch_add(body.size(), std::memory_order_relaxed);
      return reply;
    }
    if (reply && m.errc == Errc::kNotFound) {
      stats_.count(op, Outcome::kNotFound);
      stats_.reachable.store(1, std::memory_order_relaxed);
      return Errc::kNotFound;
    }
    // A failure: say what and why (the store's own error code when it gave one), never
    // with the request's signature or credentials.
    stats_.count(op, Outcome::kError);
    std::string why =
        std::string(op_name(op)) + " " + (key.empty() ? "(bucket)" : std::string(key)) + ": ";
    if (reply) {
      const std::string code = error_code_of(
          std::string_view(reinterpret_cast<const char*>(reply->body.data()), reply->body.size()));
      why += "HTTP " + std::to_string(reply->status) + (code.empty() ? "" : " " + code);
      stats_.reachable.store(reply->status >= 500 ? 0 : 1, std::memory_order_relaxed);
    } else {
      why += error;
      stats_.reachable.store(0, std::memory_order_relaxed);
    }
    stats_.set_error(why);
    if (!m.retry || attempt >= options_.retries)
      return Errc::kIo;
    std::this_thread::sleep_for(std::chrono::milliseconds(100 << std::min(attempt, 5U)));
  }
}

Result<void> S3Client::put(std::string_view key, std::span<const std::uint8_t> bytes) {
  auto r = call(Op::kPut, "PUT", key, {}, bytes, 1 << 20);
  if (!r)
    return r.error();
  return {};
}

Result<std::vector<std::uint8_t>> S3Client::get(std::string_view key, std::uint64_t max_bytes) {
  auto r = call(Op::kGet, "GET", key, {}, {}, max_bytes);
  if (!r)
    return r.error();
  return std::move(r->body);
}

Result<bool> S3Client::exists(std::string_view key) {
  auto r = call(Op::kHead, "HEAD", key, {}, {}, 0);
  if (!r && r.error() == Errc::kNotFound)
    return false;
  if (!r)
    return r.error();
  return true;
}

Result<void> S3Client::remove(std::string_view key) {
  auto r = call(Op::kDelete, "DELETE", key, {}, {}, 1 << 20);
  if (!r)
    return r.error();
  return {};
}

Result<store::ObjectListing> S3Client::list(std::string_view prefix,
                                            std::string_view continuation) {
  auto r = call(Op::kList, "GET", {}, list_query(prefix, continuation), {}, 16 << 20);
  if (!r)
    return r.error();
  auto page = parse_listing(
      std::string_view(reinterpret_cast<const char*>(r->body.data()), r->body.size()));
  if (!page) {
    stats_.set_error("LIST " + std::string(prefix) + ": an answer that is not a ListBucketResult");
    return Errc::kIo;
  }
  return page;
}

}  // namespace edge::s3
