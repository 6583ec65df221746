// Whole requests from the network: the bytes are parsed as an HTTP/1.1 request the way the
// server reads one (Beast's parser with the server's limits, then the framing rules of
// check_request_head), then routed through the real Api with a device API, a control
// service and the node-to-node routes attached, on both listeners. This reaches the
// request-head handling (smuggling rules, absolute-form targets), the device JSON handlers
// end to end (/updates, /stats single and batch, /channel_self bodies and queries,
// /updates/manifest_size), the blob/chunk/recipe and admin route and path parsing, the sync
// query numbers, the upload stream (PUT /v1/admin/blobs through an Upload, past the blob
// gate), POST /v1/admin/gc's body, and the
// percent-decoding of admin path segments ahead of the admin routes.
//
// The store is opened once with store.min_free set beyond any disk, so every write is
// refused (storage full): the handlers run in full, and ten million inputs do not fill the
// disk with check-ins.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include "edge/api/api.hpp"
#include "edge/http/http.hpp"
#include "edge/store/access_store.hpp"
#include "edge/store/checkin_store.hpp"
#include "edge/store/state_store.hpp"

namespace {

namespace bhttp = boost::beast::http;
using namespace edge;

constexpr std::string_view kToken = "fuzz-admin";
constexpr std::string_view kSync = "fuzz-sync";

struct Stack {
  std::filesystem::path dir;
  std::unique_ptr<store::Database> db;
  std::unique_ptr<store::ChunkStore> chunks;
  std::unique_ptr<store::BlobStore> blobs;
  std::unique_ptr<store::StateStore> state;
  std::unique_ptr<api::ControlService> control;
  std::unique_ptr<store::CheckinStore> checkins;
  std::unique_ptr<api::Metrics> metrics;
  std::unique_ptr<api::Api> api;
  std::unique_ptr<api::DeviceApi> device;
  std::unique_ptr<api::SyncApi> sync;
  std::unique_ptr<store::AccessStore> access_store;
  std::unique_ptr<api::Access> access;
  store::LocalBlobGate gate;
  boost::asio::io_context io;

  Stack() {
    char tmpl[] = "/tmp/api-fuzz-XXXXXX";
    dir = ::mkdtemp(tmpl);
    {
      // A state to answer from: one app, a release with a zip, a public channel.
      auto setup = store::Database::open(dir / "db");
      auto c = store::ChunkStore::open(*setup, dir / "seg");
      store::BlobStore b(*c);
      const std::string zip(70'000, 'z');
      auto info = b.put(std::span(reinterpret_cast<const std::uint8_t*>(zip.data()), zip.size()));
      store::StateStore s(*setup);
      api::ControlService cs(s, b);
      const auto put = [&](const std::string& path, const std::string& body) {
        bhttp::request<bhttp::empty_body> req(bhttp::verb::put, path, 11);
        (void)cs.handle(req, path, body);
      };
      put("/v1/admin/apps/com.example.app", "{}");
      put("/v1/admin/apps/com.example.app/releases/1.0.1", "{\"zip\":\"" + info->id.hex() + "\"}");
      put("/v1/admin/apps/com.example.app/channels/production",
          "{\"release\":\"1.0.1\",\"public\":true,\"allow_device_self_set\":true}");
    }
    store::DatabaseOptions full;
    full.min_free_bytes = ~std::uint64_t{0} >> 2;  // every write refused: storage full
    db = store::Database::open(dir / "db", full);
    chunks = store::ChunkStore::open(*db, dir / "seg");
    blobs = std::make_unique<store::BlobStore>(*chunks);
    state = std::make_unique<store::StateStore>(*db);
    control = std::make_unique<api::ControlService>(*state, *blobs);
    checkins = std::make_unique<store::CheckinStore>(*db);
    control->set_checkins(checkins.get());
    metrics = std::make_unique<api::Metrics>();
    api = std::make_unique<api::Api>(*chunks, *blobs, *metrics,
                                     api::ApiOptions{std::string(kToken), 1 << 20});
    device = std::make_unique<api::DeviceApi>(*control, "http://127.0.0.1:1", checkins.get(),
                                              blobs.get());
    sync = std::make_unique<api::SyncApi>(*state, *checkins, std::string(kSync));
    api->set_control(control.get());
    api->set_device(device.get());
    api->set_sync(sync.get());
    // Scoped tokens and the audit log (their parsers: token bodies, audit queries).
    access_store = std::make_unique<store::AccessStore>(*db);
    access = std::make_unique<api::Access>(access_store.get(), std::string(kToken));
    api->set_access(access.get());
    // POST /v1/admin/backup's body is parsed and checked here; no backup is written.
    api->set_backup([](std::string, std::function<void(api::Response)> reply) {
      reply(api::error_response(503, "fuzz", "no backups in the fuzz target", api::Route::kAdmin));
    });
    // POST /v1/admin/gc's body likewise; uploads and release writes pass a blob gate.
    api->set_gc([](bool, std::function<void(api::Response)> reply) {
      reply(
          api::error_response(503, "fuzz", "no collection in the fuzz target", api::Route::kAdmin));
    });
    api->set_blob_gates({&gate});
    api->set_ready(true);
  }
};

Stack& stack() {
  static Stack* s = new Stack();  // lives for the process: libFuzzer never returns
  static const bool cleanup = [] {
    // The temporary store goes with the process (the replay main and libFuzzer both exit).
    // The stack is torn down first: its store and writer threads must have stopped before
    // the static objects they use are destroyed, and before the directory goes.
    std::atexit([] {
      const auto dir = s->dir;
      delete s;
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    });
    return true;
  }();
  (void)cleanup;
  return *s;
}

void check(const api::Response& r) {
  if (r.later && r.scan) {
    // An admin scan (device index, stats, history, audit...): the server runs it on a scan
    // thread, where it answers at once; here it runs inline, so its handler is reached.
    bool answered = false;
    r.later(stack().io.get_executor(), [&](api::Response real) {
      answered = true;
      check(real);
    });
    if (!answered)
      __builtin_trap();
    return;
  }
  if (r.later)
    return;  // deferred (a durable write, a long poll): its answer comes later
  if (r.status < 100 || r.status > 599)
    __builtin_trap();
  // Every error body is JSON naming the error; messages are capped.
  if (r.status >= 400 && r.body.size() > api::kMaxErrorMessageBytes + 4096)
    __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& s = stack();
  // The first byte picks the listener; the rest is the request as it came off the wire.
  if (size == 0)
    return 0;
  const bool admin = (data[0] & 1) != 0;
  const std::string_view wire(reinterpret_cast<const char*>(data + 1), size - 1);

  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(1 << 20);
  parser.eager(true);
  boost::system::error_code ec;
  std::size_t used = parser.put(boost::asio::buffer(wire.data(), wire.size()), ec);
  if (!ec && !parser.is_done() && parser.is_header_done() && used < wire.size()) {
    used += parser.put(boost::asio::buffer(wire.data() + used, wire.size() - used), ec);
  }
  if (ec || !parser.is_header_done())
    return 0;
  const auto& req = parser.get();

  const auto bad = api::framing_error(req);
  if (bad && bad->empty())
    __builtin_trap();  // a refusal always says why
  const std::string_view raw_target(req.target().data(), req.target().size());
  if (http::origin_form(raw_target).size() > raw_target.size())
    __builtin_trap();
  if (bad)
    return 0;  // the server answers 400 and closes here

  if (admin && api::Api::is_upload(req)) {
    auto started = s.api->begin_upload(
        req, parser.content_length() ? std::optional(*parser.content_length()) : std::nullopt);
    if (auto* r = std::get_if<api::Response>(&started)) {
      check(*r);
      return 0;
    }
    auto& upload = std::get<std::unique_ptr<api::Upload>>(started);
    const std::string& body = req.body();
    (void)upload->write(std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()));
    std::atomic<bool> done{false};
    upload->finish(s.io.get_executor(), [&](api::Response r) {
      check(r);
      done = true;
    });
    while (!done) {  // the answer comes on a store thread or through the executor
      s.io.restart();
      if (s.io.poll_one() == 0)
        std::this_thread::yield();
    }
    return 0;
  }
  check(admin ? s.api->handle_admin(req, req.body()) : s.api->handle_public(req, req.body()));
  return 0;
}
