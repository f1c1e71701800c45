#include "controller/pool_planner.h"

#include <algorithm>
#include <array>
#include <optional>

#include "controller/state_machine.h"

namespace mvm::controller {
namespace {

using S = InstanceState;

bool HoldsProcess(S s) {
  return s == S::kRunning || s == S::kWarm;
}

// Rank of `state` as a source for a slot of type `slot`: lower is faster.
int SourceRank(S slot, S state) {
  auto other = [](S s) {
    if (s == S::kReady || s == S::kStopped) return 3;
    return 4;  // Created
  };
  switch (slot) {
    case S::kRunning:
      if (state == S::kRunning) return 0;
      if (state == S::kWarm) return 1;
      if (state == S::kSleeping) return 2;
      return other(state);
    case S::kWarm:
      if (state == S::kWarm) return 0;
      if (state == S::kRunning) return 1;
      if (state == S::kSleeping) return 2;
      return other(state);
    default:  // Sleeping
      if (state == S::kSleeping) return 0;
      if (state == S::kWarm) return 1;
      if (state == S::kRunning) return 2;
      return other(state);
  }
}

struct Work {
  const Instance* inst = nullptr;
  S target = S::kRunning;  // the plan's target for it
  bool assigned = false;
  bool current = false;  // on the pool's current spec hash
  bool settled = false;  // at its target, not failed
};

class Planner {
 public:
  Planner(const PlanInput& in, Plan& plan) : in_(in), plan_(plan) {}

  void Run() {
    if (!in_.object || !in_.object->pool()) {
      if (in_.prune) {
        for (const Instance* i : in_.instances) Retarget(*i, S::kDestroyed);
      }
      return;
    }
    pool_spec_ = in_.object->pool();
    const std::string& hash = in_.templateHash.empty() ? in_.object->specHash : in_.templateHash;
    const manifests::Replicas& r = pool_spec_->replicas;
    plan_.desired = {r.running, r.warm, r.sleeping};

    usage_ = in_.others;
    for (const Instance* i : in_.instances) {
      usage_ += Footprint(SpecOf(*i), i->state, i->target, i->pending);
      if (i->target == S::kDestroyed) continue;  // leaving: never revived
      Work w;
      w.inst = i;
      w.target = i->target;
      w.current = i->specHash == hash;
      w.settled = !i->failed && Satisfies(i->state, i->target);
      work_.push_back(w);
    }

    const bool rolling_now =
        std::any_of(work_.begin(), work_.end(), [](const Work& w) { return !w.current; });
    const std::array<std::pair<S, int>, 3> slots = {
        {{S::kRunning, r.running}, {S::kWarm, r.warm}, {S::kSleeping, r.sleeping}}};
    std::optional<S> first_old_slot;
    for (const auto& [slot, wanted] : slots) {
      int need = wanted;
      bool waiting = false;  // a candidate is held by a min*Seconds window
      auto fill = [&](auto&& in_group) {
        std::vector<Work*> candidates;
        for (auto& w : work_) {
          if (!w.assigned && in_group(w)) candidates.push_back(&w);
        }
        // An instance already targeting the slot keeps it (moving another one there would
        // move two); among the rest the fastest source wins, then the oldest.
        std::stable_sort(candidates.begin(), candidates.end(), [&](Work* a, Work* b) {
          bool ta = a->target == slot, tb = b->target == slot;
          if (ta != tb) return ta;
          int ra = SourceRank(slot, a->inst->state), rb = SourceRank(slot, b->inst->state);
          if (ra != rb) return ra < rb;
          return a->inst->createdAtMs < b->inst->createdAtMs;
        });
        for (Work* w : candidates) {
          if (need == 0) return;
          if (int64_t wait = MinTimeLeft(*w->inst, slot); wait > 0) {
            Requeue(wait);
            waiting = true;
            continue;
          }
          if (!SetTarget(*w, slot)) continue;
          w->assigned = true;
          --need;
          if (!w->current && !first_old_slot) first_old_slot = slot;
        }
      };
      // Outside a rolling update, an instance already on its way to this slot keeps it ahead
      // of settled ones (else a settled Sleeping one takes a Warm slot from an instance waking
      // towards it, and the two swap for ever). During one, only settled instances go first:
      // the old ones hold their slots until the surge has settled (max unavailable 0).
      fill([&](const Work& w) {
        return w.current &&
               (w.settled || w.inst->failed || (!rolling_now && w.inst->target == slot));
      });
      fill([](const Work& w) { return !w.current && !w.inst->failed; });
      fill([](const Work& w) { return w.current && !w.settled && !w.inst->failed; });
      if (!waiting) {
        for (; need > 0; --need) {
          if (!Create(slot)) break;
        }
      }
    }

    // Rolling update: one surge instance at a time, once everything current has settled.
    plan_.rolling =
        std::any_of(work_.begin(), work_.end(), [](const Work& w) { return !w.current; });
    bool progressing = std::any_of(work_.begin(), work_.end(), [](const Work& w) {
      return w.current && !w.inst->failed && !Satisfies(w.inst->state, w.target);
    });
    Work* surge = nullptr;
    if (first_old_slot) {
      for (auto& w : work_) {
        if (!w.assigned && w.current && !w.inst->failed && !w.settled) {
          surge = &w;  // an unassigned current instance on its way: the surge in flight
          break;
        }
      }
      // Max surge 1: instances still being destroyed count against it.
      size_t live = in_.instances.size() + plan_.create.size();
      size_t limit = static_cast<size_t>(r.Total()) + 1;
      if (!surge && !progressing && plan_.create.empty() && live < limit) {
        Create(*first_old_slot);
      }
    }

    for (auto& w : work_) {
      if (w.assigned || &w == surge) continue;
      if (!w.current) {
        SetTarget(w, S::kDestroyed);
        continue;
      }
      CoolDown(w);
    }
  }

 private:
  const manifests::PoolSpec& SpecOf(const Instance& i) const {
    return i.spec ? *i.spec : *pool_spec_;
  }

  void Requeue(int64_t ms) {
    if (ms > 0 && (plan_.requeueAfterMs == 0 || ms < plan_.requeueAfterMs))
      plan_.requeueAfterMs = ms;
  }

  int64_t InStateMs(const Instance& i) const { return in_.nowMs - i.stateSinceMs; }

  // How long `i` must still stay where it is before moving towards `to` (0: free to go).
  int64_t MinTimeLeft(const Instance& i, S to) const {
    const manifests::Policy& p = pool_spec_->policy;
    if (i.state == S::kRunning && to != S::kRunning) {
      return std::max<int64_t>(0, p.minRunningSeconds * 1000 - InStateMs(i));
    }
    if (i.state == S::kWarm && to != S::kWarm && to != S::kRunning) {
      return std::max<int64_t>(0, p.minWarmSeconds * 1000 - InStateMs(i));
    }
    return 0;
  }

  // Surplus current-spec instance: Running → Warm → Sleeping → gone, as the policy says.
  void CoolDown(Work& w) {
    const Instance& i = *w.inst;
    const manifests::Policy& p = pool_spec_->policy;
    auto stay_or = [&](S stage_target, int64_t stage_seconds) {
      int64_t left = std::max(MinTimeLeft(i, stage_target), stage_seconds * 1000 - InStateMs(i));
      if (left > 0) {
        Requeue(left);
        SetTarget(w, i.state);
      } else {
        SetTarget(w, stage_target);
      }
    };
    if (i.state == S::kRunning) {
      if (p.idleToWarmSeconds > 0) {
        stay_or(S::kWarm, p.idleToWarmSeconds);
      } else {
        stay_or(S::kDestroyed, 0);
      }
    } else if (i.state == S::kWarm) {
      if (p.warmToSleepSeconds > 0) {
        stay_or(S::kSleeping, p.warmToSleepSeconds);
      } else {
        stay_or(S::kDestroyed, 0);
      }
    } else {
      SetTarget(w, S::kDestroyed);
    }
  }

  // Changes w's target if the quota allows; lowering usage is always allowed.
  bool SetTarget(Work& w, S target) {
    if (w.target == target) return true;
    const manifests::PoolSpec& spec = SpecOf(*w.inst);
    TenantUsage before = Footprint(spec, w.inst->state, w.target, w.inst->pending);
    TenantUsage after = Footprint(spec, w.inst->state, target, w.inst->pending);
    if (!Admit(before, after)) return false;
    w.target = target;
    if (target != w.inst->target) {
      Retarget(*w.inst, target);
    } else {
      std::erase_if(plan_.retarget, [&](const auto& r) { return r.first == w.inst->key; });
    }
    return true;
  }

  bool Create(S target) {
    if (!Admit(TenantUsage{}, Footprint(*pool_spec_, S::kCreated, target))) return false;
    plan_.create.push_back(target);
    return true;
  }

  bool Admit(const TenantUsage& before, const TenantUsage& after) {
    TenantUsage next = usage_;
    next -= before;
    next += after;
    if (in_.quota) {
      // Only a limit this decision makes worse blocks it.
      std::string violation = QuotaViolation(next, *in_.quota, &usage_);
      if (!violation.empty()) {
        if (plan_.quotaMessage.empty()) {
          plan_.quotaMessage = "tenant " + in_.tenant + " quota: " + violation;
        }
        return false;
      }
    }
    usage_ = next;
    return true;
  }

  void Retarget(const Instance& i, S target) {
    for (auto& r : plan_.retarget) {
      if (r.first == i.key) {
        r.second = target;
        return;
      }
    }
    if (i.target != target) plan_.retarget.emplace_back(i.key, target);
  }

  const PlanInput& in_;
  Plan& plan_;
  const manifests::PoolSpec* pool_spec_ = nullptr;
  TenantUsage usage_;
  std::vector<Work> work_;
};

}  // namespace

TenantUsage Footprint(const manifests::PoolSpec& spec, InstanceState state, InstanceState target,
                      std::optional<Action> pending) {
  TenantUsage u;
  if (state == S::kDestroyed) return u;
  u.diskMiB = spec.resources.diskMiB;
  auto visit = [&](S s) {
    if (HoldsProcess(s)) {
      u.vcpus = spec.resources.vcpus;
      u.memoryMiB = spec.resources.memoryMiB;
    }
    u.running |= s == S::kRunning;
    u.warm |= s == S::kWarm;
    u.sleeping |= s == S::kSleeping;
  };
  // Every state on the way: the one it is in, the one an action in flight leads to, then each
  // state NextAction passes through to the target (a boot towards Warm runs unpaused first).
  auto walk = [&](S from) {
    visit(from);
    for (int step = 0; step < 8; ++step) {
      std::optional<Action> next = NextAction(from, target);
      if (!next) break;
      std::optional<S> to = Transition(from, *next);
      if (!to) break;
      from = *to;
      visit(from);
    }
  };
  walk(state);
  if (pending) {
    if (std::optional<S> after = Transition(state, *pending)) walk(*after);
  }
  return u;
}

TenantUsage& operator+=(TenantUsage& a, const TenantUsage& b) {
  a.vcpus += b.vcpus;
  a.memoryMiB += b.memoryMiB;
  a.diskMiB += b.diskMiB;
  a.running += b.running;
  a.warm += b.warm;
  a.sleeping += b.sleeping;
  return a;
}

TenantUsage& operator-=(TenantUsage& a, const TenantUsage& b) {
  a.vcpus -= b.vcpus;
  a.memoryMiB -= b.memoryMiB;
  a.diskMiB -= b.diskMiB;
  a.running -= b.running;
  a.warm -= b.warm;
  a.sleeping -= b.sleeping;
  return a;
}

TenantUsage RetargetDelta(const Instance& instance, InstanceState target) {
  if (!instance.spec) return {};
  TenantUsage d = Footprint(*instance.spec, instance.state, target, instance.pending);
  d -= Footprint(*instance.spec, instance.state, instance.target, instance.pending);
  return d;
}

bool Adds(const TenantUsage& d) {
  return !Within(d, TenantUsage{});
}

InstanceState TargetAfterLoss(const manifests::PoolSpec& spec, InstanceState state,
                              InstanceState target, std::optional<Action> pending,
                              InstanceState now) {
  TenantUsage more = Footprint(spec, now, target);
  more -= Footprint(spec, state, target, pending);
  return Adds(more) ? now : target;
}

bool Within(const TenantUsage& d, const TenantUsage& limit) {
  return d.vcpus <= limit.vcpus && d.memoryMiB <= limit.memoryMiB && d.diskMiB <= limit.diskMiB &&
         d.running <= limit.running && d.warm <= limit.warm && d.sleeping <= limit.sleeping;
}

std::string QuotaViolation(const TenantUsage& u, const manifests::TenantQuota& q,
                           const TenantUsage* baseline) {
  static const TenantUsage kZero;
  const TenantUsage& b = baseline ? *baseline : kZero;
  auto check = [&](const char* name, int64_t used, const std::optional<int64_t>& limit,
                   int64_t base) {
    if (limit && used > *limit && (!baseline || used > base)) {
      return std::string(name) + " " + std::to_string(used) + " > quota " + std::to_string(*limit);
    }
    return std::string();
  };
  for (const std::string& v :
       {check("running", u.running, q.running, b.running), check("warm", u.warm, q.warm, b.warm),
        check("sleeping", u.sleeping, q.sleeping, b.sleeping),
        check("vcpus", u.vcpus, q.vcpus, b.vcpus),
        check("memoryMiB", u.memoryMiB, q.memoryMiB, b.memoryMiB),
        check("diskMiB", u.diskMiB, q.diskMiB, b.diskMiB)}) {
    if (!v.empty()) return v;
  }
  return "";
}

Plan PlanPool(const PlanInput& input) {
  Plan plan;
  Planner(input, plan).Run();
  return plan;
}

}  // namespace mvm::controller
