#include "edge/core/errc.hpp"

namespace edge {
namespace {

class EdgeCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "edge"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::kOk: return "success";
      case Errc::kInvalidArgument: return "invalid argument";
      case Errc::kNotFound: return "not found";
      case Errc::kChecksumMismatch: return "checksum mismatch";
      case Errc::kCorrupt: return "corrupt data";
      case Errc::kBadMagic: return "bad magic number";
      case Errc::kUnsupportedVersion: return "unsupported version";
      case Errc::kIo: return "I/O error";
      case Errc::kTooLarge: return "too large";
      case Errc::kShutdown: return "shutting down";
      case Errc::kDatabase: return "database error";
      case Errc::kRangeNotSatisfiable: return "range not satisfiable";
      case Errc::kStorageFull: return "storage full: writes refused until space returns";
      case Errc::kUnavailable: return "backend unavailable";
      case Errc::kConflict: return "conflict: the state changed under the write";
    }
    return "unknown edge error " + std::to_string(ev);
  }
};

}  // namespace

const boost::system::error_category& edge_category() noexcept {
  static const EdgeCategory category;
  return category;
}

}  // namespace edge
