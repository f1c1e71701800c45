#include "runtime/vmm_router.h"

#include <filesystem>
#include <utility>

namespace mvm::runtime {

using controller::ProbeResult;
using controller::VmmHandle;
using controller::VmmTarget;

VmmRouter::VmmRouter(std::map<manifests::Runtime, std::unique_ptr<controller::Vmm>> drivers,
                     std::map<manifests::Runtime, std::string> unavailable,
                     manifests::Runtime defaultRuntime)
    : drivers_(std::move(drivers)), unavailable_(std::move(unavailable)), default_(defaultRuntime) {
  if (drivers_.count(default_)) name_ = std::string(manifests::RuntimeName(default_));
  for (const auto& [runtime, driver] : drivers_) {
    if (runtime == default_) continue;
    name_ += (name_.empty() ? "" : "+") + std::string(manifests::RuntimeName(runtime));
  }
  if (name_.empty()) name_ = "none";
}

Result<controller::Vmm*> VmmRouter::For(const VmmTarget& target) const {
  const manifests::Runtime runtime = target.spec ? target.spec->runtime : default_;
  auto it = drivers_.find(runtime);
  if (it != drivers_.end()) return it->second.get();
  std::string why = "pool " + target.key.tenant + "/" + target.pool + " asks for runtime " +
                    std::string(manifests::RuntimeName(runtime)) + ", which this mvmd cannot run";
  auto reason = unavailable_.find(runtime);
  if (reason != unavailable_.end()) why += ": " + reason->second;
  return Error{why};
}

namespace {

// Runs `call` on the target's driver; its result type (Status or Result<VmmHandle>) carries the
// router's error when there is no driver.
template <typename Call>
auto Dispatch(const VmmRouter& router, const VmmTarget& target, Call&& call)
    -> decltype(call(std::declval<controller::Vmm&>())) {
  Result<controller::Vmm*> vmm = router.For(target);
  if (!vmm.ok()) return vmm.error();
  return call(**vmm);
}

}  // namespace

Status VmmRouter::Prepare(const VmmTarget& target) {
  return Dispatch(*this, target, [&](controller::Vmm& vmm) { return vmm.Prepare(target); });
}

Result<VmmHandle> VmmRouter::Start(const VmmTarget& target) {
  return Dispatch(*this, target, [&](controller::Vmm& vmm) { return vmm.Start(target); });
}

Status VmmRouter::Pause(const VmmTarget& target) {
  return Dispatch(*this, target, [&](controller::Vmm& vmm) { return vmm.Pause(target); });
}

Status VmmRouter::Resume(const VmmTarget& target) {
  return Dispatch(*this, target, [&](controller::Vmm& vmm) { return vmm.Resume(target); });
}

Status VmmRouter::Sleep(const VmmTarget& target) {
  return Dispatch(*this, target, [&](controller::Vmm& vmm) { return vmm.Sleep(target); });
}

Result<VmmHandle> VmmRouter::Wake(const VmmTarget& target) {
  return Dispatch(*this, target, [&](controller::Vmm& vmm) { return vmm.Wake(target); });
}

namespace {

// An instance that no driver of this mvmd ever ran: no handle, no driver record (runtime/*.json)
// in its directory. Stopping it is a no-op and destroying it removes the directory, so that a
// pool of a runtime this mvmd lacks can still be deleted.
bool NeverRan(const VmmTarget& target) {
  if (!target.handle.empty()) return false;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(target.dir / "runtime", ec)) {
    if (e.path().extension() == ".json") return false;
  }
  return true;
}

}  // namespace

Status VmmRouter::Stop(const VmmTarget& target) {
  if (!For(target).ok() && NeverRan(target)) return {};
  return Dispatch(*this, target, [&](controller::Vmm& vmm) { return vmm.Stop(target); });
}

Status VmmRouter::Destroy(const VmmTarget& target) {
  if (!For(target).ok() && NeverRan(target)) {
    std::error_code ec;
    std::filesystem::remove_all(target.dir, ec);
    if (ec) return Error{"destroy: remove " + target.dir.string() + ": " + ec.message()};
    return {};
  }
  return Dispatch(*this, target, [&](controller::Vmm& vmm) { return vmm.Destroy(target); });
}

ProbeResult VmmRouter::Probe(const VmmTarget& target) {
  Result<controller::Vmm*> vmm = For(target);
  if (!vmm.ok()) {
    ProbeResult result;
    result.detail = vmm.error().message;
    return result;
  }
  return (*vmm)->Probe(target);
}

}  // namespace mvm::runtime
