#pragma once
// Confiner: what a driver calls to confine the VMM process of one instance (docs/security.md).
// It ties the generic pieces together: a uid from UidAllocator, ownership of the instance's
// files, a cgroup leaf mvm.slice/<tenant>/<instance> with limits from the pool's resources, the
// pool's seccomp profile, and the JailSpec that SpawnDetached enters.
//
// Promises:
//  - Confine is idempotent for an instance (same uid, same leaf) and leaves nothing a Release
//    cannot undo; its Describe() JSON says what is in force (uid, gid, cgroup path, limits
//    written, controllers missing, seccomp profile, namespaces), for VmmHandle::data.
//  - Release ends every process in the instance's cgroup (cgroup.kill) and removes the leaf;
//    with `destroy` it also frees the uid. Safe to call when nothing was ever confined.
//  - The VMM sees only what the request names: the read-only files, the writable paths (each
//    owned by the instance uid, mode 0700/0600), the device nodes, and /usr read-only. A device
//    the host keeps root-only (/dev/kvm, /dev/net/tun: `ownedDevices`) is reached through a node
//    of its own (same major:minor, the instance uid's, 0600, in <jailRoot>/../dev), so the
//    host's node is never re-owned or widened.
//  - io.max: with the pool's spec.resources.io, one line for the whole disk holding the instance
//    directory; a directory on no block device, or a device the kernel cannot throttle, is listed
//    under cgroupMissing, as a missing controller is.

#include <json/value.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/result.h"
#include "controller/vmm.h"
#include "runtime/cgroup.h"
#include "runtime/jail.h"

namespace mvm::runtime {

struct ConfinementOptions {
  bool enabled = false;  // drivers turn it on by default when mvmd runs as root
  std::filesystem::path stateDir = "/var/lib/mvm/jail";  // holds the uid table `uids`
  uint32_t uidFirst = 200000;
  uint32_t uidCount = 65536;
  std::filesystem::path cgroupHierarchy;  // empty: the cgroup2 mount found in mountinfo
  std::string cgroupSlice = "mvm.slice";
  int64_t memoryOverheadMiB = 256;  // memory.max = guest memory + this (VMM code, TCG cache)
  int64_t pidsMax = 1024;           // pids.max and RLIMIT_NPROC
  uint64_t maxOpenFiles = 4096;     // RLIMIT_NOFILE
};

// The defaults: enabled exactly when this process runs as root.
ConfinementOptions DefaultConfinement();

// ConfinementOptions from MVM_<prefix>JAIL (on|off), MVM_<prefix>JAIL_UIDS (FIRST-LAST),
// MVM_<prefix>JAIL_STATE_DIR, MVM_<prefix>CGROUP_ROOT, MVM_<prefix>CGROUP_SLICE; `prefix` is
// e.g. "QEMU_". Error naming the variable when a value is malformed.
Result<ConfinementOptions> ConfinementOptionsFromEnv(const std::string& prefix,
                                                     ConfinementOptions defaults);

struct ConfineRequest {
  const controller::VmmTarget* target = nullptr;
  std::filesystem::path instanceDir;            // chowned to the uid, mode 0700
  std::filesystem::path jailRoot;               // an empty directory the jail's root is mounted on
  std::vector<std::filesystem::path> readOnly;  // files bound read-only (kernel, initrd)
  std::vector<std::filesystem::path> writable;  // files and dirs bound read-write, chowned
  std::vector<std::filesystem::path> devices;   // device nodes usable by anyone (/dev/null)
  std::vector<std::filesystem::path> ownedDevices;  // root-only nodes the VMM opens (/dev/kvm)
  uint64_t maxFileBytes = 0;                        // RLIMIT_FSIZE
  bool newNetwork = true;  // false: stay in mvmd's network namespace (where the TAPs are)
  // Non-empty: the VMM installs its own seccomp filters (Firecracker), so no profile is
  // installed and this says which filter is in force ("firecracker built-in").
  std::string ownSeccomp;
};

// The io.max line ("MAJ:MIN rbps=N ...", only the keys set) for the pool's spec.resources.io on
// the whole disk holding `dir` (runtime/cgroup.h WholeDiskOf), or why there is none.
Result<std::string> IoMaxLine(const manifests::IoLimits& io, const std::filesystem::path& dir);

// What every VMM's request starts from: the target, its instance directory, the jail's mount
// point <instanceDir>/runtime/jail (created, 0700), /dev/{null,zero,urandom,random}, and
// RLIMIT_FSIZE = the disk's size + guest memory + 1 GiB (the largest files a VMM writes).
ConfineRequest VmmConfineRequest(const controller::VmmTarget& target,
                                 const std::filesystem::path& instanceDir,
                                 const std::filesystem::path& disk);

struct Confinement {
  JailSpec jail;
  Json::Value describe;  // for VmmHandle::data's "confinement"
};

class Confiner {
 public:
  explicit Confiner(ConfinementOptions options) : options_(std::move(options)) {}
  const ConfinementOptions& options() const { return options_; }

  Result<Confinement> Confine(const ConfineRequest& request) const;
  Status Release(const controller::VmmTarget& target, const std::filesystem::path& instanceDir,
                 bool destroy) const;
  // The tenant's level alone (slice and tenant directories, controllers enabled, the tenant's
  // quota as limits): the --parent-cgroup a jailer makes its own leaf in. Error when no cgroup
  // v2 hierarchy is mounted or a limit is refused.
  Result<runtime::CgroupLeaf> PrepareTenant(const controller::VmmTarget& target) const;
  // The instance's uid (allocated on first use), e.g. to own its TAP before the VMM starts.
  Result<uint32_t> Uid(const std::filesystem::path& instanceDir) const;
  // The instance's cgroup leaf; empty when no cgroup v2 hierarchy is mounted.
  std::filesystem::path CgroupLeaf(const controller::VmmTarget& target) const;

 private:
  ConfinementOptions options_;
};

}  // namespace mvm::runtime
