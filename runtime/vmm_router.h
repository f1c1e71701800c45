#pragma once
// VmmRouter: one Vmm made of several drivers, so that one mvmd serves pools of every runtime.
// Each call goes to the driver named by the target pool's spec.runtime (firecracker | qemu);
// a target without a spec goes to the default runtime (mvmd's --runtime).
//
// Promises:
//  - A call for a runtime this mvmd has no driver for fails (Probe: reports not alive) with the
//    reason that driver could not be built, e.g. "pool acme/web asks for runtime firecracker,
//    which this mvmd cannot run: firecracker runtime: no executable firecracker in PATH".
//  - Exception: Stop and Destroy of an instance that no driver ever ran (no handle, no driver
//    record under <dir>/runtime/) succeed without a driver, so such a pool can be deleted.
//  - The router adds no state and no locking: the Vmm contract (one call per instance at a
//    time, any instances concurrently) passes through to each driver unchanged.

#include <map>
#include <memory>
#include <string>

#include "controller/vmm.h"
#include "manifests/object.h"

namespace mvm::runtime {

class VmmRouter final : public controller::Vmm {
 public:
  // `drivers`: the runtimes this mvmd can run; `unavailable`: why each other one cannot.
  VmmRouter(std::map<manifests::Runtime, std::unique_ptr<controller::Vmm>> drivers,
            std::map<manifests::Runtime, std::string> unavailable,
            manifests::Runtime defaultRuntime);

  // "firecracker+qemu": the runtimes served, the default first.
  std::string_view Name() const override { return name_; }
  Status Prepare(const controller::VmmTarget& target) override;
  Result<controller::VmmHandle> Start(const controller::VmmTarget& target) override;
  Status Pause(const controller::VmmTarget& target) override;
  Status Resume(const controller::VmmTarget& target) override;
  Status Sleep(const controller::VmmTarget& target) override;
  Result<controller::VmmHandle> Wake(const controller::VmmTarget& target) override;
  Status Stop(const controller::VmmTarget& target) override;
  Status Destroy(const controller::VmmTarget& target) override;
  controller::ProbeResult Probe(const controller::VmmTarget& target) override;

  // The driver for a target, or why there is none.
  Result<controller::Vmm*> For(const controller::VmmTarget& target) const;

 private:
  std::map<manifests::Runtime, std::unique_ptr<controller::Vmm>> drivers_;
  std::map<manifests::Runtime, std::string> unavailable_;
  manifests::Runtime default_;
  std::string name_;
};

}  // namespace mvm::runtime
