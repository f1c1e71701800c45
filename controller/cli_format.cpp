#include "controller/cli_format.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <string_view>

namespace mvm::controller::cli {
namespace {

constexpr int64_t kSecond = 1000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;

std::string HumanDuration(int64_t ms) {
  // Integer division truncates toward zero like Go's int(d.Seconds()).
  int64_t seconds = ms / kSecond;
  if (seconds < -1) return "<invalid>";  // clocks disagree by more than a second
  if (seconds < 0) return "0s";
  if (seconds < 120) return std::to_string(seconds) + "s";
  int64_t minutes = ms / kMinute;
  if (minutes < 10) {
    int64_t s = seconds % 60;
    return std::to_string(minutes) + "m" + (s == 0 ? "" : std::to_string(s) + "s");
  }
  if (minutes < 3 * 60) return std::to_string(minutes) + "m";
  int64_t hours = ms / kHour;
  if (hours < 8) {
    int64_t m = minutes % 60;
    return std::to_string(hours) + "h" + (m == 0 ? "" : std::to_string(m) + "m");
  }
  if (hours < 48) return std::to_string(hours) + "h";
  int64_t days = hours / 24;
  if (hours < 24 * 8) {
    int64_t h = hours % 24;
    return std::to_string(days) + "d" + (h == 0 ? "" : std::to_string(h) + "h");
  }
  if (hours < 24 * 365 * 2) return std::to_string(days) + "d";
  int64_t years = days / 365;
  if (hours < 24 * 365 * 8) {
    int64_t d = days % 365;
    return std::to_string(years) + "y" + (d == 0 ? "" : std::to_string(d) + "d");
  }
  return std::to_string(years) + "y";
}

// A table cell: one line, no tabs.
std::string Cell(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return text;
}

std::string OrNone(const std::string& text) {
  return text.empty() ? "<none>" : Cell(text);
}

std::string Fraction(int64_t current, int64_t desired) {
  return std::to_string(current) + "/" + std::to_string(desired);
}

std::string UsedOf(int64_t used, const std::optional<int64_t>& limit) {
  return limit ? Fraction(used, *limit) : std::to_string(used);
}

std::string MiBUsedOf(int64_t used, const std::optional<int64_t>& limit) {
  return limit ? FormatMiB(used) + "/" + FormatMiB(*limit) : FormatMiB(used);
}

std::string Timestamp(int64_t ms) {
  if (ms <= 0) return "<unknown>";
  std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

std::string Indent(const std::string& text, const std::string& prefix) {
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out += prefix + text.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

// A describe page: "Key:" padded so values line up, sections indented by two spaces.
class Page {
 public:
  void Field(int indent, std::string_view key, const std::string& value) {
    std::string head = std::string(static_cast<size_t>(indent), ' ') + std::string(key) + ":";
    head.resize(std::max(head.size() + 1, kValueColumn), ' ');
    out_ += head + Cell(value) + "\n";
  }
  // A field whose value spans several lines, each aligned at the value column.
  void Lines(int indent, std::string_view key, const std::vector<std::string>& values) {
    if (values.empty()) return Field(indent, key, "<none>");
    Field(indent, key, values.front());
    for (size_t i = 1; i < values.size(); ++i) {
      out_ += std::string(kValueColumn, ' ') + Cell(values[i]) + "\n";
    }
  }
  void Section(std::string_view name) { out_ += std::string(name) + ":\n"; }
  // "Name:" then a table indented under it, or "Name:  <none>".
  void TableSection(std::string_view name, const Table& table) {
    if (table.size() <= 1) return Field(0, name, "<none>");
    Section(name);
    out_ += Indent(RenderTable(table), "  ");
  }
  const std::string& str() const { return out_; }

 private:
  static constexpr size_t kValueColumn = 18;
  std::string out_;
};

std::string Join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += separator;
    out += parts[i];
  }
  return out;
}

std::string ShellWord(const std::string& word) {
  bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("/._-=:,+@%").find(c) != std::string_view::npos;
  });
  if (plain) return word;
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string Seconds(int64_t seconds, bool zeroIsNever) {
  if (zeroIsNever && seconds == 0) return "never";
  return std::to_string(seconds) + "s";
}

void SpecSection(Page& page, const manifests::PoolSpec& spec) {
  page.Section("Spec");
  page.Field(2, "Runtime", std::string(manifests::RuntimeName(spec.runtime)));
  page.Field(2, "Kernel", OrNone(spec.image.kernel));
  page.Field(2, "Rootfs", OrNone(spec.image.rootfs));
  page.Field(2, "Initrd", spec.image.initrd ? OrNone(*spec.image.initrd) : "<none>");
  page.Field(2, "Boot Args", OrNone(spec.image.bootArgs));
  std::vector<std::string> words;
  for (const auto& arg : spec.cmd) words.push_back(ShellWord(arg));
  page.Field(2, "Command", OrNone(Join(words, " ")));
  std::vector<std::string> env;
  for (const auto& [name, value] : spec.env) env.push_back(name + "=" + value);
  page.Lines(2, "Env", env);
  page.Field(2, "Resources",
             std::to_string(spec.resources.vcpus) +
                 (spec.resources.vcpus == 1 ? " vCPU, " : " vCPUs, ") +
                 FormatMiB(spec.resources.memoryMiB) + " memory, " +
                 FormatMiB(spec.resources.diskMiB) + " disk");
  page.Field(2, "Lifecycle", std::string(manifests::LifecycleName(spec.lifecycle)));
  page.Field(2, "Seccomp", spec.security.seccomp);
  if (spec.snapshot.base) {
    page.Field(2, "Snapshot",
               "pool base (firecracker: started from one template, sleeps as Diffs)");
  }
  page.Field(2, "Replicas",
             "running=" + std::to_string(spec.replicas.running) +
                 " warm=" + std::to_string(spec.replicas.warm) +
                 " sleeping=" + std::to_string(spec.replicas.sleeping));
  const manifests::Policy& p = spec.policy;
  page.Lines(2, "Policy",
             {"minRunning=" + Seconds(p.minRunningSeconds, false) +
                  " minWarm=" + Seconds(p.minWarmSeconds, false),
              "idleToWarm=" + Seconds(p.idleToWarmSeconds, true) +
                  " warmToSleep=" + Seconds(p.warmToSleepSeconds, true),
              "drainTimeout=" + Seconds(p.drainTimeoutSeconds, false) +
                  " gracefulStop=" + Seconds(p.gracefulStopSeconds, false)});
}

// The confinement a driver recorded in the handle's data (docs/security.md): nothing when the
// data has none, "off" when the VMM runs unconfined.
void ConfinementSection(Page& page, const std::string& handleData) {
  Json::Value data;
  if (handleData.empty() || !api::ParseJson(handleData, data) || !data.isObject() ||
      !data.isMember("confinement")) {
    return;
  }
  const Json::Value& c = data["confinement"];
  if (!c.isObject()) {
    page.Field(0, "Confinement", c.isString() ? c.asString() : "<unknown>");
    return;
  }
  auto list = [](const Json::Value& v) {
    std::vector<std::string> out;
    for (const auto& item : v) out.push_back(item.asString());
    return out;
  };
  page.Section("Confinement");
  page.Field(2, "UID/GID", c["uid"].asString() + "/" + c["gid"].asString());
  page.Field(2, "Cgroup", OrNone(c["cgroup"].asString()));
  page.Field(2, "Limits", OrNone(Join(list(c["cgroupLimits"]), " ")));
  std::vector<std::string> missing = list(c["cgroupMissing"]);
  page.Field(2, "Not Enforced",
             missing.empty() ? "<none>" : Join(missing, ", ") + " (controller missing)");
  page.Field(2, "Seccomp", OrNone(c["seccomp"].asString()));
  page.Field(2, "Namespaces", OrNone(Join(list(c["namespaces"]), ", ")));
  page.Field(2, "Root", OrNone(c["root"].asString()));
  page.Field(2, "Capabilities", OrNone(c["capabilities"].asString()));
}

// The VMM's own counters (firecracker's metrics file, summarised by the driver): nothing when
// the driver keeps none.
void MetricsSection(Page& page, const std::string& handleData) {
  Json::Value data;
  if (handleData.empty() || !api::ParseJson(handleData, data) || !data.isObject() ||
      !data["metrics"].isObject()) {
    return;
  }
  const Json::Value& m = data["metrics"];
  auto count = [&](const char* name) {
    return m[name].isIntegral() ? std::to_string(m[name].asUInt64()) : std::string("<none>");
  };
  page.Section("VMM Metrics");
  page.Field(2, "Flushed",
             m["utcTimestampMs"].isIntegral() ? Timestamp(m["utcTimestampMs"].asInt64())
                                              : std::string("<none>"));
  page.Field(2, "vCPU Exits", count("vcpuExits"));
  page.Field(2, "Block R/W", count("blockReadBytes") + " / " + count("blockWriteBytes") + " B");
  page.Field(2, "Net Rx/Tx", count("netRxBytes") + " / " + count("netTxBytes") + " B");
  page.Field(2, "API Requests", count("apiRequests"));
  page.Field(2, "VMM Panics", count("vmmPanics"));
}

std::vector<std::string> Labels(const Json::Value& manifest) {
  std::vector<std::string> out;
  if (!manifest.isObject() || !manifest["metadata"].isObject()) return out;
  const Json::Value& labels = manifest["metadata"]["labels"];
  if (!labels.isObject()) return out;
  for (const auto& name : labels.getMemberNames()) {
    out.push_back(name + "=" + (labels[name].isString() ? labels[name].asString() : ""));
  }
  return out;
}

std::string SourceText(const manifests::Source& source) {
  if (source.file.empty()) return "<none>";
  return source.file + ":" + std::to_string(source.line) + ":" + std::to_string(source.column);
}

void EventsSection(Page& page, std::vector<Event> events, int64_t nowMs) {
  std::stable_sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    return std::max(a.lastMs, a.firstMs) < std::max(b.lastMs, b.firstMs);
  });
  Table table = {{"TYPE", "REASON", "AGE", "FROM", "MESSAGE"}};
  for (const auto& event : events) {
    table.push_back({event.type == EventType::kWarning ? "Warning" : "Normal", OrNone(event.reason),
                     FormatEventAge(event, nowMs), OrNone(event.from), Cell(event.message)});
  }
  page.TableSection("Events", table);
}

// --- YAML ---------------------------------------------------------------------------------

bool IsReservedWord(std::string lower) {
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static constexpr std::string_view kWords[] = {"true", "false", "yes",   "no",  "on",
                                                "off",  "null",  "y",     "n",   "~",
                                                ".inf", "-.inf", "+.inf", ".nan"};
  return std::find(std::begin(kWords), std::end(kWords), lower) != std::end(kWords);
}

// Plain (unquoted) only when no YAML 1.1 or 1.2 reader could take it for anything but this
// string: conservative on purpose.
bool PlainSafe(const std::string& s) {
  if (s.empty() || IsReservedWord(s)) return false;
  auto ok_first = [](char c) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '/' || c == '_' || c == '.';
  };
  auto ok_rest = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("/_.=+- ").find(c) != std::string_view::npos;
  };
  if (!ok_first(s.front()) || s.back() == ' ') return false;
  if (!std::all_of(s.begin() + 1, s.end(), ok_rest)) return false;
  // ".5", ".inf" and friends read as numbers.
  if (s.front() == '.' && s.size() > 1 && !std::isalpha(static_cast<unsigned char>(s[1])) &&
      s[1] != '/' && s[1] != '.' && s[1] != '_') {
    return false;
  }
  return true;
}

bool StartsLikeNumber(const std::string& s) {
  return !s.empty() && std::isdigit(static_cast<unsigned char>(s.front()));
}

std::string YamlString(const std::string& s) {
  if (PlainSafe(s) && !StartsLikeNumber(s)) return s;
  return api::WriteCompact(Json::Value(s));  // a JSON string is a YAML double-quoted scalar
}

std::string YamlScalar(const Json::Value& v) {
  if (v.isString()) return YamlString(v.asString());
  if (v.isNull()) return "null";
  return api::WriteCompact(v);  // bool, integer, real
}

bool IsEmptyCollection(const Json::Value& v) {
  return (v.isObject() || v.isArray()) && v.empty();
}

std::string EmptyCollection(const Json::Value& v) {
  return v.isArray() ? "[]" : "{}";
}

void EmitYaml(const Json::Value& value, size_t indent, std::string& out);

// Emits `item` as the content of a "- " list entry at `indent`.
void EmitListItem(const Json::Value& item, size_t indent, std::string& out) {
  std::string pad(indent, ' ');
  if (!item.isObject() && !item.isArray()) {
    out += pad + "- " + YamlScalar(item) + "\n";
  } else if (IsEmptyCollection(item)) {
    out += pad + "- " + EmptyCollection(item) + "\n";
  } else if (item.isObject()) {
    // The first key goes on the dash's line; the rest line up under it.
    std::string body;
    EmitYaml(item, indent + 2, body);
    out += pad + "- " + body.substr(indent + 2);
  } else {
    out += pad + "-\n";
    EmitYaml(item, indent + 2, out);
  }
}

void EmitYaml(const Json::Value& value, size_t indent, std::string& out) {
  std::string pad(indent, ' ');
  if (value.isArray()) {
    for (const auto& item : value) EmitListItem(item, indent, out);
    return;
  }
  for (const auto& name : value.getMemberNames()) {
    const Json::Value& member = value[name];
    out += pad + YamlString(name) + ":";
    if (IsEmptyCollection(member)) {
      out += " " + EmptyCollection(member) + "\n";
    } else if (member.isObject()) {
      out += "\n";
      EmitYaml(member, indent + 2, out);
    } else if (member.isArray()) {
      out += "\n";
      EmitYaml(member, indent, out);  // kubectl style: list items at the key's indent
    } else {
      out += " " + YamlScalar(member) + "\n";
    }
  }
}

}  // namespace

std::string FormatAge(int64_t sinceMs, int64_t nowMs) {
  if (sinceMs <= 0) return "<unknown>";
  return HumanDuration(nowMs - sinceMs);
}

std::string FormatEventAge(const Event& event, int64_t nowMs) {
  int64_t first = event.firstMs > 0 ? event.firstMs : event.lastMs;
  if (event.count > 1) {
    int64_t last = event.lastMs > 0 ? event.lastMs : first;
    return FormatAge(last, nowMs) + " (x" + std::to_string(event.count) + " over " +
           FormatAge(first, nowMs) + ")";
  }
  return FormatAge(first, nowMs);
}

std::string FormatMiB(int64_t mib) {
  if (mib != 0 && mib % (1024 * 1024) == 0) return std::to_string(mib / (1024 * 1024)) + "Ti";
  if (mib != 0 && mib % 1024 == 0) return std::to_string(mib / 1024) + "Gi";
  return std::to_string(mib) + "Mi";
}

std::vector<size_t> ColumnWidths(const Table& table) {
  std::vector<size_t> widths;
  for (const auto& row : table) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  return widths;
}

std::string FormatRow(const Row& row, std::vector<size_t>& widths) {
  widths.resize(std::max(widths.size(), row.size()));
  std::string line;
  for (size_t i = 0; i < row.size(); ++i) {
    widths[i] = std::max(widths[i], row[i].size());
    line += row[i];
    if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 3, ' ');
  }
  return line + "\n";
}

std::string RenderTable(const Table& table) {
  std::vector<size_t> widths = ColumnWidths(table);
  std::string out;
  for (const auto& row : table) out += FormatRow(row, widths);
  return out;
}

Row PoolHeader(bool wide) {
  Row row = {"NAME", "TENANT", "RUNNING", "WARM", "SLEEPING", "READY", "AGE"};
  if (wide) row.insert(row.end(), {"INSTANCES", "GENERATION", "OBSERVED", "SPEC", "CONDITIONS"});
  return row;
}

Row PoolRow(const PoolStatus& pool, int64_t nowMs, bool wide, const std::string& kindPrefix) {
  int desired_total = pool.desired.running + pool.desired.warm + pool.desired.sleeping;
  Row row = {Cell(kindPrefix + pool.name),
             Cell(pool.tenant),
             Fraction(pool.current.running, pool.desired.running),
             Fraction(pool.current.warm, pool.desired.warm),
             Fraction(pool.current.sleeping, pool.desired.sleeping),
             Fraction(pool.ready, desired_total),
             FormatAge(pool.firstSeenMs, nowMs)};
  if (wide) {
    std::vector<std::string> conditions;
    for (const auto& condition : pool.conditions) {
      if (condition.status) conditions.push_back(condition.type);
    }
    if (pool.pruning) conditions.push_back("Pruning");
    row.insert(row.end(), {std::to_string(pool.instances), std::to_string(pool.generation),
                           std::to_string(pool.observedGeneration), OrNone(pool.specHash),
                           OrNone(Join(conditions, ","))});
  }
  return row;
}

Row InstanceHeader(bool wide) {
  Row row = {"NAME", "POOL", "STATE", "TARGET", "AGE"};
  if (wide) row.insert(row.end(), {"TENANT", "PID", "FAILURES", "SPEC", "LAST-ERROR"});
  return row;
}

Row InstanceRow(const Instance& instance, int64_t nowMs, bool wide, const std::string& kindPrefix) {
  // Like kubectl's pod STATUS, a reason beats the phase: a failed instance shows "Failed".
  std::string state = instance.failed ? "Failed" : std::string(StateName(instance.state));
  Row row = {Cell(kindPrefix + instance.key.name), Cell(instance.pool), state,
             std::string(StateName(instance.target)), FormatAge(instance.createdAtMs, nowMs)};
  if (wide) {
    row.insert(row.end(), {Cell(instance.key.tenant),
                           instance.handle.pid > 0 ? std::to_string(instance.handle.pid) : "<none>",
                           std::to_string(instance.failures), OrNone(instance.specHash),
                           OrNone(instance.lastError)});
  }
  return row;
}

Row TenantHeader(bool wide) {
  Row row = {"NAME", "POOLS", "INSTANCES", "RUNNING", "WARM", "SLEEPING", "VCPUS", "MEMORY", "AGE"};
  if (wide) row.push_back("DISK");
  return row;
}

Row TenantRow(const api::TenantInfo& tenant, int64_t nowMs, bool wide,
              const std::string& kindPrefix) {
  const TenantUsage& u = tenant.status.usage;
  const manifests::TenantQuota& q = tenant.quota;
  Row row = {Cell(kindPrefix + tenant.status.name),
             std::to_string(tenant.status.pools),
             std::to_string(tenant.status.instances),
             UsedOf(u.running, q.running),
             UsedOf(u.warm, q.warm),
             UsedOf(u.sleeping, q.sleeping),
             UsedOf(u.vcpus, q.vcpus),
             MiBUsedOf(u.memoryMiB, q.memoryMiB),
             FormatAge(tenant.status.firstSeenMs, nowMs)};
  if (wide) row.push_back(MiBUsedOf(u.diskMiB, q.diskMiB));
  return row;
}

Table PoolsTable(const std::vector<PoolStatus>& pools, int64_t nowMs, bool wide,
                 const std::string& kindPrefix) {
  Table table = {PoolHeader(wide)};
  for (const auto& pool : pools) table.push_back(PoolRow(pool, nowMs, wide, kindPrefix));
  return table;
}

Table InstancesTable(const std::vector<Instance>& instances, int64_t nowMs, bool wide,
                     const std::string& kindPrefix) {
  Table table = {InstanceHeader(wide)};
  for (const auto& instance : instances) {
    table.push_back(InstanceRow(instance, nowMs, wide, kindPrefix));
  }
  return table;
}

Table TenantsTable(const std::vector<api::TenantInfo>& tenants, int64_t nowMs, bool wide,
                   const std::string& kindPrefix) {
  Table table = {TenantHeader(wide)};
  for (const auto& tenant : tenants) table.push_back(TenantRow(tenant, nowMs, wide, kindPrefix));
  return table;
}

std::string DescribePool(const api::PoolDetail& pool, int64_t nowMs) {
  const PoolStatus& s = pool.status;
  Page page;
  page.Field(0, "Name", s.name);
  page.Field(0, "Tenant", s.tenant);
  page.Field(0, "Kind", "Pool");
  page.Lines(0, "Labels", Labels(pool.manifest));
  page.Field(0, "Source", SourceText(pool.source));
  page.Field(0, "Created", Timestamp(s.firstSeenMs) + " (" + FormatAge(s.firstSeenMs, nowMs) + ")");
  page.Field(
      0, "Generation",
      std::to_string(s.generation) + " (observed " + std::to_string(s.observedGeneration) + ")");
  page.Field(0, "Spec Hash", OrNone(s.specHash));
  page.Field(0, "Pruning", s.pruning ? "true (left the manifests; draining)" : "false");
  if (pool.manifest.isObject() && pool.manifest["spec"].isObject()) {
    SpecSection(page, api::DecodePoolSpec(pool.manifest["spec"]));
  } else {
    page.Field(0, "Spec", "<none> (not in the manifests)");
  }
  int desired_total = s.desired.running + s.desired.warm + s.desired.sleeping;
  page.Section("Status");
  page.Field(2, "Running", Fraction(s.current.running, s.desired.running));
  page.Field(2, "Warm", Fraction(s.current.warm, s.desired.warm));
  page.Field(2, "Sleeping", Fraction(s.current.sleeping, s.desired.sleeping));
  page.Field(2, "Ready", Fraction(s.ready, desired_total));
  page.Field(2, "Instances", std::to_string(s.instances));
  Table conditions = {{"TYPE", "STATUS", "REASON", "MESSAGE", "OBSERVED-GENERATION"}};
  for (const auto& c : s.conditions) {
    conditions.push_back({Cell(c.type), c.status ? "True" : "False", OrNone(c.reason),
                          Cell(c.message), std::to_string(c.observedGeneration)});
  }
  page.TableSection("Conditions", conditions);
  EventsSection(page, pool.events, nowMs);
  return page.str();
}

std::string DescribeInstance(const api::InstanceDetail& detail, int64_t nowMs) {
  const Instance& i = detail.instance;
  Page page;
  page.Field(0, "Name", i.key.name);
  page.Field(0, "Tenant", i.key.tenant);
  page.Field(0, "Pool", i.pool);
  page.Field(0, "Kind", "Instance");
  page.Field(0, "Created", Timestamp(i.createdAtMs) + " (" + FormatAge(i.createdAtMs, nowMs) + ")");
  page.Field(0, "State",
             std::string(StateName(i.state)) + " (for " + FormatAge(i.stateSinceMs, nowMs) + ")");
  page.Field(0, "Target", std::string(StateName(i.target)));
  page.Field(0, "Pending", i.pending ? std::string(ActionName(*i.pending)) : "<none>");
  page.Field(0, "Failed", i.failed ? "true" : "false");
  page.Field(0, "Failures", std::to_string(i.failures));
  page.Field(0, "Last Error", OrNone(i.lastError));
  page.Field(0, "Spec Hash", OrNone(i.specHash));
  page.Field(0, "Generation", std::to_string(i.generation));
  page.Field(0, "Updated", Timestamp(i.updatedAtMs) + " (" + FormatAge(i.updatedAtMs, nowMs) + ")");
  page.Section("VMM");
  page.Field(2, "PID", i.handle.pid > 0 ? std::to_string(i.handle.pid) : "<none>");
  page.Field(2, "Start Time", i.handle.startTime ? std::to_string(i.handle.startTime) : "<none>");
  page.Field(2, "Socket", OrNone(i.handle.socket));
  ConfinementSection(page, i.handle.data);
  MetricsSection(page, i.handle.data);
  if (i.spec) {
    SpecSection(page, *i.spec);
  } else {
    page.Field(0, "Spec", "<none>");
  }
  EventsSection(page, detail.events, nowMs);
  return page.str();
}

std::string DescribeTenant(const api::TenantDetail& detail, int64_t nowMs) {
  const TenantStatus& s = detail.tenant.status;
  const manifests::TenantQuota& q = detail.tenant.quota;
  Page page;
  page.Field(0, "Name", s.name);
  page.Field(0, "Kind", "Tenant");
  page.Lines(0, "Labels", Labels(detail.manifest));
  page.Field(0, "Source", SourceText(detail.source));
  page.Field(0, "Created", Timestamp(s.firstSeenMs) + " (" + FormatAge(s.firstSeenMs, nowMs) + ")");
  page.Field(0, "Pools", std::to_string(s.pools));
  page.Field(0, "Instances", std::to_string(s.instances));
  std::string subnet = "<allocated>";
  if (detail.manifest.isObject()) {
    const Json::Value& spec = detail.manifest["spec"];
    if (spec.isObject() && spec["network"].isObject() && spec["network"]["subnet"].isString()) {
      subnet = spec["network"]["subnet"].asString();
    }
  }
  page.Field(0, "Subnet", subnet);
  auto limit = [](const std::optional<int64_t>& v, bool mib) {
    if (!v) return std::string("<unlimited>");
    return mib ? FormatMiB(*v) : std::to_string(*v);
  };
  Table usage = {{"RESOURCE", "USED", "QUOTA"},
                 {"vcpus", std::to_string(s.usage.vcpus), limit(q.vcpus, false)},
                 {"memory", FormatMiB(s.usage.memoryMiB), limit(q.memoryMiB, true)},
                 {"disk", FormatMiB(s.usage.diskMiB), limit(q.diskMiB, true)},
                 {"running", std::to_string(s.usage.running), limit(q.running, false)},
                 {"warm", std::to_string(s.usage.warm), limit(q.warm, false)},
                 {"sleeping", std::to_string(s.usage.sleeping), limit(q.sleeping, false)}};
  page.TableSection("Usage", usage);
  EventsSection(page, detail.events, nowMs);
  return page.str();
}

std::string ToYaml(const Json::Value& value) {
  if (IsEmptyCollection(value)) return EmptyCollection(value) + "\n";
  if (!value.isObject() && !value.isArray()) return YamlScalar(value) + "\n";
  std::string out;
  EmitYaml(value, 0, out);
  return out;
}

}  // namespace mvm::controller::cli
