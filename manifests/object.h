#pragma once
// The objects operators declare: Tenant and Pool at apiVersion mvm.dev/v1alpha1.
//
// Promises:
//  - An Object is immutable once built and shared between snapshots (ObjectPtr).
//  - `manifest` holds the document with every schema default applied (a Json::Value built on
//    first use, once, safely from any thread; it reads as a const Json::Value); `spec` is the
//    typed view of the same data, so the controller never re-reads JSON.
//  - `specHash` is a stable hash of the defaulted `spec` (canonical JSON, keys sorted): equal
//    specs hash equal across processes, machines and key order in the file.
//  - `generation` starts at 1 and grows by one each time a snapshot sees a new specHash for the
//    same key (metadata-only edits such as labels do not bump it).

#include <json/value.h>

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mvm::manifests {

inline constexpr std::string_view kApiVersion = "mvm.dev/v1alpha1";

enum class Kind { kTenant, kPool };
std::string_view KindName(Kind kind);
std::optional<Kind> ParseKind(std::string_view name);

// Identifies one object across files and snapshots. Tenants have an empty `tenant`.
struct ObjectKey {
  Kind kind = Kind::kTenant;
  std::string tenant;
  std::string name;

  static ObjectKey TenantKey(std::string name) { return {Kind::kTenant, {}, std::move(name)}; }
  static ObjectKey PoolKey(std::string tenant, std::string name) {
    return {Kind::kPool, std::move(tenant), std::move(name)};
  }
  // "Tenant acme", "Pool acme/workers": the form used in diagnostics and logs.
  std::string ToString() const;
  auto operator<=>(const ObjectKey&) const = default;
  bool operator==(const ObjectKey&) const = default;
};

// Where an object was declared.
struct Source {
  std::string file;
  int line = 0;
  int column = 0;
};

struct TenantQuota {  // absent = unlimited
  std::optional<int64_t> vcpus, memoryMiB, running, warm, sleeping, diskMiB;
};

struct TenantSpec {
  TenantQuota quota;
  std::optional<std::string> subnet;  // IPv4 CIDR, validated
};

enum class Runtime { kFirecracker, kQemu };
std::string_view RuntimeName(Runtime runtime);
std::optional<Runtime> ParseRuntime(std::string_view name);

enum class Lifecycle { kService, kDaemon, kJob };
std::string_view LifecycleName(Lifecycle lifecycle);

struct ImageSpec {
  // Absolute, normalised paths inside one of the configured image roots.
  std::string kernel;
  std::string rootfs;
  std::optional<std::string> initrd;
  std::string bootArgs;
};

// spec.resources.io: io.max on the instance's cgroup for the disk holding its directory
// (docs/security.md); 0: no limit for that key.
struct IoLimits {
  int64_t readBps = 0;
  int64_t writeBps = 0;
  int64_t readIops = 0;
  int64_t writeIops = 0;
  bool Any() const { return readBps > 0 || writeBps > 0 || readIops > 0 || writeIops > 0; }
};

struct Resources {
  int vcpus = 1;
  int64_t memoryMiB = 256;
  int64_t diskMiB = 1024;
  IoLimits io;
};

struct Replicas {
  int running = 0;
  int warm = 0;
  int sleeping = 0;
  int Total() const { return running + warm + sleeping; }
  bool operator==(const Replicas&) const = default;
};

struct Policy {
  int64_t minRunningSeconds = 0;
  int64_t minWarmSeconds = 0;
  int64_t idleToWarmSeconds = 0;   // 0: never
  int64_t warmToSleepSeconds = 0;  // 0: never
  int64_t drainTimeoutSeconds = 30;
  int64_t gracefulStopSeconds = 15;
};

// spec.security: how the pool's VMM processes are confined (docs/security.md).
struct Security {
  std::string seccomp = "baseline";  // baseline | strict (the schema's enum)
};

// spec.snapshot: how instances are snapshotted (docs/firecracker.md, "Pool base snapshot").
struct SnapshotSpec {
  // One template snapshot per pool spec; instances start from it and sleep as Diffs of it.
  bool base = false;
};

struct PoolSpec {
  Runtime runtime = Runtime::kFirecracker;
  ImageSpec image;
  std::vector<std::string> cmd;
  std::map<std::string, std::string> env;
  Resources resources;
  Lifecycle lifecycle = Lifecycle::kService;
  Replicas replicas;
  Policy policy;
  Security security;
  SnapshotSpec snapshot;
};

// A document kept in the parser's compact form until someone reads it as a Json::Value. Reads
// like a const Json::Value (it converts to one, and indexes like one); copies share the built
// value. Building happens once, under std::call_once.
class Manifest {
 public:
  // Builds the Json::Value: called at most once, from whichever thread reads first.
  class Source {
   public:
    virtual ~Source() = default;
    virtual Json::Value Build() const = 0;
  };

  Manifest() = default;  // null
  explicit Manifest(Json::Value value);
  explicit Manifest(std::shared_ptr<const Source> source);

  const Json::Value& value() const;
  operator const Json::Value&() const { return value(); }  // NOLINT(google-explicit-constructor)
  const Json::Value& operator[](const char* key) const { return value()[key]; }
  const Json::Value& operator[](const std::string& key) const { return value()[key]; }
  bool isNull() const { return value().isNull(); }
  bool isObject() const { return value().isObject(); }
  bool isMember(const char* key) const { return value().isMember(key); }
  bool isMember(const std::string& key) const { return value().isMember(key); }

 private:
  struct State {
    std::once_flag once;
    std::shared_ptr<const Source> source;
    Json::Value value;
  };
  std::shared_ptr<State> state_;
};

struct Object {
  ObjectKey key;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
  Manifest manifest;     // defaulted document
  std::string specHash;  // 16 hex digits
  uint64_t generation = 1;
  Source source;
  std::variant<TenantSpec, PoolSpec> spec;

  const TenantSpec* tenant() const { return std::get_if<TenantSpec>(&spec); }
  const PoolSpec* pool() const { return std::get_if<PoolSpec>(&spec); }
};

using ObjectPtr = std::shared_ptr<const Object>;

// Hash of a JSON value in canonical form (object keys sorted, no whitespace), 16 hex digits.
std::string CanonicalHash(const Json::Value& value);

}  // namespace mvm::manifests
