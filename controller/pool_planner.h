#pragma once
// PlanPool: the pool reconciler's decision, as a pure function of desired and observed state.
// Given a pool's desired counts and its instances, it says which instances get which target
// and how many to create. It performs nothing; the controller applies the plan.
//
// Promises (the rules, in the order they apply):
//  1. Slots. The pool wants `running` Running, `warm` Warm and `sleeping` Sleeping instances.
//     Slots are filled Running first, then Warm, then Sleeping, each from the fastest source:
//       Running ← Running, Warm (resume), Sleeping (wake), Ready/Stopped (boot), Created
//       Warm    ← Warm, Running (pause), Sleeping, Ready/Stopped, Created
//       Sleeping← Sleeping, Warm (snapshot), Running, Ready/Stopped, Created
//     An instance already targeting that state keeps its slot ahead of faster sources (no swap
//     of two instances mid-way); the rest go fastest source first, then oldest.
//  2. Rolling update (max surge 1, max unavailable 0). Instances on the pool's current template
//     hash (PlanInput::templateHash) that are settled (at their target, not failed) fill slots
//     first (outside a rolling update, so do current-spec instances already on their way to the
//     slot), then instances on an older spec, then current-spec instances still on their way,
//     then new instances. While older-spec instances hold slots and every current-spec instance is
//     settled, one extra current-spec instance (the surge) is created for the first such slot; when
//     it has settled, it takes the slot and the old instance is destroyed. One at a time.
//  3. Scale-down. A surplus instance on the current spec cools down instead of vanishing when
//     the policy asks for it: Running → Warm once idle (in Running) for idleToWarmSeconds,
//     Warm → Sleeping once Warm for warmToSleepSeconds; a surplus instance whose next stage is
//     disabled (0 seconds), and every surplus Sleeping, Ready, Stopped or Created instance, is
//     destroyed. Nothing leaves Running before minRunningSeconds in Running, nor Warm (except
//     to Running) before minWarmSeconds in Warm. Surplus older-spec instances are destroyed.
//     Every wait is returned as requeueAfterMs, the time until the earliest one ends.
//  4. Quota. An instance's usage is what every state it may pass through holds (see Footprint:
//     its state, the result of an action in flight, the states on the way to its target).
//     A decision that would raise the tenant's usage above its quota is not taken; the plan
//     says why in quotaMessage. Decisions that lower usage are always taken.
//  5. Prune. A pool gone from the manifests has every instance targeted Destroyed when pruning
//     is on, and nothing changed when it is off.
//  Failed instances keep their slot (they keep retrying with back-off, like CrashLoopBackOff)
//  unless they are on an older spec, in which case they are replaced first.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "controller/model.h"
#include "controller/status.h"
#include "manifests/object.h"

namespace mvm::controller {

// What an instance holds of its tenant's quota: the needs of every state it is in or may pass
// through: its state, the result of the action in flight (`pending`), and each state on the
// way from there to its target (a fresh boot towards Warm or Sleeping runs unpaused first, a
// wake towards Warm too). Counts are 0/1 per state kind; vcpus and memory while any of those
// states holds a VMM process; disk while it exists.
TenantUsage Footprint(const manifests::PoolSpec& spec, InstanceState state, InstanceState target,
                      std::optional<Action> pending = std::nullopt);
TenantUsage& operator+=(TenantUsage& a, const TenantUsage& b);
TenantUsage& operator-=(TenantUsage& a, const TenantUsage& b);
// What retargeting `instance` to `target` adds to its tenant's usage (negative counts free).
TenantUsage RetargetDelta(const Instance& instance, InstanceState target);
// The target of an instance whose VMM was lost and is now recorded `now` (Stopped, or Sleeping
// when its snapshot survived): its target while returning there takes no more of the tenant's
// quota than the instance held (a lost Running VMM restarts at once), else `now` (a lost Warm
// one would boot through Running: its pool plans it again, under the quota).
InstanceState TargetAfterLoss(const manifests::PoolSpec& spec, InstanceState state,
                              InstanceState target, std::optional<Action> pending,
                              InstanceState now);
// True when some count of `d` is positive (it takes something of the quota).
bool Adds(const TenantUsage& d);
// True when no count of `d` exceeds that of `limit`.
bool Within(const TenantUsage& d, const TenantUsage& limit);
// Empty when `usage` fits `quota`; else the first limit it breaks, e.g. "running 5 > quota 4".
// With a baseline, only limits where `usage` also exceeds the baseline count.
std::string QuotaViolation(const TenantUsage& usage, const manifests::TenantQuota& quota,
                           const TenantUsage* baseline = nullptr);

struct PlanInput {
  std::string tenant;
  std::string pool;
  const manifests::Object* object = nullptr;  // the pool; null when gone from the manifests
  // Hash of what an instance is made from (runtime, image, cmd, env, resources, lifecycle):
  // instances whose Instance::specHash differs are on an older spec and get rolled. Replicas
  // and policy are not part of it: scaling never replaces instances.
  std::string templateHash;
  bool prune = true;
  std::vector<const Instance*> instances;         // every instance of the pool
  const manifests::TenantQuota* quota = nullptr;  // null: unlimited
  TenantUsage others;                             // the tenant's usage outside this pool
  int64_t nowMs = 0;
};

struct Plan {
  std::vector<std::pair<InstanceKey, InstanceState>> retarget;  // only actual changes
  std::vector<InstanceState> create;                            // targets of new instances
  int64_t requeueAfterMs = 0;                                   // 0: no timer needed
  std::string quotaMessage;                                     // set when the quota held back
  Counts desired;
  bool rolling = false;  // instances on an older spec remain
};

Plan PlanPool(const PlanInput& input);

}  // namespace mvm::controller
