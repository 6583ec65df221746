#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "edge/api/sync.hpp"
#include "edge/server/server.hpp"
#include "edge/store/chunk_store.hpp"

namespace edge {

/// A bad config file, key or flag. The message names the key and the bad value.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Everything `bundle-edge` reads from TOML and flags. Defaults are the ones documented in
/// conf/bundle-edge.toml: an origin on 127.0.0.1:8080, admin on 127.0.0.1:9090, data in ./var.
struct Config {
  std::string role = "origin";
  std::filesystem::path data_dir = "./var";
  std::string public_url;  ///< empty: http://<listen host>:<bound port>, set by main
  server::ServerOptions server;
  /// [server] background_slice_us: the scheduler slice of the storage threads
  /// (edge::set_thread_slice; main sets it while they start); 0: the kernel's default.
  std::uint32_t background_slice_us = 100;
  std::string admin_token;  ///< empty: read or create <data_dir>/admin.token
  std::uint64_t max_upload_bytes = 2ULL << 30;
  std::uint32_t max_scans_per_token = 4;  ///< [admin] max_scans_per_token: 429 beyond
  std::uint32_t max_queued_scans = 16;    ///< [admin] max_queued_scans: 503 beyond
  store::ChunkStoreOptions store;
  std::uint64_t block_cache_bytes = 64ULL << 20;
  std::uint64_t write_buffer_bytes = 64ULL << 20;  ///< [store] write_buffer: RocksDB memtables
  std::uint64_t min_free_bytes = 256ULL << 20;     ///< [store] min_free: below it, writes refused
  std::uint64_t reserve_bytes = 64ULL << 20;  ///< [store] reserve: file given back on a full start
  std::string log_level = "info";

  std::string node_id;               ///< empty: read or create <data_dir>/node.id
  api::UpstreamOptions upstream;     ///< [upstream]: edges only
  std::string sync_token;            ///< [sync] token children and the origin's pushes carry
  std::vector<std::string> push_to;  ///< [sync] push_to: edges this node pushes changes to
  std::string push_ca_file;  ///< [sync] ca_file: CA bundle for https:// push_to (empty: system)
  std::uint64_t changelog_keep = 100'000;    ///< [sync] changelog_keep (0: keep all)
  std::uint32_t channel_history_keep = 200;  ///< [sync] channel_history_keep (versions)
  std::uint64_t audit_keep = 100'000;        ///< [admin] audit_keep (0: no count bound)
  std::uint32_t audit_keep_days = 90;        ///< [admin] audit_keep_days (0: no age bound)
  std::uint32_t refusals_keep = 10'000;      ///< [admin] refusals_keep (0: none recorded)
  std::uint32_t refusals_per_minute = 30;    ///< [admin] refusals_per_minute (0: no limit)
  /// [sync] fleet_expire_ms: a node below not heard from for this long leaves the fleet
  /// view. 0: 5 x upstream.status_interval_ms (50 s; 50 s also when that is 0).
  std::uint32_t fleet_expire_ms = 0;
  std::uint64_t outbox_max_bytes = 1ULL << 30;  ///< [outbox] max_bytes
  std::uint32_t timeline_events = 50;           ///< [checkins] timeline_events (0: no timelines)
  std::uint32_t retention_days = 90;            ///< [checkins] retention_days (0: keep everything)
  /// [state] backend: "embedded" (RocksDB in data_dir, the default) or "postgres" (the
  /// origin tier: control state shared with other origins in PostgreSQL at state_url).
  std::string state_backend = "embedded";
  std::string state_url;  ///< [state] url: a libpq connection string or postgres:// URI
  /// [blobs]: where an origin's blobs live. "embedded": the segment store; "s3": a bucket
  /// several origins share, the segment store a verified cache of it. Credentials come
  /// from the environment only (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
  struct Blobs {
    std::string backend = "embedded";
    std::string endpoint;  ///< http(s)://host[:port]
    std::string bucket;
    std::string region = "us-east-1";
    bool path_style = true;  ///< false: virtual-host style (bucket.host)
    std::uint32_t timeout_ms = 30'000;
    std::uint32_t concurrency = 8;  ///< S3 requests in flight (fills and upload writes)
  } blobs;
  /// [gc]: garbage collection of blobs no release references (origins).
  struct Gc {
    std::uint32_t interval_s = 3600;       ///< between passes; 0: only POST /v1/admin/gc
    std::uint32_t grace_s = 3600;          ///< a blob or chunk younger than this is kept
    std::uint32_t compact_below_pct = 50;  ///< segments less live than this are compacted
  } gc;
};

/// Command-line values that override the file (unset: keep the file's or the default).
struct ConfigOverrides {
  std::optional<std::filesystem::path> config_file;
  std::optional<std::string> role, listen, admin_listen, data_dir, admin_token;
  std::optional<std::string> threads, upstream, sync_token, node_id;
  std::optional<std::string> tls_listen, tls_cert, tls_key;
  std::optional<std::string> state_url;  ///< --state-url: [state] url, backend "postgres"
};

/// Loads `overrides.config_file` (if any), applies the overrides, validates. Throws
/// ConfigError on unknown keys, wrong types and out-of-range values.
Config load_config(const ConfigOverrides& overrides);

/// Parses a size: an integer number of bytes, or a number with B, KiB, MiB, GiB, TiB (or
/// KB, MB, GB, TB: powers of 1000). Throws ConfigError naming `key`.
std::uint64_t parse_size(const std::string& key, const std::string& text);

/// Splits a comma-separated list of URLs (upstream.url, --upstream), spaces around each
/// trimmed. Throws ConfigError naming `key` and the position of an empty entry. The URLs
/// themselves are checked by load_config.
std::vector<std::string> parse_url_list(const std::string& key, const std::string& text);

/// Splits "host:port" ("[v6]:port" too). Throws ConfigError naming `key`.
std::pair<std::string, std::uint16_t> parse_host_port(const std::string& key,
                                                      const std::string& text);

}  // namespace edge
