#pragma once
// StatusView: what the controller knows, for the API and the CLI. Read-only and thread-safe.
//
// Promises:
//  - Every method returns a consistent copy (no references into live controller state).
//  - ChangeSeq() grows whenever anything a status dump shows may have changed (desired state,
//    pool status, an instance, an event); WaitForChange blocks until it passes `after` or the
//    timeout elapses, so watchers never poll busily.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "controller/model.h"
#include "manifests/desired_state.h"

namespace mvm::controller {

// Kubernetes-style condition: Ready, Progressing, Degraded, QuotaExceeded.
struct Condition {
  std::string type;
  bool status = false;
  std::string reason;
  std::string message;
  uint64_t observedGeneration = 0;
  int64_t lastTransitionMs = 0;
};

struct Counts {
  int running = 0;
  int warm = 0;
  int sleeping = 0;
  bool operator==(const Counts&) const = default;
};

struct PoolStatus {
  std::string tenant;
  std::string name;
  uint64_t generation = 0;          // of the pool object in the desired state
  uint64_t observedGeneration = 0;  // the generation the last reconcile acted on
  std::string specHash;
  Counts desired;
  Counts current;        // instances whose state is Running / Warm / Sleeping
  int ready = 0;         // instances at their target on the current spec, not failed
  int instances = 0;     // all instances of the pool, whatever their state
  bool pruning = false;  // the pool left the manifests and is being drained
  std::vector<Condition> conditions;
  int64_t firstSeenMs = 0;
};

struct TenantUsage {
  int64_t vcpus = 0;
  int64_t memoryMiB = 0;
  int64_t diskMiB = 0;
  int running = 0;
  int warm = 0;
  int sleeping = 0;
  bool operator==(const TenantUsage&) const = default;
};

struct TenantStatus {
  std::string name;
  TenantUsage usage;
  int pools = 0;
  int instances = 0;
  int64_t firstSeenMs = 0;
};

class StatusView {
 public:
  virtual ~StatusView() = default;
  virtual std::shared_ptr<const manifests::DesiredState> Desired() const = 0;
  virtual std::vector<TenantStatus> Tenants() const = 0;
  virtual std::vector<PoolStatus> Pools() const = 0;
  virtual std::vector<Instance> Instances() const = 0;
  virtual std::vector<Event> Events(const std::string& objectKind,
                                    const std::string& objectKey) const = 0;
  // Controller-wide problems an operator must see: manifest errors, held-back prunes,
  // missing cgroup controllers… one line each.
  virtual std::vector<std::string> Warnings() const = 0;
  virtual uint64_t ChangeSeq() const = 0;
  virtual uint64_t WaitForChange(uint64_t after, std::chrono::milliseconds timeout) const = 0;
};

}  // namespace mvm::controller
