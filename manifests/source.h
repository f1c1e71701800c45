#pragma once
// ManifestSource: manifests directories kept loaded, hot-reloaded by a Watcher.
//
// Promises:
//  - Start() loads every root synchronously and delivers that first snapshot to the callback
//    before it returns (diff: everything added).
//  - After that, each debounced batch of file-system changes produces at most one callback,
//    and only when the snapshot changed (objects or diagnostics) since the last one; its diff is
//    against the last delivered snapshot. Revisions grow (a delivery may skip the revisions of
//    loads made ahead during the quiet time).
//  - Parses ahead: files that are complete are loaded while the batch's quiet time runs (the
//    watcher's preview), so when it ends the snapshot is ready and only re-checked (a stat per
//    path), not parsed and assembled then. The diff against the last delivered snapshot is
//    computed ahead too, and `staged` (if set) is shown the snapshot that is expected to be
//    delivered, so its consumer can prepare for it (Controller::Stage).
//  - Callbacks run on the watcher's thread, one at a time, never after the source is destroyed.
//  - Current() is safe from any thread.

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/result.h"
#include "manifests/change_set.h"
#include "manifests/desired_state.h"
#include "manifests/loader.h"

namespace mvm::manifests {

class Watcher;

class ManifestSource {
 public:
  struct Options {
    std::vector<std::filesystem::path> roots;
    ParseOptions parse;
    std::chrono::microseconds debounce = std::chrono::milliseconds(50);
    // A snapshot loaded ahead, during a batch's quiet time: what the callback will receive when
    // the quiet time ends, unless the files change again meanwhile. On the watcher's thread,
    // before that callback. Advisory: it may be followed by a different snapshot, or by none.
    std::function<void(std::shared_ptr<const DesiredState>)> staged = nullptr;
  };
  using Callback = std::function<void(std::shared_ptr<const DesiredState>, const Diff&)>;

  static Result<std::unique_ptr<ManifestSource>> Start(Options options, Callback callback);
  ~ManifestSource();
  ManifestSource(const ManifestSource&) = delete;
  ManifestSource& operator=(const ManifestSource&) = delete;

  std::shared_ptr<const DesiredState> Current() const;

 private:
  ManifestSource(Options options, Callback callback);
  void Apply(const ChangeSet& changes);
  void Stage(const ChangeSet& changes);
  void Publish(const Loader::Outcome& outcome);

  Options options_;
  Callback callback_;
  std::mutex load_mu_;  // serialises the loader: the first load, then watcher batches
  Loader loader_;
  // Loaded ahead and not delivered yet (under load_mu_): the loader's state moved on from
  // current_ without a callback. stagedState_ and stagedDiff_ (against current_) are that load's.
  bool staged_ = false;
  std::shared_ptr<const DesiredState> stagedState_;
  Diff stagedDiff_;
  mutable std::mutex mu_;  // guards current_
  std::shared_ptr<const DesiredState> current_;
  std::unique_ptr<Watcher> watcher_;
};

}  // namespace mvm::manifests
