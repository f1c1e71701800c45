#include "tests/firecracker_api_spec.h"

#include <json/reader.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <valijson/adapters/jsoncpp_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "manifests/yaml_reader.h"

namespace mvm::testing {
namespace {

std::vector<std::string> Split(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream in(path);
  for (std::string seg; std::getline(in, seg, '/');) {
    if (!seg.empty()) out.push_back(seg);
  }
  return out;
}

// Swagger 2.0 schema objects → JSON Schema (draft 4/7 subset valijson knows): drop keywords
// valijson would misread (`format` with swagger's own values, `readOnly`, `example`), and close
// objects that list properties.
Json::Value Convert(const Json::Value& in) {
  if (in.isArray()) {
    Json::Value out(Json::arrayValue);
    for (const auto& v : in) out.append(Convert(v));
    return out;
  }
  if (!in.isObject()) return in;
  Json::Value out(Json::objectValue);
  for (const std::string& key : in.getMemberNames()) {
    if (key == "format" || key == "readOnly" || key == "example") continue;
    if (key == "properties") {
      Json::Value props(Json::objectValue);
      for (const std::string& name : in[key].getMemberNames()) props[name] = Convert(in[key][name]);
      out[key] = props;
      continue;
    }
    out[key] = Convert(in[key]);
  }
  if (in.isMember("$ref")) {
    // JSON Schema ignores a $ref's siblings (descriptions here): keep the reference alone.
    Json::Value ref(Json::objectValue);
    ref["$ref"] = in["$ref"];
    return ref;
  }
  if (in.isMember("properties") && !in.isMember("additionalProperties")) {
    out["additionalProperties"] = false;
  }
  return out;
}

}  // namespace

Result<FirecrackerApiSpec> FirecrackerApiSpec::Load(const std::filesystem::path& yaml) {
  std::ifstream in(yaml);
  if (!in) return Error{"cannot read the Firecracker API description " + yaml.string()};
  std::stringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  manifests::ReadResult read = manifests::ReadDocuments(yaml.string(), s, manifests::Format::kYaml);
  if (read.documents.size() != 1) {
    return Error{yaml.string() + ": expected one YAML document (" +
                 std::to_string(read.diagnostics.size()) + " diagnostics)"};
  }
  const Json::Value& doc = read.documents[0].root;
  if (doc["swagger"].asString() != "2.0") return Error{yaml.string() + ": not swagger 2.0"};
  FirecrackerApiSpec spec;
  spec.version_ = doc["info"]["version"].asString();
  Json::Value definitions(Json::objectValue);
  for (const std::string& name : doc["definitions"].getMemberNames()) {
    definitions[name] = Convert(doc["definitions"][name]);
  }
  for (const std::string& path : doc["paths"].getMemberNames()) {
    PathEntry entry;
    entry.segments = Split(path);
    const Json::Value& ops = doc["paths"][path];
    for (const std::string& method : ops.getMemberNames()) {
      Operation op;
      for (const auto& param : ops[method]["parameters"]) {
        if (param["in"].asString() != "body") continue;
        op.hasBody = true;
        op.bodyRequired = param["required"].asBool();
        op.schema = Convert(param["schema"]);
        op.schema["definitions"] = definitions;
      }
      std::string upper = method;
      std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
      entry.methods[upper] = std::move(op);
    }
    spec.paths_.push_back(std::move(entry));
  }
  if (spec.paths_.empty()) return Error{yaml.string() + ": no paths"};
  return spec;
}

Status FirecrackerApiSpec::Check(const std::string& method, const std::string& path,
                                 const std::string& body) const {
  const std::string what = method + " " + path;
  const std::vector<std::string> segments = Split(path);
  const PathEntry* match = nullptr;
  for (const PathEntry& e : paths_) {
    if (e.segments.size() != segments.size()) continue;
    bool ok = true;
    for (size_t i = 0; i < segments.size() && ok; ++i) {
      const std::string& t = e.segments[i];
      ok = (t.size() > 2 && t.front() == '{' && t.back() == '}') || t == segments[i];
    }
    // A literal path wins over a template (none overlap in the file today).
    if (ok) match = &e;
  }
  if (match == nullptr) return Error{what + ": no such path in the API description"};
  auto op = match->methods.find(method);
  if (op == match->methods.end()) return Error{what + ": method not described for this path"};
  if (!op->second.hasBody) {
    if (!body.empty()) return Error{what + ": sends a body, but the API describes none"};
    return {};
  }
  if (body.empty()) {
    if (op->second.bodyRequired) return Error{what + ": the body is required"};
    return {};
  }
  Json::Value value;
  Json::CharReaderBuilder builder;
  std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
  std::string errors;
  if (!reader->parse(body.data(), body.data() + body.size(), &value, &errors)) {
    return Error{what + ": body is not JSON: " + errors};
  }
  valijson::Schema schema;
  valijson::SchemaParser parser;
  valijson::adapters::JsonCppAdapter schema_adapter(op->second.schema);
  parser.populateSchema(schema_adapter, schema);
  valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::JsonCppAdapter target(value);
  if (validator.validate(schema, target, &results)) return {};
  std::string message = what + ": body " + body + " is invalid:";
  valijson::ValidationResults::Error e;
  while (results.popError(e)) {
    std::string at;
    for (const auto& c : e.context) at += c;
    message += "\n  " + at + ": " + e.description;
  }
  return Error{message};
}

}  // namespace mvm::testing
