// Watcher tests: real temp directories, real file operations, and waits on the callback with a
// timeout (generous: CI is a loaded 2-core box). The only "nothing happened" wait is the .git
// churn test.

#include "manifests/watcher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "manifests/source.h"
#include "tests/test_util.h"

namespace mvm::manifests {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mvm::testing::ReplaceFile;  // write a hidden temp file next to it, rename it over
using mvm::testing::TempDir;
using mvm::testing::WriteFile;  // in place: open(O_TRUNC), write, close

constexpr auto kExpectTimeout = 5s;  // an expected batch arrives well within this

// Some batch from index `from` on reports `path` as changed.
bool Reported(const std::vector<ChangeSet>& batches, const fs::path& path, size_t from = 0) {
  return std::any_of(batches.begin() + static_cast<std::ptrdiff_t>(std::min(from, batches.size())),
                     batches.end(), [&](const ChangeSet& b) { return b.paths.contains(path); });
}

// Some batch from index `from` on asks for a rescan.
bool Rescanned(const std::vector<ChangeSet>& batches, size_t from = 0) {
  return std::any_of(batches.begin() + static_cast<std::ptrdiff_t>(std::min(from, batches.size())),
                     batches.end(), [](const ChangeSet& b) { return b.rescan; });
}

// Collects batches; waits for a condition over everything received so far.
class Recorder {
 public:
  Watcher::Callback callback() {
    return [this](const ChangeSet& cs) {
      std::lock_guard lock(mu_);
      batches_.push_back(cs);
      cv_.notify_all();
    };
  }

  bool WaitUntil(const std::function<bool(const std::vector<ChangeSet>&)>& done,
                 std::chrono::milliseconds timeout = kExpectTimeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done(batches_); });
  }

  bool WaitForPath(const fs::path& path, size_t from = 0) {
    return WaitUntil([&](const auto& b) { return Reported(b, path, from); });
  }
  bool WaitForRescan(size_t from = 0) {
    return WaitUntil([&](const auto& b) { return Rescanned(b, from); });
  }

  std::vector<ChangeSet> batches() {
    std::lock_guard lock(mu_);
    return batches_;
  }
  size_t count() {
    std::lock_guard lock(mu_);
    return batches_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ChangeSet> batches_;
};

void WriteAll(int fd, const std::string& data) {
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
}

std::unique_ptr<Watcher> StartWatching(std::vector<fs::path> roots, Recorder& rec,
                                       std::chrono::microseconds debounce = 50ms,
                                       std::chrono::microseconds maxDelay = 500ms) {
  Watcher::Options opts;
  opts.roots = std::move(roots);
  opts.debounce = debounce;
  opts.maxDelay = maxDelay;
  auto w = Watcher::Start(opts, rec.callback());
  if (!w) ADD_FAILURE() << w.error().message;
  return w ? std::move(w).value() : nullptr;
}

TEST(Watcher, Watcher_ReportsInPlaceWriteAfterClose) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  WriteFile(root / "a.yaml", "old");
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  WriteFile(root / "a.yaml", "new");

  ASSERT_TRUE(rec.WaitForPath(root / "a.yaml"));
  for (const ChangeSet& b : rec.batches()) EXPECT_FALSE(b.writing.contains(root / "a.yaml"));
}

TEST(Watcher, Watcher_ReportsRenameOverExistingFileAndIgnoresHiddenTemp) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  WriteFile(root / "a.yaml", "old");
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  ReplaceFile(root / "a.yaml", "new");

  ASSERT_TRUE(rec.WaitForPath(root / "a.yaml"));
  for (const ChangeSet& b : rec.batches()) {
    EXPECT_FALSE(b.rescan);
    EXPECT_FALSE(b.paths.contains(root / ".a.yaml.tmp"));
    EXPECT_FALSE(b.writing.contains(root / ".a.yaml.tmp"));
  }
}

TEST(Watcher, Watcher_ReportsDeletedFile) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  WriteFile(root / "a.yaml", "x");
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  fs::remove(root / "a.yaml");

  ASSERT_TRUE(rec.WaitForPath(root / "a.yaml"));
}

TEST(Watcher, Watcher_ReportsHardLinkCreatedAsChanged) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  WriteFile(tmp.path() / "staged.yaml", "x");
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  fs::create_hard_link(tmp.path() / "staged.yaml", root / "a.yaml");  // no close will follow

  ASSERT_TRUE(rec.WaitForPath(root / "a.yaml"));
}

TEST(Watcher, Watcher_ReportsFileLinkedFromTmpfileAsChanged) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  // Written anonymously, then given its name in one step: IN_CREATE is the only event under the
  // name (no IN_OPEN, no IN_CLOSE_WRITE).
  const int fd = ::open(root.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) GTEST_SKIP() << "O_TMPFILE not supported here";
  WriteAll(fd, "kind: Tenant\n");
  const std::string proc = "/proc/self/fd/" + std::to_string(fd);
  ASSERT_EQ(
      ::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, (root / "a.yaml").c_str(), AT_SYMLINK_FOLLOW), 0);
  ::close(fd);

  ASSERT_TRUE(rec.WaitForPath(root / "a.yaml"));
  EXPECT_FALSE(rec.batches().back().writing.contains(root / "a.yaml"));
}

TEST(Watcher, Watcher_CoalescesBurstOf200RenamesIntoFewBatches) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  std::set<fs::path> expected;
  for (int i = 0; i < 200; ++i) {
    const fs::path p = root / ("pool-" + std::to_string(i) + ".yaml");
    ReplaceFile(p, "n: " + std::to_string(i));
    expected.insert(p);
  }

  auto covered = [&](const std::vector<ChangeSet>& batches) {
    std::set<fs::path> seen;
    for (const ChangeSet& b : batches) seen.insert(b.paths.begin(), b.paths.end());
    return std::includes(seen.begin(), seen.end(), expected.begin(), expected.end());
  };
  ASSERT_TRUE(rec.WaitUntil(covered));
  EXPECT_LE(rec.count(), 3u);
  for (const ChangeSet& b : rec.batches()) EXPECT_FALSE(b.rescan);
}

TEST(Watcher, Watcher_NeverReportsFileAsChangedWhileOpenForWriting) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  const fs::path existing = root / "existing.yaml";
  const fs::path created = root / "created.yaml";
  WriteFile(existing, "old content\n");
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  // Two writers, each stopping half-way for longer than the debounce.
  const int a = ::open(existing.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  const int b = ::open(created.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  WriteAll(a, "kind: Pool\nmetadata:");
  WriteAll(b, "kind: Tenant\nmetadata:");
  std::this_thread::sleep_for(200ms);  // pacing: the pause in the middle of the write
  // Another file completes meanwhile, so a batch flushes while both are still open.
  WriteFile(root / "other.yaml", "x");
  ASSERT_TRUE(rec.WaitForPath(root / "other.yaml"));
  {
    const ChangeSet mid = rec.batches().back();
    EXPECT_TRUE(mid.writing.contains(existing));
    EXPECT_TRUE(mid.writing.contains(created));
  }
  WriteAll(a, " {name: p}\n");
  WriteAll(b, " {name: t}\n");
  const size_t beforeClose = rec.count();
  ::close(a);
  ::close(b);

  ASSERT_TRUE(rec.WaitUntil([&](const std::vector<ChangeSet>& bs) {
    return Reported(bs, existing) && Reported(bs, created);
  }));
  const std::vector<ChangeSet> batches = rec.batches();
  for (size_t i = 0; i < batches.size(); ++i) {
    if (i < beforeClose) {
      EXPECT_FALSE(batches[i].paths.contains(existing)) << "batch " << i << " before close";
      EXPECT_FALSE(batches[i].paths.contains(created)) << "batch " << i << " before close";
    }
    // Never in both sets of one batch.
    for (const fs::path& p : batches[i].writing) EXPECT_FALSE(batches[i].paths.contains(p));
  }
  EXPECT_FALSE(batches.back().writing.contains(existing));
  EXPECT_FALSE(batches.back().writing.contains(created));
}

TEST(Watcher, Watcher_WatchesNewSubdirectoryAndRescans) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  fs::create_directories(root / "tenants" / "acme");
  WriteFile(root / "tenants" / "acme" / "a.yaml", "x");  // may land before the watch exists
  ASSERT_TRUE(rec.WaitForRescan());

  // Once the rescan is delivered, the new directories are watched.
  const size_t from = rec.count();
  WriteFile(root / "tenants" / "acme" / "b.yaml", "y");
  WriteFile(root / "tenants" / "c.yaml", "z");
  EXPECT_TRUE(rec.WaitForPath(root / "tenants" / "acme" / "b.yaml", from));
  EXPECT_TRUE(rec.WaitForPath(root / "tenants" / "c.yaml", from));
}

TEST(Watcher, Watcher_IgnoresGitDirectoryChurn) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directories(root / ".git" / "objects");
  WriteFile(root / ".git" / "HEAD", "ref: refs/heads/main\n");
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  for (int i = 0; i < 20; ++i) {
    const fs::path obj = root / ".git" / "objects" / ("o" + std::to_string(i));
    fs::create_directory(obj);
    WriteFile(obj / "blob", "data");
    WriteFile(root / ".git" / "index.lock", "idx");
    fs::rename(root / ".git" / "index.lock", root / ".git" / "index");
  }
  fs::remove_all(root / ".git" / "objects" / "o3");

  // The one absence wait: nothing may arrive for the churn.
  EXPECT_FALSE(rec.WaitUntil([](const auto& b) { return !b.empty(); }, 300ms));

  // And the watcher is alive: the next batch is exactly the real change.
  WriteFile(root / "a.yaml", "x");
  ASSERT_TRUE(rec.WaitUntil([](const auto& b) { return !b.empty(); }));
  const ChangeSet first = rec.batches().front();
  EXPECT_FALSE(first.rescan);
  EXPECT_EQ(first.paths, std::set<fs::path>{root / "a.yaml"});
}

TEST(Watcher, Watcher_FollowsRootRemovedAndRecreated) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directories(root / "sub");
  WriteFile(root / "a.yaml", "x");
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  // git-checkout-like: the whole tree removed, and some time later written again. Only the
  // parent's watch can tell when the root's name comes back.
  fs::remove_all(root);
  ASSERT_TRUE(rec.WaitForRescan());
  const size_t removed = rec.count();
  fs::create_directories(root / "sub");
  WriteFile(root / "b.yaml", "y");
  WriteFile(root / "sub" / "c.yaml", "z");
  ASSERT_TRUE(rec.WaitForRescan(removed));

  const size_t from = rec.count();
  WriteFile(root / "d.yaml", "new");
  WriteFile(root / "sub" / "e.yaml", "new");
  EXPECT_TRUE(rec.WaitForPath(root / "d.yaml", from));
  EXPECT_TRUE(rec.WaitForPath(root / "sub" / "e.yaml", from));
}

TEST(Watcher, Watcher_FollowsNewDirectoryRenamedOverRoot) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  const fs::path old = tmp.path() / "m.d.old";
  const fs::path next = tmp.path() / ".m.d.next";
  fs::create_directory(root);
  WriteFile(root / "a.yaml", "x");
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  fs::create_directory(next);
  WriteFile(next / "b.yaml", "y");
  fs::rename(root, old);
  fs::rename(next, root);
  ASSERT_TRUE(rec.WaitForRescan());

  // The old tree is no longer reported under the root's name; the new one is. Events queue in
  // order, so a stale report of the first write would arrive no later than the second.
  const size_t from = rec.count();
  WriteFile(old / "stale.yaml", "old tree");
  WriteFile(root / "c.yaml", "new tree");
  ASSERT_TRUE(rec.WaitForPath(root / "c.yaml", from));
  EXPECT_FALSE(Reported(rec.batches(), root / "stale.yaml"));
}

TEST(Watcher, Watcher_FollowsAtomicSwapOfRootSymlink) {
  TempDir tmp;
  const fs::path v1 = tmp.path() / "rev1";
  const fs::path v2 = tmp.path() / "rev2";
  const fs::path root = tmp.path() / "current";
  fs::create_directory(v1);
  fs::create_directory(v2);
  WriteFile(v1 / "a.yaml", "1");
  WriteFile(v2 / "a.yaml", "2");
  fs::create_directory_symlink("rev1", root);
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  // Paths are spelled under the root as given, not resolved.
  WriteFile(v1 / "b.yaml", "b");
  ASSERT_TRUE(rec.WaitForPath(root / "b.yaml"));

  // ln -s rev2 tmp && mv -T tmp current
  const size_t afterB = rec.count();
  fs::create_directory_symlink("rev2", tmp.path() / "current.tmp");
  fs::rename(tmp.path() / "current.tmp", root);
  ASSERT_TRUE(rec.WaitForRescan(afterB));

  const size_t from = rec.count();
  WriteFile(v1 / "stale.yaml", "old target");
  WriteFile(v2 / "c.yaml", "new target");
  ASSERT_TRUE(rec.WaitForPath(root / "c.yaml", from));
  EXPECT_FALSE(Reported(rec.batches(), root / "stale.yaml"));
}

TEST(Watcher, Watcher_RescansOnConfigMapDataSymlinkSwap) {
  TempDir tmp;
  const fs::path root = tmp.path() / "config";
  fs::create_directories(root / "..2026_1");
  fs::create_directories(root / "..2026_2");
  WriteFile(root / "..2026_1" / "a.yaml", "1");
  WriteFile(root / "..2026_2" / "a.yaml", "2");
  fs::create_directory_symlink("..2026_1", root / "..data");
  fs::create_symlink("..data/a.yaml", root / "a.yaml");
  // What the kubelet does: new ..data_tmp -> ..2026_2 (prepared here, before the watch), then
  // renamed over ..data: the rename is the only event.
  fs::create_directory_symlink("..2026_2", root / "..data_tmp");
  Recorder rec;
  auto w = StartWatching({root}, rec);
  ASSERT_TRUE(w);

  fs::rename(root / "..data_tmp", root / "..data");

  ASSERT_TRUE(rec.WaitForRescan());
  EXPECT_EQ(fs::read_symlink(root / "..data"), "..2026_2");
  const ChangeSet first = rec.batches().front();
  EXPECT_TRUE(first.rescan);
  EXPECT_TRUE(first.paths.empty());  // nothing under a hidden name is reported as a path

  // The old revision is then deleted: structural again.
  const size_t from = rec.count();
  fs::remove_all(root / "..2026_1");
  EXPECT_TRUE(rec.WaitForRescan(from));
}

TEST(Watcher, Watcher_WatchesTwoRootsIndependently) {
  TempDir tmp;
  const fs::path r1 = tmp.path() / "one";
  const fs::path r2 = tmp.path() / "two";  // same parent as r1: one shared parent watch
  fs::create_directory(r1);
  fs::create_directory(r2);
  Recorder rec;
  auto w = StartWatching({r1, r2}, rec);
  ASSERT_TRUE(w);

  WriteFile(r1 / "a.yaml", "a");
  WriteFile(r2 / "b.yaml", "b");
  ASSERT_TRUE(rec.WaitForPath(r1 / "a.yaml"));
  ASSERT_TRUE(rec.WaitForPath(r2 / "b.yaml"));

  // Replacing one root leaves the other watched.
  fs::remove_all(r2);
  fs::create_directory(r2);
  ASSERT_TRUE(rec.WaitForRescan());
  const size_t from = rec.count();
  WriteFile(r1 / "c.yaml", "c");
  WriteFile(r2 / "d.yaml", "d");
  EXPECT_TRUE(rec.WaitForPath(r1 / "c.yaml", from));
  EXPECT_TRUE(rec.WaitForPath(r2 / "d.yaml", from));
}

TEST(Watcher, Watcher_ReportsAbsolutePathsSpelledUnderRootAsGiven) {
  TempDir tmp;
  fs::create_directory(tmp.path() / "rev1");
  fs::create_directory_symlink("rev1", tmp.path() / "current");
  // Relative to the working directory (which getcwd() gives without symlinks), with a trailing
  // slash, through a symlink.
  const fs::path cwd = fs::current_path().relative_path();  // "a/b/c": up by "../../.."
  fs::path relative;
  for (auto n = std::distance(cwd.begin(), cwd.end()); n > 0; --n) relative /= "..";
  relative /= tmp.path().relative_path() / "current" / "";
  Recorder rec;
  auto w = StartWatching({relative}, rec);
  ASSERT_TRUE(w);

  WriteFile(tmp.path() / "rev1" / "a.yaml", "x");
  ASSERT_TRUE(rec.WaitForPath(tmp.path() / "current" / "a.yaml"));

  // The root's name ("current", despite the trailing slash) is what the parent watch follows.
  const size_t beforeSwap = rec.count();
  fs::create_directory(tmp.path() / "rev2");
  fs::create_directory_symlink("rev2", tmp.path() / "current.tmp");
  fs::rename(tmp.path() / "current.tmp", tmp.path() / "current");
  ASSERT_TRUE(rec.WaitForRescan(beforeSwap));
  const size_t from = rec.count();
  WriteFile(tmp.path() / "rev2" / "b.yaml", "y");
  EXPECT_TRUE(rec.WaitForPath(tmp.path() / "current" / "b.yaml", from));
}

TEST(Watcher, Watcher_FlushesContinuousBurstWithinMaxDelay) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  Recorder rec;
  auto w = StartWatching({root}, rec, /*debounce=*/200ms, /*maxDelay=*/400ms);
  ASSERT_TRUE(w);

  // Changes every 20 ms for up to 3 s never leave 200 ms of quiet: only maxDelay can end a batch.
  const auto burstEnd = Clock::now() + std::chrono::seconds(3);
  int i = 0;
  while (Clock::now() < burstEnd && rec.count() == 0) {
    WriteFile(root / ("f" + std::to_string(i++ % 10) + ".yaml"), "x");
    std::this_thread::sleep_for(20ms);  // pacing of the burst, not an assertion
  }
  EXPECT_GE(rec.count(), 1u) << "no batch during a 3 s burst with maxDelay 400 ms";
}

// The last `spin` of the quiet time is waited awake. Awake or asleep, the batch never comes
// before the quiet time after its last event, and an event during the spin extends it.
TEST(Watcher, Watcher_KeepsTheQuietTimeWhetherItSleepsOrSpins) {
  for (const auto spin : {std::chrono::microseconds(0), std::chrono::microseconds(1s)}) {
    SCOPED_TRACE("spin " + std::to_string(spin.count()) + " us");
    TempDir tmp;
    const fs::path root = tmp.path() / "m.d";
    fs::create_directory(root);
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::pair<ChangeSet, Clock::time_point>> batches;
    Watcher::Options opts;
    opts.roots = {root};
    opts.debounce = 300ms;
    opts.maxDelay = 5s;
    opts.spin = spin;  // 1 s: longer than the quiet time, so the whole of it is spun
    auto w = Watcher::Start(opts, [&](const ChangeSet& cs) {
      std::lock_guard lock(mu);
      batches.emplace_back(cs, Clock::now());
      cv.notify_all();
    });
    ASSERT_TRUE(w) << w.error().message;

    WriteFile(root / "a.yaml", "a");
    std::this_thread::sleep_for(30ms);  // well within the quiet time (pacing, not an assertion)
    const Clock::time_point before_last = Clock::now();
    WriteFile(root / "b.yaml", "b");

    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, kExpectTimeout, [&] { return !batches.empty(); }));
    const auto& [batch, at] = batches.front();
    EXPECT_TRUE(batch.paths.contains(root / "a.yaml"));
    EXPECT_TRUE(batch.paths.contains(root / "b.yaml")) << "the second write was in the quiet time";
    EXPECT_GE(at - before_last, opts.debounce) << "delivered before the quiet time ended";
  }
}

TEST(Watcher, Watcher_RescansAfterKernelQueueOverflow) {
  long maxQueued = 0;
  std::ifstream("/proc/sys/fs/inotify/max_queued_events") >> maxQueued;
  if (maxQueued <= 0 || maxQueued > 200000) GTEST_SKIP() << "max_queued_events " << maxQueued;

  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  Recorder rec;
  auto record = rec.callback();
  Watcher::Options opts;
  opts.roots = {root};
  // The first callback holds the watcher thread while the kernel queue overflows.
  auto started = Watcher::Start(opts, [&](const ChangeSet& cs) {
    record(cs);
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return release; });
  });
  ASSERT_TRUE(started) << started.error().message;
  WriteFile(root / "first.yaml", "x");
  ASSERT_TRUE(rec.WaitForPath(root / "first.yaml"));

  const int fd = ::open((root / "busy.yaml").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ::close(fd);
  for (long n = 0; n < maxQueued + 64; ++n) {  // IN_MODIFY + IN_CLOSE_WRITE each: 2x enough
    const int f = ::open((root / "busy.yaml").c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(f, 0);
    WriteAll(f, "x");
    ::close(f);
  }
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  EXPECT_TRUE(rec.WaitForRescan(1));
}

TEST(Watcher, Watcher_DestructorReturnsPromptlyWithNoCallbackAfter) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  {
    // A batch is pending (10 s debounce) when the watcher is destroyed: it is dropped.
    Recorder rec;
    auto w = StartWatching({root}, rec, 10s, 10s);
    ASSERT_TRUE(w);
    WriteFile(root / "a.yaml", "x");
    const auto t0 = Clock::now();
    w.reset();
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(1));
    EXPECT_EQ(rec.count(), 0u);
  }
  {
    // A callback in progress finishes before the destructor returns; none starts after.
    std::atomic<bool> inCallback{false};
    std::atomic<bool> destroyed{false};
    std::atomic<int> afterDestroy{0};
    std::atomic<int> calls{0};
    Watcher::Options opts;
    opts.roots = {root};
    opts.debounce = 1ms;
    auto started = Watcher::Start(opts, [&](const ChangeSet&) {
      if (destroyed.load()) afterDestroy.fetch_add(1);
      calls.fetch_add(1);
      inCallback.store(true);
      std::this_thread::sleep_for(500ms);  // a slow consumer
      inCallback.store(false);
    });
    ASSERT_TRUE(started) << started.error().message;
    std::unique_ptr<Watcher> w = std::move(started).value();
    WriteFile(root / "b.yaml", "x");
    const auto deadline = Clock::now() + kExpectTimeout;
    while (!inCallback.load() && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
    ASSERT_TRUE(inCallback.load());
    WriteFile(root / "c.yaml", "x");  // would make a second batch if the watcher kept going
    const auto t0 = Clock::now();
    w.reset();
    destroyed.store(true);
    EXPECT_FALSE(inCallback.load());
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
    EXPECT_EQ(afterDestroy.load(), 0);
    EXPECT_EQ(calls.load(), 1);
  }
}

TEST(Watcher, Watcher_PreviewsCompletePathsBeforeTheQuietTimeEndsNeverOpenOnes) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  std::mutex mu;
  std::vector<std::pair<std::string, ChangeSet>> seen;  // in order: "preview" or "batch"
  std::condition_variable cv;
  auto record = [&](const char* what) {
    return [&, what](const ChangeSet& cs) {
      std::lock_guard lock(mu);
      seen.emplace_back(what, cs);
      cv.notify_all();
    };
  };
  Watcher::Options opts;
  opts.roots = {root};
  opts.debounce = 300ms;
  opts.preview = record("preview");
  auto w = Watcher::Start(opts, record("batch"));
  ASSERT_TRUE(w) << w.error().message;

  const int open_fd = ::open((root / "b.yaml").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(open_fd, 0);
  WriteAll(open_fd, "half");
  ReplaceFile(root / "a.yaml", "whole");

  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, kExpectTimeout, [&] {
    return std::any_of(seen.begin(), seen.end(), [](const auto& s) { return s.first == "batch"; });
  }));
  size_t first_preview = seen.size(), first_batch = seen.size();
  for (size_t i = 0; i < seen.size(); ++i) {
    const auto& [what, cs] = seen[i];
    EXPECT_FALSE(cs.paths.contains(root / "b.yaml")) << what << " reported a file open for writing";
    if (what == "preview" && cs.paths.contains(root / "a.yaml")) {
      first_preview = std::min(first_preview, i);
    }
    if (what == "batch") first_batch = std::min(first_batch, i);
  }
  EXPECT_LT(first_preview, first_batch) << "no preview of a.yaml before its batch";
  EXPECT_TRUE(seen[first_batch].second.paths.contains(root / "a.yaml"));
  lock.unlock();
  ::close(open_fd);
}

TEST(Watcher, Watcher_StartFailsForRootThatCannotBeWatched) {
  TempDir tmp;
  Recorder rec;
  auto missing = Watcher::Start({.roots = {tmp.path() / "absent"}}, rec.callback());
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("absent"), std::string::npos) << missing.error().message;

  WriteFile(tmp.path() / "file", "x");
  auto notDir = Watcher::Start({.roots = {tmp.path() / "file"}}, rec.callback());
  ASSERT_FALSE(notDir);
  EXPECT_NE(notDir.error().message.find("Not a directory"), std::string::npos)
      << notDir.error().message;

  auto none = Watcher::Start({}, rec.callback());
  EXPECT_FALSE(none);
}

std::string TenantManifest() {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\n";
}

std::string PoolManifest(int warm) {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata: {name: web, tenant: acme}\n"
         "spec:\n  image: {kernel: vmlinux, rootfs: rootfs.ext4}\n  replicas: {warm: " +
         std::to_string(warm) + "}\n";
}

// Parsing ahead during the quiet time changes nothing a consumer sees: one delivery per quiet
// batch, the final content of every file, a diff against the last delivery, last-known-good.
TEST(ManifestSource, ParsesAheadYetDeliversOnePerQuietBatchWithTheDiffSinceTheLast) {
  TempDir tmp;
  const fs::path root = tmp.path() / "m.d";
  fs::create_directory(root);
  WriteFile(root / "tenant.yaml", TenantManifest());
  struct Delivery {
    std::shared_ptr<const mvm::manifests::DesiredState> state;
    mvm::manifests::Diff diff;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Delivery> got;
  std::vector<std::shared_ptr<const mvm::manifests::DesiredState>> staged;
  mvm::manifests::ManifestSource::Options options;
  options.roots = {root};
  options.debounce = 300ms;
  options.staged = [&](std::shared_ptr<const mvm::manifests::DesiredState> state) {
    std::lock_guard lock(mu);
    staged.push_back(std::move(state));
  };
  auto source = mvm::manifests::ManifestSource::Start(
      options, [&](std::shared_ptr<const mvm::manifests::DesiredState> state,
                   const mvm::manifests::Diff& diff) {
        std::lock_guard lock(mu);
        got.push_back({std::move(state), diff});
        cv.notify_all();
      });
  ASSERT_TRUE(source) << source.error().message;
  auto wait_for = [&](size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kExpectTimeout, [&] { return got.size() >= n; });
  };
  ASSERT_TRUE(wait_for(1));  // the initial snapshot
  const auto key = mvm::manifests::ObjectKey::PoolKey("acme", "web");

  // Two versions inside one quiet time (each complete, so each parsed ahead): one delivery.
  size_t staged_before_broken = 0;
  ReplaceFile(root / "web.yaml", PoolManifest(1));
  std::this_thread::sleep_for(50ms);
  ReplaceFile(root / "web.yaml", PoolManifest(2));
  ASSERT_TRUE(wait_for(2));
  std::this_thread::sleep_for(600ms);  // no second delivery for the same batch
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(got.size(), 2u);
    const Delivery& d = got[1];
    ASSERT_NE(d.state->Find(key), nullptr);
    EXPECT_EQ(d.state->Find(key)->pool()->replicas.warm, 2);
    EXPECT_EQ(d.diff.added, std::vector<mvm::manifests::ObjectKey>{key});
    EXPECT_TRUE(d.diff.changed.empty());
    EXPECT_GT(d.state->revision, got[0].state->revision);
    EXPECT_EQ(source.value()->Current(), d.state);
    // Shown as staged while the quiet time ran (each version, unless the watcher read both
    // at once): the last one staged is what was delivered.
    ASSERT_FALSE(staged.empty());
    ASSERT_LE(staged.size(), 2u);
    EXPECT_EQ(staged.back(), d.state);
    staged_before_broken = staged.size();
  }

  // A broken version: delivered with its error, the last good pool kept, nothing changed.
  ReplaceFile(root / "web.yaml", "kind: Pool\nmetadata: [broken");
  ASSERT_TRUE(wait_for(3));
  {
    std::lock_guard lock(mu);
    const Delivery& d = got[2];
    EXPECT_FALSE(d.state->diagnostics.empty());
    ASSERT_NE(d.state->Find(key), nullptr);
    EXPECT_EQ(d.state->Find(key)->pool()->replicas.warm, 2);
    EXPECT_TRUE(d.diff.empty());
    ASSERT_EQ(staged.size(), staged_before_broken + 1);
    EXPECT_EQ(staged.back(), d.state);
  }
}

}  // namespace
}  // namespace mvm::manifests
