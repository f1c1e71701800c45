#include "runtime/firecracker_metrics.h"

#include <fstream>

#include "runtime/driver_util.h"

namespace mvm::runtime {
namespace {

constexpr std::streamoff kTailBytes = 1 << 20;

uint64_t Counter(const Json::Value& root, const char* group, const char* name) {
  const Json::Value& v = root[group][name];
  return v.isUInt64() ? v.asUInt64() : 0;
}

// Sum of every "<name>_count" member of a group (Firecracker's per-endpoint request counters);
// "*_fails" members are failures, not requests.
uint64_t SumCounts(const Json::Value& group) {
  uint64_t sum = 0;
  if (!group.isObject()) return 0;
  for (const std::string& name : group.getMemberNames()) {
    const bool count = name.size() > 6 && name.compare(name.size() - 6, 6, "_count") == 0;
    if (count && group[name].isUInt64()) sum += group[name].asUInt64();
  }
  return sum;
}

}  // namespace

Result<FirecrackerMetrics> ParseMetricsLine(const std::string& line) {
  std::optional<Json::Value> json = ParseJsonObject(line);
  if (!json) return Error{"metrics line is not a JSON object"};
  const Json::Value& r = *json;
  FirecrackerMetrics m;
  m.utcTimestampMs = r["utc_timestamp_ms"].isUInt64() ? r["utc_timestamp_ms"].asString() : "";
  for (const char* exit : {"exit_io_in", "exit_io_out", "exit_mmio_read", "exit_mmio_write"}) {
    m.vcpuExits += Counter(r, "vcpu", exit);
  }
  m.blockReadBytes = Counter(r, "block", "read_bytes");
  m.blockWriteBytes = Counter(r, "block", "write_bytes");
  m.netRxBytes = Counter(r, "net", "rx_bytes_count");
  m.netTxBytes = Counter(r, "net", "tx_bytes_count");
  for (const char* group : {"get_api_requests", "put_api_requests", "patch_api_requests"}) {
    m.apiRequests += SumCounts(r[group]);
  }
  m.vmmPanics = Counter(r, "vmm", "panic_count");
  m.raw = r;
  return m;
}

Result<FirecrackerMetrics> ReadLatestMetrics(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Error{"no metrics file " + file.string()};
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = size > kTailBytes ? size - kTailBytes : 0;
  in.seekg(from);
  std::string text(static_cast<size_t>(size - from), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  // Only complete lines: everything up to the last newline.
  const size_t end = text.rfind('\n');
  if (end == std::string::npos) return Error{"metrics file " + file.string() + " has no line yet"};
  uint64_t lines = 0;
  for (size_t i = 0; i <= end; ++i) lines += text[i] == '\n';
  size_t start = text.rfind('\n', end == 0 ? 0 : end - 1);
  start = (start == std::string::npos || end == 0) ? 0 : start + 1;
  Result<FirecrackerMetrics> m = ParseMetricsLine(text.substr(start, end - start));
  if (!m.ok()) return Error{file.string() + ": " + m.error().message};
  m->metricsLines = lines;
  return m;
}

Json::Value MetricsSummaryJson(const FirecrackerMetrics& m) {
  Json::Value out;
  out["utcTimestampMs"] = m.utcTimestampMs;
  out["vcpuExits"] = Json::UInt64(m.vcpuExits);
  out["blockReadBytes"] = Json::UInt64(m.blockReadBytes);
  out["blockWriteBytes"] = Json::UInt64(m.blockWriteBytes);
  out["netRxBytes"] = Json::UInt64(m.netRxBytes);
  out["netTxBytes"] = Json::UInt64(m.netTxBytes);
  out["apiRequests"] = Json::UInt64(m.apiRequests);
  out["vmmPanics"] = Json::UInt64(m.vmmPanics);
  out["flushes"] = Json::UInt64(m.metricsLines);
  return out;
}

}  // namespace mvm::runtime
