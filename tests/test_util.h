#pragma once
// Helpers shared by tests: a temporary directory that removes itself, and file writers.

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace mvm::testing {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "mvm-test") {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Writes `text` to `path` (creating parent directories) in place.
inline void WriteFile(const std::filesystem::path& path, std::string_view text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

// Writes `text` next to `path` and renames it over `path`: the atomic way tools replace files.
inline void ReplaceFile(const std::filesystem::path& path, std::string_view text) {
  std::filesystem::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  WriteFile(tmp, text);
  std::filesystem::rename(tmp, path);
}

}  // namespace mvm::testing
