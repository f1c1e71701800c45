// controller_bench: the controller's numbers from issue 3, on the fake VMM (tests/fake_vmm.h) and
// the real SQLite store, manifest loader and watcher.
//
// Scenarios (--scenario resync|drop|transitions|all, or a comma-separated list; default all):
//
//  resync       A converged fleet of --pools pools x --per-pool instances over --tenants tenants
//               (default 1,000 x 100 = 100,000 instances, 10 tenants, no quota; each pool 90%
//               Running, 10% Warm). The fleet is seeded through the real Store API (PutInstance,
//               group-committed from 4 threads) with every instance settled at its target on its
//               pool's current template hash, and the fake host with a matching live VMM each;
//               then a Controller is started on it (adoption probes every instance) and
//               subscribed to a ManifestSource on the fleet's manifests directory, as mvmd does.
//               Measured: a full resync = Controller::Resync() (SIGHUP's path) until every pool
//               key it queued was reconciled and the queue is idle (depth 0, nothing in flight);
//               checked to change nothing (no driver call, no instance key queued). Median of
//               --repeat runs; target <= 100 ms. Also VmRSS growth per instance: across the
//               store seeding plus across controller start-up (adoption, queue, pool status),
//               target <= 4 KiB; each share, and the fake host's (not counted), reported apart.
//  drop         On the same fleet: --edits times, one pool file is replaced (written under the
//               unwatched `.tmp/`, then rename()d over the pool's file) with a version scaling it
//               up by one; measured from just before rename() to the first driver call for that
//               pool (Vmm::Prepare of the new instance, seen by a timing decorator around the
//               fake). Each edit waits until the new instance is Running and the queue is idle.
//               p50/p99; target p99 <= debounce + 1 ms. The source's `staged` hook is wired to
//               Controller::Stage, as in mvmd. Components per edit: kernel delivery (a bare
//               inotify fd), rename -> ManifestSource callback (watcher debounce + loader),
//               SetDesired (it plans a single changed pool itself), callback -> first driver
//               call (controller reaction), and the loader alone (Loader::Load of one changed
//               file, timed apart).
//  transitions  A fresh store, --trans-pools pools sharing --trans-instances instances, fake
//               driver with no latency, --workers workers: create them Running (prepare +
//               start), then --cycles times scale every pool to Warm (pause) and back to Running
//               (resume). Each transition records intent and done (group-committed puts), one
//               audit entry and one event. Rate = driver calls / (desired-state change -> queue
//               idle after the last call); median over the pause/resume phases; target >= 20,000/s.
//
// Output: per scenario one JSON line and one summary line on stdout; --json FILE writes
// {"bench":"controller", "<scenario>": {...}, ...}. Exit status 0 when every target held, 1 when
// one was missed, 2 on a usage or setup error. Timings on a shared machine are noisy: the load
// average is in every JSON object.
//
//   controller_bench [--scenario S] [--pools N] [--per-pool N] [--tenants N] [--repeat N]
//                    [--edits N] [--debounce-ms N] [--trans-instances N] [--trans-pools N]
//                    [--cycles N] [--workers N] [--dir DIR] [--json FILE]

#include <poll.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "controller/controller.h"
#include "controller/spec_codec.h"
#include "controller/sqlite_store.h"
#include "controller/store.h"
#include "manifests/loader.h"
#include "manifests/parser.h"
#include "manifests/source.h"
#include "tests/fake_vmm.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using mvm::Result;
using mvm::Status;
using mvm::controller::Action;
using mvm::controller::Controller;
using mvm::controller::Instance;
using mvm::controller::InstanceKey;
using mvm::controller::InstanceState;
using mvm::controller::Store;
using mvm::controller::Vmm;
using mvm::controller::VmmHandle;
using mvm::controller::VmmTarget;
using mvm::testing::FakeVmm;

struct Flags {
  std::string scenario = "all";
  int pools = 1000;
  int perPool = 100;
  int tenants = 10;
  int repeat = 7;
  int edits = 200;
  int debounceMs = 50;
  int transInstances = 2000;
  int transPools = 20;
  int cycles = 3;
  int workers = 2;
  std::string dir;
  std::string json;
};

bool ParseFlags(int argc, char** argv, Flags& f) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) return false;
    const std::string value = argv[++i];
    auto number = [&](int& out) {
      char* end = nullptr;
      const long v = std::strtol(value.c_str(), &end, 10);
      out = static_cast<int>(v);
      return !value.empty() && *end == '\0' && v >= 0 && v < (1L << 30);
    };
    bool ok = true;
    if (arg == "--scenario") {
      f.scenario = value;
      std::stringstream list(value);
      for (std::string part; ok && std::getline(list, part, ',');) {
        ok = part == "resync" || part == "drop" || part == "transitions" || part == "all";
      }
    } else if (arg == "--pools") {
      ok = number(f.pools) && f.pools > 0;
    } else if (arg == "--per-pool") {
      ok = number(f.perPool) && f.perPool > 0;
    } else if (arg == "--tenants") {
      ok = number(f.tenants) && f.tenants > 0;
    } else if (arg == "--repeat") {
      ok = number(f.repeat) && f.repeat > 0;
    } else if (arg == "--edits") {
      ok = number(f.edits) && f.edits > 0;
    } else if (arg == "--debounce-ms") {
      ok = number(f.debounceMs);
    } else if (arg == "--trans-instances") {
      ok = number(f.transInstances) && f.transInstances > 0;
    } else if (arg == "--trans-pools") {
      ok = number(f.transPools) && f.transPools > 0;
    } else if (arg == "--cycles") {
      ok = number(f.cycles) && f.cycles > 0;
    } else if (arg == "--workers") {
      ok = number(f.workers) && f.workers > 0;
    } else if (arg == "--dir") {
      f.dir = value;
    } else if (arg == "--json") {
      f.json = value;
    } else {
      ok = false;
    }
    if (!ok) return false;
  }
  return f.transInstances >= f.transPools;
}

// --- measuring helpers ---

long RssKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

double CpuSeconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  in >> a >> b >> c;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", a, b, c);
  return buf;
}

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// Nearest-rank percentile of `values` (0 < p <= 100).
double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(values.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, values.size());
  return values[rank - 1];
}
double Median(const std::vector<double>& values) {
  return Percentile(values, 50);
}

// Builds one JSON object, in insertion order.
class JsonObject {
 public:
  JsonObject& Add(const std::string& key, double value, int precision = 3) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", precision, value);
    return Raw(key, buf);
  }
  JsonObject& Add(const std::string& key, long value) { return Raw(key, std::to_string(value)); }
  JsonObject& Add(const std::string& key, int value) { return Raw(key, std::to_string(value)); }
  JsonObject& Add(const std::string& key, bool value) { return Raw(key, value ? "true" : "false"); }
  JsonObject& Add(const std::string& key, const std::string& value) {
    return Raw(key, "\"" + value + "\"");  // values here never need escaping
  }
  JsonObject& Add(const std::string& key, const char* value) {
    return Add(key, std::string(value));
  }
  JsonObject& Raw(const std::string& key, const std::string& json) {
    text_ += (text_.empty() ? "" : ",") + ("\"" + key + "\":") + json;
    return *this;
  }
  std::string str() const { return "{" + text_ + "}"; }

 private:
  std::string text_;
};

// Waits until the controller's queue is idle: nothing ready, nothing in flight, and (when
// `completed_at_least` > 0) at least that many keys completed. Polls every `poll`: often enough
// for the resolution wanted, rarely enough not to take a core from the workers.
bool WaitIdle(Controller& c, uint64_t completed_at_least, std::chrono::seconds timeout,
              std::chrono::microseconds poll = std::chrono::microseconds(250)) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    mvm::controller::WorkQueueMetrics m = c.QueueMetrics();
    if (m.depth == 0 && m.in_flight == 0 && m.completed >= completed_at_least) return true;
    std::this_thread::sleep_for(poll);
  }
  return false;
}

// The controller's template hash of a pool (controller.cpp, Controller::TemplateHash): the
// canonical hash of the spec without replicas and policy. Seeded instances carry it so that the
// planner sees them on the current spec (nothing to roll).
std::string TemplateHash(const mvm::manifests::PoolSpec& spec) {
  Json::Value json = mvm::controller::PoolSpecToJson(spec);
  json.removeMember("replicas");
  json.removeMember("policy");
  return mvm::manifests::CanonicalHash(json);
}

void WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
}

// --- the fleet's manifests ---

std::string TenantName(int t) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "t%02d", t);
  return buf;
}
std::string PoolName(int p) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "pool-%04d", p);
  return buf;
}

std::string TenantYaml(const std::string& name) {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Tenant\nmetadata: {name: " + name +
         "}\nspec: {quota: {}}\n";
}

// A pool of its own image (distinct template hash per pool, as in a real fleet).
std::string PoolYaml(const std::string& tenant, const std::string& pool, int running, int warm) {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata: {name: " + pool +
         ", tenant: " + tenant + "}\nspec:\n  image: {kernel: vmlinux, rootfs: " + pool +
         ".ext4}\n  cmd: [/app/bin/worker]\n  resources: {vcpus: 1, memoryMiB: 128, diskMiB: "
         "64}\n  replicas: {running: " +
         std::to_string(running) + ", warm: " + std::to_string(warm) + "}\n";
}

// --- a Vmm decorator that reports the start of every driver call ---

class TimingVmm final : public Vmm {
 public:
  using Hook = std::function<void(const VmmTarget&, Action, Clock::time_point)>;
  explicit TimingVmm(Vmm& inner) : inner_(inner) {}
  void SetHook(Hook hook) {
    std::lock_guard lock(mu_);
    hook_ = std::move(hook);
  }

  std::string_view Name() const override { return inner_.Name(); }
  Status Prepare(const VmmTarget& t) override {
    Saw(t, Action::kPrepare);
    return inner_.Prepare(t);
  }
  Result<VmmHandle> Start(const VmmTarget& t) override {
    Saw(t, Action::kStart);
    return inner_.Start(t);
  }
  Status Pause(const VmmTarget& t) override {
    Saw(t, Action::kPause);
    return inner_.Pause(t);
  }
  Status Resume(const VmmTarget& t) override {
    Saw(t, Action::kResume);
    return inner_.Resume(t);
  }
  Status Sleep(const VmmTarget& t) override {
    Saw(t, Action::kSleep);
    return inner_.Sleep(t);
  }
  Result<VmmHandle> Wake(const VmmTarget& t) override {
    Saw(t, Action::kWake);
    return inner_.Wake(t);
  }
  Status Stop(const VmmTarget& t) override {
    Saw(t, Action::kStop);
    return inner_.Stop(t);
  }
  Status Destroy(const VmmTarget& t) override {
    Saw(t, Action::kDestroy);
    return inner_.Destroy(t);
  }
  mvm::controller::ProbeResult Probe(const VmmTarget& t) override { return inner_.Probe(t); }

 private:
  void Saw(const VmmTarget& t, Action action) {
    const Clock::time_point now = Clock::now();
    std::lock_guard lock(mu_);
    if (hook_) hook_(t, action, now);
  }

  Vmm& inner_;
  std::mutex mu_;
  Hook hook_;
};

// A bare inotify fd on a directory (IN_MOVED_TO), read by its own thread: when the kernel
// delivered each rename, the floor under the watcher's delivery.
class RawRenames {
 public:
  static Result<std::unique_ptr<RawRenames>> Start(const fs::path& root) {
    mvm::UniqueFd fd(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!fd.valid()) return mvm::Error{"inotify_init1: " + std::string(std::strerror(errno))};
    if (inotify_add_watch(fd.get(), root.c_str(), IN_MOVED_TO) < 0) {
      return mvm::Error{"inotify_add_watch " + root.string() + ": " + std::strerror(errno)};
    }
    auto raw = std::unique_ptr<RawRenames>(new RawRenames(std::move(fd)));
    raw->thread_ = std::thread([p = raw.get()] { p->Run(); });
    return raw;
  }
  ~RawRenames() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  RawRenames(const RawRenames&) = delete;
  RawRenames& operator=(const RawRenames&) = delete;

  // When the rename of `name` was read, waiting up to `timeout`; nullopt if it never was.
  std::optional<Clock::time_point> Wait(const std::string& name, Clock::duration timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return seen_.count(name) > 0; });
    auto it = seen_.find(name);
    if (it == seen_.end()) return std::nullopt;
    return it->second;
  }
  void Clear() {
    std::lock_guard lock(mu_);
    seen_.clear();
  }

 private:
  explicit RawRenames(mvm::UniqueFd fd) : fd_(std::move(fd)) {}
  void Run() {
    alignas(inotify_event) char buf[16 * 1024];
    while (!stop_.load()) {
      pollfd pfd{fd_.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;  // 50 ms: only bounds how long stopping takes
      const ssize_t n = ::read(fd_.get(), buf, sizeof buf);
      const Clock::time_point now = Clock::now();
      std::lock_guard lock(mu_);
      for (ssize_t off = 0; n > 0 && off + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
        inotify_event ev{};
        std::memcpy(&ev, buf + off, sizeof ev);
        const char* name = buf + off + sizeof(inotify_event);
        seen_.emplace(std::string(name, ::strnlen(name, ev.len)), now);
        off += static_cast<ssize_t>(sizeof(inotify_event) + ev.len);
      }
      cv_.notify_all();
    }
  }

  mvm::UniqueFd fd_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Clock::time_point> seen_;
};

// --- the converged fleet shared by `resync` and `drop` ---

struct PoolRef {
  std::string tenant;
  std::string name;
  std::string file;
  int running = 0;
  int warm = 0;
};

class Fleet {
 public:
  Fleet(const Flags& flags, fs::path root) : flags_(flags), root_(std::move(root)) {}
  ~Fleet() {
    source_.reset();
    if (controller_) controller_->Stop();
    controller_.reset();
    store_.reset();
  }

  // Writes the manifests, seeds store and fake host, starts controller and manifest source.
  Status Setup(JsonObject& out) {
    manifests_ = root_ / "manifests";
    fs::create_directories(manifests_ / ".tmp");
    fs::create_directories(root_ / "images");
    const int warm = flags_.perPool / 10;
    for (int t = 0; t < flags_.tenants; ++t) {
      WriteText(manifests_ / (TenantName(t) + ".yaml"), TenantYaml(TenantName(t)));
    }
    for (int p = 0; p < flags_.pools; ++p) {
      PoolRef ref{TenantName(p % flags_.tenants), PoolName(p), "", flags_.perPool - warm, warm};
      ref.file = ref.tenant + "-" + ref.name + ".yaml";
      WriteText(manifests_ / ref.file, PoolYaml(ref.tenant, ref.name, ref.running, ref.warm));
      pools_.push_back(ref);
    }
    parse_.imageRoots = {root_ / "images"};
    loader_ = std::make_unique<mvm::manifests::Loader>(
        mvm::manifests::Loader::Options{{manifests_}, parse_});
    auto loaded = loader_->LoadAll();
    if (!loaded.state->diagnostics.empty()) {
      return mvm::Error{"fleet manifests: " + loaded.state->diagnostics[0].ToString()};
    }

    // Seed the store: every instance settled at its target, through the Store API.
    const long rss_before = RssKiB();
    auto store = Store::Open({root_ / "state", 64});
    if (!store) return store.error();
    store_ = std::move(*store);
    struct Seed {
      std::shared_ptr<const mvm::manifests::PoolSpec> spec;
      std::string hash;
      uint64_t generation;
    };
    std::vector<Seed> seeds;
    for (const PoolRef& ref : pools_) {
      const auto* object =
          loaded.state->Find(mvm::manifests::ObjectKey::PoolKey(ref.tenant, ref.name));
      if (object == nullptr || object->pool() == nullptr) return mvm::Error{"pool not loaded"};
      seeds.push_back({std::make_shared<const mvm::manifests::PoolSpec>(*object->pool()),
                       TemplateHash(*object->pool()), object->generation});
    }
    const int64_t an_hour_ago = mvm::controller::NowMs() - 3600 * 1000;
    const long total = static_cast<long>(pools_.size()) * flags_.perPool;
    std::atomic<bool> failed{false};
    const auto seed_start = Clock::now();
    {
      std::vector<std::thread> threads;
      constexpr int kSeedThreads = 4;
      for (int w = 0; w < kSeedThreads; ++w) {
        threads.emplace_back([&, w] {
          for (long n = w; n < total && !failed; n += kSeedThreads) {
            const size_t p = static_cast<size_t>(n / flags_.perPool);
            const long index = n % flags_.perPool;
            const PoolRef& ref = pools_[p];
            Instance in;
            in.key = {ref.tenant, store_->NewInstanceName(ref.tenant, ref.name)};
            in.pool = ref.name;
            in.state = in.target =
                index < ref.running ? InstanceState::kRunning : InstanceState::kWarm;
            in.specHash = seeds[p].hash;
            in.generation = seeds[p].generation;
            in.spec = seeds[p].spec;
            in.handle.pid = 100000 + n;
            // Handle fields of a real driver's size (the fake only checks the pid).
            in.handle.startTime = 987654321;
            in.handle.socket = (root_ / "tenants" / ref.tenant / "pools" / ref.name / "instances" /
                                in.key.name / "runtime" / "api.sock")
                                   .string();
            in.handle.data = R"({"driver":"firecracker","jailed":true})";
            in.createdAtMs = in.stateSinceMs = in.updatedAtMs = an_hour_ago;
            if (!store_->PutInstance(in)) failed = true;
          }
        });
      }
      for (auto& t : threads) t.join();
    }
    if (failed) return mvm::Error{"seeding the store failed"};
    const double seed_s = std::chrono::duration<double>(Clock::now() - seed_start).count();
    const long rss_store = RssKiB();
    // The fake host: a live VMM for every instance, with the recorded pid (paused when Warm).
    for (const PoolRef& ref : pools_) {
      store_->ForEachInPool(ref.tenant, ref.name, [this](const Instance& in) {
        fake_.Seed(in.key, FakeVmm::Resources{true, true, in.state == InstanceState::kWarm, false,
                                              in.handle.pid});
      });
    }
    const long rss_fake = RssKiB();

    // Controller on it, as mvmd runs it (timers pushed out so they cannot fire mid-measurement).
    Controller::Options options;
    options.workers = flags_.workers;
    options.resyncPeriod = std::chrono::hours(1);
    options.probePeriod = std::chrono::hours(1);
    options.instancesDir = root_ / "tenants";
    controller_ = std::make_unique<Controller>(options, *store_, timing_);
    const auto start = Clock::now();
    if (Status s = controller_->Start(); !s.ok()) return s;
    const double start_ms = Ms(Clock::now() - start);
    mvm::manifests::ManifestSource::Options source;
    source.roots = {manifests_};
    source.parse = parse_;
    source.debounce = std::chrono::milliseconds(flags_.debounceMs);
    source.staged = [this](std::shared_ptr<const mvm::manifests::DesiredState> state) {
      controller_->Stage(std::move(state));
    };
    auto started = mvm::manifests::ManifestSource::Start(
        source, [this](std::shared_ptr<const mvm::manifests::DesiredState> state,
                       const mvm::manifests::Diff&) {
          const Clock::time_point enter = Clock::now();
          controller_->SetDesired(std::move(state));
          const Clock::time_point exit = Clock::now();
          std::lock_guard lock(callback_mu_);
          callback_enter_ = enter;
          callback_exit_ = exit;
          ++callbacks_;
          callback_cv_.notify_all();
        });
    if (!started) return started.error();
    source_ = std::move(*started);
    if (!WaitIdle(*controller_, 0, std::chrono::seconds(600))) {
      return mvm::Error{"fleet did not settle"};
    }
    const double settle_ms = Ms(Clock::now() - start);
    if (!controller_->Converged()) return mvm::Error{"fleet is not converged after start-up"};
    if (fake_.total_calls() != 0) {
      return mvm::Error{"start-up of a converged fleet called the driver " +
                        std::to_string(fake_.total_calls()) + " times"};
    }
    const long rss_controller = RssKiB();
    std::cerr << "controller_bench: fleet of " << total << " instances converged (pid "
              << ::getpid() << ")\n";
    const double n = static_cast<double>(total);
    out.Add("instances", total)
        .Add("pools", static_cast<int>(pools_.size()))
        .Add("tenants", flags_.tenants)
        .Add("seed_s", seed_s, 2)
        .Add("seed_puts_per_s", n / seed_s, 0)
        .Add("start_ms", start_ms, 0)
        .Add("start_settled_ms", settle_ms, 0)
        .Add("rss_store_bytes_per_instance", static_cast<double>(rss_store - rss_before) * 1024 / n,
             0)
        .Add("rss_controller_bytes_per_instance",
             static_cast<double>(rss_controller - rss_fake) * 1024 / n, 0)
        .Add("rss_fake_host_bytes_per_instance",
             static_cast<double>(rss_fake - rss_store) * 1024 / n, 0);
    rss_per_instance_ =
        static_cast<double>((rss_store - rss_before) + (rss_controller - rss_fake)) * 1024 / n;
    return {};
  }

  Controller& controller() { return *controller_; }
  Store& store() { return *store_; }
  FakeVmm& fake() { return fake_; }
  TimingVmm& timing() { return timing_; }
  mvm::manifests::Loader& loader() { return *loader_; }
  std::vector<PoolRef>& pools() { return pools_; }
  const fs::path& manifests() const { return manifests_; }
  double rss_per_instance() const { return rss_per_instance_; }

  // The ManifestSource callback of the last snapshot: when it began and when SetDesired returned.
  bool WaitCallback(uint64_t after, Clock::duration timeout, Clock::time_point& enter,
                    Clock::time_point& exit) {
    std::unique_lock lock(callback_mu_);
    if (!callback_cv_.wait_for(lock, timeout, [&] { return callbacks_ > after; })) return false;
    enter = callback_enter_;
    exit = callback_exit_;
    return true;
  }
  uint64_t callbacks() {
    std::lock_guard lock(callback_mu_);
    return callbacks_;
  }

 private:
  const Flags& flags_;
  fs::path root_;
  fs::path manifests_;
  mvm::manifests::ParseOptions parse_;
  std::vector<PoolRef> pools_;
  std::unique_ptr<mvm::manifests::Loader> loader_;
  FakeVmm fake_;
  TimingVmm timing_{fake_};
  std::unique_ptr<Store> store_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<mvm::manifests::ManifestSource> source_;
  double rss_per_instance_ = 0;

  std::mutex callback_mu_;
  std::condition_variable callback_cv_;
  uint64_t callbacks_ = 0;
  Clock::time_point callback_enter_, callback_exit_;
};

struct Outcome {
  std::string json;
  std::string summary;
  bool met = true;
};

// --- resync ---

Result<Outcome> RunResync(const Flags& flags, Fleet& fleet, JsonObject fleet_json) {
  Controller& c = fleet.controller();
  const size_t instances = fleet.store().InstanceCount();
  const int calls_before = fleet.fake().total_calls();
  std::vector<double> full_ms, call_ms, cpu_ms;
  for (int r = 0; r < flags.repeat; ++r) {
    if (!WaitIdle(c, 0, std::chrono::seconds(60))) return mvm::Error{"queue not idle"};
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const mvm::controller::WorkQueueMetrics before = c.QueueMetrics();
    const double cpu0 = CpuSeconds();
    const auto t0 = Clock::now();
    c.Resync();
    const auto t1 = Clock::now();
    if (!WaitIdle(c, before.completed + fleet.pools().size(), std::chrono::seconds(60))) {
      return mvm::Error{"resync did not finish"};
    }
    const auto t2 = Clock::now();
    const double cpu1 = CpuSeconds();
    const mvm::controller::WorkQueueMetrics after = c.QueueMetrics();
    if (after.adds - before.adds != fleet.pools().size()) {
      return mvm::Error{"resync queued " + std::to_string(after.adds - before.adds) +
                        " keys, expected one per pool (" + std::to_string(fleet.pools().size()) +
                        "): it changed something"};
    }
    full_ms.push_back(Ms(t2 - t0));
    call_ms.push_back(Ms(t1 - t0));
    cpu_ms.push_back((cpu1 - cpu0) * 1e3);
  }
  if (fleet.fake().total_calls() != calls_before || fleet.store().InstanceCount() != instances) {
    return mvm::Error{"resync of a converged fleet changed it"};
  }
  if (!c.Converged()) return mvm::Error{"fleet not converged after resync"};
  const double full = Median(full_ms);
  const double rss = fleet.rss_per_instance();
  Outcome o;
  o.met = full <= 100 && rss <= 4096;
  JsonObject j;
  j.Add("bench", "controller").Add("scenario", "resync");
  j.Raw("fleet", fleet_json.str());
  j.Add("method", "Controller::Resync() until every pool key is reconciled and the queue is idle")
      .Add("workers", flags.workers)
      .Add("repeat", flags.repeat)
      .Add("resync_ms", full, 2)
      .Add("resync_ms_min", *std::min_element(full_ms.begin(), full_ms.end()), 2)
      .Add("resync_ms_max", *std::max_element(full_ms.begin(), full_ms.end()), 2)
      .Add("resync_call_ms", Median(call_ms), 2)
      .Add("resync_cpu_ms", Median(cpu_ms), 2)
      .Add("rss_bytes_per_instance", rss, 0)
      .Add("target_resync_ms", 100L)
      .Add("target_rss_bytes_per_instance", 4096L)
      .Add("met", o.met)
      .Add("loadavg", LoadAverage());
  o.json = j.str();
  char line[512];
  std::snprintf(line, sizeof line,
                "controller/resync: %zu instances in %zu pools: full resync %.1f ms (median of %d, "
                "Resync() call %.1f ms, %.1f ms CPU; target <= 100), RSS %.0f B/instance (target "
                "<= 4096) %s [load %s]",
                instances, fleet.pools().size(), full, flags.repeat, Median(call_ms),
                Median(cpu_ms), rss, o.met ? "MET" : "MISSED", LoadAverage().c_str());
  o.summary = line;
  return o;
}

// --- drop -> first driver call ---

Result<Outcome> RunDrop(const Flags& flags, Fleet& fleet) {
  Controller& c = fleet.controller();
  auto raw = RawRenames::Start(fleet.manifests());
  if (!raw) return raw.error();

  struct Armed {
    std::mutex mu;
    std::condition_variable cv;
    std::string tenant, pool;
    std::optional<Clock::time_point> first;
    std::optional<Clock::time_point> started;  // Start of the new instance: it is booting
  } armed;
  fleet.timing().SetHook([&armed](const VmmTarget& t, Action action, Clock::time_point now) {
    std::lock_guard lock(armed.mu);
    if (t.key.tenant != armed.tenant || t.pool != armed.pool) return;
    if (!armed.first) armed.first = now;
    if (action == Action::kStart) armed.started = now;
    armed.cv.notify_all();
  });

  // after_delivery: from the moment the kernel delivered the rename to a bare inotify fd read by
  // another thread; the host's own delivery delay (which the watcher shares) is left out of it.
  std::vector<double> total, kernel, after_delivery, to_callback, set_desired, reaction;
  int lost = 0;
  for (int e = 0; e < flags.edits; ++e) {
    PoolRef& ref =
        fleet.pools()[static_cast<size_t>((e * 7919L) % static_cast<long>(fleet.pools().size()))];
    ++ref.running;
    const fs::path tmp = fleet.manifests() / ".tmp" / ref.file;
    WriteText(tmp, PoolYaml(ref.tenant, ref.name, ref.running, ref.warm));
    {
      std::lock_guard lock(armed.mu);
      armed.tenant = ref.tenant;
      armed.pool = ref.name;
      armed.first.reset();
      armed.started.reset();
    }
    raw->get()->Clear();
    const uint64_t callbacks = fleet.callbacks();
    const Clock::time_point t0 = Clock::now();
    fs::rename(tmp, fleet.manifests() / ref.file);

    std::unique_lock lock(armed.mu);
    if (!armed.cv.wait_for(lock, std::chrono::seconds(10),
                           [&] { return armed.first.has_value(); })) {
      ++lost;
      continue;
    }
    const Clock::time_point first = *armed.first;
    armed.cv.wait_for(lock, std::chrono::seconds(10), [&] { return armed.started.has_value(); });
    lock.unlock();
    Clock::time_point enter, exit;
    if (!fleet.WaitCallback(callbacks, std::chrono::seconds(5), enter, exit)) {
      ++lost;
      continue;
    }
    total.push_back(Ms(first - t0));
    to_callback.push_back(Ms(enter - t0));
    set_desired.push_back(Ms(exit - enter));
    reaction.push_back(Ms(first - enter));
    if (auto k = raw->get()->Wait(ref.file, std::chrono::seconds(1))) {
      kernel.push_back(Ms(*k - t0));
      after_delivery.push_back(Ms(first - *k));
    }
    // Settle: the new instance booted and nothing is left to do before the next edit.
    if (!WaitIdle(c, 0, std::chrono::seconds(30))) return mvm::Error{"queue never idle"};
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  fleet.timing().SetHook(nullptr);

  // The loader alone, on a copy of the manifests nobody watches (so no controller work competes
  // with it): one changed pool file in a directory of the fleet's size, as the watcher hands it.
  std::vector<double> loader_ms;
  {
    const fs::path copy = fleet.manifests().parent_path() / "loader-copy";
    fs::remove_all(copy);
    fs::copy(fleet.manifests(), copy, fs::copy_options::recursive);
    mvm::manifests::Loader::Options options = fleet.loader().options();
    options.roots = {copy};
    mvm::manifests::Loader copy_loader(options);
    if (!copy_loader.LoadAll().state->diagnostics.empty()) return mvm::Error{"loader: copy"};
    for (int i = 0; i < std::min(flags.edits, 100); ++i) {
      const PoolRef& ref = fleet.pools()[static_cast<size_t>(i)];
      const fs::path tmp = copy / ".tmp" / ref.file;
      WriteText(tmp, PoolYaml(ref.tenant, ref.name, ref.running + 1 + i, ref.warm));
      fs::rename(tmp, copy / ref.file);
      mvm::manifests::ChangeSet changes;
      changes.paths = {copy / ref.file};
      const auto t0 = Clock::now();
      auto outcome = copy_loader.Load(changes);
      loader_ms.push_back(Ms(Clock::now() - t0));
      if (!outcome.changed || !outcome.state->diagnostics.empty()) {
        return mvm::Error{"loader: the edit was not loaded"};
      }
    }
    fs::remove_all(copy);
  }

  const double p99 = Percentile(total, 99);
  const double target = flags.debounceMs + 1.0;
  Outcome o;
  o.met = lost == 0 && p99 <= target;
  JsonObject j;
  j.Add("bench", "controller")
      .Add("scenario", "drop")
      .Add("instances", static_cast<long>(fleet.store().InstanceCount()))
      .Add("pools", static_cast<int>(fleet.pools().size()))
      .Add("edits", flags.edits)
      .Add("lost", lost)
      .Add("debounce_ms", flags.debounceMs)
      .Add("first_call_p50_ms", Percentile(total, 50))
      .Add("first_call_p99_ms", p99)
      .Add("first_call_max_ms", Percentile(total, 100))
      .Add("kernel_delivery_p50_ms", Percentile(kernel, 50))
      .Add("kernel_delivery_p99_ms", Percentile(kernel, 99))
      .Add("delivered_to_first_call_p50_ms", Percentile(after_delivery, 50))
      .Add("delivered_to_first_call_p99_ms", Percentile(after_delivery, 99))
      .Add("rename_to_snapshot_p50_ms", Percentile(to_callback, 50))
      .Add("rename_to_snapshot_p99_ms", Percentile(to_callback, 99))
      .Add("loader_one_file_p50_ms", Percentile(loader_ms, 50))
      .Add("loader_one_file_p99_ms", Percentile(loader_ms, 99))
      .Add("set_desired_p50_ms", Percentile(set_desired, 50))
      .Add("set_desired_p99_ms", Percentile(set_desired, 99))
      .Add("snapshot_to_first_call_p50_ms", Percentile(reaction, 50))
      .Add("snapshot_to_first_call_p99_ms", Percentile(reaction, 99))
      .Add("target_p99_ms", target)
      .Add("met", o.met)
      .Add("loadavg", LoadAverage());
  o.json = j.str();
  char line[640];
  std::snprintf(line, sizeof line,
                "controller/drop: %d edits on %zu instances: rename -> first driver call p50 %.2f "
                "ms, p99 %.2f ms (debounce %d ms; target p99 <= %.0f); kernel delivery p99 %.2f "
                "ms, delivered -> call p99 %.2f ms; snapshot -> call p50 %.2f ms, loader %.2f ms "
                "%s [load %s]",
                flags.edits, fleet.store().InstanceCount(), Percentile(total, 50), p99,
                flags.debounceMs, target, Percentile(kernel, 99), Percentile(after_delivery, 99),
                Percentile(reaction, 50), Percentile(loader_ms, 50), o.met ? "MET" : "MISSED",
                LoadAverage().c_str());
  o.summary = line;
  return o;
}

// --- transitions/s ---

Result<std::shared_ptr<const mvm::manifests::DesiredState>> Snapshot(
    const std::vector<std::string>& pools, int per_pool, bool warm,
    const std::shared_ptr<const mvm::manifests::DesiredState>& previous) {
  mvm::manifests::ParseOptions parse;
  parse.imageRoots = {"/var/lib/mvm/images"};
  std::vector<mvm::manifests::FileObjects> files;
  auto add = [&](const std::string& file, const std::string& text) -> Status {
    auto parsed = mvm::manifests::ParseManifest(file, text, parse);
    if (!parsed.ok()) return mvm::Error{parsed.diagnostics[0].ToString()};
    files.push_back({file, parsed.objects});
    return {};
  };
  if (Status s = add("tenant.yaml", TenantYaml("bench")); !s.ok()) return s.error();
  for (const std::string& p : pools) {
    Status s = add(p + ".yaml", PoolYaml("bench", p, warm ? 0 : per_pool, warm ? per_pool : 0));
    if (!s.ok()) return s.error();
  }
  mvm::manifests::Diagnostics diagnostics;
  auto state = std::make_shared<mvm::manifests::DesiredState>(
      mvm::manifests::Assemble(files, previous.get(), diagnostics));
  if (!diagnostics.empty()) return mvm::Error{diagnostics[0].ToString()};
  state->revision = previous ? previous->revision + 1 : 1;
  return std::shared_ptr<const mvm::manifests::DesiredState>(std::move(state));
}

Result<Outcome> RunTransitions(const Flags& flags, const fs::path& root) {
  auto opened = Store::Open({root / "transitions-state", 64});
  if (!opened) return opened.error();
  std::unique_ptr<Store> store = std::move(*opened);
  FakeVmm fake;  // no latency: a no-op driver
  Controller::Options options;
  options.workers = flags.workers;
  options.resyncPeriod = std::chrono::hours(1);
  options.probePeriod = std::chrono::hours(1);
  options.instancesDir = root / "transitions-tenants";
  Controller c(options, *store, fake);
  if (Status s = c.Start(); !s.ok()) return s.error();

  std::vector<std::string> pools;
  for (int p = 0; p < flags.transPools; ++p) pools.push_back(PoolName(p));
  const int per_pool = flags.transInstances / flags.transPools;
  const int n = per_pool * flags.transPools;

  struct Phase {
    std::string name;
    int calls = 0;
    double ms = 0;        // desired-state change -> queue idle
    double calls_ms = 0;  // desired-state change -> last driver call
    double cpu_us = 0;    // process CPU per transition
    double ops_per_txn = 0;
    long keys = 0;     // queue keys reconciled (instance and pool keys)
    long commits = 0;  // SQLite transactions
  };
  std::vector<Phase> phases;
  std::shared_ptr<const mvm::manifests::DesiredState> desired;
  auto run_phase = [&](const std::string& name, bool warm, int calls_each) -> Status {
    auto next = Snapshot(pools, per_pool, warm, desired);
    if (!next) return next.error();
    desired = *next;
    const int expected = n * calls_each;
    const int calls0 = fake.total_calls();
    const uint64_t keys0 = c.QueueMetrics().completed;
    const auto stats0 = *mvm::controller::CommitStatsOf(*store);
    const double cpu0 = CpuSeconds();
    const auto t0 = Clock::now();
    c.SetDesired(desired);
    const auto deadline = t0 + std::chrono::seconds(300);
    while (fake.total_calls() < calls0 + expected && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const auto t_calls = Clock::now();
    if (!WaitIdle(c, 0, std::chrono::seconds(60), std::chrono::milliseconds(1))) {
      return mvm::Error{name + ": never idle"};
    }
    const auto t_idle = Clock::now();
    const double cpu1 = CpuSeconds();
    const auto stats1 = *mvm::controller::CommitStatsOf(*store);
    const int calls = fake.total_calls() - calls0;
    const uint64_t keys = c.QueueMetrics().completed - keys0;
    if (calls != expected) {
      return mvm::Error{name + ": " + std::to_string(calls) + " driver calls, expected " +
                        std::to_string(expected)};
    }
    if (!c.Converged()) return mvm::Error{name + ": not converged"};
    Phase ph;
    ph.name = name;
    ph.calls = calls;
    ph.ms = Ms(t_idle - t0);
    ph.calls_ms = Ms(t_calls - t0);
    ph.cpu_us = (cpu1 - cpu0) * 1e6 / calls;
    ph.keys = static_cast<long>(keys);
    ph.commits = static_cast<long>(stats1.transactions - stats0.transactions);
    ph.ops_per_txn =
        static_cast<double>(stats1.operations - stats0.operations) /
        static_cast<double>(std::max<uint64_t>(1, stats1.transactions - stats0.transactions));
    phases.push_back(ph);
    return {};
  };
  if (Status s = run_phase("create", false, 2); !s.ok()) return s.error();
  for (int cycle = 0; cycle < flags.cycles; ++cycle) {
    if (Status s = run_phase("pause", true, 1); !s.ok()) return s.error();
    if (Status s = run_phase("resume", false, 1); !s.ok()) return s.error();
  }
  c.Stop();

  std::vector<double> rates, cpu;
  std::string phase_json;
  for (const Phase& ph : phases) {
    const double rate = ph.calls / (ph.ms / 1e3);
    if (ph.name != "create") {
      rates.push_back(rate);
      cpu.push_back(ph.cpu_us);
    }
    JsonObject pj;
    pj.Add("phase", ph.name)
        .Add("transitions", ph.calls)
        .Add("ms", ph.ms, 1)
        .Add("to_last_call_ms", ph.calls_ms, 1)
        .Add("per_s", rate, 0)
        .Add("cpu_us_per_transition", ph.cpu_us, 1)
        .Add("keys_reconciled", ph.keys)
        .Add("commits", ph.commits)
        .Add("store_ops_per_txn", ph.ops_per_txn, 2);
    phase_json += (phase_json.empty() ? "" : ",") + pj.str();
  }
  const double rate = Median(rates);
  Outcome o;
  o.met = rate >= 20000;
  JsonObject j;
  j.Add("bench", "controller")
      .Add("scenario", "transitions")
      .Add("instances", n)
      .Add("pools", flags.transPools)
      .Add("workers", flags.workers)
      .Add("cycles", flags.cycles)
      .Add("transitions_per_s", rate, 0)
      .Add("transitions_per_s_min", *std::min_element(rates.begin(), rates.end()), 0)
      .Add("transitions_per_s_max", *std::max_element(rates.begin(), rates.end()), 0)
      .Add("cpu_us_per_transition", Median(cpu), 1)
      .Raw("phases", "[" + phase_json + "]")
      .Add("target_per_s", 20000L)
      .Add("met", o.met)
      .Add("loadavg", LoadAverage());
  o.json = j.str();
  char line[512];
  std::snprintf(line, sizeof line,
                "controller/transitions: %d instances, %d workers: %.0f transitions/s (median of "
                "%zu pause/resume phases, min %.0f), %.1f us CPU/transition (target >= 20000/s) "
                "%s [load %s]",
                n, flags.workers, rate, rates.size(), *std::min_element(rates.begin(), rates.end()),
                Median(cpu), o.met ? "MET" : "MISSED", LoadAverage().c_str());
  o.summary = line;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, flags)) {
    std::cerr << "usage: controller_bench [--scenario resync,drop,transitions|all] [--pools N] "
                 "[--per-pool N] [--tenants N] [--repeat N] [--edits N] [--debounce-ms N] "
                 "[--trans-instances N] [--trans-pools N (<= instances)] [--cycles N] "
                 "[--workers N] [--dir DIR] [--json FILE]\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);  // start-up logs one line per adopted instance

  fs::path root;
  bool remove_root = false;
  if (flags.dir.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "controller-bench-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::cerr << "controller_bench: mkdtemp failed\n";
      return 2;
    }
    root = tmpl;
    remove_root = true;
  } else {
    root = flags.dir;
    fs::create_directories(root);
  }

  auto wanted = [&](const std::string& name) {
    std::stringstream list(flags.scenario);
    for (std::string part; std::getline(list, part, ',');) {
      if (part == name || part == "all") return true;
    }
    return false;
  };
  std::vector<std::pair<std::string, Outcome>> outcomes;
  int status = 0;
  auto report = [&](const std::string& name, Result<Outcome> outcome) {
    if (!outcome) {
      std::cerr << "controller_bench: " << name << ": " << outcome.error().message << "\n";
      status = 2;
      return;
    }
    std::cout << outcome->json << "\n" << outcome->summary << "\n" << std::flush;
    if (!outcome->met && status == 0) status = 1;
    outcomes.emplace_back(name, *outcome);
  };

  if (wanted("resync") || wanted("drop")) {
    auto fleet = std::make_unique<Fleet>(flags, root / "fleet");
    JsonObject fleet_json;
    if (Status s = fleet->Setup(fleet_json); !s.ok()) {
      std::cerr << "controller_bench: fleet: " << s.error().message << "\n";
      if (remove_root) fs::remove_all(root);
      return 2;
    }
    if (wanted("resync")) report("resync", RunResync(flags, *fleet, fleet_json));
    if (status != 2 && wanted("drop")) report("drop", RunDrop(flags, *fleet));
  }
  if (status != 2 && wanted("transitions")) {
    report("transitions", RunTransitions(flags, root));
  }

  if (!flags.json.empty() && !outcomes.empty()) {
    std::string text = "{\"bench\":\"controller\"";
    for (const auto& [name, o] : outcomes) text += ",\"" + name + "\":" + o.json;
    text += "}\n";
    std::ofstream out(flags.json);
    out << text;
    if (!out.flush()) {
      std::cerr << "controller_bench: cannot write " << flags.json << "\n";
      status = 2;
    }
  }
  if (remove_root) fs::remove_all(root);
  return status;
}
