#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "edge/core/errc.hpp"

namespace edge::store {

class Database;
class StateStore;

/// What a backup holds (its manifest, MANIFEST.backup).
struct BackupInfo {
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;
  std::uint64_t last_seq = 0;  ///< the feed's last sequence number at the copy
  std::string epoch;           ///< the feed epoch at the copy ("" on a node without one)
  std::int64_t created_ms = 0;
};

/// Progress of a long copy, in words ("segments: 3 of 12 files, 1.2 GiB"), for logs.
using BackupProgress = std::function<void(std::string_view)>;

/// Writes a consistent, verified copy of a node's data into `dest` (which must not exist; a
/// folder is made there, mode 0700): a RocksDB checkpoint taken while control-state writes
/// are held (so the copy's feed epoch and last sequence number are exact), then every
/// segment file as long as it is at copy time (segments only grow, and an append after the
/// checkpoint is re-indexed or truncated by recovery like any unindexed tail), then the
/// data directory's node.id and admin.token. Every file is fsynced, read back and compared
/// with the SHA-256 taken while copying; the manifest `MANIFEST.backup` (files, sizes, hashes,
/// epoch, last_seq) is written last, and only then is the marker `BACKUP-INCOMPLETE` (made
/// first) removed: a copy cut short (kill -9, a full disk) keeps the marker and is refused
/// by verify_backup and restore_backup. The source is only read (the checkpoint is a set of
/// hard links in `<data_dir>/backup-tmp-<pid>`, removed afterwards; a stale one is removed
/// by the next backup). Control-plane: may take minutes; never on an event loop.
Result<BackupInfo> make_backup(Database& db, StateStore& state,
                               const std::filesystem::path& data_dir,
                               const std::filesystem::path& dest, const BackupProgress& progress,
                               std::string* problem);

/// Checks a backup without changing it: the manifest is there and the marker is not, every
/// file listed has its size and SHA-256. `problem` names the first thing wrong.
Result<BackupInfo> verify_backup(const std::filesystem::path& src, std::string* problem);

/// Copies a verified backup into `data_dir` (which must not exist or be empty), fsynced.
/// The restored node keeps the backup's feed epoch and sequence numbers, so its edges follow
/// it without a snapshot (they re-read from the restored sequence number on).
Result<BackupInfo> restore_backup(const std::filesystem::path& src,
                                  const std::filesystem::path& data_dir,
                                  const BackupProgress& progress, std::string* problem);

}  // namespace edge::store
