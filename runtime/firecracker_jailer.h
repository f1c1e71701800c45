#pragma once
// Firecracker's jailer: the command line mvm gives it and the chroot it prepares for it
// (docs/firecracker.md). Pure where it can be: JailerArgv and JailFor compute, LayoutJail and
// RemoveJail touch the file system.
//
// Promises:
//  - The chroot is <chrootBase>/<exec file name>/<id>/root, the jailer's own layout; the API
//    socket is <root>/run/firecracker.socket and the pid file <root>/<exec file name>.pid.
//  - The uid/gid of an instance is a function of its id within [idBase, idBase + idCount):
//    stable across restarts, no allocation table to lose.
//  - --cgroup limits are emitted only for controllers the host has (a jailer asked to write a
//    cgroup file that does not exist fails the launch); their values come from the pool's
//    resources: cpu.max = vcpus CPUs, memory.max = guest memory + kMemoryOverheadMiB,
//    pids.max = kPidsMax, io.max = Jail::ioMax.
//  - LayoutJail hard-links each file into the chroot (a copy where the chroot is on another
//    file system), gives the writable ones to the instance's uid/gid and never changes the
//    owner or mode of a shared read-only file (the kernel).
//  - RemoveJail removes <chrootBase>/<exec>/<id> and the instance's cgroup directory (and the
//    tenant's, once empty), and only those: a malformed id is refused rather than widening the
//    removal.

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"

namespace mvm::runtime {

inline constexpr int64_t kMemoryOverheadMiB = 64;
inline constexpr int kPidsMax = 64;

struct JailerConfig {
  std::filesystem::path jailer;    // the jailer binary (absolute)
  std::filesystem::path execFile;  // the firecracker binary (absolute; name has "firecracker")
  std::filesystem::path chrootBase = "/srv/jailer";
  uint32_t idBase = 200000;  // per-instance uid = gid = idBase + hash(id) % idCount
  uint32_t idCount = 65536;
  std::string parentCgroup = "mvm.slice";   // the tenant's cgroup is <parentCgroup>/<tenant>
  std::filesystem::path cgroupRoot;         // the cgroup2 mount (for RemoveJail)
  std::set<std::string> cgroupControllers;  // those enabled at cgroupRoot (cgroup.controllers)
  std::string netns;                        // "" or a path; "{tenant}" is replaced
  bool newPidNs = true;
  // Off by default: mvm detaches the jailer itself (runtime/process.h), and without --daemonize
  // Firecracker's stdout stays the guest console, which also survives a snapshot restore
  // (a restored VM has no /serial configuration).
  bool daemonize = false;
  uint64_t fsizeLimit = 0;      // --resource-limit fsize=, 0: jailer default
  uint64_t noFileLimit = 4096;  // --resource-limit no-file=
};

// One instance's jail.
struct Jail {
  std::string id;  // [a-zA-Z0-9-]{1,64}
  std::string tenant;
  uint32_t uid = 0, gid = 0;
  int vcpus = 1;
  int64_t memoryMiB = 128;
  std::filesystem::path dir;       // <chrootBase>/<exec name>/<id>
  std::filesystem::path root;      // <dir>/root
  std::filesystem::path socket;    // <root>/run/firecracker.socket
  std::filesystem::path pidFile;   // <root>/<exec name>.pid
  std::filesystem::path cgroup;    // <cgroupRoot>/<parentCgroup>/<tenant>/<id>
  std::vector<std::string> ioMax;  // io.max lines (the pool's spec.resources.io), "MAJ:MIN ..."
};

// The jail id for an instance directory: "mvm-" + 12 hex digits.
std::string JailId(const std::filesystem::path& instanceDir);
Jail JailFor(const JailerConfig& config, const std::string& id, const std::string& tenant,
             int vcpus, int64_t memoryMiB);

// `jailer ... -- <firecrackerArgs>`.
std::vector<std::string> JailerArgv(const JailerConfig& config, const Jail& jail,
                                    const std::vector<std::string>& firecrackerArgs);

struct JailFile {
  std::filesystem::path host;
  std::string inJail;  // absolute path inside the chroot, e.g. "/vmlinux"
  bool writable = false;
};
// Creates <root>, <root>/run, <root>/snapshot (owned by the jail's uid/gid) and every file.
// Error names the file that could not be placed.
Status LayoutJail(const Jail& jail, const std::vector<JailFile>& files);
Status RemoveJail(const JailerConfig& config, const Jail& jail);
// The network namespace path the jailer joins for `tenant` ("" when none is configured).
std::string NetnsFor(const JailerConfig& config, const std::string& tenant);

std::set<std::string> ReadControllers(const std::filesystem::path& cgroupDir);

}  // namespace mvm::runtime
