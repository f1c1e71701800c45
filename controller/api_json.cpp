#include "controller/api_json.h"

#include <json/reader.h>
#include <json/writer.h>

#include <memory>
#include <optional>
#include <string_view>
#include <utility>

namespace mvm::controller::api {
namespace {

Json::Value Int(int64_t value) {
  return Json::Value(static_cast<Json::Int64>(value));
}
Json::Value UInt(uint64_t value) {
  return Json::Value(static_cast<Json::UInt64>(value));
}

Json::Value EncodeCounts(const Counts& counts) {
  Json::Value out(Json::objectValue);
  out["running"] = counts.running;
  out["warm"] = counts.warm;
  out["sleeping"] = counts.sleeping;
  return out;
}

// Lenient readers: a missing or mistyped member yields the default.
std::string Str(const Json::Value& json, const char* name) {
  const Json::Value& v = json.isObject() ? json[name] : Json::Value::nullSingleton();
  return v.isString() ? v.asString() : std::string();
}
int64_t I64(const Json::Value& json, const char* name) {
  const Json::Value& v = json.isObject() ? json[name] : Json::Value::nullSingleton();
  return v.isInt64() ? v.asInt64() : 0;
}
uint64_t U64(const Json::Value& json, const char* name) {
  const Json::Value& v = json.isObject() ? json[name] : Json::Value::nullSingleton();
  return v.isUInt64() ? v.asUInt64() : 0;
}
int I32(const Json::Value& json, const char* name) {
  const Json::Value& v = json.isObject() ? json[name] : Json::Value::nullSingleton();
  return v.isInt() ? v.asInt() : 0;
}
bool Bool(const Json::Value& json, const char* name) {
  const Json::Value& v = json.isObject() ? json[name] : Json::Value::nullSingleton();
  return v.isBool() && v.asBool();
}
const Json::Value& Member(const Json::Value& json, const char* name) {
  return json.isObject() ? json[name] : Json::Value::nullSingleton();
}
// The "confinement" member of a driver's handle data (JSON), or null.
Json::Value Confinement(const std::string& handleData) {
  if (handleData.empty()) return {};
  Json::CharReaderBuilder builder;
  std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
  Json::Value data;
  std::string errors;
  if (!reader->parse(handleData.data(), handleData.data() + handleData.size(), &data, &errors)) {
    return {};
  }
  return Member(data, "confinement");
}
std::optional<int64_t> OptI64(const Json::Value& json, const char* name) {
  const Json::Value& v = Member(json, name);
  if (!v.isInt64()) return std::nullopt;
  return v.asInt64();
}

Counts DecodeCounts(const Json::Value& json) {
  return {I32(json, "running"), I32(json, "warm"), I32(json, "sleeping")};
}

std::vector<Event> DecodeEvents(const Json::Value& json) {
  std::vector<Event> out;
  if (!json.isArray()) return out;
  for (const auto& item : json) out.push_back(DecodeEvent(item));
  return out;
}

}  // namespace

Json::Value EncodeCondition(const Condition& condition) {
  Json::Value out(Json::objectValue);
  out["type"] = condition.type;
  out["status"] = condition.status ? "True" : "False";
  out["reason"] = condition.reason;
  out["message"] = condition.message;
  out["observedGeneration"] = UInt(condition.observedGeneration);
  out["lastTransitionMs"] = Int(condition.lastTransitionMs);
  return out;
}

Json::Value EncodeEvent(const Event& event) {
  Json::Value out(Json::objectValue);
  out["objectKind"] = event.objectKind;
  out["objectKey"] = event.objectKey;
  out["type"] = event.type == EventType::kWarning ? "Warning" : "Normal";
  out["reason"] = event.reason;
  out["message"] = event.message;
  out["from"] = event.from;
  out["firstMs"] = Int(event.firstMs);
  out["lastMs"] = Int(event.lastMs);
  out["count"] = event.count;
  return out;
}

Json::Value EncodePoolSpec(const manifests::PoolSpec& spec) {
  Json::Value out(Json::objectValue);
  out["runtime"] = std::string(manifests::RuntimeName(spec.runtime));
  Json::Value& image = out["image"];
  image["kernel"] = spec.image.kernel;
  image["rootfs"] = spec.image.rootfs;
  image["initrd"] = spec.image.initrd ? Json::Value(*spec.image.initrd) : Json::Value();
  image["bootArgs"] = spec.image.bootArgs;
  Json::Value& cmd = out["cmd"] = Json::Value(Json::arrayValue);
  for (const auto& arg : spec.cmd) cmd.append(arg);
  Json::Value& env = out["env"] = Json::Value(Json::objectValue);
  for (const auto& [name, value] : spec.env) env[name] = value;
  Json::Value& resources = out["resources"];
  resources["vcpus"] = spec.resources.vcpus;
  resources["memoryMiB"] = Int(spec.resources.memoryMiB);
  resources["diskMiB"] = Int(spec.resources.diskMiB);
  out["lifecycle"] = std::string(manifests::LifecycleName(spec.lifecycle));
  Json::Value& replicas = out["replicas"];
  replicas["running"] = spec.replicas.running;
  replicas["warm"] = spec.replicas.warm;
  replicas["sleeping"] = spec.replicas.sleeping;
  Json::Value& policy = out["policy"];
  policy["minRunningSeconds"] = Int(spec.policy.minRunningSeconds);
  policy["minWarmSeconds"] = Int(spec.policy.minWarmSeconds);
  policy["idleToWarmSeconds"] = Int(spec.policy.idleToWarmSeconds);
  policy["warmToSleepSeconds"] = Int(spec.policy.warmToSleepSeconds);
  policy["drainTimeoutSeconds"] = Int(spec.policy.drainTimeoutSeconds);
  policy["gracefulStopSeconds"] = Int(spec.policy.gracefulStopSeconds);
  out["security"]["seccomp"] = spec.security.seccomp;
  out["snapshot"]["base"] = spec.snapshot.base;
  return out;
}

Json::Value EncodePoolStatus(const PoolStatus& status) {
  Json::Value out(Json::objectValue);
  out["kind"] = "Pool";
  out["tenant"] = status.tenant;
  out["name"] = status.name;
  out["generation"] = UInt(status.generation);
  out["observedGeneration"] = UInt(status.observedGeneration);
  out["specHash"] = status.specHash;
  out["desired"] = EncodeCounts(status.desired);
  out["current"] = EncodeCounts(status.current);
  out["ready"] = status.ready;
  out["instances"] = status.instances;
  out["pruning"] = status.pruning;
  Json::Value& conditions = out["conditions"] = Json::Value(Json::arrayValue);
  for (const auto& condition : status.conditions) conditions.append(EncodeCondition(condition));
  out["firstSeenMs"] = Int(status.firstSeenMs);
  return out;
}

Json::Value EncodeInstance(const Instance& instance) {
  Json::Value out(Json::objectValue);
  out["kind"] = "Instance";
  out["tenant"] = instance.key.tenant;
  out["name"] = instance.key.name;
  out["pool"] = instance.pool;
  out["state"] = std::string(StateName(instance.state));
  out["target"] = std::string(StateName(instance.target));
  out["specHash"] = instance.specHash;
  out["generation"] = UInt(instance.generation);
  Json::Value& vmm = out["vmm"];
  vmm["pid"] = Int(instance.handle.pid);
  vmm["startTime"] = UInt(instance.handle.startTime);
  vmm["socket"] = instance.handle.socket;
  // Of the driver's private data only the confinement in force is public (docs/security.md).
  if (Json::Value confinement = Confinement(instance.handle.data); !confinement.isNull()) {
    vmm["confinement"] = confinement;
  }
  out["createdAtMs"] = Int(instance.createdAtMs);
  out["stateSinceMs"] = Int(instance.stateSinceMs);
  out["updatedAtMs"] = Int(instance.updatedAtMs);
  out["failures"] = instance.failures;
  out["lastError"] = instance.lastError;
  out["failed"] = instance.failed;
  out["pending"] =
      instance.pending ? Json::Value(std::string(ActionName(*instance.pending))) : Json::Value();
  out["spec"] = instance.spec ? EncodePoolSpec(*instance.spec) : Json::Value();
  return out;
}

Json::Value EncodeQuota(const manifests::TenantQuota& quota) {
  Json::Value out(Json::objectValue);
  auto put = [&](const char* name, const std::optional<int64_t>& value) {
    if (value) out[name] = Int(*value);
  };
  put("vcpus", quota.vcpus);
  put("memoryMiB", quota.memoryMiB);
  put("diskMiB", quota.diskMiB);
  put("running", quota.running);
  put("warm", quota.warm);
  put("sleeping", quota.sleeping);
  return out;
}

Json::Value EncodeTenantStatus(const TenantStatus& status, const manifests::TenantQuota& quota) {
  Json::Value out(Json::objectValue);
  out["kind"] = "Tenant";
  out["name"] = status.name;
  Json::Value& usage = out["usage"];
  usage["vcpus"] = Int(status.usage.vcpus);
  usage["memoryMiB"] = Int(status.usage.memoryMiB);
  usage["diskMiB"] = Int(status.usage.diskMiB);
  usage["running"] = status.usage.running;
  usage["warm"] = status.usage.warm;
  usage["sleeping"] = status.usage.sleeping;
  out["quota"] = EncodeQuota(quota);
  out["pools"] = status.pools;
  out["instances"] = status.instances;
  out["firstSeenMs"] = Int(status.firstSeenMs);
  return out;
}

Json::Value EncodeSource(const manifests::Source& source) {
  Json::Value out(Json::objectValue);
  out["file"] = source.file;
  out["line"] = source.line;
  out["column"] = source.column;
  return out;
}

std::string WriteCompact(const Json::Value& value) {
  Json::StreamWriterBuilder builder;
  builder["indentation"] = "";
  builder["emitUTF8"] = true;
  return Json::writeString(builder, value);
}

std::string WritePretty(const Json::Value& value) {
  Json::StreamWriterBuilder builder;
  builder["indentation"] = "  ";
  builder["emitUTF8"] = true;
  return Json::writeString(builder, value);
}

bool ParseJson(const std::string& text, Json::Value& out, std::string* error) {
  Json::CharReaderBuilder builder;
  std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
  std::string errors;
  bool ok = reader->parse(text.data(), text.data() + text.size(), &out, &errors);
  if (!ok && error) *error = errors;
  return ok;
}

Condition DecodeCondition(const Json::Value& json) {
  Condition out;
  out.type = Str(json, "type");
  out.status = Str(json, "status") == "True";
  out.reason = Str(json, "reason");
  out.message = Str(json, "message");
  out.observedGeneration = U64(json, "observedGeneration");
  out.lastTransitionMs = I64(json, "lastTransitionMs");
  return out;
}

Event DecodeEvent(const Json::Value& json) {
  Event out;
  out.objectKind = Str(json, "objectKind");
  out.objectKey = Str(json, "objectKey");
  out.type = Str(json, "type") == "Warning" ? EventType::kWarning : EventType::kNormal;
  out.reason = Str(json, "reason");
  out.message = Str(json, "message");
  out.from = Str(json, "from");
  out.firstMs = I64(json, "firstMs");
  out.lastMs = I64(json, "lastMs");
  out.count = Member(json, "count").isInt() ? I32(json, "count") : 1;
  return out;
}

manifests::PoolSpec DecodePoolSpec(const Json::Value& json) {
  manifests::PoolSpec out;
  if (auto runtime = manifests::ParseRuntime(Str(json, "runtime"))) out.runtime = *runtime;
  const Json::Value& image = Member(json, "image");
  out.image.kernel = Str(image, "kernel");
  out.image.rootfs = Str(image, "rootfs");
  if (Member(image, "initrd").isString()) out.image.initrd = Str(image, "initrd");
  out.image.bootArgs = Str(image, "bootArgs");
  for (const auto& arg : Member(json, "cmd")) {
    if (arg.isString()) out.cmd.push_back(arg.asString());
  }
  const Json::Value& env = Member(json, "env");
  if (env.isObject()) {
    for (const auto& name : env.getMemberNames()) {
      if (env[name].isString()) out.env[name] = env[name].asString();
    }
  }
  const Json::Value& resources = Member(json, "resources");
  if (resources.isObject()) {
    out.resources.vcpus = I32(resources, "vcpus");
    out.resources.memoryMiB = I64(resources, "memoryMiB");
    out.resources.diskMiB = I64(resources, "diskMiB");
  }
  std::string lifecycle = Str(json, "lifecycle");
  for (auto candidate : {manifests::Lifecycle::kService, manifests::Lifecycle::kDaemon,
                         manifests::Lifecycle::kJob}) {
    if (manifests::LifecycleName(candidate) == lifecycle) out.lifecycle = candidate;
  }
  const Json::Value& replicas = Member(json, "replicas");
  out.replicas = {I32(replicas, "running"), I32(replicas, "warm"), I32(replicas, "sleeping")};
  const Json::Value& policy = Member(json, "policy");
  if (policy.isObject()) {
    out.policy.minRunningSeconds = I64(policy, "minRunningSeconds");
    out.policy.minWarmSeconds = I64(policy, "minWarmSeconds");
    out.policy.idleToWarmSeconds = I64(policy, "idleToWarmSeconds");
    out.policy.warmToSleepSeconds = I64(policy, "warmToSleepSeconds");
    out.policy.drainTimeoutSeconds = I64(policy, "drainTimeoutSeconds");
    out.policy.gracefulStopSeconds = I64(policy, "gracefulStopSeconds");
  }
  const Json::Value& security = Member(json, "security");
  if (Member(security, "seccomp").isString()) out.security.seccomp = Str(security, "seccomp");
  const Json::Value& snapshot = Member(json, "snapshot");
  out.snapshot.base = Member(snapshot, "base").asBool();
  return out;
}

PoolStatus DecodePoolStatus(const Json::Value& json) {
  PoolStatus out;
  out.tenant = Str(json, "tenant");
  out.name = Str(json, "name");
  out.generation = U64(json, "generation");
  out.observedGeneration = U64(json, "observedGeneration");
  out.specHash = Str(json, "specHash");
  out.desired = DecodeCounts(Member(json, "desired"));
  out.current = DecodeCounts(Member(json, "current"));
  out.ready = I32(json, "ready");
  out.instances = I32(json, "instances");
  out.pruning = Bool(json, "pruning");
  for (const auto& condition : Member(json, "conditions")) {
    out.conditions.push_back(DecodeCondition(condition));
  }
  out.firstSeenMs = I64(json, "firstSeenMs");
  return out;
}

Instance DecodeInstance(const Json::Value& json) {
  Instance out;
  out.key = {Str(json, "tenant"), Str(json, "name")};
  out.pool = Str(json, "pool");
  if (auto state = ParseState(Str(json, "state"))) out.state = *state;
  if (auto target = ParseState(Str(json, "target"))) out.target = *target;
  out.specHash = Str(json, "specHash");
  out.generation = U64(json, "generation");
  const Json::Value& vmm = Member(json, "vmm");
  out.handle.pid = I64(vmm, "pid");
  out.handle.startTime = U64(vmm, "startTime");
  out.handle.socket = Str(vmm, "socket");
  // The public parts of the driver's data (confinement, metrics) go back where the describe
  // page reads them.
  Json::Value data(Json::objectValue);
  for (const char* name : {"confinement", "metrics"}) {
    if (const Json::Value& v = Member(vmm, name); !v.isNull()) data[name] = v;
  }
  if (!data.empty()) {
    Json::StreamWriterBuilder writer;
    writer["indentation"] = "";
    out.handle.data = Json::writeString(writer, data);
  }
  out.createdAtMs = I64(json, "createdAtMs");
  out.stateSinceMs = I64(json, "stateSinceMs");
  out.updatedAtMs = I64(json, "updatedAtMs");
  out.failures = I32(json, "failures");
  out.lastError = Str(json, "lastError");
  out.failed = Bool(json, "failed");
  if (Member(json, "pending").isString()) out.pending = ParseAction(Str(json, "pending"));
  if (Member(json, "spec").isObject()) {
    out.spec = std::make_shared<const manifests::PoolSpec>(DecodePoolSpec(json["spec"]));
  }
  return out;
}

manifests::TenantQuota DecodeQuota(const Json::Value& json) {
  manifests::TenantQuota out;
  out.vcpus = OptI64(json, "vcpus");
  out.memoryMiB = OptI64(json, "memoryMiB");
  out.diskMiB = OptI64(json, "diskMiB");
  out.running = OptI64(json, "running");
  out.warm = OptI64(json, "warm");
  out.sleeping = OptI64(json, "sleeping");
  return out;
}

TenantInfo DecodeTenant(const Json::Value& json) {
  TenantInfo out;
  out.status.name = Str(json, "name");
  const Json::Value& usage = Member(json, "usage");
  out.status.usage.vcpus = I64(usage, "vcpus");
  out.status.usage.memoryMiB = I64(usage, "memoryMiB");
  out.status.usage.diskMiB = I64(usage, "diskMiB");
  out.status.usage.running = I32(usage, "running");
  out.status.usage.warm = I32(usage, "warm");
  out.status.usage.sleeping = I32(usage, "sleeping");
  out.status.pools = I32(json, "pools");
  out.status.instances = I32(json, "instances");
  out.status.firstSeenMs = I64(json, "firstSeenMs");
  out.quota = DecodeQuota(Member(json, "quota"));
  return out;
}

manifests::Source DecodeSource(const Json::Value& json) {
  return {Str(json, "file"), I32(json, "line"), I32(json, "column")};
}

PoolDetail DecodePoolDetail(const Json::Value& json) {
  return {DecodePoolStatus(json), Member(json, "manifest"), DecodeSource(Member(json, "source")),
          DecodeEvents(Member(json, "events"))};
}

InstanceDetail DecodeInstanceDetail(const Json::Value& json) {
  return {DecodeInstance(json), DecodeEvents(Member(json, "events"))};
}

TenantDetail DecodeTenantDetail(const Json::Value& json) {
  return {DecodeTenant(json), Member(json, "manifest"), DecodeSource(Member(json, "source")),
          DecodeEvents(Member(json, "events"))};
}

}  // namespace mvm::controller::api
