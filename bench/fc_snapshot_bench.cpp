// fc_snapshot_bench: what a pool base snapshot (spec.snapshot.base, docs/firecracker.md) buys
// over Full snapshots: disk per sleeping instance, and the time of start, sleep and wake. Runs
// the firecracker driver against a `firecracker` binary: by default tests/firecracker_double
// (so the numbers are the driver's file work on realistic memory files, not VM time: the
// double writes a Full memory file of the guest's whole size and a Diff of only its dirty
// pages); with --firecracker and --kernel/--rootfs, a real one on a KVM host.
//
// Usage: fc_snapshot_bench [--instances N] [--memory-mib M] [--dirty-pages P] [--dir D]
//                          [--firecracker PATH] [--kernel PATH --rootfs PATH] [--json FILE]
// For each mode (full, base), N instances of one pool are started, paused and put to sleep,
// then woken: per mode the medians of start_ms, sleep_ms, wake_ms, the allocated bytes of one
// sleeping instance's snapshot (vmstate + memory files), and for base the base's own bytes and
// creation time (paid once per pool spec). Prints one JSON object (also written to FILE) and a
// one-line summary.

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench/bench_stats.h"
#include "runtime/driver_util.h"
#include "runtime/files.h"
#include "runtime/firecracker_base.h"
#include "runtime/firecracker_vmm.h"

namespace {

namespace fs = std::filesystem;
using namespace mvm;
using Clock = std::chrono::steady_clock;

using mvm::bench::Median;
using mvm::bench::Ms;

uintmax_t Allocated(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? static_cast<uintmax_t>(st.st_blocks) * 512 : 0;
}

struct ModeResult {
  std::vector<double> start, sleep, wake, bytes;
  double baseMs = 0, baseBytes = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int instances = 4;
  int64_t memory_mib = 256;
  std::string dirty_pages = "256", json_path, dir_arg, binary = MVM_FC_DOUBLE, kernel, rootfs;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--instances") instances = std::max(1, std::atoi(v.c_str()));
    if (a == "--memory-mib") memory_mib = std::atoll(v.c_str());
    if (a == "--dirty-pages") dirty_pages = v;
    if (a == "--dir") dir_arg = v;
    if (a == "--firecracker") binary = v;
    if (a == "--kernel") kernel = v;
    if (a == "--rootfs") rootfs = v;
    if (a == "--json") json_path = v;
  }
  spdlog::set_level(spdlog::level::warn);
  // The double's guest dirties this many pages per resume (a real guest: what it really does).
  ::setenv("MVM_FCDOUBLE_DIRTY_PAGES", dirty_pages.c_str(), 1);
  ::unsetenv("MVM_FCDOUBLE_MODE");
  ::unsetenv("MVM_FCDOUBLE_LOG");
  char tmpl[] = "/var/tmp/mvm-fc-snapshot-bench-XXXXXX";
  const fs::path dir = dir_arg.empty() ? fs::path(::mkdtemp(tmpl)) : fs::path(dir_arg);
  fs::create_directories(dir / "images");
  if (kernel.empty()) {
    kernel = (dir / "images/vmlinux").string();
    std::ofstream(kernel) << "not a kernel";
  }
  if (rootfs.empty()) {
    rootfs = (dir / "images/rootfs.ext4").string();
    std::ofstream(rootfs) << std::string(1 << 20, 'r');
  }
  runtime::FirecrackerOptions o;
  o.binary = binary;
  o.runtimeDir = "/run/mvm/fc-bench";
  auto vmm = runtime::FirecrackerVmm::Create(o);
  if (!vmm.ok()) {
    std::fprintf(stderr, "fc_snapshot_bench: %s\n", vmm.error().message.c_str());
    return 1;
  }
  manifests::PoolSpec spec;
  spec.image.kernel = kernel;
  spec.image.rootfs = rootfs;
  spec.image.bootArgs = "console=ttyS0 reboot=k panic=1";
  spec.resources.vcpus = 1;
  spec.resources.memoryMiB = memory_mib;
  spec.policy.gracefulStopSeconds = 1;

  Json::Value out;
  std::string summary;
  int failures = 0;
  for (bool base : {false, true}) {
    const std::string mode = base ? "base" : "full";
    spec.snapshot.base = base;
    ModeResult r;
    std::vector<controller::VmmTarget> targets;
    for (int i = 0; i < instances; ++i) {
      targets.push_back(
          {{"bench", mode + "-" + std::to_string(i)},
           mode,
           &spec,
           dir / "bench/pools" / mode / "instances" / (mode + "-" + std::to_string(i)),
           {}});
    }
    auto fail = [&](const std::string& what, const std::string& why) {
      std::fprintf(stderr, "fc_snapshot_bench: %s %s: %s\n", mode.c_str(), what.c_str(),
                   why.c_str());
      ++failures;
    };
    for (size_t i = 0; i < targets.size(); ++i) {
      auto& t = targets[i];
      if (Status s = (*vmm)->Prepare(t); !s.ok()) {
        fail("prepare", s.error().message);
        return 1;
      }
      auto t0 = Clock::now();
      auto h = (*vmm)->Start(t);
      if (!h.ok()) {
        fail("start", h.error().message);
        return 1;
      }
      if (base && i == 0) {
        // The first start also built the base: its cost is reported apart.
        auto key = runtime::ReadSmallFile((*vmm)->PathsFor(t.dir).baseKey);
        auto info = runtime::ReadSmallFile(runtime::PoolBaseRoot(t.dir) /
                                           (key.ok() ? key->substr(0, 16) : std::string("?")) /
                                           "template.json");
        auto json = info.ok() ? runtime::ParseJsonObject(*info) : std::nullopt;
        r.baseMs = json ? (*json)["createdMs"].asDouble() : 0;
      } else {
        r.start.push_back(Ms(Clock::now() - t0));
      }
      t.handle = *h;
    }
    for (auto& t : targets) {
      if (Status s = (*vmm)->Pause(t); !s.ok()) {
        fail("pause", s.error().message);
        return 1;
      }
      auto t0 = Clock::now();
      if (Status s = (*vmm)->Sleep(t); !s.ok()) {
        fail("sleep", s.error().message);
        return 1;
      }
      r.sleep.push_back(Ms(Clock::now() - t0));
      const auto paths = (*vmm)->PathsFor(t.dir);
      r.bytes.push_back(static_cast<double>(Allocated(paths.vmstate) + Allocated(paths.mem) +
                                            Allocated(paths.memDiff)));
    }
    if (base) {
      fs::path key_dir = runtime::PoolBaseRoot(targets[0].dir);
      for (const auto& e : fs::directory_iterator(key_dir)) {
        if (e.is_directory()) {
          r.baseBytes =
              static_cast<double>(Allocated(e.path() / "mem") + Allocated(e.path() / "vmstate"));
        }
      }
    }
    for (auto& t : targets) {
      auto t0 = Clock::now();
      auto h = (*vmm)->Wake(t);
      if (!h.ok()) {
        fail("wake", h.error().message);
        return 1;
      }
      r.wake.push_back(Ms(Clock::now() - t0));
      t.handle = *h;
    }
    for (auto& t : targets) {
      if (Status s = (*vmm)->Destroy(t); !s.ok()) fail("destroy", s.error().message);
    }
    Json::Value m;
    m["start_ms"] = Median(r.start);
    m["sleep_ms"] = Median(r.sleep);
    m["wake_ms"] = Median(r.wake);
    m["sleeping_instance_bytes"] = Median(r.bytes);
    if (base) {
      m["base_create_ms"] = r.baseMs;
      m["base_bytes"] = r.baseBytes;
    }
    out[mode] = m;
    char line[256];
    std::snprintf(line, sizeof line,
                  "%s: %.1f MiB/sleeping instance, start %.0f ms, sleep %.0f ms, wake %.0f ms; ",
                  mode.c_str(), Median(r.bytes) / (1 << 20), Median(r.start), Median(r.sleep),
                  Median(r.wake));
    summary += line;
  }
  out["instances"] = instances;
  out["memory_mib"] = Json::Int64(memory_mib);
  out["dirty_pages_per_resume"] = dirty_pages;
  out["firecracker"] = binary;
  const std::string json = runtime::JsonLine(out);
  std::printf("%s\n", json.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << json << "\n";
  std::printf("fc_snapshot_bench: %s(base created once in %.0f ms, %.1f MiB)\n", summary.c_str(),
              out["base"]["base_create_ms"].asDouble(),
              out["base"]["base_bytes"].asDouble() / (1 << 20));
  if (dir_arg.empty()) fs::remove_all(dir);
  return failures == 0 ? 0 : 1;
}
