#include "manifests/diagnostic.h"

#include <algorithm>
#include <tuple>

namespace mvm::manifests {

std::string Diagnostic::ToString() const {
  std::string out = file;
  if (line > 0) {
    out += ':' + std::to_string(line) + ':' + std::to_string(column);
  }
  out += ": ";
  if (!object.empty()) out += object + ": ";
  if (!path.empty()) out += path + ": ";
  out += message;
  return out;
}

void SortDiagnostics(Diagnostics& diagnostics) {
  std::stable_sort(diagnostics.begin(), diagnostics.end(), [](const auto& a, const auto& b) {
    return std::tie(a.file, a.line, a.column, a.path, a.message) <
           std::tie(b.file, b.line, b.column, b.path, b.message);
  });
}

}  // namespace mvm::manifests
