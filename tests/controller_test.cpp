// Controller with a fake VMM: convergence, quota refusal, prune safety, failures and back-off,
// drift, restart and adoption, and recovery from a crash at every recorded step.

#include "controller/controller.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "controller/state_machine.h"
#include "tests/controller_harness.h"
#include "tests/forwarding_store.h"

namespace mvm::controller {
namespace {

using S = InstanceState;
using testing::ControllerHarness;
using ::testing::IsEmpty;
using testing::PoolYaml;
using testing::TenantYaml;

const std::string kTenant = TenantYaml("acme");

TEST(Controller, ConvergesAFreshPoolToItsDesiredCounts) {
  ControllerHarness h;
  h.Apply({kTenant, PoolYaml("acme", "web", 2, 2, 1)});
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "web"), (Counts{2, 2, 1}));
  EXPECT_EQ(h.vmm().overlaps(), 0);
  EXPECT_THAT(h.Leaks(), IsEmpty());
  auto pools = h.controller().Pools();
  ASSERT_EQ(pools.size(), 1u);
  EXPECT_EQ(pools[0].ready, 5);
  EXPECT_EQ(pools[0].conditions[0].type, "Ready");
  EXPECT_TRUE(pools[0].conditions[0].status);
}

TEST(Controller, ScaleUpResumesWarmBeforeBootingAndScaleDownDestroys) {
  ControllerHarness h;
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 2, 0)});
  ASSERT_TRUE(h.WaitConverged());
  int starts = h.vmm().calls(Action::kStart);
  h.Apply({kTenant, PoolYaml("acme", "web", 3, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "web"), (Counts{3, 0, 0}));
  EXPECT_EQ(h.vmm().calls(Action::kResume), 2);
  EXPECT_EQ(h.vmm().calls(Action::kStart), starts);  // no fresh boot was needed
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.store().ListPool("acme", "web").size(), 1u);
  EXPECT_THAT(h.Leaks(), IsEmpty());
}

TEST(Controller, QuotaRefusalIsReportedOnThePool) {
  ControllerHarness h;
  h.Apply({TenantYaml("acme", "{running: 2, vcpus: 3}"), PoolYaml("acme", "web", 5, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "web"), (Counts{2, 0, 0}));
  auto pools = h.controller().Pools();
  ASSERT_EQ(pools.size(), 1u);
  const auto& quota = pools[0].conditions[3];
  EXPECT_EQ(quota.type, "QuotaExceeded");
  EXPECT_TRUE(quota.status);
  EXPECT_EQ(quota.message, "tenant acme quota: running 3 > quota 2");
  auto events = h.store().Events("Pool", "acme/web");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().reason, "QuotaExceeded");
}

TEST(Controller, RemovedPoolIsDrainedAndPruned) {
  ControllerHarness h;
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0), PoolYaml("acme", "api", 1, 1, 0),
           PoolYaml("acme", "jobs", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0), PoolYaml("acme", "api", 1, 1, 0)});
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_TRUE(h.store().ListPool("acme", "jobs").empty());
  EXPECT_EQ(h.Count("acme", "api"), (Counts{1, 1, 0}));
  EXPECT_THAT(h.Leaks(), IsEmpty());
}

TEST(Controller, PruneOffKeepsRemovedPools) {
  Controller::Options options;
  options.prune = false;
  ControllerHarness h(options);
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0), PoolYaml("acme", "jobs", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "jobs"), (Counts{1, 0, 0}));
  EXPECT_THAT(h.controller().Warnings(),
              ::testing::Contains(::testing::HasSubstr("pruning is off")));
}

TEST(Controller, SuddenLossOfMostPoolsIsHeldBackUntilConfirmed) {
  ControllerHarness h;
  h.Apply({kTenant, PoolYaml("acme", "a", 1, 0, 0), PoolYaml("acme", "b", 1, 0, 0),
           PoolYaml("acme", "c", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  h.Apply({});  // an empty checkout
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.store().ListInstances().size(), 3u);
  EXPECT_THAT(h.controller().Warnings(),
              ::testing::Contains(::testing::HasSubstr("holding back the removal of 3 pools")));
  h.controller().ConfirmPrune();
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_TRUE(h.store().ListInstances().empty());
  EXPECT_THAT(h.Leaks(), IsEmpty());
}

// Holds up the thread that logs a message containing `text` for `pause` (spdlog's default
// logger, restored on destruction): widens a window between two steps of the code under test.
class PauseOnLog : public spdlog::sinks::base_sink<std::mutex> {
 public:
  PauseOnLog(std::string text, std::chrono::milliseconds pause)
      : text_(std::move(text)), pause_(pause) {}
  std::atomic<bool> reached{false};

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (std::string_view(msg.payload.data(), msg.payload.size()).find(text_) ==
        std::string_view::npos)
      return;
    reached = true;
    std::this_thread::sleep_for(pause_);
  }
  void flush_() override {}

 private:
  std::string text_;
  std::chrono::milliseconds pause_;
};

// A confirmation racing with a new snapshot (the operator sends SIGUSR1 just as the files come
// back) must not apply the held-back snapshot after the newer one: the removal would be held back
// again, against the restored files, and the next confirmation would prune the pools they
// restored. The confirmation is held up between reading the held-back snapshot and applying it
// (its log line), while another thread restores the pools.
TEST(Controller, ConfirmPruneNeverAppliesASnapshotOlderThanTheLatest) {
  ControllerHarness h;
  const std::vector<std::string> full = {kTenant, PoolYaml("acme", "a", 1, 0, 0),
                                         PoolYaml("acme", "b", 1, 0, 0),
                                         PoolYaml("acme", "c", 1, 0, 0)};
  h.Apply(full);
  ASSERT_TRUE(h.WaitConverged());
  h.Apply({kTenant});  // an empty checkout: held back
  ASSERT_FALSE(h.controller().Warnings().empty());
  auto restored = h.Snapshot(full);

  auto pause =
      std::make_shared<PauseOnLog>("mass removal confirmed", std::chrono::milliseconds(300));
  auto previous = spdlog::default_logger();
  auto previous_level = spdlog::get_level();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("pause", pause));
  spdlog::set_level(spdlog::level::warn);
  std::thread confirm([&] { h.controller().ConfirmPrune(); });
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!pause->reached && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const bool reached = pause->reached;
  h.ApplySnapshot(restored);  // the files are back, while the confirmation is under way
  confirm.join();
  spdlog::set_default_logger(previous);
  spdlog::set_level(previous_level);

  ASSERT_TRUE(reached) << "ConfirmPrune did not confirm the held-back removal";
  ASSERT_EQ(h.controller().Desired(), restored)
      << "the held-back snapshot was applied after the newer one";
  ASSERT_THAT(h.controller().Warnings(), IsEmpty()) << "a removal is held back again";
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "a"), (Counts{1, 0, 0}));
  EXPECT_THAT(h.Leaks(), IsEmpty());
}

TEST(Controller, RepeatedFailuresBackOffAndEndFailedWithTheReason) {
  ControllerHarness h;
  h.vmm().FailWhen([](const InstanceKey&, Action a) { return a == Action::kStart; });
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  auto instances = h.store().ListInstances();
  ASSERT_EQ(instances.size(), 1u);
  EXPECT_TRUE(instances[0].failed);
  EXPECT_GE(instances[0].failures, 5);
  EXPECT_EQ(instances[0].lastError, "start failed: injected failure");
  auto pools = h.controller().Pools();
  EXPECT_TRUE(pools[0].conditions[2].status);  // Degraded
  EXPECT_THAT(pools[0].conditions[2].message, ::testing::HasSubstr("injected failure"));
  h.vmm().FailWhen(nullptr);  // the cause is fixed: the back-off retry gets it running
  ASSERT_TRUE(h.WaitConverged());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (h.Count("acme", "web").running != 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(h.Count("acme", "web"), (Counts{1, 0, 0}));
  EXPECT_FALSE(h.store().ListInstances()[0].failed);
}

TEST(Controller, KilledVmmIsNoticedAndRestarted) {
  Controller::Options options;
  options.probePeriod = std::chrono::milliseconds(20);
  ControllerHarness h(options);
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  InstanceKey key = h.store().ListInstances()[0].key;
  int starts = h.vmm().calls(Action::kStart);
  h.vmm().Kill(key);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (h.vmm().calls(Action::kStart) == starts && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.vmm().calls(Action::kStart), starts + 1);
  EXPECT_EQ(h.Count("acme", "web"), (Counts{1, 0, 0}));
  auto events = h.store().Events("Instance", key.ToString());
  EXPECT_TRUE(std::any_of(events.begin(), events.end(),
                          [](const Event& e) { return e.reason == "VmmLost"; }));
}

TEST(Controller, RestartAdoptsLiveVmmsWithoutRebooting) {
  ControllerHarness h;
  h.Apply({kTenant, PoolYaml("acme", "web", 2, 1, 1)});
  ASSERT_TRUE(h.WaitConverged());
  int calls = h.vmm().total_calls();
  auto before = h.vmm().resources();
  h.Restart();
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.vmm().total_calls(), calls);  // nothing was started, stopped or destroyed
  auto after = h.vmm().resources();
  ASSERT_EQ(before.size(), after.size());
  for (const auto& [key, r] : before) EXPECT_EQ(after[key].pid, r.pid) << key.ToString();
  EXPECT_EQ(h.Count("acme", "web"), (Counts{2, 1, 1}));
}

// Pools reconciled by the start-up resync before the first snapshot arrives decide nothing; the
// first snapshot plans every pool, also one that left the manifests while mvmd was down (it is
// in no diff: the snapshot before it is unknown). The periodic resync (30 s) is far beyond this
// test.
TEST(Controller, PoolRemovedWhileStoppedIsPrunedOnTheFirstSnapshot) {
  ControllerHarness h;
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0), PoolYaml("acme", "jobs", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  h.Close();
  h.Open(/*give_desired=*/false);
  // The start-up resync runs with no snapshot: every pool key is taken and nothing decided.
  const auto idle_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!h.controller().Converged() && std::chrono::steady_clock::now() < idle_by) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0)});  // "jobs" left while mvmd was down
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (h.Count("acme", "jobs") != Counts{} && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(h.Count("acme", "jobs"), Counts{});
  EXPECT_EQ(h.Count("acme", "web"), (Counts{1, 0, 0}));
}

TEST(Controller, RestartRecoversInstancesWhoseVmmDiedMeanwhile) {
  ControllerHarness h;
  h.Apply({kTenant, PoolYaml("acme", "web", 2, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  h.Close();
  h.vmm().Kill(h.vmm().resources().begin()->first);
  h.Open();
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "web"), (Counts{2, 0, 0}));
  EXPECT_EQ(h.store().ListInstances().size(), 2u);
  EXPECT_THAT(h.Leaks(), IsEmpty());
}

TEST(Controller, RollingUpdateReplacesInstancesOneAtATime) {
  ControllerHarness h;
  h.Apply({kTenant, PoolYaml("acme", "web", 3, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  int max_alive = 0;
  h.vmm().OnAction([&](const InstanceKey&, Action, const auto& resources) {
    int alive = 0;
    for (const auto& [k, r] : resources) alive += r.process;
    max_alive = std::max(max_alive, alive);
  });
  h.Apply({kTenant, PoolYaml("acme", "web", 3, 0, 0, "  env: {VERSION: \"2\"}\n")});
  ASSERT_TRUE(h.WaitConverged());
  std::string hash = h.controller().Pools()[0].specHash;
  auto instances = h.store().ListPool("acme", "web");
  ASSERT_EQ(instances.size(), 3u);
  for (const auto& i : instances) EXPECT_EQ(i.specHash, hash);
  EXPECT_EQ(h.vmm().calls(Action::kDestroy), 3);
  EXPECT_LE(max_alive, 4);  // never more than one surge
  EXPECT_GE(max_alive, 3);  // never fewer than desired while rolling (checked at each action)
  EXPECT_THAT(h.Leaks(), IsEmpty());
}

// Stage() only does work ahead: a staged snapshot that never arrives, or one staged on top of a
// desired state that has moved on since, changes nothing SetDesired decides.
TEST(Controller, StagedSnapshotsChangeNothingThatIsDecided) {
  ControllerHarness h;
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  // Staged, then superseded by another snapshot: its pool never appears.
  h.controller().Stage(
      h.Snapshot({kTenant, PoolYaml("acme", "web", 1, 0, 0), PoolYaml("acme", "api", 1, 0, 0)}));
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0), PoolYaml("acme", "db", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_THAT(h.store().ListPool("acme", "api"), IsEmpty());
  EXPECT_EQ(h.Count("acme", "db"), (Counts{1, 0, 0}));
  // Staged on top of a desired state that moved on before it arrived: its diff against the old
  // one (web changed) must not be used; against the new one, cache is removed too.
  auto next =
      h.Snapshot({kTenant, PoolYaml("acme", "web", 2, 0, 0), PoolYaml("acme", "db", 1, 0, 0)});
  h.controller().Stage(next);
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 0, 0), PoolYaml("acme", "db", 1, 0, 0),
           PoolYaml("acme", "cache", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "cache"), (Counts{1, 0, 0}));
  h.ApplySnapshot(next);
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "web"), (Counts{2, 0, 0}));
  EXPECT_EQ(h.Count("acme", "db"), (Counts{1, 0, 0}));
  EXPECT_THAT(h.store().ListPool("acme", "cache"), IsEmpty());
  // Staged and then delivered, as the manifest source does it.
  auto last =
      h.Snapshot({kTenant, PoolYaml("acme", "web", 3, 0, 0), PoolYaml("acme", "db", 1, 0, 0)});
  h.controller().Stage(last);
  h.ApplySnapshot(last);
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "web"), (Counts{3, 0, 0}));
  EXPECT_THAT(h.Leaks(), IsEmpty());
}

// Counts the reads of a pool's instances (every pool plan makes one) made by one thread: the
// test's own, where Stage() and SetDesired's inline plan run (workers' plans are not counted).
class CountingStore final : public testing::ForwardingStore {
 public:
  CountingStore(std::unique_ptr<Store> real, std::atomic<int>& reads)
      : ForwardingStore(std::move(real)), reads_(reads), thread_(std::this_thread::get_id()) {}
  std::vector<Instance> ListPool(const std::string& tenant,
                                 const std::string& pool) const override {
    if (std::this_thread::get_id() == thread_) ++reads_;
    return ForwardingStore::ListPool(tenant, pool);
  }

 private:
  std::atomic<int>& reads_;
  const std::thread::id thread_;
};

// Stage() plans the pool the snapshot changes; when the snapshot arrives and nothing the plan
// was made from has changed, SetDesired applies that plan without reading the pool again; when
// the tenant's usage moved in between (another pool of the tenant grew, and nothing of this
// pool was touched), the pool is planned again. ("api" sorts first: SetDesired plans it itself.)
TEST(Controller, StagedPlanIsUsedOnlyWhileWhatItReadIsUnchanged) {
  std::atomic<int> reads{0};
  ControllerHarness h({}, [&reads](std::unique_ptr<Store> real) -> std::unique_ptr<Store> {
    return std::make_unique<CountingStore>(std::move(real), reads);
  });
  h.Apply({kTenant, PoolYaml("acme", "api", 1, 1, 0), PoolYaml("acme", "zdb", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());

  auto next =
      h.Snapshot({kTenant, PoolYaml("acme", "api", 2, 1, 0), PoolYaml("acme", "zdb", 1, 0, 0)});
  h.controller().Stage(next);
  const int after_stage = reads.load();
  ASSERT_GT(after_stage, 0) << "Stage did not plan the changed pool";
  h.ApplySnapshot(next);  // plans api on this thread: with the staged plan
  EXPECT_EQ(reads.load(), after_stage) << "the staged plan was not used";
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "api"), (Counts{2, 1, 0}));

  next = h.Snapshot({kTenant, PoolYaml("acme", "api", 3, 1, 0), PoolYaml("acme", "zdb", 1, 0, 0)});
  h.controller().Stage(next);
  // Meanwhile zdb grows (api's object is the same as before: it is not planned again).
  h.Apply({kTenant, PoolYaml("acme", "api", 2, 1, 0), PoolYaml("acme", "zdb", 2, 0, 0)});
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "zdb"), (Counts{2, 0, 0}));
  const int before_apply = reads.load();
  h.ApplySnapshot(next);
  EXPECT_GT(reads.load(), before_apply) << "a staged plan was used after the usage changed";
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "api"), (Counts{3, 1, 0}));
  EXPECT_EQ(h.Count("acme", "zdb"), (Counts{1, 0, 0}));
  EXPECT_THAT(h.Leaks(), IsEmpty());
}

// A snapshot that changes one pool has it planned by SetDesired's caller (the manifest
// watcher), not handed to a worker that first has to wake; when the plan resumes a warm VM, that
// caller makes the driver call too. Slower first steps (a new instance's Prepare) stay with the
// workers. Here the only worker is held in a driver call throughout.
TEST(Controller, SetDesiredPlansASingleChangedPoolAndMakesAQuickFirstCallItself) {
  std::mutex mu;  // before the harness: its workers may call the hook until it is gone
  std::vector<std::tuple<std::string, Action, std::thread::id>> calls;
  Controller::Options options;
  options.workers = 1;
  ControllerHarness h(options);
  // Whatever fails below, the held worker is let go and the hook removed before the harness
  // stops.
  struct Unhold {
    testing::FakeVmm& vmm;
    ~Unhold() {
      vmm.ReleaseHeld();
      vmm.OnAction(nullptr);
    }
  } unhold{h.vmm()};
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 1, 0)});
  ASSERT_TRUE(h.WaitConverged());
  h.vmm().OnAction([&](const InstanceKey& key, Action action, const auto&) {
    std::lock_guard lock(mu);
    calls.emplace_back(key.name, action, std::this_thread::get_id());
  });
  auto calls_on_this_thread = [&](const std::string& pool) {
    std::lock_guard lock(mu);
    std::vector<Action> out;
    for (const auto& [name, action, thread] : calls) {
      if (name.rfind(pool + "-", 0) == 0 && thread == std::this_thread::get_id()) {
        out.push_back(action);
      }
    }
    return out;
  };

  // A new pool: planned here, but its instance's Prepare is a worker's, which is held there. (A
  // Prepare tried on this thread is noted, not held: the test fails instead of hanging.)
  std::atomic<bool> prepared_here{false};
  h.vmm().HoldWhen([&, test = std::this_thread::get_id()](const VmmTarget& t, Action a) {
    if (t.pool != "jobs" || a != Action::kPrepare) return false;
    if (std::this_thread::get_id() != test) return true;
    prepared_here = true;
    return false;
  });
  h.Apply({kTenant, PoolYaml("acme", "web", 1, 1, 0), PoolYaml("acme", "jobs", 1, 0, 0)});
  EXPECT_EQ(h.store().ListPool("acme", "jobs").size(), 1u) << "not planned by SetDesired's caller";
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (h.vmm().in_flight() == 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_FALSE(prepared_here) << "a Prepare was made on SetDesired's thread";
  ASSERT_EQ(h.vmm().in_flight(), 1) << "the worker should be held in the jobs instance's Prepare";

  // Web scales up from its warm instance while the worker is held: planned, and the warm VM
  // resumed, by this thread; one step, no more.
  h.Apply({kTenant, PoolYaml("acme", "web", 2, 0, 0), PoolYaml("acme", "jobs", 1, 0, 0)});
  EXPECT_EQ(h.vmm().in_flight(), 1) << "the worker is still held";
  EXPECT_EQ(calls_on_this_thread("web"), std::vector<Action>{Action::kResume});
  EXPECT_EQ(h.Count("acme", "web"), (Counts{2, 0, 0}));

  h.vmm().ReleaseHeld();
  ASSERT_TRUE(h.WaitConverged());
  EXPECT_EQ(h.Count("acme", "jobs"), (Counts{1, 0, 0}));
  EXPECT_EQ(h.vmm().overlaps(), 0);
  EXPECT_THAT(h.Leaks(), IsEmpty());
}

}  // namespace
}  // namespace mvm::controller
