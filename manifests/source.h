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
//    path), not parsed and assembled then.
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
  // current_ without a callback.
  bool staged_ = false;
  mutable std::mutex mu_;  // guards current_
  std::shared_ptr<const DesiredState> current_;
  std::unique_ptr<Watcher> watcher_;
};

}  // namespace mvm::manifests
