// qemu_bench: what mvm adds to raw QEMU on the lifecycle of one real guest (issue 4).
//
// The same guest (the test image: vmlinux + initramfs.cpio.gz + rootfs.ext4 from --image, 1 vCPU,
// 128 MiB, TCG) and the same qemu command line (QemuVmm::CommandLine) on three paths, interleaved
// run by run so that all three see the same machine load:
//
//  raw     qemu spawned by hand (runtime/process.h), driven with an already connected QMP client
//          (runtime/qmp_client.h) and the guest's control channel (runtime/guest_ctl.h):
//            boot   spawn -> "READY <boot-id>" on mvm.ctl
//            pause  QMP stop          resume  QMP cont
//            sleep  (paused) migrate to exec:cat > FILE, query-migrate until completed, quit,
//                   process gone
//            wake   spawn with -incoming "exec:cat FILE", query-status leaves inmigrate, cont,
//                   `ping` answered on mvm.ctl
//  driver  the same steps through QemuVmm (Start, Pause, Resume, Sleep from Warm, Wake): each call
//          connects afresh, checks the resulting status and keeps its records.
//  mvmd    the real mvmd binary (--runtime qemu) on a temporary manifest directory and state
//          directory; each step is a pool manifest replaced by rename(), timed until the status
//          API's watch reports the instance settled in the new state (state == target, nothing
//          pending): boot = pool file dropped (running: 1) -> Running; pause = running 0, warm 1
//          -> Warm; resume -> Running; sleep (from Warm) = sleeping 1 -> Sleeping; wake ->
//          Running. mvmd runs with --debounce-ms (default 0 here: a rename is one event, there is
//          no burst to wait out; mvmd's own default of 50 ms adds that much to every step).
//
// Every guest also runs --op-reps pause/resume pairs (raw, driver) and --cycles sleep/wake cycles
// (mvmd: --cycles pause, resume, sleep, wake cycles).
//
// mvm's share is read two ways. A/B: each path's median minus raw's. Own: mvmd's boot and wake
// minus the driver's own spawn -> ready that the driver records in runtime/qemu.json (bootMs,
// wakeMs), i.e. the time mvmd spends around the VMM (watcher, loader, planning, queue, store
// writes, Prepare's disk copy, status API). A/B cannot resolve a 5 % boot target on a loaded
// machine (raw TCG boots alone spread by tens of percent) nor wake within 20 ms (every wake waits
// for the guest's 0.2 s control-channel poll); pause, resume and sleep it can.
//
// Targets: mvmd's own part <= 5 % of raw's median boot and <= 20 ms of wake; pause, resume and
// sleep A/B <= +20 ms on the driver path and on the mvmd path. Output: one JSON object (--json
// FILE too) and one summary line on stdout; progress and driver logs on stderr. Exit status 0
// when every target held, 1 when one was missed, 2 on a usage or setup error (no qemu, no image,
// a step that failed). The load average before and after is in the JSON.
//
//   qemu_bench [--runs 5] [--op-reps 5] [--cycles 3] [--image DIR] [--mvmd PATH]
//              [--debounce-ms 0] [--json FILE]

#include <httplib.h>
#include <json/reader.h>
#include <json/writer.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "controller/vmm.h"
#include "runtime/files.h"
#include "runtime/guest_ctl.h"
#include "runtime/process.h"
#include "runtime/qemu_vmm.h"
#include "runtime/qmp_client.h"
#include "tests/test_util.h"

#ifndef MVM_MVMD_BINARY
#define MVM_MVMD_BINARY ""
#endif

namespace {

namespace fs = std::filesystem;
using mvm::Error;
using mvm::Result;
using mvm::Status;
using mvm::controller::VmmHandle;
using mvm::controller::VmmTarget;
using mvm::runtime::Clock;
using mvm::runtime::GuestCtl;
using mvm::runtime::ProcessIdentity;
using mvm::runtime::QmpClient;
using std::chrono::milliseconds;

constexpr milliseconds kBootTimeout{180000};
constexpr milliseconds kStepTimeout{120000};
constexpr milliseconds kQmpTimeout{10000};
const char* const kBootArgs = "console=ttyS0 panic=-1 quiet";

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

void Progress(const std::string& line) {
  std::cerr << "qemu_bench: " << line << "\n" << std::flush;
}

std::string Seconds(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", ms / 1000);
  return buf;
}

// Samples of every step on one path.
struct Samples {
  std::vector<double> boot, pause, resume, sleep, wake;
  // Boot and wake minus the driver's own spawn -> ready in its record: the time spent around
  // the VMM (driver: checks, files; mvmd: also watcher, loader, planning, queue, store, Prepare).
  std::vector<double> bootOwn, wakeOwn;
  std::map<std::string, std::vector<double>*> All() {
    return {{"boot", &boot},
            {"pause", &pause},
            {"resume", &resume},
            {"sleep", &sleep},
            {"wake", &wake}};
  }
};

// Kills the processes it was given when it goes out of scope: nothing outlives the bench.
class Reaper {
 public:
  ~Reaper() {
    for (const auto& id : ids_) mvm::runtime::KillAndWait(id, milliseconds(5000));
  }
  void Add(ProcessIdentity id) { ids_.push_back(id); }

 private:
  std::vector<ProcessIdentity> ids_;
};

std::optional<Json::Value> ParseJson(const std::string& text) {
  Json::Value value;
  Json::CharReaderBuilder builder;
  std::string errors;
  std::istringstream in(text);
  if (!Json::parseFromStream(builder, in, &value, &errors)) return std::nullopt;
  return value;
}

// A number from the driver's record of a VMM (runtime/qemu.json): "bootMs" is its own spawn ->
// ready of the last start, "wakeMs" its spawn -> answering of the last wake.
std::optional<double> RecordField(const fs::path& record, const char* field) {
  auto text = mvm::runtime::ReadSmallFile(record);
  if (!text.ok()) return std::nullopt;
  auto json = ParseJson(*text);
  if (!json || !(*json)[field].isNumeric()) return std::nullopt;
  return (*json)[field].asDouble();
}

// ---- raw qemu ----------------------------------------------------------------------------

Result<GuestCtl> ConnectCtl(const fs::path& ctl, const ProcessIdentity& id, Clock::time_point by) {
  return GuestCtl::Connect(ctl.string(), by, [id] { return mvm::runtime::IsAlive(id); });
}

Result<QmpClient> ConnectQmp(const fs::path& qmp, const ProcessIdentity& id, Clock::time_point by) {
  return QmpClient::Connect(qmp.string(), by, [id] { return mvm::runtime::IsAlive(id); });
}

Result<ProcessIdentity> SpawnQemu(const mvm::runtime::QemuVmm& vmm, const VmmTarget& target,
                                  bool restore) {
  const auto paths = vmm.PathsFor(target.dir);
  Result<std::vector<std::string>> argv = vmm.CommandLine(target, restore);
  if (!argv.ok()) return argv.error();
  std::error_code ec;
  fs::remove_all(paths.sockets, ec);
  fs::create_directories(paths.sockets, ec);
  fs::create_directories(paths.runtime, ec);
  if (ec) return Error{"create " + paths.sockets.string() + ": " + ec.message()};
  return mvm::runtime::SpawnDetached({*argv, paths.qemuLog, paths.dir, std::nullopt});
}

// A guest whose host just left mvm.ctl notices it only when it next reads the port; then it polls
// every 0.2 s (hack/guest/init). A VM frozen before that wakes straight into the next request, one
// frozen in the poll first sleeps out its 0.2 s. Every path waits this long before a sleep, so that
// each freezes its guest in the same idle poll.
void SettleGuestCtl() {
  std::this_thread::sleep_for(milliseconds(300));
}

// Polls `query` every 2 ms until it returns true; the error of the first failed query.
Status PollUntil(const std::function<Result<bool>()>& query, Clock::time_point by,
                 const std::string& what) {
  for (;;) {
    Result<bool> done = query();
    if (!done.ok()) return done.error();
    if (*done) return {};
    if (Clock::now() >= by) return Error{what + ": timed out"};
    std::this_thread::sleep_for(milliseconds(2));
  }
}

Status RawRun(const mvm::runtime::QemuVmm& vmm, const VmmTarget& target, int opReps, int cycles,
              Samples& out, Reaper& reaper) {
  const auto paths = vmm.PathsFor(target.dir);
  auto fail = [&](const std::string& step, const Error& e) {
    return Error{"raw " + step + ": " + e.message + "\n" +
                 mvm::runtime::TailLines(paths.console, 10) + "\n" +
                 mvm::runtime::TailLines(paths.qemuLog, 5)};
  };
  // boot: spawn -> READY
  auto t0 = Clock::now();
  Result<ProcessIdentity> id = SpawnQemu(vmm, target, false);
  if (!id.ok()) return fail("spawn", id.error());
  reaper.Add(*id);
  {
    // Closed after READY, as the driver closes it: a guest with no host on mvm.ctl polls the
    // port every 0.2 s, and whether it sits in that poll when frozen changes the next wake.
    Result<GuestCtl> ctl = ConnectCtl(paths.ctl, *id, t0 + kBootTimeout);
    if (!ctl.ok()) return fail("boot", ctl.error());
    for (;;) {
      Result<std::string> line = ctl->ReadLine(t0 + kBootTimeout);
      if (!line.ok()) return fail("boot", line.error());
      if (line->rfind("READY ", 0) == 0) break;
    }
    out.boot.push_back(Ms(Clock::now() - t0));
  }

  Result<QmpClient> qmp = ConnectQmp(paths.qmp, *id, Clock::now() + kQmpTimeout);
  if (!qmp.ok()) return fail("qmp", qmp.error());
  for (int i = 0; i < opReps; ++i) {
    auto t = Clock::now();
    if (auto r = qmp->Execute("stop", Json::Value(), kQmpTimeout); !r.ok()) {
      return fail("stop", r.error());
    }
    out.pause.push_back(Ms(Clock::now() - t));
    t = Clock::now();
    if (auto r = qmp->Execute("cont", Json::Value(), kQmpTimeout); !r.ok()) {
      return fail("cont", r.error());
    }
    out.resume.push_back(Ms(Clock::now() - t));
  }

  // sleep (from paused, as the state machine does it: Warm -> Sleeping), then wake, `cycles` times
  std::optional<QmpClient> live(std::move(*qmp));
  ProcessIdentity current = *id;
  std::error_code ec;
  fs::create_directories(paths.snapshots, ec);
  for (int cycle = 0; cycle < cycles; ++cycle) {
    SettleGuestCtl();
    if (auto r = live->Execute("stop", Json::Value(), kQmpTimeout); !r.ok()) {
      return fail("stop", r.error());
    }
    auto t = Clock::now();
    Json::Value args;
    args["uri"] = "exec:cat > '" + paths.snapshot.string() + "'";
    if (auto r = live->Execute("migrate", args, kQmpTimeout); !r.ok()) {
      return fail("migrate", r.error());
    }
    Status migrated = PollUntil(
        [&]() -> Result<bool> {
          auto m = live->Execute("query-migrate", Json::Value(), kQmpTimeout);
          if (!m.ok()) return m.error();
          std::string status = (*m)["status"].asString();
          if (status == "failed" || status == "cancelled") return Error{"migration " + status};
          return status == "completed";
        },
        t + kStepTimeout, "migrate");
    if (!migrated.ok()) return fail("sleep", migrated.error());
    (void)live->Execute("quit", Json::Value(), kQmpTimeout);
    if (!mvm::runtime::WaitForExit(current, kStepTimeout)) {
      return fail("sleep", {"qemu did not exit"});
    }
    out.sleep.push_back(Ms(Clock::now() - t));

    // wake: restore, cont, ping
    t = Clock::now();
    Result<ProcessIdentity> restored = SpawnQemu(vmm, target, true);
    if (!restored.ok()) return fail("spawn -incoming", restored.error());
    reaper.Add(*restored);
    current = *restored;
    Result<QmpClient> qmp2 = ConnectQmp(paths.qmp, current, t + kStepTimeout);
    if (!qmp2.ok()) return fail("wake", qmp2.error());
    live.emplace(std::move(*qmp2));
    Status loaded = PollUntil(
        [&]() -> Result<bool> {
          auto st = live->QueryStatus(kQmpTimeout);
          if (!st.ok()) return st.error();
          return *st != "inmigrate";
        },
        t + kStepTimeout, "restore");
    if (!loaded.ok()) return fail("wake", loaded.error());
    if (auto r = live->Execute("cont", Json::Value(), kQmpTimeout); !r.ok()) {
      return fail("cont", r.error());
    }
    Result<GuestCtl> ctl2 = ConnectCtl(paths.ctl, current, t + kStepTimeout);
    if (!ctl2.ok()) return fail("wake", ctl2.error());
    if (auto pong = ctl2->Request("ping", kStepTimeout); !pong.ok()) {
      return fail("ping", pong.error());
    }
    out.wake.push_back(Ms(Clock::now() - t));
  }
  mvm::runtime::KillAndWait(current, milliseconds(5000));
  return {};
}

// ---- the QemuVmm driver ------------------------------------------------------------------

Status DriverRun(mvm::runtime::QemuVmm& vmm, VmmTarget target, int opReps, int cycles,
                 Samples& out) {
  auto timed = [](std::vector<double>& into, const std::function<Status()>& step) {
    auto t = Clock::now();
    Status s = step();
    if (s.ok()) into.push_back(Ms(Clock::now() - t));
    return s;
  };
  Result<VmmHandle> handle = Error{"not started"};
  auto t0 = Clock::now();
  handle = vmm.Start(target);
  if (!handle.ok()) return Error{"driver start: " + handle.error().message};
  out.boot.push_back(Ms(Clock::now() - t0));
  const fs::path record = vmm.PathsFor(target.dir).record;
  if (auto own = RecordField(record, "bootMs")) out.bootOwn.push_back(out.boot.back() - *own);
  target.handle = *handle;
  for (int i = 0; i < opReps; ++i) {
    if (Status s = timed(out.pause, [&] { return vmm.Pause(target); }); !s.ok()) return s;
    if (Status s = timed(out.resume, [&] { return vmm.Resume(target); }); !s.ok()) return s;
  }
  for (int cycle = 0; cycle < cycles; ++cycle) {
    SettleGuestCtl();
    if (Status s = vmm.Pause(target); !s.ok()) return s;
    if (Status s = timed(out.sleep, [&] { return vmm.Sleep(target); }); !s.ok()) return s;
    target.handle = {};
    auto tw = Clock::now();
    handle = vmm.Wake(target);
    if (!handle.ok()) return Error{"driver wake: " + handle.error().message};
    out.wake.push_back(Ms(Clock::now() - tw));
    if (auto own = RecordField(record, "wakeMs")) out.wakeOwn.push_back(out.wake.back() - *own);
    target.handle = *handle;
  }
  return vmm.Destroy(target);
}

// ---- mvmd --------------------------------------------------------------------------------

// The instances of mvmd's status API, kept current from GET /v1/watch on a background thread.
class InstanceWatch {
 public:
  explicit InstanceWatch(const std::string& socket) : client_(socket) {
    client_.set_address_family(AF_UNIX);
    client_.set_read_timeout(60);
    thread_ = std::thread([this] {
      std::string pending;
      client_.Get("/v1/watch?resource=instances", [&](const char* data, size_t length) {
        auto now = Clock::now();
        pending.append(data, length);
        std::lock_guard lock(mu_);
        for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
          std::string line = pending.substr(0, nl);
          pending.erase(0, nl + 1);
          std::optional<Json::Value> parsed = line.empty() ? std::nullopt : ParseJson(line);
          if (!parsed) continue;
          const Json::Value& event = *parsed;
          const Json::Value& object = event["object"];
          const std::string type = event["type"].asString();
          if (type == "BOOKMARK" || !object.isObject()) continue;
          std::string key = object["tenant"].asString() + "/" + object["name"].asString();
          if (type == "DELETED") {
            items_.erase(key);
          } else {
            items_[key] = object;
          }
          changedAt_ = now;
        }
        cv_.notify_all();
        return true;
      });
      std::lock_guard lock(mu_);
      ended_ = true;
      cv_.notify_all();
    });
  }
  ~InstanceWatch() {
    client_.stop();
    thread_.join();
  }

  // Waits until `done` holds for the instances; the arrival time of the change that made it so.
  Result<Clock::time_point> WaitFor(
      const std::function<bool(const std::map<std::string, Json::Value>&)>& done,
      milliseconds timeout, const std::string& what) {
    std::unique_lock lock(mu_);
    auto by = Clock::now() + timeout;
    for (;;) {
      if (done(items_)) return changedAt_;
      if (ended_) return Error{what + ": the watch on mvmd ended"};
      if (cv_.wait_until(lock, by) == std::cv_status::timeout && !done(items_)) {
        std::string seen;
        for (const auto& [key, item] : items_) {
          seen +=
              " " + key + "=" + item["state"].asString() + "->" + item["target"].asString() +
              (item["lastError"].asString().empty() ? ""
                                                    : " (" + item["lastError"].asString() + ")");
        }
        return Error{what + ": timed out; instances:" + seen};
      }
    }
  }

 private:
  httplib::Client client_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Json::Value> items_;
  Clock::time_point changedAt_{};
  bool ended_ = false;
  std::thread thread_;
};

std::string PoolYaml(const std::string& name, int running, int warm, int sleeping) {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata: {name: " + name +
         ", tenant: bench}\nspec:\n  runtime: qemu\n"
         "  image: {kernel: vmlinux, rootfs: rootfs.ext4, bootArgs: \"" +
         kBootArgs +
         "\"}\n  cmd: [\"/bin/sh\", \"-c\", \"exec sleep 2147483647\"]\n"
         "  resources: {vcpus: 1, memoryMiB: 128, diskMiB: 64}\n  replicas: {running: " +
         std::to_string(running) + ", warm: " + std::to_string(warm) +
         ", sleeping: " + std::to_string(sleeping) + "}\n";
}

class Mvmd {
 public:
  Mvmd(fs::path base, fs::path image, std::string binary, int debounceMs)
      : base_(std::move(base)),
        image_(std::move(image)),
        binary_(std::move(binary)),
        debounce_(debounceMs) {}
  ~Mvmd() {
    watch_.reset();
    if (!id_.empty()) mvm::runtime::KillAndWait(id_, milliseconds(5000));
  }

  Status Start() {
    std::error_code ec;
    fs::create_directories(manifests() / ".tmp", ec);
    if (ec) return Error{"create " + manifests().string() + ": " + ec.message()};
    if (Status s = Write("bench.yaml",
                         "apiVersion: mvm.dev/v1alpha1\nkind: Tenant\nmetadata: "
                         "{name: bench}\nspec: {quota: {}}\n");
        !s.ok()) {
      return s;
    }
    std::vector<std::string> argv = {binary_,
                                     "-m",
                                     manifests().string(),
                                     "--state-dir",
                                     (base_ / "state").string(),
                                     "--runtime",
                                     "qemu",
                                     "--image-root",
                                     image_.string(),
                                     "--socket",
                                     socket(),
                                     "--debounce-ms",
                                     std::to_string(debounce_)};
    Result<ProcessIdentity> id =
        mvm::runtime::SpawnDetached({argv, base_ / "mvmd.log", base_, std::nullopt});
    if (!id.ok()) return Error{"start mvmd: " + id.error().message};
    id_ = *id;
    auto by = Clock::now() + milliseconds(30000);
    httplib::Client probe(socket());
    probe.set_address_family(AF_UNIX);
    while (!probe.Get("/v1/healthz")) {
      if (Clock::now() >= by || !mvm::runtime::IsAlive(id_)) {
        return Error{"mvmd did not answer on " + socket() + "\n" + Log()};
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    watch_ = std::make_unique<InstanceWatch>(socket());
    return {};
  }

  // Replaces manifests/<file> with `text` by rename (what GitOps tools do); the time just before.
  Status Write(const std::string& file, const std::string& text, Clock::time_point* at = nullptr) {
    const fs::path tmp = manifests() / ".tmp" / file;
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << text;
      if (!out.flush()) return Error{"write " + tmp.string()};
    }
    if (at) *at = Clock::now();
    std::error_code ec;
    fs::rename(tmp, manifests() / file, ec);
    if (ec) return Error{"rename " + tmp.string() + ": " + ec.message()};
    return {};
  }
  Status Remove(const std::string& file) {
    std::error_code ec;
    fs::remove(manifests() / file, ec);
    if (ec) return Error{"remove " + file + ": " + ec.message()};
    return {};
  }

  // A number from the driver's record of a pool's instance (runtime/qemu.json): the driver's own
  // spawn -> ready ("bootMs") or spawn -> answering ("wakeMs") of its last start or wake.
  std::optional<double> RecordMs(const std::string& pool, const std::string& name,
                                 const char* field) const {
    return RecordField(
        base_ / "state/tenants/bench/pools" / pool / "instances" / name / "runtime/qemu.json",
        field);
  }

  InstanceWatch& watch() { return *watch_; }
  std::string socket() const { return (base_ / "api.sock").string(); }
  std::string Log() const { return mvm::runtime::TailLines(base_ / "mvmd.log", 20); }

 private:
  fs::path manifests() const { return base_ / "manifests"; }
  fs::path base_, image_;
  std::string binary_;
  int debounce_;
  ProcessIdentity id_;
  std::unique_ptr<InstanceWatch> watch_;
};

using Items = std::map<std::string, Json::Value>;

// The pool's one instance, settled in `state` (and its name), or nothing.
std::optional<std::string> Settled(const Items& items, const std::string& pool,
                                   const std::string& state) {
  std::optional<std::string> name;
  for (const auto& [key, item] : items) {
    if (item["pool"].asString() != pool) continue;
    if (name || item["state"] != state || item["target"] != state || !item["pending"].isNull()) {
      return std::nullopt;
    }
    name = item["name"].asString();
  }
  return name;
}

// The instances of `pool` that mvmd lists now.
std::vector<Json::Value> PoolInstances(const std::string& socket, const std::string& pool) {
  httplib::Client api(socket);
  api.set_address_family(AF_UNIX);
  std::vector<Json::Value> out;
  auto reply = api.Get("/v1/instances");
  if (!reply || reply->status != 200) return out;
  if (auto list = ParseJson(reply->body)) {
    for (const auto& item : (*list)["items"]) {
      if (item["pool"].asString() == pool) out.push_back(item);
    }
  }
  return out;
}

Status MvmdRun(Mvmd& mvmd, int run, int cycles, Samples& out, Reaper& reaper) {
  const std::string pool = "p" + std::to_string(run);
  const std::string file = pool + ".yaml";
  std::string name;
  auto step = [&](std::vector<double>* into, int running, int warm, int sleeping,
                  const std::string& state) -> Status {
    Clock::time_point t0;
    if (Status s = mvmd.Write(file, PoolYaml(pool, running, warm, sleeping), &t0); !s.ok()) {
      return s;
    }
    auto at = mvmd.watch().WaitFor(
        [&](const Items& items) { return Settled(items, pool, state).has_value(); },
        state == "Running" && into == &out.boot ? kBootTimeout : kStepTimeout,
        "mvmd " + pool + " -> " + state);
    if (!at.ok()) return Error{at.error().message + "\n" + mvmd.Log()};
    if (into) into->push_back(Ms(*at - t0));
    return {};
  };
  if (Status s = step(&out.boot, 1, 0, 0, "Running"); !s.ok()) return s;
  // The pid, so that the Reaper ends this VM whatever happens next.
  for (const auto& item : PoolInstances(mvmd.socket(), pool)) {
    name = item["name"].asString();
    reaper.Add({item["vmm"]["pid"].asInt64(), item["vmm"]["startTime"].asUInt64()});
  }
  if (auto own = mvmd.RecordMs(pool, name, "bootMs")) {
    out.bootOwn.push_back(out.boot.back() - *own);
  }
  for (int cycle = 0; cycle < cycles; ++cycle) {
    SettleGuestCtl();
    if (Status s = step(&out.pause, 0, 1, 0, "Warm"); !s.ok()) return s;
    if (Status s = step(&out.resume, 1, 0, 0, "Running"); !s.ok()) return s;
    if (Status s = step(nullptr, 0, 1, 0, "Warm"); !s.ok()) return s;
    if (Status s = step(&out.sleep, 0, 0, 1, "Sleeping"); !s.ok()) return s;
    if (Status s = step(&out.wake, 1, 0, 0, "Running"); !s.ok()) return s;
    if (auto own = mvmd.RecordMs(pool, name, "wakeMs")) {
      out.wakeOwn.push_back(out.wake.back() - *own);
    }
  }
  for (const auto& item : PoolInstances(mvmd.socket(), pool)) {
    if (item["name"].asString() != name) {
      return Error{"mvmd replaced " + name + " by " + item["name"].asString() +
                   ": the steps did not move one instance"};
    }
    reaper.Add({item["vmm"]["pid"].asInt64(), item["vmm"]["startTime"].asUInt64()});
  }
  if (Status s = mvmd.Remove(file); !s.ok()) return s;
  auto gone = mvmd.watch().WaitFor(
      [&](const Items& items) {
        return std::none_of(items.begin(), items.end(),
                            [&](const auto& kv) { return kv.second["pool"].asString() == pool; });
      },
      kStepTimeout, "mvmd " + pool + " destroyed");
  if (!gone.ok()) return gone.error();
  return {};
}

// ---- report ------------------------------------------------------------------------------

struct Flags {
  int runs = 5;
  int opReps = 5;
  int cycles = 3;
  std::string image;
  std::string mvmd = MVM_MVMD_BINARY;
  int debounceMs = 0;
  std::string json;
};

std::string DefaultImage() {
  const char* env = std::getenv("MVM_IMAGE_DIR");
  return env && *env ? env : "/var/lib/mvm/images";
}

Json::Value SamplesJson(Samples& s) {
  Json::Value out(Json::objectValue);
  for (auto& [step, values] : s.All()) {
    Json::Value list(Json::arrayValue);
    for (double v : *values) list.append(v);
    out[step + "Ms"] = list;
    out[step + "MedianMs"] = Median(*values);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  f.image = DefaultImage();
  CLI::App app{"qemu_bench: what mvm adds to raw qemu on boot, pause, resume, sleep and wake"};
  app.add_option("--runs", f.runs, "Guests booted per path")->check(CLI::Range(1, 100));
  app.add_option("--op-reps", f.opReps, "Pause/resume pairs per raw and driver guest")
      ->check(CLI::Range(1, 1000));
  app.add_option("--cycles", f.cycles,
                 "Sleep/wake cycles per guest (mvmd: pause, resume, sleep, wake cycles)")
      ->check(CLI::Range(1, 100));
  app.add_option("--image", f.image, "Guest image directory (vmlinux, initramfs, rootfs.ext4)");
  app.add_option("--mvmd", f.mvmd, "mvmd binary");
  app.add_option("--debounce-ms", f.debounceMs, "mvmd's --debounce-ms")
      ->check(CLI::Range(0, 60000));
  app.add_option("--json", f.json, "Also write the JSON result here");
  CLI11_PARSE(app, argc, argv);
  // The driver logs each action at info: to stderr with the progress, stdout is the result.
  spdlog::set_default_logger(spdlog::stderr_color_mt("qemu_bench"));

  auto setup_error = [](const std::string& what) {
    std::cerr << "qemu_bench: " << what << "\n";
    return 2;
  };
  const fs::path image = fs::absolute(f.image);
  for (const char* file : {"vmlinux", "initramfs.cpio.gz", "rootfs.ext4"}) {
    if (!fs::is_regular_file(image / file)) {
      return setup_error("no guest image: " + (image / file).string() +
                         " is missing (bash hack/build-guest-image.sh, or --image DIR)");
    }
  }
  if (f.mvmd.empty() || ::access(f.mvmd.c_str(), X_OK) != 0) {
    return setup_error("mvmd binary \"" + f.mvmd + "\" is not executable (--mvmd PATH)");
  }
  ::signal(SIGPIPE, SIG_IGN);

  mvm::testing::TempDir base("mvm-qemu-bench");
  mvm::testing::TempDir run("mqb");  // short: socket paths are limited to 107 bytes
  mvm::runtime::QemuOptions options;
  options.runtimeDir = run.path() / "drv";
  options.bootTimeout = kBootTimeout;
  auto vmm = mvm::runtime::QemuVmm::Create(options);
  if (!vmm.ok()) return setup_error(vmm.error().message);
  ::setenv("MVM_QEMU_RUNTIME_DIR", (run.path() / "mvmd").c_str(), 1);

  mvm::manifests::PoolSpec spec;
  spec.runtime = mvm::manifests::Runtime::kQemu;
  spec.image.kernel = (image / "vmlinux").string();
  spec.image.rootfs = (image / "rootfs.ext4").string();
  spec.image.bootArgs = kBootArgs;
  spec.cmd = {"/bin/sh", "-c", "exec sleep 2147483647"};
  spec.resources.vcpus = 1;
  spec.resources.memoryMiB = 128;
  spec.resources.diskMiB = 64;

  const std::string load_before = LoadAverage();
  Progress("load average " + load_before + "; " + std::to_string(f.runs) +
           " runs of raw, driver and mvmd");
  Mvmd mvmd(base.path() / "mvmd", image, f.mvmd, f.debounceMs);
  if (Status s = mvmd.Start(); !s.ok()) return setup_error(s.error().message);

  Samples raw, driver, daemon;
  Reaper reaper;
  for (int i = 1; i <= f.runs; ++i) {
    VmmTarget raw_target{{"bench", "raw-" + std::to_string(i)},
                         "raw",
                         &spec,
                         base.path() / ("raw/raw-" + std::to_string(i)),
                         {}};
    if (Status s = (*vmm)->Prepare(raw_target); !s.ok()) return setup_error(s.error().message);
    if (Status s = RawRun(**vmm, raw_target, f.opReps, f.cycles, raw, reaper); !s.ok()) {
      return setup_error(s.error().message);
    }
    (void)(*vmm)->Destroy(raw_target);
    Progress("run " + std::to_string(i) + " raw: boot " + Seconds(raw.boot.back()));

    VmmTarget drv_target{{"bench", "drv-" + std::to_string(i)},
                         "drv",
                         &spec,
                         base.path() / ("drv/drv-" + std::to_string(i)),
                         {}};
    if (Status s = (*vmm)->Prepare(drv_target); !s.ok()) return setup_error(s.error().message);
    if (Status s = DriverRun(**vmm, drv_target, f.opReps, f.cycles, driver); !s.ok()) {
      (void)(*vmm)->Destroy(drv_target);
      return setup_error(s.error().message);
    }
    Progress("run " + std::to_string(i) + " driver: boot " + Seconds(driver.boot.back()));

    if (Status s = MvmdRun(mvmd, i, f.cycles, daemon, reaper); !s.ok())
      return setup_error(s.error().message);
    Progress("run " + std::to_string(i) + " mvmd: boot " + Seconds(daemon.boot.back()));
  }

  // A/B: each path's median minus raw's (boot in % of raw's median). mvmd's own share of boot
  // and wake (its time minus the driver's recorded spawn -> ready) is measured directly, because
  // A/B cannot resolve them here: raw TCG boots alone spread by tens of percent under load, and
  // every wake waits for the guest's 0.2 s control-channel poll.
  // Targets (exit status): boot own <= 5 % of raw's median boot; wake own <= 20 ms; pause,
  // resume and sleep A/B <= +20 ms on the driver path and on the mvmd path.
  const double raw_boot = Median(raw.boot);
  std::vector<std::string> missed;
  auto check = [&missed](bool ok, const std::string& what) {
    if (!ok) missed.push_back(what);
  };
  Json::Value added(Json::objectValue);
  auto raw_all = raw.All();
  for (auto [label, path] : {std::pair<std::string, Samples*>{"driver", &driver},
                             std::pair<std::string, Samples*>{"mvmd", &daemon}}) {
    Json::Value o(Json::objectValue);
    o["bootPct"] = (Median(path->boot) - raw_boot) / raw_boot * 100;
    for (auto& [step, values] : path->All()) {
      if (step == "boot") continue;
      const double ms = Median(*values) - Median(*raw_all[step]);
      o[step + "Ms"] = ms;
      if (step != "wake") check(ms <= 20, label + " " + step);
    }
    added[label] = o;
  }
  const double boot_own = Median(daemon.bootOwn);
  const double wake_own = Median(daemon.wakeOwn);
  Json::Value own(Json::objectValue);
  for (auto [label, path] : {std::pair<std::string, Samples*>{"driver", &driver},
                             std::pair<std::string, Samples*>{"mvmd", &daemon}}) {
    Json::Value o(Json::objectValue);
    o["bootMs"] = Median(path->bootOwn);
    o["bootPct"] = Median(path->bootOwn) / raw_boot * 100;
    o["wakeMs"] = Median(path->wakeOwn);
    o["bootSamplesMs"] = Json::Value(Json::arrayValue);
    for (double v : path->bootOwn) o["bootSamplesMs"].append(v);
    o["wakeSamplesMs"] = Json::Value(Json::arrayValue);
    for (double v : path->wakeOwn) o["wakeSamplesMs"].append(v);
    own[label] = o;
  }
  check(!daemon.bootOwn.empty() && boot_own / raw_boot * 100 <= 5, "mvmd boot");
  check(!daemon.wakeOwn.empty() && wake_own <= 20, "mvmd wake");
  const bool met = missed.empty();

  const std::string load_after = LoadAverage();
  char line[1024];
  std::snprintf(
      line, sizeof line,
      "qemu_bench: raw boot %.2f s (runs %.2f-%.2f), pause %.2f ms, resume %.2f, sleep %.0f, "
      "wake %.0f; own part of boot: driver %.1f ms, mvmd %.0f ms (%.2f%%); of wake: driver %.1f "
      "ms, mvmd %.1f ms; A/B boot driver "
      "%+.1f%% mvmd %+.1f%%; pause driver %+.1f ms mvmd %+.1f; resume %+.1f / %+.1f; sleep "
      "%+.1f / %+.1f; wake %+.0f / %+.0f",
      raw_boot / 1000, *std::min_element(raw.boot.begin(), raw.boot.end()) / 1000,
      *std::max_element(raw.boot.begin(), raw.boot.end()) / 1000, Median(raw.pause),
      Median(raw.resume), Median(raw.sleep), Median(raw.wake), Median(driver.bootOwn), boot_own,
      boot_own / raw_boot * 100, Median(driver.wakeOwn), wake_own,
      added["driver"]["bootPct"].asDouble(), added["mvmd"]["bootPct"].asDouble(),
      added["driver"]["pauseMs"].asDouble(), added["mvmd"]["pauseMs"].asDouble(),
      added["driver"]["resumeMs"].asDouble(), added["mvmd"]["resumeMs"].asDouble(),
      added["driver"]["sleepMs"].asDouble(), added["mvmd"]["sleepMs"].asDouble(),
      added["driver"]["wakeMs"].asDouble(), added["mvmd"]["wakeMs"].asDouble());
  std::string summary = line;
  std::string missed_text;
  for (const auto& m : missed) missed_text += (missed_text.empty() ? "" : ", ") + m;
  summary += "; targets (boot own <= 5%, wake own and pause/resume/sleep A/B <= +20 ms): " +
             (met ? std::string("met") : "NOT met: " + missed_text) + " (load " + load_before +
             " -> " + load_after + ")";

  Json::Value result(Json::objectValue);
  result["bench"] = "qemu";
  result["runs"] = f.runs;
  result["opReps"] = f.opReps;
  result["cycles"] = f.cycles;
  result["accel"] = options.accel;
  result["guest"] = "1 vCPU, 128 MiB, " + image.string();
  result["mvmdDebounceMs"] = f.debounceMs;
  result["loadBefore"] = load_before;
  result["loadAfter"] = load_after;
  result["raw"] = SamplesJson(raw);
  result["driver"] = SamplesJson(driver);
  result["mvmd"] = SamplesJson(daemon);
  result["added"] = added;
  result["own"] = own;
  result["missed"] = Json::Value(Json::arrayValue);
  for (const auto& m : missed) result["missed"].append(m);
  result["targets"]["bootOwnPct"] = 5;
  result["targets"]["wakeOwnMs"] = 20;
  result["targets"]["pauseResumeSleepAddedMs"] = 20;
  result["met"] = met;
  Json::StreamWriterBuilder writer;
  writer["indentation"] = "";
  writer["precision"] = 3;
  writer["precisionType"] = "decimal";
  const std::string json = Json::writeString(writer, result);
  std::cout << json << "\n" << summary << "\n" << std::flush;
  if (!f.json.empty()) {
    std::ofstream out(f.json);
    out << json << "\n";
    if (!out) return setup_error("cannot write " + f.json);
  }
  return met ? 0 : 1;
}
