#pragma once

#include <string>

#include "edge/core/errc.hpp"
#include "edge/pg/connection.hpp"

namespace edge::pg {

/// The schema version this binary writes and reads.
int schema_version_known();

/// Brings the database's schema to schema_version_known(), under a PostgreSQL advisory lock
/// so that origins starting together migrate once. Each step is a transaction of its own
/// and records its version. A database whose schema is newer than this binary knows is
/// refused (Errc::kUnsupportedVersion, nothing changed); `error` says what in words. Returns
/// the version found before migrating (0: an empty database).
Result<int> migrate_schema(Connection& conn, std::string* error);

/// Advisory lock keys of bundle-edge (one namespace: 0x6265 'be').
inline constexpr std::int64_t kLockMigrate = 0x62650001;
inline constexpr std::int64_t kLockSingleton = 0x62650002;

}  // namespace edge::pg
