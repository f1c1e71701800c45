// workqueue_bench: throughput of the controller's WorkQueue under the shape mvmd gives it: one
// producer adding distinct keys while worker threads Get and Done them (no reconcile work, so
// this is the queue's own cost per transition).
//
// Usage: workqueue_bench [--keys N] [--workers W] [--repeat R] [--json FILE]
// Prints one JSON object (also written to FILE) and a one-line summary. ops_per_s is the median
// over the repeats of keys / (time from the first Add until every key is Done); one op is one
// Add + Get + Done.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "controller/workqueue.h"

namespace {

struct Flags {
  std::int64_t keys = 100000;
  int workers = 2;
  int repeat = 5;
  std::string json_file;
};

bool ParseFlags(int argc, char** argv, Flags& flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--keys" && has_value) {
      flags.keys = std::strtol(argv[++i], nullptr, 10);
    } else if (arg == "--workers" && has_value) {
      flags.workers = static_cast<int>(std::strtol(argv[++i], nullptr, 10));
    } else if (arg == "--repeat" && has_value) {
      flags.repeat = static_cast<int>(std::strtol(argv[++i], nullptr, 10));
    } else if (arg == "--json" && has_value) {
      flags.json_file = argv[++i];
    } else {
      std::cerr << "usage: workqueue_bench [--keys N] [--workers W] [--repeat R] [--json FILE]\n";
      return false;
    }
  }
  if (flags.keys <= 0 || flags.workers <= 0 || flags.repeat <= 0) {
    std::cerr << "workqueue_bench: --keys, --workers and --repeat must be positive\n";
    return false;
  }
  return true;
}

struct Run {
  double seconds = 0;
  mvm::controller::WorkQueueMetrics metrics;
};

Run RunOnce(const std::vector<std::string>& keys, int workers) {
  mvm::controller::WorkQueue queue;
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      while (std::optional<std::string> key = queue.Get()) queue.Done(*key);
    });
  }
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& key : keys) queue.Add(key);
  queue.ShutDownWithDrain();  // returns once every key is Done
  const auto end = std::chrono::steady_clock::now();
  for (std::thread& t : threads) t.join();
  return Run{std::chrono::duration<double>(end - start).count(), queue.Metrics()};
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, flags)) return 2;

  std::vector<std::string> keys;
  keys.reserve(static_cast<std::size_t>(flags.keys));
  for (std::int64_t i = 0; i < flags.keys; ++i)
    keys.push_back("instance/acme/workers/" + std::to_string(i));

  RunOnce(keys, flags.workers);  // warm-up: allocator, page faults
  std::vector<double> rates;
  std::uint64_t completed = 0;
  for (int r = 0; r < flags.repeat; ++r) {
    const Run run = RunOnce(keys, flags.workers);
    if (run.metrics.completed != static_cast<std::uint64_t>(flags.keys)) {
      std::cerr << "workqueue_bench: " << run.metrics.completed << " of " << flags.keys
                << " keys completed\n";
      return 1;
    }
    completed += run.metrics.completed;
    rates.push_back(static_cast<double>(flags.keys) / run.seconds);
  }
  std::sort(rates.begin(), rates.end());
  const double median = rates[rates.size() / 2];

  std::ostringstream json;
  json.setf(std::ios::fixed);
  json.precision(0);
  json << "{\"bench\":\"workqueue\",\"keys\":" << flags.keys << ",\"workers\":" << flags.workers
       << ",\"repeat\":" << flags.repeat << ",\"ops_per_s\":" << median
       << ",\"ops_per_s_min\":" << rates.front() << ",\"ops_per_s_max\":" << rates.back()
       << ",\"completed\":" << completed << "}";
  std::cout << json.str() << "\n";
  std::cout.precision(2);
  std::cout << std::fixed << "workqueue: " << flags.keys << " keys, " << flags.workers
            << " workers: " << median / 1e6 << " M ops/s median (min " << rates.front() / 1e6
            << ", max " << rates.back() / 1e6 << ") over " << flags.repeat << " runs\n";

  if (!flags.json_file.empty()) {
    std::ofstream out(flags.json_file);
    out << json.str() << "\n";
    if (!out) {
      std::cerr << "workqueue_bench: cannot write " << flags.json_file << "\n";
      return 1;
    }
  }
  return 0;
}
