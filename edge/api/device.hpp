#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edge/api/control_service.hpp"
#include "edge/api/device_info.hpp"
#include "edge/api/response.hpp"
#include "edge/store/checkin_backend.hpp"

namespace edge::api {

/// The device endpoints of capgo-protocol.md (the unmodified @capgo/capacitor-updater
/// plugin). Pure request -> response over the ControlService's snapshot.
///
/// Covers /updates, /updates/manifest_size, /stats and /channel_self; every /updates and
/// /stats event is a check-in (on an edge, durable in the outbox before the answer).
class DeviceApi {
 public:
  /// `public_url`: this node's URL as devices reach it (update and manifest URLs).
  /// `checkins` may be null (nothing is recorded); `blobs` serves manifest_size.
  /// `durable`: answer a check-in only once it is committed (edges: the outbox must not
  /// lose what a device was told was recorded); otherwise it is queued and answered now.
  DeviceApi(ControlService& control, std::string public_url,
            store::CheckinIngest* checkins = nullptr, const store::BlobStore* blobs = nullptr,
            bool durable = false)
      : control_(control),
        public_url_(std::move(public_url)),
        checkins_(checkins),
        blobs_(blobs),
        durable_(durable) {}

  /// POST /updates/manifest_size (§2.8): the download size of each manifest entry, from the
  /// blob its download_url names on this node.
  Response manifest_size(std::string_view body) const;

  /// POST /stats: one event or a batch (§3); GET /stats -> {"status":"ok"}.
  Response stats(bool post, std::string_view body) const;

  /// POST /updates with the plugin's info object (§2.1-2.3); GET /updates -> {"status":"ok"}.
  Response updates(bool post, std::string_view body) const;

  /// POST /v1/admin/apps/<app>/decide ("test as a device"): what /updates would answer the
  /// device the body describes (the plugin's info object; `app_id` may be left out, and
  /// must be `app_id` if given), and why, without recording a check-in:
  /// {"status","answer","why":{"channel","channel_reason","rollout","kind","error",
  /// "release","via_override","via_rollout","send_zip","send_manifest"}}. A body /updates
  /// would refuse gets the same 400.
  Response decide_for(std::string_view app_id, std::string_view body) const;

  /// GET /website_live?app_id= (§10 item 11): this node offers no website mode, so every
  /// app, known or not (no app-id oracle), gets 200 {"allowed":false,"mode":"capgo"} and the
  /// plugin stays on /updates.
  static Response website_live();

  /// /channel_self (§4): POST = setChannel, PUT = getChannel, GET = listChannels (info
  /// object in the query string), DELETE = unset for old plugins. `query` is the part of
  /// the target after '?'.
  Response channel_self(std::string_view method, std::string_view query,
                        std::string_view body) const;

 private:
  /// `why`, when given, gets the decision's reasons as a JSON object (decide_for).
  Response updates_now(bool post, std::string_view body, std::vector<store::Checkin>& pending,
                       std::string* why = nullptr) const;
  Response stats_now(bool post, std::string_view body, std::vector<store::Checkin>& pending) const;
  /// The JSON answer that sends release `name` (`doc`) to a device.
  std::string update_answer(const control::ReleaseDoc& doc, const std::string& name, bool send_zip,
                            bool send_manifest, bool metadata) const;
  /// Records `pending` and answers `r` (after the commit when durable_).
  Response record_then(Response r, std::vector<store::Checkin> pending) const;
  /// A deferred /channel_self answer: {"status":"ok"} once the override write is durable,
  /// 200 override_not_allowed with `failure` if it failed.
  Response write_override(std::string app_id, std::string device_id,
                          std::optional<std::string> channel, std::string_view failure) const;

  ControlService& control_;
  std::string public_url_;
  store::CheckinIngest* checkins_;
  const store::BlobStore* blobs_;
  bool durable_ = false;
  /// Tells this object's cached answers from another's (an address can be reused).
  std::uint64_t instance_ = next_instance();
  static std::uint64_t next_instance();
};

/// A JSON answer longer than this is refused by plugin 8.52's engine (capgo-protocol §10
/// item 5), so a release whose /updates answer would be longer is refused at publish.
inline constexpr std::uint64_t kMaxJsonAnswerBytes = 16 << 20;
/// The public_url length publish-time checks allow for: an edge's URL may be longer than
/// the origin's, and the answer carries it once per manifest entry.
inline constexpr std::size_t kPublicUrlAllowance = 256;

/// The /updates answer that sends release `name` (`doc`) from a node reached at
/// `public_url`: the zip url (or a placeholder), the manifest and the metadata as asked.
std::string build_update_answer(const control::ReleaseDoc& doc, const std::string& name,
                                const std::string& public_url, bool send_zip, bool send_manifest,
                                bool metadata);
/// Bytes of the longest /updates answer for `doc` (zip, manifest and metadata all sent)
/// from a node whose public_url has `public_url_bytes` bytes.
std::uint64_t largest_update_answer_bytes(const control::ReleaseDoc& doc, const std::string& name,
                                          std::size_t public_url_bytes);

/// An app's privacy settings applied to one of its check-ins before it is stored (at the
/// first node that records it, so dropped data never travels upstream): false when
/// `stats_mode` drops the event; otherwise the device fields the app does not collect are
/// cleared (and with billingOnly, custom_id and default_channel).
bool apply_collection(const control::AppSettings& settings, store::Checkin& c);

}  // namespace edge::api
