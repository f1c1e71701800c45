// QemuVmm against real guests (label e2e): the whole lifecycle of one instance through the
// driver, the failure paths of Start, and Probe after a SIGKILL. Skipped only when qemu or the
// guest image (hack/build-guest-image.sh) is missing. Timings go to stdout.

#include "runtime/qemu_vmm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <json/reader.h>
#include <signal.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "runtime/cgroup.h"
#include "runtime/confinement.h"
#include "runtime/disk.h"
#include "runtime/files.h"
#include "runtime/qmp_client.h"
#include "tests/qemu_e2e.h"

namespace mvm::testing {
namespace {

using controller::InstanceState;
using controller::VmmHandle;
using controller::VmmTarget;
using ::testing::HasSubstr;
using Steady = std::chrono::steady_clock;

class QemuVmmTest : public ::testing::Test {
 protected:
  void SetUpVmm(const std::filesystem::path& image) {
    runtime::QemuOptions options;
    options.runtimeDir = run_.path();
    options.bootTimeout = std::chrono::seconds(120);
    options.confinement.stateDir = dir_ / "jail";  // this test's own uid table
    auto vmm = runtime::QemuVmm::Create(options);
    ASSERT_TRUE(vmm.ok()) << vmm.error().message;
    vmm_ = std::move(*vmm);
    spec_.runtime = manifests::Runtime::kQemu;
    spec_.image.kernel = (image / "vmlinux").string();
    spec_.image.rootfs = (image / "rootfs.ext4").string();
    spec_.image.bootArgs = "console=ttyS0 panic=-1 quiet";
    spec_.cmd = {"/bin/sh", "-c",
                 "printf %s \"$MVM_TEST\" >/run/mvm/kv/env; exec sleep 2147483647"};
    spec_.env = {{"MVM_TEST", "it's here"}};
    spec_.resources.memoryMiB = 128;
    spec_.policy.gracefulStopSeconds = 10;
  }
  ~QemuVmmTest() override {
    for (int64_t pid : LiveQemu(dir_.path().string())) ::kill(static_cast<pid_t>(pid), SIGKILL);
  }

  VmmTarget Target(const std::string& name, const VmmHandle& handle = {}) {
    return VmmTarget{{"acme", name}, "web", &spec_, dir_ / ("instances/" + name), handle};
  }
  std::string Ctl(const VmmHandle& handle, const std::string& line) {
    auto r = CtlRequest(CtlSocket(handle), line);
    return r.ok() ? *r : "ERROR: " + r.error().message;
  }
  Result<std::string> QmpStatus(const VmmHandle& handle) {
    auto qmp = runtime::QmpClient::Connect(handle.socket, Steady::now() + std::chrono::seconds(10));
    if (!qmp.ok()) return qmp.error();
    return qmp->QueryStatus();
  }
  // Nothing of the instance is left: no qemu, no socket directory, no instance directory.
  void ExpectNothingLeft(const std::string& name) {
    EXPECT_THAT(LiveQemu(dir_.path().string()), ::testing::IsEmpty());
    EXPECT_FALSE(std::filesystem::exists(vmm_->PathsFor(Target(name).dir).sockets));
    EXPECT_THAT(FilesUnder(run_.path()), ::testing::IsEmpty());
  }

  TempDir dir_{"mvm-qemu"};
  TempDir run_{"mq"};
  std::unique_ptr<runtime::QemuVmm> vmm_;
  manifests::PoolSpec spec_;
};

TEST_F(QemuVmmTest, QemuVmm_LifecycleKeepsGuestMemoryAcrossPauseSleepAndWake) {
  MVM_REQUIRE_QEMU(image);
  SetUpVmm(image);
  VmmTarget t = Target("web-1");
  auto paths = vmm_->PathsFor(t.dir);

  ASSERT_TRUE(vmm_->Prepare(t).ok());
  ASSERT_TRUE(vmm_->Prepare(t).ok()) << "Prepare is idempotent";
  struct stat st {};
  ASSERT_EQ(::stat(paths.disk.c_str(), &st), 0);
  EXPECT_LT(st.st_blocks * 512, st.st_size / 2) << "the disk copy is sparse";

  auto t0 = Steady::now();
  auto started = vmm_->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  double boot = Secs(Steady::now() - t0);
  VmmHandle h = *started;
  t.handle = h;
  runtime::ProcessIdentity first{h.pid, h.startTime};
  EXPECT_TRUE(runtime::IsAlive(first));
  EXPECT_TRUE(std::filesystem::exists(paths.record));
  auto probe = vmm_->Probe(t);
  EXPECT_TRUE(probe.alive) << probe.detail;
  EXPECT_EQ(probe.observed, InstanceState::kRunning);

  std::string boot_id = Ctl(h, "ping");
  ASSERT_EQ(boot_id.rfind("pong ", 0), 0u) << boot_id;
  boot_id = boot_id.substr(5);
  EXPECT_EQ(Ctl(h, "set marker 42-kept"), "");
  std::string env;
  for (int i = 0; i < 50 && env != "it's here"; ++i) {
    env = Ctl(h, "get env");
    if (env != "it's here") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(env, "it's here") << "the workload saw mvm.env";
  double up0 = std::stod(Ctl(h, "uptime"));

  t0 = Steady::now();
  ASSERT_TRUE(vmm_->Pause(t).ok());
  double pause = Secs(Steady::now() - t0);
  EXPECT_EQ(QmpStatus(h).value(), "paused");
  EXPECT_EQ(vmm_->Probe(t).observed, InstanceState::kWarm);
  t0 = Steady::now();
  ASSERT_TRUE(vmm_->Resume(t).ok());
  double resume = Secs(Steady::now() - t0);
  EXPECT_EQ(QmpStatus(h).value(), "running");
  EXPECT_EQ(Ctl(h, "get marker"), "42-kept");

  ASSERT_TRUE(vmm_->Pause(t).ok());
  t0 = Steady::now();
  Status slept = vmm_->Sleep(t);
  ASSERT_TRUE(slept.ok()) << slept.error().message;
  double sleep = Secs(Steady::now() - t0);
  EXPECT_FALSE(runtime::IsAlive(first)) << "Sleep ends the process";
  EXPECT_TRUE(std::filesystem::exists(paths.snapshot));
  EXPECT_FALSE(std::filesystem::exists(paths.snapshot.string() + ".partial"));
  EXPECT_FALSE(std::filesystem::exists(paths.sockets));
  EXPECT_THAT(LiveQemu(dir_.path().string()), ::testing::IsEmpty());
  t.handle = {};  // the controller clears the handle of a Sleeping instance
  probe = vmm_->Probe(t);
  EXPECT_FALSE(probe.alive);
  EXPECT_TRUE(probe.snapshot);
  uintmax_t state_bytes = std::filesystem::file_size(paths.snapshot);

  std::this_thread::sleep_for(std::chrono::seconds(1));
  t0 = Steady::now();
  auto woke = vmm_->Wake(t);
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  double wake = Secs(Steady::now() - t0);
  h = *woke;
  t.handle = h;
  EXPECT_NE(h.pid, first.pid);
  EXPECT_FALSE(std::filesystem::exists(paths.snapshot)) << "Wake consumes the snapshot";
  EXPECT_EQ(Ctl(h, "get marker"), "42-kept") << "guest memory survived sleep and wake";
  EXPECT_EQ(Ctl(h, "ping"), "pong " + boot_id) << "same boot, not a reboot";
  double up1 = std::stod(Ctl(h, "uptime"));
  EXPECT_GT(up1, up0) << "guest uptime went on";
  probe = vmm_->Probe(t);
  EXPECT_TRUE(probe.alive) << probe.detail;
  EXPECT_EQ(probe.observed, InstanceState::kRunning);

  t0 = Steady::now();
  ASSERT_TRUE(vmm_->Stop(t).ok());
  double stop = Secs(Steady::now() - t0);
  EXPECT_FALSE(runtime::IsAlive({h.pid, h.startTime}));
  EXPECT_FALSE(vmm_->Probe(t).alive);
  EXPECT_TRUE(std::filesystem::exists(paths.disk)) << "Stop keeps the disk";
  EXPECT_THAT(runtime::TailLines(paths.console, 50), HasSubstr("MVM-HALT poweroff"))
      << "clean shutdown";
  EXPECT_TRUE(vmm_->Stop(t).ok()) << "Stop is idempotent";

  ASSERT_TRUE(vmm_->Destroy(t).ok());
  EXPECT_FALSE(std::filesystem::exists(t.dir));
  ExpectNothingLeft("web-1");
  EXPECT_TRUE(vmm_->Destroy(t).ok()) << "Destroy is idempotent";

  std::printf(
      "{\"bootToReadyS\":%.2f,\"pauseS\":%.3f,\"resumeS\":%.3f,\"sleepS\":%.2f,"
      "\"stateBytes\":%ju,\"wakeS\":%.2f,\"stopS\":%.2f,\"guestUptimeBefore\":%.2f,"
      "\"guestUptimeAfter\":%.2f}\n",
      boot, pause, resume, sleep, state_bytes, wake, stop, up0, up1);
}

TEST_F(QemuVmmTest, QemuVmm_PrepareSizesTheDiskToDiskMiBWithoutBooting) {
  MVM_REQUIRE_QEMU(image);
  SetUpVmm(image);
  const VmmTarget t = Target("disk-1");
  const auto disk = vmm_->PathsFor(t.dir).disk;
  const uintmax_t image_bytes = std::filesystem::file_size(image / "rootfs.ext4");

  spec_.resources.diskMiB = 128;
  Status grown = vmm_->Prepare(t);
  ASSERT_TRUE(grown.ok()) << grown.error().message;
  EXPECT_EQ(std::filesystem::file_size(disk), uintmax_t{128} << 20);
  EXPECT_TRUE(runtime::IsExtFilesystem(disk));

  // Smaller than the image: a clear error, and the disk of the last good Prepare stays.
  spec_.resources.diskMiB = 1;
  Status small = vmm_->Prepare(t);
  ASSERT_FALSE(small.ok());
  EXPECT_THAT(small.error().message, HasSubstr("resources.diskMiB is 1 MiB"));
  EXPECT_THAT(small.error().message, HasSubstr("rootfs.ext4"));
  EXPECT_EQ(std::filesystem::file_size(disk), uintmax_t{128} << 20);

  spec_.resources.diskMiB = 0;
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  EXPECT_EQ(std::filesystem::file_size(disk), image_bytes) << "0: the image's size";

  ASSERT_TRUE(vmm_->Destroy(t).ok());
  EXPECT_FALSE(std::filesystem::exists(t.dir));
}

TEST_F(QemuVmmTest, QemuVmm_PoolBaseSnapshotIsIgnoredWithOneWarningPerPool) {
  MVM_REQUIRE_QEMU(image);
  SetUpVmm(image);
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  spdlog::default_logger()->sinks().push_back(sink);
  spec_.snapshot.base = true;
  ASSERT_TRUE(vmm_->Prepare(Target("base-1")).ok());
  ASSERT_TRUE(vmm_->Prepare(Target("base-2")).ok());
  spdlog::default_logger()->sinks().pop_back();
  int warnings = 0;
  for (const std::string& line : sink->last_formatted()) {
    if (line.find("asks for spec.snapshot.base, which only the firecracker driver") !=
        std::string::npos) {
      ++warnings;
      EXPECT_THAT(line, HasSubstr("pool acme/web"));
    }
  }
  EXPECT_EQ(warnings, 1) << "once per pool";
  ASSERT_TRUE(vmm_->Destroy(Target("base-1")).ok());
  ASSERT_TRUE(vmm_->Destroy(Target("base-2")).ok());
}

TEST_F(QemuVmmTest, QemuVmm_StartFailsWithConsoleTailWhenWorkloadExits) {
  MVM_REQUIRE_QEMU(image);
  SetUpVmm(image);
  spec_.cmd = {"/bin/sh", "-c", "echo workload-says-goodbye; exit 3"};
  VmmTarget t = Target("web-2");
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto started = vmm_->Start(t);
  ASSERT_FALSE(started.ok());
  const std::string& m = started.error().message;
  EXPECT_THAT(m, HasSubstr("guest never reported ready"));
  EXPECT_THAT(m, HasSubstr("the workload exited (status 3)"));
  EXPECT_THAT(m, HasSubstr("--- console (last 20 lines) ---"));
  std::printf("start error: %s\n", m.c_str());
  EXPECT_FALSE(std::filesystem::exists(vmm_->PathsFor(t.dir).record));
  ExpectNothingLeft("web-2");
  ASSERT_TRUE(vmm_->Destroy(t).ok());
  EXPECT_FALSE(std::filesystem::exists(t.dir));
}

TEST_F(QemuVmmTest, QemuVmm_BadKernelFailsClearlyAndLeavesNothing) {
  MVM_REQUIRE_QEMU(image);
  SetUpVmm(image);
  // A kernel path that does not exist: Prepare and Start name it, and create nothing.
  spec_.image.kernel = (dir_ / "no-such-vmlinux").string();
  VmmTarget t = Target("web-3");
  Status prepared = vmm_->Prepare(t);
  ASSERT_FALSE(prepared.ok());
  EXPECT_THAT(prepared.error().message, HasSubstr(spec_.image.kernel));
  EXPECT_FALSE(std::filesystem::exists(t.dir));
  auto started = vmm_->Start(t);
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(started.error().message, HasSubstr(spec_.image.kernel));

  // A kernel file qemu cannot load: qemu exits at once, Start reports qemu's own words.
  WriteFile(dir_ / "garbage-kernel", "this is not a kernel\n");
  spec_.image.kernel = (dir_ / "garbage-kernel").string();
  spec_.image.initrd = (image / "initramfs.cpio.gz").string();
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto t0 = Steady::now();
  started = vmm_->Start(t);
  ASSERT_FALSE(started.ok());
  EXPECT_LT(Secs(Steady::now() - t0), 30.0) << "an early exit is noticed without the boot timeout";
  EXPECT_THAT(started.error().message, HasSubstr("qemu exited"));
  EXPECT_THAT(started.error().message, HasSubstr("--- qemu log (tail) ---"));
  std::printf("start error: %s\n", started.error().message.c_str());
  ExpectNothingLeft("web-3");
  ASSERT_TRUE(vmm_->Destroy(t).ok());
  EXPECT_FALSE(std::filesystem::exists(t.dir));
}

TEST_F(QemuVmmTest, QemuVmm_ProbeSaysNotAliveAfterSigkill) {
  MVM_REQUIRE_QEMU(image);
  SetUpVmm(image);
  VmmTarget t = Target("web-4");
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto started = vmm_->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  t.handle = *started;
  ASSERT_TRUE(vmm_->Probe(t).alive);
  ASSERT_EQ(::kill(static_cast<pid_t>(t.handle.pid), SIGKILL), 0);
  ASSERT_TRUE(runtime::WaitForExit({t.handle.pid, t.handle.startTime}, std::chrono::seconds(10)));
  auto probe = vmm_->Probe(t);
  EXPECT_FALSE(probe.alive);
  EXPECT_THAT(probe.detail, HasSubstr("gone"));
  // A handle whose pid now names another process (same pid, other start time) is not ours.
  VmmTarget forged = t;
  forged.handle.pid = ::getpid();
  std::filesystem::remove(vmm_->PathsFor(t.dir).record);
  EXPECT_FALSE(vmm_->Probe(forged).alive);
  ASSERT_TRUE(vmm_->Destroy(forged).ok());
  EXPECT_EQ(::kill(::getpid(), 0), 0) << "Destroy never signals a process that is not its own";
  ExpectNothingLeft("web-4");
}

// /proc/PID/status field `key` (whitespace trimmed).
std::string ProcStatus(int64_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) {
      std::string v = line.substr(key.size() + 1);
      return v.erase(0, v.find_first_not_of(" \t"));
    }
  }
  return {};
}

// The live qemu runs confined as its handle says: its uid, no capabilities, seccomp filter mode,
// its own namespaces, in its cgroup leaf.
void ExpectConfined(const VmmHandle& h, const std::string& profile) {
  Json::Value data;
  std::istringstream(h.data) >> data;
  const Json::Value& c = data["confinement"];
  ASSERT_TRUE(c.isObject()) << h.data;
  EXPECT_EQ(c["seccomp"].asString(), profile);
  const std::string uid = std::to_string(c["uid"].asUInt());
  EXPECT_GE(c["uid"].asUInt(), 200000u);
  EXPECT_EQ(ProcStatus(h.pid, "Uid"), uid + "\t" + uid + "\t" + uid + "\t" + uid);
  for (const char* cap : {"CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(ProcStatus(h.pid, cap), "0000000000000000") << cap;
  }
  EXPECT_EQ(ProcStatus(h.pid, "Seccomp"), "2");
  EXPECT_EQ(ProcStatus(h.pid, "NoNewPrivs"), "1");
  EXPECT_NE(std::filesystem::read_symlink("/proc/self/ns/mnt"),
            std::filesystem::read_symlink("/proc/" + std::to_string(h.pid) + "/ns/mnt"));
  // Each limit's controller is either enforced or reported missing, never silently dropped.
  auto tree = runtime::CgroupTree::OnHost();
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  std::vector<std::string> have = tree->Controllers();
  std::string missing;
  for (const auto& m : c["cgroupMissing"]) missing += m.asString() + " ";
  for (std::string controller : {"cpu", "memory", "pids"}) {
    bool present = std::find(have.begin(), have.end(), controller) != have.end();
    EXPECT_NE(present, missing.find(controller + " ") != std::string::npos) << controller;
  }
  std::vector<int64_t> procs = runtime::CgroupTree::Procs(c["cgroup"].asString());
  EXPECT_NE(std::find(procs.begin(), procs.end(), h.pid), procs.end()) << c["cgroup"].asString();
}

TEST_F(QemuVmmTest, QemuVmm_StrictSeccompGuestRunsConfinedThroughItsWholeLifecycle) {
  MVM_REQUIRE_QEMU(image);
  if (::geteuid() != 0) GTEST_SKIP() << "confinement needs root (namespaces, cgroups, setuid)";
  if (!runtime::FindCgroup2Mount().ok()) GTEST_SKIP() << "needs a cgroup v2 hierarchy mounted";
  SetUpVmm(image);
  spec_.security.seccomp = "strict";
  VmmTarget t = Target("web-5");
  auto paths = vmm_->PathsFor(t.dir);
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto started = vmm_->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  t.handle = *started;
  ExpectConfined(t.handle, "strict");
  const std::filesystem::path leaf = runtime::Confiner(vmm_->options().confinement).CgroupLeaf(t);
  EXPECT_EQ(leaf.filename(), "web-5");
  EXPECT_EQ(leaf.parent_path().filename(), "acme");
  struct stat st {};
  ASSERT_EQ(::stat(t.dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(std::to_string(st.st_uid) + "\t", ProcStatus(t.handle.pid, "Uid").substr(0, 7))
      << "the instance directory belongs to the instance's uid";
  EXPECT_EQ(Ctl(t.handle, "set marker strict"), "");

  ASSERT_TRUE(vmm_->Pause(t).ok());
  ASSERT_TRUE(vmm_->Resume(t).ok());
  ASSERT_TRUE(vmm_->Pause(t).ok());
  Status slept = vmm_->Sleep(t);
  ASSERT_TRUE(slept.ok()) << slept.error().message;
  EXPECT_FALSE(std::filesystem::exists(leaf)) << "Sleep ends the cgroup";
  t.handle = {};
  auto woke = vmm_->Wake(t);
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  t.handle = *woke;
  ExpectConfined(t.handle, "strict");
  EXPECT_EQ(Ctl(t.handle, "get marker"), "strict");
  EXPECT_TRUE(runtime::IsAlive({t.handle.pid, t.handle.startTime})) << "strict let it run";

  ASSERT_TRUE(vmm_->Stop(t).ok());
  EXPECT_THAT(runtime::TailLines(paths.console, 50), HasSubstr("MVM-HALT poweroff"));
  EXPECT_FALSE(std::filesystem::exists(leaf));
  ASSERT_TRUE(vmm_->Destroy(t).ok());
  runtime::UidAllocator uids(vmm_->options().confinement.stateDir / "uids", 200000, 65536);
  EXPECT_FALSE(uids.Find(paths.dir.string())->has_value()) << "Destroy frees the uid";
  ExpectNothingLeft("web-5");
}

TEST_F(QemuVmmTest, QemuVmm_SeccompKillOfTheVmmIsReportedWithTheCall) {
  MVM_REQUIRE_QEMU(image);
  if (::geteuid() != 0) GTEST_SKIP() << "confinement needs root (namespaces, cgroups, setuid)";
  if (!runtime::FindCgroup2Mount().ok()) GTEST_SKIP() << "needs a cgroup v2 hierarchy mounted";
  SetUpVmm(image);
  // A "qemu" compromised at once: tests/jail_attacker calls ptrace when given a VMM's argv.
  runtime::QemuOptions options = vmm_->options();
  options.binary = MVM_JAIL_ATTACKER;
  auto attacker = runtime::QemuVmm::Create(options);
  ASSERT_TRUE(attacker.ok()) << attacker.error().message;
  VmmTarget t = Target("web-6");
  ASSERT_TRUE((*attacker)->Prepare(t).ok());
  auto started = (*attacker)->Start(t);
  ASSERT_FALSE(started.ok());
  const std::string& message = started.error().message;
  std::printf("start error: %s\n", message.c_str());
  EXPECT_THAT(message, HasSubstr("exited"));
  EXPECT_THAT(message, HasSubstr("before ptrace")) << "the VMM's own log is in the error";
  EXPECT_THAT(message, ::testing::Not(HasSubstr("after ptrace"))) << "ptrace never returned";
  ASSERT_TRUE((*attacker)->Destroy(t).ok());
  EXPECT_FALSE(std::filesystem::exists(runtime::Confiner(options.confinement).CgroupLeaf(t)));
  // The kernel names the call only while auditing is on (docs/security.md).
  if (message.find("killed by seccomp") == std::string::npos) {
    GTEST_SKIP() << "the kernel logs no seccomp kills here (auditing off): " << message;
  }
  EXPECT_THAT(message, HasSubstr("killed by seccomp: the pool's profile forbids ptrace"));
}

}  // namespace
}  // namespace mvm::testing
