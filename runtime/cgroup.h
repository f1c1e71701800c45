#pragma once
// cgroup v2 for VMM processes: one leaf per instance at <hierarchy>/mvm.slice/<tenant>/<instance>.
//
// Promises:
//  - FindCgroup2Mount finds the unified hierarchy wherever it is mounted (/proc/self/mountinfo,
//    fstype cgroup2), e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified on hybrid hosts.
//  - CgroupTree::Create makes the slice, tenant and instance directories (idempotent), enables
//    on each level the controllers (cpu, memory, pids, io) that the level offers, and writes the
//    limits whose controller is enabled on the leaf's parent. A limit whose controller is
//    missing is never silently dropped: it is named in CgroupLeaf::missing (and logged once per
//    controller per process). A limit the kernel refuses is an Error.
//  - Freeze/Thaw return once cgroup.events says so (or fail after `timeout`).
//  - Kill ends every process of the leaf (cgroup.kill where the kernel has it, else SIGKILL to
//    each pid until cgroup.procs is empty) and removes the directory; an absent leaf is success.
//    Then it removes the tenant directory if it is empty.
//  - The tree's root can be any directory laid out like a hierarchy (a scratch dir in tests):
//    files are written with O_CREAT there, which a real cgroupfs ignores for existing files.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/result.h"

namespace mvm::runtime {

Result<std::filesystem::path> FindCgroup2Mount(
    const std::filesystem::path& mountinfo = "/proc/self/mountinfo");

// The whole disk ("MAJ:MIN") holding `path`, for io.max: the device of stat(path), a partition
// resolved to its disk through <sysDevBlock>/MAJ:MIN/partition. Error when `path` is on no block
// device (major 0: tmpfs, overlayfs, NFS) or the device is not in sysfs.
Result<std::string> WholeDiskOf(const std::filesystem::path& path,
                                const std::filesystem::path& sysDevBlock = "/sys/dev/block");

struct CgroupLimits {
  int64_t cpuQuotaUs = 0;  // cpu.max "<quota> <period>"; 0: no limit
  int64_t cpuPeriodUs = 100000;
  int64_t memoryMaxBytes = 0;  // memory.max; memory.swap.max is written 0 whenever this is set
  int64_t pidsMax = 0;         // pids.max; 0: no limit
  // io.max lines, "MAJ:MIN rbps=N wbps=N riops=N wiops=N"; one the kernel refuses for its
  // device (no request queue: ENODEV, EINVAL) is listed in CgroupLeaf::missing, not an Error.
  std::vector<std::string> ioMax;
};

struct CgroupLeaf {
  std::filesystem::path path;        // the instance's directory
  std::vector<std::string> written;  // limit files written, e.g. "memory.max=402653184"
  std::vector<std::string> missing;  // controllers a limit needed but the hierarchy lacks
};

class CgroupTree {
 public:
  // `hierarchy`: the cgroup v2 mount (or a stand-in directory); `slice`: the top directory name.
  explicit CgroupTree(std::filesystem::path hierarchy, std::string slice = "mvm.slice");
  // The tree on the host's unified hierarchy; Error when none is mounted.
  static Result<CgroupTree> OnHost();

  const std::filesystem::path& hierarchy() const { return hierarchy_; }
  std::filesystem::path TenantPath(const std::string& tenant) const;
  std::filesystem::path LeafPath(const std::string& tenant, const std::string& instance) const;

  // Controllers listed in the hierarchy root's cgroup.controllers.
  std::vector<std::string> Controllers() const;

  Result<CgroupLeaf> Create(const std::string& tenant, const std::string& instance,
                            const CgroupLimits& limits, const CgroupLimits& tenantLimits = {});
  // The slice and tenant levels only, controllers enabled for the tenant's children and
  // `tenantLimits` written: the parent a jailer creates its leaf in. CgroupLeaf::path is the
  // tenant's directory.
  Result<CgroupLeaf> CreateTenant(const std::string& tenant, const CgroupLimits& tenantLimits);

  static Status Freeze(const std::filesystem::path& leaf, bool frozen,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5));
  static Status Kill(const std::filesystem::path& leaf,
                     std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Pids in the leaf's cgroup.procs (empty when absent).
  static std::vector<int64_t> Procs(const std::filesystem::path& leaf);

 private:
  std::filesystem::path hierarchy_;
  std::string slice_;
};

}  // namespace mvm::runtime
