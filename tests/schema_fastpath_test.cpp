// The validation fast path against its authority: FastSchema's verdict equals valijson's on
// generated valid and mutated Pool and Tenant documents (and on arbitrary ones); compiled defaults,
// the canonical hash and the compact tree agree with their Json::Value forms; schemas using
// anything the fast path does not implement are refused.

#include "manifests/schema_fastpath.h"

#include <gtest/gtest.h>
#include <json/reader.h>
#include <json/writer.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <thread>
#include <valijson/adapters/jsoncpp_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "manifests/object.h"
#include "manifests/schema.h"
#include "manifests/value_tree.h"
#include "manifests/yaml_reader.h"

namespace mvm::manifests {
namespace {

namespace gen = rc::gen;

// Runs a property `cases` times (more if RC_PARAMS asks), reporting like RC_GTEST_PROP.
template <typename Testable>
void CheckProperty(int cases, Testable&& testable) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  rc::detail::TestMetadata metadata;
  metadata.id = std::string(info->test_suite_name()) + "/" + info->name();
  metadata.description = info->name();
  rc::detail::TestParams params = rc::detail::configuration().testParams;
  params.maxSuccess = std::max(params.maxSuccess, cases);
  auto result = rc::detail::checkTestable(std::forward<Testable>(testable), metadata, params);
  if (result.template is<rc::detail::SuccessResult>()) {
    const auto& success = result.template get<rc::detail::SuccessResult>();
    std::cout << "[ rapidcheck ] " << metadata.id << ": " << success.numSuccess << " cases";
    for (const auto& [tags, count] : success.distribution) {
      for (const auto& tag : tags) std::cout << ", " << count << " " << tag;
    }
    std::cout << "\n";
    return;
  }
  std::ostringstream out;
  rc::detail::printResultMessage(result, out);
  FAIL() << out.str();
}

const SchemaSet& Schemas() {
  return SchemaSet::Builtin();
}

// A uniform choice in [lo, hi). (gen::inRange narrows its range with the test's size, which
// would skew every choice toward `lo` in the early cases.)
template <typename T>
T Uniform(T lo, T hi) {
  return *gen::resize(100, gen::inRange<T>(lo, hi));
}

// valijson on any schema, as SchemaSet uses it (draft 7, strict types).
class Valijson {
 public:
  explicit Valijson(const Json::Value& schema) {
    valijson::SchemaParser parser;
    valijson::adapters::JsonCppAdapter adapter(schema);
    parser.populateSchema(adapter, compiled_);
  }
  bool Accepts(const Json::Value& doc) {
    valijson::ValidationResults results;
    valijson::adapters::JsonCppAdapter target(doc);
    return validator_.validate(compiled_, target, &results);
  }

 private:
  valijson::Schema compiled_;
  valijson::Validator validator_;
};

bool ValijsonAccepts(const Json::Value& schema, const Json::Value& doc) {
  return Valijson(schema).Accepts(doc);
}

Json::Value ParseJson(const std::string& text) {
  Json::Value out;
  Json::CharReaderBuilder builder;
  std::string errors;
  std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
  EXPECT_TRUE(reader->parse(text.data(), text.data() + text.size(), &out, &errors)) << errors;
  return out;
}

// ---- generators ---------------------------------------------------------------------------

const std::string kNul(1, '\0');

// Pieces that matter to the schemas' patterns and lengths: class boundaries, separators,
// NUL, newline and multi-byte UTF-8.
std::string AnyString() {
  static const std::vector<std::string> kPieces = {
      "a", "z",  "q",  "0",  "9", "A", "Z", "-", "_",  ".",  "/",   " ",   "!",
      ":", "\n", "\t", kNul, "~", "é", "😀", "x", "10", ".0", "/24", "255", "300"};
  if (Uniform(0, 8) > 0) {
    int n = Uniform(0, 12);
    std::string s;
    for (int i = 0; i < n; ++i) s += kPieces[Uniform<size_t>(0, kPieces.size())];
    return s;
  }
  int length = *gen::element(0, 1, 62, 63, 64, 127, 128, 129, 252, 253, 254, 2048, 2049, 4096, 4097,
                             8192, 8193);
  std::string s(static_cast<size_t>(length), *gen::element('a', 'A', '0', '_'));
  if (length > 0 && *gen::arbitrary<bool>()) {
    s[Uniform<size_t>(0, s.size())] = *gen::element('-', '.', '/', '!', '\0', 'Z');
  }
  if (Uniform(0, 4) == 0) s += "é";  // one more byte than characters
  return s;
}

std::string FromAlphabet(std::string_view alphabet, size_t min, size_t max) {
  size_t n = Uniform(min, max + 1);
  std::string s;
  for (size_t i = 0; i < n; ++i) s += alphabet[Uniform<size_t>(0, alphabet.size())];
  return s;
}

constexpr std::string_view kLower = "abcdefghijklmnopqrstuvwxyz0123456789";
constexpr std::string_view kAlnum =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

std::string DnsLabel() {
  std::string mid = FromAlphabet(std::string(kLower) + "-", 0, *gen::element<size_t>(3, 61));
  if (*gen::arbitrary<bool>()) return FromAlphabet(kLower, 1, 1);
  return FromAlphabet(kLower, 1, 1) + mid + FromAlphabet(kLower, 1, 1);
}

std::string MapKey() {
  if (*gen::arbitrary<bool>()) return FromAlphabet(kAlnum, 1, 1);
  return FromAlphabet(kAlnum, 1, 1) +
         FromAlphabet(std::string(kAlnum) + "-_./", 0, *gen::element<size_t>(6, 251)) +
         FromAlphabet(kAlnum, 1, 1);
}

std::string EnvKey() {
  return FromAlphabet(std::string(kAlnum.substr(0, 52)) + "_", 1, 1) +
         FromAlphabet(std::string(kAlnum) + "_", 0, *gen::element<size_t>(5, 127));
}

std::string Text(size_t min, size_t max) {
  std::string s = FromAlphabet("abc XYZ-_/.=:019", min, std::min<size_t>(max, 24));
  if (max > 24 && Uniform(0, 10) == 0) s = std::string(Uniform(min, max + 1), 'v');
  return s;
}

// An integer in [lo, hi], sometimes written as a float with an integral value (2.0), which
// valijson's jsoncpp adapter also calls an integer.
Json::Value Integer(int64_t lo, int64_t hi) {
  int64_t v = Uniform(lo, hi + 1);
  if (Uniform(0, 6) == 0) return static_cast<double>(v);
  return static_cast<Json::Int64>(v);
}

Json::Value AnyNumber() {
  switch (Uniform(0, 6)) {
    case 0:
      return static_cast<Json::Int64>(*gen::element<int64_t>(
          -1, 0, 1, 8, 30, 31, 32, 33, 63, 64, 10000, 10001, 65536, 65537, 262144, 262145, 604800,
          604801, 1048576, 1048577, 1000000, 67108864, 1073741824, 1073741825));
    case 1:
      return static_cast<Json::Int64>(*gen::arbitrary<int64_t>());
    case 2:
      return static_cast<Json::UInt64>(
          Uniform<uint64_t>(uint64_t{1} << 63, std::numeric_limits<uint64_t>::max()));
    case 3:
      return *gen::element(
          0.0, -0.0, 0.5, 1.0, 2.0, 32.0, 32.5, 63.0, 1e3, 604800.0, 604800.5, 1e19,
          1.8446744073709552e19, -9.3e18, 1e300, std::numeric_limits<double>::infinity(),
          -std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN());
    default:
      return *gen::arbitrary<double>();
  }
}

std::string AnyKey() {
  static const std::vector<std::string> kNames = {"apiVersion",
                                                  "kind",
                                                  "metadata",
                                                  "spec",
                                                  "name",
                                                  "tenant",
                                                  "labels",
                                                  "annotations",
                                                  "runtime",
                                                  "image",
                                                  "kernel",
                                                  "rootfs",
                                                  "initrd",
                                                  "bootArgs",
                                                  "cmd",
                                                  "env",
                                                  "resources",
                                                  "vcpus",
                                                  "memoryMiB",
                                                  "diskMiB",
                                                  "lifecycle",
                                                  "replicas",
                                                  "running",
                                                  "warm",
                                                  "sleeping",
                                                  "policy",
                                                  "minRunningSeconds",
                                                  "drainTimeoutSeconds",
                                                  "quota",
                                                  "network",
                                                  "subnet",
                                                  "memoryMib",
                                                  "cpus",
                                                  "gracefulStop",
                                                  "x",
                                                  ""};
  if (Uniform(0, 4) == 0) return AnyString();
  return kNames[Uniform<size_t>(0, kNames.size())];
}

Json::Value AnyValue(int depth) {
  int choice = Uniform(0, depth > 0 ? 9 : 7);
  switch (choice) {
    case 0:
      return Json::Value();
    case 1:
      return *gen::arbitrary<bool>();
    case 2:
    case 3:
      return AnyNumber();
    case 4:
    case 5:
    case 6:
      return AnyString();
    case 7: {
      Json::Value object(Json::objectValue);
      int n = Uniform(0, 4);
      for (int i = 0; i < n; ++i) object[AnyKey()] = AnyValue(depth - 1);
      return object;
    }
    default: {
      Json::Value list(Json::arrayValue);
      int n = Uniform(0, 4);
      for (int i = 0; i < n; ++i) list.append(AnyValue(depth - 1));
      return list;
    }
  }
}

Json::Value StringMap(const std::function<std::string()>& key, size_t max_value) {
  Json::Value map(Json::objectValue);
  int n = Uniform(0, 4);
  for (int i = 0; i < n; ++i) map[key()] = Text(0, max_value);
  return map;
}

Json::Value ValidPool() {
  Json::Value d(Json::objectValue);
  d["apiVersion"] = "mvm.dev/v1alpha1";
  d["kind"] = "Pool";
  Json::Value& meta = d["metadata"];
  meta["name"] = DnsLabel();
  meta["tenant"] = DnsLabel();
  if (*gen::arbitrary<bool>()) meta["labels"] = StringMap(MapKey, 4096);
  if (*gen::arbitrary<bool>()) meta["annotations"] = StringMap(MapKey, 4096);
  Json::Value& spec = d["spec"];
  Json::Value& image = spec["image"];
  image["kernel"] = Text(1, 4096);
  image["rootfs"] = Text(1, 4096);
  if (*gen::arbitrary<bool>())
    image["initrd"] = *gen::arbitrary<bool>() ? Json::Value() : Json::Value(Text(1, 4096));
  if (*gen::arbitrary<bool>()) image["bootArgs"] = Text(0, 2048);
  if (*gen::arbitrary<bool>()) spec["runtime"] = *gen::element("firecracker", "qemu");
  if (*gen::arbitrary<bool>()) {
    Json::Value& cmd = spec["cmd"] = Json::Value(Json::arrayValue);
    int n = Uniform(0, 5);
    for (int i = 0; i < n; ++i) cmd.append(Text(1, 4096));
  }
  if (*gen::arbitrary<bool>()) spec["env"] = StringMap(EnvKey, 8192);
  if (*gen::arbitrary<bool>()) {
    Json::Value& r = spec["resources"] = Json::Value(Json::objectValue);
    if (*gen::arbitrary<bool>()) r["vcpus"] = Integer(1, 32);
    if (*gen::arbitrary<bool>()) r["memoryMiB"] = Integer(64, 262144);
    if (*gen::arbitrary<bool>()) r["diskMiB"] = Integer(0, 1048576);
  }
  if (*gen::arbitrary<bool>()) spec["lifecycle"] = *gen::element("service", "daemon", "job");
  if (*gen::arbitrary<bool>()) {
    Json::Value& n = spec["replicas"] = Json::Value(Json::objectValue);
    for (const char* f : {"running", "warm", "sleeping"}) {
      if (*gen::arbitrary<bool>()) n[f] = Integer(0, 10000);
    }
  }
  if (*gen::arbitrary<bool>()) {
    Json::Value& p = spec["policy"] = Json::Value(Json::objectValue);
    for (const char* f : {"minRunningSeconds", "minWarmSeconds", "idleToWarmSeconds",
                          "warmToSleepSeconds", "drainTimeoutSeconds", "gracefulStopSeconds"}) {
      if (*gen::arbitrary<bool>()) p[f] = Integer(0, 604800);
    }
  }
  return d;
}

Json::Value ValidTenant() {
  Json::Value d(Json::objectValue);
  d["apiVersion"] = "mvm.dev/v1alpha1";
  d["kind"] = "Tenant";
  Json::Value& meta = d["metadata"];
  meta["name"] = DnsLabel();
  if (*gen::arbitrary<bool>()) meta["labels"] = StringMap(MapKey, 4096);
  if (*gen::arbitrary<bool>()) meta["annotations"] = StringMap(MapKey, 4096);
  if (*gen::arbitrary<bool>()) {
    Json::Value& spec = d["spec"] = Json::Value(Json::objectValue);
    if (*gen::arbitrary<bool>()) {
      Json::Value& q = spec["quota"] = Json::Value(Json::objectValue);
      const std::pair<const char*, int64_t> kLimits[] = {
          {"vcpus", 65536},  {"memoryMiB", 67108864}, {"running", 1000000},
          {"warm", 1000000}, {"sleeping", 1000000},   {"diskMiB", 1073741824}};
      for (const auto& [field, max] : kLimits) {
        if (*gen::arbitrary<bool>()) q[field] = Integer(0, max);
      }
    }
    if (*gen::arbitrary<bool>()) {
      Json::Value& network = spec["network"] = Json::Value(Json::objectValue);
      if (*gen::arbitrary<bool>()) {
        network["subnet"] =
            FromAlphabet("0123456789", 1, 3) + "." + FromAlphabet("0123456789", 1, 3) + "." +
            FromAlphabet("0123456789", 1, 3) + "." + FromAlphabet("0123456789", 1, 3) + "/" +
            FromAlphabet("0123456789", 1, 2);
      }
    }
  }
  return d;
}

void Collect(Json::Value& v, std::vector<Json::Value*>& out) {
  out.push_back(&v);
  if (v.isObject() || v.isArray()) {
    for (auto& child : v) Collect(child, out);
  }
}

// One random edit anywhere in the document: a new value, a member removed or added, a number
// moved to a schema boundary, a string replaced, a list grown or emptied, a map or list filled
// to around its size limit.
void Mutate(Json::Value& doc) {
  std::vector<Json::Value*> values;
  Collect(doc, values);
  Json::Value& v = *values[Uniform<size_t>(0, values.size())];
  switch (Uniform(0, 7)) {
    case 6: {
      std::vector<Json::Value*> containers;
      for (Json::Value* c : values) {
        if (c->isObject() || c->isArray()) containers.push_back(c);
      }
      Json::Value& c = *containers[Uniform<size_t>(0, containers.size())];
      int n = Uniform(250, 260);
      if (c.isObject()) {
        for (int i = 0; c.size() < static_cast<Json::ArrayIndex>(n); ++i) {
          c["K" + std::to_string(i)] = "v";
        }
      } else {
        while (c.size() < static_cast<Json::ArrayIndex>(n)) c.append("arg");
      }
      break;
    }
    case 0:
      v = AnyValue(2);
      break;
    case 1:
      if (v.isObject() && v.size() > 0) {
        std::vector<std::string> names = v.getMemberNames();
        v.removeMember(names[Uniform<size_t>(0, names.size())]);
      }
      break;
    case 2:
      if (v.isObject()) v[AnyKey()] = AnyValue(1);
      break;
    case 3:
      v = AnyNumber();
      break;
    case 4:
      v = AnyString();
      break;
    default:
      if (v.isArray()) {
        if (*gen::arbitrary<bool>()) {
          v.append(AnyValue(1));
        } else {
          v.clear();
        }
      }
  }
}

// The fast path must say exactly what valijson says about the document.
void ExpectAgreement(Kind kind, const Json::Value& doc) {
  ValueTree tree;
  uint32_t root = tree.FromJson(doc);
  const FastSchema* fast = Schemas().Fast(kind);
  RC_ASSERT(fast != nullptr);
  bool fast_accepts = fast->Accepts(tree, root);
  bool valijson_accepts = Schemas().ValijsonAccepts(kind, tree.ToJson(root));
  RC_TAG(valijson_accepts ? "valid" : "invalid");
  if (fast_accepts != valijson_accepts) {
    RC_FAIL("fast path says " + std::string(fast_accepts ? "valid" : "invalid") +
            ", valijson says " + (valijson_accepts ? "valid" : "invalid") + ":\n" +
            doc.toStyledString());
  }
}

// ---- tests ---------------------------------------------------------------------------------

TEST(SchemaFastPath, ServesTheBuiltinSchemas) {
  for (Kind kind : {Kind::kPool, Kind::kTenant}) {
    EXPECT_NE(Schemas().Fast(kind), nullptr) << Schemas().FastRefusal(kind);
  }
}

TEST(SchemaFastPath, AgreesWithValijsonOnValidAndMutatedPools) {
  CheckProperty(4000, [] {
    Json::Value doc = ValidPool();
    int edits = Uniform(0, 4);
    for (int i = 0; i < edits; ++i) Mutate(doc);
    ExpectAgreement(Kind::kPool, doc);
  });
}

TEST(SchemaFastPath, AgreesWithValijsonOnValidAndMutatedTenants) {
  CheckProperty(4000, [] {
    Json::Value doc = ValidTenant();
    int edits = Uniform(0, 4);
    for (int i = 0; i < edits; ++i) Mutate(doc);
    ExpectAgreement(Kind::kTenant, doc);
  });
}

TEST(SchemaFastPath, AgreesWithValijsonOnArbitraryDocuments) {
  CheckProperty(2000, [] {
    Json::Value doc(Json::objectValue);
    int n = Uniform(0, 6);
    for (int i = 0; i < n; ++i) doc[AnyKey()] = AnyValue(3);
    ExpectAgreement(*gen::element(Kind::kPool, Kind::kTenant), doc);
  });
}

TEST(SchemaFastPath, AcceptsEveryUneditedDocument) {
  CheckProperty(1000, [] {
    bool pool = *gen::arbitrary<bool>();
    Json::Value doc = pool ? ValidPool() : ValidTenant();
    Kind kind = pool ? Kind::kPool : Kind::kTenant;
    ValueTree tree;
    uint32_t root = tree.FromJson(doc);
    RC_ASSERT(Schemas().ValijsonAccepts(kind, doc));
    RC_ASSERT(Schemas().Fast(kind)->Accepts(tree, root));
  });
}

// Every "pattern" of the builtin schemas, found generically, on strings built to sit on its
// edges: the PCRE2 search and std::regex_search (valijson's) agree.
TEST(SchemaFastPath, PatternsMatchAsValijsonMatchesThem) {
  std::set<std::string> patterns;
  std::function<void(const Json::Value&)> walk = [&](const Json::Value& v) {
    if (v.isObject() && v["pattern"].isString()) patterns.insert(v["pattern"].asString());
    if (v.isObject() || v.isArray()) {
      for (const auto& child : v) walk(child);
    }
  };
  walk(Schemas().Raw(Kind::kPool));
  walk(Schemas().Raw(Kind::kTenant));
  ASSERT_GE(patterns.size(), 3u);
  for (const std::string& pattern : patterns) {
    Json::Value schema(Json::objectValue);
    schema["pattern"] = pattern;
    auto fast = FastSchema::Compile(schema);
    ASSERT_TRUE(fast.ok()) << fast.error().message;
    Valijson valijson(schema);
    CheckProperty(1500, [&] {
      std::string s;
      switch (Uniform(0, 5)) {
        case 0:
          s = AnyString();
          break;
        case 1:
          s = MapKey();
          break;
        case 2:
          s = EnvKey();
          break;
        case 3:
          s = DnsLabel();
          break;
        default: {  // CIDR-like: dotted quads and a prefix, one part sometimes off
          std::string parts[6] = {
              FromAlphabet("0123456789", 1, 3), FromAlphabet("0123456789", 1, 3),
              FromAlphabet("0123456789", 1, 3), FromAlphabet("0123456789", 1, 3),
              FromAlphabet("0123456789", 1, 2), ""};
          if (*gen::arbitrary<bool>()) {
            parts[Uniform(0, 6)] = *gen::element<std::string>("", "1234", "x", ".", "\n", "/8");
          }
          s = parts[0] + "." + parts[1] + "." + parts[2] + "." + parts[3] + "/" + parts[4] +
              parts[5];
        }
      }
      ValueTree tree;
      uint32_t root = tree.AddString(s, {});
      bool matches = valijson.Accepts(Json::Value(s));
      RC_TAG(matches ? "match" : "no match");
      RC_ASSERT((*fast)->Accepts(tree, root) == matches);
    });
  }
}

// String lengths are valijson's: UTF-8 characters, up to the first NUL.
TEST(SchemaFastPath, LengthsCountAsValijsonCounts) {
  Json::Value schema = ParseJson(R"js({"minLength": 2, "maxLength": 3})js");
  auto fast = FastSchema::Compile(schema);
  ASSERT_TRUE(fast.ok());
  for (const std::string& s :
       {std::string("ab"), std::string("abcd"), std::string("é"), std::string("éé"),
        std::string("a😀b"), std::string("ab\0cdef", 7), std::string("a\0", 2),
        std::string("\0abc", 4), std::string("éééé")}) {
    ValueTree tree;
    uint32_t root = tree.AddString(s, {});
    EXPECT_EQ((*fast)->Accepts(tree, root), ValijsonAccepts(schema, Json::Value(s))) << s;
  }
}

TEST(SchemaFastPath, RefusesWhatItDoesNotImplement) {
  for (const char* text : {
           R"js({"oneOf": [{"type": "string"}]})js",
           R"js({"anyOf": [{"type": "string"}]})js",
           R"js({"patternProperties": {"^a": {}}})js",
           R"js({"format": "date-time"})js",
           R"js({"uniqueItems": true})js",
           R"js({"multipleOf": 2})js",
           R"js({"items": [{"type": "string"}]})js",
           R"js({"properties": {"a": {"not": {}}}})js",
           R"js({"pattern": "^\\d+$"})js",
           R"js({"pattern": "^a.b$"})js",
           R"js({"pattern": "^(?=a)"})js",
           R"js({"pattern": "[[:alpha:]]"})js",
           R"js({"pattern": "a{2,1}"})js",
           R"js({"pattern": "a*?"})js",
           R"js({"$ref": "other.json#/x"})js",
           R"js({"type": "any"})js",
           R"js({"enum": [[1]]})js",
           R"js({"definitions": {"m": {"type": "object", "propertyNames": {"pattern": "^a$"}}},
               "properties": {"x": {"$ref": "#/definitions/m"}}})js",
       }) {
    auto fast = FastSchema::Compile(ParseJson(text));
    EXPECT_FALSE(fast.ok()) << text;
  }
  // The same shapes it does implement are served.
  for (const char* text : {
           R"js({"type": ["string", "null"], "minLength": 1, "pattern": "^[a-z]([-a-z0-9]*)?$"})js",
           R"js({"definitions": {"k": {"pattern": "^a$"}},
               "properties": {"x": {"type": "object", "propertyNames": {"$ref": "#/definitions/k"}}}})js",
           R"js({"properties": {"x": {"type": "object", "propertyNames": {"pattern": "^a$"}}}})js",
           R"js({"items": {"type": "integer", "exclusiveMaximum": 3}, "maxItems": 2})js",
       }) {
    auto fast = FastSchema::Compile(ParseJson(text));
    EXPECT_TRUE(fast.ok()) << text << ": " << fast.error().message;
  }
}

// Same types, values (NaN equal to NaN, -0.0 apart from 0.0), members and positions.
bool Same(const Json::Value& a, const Json::Value& b) {
  if (a.type() != b.type()) return false;
  if (PositionOf(a).line != PositionOf(b).line || PositionOf(a).column != PositionOf(b).column ||
      KeyPositionOf(a).line != KeyPositionOf(b).line ||
      KeyPositionOf(a).column != KeyPositionOf(b).column) {
    return false;
  }
  switch (a.type()) {
    case Json::realValue: {
      double x = a.asDouble(), y = b.asDouble();
      return (std::isnan(x) && std::isnan(y)) || (x == y && std::signbit(x) == std::signbit(y));
    }
    case Json::objectValue:
      if (a.getMemberNames() != b.getMemberNames()) return false;
      for (const auto& name : a.getMemberNames()) {
        if (!Same(a[name], b[name])) return false;
      }
      return true;
    case Json::arrayValue:
      if (a.size() != b.size()) return false;
      for (Json::ArrayIndex i = 0; i < a.size(); ++i) {
        if (!Same(a[i], b[i])) return false;
      }
      return true;
    default:
      return a == b;
  }
}

void SetPositions(Json::Value& v, int& line) {
  ++line;
  v.setOffsetStart(static_cast<ptrdiff_t>(line) << 32 | 3);
  v.setOffsetLimit(static_cast<ptrdiff_t>(line) << 32 | 1);
  if (v.isObject() || v.isArray()) {
    for (auto& child : v) SetPositions(child, line);
  }
}

TEST(SchemaFastPath, CompiledDefaultsMatchTheJsonDefaults) {
  CheckProperty(1500, [] {
    bool pool = *gen::arbitrary<bool>();
    Kind kind = pool ? Kind::kPool : Kind::kTenant;
    Json::Value doc = pool ? ValidPool() : ValidTenant();
    if (*gen::arbitrary<bool>()) Mutate(doc);  // defaults must not care whether it is valid
    int line = 0;
    SetPositions(doc, line);
    ValueTree tree;
    uint32_t root = tree.FromJson(doc);
    Schemas().ApplyDefaults(kind, doc);
    Schemas().ApplyDefaults(kind, tree, root);
    RC_ASSERT(Same(tree.ToJson(root), doc));
  });
}

std::string TextHash(const Json::Value& v) {
  Json::StreamWriterBuilder builder;
  builder["indentation"] = "";
  builder["emitUTF8"] = true;
  uint64_t hash = 1469598103934665603ULL;
  for (unsigned char c : Json::writeString(builder, v)) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(hash));
  return out;
}

// The direct canonical writers hash exactly the text jsoncpp's writer produces.
TEST(SchemaFastPath, CanonicalHashIsTheHashOfJsoncppText) {
  CheckProperty(2000, [] {
    Json::Value v = AnyValue(3);
    ValueTree tree;
    uint32_t root = tree.FromJson(v);
    std::string expected = TextHash(v);
    RC_ASSERT(CanonicalHash(v) == expected);
    RC_ASSERT(CanonicalHash(tree, root) == expected);
  });
}

TEST(SchemaFastPath, TreeRoundTripsJsonValues) {
  CheckProperty(1000, [] {
    Json::Value v = AnyValue(3);
    int line = 0;
    SetPositions(v, line);
    ValueTree tree;
    RC_ASSERT(Same(tree.ToJson(tree.FromJson(v)), v));
  });
}

// Object::manifest is built on first read, once, whichever thread and copy reads it.
TEST(SchemaFastPath, LazyManifestIsBuiltOnceForEveryReader) {
  struct Counting : Manifest::Source {
    mutable std::atomic<int> builds{0};
    Json::Value Build() const override {
      ++builds;
      Json::Value v(Json::objectValue);
      v["spec"]["replicas"] = 3;
      return v;
    }
  };
  auto source = std::make_shared<Counting>();
  Manifest manifest(source);
  Manifest copy = manifest;
  EXPECT_EQ(source->builds, 0);
  std::vector<std::thread> readers;
  std::atomic<int> seen{0};
  for (int i = 0; i < 8; ++i) {
    readers.emplace_back([&, i] {
      const Json::Value& v = i % 2 ? manifest : copy;
      if (v["spec"]["replicas"].asInt() == 3) ++seen;
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(seen, 8);
  EXPECT_EQ(source->builds, 1);
  EXPECT_EQ(&manifest.value(), &copy.value());
  EXPECT_TRUE(Manifest().isNull());
  EXPECT_EQ(Manifest(Json::Value(7)).value().asInt(), 7);
}

}  // namespace
}  // namespace mvm::manifests
