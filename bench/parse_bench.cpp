// parse_bench: parse + validate N Pool documents (one multi-document YAML stream) on one core.
// Target (issue 2): >= 20,000 documents/s. Prints JSON and a one-line summary.
//
//   build/bench/parse_bench [--docs N] [--rounds R] [--json FILE]
//
// Besides wall-clock rates (the target) it reports, per round and interleaved with the parse:
//  - CPU-time rates (CLOCK_THREAD_CPUTIME_ID), which time slices given to other processes on a
//    shared core do not deflate;
//  - libyaml alone (events parsed and dropped): the floor under any parser built on it;
//  - what first reading every Object::manifest as a Json::Value costs (it is built lazily).

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "manifests/parser.h"

namespace {

std::string PoolDocument(int i) {
  std::string n = std::to_string(i);
  return "---\napiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: workers-" + n +
         "\n  tenant: acme\n  labels: {team: web, tier: backend}\nspec:\n  runtime: firecracker\n"
         "  image: {kernel: vmlinux, rootfs: rootfs.ext4, bootArgs: \"console=ttyS0\"}\n"
         "  cmd: [\"/app/bin/worker\", \"--id\", \"" +
         n +
         "\"]\n  env: {QUEUE: jobs}\n"
         "  resources: {vcpus: 1, memoryMiB: 256, diskMiB: 1024}\n  lifecycle: service\n"
         "  replicas: {running: 3, warm: 2, sleeping: 1}\n"
         "  policy: {minRunningSeconds: 60, minWarmSeconds: 30, idleToWarmSeconds: 300,\n"
         "           warmToSleepSeconds: 900, drainTimeoutSeconds: 30, gracefulStopSeconds: 15}\n";
}

double CpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct Timer {
  std::chrono::steady_clock::time_point wall = std::chrono::steady_clock::now();
  double cpu = CpuSeconds();
  double WallSeconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
  }
  double CpuElapsed() const { return CpuSeconds() - cpu; }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int docs = 10000;
  int rounds = 5;
  std::string json_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--docs")) {
      docs = std::stoi(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--rounds")) {
      rounds = std::stoi(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--json")) {
      json_path = argv[i + 1];
    }
  }
  std::string text;
  for (int i = 0; i < docs; ++i) text += PoolDocument(i);
  mvm::manifests::ParseOptions options;

  std::vector<double> rates, cpu_rates, floor_rates, floor_cpu_rates;
  size_t objects = 0;
  double manifest_us = 0;
  for (int r = 0; r < rounds; ++r) {
    Timer parse;
    auto result = mvm::manifests::ParseManifest("bench.yaml", text, options);
    double seconds = parse.WallSeconds();
    double cpu_seconds = parse.CpuElapsed();
    if (!result.ok()) {
      std::fprintf(stderr, "parse_bench: %s\n", result.diagnostics[0].ToString().c_str());
      return 1;
    }
    objects = result.objects.size();
    rates.push_back(docs / seconds);
    cpu_rates.push_back(docs / cpu_seconds);

    if (r + 1 == rounds) {
      Timer build;
      size_t members = 0;
      for (const auto& object : result.objects) members += object->manifest.value().size();
      manifest_us = build.CpuElapsed() * 1e6 / docs;
      if (members == 0) return 1;
    }

    Timer floor;
    if (mvm::manifests::CountYamlEvents(text) < 0) return 1;
    floor_rates.push_back(docs / floor.WallSeconds());
    floor_cpu_rates.push_back(docs / floor.CpuElapsed());
  }
  double median = Median(rates);
  double best = *std::max_element(rates.begin(), rates.end());
  double cpu_median = Median(cpu_rates);
  double floor_median = Median(floor_rates);
  double floor_cpu_median = Median(floor_cpu_rates);
  bool pass = median >= 20000;
  char json[1024];
  std::snprintf(json, sizeof json,
                "{\"bench\":\"parse\",\"documents\":%d,\"bytes\":%zu,\"rounds\":%d,\"objects\":%zu,"
                "\"docs_per_s_median\":%.0f,\"docs_per_s_best\":%.0f,\"target_docs_per_s\":20000,"
                "\"pass\":%s,\"cpu_docs_per_s_median\":%.0f,\"libyaml_docs_per_s_median\":%.0f,"
                "\"libyaml_cpu_docs_per_s_median\":%.0f,\"manifest_json_cpu_us_per_doc\":%.1f}",
                docs, text.size(), rounds, objects, median, best, pass ? "true" : "false",
                cpu_median, floor_median, floor_cpu_median, manifest_us);
  std::puts(json);
  if (!json_path.empty()) std::ofstream(json_path) << json << '\n';
  std::printf(
      "parse: %.0f docs/s median of %d rounds (%d Pool docs, %.1f MiB; target >= 20000) %s"
      " | cpu time %.0f docs/s | libyaml alone %.0f docs/s (cpu %.0f)\n",
      median, rounds, docs, static_cast<double>(text.size()) / 1048576.0, pass ? "PASS" : "FAIL",
      cpu_median, floor_median, floor_cpu_median);
  return 0;
}
