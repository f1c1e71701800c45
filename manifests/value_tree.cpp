#include "manifests/value_tree.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>

#include "manifests/canonical_writer.h"

namespace mvm::manifests {

ptrdiff_t PackPosition(Position p) {
  return (static_cast<ptrdiff_t>(p.line) << 32) | static_cast<ptrdiff_t>(p.column);
}

Position UnpackPosition(ptrdiff_t packed) {
  return {static_cast<int>(packed >> 32), static_cast<int>(packed & 0xffffffff)};
}

void ValueTree::Clear() {
  nodes_.clear();
  text_.clear();
}

uint32_t ValueTree::Add(NodeType type, Position pos) {
  auto index = static_cast<uint32_t>(nodes_.size());
  Node& n = nodes_.emplace_back();
  n.type = type;
  n.pos = pos;
  n.key_pos = pos;
  return index;
}

uint32_t ValueTree::AddBool(bool value, Position pos) {
  uint32_t index = Add(NodeType::kBool, pos);
  nodes_[index].boolean = value;
  return index;
}

uint32_t ValueTree::AddInt(int64_t value, Position pos) {
  uint32_t index = Add(NodeType::kInt, pos);
  nodes_[index].number.i = value;
  return index;
}

uint32_t ValueTree::AddDouble(double value, Position pos) {
  uint32_t index = Add(NodeType::kDouble, pos);
  nodes_[index].number.d = value;
  return index;
}

uint32_t ValueTree::AddText(std::string_view bytes) {
  auto at = static_cast<uint32_t>(text_.size());
  text_.append(bytes);
  return at;
}

uint32_t ValueTree::AddString(std::string_view value, Position pos) {
  uint32_t at = AddText(value);
  uint32_t index = Add(NodeType::kString, pos);
  nodes_[index].text = at;
  nodes_[index].size = static_cast<uint32_t>(value.size());
  return index;
}

void ValueTree::Append(uint32_t parent, uint32_t child) {
  Node& p = nodes_[parent];
  if (p.last == kNoNode) {
    p.first = child;
  } else {
    nodes_[p.last].next = child;
  }
  p.last = child;
  ++p.size;
}

void ValueTree::AppendMember(uint32_t parent, uint32_t key, uint32_t key_size, Position key_pos,
                             uint32_t child) {
  Node& c = nodes_[child];
  c.key = key;
  c.key_size = key_size;
  c.key_pos = key_pos;
  Append(parent, child);
}

uint32_t ValueTree::Copy(uint32_t node) {
  uint32_t copy = static_cast<uint32_t>(nodes_.size());
  Node n = nodes_[node];
  n.first = n.last = n.next = kNoNode;
  n.key_pos = n.pos;
  bool container = n.type == NodeType::kObject || n.type == NodeType::kArray;
  if (container) n.size = 0;
  nodes_.push_back(n);
  if (!container) return copy;
  for (uint32_t child = nodes_[node].first; child != kNoNode; child = nodes_[child].next) {
    uint32_t c = Copy(child);
    nodes_[c].key = nodes_[child].key;
    nodes_[c].key_size = nodes_[child].key_size;
    nodes_[c].key_pos = nodes_[child].key_pos;
    Append(copy, c);
  }
  return copy;
}

int ValueTree::CountValues(uint32_t node) const {
  int n = 1;
  for (uint32_t child = nodes_[node].first; child != kNoNode; child = nodes_[child].next) {
    n += CountValues(child);
  }
  return n;
}

uint32_t ValueTree::Find(uint32_t node, std::string_view key) const {
  if (node == kNoNode || nodes_[node].type != NodeType::kObject) return kNoNode;
  const char* text = text_.data();
  for (uint32_t child = nodes_[node].first; child != kNoNode; child = nodes_[child].next) {
    const Node& c = nodes_[child];
    // Length, then first byte, settle almost every mismatch without a memcmp call.
    if (c.key_size == key.size() &&
        (key.empty() || (text[c.key] == key[0] &&
                         std::memcmp(text + c.key + 1, key.data() + 1, key.size() - 1) == 0))) {
      return child;
    }
  }
  return kNoNode;
}

uint32_t ValueTree::Demand(uint32_t node, std::string_view key) {
  if (nodes_[node].type == NodeType::kNull) {
    // jsoncpp assigns a fresh object, offsets included.
    nodes_[node].type = NodeType::kObject;
    nodes_[node].pos = nodes_[node].key_pos = Position{};
  }
  if (nodes_[node].type != NodeType::kObject) {
    throw Json::LogicError("in Json::Value::resolveReference(key, end): requires objectValue");
  }
  uint32_t found = Find(node, key);
  if (found != kNoNode) return found;
  uint32_t at = AddText(key);
  uint32_t child = Add(NodeType::kNull, Position{});
  AppendMember(node, at, static_cast<uint32_t>(key.size()), Position{}, child);
  return child;
}

std::string ValueTree::AsString(uint32_t node) const {
  if (nodes_[node].type == NodeType::kString) return std::string(String(node));
  return ToJson(node).asString();
}

int ValueTree::AsInt(uint32_t node) const {
  const Node& n = nodes_[node];
  if (n.type == NodeType::kInt && n.number.i >= std::numeric_limits<int>::min() &&
      n.number.i <= std::numeric_limits<int>::max()) {
    return static_cast<int>(n.number.i);
  }
  return ToJson(node).asInt();
}

int64_t ValueTree::AsInt64(uint32_t node) const {
  if (nodes_[node].type == NodeType::kInt) return nodes_[node].number.i;
  return ToJson(node).asInt64();
}

void ValueTree::BuildJson(uint32_t node, Json::Value& into) const {
  const Node& n = nodes_[node];
  switch (n.type) {
    case NodeType::kNull:
      break;
    case NodeType::kBool:
      into = n.boolean;
      break;
    case NodeType::kInt:
      into = static_cast<Json::Int64>(n.number.i);
      break;
    case NodeType::kUint:
      into = static_cast<Json::UInt64>(n.number.u);
      break;
    case NodeType::kDouble:
      into = n.number.d;
      break;
    case NodeType::kString:
      into = Json::Value(text_.data() + n.text, text_.data() + n.text + n.size);
      break;
    case NodeType::kObject:
      into = Json::Value(Json::objectValue);
      for (uint32_t child = n.first; child != kNoNode; child = nodes_[child].next) {
        const Node& c = nodes_[child];
        Json::Value* slot = into.demand(text_.data() + c.key, text_.data() + c.key + c.key_size);
        BuildJson(child, *slot);
      }
      break;
    case NodeType::kArray:
      into = Json::Value(Json::arrayValue);
      for (uint32_t child = n.first; child != kNoNode; child = nodes_[child].next) {
        BuildJson(child, into.append(Json::Value()));
      }
      break;
  }
  into.setOffsetStart(PackPosition(n.pos));
  into.setOffsetLimit(PackPosition(n.key_pos));
}

Json::Value ValueTree::ToJson(uint32_t node) const {
  Json::Value out;
  BuildJson(node, out);
  return out;
}

uint32_t ValueTree::FromJson(const Json::Value& value) {
  Position pos = UnpackPosition(value.getOffsetStart());
  Position key_pos = UnpackPosition(value.getOffsetLimit());
  uint32_t node = kNoNode;
  switch (value.type()) {
    case Json::nullValue:
      node = Add(NodeType::kNull, pos);
      break;
    case Json::booleanValue:
      node = AddBool(value.asBool(), pos);
      break;
    case Json::intValue:
      node = AddInt(value.asInt64(), pos);
      break;
    case Json::uintValue:
      node = Add(NodeType::kUint, pos);
      nodes_[node].number.u = value.asUInt64();
      break;
    case Json::realValue:
      node = AddDouble(value.asDouble(), pos);
      break;
    case Json::stringValue: {
      const char* begin = nullptr;
      const char* end = nullptr;
      value.getString(&begin, &end);
      node = AddString(std::string_view(begin, static_cast<size_t>(end - begin)), pos);
      break;
    }
    case Json::arrayValue:
      node = Add(NodeType::kArray, pos);
      for (const auto& item : value) Append(node, FromJson(item));
      break;
    case Json::objectValue:
      node = Add(NodeType::kObject, pos);
      for (auto it = value.begin(); it != value.end(); ++it) {
        uint32_t child = FromJson(*it);
        const char* end = nullptr;
        const char* begin = it.memberName(&end);
        std::string_view key(begin, static_cast<size_t>(end - begin));
        AppendMember(node, AddText(key), static_cast<uint32_t>(key.size()), nodes_[child].key_pos,
                     child);
      }
      break;
  }
  nodes_[node].key_pos = key_pos;
  return node;
}

namespace {

// The first 8 bytes of `key` as a big-endian integer (zero-padded): comparing two of these
// orders keys as a bytewise compare of those bytes does.
uint64_t SortPrefix(std::string_view key) {
  uint64_t prefix = 0;
  if (key.size() >= 8) {
    std::memcpy(&prefix, key.data(), 8);
    if constexpr (std::endian::native == std::endian::little) prefix = __builtin_bswap64(prefix);
    return prefix;
  }
  for (size_t i = 0; i < key.size(); ++i) {
    prefix |= uint64_t{static_cast<unsigned char>(key[i])} << (56 - 8 * i);
  }
  return prefix;
}

void Write(const ValueTree& tree, uint32_t node, CanonicalWriter& out) {
  const Node& n = tree[node];
  switch (n.type) {
    case NodeType::kNull:
      out.Raw("null");
      return;
    case NodeType::kBool:
      out.Raw(n.boolean ? "true" : "false");
      return;
    case NodeType::kInt:
      out.Int(n.number.i);
      return;
    case NodeType::kUint:
      out.Uint(n.number.u);
      return;
    case NodeType::kDouble:
      out.Double(n.number.d);
      return;
    case NodeType::kString:
      out.String(tree.String(node));
      return;
    case NodeType::kArray: {
      out.Byte('[');
      bool first = true;
      for (uint32_t child = n.first; child != kNoNode; child = tree[child].next) {
        if (!first) out.Byte(',');
        first = false;
        Write(tree, child, out);
      }
      out.Byte(']');
      return;
    }
    case NodeType::kObject: {
      // Members in jsoncpp's order: bytewise, a prefix first. The first 8 bytes, big-endian,
      // decide most comparisons as one integer compare.
      struct Member {
        uint64_t prefix;
        uint32_t node;
      };
      std::array<Member, 32> small;
      std::vector<Member> large;
      Member* members = small.data();
      if (n.size > small.size()) {
        large.resize(n.size);
        members = large.data();
      }
      uint32_t count = 0;
      for (uint32_t child = n.first; child != kNoNode; child = tree[child].next) {
        members[count++] = {SortPrefix(tree.Key(child)), child};
      }
      auto less = [&](const Member& a, const Member& b) {
        if (a.prefix != b.prefix) return a.prefix < b.prefix;
        return tree.Key(a.node) < tree.Key(b.node);
      };
      for (uint32_t i = 1; i < count; ++i) {  // insertion sort: objects are small
        Member m = members[i];
        uint32_t j = i;
        for (; j > 0 && less(m, members[j - 1]); --j) members[j] = members[j - 1];
        members[j] = m;
      }
      out.Byte('{');
      for (uint32_t i = 0; i < count; ++i) {
        if (i > 0) out.Byte(',');
        out.String(tree.Key(members[i].node));
        out.Byte(':');
        Write(tree, members[i].node, out);
      }
      out.Byte('}');
      return;
    }
  }
}

}  // namespace

std::string CanonicalHash(const ValueTree& tree, uint32_t node) {
  CanonicalWriter out;
  Write(tree, node, out);
  return out.Hex();
}

}  // namespace mvm::manifests
