#pragma once
// What mvmctl prints: kubectl-style tables, describe pages, ages and YAML. Pure functions of
// their inputs (the current time is a parameter), so tests pin the exact output.
//
// Promises:
//  - Tables are left-aligned columns separated by three spaces, header first, no trailing
//    spaces; a cell never contains a newline or tab (they are replaced by spaces).
//  - Ages follow kubectl's rules (k8s.io/apimachinery/pkg/util/duration.HumanDuration):
//    "45s", "3m12s", "15m", "5h", "7h30m", "2d", "3d4h", "400d", "2y10d"; a missing time
//    (<= 0) is "<unknown>", a time more than a second in the future "<invalid>".
//  - ToYaml emits block-style YAML 1.2 that parses back to the same JSON value: strings a
//    YAML reader could take for another type (numbers, booleans, null, dates, hex hashes) or
//    that hold special characters are double-quoted.

#include <json/value.h>

#include <cstdint>
#include <string>
#include <vector>

#include "controller/api_json.h"
#include "controller/model.h"
#include "controller/status.h"

namespace mvm::controller::cli {

using Row = std::vector<std::string>;
using Table = std::vector<Row>;

// kubectl's HumanDuration of (nowMs - sinceMs).
std::string FormatAge(int64_t sinceMs, int64_t nowMs);
// "2m (x3 over 10m)" when the event repeated, else the age of its first occurrence.
std::string FormatEventAge(const Event& event, int64_t nowMs);
// 512 -> "512Mi", 8192 -> "8Gi", 1536 -> "1536Mi".
std::string FormatMiB(int64_t mib);

// Column widths of `table` (the widest cell of each column).
std::vector<size_t> ColumnWidths(const Table& table);
// One line (with '\n'), padding cells to `widths`; `widths` grows to fit wider cells so the
// rows of a watch stay aligned with the table printed before them.
std::string FormatRow(const Row& row, std::vector<size_t>& widths);
std::string RenderTable(const Table& table);

// Tables. `kindPrefix` ("pool/", "instance/", "tenant/" or empty) prefixes NAME, as kubectl does
// when several resource types are printed together.
Row PoolHeader(bool wide);
Row PoolRow(const PoolStatus& pool, int64_t nowMs, bool wide, const std::string& kindPrefix = "");
Row InstanceHeader(bool wide);
Row InstanceRow(const Instance& instance, int64_t nowMs, bool wide,
                const std::string& kindPrefix = "");
Row TenantHeader(bool wide);
Row TenantRow(const api::TenantInfo& tenant, int64_t nowMs, bool wide,
              const std::string& kindPrefix = "");

Table PoolsTable(const std::vector<PoolStatus>& pools, int64_t nowMs, bool wide,
                 const std::string& kindPrefix = "");
Table InstancesTable(const std::vector<Instance>& instances, int64_t nowMs, bool wide,
                     const std::string& kindPrefix = "");
Table TenantsTable(const std::vector<api::TenantInfo>& tenants, int64_t nowMs, bool wide,
                   const std::string& kindPrefix = "");

// kubectl-describe pages.
std::string DescribePool(const api::PoolDetail& pool, int64_t nowMs);
std::string DescribeInstance(const api::InstanceDetail& instance, int64_t nowMs);
std::string DescribeTenant(const api::TenantDetail& tenant, int64_t nowMs);

// Block-style YAML of `value`, ending in a newline.
std::string ToYaml(const Json::Value& value);

}  // namespace mvm::controller::cli
