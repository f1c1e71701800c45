// End-to-end (label e2e): the real Controller driving real guests through the qemu driver, and
// the real mvmd binary adopting live guests after kill -9. Skipped only when qemu or the guest
// image (hack/build-guest-image.sh) is missing. Each test boots 2-4 TCG guests: minutes, not
// seconds, on a loaded 2-core box.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <json/reader.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <thread>

#include "runtime/files.h"
#include "tests/qemu_e2e.h"

#ifndef MVM_MVMD_BINARY
#define MVM_MVMD_BINARY ""
#endif
#ifndef MVM_MVMCTL_BINARY
#define MVM_MVMCTL_BINARY ""
#endif

namespace mvm::testing {
namespace {

using controller::Action;
using controller::InstanceState;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string Tenant(const std::string& name) {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Tenant\nmetadata: {name: " + name +
         "}\nspec: {quota: {}}\n";
}

controller::Controller::Options E2eOptions() {
  controller::Controller::Options o;
  o.workers = 2;
  o.probePeriod = 1s;
  o.resyncPeriod = 10s;
  o.queue.base_delay = 200ms;
  o.queue.max_delay = 5s;
  return o;
}

std::string Ctl(const controller::Instance& i, const std::string& line) {
  auto r = CtlRequest(CtlSocket(i.handle), line);
  return r.ok() ? *r : "ERROR: " + r.error().message;
}

std::string Describe(const std::vector<controller::Instance>& instances) {
  std::string out;
  for (const auto& i : instances) {
    out += i.key.name + " " + std::string(controller::StateName(i.state)) + "->" +
           std::string(controller::StateName(i.target)) + (i.failed ? " FAILED " : " ") +
           i.lastError + "\n";
  }
  return out;
}

TEST(E2eTest, Pool_ReachesCountsOnRealVmsAndScalesUpFromWarmThenSleeping) {
  MVM_REQUIRE_QEMU(image);
  QemuControllerHarness h(image, E2eOptions());

  // 1. Three running guests; each keeps its own name in guest memory.
  auto t0 = Steady::now();
  h.Apply({Tenant("acme"), QemuPoolYaml("acme", "web", 3, 0, 0)});
  ASSERT_TRUE(h.WaitConverged(600s)) << Describe(h.Instances("acme", "web"));
  double boot3 = Secs(Steady::now() - t0);
  auto running = h.InState("acme", "web", InstanceState::kRunning);
  ASSERT_THAT(running, SizeIs(3));
  std::map<std::string, double> uptime;
  for (const auto& i : running) {
    ASSERT_EQ(Ctl(i, "set who " + i.key.name), "") << i.key.name;
    uptime[i.key.name] = std::stod(Ctl(i, "uptime"));
  }

  // 2. running 1, warm 1, sleeping 1: exactly that, on real processes and files.
  t0 = Steady::now();
  h.Apply({Tenant("acme"), QemuPoolYaml("acme", "web", 1, 1, 1)});
  ASSERT_TRUE(h.WaitConverged(600s)) << Describe(h.Instances("acme", "web"));
  double cool = Secs(Steady::now() - t0);
  ASSERT_THAT(h.Instances("acme", "web"), SizeIs(3));
  auto run1 = h.InState("acme", "web", InstanceState::kRunning);
  auto warm1 = h.InState("acme", "web", InstanceState::kWarm);
  auto sleep1 = h.InState("acme", "web", InstanceState::kSleeping);
  ASSERT_THAT(run1, SizeIs(1));
  ASSERT_THAT(warm1, SizeIs(1));
  ASSERT_THAT(sleep1, SizeIs(1));
  auto p = h.Probe(run1[0]);
  EXPECT_TRUE(p.alive && p.observed == InstanceState::kRunning) << p.detail;
  p = h.Probe(warm1[0]);
  EXPECT_TRUE(p.alive && p.observed == InstanceState::kWarm) << p.detail;
  p = h.Probe(sleep1[0]);
  EXPECT_FALSE(p.alive);
  EXPECT_TRUE(p.snapshot);
  EXPECT_THAT(LiveQemu(h.dir().path().string()), SizeIs(2)) << "the sleeping one has no process";

  // 3. running 3: the Warm one is resumed and the Sleeping one woken; nothing boots.
  h.vmm().Clear();
  t0 = Steady::now();
  h.Apply({Tenant("acme"), QemuPoolYaml("acme", "web", 3, 0, 0)});
  ASSERT_TRUE(h.WaitConverged(600s)) << Describe(h.Instances("acme", "web"));
  double up = Secs(Steady::now() - t0);
  EXPECT_EQ(h.vmm().Count(Action::kStart), 0);
  EXPECT_EQ(h.vmm().Count(Action::kPrepare), 0);
  EXPECT_EQ(h.vmm().Count(Action::kResume), 1);
  EXPECT_EQ(h.vmm().Count(Action::kWake), 1);
  double resume_s = 0, wake_s = 0;
  for (const auto& c : h.vmm().calls()) {
    if (c.action == Action::kResume) {
      EXPECT_EQ(c.key, warm1[0].key);
      resume_s = Secs(c.end - c.begin);
    }
    if (c.action == Action::kWake) {
      EXPECT_EQ(c.key, sleep1[0].key);
      wake_s = Secs(c.end - c.begin);
    }
  }
  running = h.InState("acme", "web", InstanceState::kRunning);
  ASSERT_THAT(running, SizeIs(3));
  for (const auto& i : running) {
    EXPECT_EQ(Ctl(i, "get who"), i.key.name) << "guest memory of " << i.key.name;
    double now = std::stod(Ctl(i, "uptime"));
    EXPECT_GT(now, uptime[i.key.name]) << i.key.name << ": uptime went on";
  }

  // 4. Scale to zero and delete the pool: nothing is left anywhere.
  t0 = Steady::now();
  h.Apply({Tenant("acme"), QemuPoolYaml("acme", "web", 0, 0, 0)});
  ASSERT_TRUE(h.WaitConverged(300s)) << Describe(h.Instances("acme", "web"));
  h.Apply({Tenant("acme")});
  ASSERT_TRUE(h.WaitConverged(300s)) << Describe(h.Instances("acme", "web"));
  double down = Secs(Steady::now() - t0);
  EXPECT_THAT(h.Instances("acme", "web"), IsEmpty());
  EXPECT_THAT(LiveQemu(h.dir().path().string()), IsEmpty());
  EXPECT_THAT(FilesUnder(h.run().path()), IsEmpty()) << "sockets";
  EXPECT_THAT(FilesUnder(h.dir() / "tenants"), IsEmpty()) << "disks, snapshots, logs";
  std::printf(
      "{\"boot3S\":%.1f,\"to111S\":%.1f,\"scaleUpS\":%.2f,\"resumeS\":%.3f,\"wakeS\":%.2f,"
      "\"scaleDownAndDeleteS\":%.1f}\n",
      boot3, cool, up, resume_s, wake_s, down);
}

TEST(E2eTest, Instance_KilledQemuIsNoticedAndRestarted) {
  MVM_REQUIRE_QEMU(image);
  QemuControllerHarness h(image, E2eOptions());
  h.Apply({Tenant("acme"), QemuPoolYaml("acme", "web", 1, 0, 0)});
  ASSERT_TRUE(h.WaitConverged(300s)) << Describe(h.Instances("acme", "web"));
  auto running = h.InState("acme", "web", InstanceState::kRunning);
  ASSERT_THAT(running, SizeIs(1));
  const controller::Instance before = running[0];
  runtime::ProcessIdentity old{before.handle.pid, before.handle.startTime};

  auto t0 = Steady::now();
  ASSERT_EQ(::kill(static_cast<pid_t>(old.pid), SIGKILL), 0);
  std::optional<controller::Instance> after;
  while (Steady::now() - t0 < 300s && !after) {
    std::this_thread::sleep_for(200ms);
    for (const auto& i : h.InState("acme", "web", InstanceState::kRunning)) {
      if (i.key == before.key && i.handle.pid != 0 && i.handle.pid != old.pid) after = i;
    }
  }
  ASSERT_TRUE(after) << Describe(h.Instances("acme", "web"));
  double restart = Secs(Steady::now() - t0);
  EXPECT_FALSE(runtime::IsAlive(old));
  EXPECT_TRUE(runtime::IsAlive({after->handle.pid, after->handle.startTime}));
  EXPECT_EQ(Ctl(*after, "ping").rfind("pong ", 0), 0u);
  bool lost = false;
  for (const auto& e : h.controller().Events("Instance", before.key.ToString())) {
    lost = lost || e.reason == "VmmLost";
  }
  EXPECT_TRUE(lost) << "a VmmLost event says why the instance restarted";

  h.Apply({Tenant("acme")});
  ASSERT_TRUE(h.WaitConverged(300s)) << Describe(h.Instances("acme", "web"));
  EXPECT_THAT(LiveQemu(h.dir().path().string()), IsEmpty());
  EXPECT_THAT(FilesUnder(h.run().path()), IsEmpty());
  EXPECT_THAT(FilesUnder(h.dir() / "tenants"), IsEmpty());
  std::printf("{\"killToRunningAgainS\":%.1f}\n", restart);
}

// ---- the real mvmd ------------------------------------------------------------------------

// One mvmd process (a child of the test), its log in a file.
class Mvmd {
 public:
  Mvmd(std::vector<std::string> args, std::map<std::string, std::string> env,
       std::filesystem::path log)
      : log_(std::move(log)) {
    pid_ = ::fork();
    if (pid_ == 0) {
      FILE* out = std::freopen(log_.c_str(), "a", stderr);
      if (out == nullptr) ::_exit(126);
      ::dup2(STDERR_FILENO, STDOUT_FILENO);
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~Mvmd() { Kill(SIGKILL); }
  void Kill(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  std::string Log() const {
    auto text = runtime::ReadSmallFile(log_);
    return text.ok() ? *text : "";
  }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
};

std::optional<Json::Value> GetJson(const std::string& socket, const std::string& path) {
  httplib::Client client(socket);
  client.set_address_family(AF_UNIX);
  client.set_read_timeout(10);
  client.set_connection_timeout(2);
  httplib::Result result = client.Get(path.c_str());
  if (!result || result->status != 200) return std::nullopt;
  Json::CharReaderBuilder builder;
  std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
  Json::Value value;
  std::string errors;
  const std::string& body = result->body;
  if (!reader->parse(body.data(), body.data() + body.size(), &value, &errors)) return std::nullopt;
  return value;
}

struct Seen {
  std::string state;
  int64_t pid = 0;
  uint64_t startTime = 0;
};

// Instances by name once every one is settled (state == target, nothing pending); empty until.
std::map<std::string, Seen> Settled(const std::string& socket, size_t want) {
  std::map<std::string, Seen> out;
  auto list = GetJson(socket, "/v1/instances");
  if (!list || (*list)["items"].size() != want) return {};
  for (const auto& i : (*list)["items"]) {
    if (i["state"] != i["target"] || !i["pending"].isNull()) return {};
    out[i["name"].asString()] = {i["state"].asString(), i["vmm"]["pid"].asInt64(),
                                 i["vmm"]["startTime"].asUInt64()};
  }
  return out;
}

std::map<std::string, Seen> WaitSettled(const std::string& socket, size_t want,
                                        std::chrono::seconds timeout) {
  auto deadline = Steady::now() + timeout;
  while (Steady::now() < deadline) {
    if (auto s = Settled(socket, want); !s.empty()) return s;
    std::this_thread::sleep_for(500ms);
  }
  return {};
}

bool WaitNoInstances(const std::string& socket, std::chrono::seconds timeout) {
  auto deadline = Steady::now() + timeout;
  while (Steady::now() < deadline) {
    auto list = GetJson(socket, "/v1/instances");
    if (list && (*list)["items"].empty()) return true;
    std::this_thread::sleep_for(500ms);
  }
  return false;
}

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

// Runs `mvmctl --socket SOCKET ARGS...` (words without quotes in them); its exit status and
// stdout + stderr.
std::pair<int, std::string> Mvmctl(const std::string& socket, const std::string& args) {
  std::string command = std::string(MVM_MVMCTL_BINARY) + " --socket '" + socket + "' " + args;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::string out;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(E2eTest, Mvmd_AdoptsLiveGuestsAfterKill9AndNeverReboots) {
  MVM_REQUIRE_QEMU(image);
  ASSERT_FALSE(std::string(MVM_MVMD_BINARY).empty()) << "the build did not set MVM_MVMD_BINARY";
  TempDir base("mvm-adopt");
  TempDir run("mq");
  const std::filesystem::path manifests = base / "manifests";
  const std::filesystem::path state = base / "state";
  const std::string socket = (base / "api.sock").string();
  WriteFile(manifests / "acme.yaml",
            Tenant("acme") + "---\n" + QemuPoolYaml("acme", "web", 1, 1, 0));
  std::vector<std::string> args = {MVM_MVMD_BINARY,
                                   "-m",
                                   manifests.string(),
                                   "--state-dir",
                                   state.string(),
                                   "--runtime",
                                   "qemu",
                                   "--image-root",
                                   image.string(),
                                   "--socket",
                                   socket,
                                   "--probe-period",
                                   "2",
                                   "--log-level",
                                   "info"};
  std::map<std::string, std::string> env = {{"MVM_QEMU_RUNTIME_DIR", run.path().string()},
                                            {"MVM_QEMU_JAIL_STATE_DIR", (base / "jail").string()}};
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      for (int64_t pid : LiveQemu(dir)) ::kill(static_cast<pid_t>(pid), SIGKILL);
    }
  } cleanup{base.path().string()};

  auto first = std::make_unique<Mvmd>(args, env, base / "mvmd-1.log");
  auto seen = WaitSettled(socket, 2, 600s);
  ASSERT_THAT(seen, SizeIs(2)) << first->Log();
  std::string running_name;
  for (const auto& [name, s] : seen) {
    if (s.state == "Running") running_name = name;
    EXPECT_TRUE(runtime::IsAlive({s.pid, s.startTime})) << name;
  }
  ASSERT_FALSE(running_name.empty());
  auto record = runtime::ReadSmallFile(state / "tenants/acme/pools/web/instances" / running_name /
                                       "runtime/qemu.json");
  ASSERT_TRUE(record.ok()) << record.error().message;
  controller::VmmHandle handle;
  handle.data = *record;
  const std::string ctl = CtlSocket(handle);
  auto ping0 = CtlRequest(ctl, "ping");
  ASSERT_TRUE(ping0.ok()) << ping0.error().message;
  double up0 = std::stod(CtlRequest(ctl, "uptime").value());

  first->Kill(SIGKILL);
  for (const auto& [name, s] : seen) {
    EXPECT_TRUE(runtime::IsAlive({s.pid, s.startTime})) << name << " outlives mvmd";
  }
  std::this_thread::sleep_for(2s);

  auto t0 = Steady::now();
  auto second = std::make_unique<Mvmd>(args, env, base / "mvmd-2.log");
  auto again = WaitSettled(socket, 2, 300s);
  double adopt = Secs(Steady::now() - t0);
  ASSERT_THAT(again, SizeIs(2)) << second->Log();
  std::this_thread::sleep_for(5s);  // a few probe periods: nothing is restarted behind our back
  again = WaitSettled(socket, 2, 60s);
  for (const auto& [name, s] : seen) {
    EXPECT_EQ(again[name].state, s.state) << name;
    EXPECT_EQ(again[name].pid, s.pid) << name << " is the same process";
    EXPECT_EQ(again[name].startTime, s.startTime) << name;
  }
  std::string log2 = second->Log();
  EXPECT_EQ(Count(log2, "adopted "), 2) << log2;
  EXPECT_EQ(Count(log2, " ready in "), 0) << "no guest was booted again\n" << log2;
  EXPECT_EQ(CtlRequest(ctl, "ping").value(), *ping0) << "same boot id";
  EXPECT_GT(std::stod(CtlRequest(ctl, "uptime").value()), up0) << "guest uptime went on";

  // `mvmctl logs` shows this guest's serial console: the init's ready line of this very boot.
  if (!std::string(MVM_MVMCTL_BINARY).empty()) {
    const std::string boot_id = ping0->substr(ping0->find(' ') + 1);
    auto [rc, console] = Mvmctl(socket, "logs acme/" + running_name + " --tail 200");
    EXPECT_EQ(rc, 0) << console;
    EXPECT_THAT(console, ::testing::HasSubstr("MVM-READY " + boot_id));
    auto [rc_short, one_line] = Mvmctl(socket, "logs " + running_name + " -t acme --tail 1");
    EXPECT_EQ(rc_short, 0) << one_line;
    EXPECT_FALSE(one_line.empty());
    EXPECT_LE(Count(one_line, "\n"), 1) << one_line;
    auto [rc_unknown, unknown] = Mvmctl(socket, "logs acme/nope");
    EXPECT_EQ(rc_unknown, 1);
    EXPECT_THAT(unknown, ::testing::HasSubstr("instance acme/nope not found"));
  }

  // The pool leaves the manifests: mvmd destroys everything it made.
  WriteFile(manifests / "acme.yaml", Tenant("acme"));
  EXPECT_TRUE(WaitNoInstances(socket, 300s)) << second->Log();
  second->Kill(SIGTERM);
  EXPECT_THAT(LiveQemu(base.path().string()), IsEmpty());
  EXPECT_THAT(FilesUnder(run.path()), IsEmpty());
  EXPECT_THAT(FilesUnder(state / "tenants"), IsEmpty());
  std::printf("{\"restartToAdoptedS\":%.1f}\n", adopt);
}

}  // namespace
}  // namespace mvm::testing
