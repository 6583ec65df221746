#pragma once

// The only code that speaks S3 (DESIGN §12.2): a client of the standard object API (PUT,
// GET, HEAD and DELETE of an object, ListObjectsV2) on libcurl, signed with libcurl's
// CURLOPT_AWS_SIGV4, so that AWS S3, Cloudflare R2, Ceph RGW, Garage and SeaweedFS all fit.
// Implements store::ObjectStore.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edge/core/errc.hpp"
#include "edge/store/object_store.hpp"

namespace edge::s3 {

/// Where the bucket is ([blobs] in the config).
struct S3Options {
  /// http:// or https:// scheme, host and optional port; no path ("https://s3.eu-west-1.
  /// amazonaws.com", "https://<account>.r2.cloudflarestorage.com", "http://127.0.0.1:3900").
  std::string endpoint;
  std::string bucket;
  std::string region = "us-east-1";  ///< signed into every request ("auto" for R2)
  /// true: https://host/bucket/key; false: https://bucket.host/key (virtual-host style).
  bool path_style = true;
  std::uint32_t timeout_ms = 30'000;  ///< per request, connect included
  unsigned retries = 2;               ///< extra attempts after a transport failure or a 5xx
};

/// Credentials, from the environment only. Never logged, never in errors or /metrics.
struct Credentials {
  std::string access_key;
  std::string secret_key;
  std::string session_token;  ///< optional (temporary credentials)
  /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; nullopt unless both
  /// of the first two are set and non-empty.
  static std::optional<Credentials> from_env();
};

/// An endpoint split into its parts: Errc::kInvalidArgument unless it is
/// http(s)://host[:port] with an optional trailing "/".
struct Endpoint {
  std::string scheme;  ///< "http" or "https"
  std::string host;    ///< as written ("[::1]" keeps its brackets)
  std::string port;    ///< empty: the scheme's default
};
Result<Endpoint> parse_endpoint(std::string_view endpoint);

/// A request target: the URL libcurl is given and the Host header sent (and signed) with
/// it.
struct Target {
  std::string url;
  std::string host;
};
/// The target of object `key` (or of the bucket when `key` is empty) with an encoded
/// query (already in canonical order), in path or virtual-host style.
Target object_target(const Endpoint& endpoint, const S3Options& options, std::string_view key,
                     std::string_view query = {});
/// The canonical query of ListObjectsV2: keys sorted, values encoded.
std::string list_query(std::string_view prefix, std::string_view continuation);

/// What an HTTP status from S3 means for the caller: 2xx (and 404 for DELETE) success,
/// 404 Errc::kNotFound, anything else Errc::kIo. `retry`: worth another attempt (5xx,
/// 429: the store is busy or failing; not 4xx, which will fail again).
struct StatusMeaning {
  Errc errc = Errc::kOk;
  bool retry = false;
};
StatusMeaning map_status(long status, bool is_delete);

/// The text of <Code> in an S3 XML error body ("" if none): "AccessDenied", "NoSuchBucket".
std::string error_code_of(std::string_view xml_body);

/// Seconds since the epoch of an S3 timestamp ("2026-12-07T01:02:03.000Z"); -1 if it is not
/// one.
std::int64_t parse_timestamp(std::string_view text);
/// Parses a ListObjectsV2 answer (Contents/Key/Size/LastModified, NextContinuationToken).
Result<store::ObjectListing> parse_listing(std::string_view xml_body);

/// One request as the client sends it; exposed so that tests can check the signature
/// libcurl computes against AWS's published SigV4 examples.
struct SignedRequest {
  std::string method = "GET";
  Target target;
  std::string service = "s3";
  std::string region = "us-east-1";
  /// "YYYYMMDDTHHMMSSZ" sent as X-Amz-Date, which libcurl then signs with (empty: libcurl
  /// takes the time now).
  std::string amz_date;
  /// Sent as x-amz-content-sha256 (S3 wants it on every request; libcurl signs it as the
  /// payload hash). Empty: not sent, and libcurl hashes the body itself.
  std::string content_sha256;
  std::vector<std::pair<std::string, std::string>> headers;  ///< more, signed too
  std::span<const std::uint8_t> body;
  std::uint32_t timeout_ms = 30'000;
  std::uint64_t max_body = 64ULL << 20;  ///< response body limit (Errc::kTooLarge past it)
};
struct Reply {
  long status = 0;
  std::vector<std::uint8_t> body;
};
/// Performs `req` once, signed with `credentials`. Errc::kIo with `*error` set when no
/// HTTP answer came (connect, TLS, timeout); Errc::kTooLarge past max_body.
Result<Reply> perform(const SignedRequest& req, const Credentials& credentials, std::string* error);

/// store::ObjectStore over one bucket. Any number of threads may call at once: each thread
/// keeps one libcurl handle (and its keep-alive connections) for all its requests.
class S3Client final : public store::ObjectStore {
 public:
  /// Throws std::invalid_argument naming the bad option (endpoint, bucket).
  S3Client(S3Options options, Credentials credentials);
  ~S3Client() override;
  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  Result<void> put(std::string_view key, std::span<const std::uint8_t> bytes) override;
  Result<std::vector<std::uint8_t>> get(std::string_view key, std::uint64_t max_bytes) override;
  Result<bool> exists(std::string_view key) override;
  Result<void> remove(std::string_view key) override;
  Result<store::ObjectListing> list(std::string_view prefix,
                                    std::string_view continuation) override;
  std::string describe() const override;
  store::ObjectStoreStats& stats() override { return stats_; }

 private:
  using Op = store::ObjectStoreStats::Op;
  /// One S3 call with retries; counts it in stats_.
  Result<Reply> call(Op op, const char* method, std::string_view key, std::string_view query,
                     std::span<const std::uint8_t> body, std::uint64_t max_body);

  S3Options options_;
  Credentials credentials_;
  Endpoint endpoint_;
  store::ObjectStoreStats stats_;
};

}  // namespace edge::s3
