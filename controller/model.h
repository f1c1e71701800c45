#pragma once
// The controller's domain model: instances, their states and lifecycle actions, events.
// Knows nothing of SQLite, HTTP, QEMU or Firecracker (STYLE.md: core vs infrastructure).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "manifests/object.h"

namespace mvm::controller {

// The instance state machine of DESIGN.md. kDestroyed is terminal: the record is removed once
// destroy succeeds.
enum class InstanceState { kCreated, kReady, kRunning, kWarm, kSleeping, kStopped, kDestroyed };
std::string_view StateName(InstanceState state);
std::optional<InstanceState> ParseState(std::string_view name);

// One lifecycle action, i.e. one edge of the state machine.
enum class Action { kPrepare, kStart, kPause, kResume, kSleep, kWake, kStop, kRebuild, kDestroy };
std::string_view ActionName(Action action);
std::optional<Action> ParseAction(std::string_view name);

// What a driver needs to find a live VMM again after mvmd restarts.
struct VmmHandle {
  int64_t pid = 0;
  uint64_t startTime = 0;  // /proc/PID/stat field 22: tells a reused pid from ours
  std::string socket;      // control socket (QMP or Firecracker API)
  std::string data;        // driver-private JSON
  bool empty() const { return pid == 0 && socket.empty(); }
  bool operator==(const VmmHandle&) const = default;
};

struct InstanceKey {
  std::string tenant;
  std::string name;  // "<pool>-<suffix>", unique within the tenant
  std::string ToString() const { return tenant + "/" + name; }
  auto operator<=>(const InstanceKey&) const = default;
  bool operator==(const InstanceKey&) const = default;
};

struct Instance {
  InstanceKey key;
  std::string pool;
  InstanceState state = InstanceState::kCreated;
  InstanceState target = InstanceState::kRunning;
  // The spec this instance was created from (pools roll instances to new specs one at a time,
  // so an instance keeps its own spec until it is replaced).
  std::string specHash;
  uint64_t generation = 0;
  std::shared_ptr<const manifests::PoolSpec> spec;
  VmmHandle handle;
  int64_t createdAtMs = 0;
  int64_t stateSinceMs = 0;  // when `state` was entered
  int64_t updatedAtMs = 0;
  int failures = 0;  // consecutive failed actions; 0 after a success
  std::string lastError;
  bool failed = false;  // gave up after repeated failures: condition Failed, reason lastError
  // An action recorded as intended but not yet recorded as done: after a crash, the instance
  // reconciler probes the VMM to learn whether it happened.
  std::optional<Action> pending;
};

enum class EventType { kNormal, kWarning };

struct Event {
  std::string objectKind;  // "Pool", "Instance", "Tenant"
  std::string objectKey;   // "acme/workers"
  EventType type = EventType::kNormal;
  std::string reason;  // CamelCase, e.g. "Started", "QuotaExceeded"
  std::string message;
  std::string from;  // component, e.g. "instance-reconciler"
  int64_t firstMs = 0;
  int64_t lastMs = 0;
  int count = 1;  // repeats of the same type/reason/message are folded into one event
};

// Milliseconds since the Unix epoch (wall clock: for records people read).
int64_t NowMs();

}  // namespace mvm::controller
