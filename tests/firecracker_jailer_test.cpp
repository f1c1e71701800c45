// The jailer's command line for each pool shape, the chroot layout, its removal, and the
// metrics file reader. Unit tests: no jailer or Firecracker binary is needed.

#include "runtime/firecracker_jailer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/firecracker_metrics.h"
#include "tests/test_util.h"

namespace mvm::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

runtime::JailerConfig Config() {
  runtime::JailerConfig c;
  c.jailer = "/usr/local/bin/jailer";
  c.execFile = "/usr/local/bin/firecracker";
  c.chrootBase = "/srv/jailer";
  c.cgroupRoot = "/sys/fs/cgroup";
  c.cgroupControllers = {"cpu", "memory", "pids", "io"};
  c.daemonize = true;
  return c;
}

std::string Joined(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

TEST(JailerArgv, SmallPoolWithEveryControllerGetsLimitsFromItsResources) {
  runtime::JailerConfig c = Config();
  runtime::Jail j = runtime::JailFor(c, "mvm-0123456789ab", "acme", 1, 256);
  auto argv = runtime::JailerArgv(c, j, {"--api-sock", "/run/firecracker.socket"});
  EXPECT_EQ(Joined(argv),
            "/usr/local/bin/jailer --id mvm-0123456789ab --exec-file /usr/local/bin/firecracker "
            "--uid " +
                std::to_string(j.uid) + " --gid " + std::to_string(j.gid) +
                " --chroot-base-dir /srv/jailer --cgroup-version 2 --parent-cgroup "
                "mvm.slice/acme --cgroup cpu.max=100000 100000 --cgroup memory.max=" +
                std::to_string((256 + runtime::kMemoryOverheadMiB) << 20) +
                " --cgroup pids.max=64 --resource-limit no-file=4096 --new-pid-ns --daemonize -- "
                "--api-sock /run/firecracker.socket");
  EXPECT_EQ(j.root, "/srv/jailer/firecracker/mvm-0123456789ab/root");
  EXPECT_EQ(j.socket, "/srv/jailer/firecracker/mvm-0123456789ab/root/run/firecracker.socket");
  EXPECT_EQ(j.pidFile, "/srv/jailer/firecracker/mvm-0123456789ab/root/firecracker.pid");
  EXPECT_EQ(j.cgroup, "/sys/fs/cgroup/mvm.slice/acme/mvm-0123456789ab");
  EXPECT_GE(j.uid, c.idBase);
  EXPECT_LT(j.uid, c.idBase + c.idCount);
}

TEST(JailerArgv, LargePoolScalesCpuAndMemory) {
  runtime::JailerConfig c = Config();
  auto argv = runtime::JailerArgv(c, runtime::JailFor(c, "mvm-big", "bigco", 8, 16384), {});
  EXPECT_THAT(argv, Contains("cpu.max=800000 100000"));
  EXPECT_THAT(argv, Contains("memory.max=" + std::to_string((16384LL + 64) << 20)));
  EXPECT_THAT(argv, Contains("mvm.slice/bigco"));
}

TEST(JailerArgv, IoLimitsBecomeIoMaxWhereTheHostHasTheIoController) {
  runtime::JailerConfig c = Config();
  runtime::Jail j = runtime::JailFor(c, "mvm-io", "acme", 1, 128);
  j.ioMax = {"254:0 rbps=1048576 wiops=50"};
  EXPECT_THAT(runtime::JailerArgv(c, j, {}), Contains("io.max=254:0 rbps=1048576 wiops=50"));
  c.cgroupControllers.erase("io");
  for (const auto& word : runtime::JailerArgv(c, j, {})) {
    EXPECT_EQ(word.find("io.max"), std::string::npos) << word;
  }
}

TEST(JailerArgv, HostWithoutControllersGetsNoCgroupLimits) {
  runtime::JailerConfig c = Config();
  c.cgroupControllers.clear();
  runtime::Jail j = runtime::JailFor(c, "mvm-x", "acme", 2, 512);
  j.ioMax = {"254:0 rbps=1"};
  auto argv = runtime::JailerArgv(c, j, {});
  EXPECT_THAT(argv, Not(Contains("--cgroup")));
  EXPECT_THAT(argv, Contains("--cgroup-version"));
}

TEST(JailerArgv, NetnsPerTenantFsizeAndNoDaemonize) {
  runtime::JailerConfig c = Config();
  c.netns = "/var/run/netns/mvm-{tenant}";
  c.fsizeLimit = 1 << 30;
  c.daemonize = false;
  c.newPidNs = false;
  std::string line =
      Joined(runtime::JailerArgv(c, runtime::JailFor(c, "mvm-x", "acme", 1, 128), {}));
  EXPECT_THAT(line, HasSubstr("--netns /var/run/netns/mvm-acme"));
  EXPECT_THAT(line, HasSubstr("--resource-limit fsize=1073741824"));
  EXPECT_THAT(line, Not(HasSubstr("--daemonize")));
  EXPECT_THAT(line, Not(HasSubstr("--new-pid-ns")));
}

TEST(JailerArgv, UidIsStablePerIdAndInsideTheRange) {
  runtime::JailerConfig c = Config();
  c.idBase = 1000;
  c.idCount = 10;
  for (int i = 0; i < 50; ++i) {
    std::string id = "mvm-" + std::to_string(i);
    auto a = runtime::JailFor(c, id, "t", 1, 128);
    auto b = runtime::JailFor(c, id, "t", 1, 128);
    EXPECT_EQ(a.uid, b.uid);
    EXPECT_GE(a.uid, 1000u);
    EXPECT_LT(a.uid, 1010u);
  }
  EXPECT_EQ(runtime::JailId("/var/lib/mvm/x/"), runtime::JailId("/var/lib/mvm/x"));
}

TEST(LayoutJail, LinksFilesGivesWritableOnesToTheJailAndRemovesEverything) {
  TempDir dir("mvm-jail");
  WriteFile(dir / "img/vmlinux", "kernel");
  WriteFile(dir / "vol/rootfs.ext4", "disk");
  runtime::JailerConfig c = Config();
  c.chrootBase = dir / "base";
  c.cgroupRoot = dir / "cg";
  const uid_t me = ::getuid();
  c.idBase = me;
  c.idCount = 1;
  runtime::Jail j = runtime::JailFor(c, "mvm-abc", "acme", 1, 128);
  fs::create_directories(j.cgroup);  // as if the jailer had created the leaf
  ASSERT_TRUE(runtime::LayoutJail(j, {{dir / "img/vmlinux", "/vmlinux", false},
                                      {dir / "vol/rootfs.ext4", "/rootfs.ext4", true},
                                      {dir / "vol/rootfs.ext4", "/snapshot/disk", true}})
                  .ok());
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat((dir / "vol/rootfs.ext4").c_str(), &a), 0);
  ASSERT_EQ(::stat((j.root / "rootfs.ext4").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(b.st_uid, me);
  EXPECT_TRUE(fs::is_directory(j.root / "run"));
  EXPECT_TRUE(fs::exists(j.root / "vmlinux"));
  EXPECT_TRUE(fs::exists(j.root / "snapshot/disk"));
  // Removal takes the jail and the cgroup leaf, and leaves the linked originals.
  ASSERT_TRUE(runtime::RemoveJail(c, j).ok());
  EXPECT_FALSE(fs::exists(j.dir));
  EXPECT_FALSE(fs::exists(j.cgroup));
  EXPECT_TRUE(fs::exists(dir / "vol/rootfs.ext4"));
  EXPECT_TRUE(fs::exists(dir / "img/vmlinux"));
  EXPECT_TRUE(runtime::RemoveJail(c, j).ok());  // idempotent
}

TEST(LayoutJail, RefusesAnIdThatCouldWidenTheRemoval) {
  runtime::JailerConfig c = Config();
  runtime::Jail j = runtime::JailFor(c, "../..", "acme", 1, 128);
  EXPECT_FALSE(runtime::RemoveJail(c, j).ok());
  EXPECT_FALSE(runtime::LayoutJail(j, {}).ok());
  EXPECT_FALSE(runtime::RemoveJail(c, runtime::JailFor(c, "", "acme", 1, 128)).ok());
}

TEST(LayoutJail, CopiesAcrossFileSystems) {
  // /dev/shm is a tmpfs on Linux; the temp dir is usually not.
  if (!fs::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm (a second file system)";
  TempDir dir("mvm-jail");
  WriteFile(dir / "vol/rootfs.ext4", "disk");
  struct stat tmp {
  }, shm{};
  ASSERT_EQ(::stat(dir.path().c_str(), &tmp), 0);
  ASSERT_EQ(::stat("/dev/shm", &shm), 0);
  if (tmp.st_dev == shm.st_dev) GTEST_SKIP() << "/dev/shm and the temp dir share a file system";
  TempDir base("/dev/shm/mvm-jail-base");  // an absolute prefix replaces the temp dir
  runtime::JailerConfig c = Config();
  c.chrootBase = base.path();
  c.idBase = ::getuid();
  c.idCount = 1;
  runtime::Jail j = runtime::JailFor(c, "mvm-xdev", "acme", 1, 128);
  ASSERT_TRUE(runtime::LayoutJail(j, {{dir / "vol/rootfs.ext4", "/rootfs.ext4", true}}).ok());
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat((dir / "vol/rootfs.ext4").c_str(), &a), 0);
  ASSERT_EQ(::stat((j.root / "rootfs.ext4").c_str(), &b), 0);
  EXPECT_NE(a.st_dev, b.st_dev);
  EXPECT_EQ(b.st_size, a.st_size);
  ASSERT_TRUE(runtime::RemoveJail(c, j).ok());
  EXPECT_FALSE(fs::exists(j.dir));
}

TEST(Metrics, LatestCompleteLineIsSummarised) {
  TempDir dir("mvm-metrics");
  WriteFile(dir / "m.json",
            R"({"utc_timestamp_ms":1,"vcpu":{"exit_io_in":1}})"
            "\n"
            R"({"utc_timestamp_ms":2,"vcpu":{"exit_io_in":3,"exit_io_out":4,"exit_mmio_read":5,)"
            R"("exit_mmio_write":6},"block":{"read_bytes":100,"write_bytes":50},)"
            R"("net":{"rx_bytes_count":7,"tx_bytes_count":8},)"
            R"("put_api_requests":{"actions_count":2,"actions_fails":9,"drive_count":1},)"
            R"("get_api_requests":{"instance_info_count":4},"vmm":{"panic_count":0}})"
            "\n"
            R"({"utc_timestamp_ms":3,"vcpu":{"exit_io)");  // a line still being written
  auto m = runtime::ReadLatestMetrics(dir / "m.json");
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->utcTimestampMs, "2");
  EXPECT_EQ(m->vcpuExits, 18u);
  EXPECT_EQ(m->blockReadBytes, 100u);
  EXPECT_EQ(m->blockWriteBytes, 50u);
  EXPECT_EQ(m->netRxBytes, 7u);
  EXPECT_EQ(m->netTxBytes, 8u);
  EXPECT_EQ(m->apiRequests, 7u);
  EXPECT_EQ(m->metricsLines, 2u);
  EXPECT_EQ(runtime::MetricsSummaryJson(*m)["vcpuExits"].asUInt64(), 18u);
}

TEST(Metrics, EmptyOrGarbageFileIsAnError) {
  TempDir dir("mvm-metrics");
  EXPECT_FALSE(runtime::ReadLatestMetrics(dir / "none.json").ok());
  WriteFile(dir / "partial.json", R"({"utc_timestamp_ms":1)");
  EXPECT_FALSE(runtime::ReadLatestMetrics(dir / "partial.json").ok());
  WriteFile(dir / "garbage.json", "hello\n");
  EXPECT_FALSE(runtime::ReadLatestMetrics(dir / "garbage.json").ok());
}

}  // namespace
}  // namespace mvm::testing
