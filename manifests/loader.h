#pragma once
// Loader: manifest directories → one consistent DesiredState, re-read incrementally.
//
// Promises:
//  - Reads *.yaml, *.yml and *.json files under each root, recursively, following symlinks
//    (the ConfigMap `..data` layout) but skipping every hidden file or directory (`.git`,
//    `..2026_11_22…`) by its own name; directory cycles are not followed twice.
//  - Last-known-good per file: a file that fails to read, parse or validate keeps contributing
//    the objects of its last good version, and its errors are in the snapshot's diagnostics
//    until it is fixed. A file never seen valid contributes nothing.
//  - Files named in ChangeSet::writing are not read; they keep their previous state.
//  - The same object (kind + tenant + name) defined in two files, or twice in one, is a conflict
//    reported on each definition; the snapshot keeps the previous snapshot's version of that
//    object if there was one, else leaves it out until the conflict is resolved.
//  - A Pool whose Tenant is missing is an error on the pool. If the tenant existed in the
//    previous snapshot it is kept (the removal is held back, so no pool is orphaned); otherwise
//    the pool is left out.
//  - generation: kept while the spec hash is unchanged, +1 when it changes, 1 for new objects.
//  - A Load in which no file was read, added or dropped (every path's identity unchanged since
//    it was last read) returns the current snapshot unchanged without assembling it again.
//  - Not thread-safe: one thread calls Load (the watcher's).

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#include "manifests/change_set.h"
#include "manifests/desired_state.h"
#include "manifests/parser.h"

namespace mvm::manifests {

inline constexpr size_t kMaxManifestBytes = 4 << 20;

// True for the files a loader reads: *.yaml, *.yml, *.json whose name is not hidden.
bool IsManifestName(const std::filesystem::path& name);

// One file's contribution to a snapshot.
struct FileObjects {
  std::string file;
  std::vector<ObjectPtr> objects;
};

// Builds a consistent snapshot from per-file objects (conflicts, pool → tenant, generations),
// appending the problems it finds to `diagnostics`. `previous` may be null.
DesiredState Assemble(const std::vector<FileObjects>& files, const DesiredState* previous,
                      Diagnostics& diagnostics);

class Loader {
 public:
  struct Options {
    std::vector<std::filesystem::path> roots;
    ParseOptions parse;
  };
  struct Outcome {
    std::shared_ptr<const DesiredState> state;
    Diff diff;
    bool changed = false;  // objects or diagnostics differ from the previous snapshot
  };

  explicit Loader(Options options);

  // Applies one batch of changes; ChangeSet{.rescan = true} re-reads every root.
  Outcome Load(const ChangeSet& changes);
  Outcome LoadAll() { return Load(ChangeSet{.rescan = true, .paths = {}, .writing = {}}); }
  std::shared_ptr<const DesiredState> Current() const { return current_; }
  const Options& options() const { return options_; }

 private:
  struct Identity {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;
    bool operator==(const Identity&) const = default;
  };
  struct FileState {
    Identity identity;
    std::vector<ObjectPtr> good;  // last-known-good objects
    Diagnostics errors;           // current errors of the file
  };

  void Refresh(const std::filesystem::path& path, const ChangeSet& changes);
  void Rescan(const ChangeSet& changes);
  bool Eligible(const std::filesystem::path& path) const;

  Options options_;
  std::map<std::filesystem::path, FileState> files_;
  std::shared_ptr<const DesiredState> current_;
  bool touched_ = false;  // this Load read, added or dropped a file (else nothing can differ)
};

}  // namespace mvm::manifests
