// FirecrackerVmm with a real Firecracker (label e2e): the whole lifecycle of one guest from the
// image of hack/build-guest-image.sh, directly and, when a jailer is found, through it; the
// same for a pool base snapshot (two instances start from it, Sleep writes a Diff, Wake).
// Skipped, with the reason, only where no firecracker binary exists (MVM_FC_BINARY, else PATH),
// /dev/kvm is missing, or the guest image is missing. docs/firecracker.md lists what the guest
// kernel must have for Firecracker (virtio-mmio devices from the command line).

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "runtime/firecracker_vmm.h"
#include "runtime/process.h"
#include "tests/qemu_e2e.h"

namespace mvm::testing {
namespace {

using controller::InstanceState;
using controller::VmmTarget;

std::optional<std::string> Binary(const char* env, const char* name) {
  const char* v = std::getenv(env);
  auto found = runtime::FindExecutable(v && *v ? v : name);
  if (!found.ok()) return std::nullopt;
  return found->string();
}

void Lifecycle(bool jailer, bool base = false) {
  auto firecracker = Binary("MVM_FC_BINARY", "firecracker");
  if (!firecracker) GTEST_SKIP() << "no firecracker binary (MVM_FC_BINARY or PATH)";
  if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
  auto image = FindGuestImage();
  if (!image) GTEST_SKIP() << "no guest image (hack/build-guest-image.sh)";
  runtime::FirecrackerOptions o;
  o.binary = *firecracker;
  TempDir run("mfe");
  o.runtimeDir = run.path();
  o.bootTimeout = std::chrono::seconds(60);
  TempDir dir("mvm-fc-e2e");
  // Direct launches run confined as root (docs/security.md): with this test's own uid table.
  o.confinement.stateDir = dir / "jailstate";
  if (jailer) {
    auto j = Binary("MVM_FC_JAILER", "jailer");
    if (!j) GTEST_SKIP() << "no jailer binary (MVM_FC_JAILER or PATH)";
    o.useJailer = true;
    o.jailerBinary = *j;
    o.jailer.chrootBase = dir / "jail";
  }
  auto vmm = runtime::FirecrackerVmm::Create(o);
  ASSERT_TRUE(vmm.ok()) << vmm.error().message;
  manifests::PoolSpec spec;
  spec.runtime = manifests::Runtime::kFirecracker;
  spec.image.kernel = (*image / "vmlinux").string();
  spec.image.rootfs = (*image / "rootfs.ext4").string();
  spec.image.bootArgs = "console=ttyS0 reboot=k panic=1 quiet";
  spec.cmd = {"/bin/sh", "-c", "exec sleep 2147483647"};
  spec.resources.memoryMiB = 128;
  spec.policy.gracefulStopSeconds = 10;
  spec.snapshot.base = base;
  VmmTarget t{{"acme", "web-1"}, "web", &spec, dir / "instances/web-1", {}};
  ASSERT_TRUE((*vmm)->Prepare(t).ok());
  auto started = (*vmm)->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  t.handle = *started;
  // A pool base: a second instance starts from the same base, on its own disk.
  VmmTarget t2{{"acme", "web-2"}, "web", &spec, dir / "instances/web-2", {}};
  if (base) {
    ASSERT_TRUE((*vmm)->Prepare(t2).ok());
    auto second = (*vmm)->Start(t2);
    ASSERT_TRUE(second.ok()) << second.error().message;
    t2.handle = *second;
    EXPECT_EQ((*vmm)->Probe(t2).observed, InstanceState::kRunning);
  }
  ASSERT_TRUE((*vmm)->Pause(t).ok());
  EXPECT_EQ((*vmm)->Probe(t).observed, InstanceState::kWarm);
  ASSERT_TRUE((*vmm)->Resume(t).ok());
  ASSERT_TRUE((*vmm)->Pause(t).ok());
  Status slept = (*vmm)->Sleep(t);
  ASSERT_TRUE(slept.ok()) << slept.error().message;
  if (base) {
    const auto paths = (*vmm)->PathsFor(t.dir);
    EXPECT_TRUE(std::filesystem::exists(paths.memDiff)) << "a Diff of the base";
    EXPECT_FALSE(std::filesystem::exists(paths.mem));
  }
  auto woke = (*vmm)->Wake(t);
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  t.handle = *woke;
  EXPECT_EQ((*vmm)->Probe(t).observed, InstanceState::kRunning);
  auto metrics = (*vmm)->Metrics(t);
  EXPECT_TRUE(metrics.ok()) << metrics.error().message;
  Status stopped = (*vmm)->Stop(t);
  EXPECT_TRUE(stopped.ok()) << stopped.error().message;
  EXPECT_FALSE(runtime::IsAlive({woke->pid, woke->startTime}));
  EXPECT_TRUE((*vmm)->Destroy(t).ok());
  if (base) {
    EXPECT_TRUE((*vmm)->Destroy(t2).ok());
  }
}

TEST(FirecrackerE2e, FirecrackerVmm_RealGuestLifecycle) {
  Lifecycle(false);
}
TEST(FirecrackerE2e, FirecrackerVmm_RealGuestLifecycleThroughTheJailer) {
  Lifecycle(true);
}
TEST(FirecrackerE2e, FirecrackerVmm_PoolBaseSnapshotStartsSleepsAsDiffAndWakes) {
  Lifecycle(false, /*base=*/true);
}
TEST(FirecrackerE2e, FirecrackerVmm_PoolBaseSnapshotThroughTheJailer) {
  Lifecycle(true, /*base=*/true);
}

}  // namespace
}  // namespace mvm::testing
