#include "edge/config.hpp"

#include <fstream>

#include <gtest/gtest.h>

#include "../store/test_util.hpp"

namespace edge {
namespace {

Config load_text(const std::string& text, ConfigOverrides o = {}) {
  store::testing::TempDir tmp;
  const auto path = tmp.path() / "c.toml";
  std::ofstream(path) << text;
  o.config_file = path;
  return load_config(o);
}

std::string error_of(const std::string& text) {
  try {
    load_text(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(Config, DefaultsAreAStandaloneOrigin) {
  const Config c = load_config({});
  EXPECT_EQ(c.role, "origin");
  EXPECT_EQ(c.data_dir, "./var");
  EXPECT_EQ(c.server.listen_host, "127.0.0.1");
  EXPECT_EQ(c.server.listen_port, 8080);
  EXPECT_EQ(c.server.admin_port, 9090);
  EXPECT_TRUE(c.public_url.empty()) << "derived from the bound listener at start-up";
  EXPECT_EQ(c.store.max_bytes, 0U);
  EXPECT_TRUE(c.server.use_sendfile);
  EXPECT_GE(c.server.threads, 1U);
}

TEST(Config, FileAndFlagOverrides) {
  ConfigOverrides o;
  o.listen = "0.0.0.0:80";
  o.threads = "3";
  const Config c = load_text(R"(
[server]
listen = "127.0.0.1:1234"
header_limit = "32KiB"
send_mode = "copy"
[cache]
max_bytes = "10GiB"
[admin]
max_upload = 1048576
)",
                             o);
  EXPECT_EQ(c.server.listen_host, "0.0.0.0") << "flags win over the file";
  EXPECT_EQ(c.server.listen_port, 80);
  EXPECT_EQ(c.server.threads, 3U);
  EXPECT_EQ(c.server.header_limit_bytes, 32U * 1024);
  EXPECT_FALSE(c.server.use_sendfile);
  EXPECT_EQ(c.store.max_bytes, 10ULL << 30);
  EXPECT_EQ(c.max_upload_bytes, 1U << 20);
}

TEST(Config, ErrorsNameTheKeyAndValue) {
  EXPECT_NE(error_of("[server]\nthreds = 1\n").find("unknown key 'server.threds'"),
            std::string::npos);
  EXPECT_NE(error_of("[cache]\nmax_bytes = \"10 gigs\"\n")
                .find("cache.max_bytes: expected a size like 10GiB, got '10 gigs'"),
            std::string::npos);
  EXPECT_NE(error_of("[server]\nthreads = \"two\"\n").find("server.threads"), std::string::npos);
  EXPECT_NE(error_of("[server]\nlisten = \"localhost\"\n").find("server.listen"),
            std::string::npos);
  EXPECT_NE(error_of("[server]\nlisten = \"1.2.3.4:99999\"\n").find("server.listen"),
            std::string::npos);
  EXPECT_NE(error_of("[node]\nrole = \"cdn\"\n").find("node.role"), std::string::npos);
  EXPECT_NE(error_of("[log]\nlevel = \"loud\"\n").find("log.level"), std::string::npos);
  EXPECT_NE(error_of("nonsense = 1\n").find("unknown top-level key 'nonsense'"), std::string::npos);
  EXPECT_NE(error_of("[server\n").find("c.toml:"), std::string::npos)
      << "syntax errors give the line";
}

TEST(Config, CheckinKeysAreReadAndBounded) {
  const Config c = load_text("[checkins]\ntimeline_events = 8\nretention_days = 0\n");
  EXPECT_EQ(c.timeline_events, 8U);
  EXPECT_EQ(c.retention_days, 0U);
  EXPECT_EQ(load_config({}).timeline_events, 50U);
  EXPECT_EQ(load_config({}).retention_days, 90U);
  EXPECT_NE(error_of("[checkins]\ntimeline_events = 1001\n").find("checkins.timeline_events"),
            std::string::npos);
  EXPECT_NE(error_of("[checkins]\nretention_days = -1\n").find("checkins.retention_days"),
            std::string::npos);
  EXPECT_NE(error_of("[checkins]\nretention_days = \"90d\"\n").find("checkins.retention_days"),
            std::string::npos);
}

TEST(Config, FleetExpiryIsReadAndBounded) {
  EXPECT_EQ(load_config({}).fleet_expire_ms, 0U) << "0: derived from the status interval";
  EXPECT_EQ(load_text("[sync]\nfleet_expire_ms = 3000\n").fleet_expire_ms, 3000U);
  EXPECT_NE(error_of("[sync]\nfleet_expire_ms = -1\n").find("sync.fleet_expire_ms"),
            std::string::npos);
  EXPECT_NE(error_of("[sync]\nfleet_expire_ms = 86400001\n").find("sync.fleet_expire_ms"),
            std::string::npos);
}

TEST(Config, AuditAndHistoryKeysAreReadAndBounded) {
  const Config d = load_config({});
  EXPECT_EQ(d.audit_keep, 100'000U);
  EXPECT_EQ(d.audit_keep_days, 90U);
  EXPECT_EQ(d.refusals_keep, 10'000U);
  EXPECT_EQ(d.refusals_per_minute, 30U);
  EXPECT_EQ(d.channel_history_keep, 200U);
  const Config c = load_text(
      "[admin]\naudit_keep = 0\naudit_keep_days = 7\nrefusals_keep = 5\n"
      "refusals_per_minute = 0\n[sync]\nchannel_history_keep = 20\n");
  EXPECT_EQ(c.audit_keep, 0U);
  EXPECT_EQ(c.audit_keep_days, 7U);
  EXPECT_EQ(c.refusals_keep, 5U);
  EXPECT_EQ(c.refusals_per_minute, 0U);
  EXPECT_EQ(c.channel_history_keep, 20U);
  EXPECT_NE(error_of("[sync]\nchannel_history_keep = 0\n").find("sync.channel_history_keep"),
            std::string::npos);
  EXPECT_NE(error_of("[admin]\naudit_keep_days = -1\n").find("admin.audit_keep_days"),
            std::string::npos);
}

// store.chunk_sync (issue #14): an edge syncs chunk data in the background by default,
// the origin before every acknowledgement; both can be forced; bad values name the key.
TEST(Config, ChunkSyncFollowsTheRoleUnlessSet) {
  const std::string edge =
      "[node]\nrole = \"edge\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n";
  EXPECT_FALSE(load_text("").store.sync_in_background);
  EXPECT_TRUE(load_text(edge).store.sync_in_background);
  EXPECT_FALSE(load_text(edge + "[store]\nchunk_sync = \"always\"\n").store.sync_in_background);
  const Config c = load_text(
      "[store]\nchunk_sync = \"background\"\nchunk_sync_bytes = \"8MiB\"\nchunk_sync_ms = 250\n");
  EXPECT_TRUE(c.store.sync_in_background);
  EXPECT_EQ(c.store.sync_every_bytes, 8ULL << 20);
  EXPECT_EQ(c.store.sync_every_ms, 250U);
  EXPECT_NE(error_of("[store]\nchunk_sync = \"sometimes\"\n").find("store.chunk_sync"),
            std::string::npos);
  EXPECT_NE(error_of("[store]\nchunk_sync_bytes = \"4KiB\"\n").find("store.chunk_sync_bytes"),
            std::string::npos);
  EXPECT_NE(error_of("[store]\nchunk_sync_ms = 0\n").find("store.chunk_sync_ms"),
            std::string::npos);
  EXPECT_TRUE(load_text(edge).store.direct_writes);
  EXPECT_FALSE(load_text(edge + "[store]\nchunk_write = \"page_cache\"\n").store.direct_writes);
  EXPECT_NE(error_of("[store]\nchunk_write = \"mmap\"\n").find("store.chunk_write: expected"),
            std::string::npos);
}

// server.background_slice_us: the io threads' neighbours get short scheduler slices by
// default; 0 turns it off; values the kernel would clamp are refused with the key.
TEST(Config, BackgroundSliceIsBoundedAndZeroTurnsItOff) {
  const Config d = load_config({});
  EXPECT_EQ(d.background_slice_us, 100U);
  const Config off = load_text("[server]\nbackground_slice_us = 0\n");
  EXPECT_EQ(off.background_slice_us, 0U);
  EXPECT_EQ(load_text("[server]\nbackground_slice_us = 2000\n").background_slice_us, 2000U);
  EXPECT_NE(error_of("[server]\nbackground_slice_us = 50\n")
                .find("server.background_slice_us: expected 0 (the kernel's default) or "
                      "100..100000 (the slices Linux accepts), got 50"),
            std::string::npos);
  EXPECT_NE(error_of("[server]\nbackground_slice_us = 100001\n").find("server.background_slice_us"),
            std::string::npos);
  EXPECT_NE(error_of("[server]\nbackground_slice_us = -1\n").find("server.background_slice_us"),
            std::string::npos);
}

TEST(Config, ShippedConfigsLoad) {
  // The documented files must stay in step with the keys the loader knows.
  for (const char* name : {"bundle-edge.toml", "origin.toml", "edge.toml"}) {
    ConfigOverrides o;
    o.config_file = std::filesystem::path(EDGE_SOURCE_DIR) / "conf" / name;
    EXPECT_NO_THROW(load_config(o)) << name;
  }
  ConfigOverrides o;
  o.config_file = std::filesystem::path(EDGE_SOURCE_DIR) / "conf" / "origin.toml";
  const Config c = load_config(o);
  EXPECT_EQ(c.public_url, "https://updates.example.com");
  EXPECT_EQ(c.server.listen_host, "0.0.0.0");
}

TEST(Config, EdgeNeedsAnUpstreamAndATokenAndNamesBadValues) {
  EXPECT_NE(error_of("[node]\nrole = \"edge\"\n").find("upstream.url: required"),
            std::string::npos);
  EXPECT_NE(error_of("[node]\nrole = \"edge\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n")
                .find("upstream.token: required"),
            std::string::npos);
  EXPECT_NE(
      error_of("[node]\nrole = \"edge\"\n[upstream]\nurl = \"ftp://x:1\"\ntoken = "
               "\"t\"\n")
          .find("upstream.url: expected http://host:port or https://host:port, got 'ftp://x:1'"),
      std::string::npos);
  EXPECT_EQ(error_of("[node]\nrole = \"edge\"\n[upstream]\nurl = \"https://x:1/\"\ntoken = "
                     "\"t\"\n"),
            "no error");
  EXPECT_NE(error_of("[upstream]\nca_file = \"/nonexistent/ca.pem\"\n")
                .find("upstream.ca_file: '/nonexistent/ca.pem' is not a readable file"),
            std::string::npos);
  EXPECT_NE(error_of("[sync]\npush_to = [\"http://a\"]\n").find("sync.push_to"), std::string::npos);
  EXPECT_NE(error_of("[sync]\npush_to = \"http://a:1\"\n").find("sync.push_to: expected an array"),
            std::string::npos);
  EXPECT_NE(error_of("[node]\nid = \"a b\"\n").find("node.id"), std::string::npos);
  EXPECT_NE(error_of("[upstream]\nfill_concurrency = 0\n").find("upstream.fill_concurrency"),
            std::string::npos);
  EXPECT_NE(error_of("[node]\nrole = \"cdn\"\n").find("'origin' or 'edge'"), std::string::npos);

  ConfigOverrides o;
  o.upstream = "http://127.0.0.1:8080/";
  const Config c = load_text(
      "[node]\nrole = \"edge\"\n[upstream]\ntoken = \"t\"\nretries = 5\n[outbox]\nmax_bytes "
      "= \"2MiB\"\n",
      o);
  EXPECT_EQ(c.upstream.urls, std::vector<std::string>{"http://127.0.0.1:8080"})
      << "the flag wins, trailing slash dropped";
  EXPECT_EQ(c.upstream.retries, 5U);
  EXPECT_EQ(c.outbox_max_bytes, 2U << 20);
  EXPECT_EQ(c.changelog_keep, 100'000U);
}

std::string edge_error(const std::string& upstream_table) {
  return error_of("[node]\nrole = \"edge\"\n[upstream]\ntoken = \"t\"\n" + upstream_table);
}

std::vector<std::string> edge_urls(const std::string& upstream_table, ConfigOverrides o = {}) {
  return load_text("[node]\nrole = \"edge\"\n[upstream]\ntoken = \"t\"\n" + upstream_table, o)
      .upstream.urls;
}

TEST(Config, SeveralUpstreamsInOrderOfPreference) {
  using Urls = std::vector<std::string>;
  // One URL: as it always was.
  EXPECT_EQ(edge_urls("url = \"http://a:1\"\n"), Urls{"http://a:1"});
  // An array, and a comma-separated string (what --upstream takes): the same list, in order,
  // spaces and trailing slashes dropped.
  const Urls two{"http://a:1", "https://b.example:8443"};
  EXPECT_EQ(edge_urls("url = [\"http://a:1\", \"https://b.example:8443/\"]\n"), two);
  EXPECT_EQ(edge_urls("url = \"http://a:1, https://b.example:8443/\"\n"), two);
  ConfigOverrides o;
  o.upstream = "http://c:3,http://[::1]:4";
  EXPECT_EQ(edge_urls("url = [\"http://a:1\", \"http://b:2\"]\n", o),
            (Urls{"http://c:3", "http://[::1]:4"}))
      << "--upstream replaces the file's list";
  o.upstream = "http://c:3";
  EXPECT_EQ(edge_urls("url = [\"http://a:1\", \"http://b:2\"]\n", o), Urls{"http://c:3"});

  // An empty entry, anywhere, is named by its position.
  EXPECT_NE(
      edge_error("url = \"http://a:1,,http://b:2\"\n").find("upstream.url: URL 2 of 3 is empty"),
      std::string::npos)
      << edge_error("url = \"http://a:1,,http://b:2\"\n");
  EXPECT_NE(edge_error("url = \"http://a:1,\"\n").find("URL 2 of 2 is empty"), std::string::npos);
  EXPECT_NE(edge_error("url = \" , http://a:1\"\n").find("URL 1 of 2 is empty"), std::string::npos);
  EXPECT_NE(edge_error("url = [\"http://a:1\", \"\"]\n").find("URL 2 of 2 is empty"),
            std::string::npos);
  EXPECT_NE(edge_error("url = []\n").find("upstream.url: the list is empty"), std::string::npos);
  // A malformed one is named with its position and value.
  EXPECT_NE(edge_error("url = [\"http://a:1\", \"ftp://b:2\"]\n")
                .find("upstream.url (URL 2 of 2): expected http://host:port or "
                      "https://host:port, got 'ftp://b:2'"),
            std::string::npos)
      << edge_error("url = [\"http://a:1\", \"ftp://b:2\"]\n");
  EXPECT_NE(edge_error("url = \"http://a:1,http://b\"\n").find("(URL 2 of 2)"), std::string::npos);
  EXPECT_NE(edge_error("url = \"http://a:1,http://b:99999\"\n").find("(URL 2 of 2)"),
            std::string::npos);
  // Wrong types, a comma inside an array entry, the same upstream twice.
  EXPECT_NE(edge_error("url = [\"http://a:1\", 2]\n")
                .find("upstream.url: expected a URL, a comma-separated list of URLs or an array"),
            std::string::npos);
  EXPECT_NE(edge_error("url = 5\n").find("upstream.url: expected a URL"), std::string::npos);
  EXPECT_NE(edge_error("url = [\"http://a:1,http://b:2\"]\n").find("holds a comma"),
            std::string::npos);
  EXPECT_NE(edge_error("url = \"http://a:1, http://a:1/\"\n")
                .find("upstream.url: 'http://a:1' is listed twice"),
            std::string::npos);
  // Credentials never go in a URL (they would reach logs and /metrics): refused, unechoed.
  const std::string creds = edge_error("url = \"http://a:1,http://user:secret@b:2\"\n");
  EXPECT_NE(creds.find("upstream.url (URL 2 of 2): a URL carries user information"),
            std::string::npos)
      << creds;
  EXPECT_EQ(creds.find("secret"), std::string::npos) << creds;
  // The same checks on the command line.
  ConfigOverrides bad;
  bad.upstream = "http://a:1,";
  EXPECT_THROW(edge_urls("", bad), ConfigError);
}

TEST(Config, TlsTable) {
  // Off by default: no listener, plain HTTP stays on.
  EXPECT_FALSE(load_config({}).server.tls.enabled);
  const Config c = load_text(
      "[tls]\nlisten = \"0.0.0.0:8443\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n"
      "min_protocol = \"TLSv1.3\"\nadmin = true\nktls = false\n[server]\nlisten = \"\"\n");
  EXPECT_TRUE(c.server.tls.enabled);
  EXPECT_EQ(c.server.tls.listen_host, "0.0.0.0");
  EXPECT_EQ(c.server.tls.listen_port, 8443);
  EXPECT_EQ(c.server.tls.cert_file, "c.pem");
  EXPECT_EQ(c.server.tls.min_protocol, "TLSv1.3");
  EXPECT_TRUE(c.server.tls.admin);
  EXPECT_FALSE(c.server.tls.ktls);
  EXPECT_FALSE(c.server.plain) << "server.listen = \"\": HTTPS only";
  ConfigOverrides o;
  o.tls_listen = "127.0.0.1:0";
  o.tls_cert = "a.pem";
  o.tls_key = "b.pem";
  const Config f = load_config(o);
  EXPECT_TRUE(f.server.tls.enabled);
  EXPECT_EQ(f.server.tls.listen_port, 0);
  EXPECT_EQ(f.server.tls.key_file, "b.pem");

  EXPECT_NE(error_of("[tls]\nlisten = \"0.0.0.0:8443\"\n").find("tls.cert_file: required"),
            std::string::npos);
  EXPECT_NE(error_of("[tls]\nlisten = \"0.0.0.0:8443\"\ncert_file = \"c\"\n")
                .find("tls.key_file: required"),
            std::string::npos);
  EXPECT_NE(error_of("[tls]\nlisten = \"8443\"\ncert_file = \"c\"\nkey_file = \"k\"\n")
                .find("tls.listen"),
            std::string::npos);
  EXPECT_NE(error_of("[tls]\nlisten = \"0.0.0.0:8443\"\ncert_file = \"c\"\nkey_file = \"k\"\n"
                     "min_protocol = \"TLSv1.0\"\n")
                .find("tls.min_protocol: expected 'TLSv1.2' or 'TLSv1.3', got 'TLSv1.0'"),
            std::string::npos);
  EXPECT_NE(error_of("[tls]\nadmin = true\n").find("tls.admin: needs tls.listen"),
            std::string::npos);
  EXPECT_NE(error_of("[server]\nlisten = \"\"\n").find("server.listen: may be empty only"),
            std::string::npos);
  EXPECT_NE(error_of("[tls]\nktls = \"yes\"\n").find("tls.ktls: expected true or false"),
            std::string::npos);
}

TEST(Config, BlobsTableDefaultsToEmbeddedAndChecksS3Keys) {
  const Config d = load_config({});
  EXPECT_EQ(d.blobs.backend, "embedded");
  const Config c = load_text(
      "[blobs]\nbackend = \"s3\"\nendpoint = \"https://s3.eu-west-1.amazonaws.com\"\n"
      "bucket = \"b\"\nregion = \"eu-west-1\"\npath_style = false\ntimeout_ms = 5000\n"
      "concurrency = 4\n");
  EXPECT_EQ(c.blobs.backend, "s3");
  EXPECT_EQ(c.blobs.endpoint, "https://s3.eu-west-1.amazonaws.com");
  EXPECT_EQ(c.blobs.bucket, "b");
  EXPECT_EQ(c.blobs.region, "eu-west-1");
  EXPECT_FALSE(c.blobs.path_style);
  EXPECT_EQ(c.blobs.timeout_ms, 5000U);
  EXPECT_EQ(c.blobs.concurrency, 4U);
  EXPECT_NE(error_of("[blobs]\nbackend = \"gcs\"\n").find("blobs.backend"), std::string::npos);
  EXPECT_NE(error_of("[blobs]\nbackend = \"s3\"\nbucket = \"b\"\n").find("blobs.endpoint"),
            std::string::npos);
  EXPECT_NE(error_of("[blobs]\nbackend = \"s3\"\nendpoint = \"s3.example.com\"\nbucket = "
                     "\"b\"\n")
                .find("'s3.example.com'"),
            std::string::npos);
  EXPECT_NE(error_of("[blobs]\nbackend = \"s3\"\nendpoint = \"http://h\"\n").find("blobs.bucket"),
            std::string::npos);
  EXPECT_NE(error_of("[blobs]\nconcurrency = 0\n").find("blobs.concurrency"), std::string::npos);
  EXPECT_NE(error_of("[node]\nrole = \"edge\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n"
                     "token = \"t\"\n[blobs]\nbackend = \"s3\"\nendpoint = \"http://h\"\n"
                     "bucket = \"b\"\n")
                .find("for origins"),
            std::string::npos);
}

TEST(Config, Sizes) {
  EXPECT_EQ(parse_size("k", "0"), 0U);
  EXPECT_EQ(parse_size("k", "1KiB"), 1024U);
  EXPECT_EQ(parse_size("k", "1.5MiB"), 1572864U);
  EXPECT_EQ(parse_size("k", "2 GB"), 2000000000U);
  EXPECT_THROW(parse_size("k", "1.5B"), ConfigError);
  EXPECT_THROW(parse_size("k", "12XB"), ConfigError);
  EXPECT_THROW(parse_size("k", "-1"), ConfigError);
  EXPECT_THROW(parse_size("k", ""), ConfigError);
}

}  // namespace
}  // namespace edge
