#include "manifests/source.h"

#include <utility>

#include "manifests/watcher.h"

namespace mvm::manifests {

ManifestSource::ManifestSource(Options options, Callback callback)
    : options_(std::move(options)),
      callback_(std::move(callback)),
      loader_(Loader::Options{options_.roots, options_.parse}) {}

ManifestSource::~ManifestSource() {
  watcher_.reset();  // joins the watcher thread: no callback after this
}

Result<std::unique_ptr<ManifestSource>> ManifestSource::Start(Options options, Callback callback) {
  std::unique_ptr<ManifestSource> source(
      new ManifestSource(std::move(options), std::move(callback)));
  ManifestSource* self = source.get();
  // Watch first, then load: a change racing with the first load is seen by the watcher.
  Watcher::Options watch{self->options_.roots, self->options_.debounce,
                         std::max(self->options_.debounce * 10,
                                  std::chrono::microseconds(std::chrono::milliseconds(500))),
                         [self](const ChangeSet& changes) { self->Stage(changes); }};
  // Holding the load lock across watcher start and first load guarantees the first callback is
  // the full initial snapshot; a change racing with it is seen by the watcher and applied after.
  std::unique_lock first_load(self->load_mu_);
  auto watcher = Watcher::Start(watch, [self](const ChangeSet& changes) { self->Apply(changes); });
  if (!watcher) return watcher.error();
  self->watcher_ = std::move(*watcher);
  self->Publish(self->loader_.LoadAll());
  first_load.unlock();
  return source;
}

void ManifestSource::Stage(const ChangeSet& changes) {
  std::shared_ptr<const DesiredState> state;
  {
    std::lock_guard lock(load_mu_);
    if (!loader_.Load(changes).changed) return;
    staged_ = true;
    state = loader_.Current();
    stagedDiff_ = ComputeDiff(*Current(), *state);
    stagedState_ = state;
  }
  if (options_.staged) options_.staged(std::move(state));
}

void ManifestSource::Apply(const ChangeSet& changes) {
  std::lock_guard lock(load_mu_);
  Loader::Outcome outcome = loader_.Load(changes);  // parsed ahead: only stats, most often
  if (staged_) {
    staged_ = false;
    std::shared_ptr<const DesiredState> delivered = Current();
    outcome.state = loader_.Current();
    outcome.diff = outcome.state == stagedState_ ? std::move(stagedDiff_)
                                                 : ComputeDiff(*delivered, *outcome.state);
    outcome.changed = outcome.state != delivered;
    stagedState_.reset();
    stagedDiff_ = Diff{};
  }
  Publish(outcome);
}

void ManifestSource::Publish(const Loader::Outcome& outcome) {
  if (!outcome.changed) return;
  {
    std::lock_guard lock(mu_);
    current_ = outcome.state;
  }
  if (callback_) callback_(outcome.state, outcome.diff);
}

std::shared_ptr<const DesiredState> ManifestSource::Current() const {
  std::lock_guard lock(mu_);
  return current_;
}

}  // namespace mvm::manifests
