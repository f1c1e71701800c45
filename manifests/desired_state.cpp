#include "manifests/desired_state.h"

#include <algorithm>

namespace mvm::manifests {

const Object* DesiredState::Find(const ObjectKey& key) const {
  auto it = objects.find(key);
  return it == objects.end() ? nullptr : it->second.get();
}

std::vector<ObjectPtr> DesiredState::Tenants() const {
  std::vector<ObjectPtr> out;
  for (const auto& [key, object] : objects) {
    if (key.kind == Kind::kTenant) out.push_back(object);
  }
  return out;
}

std::vector<ObjectPtr> DesiredState::Pools() const {
  std::vector<ObjectPtr> out;
  for (const auto& [key, object] : objects) {
    if (key.kind == Kind::kPool) out.push_back(object);
  }
  return out;
}

size_t DesiredState::PoolCount() const {
  return static_cast<size_t>(std::count_if(objects.begin(), objects.end(), [](const auto& entry) {
    return entry.first.kind == Kind::kPool;
  }));
}

std::vector<ObjectPtr> DesiredState::PoolsOf(const std::string& tenant) const {
  std::vector<ObjectPtr> out;
  auto it = objects.lower_bound(ObjectKey::PoolKey(tenant, ""));
  for (; it != objects.end() && it->first.kind == Kind::kPool && it->first.tenant == tenant; ++it) {
    out.push_back(it->second);
  }
  return out;
}

Diff ComputeDiff(const DesiredState& before, const DesiredState& after) {
  Diff diff;
  auto b = before.objects.begin();
  auto a = after.objects.begin();
  while (b != before.objects.end() || a != after.objects.end()) {
    if (a == after.objects.end() || (b != before.objects.end() && b->first < a->first)) {
      diff.removed.push_back(b->first);
      ++b;
    } else if (b == before.objects.end() || a->first < b->first) {
      diff.added.push_back(a->first);
      ++a;
    } else {
      // The loader keeps unchanged objects the same instance: most compare by pointer.
      if (a->second != b->second && a->second->specHash != b->second->specHash) {
        diff.changed.push_back(a->first);
      }
      ++a;
      ++b;
    }
  }
  return diff;
}

}  // namespace mvm::manifests
