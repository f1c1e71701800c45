#pragma once
// QemuVmm: the `qemu` driver of the Vmm port (controller/vmm.h). Runs each instance as
// `qemu-system-x86_64 -M microvm` driven over QMP, with the guest contract of
// docs/guest-image.md (the `mvm.ctl` control channel). docs/runtime-qemu.md has the command
// line, the files per instance and measured timings.
//
// Promises, on top of the Vmm contract:
//  - Stateless across mvmd restarts: everything a call needs comes from the VmmTarget (the
//    instance directory and the handle) and the files the driver keeps in that directory;
//    nothing lives in this object but its options, so one QemuVmm serves any number of
//    instances from any number of threads.
//  - qemu processes are detached (double fork + setsid): mvmd can be SIGKILLed and restarted
//    while guests run on. A process is recognised by pid AND start time; a reused pid is never
//    probed as ours nor signalled.
//  - Start and Wake return only when the guest answers on its control channel (READY after a
//    boot, `ping` after a restore), within `bootTimeout`. On any failure the process is killed
//    and its runtime directory removed before the call returns, and the Error carries the
//    reason and the tail of the guest console and of qemu's own log.
//  - A snapshot counts (Probe's `snapshot`, Wake's input) only once complete: the state is
//    streamed to `state.bin.partial` and renamed to `state.bin` after the writer exited.
//  - The shared rootfs is never opened for writing: Prepare gives each instance its own sparse
//    copy in volumes/, which lives as long as the instance (Stop keeps it, Destroy removes it).
//  - Accel is `tcg` unless configured: the mere presence of /dev/kvm never selects kvm.
//  - Confined (when options.confinement.enabled, the default as root): every qemu runs jailed
//    as its instance's uid, in cgroup mvm.slice/<tenant>/<instance>, under the pool's seccomp
//    profile; it sees its kernel/initrd read-only and only volumes/, snapshots/, console.log and
//    its socket directory read-write (runtime/ with qemu.json stays out of its reach). The
//    handle's data has the confinement in force under "confinement". Stop, Sleep and failed
//    starts end the cgroup; Destroy also frees the uid.
//
// Files per instance (<dir> is VmmTarget::dir):
//   <dir>/runtime/qemu.json     identity (pid, start time) and paths of the live qemu
//   <dir>/runtime/qemu.log      qemu's stdout/stderr
//   <dir>/console.log           the guest's serial console (what `mvmctl logs` reads)
//   <dir>/volumes/rootfs.ext4   the instance's disk
//   <dir>/snapshots/state.bin   saved VM state while Sleeping
//   <runtimeDir>/<12 hex>/{qmp.sock,ctl.sock}   sockets (short path: the 107-byte limit)
// Logs are rotated to *.1 when they exceed `logRotateBytes` at a start or wake.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "controller/vmm.h"
#include "runtime/confinement.h"
#include "runtime/process.h"

namespace mvm::runtime {

struct QemuOptions {
  std::string binary = "qemu-system-x86_64";  // a path or a name in $PATH
  std::string accel = "tcg";                  // tcg | kvm
  std::string machine = "microvm,x-option-roms=off,rtc=on";
  // Spawn to READY (boot) or to the first control reply (wake). TCG boots take 5-20 s here.
  std::chrono::milliseconds bootTimeout{60000};
  // Sockets live in <runtimeDir>/<12 hex digits of a hash of the instance directory>/.
  std::filesystem::path runtimeDir = "/run/mvm/q";
  uint64_t tscKhz = 0;  // the guest's tsc_early_khz; 0: the host's, from /proc/cpuinfo
  std::chrono::milliseconds qmpTimeout{10000};        // per QMP command, and Probe's answer
  std::chrono::milliseconds snapshotTimeout{120000};  // migrate to file until completed
  uintmax_t logRotateBytes = 4u << 20;
  // Jail, cgroup and seccomp for every qemu (docs/security.md); on by default as root.
  ConfinementOptions confinement = DefaultConfinement();
};

// QemuOptions from the environment (docs/runtime-qemu.md): MVM_QEMU_BINARY, MVM_QEMU_ACCEL,
// MVM_QEMU_MACHINE, MVM_QEMU_BOOT_TIMEOUT (seconds), MVM_QEMU_RUNTIME_DIR, MVM_QEMU_TSC_KHZ, and
// the confinement's MVM_QEMU_JAIL, MVM_QEMU_JAIL_UIDS, MVM_QEMU_JAIL_STATE_DIR,
// MVM_QEMU_CGROUP_ROOT, MVM_QEMU_CGROUP_SLICE (runtime/confinement.h).
// Error naming the variable when a value is malformed.
Result<QemuOptions> QemuOptionsFromEnv(QemuOptions defaults = {});

class QemuVmm final : public controller::Vmm {
 public:
  // Checks the options: the binary is executable, accel is tcg or kvm, the runtime directory can
  // be created and is short enough for socket paths.
  static Result<std::unique_ptr<QemuVmm>> Create(QemuOptions options);

  std::string_view Name() const override { return "qemu"; }
  Status Prepare(const controller::VmmTarget& target) override;
  Result<controller::VmmHandle> Start(const controller::VmmTarget& target) override;
  Status Pause(const controller::VmmTarget& target) override;
  Status Resume(const controller::VmmTarget& target) override;
  Status Sleep(const controller::VmmTarget& target) override;
  Result<controller::VmmHandle> Wake(const controller::VmmTarget& target) override;
  Status Stop(const controller::VmmTarget& target) override;
  Status Destroy(const controller::VmmTarget& target) override;
  controller::ProbeResult Probe(const controller::VmmTarget& target) override;

  // Where an instance's files are; for tests, `mvmctl logs` and operators.
  struct Paths {
    std::filesystem::path dir, runtime, volumes, snapshots;
    std::filesystem::path record;    // runtime/qemu.json
    std::filesystem::path qemuLog;   // runtime/qemu.log
    std::filesystem::path console;   // console.log
    std::filesystem::path disk;      // volumes/rootfs.ext4
    std::filesystem::path snapshot;  // snapshots/state.bin
    std::filesystem::path sockets;   // <runtimeDir>/<hash>
    std::filesystem::path qmp, ctl;
  };
  Paths PathsFor(const std::filesystem::path& instanceDir) const;

  // The qemu argv for a target (restore: with -incoming from its snapshot). Public for tests
  // and docs; Error when the spec cannot be expressed (kernel command line over 2048 bytes, an
  // env value with a newline).
  Result<std::vector<std::string>> CommandLine(const controller::VmmTarget& target,
                                               bool restore) const;

  const QemuOptions& options() const { return options_; }

 private:
  explicit QemuVmm(QemuOptions options)
      : options_(std::move(options)), confiner_(options_.confinement) {}

  // Start (restore=false) and Wake (restore=true): spawn, connect, wait for the guest.
  Result<controller::VmmHandle> Launch(const controller::VmmTarget& target, bool restore);
  Status CheckSpec(const controller::VmmTarget& target) const;
  // Ends the instance's cgroup (and with `destroy` frees its uid) when confinement is on.
  Status ReleaseConfinement(const controller::VmmTarget& target, bool destroy) const;

  QemuOptions options_;
  Confiner confiner_;
  // Pools told once that spec.snapshot.base means nothing here (docs/runtime-qemu.md).
  std::mutex warned_mu_;
  std::set<std::string> warned_base_;
};

}  // namespace mvm::runtime
