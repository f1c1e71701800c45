#pragma once
// Reads manifest text (multi-document YAML, or JSON) into JSON values that remember where each
// value was written, so every later error can name line and column.
//
// Promises:
//  - YAML follows the 1.2 core schema for plain scalars: null/~/empty → null, true/false → bool,
//    decimal/0x/0o integers → int64, decimal floats and .inf/.nan → double, anything else and
//    every quoted scalar → string. Keys are strings. Anchors and aliases are expanded (bounded:
//    a document may not expand beyond kMaxNodes values) and nesting is bounded by kMaxDepth.
//  - A duplicate key in one mapping is an error (YAML forbids it; silently taking one would hide
//    a typo).
//  - JSON: one object, or an array of objects (one document each); strict JSON.
//  - Empty documents (a stray `---`) are skipped.
//  - Syntax errors become diagnostics; the documents before the error are still returned.
//  - Text of kMaxTextBytes or more is refused whole, with one diagnostic (the loader's own limit
//    is far below).

#include <json/value.h>

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "manifests/diagnostic.h"
#include "manifests/value_tree.h"

namespace mvm::manifests {

inline constexpr int kMaxDepth = 64;
inline constexpr int kMaxNodes = 100000;
inline constexpr size_t kMaxTextBytes = 0xffffffffu;  // ValueTree offsets are 32-bit

// Position (line, column) is defined in value_tree.h.

// Where `value` was written (its first character).
Position PositionOf(const Json::Value& value);
// Where the key naming `value` was written; PositionOf(value) when unknown (JSON, roots).
Position KeyPositionOf(const Json::Value& value);

enum class Format { kYaml, kJson };
// kJson for *.json, kYaml otherwise.
Format FormatForPath(std::string_view path);

struct Document {
  Json::Value root;
  Position start;     // the first line of the document's content
  bool clean = true;  // false: the reader reported an error inside it (e.g. a duplicate key)
};

struct ReadResult {
  std::vector<Document> documents;
  Diagnostics diagnostics;
};

ReadResult ReadDocuments(std::string_view file, std::string_view text, Format format);

// The same reading, one document at a time and without Json::Value: `visit` receives each
// document ReadDocuments would return, in order, as a tree it may modify (cleared after the call);
// the reader's diagnostics are appended to `diagnostics`.
using DocumentVisitor =
    std::function<void(ValueTree& tree, uint32_t root, Position start, bool clean)>;
void ReadDocumentTrees(std::string_view file, std::string_view text, Format format,
                       Diagnostics& diagnostics, const DocumentVisitor& visit);

// libyaml's own cost: parses `text` into events and drops them. The number of events, or -1 on
// a syntax error. For benchmarks (the floor under ReadDocuments).
int64_t CountYamlEvents(std::string_view text);

}  // namespace mvm::manifests
