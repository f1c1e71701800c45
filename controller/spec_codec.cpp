#include "controller/spec_codec.h"

#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace mvm::controller {
namespace {

using manifests::Lifecycle;
using manifests::PoolSpec;
using manifests::Runtime;

std::optional<Lifecycle> ParseLifecycle(std::string_view name) {
  if (name == "service") return Lifecycle::kService;
  if (name == "daemon") return Lifecycle::kDaemon;
  if (name == "job") return Lifecycle::kJob;
  return std::nullopt;
}

// Reads members of one JSON object, remembering the first problem with its field path. A
// missing member leaves the destination untouched (its PoolSpec default).
class Reader {
 public:
  Reader(const Json::Value& object, std::string path, std::optional<std::string>& error)
      : object_(object), path_(std::move(path)), error_(error) {}

  Reader Child(const char* name) const {
    const Json::Value& child = Member(name);
    if (!child.isNull() && !child.isObject()) Fail(name, "expected an object");
    return Reader(child.isObject() ? child : Empty(), path_ + "." + name, error_);
  }

  void String(const char* name, std::string& out) const {
    const Json::Value& v = Member(name);
    if (v.isNull()) return;
    if (!v.isString()) return Fail(name, "expected a string");
    out = v.asString();
  }

  void OptionalString(const char* name, std::optional<std::string>& out) const {
    const Json::Value& v = Member(name);
    if (!object_.isMember(name)) return;
    if (v.isNull()) {
      out.reset();
    } else if (v.isString()) {
      out = v.asString();
    } else {
      Fail(name, "expected a string or null");
    }
  }

  template <typename Int>
  void Integer(const char* name, Int& out) const {
    const Json::Value& v = Member(name);
    if (v.isNull()) return;
    if (!v.isIntegral() || !v.isInt64()) return Fail(name, "expected an integer");
    const int64_t n = v.asInt64();
    if (n < std::numeric_limits<Int>::min() || n > std::numeric_limits<Int>::max())
      return Fail(name, "integer out of range");
    out = static_cast<Int>(n);
  }

  void Bool(const char* name, bool& out) const {
    const Json::Value& v = Member(name);
    if (v.isNull()) return;
    if (!v.isBool()) return Fail(name, "expected a boolean");
    out = v.asBool();
  }

  void StringList(const char* name, std::vector<std::string>& out) const {
    const Json::Value& v = Member(name);
    if (v.isNull()) return;
    if (!v.isArray()) return Fail(name, "expected an array of strings");
    out.clear();
    for (const Json::Value& item : v) {
      if (!item.isString()) return Fail(name, "expected an array of strings");
      out.push_back(item.asString());
    }
  }

  void StringMap(const char* name, std::map<std::string, std::string>& out) const {
    const Json::Value& v = Member(name);
    if (v.isNull()) return;
    if (!v.isObject()) return Fail(name, "expected an object of strings");
    out.clear();
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!it->isString()) return Fail(std::string(name) + "." + it.name(), "expected a string");
      out.emplace(it.name(), it->asString());
    }
  }

  // Reads a string member and maps it through `parse`; `what` lists the accepted names.
  template <typename Enum, typename Parse>
  void Enumerated(const char* name, Enum& out, Parse parse, const char* what) const {
    std::string text;
    const Json::Value& v = Member(name);
    if (v.isNull()) return;
    if (!v.isString()) return Fail(name, std::string("expected one of ") + what);
    text = v.asString();
    if (std::optional<Enum> parsed = parse(text)) {
      out = *parsed;
    } else {
      Fail(name, std::string("expected one of ") + what + " (got \"" + text + "\")");
    }
  }

  void Fail(const std::string& name, const std::string& message) const {
    if (!error_) error_ = path_ + "." + name + ": " + message;
  }

 private:
  static const Json::Value& Empty() {
    static const Json::Value empty(Json::objectValue);
    return empty;
  }
  const Json::Value& Member(const char* name) const {
    static const Json::Value null;
    const Json::Value* found = object_.find(name, name + std::char_traits<char>::length(name));
    return found != nullptr ? *found : null;
  }

  const Json::Value& object_;
  std::string path_;
  std::optional<std::string>& error_;
};

}  // namespace

Json::Value PoolSpecToJson(const PoolSpec& spec) {
  Json::Value out(Json::objectValue);
  out["runtime"] = std::string(manifests::RuntimeName(spec.runtime));
  Json::Value& image = out["image"] = Json::Value(Json::objectValue);
  image["kernel"] = spec.image.kernel;
  image["rootfs"] = spec.image.rootfs;
  image["initrd"] = spec.image.initrd ? Json::Value(*spec.image.initrd) : Json::Value();
  image["bootArgs"] = spec.image.bootArgs;
  Json::Value& cmd = out["cmd"] = Json::Value(Json::arrayValue);
  for (const std::string& arg : spec.cmd) cmd.append(arg);
  Json::Value& env = out["env"] = Json::Value(Json::objectValue);
  for (const auto& [key, value] : spec.env) env[key] = value;
  Json::Value& resources = out["resources"] = Json::Value(Json::objectValue);
  resources["vcpus"] = spec.resources.vcpus;
  resources["memoryMiB"] = Json::Int64{spec.resources.memoryMiB};
  resources["diskMiB"] = Json::Int64{spec.resources.diskMiB};
  if (spec.resources.io.Any()) {
    Json::Value& io = resources["io"] = Json::Value(Json::objectValue);
    io["readBps"] = Json::Int64{spec.resources.io.readBps};
    io["writeBps"] = Json::Int64{spec.resources.io.writeBps};
    io["readIops"] = Json::Int64{spec.resources.io.readIops};
    io["writeIops"] = Json::Int64{spec.resources.io.writeIops};
  }
  out["lifecycle"] = std::string(manifests::LifecycleName(spec.lifecycle));
  Json::Value& replicas = out["replicas"] = Json::Value(Json::objectValue);
  replicas["running"] = spec.replicas.running;
  replicas["warm"] = spec.replicas.warm;
  replicas["sleeping"] = spec.replicas.sleeping;
  Json::Value& policy = out["policy"] = Json::Value(Json::objectValue);
  policy["minRunningSeconds"] = Json::Int64{spec.policy.minRunningSeconds};
  policy["minWarmSeconds"] = Json::Int64{spec.policy.minWarmSeconds};
  policy["idleToWarmSeconds"] = Json::Int64{spec.policy.idleToWarmSeconds};
  policy["warmToSleepSeconds"] = Json::Int64{spec.policy.warmToSleepSeconds};
  policy["drainTimeoutSeconds"] = Json::Int64{spec.policy.drainTimeoutSeconds};
  policy["gracefulStopSeconds"] = Json::Int64{spec.policy.gracefulStopSeconds};
  out["security"]["seccomp"] = spec.security.seccomp;
  out["snapshot"]["base"] = spec.snapshot.base;
  return out;
}

Result<PoolSpec> PoolSpecFromJson(const Json::Value& json) {
  if (!json.isObject()) return Error{"spec: expected an object"};
  std::optional<std::string> error;
  PoolSpec spec;
  const Reader root(json, "spec", error);
  root.Enumerated("runtime", spec.runtime, manifests::ParseRuntime, "firecracker, qemu");
  const Reader image = root.Child("image");
  image.String("kernel", spec.image.kernel);
  image.String("rootfs", spec.image.rootfs);
  image.OptionalString("initrd", spec.image.initrd);
  image.String("bootArgs", spec.image.bootArgs);
  root.StringList("cmd", spec.cmd);
  root.StringMap("env", spec.env);
  const Reader resources = root.Child("resources");
  resources.Integer("vcpus", spec.resources.vcpus);
  resources.Integer("memoryMiB", spec.resources.memoryMiB);
  resources.Integer("diskMiB", spec.resources.diskMiB);
  const Reader io = resources.Child("io");
  io.Integer("readBps", spec.resources.io.readBps);
  io.Integer("writeBps", spec.resources.io.writeBps);
  io.Integer("readIops", spec.resources.io.readIops);
  io.Integer("writeIops", spec.resources.io.writeIops);
  root.Enumerated("lifecycle", spec.lifecycle, ParseLifecycle, "service, daemon, job");
  const Reader replicas = root.Child("replicas");
  replicas.Integer("running", spec.replicas.running);
  replicas.Integer("warm", spec.replicas.warm);
  replicas.Integer("sleeping", spec.replicas.sleeping);
  const Reader policy = root.Child("policy");
  policy.Integer("minRunningSeconds", spec.policy.minRunningSeconds);
  policy.Integer("minWarmSeconds", spec.policy.minWarmSeconds);
  policy.Integer("idleToWarmSeconds", spec.policy.idleToWarmSeconds);
  policy.Integer("warmToSleepSeconds", spec.policy.warmToSleepSeconds);
  policy.Integer("drainTimeoutSeconds", spec.policy.drainTimeoutSeconds);
  policy.Integer("gracefulStopSeconds", spec.policy.gracefulStopSeconds);
  root.Child("security").String("seccomp", spec.security.seccomp);
  root.Child("snapshot").Bool("base", spec.snapshot.base);
  if (error) return Error{*error};
  return spec;
}

}  // namespace mvm::controller
