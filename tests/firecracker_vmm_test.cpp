// FirecrackerVmm against tests/firecracker_double (a stand-in for the firecracker binary that
// enforces the API's rules) and tests/fake_jailer.sh: every lifecycle path, directly and
// through the jailer, and the failure cases (hung socket, failed snapshot load, a guest that
// ignores Ctrl-Alt-Del, a VMM that ignores SIGTERM, a guest that never reports ready), the pool
// base snapshot (one template, starts from it, Diff sleeps, rebased wakes, spec changes, failed
// creation) and TAPs under the jailer's --netns. After every test, every request the driver
// sent is checked against Firecracker's own API description
// (../shared/firecracker/firecracker-api.yaml); a missing description FAILS.

#include "runtime/firecracker_vmm.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "runtime/cgroup.h"
#include "runtime/confinement.h"
#include "runtime/driver_util.h"
#include "runtime/files.h"
#include "runtime/process.h"
#include "tests/firecracker_api_spec.h"
#include "tests/test_util.h"

namespace mvm::testing {
namespace {

namespace fs = std::filesystem;
using controller::InstanceState;
using controller::VmmHandle;
using controller::VmmTarget;
using ::testing::HasSubstr;

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Live (non-zombie) processes whose command line contains `needle`.
std::vector<int64_t> ProcessesWith(const std::string& needle) {
  std::vector<int64_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = ReadAll(e.path() / "cmdline");
    for (char& c : cmdline) c = c == '\0' ? ' ' : c;
    if (cmdline.find(needle) == std::string::npos) continue;
    auto stat = runtime::ReadProcessStat(std::stoll(name));
    if (stat.ok() && stat->state != 'Z') out.push_back(std::stoll(name));
  }
  return out;
}

class FirecrackerVmmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("MVM_FCDOUBLE_LOG", (dir_ / "requests.jsonl").c_str(), 1);
    ::unsetenv("MVM_FCDOUBLE_MODE");
    ::setenv("MVM_FAKE_JAILER_LOG", (dir_ / "jailer.log").c_str(), 1);
    WriteFile(dir_ / "images/vmlinux", "not really a kernel");
    WriteFile(dir_ / "images/initramfs.cpio.gz", "not really an initramfs");
    WriteFile(dir_ / "images/rootfs.ext4", std::string(64 << 10, 'r'));
    spec_.runtime = manifests::Runtime::kFirecracker;
    spec_.image.kernel = (dir_ / "images/vmlinux").string();
    spec_.image.rootfs = (dir_ / "images/rootfs.ext4").string();
    spec_.image.bootArgs = "console=ttyS0 reboot=k panic=1";
    spec_.cmd = {"/app/worker", "--queue", "it's"};
    spec_.env = {{"QUEUE", "jobs"}};
    spec_.resources.vcpus = 2;
    spec_.resources.memoryMiB = 128;
    spec_.policy.gracefulStopSeconds = 5;
  }

  // Unconfined unless `confined`: the double then gets mvmd's environment (its request log and
  // failure modes); the Confined_ tests run it jailed with a clean one.
  void MakeVmm(bool jailer, bool daemonize = false, bool confined = false) {
    runtime::FirecrackerOptions o;
    o.confinement.enabled = confined;
    o.confinement.stateDir = dir_ / "jailstate";  // this test's own uid table
    o.confinement.uidFirst = 330000;
    o.confinement.uidCount = 100;
    o.confinement.cgroupSlice = slice_;
    o.binary = MVM_FC_DOUBLE;
    o.runtimeDir = run_.path();
    o.bootTimeout = std::chrono::seconds(10);
    o.apiTimeout = std::chrono::milliseconds(1000);
    o.snapshotTimeout = std::chrono::seconds(10);
    if (jailer) {
      o.useJailer = true;
      o.jailerBinary = MVM_FAKE_JAILER;
      o.jailer.chrootBase = dir_ / "jail";
      // A stand-in hierarchy: the driver makes the tenant's level there, the fake jailer nothing.
      o.jailer.cgroupRoot = dir_ / "cgroup";
      WriteFile(dir_ / "cgroup/cgroup.controllers", "cpu memory pids\n");
      o.jailer.cgroupControllers = {"cpu", "memory", "pids"};
      o.jailer.idBase = static_cast<uint32_t>(::getuid()) == 0 ? 300000 : ::getuid();
      o.jailer.idCount = ::getuid() == 0 ? 1000 : 1;
      o.jailer.daemonize = daemonize;
    }
    auto vmm = runtime::FirecrackerVmm::Create(o);
    ASSERT_TRUE(vmm.ok()) << vmm.error().message;
    vmm_ = std::move(*vmm);
  }

  // A confined direct driver whose Firecracker gets `--seccomp-filter <filter>` (mode `perms`).
  runtime::FirecrackerOptions MakeConfinedVmmWithFilter(const fs::path& filter, fs::perms perms) {
    MakeVmm(false, false, /*confined=*/true);
    runtime::FirecrackerOptions o = vmm_->options();
    o.seccompFilter = filter;
    WriteFile(filter, "seccompiler-bin output");
    fs::permissions(filter, perms);
    vmm_ = std::move(runtime::FirecrackerVmm::Create(o).value());
    return o;
  }

  // Every request the double received is valid against the API description.
  void TearDown() override {
    auto spec = FirecrackerApiSpec::Load(MVM_FC_API_YAML);
    ASSERT_TRUE(spec.ok()) << spec.error().message
                           << " (the Firecracker API description must be present in CI)";
    std::ifstream in(dir_ / "requests.jsonl");
    int checked = 0;
    for (std::string line; std::getline(in, line);) {
      auto req = runtime::ParseJsonObject(line);
      ASSERT_TRUE(req.has_value()) << line;
      Status s = spec->Check((*req)["method"].asString(), (*req)["path"].asString(),
                             (*req)["body"].asString());
      EXPECT_TRUE(s.ok()) << s.error().message;
      ++checked;
    }
    RecordProperty("requests_checked", checked);
    for (int64_t pid : ProcessesWith(dir_.path().string())) ::kill(static_cast<pid_t>(pid), 9);
    // A confined VMM a failed test left behind ends with its cgroup; the test's slice goes too.
    if (auto hierarchy = runtime::FindCgroup2Mount(); hierarchy.ok()) {
      std::error_code ec;
      for (const auto& tenant : fs::directory_iterator(*hierarchy / slice_, ec)) {
        for (const auto& leaf : fs::directory_iterator(tenant.path(), ec)) {
          if (leaf.is_directory()) (void)runtime::CgroupTree::Kill(leaf.path());
        }
        ::rmdir(tenant.path().c_str());
      }
      ::rmdir((*hierarchy / slice_).c_str());
    }
  }

  VmmTarget Target(const std::string& name, const VmmHandle& handle = {}) {
    return VmmTarget{{"acme", name}, "web", &spec_, dir_ / ("instances/" + name), handle};
  }
  runtime::FirecrackerVmm::Paths Paths(const std::string& name) {
    return vmm_->PathsFor(Target(name).dir);
  }
  std::vector<int64_t> Vmms(const std::string& name) { return ProcessesWith(Paths(name).jailId); }

  // Nothing but the prepared instance (or nothing at all) is left.
  void ExpectNoProcessOrSocket(const std::string& name) {
    EXPECT_THAT(Vmms(name), ::testing::IsEmpty());
    EXPECT_FALSE(fs::exists(Paths(name).sockets));
    EXPECT_FALSE(fs::exists(Paths(name).record));
    EXPECT_FALSE(fs::exists(dir_ / "jail/firecracker_double" / Paths(name).jailId));
  }

  // Start with the double in `mode` and a 2 s boot deadline.
  Result<VmmHandle> FailingStart(const char* mode, const VmmTarget& t) {
    MakeVmm(false);
    ::setenv("MVM_FCDOUBLE_MODE", mode, 1);
    runtime::FirecrackerOptions o = vmm_->options();
    o.bootTimeout = std::chrono::seconds(2);
    vmm_ = std::move(runtime::FirecrackerVmm::Create(o).value());
    if (Status s = vmm_->Prepare(t); !s.ok()) return s.error();
    return vmm_->Start(t);
  }

  std::vector<std::string> Requests() {
    std::vector<std::string> out;
    std::ifstream in(dir_ / "requests.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto req = runtime::ParseJsonObject(line);
      out.push_back((*req)["method"].asString() + " " + (*req)["path"].asString());
    }
    return out;
  }

  const std::string slice_ = "mvm-fctest-" + std::to_string(::getpid()) + ".slice";
  TempDir dir_{"mvm-fc"};
  TempDir run_{"mfc"};
  std::unique_ptr<runtime::FirecrackerVmm> vmm_;
  manifests::PoolSpec spec_;
};

// Boot, pause, resume, sleep, wake, metrics, stop, destroy, checking what the double saw.
void RunLifecycle(FirecrackerVmmTest& t, runtime::FirecrackerVmm& vmm, const VmmTarget& target,
                  const fs::path& console) {
  ASSERT_TRUE(vmm.Prepare(target).ok());
  auto started = vmm.Start(target);
  ASSERT_TRUE(started.ok()) << started.error().message;
  EXPECT_TRUE(runtime::IsAlive({started->pid, started->startTime}));
  auto record = runtime::ParseJsonObject(started->data);
  ASSERT_TRUE(record.has_value());
  const std::string boot_id = (*record)["bootId"].asString();
  EXPECT_EQ(boot_id.size(), 16u);

  // Probe finds the live VMM from the driver's own record, without the controller's handle.
  VmmTarget bare = target;
  bare.handle = {};
  auto probe = vmm.Probe(bare);
  EXPECT_TRUE(probe.alive) << probe.detail;
  EXPECT_EQ(probe.observed, InstanceState::kRunning);
  EXPECT_EQ(probe.handle, *started);
  // Each probe of a live VMM refreshes its metrics summary.
  EXPECT_THAT(probe.detail, HasSubstr("vcpu exits 12"));
  EXPECT_TRUE(fs::exists(vmm.PathsFor(target.dir).metricsSummary));

  VmmTarget live = target;
  live.handle = *started;
  ASSERT_TRUE(vmm.Pause(live).ok());
  EXPECT_EQ(vmm.Probe(live).observed, InstanceState::kWarm);
  ASSERT_TRUE(vmm.Resume(live).ok());
  EXPECT_EQ(vmm.Probe(live).observed, InstanceState::kRunning);
  ASSERT_TRUE(vmm.Pause(live).ok());

  Status slept = vmm.Sleep(live);
  ASSERT_TRUE(slept.ok()) << slept.error().message;
  EXPECT_FALSE(runtime::IsAlive({started->pid, started->startTime}));
  auto paths = vmm.PathsFor(target.dir);
  EXPECT_EQ(fs::file_size(paths.mem), 128u << 20);
  EXPECT_TRUE(fs::exists(paths.vmstate));
  EXPECT_FALSE(fs::exists(paths.vmstate.string() + ".partial"));
  auto asleep = vmm.Probe(live);
  EXPECT_FALSE(asleep.alive);
  EXPECT_TRUE(asleep.snapshot);
  // Repeating Sleep (a crash after the snapshot) is harmless.
  EXPECT_TRUE(vmm.Sleep(live).ok());

  auto woke = vmm.Wake(live);
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  EXPECT_NE(woke->pid, started->pid);
  EXPECT_THAT(ReadAll(console), HasSubstr("MVM-RESTORED " + boot_id));
  EXPECT_EQ((*runtime::ParseJsonObject(woke->data))["bootId"].asString(), boot_id);
  EXPECT_FALSE(fs::exists(paths.vmstate));
  live.handle = *woke;
  EXPECT_EQ(vmm.Probe(live).observed, InstanceState::kRunning);

  auto metrics = vmm.Metrics(live);
  ASSERT_TRUE(metrics.ok()) << metrics.error().message;
  EXPECT_GE(metrics->metricsLines, 1u);
  EXPECT_EQ(metrics->vcpuExits, 12u);
  EXPECT_TRUE(fs::exists(paths.metricsSummary));

  Status stopped = vmm.Stop(live);
  ASSERT_TRUE(stopped.ok()) << stopped.error().message;
  EXPECT_FALSE(runtime::IsAlive({woke->pid, woke->startTime}));
  EXPECT_TRUE(vmm.Stop(live).ok());  // idempotent
  ASSERT_TRUE(vmm.Destroy(live).ok());
  EXPECT_FALSE(fs::exists(target.dir));
  EXPECT_TRUE(vmm.Destroy(live).ok());  // idempotent
  (void)t;
}

TEST_F(FirecrackerVmmTest, Lifecycle_DirectLaunchSleepsAndWakesWithTheSameGuest) {
  MakeVmm(false);
  VmmTarget t = Target("web-1");
  RunLifecycle(*this, *vmm_, t, Paths("web-1").console);
  ExpectNoProcessOrSocket("web-1");
  auto requests = Requests();
  // The order Firecracker needs: configuration, then InstanceStart; a fresh process for load.
  EXPECT_THAT(requests, ::testing::Contains("PUT /boot-source"));
  EXPECT_THAT(requests, ::testing::Contains("PUT /snapshot/create"));
  EXPECT_THAT(requests, ::testing::Contains("PUT /snapshot/load"));
  auto load = std::find(requests.begin(), requests.end(), "PUT /snapshot/load");
  ASSERT_NE(load, requests.begin());
  EXPECT_EQ(*(load - 1), "PUT /metrics");  // only logger and metrics precede a load
  EXPECT_THAT(requests, ::testing::Contains("PUT /actions"));
}

TEST_F(FirecrackerVmmTest, Lifecycle_ThroughTheJailerBuildsAndRemovesTheJail) {
  MakeVmm(true, /*daemonize=*/true);
  VmmTarget t = Target("web-2");
  const manifests::TenantQuota quota{4, 1024, 2, 1, {}, {}};  // vcpus, MiB, running, warm
  t.tenantQuota = &quota;
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto started = vmm_->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  const fs::path jail = dir_ / "jail/firecracker_double" / Paths("web-2").jailId / "root";
  // The layout: kernel, initrd and disk linked in, the disk being the instance's own.
  struct stat disk {
  }, linked{};
  ASSERT_EQ(::stat(Paths("web-2").disk.c_str(), &disk), 0);
  ASSERT_EQ(::stat((jail / "rootfs.ext4").c_str(), &linked), 0);
  EXPECT_EQ(disk.st_ino, linked.st_ino);
  EXPECT_TRUE(fs::exists(jail / "vmlinux"));
  EXPECT_TRUE(fs::exists(jail / "initrd"));
  EXPECT_TRUE(fs::exists(jail / "run/firecracker.socket"));
  EXPECT_EQ(started->socket, (jail / "run/firecracker.socket").string());
  // The pid came from the jail's pid file.
  EXPECT_EQ(ReadAll(jail / "firecracker_double.pid"), std::to_string(started->pid) + "\n");
  // Daemonized (stdio on /dev/null): the console reached console.log through PUT /serial.
  EXPECT_THAT(Requests(), ::testing::Contains("PUT /serial"));
  EXPECT_THAT(ReadAll(Paths("web-2").console), HasSubstr("MVM-READY "));
  const std::string argv = ReadAll(dir_ / "jailer.log");
  EXPECT_THAT(argv, HasSubstr("--id " + Paths("web-2").jailId));
  EXPECT_THAT(argv, HasSubstr("--cgroup-version 2 --parent-cgroup mvm.slice/acme"));
  EXPECT_THAT(argv, HasSubstr("--cgroup cpu.max=200000\\ 100000"));
  EXPECT_THAT(argv, HasSubstr("--cgroup memory.max=" + std::to_string((128 + 64) << 20)));
  EXPECT_THAT(argv, HasSubstr("--new-pid-ns --daemonize -- --api-sock /run/firecracker.socket"));
  // The --parent-cgroup is mvm's: the tenant's level with its quota (3 VMMs' overhead).
  const fs::path tenant = dir_ / "cgroup/mvm.slice/acme";
  EXPECT_EQ(ReadAll(tenant / "cpu.max"), "400000 100000");
  EXPECT_EQ(ReadAll(tenant / "memory.max"), std::to_string((1024 + 3 * 64) << 20));
  EXPECT_EQ(ReadAll(tenant / "pids.max"), std::to_string(3 * 64));
  ASSERT_TRUE(vmm_->Stop(Target("web-2", *started)).ok());
  EXPECT_FALSE(fs::exists(jail.parent_path()));

  // The whole lifecycle, through a jailer that does not daemonize (the default).
  MakeVmm(true);
  VmmTarget t3 = Target("web-3");
  RunLifecycle(*this, *vmm_, t3, Paths("web-3").console);
  ExpectNoProcessOrSocket("web-3");
}

// The jailer's --uid comes from a persisted table (as mvm's own jail's does): two live jails
// never share a uid, and Destroy gives it back.
TEST_F(FirecrackerVmmTest, Jailer_UidsAreAllocatedFromThePersistedTableAndReleased) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root: a range of uids to hand out";
  MakeVmm(true);
  const fs::path table = dir_ / "jailstate" / "jailer-uids";
  std::set<std::string> uids;
  for (const char* name : {"web-7", "web-8"}) {
    VmmTarget t = Target(name);
    ASSERT_TRUE(vmm_->Prepare(t).ok());
    auto started = vmm_->Start(t);
    ASSERT_TRUE(started.ok()) << started.error().message;
    EXPECT_THAT(ReadAll(table), HasSubstr(Paths(name).dir.string())) << name;
    ASSERT_TRUE(vmm_->Stop(Target(name, *started)).ok());
  }
  std::istringstream log(ReadAll(dir_ / "jailer.log"));
  for (std::string line; std::getline(log, line);) {
    const auto at = line.find("--uid ");
    if (at != std::string::npos) uids.insert(line.substr(at + 6, line.find(' ', at + 6) - at - 6));
  }
  EXPECT_EQ(uids.size(), 2u) << ReadAll(dir_ / "jailer.log");
  for (const char* name : {"web-7", "web-8"}) ASSERT_TRUE(vmm_->Destroy(Target(name)).ok());
  EXPECT_THAT(ReadAll(table), ::testing::Not(HasSubstr(Paths("web-7").dir.string())));
  EXPECT_THAT(ReadAll(table), ::testing::Not(HasSubstr(Paths("web-8").dir.string())));
}

// The last PUT /snapshot/create's snapshot_type.
std::string LastSnapshotType(const fs::path& log) {
  std::ifstream in(log);
  std::string type;
  for (std::string line; std::getline(in, line);) {
    auto req = runtime::ParseJsonObject(line);
    if (!req || (*req)["path"].asString() != "/snapshot/create") continue;
    auto body = runtime::ParseJsonObject((*req)["body"].asString());
    if (body) type = (*body)["snapshot_type"].asString();
  }
  return type;
}

int CountRequests(const std::vector<std::string>& requests, const std::string& what) {
  return static_cast<int>(std::count(requests.begin(), requests.end(), what));
}

// Names in <pool>/fc-base (the pool directory of Target() is dir_).
std::vector<std::string> BaseEntries(const fs::path& pool) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(pool / "fc-base", ec), end; !ec && it != end; it.increment(ec)) {
    out.push_back(it->path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

uintmax_t AllocatedBytes(const fs::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uintmax_t>(st.st_blocks) * 512 : 0;
}

std::string BootIdOf(const VmmHandle& h) {
  return (*runtime::ParseJsonObject(h.data))["bootId"].asString();
}

TEST_F(FirecrackerVmmTest, BaseSnapshot_CreatedOnceTwoInstancesStartFromItAndSleepAsDiffs) {
  spec_.snapshot.base = true;
  for (bool jailer : {false, true}) {
    SCOPED_TRACE(jailer ? "jailer" : "direct");
    MakeVmm(jailer);
    fs::remove(dir_ / "requests.jsonl");
    const std::string a = jailer ? "web-ja" : "web-da", b = jailer ? "web-jb" : "web-db";
    VmmTarget ta = Target(a), tb = Target(b);
    ASSERT_TRUE(vmm_->Prepare(ta).ok());
    ASSERT_TRUE(vmm_->Prepare(tb).ok());
    // Two instances race for the base: one template boot, two loads.
    Result<VmmHandle> sa = Error{"not run"}, sb = Error{"not run"};
    std::thread other([&] { sb = vmm_->Start(tb); });
    sa = vmm_->Start(ta);
    other.join();
    ASSERT_TRUE(sa.ok()) << sa.error().message;
    ASSERT_TRUE(sb.ok()) << sb.error().message;
    auto requests = Requests();
    EXPECT_EQ(CountRequests(requests, "PUT /boot-source"), 1) << "one template boot";
    EXPECT_EQ(CountRequests(requests, "PUT /snapshot/load"), 2);
    auto entries = BaseEntries(dir_.path());
    ASSERT_EQ(entries.size(), 2u) << ::testing::PrintToString(entries);  // <key>, lock
    const std::string key = entries[0];
    EXPECT_EQ(entries[1], "lock");
    const fs::path base = dir_ / "fc-base" / key;
    EXPECT_TRUE(fs::exists(base / "template.json"));
    EXPECT_EQ(fs::file_size(base / "mem"), 128u << 20);
    // Both are clones of the template: its boot id, each on its own disk and vsock.
    EXPECT_EQ(BootIdOf(*sa), BootIdOf(*sb));
    EXPECT_THAT(ReadAll(Paths(a).console), HasSubstr("MVM-RESTORED " + BootIdOf(*sa)));
    if (!jailer) {
      EXPECT_THAT(ReadAll(Paths(a).console),
                  HasSubstr("vsock=" + (Paths(a).sockets / "v.sock").string()));
      EXPECT_THAT(ReadAll(Paths(b).console),
                  HasSubstr("vsock=" + (Paths(b).sockets / "v.sock").string()));
    }
    EXPECT_EQ(ReadAll(Paths(a).baseKey), key + "\n");
    EXPECT_EQ(ReadAll(Paths(b).baseKey), key + "\n");

    // Sleep: a Diff holding only the pages written since the load.
    ta.handle = *sa;
    ASSERT_TRUE(vmm_->Pause(ta).ok());
    Status slept = vmm_->Sleep(ta);
    ASSERT_TRUE(slept.ok()) << slept.error().message;
    EXPECT_EQ(LastSnapshotType(dir_ / "requests.jsonl"), "Diff");
    EXPECT_TRUE(fs::exists(Paths(a).memDiff));
    EXPECT_FALSE(fs::exists(Paths(a).mem));
    EXPECT_EQ(fs::file_size(Paths(a).memDiff), 128u << 20);
    EXPECT_LT(AllocatedBytes(Paths(a).memDiff), 1u << 20) << "only the dirty pages";
    EXPECT_TRUE(vmm_->Probe(ta).snapshot);
    // Wake: rebased onto the base (the double checks every page the guest wrote), twice, so
    // that the second Diff is merged into the first.
    for (int cycle = 1; cycle <= 2; ++cycle) {
      SCOPED_TRACE(cycle);
      auto woke = vmm_->Wake(ta);
      ASSERT_TRUE(woke.ok()) << woke.error().message;
      EXPECT_THAT(ReadAll(Paths(a).console),
                  HasSubstr("MVM-RESTORED " + BootIdOf(*sa) + " resumes=" + std::to_string(cycle)));
      EXPECT_FALSE(fs::exists(Paths(a).mem)) << "the rebased file is not kept";
      EXPECT_FALSE(fs::exists(Paths(a).vmstate));
      ta.handle = *woke;
      ASSERT_TRUE(vmm_->Pause(ta).ok());
      ASSERT_TRUE(vmm_->Sleep(ta).ok());
      EXPECT_EQ(LastSnapshotType(dir_ / "requests.jsonl"), "Diff");
    }
    auto last = vmm_->Wake(ta);
    ASSERT_TRUE(last.ok()) << last.error().message;
    EXPECT_THAT(ReadAll(Paths(a).console), HasSubstr("resumes=3"));
    ta.handle = *last;

    // The base outlives one user and goes with the last.
    ASSERT_TRUE(vmm_->Stop(ta).ok());
    ASSERT_TRUE(vmm_->Destroy(ta).ok());
    EXPECT_TRUE(fs::exists(base / "mem")) << "still used by " << b;
    ASSERT_TRUE(vmm_->Destroy(Target(b, *sb)).ok());
    EXPECT_THAT(BaseEntries(dir_.path()), ::testing::ElementsAre("lock"));
    ExpectNoProcessOrSocket(a);
    ExpectNoProcessOrSocket(b);
  }
}

TEST_F(FirecrackerVmmTest, BaseSnapshot_SpecChangeMakesANewBaseAndTheOldStaysWhileUsed) {
  spec_.snapshot.base = true;
  MakeVmm(false);
  VmmTarget ta = Target("web-a"), tb = Target("web-b");
  ASSERT_TRUE(vmm_->Prepare(ta).ok());
  ASSERT_TRUE(vmm_->Prepare(tb).ok());
  auto sa = vmm_->Start(ta);
  ASSERT_TRUE(sa.ok()) << sa.error().message;
  ta.handle = *sa;
  ASSERT_TRUE(vmm_->Pause(ta).ok());
  ASSERT_TRUE(vmm_->Sleep(ta).ok());
  const std::string old_key = ReadAll(Paths("web-a").baseKey);
  // A new image revision: a new base; the old one stays for the sleeping instance.
  WriteFile(dir_ / "images/vmlinux", "a rebuilt kernel");
  auto sb = vmm_->Start(tb);
  ASSERT_TRUE(sb.ok()) << sb.error().message;
  const std::string new_key = ReadAll(Paths("web-b").baseKey);
  EXPECT_NE(new_key, old_key);
  EXPECT_EQ(BaseEntries(dir_.path()).size(), 3u);
  EXPECT_NE(BootIdOf(*sb), BootIdOf(*sa)) << "a new template boot";
  auto woke = vmm_->Wake(ta);
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  EXPECT_EQ(BootIdOf(*woke), BootIdOf(*sa)) << "woken on the base it slept on";
  // Restarted, it moves to the new base and the old one goes.
  ASSERT_TRUE(vmm_->Stop(Target("web-a", *woke)).ok());
  auto again = vmm_->Start(ta);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(ReadAll(Paths("web-a").baseKey), new_key);
  EXPECT_EQ(BootIdOf(*again), BootIdOf(*sb));
  auto entries = BaseEntries(dir_.path());
  EXPECT_THAT(entries,
              ::testing::UnorderedElementsAre(new_key.substr(0, new_key.size() - 1), "lock"));
  ASSERT_TRUE(vmm_->Destroy(Target("web-a", *again)).ok());
  ASSERT_TRUE(vmm_->Destroy(Target("web-b", *sb)).ok());
  ExpectNoProcessOrSocket("web-a");
  ExpectNoProcessOrSocket("web-b");
}

TEST_F(FirecrackerVmmTest, BaseSnapshot_FailedCreationLeaksNothingAndSaysWhy) {
  spec_.snapshot.base = true;
  for (bool jailer : {false, true}) {
    SCOPED_TRACE(jailer ? "jailer" : "direct");
    for (const char* mode : {"no-ready", "fail-create"}) {
      SCOPED_TRACE(mode);
      MakeVmm(jailer);
      runtime::FirecrackerOptions o = vmm_->options();
      o.bootTimeout = std::chrono::seconds(2);
      vmm_ = std::move(runtime::FirecrackerVmm::Create(o).value());
      ::setenv("MVM_FCDOUBLE_MODE", mode, 1);
      VmmTarget t = Target("web-1");
      ASSERT_TRUE(vmm_->Prepare(t).ok());
      auto started = vmm_->Start(t);
      ASSERT_FALSE(started.ok());
      EXPECT_THAT(started.error().message,
                  HasSubstr("pool base snapshot: creating the pool's base"));
      EXPECT_THAT(started.error().message,
                  HasSubstr(std::string("failed at ") + (mode[0] == 'n' ? "boot" : "snapshot")));
      // No template process, socket, jail, TAP or file; no instance process either.
      EXPECT_THAT(ProcessesWith(run_.path().string()), ::testing::IsEmpty());
      EXPECT_THAT(ProcessesWith((dir_ / "jail").string()), ::testing::IsEmpty());
      EXPECT_TRUE(fs::is_empty(run_.path()));
      EXPECT_TRUE(!fs::exists(dir_ / "jail/firecracker_double") ||
                  fs::is_empty(dir_ / "jail/firecracker_double"));
      EXPECT_THAT(BaseEntries(dir_.path()), ::testing::ElementsAre("lock"));
      ExpectNoProcessOrSocket("web-1");
      ::unsetenv("MVM_FCDOUBLE_MODE");
      auto retried = vmm_->Start(t);
      ASSERT_TRUE(retried.ok()) << retried.error().message;
      ASSERT_TRUE(vmm_->Destroy(Target("web-1", *retried)).ok());
      EXPECT_THAT(BaseEntries(dir_.path()), ::testing::ElementsAre("lock"));
    }
  }
}

TEST_F(FirecrackerVmmTest, BaseSnapshot_RetriedSleepAfterAFailedDiffTakesAFullSnapshot) {
  spec_.snapshot.base = true;
  MakeVmm(false);
  VmmTarget t0 = Target("web-0"), t = Target("web-1");
  ASSERT_TRUE(vmm_->Prepare(t0).ok());
  auto first = vmm_->Start(t0);  // makes the base
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  ::setenv("MVM_FCDOUBLE_MODE", "fail-create-once", 1);
  auto started = vmm_->Start(t);
  ::unsetenv("MVM_FCDOUBLE_MODE");
  ASSERT_TRUE(started.ok()) << started.error().message;
  t.handle = *started;
  ASSERT_TRUE(vmm_->Pause(t).ok());
  Status failed = vmm_->Sleep(t);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.error().message, HasSubstr("injected failure"));
  EXPECT_FALSE(fs::exists(Paths("web-1").vmstate));
  // Firecracker may have reset its dirty bitmap: a second Diff could miss pages.
  ASSERT_TRUE(vmm_->Sleep(t).ok());
  EXPECT_EQ(LastSnapshotType(dir_ / "requests.jsonl"), "Full");
  EXPECT_FALSE(fs::exists(Paths("web-1").memDiff));
  EXPECT_EQ(fs::file_size(Paths("web-1").mem), 128u << 20);
  auto woke = vmm_->Wake(t);
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  EXPECT_THAT(ReadAll(Paths("web-1").console), HasSubstr("resumes=1"));
  ASSERT_TRUE(vmm_->Destroy(Target("web-1", *woke)).ok());
  ASSERT_TRUE(vmm_->Destroy(Target("web-0", *first)).ok());
  ExpectNoProcessOrSocket("web-1");
  ExpectNoProcessOrSocket("web-0");
}

TEST_F(FirecrackerVmmTest, Network_TapIsCreatedNamedOnWakeAndDeletedOnDestroy) {
  // In a private network namespace: the TAP never touches the host's.
  if (::unshare(CLONE_NEWNET) != 0) GTEST_SKIP() << "cannot create a network namespace (root)";
  if (!fs::exists("/dev/net/tun")) GTEST_SKIP() << "no /dev/net/tun";
  MakeVmm(false);
  runtime::FirecrackerOptions o = vmm_->options();
  o.network = true;
  vmm_ = std::move(runtime::FirecrackerVmm::Create(o).value());
  VmmTarget t = Target("web-1");
  const std::string tap = Paths("web-1").tap;
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  EXPECT_NE(::if_nametoindex(tap.c_str()), 0u) << tap;
  auto started = vmm_->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  EXPECT_THAT(ReadAll(dir_ / "requests.jsonl"), HasSubstr("\\\"host_dev_name\\\":\\\"" + tap));
  t.handle = *started;
  ASSERT_TRUE(vmm_->Pause(t).ok());
  ASSERT_TRUE(vmm_->Sleep(t).ok());
  EXPECT_NE(::if_nametoindex(tap.c_str()), 0u) << "the TAP outlives the process while Sleeping";
  auto woke = vmm_->Wake(t);
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  EXPECT_THAT(ReadAll(Paths("web-1").console), HasSubstr("eth0=" + tap));
  ASSERT_TRUE(vmm_->Destroy(Target("web-1", *woke)).ok());
  EXPECT_EQ(::if_nametoindex(tap.c_str()), 0u);
  ExpectNoProcessOrSocket("web-1");
}

// A network namespace that lives as long as this object: a thread unshares one and waits.
class ScratchNetns {
 public:
  ScratchNetns() {
    thread_ = std::thread([this] {
      std::unique_lock lock(mu_);
      ok_ = ::unshare(CLONE_NEWNET) == 0;
      path_ =
          "/proc/" + std::to_string(::getpid()) + "/task/" + std::to_string(::gettid()) + "/ns/net";
      ready_ = true;
      cv_.notify_all();
      cv_.wait(lock, [this] { return done_; });
    });
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return ready_; });
  }
  ~ScratchNetns() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  bool ok() const { return ok_; }
  const std::string& path() const { return path_; }
  // if_nametoindex(name) as seen from inside the namespace.
  unsigned IndexOf(const std::string& name) const {
    unsigned index = 0;
    std::thread([&] {
      int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0 && ::setns(fd, CLONE_NEWNET) == 0) index = ::if_nametoindex(name.c_str());
      if (fd >= 0) ::close(fd);
    }).join();
    return index;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool ready_ = false, done_ = false, ok_ = false;
  std::string path_;
  std::thread thread_;
};

TEST_F(FirecrackerVmmTest, Network_UnderTheJailersNetnsTheTapIsCreatedAndRemovedThere) {
  // mvmd's own namespace is a private one too: the host's is never touched.
  if (::unshare(CLONE_NEWNET) != 0) GTEST_SKIP() << "cannot create a network namespace (root)";
  if (!fs::exists("/dev/net/tun")) GTEST_SKIP() << "no /dev/net/tun";
  ScratchNetns tenant_ns;
  ASSERT_TRUE(tenant_ns.ok());
  MakeVmm(true);
  runtime::FirecrackerOptions o = vmm_->options();
  o.network = true;
  o.jailer.netns = tenant_ns.path();
  vmm_ = std::move(runtime::FirecrackerVmm::Create(o).value());
  VmmTarget t = Target("web-1");
  const std::string tap = Paths("web-1").tap;
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  EXPECT_NE(tenant_ns.IndexOf(tap), 0u) << "the TAP is where Firecracker runs";
  EXPECT_EQ(::if_nametoindex(tap.c_str()), 0u) << "and not in mvmd's namespace";
  ASSERT_TRUE(vmm_->Prepare(t).ok()) << "idempotent";
  auto started = vmm_->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  EXPECT_THAT(ReadAll(dir_ / "jailer.log"), HasSubstr("--netns " + tenant_ns.path()));
  ASSERT_TRUE(vmm_->Destroy(Target("web-1", *started)).ok());
  EXPECT_EQ(tenant_ns.IndexOf(tap), 0u);
  ExpectNoProcessOrSocket("web-1");
  // A namespace that does not exist is named in the error.
  o.jailer.netns = (dir_ / "no-such-netns").string();
  vmm_ = std::move(runtime::FirecrackerVmm::Create(o).value());
  Status refused = vmm_->Prepare(t);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.error().message, HasSubstr("open network namespace"));
  EXPECT_TRUE(vmm_->Destroy(t).ok());
}

TEST_F(FirecrackerVmmTest, Start_HungApiSocketFailsWithinTheDeadlineAndLeavesNothing) {
  VmmTarget t = Target("web-1");
  auto started = FailingStart("hang", t);
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(started.error().message, HasSubstr("never answered"));
  ExpectNoProcessOrSocket("web-1");
  EXPECT_TRUE(vmm_->Destroy(t).ok());
}

TEST_F(FirecrackerVmmTest, Pause_ApiThatStopsAnsweringTimesOutAndStopStillEndsTheVmm) {
  MakeVmm(false);
  ::setenv("MVM_FCDOUBLE_MODE", "hang-vm", 1);
  spec_.policy.gracefulStopSeconds = 1;
  VmmTarget t = Target("web-1");
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto started = vmm_->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  Status paused = vmm_->Pause(Target("web-1", *started));
  ASSERT_FALSE(paused.ok());
  EXPECT_THAT(paused.error().message, HasSubstr("PATCH /vm: no answer"));
  Status stopped = vmm_->Stop(Target("web-1", *started));
  EXPECT_TRUE(stopped.ok()) << stopped.error().message;
  ExpectNoProcessOrSocket("web-1");
}

TEST_F(FirecrackerVmmTest, Stop_EscalatesToSigtermThenSigkillWhenTheGuestIgnoresCtrlAltDel) {
  MakeVmm(false);
  spec_.policy.gracefulStopSeconds = 1;
  for (const char* mode : {"ignore-ctrl-alt-del", "ignore-ctrl-alt-del,ignore-sigterm"}) {
    ::setenv("MVM_FCDOUBLE_MODE", mode, 1);
    VmmTarget t = Target("web-1");
    ASSERT_TRUE(vmm_->Prepare(t).ok());
    auto started = vmm_->Start(t);
    ASSERT_TRUE(started.ok()) << started.error().message;
    Status stopped = vmm_->Stop(Target("web-1", *started));
    EXPECT_TRUE(stopped.ok()) << mode << ": " << stopped.error().message;
    EXPECT_FALSE(runtime::IsAlive({started->pid, started->startTime})) << mode;
    ExpectNoProcessOrSocket("web-1");
  }
}

TEST_F(FirecrackerVmmTest, Wake_FailedSnapshotLoadEndsTheProcessKeepsTheSnapshotAndCanBeRetried) {
  MakeVmm(true);
  VmmTarget t = Target("web-1");
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto started = vmm_->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  ASSERT_TRUE(vmm_->Pause(Target("web-1", *started)).ok());
  ASSERT_TRUE(vmm_->Sleep(Target("web-1", *started)).ok());
  ::setenv("MVM_FCDOUBLE_MODE", "fail-load", 1);
  auto woke = vmm_->Wake(Target("web-1", *started));
  ASSERT_FALSE(woke.ok());
  EXPECT_THAT(woke.error().message, HasSubstr("restore failed: PUT /snapshot/load: 400: Load "
                                              "snapshot error: injected failure"));
  ExpectNoProcessOrSocket("web-1");
  EXPECT_TRUE(vmm_->Probe(t).snapshot);
  ::unsetenv("MVM_FCDOUBLE_MODE");
  auto retried = vmm_->Wake(Target("web-1", *started));
  ASSERT_TRUE(retried.ok()) << retried.error().message;
  EXPECT_TRUE(vmm_->Destroy(Target("web-1", *retried)).ok());
  ExpectNoProcessOrSocket("web-1");
}

TEST_F(FirecrackerVmmTest, Start_GuestThatNeverReportsReadyFailsWithTheConsoleTail) {
  auto started = FailingStart("no-ready", Target("web-1"));
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(started.error().message, HasSubstr("no MVM-READY"));
  EXPECT_THAT(started.error().message, HasSubstr("--- console"));
  ExpectNoProcessOrSocket("web-1");
}

TEST_F(FirecrackerVmmTest, Api_RulesOfTheDoubleSurfaceAsFaultMessages) {
  MakeVmm(false);
  VmmTarget t = Target("web-1");
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto started = vmm_->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  runtime::FirecrackerApi api(started->socket);
  // Pre-boot-only calls are refused after InstanceStart.
  auto late = api.Call("PUT", "/boot-source", R"({"kernel_image_path":"/nope"})");
  ASSERT_FALSE(late.ok());
  EXPECT_THAT(late.error().message,
              HasSubstr("PUT /boot-source: 400: The requested operation is not supported after "
                        "starting the microVM."));
  // A snapshot needs a paused VM.
  auto snap =
      api.Call("PUT", "/snapshot/create", R"({"snapshot_path":"/tmp/x","mem_file_path":"/tmp/y"})");
  ASSERT_FALSE(snap.ok());
  EXPECT_THAT(snap.error().message, HasSubstr("must be paused"));
  // A Diff needs dirty page tracking (off for this boot).
  ASSERT_TRUE(api.Call("PATCH", "/vm", R"({"state":"Paused"})").ok());
  auto diff =
      api.Call("PUT", "/snapshot/create",
               R"({"snapshot_type":"Diff","snapshot_path":"/tmp/x","mem_file_path":"/tmp/y"})");
  ASSERT_FALSE(diff.ok());
  EXPECT_THAT(diff.error().message, HasSubstr("dirty page tracking disabled"));
  // A load needs a fresh process.
  auto load = api.Call(
      "PUT", "/snapshot/load",
      R"({"snapshot_path":"/tmp/x","mem_backend":{"backend_type":"File","backend_path":"/tmp/y"}})");
  ASSERT_FALSE(load.ok());
  EXPECT_THAT(load.error().message, HasSubstr("not allowed after configuring"));
  EXPECT_TRUE(runtime::IsAlive({started->pid, started->startTime}));
  ASSERT_TRUE(vmm_->Destroy(Target("web-1", *started)).ok());
  ExpectNoProcessOrSocket("web-1");
}

TEST_F(FirecrackerVmmTest, Start_BadInputIsRefusedWithFirecrackersMessage) {
  MakeVmm(false);
  VmmTarget t = Target("web-1");
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  fs::remove(Paths("web-1").disk);
  auto started = vmm_->Start(t);
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(started.error().message, HasSubstr("not prepared"));
  // A missing initrd is the driver's own finding, before any process exists.
  spec_.image.initrd = (dir_ / "images/missing-initrd").string();
  auto refused = vmm_->Start(t);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.error().message, HasSubstr("initrd"));
  ExpectNoProcessOrSocket("web-1");
}

TEST_F(FirecrackerVmmTest, Api_BadInputGets400WithAFaultMessage) {
  // A bare double, its requests not logged: these are deliberately invalid.
  ::unsetenv("MVM_FCDOUBLE_LOG");
  const fs::path socket = run_ / "bare.sock";
  auto id = runtime::SpawnDetached({{MVM_FC_DOUBLE, "--api-sock", socket.string(), "--id",
                                     "bare-" + run_.path().filename().string()},
                                    dir_ / "bare.log",
                                    "/",
                                    std::nullopt});
  ASSERT_TRUE(id.ok()) << id.error().message;
  runtime::FirecrackerApi api(socket.string());
  for (int i = 0; i < 200 && !api.Call("GET", "/", "").ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto state = api.State();
  ASSERT_TRUE(state.ok()) << state.error().message;
  EXPECT_EQ(*state, "Not started");
  auto drive =
      api.Call("PUT", "/drives/rootfs",
               R"({"drive_id":"rootfs","path_on_host":"/nonexistent","is_root_device":true})");
  ASSERT_FALSE(drive.ok());
  EXPECT_THAT(drive.error().message, HasSubstr("400: Unable to create the block device"));
  auto garbage = api.Call("PUT", "/machine-config", "{not json");
  ASSERT_FALSE(garbage.ok());
  EXPECT_THAT(garbage.error().message, HasSubstr("400: invalid JSON body"));
  auto unknown = api.Call("PUT", "/teleport", "{}");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.error().message, HasSubstr("400: Invalid request method and/or path"));
  auto early = api.Call("PATCH", "/vm", R"({"state":"Paused"})");
  ASSERT_FALSE(early.ok());
  EXPECT_THAT(early.error().message, HasSubstr("pre-boot"));
  EXPECT_TRUE(runtime::KillAndWait(*id, std::chrono::seconds(5)));
}

TEST_F(FirecrackerVmmTest, CommandLine_DirectAndJailed) {
  MakeVmm(false);
  auto direct = vmm_->CommandLine(Target("web-1"));
  EXPECT_THAT(direct, ::testing::ElementsAre(MVM_FC_DOUBLE, "--api-sock",
                                             (Paths("web-1").sockets / "api.sock").string(), "--id",
                                             Paths("web-1").jailId));
  MakeVmm(true);
  auto jailed = vmm_->CommandLine(Target("web-1"));
  ASSERT_GE(jailed.size(), 3u);
  EXPECT_EQ(jailed[0], MVM_FAKE_JAILER);
  EXPECT_EQ(jailed[jailed.size() - 2], "--api-sock");
}

// A field of /proc/PID/status ("Uid", "CapEff", ...), without the tab after the colon.
std::string ProcStatus(int64_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) {
      size_t at = line.find_first_not_of(" \t", field.size() + 1);
      return at == std::string::npos ? "" : line.substr(at);
    }
  }
  return "<no " + field + ">";
}

#define MVM_REQUIRE_CONFINEMENT()                                                         \
  do {                                                                                    \
    if (::geteuid() != 0) GTEST_SKIP() << "confinement needs root (namespaces, setuid)";  \
    if (!runtime::FindCgroup2Mount().ok()) GTEST_SKIP() << "needs a cgroup v2 hierarchy"; \
  } while (0)

// From the host: the VMM of `handle` runs as the instance's uid, with no capabilities,
// no_new_privs and no seccomp filter of mvm's, in namespaces and a cgroup of its own, and sees
// nothing of the host but what its jail binds.
void ExpectConfinedFirecracker(const runtime::FirecrackerVmm& vmm, const VmmTarget& target,
                               const VmmHandle& handle, const fs::path& sentinel) {
  const int64_t pid = handle.pid;
  const auto& o = vmm.options().confinement;
  runtime::UidAllocator uids(o.stateDir / "uids", o.uidFirst, o.uidCount);
  auto uid = uids.Find(vmm.PathsFor(target.dir).dir.string());
  ASSERT_TRUE(uid.ok() && uid->has_value()) << "no uid allocated for the instance";
  const std::string u = std::to_string(**uid);
  EXPECT_EQ(ProcStatus(pid, "Uid"), u + "\t" + u + "\t" + u + "\t" + u);
  EXPECT_EQ(ProcStatus(pid, "Gid"), u + "\t" + u + "\t" + u + "\t" + u);
  EXPECT_EQ(ProcStatus(pid, "Groups"), "");
  EXPECT_EQ(ProcStatus(pid, "CapEff"), "0000000000000000");
  EXPECT_EQ(ProcStatus(pid, "CapPrm"), "0000000000000000");
  EXPECT_EQ(ProcStatus(pid, "CapBnd"), "0000000000000000");
  EXPECT_EQ(ProcStatus(pid, "NoNewPrivs"), "1");
  // Firecracker installs its own filters; mvm stacks none (the double installs none either).
  EXPECT_EQ(ProcStatus(pid, "Seccomp"), "0");
  for (const char* ns : {"mnt", "pid", "ipc", "uts", "cgroup", "net"}) {
    const fs::path mine = fs::path("/proc/self/ns") / ns;
    const fs::path its = fs::path("/proc") / std::to_string(pid) / "ns" / ns;
    EXPECT_NE(fs::read_symlink(mine), fs::read_symlink(its)) << ns;
  }
  const fs::path leaf = runtime::Confiner(o).CgroupLeaf(target);
  EXPECT_THAT(runtime::CgroupTree::Procs(leaf), ::testing::Contains(pid)) << leaf;
  const fs::path root = fs::path("/proc") / std::to_string(pid) / "root";
  const auto paths = vmm.PathsFor(target.dir);
  EXPECT_TRUE(fs::exists(sentinel));
  EXPECT_FALSE(fs::exists(root / sentinel.relative_path())) << "a host file is visible";
  EXPECT_FALSE(fs::exists(root / "etc/passwd"));
  EXPECT_FALSE(fs::exists(root / paths.record.relative_path())) << "its own record is visible";
  EXPECT_TRUE(fs::exists(root / paths.disk.relative_path()));
  EXPECT_TRUE(fs::exists(root / fs::path(MVM_FC_DOUBLE).relative_path()));
  if (fs::exists("/dev/kvm")) {
    // Its /dev/kvm is a node of its own, the instance uid's; the host's stays as it was.
    struct stat kvm {
    }, host{};
    ASSERT_EQ(::stat((root / "dev/kvm").c_str(), &kvm), 0);
    ASSERT_EQ(::stat("/dev/kvm", &host), 0);
    EXPECT_TRUE(S_ISCHR(kvm.st_mode));
    EXPECT_EQ(kvm.st_rdev, host.st_rdev);
    EXPECT_EQ(kvm.st_uid, **uid);
    EXPECT_NE(host.st_uid, **uid);
  }
  auto record = runtime::ParseJsonObject(handle.data);
  ASSERT_TRUE(record.has_value());
  const Json::Value& c = (*record)["confinement"];
  EXPECT_EQ(c["uid"].asString(), u);
  EXPECT_EQ(c["cgroup"].asString(), leaf.string());
  EXPECT_THAT(c["seccomp"].asString(), HasSubstr("firecracker"));
}

TEST_F(FirecrackerVmmTest, Confined_DirectLaunchRunsJailedThroughTheWholeLifecycle) {
  MVM_REQUIRE_CONFINEMENT();
  MakeVmm(false, false, /*confined=*/true);
  TempDir secret("mvm-fc-sentinel");
  const fs::path sentinel = secret / "host-secret";
  WriteFile(sentinel, "not for guests");
  VmmTarget t = Target("web-c");
  const auto paths = Paths("web-c");
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto started = vmm_->Start(t);
  ASSERT_TRUE(started.ok()) << started.error().message;
  ExpectConfinedFirecracker(*vmm_, t, *started, sentinel);
  EXPECT_EQ((*runtime::ParseJsonObject(started->data))["confinement"]["seccomp"].asString(),
            "firecracker built-in");
  // After an mvmd restart the driver finds the confined VMM from its record alone.
  auto probe = vmm_->Probe(t);
  EXPECT_TRUE(probe.alive) << probe.detail;
  EXPECT_EQ(probe.handle, *started);
  t.handle = *started;
  ASSERT_TRUE(vmm_->Pause(t).ok());
  ASSERT_TRUE(vmm_->Resume(t).ok());
  ASSERT_TRUE(vmm_->Pause(t).ok());
  Status slept = vmm_->Sleep(t);
  ASSERT_TRUE(slept.ok()) << slept.error().message;
  const fs::path leaf = runtime::Confiner(vmm_->options().confinement).CgroupLeaf(t);
  EXPECT_FALSE(fs::exists(leaf)) << "Sleep ends the cgroup";
  EXPECT_TRUE(vmm_->Probe(t).snapshot);
  auto woke = vmm_->Wake(t);
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  ExpectConfinedFirecracker(*vmm_, t, *woke, sentinel);
  t.handle = *woke;
  EXPECT_EQ(vmm_->Probe(t).observed, InstanceState::kRunning);
  ASSERT_TRUE(vmm_->Stop(t).ok());
  EXPECT_FALSE(runtime::IsAlive({woke->pid, woke->startTime}));
  EXPECT_FALSE(fs::exists(leaf)) << "Stop ends the cgroup";
  ASSERT_TRUE(vmm_->Destroy(t).ok());
  ExpectNoProcessOrSocket("web-c");
  EXPECT_FALSE(fs::exists(leaf));
  EXPECT_FALSE(fs::exists(leaf.parent_path())) << "the tenant's cgroup goes with its last VMM";
  EXPECT_FALSE(fs::exists(t.dir)) << "the instance dir (and the jail's mount point in it)";
  const auto& o = vmm_->options().confinement;
  runtime::UidAllocator uids(o.stateDir / "uids", o.uidFirst, o.uidCount);
  EXPECT_FALSE(uids.Find(paths.dir.string())->has_value()) << "Destroy frees the uid";

  // The driver's shared lifecycle checks (metrics, repeated Sleep/Stop/Destroy) hold confined.
  RunLifecycle(*this, *vmm_, Target("web-d"), Paths("web-d").console);
  ExpectNoProcessOrSocket("web-d");
}

TEST_F(FirecrackerVmmTest, Confined_SeccompFilterFileIsBoundIntoTheJailAndPassed) {
  MVM_REQUIRE_CONFINEMENT();
  runtime::FirecrackerOptions o = MakeConfinedVmmWithFilter(
      dir_ / "filters/fc.bpf", fs::perms::owner_read | fs::perms::others_read);
  VmmTarget t = Target("web-s");
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto started = vmm_->Start(t);
  // The double exits at once when it cannot read the filter: a start proves the bind.
  ASSERT_TRUE(started.ok()) << started.error().message;
  std::string cmdline = ReadAll("/proc/" + std::to_string(started->pid) + "/cmdline");
  for (char& c : cmdline) c = c == '\0' ? ' ' : c;
  EXPECT_THAT(cmdline, HasSubstr("--seccomp-filter " + o.seccompFilter.string()));
  EXPECT_EQ((*runtime::ParseJsonObject(started->data))["confinement"]["seccomp"].asString(),
            "firecracker --seccomp-filter " + o.seccompFilter.string());
  EXPECT_TRUE(vmm_->Destroy(Target("web-s", *started)).ok());
  ExpectNoProcessOrSocket("web-s");
  o.seccompFilter = dir_ / "filters/missing.bpf";
  auto refused = runtime::FirecrackerVmm::Create(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.error().message, HasSubstr("MVM_FC_SECCOMP_FILTER"));
}

TEST_F(FirecrackerVmmTest, Confined_FailedStartLeavesNoProcessCgroupOrJail) {
  MVM_REQUIRE_CONFINEMENT();
  // A filter file only root may read: the VMM, running as the instance's uid, exits at once.
  runtime::FirecrackerOptions o =
      MakeConfinedVmmWithFilter(dir_ / "root-only.bpf", fs::perms::owner_read);
  VmmTarget t = Target("web-f");
  ASSERT_TRUE(vmm_->Prepare(t).ok());
  auto started = vmm_->Start(t);
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(started.error().message, HasSubstr("never answered (firecracker exited)"));
  EXPECT_THAT(started.error().message, HasSubstr("cannot read the seccomp filter"));
  ExpectNoProcessOrSocket("web-f");
  const fs::path leaf = runtime::Confiner(o.confinement).CgroupLeaf(t);
  EXPECT_FALSE(fs::exists(leaf)) << leaf;
  EXPECT_TRUE(vmm_->Destroy(t).ok());
}

TEST_F(FirecrackerVmmTest, CommandLine_JailerGetsIoMaxAndTheFilterInsideItsChroot) {
  MakeVmm(true);
  runtime::FirecrackerOptions o = vmm_->options();
  o.jailer.cgroupControllers = {"cpu", "memory", "pids", "io"};
  o.seccompFilter = dir_ / "fc.bpf";
  WriteFile(o.seccompFilter, "filter");
  vmm_ = std::move(runtime::FirecrackerVmm::Create(o).value());
  spec_.resources.io.readBps = 1 << 20;
  spec_.resources.io.writeIops = 50;
  VmmTarget t = Target("web-io");
  fs::create_directories(t.dir);
  auto disk = runtime::WholeDiskOf(t.dir);
  auto argv = vmm_->CommandLine(t);
  std::string line;
  for (const auto& a : argv) line += a + " ";
  if (disk.ok()) {
    EXPECT_THAT(line, HasSubstr("--cgroup io.max=" + *disk + " rbps=1048576 wiops=50 "));
  } else {
    EXPECT_THAT(line, ::testing::Not(HasSubstr("io.max"))) << "no block device, no io.max";
  }
  EXPECT_THAT(line, HasSubstr("-- --seccomp-filter /seccomp-filter.bpf --api-sock"));
  MakeVmm(false);
  o = vmm_->options();
  o.seccompFilter = dir_ / "fc.bpf";
  vmm_ = std::move(runtime::FirecrackerVmm::Create(o).value());
  auto direct = vmm_->CommandLine(t);
  ASSERT_GE(direct.size(), 2u);
  EXPECT_EQ(direct[direct.size() - 2], "--seccomp-filter");
  EXPECT_EQ(direct.back(), o.seccompFilter.string());
}

TEST(FirecrackerOptions, FromEnvReadsEveryVariableAndNamesABadOne) {
  ::setenv("MVM_FC_BINARY", "/opt/fc/firecracker", 1);
  ::setenv("MVM_FC_JAILER", "/opt/fc/jailer", 1);
  ::setenv("MVM_FC_CHROOT_BASE", "/srv/j", 1);
  ::setenv("MVM_FC_UID_BASE", "500000", 1);
  ::setenv("MVM_FC_UID_COUNT", "100", 1);
  ::setenv("MVM_FC_NETNS", "/var/run/netns/{tenant}", 1);
  ::setenv("MVM_FC_BOOT_TIMEOUT", "30", 1);
  auto o = runtime::FirecrackerOptionsFromEnv();
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->binary, "/opt/fc/firecracker");
  EXPECT_TRUE(o->useJailer);
  EXPECT_EQ(o->jailerBinary, "/opt/fc/jailer");
  EXPECT_EQ(o->jailer.chrootBase, "/srv/j");
  EXPECT_EQ(o->jailer.idBase, 500000u);
  EXPECT_EQ(o->jailer.idCount, 100u);
  EXPECT_EQ(o->jailer.netns, "/var/run/netns/{tenant}");
  EXPECT_EQ(o->bootTimeout, std::chrono::seconds(30));
  ::setenv("MVM_FC_SECCOMP_FILTER", "/etc/mvm/fc.bpf", 1);
  ::setenv("MVM_FC_JAIL", "off", 1);
  ::setenv("MVM_FC_JAIL_UIDS", "400000-400999", 1);
  o = runtime::FirecrackerOptionsFromEnv();
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->seccompFilter, "/etc/mvm/fc.bpf");
  EXPECT_FALSE(o->confinement.enabled);
  EXPECT_EQ(o->confinement.uidFirst, 400000u);
  EXPECT_EQ(o->confinement.uidCount, 1000u);
  ::setenv("MVM_FC_JAIL", "maybe", 1);
  auto bad_jail = runtime::FirecrackerOptionsFromEnv();
  ASSERT_FALSE(bad_jail.ok());
  EXPECT_THAT(bad_jail.error().message, HasSubstr("MVM_FC_JAIL"));
  for (const char* v : {"MVM_FC_SECCOMP_FILTER", "MVM_FC_JAIL", "MVM_FC_JAIL_UIDS"}) ::unsetenv(v);
  ::setenv("MVM_FC_BOOT_TIMEOUT", "soon", 1);
  auto bad = runtime::FirecrackerOptionsFromEnv();
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("MVM_FC_BOOT_TIMEOUT"));
  ::setenv("MVM_FC_JAILER", "0", 1);
  ::unsetenv("MVM_FC_BOOT_TIMEOUT");
  EXPECT_FALSE(runtime::FirecrackerOptionsFromEnv()->useJailer);
}

}  // namespace
}  // namespace mvm::testing
