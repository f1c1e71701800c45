#pragma once
// ChangeSet: what a watcher saw in one debounced batch, handed to the loader.
//
// The watcher never interprets manifests; it only says which paths to look at again.
//  - `paths`: files whose content or existence may have changed since the last batch
//    (absolute, as seen under a watched root).
//  - `rescan`: something structural happened (a directory was created, moved or replaced, a
//    symlink swapped, the kernel queue overflowed): the loader must re-read every root.
//  - `writing`: files opened for writing and not yet closed. The loader must not read them:
//    they keep their previous content until a close-after-write arrives.

#include <filesystem>
#include <set>

namespace mvm::manifests {

struct ChangeSet {
  bool rescan = false;
  std::set<std::filesystem::path> paths;
  std::set<std::filesystem::path> writing;
};

}  // namespace mvm::manifests
