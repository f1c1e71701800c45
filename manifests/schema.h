#pragma once
// SchemaSet: the JSON Schemas of schemas/ (embedded at build time), applied to documents.
//
// Promises:
//  - Validity is decided by the schema files alone, with valijson as the authority: Fast() may
//    accept a document first (schema_fastpath.h: generic, refuses schemas it cannot prove it
//    reads as valijson does), and everything it does not accept goes to Validate().
//  - Validate() only turns valijson's findings into diagnostics a person can act on: every
//    violation of a document is reported (not just the first), each at the line and column of
//    the offending value (of the key, for unknown fields; of the enclosing object, for missing
//    ones) with its field path and a message such as "must be >= 0 (got -1)".
//  - ApplyDefaults fills every absent field for which the schema gives a "default", recursively
//    (a defaulted object receives its own defaults too). Call it on valid documents only. The
//    ValueTree form gives the same result as the Json::Value form (defaults compiled once).
//  - Thread-safe: validation keeps its regex cache per thread.

#include <json/value.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "manifests/diagnostic.h"
#include "manifests/object.h"
#include "manifests/value_tree.h"

namespace valijson {
class Schema;
}

namespace mvm::manifests {

class FastSchema;

class SchemaSet {
 public:
  // The schemas compiled into this binary; parsed once.
  static const SchemaSet& Builtin();

  // Appends one diagnostic per violation of `doc` against `kind`'s schema.
  void Validate(Kind kind, const Json::Value& doc, const std::string& file,
                const std::string& object, Diagnostics& out) const;
  // valijson's verdict alone, as Validate reaches it (what the fast path must agree with).
  bool ValijsonAccepts(Kind kind, const Json::Value& doc) const;
  void ApplyDefaults(Kind kind, Json::Value& doc) const;
  void ApplyDefaults(Kind kind, ValueTree& tree, uint32_t root) const;
  // The schema document for `kind`, as written in schemas/.
  const Json::Value& Raw(Kind kind) const;
  // The fast path for `kind`'s schema, or null where it refuses to serve (FastRefusal says why).
  const FastSchema* Fast(Kind kind) const;
  const std::string& FastRefusal(Kind kind) const;

  ~SchemaSet();
  SchemaSet(const SchemaSet&) = delete;
  SchemaSet& operator=(const SchemaSet&) = delete;

 private:
  SchemaSet();
  // What ApplyDefaults does for one (resolved) schema, compiled from it once.
  struct Defaults {
    struct Member {
      std::string name;
      const Json::Value* value = nullptr;  // the "default"; null: none
      bool throws = false;  // jsoncpp would throw looking for the default (a non-object schema)
      int plan = -1;        // Defaults of the member's schema
    };
    bool properties = false;  // the schema is an object with "properties"
    std::vector<Member> members;
    int items = -1;  // Defaults of "items", when that is an object
    bool Empty() const { return !properties && items < 0; }
  };
  struct Entry {
    Json::Value raw;
    std::unique_ptr<valijson::Schema> compiled;
    std::unique_ptr<FastSchema> fast;
    std::string fast_refusal;
    std::vector<Defaults> defaults;  // [0]: the root's
  };
  static int CompileDefaults(const Json::Value& root, const Json::Value& schema, Entry& entry,
                             std::map<const Json::Value*, int>& memo);
  void Fill(const Entry& entry, int plan, ValueTree& tree, uint32_t node) const;
  std::map<Kind, Entry> schemas_;
};

}  // namespace mvm::manifests
