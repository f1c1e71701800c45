// mvmd: the mvm controller daemon. See controller/mvmd_main.h and docs/controller.md.
// This file supplies the VMM drivers: a router (runtime/vmm_router.h) over the firecracker
// driver (runtime/firecracker_vmm.h, MVM_FC_* variables, docs/firecracker.md) and the qemu
// driver (runtime/qemu_vmm.h, MVM_QEMU_* variables, docs/runtime-qemu.md). Each pool runs on
// the driver its spec.runtime names; pools that name none get --runtime. The --runtime driver
// must start; the other one is optional, and pools asking for it fail with the reason.

#include "controller/mvmd_main.h"
#include "runtime/firecracker_vmm.h"
#include "runtime/qemu_vmm.h"
#include "runtime/vmm_router.h"

namespace {

using mvm::manifests::Runtime;

mvm::Result<std::unique_ptr<mvm::controller::Vmm>> MakeDriver(Runtime runtime) {
  if (runtime == Runtime::kQemu) {
    auto options = mvm::runtime::QemuOptionsFromEnv();
    if (!options.ok()) return options.error();
    auto vmm = mvm::runtime::QemuVmm::Create(std::move(*options));
    if (!vmm.ok()) return vmm.error();
    return std::unique_ptr<mvm::controller::Vmm>(std::move(*vmm));
  }
  auto options = mvm::runtime::FirecrackerOptionsFromEnv();
  if (!options.ok()) return options.error();
  auto vmm = mvm::runtime::FirecrackerVmm::Create(std::move(*options));
  if (!vmm.ok()) return vmm.error();
  return std::unique_ptr<mvm::controller::Vmm>(std::move(*vmm));
}

mvm::Result<std::unique_ptr<mvm::controller::Vmm>> MakeVmm(
    const mvm::controller::MvmdConfig& config) {
  auto fallback = mvm::manifests::ParseRuntime(config.runtime);
  if (!fallback) return mvm::Error{"unknown runtime \"" + config.runtime + "\""};
  std::map<Runtime, std::unique_ptr<mvm::controller::Vmm>> drivers;
  std::map<Runtime, std::string> unavailable;
  for (Runtime runtime : {Runtime::kFirecracker, Runtime::kQemu}) {
    auto driver = MakeDriver(runtime);
    if (driver.ok()) {
      drivers[runtime] = std::move(*driver);
    } else if (runtime == *fallback) {
      return mvm::Error{"--runtime " + config.runtime + ": " + driver.error().message};
    } else {
      unavailable[runtime] = driver.error().message;
    }
  }
  return std::unique_ptr<mvm::controller::Vmm>(std::make_unique<mvm::runtime::VmmRouter>(
      std::move(drivers), std::move(unavailable), *fallback));
}

}  // namespace

int main(int argc, char** argv) {
  return mvm::controller::RunMvmd(argc, argv, MakeVmm);
}
