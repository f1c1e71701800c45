#pragma once
// The JSON Schemas of schemas/*.schema.json, compiled into the binary at build time.

#include <string_view>
#include <vector>

namespace mvm::schemas {

struct EmbeddedSchema {
  std::string_view file;  // e.g. "pool.schema.json"
  std::string_view text;  // the schema document, verbatim
};

// Every schema in schemas/, in a fixed order.
const std::vector<EmbeddedSchema>& Embedded();

}  // namespace mvm::schemas
