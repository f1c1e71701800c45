#pragma once
// Diagnostic: one problem found in a manifest, located precisely enough for a person to fix it.
//
// Promises:
//  - Every diagnostic names the file; line and column are 1-based and point at the offending
//    value (0 when the problem concerns the whole file, such as "cannot read").
//  - `object` is "Kind tenant/name" (or "Kind name" for tenants) once the document's identity is
//    known, empty before; `path` is the dotted field path inside the object ("spec.replicas.warm",
//    "spec.cmd[2]"), empty for document-level problems.
//  - ToString() renders the one-line form used everywhere (CLI, logs, status):
//      manifests.d/acme.yaml:14:5: Pool acme/workers: spec.replicas.warm: must be >= 0 (got -1)

#include <string>
#include <vector>

namespace mvm::manifests {

struct Diagnostic {
  std::string file;
  int line = 0;
  int column = 0;
  std::string object;
  std::string path;
  std::string message;

  std::string ToString() const;
  friend bool operator==(const Diagnostic&, const Diagnostic&) = default;
};

using Diagnostics = std::vector<Diagnostic>;

// Orders diagnostics by file, line, column, then message, so output is stable.
void SortDiagnostics(Diagnostics& diagnostics);

}  // namespace mvm::manifests
