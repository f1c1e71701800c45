#include "manifests/schema.h"

#include <json/reader.h>
#include <json/writer.h>
#include <valijson/adapters/jsoncpp_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include <algorithm>
#include <array>
#include <regex>
#include <set>
#include <stdexcept>
#include <string_view>

#include "manifests/schema_fastpath.h"
#include "manifests/yaml_reader.h"
#include "schemas/embedded.h"

namespace mvm::manifests {
namespace {

constexpr std::string_view kUnknownProperty =
    "Object contains a property that could not be validated using 'properties' or "
    "'additionalProperties' constraints: '";
constexpr std::string_view kMissingRequired = "Missing required property '";
constexpr std::string_view kPropertySchemaFailed =
    "Failed to validate against schema associated with property name '";

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Follows local "$ref": "#/definitions/NAME" references.
const Json::Value& Resolve(const Json::Value& root, const Json::Value& schema) {
  const Json::Value* s = &schema;
  for (int hops = 0; hops < 8 && s->isObject() && s->isMember("$ref"); ++hops) {
    std::string ref = (*s)["$ref"].asString();
    constexpr std::string_view kPrefix = "#/definitions/";
    if (!StartsWith(ref, kPrefix)) break;
    s = &root["definitions"][ref.substr(kPrefix.size())];
  }
  return *s;
}

// The schema that governs member `name` of an object governed by `schema`.
const Json::Value& MemberSchema(const Json::Value& root, const Json::Value& schema,
                                const std::string& name) {
  static const Json::Value kNone;
  if (!schema.isObject()) return kNone;
  const Json::Value& props = schema["properties"];
  if (props.isObject() && props.isMember(name)) return Resolve(root, props[name]);
  const Json::Value& additional = schema["additionalProperties"];
  if (additional.isObject()) return Resolve(root, additional);
  return kNone;
}

std::string Compact(const Json::Value& v) {
  Json::StreamWriterBuilder builder;
  builder["indentation"] = "";
  builder["emitUTF8"] = true;
  return Json::writeString(builder, v);
}

// A short rendering of a value for "(got …)".
std::string Describe(const Json::Value& v) {
  if (v.isObject()) return "an object";
  if (v.isArray()) return "a list";
  std::string text = Compact(v);
  if (text.size() > 64) {
    text.resize(61);
    text += "...";
  }
  return text;
}

std::string TypeNoun(std::string_view type) {
  if (type == "integer") return "an integer";
  if (type == "object") return "a mapping";
  if (type == "array") return "a list";
  if (type == "null") return "null";
  return "a " + std::string(type);
}

std::string ExpectedTypes(const Json::Value& type) {
  if (type.isString()) return TypeNoun(type.asString());
  std::string out;
  for (Json::ArrayIndex i = 0; i < type.size(); ++i) {
    if (i > 0) out += i + 1 == type.size() ? " or " : ", ";
    out += TypeNoun(type[i].asString());
  }
  return out;
}

std::string ActualType(const Json::Value& v) {
  if (v.isNull()) return "null";
  if (v.isBool()) return "a boolean";
  if (v.isIntegral()) return "an integer";
  if (v.isNumeric()) return "a number";
  if (v.isString()) return "a string";
  if (v.isArray()) return "a list";
  return "a mapping";
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                  std::tolower(static_cast<unsigned char>(b[j - 1]));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (same ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// One step of the walk from the document root along a valijson context.
struct Located {
  const Json::Value* value = nullptr;  // null: the value does not exist (missing member)
  const Json::Value* schema = nullptr;
  std::string path;
};

class Explainer {
 public:
  Explainer(const Json::Value& root_schema, const Json::Value& doc, const std::string& file,
            const std::string& object, Diagnostics& out)
      : root_(root_schema), doc_(doc), file_(file), object_(object), out_(out) {}

  Located Walk(const std::vector<std::string>& context) const {
    Located at{&doc_, &Resolve(root_, root_), ""};
    for (size_t i = 1; i < context.size() && at.value; ++i) {
      std::string seg = context[i];
      if (seg.size() >= 2 && seg.front() == '[' && seg.back() == ']') {
        seg = seg.substr(1, seg.size() - 2);
      }
      if (at.value->isArray()) {
        Json::ArrayIndex index = static_cast<Json::ArrayIndex>(std::stoul(seg));
        at.value = index < at.value->size() ? &(*at.value)[index] : nullptr;
        at.schema = &Resolve(root_, (*at.schema)["items"]);
        at.path += "[" + seg + "]";
      } else {
        at.schema = &MemberSchema(root_, *at.schema, seg);
        at.value =
            at.value->isObject() ? at.value->find(seg.data(), seg.data() + seg.size()) : nullptr;
        at.path += (at.path.empty() ? "" : ".") + seg;
      }
    }
    return at;
  }

  void Emit(const Json::Value* value, bool at_key, const std::string& path, std::string message) {
    Position pos = value ? (at_key ? KeyPositionOf(*value) : PositionOf(*value)) : Position{};
    if (pos.line == 0) pos = PositionOf(doc_);
    std::string key = std::to_string(pos.line) + ":" + std::to_string(pos.column) + path + message;
    if (!seen_.insert(key).second) return;
    out_.push_back({file_, pos.line, pos.column, object_, path, std::move(message)});
  }

  // Turns one valijson error into zero or more diagnostics.
  void Explain(const valijson::ValidationResults::Error& error) {
    const std::string& d = error.description;
    Located at = Walk(error.context);
    if (!at.value) return;
    const Json::Value& v = *at.value;
    const Json::Value& s = *at.schema;
    if (StartsWith(d, kUnknownProperty)) {
      UnknownMembers(at);
    } else if (StartsWith(d, kMissingRequired)) {
      std::string name = d.substr(kMissingRequired.size());
      name.resize(std::min(name.size(), name.find('\'')));
      Emit(&v, false, Join(at.path, name), "is required");
    } else if (StartsWith(d, "Expected number greater than or equal to")) {
      Emit(&v, false, at.path,
           "must be >= " + Compact(s["minimum"]) + " (got " + Describe(v) + ")");
    } else if (StartsWith(d, "Expected number greater than")) {
      Emit(&v, false, at.path, "must be > " + Compact(s["minimum"]) + " (got " + Describe(v) + ")");
    } else if (StartsWith(d, "Expected number less than or equal to")) {
      Emit(&v, false, at.path,
           "must be <= " + Compact(s["maximum"]) + " (got " + Describe(v) + ")");
    } else if (StartsWith(d, "Expected number less than")) {
      Emit(&v, false, at.path, "must be < " + Compact(s["maximum"]) + " (got " + Describe(v) + ")");
    } else if (StartsWith(d, "Failed to match against any enum values")) {
      std::string choices;
      for (const auto& c : s["enum"]) choices += (choices.empty() ? "" : ", ") + c.asString();
      Emit(&v, false, at.path, "must be one of " + choices + " (got " + Describe(v) + ")");
    } else if (StartsWith(d, "Failed to match expected value set by 'const'")) {
      Emit(&v, false, at.path, "must be " + Compact(s["const"]) + " (got " + Describe(v) + ")");
    } else if (StartsWith(d, "Value type not permitted")) {
      Emit(&v, false, at.path,
           "must be " + ExpectedTypes(s["type"]) + " (got " + ActualType(v) +
               (v.isObject() || v.isArray() ? "" : " " + Describe(v)) + ")");
    } else if (StartsWith(d, "Failed to match regex")) {
      Emit(&v, false, at.path, "must be " + Expected(s) + " (got " + Describe(v) + ")");
    } else if (StartsWith(d, "String should be no more than")) {
      Emit(&v, false, at.path,
           "must be at most " + Compact(s["maxLength"]) + " characters (got " +
               std::to_string(v.asString().size()) + ")");
    } else if (StartsWith(d, "String should be no fewer than")) {
      Emit(&v, false, at.path,
           s["minLength"].asInt() <= 1
               ? std::string("must not be empty")
               : "must be at least " + Compact(s["minLength"]) + " characters");
    } else if (StartsWith(d, "Array should contain no more than")) {
      Emit(&v, false, at.path,
           "must have at most " + Compact(s["maxItems"]) + " items (got " +
               std::to_string(v.size()) + ")");
    } else if (StartsWith(d, "Array should contain no fewer than")) {
      Emit(&v, false, at.path, "must have at least " + Compact(s["minItems"]) + " items");
    } else if (StartsWith(d, "Object should have no more than")) {
      Emit(&v, false, at.path,
           "must have at most " + Compact(s["maxProperties"]) + " entries (got " +
               std::to_string(v.size()) + ")");
    } else if (StartsWith(d, kPropertySchemaFailed)) {
      // Only an aggregate; explained when nothing more specific was reported under it, which
      // is how valijson reports a failed "propertyNames" constraint.
      std::string name = d.substr(kPropertySchemaFailed.size());
      name.resize(std::min(name.size(), name.find('\'')));
      aggregates_.push_back({error.context, name});
    } else if (StartsWith(d, "Failed to validate") || StartsWith(d, "Cannot validate item")) {
      // Aggregates of errors reported individually.
    } else {
      Emit(&v, false, at.path, d);
    }
  }

  void ExplainAggregates(const std::vector<valijson::ValidationResults::Error>& all) {
    for (const auto& [context, name] : aggregates_) {
      std::vector<std::string> child = context;
      child.push_back("[" + name + "]");
      // Covered when anything at or below the child was reported (aggregates included: they
      // are explained in their own turn).
      bool covered = std::any_of(all.begin(), all.end(), [&](const auto& e) {
        return e.context.size() >= child.size() &&
               std::equal(child.begin(), child.end(), e.context.begin());
      });
      if (covered) continue;
      Located at = Walk(child);
      if (!at.value) continue;
      const Json::Value& names = Resolve(root_, (*at.schema)["propertyNames"]);
      bool explained = false;
      if (names.isObject() && names.isMember("pattern") && at.value->isObject()) {
        std::regex pattern(names["pattern"].asString());
        for (const auto& member : at.value->getMemberNames()) {
          if (std::regex_search(member, pattern)) continue;
          Emit(&(*at.value)[member], true, Join(at.path, member),
               "is not an allowed key (must match " + names["pattern"].asString() + ")");
          explained = true;
        }
      }
      if (!explained) Emit(at.value, false, at.path, "is invalid");
    }
  }

 private:
  static std::string Join(const std::string& path, const std::string& name) {
    return path.empty() ? name : path + "." + name;
  }

  static std::string Expected(const Json::Value& s) {
    if (s.isMember("x-mvm-expected")) return s["x-mvm-expected"].asString();
    return "a string matching " + s["pattern"].asString();
  }

  // valijson names only the first unknown member; report them all, with a suggestion.
  void UnknownMembers(const Located& at) {
    const Json::Value& props = (*at.schema)["properties"];
    for (const auto& name : at.value->getMemberNames()) {
      if (props.isObject() && props.isMember(name)) continue;
      std::string message = "unknown field";
      std::string best;
      size_t best_distance = 3;
      if (props.isObject()) {
        for (const auto& known : props.getMemberNames()) {
          size_t distance = EditDistance(name, known);
          if (distance < best_distance) best_distance = distance, best = known;
        }
      }
      if (!best.empty()) message += " (did you mean \"" + best + "\"?)";
      Emit(&(*at.value)[name], true, Join(at.path, name), message);
    }
  }

  const Json::Value& root_;
  const Json::Value& doc_;
  const std::string& file_;
  const std::string& object_;
  Diagnostics& out_;
  std::set<std::string> seen_;
  std::vector<std::pair<std::vector<std::string>, std::string>> aggregates_;
};

void FillDefaults(const Json::Value& root, const Json::Value& schema_in, Json::Value& value) {
  const Json::Value& schema = Resolve(root, schema_in);
  if (value.isObject() && schema.isObject() && schema["properties"].isObject()) {
    const Json::Value& props = schema["properties"];
    for (const auto& name : props.getMemberNames()) {
      const Json::Value& declared = props[name];
      const Json::Value& resolved = Resolve(root, declared);
      if (!value.isMember(name)) {
        const Json::Value* def = declared.isMember("default")   ? &declared["default"]
                                 : resolved.isMember("default") ? &resolved["default"]
                                                                : nullptr;
        if (!def) continue;
        Json::Value copy = *def;
        // A default stands where its parent was written.
        copy.setOffsetStart(value.getOffsetStart());
        copy.setOffsetLimit(value.getOffsetStart());
        value[name] = std::move(copy);
      }
      FillDefaults(root, resolved, value[name]);
    }
  } else if (value.isArray() && schema.isObject() && schema["items"].isObject()) {
    for (auto& item : value) FillDefaults(root, schema["items"], item);
  }
}

}  // namespace

SchemaSet::SchemaSet() {
  for (const auto& embedded : schemas::Embedded()) {
    Json::Value raw;
    Json::CharReaderBuilder builder;
    std::string errors;
    std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    const char* begin = embedded.text.data();
    if (!reader->parse(begin, begin + embedded.text.size(), &raw, &errors)) {
      throw std::runtime_error("schema " + std::string(embedded.file) + ": " + errors);
    }
    auto kind = ParseKind(raw["title"].asString());
    if (!kind) throw std::runtime_error("schema " + std::string(embedded.file) + ": unknown title");
    Entry entry;
    entry.raw = std::move(raw);
    entry.compiled = std::make_unique<valijson::Schema>();
    valijson::SchemaParser parser;
    valijson::adapters::JsonCppAdapter adapter(entry.raw);
    parser.populateSchema(adapter, *entry.compiled);
    Entry& stored = schemas_.emplace(*kind, std::move(entry)).first->second;
    // Compiled from the stored document: the plans point into it.
    auto fast = FastSchema::Compile(stored.raw);
    if (fast) {
      stored.fast = std::move(*fast);
    } else {
      stored.fast_refusal = fast.error().message;
    }
    std::map<const Json::Value*, int> memo;
    CompileDefaults(stored.raw, stored.raw, stored, memo);
  }
}

SchemaSet::~SchemaSet() = default;

const SchemaSet& SchemaSet::Builtin() {
  static const SchemaSet kSet;
  return kSet;
}

const Json::Value& SchemaSet::Raw(Kind kind) const {
  return schemas_.at(kind).raw;
}

const FastSchema* SchemaSet::Fast(Kind kind) const {
  return schemas_.at(kind).fast.get();
}

const std::string& SchemaSet::FastRefusal(Kind kind) const {
  return schemas_.at(kind).fast_refusal;
}

void SchemaSet::Validate(Kind kind, const Json::Value& doc, const std::string& file,
                         const std::string& object, Diagnostics& out) const {
  const Entry& entry = schemas_.at(kind);
  thread_local valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::JsonCppAdapter target(doc);
  if (validator.validate(*entry.compiled, target, &results)) return;
  std::vector<valijson::ValidationResults::Error> errors;
  valijson::ValidationResults::Error error;
  while (results.popError(error)) errors.push_back(error);
  Explainer explainer(entry.raw, doc, file, object, out);
  for (const auto& e : errors) explainer.Explain(e);
  explainer.ExplainAggregates(errors);
}

bool SchemaSet::ValijsonAccepts(Kind kind, const Json::Value& doc) const {
  thread_local valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::JsonCppAdapter target(doc);
  return validator.validate(*schemas_.at(kind).compiled, target, &results);
}

void SchemaSet::ApplyDefaults(Kind kind, Json::Value& doc) const {
  const Json::Value& raw = schemas_.at(kind).raw;
  FillDefaults(raw, raw, doc);
}

// Mirrors FillDefaults above, schema walk done once: `schema` is resolved as FillDefaults
// resolves it, members in getMemberNames() order.
int SchemaSet::CompileDefaults(const Json::Value& root, const Json::Value& schema_in, Entry& entry,
                               std::map<const Json::Value*, int>& memo) {
  const Json::Value& schema = Resolve(root, schema_in);
  if (auto it = memo.find(&schema); it != memo.end()) return it->second;
  int index = static_cast<int>(entry.defaults.size());
  memo[&schema] = index;
  entry.defaults.emplace_back();
  Defaults plan;
  if (schema.isObject() && schema["properties"].isObject()) {
    plan.properties = true;
    const Json::Value& props = schema["properties"];
    for (const auto& name : props.getMemberNames()) {
      const Json::Value& declared = props[name];
      const Json::Value& resolved = Resolve(root, declared);
      Defaults::Member member;
      member.name = name;
      auto searchable = [](const Json::Value& v) { return v.isObject() || v.isNull(); };
      if (!searchable(declared)) {
        member.throws = true;
      } else if (declared.isMember("default")) {
        member.value = &declared["default"];
      } else if (!searchable(resolved)) {
        member.throws = true;
      } else if (resolved.isMember("default")) {
        member.value = &resolved["default"];
      }
      member.plan = CompileDefaults(root, resolved, entry, memo);
      plan.members.push_back(std::move(member));
    }
  }
  if (schema.isObject() && schema["items"].isObject()) {
    plan.items = CompileDefaults(root, schema["items"], entry, memo);
  }
  entry.defaults[static_cast<size_t>(index)] = std::move(plan);
  return index;
}

void SchemaSet::ApplyDefaults(Kind kind, ValueTree& tree, uint32_t root) const {
  Fill(schemas_.at(kind), 0, tree, root);
}

void SchemaSet::Fill(const Entry& entry, int plan_index, ValueTree& tree, uint32_t node) const {
  const Defaults& plan = entry.defaults[static_cast<size_t>(plan_index)];
  NodeType type = tree[node].type;
  if (type == NodeType::kObject && plan.properties) {
    // One pass over the document's members finds those the plan names.
    constexpr size_t kSmall = 32;
    std::array<uint32_t, kSmall> found;
    bool small = plan.members.size() <= kSmall;
    if (small) {
      found.fill(kNoNode);
      for (uint32_t c = tree[node].first; c != kNoNode; c = tree[c].next) {
        std::string_view key = tree.Key(c);
        for (size_t i = 0; i < plan.members.size(); ++i) {
          const std::string& name = plan.members[i].name;
          if (name.size() == key.size() && (key.empty() || name[0] == key[0]) && name == key) {
            found[i] = c;
            break;
          }
        }
      }
    }
    for (size_t i = 0; i < plan.members.size(); ++i) {
      const auto& member = plan.members[i];
      uint32_t child = small ? found[i] : tree.Find(node, member.name);
      if (child == kNoNode) {
        if (member.throws) {
          throw Json::LogicError(
              "in Json::Value::find(begin, end): requires objectValue or nullValue");
        }
        if (!member.value) continue;
        // A default stands where its parent was written.
        Position at = tree[node].pos;
        child = tree.FromJson(*member.value);
        tree[child].pos = at;
        tree.AppendMember(node, tree.AddText(member.name),
                          static_cast<uint32_t>(member.name.size()), at, child);
      }
      if (!entry.defaults[static_cast<size_t>(member.plan)].Empty()) {
        Fill(entry, member.plan, tree, child);
      }
    }
  } else if (type == NodeType::kArray && plan.items >= 0) {
    for (uint32_t item = tree[node].first; item != kNoNode; item = tree[item].next) {
      Fill(entry, plan.items, tree, item);
    }
  }
}

}  // namespace mvm::manifests
