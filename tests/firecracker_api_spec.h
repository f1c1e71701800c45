#pragma once
// FirecrackerApiSpec (tests only): Firecracker's own API description (swagger 2.0, YAML) turned
// into a request checker. A request passes when its path matches a described path template,
// the method is described for it, and its body is valid against the body parameter's schema
// (#/definitions/ references resolved, validated by valijson). Firecracker rejects unknown
// fields (serde deny_unknown_fields), so an object schema without `additionalProperties`
// is closed here. A request without a described body parameter must have no body; a required
// body must be present.

#include <json/value.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace mvm::testing {

class FirecrackerApiSpec {
 public:
  static Result<FirecrackerApiSpec> Load(const std::filesystem::path& yaml);
  Status Check(const std::string& method, const std::string& path, const std::string& body) const;
  // "v1.17.0-dev"-like info.version of the file.
  const std::string& version() const { return version_; }

 private:
  struct Operation {
    bool hasBody = false, bodyRequired = false;
    Json::Value schema;  // JSON Schema with "definitions"
  };
  struct PathEntry {
    std::vector<std::string> segments;         // "{x}" matches any one non-empty segment
    std::map<std::string, Operation> methods;  // "PUT", "GET", ...
  };
  std::vector<PathEntry> paths_;
  std::string version_;
};

}  // namespace mvm::testing
