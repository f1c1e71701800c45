// VmmRouter: each call reaches the driver the pool's spec.runtime names, a target without a
// spec the default one, and a runtime without a driver fails with the reason it has none.

#include "runtime/vmm_router.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/fake_vmm.h"
#include "tests/test_util.h"

namespace mvm::testing {
namespace {

using controller::Action;
using controller::VmmTarget;
using manifests::Runtime;
using ::testing::HasSubstr;

struct Routed {
  FakeVmm* firecracker = nullptr;
  FakeVmm* qemu = nullptr;
  std::unique_ptr<runtime::VmmRouter> router;
};

Routed Make(bool withQemu, Runtime fallback) {
  Routed r;
  std::map<Runtime, std::unique_ptr<controller::Vmm>> drivers;
  std::map<Runtime, std::string> unavailable;
  auto fc = std::make_unique<FakeVmm>();
  r.firecracker = fc.get();
  drivers[Runtime::kFirecracker] = std::move(fc);
  if (withQemu) {
    auto q = std::make_unique<FakeVmm>();
    r.qemu = q.get();
    drivers[Runtime::kQemu] = std::move(q);
  } else {
    unavailable[Runtime::kQemu] = "qemu runtime: no executable qemu-system-x86_64 in PATH";
  }
  r.router =
      std::make_unique<runtime::VmmRouter>(std::move(drivers), std::move(unavailable), fallback);
  return r;
}

TEST(VmmRouter, EachPoolReachesTheDriverItsRuntimeNames) {
  Routed r = Make(true, Runtime::kQemu);
  EXPECT_EQ(r.router->Name(), "qemu+firecracker");
  manifests::PoolSpec fc_spec, qemu_spec;
  fc_spec.runtime = Runtime::kFirecracker;
  qemu_spec.runtime = Runtime::kQemu;
  VmmTarget a{{"acme", "fast-1"}, "fast", &fc_spec, "/nonexistent/a", {}};
  VmmTarget b{{"acme", "slow-1"}, "slow", &qemu_spec, "/nonexistent/b", {}};
  for (const VmmTarget& t : {a, b}) {
    ASSERT_TRUE(r.router->Prepare(t).ok());
    auto h = r.router->Start(t);
    ASSERT_TRUE(h.ok());
    ASSERT_TRUE(r.router->Pause(t).ok());
    ASSERT_TRUE(r.router->Sleep(t).ok());
    ASSERT_TRUE(r.router->Wake(t).ok());
    ASSERT_TRUE(r.router->Pause(t).ok());
    ASSERT_TRUE(r.router->Resume(t).ok());
    EXPECT_TRUE(r.router->Probe(t).alive);
    ASSERT_TRUE(r.router->Stop(t).ok());
  }
  for (FakeVmm* driver : {r.firecracker, r.qemu}) {
    for (Action action : {Action::kPrepare, Action::kStart, Action::kSleep, Action::kWake,
                          Action::kResume, Action::kStop}) {
      EXPECT_EQ(driver->calls(action), 1) << controller::ActionName(action);
    }
    EXPECT_EQ(driver->calls(Action::kPause), 2);
    EXPECT_EQ(driver->probes(), 1);
  }
  EXPECT_EQ(r.firecracker->resources().count(a.key), 1u);
  EXPECT_EQ(r.firecracker->resources().count(b.key), 0u);
  EXPECT_EQ(r.qemu->resources().count(b.key), 1u);
  ASSERT_TRUE(r.router->Destroy(a).ok());
  EXPECT_EQ(r.firecracker->resources().count(a.key), 0u);
  EXPECT_EQ(r.qemu->resources().count(b.key), 1u);
}

TEST(VmmRouter, TargetWithoutSpecGoesToTheDefault) {
  Routed r = Make(true, Runtime::kFirecracker);
  EXPECT_EQ(r.router->Name(), "firecracker+qemu");
  VmmTarget t{{"acme", "x-1"}, "x", nullptr, "/nonexistent/x", {}};
  ASSERT_TRUE(r.router->Destroy(t).ok());
  EXPECT_EQ(r.firecracker->calls(Action::kDestroy), 1);
  EXPECT_EQ(r.qemu->calls(Action::kDestroy), 0);
}

TEST(VmmRouter, RuntimeWithoutDriverFailsWithTheReason) {
  Routed r = Make(false, Runtime::kFirecracker);
  EXPECT_EQ(r.router->Name(), "firecracker");
  manifests::PoolSpec spec;
  spec.runtime = Runtime::kQemu;
  VmmTarget t{{"acme", "slow-1"}, "slow", &spec, "/nonexistent/s", {}};
  Status s = r.router->Prepare(t);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr("pool acme/slow asks for runtime qemu, which this "
                                           "mvmd cannot run: qemu runtime: no executable"));
  auto started = r.router->Start(t);
  ASSERT_FALSE(started.ok());
  auto probe = r.router->Probe(t);
  EXPECT_FALSE(probe.alive);
  EXPECT_THAT(probe.detail, HasSubstr("cannot run"));
  EXPECT_EQ(r.firecracker->total_calls(), 0);
}

TEST(VmmRouter, InstanceNoDriverEverRanCanStillBeStoppedAndDestroyed) {
  Routed r = Make(false, Runtime::kFirecracker);
  manifests::PoolSpec spec;
  spec.runtime = Runtime::kQemu;
  TempDir dir("mvm-router");
  VmmTarget t{{"acme", "slow-1"}, "slow", &spec, dir / "slow-1", {}};
  std::filesystem::create_directories(t.dir / "volumes");
  EXPECT_TRUE(r.router->Stop(t).ok());
  EXPECT_TRUE(r.router->Destroy(t).ok());
  EXPECT_FALSE(std::filesystem::exists(t.dir));
  // One that a qemu driver did run (a record, or a handle) is not the router's to remove.
  WriteFile(t.dir / "runtime/qemu.json", "{}");
  EXPECT_FALSE(r.router->Destroy(t).ok());
  EXPECT_TRUE(std::filesystem::exists(t.dir / "runtime/qemu.json"));
  std::filesystem::remove_all(t.dir / "runtime");
  t.handle.pid = 42;
  EXPECT_FALSE(r.router->Stop(t).ok());
}

}  // namespace
}  // namespace mvm::testing
