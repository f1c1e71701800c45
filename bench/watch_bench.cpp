// watch_bench: how long after a manifest is dropped into a watched directory is it delivered?
//
// Each drop writes a small file under the hidden `.tmp` directory of the root (not watched), then
// rename()s it into the root; the clock starts just before rename(). Drops are sequential: drop
// i+1 starts once drop i was delivered. Two observers run on the same directory in the same
// run: a bare inotify fd (IN_MOVED_TO, timed when read: the floor the kernel gives) and the
// pipeline behind StartDelivery() (today the Watcher; expected ~ debounce later).
// "watcher_after_raw_us" (delivery minus the bare fd's read, per drop) separates the pipeline's own
// delay from scheduling noise that both observers see on a loaded machine.
//
// Output: one JSON line, then a one-line summary, on stdout; --json FILE also writes the JSON.
// Exit status: 0 when watcher p99 <= debounce + 2 ms and no drop was lost, 1 otherwise, 2 on a
// usage or setup error.
//
//   watch_bench [--drops N] [--debounce-ms M] [--json FILE]

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "manifests/watcher.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr auto kDeliveryTimeout = std::chrono::seconds(5);
constexpr std::string_view kPrefix = "drop-";

// The delivery hook: the one place where file-system changes become "delivered" notifications.
// It must call `delivered(path)` for each file the pipeline under test reports, on any thread,
// and keep doing so until the returned handle is destroyed. Today that pipeline is the Watcher
// alone; to measure through the loader, start a ManifestSource here and call `delivered` with
// the file behind each object its callback reports as added or changed.
using Delivered = std::function<void(const fs::path&)>;
mvm::Result<std::shared_ptr<void>> StartDelivery(const fs::path& root,
                                                 std::chrono::microseconds debounce,
                                                 Delivered delivered) {
  mvm::manifests::Watcher::Options options;
  options.roots = {root};
  options.debounce = debounce;
  auto watcher = mvm::manifests::Watcher::Start(
      options, [delivered = std::move(delivered)](const mvm::manifests::ChangeSet& changes) {
        for (const fs::path& path : changes.paths) delivered(path);
      });
  if (!watcher) return watcher.error();
  return std::shared_ptr<void>(std::move(watcher).value());
}

struct Args {
  int drops = 1000;
  int debounceMs = 50;
  std::string jsonPath;
};

std::optional<Args> ParseArgs(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) return std::nullopt;
    const std::string value = argv[++i];
    try {
      if (flag == "--drops") {
        args.drops = std::stoi(value);
      } else if (flag == "--debounce-ms") {
        args.debounceMs = std::stoi(value);
      } else if (flag == "--json") {
        args.jsonPath = value;
      } else {
        return std::nullopt;
      }
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  if (args.drops <= 0 || args.debounceMs < 0) return std::nullopt;
  return args;
}

// The index of a dropped file ("drop-000042.yaml" -> 42), or -1 for anything else.
int DropIndex(std::string_view name) {
  if (!name.starts_with(kPrefix)) return -1;
  int index = 0;
  for (char c : name.substr(kPrefix.size())) {
    if (c == '.') return index;
    if (c < '0' || c > '9') return -1;
    index = index * 10 + (c - '0');
  }
  return -1;
}

std::string DropName(int index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "drop-%06d.yaml", index);
  return buf;
}

int64_t Nanos(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Arrival time (steady clock, ns; 0 = not yet) per drop, written by observer threads.
class Arrivals {
 public:
  explicit Arrivals(int n) : times_(static_cast<size_t>(n)) {}

  void Record(int index, Clock::time_point when) {
    if (index < 0 || static_cast<size_t>(index) >= times_.size()) return;
    int64_t expected = 0;  // first report wins
    if (times_[static_cast<size_t>(index)].compare_exchange_strong(expected, Nanos(when))) {
      std::lock_guard lock(mu_);
      cv_.notify_all();
    }
  }

  // Arrival of drop `index`, waiting until `deadline`; 0 if it never came.
  int64_t Wait(int index, Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return Get(index) != 0; });
    return Get(index);
  }

 private:
  int64_t Get(int index) const { return times_[static_cast<size_t>(index)].load(); }

  std::vector<std::atomic<int64_t>> times_;
  std::mutex mu_;
  std::condition_variable cv_;
};

// A bare inotify fd on the root, read by its own thread: the kernel's delivery floor.
class RawObserver {
 public:
  static mvm::Result<std::unique_ptr<RawObserver>> Start(const fs::path& root, Arrivals& out) {
    mvm::UniqueFd fd(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!fd.valid()) return mvm::Error{"inotify_init1: " + std::string(std::strerror(errno))};
    if (inotify_add_watch(fd.get(), root.c_str(), IN_MOVED_TO) < 0) {
      return mvm::Error{"inotify_add_watch " + root.string() + ": " + std::strerror(errno)};
    }
    auto raw = std::make_unique<RawObserver>(std::move(fd), out);
    raw->thread_ = std::thread([p = raw.get()] { p->Run(); });
    return raw;
  }

  RawObserver(mvm::UniqueFd fd, Arrivals& out) : fd_(std::move(fd)), out_(out) {}
  ~RawObserver() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  RawObserver(const RawObserver&) = delete;
  RawObserver& operator=(const RawObserver&) = delete;

 private:
  void Run() {
    alignas(inotify_event) char buf[16 * 1024];
    while (!stop_.load()) {
      pollfd pfd{fd_.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;  // 50 ms: only bounds how long stopping takes
      const ssize_t n = ::read(fd_.get(), buf, sizeof buf);
      const Clock::time_point now = Clock::now();
      for (ssize_t off = 0; n > 0 && off + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
        inotify_event ev{};
        std::memcpy(&ev, buf + off, sizeof ev);
        const char* name = buf + off + sizeof(inotify_event);
        out_.Record(DropIndex(std::string_view(name, ::strnlen(name, ev.len))), now);
        off += static_cast<ssize_t>(sizeof(inotify_event) + ev.len);
      }
    }
  }

  mvm::UniqueFd fd_;
  Arrivals& out_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct Stats {
  double p50 = 0, p99 = 0, max = 0;  // microseconds
};

Stats Summarise(std::vector<double> us) {
  Stats s;
  if (us.empty()) return s;
  std::sort(us.begin(), us.end());
  auto rank = [&](double q) {  // nearest-rank percentile
    const auto i = static_cast<size_t>(std::ceil(q * static_cast<double>(us.size())));
    return us[std::clamp<size_t>(i, 1, us.size()) - 1];
  };
  s.p50 = rank(0.50);
  s.p99 = rank(0.99);
  s.max = us.back();
  return s;
}

std::string StatsJson(const Stats& s) {
  char buf[128];
  std::snprintf(buf, sizeof buf, R"({"p50":%.1f,"p99":%.1f,"max":%.1f})", s.p50, s.p99, s.max);
  return buf;
}

bool WriteDrop(const fs::path& path) {
  static constexpr std::string_view kBody =
      "apiVersion: mvm.dev/v1alpha1\nkind: Tenant\nmetadata: {name: bench}\nspec: {}\n";
  mvm::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  return fd.valid() &&
         ::write(fd.get(), kBody.data(), kBody.size()) == static_cast<ssize_t>(kBody.size());
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "mvm-watch-bench-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Args> args = ParseArgs(argc, argv);
  if (!args) {
    std::fprintf(stderr, "usage: %s [--drops N] [--debounce-ms M] [--json FILE]\n", argv[0]);
    return 2;
  }
  const auto debounce = std::chrono::microseconds(std::chrono::milliseconds(args->debounceMs));
  const auto target = debounce + std::chrono::milliseconds(2);

  TempDir tmp;
  if (tmp.path().empty()) {
    std::fprintf(stderr, "watch_bench: mkdtemp: %s\n", std::strerror(errno));
    return 2;
  }
  const fs::path root = tmp.path() / "manifests.d";
  const fs::path staging = root / ".tmp";  // hidden: not watched, same file system
  std::error_code ec;
  fs::create_directories(staging, ec);
  if (ec) {
    std::fprintf(stderr, "watch_bench: mkdir %s: %s\n", staging.c_str(), ec.message().c_str());
    return 2;
  }

  Arrivals raw(args->drops);
  Arrivals delivered(args->drops);
  auto rawObserver = RawObserver::Start(root, raw);
  if (!rawObserver) {
    std::fprintf(stderr, "watch_bench: %s\n", rawObserver.error().message.c_str());
    return 2;
  }
  auto delivery = StartDelivery(root, debounce, [&](const fs::path& path) {
    delivered.Record(DropIndex(path.filename().native()), Clock::now());
  });
  if (!delivery) {
    std::fprintf(stderr, "watch_bench: %s\n", delivery.error().message.c_str());
    return 2;
  }

  std::vector<double> rawUs, watcherUs, afterRawUs;
  int lost = 0;
  for (int i = 0; i < args->drops; ++i) {
    const std::string name = DropName(i);
    if (!WriteDrop(staging / name)) {
      std::fprintf(stderr, "watch_bench: write %s: %s\n", name.c_str(), std::strerror(errno));
      return 2;
    }
    const Clock::time_point t0 = Clock::now();
    if (::rename((staging / name).c_str(), (root / name).c_str()) != 0) {
      std::fprintf(stderr, "watch_bench: rename %s: %s\n", name.c_str(), std::strerror(errno));
      return 2;
    }
    const int64_t got = delivered.Wait(i, t0 + kDeliveryTimeout);
    const int64_t rawGot = raw.Wait(i, Clock::now() + std::chrono::seconds(1));
    if (got == 0) {
      ++lost;
      continue;
    }
    watcherUs.push_back(static_cast<double>(got - Nanos(t0)) / 1000.0);
    if (rawGot == 0) continue;
    rawUs.push_back(static_cast<double>(rawGot - Nanos(t0)) / 1000.0);
    afterRawUs.push_back(static_cast<double>(got - rawGot) / 1000.0);
  }
  delivery->reset();
  rawObserver->reset();

  const Stats rawStats = Summarise(rawUs);
  const Stats watcherStats = Summarise(watcherUs);
  const Stats afterRawStats = Summarise(afterRawUs);
  const auto targetUs = static_cast<double>(target.count());
  const bool pass = lost == 0 && !watcherUs.empty() && watcherStats.p99 <= targetUs;

  char json[640];
  std::snprintf(json, sizeof json,
                R"({"bench":"watch","drops":%d,"debounce_us":%lld,"raw_inotify_us":%s,)"
                R"("watcher_us":%s,"watcher_after_raw_us":%s,"lost":%d,"target_p99_us":%lld,)"
                R"("pass":%s})",
                args->drops, static_cast<long long>(debounce.count()), StatsJson(rawStats).c_str(),
                StatsJson(watcherStats).c_str(), StatsJson(afterRawStats).c_str(), lost,
                static_cast<long long>(target.count()), pass ? "true" : "false");
  std::printf("%s\n", json);
  if (!args->jsonPath.empty()) {
    std::ofstream out(args->jsonPath);
    out << json << "\n";
    if (!out) std::fprintf(stderr, "watch_bench: cannot write %s\n", args->jsonPath.c_str());
  }
  std::printf(
      "watch: p50 %.1fms p99 %.1fms (debounce %dms, target p99 <= %dms) raw inotify p99 %.2fms"
      "%s %s\n",
      watcherStats.p50 / 1000.0, watcherStats.p99 / 1000.0, args->debounceMs, args->debounceMs + 2,
      rawStats.p99 / 1000.0, lost != 0 ? (" lost " + std::to_string(lost)).c_str() : "",
      pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}
