// store_bench: throughput and memory of the SQLite Store under the controller's write pattern:
// T threads each putting their own instances (one Put = one durable, group-committed write).
//
// Usage: store_bench [--instances N] [--threads T] [--repeat R] [--dir DIR] [--json FILE]
// Each repeat opens a fresh store in DIR (default: a new directory under $TMPDIR, removed after)
// and measures:
//   insert_puts_per_s  N new instances put from T threads (median over the repeats)
//   update_puts_per_s  the same N instances put again with a new state (the steady-state case:
//                      the controller records an intent and a completion per transition)
//   rss_bytes_per_instance  growth of VmRSS across the first repeat's inserts, divided by N
//   reopen_ms          Open() of the store holding N instances (restart time)
//   *_cpu_us_per_put   process CPU time (all threads) per put: what a put costs when the
//                      machine is shared, where puts/s only shows what was left over
//   ops_per_txn        writes carried per committed transaction (group-commit batching)
// Prints one JSON object (also written to FILE) and a one-line summary.

#include <stdlib.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "controller/sqlite_store.h"
#include "controller/store.h"

namespace {

using mvm::controller::Instance;
using mvm::controller::InstanceState;
using mvm::controller::Store;

struct Flags {
  long instances = 100000;
  int threads = 2;
  int repeat = 3;
  std::string dir;
  std::string json_file;
};

bool ParseFlags(int argc, char** argv, Flags& flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--instances" && has_value) {
      flags.instances = std::strtol(argv[++i], nullptr, 10);
    } else if (arg == "--threads" && has_value) {
      flags.threads = static_cast<int>(std::strtol(argv[++i], nullptr, 10));
    } else if (arg == "--repeat" && has_value) {
      flags.repeat = static_cast<int>(std::strtol(argv[++i], nullptr, 10));
    } else if (arg == "--dir" && has_value) {
      flags.dir = argv[++i];
    } else if (arg == "--json" && has_value) {
      flags.json_file = argv[++i];
    } else {
      std::cerr << "usage: store_bench [--instances N] [--threads T] [--repeat R] [--dir DIR] "
                   "[--json FILE]\n";
      return false;
    }
  }
  if (flags.instances <= 0 || flags.threads <= 0 || flags.repeat <= 0) {
    std::cerr << "store_bench: --instances, --threads and --repeat must be positive\n";
    return false;
  }
  return true;
}

long RssKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// An instance with realistic field sizes (names, socket path, driver data).
Instance MakeInstance(long i, const std::shared_ptr<const mvm::manifests::PoolSpec>& spec) {
  Instance in;
  char suffix[8];
  std::snprintf(suffix, sizeof suffix, "%05lx", i & 0xfffff);
  in.key = {"acme", "workers-" + std::string(suffix) + std::to_string(i >> 20)};
  in.pool = "workers";
  in.state = InstanceState::kCreated;
  in.target = InstanceState::kRunning;
  in.specHash = "0123456789abcdef";
  in.generation = 1;
  in.spec = spec;
  in.handle.pid = 10000 + i;
  in.handle.startTime = 987654321;
  in.handle.socket =
      "/var/lib/mvm/tenants/acme/pools/workers/instances/" + in.key.name + "/runtime/api.sock";
  in.handle.data = R"({"driver":"firecracker","jailed":true})";
  in.createdAtMs = in.stateSinceMs = in.updatedAtMs = 1'700'000'000'000 + i;
  return in;
}

double CpuSeconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

struct Rate {
  double puts_per_s = 0;
  double cpu_us_per_put = 0;  // CPU time of the whole process (all threads) per put
};

// Puts every instance of `instances` from `threads` threads (thread t puts t, t + threads, …).
Rate PutAll(Store& store, const std::vector<Instance>& instances, int threads) {
  const long n = static_cast<long>(instances.size());
  std::vector<std::thread> workers;
  const double cpu_start = CpuSeconds();
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (long i = t; i < n; i += threads) {
        if (!store.PutInstance(instances[static_cast<std::size_t>(i)])) {
          std::cerr << "store_bench: put failed\n";
          std::exit(1);
        }
      }
    });
  }
  for (std::thread& w : workers) w.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {static_cast<double>(n) / seconds,
          (CpuSeconds() - cpu_start) * 1e6 / static_cast<double>(n)};
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, flags)) return 2;

  std::filesystem::path root;
  bool remove_root = false;
  if (flags.dir.empty()) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "store-bench-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::cerr << "store_bench: mkdtemp failed\n";
      return 1;
    }
    root = tmpl;
    remove_root = true;
  } else {
    root = flags.dir;
  }

  // Built up front, so that the numbers are the store's own cost.
  const auto spec = std::make_shared<const mvm::manifests::PoolSpec>();
  std::vector<Instance> created, running;
  for (long i = 0; i < flags.instances; ++i) {
    created.push_back(MakeInstance(i, spec));
    running.push_back(created.back());
    running.back().state = InstanceState::kRunning;
    running.back().updatedAtMs += 1000;
  }
  std::vector<double> inserts, updates, reopens, insert_cpu, update_cpu;
  double rss_per_instance = 0;
  uint64_t transactions = 0, operations = 0;
  for (int r = 0; r < flags.repeat; ++r) {
    Store::Options options;
    options.dir = root / ("run-" + std::to_string(r));
    std::filesystem::remove_all(options.dir);
    {
      auto store = Store::Open(options);
      if (!store) {
        std::cerr << "store_bench: " << store.error().message << "\n";
        return 1;
      }
      const long rss_before = RssKiB();
      const Rate insert = PutAll(**store, created, flags.threads);
      inserts.push_back(insert.puts_per_s);
      insert_cpu.push_back(insert.cpu_us_per_put);
      if (r == 0) {
        rss_per_instance = static_cast<double>(RssKiB() - rss_before) * 1024 /
                           static_cast<double>(flags.instances);
      }
      const Rate update = PutAll(**store, running, flags.threads);
      updates.push_back(update.puts_per_s);
      update_cpu.push_back(update.cpu_us_per_put);
      const mvm::controller::CommitStats stats = *mvm::controller::CommitStatsOf(**store);
      transactions += stats.transactions;
      operations += stats.operations;
    }
    const auto start = std::chrono::steady_clock::now();
    auto reopened = Store::Open(options);
    if (!reopened || (*reopened)->InstanceCount() != static_cast<size_t>(flags.instances)) {
      std::cerr << "store_bench: reopened store does not hold every instance\n";
      return 1;
    }
    reopens.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
  }
  if (remove_root) std::filesystem::remove_all(root);

  const double insert = Median(inserts);
  const double update = Median(updates);
  const double reopen = Median(reopens);
  const double per_txn =
      transactions == 0 ? 0 : static_cast<double>(operations) / static_cast<double>(transactions);
  std::ostringstream json;
  json.setf(std::ios::fixed);
  json.precision(0);
  json << "{\"bench\":\"store\",\"instances\":" << flags.instances
       << ",\"threads\":" << flags.threads << ",\"repeat\":" << flags.repeat
       << ",\"insert_puts_per_s\":" << insert
       << ",\"insert_puts_per_s_min\":" << *std::min_element(inserts.begin(), inserts.end())
       << ",\"update_puts_per_s\":" << update
       << ",\"update_puts_per_s_min\":" << *std::min_element(updates.begin(), updates.end())
       << ",\"rss_bytes_per_instance\":" << rss_per_instance << ",\"reopen_ms\":" << reopen;
  json.precision(2);
  json << ",\"insert_cpu_us_per_put\":" << Median(insert_cpu)
       << ",\"update_cpu_us_per_put\":" << Median(update_cpu) << ",\"ops_per_txn\":" << per_txn
       << "}";
  std::cout << json.str() << "\n";
  std::cout.precision(0);
  std::cout << std::fixed << "store: " << flags.instances << " instances, " << flags.threads
            << " threads: " << insert << " inserts/s, " << update << " updates/s (median of "
            << flags.repeat << "), " << Median(update_cpu) << " us CPU/update, " << rss_per_instance
            << " B RSS/instance, reopen " << reopen << " ms\n";

  if (!flags.json_file.empty()) {
    std::ofstream out(flags.json_file);
    out << json.str() << "\n";
    if (!out) {
      std::cerr << "store_bench: cannot write " << flags.json_file << "\n";
      return 1;
    }
  }
  return 0;
}
