// jail_bench: what confinement adds to starting a VMM process (docs/security.md). Each sample
// spawns /usr/bin/true detached and waits for it to exit, so it measures fork, the jail's steps
// and exec, not the program. Needs root.
//
// Usage: jail_bench [--samples N] [--json FILE]
// Reports medians, in milliseconds, of:
//   plain_ms       SpawnDetached without a jail
//   jail_ms        with namespaces, pivot_root, uid, caps, rlimits, baseline seccomp
//   jail_strict_ms the same with the strict profile
//   jail_cgroup_ms the same plus a fresh cgroup leaf (create, join, kill + rmdir)
//   filter_build_ms  building and exporting the strict BPF program (done once per spawn)
// Prints one JSON object (also written to FILE) and a one-line summary.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_stats.h"
#include "runtime/cgroup.h"
#include "runtime/jail.h"
#include "runtime/process.h"
#include "runtime/seccomp_profile.h"

namespace {

namespace fs = std::filesystem;
using namespace mvm::runtime;
using Clock = std::chrono::steady_clock;

using mvm::bench::Median;
using mvm::bench::Ms;

}  // namespace

int main(int argc, char** argv) {
  int samples = 50;
  std::string json_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--samples") samples = std::atoi(argv[i + 1]);
    if (a == "--json") json_path = argv[i + 1];
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "jail_bench: needs root (namespaces, setuid)\n");
    return 1;
  }
  char tmpl[] = "/tmp/mvm-jail-bench-XXXXXX";
  if (!::mkdtemp(tmpl)) return 1;
  const fs::path dir = tmpl;
  fs::create_directories(dir / "root");
  auto strict = BuildSeccompFilter(SeccompProfile::kStrict);
  auto baseline = BuildSeccompFilter(SeccompProfile::kBaseline);
  if (!strict.ok() || !baseline.ok()) return 1;

  auto spec = [&](const std::vector<struct sock_filter>& filter) {
    JailSpec j;
    j.root = dir / "root";
    AddUsrSystem(j);
    j.devices = {"/dev/null"};
    j.uid = j.gid = 330000;
    j.seccomp = filter;
    return j;
  };
  auto run = [&](const std::function<std::optional<JailSpec>()>& make) -> double {
    std::vector<double> ms;
    for (int i = 0; i < samples; ++i) {
      auto t0 = Clock::now();
      std::optional<JailSpec> jail = make();
      auto id = SpawnDetached({{"/usr/bin/true"}, dir / "log", "/", jail});
      if (!id.ok()) {
        std::fprintf(stderr, "jail_bench: %s\n", id.error().message.c_str());
        std::exit(1);
      }
      WaitForExit(*id, std::chrono::seconds(10));
      ms.push_back(Ms(Clock::now() - t0));
    }
    return Median(ms);
  };

  const double plain = run([] { return std::nullopt; });
  const double jail = run([&] { return spec(*baseline); });
  const double jail_strict = run([&] { return spec(*strict); });
  auto tree = CgroupTree::OnHost();
  double jail_cgroup = 0;
  if (tree.ok()) {
    jail_cgroup = run([&]() -> std::optional<JailSpec> {
      // The leaf of the previous sample is removed here, so its kill + rmdir is counted too.
      (void)CgroupTree::Kill(tree->LeafPath("jailbench", "i"));
      auto leaf = tree->Create("jailbench", "i", {});
      JailSpec j = spec(*baseline);
      if (leaf.ok()) j.cgroup = leaf->path;
      return j;
    });
    (void)CgroupTree::Kill(tree->LeafPath("jailbench", "i"));
  }
  std::vector<double> build;
  for (int i = 0; i < samples; ++i) {
    auto t0 = Clock::now();
    (void)BuildSeccompFilter(SeccompProfile::kStrict);
    build.push_back(Ms(Clock::now() - t0));
  }
  std::error_code ec;
  fs::remove_all(dir, ec);

  char json[512];
  std::snprintf(json, sizeof json,
                "{\"samples\":%d,\"plain_ms\":%.2f,\"jail_ms\":%.2f,\"jail_strict_ms\":%.2f,"
                "\"jail_cgroup_ms\":%.2f,\"filter_build_ms\":%.3f,\"strict_filter_insns\":%zu}",
                samples, plain, jail, jail_strict, jail_cgroup, Median(build), strict->size());
  std::printf("%s\n", json);
  if (!json_path.empty()) std::ofstream(json_path) << json << "\n";
  std::printf(
      "jail_bench: spawn+exit %.2f ms plain, %.2f ms jailed (%+.2f), %.2f ms strict, %.2f "
      "ms with a cgroup leaf; strict filter built in %.3f ms\n",
      plain, jail, jail - plain, jail_strict, jail_cgroup, Median(build));
  return 0;
}
