// The Fetcher's pool: threads made when fills come (up to fill_concurrency), none before.
#include "origin-sync/fetcher.hpp"

#include <chrono>
#include <filesystem>
#include <future>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "edge/store/blob_store.hpp"
#include "edge/store/chunk_store.hpp"
#include "edge/store/database.hpp"

#include "tests/unit/sync/scripted_server.hpp"

namespace edge::sync {
namespace {

using test_support::ScriptedServer;

struct TempDir {
  TempDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           ("edge-fetcher-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path path;
};

TEST(Fetcher, PoolThreadsAreMadeWhenFillsComeUpToFillConcurrency) {
  const std::string missing = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
  ScriptedServer upstream({{missing}});
  TempDir tmp;
  auto db = store::Database::open(tmp.path / "db");
  auto chunks = store::ChunkStore::open(*db, tmp.path / "seg");
  store::BlobStore blobs(*chunks);
  api::UpstreamOptions o;
  o.urls = {upstream.url()};
  o.timeout_ms = 2000;
  o.fill_concurrency = 2;
  api::SyncMetrics metrics;
  UpstreamSet set(o, &metrics);
  Fetcher fetcher(o, set, *chunks, blobs, metrics);
  EXPECT_EQ(fetcher.threads(), 0U) << "an idle fetcher keeps no thread";

  std::promise<boost::system::error_code> first;
  fetcher.fill_chunk(sha256_of(std::string_view("a")),
                     [&first](boost::system::error_code ec) { first.set_value(ec); });
  EXPECT_EQ(first.get_future().get(), Errc::kNotFound);
  EXPECT_EQ(fetcher.threads(), 1U) << "one fill, one thread (it stays a while for the next)";

  fetcher.stop();
  EXPECT_EQ(fetcher.threads(), 0U);
}

}  // namespace
}  // namespace edge::sync
