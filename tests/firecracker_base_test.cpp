// runtime/firecracker_base.h on plain sparse files: the rebase of a Diff memory file onto its
// base (holes keep the base, data extents override, sizes must match), the merge of Diffs,
// the base key and the flock that serialises a pool's base creation.

#include "runtime/firecracker_base.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/unique_fd.h"
#include "tests/test_util.h"

namespace mvm::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr off_t kPage = 4096;

// A sparse file of `size` bytes with `text` written at each given offset (data extents), the
// rest holes.
void Sparse(const fs::path& path, off_t size,
            const std::vector<std::pair<off_t, std::string>>& at) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(::ftruncate(fd.get(), size), 0);
  for (const auto& [offset, text] : at) {
    ASSERT_EQ(::pwrite(fd.get(), text.data(), text.size(), offset),
              static_cast<ssize_t>(text.size()));
  }
}

std::string At(const fs::path& path, off_t offset, size_t n) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  std::string out(n, '\0');
  if (::pread(fd.get(), out.data(), n, offset) != static_cast<ssize_t>(n)) return "<short>";
  return out;
}

// Whether the file system keeps holes (SEEK_HOLE finds one before the end).
bool KeepsHoles(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  off_t hole = ::lseek(fd.get(), 0, SEEK_HOLE);
  return hole >= 0 && hole < static_cast<off_t>(fs::file_size(path));
}

TEST(RebaseMemory, DataExtentsOfTheDiffOverrideAndItsHolesKeepTheBase) {
  TempDir dir("mvm-rebase");
  const off_t size = 64 * kPage;
  const std::string a(kPage, 'a'), b(kPage, 'b'), x(kPage, 'x'), y(kPage, 'y');
  // Base: data in pages 0, 1 and 40 (page 10 a hole); Diff: pages 1 and 10.
  Sparse(dir / "base", size, {{0, a}, {kPage, b}, {40 * kPage, a}});
  Sparse(dir / "diff", size, {{kPage, x}, {10 * kPage, y}});
  ASSERT_TRUE(runtime::RebaseMemory(dir / "base", dir / "diff", dir / "mem").ok());
  EXPECT_EQ(fs::file_size(dir / "mem"), static_cast<uintmax_t>(size));
  EXPECT_EQ(At(dir / "mem", 0, kPage), a) << "a hole of the Diff keeps the base";
  EXPECT_EQ(At(dir / "mem", kPage, kPage), x) << "the Diff's page wins";
  EXPECT_EQ(At(dir / "mem", 10 * kPage, kPage), y) << "a page the base never had";
  EXPECT_EQ(At(dir / "mem", 40 * kPage, kPage), a);
  EXPECT_EQ(At(dir / "mem", 20 * kPage, kPage), std::string(kPage, '\0'));
  EXPECT_FALSE(fs::exists(dir.path() / "mem.rebase"));
  // The inputs are untouched.
  EXPECT_EQ(At(dir / "base", kPage, kPage), b);
  if (KeepsHoles(dir / "diff")) {
    struct stat st {};
    ASSERT_EQ(::stat((dir / "mem").c_str(), &st), 0);
    EXPECT_LE(st.st_blocks * 512, 8 * kPage) << "holes of both stay holes";
  }
}

TEST(RebaseMemory, SizeMismatchIsAnErrorAndWritesNothing) {
  TempDir dir("mvm-rebase");
  Sparse(dir / "base", 64 * kPage, {{0, "base"}});
  Sparse(dir / "diff", 32 * kPage, {{0, "diff"}});
  Status s = runtime::RebaseMemory(dir / "base", dir / "diff", dir / "mem");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr("sizes differ"));
  EXPECT_THAT(s.error().message, HasSubstr((dir / "diff").string()));
  EXPECT_FALSE(fs::exists(dir / "mem"));
  EXPECT_FALSE(fs::exists(dir.path() / "mem.rebase"));
  Status missing = runtime::RebaseMemory(dir / "nope", dir / "diff", dir / "mem");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message, HasSubstr("nope"));
}

TEST(RebaseMemory, MergedDiffsRebaseLikeTheDiffsInTurn) {
  TempDir dir("mvm-rebase");
  const off_t size = 16 * kPage;
  Sparse(dir / "base", size, {{0, std::string(kPage, 'a')}, {kPage, std::string(kPage, 'a')}});
  Sparse(dir / "d1", size, {{kPage, "one"}, {2 * kPage, "one"}});
  Sparse(dir / "d2", size, {{2 * kPage, "two"}, {3 * kPage, "two"}});
  ASSERT_TRUE(runtime::MergeDiff(dir / "d2", dir / "d1").ok());
  ASSERT_TRUE(runtime::MergeDiff(dir / "d2", dir / "d1").ok()) << "idempotent";
  ASSERT_TRUE(runtime::RebaseMemory(dir / "base", dir / "d1", dir / "mem").ok());
  EXPECT_EQ(At(dir / "mem", 0, 1), "a");
  EXPECT_EQ(At(dir / "mem", kPage, 3), "one");
  EXPECT_EQ(At(dir / "mem", 2 * kPage, 3), "two");
  EXPECT_EQ(At(dir / "mem", 3 * kPage, 3), "two");
}

TEST(BaseKey, ChangesWithEveryInputThatDecidesMemory) {
  TempDir dir("mvm-basekey");
  WriteFile(dir / "vmlinux", "kernel");
  runtime::BaseKeyInputs in{{dir / "vmlinux"}, "console=ttyS0", 2, 128, false, false};
  const std::string key = runtime::BaseKey(in);
  EXPECT_EQ(key.size(), 16u);
  EXPECT_EQ(runtime::BaseKey(in), key);
  auto changed = [&](auto edit) {
    runtime::BaseKeyInputs other = in;
    edit(other);
    return runtime::BaseKey(other);
  };
  EXPECT_NE(changed([](auto& o) { o.cmdline += " quiet"; }), key);
  EXPECT_NE(changed([](auto& o) { o.vcpus = 1; }), key);
  EXPECT_NE(changed([](auto& o) { o.memoryMiB = 256; }), key);
  EXPECT_NE(changed([](auto& o) { o.network = true; }), key);
  EXPECT_NE(changed([](auto& o) { o.jailer = true; }), key);
  WriteFile(dir / "vmlinux", "another kernel");
  EXPECT_NE(runtime::BaseKey(in), key) << "a rebuilt kernel at the same path";
}

TEST(BaseLock, SerialisesHoldersAndNamesInstancesUsingABase) {
  TempDir dir("mvm-baselock");
  const fs::path root = dir / "pool/fc-base";
  auto first = runtime::BaseLock::Acquire(root);
  ASSERT_TRUE(first.ok()) << first.error().message;
  std::atomic<bool> second_held{false};
  std::thread other([&] {
    auto second = runtime::BaseLock::Acquire(root);
    second_held = second.ok();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(second_held) << "the second holder waits";
  { auto released = std::move(*first); }
  first = Error{"released"};
  other.join();
  EXPECT_TRUE(second_held);

  WriteFile(dir / "pool/instances/a/snapshots/base-key", "0123456789abcdef\n");
  WriteFile(dir / "pool/instances/b/snapshots/base-key", "0123456789abcdef");
  WriteFile(dir / "pool/instances/c/snapshots/base-key", "fedcba9876543210");
  fs::create_directories(dir / "pool/instances/d/snapshots");
  EXPECT_THAT(runtime::BasesInUse(dir / "pool/instances"),
              ::testing::ElementsAre("0123456789abcdef", "fedcba9876543210"));
  EXPECT_EQ(runtime::PoolBaseRoot(dir / "pool/instances/a"), root);
}

}  // namespace
}  // namespace mvm::testing
