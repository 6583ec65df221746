// Device requests: the info-object parser on every endpoint (the body as JSON, and as the
// query string of GET/DELETE /channel_self), the reader without a document against it, the
// query decoder and version coercion.
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "edge/api/device.hpp"
#include "edge/api/device_info.hpp"
#include "edge/core/uri.hpp"

namespace {

using edge::api::DeviceEndpoint;

void read_as(DeviceEndpoint e, const boost::json::object& o) {
  edge::api::DeviceInfo info;
  if (const auto err = edge::api::read_info(e, o, info)) {
    if (err->code.empty() || err->message.empty())
      __builtin_trap();  // every refusal names its code and says why
    return;
  }
  // What the endpoints rely on after a successful read.
  if (e != DeviceEndpoint::kStats && !info.platform)
    __builtin_trap();
  if ((e == DeviceEndpoint::kUpdates || e == DeviceEndpoint::kManifestSize) &&
      (!info.version_build || !info.plugin_version))
    __builtin_trap();
  if (e == DeviceEndpoint::kManifestSize && info.manifest == nullptr)
    __builtin_trap();
  // listChannels may come without a device (capgo-protocol §10 item 9); nothing else may.
  const bool no_device = e == DeviceEndpoint::kChannelList && info.device_id.empty();
  if ((info.device_id.size() != 36 && !no_device) || info.app_id.empty())
    __builtin_trap();
  (void)info.running_version();
  (void)info.on_builtin();
}

// The reader without a document answers as parse_json_body + read_info do, for the
// endpoints that use it: the same refusal, or the same DeviceInfo.
void same_as_document(DeviceEndpoint e, std::string_view text) {
  edge::api::DeviceInfo from_bytes;
  std::string scratch;
  const auto bytes_error = edge::api::parse_info(e, text, scratch, from_bytes);
  boost::json::value doc;
  edge::api::DeviceInfo from_doc;
  auto doc_error = edge::api::parse_json_body(text, doc);
  if (!doc_error)
    doc_error = edge::api::read_info(e, doc.get_object(), from_doc);
  if (bytes_error.has_value() != doc_error.has_value())
    __builtin_trap();
  if (doc_error ? bytes_error->code != doc_error->code || bytes_error->message != doc_error->message
                : !(from_bytes == from_doc))
    __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto& [k, v] : edge::api::parse_query(text)) {
    if (k.size() > text.size() || v.size() > text.size())
      __builtin_trap();
  }
  if (auto v = edge::api::coerce_version_build(text))
    (void)v->to_string();
  (void)edge::percent_encode(text, true);
  (void)edge::api::valid_app_id(text);
  (void)edge::api::valid_device_id(text);
  (void)edge::api::allowed_stats_action(text);

  boost::json::value body;
  if (!edge::api::parse_json_body(text, body, true) && body.is_object()) {
    for (auto e : {DeviceEndpoint::kUpdates, DeviceEndpoint::kManifestSize, DeviceEndpoint::kStats,
                   DeviceEndpoint::kChannelSet, DeviceEndpoint::kChannelGet})
      read_as(e, body.get_object());
  }
  for (auto e :
       {DeviceEndpoint::kUpdates, DeviceEndpoint::kChannelSet, DeviceEndpoint::kChannelGet})
    same_as_document(e, text);
  boost::json::object query;
  if (!edge::api::query_object(text, query)) {
    read_as(DeviceEndpoint::kChannelList, query);
    read_as(DeviceEndpoint::kChannelUnset, query);
  }
  return 0;
}
