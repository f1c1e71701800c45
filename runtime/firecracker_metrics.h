#pragma once
// Firecracker's metrics: the file it appends one JSON object per line to (periodically and on
// PUT /actions FlushMetrics), read back and summarised per instance.
//
// Promises:
//  - ReadLatestMetrics reads only the last complete line (a line being written is ignored) and
//    looks at most at the last 1 MiB of the file.
//  - A missing counter reads 0: the summary never fails on a Firecracker version that renamed
//    or dropped one, only on a file with no parsable line.

#include <cstdint>
#include <filesystem>
#include <string>

#include <json/value.h>

#include "common/result.h"

namespace mvm::runtime {

struct FirecrackerMetrics {
  std::string utcTimestampMs;  // the line's "utc_timestamp_ms"
  uint64_t vcpuExits = 0;      // sum of vcpu.exit_io_in/out, exit_mmio_read/write
  uint64_t blockReadBytes = 0, blockWriteBytes = 0;
  uint64_t netRxBytes = 0, netTxBytes = 0;
  uint64_t apiRequests = 0;   // sum of api_server.*_count
  uint64_t vmmPanics = 0;     // vmm.panic_count
  uint64_t metricsLines = 0;  // lines in the file (flushes so far)
  Json::Value raw;            // the whole newest line
};

Result<FirecrackerMetrics> ParseMetricsLine(const std::string& line);
Result<FirecrackerMetrics> ReadLatestMetrics(const std::filesystem::path& file);
// {"vcpuExits": .., "blockReadBytes": .., ...} without `raw`: what describe shows.
Json::Value MetricsSummaryJson(const FirecrackerMetrics& metrics);

}  // namespace mvm::runtime
