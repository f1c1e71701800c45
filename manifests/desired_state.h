#pragma once
// DesiredState: one consistent snapshot of everything the manifests declare, and the Diff
// between two snapshots.
//
// Promises:
//  - Consistent: every Pool's tenant is in the snapshot; each key appears once.
//  - `revision` grows by one with every snapshot a loader publishes.
//  - `diagnostics` lists every current problem of every file (invalid files keep their
//    last-known-good objects in `objects`; see loader.h).

#include <cstdint>
#include <map>
#include <vector>

#include "manifests/diagnostic.h"
#include "manifests/object.h"

namespace mvm::manifests {

struct DesiredState {
  uint64_t revision = 0;
  std::map<ObjectKey, ObjectPtr> objects;
  Diagnostics diagnostics;

  const Object* Find(const ObjectKey& key) const;
  std::vector<ObjectPtr> Tenants() const;
  std::vector<ObjectPtr> Pools() const;
  size_t PoolCount() const;
  std::vector<ObjectPtr> PoolsOf(const std::string& tenant) const;
};

struct Diff {
  std::vector<ObjectKey> added;
  std::vector<ObjectKey> changed;  // spec hash differs
  std::vector<ObjectKey> removed;
  bool empty() const { return added.empty() && changed.empty() && removed.empty(); }
};

// Keys added, changed (different specHash) and removed going from `before` to `after`.
Diff ComputeDiff(const DesiredState& before, const DesiredState& after);

}  // namespace mvm::manifests
