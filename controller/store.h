#pragma once
// Store: mvmd's durable memory, on SQLite in WAL mode (<state-dir>/state.db).
//
// Promises:
//  - Instances are held in memory and written through: a Put/Delete returns only after its
//    SQLite transaction committed (WAL, synchronous=NORMAL: survives a crash of mvmd at any
//    instant; a power loss may lose the last commits). Reads never touch SQLite.
//  - Concurrent writers are batched into one transaction (group commit); each caller still waits
//    for its own commit. Thread-safe throughout.
//  - Specs are stored once per spec hash and shared between instances in memory.
//  - Allocations (uids, addresses, TAP indexes…) are unique per kind and owned by one instance;
//    ReleaseAll(owner) frees everything an instance holds.
//  - Events are bounded per object: Events() returns the newest `eventsPerObject`, and older
//    ones are deleted in passes (at most 30 more are stored); a repeat of the same
//    type/reason/message folds into the previous event (count, lastMs).
//  - The audit log is per tenant, append-only and hash-chained: entry n stores
//    sha256(entry n-1 hash || canonical entry n). VerifyAudit recomputes the chain and names
//    the first entry that does not match, so editing, deleting or reordering rows is detected.
//  - Open() on an existing directory loads everything back (restart); schema versions migrate.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "controller/model.h"

namespace mvm::controller {

struct AuditEntry {
  std::string tenant;
  int64_t seq = 0;  // 1, 2, 3… per tenant
  int64_t timeMs = 0;
  std::string actor;   // "mvmd", "api:<peer uid>"
  std::string action;  // "instance.create", "instance.start", "pool.prune"…
  std::string object;  // "acme/workers-x7k2p"
  std::string detail;  // free text / JSON
  std::string prevHash;
  std::string hash;  // hex sha256
};

struct AuditVerification {
  bool ok = true;
  int64_t entries = 0;
  int64_t firstBadSeq = 0;  // 0 when ok
  std::string problem;
};

class Store {
 public:
  struct Options {
    std::filesystem::path dir;
    int eventsPerObject = 64;
  };

  static Result<std::unique_ptr<Store>> Open(const Options& options);
  virtual ~Store() = default;

  // --- instances ---
  virtual std::vector<Instance> ListInstances() const = 0;
  virtual std::vector<Instance> ListPool(const std::string& tenant,
                                         const std::string& pool) const = 0;
  virtual std::optional<Instance> GetInstance(const InstanceKey& key) const = 0;
  // Calls fn for each instance of the pool without copying, under the store's read lock:
  // fn must not call back into the store.
  virtual void ForEachInPool(const std::string& tenant, const std::string& pool,
                             const std::function<void(const Instance&)>& fn) const = 0;
  // Every (tenant, pool) that has at least one instance recorded.
  virtual std::vector<std::pair<std::string, std::string>> ListPools() const = 0;
  virtual size_t InstanceCount() const = 0;
  virtual Status PutInstance(const Instance& instance) = 0;  // insert or replace
  // PutInstance without waiting for durability: readers see the record at once; it is committed
  // in order with the other writes (so it is durable once any write submitted after it has
  // returned, and the flusher commits it within milliseconds when none comes). A crash can lose
  // it, so it is only for a record whose loss the record before it makes recoverable (an action's
  // done record, after its intent). A commit failure is logged and readers see the database's
  // record again. Errors only for an invalid record or a closed store.
  virtual Status PutInstanceQueued(const Instance& instance) = 0;
  virtual Status DeleteInstance(const InstanceKey& key) = 0;
  // A fresh "<pool>-<5 chars of [a-z0-9]>" name not used in the tenant.
  virtual std::string NewInstanceName(const std::string& tenant, const std::string& pool) = 0;

  // --- allocations ---
  // Lowest free value in [lo, hi] of `kind`, recorded as owned by `owner`; the value already
  // owned by `owner` for that kind if any (idempotent).
  virtual Result<int64_t> Allocate(const std::string& kind, const InstanceKey& owner, int64_t lo,
                                   int64_t hi) = 0;
  virtual std::map<std::string, int64_t> AllocationsOf(const InstanceKey& owner) const = 0;
  virtual Status ReleaseAll(const InstanceKey& owner) = 0;

  // --- events ---
  virtual void RecordEvent(const Event& event) = 0;  // best effort: failures are logged
  virtual std::vector<Event> Events(const std::string& objectKind,
                                    const std::string& objectKey) const = 0;

  // --- audit ---
  virtual Status Audit(const std::string& tenant, const std::string& actor,
                       const std::string& action, const std::string& object,
                       const std::string& detail) = 0;
  // Audit without waiting: queued in order with the writes, so it is durable once any write
  // submitted after it has returned (and committed by the flusher when none comes); a failure
  // is logged. For an entry that goes with a write the caller waits for anyway.
  virtual void AuditQueued(const std::string& tenant, const std::string& actor,
                           const std::string& action, const std::string& object,
                           const std::string& detail) = 0;
  virtual std::vector<AuditEntry> AuditLog(const std::string& tenant) const = 0;
  virtual AuditVerification VerifyAudit(const std::string& tenant) const = 0;
};

}  // namespace mvm::controller
