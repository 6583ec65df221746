#include "edge/store/backup.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "edge/core/sha256.hpp"
#include "edge/store/database.hpp"
#include "edge/store/state_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace edge::store {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kManifest = "MANIFEST.backup";
constexpr std::string_view kIncomplete = "BACKUP-INCOMPLETE";
constexpr std::string_view kFormat = "bundle-edge backup 1";
// Small files of the data directory a restored node needs (ids and the bootstrap token).
constexpr std::array<std::string_view, 2> kSmallFiles = {"node.id", "admin.token"};
constexpr std::size_t kBuffer = 1 << 20;

struct FileEntry {
  std::string path;  // relative to the backup (db/..., segments/..., node.id)
  std::uint64_t size = 0;
  std::string sha256;
};

Result<void> fail(std::string* problem, std::string why, Errc e = Errc::kIo) {
  if (problem != nullptr)
    *problem = std::move(why);
  return e;
}

std::string sys_error(const std::string& what, const fs::path& p) {
  return what + " " + p.string() + ": " + std::strerror(errno);
}

int sync_path(const fs::path& p, int flags) {
  const int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  if (fd < 0)
    return -1;
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc;
}

// Copies the first `limit` bytes of `from` (all of it when limit is max) into a new file
// `to`, fsynced; returns the size copied and its SHA-256.
Result<FileEntry> copy_file(const fs::path& from, const fs::path& to, std::uint64_t limit,
                            std::string* problem) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return fail(problem, sys_error("cannot read", from)).error();
  const int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) {
    ::close(in);
    return fail(problem, sys_error("cannot create", to)).error();
  }
  std::vector<std::uint8_t> buf(kBuffer);
  Sha256Hasher hash;
  std::uint64_t done = 0;
  bool ok = true;
  while (done < limit) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), limit - done));
    const ssize_t n = ::read(in, buf.data(), want);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      (void)fail(problem, sys_error("cannot read", from));
      ok = false;
      break;
    }
    if (n == 0)
      break;
    for (ssize_t w = 0; w < n;) {
      const ssize_t m = ::write(out, buf.data() + w, static_cast<std::size_t>(n - w));
      if (m < 0 && errno == EINTR)
        continue;
      if (m < 0) {
        (void)fail(problem, sys_error("cannot write", to));
        ok = false;
        break;
      }
      w += m;
    }
    if (!ok)
      break;
    hash.update(std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(n)));
    done += static_cast<std::uint64_t>(n);
  }
  if (ok && ::fsync(out) != 0) {
    (void)fail(problem, sys_error("cannot sync", to));
    ok = false;
  }
  ::close(in);
  ::close(out);
  if (!ok)
    return Errc::kIo;
  return FileEntry{{}, done, hash.finish().hex()};
}

// The SHA-256 and size of a whole file (reading it back).
Result<FileEntry> hash_file(const fs::path& p, std::string* problem) {
  const int in = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return fail(problem, sys_error("cannot read", p)).error();
  std::vector<std::uint8_t> buf(kBuffer);
  Sha256Hasher hash;
  std::uint64_t size = 0;
  for (;;) {
    const ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      ::close(in);
      return fail(problem, sys_error("cannot read", p)).error();
    }
    if (n == 0)
      break;
    hash.update(std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(n)));
    size += static_cast<std::uint64_t>(n);
  }
  ::close(in);
  return FileEntry{{}, size, hash.finish().hex()};
}

std::string format_manifest(const BackupInfo& info, const std::vector<FileEntry>& files) {
  std::ostringstream out;
  out << kFormat << "\n"
      << "created_ms " << info.created_ms << "\n"
      << "epoch " << (info.epoch.empty() ? "-" : info.epoch) << "\n"
      << "last_seq " << info.last_seq << "\n";
  for (const auto& f : files)
    out << "file " << f.sha256 << " " << f.size << " " << f.path << "\n";
  out << "end " << files.size() << "\n";
  return out.str();
}

// Parses a manifest; nullopt and `problem` when it is not one this build wrote.
std::optional<std::pair<BackupInfo, std::vector<FileEntry>>> parse_manifest(const std::string& text,
                                                                            std::string* problem) {
  std::istringstream in(text);
  std::string line;
  const auto bad = [&](const std::string& why) {
    if (problem != nullptr)
      *problem = std::string(kManifest) + ": " + why;
    return std::nullopt;
  };
  if (!std::getline(in, line) || line != kFormat)
    return bad("not a bundle-edge backup manifest (first line '" + line.substr(0, 60) + "')");
  BackupInfo info;
  std::vector<FileEntry> files;
  bool ended = false;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string key;
    l >> key;
    if (key == "created_ms") {
      l >> info.created_ms;
    } else if (key == "epoch") {
      l >> info.epoch;
      if (info.epoch == "-")
        info.epoch.clear();
    } else if (key == "last_seq") {
      l >> info.last_seq;
    } else if (key == "file") {
      FileEntry f;
      l >> f.sha256 >> f.size;
      std::getline(l >> std::ws, f.path);
      const fs::path p(f.path);
      if (f.sha256.size() != 64 || f.path.empty() || p.is_absolute() ||
          std::any_of(p.begin(), p.end(), [](const fs::path& part) { return part == ".."; }))
        return bad("bad file line '" + line.substr(0, 120) + "'");
      files.push_back(std::move(f));
    } else if (key == "end") {
      std::size_t n = 0;
      l >> n;
      if (n != files.size())
        return bad("lists " + std::to_string(files.size()) + " files but says " +
                   std::to_string(n));
      ended = true;
      break;
    } else {
      return bad("unknown line '" + line.substr(0, 60) + "'");
    }
    if (l.fail())
      return bad("bad line '" + line.substr(0, 120) + "'");
  }
  if (!ended)
    return bad("cut short (no end line)");
  info.files = files.size();
  for (const auto& f : files)
    info.bytes += f.size;
  return std::pair{std::move(info), std::move(files)};
}

std::string human_bytes(std::uint64_t n) {
  char buf[32];
  if (n >= (1ULL << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(n) / (1ULL << 30));
  else if (n >= (1ULL << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / (1ULL << 20));
  else
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(n));
  return buf;
}

Result<void> write_small(const fs::path& p, std::string_view text, std::string* problem) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return fail(problem, sys_error("cannot create", p));
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok)
    return fail(problem, sys_error("cannot write", p));
  return {};
}

// Copies every file of `entries` (source paths relative to `from`) into `to`, read back and
// compared: the common part of making and restoring a backup.
Result<void> copy_all(const fs::path& from, const fs::path& to, std::vector<FileEntry>& entries,
                      bool known_hashes, const BackupProgress& progress, std::string* problem) {
  std::uint64_t total = 0;
  for (const auto& e : entries)
    total += e.size;
  std::uint64_t done = 0;
  auto last = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < entries.size(); ++i) {
    auto& e = entries[i];
    const fs::path target = to / e.path;
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    if (ec)
      return fail(problem, "cannot create " + target.parent_path().string() + ": " + ec.message());
    auto copied =
        copy_file(from / e.path, target, known_hashes ? e.size : ~std::uint64_t{0}, problem);
    if (!copied)
      return copied.error();
    if (known_hashes && (copied->size != e.size || copied->sha256 != e.sha256)) {
      return fail(problem,
                  from.string() + "/" + e.path + ": " + std::to_string(copied->size) +
                      " bytes with SHA-256 " + copied->sha256 + ", the manifest says " +
                      std::to_string(e.size) + " bytes, " + e.sha256,
                  Errc::kCorrupt);
    }
    // Read back from the disk: what was written is what was read.
    auto back = hash_file(target, problem);
    if (!back)
      return back.error();
    if (back->sha256 != copied->sha256 || back->size != copied->size)
      return fail(problem, target.string() + " does not read back as written", Errc::kCorrupt);
    e.size = copied->size;
    e.sha256 = copied->sha256;
    done += e.size;
    if (progress && (std::chrono::steady_clock::now() - last > std::chrono::seconds(2) ||
                     i + 1 == entries.size())) {
      last = std::chrono::steady_clock::now();
      progress(std::to_string(i + 1) + " of " + std::to_string(entries.size()) + " files, " +
               human_bytes(done) + " of " + human_bytes(std::max(total, done)));
    }
  }
  return {};
}

// Every regular file under `dir`, relative to `base`, sorted.
std::vector<FileEntry> list_files(const fs::path& base, const fs::path& dir, std::error_code& ec) {
  std::vector<FileEntry> out;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec))
      out.push_back({fs::relative(it->path(), base, ec).string(), it->file_size(ec), {}});
  }
  std::sort(out.begin(), out.end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  return out;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<BackupInfo> make_backup(Database& db, StateStore& state, const fs::path& data_dir,
                               const fs::path& dest, const BackupProgress& progress,
                               std::string* problem) {
  std::error_code ec;
  if (fs::exists(dest, ec))
    return fail(problem, dest.string() + " exists: a backup goes into a new folder",
                Errc::kInvalidArgument)
        .error();
  if (dest.has_parent_path() && !fs::is_directory(dest.parent_path(), ec))
    return fail(problem, "no folder " + dest.parent_path().string(), Errc::kInvalidArgument)
        .error();
  if (::mkdir(dest.c_str(), 0700) != 0)
    return fail(problem, sys_error("cannot create", dest)).error();
  if (auto r = write_small(dest / kIncomplete,
                           "a backup was being written here (pid " + std::to_string(::getpid()) +
                               "); it is not usable\n",
                           problem);
      !r)
    return r.error();

  // Stale checkpoints of backups cut short (kill -9) are removed first.
  for (fs::directory_iterator it(data_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().starts_with("backup-tmp-"))
      fs::remove_all(it->path(), ec);
  }
  const fs::path checkpoint = data_dir / ("backup-tmp-" + std::to_string(::getpid()));
  fs::remove_all(checkpoint, ec);
  fs::create_directories(checkpoint, ec);
  if (ec)
    return fail(problem, "cannot create " + checkpoint.string() + ": " + ec.message()).error();
  BackupInfo info;
  info.created_ms = now_ms();
  // Control-state writes wait while the checkpoint is taken (a flush and hard links), so the
  // epoch and last sequence number are those of the copy.
  auto taken = state.while_writes_held([&](std::uint64_t last_seq, const std::string& epoch) {
    info.last_seq = last_seq;
    info.epoch = epoch;
    return db.checkpoint(checkpoint / "db");
  });
  if (!taken) {
    fs::remove_all(checkpoint, ec);
    return fail(problem, "cannot take a checkpoint of " + (data_dir / "db").string() + ": " +
                             taken.error().message())
        .error();
  }
  if (progress)
    progress("checkpoint taken: feed epoch " + (info.epoch.empty() ? "-" : info.epoch) +
             ", sequence " + std::to_string(info.last_seq));
  std::vector<FileEntry> db_files = list_files(checkpoint, checkpoint / "db", ec);
  std::vector<FileEntry> seg_files;
  if (!ec && fs::is_directory(data_dir / "segments"))
    seg_files = list_files(data_dir, data_dir / "segments", ec);
  if (ec) {
    fs::remove_all(checkpoint, ec);
    return fail(problem, "cannot list the data directory: " + ec.message()).error();
  }
  std::vector<FileEntry> small;
  for (const auto name : kSmallFiles) {
    if (fs::is_regular_file(data_dir / name, ec))
      small.push_back({std::string(name), 0, {}});
  }
  auto copied = copy_all(checkpoint, dest, db_files, false, progress, problem);
  fs::remove_all(checkpoint, ec);
  if (copied)
    copied = copy_all(data_dir, dest, seg_files, false, progress, problem);
  if (copied)
    copied = copy_all(data_dir, dest, small, false, nullptr, problem);
  if (!copied)
    return copied.error();
  std::vector<FileEntry> all;
  for (auto* list : {&db_files, &seg_files, &small})
    all.insert(all.end(), list->begin(), list->end());
  info.files = all.size();
  for (const auto& f : all)
    info.bytes += f.size;
  // The manifest last, then the marker goes: only now is the copy a backup.
  if (auto r = write_small(dest / (std::string(kManifest) + ".tmp"), format_manifest(info, all),
                           problem);
      !r)
    return r.error();
  fs::rename(dest / (std::string(kManifest) + ".tmp"), dest / kManifest, ec);
  if (ec || sync_path(dest, O_RDONLY | O_DIRECTORY) != 0)
    return fail(problem, "cannot finish the manifest in " + dest.string()).error();
  fs::remove(dest / kIncomplete, ec);
  if (ec || sync_path(dest, O_RDONLY | O_DIRECTORY) != 0)
    return fail(problem, "cannot remove " + (dest / kIncomplete).string()).error();
  return info;
}

namespace {

// The manifest of a finished backup (refused when the marker says it was cut short).
std::optional<std::pair<BackupInfo, std::vector<FileEntry>>> load_manifest(const fs::path& src,
                                                                           std::string* problem) {
  std::error_code ec;
  if (fs::exists(src / kIncomplete, ec)) {
    (void)fail(problem, src.string() + " is an unfinished backup (" + std::string(kIncomplete) +
                            " is there): it was cut short and cannot be used");
    return std::nullopt;
  }
  std::ifstream in(src / kManifest);
  if (!in) {
    (void)fail(problem, "no " + std::string(kManifest) + " in " + src.string() +
                            ": not a backup, or an unfinished one");
    return std::nullopt;
  }
  std::stringstream text;
  text << in.rdbuf();
  return parse_manifest(text.str(), problem);
}

}  // namespace

Result<BackupInfo> verify_backup(const fs::path& src, std::string* problem) {
  auto manifest = load_manifest(src, problem);
  if (!manifest)
    return Errc::kCorrupt;
  for (const auto& f : manifest->second) {
    auto h = hash_file(src / f.path, problem);
    if (!h)
      return h.error();
    if (h->size != f.size || h->sha256 != f.sha256) {
      return fail(problem,
                  (src / f.path).string() + ": " + std::to_string(h->size) + " bytes, SHA-256 " +
                      h->sha256 + "; the manifest says " + std::to_string(f.size) + ", " + f.sha256,
                  Errc::kCorrupt)
          .error();
    }
  }
  return manifest->first;
}

Result<BackupInfo> restore_backup(const fs::path& src, const fs::path& data_dir,
                                  const BackupProgress& progress, std::string* problem) {
  auto manifest = load_manifest(src, problem);
  if (!manifest)
    return Errc::kCorrupt;
  std::error_code ec;
  if (fs::exists(data_dir, ec) && !fs::is_empty(data_dir, ec))
    return fail(problem, data_dir.string() + " is not empty: restore into a new data directory",
                Errc::kInvalidArgument)
        .error();
  fs::create_directories(data_dir, ec);
  if (ec)
    return fail(problem, "cannot create " + data_dir.string() + ": " + ec.message()).error();
  // Each file is checked against the manifest as it is copied (one read of the backup); a
  // mismatch leaves nothing behind in the data directory, which was empty.
  if (auto r = copy_all(src, data_dir, manifest->second, true, progress, problem); !r) {
    for (fs::directory_iterator it(data_dir, ec), end; !ec && it != end; it.increment(ec))
      fs::remove_all(it->path(), ec);
    return r.error();
  }
  for (const auto* dir : {"", "db", "segments"}) {
    if (fs::is_directory(data_dir / dir, ec))
      (void)sync_path(data_dir / dir, O_RDONLY | O_DIRECTORY);
  }
  return manifest->first;
}

}  // namespace edge::store
