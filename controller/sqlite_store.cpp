#include "controller/sqlite_store.h"

#include <errno.h>
#include <fcntl.h>
#include <json/reader.h>
#include <json/writer.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <span>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "common/unique_fd.h"
#include "controller/spec_codec.h"

namespace mvm::controller {
namespace {

using manifests::PoolSpec;

// ---------------------------------------------------------------------------------------------
// Schema. Index i of kMigrations takes the database from user_version i to i + 1; entries are
// append-only (a released migration is never edited).
constexpr std::array<const char*, 1> kMigrations = {
    R"sql(
CREATE TABLE specs(
  hash TEXT PRIMARY KEY,
  json TEXT NOT NULL
) STRICT;
CREATE TABLE instances(
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  pool TEXT NOT NULL,
  state TEXT NOT NULL,
  target TEXT NOT NULL,
  spec_hash TEXT NOT NULL,
  generation INTEGER NOT NULL,
  pid INTEGER NOT NULL,
  start_time INTEGER NOT NULL,
  socket TEXT NOT NULL,
  handle_data TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  state_since_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  failures INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  failed INTEGER NOT NULL,
  pending TEXT,
  PRIMARY KEY(tenant, name)
) STRICT, WITHOUT ROWID;
CREATE TABLE allocations(
  kind TEXT NOT NULL,
  value INTEGER NOT NULL,
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  PRIMARY KEY(kind, value)
) STRICT, WITHOUT ROWID;
CREATE UNIQUE INDEX allocations_owner ON allocations(tenant, name, kind);
CREATE TABLE events(
  id INTEGER PRIMARY KEY,
  object_kind TEXT NOT NULL,
  object_key TEXT NOT NULL,
  type TEXT NOT NULL,
  reason TEXT NOT NULL,
  message TEXT NOT NULL,
  source TEXT NOT NULL,
  first_ms INTEGER NOT NULL,
  last_ms INTEGER NOT NULL,
  count INTEGER NOT NULL
) STRICT;
CREATE INDEX events_object ON events(object_kind, object_key, id);
CREATE INDEX events_last ON events(last_ms);
CREATE TABLE audit(
  tenant TEXT NOT NULL,
  seq INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  object TEXT NOT NULL,
  detail TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  PRIMARY KEY(tenant, seq)
) STRICT, WITHOUT ROWID;
)sql",
};

constexpr int64_t kEventTtlMs = 24LL * 3600 * 1000;
constexpr int64_t kEventExpiryIntervalMs = 60 * 1000;
constexpr int kBusyTimeoutMs = 5000;
constexpr std::size_t kMaxQueuedOps = 4096;
constexpr std::size_t kMaxBatch = 1024;               // ops one transaction takes in while it runs
constexpr std::chrono::milliseconds kFlushLinger{2};  // see FlusherLoop
// Events wait apart from the other writes until this many are pending or the oldest is this old
// (or a read needs them): one transaction writes a page of them instead of a page each.
constexpr std::size_t kEventBatch = 256;
constexpr std::chrono::milliseconds kEventLinger{100};
// An object's events beyond eventsPerObject are deleted every this many inserts of it (so at
// most eventsPerObject + 2 * (kEventPruneEvery - 1) are stored); the insert counts kept for
// that are forgotten past kEventCountsMax objects.
constexpr uint32_t kEventPruneEvery = 16;
constexpr std::size_t kEventCountsMax = 1 << 16;
// WAL pages between automatic checkpoints (default 1000): fewer checkpoints, each writing back
// a page once however often it changed (each checkpoint also costs two fsyncs).
constexpr int kWalAutocheckpointPages = 16384;

// ---------------------------------------------------------------------------------------------
// SQLite RAII and helpers.

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Resets a reused statement when one use of it ends, so it never keeps a read transaction open.
class StmtUse {
 public:
  explicit StmtUse(const Stmt& stmt) : stmt_(stmt.get()) {}
  ~StmtUse() { sqlite3_reset(stmt_); }
  StmtUse(const StmtUse&) = delete;
  StmtUse& operator=(const StmtUse&) = delete;
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_;
};

// SQLITE_STATIC without the old-style cast in its macro: bound text outlives the step.
const sqlite3_destructor_type kStatic = nullptr;

void BindText(sqlite3_stmt* stmt, int index, std::string_view text) {
  sqlite3_bind_text(stmt, index, text.data() != nullptr ? text.data() : "",
                    static_cast<int>(text.size()), kStatic);
}
void BindInt(sqlite3_stmt* stmt, int index, int64_t value) {
  sqlite3_bind_int64(stmt, index, value);
}
std::string ColumnText(sqlite3_stmt* stmt, int index) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, index));
  if (text == nullptr) return {};
  return std::string(text, static_cast<std::size_t>(sqlite3_column_bytes(stmt, index)));
}
int64_t ColumnInt(sqlite3_stmt* stmt, int index) {
  return sqlite3_column_int64(stmt, index);
}

Error SqlError(sqlite3* db, std::string_view what) {
  return Error{std::string(what) + ": " + sqlite3_errmsg(db)};
}

Result<Stmt> Prepare(sqlite3* db, std::string_view sql) {
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  Stmt stmt(raw);
  if (rc != SQLITE_OK) return SqlError(db, "preparing \"" + std::string(sql) + "\"");
  return stmt;
}

Status Exec(sqlite3* db, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) == SQLITE_OK) return Status::Ok();
  Error error{std::string("running \"") + sql + "\": " + (message ? message : "unknown error")};
  sqlite3_free(message);
  return error;
}

// Runs a statement; returns the first column of its first row as text ("" if no row).
Result<std::string> QueryOne(sqlite3* db, const char* sql) {
  Result<Stmt> stmt = Prepare(db, sql);
  if (!stmt) return stmt.error();
  const int rc = sqlite3_step(stmt->get());
  if (rc == SQLITE_ROW) return ColumnText(stmt->get(), 0);
  if (rc == SQLITE_DONE) return std::string();
  return SqlError(db, std::string("running \"") + sql + "\"");
}

Result<Db> OpenDb(const std::filesystem::path& path, int flags) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  Db db(raw);
  if (rc != SQLITE_OK) {
    return Error{"cannot open " + path.string() + ": " +
                 (raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc))};
  }
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  return db;
}

// ---------------------------------------------------------------------------------------------
// Hashing.

struct MdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

std::string Sha256Hex(std::string_view a, std::string_view b) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), a.data(), a.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), b.data(), b.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), digest.data(), &length) != 1) {
    return {};  // never equal to a stored hash, so verification reports the entry
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return hex;
}

void AppendEscaped(std::string& out, std::string_view field) {
  out += '\n';
  for (char c : field) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Allocations: per kind, the used values as coalesced runs [first, last], so the lowest free
// value at or above `lo` is one map lookup.

using Runs = std::map<int64_t, int64_t>;

std::optional<int64_t> LowestFree(const Runs& runs, int64_t lo) {
  auto it = runs.upper_bound(lo);
  if (it == runs.begin()) return lo;
  --it;
  if (it->second < lo) return lo;
  if (it->second == std::numeric_limits<int64_t>::max()) return std::nullopt;
  return it->second + 1;  // runs are coalesced: the value after a run is free
}

void MarkUsed(Runs& runs, int64_t value) {
  auto next = runs.upper_bound(value);
  if (next != runs.begin() && std::prev(next)->second >= value) return;  // already used
  const bool join_next = next != runs.end() && next->first - 1 == value;
  if (next != runs.begin()) {
    auto prev = std::prev(next);
    if (prev->second == value - 1) {
      prev->second = join_next ? next->second : value;
      if (join_next) runs.erase(next);
      return;
    }
  }
  int64_t last = value;
  if (join_next) {
    last = next->second;
    runs.erase(next);
  }
  runs.emplace(value, last);
}

void MarkFree(Runs& runs, int64_t value) {
  auto it = runs.upper_bound(value);
  if (it == runs.begin()) return;
  --it;
  if (it->second < value) return;
  const int64_t first = it->first;
  const int64_t last = it->second;
  runs.erase(it);
  if (first < value) runs.emplace(first, value - 1);
  if (value < last) runs.emplace(value + 1, last);
}

// ---------------------------------------------------------------------------------------------
// Queued writes.

struct PutOp {
  Instance instance;
};
struct DeleteOp {
  InstanceKey key;
};
struct AllocateOp {
  std::string kind;
  InstanceKey owner;
  int64_t lo = 0;
  int64_t hi = 0;
};
struct ReleaseOp {
  InstanceKey owner;
};
struct EventOp {
  Event event;
};
struct AuditOp {
  AuditEntry entry;
};
// A read of events or the audit log: they live only in the database.
struct ReadOp {
  std::function<bool(std::string& failure)> read;
};

struct Op {
  explicit Op(std::variant<PutOp, DeleteOp, AllocateOp, ReleaseOp, EventOp, AuditOp, ReadOp> w)
      : work(std::move(w)) {}
  std::variant<PutOp, DeleteOp, AllocateOp, ReleaseOp, EventOp, AuditOp, ReadOp> work;
  Status status;        // the write's own outcome, set by the leader that committed it
  int64_t value = 0;    // Allocate's result
  uint64_t seq = 0;     // queue order (guarded by queue_mu_)
  bool early = false;   // a PutOp already visible to readers (PutInstanceQueued)
  bool waiter = false;  // its submitter waits for it (guarded by queue_mu_)
  bool done = false;    // guarded by queue_mu_
};
using OpPtr = std::shared_ptr<Op>;

// Members of one pool, ordered by name; they point into instances_ (map nodes never move).
struct ByName {
  using is_transparent = void;
  bool operator()(const Instance* a, const Instance* b) const { return a->key.name < b->key.name; }
  bool operator()(const Instance* a, std::string_view b) const { return a->key.name < b; }
  bool operator()(std::string_view a, const Instance* b) const { return a < b->key.name; }
};
using PoolMembers = std::set<const Instance*, ByName>;

struct AuditHead {
  int64_t seq = 0;
  std::string hash;
};

// Everything Open loads from the database; swapped into the store in one step.
struct Loaded {
  std::unordered_map<std::string, std::shared_ptr<const PoolSpec>> specs;
  std::map<InstanceKey, Instance> instances;
  std::map<std::string, Runs, std::less<>> used;
  std::map<InstanceKey, std::map<std::string, int64_t>> owners;
  std::map<std::string, AuditHead, std::less<>> heads;
};

std::string_view EventTypeName(EventType type) {
  return type == EventType::kWarning ? "Warning" : "Normal";
}

std::string RandomSuffix() {
  static constexpr std::string_view kAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  // 252 = 7 * 36: bytes at or above it are skipped so every character is equally likely.
  std::string out;
  while (out.size() < 5) {
    std::array<unsigned char, 16> bytes{};
    if (getrandom(bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) continue;
    for (unsigned char b : bytes) {
      if (b < 252 && out.size() < 5) out += kAlphabet[b % kAlphabet.size()];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

class SqliteStore final : public Store {
 public:
  SqliteStore(Options options, UniqueFd lock, Db db)
      : options_(std::move(options)), lock_(std::move(lock)), db_(std::move(db)) {}

  ~SqliteStore() override {
    std::unique_lock lock(queue_mu_);
    stopping_ = true;
    if (flusher_.joinable()) {
      lock.unlock();
      flush_cv_.notify_all();
      flusher_.join();
      lock.lock();
    }
    // Nobody calls in any more; commit whatever RecordEvent left queued.
    done_cv_.wait(lock, [&] { return !leader_active_; });
    TakeEvents();
    if (!queue_.empty()) Lead(lock);
  }

  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  Status Start() {
    if (Status s = PrepareStatements(); !s) return s;
    Result<Loaded> loaded = LoadAll();
    if (!loaded) return loaded.error();
    Install(std::move(*loaded));
    ExpireEvents(NowMs());
    flusher_ = std::thread([this] { FlusherLoop(); });
    return Status::Ok();
  }

  CommitStats Stats() const {
    return {transactions_.load(std::memory_order_relaxed),
            operations_.load(std::memory_order_relaxed)};
  }

  // --- instances ---

  std::vector<Instance> ListInstances() const override {
    std::shared_lock lock(mu_);
    std::vector<Instance> out;
    out.reserve(instances_.size());
    for (const auto& [key, instance] : instances_) out.push_back(instance);
    return out;
  }

  std::vector<Instance> ListPool(const std::string& tenant,
                                 const std::string& pool) const override {
    std::vector<Instance> out;
    ForEachInPool(tenant, pool, [&](const Instance& instance) { out.push_back(instance); });
    return out;
  }

  std::optional<Instance> GetInstance(const InstanceKey& key) const override {
    std::shared_lock lock(mu_);
    auto it = instances_.find(key);
    if (it == instances_.end()) return std::nullopt;
    return it->second;
  }

  void ForEachInPool(const std::string& tenant, const std::string& pool,
                     const std::function<void(const Instance&)>& fn) const override {
    std::shared_lock lock(mu_);
    auto t = pools_.find(tenant);
    if (t == pools_.end()) return;
    auto p = t->second.find(pool);
    if (p == t->second.end()) return;
    for (const Instance* instance : p->second) fn(*instance);
  }

  std::vector<std::pair<std::string, std::string>> ListPools() const override {
    std::shared_lock lock(mu_);
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [tenant, pools] : pools_) {
      for (const auto& [pool, members] : pools) {
        if (!members.empty()) out.emplace_back(tenant, pool);
      }
    }
    return out;
  }

  size_t InstanceCount() const override {
    std::shared_lock lock(mu_);
    return instances_.size();
  }

  Status PutInstance(const Instance& instance) override {
    if (Status s = ValidForPut(instance); !s) return s;
    return SubmitAndWait(std::make_shared<Op>(PutOp{instance}));
  }

  // Visible first, durable with the next commit. The record goes to memory and into the queue
  // under both locks (lock order: mu_, then queue_mu_), so no commit can overtake it there; at
  // commit ApplyCommitted leaves memory alone while a newer early record of the key is in it.
  Status PutInstanceQueued(const Instance& instance) override {
    if (Status s = ValidForPut(instance); !s) return s;
    auto op = std::make_shared<Op>(PutOp{instance});
    op->early = true;
    std::unique_lock data(mu_);
    std::lock_guard queue(queue_mu_);
    if (stopping_) return Error{"store is closed"};
    early_[instance.key] = op;
    Upsert(Instance(instance));
    EnqueueUnwaited(op);
    return Status::Ok();
  }

  static Status ValidForPut(const Instance& instance) {
    if (instance.key.tenant.empty() || instance.key.name.empty())
      return Error{"cannot store an instance without tenant and name"};
    if (instance.spec && instance.specHash.empty())
      return Error{"instance " + instance.key.ToString() + " has a spec but no specHash"};
    return Status::Ok();
  }

  Status DeleteInstance(const InstanceKey& key) override {
    return SubmitAndWait(std::make_shared<Op>(DeleteOp{key}));
  }

  std::string NewInstanceName(const std::string& tenant, const std::string& pool) override {
    for (;;) {
      InstanceKey key{tenant, pool + "-" + RandomSuffix()};
      std::shared_lock lock(mu_);
      if (instances_.contains(key)) continue;
      std::lock_guard names(names_mu_);
      if (reserved_names_.insert(key).second) return key.name;
    }
  }

  // --- allocations ---

  Result<int64_t> Allocate(const std::string& kind, const InstanceKey& owner, int64_t lo,
                           int64_t hi) override {
    if (kind.empty()) return Error{"allocation kind must not be empty"};
    if (lo > hi) {
      return Error{"allocation range for " + kind + " is empty: [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "]"};
    }
    auto op = std::make_shared<Op>(AllocateOp{kind, owner, lo, hi});
    if (Status s = SubmitAndWait(op); !s) return s.error();
    return op->value;
  }

  std::map<std::string, int64_t> AllocationsOf(const InstanceKey& owner) const override {
    std::shared_lock lock(mu_);
    auto it = owners_.find(owner);
    if (it == owners_.end()) return {};
    return it->second;
  }

  Status ReleaseAll(const InstanceKey& owner) override {
    return SubmitAndWait(std::make_shared<Op>(ReleaseOp{owner}));
  }

  // --- events ---

  // Events are best effort and nobody waits for them: they collect in events_ and go to the
  // queue as one batch (FlusherLoop, TakeEvents). Failures are logged by whoever commits them
  // (LogIfUnwaited).
  void RecordEvent(const Event& event) override {
    auto op = std::make_shared<Op>(EventOp{event});
    {
      std::lock_guard lock(queue_mu_);
      if (stopping_) return;
      if (queue_.size() < kMaxQueuedOps) {
        events_.push_back(std::move(op));
        if (events_.size() == 1) events_since_ = std::chrono::steady_clock::now();
        // The flusher waits for the first event (to time the batch) and for a full batch.
        if (events_.size() == 1 || events_.size() == kEventBatch) flush_cv_.notify_one();
        return;
      }
    }
    [[maybe_unused]] const Status queued = Submit(std::move(op), /*wait=*/false);  // backpressure
  }

  std::vector<Event> Events(const std::string& objectKind,
                            const std::string& objectKey) const override {
    std::vector<Event> out;
    const Status read = Read([&](std::string& failure) {
      out.clear();
      StmtUse q(select_events_);
      BindText(q.get(), 1, objectKind);
      BindText(q.get(), 2, objectKey);
      BindInt(q.get(), 3, options_.eventsPerObject);
      int rc;
      while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
        Event& e = out.emplace_back();
        e.objectKind = objectKind;
        e.objectKey = objectKey;
        e.type = ColumnText(q.get(), 0) == "Warning" ? EventType::kWarning : EventType::kNormal;
        e.reason = ColumnText(q.get(), 1);
        e.message = ColumnText(q.get(), 2);
        e.from = ColumnText(q.get(), 3);
        e.firstMs = ColumnInt(q.get(), 4);
        e.lastMs = ColumnInt(q.get(), 5);
        e.count = static_cast<int>(ColumnInt(q.get(), 6));
      }
      return rc == SQLITE_DONE || Fail("reading events of " + objectKey, failure);
    });
    if (!read) spdlog::warn("store: {}", read.error().message);
    return out;
  }

  // --- audit ---

  Status Audit(const std::string& tenant, const std::string& actor, const std::string& action,
               const std::string& object, const std::string& detail) override {
    if (tenant.empty()) return Error{"an audit entry needs a tenant"};
    return SubmitAndWait(AuditOpFor(tenant, actor, action, object, detail));
  }

  void AuditQueued(const std::string& tenant, const std::string& actor, const std::string& action,
                   const std::string& object, const std::string& detail) override {
    if (tenant.empty()) {
      spdlog::error("store: audit entry {} {} without a tenant dropped", action, object);
      return;
    }
    // Failures are logged by whoever commits it (LogIfUnwaited).
    [[maybe_unused]] const Status queued =
        Submit(AuditOpFor(tenant, actor, action, object, detail), /*wait=*/false);
  }

  static OpPtr AuditOpFor(const std::string& tenant, const std::string& actor,
                          const std::string& action, const std::string& object,
                          const std::string& detail) {
    AuditEntry entry;
    entry.tenant = tenant;
    entry.actor = actor;
    entry.action = action;
    entry.object = object;
    entry.detail = detail;
    return std::make_shared<Op>(AuditOp{std::move(entry)});
  }

  std::vector<AuditEntry> AuditLog(const std::string& tenant) const override {
    std::vector<AuditEntry> out;
    const Status read = Read([&](std::string& failure) { return ReadAudit(tenant, out, failure); });
    if (!read) spdlog::warn("store: {}", read.error().message);
    return out;
  }

  AuditVerification VerifyAudit(const std::string& tenant) const override {
    std::vector<AuditEntry> log;
    const Status read = Read([&](std::string& failure) { return ReadAudit(tenant, log, failure); });
    AuditVerification out;
    if (!read) {
      out.ok = false;
      out.problem = read.error().message;
      return out;
    }
    out.entries = static_cast<int64_t>(log.size());
    auto bad = [&](int64_t seq, std::string problem) {
      out.ok = false;
      out.firstBadSeq = seq;
      out.problem = "audit log of tenant " + tenant + ": entry " + std::to_string(seq) + ": " +
                    std::move(problem);
      return out;
    };
    std::string prev;
    int64_t expected = 1;
    for (const AuditEntry& e : log) {
      if (e.seq != expected) {
        if (e.seq > expected) {
          return bad(expected, "is missing (the next entry is " + std::to_string(e.seq) + ")");
        }
        return bad(expected, "has an out-of-order sequence number " + std::to_string(e.seq));
      }
      if (e.prevHash != prev) {
        return bad(e.seq, expected == 1
                              ? "is the first entry but has a previous hash"
                              : "does not chain to entry " + std::to_string(expected - 1) +
                                    " (that entry was edited, removed or moved)");
      }
      if (AuditEntryHash(prev, e) != e.hash)
        return bad(e.seq, "its content does not match its hash (edited)");
      prev = e.hash;
      ++expected;
    }
    return out;
  }

 private:
  bool ReadAudit(const std::string& tenant, std::vector<AuditEntry>& out,
                 std::string& failure) const {
    out.clear();
    StmtUse q(select_audit_);
    BindText(q.get(), 1, tenant);
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      AuditEntry& e = out.emplace_back();
      e.tenant = tenant;
      e.seq = ColumnInt(q.get(), 0);
      e.timeMs = ColumnInt(q.get(), 1);
      e.actor = ColumnText(q.get(), 2);
      e.action = ColumnText(q.get(), 3);
      e.object = ColumnText(q.get(), 4);
      e.detail = ColumnText(q.get(), 5);
      e.prevHash = ColumnText(q.get(), 6);
      e.hash = ColumnText(q.get(), 7);
    }
    return rc == SQLITE_DONE || Fail("reading the audit log of tenant " + tenant, failure);
  }

  // Sets `failure` from the connection's last error; returns false.
  bool Fail(const std::string& what, std::string& failure) const {
    failure =
        "state database " + DbPath().string() + ": " + what + ": " + sqlite3_errmsg(db_.get());
    return false;
  }

  // Runs `read` with the database connection, as part of the next group commit (the connection
  // belongs to whoever leads). Reads see every write queued before them. Logically const: the
  // store's contents do not change, only its queue, hence the const_cast (the store is never
  // created const).
  Status Read(std::function<bool(std::string& failure)> read) const {
    auto* self = const_cast<SqliteStore*>(this);  // NOLINT(cppcoreguidelines-pro-type-const-cast)
    return self->SubmitAndWait(std::make_shared<Op>(ReadOp{std::move(read)}));
  }

  // --- queue ---

  Status SubmitAndWait(OpPtr op) { return Submit(std::move(op), /*wait=*/true); }

  // Group commit, leader/follower: a writer queues its op; if no writer is committing, it
  // becomes the leader and commits everything queued in one transaction, on its own thread (no
  // hand-off to a committer thread: one wake-up fewer per write). Followers sleep until their op
  // is done, or until leadership is free while their op is still queued; then one of them leads.
  // A leader commits one batch and returns. Ops nobody waits for (events) are committed by the
  // next leader, or, when no writer is around to lead, by the flusher thread.
  //
  // Invariant: while ops are queued, a leader is active, or a queued op's submitter is waiting
  // and will lead, or the flusher has been woken and will lead.
  Status Submit(OpPtr op, bool wait) {
    std::unique_lock lock(queue_mu_);
    if (stopping_) return Error{"store is closed"};
    // A read sees every event recorded before it.
    if (std::holds_alternative<ReadOp>(op->work)) TakeEvents();
    // Backpressure: past this many queued ops an event waits like any write.
    op->waiter = wait || queue_.size() >= kMaxQueuedOps;
    if (!op->waiter) {
      EnqueueUnwaited(op);
      return Status::Ok();
    }
    op->seq = ++seq_;
    queue_.push_back(op);
    ++queued_waiters_;
    while (!op->done) {
      if (!leader_active_) {
        Lead(lock);
      } else {
        done_cv_.wait(lock);
      }
    }
    return op->status;
  }

  // Commits everything queued as one batch. Called with queue_mu_ held and no leader active;
  // returns with it held.
  void Lead(std::unique_lock<std::mutex>& lock) {
    leader_active_ = true;
    std::vector<OpPtr> batch;
    batch.swap(queue_);
    queued_waiters_ = 0;
    lock.unlock();
    RunBatch(batch);  // may take in ops queued meanwhile
    lock.lock();
    for (const OpPtr& op : batch) op->done = true;
    leader_active_ = false;
    done_cv_.notify_all();  // finished writers return; a still-queued one leads next
    if (!queue_.empty() && queued_waiters_ == 0) flush_cv_.notify_one();
  }

  // Commits ops nobody waits for (events, queued audit entries) when no writer does. It lingers
  // kFlushLinger first: a write that someone waits for usually comes along and takes them into
  // its transaction (a controller transition queues its audit entry and events just before or
  // after its done record), saving a transaction each.
  // Events wait for a batch first (kEventBatch or kEventLinger, see RecordEvent).
  void FlusherLoop() {
    std::unique_lock lock(queue_mu_);
    auto leaderless = [&] { return !queue_.empty() && !leader_active_; };
    for (;;) {
      flush_cv_.wait(lock, [&] { return stopping_ || leaderless() || !events_.empty(); });
      if (!stopping_ && !leaderless() && !events_.empty()) {
        flush_cv_.wait_until(lock, events_since_ + kEventLinger, [&] {
          return stopping_ || leaderless() || events_.size() >= kEventBatch;
        });
      }
      if (stopping_ || events_.size() >= kEventBatch ||
          (!events_.empty() && std::chrono::steady_clock::now() >= events_since_ + kEventLinger)) {
        TakeEvents();
      }
      if (!stopping_ && leaderless()) {
        flusher_lingering_ = true;
        flush_cv_.wait_for(lock, kFlushLinger,
                           [&] { return stopping_ || queue_.empty() || leader_active_; });
        flusher_lingering_ = false;
      }
      if (!queue_.empty() && !leader_active_) {
        Lead(lock);
      } else if (stopping_) {
        return;
      }
    }
  }

  // Queues an op nobody waits for (queue_mu_ held) and wakes the flusher when no leader will take
  // it; a lingering flusher is already on its way (one wake-up per linger, not per op).
  void EnqueueUnwaited(const OpPtr& op) {
    op->seq = ++seq_;
    queue_.push_back(op);
    if (!leader_active_ && !flusher_lingering_) flush_cv_.notify_one();
  }

  // Moves the pending events into the queue (queue_mu_ held).
  void TakeEvents() {
    for (OpPtr& e : events_) {
      e->seq = ++seq_;
      queue_.push_back(std::move(e));
    }
    events_.clear();
  }

  // Commits `batch` (growing it with ops queued meanwhile). If the transaction fails, retries
  // each op in a transaction of its own, so that only the ops that fail alone report an error.
  void RunBatch(std::vector<OpPtr>& batch) {
    std::string failure;
    if (RunTransaction(batch, /*late_join=*/true, failure)) return;
    if (batch.size() == 1) ForgetEarly(*batch.front());
    RollbackAndReload();
    if (batch.size() == 1) {
      batch.front()->status = Error{failure};
      LogIfUnwaited(*batch.front());
      return;
    }
    for (const OpPtr& op : batch) {
      std::vector<OpPtr> alone{op};
      std::string why;
      if (RunTransaction(alone, /*late_join=*/false, why)) continue;
      ForgetEarly(*op);
      RollbackAndReload();
      op->status = Error{why};
      LogIfUnwaited(*op);
    }
  }

  static void LogIfUnwaited(const Op& op) {
    if (const auto* e = std::get_if<EventOp>(&op.work)) {
      spdlog::warn("store: event {} {}/{} not recorded: {}", e->event.reason, e->event.objectKind,
                   e->event.objectKey, op.status.error().message);
    } else if (const auto* p = std::get_if<PutOp>(&op.work); p && op.early) {
      spdlog::error(
          "store: instance {} ({}) not recorded: {}; the record before it stands (an intent "
          "is resolved by probing after a restart)",
          p->instance.key.ToString(), StateName(p->instance.state), op.status.error().message);
    } else if (const auto* a = std::get_if<AuditOp>(&op.work); a && !op.waiter) {
      spdlog::error("store: audit entry {} {} of tenant {} not recorded: {}", a->entry.action,
                    a->entry.object, a->entry.tenant, op.status.error().message);
    }
  }

  // BEGIN IMMEDIATE, every write, COMMIT; then the committed instance changes go to memory.
  // With late_join, ops queued while the transaction runs join it before COMMIT: one more op in
  // a transaction costs a fraction of another transaction.
  //
  // A put of an instance that the same transaction writes again later (an action's intent and
  // its done record, both queued) is not executed: only the transaction's end is ever durable.
  bool RunTransaction(std::vector<OpPtr>& ops, bool late_join, std::string& failure) {
    if (!Step(begin_, "BEGIN IMMEDIATE", failure)) return false;
    std::map<InstanceKey, std::size_t> last_write;  // the last op of the batch per instance
    auto note = [&](std::size_t from) {
      for (std::size_t j = from; j < ops.size(); ++j) {
        if (const auto* put = std::get_if<PutOp>(&ops[j]->work)) {
          last_write[put->instance.key] = j;
        } else if (const auto* del = std::get_if<DeleteOp>(&ops[j]->work)) {
          last_write[del->key] = j;
        }
      }
    };
    note(0);
    for (std::size_t i = 0; i < ops.size(); ++i) {
      Op& op = *ops[i];
      op.status = Status::Ok();
      const auto* put = std::get_if<PutOp>(&op.work);
      if (put == nullptr || last_write[put->instance.key] == i) {
        const bool ok = std::visit([&](auto& work) { return Execute(op, work, failure); }, op.work);
        if (!ok) return false;
      }
      if (late_join && i + 1 == ops.size() && ops.size() < kMaxBatch) {
        std::lock_guard lock(queue_mu_);
        for (OpPtr& late : queue_) ops.push_back(std::move(late));
        queue_.clear();
        queued_waiters_ = 0;
        note(i + 1);
      }
    }
    const int64_t now = NowMs();
    if (now - last_expiry_ms_ >= kEventExpiryIntervalMs && !ExpireEventsStep(now, failure))
      return false;
    if (!Step(commit_, "COMMIT", failure)) return false;
    if (now - last_expiry_ms_ >= kEventExpiryIntervalMs) last_expiry_ms_ = now;
    ApplyCommitted(ops);
    transactions_.fetch_add(1, std::memory_order_relaxed);
    operations_.fetch_add(ops.size(), std::memory_order_relaxed);
    return true;
  }

  bool Step(const Stmt& stmt, const char* what, std::string& failure) {
    StmtUse use(stmt);
    return StepUse(use, failure, [&] { return std::string(what); });
  }

  void RollbackAndReload() {
    if (sqlite3_get_autocommit(db_.get()) == 0) {
      std::string ignored;
      if (!Step(rollback_, "ROLLBACK", ignored)) spdlog::error("store: {}", ignored);
    }
    // Memory may hold allocations, audit heads or specs of the rolled-back transaction.
    Result<Loaded> loaded = LoadAll();
    if (!loaded) {
      spdlog::error("store: reloading after a failed commit: {}", loaded.error().message);
      return;
    }
    Install(std::move(*loaded));
    // Early puts not yet committed stay visible (the batch's are retried one by one next).
    std::unique_lock lock(mu_);
    for (const auto& [key, op] : early_) Upsert(Instance(std::get<PutOp>(op->work).instance));
  }

  // An early put that failed alone: readers see the database's record again.
  void ForgetEarly(const Op& op) {
    const auto* put = std::get_if<PutOp>(&op.work);
    if (!put || !op.early) return;
    std::unique_lock lock(mu_);
    auto e = early_.find(put->instance.key);
    if (e == early_.end() || e->second.get() != &op) return;
    early_.erase(e);
  }

  // --- executing writes (the leader, inside a transaction) ---

  bool Execute(Op& /*op*/, PutOp& put, std::string& failure) {
    Instance& in = put.instance;
    if (!in.specHash.empty()) {
      auto it = specs_.find(in.specHash);
      if (it != specs_.end()) {
        in.spec = it->second;
      } else if (in.spec) {
        auto interned = std::make_shared<const PoolSpec>(*in.spec);
        Json::StreamWriterBuilder builder;
        builder["indentation"] = "";
        const std::string json = Json::writeString(builder, PoolSpecToJson(*interned));
        StmtUse q(insert_spec_);
        BindText(q.get(), 1, in.specHash);
        BindText(q.get(), 2, json);
        if (!StepUse(q, failure, [&] { return "storing spec " + in.specHash; })) return false;
        specs_.emplace(in.specHash, interned);
        in.spec = std::move(interned);
      }
    }
    StmtUse q(put_instance_);
    sqlite3_stmt* s = q.get();
    BindText(s, 1, in.key.tenant);
    BindText(s, 2, in.key.name);
    BindText(s, 3, in.pool);
    BindText(s, 4, StateName(in.state));
    BindText(s, 5, StateName(in.target));
    BindText(s, 6, in.specHash);
    BindInt(s, 7, static_cast<int64_t>(in.generation));
    BindInt(s, 8, in.handle.pid);
    BindInt(s, 9, static_cast<int64_t>(in.handle.startTime));
    BindText(s, 10, in.handle.socket);
    BindText(s, 11, in.handle.data);
    BindInt(s, 12, in.createdAtMs);
    BindInt(s, 13, in.stateSinceMs);
    BindInt(s, 14, in.updatedAtMs);
    BindInt(s, 15, in.failures);
    BindText(s, 16, in.lastError);
    BindInt(s, 17, in.failed ? 1 : 0);
    if (in.pending) {
      BindText(s, 18, ActionName(*in.pending));
    } else {
      sqlite3_bind_null(s, 18);
    }
    return StepUse(q, failure, [&] { return "storing instance " + in.key.ToString(); });
  }

  bool Execute(Op& /*op*/, DeleteOp& del, std::string& failure) {
    StmtUse q(delete_instance_);
    BindText(q.get(), 1, del.key.tenant);
    BindText(q.get(), 2, del.key.name);
    return StepUse(q, failure, [&] { return "deleting instance " + del.key.ToString(); });
  }

  bool Execute(Op& op, AllocateOp& a, std::string& failure) {
    if (auto owner = owners_.find(a.owner); owner != owners_.end()) {
      if (auto it = owner->second.find(a.kind); it != owner->second.end()) {
        op.value = it->second;  // idempotent: the owner keeps its value, even outside [lo, hi]
        return true;
      }
    }
    auto used = used_.find(a.kind);
    const std::optional<int64_t> free =
        used == used_.end() ? std::optional<int64_t>(a.lo) : LowestFree(used->second, a.lo);
    if (!free || *free > a.hi) {
      op.status = Error{"no free " + a.kind + " left for " + a.owner.ToString() + ": all of [" +
                        std::to_string(a.lo) + ", " + std::to_string(a.hi) + "] are allocated"};
      return true;
    }
    StmtUse q(insert_allocation_);
    BindText(q.get(), 1, a.kind);
    BindInt(q.get(), 2, *free);
    BindText(q.get(), 3, a.owner.tenant);
    BindText(q.get(), 4, a.owner.name);
    if (!StepUse(q, failure, [&] { return "allocating " + a.kind + " " + std::to_string(*free); }))
      return false;
    std::unique_lock lock(mu_);
    MarkUsed(used_[a.kind], *free);
    owners_[a.owner][a.kind] = *free;
    op.value = *free;
    return true;
  }

  bool Execute(Op& /*op*/, ReleaseOp& r, std::string& failure) {
    auto owner = owners_.find(r.owner);
    if (owner == owners_.end()) return true;
    StmtUse q(delete_allocations_);
    BindText(q.get(), 1, r.owner.tenant);
    BindText(q.get(), 2, r.owner.name);
    if (!StepUse(q, failure, [&] { return "releasing allocations of " + r.owner.ToString(); }))
      return false;
    std::unique_lock lock(mu_);
    for (const auto& [kind, value] : owner->second) {
      if (auto used = used_.find(kind); used != used_.end()) MarkFree(used->second, value);
    }
    owners_.erase(owner);
    return true;
  }

  bool Execute(Op& /*op*/, EventOp& ev, std::string& failure) {
    const Event& e = ev.event;
    const int64_t first = e.firstMs != 0 ? e.firstMs : NowMs();
    const int64_t last = std::max(e.lastMs, first);
    const int count = std::max(e.count, 1);
    const std::string_view type = EventTypeName(e.type);
    int64_t fold_id = 0;
    {
      StmtUse q(last_event_);
      BindText(q.get(), 1, e.objectKind);
      BindText(q.get(), 2, e.objectKey);
      const int rc = sqlite3_step(q.get());
      if (rc == SQLITE_ROW && ColumnText(q.get(), 1) == type &&
          ColumnText(q.get(), 2) == e.reason && ColumnText(q.get(), 3) == e.message) {
        fold_id = ColumnInt(q.get(), 0);
      } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return Fail("reading events of " + e.objectKey, failure);
      }
    }
    if (fold_id != 0) {
      StmtUse q(fold_event_);
      BindInt(q.get(), 1, count);
      BindInt(q.get(), 2, last);
      BindText(q.get(), 3, e.from);
      BindInt(q.get(), 4, fold_id);
      return StepUse(q, failure, [&] { return std::string("folding event"); });
    }
    {
      StmtUse q(insert_event_);
      BindText(q.get(), 1, e.objectKind);
      BindText(q.get(), 2, e.objectKey);
      BindText(q.get(), 3, type);
      BindText(q.get(), 4, e.reason);
      BindText(q.get(), 5, e.message);
      BindText(q.get(), 6, e.from);
      BindInt(q.get(), 7, first);
      BindInt(q.get(), 8, last);
      BindInt(q.get(), 9, count);
      if (!StepUse(q, failure, [&] { return std::string("recording event"); })) return false;
    }
    // Pruning walks the object's newest events: done every kEventPruneEvery inserts per object,
    // not each time (reads return the newest eventsPerObject anyway). The counts are a hint:
    // forgetting them (a restart, or the map grown past kEventCountsMax) only delays a prune.
    if (event_inserts_.size() >= kEventCountsMax) event_inserts_.clear();
    uint32_t& inserted = event_inserts_[e.objectKind + '/' + e.objectKey];
    if (++inserted < kEventPruneEvery) return true;
    inserted = 0;
    StmtUse q(prune_events_);
    BindText(q.get(), 1, e.objectKind);
    BindText(q.get(), 2, e.objectKey);
    BindInt(q.get(), 3, options_.eventsPerObject);
    return StepUse(q, failure, [&] { return std::string("pruning events"); });
  }

  bool Execute(Op& /*op*/, ReadOp& r, std::string& failure) { return r.read(failure); }

  bool Execute(Op& /*op*/, AuditOp& a, std::string& failure) {
    AuditEntry& e = a.entry;
    auto head = heads_.find(e.tenant);
    e.seq = head == heads_.end() ? 1 : head->second.seq + 1;
    e.prevHash = head == heads_.end() ? std::string() : head->second.hash;
    e.timeMs = NowMs();
    e.hash = AuditEntryHash(e.prevHash, e);
    StmtUse q(insert_audit_);
    BindText(q.get(), 1, e.tenant);
    BindInt(q.get(), 2, e.seq);
    BindInt(q.get(), 3, e.timeMs);
    BindText(q.get(), 4, e.actor);
    BindText(q.get(), 5, e.action);
    BindText(q.get(), 6, e.object);
    BindText(q.get(), 7, e.detail);
    BindText(q.get(), 8, e.prevHash);
    BindText(q.get(), 9, e.hash);
    if (!StepUse(q, failure, [&] { return "appending audit entry for tenant " + e.tenant; }))
      return false;
    heads_[e.tenant] = AuditHead{e.seq, e.hash};
    return true;
  }

  // Steps a statement to completion; on error sets `failure` from what() (built only then:
  // this runs for every write).
  template <typename What>
  bool StepUse(const StmtUse& q, std::string& failure, const What& what) {
    const int rc = sqlite3_step(q.get());
    return rc == SQLITE_DONE || rc == SQLITE_ROW || Fail(what(), failure);
  }

  bool ExpireEventsStep(int64_t now, std::string& failure) {
    StmtUse q(expire_events_);
    BindInt(q.get(), 1, now - kEventTtlMs);
    return StepUse(q, failure, [&] { return std::string("expiring old events"); });
  }

  void ExpireEvents(int64_t now) {
    std::string failure;
    if (!ExpireEventsStep(now, failure)) spdlog::warn("store: {}", failure);
    last_expiry_ms_ = now;
  }

  // Committed puts and deletes become visible to readers, in commit order; an early put is
  // visible already, and a write older than the key's latest early put leaves memory alone.
  void ApplyCommitted(std::span<const OpPtr> ops) {
    std::unique_lock lock(mu_);
    std::lock_guard names(names_mu_);
    auto superseded = [&](const InstanceKey& key, const Op& op) {
      auto e = early_.find(key);
      if (e == early_.end()) return false;
      if (e->second->seq > op.seq) return true;
      const bool self = e->second.get() == &op;
      early_.erase(e);
      return self;
    };
    for (const OpPtr& op : ops) {
      if (auto* put = std::get_if<PutOp>(&op->work)) {
        reserved_names_.erase(put->instance.key);
        if (superseded(put->instance.key, *op)) continue;
        Upsert(std::move(put->instance));
      } else if (auto* del = std::get_if<DeleteOp>(&op->work)) {
        reserved_names_.erase(del->key);
        if (superseded(del->key, *op)) continue;
        auto it = instances_.find(del->key);
        if (it == instances_.end()) continue;
        Unindex(it->second);
        instances_.erase(it);
      }
    }
  }

  void Upsert(Instance&& instance) {
    auto [it, inserted] = instances_.try_emplace(instance.key);
    if (!inserted && it->second.pool != instance.pool) Unindex(it->second);
    it->second = std::move(instance);
    pools_[it->second.key.tenant][it->second.pool].insert(&it->second);
  }

  void Unindex(const Instance& instance) {
    auto t = pools_.find(instance.key.tenant);
    if (t == pools_.end()) return;
    auto p = t->second.find(instance.pool);
    if (p == t->second.end()) return;
    if (auto m = p->second.find(std::string_view(instance.key.name)); m != p->second.end())
      p->second.erase(m);
    if (p->second.empty()) t->second.erase(p);
    if (t->second.empty()) pools_.erase(t);
  }

  // --- loading ---

  Result<Loaded> LoadAll() {
    Loaded out;
    sqlite3* db = db_.get();
    {
      Result<Stmt> q = Prepare(db, "SELECT hash, json FROM specs");
      if (!q) return q.error();
      int rc;
      while ((rc = sqlite3_step(q->get())) == SQLITE_ROW) {
        const std::string hash = ColumnText(q->get(), 0);
        const std::string text = ColumnText(q->get(), 1);
        Json::Value json;
        Json::CharReaderBuilder builder;
        std::string errors;
        std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
        if (!reader->parse(text.data(), text.data() + text.size(), &json, &errors))
          return Error{"state database: spec " + hash + " is not valid JSON: " + errors};
        Result<PoolSpec> spec = PoolSpecFromJson(json);
        if (!spec) return Error{"state database: spec " + hash + ": " + spec.error().message};
        out.specs.emplace(hash, std::make_shared<const PoolSpec>(std::move(*spec)));
      }
      if (rc != SQLITE_DONE) return SqlError(db, "loading specs");
    }
    {
      Result<Stmt> q = Prepare(db,
                               "SELECT tenant, name, pool, state, target, spec_hash, generation, "
                               "pid, start_time, socket, handle_data, created_ms, state_since_ms, "
                               "updated_ms, failures, last_error, failed, pending FROM instances");
      if (!q) return q.error();
      sqlite3_stmt* s = q->get();
      int rc;
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        Instance in;
        in.key = {ColumnText(s, 0), ColumnText(s, 1)};
        in.pool = ColumnText(s, 2);
        const std::string state = ColumnText(s, 3);
        const std::string target = ColumnText(s, 4);
        const std::optional<InstanceState> parsed_state = ParseState(state);
        const std::optional<InstanceState> parsed_target = ParseState(target);
        if (!parsed_state || !parsed_target) {
          return Error{"state database: instance " + in.key.ToString() +
                       " has an unknown state \"" + (parsed_state ? target : state) + "\""};
        }
        in.state = *parsed_state;
        in.target = *parsed_target;
        in.specHash = ColumnText(s, 5);
        in.generation = static_cast<uint64_t>(ColumnInt(s, 6));
        in.handle.pid = ColumnInt(s, 7);
        in.handle.startTime = static_cast<uint64_t>(ColumnInt(s, 8));
        in.handle.socket = ColumnText(s, 9);
        in.handle.data = ColumnText(s, 10);
        in.createdAtMs = ColumnInt(s, 11);
        in.stateSinceMs = ColumnInt(s, 12);
        in.updatedAtMs = ColumnInt(s, 13);
        in.failures = static_cast<int>(ColumnInt(s, 14));
        in.lastError = ColumnText(s, 15);
        in.failed = ColumnInt(s, 16) != 0;
        if (sqlite3_column_type(s, 17) != SQLITE_NULL) {
          const std::string pending = ColumnText(s, 17);
          in.pending = ParseAction(pending);
          if (!in.pending) {
            return Error{"state database: instance " + in.key.ToString() +
                         " has an unknown pending action \"" + pending + "\""};
          }
        }
        if (auto spec = out.specs.find(in.specHash); spec != out.specs.end())
          in.spec = spec->second;
        InstanceKey key = in.key;
        out.instances.emplace(std::move(key), std::move(in));
      }
      if (rc != SQLITE_DONE) return SqlError(db, "loading instances");
    }
    {
      Result<Stmt> q = Prepare(db, "SELECT kind, value, tenant, name FROM allocations");
      if (!q) return q.error();
      int rc;
      while ((rc = sqlite3_step(q->get())) == SQLITE_ROW) {
        const std::string kind = ColumnText(q->get(), 0);
        const int64_t value = ColumnInt(q->get(), 1);
        MarkUsed(out.used[kind], value);
        out.owners[InstanceKey{ColumnText(q->get(), 2), ColumnText(q->get(), 3)}][kind] = value;
      }
      if (rc != SQLITE_DONE) return SqlError(db, "loading allocations");
    }
    {
      // SQLite returns the other columns of the row holding MAX(seq) (bare-column rule).
      Result<Stmt> q = Prepare(db, "SELECT tenant, MAX(seq), hash FROM audit GROUP BY tenant");
      if (!q) return q.error();
      int rc;
      while ((rc = sqlite3_step(q->get())) == SQLITE_ROW) {
        out.heads[ColumnText(q->get(), 0)] =
            AuditHead{ColumnInt(q->get(), 1), ColumnText(q->get(), 2)};
      }
      if (rc != SQLITE_DONE) return SqlError(db, "loading audit heads");
    }
    return out;
  }

  void Install(Loaded loaded) {
    std::unique_lock lock(mu_);
    specs_ = std::move(loaded.specs);
    instances_ = std::move(loaded.instances);
    used_ = std::move(loaded.used);
    owners_ = std::move(loaded.owners);
    heads_ = std::move(loaded.heads);
    pools_.clear();
    for (auto& [key, instance] : instances_) pools_[key.tenant][instance.pool].insert(&instance);
  }

  Status PrepareStatements() {
    struct Want {
      Stmt* stmt;
      const char* sql;
    };
    const Want wants[] = {
        {&begin_, "BEGIN IMMEDIATE"},
        {&commit_, "COMMIT"},
        {&rollback_, "ROLLBACK"},
        {&insert_spec_, "INSERT OR IGNORE INTO specs(hash, json) VALUES(?1, ?2)"},
        {&put_instance_,
         "INSERT INTO instances(tenant, name, pool, state, target, spec_hash, generation, pid, "
         "start_time, socket, handle_data, created_ms, state_since_ms, updated_ms, failures, "
         "last_error, failed, pending) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
         "?13, ?14, ?15, ?16, ?17, ?18) ON CONFLICT(tenant, name) DO UPDATE SET "
         "pool = excluded.pool, state = excluded.state, target = excluded.target, "
         "spec_hash = excluded.spec_hash, generation = excluded.generation, pid = excluded.pid, "
         "start_time = excluded.start_time, socket = excluded.socket, "
         "handle_data = excluded.handle_data, created_ms = excluded.created_ms, "
         "state_since_ms = excluded.state_since_ms, updated_ms = excluded.updated_ms, "
         "failures = excluded.failures, last_error = excluded.last_error, "
         "failed = excluded.failed, pending = excluded.pending"},
        {&delete_instance_, "DELETE FROM instances WHERE tenant = ?1 AND name = ?2"},
        {&insert_allocation_,
         "INSERT INTO allocations(kind, value, tenant, name) VALUES(?1, ?2, ?3, ?4)"},
        {&delete_allocations_, "DELETE FROM allocations WHERE tenant = ?1 AND name = ?2"},
        {&last_event_,
         "SELECT id, type, reason, message FROM events WHERE object_kind = ?1 AND "
         "object_key = ?2 ORDER BY id DESC LIMIT 1"},
        {&fold_event_,
         "UPDATE events SET count = count + ?1, last_ms = MAX(last_ms, ?2), source = ?3 "
         "WHERE id = ?4"},
        {&insert_event_,
         "INSERT INTO events(object_kind, object_key, type, reason, message, source, first_ms, "
         "last_ms, count) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"},
        {&prune_events_,
         "DELETE FROM events WHERE object_kind = ?1 AND object_key = ?2 AND id <= (SELECT id "
         "FROM events WHERE object_kind = ?1 AND object_key = ?2 ORDER BY id DESC LIMIT 1 "
         "OFFSET ?3)"},
        {&expire_events_, "DELETE FROM events WHERE last_ms < ?1"},
        {&insert_audit_,
         "INSERT INTO audit(tenant, seq, time_ms, actor, action, object, detail, prev_hash, "
         "hash) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"},
        {&select_events_,
         "SELECT type, reason, message, source, first_ms, last_ms, count FROM (SELECT * FROM "
         "events WHERE object_kind = ?1 AND object_key = ?2 ORDER BY id DESC LIMIT ?3) ORDER BY "
         "id"},
        {&select_audit_,
         "SELECT seq, time_ms, actor, action, object, detail, prev_hash, hash FROM audit WHERE "
         "tenant = ?1 ORDER BY seq"},
    };
    for (const Want& want : wants) {
      Result<Stmt> stmt = Prepare(db_.get(), want.sql);
      if (!stmt) return stmt.error();
      *want.stmt = std::move(*stmt);
    }
    return Status::Ok();
  }

  std::filesystem::path DbPath() const { return options_.dir / "state.db"; }

  const Options options_;
  UniqueFd lock_;  // flock on <dir>/lock; released last
  Db db_;          // the current leader only (and Start)

  // Prepared once, used by the current leader only.
  Stmt begin_, commit_, rollback_, insert_spec_, put_instance_, delete_instance_,
      insert_allocation_, delete_allocations_, last_event_, fold_event_, insert_event_,
      prune_events_, expire_events_, insert_audit_, select_events_, select_audit_;

  // In-memory state. Readers take mu_ shared. The current leader is the only writer: it reads
  // these without a lock and takes mu_ exclusively to change them. Leadership passes under
  // queue_mu_, which orders one leader's changes before the next one's reads.
  mutable std::shared_mutex mu_;
  std::map<InstanceKey, Instance> instances_;
  std::map<std::string, std::map<std::string, PoolMembers, std::less<>>, std::less<>> pools_;
  std::map<std::string, Runs, std::less<>> used_;
  std::map<InstanceKey, std::map<std::string, int64_t>> owners_;
  // The current leader only (no reader looks at them).
  std::map<std::string, AuditHead, std::less<>> heads_;
  std::unordered_map<std::string, std::shared_ptr<const PoolSpec>> specs_;
  std::unordered_map<std::string, uint32_t> event_inserts_;  // per object since its last prune
  int64_t last_expiry_ms_ = 0;

  // Names handed out by NewInstanceName and not yet put; lock order: mu_, then names_mu_.
  std::mutex names_mu_;
  std::set<InstanceKey> reserved_names_;
  // The latest early put of each key whose record in memory is not yet committed (guarded by
  // mu_).
  std::map<InstanceKey, OpPtr> early_;

  // Group commit queue.
  std::mutex queue_mu_;
  std::condition_variable done_cv_;   // a batch committed and leadership is free
  std::condition_variable flush_cv_;  // queued events need a leader
  std::vector<OpPtr> queue_;
  std::vector<OpPtr> events_;  // recorded events not yet in queue_ (RecordEvent)
  std::chrono::steady_clock::time_point events_since_;  // when the oldest of them was
  std::size_t queued_waiters_ = 0;                      // queued ops whose submitter waits
  uint64_t seq_ = 0;                                    // the last op's Op::seq
  bool leader_active_ = false;
  bool flusher_lingering_ = false;  // the flusher will look at the queue without a notify
  bool stopping_ = false;
  std::atomic<uint64_t> transactions_{0};
  std::atomic<uint64_t> operations_{0};
  std::thread flusher_;
};

// --- Open ---

Result<UniqueFd> LockDirectory(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return Error{"cannot open " + path.string() + ": " + std::strerror(errno)};
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK)
      return Error{"cannot lock " + path.string() + ": " + std::strerror(errno)};
    std::array<char, 32> holder{};
    const ssize_t n = ::pread(fd.get(), holder.data(), holder.size() - 1, 0);
    std::string pid = n > 0 ? std::string(holder.data(), static_cast<std::size_t>(n)) : "";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    return Error{"state directory " + dir.string() + " is in use by another mvmd" +
                 (pid.empty() ? "" : " (pid " + pid + ")") + ": " + path.string() + " is locked"};
  }
  // Best effort: the holder's pid, for the message above.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) == 0) {
    [[maybe_unused]] const ssize_t n = ::pwrite(fd.get(), pid.data(), pid.size(), 0);
  }
  return fd;
}

Status Migrate(sqlite3* db, const std::filesystem::path& path) {
  Result<std::string> version_text = QueryOne(db, "PRAGMA user_version");
  if (!version_text) return version_text.error();
  const long version = std::strtol(version_text->c_str(), nullptr, 10);
  const auto latest = static_cast<long>(kMigrations.size());
  if (version > latest) {
    return Error{path.string() + " has schema version " + std::to_string(version) +
                 ", newer than this mvmd understands (" + std::to_string(latest) +
                 "); run a newer mvmd"};
  }
  for (long v = version; v < latest; ++v) {
    const std::string step = "BEGIN IMMEDIATE;\n" +
                             std::string(kMigrations[static_cast<std::size_t>(v)]) +
                             "\nPRAGMA user_version = " + std::to_string(v + 1) + ";\nCOMMIT;";
    if (Status s = Exec(db, step.c_str()); !s) {
      (void)Exec(db, "ROLLBACK");
      return Error{path.string() + ": migrating to schema version " + std::to_string(v + 1) + ": " +
                   s.error().message};
    }
  }
  return Status::Ok();
}

}  // namespace

std::string AuditCanonicalText(const AuditEntry& entry) {
  std::string out = "mvm-audit-v1";
  AppendEscaped(out, entry.tenant);
  AppendEscaped(out, std::to_string(entry.seq));
  AppendEscaped(out, std::to_string(entry.timeMs));
  AppendEscaped(out, entry.actor);
  AppendEscaped(out, entry.action);
  AppendEscaped(out, entry.object);
  AppendEscaped(out, entry.detail);
  return out;
}

std::string AuditEntryHash(std::string_view prevHash, const AuditEntry& entry) {
  return Sha256Hex(prevHash, AuditCanonicalText(entry));
}

std::optional<CommitStats> CommitStatsOf(const Store& store) {
  if (const auto* sqlite = dynamic_cast<const SqliteStore*>(&store)) return sqlite->Stats();
  return std::nullopt;
}

Result<std::unique_ptr<Store>> OpenSqliteStore(const Store::Options& options) {
  if (options.dir.empty()) return Error{"state directory not set"};
  if (options.eventsPerObject < 1) return Error{"eventsPerObject must be at least 1"};
  const std::filesystem::path& dir = options.dir;
  std::error_code ec;
  if (dir.has_parent_path()) std::filesystem::create_directories(dir.parent_path(), ec);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return Error{"cannot create state directory " + dir.string() + ": " + std::strerror(errno)};
  if (!std::filesystem::is_directory(dir, ec))
    return Error{"state directory " + dir.string() + " is not a directory"};

  Result<UniqueFd> lock = LockDirectory(dir);
  if (!lock) return lock.error();

  const std::filesystem::path path = dir / "state.db";
  Result<Db> handle = OpenDb(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!handle) return handle.error();
  sqlite3* db = handle->get();
  // Exclusive locking before WAL: the WAL index lives in process memory instead of a shared
  // -shm file, which saves the half-dozen fcntl() lock calls every transaction otherwise makes
  // (about a third of a small transaction's CPU). The price: no other connection, in this
  // process or another, can open state.db while the store is open.
  Result<std::string> locking = QueryOne(db, "PRAGMA locking_mode=EXCLUSIVE");
  if (!locking) return Error{path.string() + ": " + locking.error().message};
  Result<std::string> mode = QueryOne(db, "PRAGMA journal_mode=WAL");
  if (!mode) return Error{path.string() + ": " + mode.error().message};
  if (*mode != "wal")
    return Error{path.string() + ": cannot switch to WAL mode (journal_mode is " + *mode + ")"};
  const std::string checkpoint =
      "PRAGMA wal_autocheckpoint=" + std::to_string(kWalAutocheckpointPages);
  for (const char* pragma : {"PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON",
                             "PRAGMA journal_size_limit=67108864", checkpoint.c_str()}) {
    if (Status s = Exec(db, pragma); !s) return Error{path.string() + ": " + s.error().message};
  }
  if (Status s = Migrate(db, path); !s) return s.error();
  if (Status s = Exec(db, "DELETE FROM specs WHERE hash NOT IN (SELECT spec_hash FROM instances)");
      !s) {
    return Error{path.string() + ": " + s.error().message};
  }

  auto store = std::make_unique<SqliteStore>(options, std::move(*lock), std::move(*handle));
  if (Status s = store->Start(); !s) return Error{path.string() + ": " + s.error().message};
  return std::unique_ptr<Store>(std::move(store));
}

Result<std::unique_ptr<Store>> Store::Open(const Options& options) {
  return OpenSqliteStore(options);
}

}  // namespace mvm::controller
