#pragma once
// FastSchema: a JSON Schema compiled to accept the common, valid document without valijson.
// valijson stays the authority: a document FastSchema does not accept goes to valijson, which
// decides and explains.
//
// Promises:
//  - Generic: compiled from the schema document's keywords alone, never from knowledge of Pool
//    or Tenant. Implemented: type, const and enum (scalar values), minimum, maximum,
//    exclusiveMinimum, exclusiveMaximum, minLength, maxLength, pattern, properties,
//    additionalProperties, required, propertyNames, items (one schema), minItems, maxItems,
//    minProperties, maxProperties, boolean schemas, and "$ref" to a "#/..." pointer of the same
//    document. Ignored as annotations: $schema, $id, $comment, title, description, default,
//    examples, definitions and "x-" extensions.
//  - Refuses to serve rather than guess: Compile() fails, saying why, when a reachable schema
//    uses any other keyword, a pattern outside the regular subset it can prove equivalent
//    (literals, escaped punctuation, classes of ASCII ranges, groups, alternation, greedy
//    quantifiers, ^ and $), or a construct valijson 1.0 reads differently from the standard (an
//    inline "propertyNames" in a "$ref" target); the caller then sends every document to
//    valijson.
//  - Accepts(doc) is valijson's verdict (draft 7, strict types, jsoncpp adapter) on the same
//    document, quirks included: numbers compare as doubles, 2.0 is an integer, string lengths are
//    valijson's UTF-8 count up to the first NUL, patterns search (not match) the whole string.
//    tests/schema_fastpath_test.cpp holds it to that on generated valid and invalid documents.
//  - Thread-safe once compiled; pattern matching keeps its scratch space per thread.

#include <json/value.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "manifests/value_tree.h"

namespace mvm::manifests {

class FastSchema {
 public:
  static Result<std::unique_ptr<FastSchema>> Compile(const Json::Value& schema);

  // Whether valijson accepts the value at `node` against the whole schema.
  bool Accepts(const ValueTree& tree, uint32_t node) const;

  ~FastSchema();
  FastSchema(const FastSchema&) = delete;
  FastSchema& operator=(const FastSchema&) = delete;

 private:
  struct Subschema;
  struct Pattern;
  struct Value;
  friend class FastSchemaCompiler;

  FastSchema();
  bool Check(int schema, const Value& value) const;

  std::vector<Subschema> schemas_;
  std::vector<std::unique_ptr<Pattern>> patterns_;
};

}  // namespace mvm::manifests
