// Tests of the SQLite Store (controller/sqlite_store.h), the spec codec and the model helpers.

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <json/reader.h>
#include <json/writer.h>

#include "controller/model.h"
#include "controller/spec_codec.h"
#include "controller/sqlite_store.h"
#include "controller/store.h"
#include "tests/test_util.h"

namespace mvm::controller {
namespace {

using manifests::PoolSpec;
using mvm::testing::TempDir;

PoolSpec FullSpec() {
  PoolSpec spec;
  spec.runtime = manifests::Runtime::kQemu;
  spec.image.kernel = "/var/lib/mvm/images/vmlinux-6.1";
  spec.image.rootfs = "/var/lib/mvm/images/rootfs.ext4";
  spec.image.initrd = "/var/lib/mvm/images/initrd.img";
  spec.image.bootArgs = "console=ttyS0 quiet \"quoted\" \\ back\nslash";
  spec.cmd = {"/app/bin/worker", "--queue", "jobs", ""};
  spec.env = {{"QUEUE", "jobs"}, {"EMPTY", ""}, {"UNICODE", "h\xc3\xa9llo"}};
  spec.resources = {4, 8LL * 1024 * 1024 * 1024 * 1024, 9'000'000'000'000LL, {1 << 20, 2, 3, 4}};
  spec.lifecycle = manifests::Lifecycle::kJob;
  spec.replicas = {3, 2, 1};
  spec.policy = {60, 30, 300, 900, 31, 16};
  spec.security.seccomp = "strict";
  spec.snapshot.base = true;
  return spec;
}

std::string SpecText(const PoolSpec& spec) {
  Json::StreamWriterBuilder builder;
  builder["indentation"] = "";
  return Json::writeString(builder, PoolSpecToJson(spec));
}

void ExpectSameSpec(const PoolSpec& a, const PoolSpec& b) {
  EXPECT_EQ(a.runtime, b.runtime);
  EXPECT_EQ(a.image.kernel, b.image.kernel);
  EXPECT_EQ(a.image.rootfs, b.image.rootfs);
  EXPECT_EQ(a.image.initrd, b.image.initrd);
  EXPECT_EQ(a.image.bootArgs, b.image.bootArgs);
  EXPECT_EQ(a.cmd, b.cmd);
  EXPECT_EQ(a.env, b.env);
  EXPECT_EQ(a.resources.vcpus, b.resources.vcpus);
  EXPECT_EQ(a.resources.memoryMiB, b.resources.memoryMiB);
  EXPECT_EQ(a.resources.diskMiB, b.resources.diskMiB);
  EXPECT_EQ(a.resources.io.readBps, b.resources.io.readBps);
  EXPECT_EQ(a.resources.io.writeBps, b.resources.io.writeBps);
  EXPECT_EQ(a.resources.io.readIops, b.resources.io.readIops);
  EXPECT_EQ(a.resources.io.writeIops, b.resources.io.writeIops);
  EXPECT_EQ(a.lifecycle, b.lifecycle);
  EXPECT_EQ(a.replicas, b.replicas);
  EXPECT_EQ(a.policy.minRunningSeconds, b.policy.minRunningSeconds);
  EXPECT_EQ(a.policy.minWarmSeconds, b.policy.minWarmSeconds);
  EXPECT_EQ(a.policy.idleToWarmSeconds, b.policy.idleToWarmSeconds);
  EXPECT_EQ(a.policy.warmToSleepSeconds, b.policy.warmToSleepSeconds);
  EXPECT_EQ(a.policy.drainTimeoutSeconds, b.policy.drainTimeoutSeconds);
  EXPECT_EQ(a.policy.gracefulStopSeconds, b.policy.gracefulStopSeconds);
  EXPECT_EQ(a.security.seccomp, b.security.seccomp);
  EXPECT_EQ(a.snapshot.base, b.snapshot.base);
}

void ExpectSameInstance(const Instance& a, const Instance& b) {
  EXPECT_EQ(a.key, b.key);
  EXPECT_EQ(a.pool, b.pool);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.target, b.target);
  EXPECT_EQ(a.specHash, b.specHash);
  EXPECT_EQ(a.generation, b.generation);
  ASSERT_EQ(a.spec == nullptr, b.spec == nullptr) << a.key.ToString();
  if (a.spec) ExpectSameSpec(*a.spec, *b.spec);
  EXPECT_EQ(a.handle, b.handle);
  EXPECT_EQ(a.createdAtMs, b.createdAtMs);
  EXPECT_EQ(a.stateSinceMs, b.stateSinceMs);
  EXPECT_EQ(a.updatedAtMs, b.updatedAtMs);
  EXPECT_EQ(a.failures, b.failures);
  EXPECT_EQ(a.lastError, b.lastError);
  EXPECT_EQ(a.failed, b.failed);
  EXPECT_EQ(a.pending, b.pending);
}

std::shared_ptr<const PoolSpec> SharedSpec() {
  static const auto spec = std::make_shared<const PoolSpec>(FullSpec());
  return spec;
}

Instance MakeInstance(const std::string& tenant, const std::string& pool, int i) {
  Instance in;
  in.key = {tenant, pool + "-" + std::to_string(i)};
  in.pool = pool;
  in.state = InstanceState::kRunning;
  in.target = InstanceState::kWarm;
  in.specHash = "0123456789abcdef";
  in.generation = 3;
  in.spec = SharedSpec();
  in.handle.pid = 1000 + i;
  in.handle.startTime = 123456789ULL + static_cast<uint64_t>(i);
  in.handle.socket = "/run/mvm/" + tenant + "/" + in.key.name + "/api.sock";
  in.handle.data = R"({"driver":"qemu","qmp":"/run/mvm/qmp.sock"})";
  in.createdAtMs = 1'700'000'000'000 + i;
  in.stateSinceMs = in.createdAtMs + 5;
  in.updatedAtMs = in.createdAtMs + 7;
  return in;
}

std::unique_ptr<Store> OpenOrDie(const std::filesystem::path& dir, int eventsPerObject = 64) {
  Store::Options options;
  options.dir = dir;
  options.eventsPerObject = eventsPerObject;
  Result<std::unique_ptr<Store>> store = Store::Open(options);
  if (!store) ADD_FAILURE() << store.error().message;
  return store ? std::move(*store) : nullptr;
}

// A raw connection to state.db, for tampering the way an attacker with file access would
// (while mvmd is stopped: a running store keeps the database locked).
class RawDb {
 public:
  explicit RawDb(const std::filesystem::path& dir, int busyTimeoutMs = 5000) {
    if (sqlite3_open((dir / "state.db").c_str(), &db_) != SQLITE_OK) ADD_FAILURE() << "open";
    sqlite3_busy_timeout(db_, busyTimeoutMs);
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;
  int TryExec(const std::string& sql) {
    return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
  }
  void Exec(const std::string& sql) {
    char* error = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << (error ? error : "?");
      sqlite3_free(error);
    }
  }
  int64_t Count(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      n = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    return n;
  }

 private:
  sqlite3* db_ = nullptr;
};

// --- model ---

TEST(Model, StateAndActionNamesRoundTrip) {
  for (InstanceState s : {InstanceState::kCreated, InstanceState::kReady, InstanceState::kRunning,
                          InstanceState::kWarm, InstanceState::kSleeping, InstanceState::kStopped,
                          InstanceState::kDestroyed}) {
    EXPECT_EQ(ParseState(StateName(s)), s);
  }
  EXPECT_EQ(StateName(InstanceState::kSleeping), "Sleeping");
  EXPECT_EQ(ParseState("running"), std::nullopt);
  for (Action a :
       {Action::kPrepare, Action::kStart, Action::kPause, Action::kResume, Action::kSleep,
        Action::kWake, Action::kStop, Action::kRebuild, Action::kDestroy}) {
    EXPECT_EQ(ParseAction(ActionName(a)), a);
  }
  EXPECT_EQ(ActionName(Action::kWake), "wake");
  EXPECT_EQ(ParseAction("Start"), std::nullopt);
  EXPECT_GT(NowMs(), 1'600'000'000'000);
}

// --- spec codec ---

TEST(SpecCodec, RoundTripsEveryField) {
  const PoolSpec spec = FullSpec();
  Result<PoolSpec> back = PoolSpecFromJson(PoolSpecToJson(spec));
  ASSERT_TRUE(back) << back.error().message;
  ExpectSameSpec(spec, *back);
  // Through text as well, the way the store keeps it.
  Json::Value parsed;
  std::istringstream in(SpecText(spec));
  ASSERT_TRUE(Json::parseFromStream(Json::CharReaderBuilder(), in, &parsed, nullptr));
  Result<PoolSpec> again = PoolSpecFromJson(parsed);
  ASSERT_TRUE(again) << again.error().message;
  ExpectSameSpec(spec, *again);
}

TEST(SpecCodec, KeepsAbsentAndEmptyInitrdApart) {
  PoolSpec spec = FullSpec();
  spec.image.initrd.reset();
  EXPECT_TRUE(PoolSpecToJson(spec)["image"]["initrd"].isNull());
  EXPECT_EQ(PoolSpecFromJson(PoolSpecToJson(spec))->image.initrd, std::nullopt);
  spec.image.initrd = "";
  EXPECT_EQ(PoolSpecFromJson(PoolSpecToJson(spec))->image.initrd, std::optional<std::string>(""));
}

TEST(SpecCodec, MissingMembersTakeDefaults) {
  Result<PoolSpec> spec = PoolSpecFromJson(Json::Value(Json::objectValue));
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(spec->resources.memoryMiB, PoolSpec().resources.memoryMiB);
  EXPECT_EQ(spec->policy.drainTimeoutSeconds, 30);
}

TEST(SpecCodec, RejectsWrongTypeNamingTheField) {
  Json::Value json = PoolSpecToJson(FullSpec());
  json["resources"]["vcpus"] = "four";
  Result<PoolSpec> spec = PoolSpecFromJson(json);
  ASSERT_FALSE(spec);
  EXPECT_EQ(spec.error().message, "spec.resources.vcpus: expected an integer");

  json = PoolSpecToJson(FullSpec());
  json["lifecycle"] = "forever";
  EXPECT_NE(PoolSpecFromJson(json).error().message.find("spec.lifecycle"), std::string::npos);
  json = PoolSpecToJson(FullSpec());
  json["env"]["QUEUE"] = 3;
  EXPECT_EQ(PoolSpecFromJson(json).error().message, "spec.env.QUEUE: expected a string");
  json = PoolSpecToJson(FullSpec());
  json["replicas"]["warm"] = Json::Int64{1} << 40;
  EXPECT_EQ(PoolSpecFromJson(json).error().message, "spec.replicas.warm: integer out of range");
}

// --- instances ---

TEST(Store, RoundTripsEveryInstanceFieldAcrossRestart) {
  TempDir dir;
  Instance a = MakeInstance("acme", "workers", 1);
  a.failures = 3;
  a.lastError = "boot timed out\nafter 30 s";
  a.failed = true;
  a.pending = Action::kSleep;
  a.generation = ~0ULL;  // all 64 bits
  a.handle.startTime = ~0ULL - 1;
  a.handle.pid = -1;
  Instance b = MakeInstance("acme", "workers", 2);
  b.spec = nullptr;
  b.specHash = "";
  b.state = InstanceState::kCreated;
  b.target = InstanceState::kDestroyed;
  b.handle = {};
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->PutInstance(a));
    ASSERT_TRUE(store->PutInstance(b));
    ExpectSameInstance(*store->GetInstance(a.key), a);
  }
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store);
  ASSERT_EQ(store->InstanceCount(), 2u);
  ExpectSameInstance(*store->GetInstance(a.key), a);
  ExpectSameInstance(*store->GetInstance(b.key), b);
  EXPECT_EQ(store->GetInstance({"acme", "workers-3"}), std::nullopt);
}

TEST(Store, InternsSpecsByHash) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    for (int i = 0; i < 200; ++i) {
      Instance in = MakeInstance("acme", "workers", i);
      in.spec = std::make_shared<const PoolSpec>(FullSpec());  // a distinct object each time
      ASSERT_TRUE(store->PutInstance(in));
    }
    const std::vector<Instance> all = store->ListPool("acme", "workers");
    ASSERT_EQ(all.size(), 200u);
    for (const Instance& in : all) EXPECT_EQ(in.spec.get(), all.front().spec.get());
  }
  EXPECT_EQ(RawDb(dir.path()).Count("SELECT COUNT(*) FROM specs"), 1);
  auto store = OpenOrDie(dir.path());
  const std::vector<Instance> all = store->ListInstances();
  ASSERT_EQ(all.size(), 200u);
  for (const Instance& in : all) EXPECT_EQ(in.spec.get(), all.front().spec.get());
  ExpectSameSpec(*all.front().spec, FullSpec());
}

TEST(Store, InstancePutWithoutSpecGetsTheStoredSpecOfItsHash) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store->PutInstance(MakeInstance("acme", "workers", 1)));
  Instance bare = MakeInstance("acme", "workers", 2);
  bare.spec = nullptr;
  ASSERT_TRUE(store->PutInstance(bare));
  EXPECT_EQ(store->GetInstance(bare.key)->spec, store->GetInstance({"acme", "workers-1"})->spec);
}

TEST(Store, RejectsSpecWithoutHash) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  Instance in = MakeInstance("acme", "workers", 1);
  in.specHash.clear();
  const Status s = store->PutInstance(in);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("acme/workers-1"), std::string::npos);
  EXPECT_EQ(store->InstanceCount(), 0u);
}

TEST(Store, ListPoolAndForEachInPoolSeeOnlyThatPoolInNameOrder) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  for (int i : {3, 1, 2}) ASSERT_TRUE(store->PutInstance(MakeInstance("acme", "workers", i)));
  ASSERT_TRUE(store->PutInstance(MakeInstance("acme", "web", 1)));
  ASSERT_TRUE(store->PutInstance(MakeInstance("other", "workers", 9)));
  std::vector<std::string> names;
  store->ForEachInPool("acme", "workers",
                       [&](const Instance& in) { names.push_back(in.key.name); });
  EXPECT_EQ(names, (std::vector<std::string>{"workers-1", "workers-2", "workers-3"}));
  EXPECT_EQ(store->ListPool("acme", "web").size(), 1u);
  EXPECT_TRUE(store->ListPool("acme", "nope").empty());

  // Moving an instance to another pool moves it in the index; deleting removes it.
  Instance moved = MakeInstance("acme", "workers", 2);
  moved.pool = "web";
  ASSERT_TRUE(store->PutInstance(moved));
  EXPECT_EQ(store->ListPool("acme", "workers").size(), 2u);
  EXPECT_EQ(store->ListPool("acme", "web").size(), 2u);
  ASSERT_TRUE(store->DeleteInstance({"acme", "workers-1"}));
  ASSERT_TRUE(store->DeleteInstance({"acme", "does-not-exist"}));
  EXPECT_EQ(store->ListPool("acme", "workers").size(), 1u);
  EXPECT_EQ(store->InstanceCount(), 4u);
  store.reset();
  store = OpenOrDie(dir.path());
  EXPECT_EQ(store->InstanceCount(), 4u);
  EXPECT_EQ(store->GetInstance({"acme", "workers-1"}), std::nullopt);
  EXPECT_EQ(store->ListPool("acme", "web").size(), 2u);
}

// A Put is in the database files the moment it returns: a copy of state.db and its WAL taken
// right then (what a crash of mvmd leaves behind) holds it, without any close or checkpoint.
TEST(Store, PutIsOnDiskWhenItReturns) {
  TempDir dir;
  TempDir copy;
  auto store = OpenOrDie(dir / "state");
  const Instance in = MakeInstance("acme", "workers", 7);
  ASSERT_TRUE(store->PutInstance(in));
  for (const char* file : {"state.db", "state.db-wal"}) {
    std::filesystem::copy_file(dir / "state" / file, copy / file);
  }
  auto recovered = OpenOrDie(copy.path());
  ASSERT_TRUE(recovered);
  ASSERT_TRUE(recovered->GetInstance(in.key));
  ExpectSameInstance(*recovered->GetInstance(in.key), in);
}

// Copies the database files as they are now and opens the copy: what a crash now would leave.
std::unique_ptr<Store> CrashCopy(const std::filesystem::path& dir,
                                 const std::filesystem::path& to) {
  for (const char* file : {"state.db", "state.db-wal"}) {
    std::filesystem::copy_file(dir / file, to / file,
                               std::filesystem::copy_options::overwrite_existing);
  }
  return OpenOrDie(to);
}

TEST(Store, QueuedPutIsVisibleAtOnceAndDurableWithTheNextWaitedWrite) {
  TempDir dir;
  TempDir copy;
  auto store = OpenOrDie(dir / "state");
  Instance a = MakeInstance("acme", "workers", 1);
  ASSERT_TRUE(store->PutInstance(a));
  a.state = InstanceState::kWarm;
  a.generation = 4;
  ASSERT_TRUE(store->PutInstanceQueued(a));
  ASSERT_TRUE(store->GetInstance(a.key));
  ExpectSameInstance(*store->GetInstance(a.key), a);  // readers see it before it is durable
  // Any waited write submitted after it commits it first (the store commits in order).
  ASSERT_TRUE(store->PutInstance(MakeInstance("acme", "workers", 2)));
  auto recovered = CrashCopy(dir / "state", copy.path());
  ASSERT_TRUE(recovered);
  ASSERT_TRUE(recovered->GetInstance(a.key));
  ExpectSameInstance(*recovered->GetInstance(a.key), a);
}

TEST(Store, QueuedPutAloneIsCommittedByTheFlusher) {
  TempDir dir;
  auto store = OpenOrDie(dir / "state");
  const Instance a = MakeInstance("acme", "workers", 1);
  ASSERT_TRUE(store->PutInstanceQueued(a));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool durable = false;
  while (!durable && std::chrono::steady_clock::now() < deadline) {
    TempDir copy;
    auto recovered = CrashCopy(dir / "state", copy.path());
    durable = recovered && recovered->GetInstance(a.key).has_value();
    if (!durable) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(durable) << "a queued put with no write after it was never committed";
}

TEST(Store, QueuedAndWaitedWritesOfOneKeyEndInSubmissionOrder) {
  TempDir dir;
  TempDir copy;
  auto store = OpenOrDie(dir / "state");
  Instance a = MakeInstance("acme", "workers", 1);
  // queued, queued, waited: the waited one is the last word, in memory and on disk.
  for (int g = 10; g <= 12; ++g) {
    a.generation = g;
    ASSERT_TRUE(g < 12 ? store->PutInstanceQueued(a) : store->PutInstance(a));
    EXPECT_EQ(store->GetInstance(a.key)->generation, g);
  }
  // waited, then queued: the queued one stands.
  a.generation = 13;
  ASSERT_TRUE(store->PutInstanceQueued(a));
  EXPECT_EQ(store->GetInstance(a.key)->generation, 13);
  // queued, then delete: gone; queued after the delete: back.
  Instance b = MakeInstance("acme", "workers", 2);
  ASSERT_TRUE(store->PutInstanceQueued(b));
  ASSERT_TRUE(store->DeleteInstance(b.key));
  EXPECT_FALSE(store->GetInstance(b.key));
  Instance c = MakeInstance("acme", "workers", 3);
  ASSERT_TRUE(store->PutInstance(c));
  ASSERT_TRUE(store->DeleteInstance(c.key));
  ASSERT_TRUE(store->PutInstanceQueued(c));
  EXPECT_TRUE(store->GetInstance(c.key));
  ASSERT_TRUE(store->PutInstance(MakeInstance("acme", "workers", 4)));  // commits all before it
  auto recovered = CrashCopy(dir / "state", copy.path());
  ASSERT_TRUE(recovered);
  ASSERT_TRUE(recovered->GetInstance(a.key));
  EXPECT_EQ(recovered->GetInstance(a.key)->generation, 13);
  EXPECT_FALSE(recovered->GetInstance(b.key));
  EXPECT_TRUE(recovered->GetInstance(c.key));
  EXPECT_EQ(recovered->ListPool("acme", "workers").size(), 3u);
}

TEST(Store, QueuedPutsNeverShowReadersAnOlderRecord) {
  TempDir dir;
  auto store = OpenOrDie(dir / "state");
  constexpr int kKeys = 4;
  constexpr int kRounds = 400;
  std::atomic<bool> done{false};
  std::atomic<int> regressions{0};
  // One writer per key (as the controller's stripe lock gives), mixing queued and waited puts
  // while other ops commit; readers check each key's generation only grows.
  std::vector<std::thread> writers;
  for (int k = 0; k < kKeys; ++k) {
    writers.emplace_back([&, k] {
      Instance in = MakeInstance("acme", "workers", k);
      for (int g = 1; g <= kRounds; ++g) {
        in.generation = g;
        const bool ok =
            g % 3 == 0 ? store->PutInstance(in).ok() : store->PutInstanceQueued(in).ok();
        if (!ok) ADD_FAILURE() << "put failed";
      }
    });
  }
  std::thread reader([&] {
    std::vector<uint64_t> seen(kKeys, 0);
    while (!done) {
      for (int k = 0; k < kKeys; ++k) {
        std::optional<Instance> got = store->GetInstance(MakeInstance("acme", "workers", k).key);
        if (!got) continue;
        if (got->generation < seen[static_cast<std::size_t>(k)]) ++regressions;
        seen[static_cast<std::size_t>(k)] = got->generation;
      }
    }
  });
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  EXPECT_EQ(regressions.load(), 0);
  store.reset();  // commits what is still queued
  auto reopened = OpenOrDie(dir / "state");
  for (int k = 0; k < kKeys; ++k) {
    std::optional<Instance> got = reopened->GetInstance(MakeInstance("acme", "workers", k).key);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->generation, kRounds);
  }
}

// A child process puts instances from two threads and reports each Put that returned; it is
// killed with SIGKILL at a random point. Every reported Put must be there after reopening.
TEST(Store, CrashAtRandomPointKeepsEveryAcknowledgedPut) {
  TempDir dir;
  std::mt19937 rng(std::random_device{}());
  std::set<int> acknowledged;
  for (int round = 0; round < 3; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      Store::Options options;
      options.dir = dir.path();
      Result<std::unique_ptr<Store>> store = Store::Open(options);
      if (!store) ::_exit(3);
      std::atomic<int> next{round * 1'000'000};
      auto writer = [&] {
        for (int n = 0; n < 100'000; ++n) {
          const int i = next++;
          if (!(*store)->PutInstance(MakeInstance("acme", "workers", i))) ::_exit(4);
          if (::write(fds[1], &i, sizeof i) != sizeof i) ::_exit(5);
        }
      };
      std::thread t1(writer), t2(writer);
      t1.join();
      t2.join();
      ::_exit(6);  // the parent should have killed us long before
    }
    ::close(fds[1]);
    const int kill_after = std::uniform_int_distribution<int>(20, 2000)(rng);
    int seen = 0;
    int value = 0;
    bool killed = false;
    while (::read(fds[0], &value, sizeof value) == sizeof value) {
      acknowledged.insert(value);
      if (++seen == kill_after && !killed) {
        ::usleep(std::uniform_int_distribution<unsigned>(0, 3000)(rng));
        ::kill(pid, SIGKILL);
        killed = true;
      }
    }
    ::close(fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child exited with " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
  auto store = OpenOrDie(dir.path());  // also shows the dead child's lock was released
  ASSERT_TRUE(store);
  EXPECT_GE(store->InstanceCount(), acknowledged.size());
  for (int i : acknowledged) {
    const Instance want = MakeInstance("acme", "workers", i);
    std::optional<Instance> got = store->GetInstance(want.key);
    ASSERT_TRUE(got) << want.key.ToString() << " was acknowledged but is lost";
    ExpectSameInstance(*got, want);
  }
}

TEST(Store, SecondOpenOfTheSameDirectoryIsRefused) {
  TempDir dir;
  auto first = OpenOrDie(dir.path());
  ASSERT_TRUE(first);
  Store::Options options;
  options.dir = dir.path();
  Result<std::unique_ptr<Store>> second = Store::Open(options);
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message.find(dir.path().string()), std::string::npos)
      << second.error().message;
  EXPECT_NE(second.error().message.find("in use"), std::string::npos);

  // Another process is refused too.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(Store::Open(options) ? 1 : 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  first.reset();
  EXPECT_TRUE(Store::Open(options));
}

TEST(Store, DatabaseIsLockedAgainstOtherConnectionsWhileOpen) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store->PutInstance(MakeInstance("acme", "workers", 1)));
  RawDb raw(dir.path(), /*busyTimeoutMs=*/0);
  EXPECT_EQ(raw.TryExec("DELETE FROM instances"), SQLITE_BUSY);
  EXPECT_EQ(raw.TryExec("SELECT * FROM instances"), SQLITE_BUSY);
  store.reset();
  EXPECT_EQ(raw.Count("SELECT COUNT(*) FROM instances"), 1);
}

TEST(Store, CreatesTheStateDirectoryPrivate) {
  TempDir dir;
  auto store = OpenOrDie(dir / "a" / "state");
  ASSERT_TRUE(store);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "a" / "state").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(Store, RefusesANewerSchemaVersion) {
  TempDir dir;
  OpenOrDie(dir.path()).reset();
  RawDb(dir.path()).Exec("PRAGMA user_version = 99");
  Store::Options options;
  options.dir = dir.path();
  Result<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().message.find("schema version 99"), std::string::npos)
      << store.error().message;
}

TEST(Store, ConcurrentPutsFromFourThreadsAreAllDurable) {
  TempDir dir;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  {
    auto store = OpenOrDie(dir.path());
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          Instance in = MakeInstance("acme", "workers", t * kPerThread + i);
          if (!store->PutInstance(in)) ++failures;
          in.state = InstanceState::kWarm;  // a second write of the same key
          if (!store->PutInstance(in)) ++failures;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(failures.load(), 0);
    const CommitStats stats = *CommitStatsOf(*store);
    EXPECT_EQ(stats.operations, 2u * kThreads * kPerThread);
    EXPECT_LE(stats.transactions, stats.operations);
  }
  auto store = OpenOrDie(dir.path());
  ASSERT_EQ(store->InstanceCount(), static_cast<size_t>(kThreads * kPerThread));
  for (int i = 0; i < kThreads * kPerThread; ++i) {
    std::optional<Instance> in = store->GetInstance({"acme", "workers-" + std::to_string(i)});
    ASSERT_TRUE(in);
    EXPECT_EQ(in->state, InstanceState::kWarm);
  }
}

TEST(Store, NewInstanceNameIsPoolDashFiveCharsAndUnique) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  // "workers-" and five of [a-z0-9]. (No std::regex: GCC 12 warns inside it under ASan.)
  auto well_formed = [](const std::string& name) {
    if (name.size() != 13 || name.rfind("workers-", 0) != 0) return false;
    return std::all_of(name.begin() + 8, name.end(),
                       [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); });
  };
  std::set<std::string> names;
  for (int i = 0; i < 5000; ++i) {
    const std::string name = store->NewInstanceName("acme", "workers");
    ASSERT_TRUE(well_formed(name)) << name;
    ASSERT_TRUE(names.insert(name).second) << "duplicate " << name;
  }
  // A name in use is not handed out again.
  Instance in = MakeInstance("acme", "workers", 0);
  in.key.name = *names.begin();
  ASSERT_TRUE(store->PutInstance(in));
  for (int i = 0; i < 2000; ++i) EXPECT_NE(store->NewInstanceName("acme", "workers"), in.key.name);
}

// --- allocations ---

TEST(Store, AllocateGivesTheLowestFreeValue) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(*store->Allocate("uid", {"acme", "a"}, 100, 200), 100);
  EXPECT_EQ(*store->Allocate("uid", {"acme", "b"}, 100, 200), 101);
  EXPECT_EQ(*store->Allocate("uid", {"acme", "c"}, 100, 200), 102);
  EXPECT_EQ(*store->Allocate("tap", {"acme", "a"}, 0, 10), 0);  // kinds are independent
  ASSERT_TRUE(store->ReleaseAll({"acme", "b"}));
  EXPECT_EQ(*store->Allocate("uid", {"acme", "d"}, 100, 200), 101);  // the hole is reused
  EXPECT_EQ(*store->Allocate("uid", {"acme", "e"}, 100, 200), 103);
  EXPECT_EQ(*store->Allocate("uid", {"acme", "f"}, 150, 200), 150);  // lo is respected
}

TEST(Store, AllocateIsIdempotentPerOwner) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(*store->Allocate("uid", {"acme", "a"}, 100, 200), 100);
  EXPECT_EQ(*store->Allocate("uid", {"acme", "a"}, 100, 200), 100);
  EXPECT_EQ(*store->Allocate("uid", {"acme", "b"}, 100, 200), 101);
  EXPECT_EQ(*store->Allocate("uid", {"acme", "a"}, 100, 200), 100);
  EXPECT_EQ(store->AllocationsOf({"acme", "a"}), (std::map<std::string, int64_t>{{"uid", 100}}));
}

TEST(Store, AllocateFailsWhenTheRangeIsExhausted) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(store->Allocate("tap", {"acme", "i" + std::to_string(i)}, 1, 3));
  Result<int64_t> full = store->Allocate("tap", {"acme", "late"}, 1, 3);
  ASSERT_FALSE(full);
  EXPECT_NE(full.error().message.find("tap"), std::string::npos) << full.error().message;
  EXPECT_NE(full.error().message.find("[1, 3]"), std::string::npos) << full.error().message;
  EXPECT_TRUE(store->AllocationsOf({"acme", "late"}).empty());
  EXPECT_FALSE(store->Allocate("tap", {"acme", "x"}, 5, 4));  // empty range
}

TEST(Store, ReleaseAllFreesEveryValueOfTheOwnerDurably) {
  TempDir dir;
  const InstanceKey a{"acme", "workers-a"};
  const InstanceKey b{"acme", "workers-b"};
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->Allocate("uid", a, 1000, 2000));
    ASSERT_TRUE(store->Allocate("tap", a, 0, 100));
    ASSERT_TRUE(store->Allocate("ip", a, 2, 254));
    ASSERT_TRUE(store->Allocate("uid", b, 1000, 2000));
    EXPECT_EQ(store->AllocationsOf(a).size(), 3u);
    ASSERT_TRUE(store->ReleaseAll(a));
    ASSERT_TRUE(store->ReleaseAll(a));  // nothing left: still fine
    EXPECT_TRUE(store->AllocationsOf(a).empty());
  }
  auto store = OpenOrDie(dir.path());
  EXPECT_TRUE(store->AllocationsOf(a).empty());
  EXPECT_EQ(store->AllocationsOf(b), (std::map<std::string, int64_t>{{"uid", 1001}}));
  EXPECT_EQ(*store->Allocate("uid", {"acme", "c"}, 1000, 2000), 1000);
  EXPECT_EQ(*store->Allocate("tap", {"acme", "c"}, 0, 100), 0);
}

TEST(Store, ConcurrentAllocationsAreUnique) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  std::vector<std::thread> threads;
  std::vector<std::vector<int64_t>> got(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        Result<int64_t> v = store->Allocate("uid", {"acme", std::to_string(t * 100 + i)}, 1, 400);
        got[t].push_back(v ? *v : -1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<int64_t> all;
  for (const auto& values : got) all.insert(values.begin(), values.end());
  EXPECT_EQ(all.size(), 400u);
  EXPECT_EQ(*all.begin(), 1);
  EXPECT_EQ(*all.rbegin(), 400);
}

// --- events ---

Event MakeEvent(const std::string& key, const std::string& reason, const std::string& message) {
  Event e;
  e.objectKind = "Instance";
  e.objectKey = key;
  e.reason = reason;
  e.message = message;
  e.from = "instance-reconciler";
  e.firstMs = e.lastMs = NowMs();
  return e;
}

TEST(Store, EventsFoldRepeatsOfTheLatestEvent) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  Event started = MakeEvent("acme/workers-1", "Started", "booted in 4 s");
  store->RecordEvent(started);
  started.lastMs += 10;
  store->RecordEvent(started);
  started.lastMs += 10;
  store->RecordEvent(started);
  std::vector<Event> events = store->Events("Instance", "acme/workers-1");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].count, 3);
  EXPECT_EQ(events[0].firstMs, started.firstMs);
  EXPECT_EQ(events[0].lastMs, started.lastMs);
  EXPECT_EQ(events[0].from, "instance-reconciler");

  Event warning = MakeEvent("acme/workers-1", "Started", "booted in 4 s");
  warning.type = EventType::kWarning;  // same reason and message, other type: not a repeat
  store->RecordEvent(warning);
  store->RecordEvent(started);  // not the latest any more: a new event
  events = store->Events("Instance", "acme/workers-1");
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1].type, EventType::kWarning);
  EXPECT_EQ(events[2].count, 1);
  EXPECT_TRUE(store->Events("Instance", "acme/workers-2").empty());
  EXPECT_TRUE(store->Events("Pool", "acme/workers-1").empty());
}

// Events wait for a batch, but not for ever: with nothing else written they reach the disk.
TEST(Store, EventsReachTheDiskWithoutAReadOrAnotherWrite) {
  TempDir dir;
  auto store = OpenOrDie(dir / "state");
  store->RecordEvent(MakeEvent("acme/workers-1", "Started", "booted"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int64_t rows = 0;
  while (rows != 1 && std::chrono::steady_clock::now() < deadline) {
    TempDir copy;
    ASSERT_TRUE(CrashCopy(dir / "state", copy.path()));  // a crash copy opens cleanly
    rows = RawDb(copy.path()).Count("SELECT COUNT(*) FROM events");
    if (rows != 1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(rows, 1) << "a recorded event never reached the database";
}

TEST(Store, EventsAreBoundedPerObjectAndSurviveRestart) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path(), /*eventsPerObject=*/5);
    for (int i = 0; i < 12; ++i) {
      store->RecordEvent(MakeEvent("acme/workers-1", "Step", "step " + std::to_string(i)));
      store->RecordEvent(MakeEvent("acme/workers-2", "Step", "step " + std::to_string(i)));
    }
  }  // RecordEvent only enqueues: closing the store still commits what was queued
  auto store = OpenOrDie(dir.path(), 5);
  for (const char* key : {"acme/workers-1", "acme/workers-2"}) {
    const std::vector<Event> events = store->Events("Instance", key);
    ASSERT_EQ(events.size(), 5u);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(events[i].message, "step " + std::to_string(7 + i));
  }
}

// Older events are deleted in passes, not one by one: what is stored stays within a bound.
TEST(Store, StoredEventsStayWithinTheBoundOverManyInserts) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path(), /*eventsPerObject=*/5);
    for (int i = 0; i < 1000; ++i) {
      store->RecordEvent(MakeEvent("acme/workers-1", "Step", "step " + std::to_string(i)));
    }
    const std::vector<Event> events = store->Events("Instance", "acme/workers-1");
    ASSERT_EQ(events.size(), 5u);
    EXPECT_EQ(events.back().message, "step 999");
  }
  const int64_t stored =
      RawDb(dir.path()).Count("SELECT COUNT(*) FROM events WHERE object_key = 'acme/workers-1'");
  EXPECT_GE(stored, 5);
  EXPECT_LE(stored, 5 + 30);
}

TEST(Store, EventsExpireAfterTheirTtl) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    Event old = MakeEvent("acme/workers-1", "Stopped", "gone");
    old.firstMs = old.lastMs = NowMs() - 25LL * 3600 * 1000;
    store->RecordEvent(old);
    store->RecordEvent(MakeEvent("acme/workers-2", "Started", "fresh"));
    EXPECT_EQ(store->Events("Instance", "acme/workers-1").size(), 1u);
  }
  auto store = OpenOrDie(dir.path());
  EXPECT_TRUE(store->Events("Instance", "acme/workers-1").empty());
  EXPECT_EQ(store->Events("Instance", "acme/workers-2").size(), 1u);
}

// --- audit ---

void WriteAudit(Store& store, const std::string& tenant, int n) {
  for (int i = 1; i <= n; ++i) {
    ASSERT_TRUE(store.Audit(tenant, "mvmd", "instance.start",
                            tenant + "/workers-" + std::to_string(i), R"({"why":"scale up"})"));
  }
}

TEST(Store, AuditChainVerifiesAcrossRestart) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    WriteAudit(*store, "acme", 3);
    WriteAudit(*store, "other", 2);
  }
  auto store = OpenOrDie(dir.path());
  WriteAudit(*store, "acme", 2);  // continues the chain
  const std::vector<AuditEntry> log = store->AuditLog("acme");
  ASSERT_EQ(log.size(), 5u);
  EXPECT_EQ(log[0].prevHash, "");
  for (std::size_t i = 0; i < log.size(); ++i) {
    EXPECT_EQ(log[i].seq, static_cast<int64_t>(i + 1));
    EXPECT_EQ(log[i].hash.size(), 64u);
    EXPECT_EQ(log[i].hash, AuditEntryHash(log[i].prevHash, log[i]));
    if (i > 0) {
      EXPECT_EQ(log[i].prevHash, log[i - 1].hash);
    }
  }
  const AuditVerification v = store->VerifyAudit("acme");
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.entries, 5);
  EXPECT_EQ(v.firstBadSeq, 0);
  EXPECT_TRUE(store->VerifyAudit("other").ok);
  EXPECT_TRUE(store->VerifyAudit("nobody").ok);
  EXPECT_EQ(store->VerifyAudit("nobody").entries, 0);
}

// Writes `n` audit entries for acme and for other, closes the store, runs `sql` on state.db
// (tampering while mvmd is stopped) and reopens the store.
std::unique_ptr<Store> TamperWithAudit(const TempDir& dir, int n, const std::string& sql) {
  {
    auto store = OpenOrDie(dir.path());
    WriteAudit(*store, "acme", n);
    WriteAudit(*store, "other", n);
    EXPECT_TRUE(store->VerifyAudit("acme").ok);
  }
  if (!sql.empty()) RawDb(dir.path()).Exec(sql);
  return OpenOrDie(dir.path());
}

TEST(Store, AuditDetectsAnEditedRow) {
  TempDir dir;
  auto store = TamperWithAudit(
      dir, 4, "UPDATE audit SET detail = 'forged' WHERE tenant = 'acme' AND seq = 2");
  const AuditVerification v = store->VerifyAudit("acme");
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.firstBadSeq, 2);
  EXPECT_NE(v.problem.find("edited"), std::string::npos) << v.problem;
  EXPECT_TRUE(store->VerifyAudit("other").ok);
}

TEST(Store, AuditDetectsARowRewrittenWithAFreshHash) {
  TempDir dir;
  auto store = TamperWithAudit(dir, 4, "");
  AuditEntry forged = store->AuditLog("acme")[1];
  forged.detail = "forged";
  store.reset();
  RawDb(dir.path())
      .Exec("UPDATE audit SET detail = 'forged', hash = '" +
            AuditEntryHash(forged.prevHash, forged) + "' WHERE tenant = 'acme' AND seq = 2");
  store = OpenOrDie(dir.path());
  const AuditVerification v = store->VerifyAudit("acme");
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.firstBadSeq, 3);  // entry 3 no longer chains to entry 2
  EXPECT_NE(v.problem.find("entry 2"), std::string::npos) << v.problem;
}

TEST(Store, AuditDetectsADeletedRow) {
  TempDir dir;
  auto store = TamperWithAudit(dir, 4, "DELETE FROM audit WHERE tenant = 'acme' AND seq = 2");
  const AuditVerification v = store->VerifyAudit("acme");
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.firstBadSeq, 2);
  EXPECT_NE(v.problem.find("missing"), std::string::npos) << v.problem;
}

TEST(Store, AuditDetectsReorderedRows) {
  TempDir dir;
  auto store = TamperWithAudit(dir, 4,
                               "UPDATE audit SET seq = -3 WHERE tenant = 'acme' AND seq = 3;"
                               "UPDATE audit SET seq = 3 WHERE tenant = 'acme' AND seq = 2;"
                               "UPDATE audit SET seq = 2 WHERE tenant = 'acme' AND seq = -3;");
  const AuditVerification v = store->VerifyAudit("acme");
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.firstBadSeq, 2);
  EXPECT_TRUE(store->VerifyAudit("other").ok);
}

TEST(Store, AuditDetectsRowsSwappedWithTheirSeqKept) {
  TempDir dir;
  // Entries 2 and 3 trade everything but their seq.
  const std::string swap_columns =
      "CREATE TEMP TABLE old AS SELECT * FROM audit WHERE tenant = 'acme';"
      "UPDATE audit SET (time_ms, actor, action, object, detail, prev_hash, hash) = "
      "(SELECT time_ms, actor, action, object, detail, prev_hash, hash FROM old "
      "WHERE old.seq = 5 - audit.seq) "
      "WHERE tenant = 'acme' AND seq IN (2, 3)";
  auto store = TamperWithAudit(dir, 4, swap_columns);
  const AuditVerification v = store->VerifyAudit("acme");
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.firstBadSeq, 2);
}

TEST(Store, AuditCanonicalTextCannotBeShiftedBetweenFields) {
  AuditEntry a;
  a.tenant = "acme";
  a.actor = "mvmd\naction";
  a.action = "x";
  AuditEntry b = a;
  b.actor = "mvmd";
  b.action = "action\nx";
  EXPECT_NE(AuditCanonicalText(a), AuditCanonicalText(b));
  AuditEntry c = a;
  c.actor = "mvmd\\naction";  // a literal backslash-n is not a newline
  EXPECT_NE(AuditCanonicalText(a), AuditCanonicalText(c));
  EXPECT_EQ(AuditCanonicalText(a).rfind("mvm-audit-v1\nacme\n0\n0\n", 0), 0u);
}

}  // namespace
}  // namespace mvm::controller
