// mvmd: the mvm controller daemon. See controller/mvmd_main.h and docs/controller.md.
// This file supplies the VMM drivers: `--runtime qemu` is runtime/qemu_vmm.h, configured from
// MVM_QEMU_* environment variables (docs/runtime-qemu.md).

#include "controller/mvmd_main.h"
#include "runtime/qemu_vmm.h"

namespace {

mvm::Result<std::unique_ptr<mvm::controller::Vmm>> MakeVmm(
    const mvm::controller::MvmdConfig& config) {
  if (config.runtime == "qemu") {
    auto options = mvm::runtime::QemuOptionsFromEnv();
    if (!options.ok()) return options.error();
    auto vmm = mvm::runtime::QemuVmm::Create(std::move(*options));
    if (!vmm.ok()) return vmm.error();
    return std::unique_ptr<mvm::controller::Vmm>(std::move(*vmm));
  }
  // The firecracker driver lands with its own issue (runtime/).
  return mvm::Error{"runtime \"" + config.runtime +
                    "\" is not available in this build yet (available: qemu; see "
                    "docs/runtime-qemu.md)"};
}

}  // namespace

int main(int argc, char** argv) {
  return mvm::controller::RunMvmd(argc, argv, MakeVmm);
}
