#include "manifests/yaml_reader.h"

#include <json/reader.h>
#include <yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace mvm::manifests {
namespace {

Position FromMark(const yaml_mark_t& mark) {
  return {static_cast<int>(mark.line) + 1, static_cast<int>(mark.column) + 1};
}

bool AllOf(std::string_view s, size_t from, bool (*pred)(char)) {
  if (from >= s.size()) return false;
  return std::all_of(s.begin() + static_cast<ptrdiff_t>(from), s.end(), pred);
}
bool IsDigit(char c) {
  return c >= '0' && c <= '9';
}
bool IsOctal(char c) {
  return c >= '0' && c <= '7';
}
bool IsHex(char c) {
  return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// A resolved plain scalar; kString means "the text itself".
struct Scalar {
  NodeType type = NodeType::kString;
  bool boolean = false;
  int64_t i = 0;
  double d = 0;
};

Scalar Null() {
  return {NodeType::kNull, false, 0, 0};
}
Scalar Bool(bool b) {
  return {NodeType::kBool, b, 0, 0};
}
Scalar Int(int64_t i) {
  return {NodeType::kInt, false, i, 0};
}
Scalar Double(double d) {
  return {NodeType::kDouble, false, 0, d};
}
Scalar Text() {
  return {};
}

// YAML 1.2 core schema resolution of a plain scalar. Integers that do not fit int64 stay
// strings, so the schema reports them as the wrong type rather than silently wrapping.
Scalar ResolvePlain(std::string_view s) {
  if (s.empty()) return Null();
  // Most scalars are words: nothing below can match unless the first byte allows it.
  char c0 = s[0];
  if (!(IsDigit(c0) || c0 == '-' || c0 == '+' || c0 == '.' || c0 == '~' || c0 == 'n' || c0 == 'N' ||
        c0 == 't' || c0 == 'T' || c0 == 'f' || c0 == 'F')) {
    return Text();
  }
  if (s == "~" || s == "null" || s == "Null" || s == "NULL") return Null();
  if (s == "true" || s == "True" || s == "TRUE") return Bool(true);
  if (s == "false" || s == "False" || s == "FALSE") return Bool(false);
  auto to_int = [&](std::string_view digits, int base, bool negative) -> std::optional<Scalar> {
    uint64_t magnitude = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), magnitude, base);
    if (ec != std::errc() || ptr != digits.data() + digits.size()) return std::nullopt;
    constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (!negative && magnitude <= kMax) return Int(static_cast<int64_t>(magnitude));
    if (negative && magnitude <= kMax + 1) return Int(static_cast<int64_t>(0 - magnitude));
    return std::nullopt;
  };
  size_t sign = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  bool negative = s[0] == '-';
  if (AllOf(s, sign, IsDigit)) {
    if (auto v = to_int(s.substr(sign), 10, negative)) return *v;
    return Text();
  }
  if (s.size() > 2 && s[0] == '0' && s[1] == 'o' && AllOf(s, 2, IsOctal)) {
    if (auto v = to_int(s.substr(2), 8, false)) return *v;
  }
  if (s.size() > 2 && s[0] == '0' && s[1] == 'x' && AllOf(s, 2, IsHex)) {
    if (auto v = to_int(s.substr(2), 16, false)) return *v;
  }
  std::string_view body = s.substr(sign);
  if (body == ".inf" || body == ".Inf" || body == ".INF") {
    return Double(negative ? -std::numeric_limits<double>::infinity()
                           : std::numeric_limits<double>::infinity());
  }
  if (s == ".nan" || s == ".NaN" || s == ".NAN") {
    return Double(std::numeric_limits<double>::quiet_NaN());
  }
  // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
  size_t i = 0;
  size_t int_digits = 0, frac_digits = 0;
  while (i < body.size() && IsDigit(body[i])) ++i, ++int_digits;
  if (i < body.size() && body[i] == '.') {
    ++i;
    while (i < body.size() && IsDigit(body[i])) ++i, ++frac_digits;
  }
  bool mantissa_ok = int_digits > 0 || frac_digits > 0;
  if (mantissa_ok && i < body.size() && (body[i] == 'e' || body[i] == 'E')) {
    ++i;
    if (i < body.size() && (body[i] == '-' || body[i] == '+')) ++i;
    size_t exp_digits = 0;
    while (i < body.size() && IsDigit(body[i])) ++i, ++exp_digits;
    mantissa_ok = exp_digits > 0;
  }
  if (mantissa_ok && i == body.size()) {  // 1.5, and 1e3: a float in YAML 1.2
    double d = 0;
    auto [ptr, ec] = std::from_chars(s.data() + (s[0] == '+' ? 1 : 0), s.data() + s.size(), d);
    if (ec == std::errc() && ptr == s.data() + s.size()) return Double(d);
  }
  return Text();
}

std::string_view ScalarText(const yaml_event_t& event) {
  return {reinterpret_cast<const char*>(event.data.scalar.value), event.data.scalar.length};
}

// Quoted, explicitly tagged !!str, or plain text that is not a null, bool or number.
Scalar ResolveScalar(const yaml_event_t& event) {
  if (event.data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return Text();
  if (event.data.scalar.tag && std::string_view(reinterpret_cast<const char*>(
                                   event.data.scalar.tag)) == "tag:yaml.org,2002:str") {
    return Text();
  }
  return ResolvePlain(ScalarText(event));
}

uint32_t AddScalar(ValueTree& tree, const yaml_event_t& event, Position pos) {
  Scalar v = ResolveScalar(event);
  switch (v.type) {
    case NodeType::kNull:
      return tree.Add(NodeType::kNull, pos);
    case NodeType::kBool:
      return tree.AddBool(v.boolean, pos);
    case NodeType::kInt:
      return tree.AddInt(v.i, pos);
    case NodeType::kDouble:
      return tree.AddDouble(v.d, pos);
    default:
      return tree.AddString(ScalarText(event), pos);
  }
}

// A mapping or sequence being read.
struct Frame {
  uint32_t node = kNoNode;
  bool is_map = false;
  bool have_key = false;
  uint32_t key = 0;  // the pending key's bytes in the tree's text
  uint32_t key_size = 0;
  Position key_pos;
  std::string anchor;
  // Keys seen so far, once a mapping is too large for a linear duplicate search.
  std::unique_ptr<std::unordered_set<std::string>> keys;
};

constexpr uint32_t kLinearKeySearch = 32;

// Builds each document's tree from libyaml's events. Mirrors the Json::Value reading it
// replaced value for value: same node counting, same errors at the same positions.
class YamlBuilder {
 public:
  YamlBuilder(std::string_view file, std::string_view text, Diagnostics& diagnostics,
              const DocumentVisitor& visit)
      : file_(file), text_(text), diagnostics_(diagnostics), visit_(visit) {
    yaml_parser_initialize(&parser_);
    yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(text_.data()),
                                 text_.size());
  }
  ~YamlBuilder() { yaml_parser_delete(&parser_); }
  YamlBuilder(const YamlBuilder&) = delete;
  YamlBuilder& operator=(const YamlBuilder&) = delete;

  void Run() {
    bool in_document = false;
    Position doc_start;
    bool doc_failed = false;
    for (;;) {
      yaml_event_t event;
      if (!yaml_parser_parse(&parser_, &event)) {
        SyntaxError();
        return;
      }
      std::unique_ptr<yaml_event_t, void (*)(yaml_event_t*)> guard(&event, yaml_event_delete);
      switch (event.type) {
        case YAML_STREAM_END_EVENT:
          return;
        case YAML_DOCUMENT_START_EVENT:
          in_document = true;
          doc_failed = false;
          doc_start = FromMark(event.start_mark);
          stack_.clear();
          anchors_.clear();
          tree_.Clear();
          root_ = kNoNode;
          nodes_ = 0;
          doc_clean_ = true;
          break;
        case YAML_DOCUMENT_END_EVENT:
          if (in_document && !doc_failed && root_ != kNoNode &&
              tree_[root_].type != NodeType::kNull) {
            // An object is located at its first line of content, not at its `---`.
            Position start = tree_[root_].pos.line > 0 ? tree_[root_].pos : doc_start;
            visit_(tree_, root_, start, doc_clean_);
          }
          root_ = kNoNode;
          in_document = false;
          break;
        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT: {
          if (doc_failed) break;
          if (static_cast<int>(stack_.size()) >= kMaxDepth) {
            Fail(FromMark(event.start_mark),
                 "nesting deeper than " + std::to_string(kMaxDepth) + " levels");
            doc_failed = true;
            break;
          }
          Frame& frame = stack_.emplace_back();
          frame.is_map = event.type == YAML_MAPPING_START_EVENT;
          frame.node = tree_.Add(frame.is_map ? NodeType::kObject : NodeType::kArray,
                                 FromMark(event.start_mark));
          const yaml_char_t* anchor =
              frame.is_map ? event.data.mapping_start.anchor : event.data.sequence_start.anchor;
          if (anchor) frame.anchor = reinterpret_cast<const char*>(anchor);
          break;
        }
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT: {
          if (doc_failed) break;
          uint32_t node = stack_.back().node;
          if (!stack_.back().anchor.empty()) anchors_[std::move(stack_.back().anchor)] = node;
          stack_.pop_back();
          if (!Attach(node, tree_[node].pos, event)) doc_failed = true;
          break;
        }
        case YAML_SCALAR_EVENT: {
          if (doc_failed) break;
          Position pos = FromMark(event.start_mark);
          if (!event.data.scalar.anchor && InKeyPosition()) {
            // A key needs no node of its own: only its text is kept.
            if (!CountValue(pos)) {
              doc_failed = true;
              break;
            }
            std::string_view key = ScalarText(event);
            SetKey(tree_.AddText(key), static_cast<uint32_t>(key.size()), pos);
            break;
          }
          uint32_t v = AddScalar(tree_, event, pos);
          if (event.data.scalar.anchor) {
            anchors_[reinterpret_cast<const char*>(event.data.scalar.anchor)] = v;
          }
          if (!Attach(v, pos, event)) doc_failed = true;
          break;
        }
        case YAML_ALIAS_EVENT: {
          if (doc_failed) break;
          Position pos = FromMark(event.start_mark);
          auto it = anchors_.find(reinterpret_cast<const char*>(event.data.alias.anchor));
          if (it == anchors_.end()) {
            Fail(pos, "unknown alias");
            doc_failed = true;
            break;
          }
          // Aliases can multiply a document (the "billion laughs"): count what they expand to.
          nodes_ += tree_.CountValues(it->second);
          if (nodes_ > kMaxNodes) {
            Fail(pos, "aliases expand to more than " + std::to_string(kMaxNodes) + " values");
            doc_failed = true;
            break;
          }
          uint32_t anchored = it->second;
          uint32_t v = InKeyPosition() ? anchored : tree_.Copy(anchored);
          if (!Attach(v, pos, event)) doc_failed = true;
          break;
        }
        default:
          break;
      }
    }
  }

 private:
  bool InKeyPosition() const {
    return !stack_.empty() && stack_.back().is_map && !stack_.back().have_key;
  }

  bool CountValue(Position pos) {
    if (++nodes_ > kMaxNodes) {
      Fail(pos, "document has more than " + std::to_string(kMaxNodes) + " values");
      return false;
    }
    return true;
  }

  void SetKey(uint32_t key, uint32_t key_size, Position pos) {
    Frame& parent = stack_.back();
    parent.key = key;
    parent.key_size = key_size;
    parent.key_pos = pos;
    parent.have_key = true;
  }

  bool Attach(uint32_t v, Position pos, const yaml_event_t& event) {
    if (!CountValue(pos)) return false;
    if (stack_.empty()) {
      root_ = v;
      return true;
    }
    Frame& parent = stack_.back();
    if (!parent.is_map) {
      tree_.Append(parent.node, v);
      return true;
    }
    if (!parent.have_key) {
      NodeType type = tree_[v].type;
      if ((event.type != YAML_SCALAR_EVENT && event.type != YAML_ALIAS_EVENT) ||
          type == NodeType::kObject || type == NodeType::kArray) {
        Fail(pos, "mapping keys must be scalars");
        return false;
      }
      if (type == NodeType::kString || event.type == YAML_SCALAR_EVENT) {
        std::string_view key =
            event.type == YAML_SCALAR_EVENT ? ScalarText(event) : tree_.String(v);
        if (event.type == YAML_SCALAR_EVENT) {
          SetKey(tree_.AddText(key), static_cast<uint32_t>(key.size()), pos);
        } else {
          SetKey(tree_[v].text, tree_[v].size, pos);
        }
      } else {
        std::string key = tree_.AsString(v);  // an alias to a null, bool or number
        SetKey(tree_.AddText(key), static_cast<uint32_t>(key.size()), pos);
      }
      return true;
    }
    parent.have_key = false;
    std::string_view key = tree_.Text(parent.key, parent.key_size);
    if (IsDuplicate(parent, key)) {
      // Reported, and the first value kept, so the rest of the document is still checked.
      Fail(parent.key_pos, "duplicate key \"" + std::string(key) + "\"");
      return true;
    }
    tree_.AppendMember(parent.node, parent.key, parent.key_size, parent.key_pos, v);
    return true;
  }

  // Whether `key` is already a member of the mapping; remembers it otherwise.
  bool IsDuplicate(Frame& frame, std::string_view key) {
    const Node& map = tree_[frame.node];
    if (frame.keys) return !frame.keys->emplace(key).second;
    if (map.size < kLinearKeySearch) return tree_.Find(frame.node, key) != kNoNode;
    frame.keys = std::make_unique<std::unordered_set<std::string>>();
    for (uint32_t c = map.first; c != kNoNode; c = tree_[c].next) {
      frame.keys->emplace(tree_.Key(c));
    }
    return !frame.keys->emplace(key).second;
  }

  void Fail(Position pos, std::string message) {
    doc_clean_ = false;
    diagnostics_.push_back({std::string(file_), pos.line, pos.column, "", "", std::move(message)});
  }

  void SyntaxError() {
    std::string message = "YAML syntax error: ";
    message += parser_.problem ? parser_.problem : "unknown problem";
    if (parser_.context) {
      message += std::string(" ") + parser_.context;
    }
    Fail(FromMark(parser_.problem_mark), std::move(message));
  }

  std::string_view file_;
  std::string_view text_;
  Diagnostics& diagnostics_;
  const DocumentVisitor& visit_;
  yaml_parser_t parser_{};
  ValueTree tree_;
  std::vector<Frame> stack_;
  std::unordered_map<std::string, uint32_t> anchors_;
  uint32_t root_ = kNoNode;
  int nodes_ = 0;
  bool doc_clean_ = true;
};

// Byte offset → 1-based line and column.
class LineIndex {
 public:
  explicit LineIndex(std::string_view text) {
    starts_.push_back(0);
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\n') starts_.push_back(i + 1);
    }
  }
  Position At(ptrdiff_t offset) const {
    auto it = std::upper_bound(starts_.begin(), starts_.end(), static_cast<size_t>(offset));
    size_t line = static_cast<size_t>(it - starts_.begin());
    return {static_cast<int>(line),
            static_cast<int>(static_cast<size_t>(offset) - starts_[line - 1]) + 1};
  }

 private:
  std::vector<size_t> starts_;
};

void ConvertOffsets(Json::Value& v, const LineIndex& index) {
  ptrdiff_t pos = PackPosition(index.At(v.getOffsetStart()));
  v.setOffsetStart(pos);
  v.setOffsetLimit(pos);
  if (v.isObject() || v.isArray()) {
    for (auto& child : v) ConvertOffsets(child, index);
  }
}

// Offset of the first byte that is not well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or npos. JSON text must be UTF-8, and valijson's length
// checks read out of bounds on malformed sequences (found by the parser fuzzer).
size_t FirstInvalidUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size();
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

void ReadJson(std::string_view file, std::string_view text, ReadResult& out) {
  if (size_t bad = FirstInvalidUtf8(text); bad != std::string_view::npos) {
    Position pos = LineIndex(text).At(static_cast<ptrdiff_t>(bad));
    out.diagnostics.push_back({std::string(file), pos.line, pos.column, "", "",
                               "JSON syntax error: invalid UTF-8 (JSON text must be UTF-8)"});
    return;
  }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  // Json::Reader is the jsoncpp API that reports structured errors with byte offsets.
  Json::Reader reader(Json::Features::strictMode());
  Json::Value root;
  LineIndex index(text);
  if (!reader.parse(text.data(), text.data() + text.size(), root, false)) {
    for (const auto& e : reader.getStructuredErrors()) {
      Position pos = index.At(e.offset_start);
      out.diagnostics.push_back(
          {std::string(file), pos.line, pos.column, "", "", "JSON syntax error: " + e.message});
    }
    return;
  }
#pragma GCC diagnostic pop
  ConvertOffsets(root, index);
  if (root.isArray()) {
    for (auto& item : root) out.documents.push_back({item, PositionOf(item), true});
  } else {
    out.documents.push_back({root, PositionOf(root), true});
  }
}

// ValueTree offsets are 32-bit: far larger text than any manifest is refused up front.
bool TooLarge(std::string_view file, std::string_view text, Diagnostics& diagnostics) {
  if (text.size() < kMaxTextBytes) return false;
  diagnostics.push_back({std::string(file), 0, 0, "", "",
                         "file is larger than " + std::to_string(kMaxTextBytes >> 20) + " MiB"});
  return true;
}

}  // namespace

Position PositionOf(const Json::Value& value) {
  return UnpackPosition(value.getOffsetStart());
}

Position KeyPositionOf(const Json::Value& value) {
  Position p = UnpackPosition(value.getOffsetLimit());
  return p.line > 0 ? p : PositionOf(value);
}

Format FormatForPath(std::string_view path) {
  return path.size() >= 5 && path.substr(path.size() - 5) == ".json" ? Format::kJson
                                                                     : Format::kYaml;
}

ReadResult ReadDocuments(std::string_view file, std::string_view text, Format format) {
  ReadResult out;
  if (TooLarge(file, text, out.diagnostics)) return out;
  if (format == Format::kJson) {
    ReadJson(file, text, out);
  } else {
    DocumentVisitor keep = [&](ValueTree& tree, uint32_t root, Position start, bool clean) {
      out.documents.push_back({tree.ToJson(root), start, clean});
    };
    YamlBuilder(file, text, out.diagnostics, keep).Run();
  }
  return out;
}

void ReadDocumentTrees(std::string_view file, std::string_view text, Format format,
                       Diagnostics& diagnostics, const DocumentVisitor& visit) {
  if (TooLarge(file, text, diagnostics)) return;
  if (format == Format::kYaml) {
    YamlBuilder(file, text, diagnostics, visit).Run();
    return;
  }
  ReadResult json;
  ReadJson(file, text, json);
  diagnostics.insert(diagnostics.end(), std::make_move_iterator(json.diagnostics.begin()),
                     std::make_move_iterator(json.diagnostics.end()));
  ValueTree tree;
  for (const Document& document : json.documents) {
    tree.Clear();
    uint32_t root = tree.FromJson(document.root);
    visit(tree, root, document.start, document.clean);
  }
}

int64_t CountYamlEvents(std::string_view text) {
  yaml_parser_t parser;
  yaml_parser_initialize(&parser);
  yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()),
                               text.size());
  int64_t events = 0;
  for (;;) {
    yaml_event_t event;
    if (!yaml_parser_parse(&parser, &event)) {
      events = -1;
      break;
    }
    ++events;
    bool end = event.type == YAML_STREAM_END_EVENT;
    yaml_event_delete(&event);
    if (end) break;
  }
  yaml_parser_delete(&parser);
  return events;
}

}  // namespace mvm::manifests
