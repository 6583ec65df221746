// ControlService on a shared control log (the origin tier): a write validated against a state
// another origin has since moved past is refused by the log, and the service follows the log
// and runs the write again; a log that cannot take writes answers 503 and changes nothing.
// The log here is an in-memory stand-in with the tier's contract (store::ControlLog); the
// PostgreSQL one is tested against a real server in integration.tier.
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>

#include <gtest/gtest.h>

#include "edge/api/control_service.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/chunk_store.hpp"
#include "edge/store/control_log.hpp"
#include "edge/store/database.hpp"
#include "edge/store/state_store.hpp"

#include <unistd.h>

namespace {

namespace bhttp = boost::beast::http;
using namespace edge;

struct Shared {
  std::mutex mutex;
  std::vector<store::Change> log;  // log[i].seq == i + 1
  std::string epoch = "0123abcd";
};

/// One origin's view of the shared log: commits number after the shared head, or conflict.
class FakeLog final : public store::ControlLog {
 public:
  FakeLog(Shared& shared, store::StateStore& mirror) : shared_(shared), mirror_(mirror) {}
  bool down = false;
  int conflicts = 0;

  Result<std::uint64_t> commit(store::StateStore::Batch& batch, std::uint64_t based_on) override {
    if (down)
      return Errc::kUnavailable;
    std::vector<store::Change> changes = batch.changes();
    {
      std::lock_guard lock(shared_.mutex);
      if (based_on != shared_.log.size()) {
        ++conflicts;
        return Errc::kConflict;
      }
      for (auto& c : changes) {
        c.seq = shared_.log.size() + 1;
        shared_.log.push_back(c);
      }
    }
    return mirror_.apply(changes);
  }
  bool shared() const override { return true; }
  Result<store::FollowStep> follow(std::uint64_t after, const std::string& epoch,
                                   std::size_t limit) override {
    if (down)
      return Errc::kUnavailable;
    if (epoch.empty())
      (void)mirror_.set_epoch(shared_.epoch);
    std::lock_guard lock(shared_.mutex);
    store::FollowStep step;
    for (std::size_t i = after; i < shared_.log.size() && step.changes.size() < limit; ++i)
      step.changes.push_back(shared_.log[i]);
    return step;
  }
  bool wait_change(std::chrono::milliseconds) override { return false; }
  void interrupt() override {}

 private:
  Shared& shared_;
  store::StateStore& mirror_;
};

struct Origin {
  Origin(const std::filesystem::path& dir, Shared& shared) {
    db = store::Database::open(dir / "db");
    chunks = store::ChunkStore::open(*db, dir / "seg");
    blobs = std::make_unique<store::BlobStore>(*chunks);
    state = std::make_unique<store::StateStore>(*db);
    control = std::make_unique<api::ControlService>(*state, *blobs);
    log = std::make_unique<FakeLog>(shared, *state);
    control->set_log(*log);
  }
  ~Origin() {
    control.reset();
    log.reset();
    state.reset();
    blobs.reset();
    chunks.reset();
    db.reset();
  }
  api::Response put(const std::string& path, const std::string& body) {
    bhttp::request<bhttp::empty_body> req(bhttp::verb::put, path, 11);
    return control->handle(req, path, body);
  }
  std::unique_ptr<store::Database> db;
  std::unique_ptr<store::ChunkStore> chunks;
  std::unique_ptr<store::BlobStore> blobs;
  std::unique_ptr<store::StateStore> state;
  std::unique_ptr<api::ControlService> control;
  std::unique_ptr<FakeLog> log;
};

struct SharedLog : ::testing::Test {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("shared-log-" + std::to_string(::getpid()));
  Shared shared;
  std::unique_ptr<Origin> a, b;
  void SetUp() override {
    std::filesystem::remove_all(dir);
    a = std::make_unique<Origin>(dir / "a", shared);
    b = std::make_unique<Origin>(dir / "b", shared);
    ASSERT_EQ(a->put("/v1/admin/apps/com.example.app", "{}").status, 201U);
    ASSERT_TRUE(b->control->catch_up());
  }
  void TearDown() override {
    a.reset();
    b.reset();
    std::filesystem::remove_all(dir);
  }
};

TEST_F(SharedLog, AWriteBasedOnAnOldStateCatchesUpAndRunsAgain) {
  ASSERT_EQ(a->put("/v1/admin/apps/com.example.app/channels/beta", R"({"public":false})").status,
            201U);
  // B has not seen A's write: its first attempt conflicts, then it follows and succeeds.
  const auto r = b->put("/v1/admin/apps/com.example.app/channels/gamma", R"({"public":false})");
  ASSERT_EQ(r.status, 201U) << r.body;
  EXPECT_EQ(b->log->conflicts, 1);
  const auto app = b->control->snapshot()->app("com.example.app");
  ASSERT_NE(app, nullptr);
  EXPECT_TRUE(app->channels.contains("beta"));
  EXPECT_TRUE(app->channels.contains("gamma"));
  EXPECT_EQ(b->state->last_seq(), 3U);
  ASSERT_TRUE(a->control->catch_up());
  EXPECT_TRUE(a->control->snapshot()->app("com.example.app")->channels.contains("gamma"));
  // One order everywhere: the shared log is gapless.
  for (std::size_t i = 0; i < shared.log.size(); ++i)
    EXPECT_EQ(shared.log[i].seq, i + 1);
}

TEST_F(SharedLog, AnUnavailableLogAnswers503AndChangesNothing) {
  b->log->down = true;
  const auto before = b->state->last_seq();
  const auto r = b->put("/v1/admin/apps/com.example.app/channels/beta", R"({"public":false})");
  EXPECT_EQ(r.status, 503U);
  EXPECT_NE(r.body.find("state_backend_unavailable"), std::string::npos) << r.body;
  EXPECT_EQ(b->state->last_seq(), before);
  EXPECT_FALSE(b->control->snapshot()->app("com.example.app")->channels.contains("beta"));
  EXPECT_FALSE(b->control->log_available());
  b->log->down = false;
  EXPECT_EQ(b->put("/v1/admin/apps/com.example.app/channels/beta", R"({"public":false})").status,
            201U);
}

TEST_F(SharedLog, ADeviceOverrideWriteAlsoCatchesUp) {
  ASSERT_EQ(a->put("/v1/admin/apps/com.example.app/channels/beta", R"({"public":false})").status,
            201U);
  std::promise<bool> done;
  b->control->async_set_device_override("com.example.app", "0a1b2c3d-1111-4222-8333-444455556666",
                                        std::string("beta"),
                                        [&done](bool ok) { done.set_value(ok); });
  EXPECT_TRUE(done.get_future().get());
  EXPECT_GE(b->log->conflicts, 1);
  EXPECT_EQ(shared.log.size(), 3U);
}

}  // namespace
