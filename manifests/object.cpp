#include "manifests/object.h"

#include "manifests/canonical_writer.h"

namespace mvm::manifests {

Manifest::Manifest(Json::Value value) : state_(std::make_shared<State>()) {
  state_->value = std::move(value);
  std::call_once(state_->once, [] {});
}

Manifest::Manifest(std::shared_ptr<const Source> source) : state_(std::make_shared<State>()) {
  state_->source = std::move(source);
}

const Json::Value& Manifest::value() const {
  static const Json::Value kNull;
  if (!state_) return kNull;
  std::call_once(state_->once, [&] {
    if (state_->source) state_->value = state_->source->Build();
    state_->source.reset();  // the compact form is no longer needed
  });
  return state_->value;
}

std::string_view KindName(Kind kind) {
  return kind == Kind::kTenant ? "Tenant" : "Pool";
}

std::optional<Kind> ParseKind(std::string_view name) {
  if (name == "Tenant") return Kind::kTenant;
  if (name == "Pool") return Kind::kPool;
  return std::nullopt;
}

std::string ObjectKey::ToString() const {
  std::string out(KindName(kind));
  out += ' ';
  if (!tenant.empty()) out += tenant + '/';
  out += name;
  return out;
}

std::string_view RuntimeName(Runtime runtime) {
  return runtime == Runtime::kFirecracker ? "firecracker" : "qemu";
}

std::optional<Runtime> ParseRuntime(std::string_view name) {
  if (name == "firecracker") return Runtime::kFirecracker;
  if (name == "qemu") return Runtime::kQemu;
  return std::nullopt;
}

std::string_view LifecycleName(Lifecycle lifecycle) {
  switch (lifecycle) {
    case Lifecycle::kService:
      return "service";
    case Lifecycle::kDaemon:
      return "daemon";
    case Lifecycle::kJob:
      return "job";
  }
  return "service";
}

namespace {

// Json::writeString's compact text (indentation "", emitUTF8), fed to the hash as written.
void Write(const Json::Value& v, CanonicalWriter& out) {
  switch (v.type()) {
    case Json::nullValue:
      out.Raw("null");
      return;
    case Json::booleanValue:
      out.Raw(v.asBool() ? "true" : "false");
      return;
    case Json::intValue:
      out.Int(v.asInt64());
      return;
    case Json::uintValue:
      out.Uint(v.asUInt64());
      return;
    case Json::realValue:
      out.Double(v.asDouble());
      return;
    case Json::stringValue: {
      const char* begin = nullptr;
      const char* end = nullptr;
      v.getString(&begin, &end);
      out.String({begin, static_cast<size_t>(end - begin)});
      return;
    }
    case Json::arrayValue: {
      out.Byte('[');
      for (Json::ArrayIndex i = 0; i < v.size(); ++i) {
        if (i > 0) out.Byte(',');
        Write(v[i], out);
      }
      out.Byte(']');
      return;
    }
    case Json::objectValue: {
      // jsoncpp keeps members sorted bytewise: iteration order is canonical.
      out.Byte('{');
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out.Byte(',');
        first = false;
        const char* end = nullptr;
        const char* begin = it.memberName(&end);
        out.String({begin, static_cast<size_t>(end - begin)});
        out.Byte(':');
        Write(*it, out);
      }
      out.Byte('}');
      return;
    }
  }
}

}  // namespace

std::string CanonicalHash(const Json::Value& value) {
  CanonicalWriter out;
  Write(value, out);
  return out.Hex();
}

}  // namespace mvm::manifests
