#pragma once
// Controller: turns the desired state (manifests) into lifecycle actions on instances.
//
// Promises:
//  - Level-triggered. Every reconcile reads desired and observed state and moves one step:
//    a pool key ("p/<tenant>/<pool>") runs PlanPool and records the targets it decides; an
//    instance key ("i/<tenant>/<name>") performs at most one state-machine transition through
//    the Vmm, then requeues itself until the target is reached. A periodic resync re-plans
//    every pool; a periodic probe checks every instance that should have a live VMM.
//  - Never two transitions on one instance at once (the work queue's guarantee), and a pool's
//    target decisions never race another pool of the same tenant (quota checks are serialised
//    per tenant). A pool the quota held back plans again as soon as its tenant's usage goes
//    down, whichever pool freed it.
//  - Every action is recorded as intended (Instance::pending) before the Vmm is called and as
//    done after; a failure is recorded with its reason, retried with per-key exponential
//    back-off, and after `failuresBeforeFailed` consecutive failures the instance is marked
//    failed (it keeps retrying at the back-off cap). A failed action on an instance that should
//    have a VMM probes it: a VMM found gone is recorded (Stopped, or Sleeping when its snapshot
//    is complete) and the instance moves on from there. Destroy releases every allocation.
//  - Safety: an invalid manifest never reaches here as a removal (the loader keeps the last good
//    version); a pool that leaves the manifests is drained and destroyed only when `prune` is
//    on; a snapshot that removes at least `massDeletionFraction` of the pools (and at least
//    `massDeletionMinPools`) is held back — the removed pools stay — and reported in
//    Warnings() until ConfirmPrune() or until the pools come back.
//  - Restart: Start() probes every recorded instance through the Vmm before any worker runs.
//    Live VMMs are adopted untouched; dead ones are recorded as Stopped (or their pending
//    action is resolved) and then reconciled towards their target like any other.
//  - Stop() lets in-flight actions finish, drops queued work and returns; VMMs keep running.

#include <array>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "controller/pool_planner.h"
#include "controller/status.h"
#include "controller/store.h"
#include "controller/vmm.h"
#include "controller/workqueue.h"
#include "manifests/desired_state.h"

namespace mvm::controller {

class Controller final : public StatusView {
 public:
  struct Options {
    int workers = 2;
    bool prune = true;
    std::chrono::milliseconds resyncPeriod{30000};
    std::chrono::milliseconds probePeriod{10000};
    std::filesystem::path instancesDir = "/var/lib/mvm/tenants";
    double massDeletionFraction = 0.5;
    size_t massDeletionMinPools = 2;
    int failuresBeforeFailed = 5;
    WorkQueueOptions queue;
    std::function<int64_t()> nowMs;  // wall clock for records and policy timers; default NowMs
  };

  Controller(Options options, Store& store, Vmm& vmm);
  ~Controller() override;
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Adopts or recovers every recorded instance, then starts workers and timers.
  Status Start();
  void Stop();

  // A new desired-state snapshot (from ManifestSource). Safe from any thread; calls (and
  // ConfirmPrune) take effect one at a time, in the order they get in. Queues the pools it
  // changes, but plans the first of them on the calling thread (unless a worker has it); when
  // that plan retargets an instance whose next step is quick (IsQuick: a resume or a pause), the
  // calling thread makes that one driver call too. So the call takes one pool plan and at most
  // one quick driver call (bounded by the driver's timeouts, as any call is).
  void SetDesired(std::shared_ptr<const manifests::DesiredState> desired);
  // A snapshot SetDesired is expected to receive soon (ManifestSource's `staged`, during the
  // debounce): does ahead the work of SetDesired that depends only on the snapshots (the diff
  // against the desired state, the template hashes of the pools it adds or changes) and plans
  // the first few pools it changes, each plan used later only if nothing it read has changed.
  // Changes nothing the controller decides: SetDesired with another snapshot, or after the desired
  // state moved, computes as before. Safe from any thread.
  void Stage(std::shared_ptr<const manifests::DesiredState> next);
  // Re-plans every pool now (SIGHUP).
  void Resync();
  // Lets a held-back mass removal proceed: applies the latest snapshot SetDesired received, as a
  // SetDesired call would (never an older one, whatever runs concurrently).
  void ConfirmPrune();

  // True when nothing is queued or in flight and every instance of every pool is at its target
  // (failed instances count as settled). For tests and benchmarks; `why`, when given, gets the
  // first reason it is not.
  bool Converged(std::string* why = nullptr);
  WorkQueueMetrics QueueMetrics() { return queue_.Metrics(); }

  // StatusView
  std::shared_ptr<const manifests::DesiredState> Desired() const override;
  std::vector<TenantStatus> Tenants() const override;
  std::vector<PoolStatus> Pools() const override;
  std::vector<Instance> Instances() const override;
  std::vector<Event> Events(const std::string& objectKind,
                            const std::string& objectKey) const override;
  std::vector<std::string> Warnings() const override;
  uint64_t ChangeSeq() const override;
  uint64_t WaitForChange(uint64_t after, std::chrono::milliseconds timeout) const override;

  static std::string PoolQueueKey(const std::string& tenant, const std::string& pool);
  static std::string InstanceQueueKey(const InstanceKey& key);

 private:
  using PoolId = std::pair<std::string, std::string>;  // tenant, pool

  void Worker();
  // A worker's handling of a key it got (or claimed): reconcile, then Forget or back off, Done.
  // `lent`: SetDesired's thread, not a worker, processes this pool key; it also makes the first
  // quick instance step the plan calls for itself (see ReconcilePool).
  void Process(const std::string& key, bool lent = false);
  void Timers();
  Status Reconcile(const std::string& key, bool lent = false);
  Status ReconcilePool(const std::string& tenant, const std::string& pool, bool lent = false);
  Status ReconcileInstance(const InstanceKey& key);
  void Adopt(Instance instance);

  // How an instance record is written: waited for until durable (every intent, everything
  // before an action), or queued (an action's done record: its intent, already durable, makes
  // its loss recoverable, and the next durable write carries it; see Store::PutInstanceQueued).
  enum class Durability { kWait, kQueued };
  // Read-modify-write of one instance record under its stripe lock; keeps tenant usage exact.
  Status Update(const InstanceKey& key, const std::function<void(Instance&)>& change,
                Durability durability = Durability::kWait);
  // Like Update, but `change` may decline (return false) after looking at the current record:
  // nothing is written and *applied is false. The check and the write are atomic per instance.
  Status UpdateIf(const InstanceKey& key, const std::function<bool(Instance&)>& change,
                  bool* applied, Durability durability = Durability::kWait);
  Status Put(const Instance& instance, Durability durability);
  Status Insert(const Instance& instance, Durability durability = Durability::kWait);
  Status Remove(const Instance& instance);
  void AccountUsage(const Instance* before, const Instance* after);

  void Audit(const std::string& tenant, const std::string& action, const std::string& object,
             const std::string& detail);
  void Emit(const std::string& kind, const std::string& key, EventType type,
            const std::string& reason, const std::string& message);
  void Changed();
  std::mutex& StripeFor(const InstanceKey& key);
  std::mutex& TenantLock(const std::string& tenant);
  int64_t Now() const { return options_.nowMs(); }
  std::filesystem::path InstanceDir(const std::string& tenant, const std::string& pool,
                                    const std::string& name) const;
  void UpdatePoolStatus(const std::string& tenant, const std::string& pool,
                        const manifests::Object* object, const Plan& plan);

  Options options_;
  Store& store_;
  Vmm& vmm_;
  WorkQueue queue_;

  // SetDesired in two parts. SwapDesired (set_mu_ held) makes a snapshot the desired state,
  // through the mass-deletion guard, and says what changed; PlanSwapped (no lock held) queues the
  // changed pools and plans the first (which may make a driver call).
  struct Swapped {
    manifests::Diff diff;
    std::shared_ptr<const manifests::DesiredState> effective;  // after the guard
    // Replaced, and freed off the path; none for the first snapshot ever (every pool is planned).
    std::shared_ptr<const manifests::DesiredState> before;
  };
  Swapped SwapDesired(std::shared_ptr<const manifests::DesiredState> desired);
  void PlanSwapped(Swapped swapped);

  // Serialises the swaps of SetDesired and ConfirmPrune (taken before mu_; never held across a
  // driver call): a confirmation reads the latest raw snapshot and swaps it in with no other
  // snapshot swapped in between. Planning after the swap reads Desired() and needs no order.
  std::mutex set_mu_;
  mutable std::shared_mutex mu_;  // guards the fields below
  std::shared_ptr<const manifests::DesiredState> raw_desired_;
  std::shared_ptr<const manifests::DesiredState> desired_;  // after the mass-deletion guard
  std::set<PoolId> held_back_;
  bool prune_confirmed_ = false;
  // Stage()'s work: the diff from `base` (desired_ then) to `next`.
  struct Staged {
    std::shared_ptr<const manifests::DesiredState> base, next;
    manifests::Diff diff;
  };
  Staged staged_;
  // The desired state SetDesired replaced last (a snapshot of 1,000 pools takes a while to free).
  std::shared_ptr<const manifests::DesiredState> retired_;
  std::map<PoolId, PoolStatus> pool_status_;
  std::map<std::string, TenantUsage> usage_;
  // Pools whose last plan the quota held back, per tenant, and how often each tenant's usage
  // went down: a decrease wakes the held-back pools (a plan that read the usage before the
  // decrease sees the count change and plans again), so freed quota is used without a resync.
  std::map<std::string, std::set<std::string>> quota_blocked_;
  std::map<std::string, uint64_t> usage_releases_;
  std::map<std::string, int64_t> tenant_first_seen_;
  // Versions of what a pool plan reads: bumped on every write to one of the pool's instances,
  // and on every change of a tenant's usage. A pool whose last plan changed nothing and had no
  // timer is skipped while its inputs (these versions and its and its tenant's manifest
  // objects) are unchanged: PlanPool is a pure function of them, and time only shortens waits.
  struct PlanInputs {
    manifests::ObjectPtr pool, tenant;  // held, so a pointer is never reused while compared
    uint64_t poolVersion = 0, tenantVersion = 0;
    bool operator==(const PlanInputs&) const = default;
  };
  std::map<PoolId, uint64_t> pool_versions_;
  std::map<std::string, uint64_t> usage_versions_;
  std::map<PoolId, PlanInputs> settled_plans_;
  // A pool's plan with what it was made from: the objects and versions read before the
  // instances (`in` points into those objects, which `inputs` holds), the instances as read, and
  // the tenant's quota-release count then.
  struct PoolPlanning {
    PlanInputs inputs;
    std::vector<Instance> instances;
    PlanInput in;
    uint64_t releases = 0;
    Plan plan;
  };
  // Plans made by Stage() for the pools a staged snapshot changes (at most kStagedPlans).
  static constexpr size_t kStagedPlans = 4;
  std::map<PoolId, std::unique_ptr<PoolPlanning>> staged_plans_;
  // Under mu_ (shared is enough): the objects and versions a plan of the pool reads.
  PlanInputs ReadPlanInputs(const manifests::DesiredState& desired, const std::string& tenant,
                            const std::string& pool) const;
  // Reads the pool's instances and the tenant's usage and plans, for `inputs` read just before.
  std::unique_ptr<PoolPlanning> PlanNow(const std::string& tenant, const std::string& pool,
                                        const PlanInputs& inputs);
  // The plan Stage() made for the pool, if it still holds for `inputs` and the time now.
  std::unique_ptr<PoolPlanning> TakeStagedPlan(const std::string& tenant, const std::string& pool,
                                               const PlanInputs& inputs);

  std::string TemplateHash(const manifests::Object& pool);
  std::mutex template_mu_;
  std::map<std::string, std::string> template_hashes_;  // pool spec hash → template hash

  std::mutex tenants_mu_;
  std::map<std::string, std::unique_ptr<std::mutex>> tenant_locks_;
  std::array<std::mutex, 64> stripes_;

  mutable std::mutex change_mu_;
  mutable std::condition_variable change_cv_;
  std::atomic<uint64_t> change_seq_{0};

  std::mutex timer_mu_;
  std::condition_variable timer_cv_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
  std::atomic<bool> started_{false};  // set once Start() accounted and adopted every instance
};

}  // namespace mvm::controller
