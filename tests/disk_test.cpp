// Instance disks (runtime/disk.h) and the helper-program runner under them (runtime/command.h):
// real files, real e2fsprogs (hack/install-deps.sh installs them), no guest.

#include "runtime/disk.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "runtime/command.h"
#include "runtime/driver_util.h"
#include "runtime/files.h"
#include "tests/test_util.h"

namespace mvm::testing {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;
constexpr uint64_t kMiB = uint64_t{1} << 20;

std::string RunTool(const std::vector<std::string>& argv) {
  auto r = runtime::RunCommand(argv, 60s);
  if (!r.ok()) return "ERROR: " + r.error().message;
  return r->ok() ? r->output : "ERROR: " + r->Describe();
}

std::string Sbin(const std::string& name) {
  return std::filesystem::exists("/usr/sbin/" + name) ? "/usr/sbin/" + name : "/sbin/" + name;
}

// The size of the ext filesystem on `path`, from its superblock (dumpe2fs -h).
uint64_t ExtBytes(const std::filesystem::path& path) {
  std::string header = RunTool({Sbin("dumpe2fs"), "-h", path.string()});
  auto field = [&header](const std::string& name) -> uint64_t {
    size_t pos = header.find("\n" + name + ":");
    if (pos == std::string::npos) return 0;
    return std::stoull(header.substr(header.find(':', pos) + 1));
  };
  return field("Block count") * field("Block size");
}

uintmax_t Allocated(const std::filesystem::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uintmax_t>(st.st_blocks) * 512 : 0;
}

std::string Content(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class DiskTest : public ::testing::Test {
 protected:
  // A 16 MiB ext4 image with one file in it, as hack/build-guest-image.sh makes them.
  std::filesystem::path MakeExtImage() {
    WriteFile(dir_ / "tree/etc/hostname", "guest\n");
    const auto image = dir_ / "image.ext4";
    std::string out = RunTool(
        {Sbin("mkfs.ext4"), "-q", "-F", "-d", (dir_ / "tree").string(), image.string(), "16M"});
    EXPECT_THAT(out, ::testing::Not(HasSubstr("ERROR"))) << out;
    return image;
  }

  TempDir dir_{"mvm-disk"};
};

TEST_F(DiskTest, MakeInstanceDisk_GrowsFileAndExtFilesystemSparsely) {
  const auto image = MakeExtImage();
  const auto disk = dir_ / "volumes/rootfs.ext4";
  std::filesystem::create_directories(disk.parent_path());
  Status s = runtime::MakeInstanceDisk(image, disk, 256 * kMiB);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(std::filesystem::file_size(disk), 256 * kMiB);
  EXPECT_EQ(ExtBytes(disk), 256 * kMiB) << "the filesystem fills the disk";
  EXPECT_LT(Allocated(disk), 32 * kMiB) << "the new space is a hole";
  EXPECT_THAT(RunTool({Sbin("e2fsck"), "-f", "-n", disk.string()}),
              ::testing::Not(HasSubstr("ERROR")));
  EXPECT_THAT(RunTool({Sbin("debugfs"), "-R", "cat /etc/hostname", disk.string()}),
              HasSubstr("guest"));
  EXPECT_EQ(ExtBytes(image), 16 * kMiB) << "the shared image is untouched";
  EXPECT_FALSE(std::filesystem::exists(disk.string() + ".new"));
}

TEST_F(DiskTest, MakeInstanceDisk_ChecksAnImageResize2fsRefusesThenGrowsIt) {
  const auto image = MakeExtImage();
  // Not marked clean, as after a guest that was killed with the filesystem mounted.
  ASSERT_THAT(RunTool({Sbin("debugfs"), "-w", "-R", "ssv state 0", image.string()}),
              ::testing::Not(HasSubstr("ERROR")));
  auto refused = runtime::RunCommand({Sbin("resize2fs"), image.string(), "32M"}, 60s);
  ASSERT_TRUE(refused.ok());
  ASSERT_THAT(refused->output, HasSubstr("e2fsck")) << "resize2fs alone refuses this image";
  const auto disk = dir_ / "rootfs.ext4";
  Status s = runtime::MakeInstanceDisk(image, disk, 64 * kMiB);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(ExtBytes(disk), 64 * kMiB);
}

TEST_F(DiskTest, MakeInstanceDisk_ZeroOrTheImageSizeIsAPlainCopy) {
  const auto image = MakeExtImage();
  for (uint64_t size : {uint64_t{0}, 16 * kMiB}) {
    const auto disk = dir_ / ("disk-" + std::to_string(size));
    Status s = runtime::MakeInstanceDisk(image, disk, size);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(Content(disk), Content(image)) << size;
  }
}

TEST_F(DiskTest, MakeInstanceDisk_SmallerThanTheImageFailsAndKeepsThePreviousDisk) {
  const auto image = MakeExtImage();
  const auto disk = dir_ / "rootfs.ext4";
  WriteFile(disk, "the previous disk");
  Status s = runtime::MakeInstanceDisk(image, disk, 8 * kMiB);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr("resources.diskMiB is 8 MiB"));
  EXPECT_THAT(s.error().message, HasSubstr("is 16 MiB"));
  EXPECT_THAT(s.error().message, HasSubstr("at least 16"));
  EXPECT_EQ(Content(disk), "the previous disk");
  EXPECT_FALSE(std::filesystem::exists(disk.string() + ".new"));
}

TEST_F(DiskTest, MakeInstanceDisk_OtherContentIsOnlyExtended) {
  const auto image = dir_ / "raw.img";
  std::string raw(kMiB, '\0');
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<char>('a' + i % 26);
  WriteFile(image, raw);
  ASSERT_FALSE(runtime::IsExtFilesystem(image));
  const auto disk = dir_ / "disk.img";
  Status s = runtime::MakeInstanceDisk(image, disk, 4 * kMiB);
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::string grown = Content(disk);
  ASSERT_EQ(grown.size(), 4 * kMiB);
  EXPECT_EQ(grown.substr(0, kMiB), raw);
  EXPECT_EQ(grown.find_first_not_of('\0', kMiB), std::string::npos);
}

TEST_F(DiskTest, MakeInstanceDisk_ADamagedExtImageFailsWithTheToolsWordsAndLeavesNothing) {
  // The ext magic number and nothing else: resize2fs finds no valid superblock.
  std::string bogus(4 * kMiB, '\0');
  bogus[1024 + 56] = static_cast<char>(0x53);
  bogus[1024 + 57] = static_cast<char>(0xEF);
  const auto image = dir_ / "bogus.ext4";
  WriteFile(image, bogus);
  ASSERT_TRUE(runtime::IsExtFilesystem(image));
  const auto disk = dir_ / "rootfs.ext4";
  Status s = runtime::MakeInstanceDisk(image, disk, 8 * kMiB);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr("grow the disk's filesystem: resize2fs exit status"));
  EXPECT_THAT(s.error().message, HasSubstr("superblock"));
  EXPECT_FALSE(std::filesystem::exists(disk));
  EXPECT_FALSE(std::filesystem::exists(disk.string() + ".new"));
}

TEST(RunCommand, CapturesOutputAndExitStatus) {
  auto r = runtime::RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"}, 10s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->exitCode, 3);
  EXPECT_EQ(r->output, "out\nerr\n");
  EXPECT_EQ(r->Describe(), "exit status 3: err");
}

TEST(RunCommand, KillsAndReapsAChildPastItsTimeout) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = runtime::RunCommand({"sleep", "30"}, 200ms);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_TRUE(r->timedOut);
  EXPECT_EQ(r->signal, SIGKILL);
  EXPECT_FALSE(r->ok());
}

TEST(RunCommand, AMissingProgramIsAnError) {
  auto r = runtime::RunCommand({"mvm-no-such-program"}, 1s);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("mvm-no-such-program: not found"));
}

TEST(RemoveAside, TheFileIsGoneAtOnceAndItsSpentCopyLaterWithNoThreadPerCall) {
  TempDir dir;
  std::vector<std::filesystem::path> files;
  for (int i = 0; i < 20; ++i) {
    files.push_back(dir / ("snapshot-" + std::to_string(i)));
    std::ofstream(files.back()) << std::string(4096, 'x');
  }
  for (const auto& f : files) {
    runtime::RemoveAside(f);
    EXPECT_FALSE(std::filesystem::exists(f)) << f;  // nobody sees it from the moment it returns
  }
  runtime::WaitForBackgroundRemovals();
  for (const auto& f : files) EXPECT_FALSE(std::filesystem::exists(runtime::SpentPath(f))) << f;
  // One remover thread for the process, not one per call.
  int threads = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    (void)entry;
    ++threads;
  }
  EXPECT_LE(threads, 2);
}

TEST(RemoveAside, AMissingFileIsNoError) {
  TempDir dir;
  runtime::RemoveAside(dir / "never-there");
  runtime::WaitForBackgroundRemovals();
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

}  // namespace
}  // namespace mvm::testing
