// Pool planning: slots from the fastest source, rolling updates one at a time, scale-down
// timers and cooling, quota refusals and prune safety.

#include "controller/pool_planner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>
#include <map>

namespace mvm::controller {
namespace {

using S = InstanceState;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr int64_t kNow = 1'000'000'000;

class PlannerTest : public ::testing::Test {
 protected:
  PlannerTest() { SetSpec(1, 1, 0); }

  void SetSpec(int running, int warm, int sleeping, std::string hash = "h1") {
    auto object = std::make_shared<manifests::Object>();
    object->key = manifests::ObjectKey::PoolKey("acme", "web");
    manifests::PoolSpec spec;
    spec.resources = {1, 128, 100, {}};
    spec.replicas = {running, warm, sleeping};
    spec.policy = policy_;
    object->spec = spec;
    object->specHash = std::move(hash);
    pool_ = object;
  }

  const Instance& Add(const std::string& name, S state, S target, std::string hash = "h1",
                      int64_t in_state_ms = 3'600'000) {
    Instance i;
    i.key = {"acme", name};
    i.pool = "web";
    i.state = state;
    i.target = target;
    i.specHash = std::move(hash);
    i.spec = std::make_shared<manifests::PoolSpec>(*pool_->pool());
    i.createdAtMs = kNow - 10'000'000 + static_cast<int64_t>(instances_.size());
    i.stateSinceMs = kNow - in_state_ms;
    instances_.push_back(i);
    return instances_.back();
  }

  Plan Run() {
    PlanInput in;
    in.tenant = "acme";
    in.pool = "web";
    in.object = pool_.get();
    in.prune = prune_;
    for (const auto& i : instances_) in.instances.push_back(&i);
    in.quota = quota_ ? &*quota_ : nullptr;
    in.others = others_;
    in.nowMs = kNow;
    return PlanPool(in);
  }

  std::map<std::string, S> Targets(const Plan& plan) {
    std::map<std::string, S> out;
    for (const auto& [key, target] : plan.retarget) out[key.name] = target;
    return out;
  }

  manifests::Policy policy_;
  std::shared_ptr<manifests::Object> pool_;
  std::deque<Instance> instances_;
  std::optional<manifests::TenantQuota> quota_;
  TenantUsage others_;
  bool prune_ = true;
};

TEST_F(PlannerTest, NewPoolCreatesEverySlot) {
  SetSpec(3, 2, 1);
  Plan plan = Run();
  EXPECT_THAT(plan.create,
              ElementsAre(S::kRunning, S::kRunning, S::kRunning, S::kWarm, S::kWarm, S::kSleeping));
  EXPECT_THAT(plan.retarget, IsEmpty());
  EXPECT_EQ(plan.desired, (Counts{3, 2, 1}));
}

TEST_F(PlannerTest, ConvergedPoolPlansNothing) {
  SetSpec(1, 1, 1);
  Add("a", S::kRunning, S::kRunning);
  Add("b", S::kWarm, S::kWarm);
  Add("c", S::kSleeping, S::kSleeping);
  Plan plan = Run();
  EXPECT_THAT(plan.retarget, IsEmpty());
  EXPECT_THAT(plan.create, IsEmpty());
  EXPECT_EQ(plan.requeueAfterMs, 0);
}

TEST_F(PlannerTest, ScaleUpTakesWarmFirstThenSleepingThenBoots) {
  SetSpec(3, 0, 0);
  Add("run", S::kRunning, S::kRunning);
  Add("sleep", S::kSleeping, S::kSleeping);
  Add("warm", S::kWarm, S::kWarm);
  Plan plan = Run();
  EXPECT_EQ(Targets(plan),
            (std::map<std::string, S>{{"warm", S::kRunning}, {"sleep", S::kRunning}}));
  EXPECT_THAT(plan.create, IsEmpty());
  SetSpec(4, 0, 0);
  EXPECT_THAT(Run().create, ElementsAre(S::kRunning));
}

TEST_F(PlannerTest, WarmSlotPrefersPausingASurplusRunningInstance) {
  SetSpec(1, 1, 0);
  Add("a", S::kRunning, S::kRunning);
  Add("b", S::kRunning, S::kRunning);
  Plan plan = Run();
  EXPECT_EQ(Targets(plan), (std::map<std::string, S>{{"b", S::kWarm}}));
  EXPECT_THAT(plan.create, IsEmpty());
}

TEST_F(PlannerTest, ScaleDownWaitsForMinRunningSeconds) {
  policy_.minRunningSeconds = 60;
  SetSpec(1, 0, 0);
  Add("old", S::kRunning, S::kRunning, "h1", 3'600'000);
  Add("young", S::kRunning, S::kRunning, "h1", 20'000);
  Plan plan = Run();
  EXPECT_THAT(plan.retarget, IsEmpty());  // the young one stays until its minute is up
  EXPECT_EQ(plan.requeueAfterMs, 40'000);
}

TEST_F(PlannerTest, SurplusWithoutCoolingIsDestroyed) {
  SetSpec(1, 0, 0);
  Add("a", S::kRunning, S::kRunning);
  Add("b", S::kRunning, S::kRunning);
  Add("c", S::kSleeping, S::kSleeping);
  EXPECT_EQ(Targets(Run()), (std::map<std::string, S>{{"b", S::kDestroyed}, {"c", S::kDestroyed}}));
}

TEST_F(PlannerTest, SurplusCoolsDownRunningToWarmToSleepingWithTimers) {
  policy_.idleToWarmSeconds = 300;
  policy_.warmToSleepSeconds = 900;
  SetSpec(0, 0, 0);
  Add("fresh", S::kRunning, S::kRunning, "h1", 100'000);
  Add("idle", S::kRunning, S::kRunning, "h1", 300'000);
  Add("warm", S::kWarm, S::kWarm, "h1", 899'000);
  Add("cold", S::kWarm, S::kWarm, "h1", 900'000);
  Add("asleep", S::kSleeping, S::kSleeping);
  Plan plan = Run();
  EXPECT_EQ(Targets(plan),
            (std::map<std::string, S>{
                {"idle", S::kWarm}, {"cold", S::kSleeping}, {"asleep", S::kDestroyed}}));
  EXPECT_EQ(plan.requeueAfterMs, 1'000);  // "warm" reaches 900 s first
}

TEST_F(PlannerTest, RollingUpdateCreatesOneSurgeAndKeepsOldUntilItSettles) {
  SetSpec(2, 0, 0, "h2");
  Add("old1", S::kRunning, S::kRunning, "h1");
  Add("old2", S::kRunning, S::kRunning, "h1");
  Plan first = Run();
  EXPECT_THAT(first.create, ElementsAre(S::kRunning));  // the surge
  EXPECT_THAT(first.retarget, IsEmpty());               // nothing old goes yet
  EXPECT_TRUE(first.rolling);

  Add("new1", S::kReady, S::kRunning, "h2");  // the surge on its way
  Plan waiting = Run();
  EXPECT_THAT(waiting.create, IsEmpty());
  EXPECT_THAT(waiting.retarget, IsEmpty());

  instances_.back().state = S::kRunning;  // the surge settled
  Plan swap = Run();
  EXPECT_EQ(Targets(swap), (std::map<std::string, S>{{"old2", S::kDestroyed}}));
  EXPECT_THAT(swap.create, IsEmpty());  // the next surge waits until old2 is gone
  instances_.erase(instances_.begin() + 1);
  EXPECT_THAT(Run().create, ElementsAre(S::kRunning));
}

TEST_F(PlannerTest, FailedInstanceKeepsItsSlotButFailedOldOneIsReplaced) {
  SetSpec(1, 0, 0);
  Add("a", S::kReady, S::kRunning);
  instances_.back().failures = 9;
  instances_.back().failed = true;
  Plan plan = Run();
  EXPECT_THAT(plan.create, IsEmpty());
  EXPECT_THAT(plan.retarget, IsEmpty());

  SetSpec(1, 0, 0, "h2");
  Plan rolled = Run();
  EXPECT_EQ(Targets(rolled), (std::map<std::string, S>{{"a", S::kDestroyed}}));
  EXPECT_THAT(rolled.create, ElementsAre(S::kRunning));
}

TEST_F(PlannerTest, QuotaHoldsBackCreationsAndSaysWhy) {
  quota_ = manifests::TenantQuota{};
  quota_->running = 3;
  others_.running = 2;  // another pool of the tenant already runs two
  SetSpec(3, 1, 0);
  Plan plan = Run();
  // One more Running fits; the Warm one would boot (run) before pausing: no room for that.
  EXPECT_THAT(plan.create, ElementsAre(S::kRunning));
  EXPECT_EQ(plan.quotaMessage, "tenant acme quota: running 4 > quota 3");
}

TEST_F(PlannerTest, FootprintCountsEveryStateOnTheWay) {
  manifests::PoolSpec spec;
  spec.resources.vcpus = 2;
  spec.resources.memoryMiB = 256;
  spec.resources.diskMiB = 100;
  auto counts = [](const TenantUsage& u) { return Counts{u.running, u.warm, u.sleeping}; };
  // A fresh boot towards Sleeping runs, pauses, then snapshots.
  EXPECT_EQ(counts(Footprint(spec, S::kCreated, S::kSleeping)), (Counts{1, 1, 1}));
  EXPECT_EQ(Footprint(spec, S::kCreated, S::kSleeping).vcpus, 2);
  // A wake towards Warm runs first; a Warm instance put to sleep holds no Running.
  EXPECT_EQ(counts(Footprint(spec, S::kSleeping, S::kWarm)), (Counts{1, 1, 1}));
  EXPECT_EQ(counts(Footprint(spec, S::kWarm, S::kSleeping)), (Counts{0, 1, 1}));
  // Settled Sleeping: no VMM, so no vcpus or memory; disk while it exists.
  TenantUsage sleeping = Footprint(spec, S::kSleeping, S::kSleeping);
  EXPECT_EQ(counts(sleeping), (Counts{0, 0, 1}));
  EXPECT_EQ(sleeping.vcpus, 0);
  EXPECT_EQ(sleeping.diskMiB, 100);
  // The action in flight counts: a Sleep under way still leads to Sleeping when retargeted Warm.
  EXPECT_EQ(counts(Footprint(spec, S::kWarm, S::kWarm, Action::kSleep)), (Counts{1, 1, 1}));
  EXPECT_EQ(counts(Footprint(spec, S::kWarm, S::kWarm)), (Counts{0, 1, 0}));
  // Leaving: Destroy of a Running instance stops it first; a destroyed one holds nothing.
  EXPECT_EQ(counts(Footprint(spec, S::kRunning, S::kDestroyed)), (Counts{1, 0, 0}));
  EXPECT_EQ(Footprint(spec, S::kDestroyed, S::kDestroyed).diskMiB, 0);
}

TEST_F(PlannerTest, QuotaCountsVcpusOfRunningAndWarm) {
  quota_ = manifests::TenantQuota{};
  quota_->vcpus = 2;
  SetSpec(1, 2, 0);
  Plan plan = Run();
  EXPECT_THAT(plan.create, ElementsAre(S::kRunning, S::kWarm));
  EXPECT_EQ(plan.quotaMessage, "tenant acme quota: vcpus 3 > quota 2");
}

TEST_F(PlannerTest, ScaleDownIsAllowedEvenOverQuota) {
  quota_ = manifests::TenantQuota{};
  quota_->running = 1;
  SetSpec(1, 0, 0);
  Add("a", S::kRunning, S::kRunning);
  Add("b", S::kRunning, S::kRunning);
  Plan plan = Run();
  EXPECT_EQ(Targets(plan), (std::map<std::string, S>{{"b", S::kDestroyed}}));
  EXPECT_TRUE(plan.quotaMessage.empty());
}

TEST_F(PlannerTest, RemovedPoolIsPrunedOnlyWhenPruningIsOn) {
  Add("a", S::kRunning, S::kRunning);
  pool_.reset();
  EXPECT_EQ(Targets(Run()), (std::map<std::string, S>{{"a", S::kDestroyed}}));
  prune_ = false;
  EXPECT_THAT(Run().retarget, IsEmpty());
}

TEST_F(PlannerTest, InstancesBeingDestroyedAreNeverRevived) {
  SetSpec(1, 0, 0);
  Add("leaving", S::kRunning, S::kDestroyed);
  Plan plan = Run();
  EXPECT_THAT(plan.retarget, IsEmpty());
  EXPECT_THAT(plan.create, ElementsAre(S::kRunning));
}

}  // namespace
}  // namespace mvm::controller
