#pragma once
// ParseManifest: one manifest file's text → validated, defaulted objects, or every error in it.
//
// Promises:
//  - A document becomes an Object only when it has no error; `diagnostics` lists every error of
//    every document in the file (syntax, schema, image paths, subnets), each with file, line,
//    column, object and field path.
//  - Image paths (kernel, rootfs, initrd) resolve inside one of `imageRoots`: relative paths are
//    taken against the roots, absolute ones must lie within one, `..` may not climb out, and a
//    path that exists may not leave its root through a symlink. The object stores the resolved
//    absolute path. Files need not exist yet (images may be built after the manifest lands).
//    The file system is asked once per distinct written path per call: the documents of one
//    file are judged against one view of the image roots.
//  - `spec.runtime` absent → `defaultRuntime`, written into the manifest so the spec hash shows it.
//  - Schema validity is valijson's verdict; a generic fast path (schema_fastpath.h) accepts the
//    common valid document without it, and everything else, with every error, comes from it.
//  - Pure: no state, safe from any thread.

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "manifests/diagnostic.h"
#include "manifests/object.h"
#include "manifests/yaml_reader.h"

namespace mvm::manifests {

struct ParseOptions {
  std::vector<std::filesystem::path> imageRoots = {"/var/lib/mvm/images"};
  Runtime defaultRuntime = Runtime::kFirecracker;
};

struct ParseResult {
  std::vector<ObjectPtr> objects;
  Diagnostics diagnostics;
  bool ok() const { return diagnostics.empty(); }
};

ParseResult ParseManifest(const std::string& file, std::string_view text, Format format,
                          const ParseOptions& options);

// As above, the format taken from the file name (*.json → JSON, else YAML).
ParseResult ParseManifest(const std::string& file, std::string_view text,
                          const ParseOptions& options);

// Resolves an image path written in a manifest against the roots (see above), or says why not.
Result<std::string> ResolveImagePath(const std::string& written,
                                     const std::vector<std::filesystem::path>& roots);

}  // namespace mvm::manifests
