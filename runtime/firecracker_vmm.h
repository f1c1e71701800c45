#pragma once
// FirecrackerVmm: the `firecracker` driver of the Vmm port (controller/vmm.h). Runs each
// instance as a `firecracker` process (directly, or through Firecracker's `jailer`) and drives
// it over its REST API (firecracker_api.h). Every request it sends is checked against
// Firecracker's API description in tests (tests/firecracker_spec_test.cpp). docs/firecracker.md
// has the flags, the files and a troubleshooting table.
//
// Promises, on top of the Vmm contract:
//  - Stateless across mvmd restarts, like the qemu driver: everything comes from the VmmTarget
//    and the record the driver keeps in <dir>/runtime/firecracker.json.
//  - Processes are detached (runtime/process.h) and recognised by pid AND start time; under the
//    jailer the pid is read from the jail's firecracker.pid.
//  - Start returns once the guest printed `MVM-READY` on its console (docs/guest-image.md);
//    Wake once a fresh process loaded the snapshot (network_overrides naming the instance's
//    TAP) and reports Running. Both within `bootTimeout`; on failure the process, its socket
//    directory, its jail and its cgroup are gone before the call returns, and the Error carries
//    Firecracker's fault_message and the tails of its log and of the guest console.
//  - Every API call has a deadline (`apiTimeout`, `snapshotTimeout` for snapshots): a VMM that
//    stops answering fails the call instead of hanging a worker.
//  - Sleep: pause, PUT /snapshot/create, end the process. The snapshot counts only once both
//    files are complete (written as *.partial, renamed after Firecracker answered 204).
//  - Pool base snapshot (spec.snapshot.base, docs/firecracker.md): one template snapshot per
//    pool spec (runtime/firecracker_base.h), created once under the pool's lock by booting a
//    template VM; Start loads it (dirty page tracking on) instead of booting; Sleep writes a
//    Diff, merged into the instance's cumulative Diff; Wake rebases that onto a copy of the
//    base and loads it. A Sleep whose Diff cannot be trusted (an earlier attempt failed after
//    Firecracker reset its dirty bitmap) takes a Full snapshot and leaves the base.
//  - Stop: SendCtrlAltDel, wait up to gracefulStopSeconds, then SIGTERM, then SIGKILL; every
//    wait is bounded.
//  - Confined (docs/security.md): under the jailer, by the jailer. Launched directly (no jailer)
//    and with options.confinement.enabled (the default as root), by mvm's own jail, exactly as
//    the qemu driver's: namespaces (net unless the instance has a TAP), pivot_root into a tmpfs
//    with the binary, kernel and initrd read-only and only volumes/, snapshots/, the socket
//    directory, firecracker.log and metrics.json writable (runtime/ with firecracker.json stays
//    out of reach), /dev/kvm (and /dev/net/tun with a network) as nodes of its own, the
//    instance's uid from the persisted table, no capabilities, no_new_privs, rlimits, a clean
//    environment, and the cgroup leaf mvm.slice/<tenant>/<instance> with the pool's limits.
//    seccomp is Firecracker's own (its built-in filters, or `--seccomp-filter` with
//    options.seccompFilter); mvm stacks no profile on it. The record's "confinement" says what
//    is in force. Stop, Sleep and failed starts end the cgroup; Destroy also frees the uid.
//
// Files per instance (<dir> is VmmTarget::dir):
//   <dir>/runtime/firecracker.json   identity (pid, start time), socket, jail id, TAP
//   <dir>/runtime/firecracker.log    Firecracker's logger (PUT /logger)
//   <dir>/runtime/metrics.json       Firecracker's metrics, one JSON line per flush
//   <dir>/runtime/vmm.log            a daemonizing jailer's own output
//   <dir>/console.log                the guest's serial console (Firecracker's stdout)
//   <dir>/volumes/rootfs.ext4        the instance's disk
//   <dir>/snapshots/{vmstate,mem}    the snapshot while Sleeping (Full)
//   <dir>/snapshots/mem.diff         with a pool base: the pages written since the base
//   <dir>/snapshots/base-key         with a pool base: the base this instance uses
//   <dir>/snapshots/diff-ok          the live VMM tracks dirty pages from base + mem.diff
//   <dir>/../../fc-base/<key>/       the pool's base snapshots (firecracker_base.h)
//   <runtimeDir>/<12 hex>/{api,v}.sock        sockets without the jailer
//   <chrootBase>/firecracker/mvm-<12 hex>/root  the jail with the jailer
//   <dir>/runtime/jail, <dir>/runtime/dev/      mount point and own device nodes, direct + jail

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "controller/vmm.h"
#include "runtime/confinement.h"
#include "runtime/firecracker_api.h"
#include "runtime/firecracker_jailer.h"
#include "runtime/firecracker_metrics.h"

namespace mvm::runtime {

struct FirecrackerOptions {
  std::string binary = "firecracker";  // a path or a name in $PATH
  bool useJailer = false;
  std::string jailerBinary = "jailer";
  JailerConfig jailer;  // chroot base, uid/gid range, parent cgroup, netns, limits
  std::filesystem::path runtimeDir = "/run/mvm/fc";   // sockets without the jailer
  std::chrono::milliseconds bootTimeout{60000};       // spawn to MVM-READY (or to Running)
  std::chrono::milliseconds apiTimeout{5000};         // per API request
  std::chrono::milliseconds snapshotTimeout{120000};  // PUT /snapshot/create and /load
  // Attach eth0 backed by a TAP the driver creates per instance (`mvm` + 8 hex) with MMDS.
  bool network = false;
  uintmax_t logRotateBytes = 4u << 20;
  // Jail, cgroup and rlimits for a directly launched firecracker (docs/security.md); on by
  // default as root. Unused under the jailer, which confines on its own.
  ConfinementOptions confinement = DefaultConfinement();
  // A filter file for Firecracker's --seccomp-filter (seccompiler-bin's output), bound into the
  // jail read-only; empty: Firecracker's built-in filters.
  std::filesystem::path seccompFilter;
};

// Options from MVM_FC_* variables (docs/firecracker.md): MVM_FC_BINARY, MVM_FC_JAILER (a path,
// or "0"/"1"), MVM_FC_CHROOT_BASE, MVM_FC_UID_BASE, MVM_FC_UID_COUNT, MVM_FC_PARENT_CGROUP,
// MVM_FC_NETNS, MVM_FC_NEW_PID_NS, MVM_FC_DAEMONIZE, MVM_FC_RUNTIME_DIR, MVM_FC_BOOT_TIMEOUT,
// MVM_FC_API_TIMEOUT_MS, MVM_FC_NETWORK, MVM_FC_SECCOMP_FILTER, and the direct launch's
// confinement: MVM_FC_JAIL, MVM_FC_JAIL_UIDS, MVM_FC_JAIL_STATE_DIR, MVM_FC_CGROUP_ROOT,
// MVM_FC_CGROUP_SLICE (runtime/confinement.h). Error naming the variable when a value is
// malformed.
Result<FirecrackerOptions> FirecrackerOptionsFromEnv(FirecrackerOptions defaults = {});

class FirecrackerVmm final : public controller::Vmm {
 public:
  // Checks the options: binaries executable, runtime dir creatable and short enough.
  static Result<std::unique_ptr<FirecrackerVmm>> Create(FirecrackerOptions options);

  std::string_view Name() const override { return "firecracker"; }
  Status Prepare(const controller::VmmTarget& target) override;
  Result<controller::VmmHandle> Start(const controller::VmmTarget& target) override;
  Status Pause(const controller::VmmTarget& target) override;
  Status Resume(const controller::VmmTarget& target) override;
  Status Sleep(const controller::VmmTarget& target) override;
  Result<controller::VmmHandle> Wake(const controller::VmmTarget& target) override;
  Status Stop(const controller::VmmTarget& target) override;
  Status Destroy(const controller::VmmTarget& target) override;
  controller::ProbeResult Probe(const controller::VmmTarget& target) override;

  // Asks the live VMM to flush its metrics (PUT /actions FlushMetrics) and returns the newest
  // line of its metrics file, summarised. Also written to <dir>/runtime/metrics-summary.json,
  // which `mvmctl describe instance` can show (docs/firecracker.md). Probe does the same, best
  // effort, for every live VMM, and appends the main counters to its detail.
  Result<FirecrackerMetrics> Metrics(const controller::VmmTarget& target);

  struct Paths {
    std::filesystem::path dir, runtime, volumes, snapshots;
    std::filesystem::path record, fcLog, metrics, metricsSummary, vmmLog, console, disk;
    std::filesystem::path vmstate, mem;  // snapshots/{vmstate,mem}
    std::filesystem::path memDiff;       // snapshots/mem.diff: pages written since the base
    std::filesystem::path baseKey;       // snapshots/base-key: the pool base in use
    std::filesystem::path diffOk;        // snapshots/diff-ok: the next Sleep may be a Diff
    std::filesystem::path sockets;       // <runtimeDir>/<hash> (direct mode)
    std::string jailId;
    std::string tap;
  };
  Paths PathsFor(const std::filesystem::path& instanceDir) const;

  // The firecracker arguments (after `--` under the jailer) and, with the jailer, the whole
  // jailer command line. Public for tests and docs.
  std::vector<std::string> CommandLine(const controller::VmmTarget& target) const;

  const FirecrackerOptions& options() const { return options_; }

 private:
  explicit FirecrackerVmm(FirecrackerOptions options)
      : options_(std::move(options)), confiner_(options_.confinement) {}
  // What a restore loads when it is not the instance's own snapshot: the pool's base.
  struct LoadSource {
    std::filesystem::path vmstate, mem, disk;  // disk: the template's, as snapshotted
    std::string bootId;
  };
  Result<controller::VmmHandle> Launch(const controller::VmmTarget& target, bool restore,
                                       const LoadSource* base = nullptr);
  // The pool's base for this spec, created when missing; records the instance's use of it.
  Result<LoadSource> AcquireBase(const controller::VmmTarget& target);
  Status CreateBase(const controller::VmmTarget& target, const std::string& key,
                    const std::filesystem::path& root);
  // Removes bases no instance names (except `keep`) and leftovers of interrupted creations.
  // Called with the pool's BaseLock held.
  void CollectBases(const controller::VmmTarget& target, const std::string& keep);
  Status CheckSpec(const controller::VmmTarget& target) const;
  // The network namespace the instance's TAP lives in: the jailer's --netns, else "" (mvmd's).
  std::string TapNetns(const controller::VmmTarget& target) const;
  Status SetState(const controller::VmmTarget& target, const std::string& verb,
                  const std::string& want, const std::string& expect);

  FirecrackerOptions options_;
  Confiner confiner_;
};

}  // namespace mvm::runtime
