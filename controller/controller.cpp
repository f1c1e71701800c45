#include "controller/controller.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <string_view>
#include <unordered_map>

#include "controller/spec_codec.h"
#include "controller/state_machine.h"

namespace mvm::controller {
namespace {

using S = InstanceState;

constexpr const char* kPoolPrefix = "p/";
constexpr const char* kInstancePrefix = "i/";

// "Started", "Paused"…: the event reason for a completed action.
std::string DoneReason(Action action) {
  switch (action) {
    case Action::kPrepare:
      return "Prepared";
    case Action::kStart:
      return "Started";
    case Action::kPause:
      return "Paused";
    case Action::kResume:
      return "Resumed";
    case Action::kSleep:
      return "Slept";
    case Action::kWake:
      return "Woken";
    case Action::kStop:
      return "Stopped";
    case Action::kRebuild:
      return "Rebuilt";
    case Action::kDestroy:
      return "Destroyed";
  }
  return "Done";
}

Condition MakeCondition(const std::string& type, bool status, const std::string& reason,
                        const std::string& message, uint64_t generation,
                        const std::vector<Condition>& previous, int64_t now) {
  Condition c{type, status, reason, message, generation, now};
  for (const auto& p : previous) {
    if (p.type == type && p.status == status) c.lastTransitionMs = p.lastTransitionMs;
  }
  return c;
}

}  // namespace

std::string Controller::TemplateHash(const manifests::Object& pool) {
  if (!pool.pool()) return pool.specHash;
  std::lock_guard lock(template_mu_);
  auto it = template_hashes_.find(pool.specHash);
  if (it != template_hashes_.end()) return it->second;
  Json::Value spec = PoolSpecToJson(*pool.pool());
  spec.removeMember("replicas");
  spec.removeMember("policy");
  std::string hash = manifests::CanonicalHash(spec);
  if (template_hashes_.size() > 100000) template_hashes_.clear();
  template_hashes_.emplace(pool.specHash, hash);
  return hash;
}

Controller::Controller(Options options, Store& store, Vmm& vmm)
    : options_(std::move(options)), store_(store), vmm_(vmm), queue_(options_.queue) {
  if (!options_.nowMs) options_.nowMs = [] { return NowMs(); };
  if (options_.workers < 1) options_.workers = 1;
}

Controller::~Controller() {
  Stop();
}

std::string Controller::PoolQueueKey(const std::string& tenant, const std::string& pool) {
  return kPoolPrefix + tenant + "/" + pool;
}

std::string Controller::InstanceQueueKey(const InstanceKey& key) {
  return kInstancePrefix + key.tenant + "/" + key.name;
}

std::filesystem::path Controller::InstanceDir(const std::string& tenant, const std::string& pool,
                                              const std::string& name) const {
  return options_.instancesDir / tenant / "pools" / pool / "instances" / name;
}

std::mutex& Controller::StripeFor(const InstanceKey& key) {
  size_t h = std::hash<std::string>{}(key.tenant) * 31 + std::hash<std::string>{}(key.name);
  return stripes_[h % stripes_.size()];
}

std::mutex& Controller::TenantLock(const std::string& tenant) {
  std::lock_guard lock(tenants_mu_);
  auto& slot = tenant_locks_[tenant];
  if (!slot) slot = std::make_unique<std::mutex>();
  return *slot;
}

void Controller::Changed() {
  {
    std::lock_guard lock(change_mu_);
    change_seq_.fetch_add(1, std::memory_order_relaxed);
  }
  change_cv_.notify_all();
}

void Controller::Emit(const std::string& kind, const std::string& key, EventType type,
                      const std::string& reason, const std::string& message) {
  int64_t now = Now();
  store_.RecordEvent({kind, key, type, reason, message, "mvmd", now, now, 1});
}

void Controller::Audit(const std::string& tenant, const std::string& action,
                       const std::string& object, const std::string& detail) {
  if (Status s = store_.Audit(tenant, "mvmd", action, object, detail); !s.ok()) {
    spdlog::error("audit log of tenant {}: {} ({} {})", tenant, s.error().message, action, object);
  }
}

void Controller::AccountUsage(const Instance* before, const Instance* after) {
  const Instance* either = before ? before : after;
  if (!either) return;
  TenantUsage was, is;
  if (before && before->spec)
    was = Footprint(*before->spec, before->state, before->target, before->pending);
  if (after && after->spec)
    is = Footprint(*after->spec, after->state, after->target, after->pending);
  const std::string& tenant = either->key.tenant;
  TenantUsage freed = was;
  freed -= is;
  const bool released = Adds(freed);
  std::set<std::string> wake;
  {
    std::unique_lock lock(mu_);
    if (before) ++pool_versions_[{tenant, before->pool}];
    if (after && (!before || after->pool != before->pool)) ++pool_versions_[{tenant, after->pool}];
    TenantUsage& usage = usage_[tenant];
    TenantUsage old = usage;
    usage -= was;
    usage += is;
    if (usage != old) ++usage_versions_[tenant];
    // Quota freed: the tenant's pools that the quota held back plan again.
    if (released) {
      ++usage_releases_[tenant];
      wake.swap(quota_blocked_[tenant]);
    }
  }
  for (const auto& pool : wake) queue_.Add(PoolQueueKey(tenant, pool));
}

Status Controller::Update(const InstanceKey& key, const std::function<void(Instance&)>& change,
                          Durability durability) {
  bool applied = false;
  return UpdateIf(
      key,
      [&](Instance& i) {
        change(i);
        return true;
      },
      &applied, durability);
}

Status Controller::UpdateIf(const InstanceKey& key, const std::function<bool(Instance&)>& change,
                            bool* applied, Durability durability) {
  *applied = false;
  std::lock_guard stripe(StripeFor(key));
  std::optional<Instance> current = store_.GetInstance(key);
  if (!current) return Error{"instance " + key.ToString() + " no longer exists"};
  Instance next = *current;
  if (!change(next)) return {};
  *applied = true;
  next.updatedAtMs = Now();
  if (Status s = Put(next, durability); !s.ok()) return s;
  AccountUsage(&*current, &next);
  Changed();
  return {};
}

Status Controller::Put(const Instance& instance, Durability durability) {
  return durability == Durability::kWait ? store_.PutInstance(instance)
                                         : store_.PutInstanceQueued(instance);
}

Status Controller::Insert(const Instance& instance, Durability durability) {
  std::lock_guard stripe(StripeFor(instance.key));
  if (Status s = Put(instance, durability); !s.ok()) return s;
  AccountUsage(nullptr, &instance);
  Changed();
  return {};
}

Status Controller::Remove(const Instance& instance) {
  std::lock_guard stripe(StripeFor(instance.key));
  std::optional<Instance> current = store_.GetInstance(instance.key);
  if (!current) return {};
  if (Status s = store_.ReleaseAll(instance.key); !s.ok()) return s;
  if (Status s = store_.DeleteInstance(instance.key); !s.ok()) return s;
  AccountUsage(&*current, nullptr);
  Changed();
  return {};
}

Status Controller::Start() {
  if (started_.load()) return {};
  // Usage of everything recorded, then adoption, before any worker runs.
  std::vector<Instance> recorded = store_.ListInstances();
  for (const auto& i : recorded) AccountUsage(nullptr, &i);
  for (auto& i : recorded) Adopt(std::move(i));
  started_.store(true, std::memory_order_release);
  for (int w = 0; w < options_.workers; ++w) threads_.emplace_back([this] { Worker(); });
  threads_.emplace_back([this] { Timers(); });
  for (const auto& i : store_.ListInstances()) queue_.Add(InstanceQueueKey(i.key));
  Resync();
  spdlog::info("controller started: {} instances recorded, {} workers", recorded.size(),
               options_.workers);
  return {};
}

void Controller::Adopt(Instance instance) {
  VmmTarget target{instance.key, instance.pool, instance.spec.get(),
                   InstanceDir(instance.key.tenant, instance.pool, instance.key.name),
                   instance.handle};
  const std::string key = instance.key.ToString();
  bool expects_process =
      HasProcess(instance.state) || (instance.pending && (*instance.pending == Action::kStart ||
                                                          *instance.pending == Action::kWake));
  if (!expects_process && instance.state != S::kSleeping && !instance.pending) return;
  if (!instance.spec) return;
  ProbeResult probe = vmm_.Probe(target);
  std::optional<Action> pending = instance.pending;
  S recorded = instance.state;
  S actual = recorded;
  if (probe.alive) {
    actual = probe.observed.value_or(HasProcess(recorded) ? recorded : S::kRunning);
  } else if (pending == Action::kSleep && probe.snapshot) {
    actual = S::kSleeping;
  } else if (HasProcess(recorded) || (recorded == S::kSleeping && !probe.snapshot)) {
    actual = S::kStopped;
  }
  Status s = Update(instance.key, [&](Instance& i) {
    if (!probe.alive && actual != recorded) {
      i.target = TargetAfterLoss(*i.spec, i.state, i.target, i.pending, actual);
    }
    i.state = actual;
    i.pending.reset();
    if (actual != recorded) i.stateSinceMs = Now();
    if (!HasProcess(actual)) {
      i.handle = {};
    } else if (probe.alive && !probe.handle.empty()) {
      i.handle = probe.handle;  // the VMM found, even one whose start was never recorded done
    }
  });
  if (!s.ok()) {
    spdlog::error("adopting {}: {}", key, s.error().message);
    return;
  }
  if (probe.alive) {
    const int64_t pid = probe.handle.empty() ? instance.handle.pid : probe.handle.pid;
    spdlog::info("adopted {}: VMM pid {} is {}", key, pid, StateName(actual));
    Emit("Instance", key, EventType::kNormal, "Adopted",
         "VMM pid " + std::to_string(pid) + " found " + std::string(StateName(actual)) +
             " after restart");
  } else if (actual != recorded || pending) {
    std::string why =
        pending ? "action " + std::string(ActionName(*pending)) + " was interrupted by a restart"
                : "VMM is gone (" + probe.detail + ")";
    spdlog::warn("recovered {}: {}; now {}", key, why, StateName(actual));
    Emit("Instance", key, EventType::kWarning, "Recovered",
         why + "; recorded as " + std::string(StateName(actual)));
  }
}

void Controller::Stop() {
  {
    std::lock_guard lock(timer_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  timer_cv_.notify_all();
  queue_.ShutDown();
  for (auto& t : threads_) t.join();
  threads_.clear();
  Changed();
}

void Controller::Worker() {
  while (auto key = queue_.Get()) Process(*key);
}

void Controller::Process(const std::string& key, bool lent) {
  Status s = Reconcile(key, lent);
  if (s.ok()) {
    queue_.Forget(key);
  } else {
    spdlog::debug("reconcile {}: {}", key, s.error().message);
    queue_.AddRateLimited(key);
  }
  queue_.Done(key);
}

void Controller::Timers() {
  auto now = std::chrono::steady_clock::now();
  auto next_resync = now + options_.resyncPeriod;
  auto next_probe = now + options_.probePeriod;
  std::unique_lock lock(timer_mu_);
  while (!stopping_) {
    timer_cv_.wait_until(lock, std::min(next_resync, next_probe));
    if (stopping_) break;
    now = std::chrono::steady_clock::now();
    if (now >= next_resync) {
      lock.unlock();
      Resync();
      lock.lock();
      next_resync = now + options_.resyncPeriod;
    }
    if (now >= next_probe) {
      lock.unlock();
      for (const auto& i : store_.ListInstances()) {
        if (HasProcess(i.state)) queue_.Add(InstanceQueueKey(i.key));
      }
      lock.lock();
      next_probe = now + options_.probePeriod;
    }
  }
}

void Controller::Resync() {
  std::set<PoolId> pools;
  {
    std::shared_lock lock(mu_);
    if (desired_) {
      for (const auto& p : desired_->Pools()) pools.insert({p->key.tenant, p->key.name});
    }
    for (const auto& [id, status] : pool_status_) pools.insert(id);
  }
  for (auto& [tenant, pool] : store_.ListPools())
    pools.insert({std::move(tenant), std::move(pool)});
  for (const auto& [tenant, pool] : pools) queue_.Add(PoolQueueKey(tenant, pool));
}

void Controller::SetDesired(std::shared_ptr<const manifests::DesiredState> desired) {
  Swapped swapped;
  {
    std::lock_guard serial(set_mu_);
    swapped = SwapDesired(std::move(desired));
  }
  PlanSwapped(std::move(swapped));
}

Controller::Swapped Controller::SwapDesired(
    std::shared_ptr<const manifests::DesiredState> desired) {
  static const manifests::DesiredState kEmpty;
  std::shared_ptr<const manifests::DesiredState> effective = desired;
  manifests::Diff diff;
  std::shared_ptr<const manifests::DesiredState> before;
  {
    std::unique_lock lock(mu_);
    before = desired_;
    raw_desired_ = desired;
    // One walk of both snapshots: what changed, and which pools would go (done ahead by Stage
    // when it saw this snapshot on top of this desired state).
    if (before && staged_.base == before && staged_.next == desired) {
      diff = std::move(staged_.diff);
    } else {
      diff = manifests::ComputeDiff(before ? *before : kEmpty, *desired);
    }
    staged_ = {};
    std::set<PoolId> removed;
    for (const auto& key : diff.removed) {
      if (key.kind == manifests::Kind::kPool) removed.insert({key.tenant, key.name});
    }
    const size_t previous_pools = before && !removed.empty() ? before->PoolCount() : 0;
    bool mass = !removed.empty() && removed.size() >= options_.massDeletionMinPools &&
                static_cast<double>(removed.size()) >=
                    options_.massDeletionFraction * static_cast<double>(previous_pools);
    if (mass && !prune_confirmed_) {
      auto held = std::make_shared<manifests::DesiredState>(*desired);
      for (const auto& [tenant, pool] : removed) {
        for (const auto& key : {manifests::ObjectKey::PoolKey(tenant, pool),
                                manifests::ObjectKey::TenantKey(tenant)}) {
          if (!held->objects.count(key)) held->objects[key] = before->objects.at(key);
        }
      }
      held_back_ = removed;
      spdlog::warn("holding back the removal of {} of {} pools: confirm with SIGUSR1",
                   removed.size(), previous_pools);
      effective = held;
      // What is held back is not removed.
      std::erase_if(diff.removed,
                    [&](const manifests::ObjectKey& key) { return held->objects.count(key) > 0; });
    } else {
      held_back_.clear();
      prune_confirmed_ = false;  // a confirmation covers one removal
    }
    desired_ = effective;
  }
  return {std::move(diff), std::move(effective), std::move(before)};
}

void Controller::PlanSwapped(Swapped swapped) {
  const manifests::Diff& diff = swapped.diff;
  Changed();
  if (!swapped.before) {
    // Pools planned before the first snapshot were skipped (nothing is decided without one),
    // and a pool that left the manifests while mvmd was down is in no diff: plan them all.
    Resync();
    return;
  }
  std::vector<std::string> pools;
  std::set<std::string> tenants;
  for (const auto* list : {&diff.added, &diff.changed, &diff.removed}) {
    for (const auto& key : *list) {
      if (key.kind == manifests::Kind::kPool) {
        pools.push_back(PoolQueueKey(key.tenant, key.name));
      } else {
        tenants.insert(key.name);
      }
    }
  }
  // The workers take every pool but the first; this thread plans that one itself, unless a
  // worker has it already: a single edited pool is planned without waiting for a worker to wake.
  for (size_t n = 1; n < pools.size(); ++n) queue_.Add(pools[n]);
  // A tenant's quota changed: every pool of it may now move.
  for (const auto& tenant : tenants) {
    for (const auto& p : swapped.effective->PoolsOf(tenant)) {
      queue_.Add(PoolQueueKey(tenant, p->key.name));
    }
  }
  if (!pools.empty()) {
    if (!started_.load(std::memory_order_acquire)) {
      queue_.Add(pools.front());  // before Start(): no plan before usage and adoption are known
    } else if (queue_.Claim(pools.front())) {
      Process(pools.front(), /*lent=*/true);
    }
  }
  // The snapshot replaced is freed later, off this path (a worker woken on this CPU may wait for
  // this thread): by the next Stage, or else the next SetDesired.
  std::unique_lock lock(mu_);
  std::swap(retired_, swapped.before);
}

void Controller::Stage(std::shared_ptr<const manifests::DesiredState> next) {
  std::shared_ptr<const manifests::DesiredState> base = Desired();
  if (!base || !next) return;  // the first snapshot plans every pool anyway
  std::shared_ptr<const manifests::DesiredState> retired;
  {
    std::unique_lock lock(mu_);
    retired = std::move(retired_);  // freed here, off SetDesired's path
  }
  Staged staged{base, next, manifests::ComputeDiff(*base, *next)};
  for (const auto* list : {&staged.diff.added, &staged.diff.changed}) {
    for (const auto& key : *list) {
      const manifests::Object* object = next->Find(key);
      if (object && object->pool()) TemplateHash(*object);  // cached for the pool's plan
    }
  }
  // The first few pools it changes are planned now, against the instances as they are; the
  // pool's reconcile uses such a plan only if nothing it was made from has changed since (see
  // TakeStagedPlan): the same check that lets a resync skip a settled pool. Like any plan, it
  // can miss a write whose accounting has not finished; that write queues the pool again.
  std::map<PoolId, std::unique_ptr<PoolPlanning>> plans;
  for (const auto* list : {&staged.diff.added, &staged.diff.changed, &staged.diff.removed}) {
    for (const auto& key : *list) {
      if (plans.size() >= kStagedPlans) break;
      if (key.kind != manifests::Kind::kPool) continue;
      PlanInputs inputs;
      {
        std::shared_lock lock(mu_);
        inputs = ReadPlanInputs(*next, key.tenant, key.name);
      }
      plans[{key.tenant, key.name}] = PlanNow(key.tenant, key.name, inputs);
    }
  }
  std::unique_lock lock(mu_);
  // Staged against a desired state that has since moved on: of no use to SetDesired.
  if (desired_ == base) staged_ = std::move(staged);
  staged_plans_.swap(plans);  // the previous stage's plans, if any, are freed below
  lock.unlock();
}

void Controller::ConfirmPrune() {
  Swapped swapped;
  {
    std::lock_guard serial(set_mu_);
    std::shared_ptr<const manifests::DesiredState> raw;
    {
      std::unique_lock lock(mu_);
      if (held_back_.empty()) return;
      prune_confirmed_ = true;
      raw = raw_desired_;
    }
    spdlog::warn("mass removal confirmed: pruning");
    if (!raw) return;
    swapped = SwapDesired(std::move(raw));
  }
  PlanSwapped(std::move(swapped));
}

Status Controller::Reconcile(const std::string& key, bool lent) {
  std::string_view rest(key);
  bool pool = rest.substr(0, 2) == kPoolPrefix;
  rest.remove_prefix(2);
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return Error{"malformed key " + key};
  std::string tenant(rest.substr(0, slash));
  std::string name(rest.substr(slash + 1));
  return pool ? ReconcilePool(tenant, name, lent) : ReconcileInstance({tenant, name});
}

Controller::PlanInputs Controller::ReadPlanInputs(const manifests::DesiredState& desired,
                                                  const std::string& tenant,
                                                  const std::string& pool) const {
  auto held = [&](const manifests::ObjectKey& key) {
    auto it = desired.objects.find(key);
    return it == desired.objects.end() ? nullptr : it->second;
  };
  PlanInputs inputs;
  inputs.pool = held(manifests::ObjectKey::PoolKey(tenant, pool));
  inputs.tenant = held(manifests::ObjectKey::TenantKey(tenant));
  auto v = pool_versions_.find({tenant, pool});
  if (v != pool_versions_.end()) inputs.poolVersion = v->second;
  auto u = usage_versions_.find(tenant);
  if (u != usage_versions_.end()) inputs.tenantVersion = u->second;
  return inputs;
}

std::unique_ptr<Controller::PoolPlanning> Controller::PlanNow(const std::string& tenant,
                                                              const std::string& pool,
                                                              const PlanInputs& inputs) {
  auto p = std::make_unique<PoolPlanning>();
  p->inputs = inputs;
  PlanInput& in = p->in;
  const manifests::Object* object = inputs.pool.get();
  const manifests::Object* tenant_object = inputs.tenant.get();
  in.tenant = tenant;
  in.pool = pool;
  in.object = object;
  if (object) in.templateHash = TemplateHash(*object);
  in.prune = options_.prune;
  in.quota = tenant_object && tenant_object->tenant() ? &tenant_object->tenant()->quota : nullptr;
  in.nowMs = Now();
  {
    std::shared_lock lock(mu_);
    auto it = usage_.find(tenant);
    if (it != usage_.end()) in.others = it->second;
    auto r = usage_releases_.find(tenant);
    if (r != usage_releases_.end()) p->releases = r->second;
  }
  // The tenant's usage is read before the pool's instances: a worker finishing an action in
  // between only lowers an instance's footprint, so `others` errs high (refuses, then the
  // release replans), never low. Workers never raise one (the intent is checked, see
  // ReconcileInstance). Both are read after `inputs`' versions: a write in between makes them
  // differ from the versions at any later check.
  p->instances = store_.ListPool(tenant, pool);
  for (const auto& i : p->instances) {
    in.instances.push_back(&i);
    if (i.spec) in.others -= Footprint(*i.spec, i.state, i.target, i.pending);
  }
  p->plan = PlanPool(in);
  return p;
}

std::unique_ptr<Controller::PoolPlanning> Controller::TakeStagedPlan(const std::string& tenant,
                                                                     const std::string& pool,
                                                                     const PlanInputs& inputs) {
  std::unique_ptr<PoolPlanning> p;
  {
    std::unique_lock lock(mu_);
    auto it = staged_plans_.find({tenant, pool});
    if (it == staged_plans_.end()) return nullptr;
    p = std::move(it->second);
    staged_plans_.erase(it);
  }
  // PlanPool is a pure function of its inputs and the time: with the same objects and no write
  // to the pool's instances or the tenant's usage since (the versions), it decides the same,
  // unless one of its waits ran out meanwhile (time only shortens them).
  if (!(p->inputs == inputs)) return nullptr;
  const int64_t elapsed = Now() - p->in.nowMs;
  if (elapsed < 0) return nullptr;
  if (p->plan.requeueAfterMs > 0) {
    if (elapsed >= p->plan.requeueAfterMs) return nullptr;
    p->plan.requeueAfterMs -= elapsed;
  }
  return p;
}

Status Controller::ReconcilePool(const std::string& tenant, const std::string& pool, bool lent) {
  std::unique_lock tenant_lock(TenantLock(tenant));
  std::shared_ptr<const manifests::DesiredState> desired = Desired();
  // Until the first snapshot arrives nothing is decided: an unknown pool is not a removed one.
  if (!desired) return {};
  const manifests::Object* object = desired->Find(manifests::ObjectKey::PoolKey(tenant, pool));
  PlanInputs inputs;
  bool any_staged = false;
  {
    std::shared_lock lock(mu_);
    inputs = ReadPlanInputs(*desired, tenant, pool);
    auto memo = settled_plans_.find({tenant, pool});
    if (memo != settled_plans_.end() && memo->second == inputs) return {};  // nothing to do
    any_staged = !staged_plans_.empty();
  }
  std::unique_ptr<PoolPlanning> planning;
  if (any_staged) planning = TakeStagedPlan(tenant, pool, inputs);  // planned by Stage()
  if (!planning) planning = PlanNow(tenant, pool, inputs);
  const PlanInput& in = planning->in;
  const std::vector<Instance>& instances = planning->instances;
  const uint64_t releases = planning->releases;
  const Plan& plan = planning->plan;
  if (!plan.quotaMessage.empty()) {
    // Held back by the quota: wait for the tenant to free some (AccountUsage wakes the pool),
    // or plan again at once if it already did since the usage was read.
    bool again = false;
    {
      std::unique_lock lock(mu_);
      again = usage_releases_[tenant] != releases;
      if (!again) quota_blocked_[tenant].insert(pool);
    }
    if (again) queue_.Add(PoolQueueKey(tenant, pool));
  }

  // The instances to move are queued for the workers as their targets are written. A lent thread
  // (SetDesired's) keeps the first whose next step is quick (IsQuick: a warm VM resumed or a
  // running one paused) for itself: that driver call then waits for no worker to wake, which on a
  // busy host can take milliseconds. Slower steps (boots, snapshots, disks) are left to the
  // workers, so a manifest reload never waits for one.
  std::optional<std::string> own;
  auto queue_instance = [&](const InstanceKey& key, std::optional<Action> next) {
    std::string k = InstanceQueueKey(key);
    if (lent && !own && next && IsQuick(*next)) {
      if (queue_.Claim(k)) own = std::move(k);
      return;
    }
    queue_.Add(k);
  };

  // Apply the plan. Its quota decisions assumed the instances as read above; a worker may have
  // moved one since. A retarget is written only when it adds to the tenant's usage no more than
  // planned (checked atomically with the write). Retargets that add nothing go first; once one
  // is refused, the rest that add, and the creations, wait for the replan queued here.
  // The instances to retarget, as read (only those are indexed: a pool may hold thousands).
  std::unordered_map<std::string_view, const Instance*> read;
  read.reserve(plan.retarget.size());
  for (const auto& [key, target] : plan.retarget) read.emplace(key.name, nullptr);
  for (const auto& i : instances) {
    if (auto it = read.find(i.key.name); it != read.end()) it->second = &i;
  }
  std::vector<TenantUsage> delta;  // what each retarget adds, from the instance as read
  delta.reserve(plan.retarget.size());
  for (const auto& [key, target] : plan.retarget) {
    const Instance* i = read.at(key.name);
    delta.push_back(i ? RetargetDelta(*i, target) : TenantUsage{});
  }
  std::vector<std::pair<InstanceKey, S>> ordered;
  std::vector<TenantUsage> planned_delta;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t n = 0; n < plan.retarget.size(); ++n) {
      if (Adds(delta[n]) == (pass == 1)) {
        ordered.push_back(plan.retarget[n]);
        planned_delta.push_back(delta[n]);
      }
    }
  }
  Status result;
  bool refused = false;
  for (size_t n = 0; n < ordered.size(); ++n) {
    const auto& [key, target] = ordered[n];
    if (refused && Adds(planned_delta[n])) continue;
    S new_target = target;
    S state = S::kCreated;
    bool applied = false;
    Status s = UpdateIf(
        key,
        [&](Instance& i) {
          if (!Within(RetargetDelta(i, new_target), planned_delta[n])) return false;
          i.target = new_target;
          state = i.state;
          return true;
        },
        &applied, Durability::kQueued);  // a lost retarget is planned again after a restart
    if (!s.ok()) {
      result = s;
      continue;
    }
    if (!applied) {
      refused = true;
      continue;
    }
    if (new_target == S::kDestroyed && !object) {
      store_.AuditQueued(tenant, "mvmd", "instance.prune", key.ToString(),
                         "pool " + pool + " left the manifests");
    }
    queue_instance(key, NextAction(state, new_target));
  }
  if (refused) {
    spdlog::debug("pool {}/{}: instances moved while planning; planning again", tenant, pool);
    queue_.Add(PoolQueueKey(tenant, pool));
  }
  if (object && !refused && !plan.create.empty()) {
    auto spec = std::make_shared<const manifests::PoolSpec>(*object->pool());
    for (S target : plan.create) {
      Instance i;
      i.key = {tenant, store_.NewInstanceName(tenant, pool)};
      i.pool = pool;
      i.state = S::kCreated;
      i.target = target;
      i.specHash = in.templateHash;
      i.generation = object->generation;
      i.spec = spec;
      i.createdAtMs = i.stateSinceMs = i.updatedAtMs = Now();
      // Queued: nothing has been done for it yet (its first intent commits it), and a creation
      // lost in a crash is planned again.
      if (Status s = Insert(i, Durability::kQueued); !s.ok()) {
        result = s;
        break;
      }
      store_.AuditQueued(tenant, "mvmd", "instance.create", i.key.ToString(),
                         "pool " + pool + " generation " + std::to_string(object->generation) +
                             " target " + std::string(StateName(target)));
      Emit("Instance", i.key.ToString(), EventType::kNormal, "Created",
           "created for pool " + pool + ", target " + std::string(StateName(target)));
      queue_instance(i.key, std::nullopt);  // to be prepared and booted: a worker's
    }
  }
  if (plan.requeueAfterMs > 0) {
    queue_.AddAfter(PoolQueueKey(tenant, pool), std::chrono::milliseconds(plan.requeueAfterMs));
  }
  if (own) {
    // Its step may be a slow driver call: the tenant's other pools must not wait for it. What
    // follows needs no tenant lock (this pool's key is in flight here, so nothing else plans it).
    tenant_lock.unlock();
    Process(*own);
  }
  UpdatePoolStatus(tenant, pool, object, plan);
  {
    // Remember a plan that changed nothing and waits for nothing (inputs read before the
    // instances were, so any write since makes them differ); forget any other.
    bool settled = result.ok() && !refused && plan.retarget.empty() && plan.create.empty() &&
                   plan.requeueAfterMs == 0 && plan.quotaMessage.empty() && object;
    std::unique_lock lock(mu_);
    if (settled) {
      settled_plans_[{tenant, pool}] = std::move(inputs);
    } else {
      settled_plans_.erase({tenant, pool});
    }
  }
  return result;
}

void Controller::UpdatePoolStatus(const std::string& tenant, const std::string& pool,
                                  const manifests::Object* object, const Plan& plan) {
  const std::string template_hash = object ? TemplateHash(*object) : "";
  PoolStatus status;
  status.tenant = tenant;
  status.name = pool;
  status.desired = plan.desired;
  int failed = 0, progressing = 0, instances = 0;
  std::string failure;
  store_.ForEachInPool(tenant, pool, [&](const Instance& i) {
    ++instances;
    if (i.state == S::kRunning) ++status.current.running;
    if (i.state == S::kWarm) ++status.current.warm;
    if (i.state == S::kSleeping) ++status.current.sleeping;
    bool current_spec = object && i.specHash == template_hash;
    if (i.failed) {
      ++failed;
      if (failure.empty()) failure = i.key.name + ": " + i.lastError;
    } else if (!Satisfies(i.state, i.target)) {
      ++progressing;
    } else if (current_spec && i.target != S::kDestroyed) {
      ++status.ready;
    }
  });
  status.instances = instances;
  int64_t now = Now();
  std::unique_lock lock(mu_);
  auto it = pool_status_.find({tenant, pool});
  std::vector<Condition> previous =
      it != pool_status_.end() ? it->second.conditions : std::vector<Condition>{};
  status.firstSeenMs = it != pool_status_.end() ? it->second.firstSeenMs : now;
  if (!object && instances == 0) {
    if (it != pool_status_.end()) pool_status_.erase(it);
    lock.unlock();
    Changed();
    return;
  }
  uint64_t generation = object ? object->generation : 0;
  status.generation = generation;
  status.observedGeneration = generation;
  status.specHash = template_hash;
  status.pruning = !object;
  int want = plan.desired.running + plan.desired.warm + plan.desired.sleeping;
  bool ready = object && status.ready == want && status.current == plan.desired && !plan.rolling &&
               progressing == 0 && failed == 0 && plan.create.empty();
  status.conditions.push_back(
      MakeCondition("Ready", ready, ready ? "AllInstancesReady" : "NotReady",
                    std::to_string(status.ready) + "/" + std::to_string(want) + " instances ready",
                    generation, previous, now));
  bool moving = progressing > 0 || plan.rolling || !plan.create.empty() || !plan.retarget.empty();
  status.conditions.push_back(MakeCondition(
      "Progressing", moving, plan.rolling ? "RollingUpdate" : (moving ? "Reconciling" : "Stable"),
      std::to_string(progressing) + " instances changing state" +
          (plan.rolling ? "; rolling to spec " + status.specHash : ""),
      generation, previous, now));
  status.conditions.push_back(MakeCondition(
      "Degraded", failed > 0, failed > 0 ? "InstanceFailed" : "NoFailures",
      failed > 0 ? std::to_string(failed) + " failed; " + failure : "", generation, previous, now));
  bool quota = !plan.quotaMessage.empty();
  status.conditions.push_back(MakeCondition("QuotaExceeded", quota,
                                            quota ? "QuotaExceeded" : "WithinQuota",
                                            plan.quotaMessage, generation, previous, now));
  bool quota_changed =
      quota &&
      (previous.empty() || std::none_of(previous.begin(), previous.end(), [](const Condition& c) {
         return c.type == "QuotaExceeded" && c.status;
       }));
  pool_status_[{tenant, pool}] = std::move(status);
  lock.unlock();
  if (quota_changed) {
    Emit("Pool", tenant + "/" + pool, EventType::kWarning, "QuotaExceeded", plan.quotaMessage);
  }
  Changed();
}

Status Controller::ReconcileInstance(const InstanceKey& key) {
  std::optional<Instance> found = store_.GetInstance(key);
  if (!found) return {};
  const Instance& inst = *found;
  const std::string name = key.ToString();
  VmmTarget target{key, inst.pool, inst.spec.get(), InstanceDir(key.tenant, inst.pool, key.name),
                   inst.handle};
  // The tenant's quota, for drivers that write it as the tenant's cgroup limits.
  std::shared_ptr<const manifests::DesiredState> desired = Desired();
  if (desired) {
    const manifests::Object* t = desired->Find(manifests::ObjectKey::TenantKey(key.tenant));
    if (t && t->tenant()) target.tenantQuota = &t->tenant()->quota;
  }
  if (!inst.spec) return Error{"instance " + name + " has no spec"};

  std::optional<Action> action = NextAction(inst.state, inst.target);
  if (!action) {
    // At target: check the VMM is really there (drift: a killed VMM is noticed here).
    if (HasProcess(inst.state)) {
      ProbeResult probe = vmm_.Probe(target);
      if (!probe.alive) {
        S towards = inst.target;
        Status s = Update(key, [&](Instance& i) {
          towards = TargetAfterLoss(*i.spec, i.state, i.target, i.pending, S::kStopped);
          i.target = towards;
          i.state = S::kStopped;
          i.stateSinceMs = Now();
          i.handle = {};
        });
        Emit("Instance", name, EventType::kWarning, "VmmLost",
             "VMM is gone (" + probe.detail + "); " +
                 (towards == inst.target
                      ? "restarting towards " + std::string(StateName(towards))
                      : std::string("its pool plans it again (restarting it would take more of "
                                    "the tenant's quota than it held)")));
        Audit(key.tenant, "instance.lost", name, probe.detail);
        queue_.Add(InstanceQueueKey(key));
        queue_.Add(PoolQueueKey(key.tenant, inst.pool));
        return s;
      }
    }
    // At target with no action to take (e.g. retargeted to where it stands after a failed
    // pause): the failures were of an action it no longer needs, so they no longer apply.
    if (inst.failed || inst.failures > 0) {
      Status s = Update(key, [](Instance& i) {
        i.failures = 0;
        i.failed = false;
        i.lastError.clear();
      });
      queue_.Add(PoolQueueKey(key.tenant, inst.pool));
      return s;
    }
    return {};
  }
  auto next = Transition(inst.state, *action);
  if (!next) {
    return Error{"invalid transition " + std::string(StateName(inst.state)) + " --" +
                 std::string(ActionName(*action)) + "-->"};
  }

  // Intent first: after a crash, Adopt() resolves what happened from this record.
  // The record must still be the one the action was chosen from: a pool plan that retargeted
  // the instance since then counted its quota without this action (see Footprint).
  // Durable before the action, except for pause and resume: the process exists before and after
  // them, and Adopt() records what a probe observes of every recorded process (paused or
  // running), so losing their intent and done record in a crash loses nothing.
  Action act = *action;
  bool intended = false;
  const Durability intent_durability =
      act == Action::kPause || act == Action::kResume ? Durability::kQueued : Durability::kWait;
  if (Status s = UpdateIf(
          key,
          [&](Instance& i) {
            if (i.state != inst.state || i.target != inst.target || i.pending != inst.pending) {
              return false;
            }
            i.pending = act;
            return true;
          },
          &intended, intent_durability);
      !s.ok()) {
    return s;
  }
  if (!intended) {
    queue_.Add(InstanceQueueKey(key));  // changed under us: decide again from the new record
    return {};
  }

  Status outcome;
  VmmHandle handle = inst.handle;
  switch (act) {
    case Action::kPrepare:
    case Action::kRebuild:
      outcome = vmm_.Prepare(target);
      break;
    case Action::kStart: {
      auto r = vmm_.Start(target);
      if (r.ok())
        handle = *r;
      else
        outcome = r.error();
      break;
    }
    case Action::kPause:
      outcome = vmm_.Pause(target);
      break;
    case Action::kResume:
      outcome = vmm_.Resume(target);
      break;
    case Action::kSleep:
      outcome = vmm_.Sleep(target);
      if (outcome.ok()) handle = {};
      break;
    case Action::kWake: {
      auto r = vmm_.Wake(target);
      if (r.ok())
        handle = *r;
      else
        outcome = r.error();
      break;
    }
    case Action::kStop:
      outcome = vmm_.Stop(target);
      if (outcome.ok()) handle = {};
      break;
    case Action::kDestroy:
      outcome = vmm_.Destroy(target);
      break;
  }

  if (!outcome.ok()) {
    const std::string message =
        std::string(ActionName(act)) + " failed: " + outcome.error().message;
    // A VMM that vanished under an instance moving between process states (pause, resume,
    // sleep) fails every retry the same way, and the drift check only runs at target: probe
    // now, and record what is really left (as Adopt does after a restart).
    std::optional<S> lost;
    std::string lost_detail;
    if (HasProcess(inst.state)) {
      ProbeResult probe = vmm_.Probe(target);
      if (!probe.alive) {
        lost = act == Action::kSleep && probe.snapshot ? S::kSleeping : S::kStopped;
        lost_detail = probe.detail;
      }
    }
    bool now_failed = false;
    Status recorded = Update(key, [&](Instance& i) {
      if (lost) i.target = TargetAfterLoss(*i.spec, i.state, i.target, i.pending, *lost);
      i.pending.reset();
      if (lost) {
        i.state = *lost;
        i.stateSinceMs = Now();
        i.handle = {};
      }
      ++i.failures;
      i.lastError = message;
      now_failed = i.failures >= options_.failuresBeforeFailed;
      i.failed = now_failed;
    });
    Emit("Instance", name, EventType::kWarning, now_failed ? "Failed" : "ActionFailed", message);
    Audit(key.tenant, "instance." + std::string(ActionName(act)) + ".failed", name,
          outcome.error().message);
    if (lost) {
      Emit("Instance", name, EventType::kWarning, "VmmLost",
           "VMM is gone (" + lost_detail + "); recorded as " + std::string(StateName(*lost)) +
               ", moving towards " + std::string(StateName(inst.target)));
      Audit(key.tenant, "instance.lost", name, lost_detail);
    }
    queue_.Add(PoolQueueKey(key.tenant, inst.pool));
    if (!recorded.ok()) return recorded;
    return Error{message};
  }

  if (act == Action::kDestroy) {
    if (Status s = Remove(inst); !s.ok()) return s;
    Audit(key.tenant, "instance.destroy", name, "");
    Emit("Instance", name, EventType::kNormal, "Destroyed", "all resources released");
    queue_.Add(PoolQueueKey(key.tenant, inst.pool));
    return {};
  }
  S reached = *next;
  // The done record and its audit entry are queued, not waited for: the intent above makes a
  // crash before they are durable recoverable (Adopt probes), and the next durable write, this
  // worker's next intent most often, commits them in the same transaction.
  store_.AuditQueued(key.tenant, "mvmd", "instance." + std::string(ActionName(act)), name,
                     std::string(StateName(inst.state)) + " -> " + std::string(StateName(reached)));
  Status s = Update(
      key,
      [&](Instance& i) {
        i.state = reached;
        i.stateSinceMs = Now();
        i.handle = handle;
        i.pending.reset();
        i.failures = 0;
        i.failed = false;
        i.lastError.clear();
      },
      Durability::kQueued);
  if (!s.ok()) return s;
  Emit("Instance", name, EventType::kNormal, DoneReason(act),
       std::string(StateName(inst.state)) + " -> " + std::string(StateName(reached)));
  // Not there yet: take the next step. Either way the pool may decide something new.
  if (!Satisfies(reached, inst.target)) queue_.Add(InstanceQueueKey(key));
  queue_.Add(PoolQueueKey(key.tenant, inst.pool));
  return {};
}

bool Controller::Converged(std::string* why) {
  auto no = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return false;
  };
  WorkQueueMetrics m = queue_.Metrics();
  if (m.depth > 0 || m.in_flight > 0) {
    return no("queue: " + std::to_string(m.depth) + " waiting, " + std::to_string(m.in_flight) +
              " in flight");
  }
  for (const auto& i : store_.ListInstances()) {
    if (!i.failed && !Satisfies(i.state, i.target)) {
      return no("instance " + i.key.ToString() + " is " + std::string(StateName(i.state)) +
                ", target " + std::string(StateName(i.target)));
    }
  }
  std::shared_ptr<const manifests::DesiredState> desired = Desired();
  if (!desired) return true;
  std::shared_lock lock(mu_);
  for (const auto& p : desired->Pools()) {
    const std::string name = p->key.tenant + "/" + p->key.name;
    auto it = pool_status_.find({p->key.tenant, p->key.name});
    if (it == pool_status_.end()) return no("pool " + name + " has no status yet");
    const PoolStatus& st = it->second;
    if (st.observedGeneration != p->generation) {
      return no("pool " + name + " observed generation " + std::to_string(st.observedGeneration) +
                " of " + std::to_string(p->generation));
    }
    for (const auto& c : st.conditions) {
      if (c.type == "Progressing" && c.status) return no("pool " + name + " is Progressing");
    }
  }
  return true;
}

std::shared_ptr<const manifests::DesiredState> Controller::Desired() const {
  std::shared_lock lock(mu_);
  return desired_;
}

std::vector<TenantStatus> Controller::Tenants() const {
  std::shared_ptr<const manifests::DesiredState> desired = Desired();
  std::map<std::string, TenantStatus> out;
  std::shared_lock lock(mu_);
  if (desired) {
    for (const auto& t : desired->Tenants()) out[t->key.name].name = t->key.name;
  }
  for (const auto& [tenant, usage] : usage_) {
    out[tenant].name = tenant;
    out[tenant].usage = usage;
  }
  for (const auto& [id, status] : pool_status_) {
    auto& t = out[id.first];
    t.name = id.first;
    ++t.pools;
    t.instances += status.instances;
  }
  std::vector<TenantStatus> list;
  for (auto& [name, t] : out) list.push_back(std::move(t));
  return list;
}

std::vector<PoolStatus> Controller::Pools() const {
  std::shared_lock lock(mu_);
  std::vector<PoolStatus> out;
  out.reserve(pool_status_.size());
  for (const auto& [id, status] : pool_status_) out.push_back(status);
  return out;
}

std::vector<Instance> Controller::Instances() const {
  return store_.ListInstances();
}

std::vector<Event> Controller::Events(const std::string& objectKind,
                                      const std::string& objectKey) const {
  return store_.Events(objectKind, objectKey);
}

std::vector<std::string> Controller::Warnings() const {
  std::vector<std::string> out;
  std::shared_lock lock(mu_);
  if (raw_desired_) {
    for (const auto& d : raw_desired_->diagnostics) out.push_back(d.ToString());
  }
  if (!held_back_.empty()) {
    std::string pools;
    for (const auto& [tenant, pool] : held_back_)
      pools += (pools.empty() ? "" : ", ") + tenant + "/" + pool;
    out.push_back("holding back the removal of " + std::to_string(held_back_.size()) + " pools (" +
                  pools +
                  "): most of the fleet vanished from the manifests at once; restore them, or "
                  "confirm with SIGUSR1 to mvmd");
  }
  if (!options_.prune)
    out.push_back("pruning is off: pools removed from the manifests keep running");
  return out;
}

uint64_t Controller::ChangeSeq() const {
  return change_seq_.load(std::memory_order_relaxed);
}

uint64_t Controller::WaitForChange(uint64_t after, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(change_mu_);
  change_cv_.wait_for(lock, timeout, [&] { return change_seq_.load() > after; });
  return change_seq_.load();
}

}  // namespace mvm::controller
