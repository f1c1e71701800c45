#pragma once
// SqliteStore: the Store of store.h on SQLite (Store::Open returns one). Adds to store.h's
// promises:
//
//  - One mvmd per state directory: Open takes an exclusive flock on `<dir>/lock` for the store's
//    lifetime and fails, naming the directory, while another store (in any process) holds it.
//    The directory is created with mode 0700; state.db lives in it (WAL, synchronous=NORMAL,
//    foreign_keys=ON, busy_timeout). PRAGMA user_version is the schema version; Open migrates
//    older databases step by step and refuses newer ones.
//  - state.db is opened with locking_mode=EXCLUSIVE (WAL index in memory: a third less CPU per
//    transaction): while the store is open no other connection, not even a read-only sqlite3
//    shell, can use the database. Inspect a live store through mvmd; copy or read state.db only
//    while mvmd is stopped.
//  - Group commit, leader/follower: writers queue their write; one of the waiting writers (or,
//    for events with no writer around, a flusher thread) runs everything queued in one
//    `BEGIN IMMEDIATE … COMMIT` and wakes the others; writes queued while that transaction runs
//    join it. Put/Delete/Allocate/ReleaseAll/Audit wait for their own commit; RecordEvent only
//    queues (best effort; it waits only when thousands of writes are already queued). Events,
//    AuditLog and VerifyAudit read through the same queue, so they see every write queued
//    before them (a thread reads its own events back).
//  - Instance reads are served from memory and show only committed writes (AllocationsOf may
//    show a value a moment before its commit). A failed commit rolls back, reloads memory from
//    the database and retries each write of the batch in a transaction of its own, so only the
//    writes that fail alone report an error.
//  - Instance.spec is the spec stored for Instance.specHash: the first spec put with that hash
//    (copied, so the caller's object is not kept alive). All instances with one hash share one
//    PoolSpec in memory; an instance put without a spec gets the stored one for its hash, if
//    any. Putting a spec with an empty specHash is an error. Specs no instance uses are deleted
//    from the database at Open.
//  - Events and audit entries live only in the database (memory stays O(instances)); Events()
//    returns the object's events oldest first. Events not updated for 24 hours are deleted, like
//    Kubernetes' event TTL, so destroyed instances do not leave events behind forever.
//  - Audit chain: entry.hash = hex(SHA-256(prevHash || AuditCanonicalText(entry))); the first
//    entry of a tenant has prevHash "". VerifyAudit reports the first entry whose seq is not the
//    next one (deleted or reordered rows), whose prevHash is not the previous entry's hash, or
//    whose content does not match its hash (edited). Not detectable by an unkeyed chain: the
//    newest entries removed (truncation), or the chain recomputed from some entry to the end;
//    anchor the head elsewhere for that.
//  - Durability: a Put that returned survives a SIGKILL of mvmd at any instant (WAL,
//    synchronous=NORMAL; tests/store_test kills a writer at random points); a power loss may
//    lose the last commits before the next checkpoint.
//  - Memory: about 0.7 KiB per instance with typical field sizes (bench/store_bench measures it).
//  - Destroy the store only when no call into it is in flight; the destructor commits the events
//    still queued.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "controller/store.h"

namespace mvm::controller {

Result<std::unique_ptr<Store>> OpenSqliteStore(const Store::Options& options);

// The text an audit entry's hash covers: "mvm-audit-v1", then tenant, seq, timeMs, actor,
// action, object and detail, each preceded by a newline. Inside a field a backslash is written
// as two backslashes and a newline as a backslash and 'n', so no field contains the separator
// and the text is unambiguous. seq and timeMs are decimal; prevHash and hash are not included.
std::string AuditCanonicalText(const AuditEntry& entry);
// Lowercase hex SHA-256 of prevHash followed by AuditCanonicalText(entry).
std::string AuditEntryHash(std::string_view prevHash, const AuditEntry& entry);

// Group-commit counters of a store returned by OpenSqliteStore (nullopt for any other Store).
struct CommitStats {
  uint64_t transactions = 0;  // committed BEGIN … COMMIT batches
  uint64_t operations = 0;    // writes carried by them
};
std::optional<CommitStats> CommitStatsOf(const Store& store);

}  // namespace mvm::controller
