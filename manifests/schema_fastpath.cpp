#include "manifests/schema_fastpath.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string_view>

namespace mvm::manifests {

namespace {

// valijson's named types (TypeConstraint::JsonType), as bits.
enum TypeBit : uint8_t {
  kNullBit = 1,
  kBooleanBit = 2,
  kIntegerBit = 4,
  kNumberBit = 8,
  kStringBit = 16,
  kObjectBit = 32,
  kArrayBit = 64,
};

std::optional<uint8_t> TypeBitOf(std::string_view name) {
  if (name == "null") return kNullBit;
  if (name == "boolean") return kBooleanBit;
  if (name == "integer") return kIntegerBit;
  if (name == "number") return kNumberBit;
  if (name == "string") return kStringBit;
  if (name == "object") return kObjectBit;
  if (name == "array") return kArrayBit;
  return std::nullopt;  // "any" and unknown names: not served
}

// jsoncpp's isIntegral() for a double, which valijson's jsoncpp adapter calls isInteger().
bool IntegralDouble(double d) {
  double integral = 0;
  return d >= -9223372036854775808.0 && d < 18446744073709551616.0 &&
         std::modf(d, &integral) == 0.0;
}

// valijson's utils::u8_strlen over std::string::c_str(): counts UTF-8 sequences up to the first
// NUL, stopping early at a sequence that decodes to 0. nullopt where valijson's own arithmetic
// would read past its table (more than 5 continuation bytes): not served.
std::optional<uint64_t> ValijsonLength(std::string_view s) {
  static constexpr uint64_t kOffsets[6] = {0x00000000UL, 0x00003080UL, 0x000E2080UL,
                                           0x03C82080UL, 0xFA082080UL, 0x82082080UL};
  size_t n = s.size();
  size_t i = 0;
  while (i < n && static_cast<unsigned char>(s[i]) - 1u < 0x7fu) ++i;  // ASCII, no NUL
  if (i == n) return n;
  // The byte before a continuation byte starts its sequence, ASCII or not.
  if (i > 0) --i;
  uint64_t count = i;
  while (i < n && s[i] != 0) {
    uint64_t ch = 0;
    int size = 0;
    do {
      ch = (ch << 6) + static_cast<unsigned char>(s[i++]);
      ++size;
    } while (i < n && s[i] != 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80);
    if (size > 6) return std::nullopt;
    ch -= kOffsets[size - 1];
    if (ch == 0) break;
    ++count;
  }
  return count;
}

// Checks that `pattern` lies in a subset where std::regex (ECMAScript, regex_search, bytes) and
// PCRE2 (no UTF, DOLLAR_ENDONLY) find a match in exactly the same strings.
class PatternSubset {
 public:
  explicit PatternSubset(std::string_view p) : p_(p) {}

  bool Check() {
    if (!Alternation(0) || i_ != p_.size()) return false;
    try {
      std::regex probe{std::string(p_)};  // valijson must be able to compile it too
    } catch (const std::regex_error&) {
      return false;
    }
    return true;
  }

 private:
  static bool Printable(char c) { return c >= 0x20 && c <= 0x7e; }
  static bool Alnum(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  }
  // Escaped punctuation is a literal in both dialects; letters and digits are classes,
  // assertions or back references, which are not served.
  static bool LiteralEscape(char c) { return Printable(c) && !Alnum(c) && c != ' '; }
  bool More() const { return i_ < p_.size(); }
  char Peek() const { return p_[i_]; }

  bool Alternation(int depth) {
    if (depth > 16) return false;
    if (!Sequence(depth)) return false;
    while (More() && Peek() == '|') {
      ++i_;
      if (!Sequence(depth)) return false;
    }
    return true;
  }

  bool Sequence(int depth) {
    while (More() && Peek() != '|' && Peek() != ')') {
      if (!Term(depth)) return false;
    }
    return true;
  }

  bool Term(int depth) {
    char c = Peek();
    if (c == '^' || c == '$') {
      ++i_;
      return !More() || !IsQuantifierStart(Peek());
    }
    if (c == '(') {
      ++i_;
      if (More() && Peek() == '?') {
        if (i_ + 1 >= p_.size() || p_[i_ + 1] != ':') return false;
        i_ += 2;
      }
      if (!Alternation(depth + 1) || !More() || Peek() != ')') return false;
      ++i_;
    } else if (c == '[') {
      if (!Class()) return false;
    } else if (c == '\\') {
      if (i_ + 1 >= p_.size() || !LiteralEscape(p_[i_ + 1])) return false;
      i_ += 2;
    } else if (c == '.' || IsQuantifierStart(c) || c == ']' || c == '}' || !Printable(c)) {
      return false;
    } else {
      ++i_;
    }
    return Quantifier();
  }

  static bool IsQuantifierStart(char c) { return c == '*' || c == '+' || c == '?' || c == '{'; }

  bool Number(unsigned& out) {
    size_t start = i_;
    out = 0;
    while (More() && Peek() >= '0' && Peek() <= '9' && i_ - start < 4) {
      out = out * 10 + static_cast<unsigned>(Peek() - '0');
      ++i_;
    }
    return i_ > start && !(More() && Peek() >= '0' && Peek() <= '9');
  }

  bool Quantifier() {
    if (!More()) return true;
    char c = Peek();
    if (c == '*' || c == '+' || c == '?') {
      ++i_;
    } else if (c == '{') {
      ++i_;
      unsigned low = 0, high = 0;
      if (!Number(low)) return false;
      if (More() && Peek() == ',') {
        ++i_;
        if (More() && Peek() != '}') {
          if (!Number(high) || high < low) return false;
        }
      }
      if (!More() || Peek() != '}') return false;
      ++i_;
    } else {
      return true;
    }
    // Lazy, possessive or stacked quantifiers: not served.
    return !More() || !IsQuantifierStart(Peek());
  }

  // [...] or [^...]: printable ASCII literals, escaped punctuation, ranges between letters or
  // digits, '-' only first or last; never '[' (POSIX classes in PCRE2).
  bool Class() {
    ++i_;
    if (More() && Peek() == '^') ++i_;
    if (More() && Peek() == '-') ++i_;
    int items = 0;
    while (More() && Peek() != ']') {
      char c = Peek();
      if (c == '-') {
        ++i_;
        if (!More() || Peek() != ']') return false;
        ++items;
        break;
      }
      if (c == '[' || c == '^' || !Printable(c)) return false;
      if (c == '\\') {
        if (i_ + 1 >= p_.size() || !LiteralEscape(p_[i_ + 1])) return false;
        i_ += 2;
        ++items;
        continue;
      }
      ++i_;
      ++items;
      if (More() && Peek() == '-' && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
        char high = p_[i_ + 1];
        if (!Alnum(c) || !Alnum(high) || high < c) return false;
        bool same_kind = (c <= '9') == (high <= '9') && (c <= 'Z') == (high <= 'Z');
        if (!same_kind) return false;
        i_ += 2;
      }
    }
    if (!More() || (items == 0 && p_[i_ - 1] != '-')) return false;
    ++i_;  // ']'
    return true;
  }

  std::string_view p_;
  size_t i_ = 0;
};

}  // namespace

struct FastSchema::Pattern {
  explicit Pattern(pcre2_code* c) : code(c) {}
  ~Pattern() { pcre2_code_free(code); }
  Pattern(const Pattern&) = delete;
  Pattern& operator=(const Pattern&) = delete;

  // std::regex_search semantics: is there a match anywhere in the bytes?
  std::optional<bool> Search(std::string_view subject) const {
    struct Scratch {
      pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
      ~Scratch() { pcre2_match_data_free(data); }
    };
    thread_local Scratch scratch;
    if (!scratch.data) return std::nullopt;
    int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0, 0,
                         scratch.data, nullptr);
    if (rc >= 0) return true;  // 0: matched, ovector too small
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    return std::nullopt;  // a resource limit: let valijson decide
  }

  pcre2_code* code;
};

// A const or enum value: null, a boolean, a number (compared as a double) or a string.
struct Literal {
  NodeType type = NodeType::kNull;
  bool boolean = false;
  double number = 0;
  std::string text;
};

struct FastSchema::Subschema {
  bool always_invalid = false;
  uint8_t types = 0;  // 0: no "type"
  std::optional<Literal> constant;
  bool has_enum = false;
  std::vector<Literal> enumeration;
  std::optional<double> minimum, maximum, exclusive_minimum, exclusive_maximum;
  std::optional<uint64_t> min_length, max_length;
  int pattern = -1;
  std::optional<uint64_t> min_items, max_items, min_properties, max_properties;
  // "required" names that are also "properties" are bits of required_mask (by property index);
  // the rest are looked up one by one.
  uint64_t required_mask = 0;
  std::vector<std::string> required_elsewhere;
  // A valijson PropertiesConstraint exists when any of properties / additionalProperties is
  // written; without "additionalProperties" other members are allowed.
  bool has_properties = false;
  std::vector<std::pair<std::string, int>> properties;  // sorted by name

  // Index of `key` in `properties`, or -1.
  int Lookup(std::string_view key) const {
    if (properties.size() <= 16) {
      for (size_t i = 0; i < properties.size(); ++i) {
        const std::string& name = properties[i].first;
        if (name.size() == key.size() && (key.empty() || name[0] == key[0]) && name == key) {
          return static_cast<int>(i);
        }
      }
      return -1;
    }
    auto it = std::lower_bound(
        properties.begin(), properties.end(), key,
        [](const auto& property, std::string_view k) { return property.first < k; });
    return it != properties.end() && it->first == key ? static_cast<int>(it - properties.begin())
                                                      : -1;
  }
  enum class Additional { kAllow, kForbid, kSchema } additional = Additional::kAllow;
  int additional_schema = -1;
  int property_names = -1;
  int items = -1;
  // Which groups of checks apply at all, so a value skips the rest at once.
  bool literals = false;
  bool number_checks = false;
  bool string_checks = false;
  bool object_checks = false;
  bool array_checks = false;
};

// The value being checked: a tree node, or an object key (valijson's StdStringAdapter).
struct FastSchema::Value {
  const ValueTree* tree;
  uint32_t node;          // kNoNode: the key below
  std::string_view text;  // a key's bytes

  NodeType type() const { return node == kNoNode ? NodeType::kString : (*tree)[node].type; }
  std::string_view String() const { return node == kNoNode ? text : tree->String(node); }
  bool IsNumber() const {
    NodeType t = type();
    return t == NodeType::kInt || t == NodeType::kUint || t == NodeType::kDouble;
  }
  double AsDouble() const {
    const Node& n = (*tree)[node];
    if (n.type == NodeType::kInt) return static_cast<double>(n.number.i);
    if (n.type == NodeType::kUint) return static_cast<double>(n.number.u);
    return n.number.d;
  }
  uint8_t Types() const {
    switch (type()) {
      case NodeType::kNull:
        return kNullBit;
      case NodeType::kBool:
        return kBooleanBit;
      case NodeType::kInt:
      case NodeType::kUint:
        return kIntegerBit | kNumberBit;
      case NodeType::kDouble:
        return IntegralDouble((*tree)[node].number.d) ? kIntegerBit | kNumberBit : kNumberBit;
      case NodeType::kString:
        return kStringBit;
      case NodeType::kObject:
        return kObjectBit;
      case NodeType::kArray:
        return kArrayBit;
    }
    return 0;
  }
  // valijson's strict equalTo, the schema's literal on the left.
  bool Equals(const Literal& literal) const {
    switch (literal.type) {
      case NodeType::kNull:
        return type() == NodeType::kNull;
      case NodeType::kBool:
        return type() == NodeType::kBool && (*tree)[node].boolean == literal.boolean;
      case NodeType::kDouble:
        return IsNumber() && AsDouble() == literal.number;
      case NodeType::kString:
        return type() == NodeType::kString && String() == literal.text;
      default:
        return false;
    }
  }
};

// Walks the schema document the way valijson's SchemaParser does (draft 7), compiling what it
// implements and refusing the rest.
class FastSchemaCompiler {
 public:
  FastSchemaCompiler(const Json::Value& root, FastSchema& out) : root_(root), out_(out) {}

  Status Run() {
    int top = Compile(root_, 0);
    if (top < 0) return Error{why_};
    for (const Json::Value* owner : inline_property_names_) {
      if (ref_targets_.count(owner)) {
        return Error{
            "an inline \"propertyNames\" in a \"$ref\" target (valijson 1.0 applies the "
            "target itself to the names)"};
      }
    }
    return Status::Ok();
  }

 private:
  int Refuse(std::string why) {
    if (why_.empty()) why_ = std::move(why);
    return -1;
  }

  // "#", "#/a/b" with ~0 and ~1: the node it names, or null.
  const Json::Value* Resolve(const std::string& ref) const {
    if (ref.empty() || ref[0] != '#' || ref.find('%') != std::string::npos) return nullptr;
    const Json::Value* at = &root_;
    size_t i = 1;
    if (i == ref.size()) return at;
    if (ref[i] != '/') return nullptr;
    while (i < ref.size()) {
      size_t next = ref.find('/', i + 1);
      if (next == std::string::npos) next = ref.size();
      std::string token = ref.substr(i + 1, next - i - 1);
      if (token.empty()) return nullptr;
      std::string name;
      for (size_t k = 0; k < token.size(); ++k) {
        if (token[k] == '~' && k + 1 < token.size() &&
            (token[k + 1] == '0' || token[k + 1] == '1')) {
          name += token[k + 1] == '0' ? '~' : '/';
          ++k;
        } else {
          name += token[k];
        }
      }
      if (at->isObject()) {
        at = at->find(name.data(), name.data() + name.size());
      } else {
        return nullptr;  // array indices: not served
      }
      if (!at) return nullptr;
      i = next;
    }
    return at;
  }

  static bool Annotation(std::string_view key) {
    return key == "$schema" || key == "$id" || key == "$comment" || key == "title" ||
           key == "description" || key == "default" || key == "examples" || key == "definitions" ||
           key.substr(0, 2) == "x-";
  }

  static std::optional<Literal> MakeLiteral(const Json::Value& v) {
    Literal out;
    if (v.isNull()) {
      out.type = NodeType::kNull;
    } else if (v.isBool()) {
      out.type = NodeType::kBool;
      out.boolean = v.asBool();
    } else if (v.isNumeric()) {
      out.type = NodeType::kDouble;
      out.number = v.asDouble();
    } else if (v.isString()) {
      out.type = NodeType::kString;
      out.text = v.asString();
    } else {
      return std::nullopt;
    }
    return out;
  }

  static std::optional<uint64_t> Count(const Json::Value& v) {
    if (!v.isInt() || v.asInt() < 0) return std::nullopt;
    return static_cast<uint64_t>(v.asInt());
  }

  int Compile(const Json::Value& node_in, int depth) {
    if (depth > 64) return Refuse("schema nested too deeply");
    const Json::Value* node = &node_in;
    for (int hops = 0; node->isObject() && node->isMember("$ref"); ++hops) {
      const Json::Value& ref = (*node)["$ref"];
      if (!ref.isString() || hops > 16) return Refuse("a \"$ref\" that is not followed");
      const Json::Value* target = Resolve(ref.asString());
      if (!target) return Refuse("\"$ref\": \"" + ref.asString() + "\" is not a local pointer");
      ref_targets_.insert(target);
      node = target;
    }
    if (auto it = memo_.find(node); it != memo_.end()) return it->second;
    int index = static_cast<int>(out_.schemas_.size());
    memo_[node] = index;
    out_.schemas_.emplace_back();
    if (node->isBool()) {
      out_.schemas_[index].always_invalid = !node->asBool();
      return index;
    }
    if (!node->isObject()) return Refuse("a schema that is neither an object nor a boolean");
    FastSchema::Subschema s;
    std::vector<std::string> required;
    for (auto it = node->begin(); it != node->end(); ++it) {
      std::string key = it.name();
      const Json::Value& v = *it;
      if (Annotation(key)) continue;
      if (key == "type") {
        std::vector<Json::Value> names;
        if (v.isString()) {
          names.push_back(v);
        } else if (v.isArray()) {
          for (const auto& n : v) names.push_back(n);
        }
        if (names.empty()) return Refuse("\"type\" must name types");
        for (const auto& n : names) {
          auto bit = n.isString() ? TypeBitOf(n.asString()) : std::nullopt;
          if (!bit) return Refuse("type " + n.toStyledString());
          s.types |= *bit;
        }
      } else if (key == "const") {
        s.constant = MakeLiteral(v);
        if (!s.constant) return Refuse("a \"const\" that is not a scalar");
      } else if (key == "enum") {
        if (!v.isArray()) return Refuse("an \"enum\" that is not a list");
        s.has_enum = true;
        for (const auto& item : v) {
          auto literal = MakeLiteral(item);
          if (!literal) return Refuse("an \"enum\" value that is not a scalar");
          s.enumeration.push_back(std::move(*literal));
        }
      } else if (key == "minimum" || key == "maximum" || key == "exclusiveMinimum" ||
                 key == "exclusiveMaximum") {
        if (!v.isNumeric()) return Refuse("\"" + key + "\" that is not a number");
        double bound = v.asDouble();
        (key == "minimum"            ? s.minimum
         : key == "maximum"          ? s.maximum
         : key == "exclusiveMinimum" ? s.exclusive_minimum
                                     : s.exclusive_maximum) = bound;
      } else if (key == "minLength" || key == "maxLength" || key == "minItems" ||
                 key == "maxItems" || key == "minProperties" || key == "maxProperties") {
        auto count = Count(v);
        if (!count) return Refuse("\"" + key + "\" that is not a count");
        (key == "minLength"       ? s.min_length
         : key == "maxLength"     ? s.max_length
         : key == "minItems"      ? s.min_items
         : key == "maxItems"      ? s.max_items
         : key == "minProperties" ? s.min_properties
                                  : s.max_properties) = count;
      } else if (key == "pattern") {
        if (!v.isString()) return Refuse("a \"pattern\" that is not a string");
        s.pattern = CompilePattern(v.asString());
        if (s.pattern < 0) return -1;
      } else if (key == "properties") {
        if (!v.isObject()) return Refuse("\"properties\" that is not an object");
        s.has_properties = true;
        for (auto p = v.begin(); p != v.end(); ++p) {
          std::string name = p.name();
          if (name.find('\0') != std::string::npos) return Refuse("a property name with NUL");
          int child = Compile(*p, depth + 1);
          if (child < 0) return -1;
          s.properties.emplace_back(std::move(name), child);
        }
      } else if (key == "additionalProperties") {
        s.has_properties = true;
        if (v.isBool()) {
          s.additional = v.asBool() ? FastSchema::Subschema::Additional::kAllow
                                    : FastSchema::Subschema::Additional::kForbid;
        } else if (v.isObject()) {
          s.additional = FastSchema::Subschema::Additional::kSchema;
          s.additional_schema = Compile(v, depth + 1);
          if (s.additional_schema < 0) return -1;
        } else {
          return Refuse("\"additionalProperties\" that is neither a schema nor a boolean");
        }
      } else if (key == "required") {
        if (!v.isArray()) return Refuse("\"required\" that is not a list");
        for (const auto& name : v) {
          if (!name.isString() || name.asString().find('\0') != std::string::npos) {
            return Refuse("a \"required\" name that is not a string");
          }
          required.push_back(name.asString());
        }
      } else if (key == "propertyNames") {
        if (!(v.isObject() && v.isMember("$ref"))) inline_property_names_.push_back(node);
        s.property_names = Compile(v, depth + 1);
        if (s.property_names < 0) return -1;
      } else if (key == "items") {
        if (!v.isObject() && !v.isBool()) return Refuse("\"items\" that is not one schema");
        s.items = Compile(v, depth + 1);
        if (s.items < 0) return -1;
      } else {
        return Refuse("keyword \"" + key + "\"");
      }
    }
    std::sort(s.properties.begin(), s.properties.end());
    for (const std::string& name : required) {
      int at = s.Lookup(name);
      if (at >= 0 && at < 64) {
        s.required_mask |= uint64_t{1} << at;
      } else {
        s.required_elsewhere.push_back(name);
      }
    }
    s.literals = s.constant || s.has_enum;
    s.number_checks = s.minimum || s.maximum || s.exclusive_minimum || s.exclusive_maximum;
    s.string_checks = s.min_length || s.max_length || s.pattern >= 0;
    s.object_checks = s.max_properties || s.min_properties || s.required_mask ||
                      !s.required_elsewhere.empty() || s.has_properties || s.property_names >= 0;
    s.array_checks = s.max_items || s.min_items || s.items >= 0;
    out_.schemas_[index] = std::move(s);
    return index;
  }

  int CompilePattern(const std::string& pattern) {
    if (!PatternSubset(pattern).Check()) return Refuse("pattern " + pattern);
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_DOLLAR_ENDONLY, &error, &offset, nullptr);
    if (!code) return Refuse("pattern " + pattern + " (PCRE2)");
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // without JIT, PCRE2 interprets: still right
    out_.patterns_.push_back(std::make_unique<FastSchema::Pattern>(code));
    return static_cast<int>(out_.patterns_.size()) - 1;
  }

  const Json::Value& root_;
  FastSchema& out_;
  std::map<const Json::Value*, int> memo_;
  std::set<const Json::Value*> ref_targets_;
  std::vector<const Json::Value*> inline_property_names_;
  std::string why_;
};

FastSchema::FastSchema() = default;
FastSchema::~FastSchema() = default;

Result<std::unique_ptr<FastSchema>> FastSchema::Compile(const Json::Value& schema) {
  std::unique_ptr<FastSchema> out(new FastSchema());
  Status status = FastSchemaCompiler(schema, *out).Run();
  if (!status) return Error{"fast path not served: " + status.error().message};
  return out;
}

bool FastSchema::Accepts(const ValueTree& tree, uint32_t node) const {
  return Check(0, Value{&tree, node, {}});
}

bool FastSchema::Check(int schema, const Value& value) const {
  const Subschema& s = schemas_[static_cast<size_t>(schema)];
  if (s.always_invalid) return false;
  if (s.types && !(s.types & value.Types())) return false;
  if (s.literals) {
    if (s.constant && !value.Equals(*s.constant)) return false;
    if (s.has_enum && std::none_of(s.enumeration.begin(), s.enumeration.end(),
                                   [&](const Literal& l) { return value.Equals(l); })) {
      return false;
    }
  }
  switch (value.type()) {
    case NodeType::kInt:
    case NodeType::kUint:
    case NodeType::kDouble: {
      if (!s.number_checks) return true;
      double d = value.AsDouble();
      // valijson's comparisons, so NaN passes them as it does there.
      if (s.minimum && d < *s.minimum) return false;
      if (s.exclusive_minimum && d <= *s.exclusive_minimum) return false;
      if (s.maximum && d > *s.maximum) return false;
      if (s.exclusive_maximum && d >= *s.exclusive_maximum) return false;
      return true;
    }
    case NodeType::kString: {
      if (!s.string_checks) return true;
      std::string_view text = value.String();
      if (s.min_length || s.max_length) {
        std::optional<uint64_t> length = ValijsonLength(text);
        if (!length) return false;
        if (s.min_length && *length < *s.min_length) return false;
        if (s.max_length && *length > *s.max_length) return false;
      }
      if (s.pattern >= 0) {
        std::optional<bool> found = patterns_[static_cast<size_t>(s.pattern)]->Search(text);
        if (!found || !*found) return false;
      }
      return true;
    }
    case NodeType::kObject: {
      if (!s.object_checks) return true;
      const ValueTree& tree = *value.tree;
      const Node& n = tree[value.node];
      if (s.max_properties && n.size > *s.max_properties) return false;
      if (s.min_properties && n.size < *s.min_properties) return false;
      for (const std::string& name : s.required_elsewhere) {
        if (tree.Find(value.node, name) == kNoNode) return false;
      }
      bool lookup = s.has_properties || s.required_mask;
      if (!lookup && s.property_names < 0) return true;
      uint64_t seen = 0;
      for (uint32_t child = n.first; child != kNoNode; child = tree[child].next) {
        std::string_view key = tree.Key(child);
        if (lookup) {
          int at = s.Lookup(key);
          if (at >= 0) {
            if (at < 64) seen |= uint64_t{1} << at;
            if (!Check(s.properties[static_cast<size_t>(at)].second, Value{&tree, child, {}})) {
              return false;
            }
          } else if (s.additional == Subschema::Additional::kForbid) {
            return false;
          } else if (s.additional == Subschema::Additional::kSchema &&
                     !Check(s.additional_schema, Value{&tree, child, {}})) {
            return false;
          }
        }
        if (s.property_names >= 0 && !Check(s.property_names, Value{&tree, kNoNode, key})) {
          return false;
        }
      }
      return (seen & s.required_mask) == s.required_mask;
    }
    case NodeType::kArray: {
      if (!s.array_checks) return true;
      const ValueTree& tree = *value.tree;
      const Node& n = tree[value.node];
      if (s.max_items && n.size > *s.max_items) return false;
      if (s.min_items && n.size < *s.min_items) return false;
      if (s.items >= 0) {
        for (uint32_t child = n.first; child != kNoNode; child = tree[child].next) {
          if (!Check(s.items, Value{&tree, child, {}})) return false;
        }
      }
      return true;
    }
    default:
      return true;
  }
}

}  // namespace mvm::manifests
