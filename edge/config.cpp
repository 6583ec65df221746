#include "edge/config.hpp"

#include <charconv>
#include <cmath>
#include <set>
#include <sstream>
#include <thread>

#include "edge/core/sched.hpp"
#include "edge/core/utf8.hpp"

#include <toml++/toml.h>

namespace edge {
namespace {

// Every key the file may hold, as "table.key". Anything else is an error that names it.
const std::set<std::string>& known_keys() {
  static const std::set<std::string> keys = {"node.role",
                                             "node.data_dir",
                                             "node.public_url",
                                             "server.listen",
                                             "server.threads",
                                             "server.max_connections",
                                             "server.max_connections_per_ip",
                                             "server.body_timeout_ms",
                                             "admin.max_connections",
                                             "server.header_limit",
                                             "server.json_body_limit",
                                             "server.header_timeout_ms",
                                             "server.idle_timeout_ms",
                                             "server.request_timeout_ms",
                                             "server.send_timeout_ms",
                                             "server.shutdown_grace_ms",
                                             "server.send_mode",
                                             "server.warm_cold_ranges",
                                             "server.warm_always",
                                             "server.access_log",
                                             "server.background_slice_us",
                                             "admin.listen",
                                             "admin.token",
                                             "admin.max_upload",
                                             "admin.audit_keep",
                                             "admin.audit_keep_days",
                                             "admin.refusals_keep",
                                             "admin.refusals_per_minute",
                                             "admin.scan_threads",
                                             "admin.max_scans_per_token",
                                             "admin.max_queued_scans",
                                             "store.segment_size",
                                             "store.index_cache_entries",
                                             "store.block_cache",
                                             "store.write_buffer",
                                             "store.min_free",
                                             "store.reserve",
                                             "store.chunk_sync",
                                             "store.chunk_sync_bytes",
                                             "store.chunk_sync_ms",
                                             "store.chunk_write",
                                             "cache.max_bytes",
                                             "log.level",
                                             "node.id",
                                             "upstream.url",
                                             "upstream.token",
                                             "upstream.timeout_ms",
                                             "upstream.retries",
                                             "upstream.fill_concurrency",
                                             "upstream.poll_wait_ms",
                                             "upstream.backoff_max_ms",
                                             "upstream.prefetch_deadline_ms",
                                             "upstream.stale_after_ms",
                                             "upstream.stale_is_unready",
                                             "upstream.max_fills_per_client",
                                             "upstream.checkin_batch",
                                             "upstream.status_interval_ms",
                                             "sync.token",
                                             "sync.push_to",
                                             "sync.changelog_keep",
                                             "sync.fleet_expire_ms",
                                             "sync.channel_history_keep",
                                             "outbox.max_bytes",
                                             "checkins.timeline_events",
                                             "checkins.retention_days",
                                             "tls.listen",
                                             "tls.cert_file",
                                             "tls.key_file",
                                             "tls.min_protocol",
                                             "tls.ciphers",
                                             "tls.ciphersuites",
                                             "tls.groups",
                                             "tls.session_tickets",
                                             "tls.ktls",
                                             "tls.admin",
                                             "upstream.ca_file",
                                             "sync.ca_file",
                                             "state.backend",
                                             "state.url",
                                             "blobs.backend",
                                             "blobs.endpoint",
                                             "blobs.bucket",
                                             "blobs.region",
                                             "blobs.path_style",
                                             "blobs.timeout_ms",
                                             "blobs.concurrency",
                                             "gc.interval_s",
                                             "gc.grace_s",
                                             "gc.compact_below_pct"};
  return keys;
}

std::string describe(const toml::node& n) {
  std::ostringstream out;
  n.visit([&](const auto& v) {
    if constexpr (toml::is_string<decltype(v)>) {
      out << "'" << v.get() << "'";
    } else if constexpr (toml::is_table<decltype(v)>) {
      out << "a table";
    } else if constexpr (toml::is_array<decltype(v)>) {
      out << "an array";
    } else {
      out << v;
    }
  });
  return out.str();
}

struct Reader {
  const toml::table& root;
  const std::string& file;

  const toml::node* get(const std::string& key) const { return root.at_path(key).node(); }
  [[noreturn]] void bad(const std::string& key, const std::string& expected,
                        const toml::node& n) const {
    throw ConfigError(file + ": " + key + ": expected " + expected + ", got " + describe(n));
  }
  void string(const std::string& key, std::string& out) const {
    if (const auto* n = get(key)) {
      if (!n->is_string())
        bad(key, "a string", *n);
      out = n->as_string()->get();
    }
  }
  void boolean(const std::string& key, bool& out) const {
    if (const auto* n = get(key)) {
      if (!n->is_boolean())
        bad(key, "true or false", *n);
      out = n->as_boolean()->get();
    }
  }
  template <class T>
  void integer(const std::string& key, T& out, std::int64_t lo, std::int64_t hi) const {
    if (const auto* n = get(key)) {
      if (!n->is_integer())
        bad(key, "an integer " + std::to_string(lo) + ".." + std::to_string(hi), *n);
      const std::int64_t v = n->as_integer()->get();
      if (v < lo || v > hi)
        bad(key, "an integer " + std::to_string(lo) + ".." + std::to_string(hi), *n);
      out = static_cast<T>(v);
    }
  }
  template <class T>
  void size(const std::string& key, T& out) const {
    if (const auto* n = get(key)) {
      if (n->is_integer() && n->as_integer()->get() >= 0) {
        out = static_cast<T>(n->as_integer()->get());
      } else if (n->is_string()) {
        out = static_cast<T>(parse_size(key, n->as_string()->get()));
      } else {
        bad(key, "a size like 10GiB", *n);
      }
    }
  }
};

void check_unknown(const toml::table& root, const std::string& file) {
  for (const auto& [table_key, table_node] : root) {
    const std::string table(table_key.str());
    if (!table_node.is_table()) {
      throw ConfigError(file + ": unknown top-level key '" + table +
                        "' (keys live in tables such as [server])");
    }
    for (const auto& [key, node] : *table_node.as_table()) {
      const std::string full = table + "." + std::string(key.str());
      if (!known_keys().contains(full)) {
        throw ConfigError(file + ": unknown key '" + full +
                          "' (see conf/bundle-edge.toml for every key)");
      }
    }
  }
}

std::uint32_t to_u32(const std::string& key, const std::string& text) {
  std::uint32_t v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) {
    throw ConfigError(key + ": expected a non-negative integer, got '" + text + "'");
  }
  return v;
}

}  // namespace

std::uint64_t parse_size(const std::string& key, const std::string& text) {
  const auto fail = [&]() -> std::uint64_t {
    throw ConfigError(key + ": expected a size like 10GiB, got '" + text + "'");
  };
  std::size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  if (i == 0)
    return fail();
  double number = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + i, number);
  if (ec != std::errc() || p != text.data() + i)
    return fail();
  std::string unit = text.substr(i);
  while (!unit.empty() && unit.front() == ' ')
    unit.erase(0, 1);
  static const std::vector<std::pair<std::string, double>> kUnits = {{"", 1},
                                                                     {"B", 1},
                                                                     {"KiB", 1024.0},
                                                                     {"MiB", 1048576.0},
                                                                     {"GiB", 1073741824.0},
                                                                     {"TiB", 1099511627776.0},
                                                                     {"KB", 1e3},
                                                                     {"MB", 1e6},
                                                                     {"GB", 1e9},
                                                                     {"TB", 1e12}};
  for (const auto& [name, scale] : kUnits) {
    if (unit == name) {
      const double bytes = number * scale;
      if (bytes > 1.8e19 || bytes != std::floor(bytes))
        return fail();
      return static_cast<std::uint64_t>(bytes);
    }
  }
  return fail();
}

std::vector<std::string> parse_url_list(const std::string& key, const std::string& text) {
  std::vector<std::string> out;
  std::size_t count = 1;
  for (const char ch : text)
    count += ch == ',' ? 1 : 0;
  std::size_t at = 0;
  for (std::size_t i = 1; i <= count; ++i) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    std::string url = text.substr(at, comma - at);
    while (!url.empty() && std::isspace(static_cast<unsigned char>(url.front())))
      url.erase(0, 1);
    while (!url.empty() && std::isspace(static_cast<unsigned char>(url.back())))
      url.pop_back();
    if (url.empty()) {
      // Not the text itself: a neighbouring entry may carry user information.
      throw ConfigError(key + ": URL " + std::to_string(i) + " of " + std::to_string(count) +
                        " is empty");
    }
    out.push_back(std::move(url));
    at = comma + 1;
  }
  return out;
}

std::pair<std::string, std::uint16_t> parse_host_port(const std::string& key,
                                                      const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw ConfigError(key + ": expected host:port such as 127.0.0.1:8080, got '" + text + "'");
  }
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port_text = text.substr(colon + 1);
  std::uint32_t port = 0;
  const auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || p != port_text.data() + port_text.size() ||
      port > 65535) {
    throw ConfigError(key + ": expected a port 0..65535 after ':', got '" + text + "'");
  }
  return {host, static_cast<std::uint16_t>(port)};
}

Config load_config(const ConfigOverrides& o) {
  Config c;
  std::string listen = "127.0.0.1:8080";
  std::string admin_listen = "127.0.0.1:9090";
  std::string send_mode = "sendfile";
  std::string chunk_sync = "auto";
  std::string chunk_write = "direct";
  std::string tls_listen;
  std::string data_dir = c.data_dir.string();
  std::string upstream_urls;  // upstream.url or --upstream: comma-separated
  unsigned threads = 0;
  if (o.config_file) {
    const std::string file = o.config_file->string();
    toml::table root;
    try {
      root = toml::parse_file(file);
    } catch (const toml::parse_error& e) {
      throw ConfigError(file + ":" + std::to_string(e.source().begin.line) + ": " +
                        std::string(e.description()));
    }
    check_unknown(root, file);
    const Reader r{root, file};
    r.string("node.role", c.role);
    r.string("node.data_dir", data_dir);
    r.string("node.public_url", c.public_url);
    r.string("server.listen", listen);
    r.integer("server.threads", threads, 0, 1024);
    r.integer("server.max_connections", c.server.max_connections, 1, 10'000'000);
    r.integer("server.max_connections_per_ip", c.server.max_connections_per_ip, 0, 10'000'000);
    r.integer("server.body_timeout_ms", c.server.body_timeout_ms, 1, 3'600'000);
    r.integer("admin.max_connections", c.server.admin_max_connections, 1, 100'000);
    r.size("server.header_limit", c.server.header_limit_bytes);
    r.size("server.json_body_limit", c.server.json_body_limit_bytes);
    r.integer("server.header_timeout_ms", c.server.header_timeout_ms, 1, 86'400'000);
    r.integer("server.idle_timeout_ms", c.server.idle_timeout_ms, 1, 86'400'000);
    r.integer("server.request_timeout_ms", c.server.request_timeout_ms, 1, 86'400'000);
    r.integer("server.send_timeout_ms", c.server.send_timeout_ms, 1, 86'400'000);
    r.integer("server.shutdown_grace_ms", c.server.shutdown_grace_ms, 0, 3'600'000);
    r.string("server.send_mode", send_mode);
    r.boolean("server.warm_cold_ranges", c.server.warm_cold_ranges);
    r.boolean("server.warm_always", c.server.warm_always);
    r.boolean("server.access_log", c.server.access_log);
    r.integer("server.background_slice_us", c.background_slice_us, 0, kMaxThreadSlice.count());
    r.string("admin.listen", admin_listen);
    r.string("admin.token", c.admin_token);
    r.size("admin.max_upload", c.max_upload_bytes);
    r.integer("admin.audit_keep", c.audit_keep, 0, std::int64_t{1} << 62);
    r.integer("admin.audit_keep_days", c.audit_keep_days, 0, 36'500);
    r.integer("admin.refusals_keep", c.refusals_keep, 0, 1'000'000);
    r.integer("admin.refusals_per_minute", c.refusals_per_minute, 0, 1'000'000);
    r.integer("admin.scan_threads", c.server.admin_scan_threads, 0, 16);
    r.integer("admin.max_scans_per_token", c.max_scans_per_token, 1, 1000);
    r.integer("admin.max_queued_scans", c.max_queued_scans, 1, 100'000);
    r.size("store.segment_size", c.store.segment_bytes);
    r.integer("store.index_cache_entries", c.store.cache_entries, 16, 1'000'000'000);
    r.size("store.block_cache", c.block_cache_bytes);
    r.size("store.write_buffer", c.write_buffer_bytes);
    if (c.write_buffer_bytes < (1ULL << 20) || c.write_buffer_bytes > (1ULL << 30)) {
      throw ConfigError("store.write_buffer: expected a size from 1MiB to 1GiB, got " +
                        std::to_string(c.write_buffer_bytes) + " bytes");
    }
    r.size("store.min_free", c.min_free_bytes);
    r.size("store.reserve", c.reserve_bytes);
    r.string("store.chunk_sync", chunk_sync);
    r.size("store.chunk_sync_bytes", c.store.sync_every_bytes);
    r.integer("store.chunk_sync_ms", c.store.sync_every_ms, 1, 3'600'000);
    r.string("store.chunk_write", chunk_write);
    r.size("cache.max_bytes", c.store.max_bytes);
    r.string("log.level", c.log_level);
    r.string("node.id", c.node_id);
    auto& u = c.upstream;
    if (const auto* n = r.get("upstream.url")) {
      // One URL, a comma-separated list (as --upstream takes), or an array of URLs.
      if (n->is_string()) {
        upstream_urls = n->as_string()->get();
      } else if (n->is_array()) {
        upstream_urls.clear();
        for (const auto& e : *n->as_array()) {
          if (!e.is_string())
            r.bad("upstream.url", "a URL, a comma-separated list of URLs or an array of URLs", e);
          if (e.as_string()->get().find(',') != std::string::npos) {
            throw ConfigError(file + ": upstream.url: an array entry holds a comma: '" +
                              e.as_string()->get() + "' (one URL per entry)");
          }
          upstream_urls += (upstream_urls.empty() ? "" : ",") + e.as_string()->get();
        }
        if (n->as_array()->empty())
          throw ConfigError(file + ": upstream.url: the list is empty (give at least one URL)");
      } else {
        r.bad("upstream.url", "a URL, a comma-separated list of URLs or an array of URLs", *n);
      }
    }
    r.string("upstream.token", u.token);
    r.integer("upstream.timeout_ms", u.timeout_ms, 100, 3'600'000);
    r.integer("upstream.retries", u.retries, 0, 100);
    r.integer("upstream.fill_concurrency", u.fill_concurrency, 1, 256);
    r.integer("upstream.poll_wait_ms", u.poll_wait_ms, 0, 60'000);
    r.integer("upstream.backoff_max_ms", u.backoff_max_ms, 100, 3'600'000);
    r.integer("upstream.prefetch_deadline_ms", u.prefetch_deadline_ms, 0, 86'400'000);
    r.integer("upstream.stale_after_ms", u.stale_after_ms, 0, 86'400'000);
    r.boolean("upstream.stale_is_unready", u.stale_is_unready);
    r.integer("upstream.max_fills_per_client", u.max_fills_per_client, 0, 100'000);
    r.integer("upstream.checkin_batch", u.checkin_batch, 1, 10'000);
    r.integer("upstream.status_interval_ms", u.status_interval_ms, 0, 3'600'000);
    r.string("sync.token", c.sync_token);
    if (const auto* n = r.get("sync.push_to")) {
      if (!n->is_array())
        r.bad("sync.push_to", "an array of URLs", *n);
      for (const auto& e : *n->as_array()) {
        if (!e.is_string())
          r.bad("sync.push_to", "an array of URLs", e);
        c.push_to.push_back(e.as_string()->get());
      }
    }
    r.integer("sync.changelog_keep", c.changelog_keep, 0, std::int64_t{1} << 62);
    r.integer("sync.fleet_expire_ms", c.fleet_expire_ms, 0, 86'400'000);
    r.integer("sync.channel_history_keep", c.channel_history_keep, 1, 100'000);
    r.size("outbox.max_bytes", c.outbox_max_bytes);
    r.integer("checkins.timeline_events", c.timeline_events, 0, 1000);
    r.integer("checkins.retention_days", c.retention_days, 0, 36'500);
    auto& t = c.server.tls;
    r.string("tls.listen", tls_listen);
    r.string("tls.cert_file", t.cert_file);
    r.string("tls.key_file", t.key_file);
    r.string("tls.min_protocol", t.min_protocol);
    r.string("tls.ciphers", t.ciphers);
    r.string("tls.ciphersuites", t.ciphersuites);
    r.string("tls.groups", t.groups);
    r.boolean("tls.session_tickets", t.session_tickets);
    r.boolean("tls.ktls", t.ktls);
    r.boolean("tls.admin", t.admin);
    r.string("upstream.ca_file", u.ca_file);
    r.string("sync.ca_file", c.push_ca_file);
    r.string("state.backend", c.state_backend);
    r.string("state.url", c.state_url);
    // [blobs] (origins): the embedded segment store, or a bucket shared by several origins.
    r.string("blobs.backend", c.blobs.backend);
    r.string("blobs.endpoint", c.blobs.endpoint);
    r.string("blobs.bucket", c.blobs.bucket);
    r.string("blobs.region", c.blobs.region);
    r.boolean("blobs.path_style", c.blobs.path_style);
    r.integer("blobs.timeout_ms", c.blobs.timeout_ms, 100, 3'600'000);
    r.integer("blobs.concurrency", c.blobs.concurrency, 1, 256);
    r.integer("gc.interval_s", c.gc.interval_s, 0, 30 * 86'400);
    r.integer("gc.grace_s", c.gc.grace_s, 0, 365 * 86'400);
    r.integer("gc.compact_below_pct", c.gc.compact_below_pct, 0, 100);
  }
  if (o.role)
    c.role = *o.role;
  if (o.listen)
    listen = *o.listen;
  if (o.admin_listen)
    admin_listen = *o.admin_listen;
  if (o.data_dir)
    data_dir = *o.data_dir;
  if (o.admin_token)
    c.admin_token = *o.admin_token;
  if (o.threads)
    threads = to_u32("--threads", *o.threads);

  if (o.upstream)
    upstream_urls = *o.upstream;
  if (o.sync_token)
    c.sync_token = *o.sync_token;
  if (o.node_id)
    c.node_id = *o.node_id;
  if (o.tls_listen)
    tls_listen = *o.tls_listen;
  if (o.tls_cert)
    c.server.tls.cert_file = *o.tls_cert;
  if (o.tls_key)
    c.server.tls.key_file = *o.tls_key;
  if (o.state_url) {
    c.state_url = *o.state_url;
    c.state_backend = "postgres";
  }
  if (c.state_backend != "embedded" && c.state_backend != "postgres") {
    throw ConfigError("state.backend: expected 'embedded' or 'postgres', got '" + c.state_backend +
                      "'");
  }
  if (c.state_backend == "postgres" && c.state_url.empty())
    throw ConfigError(
        "state.url: required when state.backend is 'postgres' (a libpq connection "
        "string, e.g. 'host=db1,db2 dbname=bundle_edge target_session_attrs=read-write')");
  if (c.state_backend == "postgres" && c.role == "edge")
    throw ConfigError(
        "state.backend: 'postgres' is for origins; an edge follows its upstream and "
        "keeps its state in its data directory");
  const auto check_url = [](const std::string& key, std::string& url) {
    // Node-to-node traffic: http:// or https:// (chain and host name verified, DESIGN §9).
    const std::size_t scheme = url.starts_with("http://") ? 7 : url.starts_with("https://") ? 8 : 0;
    const auto rest = scheme != 0 ? std::string_view(url).substr(scheme) : "";
    if (rest.substr(0, rest.find_first_of("/?#")).find('@') != std::string_view::npos) {
      // Not echoed: what precedes '@' is a credential. Tokens have keys of their own.
      throw ConfigError(key +
                        ": a URL carries user information (user@host); give the token in "
                        "upstream.token or sync.token instead");
    }
    if (rest.empty() || rest.find_first_of("/?#") < rest.find(':') ||
        rest.find(':') == std::string_view::npos) {
      throw ConfigError(key + ": expected http://host:port or https://host:port, got '" + url +
                        "'");
    }
    while (url.ends_with("/"))
      url.pop_back();
    (void)parse_host_port(key, std::string(url.substr(scheme)));
  };
  const auto check_readable = [](const std::string& key, const std::string& path) {
    if (path.empty())
      return;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
      throw ConfigError(key + ": '" + path + "' is not a readable file");
  };
  check_readable("upstream.ca_file", c.upstream.ca_file);
  check_readable("sync.ca_file", c.push_ca_file);
  if (!upstream_urls.empty())
    c.upstream.urls = parse_url_list("upstream.url", upstream_urls);
  if (c.role == "edge") {
    if (c.upstream.urls.empty())
      throw ConfigError("upstream.url: required when node.role is 'edge' (or --upstream URL)");
    const std::size_t n = c.upstream.urls.size();
    for (std::size_t i = 0; i < n; ++i) {
      check_url(
          n == 1 ? std::string("upstream.url")
                 : "upstream.url (URL " + std::to_string(i + 1) + " of " + std::to_string(n) + ")",
          c.upstream.urls[i]);
    }
    for (std::size_t i = 0; i < c.upstream.urls.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (c.upstream.urls[i] == c.upstream.urls[j]) {
          throw ConfigError("upstream.url: '" + c.upstream.urls[i] + "' is listed twice");
        }
      }
    }
    if (c.upstream.token.empty())
      c.upstream.token = c.sync_token;  // one shared secret per tree: the simple setup
    if (c.upstream.token.empty()) {
      throw ConfigError(
          "upstream.token: required when node.role is 'edge' (the upstream's sync.token; "
          "defaults to this node's sync.token)");
    }
  }
  for (auto& url : c.push_to)
    check_url("sync.push_to", url);
  if (!c.node_id.empty() && !is_plain_name(c.node_id))
    throw ConfigError("node.id: expected 1-64 of [A-Za-z0-9._-], got '" + c.node_id + "'");
  if (c.role != "origin" && c.role != "edge")
    throw ConfigError("node.role: expected 'origin' or 'edge', got '" + c.role + "'");
  if (data_dir.empty())
    throw ConfigError("node.data_dir: must not be empty");
  c.data_dir = data_dir;
  if (!tls_listen.empty()) {
    c.server.tls.enabled = true;
    std::tie(c.server.tls.listen_host, c.server.tls.listen_port) =
        parse_host_port("tls.listen", tls_listen);
    if (c.server.tls.cert_file.empty() || c.server.tls.key_file.empty()) {
      throw ConfigError(
          std::string(c.server.tls.cert_file.empty() ? "tls.cert_file" : "tls.key_file") +
          ": required when tls.listen is set");
    }
    if (c.server.tls.min_protocol != "TLSv1.2" && c.server.tls.min_protocol != "TLSv1.3") {
      throw ConfigError("tls.min_protocol: expected 'TLSv1.2' or 'TLSv1.3', got '" +
                        c.server.tls.min_protocol + "'");
    }
  } else if (c.server.tls.admin) {
    throw ConfigError("tls.admin: needs tls.listen (and its certificate) to be set");
  }
  if (listen.empty()) {
    // TLS only: no plain public listener (server.listen = "").
    if (!c.server.tls.enabled)
      throw ConfigError("server.listen: may be empty only when tls.listen is set");
    c.server.plain = false;
  } else {
    std::tie(c.server.listen_host, c.server.listen_port) = parse_host_port("server.listen", listen);
  }
  std::tie(c.server.admin_host, c.server.admin_port) =
      parse_host_port("admin.listen", admin_listen);
  if (send_mode != "sendfile" && send_mode != "copy") {
    throw ConfigError("server.send_mode: expected 'sendfile' or 'copy', got '" + send_mode + "'");
  }
  c.server.use_sendfile = send_mode == "sendfile";
  if (chunk_sync != "auto" && chunk_sync != "always" && chunk_sync != "background") {
    throw ConfigError("store.chunk_sync: expected 'auto', 'always' or 'background', got '" +
                      chunk_sync + "'");
  }
  // auto: an edge is a cache (chunks synced in the background, re-verified after a crash);
  // the origin holds the only copy (synced before anything is acknowledged).
  c.store.sync_in_background =
      chunk_sync == "background" || (chunk_sync == "auto" && c.role == "edge");
  if (chunk_write != "direct" && chunk_write != "page_cache") {
    throw ConfigError("store.chunk_write: expected 'direct' or 'page_cache', got '" + chunk_write +
                      "'");
  }
  c.store.direct_writes = chunk_write == "direct";
  if (c.store.sync_every_bytes < (1ULL << 20)) {
    throw ConfigError("store.chunk_sync_bytes: expected at least 1MiB, got " +
                      std::to_string(c.store.sync_every_bytes));
  }
  if (c.background_slice_us != 0 && c.background_slice_us < kMinThreadSlice.count()) {
    throw ConfigError("server.background_slice_us: expected 0 (the kernel's default) or " +
                      std::to_string(kMinThreadSlice.count()) + ".." +
                      std::to_string(kMaxThreadSlice.count()) +
                      " (the slices Linux accepts), got " + std::to_string(c.background_slice_us));
  }
  c.server.threads = threads == 0 ? std::max(1U, std::thread::hardware_concurrency()) : threads;
  if (c.server.header_limit_bytes < 1024 || c.server.header_limit_bytes > (1U << 20)) {
    throw ConfigError("server.header_limit: expected 1KiB..1MiB, got " +
                      std::to_string(c.server.header_limit_bytes));
  }
  if (c.store.segment_bytes < (2ULL << 20)) {
    throw ConfigError("store.segment_size: expected at least 2MiB, got " +
                      std::to_string(c.store.segment_bytes));
  }
  if (c.store.max_bytes != 0 && c.store.max_bytes < 2 * c.store.segment_bytes) {
    throw ConfigError("cache.max_bytes: expected 0 (no limit) or at least two segments (" +
                      std::to_string(2 * c.store.segment_bytes) + " bytes), got " +
                      std::to_string(c.store.max_bytes));
  }
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};
  if (!kLevels.contains(c.log_level)) {
    throw ConfigError("log.level: expected trace|debug|info|warn|error|off, got '" + c.log_level +
                      "'");
  }
  // Empty public_url: main derives it from the bound listener (port 0 picks a port).
  if (!c.public_url.empty() && !c.public_url.starts_with("http://") &&
      !c.public_url.starts_with("https://")) {
    throw ConfigError("node.public_url: expected an http:// or https:// URL, got '" + c.public_url +
                      "'");
  }
  while (c.public_url.ends_with("/"))
    c.public_url.pop_back();
  // [blobs]: the endpoint is checked in full where the S3 client is made (main).
  if (c.blobs.backend != "embedded" && c.blobs.backend != "s3") {
    throw ConfigError("blobs.backend: expected 'embedded' or 's3', got '" + c.blobs.backend + "'");
  }
  if (c.blobs.backend == "s3") {
    if (c.role != "origin") {
      throw ConfigError(
          "blobs.backend: 's3' is for origins (an edge fills from its upstream), and node.role is "
          "'" +
          c.role + "'");
    }
    if (!c.blobs.endpoint.starts_with("http://") && !c.blobs.endpoint.starts_with("https://")) {
      throw ConfigError("blobs.endpoint: expected an http:// or https:// URL, got '" +
                        c.blobs.endpoint + "'");
    }
    if (c.blobs.bucket.empty())
      throw ConfigError("blobs.bucket: expected a bucket name, got ''");
    if (c.blobs.region.empty())
      throw ConfigError("blobs.region: expected a region such as 'us-east-1' or 'auto', got ''");
  }
  return c;
}

}  // namespace edge
