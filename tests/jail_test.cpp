// Confinement of VMM processes, tested as an attacker would: tests/jail_attacker runs inside the
// jail that runtime/process.h + runtime/jail.h build and reports what it could reach; the tests
// also look at it from outside (/proc/PID/status, cgroup.procs). Real namespaces, cgroups and
// seccomp: they need root and skip (saying so) without it.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "runtime/cgroup.h"
#include "runtime/confinement.h"
#include "runtime/jail.h"
#include "runtime/process.h"
#include "runtime/seccomp_profile.h"
#include "tests/test_util.h"

#ifndef MVM_JAIL_ATTACKER
#error "MVM_JAIL_ATTACKER must name the attacker binary"
#endif

namespace mvm::runtime {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using mvm::testing::TempDir;

std::string Slurp(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The value after "Key:" in /proc/PID/status (whitespace trimmed).
std::string StatusField(int64_t pid, const std::string& key) {
  std::istringstream in(Slurp("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) {
      std::string v = line.substr(key.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return {};
}

// The names an "ls DIR a b c" line lists.
std::set<std::string> Names(const std::string& line) {
  std::istringstream in(line);
  std::string word;
  in >> word >> word;  // "ls", DIR
  std::set<std::string> out;
  while (in >> word) out.insert(word);
  return out;
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

#define MVM_REQUIRE_ROOT()                                                               \
  do {                                                                                   \
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, cgroups, setuid)";    \
    if (!FindCgroup2Mount().ok()) GTEST_SKIP() << "needs a cgroup v2 hierarchy mounted"; \
  } while (0)

// One jailed attacker: a uid, an instance dir owned by it, a cgroup leaf, a log.
class Jailed {
 public:
  Jailed(const fs::path& base, const std::string& tenant, const std::string& name, uint32_t uid)
      : tenant_(tenant), name_(name), uid_(uid) {
    dir_ = base / tenant / name;
    root_ = base / (tenant + "-" + name + ".root");
    fs::create_directories(dir_);
    fs::create_directories(root_);
    ::chown(dir_.c_str(), uid, uid);
    ::chmod(dir_.c_str(), 0700);
    log_ = base / (tenant + "-" + name + ".log");
  }
  ~Jailed() {
    if (!leaf_.empty()) (void)CgroupTree::Kill(leaf_);
    if (!id_.empty()) KillAndWait(id_, 5s);
  }

  JailSpec Spec(SeccompProfile profile = SeccompProfile::kBaseline) {
    JailSpec spec;
    spec.root = root_;
    AddUsrSystem(spec);
    spec.binds.push_back({MVM_JAIL_ATTACKER, MVM_JAIL_ATTACKER, false});
    spec.binds.push_back({dir_, dir_, true});
    spec.devices = {"/dev/null", "/dev/urandom"};
    spec.uid = spec.gid = uid_;
    spec.hostname = name_;
    spec.workDir = dir_;
    auto filter = BuildSeccompFilter(profile);
    EXPECT_TRUE(filter.ok()) << filter.error().message;
    if (filter.ok()) spec.seccomp = *filter;
    return spec;
  }

  // Spawns the attacker with `probes`, in a fresh cgroup leaf of the host's hierarchy.
  Result<ProcessIdentity> Spawn(JailSpec spec, std::vector<std::string> probes) {
    auto tree = CgroupTree::OnHost();
    if (!tree.ok()) return tree.error();
    auto leaf = tree->Create("jailtest-" + tenant_, name_ + "-" + std::to_string(::getpid()), {});
    if (!leaf.ok()) return leaf.error();
    leaf_ = leaf->path;
    spec.cgroup = leaf_;
    std::vector<std::string> argv = {MVM_JAIL_ATTACKER};
    argv.insert(argv.end(), probes.begin(), probes.end());
    SpawnOptions options{argv, log_, "/", std::move(spec)};
    auto id = SpawnDetached(options);
    if (id.ok()) id_ = *id;
    return id;
  }

  // Waits until the log has a line starting with `prefix`; returns that line.
  std::string Line(const std::string& prefix, std::chrono::milliseconds timeout = 10s) {
    std::string found;
    WaitFor(
        [&] {
          std::istringstream in(Slurp(log_));
          for (std::string line; std::getline(in, line);) {
            if (line.rfind(prefix, 0) == 0) {
              found = line;
              return true;
            }
          }
          return false;
        },
        timeout);
    return found;
  }
  std::string Log() const { return Slurp(log_); }

  const fs::path& dir() const { return dir_; }
  const fs::path& leaf() const { return leaf_; }
  const ProcessIdentity& id() const { return id_; }

 private:
  std::string tenant_, name_;
  uint32_t uid_;
  fs::path dir_, root_, log_, leaf_;
  ProcessIdentity id_;
};

TEST(Cgroup, FindsTheV2HierarchyInMountinfo) {
  TempDir tmp("mvm-cg");
  mvm::testing::WriteFile(tmp / "mountinfo",
                          "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
                          "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw\n"
                          "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 "
                          "cgroup2 rw\n");
  auto found = FindCgroup2Mount(tmp / "mountinfo");
  ASSERT_TRUE(found.ok()) << found.error().message;
  EXPECT_EQ(*found, "/sys/fs/cgroup/unified");
  mvm::testing::WriteFile(tmp / "none",
                          "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw\n");
  EXPECT_FALSE(FindCgroup2Mount(tmp / "none").ok());
}

TEST(Cgroup, WritesPoolLimitsWhereTheControllersExist) {
  // A scratch directory standing in for a hierarchy that has every controller.
  TempDir tmp("mvm-cg");
  mvm::testing::WriteFile(tmp / "cgroup.controllers", "cpuset cpu io memory hugetlb pids\n");
  CgroupTree tree(tmp.path());
  CgroupLimits limits;
  limits.cpuQuotaUs = 200000;
  limits.memoryMaxBytes = 384ll << 20;
  limits.pidsMax = 512;
  limits.ioMax = {"8:0 rbps=1048576 wbps=1048576"};
  CgroupLimits tenant;
  tenant.memoryMaxBytes = 8ll << 30;
  auto leaf = tree.Create("acme", "workers-1", limits, tenant);
  ASSERT_TRUE(leaf.ok()) << leaf.error().message;
  EXPECT_TRUE(leaf->missing.empty());
  EXPECT_EQ(leaf->path, tmp / "mvm.slice" / "acme" / "workers-1");
  EXPECT_EQ(Slurp(leaf->path / "cpu.max"), "200000 100000");
  EXPECT_EQ(Slurp(leaf->path / "memory.max"), std::to_string(384ll << 20));
  EXPECT_EQ(Slurp(leaf->path / "memory.swap.max"), "0");
  EXPECT_EQ(Slurp(leaf->path / "pids.max"), "512");
  EXPECT_EQ(Slurp(leaf->path / "io.max"), "8:0 rbps=1048576 wbps=1048576");
  EXPECT_EQ(Slurp(tmp / "mvm.slice" / "acme" / "memory.max"), std::to_string(8ll << 30));
  EXPECT_FALSE(fs::exists(tmp / "mvm.slice" / "acme" / "cpu.max"));  // no tenant cpu limit
}

TEST(Cgroup, ReportsControllersTheHierarchyLacks) {
  MVM_REQUIRE_ROOT();
  auto tree = CgroupTree::OnHost();
  if (!tree.ok()) GTEST_SKIP() << "no cgroup v2 hierarchy: " << tree.error().message;
  CgroupLimits limits;
  limits.cpuQuotaUs = 100000;
  limits.memoryMaxBytes = 256ll << 20;
  limits.pidsMax = 64;
  auto leaf = tree->Create("jailtest", "missing-" + std::to_string(::getpid()), limits);
  ASSERT_TRUE(leaf.ok()) << leaf.error().message;
  std::vector<std::string> have = tree->Controllers();
  for (const char* c : {"cpu", "memory", "pids"}) {
    bool present = std::find(have.begin(), have.end(), c) != have.end();
    bool reported = std::find(leaf->missing.begin(), leaf->missing.end(), c) != leaf->missing.end();
    EXPECT_NE(present, reported) << c;
    if (present) {
      EXPECT_TRUE(fs::exists(leaf->path / (std::string(c) + ".max"))) << c;
    }
  }
  EXPECT_TRUE(CgroupTree::Kill(leaf->path).ok());
  EXPECT_FALSE(fs::exists(leaf->path));
}

TEST(Confiner, WritesThePoolsLimitsAndOwnsTheInstanceFiles) {
  MVM_REQUIRE_ROOT();
  TempDir tmp("mvm-confine");
  // A stand-in hierarchy with every controller, so each limit file can be checked.
  mvm::testing::WriteFile(tmp / "cg" / "cgroup.controllers", "cpu io memory pids\n");
  ConfinementOptions options;
  options.enabled = true;
  options.stateDir = tmp / "state";
  options.cgroupHierarchy = tmp / "cg";
  options.uidFirst = 320000;
  options.uidCount = 10;
  manifests::PoolSpec spec;
  spec.resources.vcpus = 2;
  spec.resources.memoryMiB = 512;
  spec.security.seccomp = "strict";
  controller::VmmTarget target{{"acme", "web-1"}, "web", &spec, tmp / "inst", {}};
  // The tenant's quota becomes the tenant directory's limits (overhead per VMM: 3 VMMs).
  manifests::TenantQuota quota;
  quota.vcpus = 4;
  quota.memoryMiB = 2048;
  quota.running = 2;
  quota.warm = 1;
  target.tenantQuota = &quota;
  fs::create_directories(tmp / "inst" / "volumes");
  mvm::testing::WriteFile(tmp / "inst" / "volumes" / "disk", "x");
  fs::create_directories(tmp / "inst" / "jail");
  mvm::testing::WriteFile(tmp / "kernel", "k");

  Confiner confiner(options);
  ConfineRequest request;
  request.target = &target;
  request.instanceDir = tmp / "inst";
  request.jailRoot = tmp / "inst" / "jail";
  request.readOnly = {tmp / "kernel"};
  request.writable = {tmp / "inst" / "volumes"};
  request.devices = {"/dev/null"};
  auto c = confiner.Confine(request);
  ASSERT_TRUE(c.ok()) << c.error().message;
  const fs::path leaf = tmp / "cg" / "mvm.slice" / "acme" / "web-1";
  EXPECT_EQ(confiner.CgroupLeaf(target), leaf);
  EXPECT_EQ(Slurp(leaf / "cpu.max"), "200000 100000");
  EXPECT_EQ(Slurp(leaf / "memory.max"), std::to_string((512ll + 256) << 20));
  EXPECT_EQ(Slurp(leaf / "memory.swap.max"), "0");
  EXPECT_EQ(Slurp(leaf / "pids.max"), "1024");
  EXPECT_EQ(c->jail.cgroup, leaf);
  EXPECT_EQ(c->jail.uid, 320000u);
  EXPECT_FALSE(c->jail.seccomp.empty());
  EXPECT_EQ(c->describe["uid"].asUInt(), 320000u);
  EXPECT_EQ(c->describe["seccomp"].asString(), "strict");
  EXPECT_EQ(c->describe["cgroup"].asString(), leaf.string());
  EXPECT_EQ(c->describe["cgroupMissing"].size(), 0u);
  EXPECT_EQ(c->describe["cgroupLimits"].size(), 8u);  // 4 of the leaf, 4 of the tenant
  const fs::path tenant_dir = leaf.parent_path();
  EXPECT_EQ(Slurp(tenant_dir / "cpu.max"), "400000 100000");
  EXPECT_EQ(Slurp(tenant_dir / "memory.max"), std::to_string((2048ll + 3 * 256) << 20));
  EXPECT_EQ(Slurp(tenant_dir / "memory.swap.max"), "0");
  EXPECT_EQ(Slurp(tenant_dir / "pids.max"), std::to_string(3 * 1024));
  for (const fs::path& p :
       {tmp / "inst", tmp / "inst" / "volumes", tmp / "inst" / "volumes" / "disk"}) {
    struct stat st {};
    ASSERT_EQ(::stat(p.c_str(), &st), 0) << p;
    EXPECT_EQ(st.st_uid, 320000u) << p;
    EXPECT_EQ(st.st_mode & 0777, fs::is_directory(p) ? 0700u : 0600u) << p;
  }
  // The same instance gets the same uid again; an unknown profile is refused by name.
  EXPECT_EQ(confiner.Confine(request)->jail.uid, 320000u);
  spec.security.seccomp = "lenient";
  auto bad = confiner.Confine(request);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("spec.security.seccomp"), std::string::npos);
}

// "MAJ:MIN" of the file system holding `path`.
std::string DeviceOf(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "";
  return std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
}

TEST(Cgroup, IoMaxGoesToTheWholeDiskOfAPartition) {
  TempDir tmp("mvm-io");
  const std::string dev = DeviceOf(tmp.path());
  if (dev.rfind("0:", 0) == 0) GTEST_SKIP() << "the temp dir is on no block device (" << dev << ")";
  // A stand-in /sys/dev/block where the temp dir's device is partition 2 of a disk 259:7.
  const fs::path sys = tmp / "sys";
  mvm::testing::WriteFile(sys / "devices/block/nvme9n1/dev", "259:7\n");
  mvm::testing::WriteFile(sys / "devices/block/nvme9n1/nvme9n1p2/partition", "2\n");
  fs::create_directories(sys / "dev/block");
  fs::create_symlink("../../devices/block/nvme9n1/nvme9n1p2", sys / "dev/block" / dev);
  auto disk = WholeDiskOf(tmp.path(), sys / "dev/block");
  ASSERT_TRUE(disk.ok()) << disk.error().message;
  EXPECT_EQ(*disk, "259:7");
  // A whole disk is its own answer.
  fs::remove(sys / "devices/block/nvme9n1/nvme9n1p2/partition");
  EXPECT_EQ(WholeDiskOf(tmp.path(), sys / "dev/block").value(), dev);
  // A device sysfs does not list, and a file system on no block device, are named errors.
  fs::remove(sys / "dev/block" / dev);
  auto unlisted = WholeDiskOf(tmp.path(), sys / "dev/block");
  ASSERT_FALSE(unlisted.ok());
  EXPECT_NE(unlisted.error().message.find("is not in"), std::string::npos);
  auto proc = WholeDiskOf("/proc");
  ASSERT_FALSE(proc.ok());
  EXPECT_NE(proc.error().message.find("no block device"), std::string::npos);
  // On this host's sysfs the answer is a whole disk that sysfs lists.
  auto real = WholeDiskOf(tmp.path());
  ASSERT_TRUE(real.ok()) << real.error().message;
  EXPECT_TRUE(fs::exists(fs::path("/sys/dev/block") / *real));
  EXPECT_FALSE(fs::exists(fs::path("/sys/dev/block") / *real / "partition"));
}

TEST(Confiner, WritesThePoolsIoMaxOrReportsWhyNot) {
  MVM_REQUIRE_ROOT();
  TempDir tmp("mvm-confine-io");
  manifests::PoolSpec spec;
  spec.resources.io.readBps = 10 << 20;
  spec.resources.io.writeIops = 200;
  controller::VmmTarget target{{"acme", "web-io"}, "web", &spec, tmp / "inst", {}};
  fs::create_directories(tmp / "inst" / "runtime" / "jail");
  ConfinementOptions options;
  options.enabled = true;
  options.stateDir = tmp / "state";
  options.uidFirst = 321000;
  options.uidCount = 10;
  ConfineRequest request = VmmConfineRequest(target, tmp / "inst", tmp / "inst" / "disk");
  EXPECT_EQ(request.jailRoot, tmp / "inst" / "runtime" / "jail");

  // A hierarchy with io: one io.max line for the disk that holds the instance directory.
  mvm::testing::WriteFile(tmp / "cg" / "cgroup.controllers", "cpu io memory pids\n");
  options.cgroupHierarchy = tmp / "cg";
  auto c = Confiner(options).Confine(request);
  ASSERT_TRUE(c.ok()) << c.error().message;
  const fs::path leaf = tmp / "cg" / "mvm.slice" / "acme" / "web-io";
  auto disk = WholeDiskOf(tmp / "inst");
  if (disk.ok()) {
    EXPECT_EQ(Slurp(leaf / "io.max"), *disk + " rbps=10485760 wiops=200");
    EXPECT_EQ(c->describe["cgroupMissing"].size(), 0u);
  } else {
    EXPECT_FALSE(fs::exists(leaf / "io.max"));
    ASSERT_EQ(c->describe["cgroupMissing"].size(), 1u);
    EXPECT_EQ(c->describe["cgroupMissing"][0].asString(), disk.error().message);
  }
  // Without the io controller the limit is reported missing, not dropped.
  mvm::testing::WriteFile(tmp / "cg2" / "cgroup.controllers", "cpu memory pids\n");
  options.cgroupHierarchy = tmp / "cg2";
  auto without = Confiner(options).Confine(request);
  ASSERT_TRUE(without.ok()) << without.error().message;
  std::set<std::string> missing;
  for (const auto& m : without->describe["cgroupMissing"]) missing.insert(m.asString());
  EXPECT_EQ(missing.count(disk.ok() ? "io" : disk.error().message), 1u);
  EXPECT_FALSE(fs::exists(tmp / "cg2" / "mvm.slice" / "acme" / "web-io" / "io.max"));
  // No io limits in the pool: no io.max at all.
  spec.resources.io = {};
  options.cgroupHierarchy = tmp / "cg3";
  mvm::testing::WriteFile(tmp / "cg3" / "cgroup.controllers", "io\n");
  ASSERT_TRUE(Confiner(options).Confine(request).ok());
  EXPECT_FALSE(fs::exists(tmp / "cg3" / "mvm.slice" / "acme" / "web-io" / "io.max"));
}

TEST(Confiner, RootOnlyDevicesGetANodeOfTheInstancesOwn) {
  MVM_REQUIRE_ROOT();
  TempDir tmp("mvm-confine-dev");
  manifests::PoolSpec spec;
  controller::VmmTarget target{{"acme", "web-dev"}, "web", &spec, tmp / "inst", {}};
  ConfinementOptions options;
  options.enabled = true;
  options.stateDir = tmp / "state";
  options.uidFirst = 322000;
  options.uidCount = 10;
  mvm::testing::WriteFile(tmp / "cg" / "cgroup.controllers", "\n");
  options.cgroupHierarchy = tmp / "cg";
  ConfineRequest request = VmmConfineRequest(target, tmp / "inst", tmp / "inst" / "disk");
  request.ownedDevices = {"/dev/null"};  // stands in for /dev/kvm: any character device
  struct stat before {};
  ASSERT_EQ(::stat("/dev/null", &before), 0);
  auto c = Confiner(options).Confine(request);
  ASSERT_TRUE(c.ok()) << c.error().message;
  const fs::path node = tmp / "inst" / "runtime" / "dev" / "null";
  struct stat st {};
  ASSERT_EQ(::stat(node.c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, before.st_rdev);
  EXPECT_EQ(st.st_uid, 322000u);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  bool bound = false;
  for (const auto& b : c->jail.binds) {
    if (b.source == node && b.target == "/dev/null" && b.device) bound = true;
  }
  EXPECT_TRUE(bound) << "the node is bound at the device's path, as a device";
  struct stat after {};
  ASSERT_EQ(::stat("/dev/null", &after), 0);
  EXPECT_EQ(after.st_uid, before.st_uid) << "the host's node is never re-owned";
  EXPECT_EQ(after.st_mode, before.st_mode);
  request.ownedDevices = {tmp / "inst" / "disk"};
  mvm::testing::WriteFile(tmp / "inst" / "disk", "x");
  auto refused = Confiner(options).Confine(request);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("is not a device node"), std::string::npos);
}

TEST(UidAllocator, OneUidPerOwnerPersistedAndReleased) {
  TempDir tmp("mvm-uid");
  UidAllocator a(tmp / "uids", 300000, 3);
  auto x = a.Acquire("/i/x");
  auto y = a.Acquire("/i/y");
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_NE(*x, *y);
  EXPECT_EQ(*a.Acquire("/i/x"), *x);
  UidAllocator again(tmp / "uids", 300000, 3);  // another process, same file
  EXPECT_EQ(*again.Acquire("/i/y"), *y);
  ASSERT_TRUE(again.Acquire("/i/z").ok());
  auto full = again.Acquire("/i/w");
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.error().message.find("MVM_JAIL_UID_RANGE"), std::string::npos);
  ASSERT_TRUE(a.Release("/i/x").ok());
  auto w = again.Acquire("/i/w");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, *x);  // the released uid is reused
  EXPECT_FALSE(a.Find("/i/x")->has_value());
}

TEST(UidAllocator, ConcurrentAcquiresNeverShareAUid) {
  TempDir tmp("mvm-uid");
  std::vector<std::thread> threads;
  std::vector<uint32_t> got(16);
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      UidAllocator a(tmp / "uids", 400000, 100);
      auto uid = a.Acquire("/owner/" + std::to_string(t));
      got[t] = uid.ok() ? *uid : 0;
    });
  }
  for (auto& t : threads) t.join();
  std::set<uint32_t> unique(got.begin(), got.end());
  EXPECT_EQ(unique.size(), 16u);
  EXPECT_EQ(unique.count(0), 0u);
}

TEST(Jail, AttackerSeesOnlyItsChrootRunsAsItsUidWithoutCapabilities) {
  MVM_REQUIRE_ROOT();
  TempDir tmp("mvm-jail");
  Jailed a(tmp.path(), "a", "vm1", 310001);
  mvm::testing::WriteFile(a.dir() / "mine", "x");
  ::chown((a.dir() / "mine").c_str(), 310001, 310001);
  auto id = a.Spawn(a.Spec(), {"status", "hostname", "open:/etc/passwd", "open:/etc/shadow",
                               "open:" + tmp.path().string() + "/a-vm1.log",
                               "open:" + (a.dir() / "mine").string(), "create:/usr/evil",
                               "create:/evil", "ls:/", "ls:/proc", "ls:/dev", "sleep"});
  ASSERT_TRUE(id.ok()) << id.error().message;
  ASSERT_FALSE(a.Line("sleeping").empty()) << a.Log();
  // From outside: the kernel's view of the process.
  EXPECT_EQ(StatusField(id->pid, "Uid"), "310001\t310001\t310001\t310001");
  EXPECT_EQ(StatusField(id->pid, "Gid"), "310001\t310001\t310001\t310001");
  EXPECT_EQ(StatusField(id->pid, "Groups"), "");
  for (const char* cap : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(StatusField(id->pid, cap), "0000000000000000") << cap;
  }
  EXPECT_EQ(StatusField(id->pid, "NoNewPrivs"), "1");
  EXPECT_EQ(StatusField(id->pid, "Seccomp"), "2");
  std::vector<int64_t> procs = CgroupTree::Procs(a.leaf());
  EXPECT_NE(std::find(procs.begin(), procs.end(), id->pid), procs.end());
  for (const char* ns : {"mnt", "pid", "ipc", "uts", "net", "cgroup"}) {
    EXPECT_NE(fs::read_symlink("/proc/self/ns/" + std::string(ns)),
              fs::read_symlink("/proc/" + std::to_string(id->pid) + "/ns/" + ns))
        << ns;
  }
  // From inside: what it could reach.
  std::string log = a.Log();
  EXPECT_NE(log.find("Uid:\t310001"), std::string::npos) << log;
  EXPECT_NE(log.find("hostname vm1"), std::string::npos) << log;
  EXPECT_NE(log.find("open /etc/passwd ENOENT"), std::string::npos) << log;
  EXPECT_NE(log.find("open /etc/shadow ENOENT"), std::string::npos) << log;
  EXPECT_NE(log.find("a-vm1.log ENOENT"), std::string::npos) << log;  // its own log: host side
  EXPECT_NE(log.find("/mine ok"), std::string::npos) << log;
  EXPECT_NE(log.find("create /usr/evil EROFS"), std::string::npos) << log;
  EXPECT_NE(log.find("create /evil EROFS"), std::string::npos) << log;
  EXPECT_NE(log.find("ls / "), std::string::npos) << log;
  std::string ls_root = a.Line("ls / ");
  for (const char* host_only : {" etc", " home", " root", " var", " sys", " boot", " run"}) {
    EXPECT_EQ(ls_root.find(host_only), std::string::npos) << host_only << " in: " << ls_root;
  }
  // Its own pid namespace: it is PID 1, and /proc shows no other process.
  std::set<std::string> proc = Names(a.Line("ls /proc "));
  EXPECT_EQ(proc.count("1"), 1u);
  EXPECT_EQ(proc.count(std::to_string(::getpid())), 0u);
  EXPECT_EQ(proc.count(std::to_string(id->pid)), 0u);  // its host pid means nothing there
  EXPECT_EQ(Names(a.Line("ls /dev ")), (std::set<std::string>{"null", "urandom"})) << log;
}

TEST(Jail, ForbiddenSyscallKillsTheProcess) {
  MVM_REQUIRE_ROOT();
  struct Case {
    SeccompProfile profile;
    std::string call;
  };
  TempDir tmp("mvm-jail");
  int n = 0;
  for (const Case& c :
       {Case{SeccompProfile::kBaseline, "ptrace"}, Case{SeccompProfile::kBaseline, "mount"},
        Case{SeccompProfile::kBaseline, "unshare"}, Case{SeccompProfile::kBaseline, "userns"},
        Case{SeccompProfile::kStrict, "userns"}, Case{SeccompProfile::kStrict, "bpf"},
        Case{SeccompProfile::kStrict, "kexec"}, Case{SeccompProfile::kStrict, "inet"},
        Case{SeccompProfile::kStrict, "netlink"}}) {
    SCOPED_TRACE(std::string(SeccompProfileName(c.profile)) + " " + c.call);
    ++n;
    Jailed a(tmp.path(), "k", "vm" + std::to_string(n), 310010 + n);
    auto id = a.Spawn(a.Spec(c.profile), {"syscall:getpid", "syscall:thread", "syscall:unix",
                                          "syscall:" + c.call, "sleep"});
    ASSERT_TRUE(id.ok()) << id.error().message;
    EXPECT_FALSE(a.Line("after getpid ok").empty()) << a.Log();  // allowed calls work
    EXPECT_FALSE(a.Line("after thread ok").empty()) << a.Log();  // clone without namespaces
    EXPECT_FALSE(a.Line("after unix ok").empty()) << a.Log();    // AF_UNIX: QMP's family
    EXPECT_TRUE(WaitForExit(*id, 10s)) << a.Log();
    std::string log = a.Log();
    EXPECT_NE(log.find("before " + c.call), std::string::npos) << log;
    EXPECT_EQ(log.find("after " + c.call), std::string::npos) << log;  // never returned
    EXPECT_EQ(log.find("sleeping"), std::string::npos) << log;
    // The kernel names the call only while auditing is on: check it whenever it does.
    if (auto name = FindSeccompKill(id->pid)) {
      const std::string want = c.call == "kexec"                         ? "kexec_load"
                               : c.call == "userns"                      ? "clone"
                               : c.call == "inet" || c.call == "netlink" ? "socket"
                                                                         : c.call;
      EXPECT_EQ(*name, want);
    }
  }
}

TEST(Jail, FailedStepIsNamedAndNothingRuns) {
  MVM_REQUIRE_ROOT();
  TempDir tmp("mvm-jail");
  Jailed a(tmp.path(), "f", "vm", 310020);
  JailSpec spec = a.Spec();
  spec.binds.push_back({tmp / "does-not-exist", "/x", false});
  auto id = a.Spawn(spec, {"sleep"});
  ASSERT_FALSE(id.ok());
  EXPECT_NE(id.error().message.find("does-not-exist"), std::string::npos) << id.error().message;
  spec = a.Spec();
  spec.workDir = "/no/such/dir";
  id = a.Spawn(spec, {"sleep"});
  ASSERT_FALSE(id.ok());
  EXPECT_NE(id.error().message.find("jail: chdir /no/such/dir"), std::string::npos)
      << id.error().message;
  EXPECT_TRUE(WaitFor([&] { return CgroupTree::Procs(a.leaf()).empty(); }));
}

TEST(Jail, FreezeAndThawStopAndRestartTheProcess) {
  MVM_REQUIRE_ROOT();
  TempDir tmp("mvm-jail");
  Jailed a(tmp.path(), "z", "vm", 310030);
  auto id = a.Spawn(a.Spec(), {"tick"});
  ASSERT_TRUE(id.ok()) << id.error().message;
  ASSERT_FALSE(a.Line("tick 3").empty()) << a.Log();
  ASSERT_TRUE(CgroupTree::Freeze(a.leaf(), true).ok());
  std::this_thread::sleep_for(50ms);  // a tick written while freezing lands before this
  const size_t frozen_size = a.Log().size();
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(a.Log().size(), frozen_size) << "ticks went on while frozen";
  EXPECT_TRUE(IsAlive(*id));
  ASSERT_TRUE(CgroupTree::Freeze(a.leaf(), false).ok());
  EXPECT_TRUE(WaitFor([&] { return a.Log().size() > frozen_size; })) << "no tick after thaw";
}

TEST(Jail, CgroupKillLeavesNoProcessBehind) {
  MVM_REQUIRE_ROOT();
  TempDir tmp("mvm-jail");
  Jailed a(tmp.path(), "c", "vm", 310040);
  auto id = a.Spawn(a.Spec(), {"fork:5", "sleep"});
  ASSERT_TRUE(id.ok()) << id.error().message;
  ASSERT_FALSE(a.Line("sleeping").empty()) << a.Log();
  std::vector<int64_t> procs = CgroupTree::Procs(a.leaf());
  EXPECT_EQ(procs.size(), 6u);
  std::vector<ProcessIdentity> ids;
  for (int64_t pid : procs) ids.push_back({pid, ReadProcessStat(pid)->startTime});
  ASSERT_TRUE(CgroupTree::Freeze(a.leaf(), true).ok());  // kill works on a frozen group too
  ASSERT_TRUE(CgroupTree::Kill(a.leaf()).ok());
  for (const auto& p : ids) EXPECT_TRUE(WaitForExit(p, 5s)) << p.pid;
  EXPECT_FALSE(fs::exists(a.leaf()));
}

TEST(Jail, InstanceOfOneTenantOpensNothingOfAnother) {
  MVM_REQUIRE_ROOT();
  TempDir tmp("mvm-jail");
  Jailed b(tmp.path(), "tenant-b", "vm", 310051);
  mvm::testing::WriteFile(b.dir() / "secret", "b's data");
  ::chown((b.dir() / "secret").c_str(), 310051, 310051);
  ::chmod((b.dir() / "secret").c_str(), 0600);
  Jailed a(tmp.path(), "tenant-a", "vm", 310050);
  const std::string secret = (b.dir() / "secret").string();
  // The jail: B's directory is not in A's root at all.
  auto id = a.Spawn(a.Spec(), {"open:" + secret, "ls:" + b.dir().string(),
                               "create:" + (b.dir() / "planted").string(), "sleep"});
  ASSERT_TRUE(id.ok()) << id.error().message;
  ASSERT_FALSE(a.Line("sleeping").empty()) << a.Log();
  EXPECT_NE(a.Log().find("open " + secret + " ENOENT"), std::string::npos) << a.Log();
  // Even with a wider view (every tenant's tree bound into A's root, as a misconfigured bind
  // would), B's 0700 directory owned by B's uid keeps A out.
  Jailed a2(tmp.path(), "tenant-a", "vm2", 310052);
  JailSpec wide = a2.Spec();
  wide.binds.push_back({tmp.path(), "/all", true});
  const std::string seen = "/all/tenant-b/vm";
  auto id2 = a2.Spawn(
      wide, {"open:" + seen + "/secret", "ls:" + seen, "create:" + seen + "/planted", "sleep"});
  ASSERT_TRUE(id2.ok()) << id2.error().message;
  ASSERT_FALSE(a2.Line("sleeping").empty()) << a2.Log();
  std::string log = a2.Log();
  EXPECT_NE(log.find("open " + seen + "/secret EACCES"), std::string::npos) << log;
  EXPECT_NE(log.find("ls " + seen + " EACCES"), std::string::npos) << log;
  EXPECT_NE(log.find("create " + seen + "/planted EACCES"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(b.dir() / "planted"));
}

}  // namespace
}  // namespace mvm::runtime
