#pragma once
// ValueTree: one manifest document as a compact tree of positioned JSON values: the form the
// parser validates, defaults and hashes before anything becomes a Json::Value. Internal to
// manifests/.
//
// Promises:
//  - Same data as the Json::Value documents of yaml_reader.h: ToJson() returns exactly what
//    ReadDocuments() reports for the document (types, string bytes including NULs, and the value
//    and key positions PositionOf/KeyPositionOf read back), and FromJson() is its inverse.
//  - An object holds each key once (the reader keeps the first of duplicates) in the order
//    written; Find() looks a member up by its exact bytes.
//  - Nodes are indices, valid until Clear(), however the tree grows. Built and read by one
//    thread at a time.
//  - Accessors (AsString, AsInt64, ...) convert as jsoncpp's would, exceptions included.

#include <json/value.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mvm::manifests {

struct Position {
  int line = 0;    // 1-based; 0 = unknown
  int column = 0;  // 1-based
};

// How a Position rides in a Json::Value's offset fields (see yaml_reader.h).
ptrdiff_t PackPosition(Position p);
Position UnpackPosition(ptrdiff_t packed);

enum class NodeType : uint8_t { kNull, kBool, kInt, kUint, kDouble, kString, kObject, kArray };

inline constexpr uint32_t kNoNode = 0xffffffffu;

struct Node {
  NodeType type = NodeType::kNull;
  bool boolean = false;
  uint32_t size = 0;         // kString: bytes; kObject, kArray: members
  uint32_t text = 0;         // kString: where the bytes start in the tree's text
  uint32_t first = kNoNode;  // kObject, kArray: first member
  uint32_t last = kNoNode;   // kObject, kArray: last member
  uint32_t next = kNoNode;   // the next member of the same parent
  uint32_t key = 0;          // a member of an object: its key's bytes in the tree's text
  uint32_t key_size = 0;
  union {
    int64_t i;
    uint64_t u;
    double d;
  } number{};
  Position pos;      // where the value was written
  Position key_pos;  // where its key was written (== pos when it has none)
};

class ValueTree {
 public:
  // Forgets every node and string, keeping the memory for the next document.
  void Clear();

  uint32_t Add(NodeType type, Position pos);
  uint32_t AddBool(bool value, Position pos);
  uint32_t AddInt(int64_t value, Position pos);
  uint32_t AddDouble(double value, Position pos);
  uint32_t AddString(std::string_view value, Position pos);
  // Stores bytes (a key) in the tree's text; returns where they start.
  uint32_t AddText(std::string_view bytes);

  // Links `child` as the last member of `parent` (an array, or an object once the key is set).
  void Append(uint32_t parent, uint32_t child);
  // Sets `child`'s key, at `key_pos`, and links it as the last member of object `parent`.
  void AppendMember(uint32_t parent, uint32_t key, uint32_t key_size, Position key_pos,
                    uint32_t child);
  // A deep copy of `node` with its own position as its key position, not linked anywhere.
  uint32_t Copy(uint32_t node);
  // Number of values in the subtree of `node`, itself included.
  int CountValues(uint32_t node) const;

  Node& operator[](uint32_t node) { return nodes_[node]; }
  const Node& operator[](uint32_t node) const { return nodes_[node]; }
  std::string_view String(uint32_t node) const {
    const Node& n = nodes_[node];
    return {text_.data() + n.text, n.size};
  }
  std::string_view Key(uint32_t node) const {
    const Node& n = nodes_[node];
    return {text_.data() + n.key, n.key_size};
  }
  std::string_view Text(uint32_t at, uint32_t size) const { return {text_.data() + at, size}; }

  // The member of object `node` named `key`; kNoNode when absent or `node` is not an object.
  uint32_t Find(uint32_t node, std::string_view key) const;
  // jsoncpp's non-const operator[]: a null `node` becomes an empty object, a missing member is
  // added as null at position 0:0, anything but an object or null throws Json::LogicError.
  uint32_t Demand(uint32_t node, std::string_view key);

  // jsoncpp's asString(), asInt(), asInt64() of the node's value.
  std::string AsString(uint32_t node) const;
  int AsInt(uint32_t node) const;
  int64_t AsInt64(uint32_t node) const;

  Json::Value ToJson(uint32_t node) const;
  // Adds `value` (positions taken from its offsets) and returns the new root.
  uint32_t FromJson(const Json::Value& value);

 private:
  void BuildJson(uint32_t node, Json::Value& into) const;

  std::vector<Node> nodes_;
  std::string text_;
};

// jsoncpp's compact text of a value (keys sorted bytewise, no whitespace, UTF-8 kept), hashed
// with 64-bit FNV-1a and written as 16 lowercase hex digits; the text itself is never built.
std::string CanonicalHash(const ValueTree& tree, uint32_t node);

}  // namespace mvm::manifests
