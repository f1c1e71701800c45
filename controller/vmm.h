#pragma once
// Vmm: the port through which the controller acts on microVMs. Drivers (runtime/: qemu,
// firecracker; tests/: a fake) implement it; only the instance reconciler calls it.
//
// Contract every driver keeps:
//  - Each call performs one lifecycle action on one instance and returns only when the action is
//    done (or failed). Calls for one instance never overlap (the work queue guarantees it);
//    calls for different instances may run concurrently.
//  - Idempotent where a crash could repeat them: Prepare on a prepared instance, Stop on a stopped
//    one and Destroy on a destroyed or half-created one succeed without harm.
//  - A failed call leaves nothing behind that a later Destroy cannot release: no orphan process,
//    socket, cgroup, TAP or disk outside what Destroy removes.
//  - VMM processes outlive mvmd: they are never children that die with it.
//  - Errors carry a message fit for the instance's condition (e.g. the guest's console tail).

#include <filesystem>
#include <optional>
#include <string>

#include "common/result.h"
#include "controller/model.h"
#include "manifests/object.h"

namespace mvm::controller {

struct VmmTarget {
  InstanceKey key;
  std::string pool;
  const manifests::PoolSpec* spec = nullptr;
  std::filesystem::path dir;  // the instance's own directory (runtime/, volumes/, snapshots/)
  VmmHandle handle;           // empty unless a VMM process exists
  // The tenant's quota when the manifests define one (drivers that confine may write it as the
  // tenant's cgroup limits); valid for the duration of the call.
  const manifests::TenantQuota* tenantQuota = nullptr;
};

struct ProbeResult {
  bool alive = false;  // the recorded process exists (pid + start time) and answers its socket
  std::optional<InstanceState> observed;  // kRunning or kWarm when alive and the VMM says so
  bool snapshot = false;                  // a complete snapshot is on disk (for Sleeping)
  VmmHandle handle;  // when alive: the live VMM's identity as the driver found it (its own
                     // record on disk), which the controller adopts; a crash between a start
                     // and its done record leaves the instance's recorded handle empty
  std::string detail;
};

class Vmm {
 public:
  virtual ~Vmm() = default;
  virtual std::string_view Name() const = 0;

  // Created → Ready (and Ready → Ready for a rebuild): image present, disks, jail, cgroup, TAP.
  virtual Status Prepare(const VmmTarget& target) = 0;
  // Ready/Stopped → Running: boot; returns once the guest reported ready.
  virtual Result<VmmHandle> Start(const VmmTarget& target) = 0;
  // Running → Warm: vCPUs paused, memory resident.
  virtual Status Pause(const VmmTarget& target) = 0;
  // Warm → Running.
  virtual Status Resume(const VmmTarget& target) = 0;
  // Warm → Sleeping: snapshot to disk, then end the VMM process.
  virtual Status Sleep(const VmmTarget& target) = 0;
  // Sleeping → Running: a new VMM restored from the snapshot, resumed.
  virtual Result<VmmHandle> Wake(const VmmTarget& target) = 0;
  // Running/Warm/Sleeping → Stopped: graceful stop, kill after the spec's gracefulStopSeconds;
  // a Sleeping instance's snapshot is discarded.
  virtual Status Stop(const VmmTarget& target) = 0;
  // any → Destroyed: process, cgroup, TAP, disks, snapshot all gone.
  virtual Status Destroy(const VmmTarget& target) = 0;
  // What is really there, for adoption after a restart and for drift checks.
  virtual ProbeResult Probe(const VmmTarget& target) = 0;
};

}  // namespace mvm::controller
