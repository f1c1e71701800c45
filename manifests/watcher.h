#pragma once
// Watcher: tells the loader which manifest paths to look at again, in debounced batches.
//
// Promises:
//  - Complete files only: a path is in ChangeSet::paths only after it was closed after writing,
//    renamed into place, linked into place (link(2), linkat() of an O_TMPFILE), deleted or
//    renamed away. A file opened for writing and not yet closed is in `writing` of every batch
//    until it is closed, and never in `paths` of the same batch. Batches with neither `paths`
//    nor `rescan` are not delivered.
//  - Nothing missed silently: whenever events may have been lost or the tree changed shape (a
//    directory or symlink created, moved or deleted, a root replaced, the kernel queue
//    overflowed), the batch carries `rescan`, delivered after the watches were brought up to date.
//  - Roots are followed: a root removed and recreated, renamed over, or a symlink to it swapped
//    atomically (`ln -s new tmp && mv -T tmp root`) is watched again, followed by a rescan.
//    Symlinks are followed for the root itself (not for its parent).
//  - Recursive: every non-hidden subdirectory is watched, new ones as they appear. Hidden
//    directories (`.git`, Kubernetes `..2026_01_01...`) and hidden regular files are not
//    watched; a hidden directory or symlink created, moved or deleted in a watched directory
//    (the ConfigMap `..data` swap) still causes a rescan.
//  - Debounced, trailing edge: a batch is delivered `debounce` after the last relevant event, or
//    `maxDelay` after the first one if the events never pause that long. Timing is in
//    microseconds on the monotonic clock; the last `spin` of it is waited awake, not asleep.
//    Writes alone (IN_MODIFY) do not start a batch.
//  - Paths are absolute and spelled under the root as given (made absolute and lexically
//    normalised, never symlink-resolved): root `/etc/mvm/m.d` (-> /srv/v2) reports
//    `/etc/mvm/m.d/a.yaml`.
//  - One thread per Watcher; callbacks run on it one at a time and never after the destructor
//    returns. Changes still waiting for their debounce at destruction are dropped. Watchers
//    share no state and may coexist freely.
//
// Not covered: symlinked subdirectories are not descended into (their swap is a rescan); only
// the root's own name is followed, not its parent being replaced; writes through mmap make no
// events; a file linked into place and opened by someone else before the watcher read the link
// event looks like one being written until its next change. Start() fails if a root or its parent
// cannot be watched; a root that disappears later is watched again when it comes back.

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include "common/result.h"
#include "manifests/change_set.h"

namespace mvm::manifests {

class Watcher {
 public:
  struct Options {
    std::vector<std::filesystem::path> roots;  // several directories may be watched at once
    std::chrono::microseconds debounce =
        std::chrono::milliseconds(50);  // quiet time ending a batch
    std::chrono::microseconds maxDelay = std::chrono::milliseconds(500);  // a burst flushes by then
    // Optional: called (on the watcher's thread) each time the batch being debounced gains
    // complete paths or a rescan, with the batch as the debounced callback would get it if the
    // quiet time ended now; its paths are final only once that callback comes. Lets a consumer
    // do its work during the quiet time (ManifestSource parses ahead). Its own run time does not
    // move the batch's deadline. Not called while a linked file's completeness is undecided.
    std::function<void(const ChangeSet&)> preview = nullptr;
    // The last stretch of the quiet time is waited out awake (polling the inotify fd without
    // sleeping), so the batch is delivered when it is due rather than when a sleeping thread is
    // scheduled again: on a busy or virtualised host that can be milliseconds late. It costs up
    // to this much CPU per batch. Zero: sleep until the deadline.
    std::chrono::microseconds spin = std::chrono::milliseconds(1);
  };
  // Runs on the watcher's thread. Must not throw and must not destroy the Watcher.
  using Callback = std::function<void(const ChangeSet&)>;

  // Watches every root (recursively) before returning; events from then on are reported.
  // Error: no roots, or a root (or its parent directory) that cannot be watched: missing, not a
  // directory, no permission, or the inotify limits reached.
  static Result<std::unique_ptr<Watcher>> Start(Options options, Callback callback);

  // Wakes the thread, joins it; a callback in progress finishes first, none starts afterwards.
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

 private:
  class Impl;
  struct Token {
    explicit Token() = default;
  };

 public:
  Watcher(Token, std::unique_ptr<Impl> impl);  // use Start()

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mvm::manifests
