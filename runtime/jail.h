#pragma once
// Jail: the confinement a VMM process enters between fork and exec (runtime/process.h applies
// it when SpawnOptions::jail is set), and the per-instance uid allocator. docs/security.md has
// the threat model and what each layer stops.
//
// Promises of a spawn with a JailSpec (all or nothing: any failed step aborts the spawn with an
// Error naming the step, and nothing runs):
//  - The process joins `cgroup` (its cgroup.procs) before anything else, so every thread and
//    child it ever has is counted and can be frozen or killed there.
//  - New mount, pid, ipc, uts and cgroup namespaces (and net when `newNetwork`): it is PID 1 of
//    its own pid namespace and sees no other process; it has no network interface but `lo`
//    (down) unless the spec says otherwise.
//  - Its root is a fresh read-only tmpfs holding only `binds` (each at its target path, read-only
//    unless `writable`, nosuid, nodev except the device nodes), `devices`, `symlinks` and a
//    /proc of its own pid namespace; the host's root is detached (pivot_root + lazy umount).
//  - Then: hostname, rlimits (open files, file size, processes, no core dumps), every capability
//    dropped from the bounding, ambient, effective, permitted and inheritable sets, supplementary
//    groups cleared, uid and gid set (real, effective, saved) to the instance's, no_new_privs,
//    and last the seccomp filter (which therefore must allow execve).
//  - exec gets exactly `env` (a clean environment) and no inherited descriptor but 0, 1, 2.
//  - Only async-signal-safe system calls run in the child: PreparedJail holds every string,
//    descriptor and the BPF program, built before fork.
//
// UidAllocator promises: one uid per owner (an instance directory) from [first, first+count),
// the same one on every call until Release; persisted in one file updated by atomic rename under
// an flock, so concurrent mvmd threads and processes never hand one uid to two owners and a crash
// at any point leaves the previous or the new table.

#include <linux/filter.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace mvm::runtime {

struct JailSpec {
  std::filesystem::path root;  // an existing directory; the jail's tmpfs root is mounted there
  struct Bind {
    std::filesystem::path source;  // a file or directory on the host
    std::filesystem::path target;  // absolute path inside the jail
    bool writable = false;
    bool device = false;  // a device node: bound nosuid,noexec (not nodev)
  };
  std::vector<Bind> binds;
  std::vector<std::filesystem::path> devices;  // device nodes, bound at the same path
  std::vector<std::pair<std::string, std::string>> symlinks;  // {path in jail, link text}
  std::filesystem::path workDir = "/";                        // inside the jail
  bool newNetwork = true;
  std::string hostname = "mvm";
  uint32_t uid = 0;  // must not be 0
  uint32_t gid = 0;  // must not be 0
  uint64_t maxOpenFiles = 4096;
  uint64_t maxFileBytes = 0;  // RLIMIT_FSIZE; 0: as inherited
  uint64_t maxProcesses = 0;  // RLIMIT_NPROC (per uid, and uids are per instance); 0: as inherited
  std::filesystem::path cgroup;  // a cgroup v2 directory to join; empty: stay where the parent is
  std::vector<struct sock_filter> seccomp;  // a BPF program; empty: no filter
  std::vector<std::string> env = {"PATH=/usr/bin:/bin", "HOME=/", "LANG=C.UTF-8"};
};

// Binds /usr read-only and links /bin, /sbin, /lib, /lib64 into it (Debian's merged /usr): the
// VMM's shared libraries, data files (e.g. /usr/share/qemu) and the /bin/sh its exec: migration
// runs. Read-only and shared by all instances; it holds nothing secret.
void AddUsrSystem(JailSpec& spec);

// A JailSpec turned into plain data for the child. Move-only: it owns the cgroup descriptor.
class PreparedJail {
 public:
  static Result<PreparedJail> Prepare(const JailSpec& spec);

  // In the intermediate child (before the final fork): join the cgroup, unshare namespaces.
  // In the final child: everything else. Both return 0, or the errno of the failed step and set
  // `*step` to its index. Async-signal-safe.
  int EnterBeforeFork(int* step) const noexcept;
  int EnterAfterFork(int* step) const noexcept;
  char* const* envp() const { return envp_.data(); }
  // What step `index` did, for the error message.
  std::string Describe(int index) const;

 private:
  struct Step {
    enum class Op {
      kMount,
      kMkdir,
      kTouch,
      kSymlink,
      kChdir,
      kPivot,
      kUmountOld,
      kHostname,
      kRlimit,
      kDropCaps,
      kSetIds,
      kNoNewPrivs,
      kSeccomp
    } op;
    std::string a, b, fstype, data;
    unsigned long flags = 0;
    uint64_t number = 0;
    std::string what;
  };
  std::vector<Step> steps_;
  UniqueFd cgroupProcs_;
  int unshareFlags_ = 0;
  uint32_t uid_ = 0, gid_ = 0;
  int lastCap_ = 40;
  std::vector<struct sock_filter> filter_;
  std::vector<std::string> env_;
  std::vector<char*> envp_;

  int Run(const Step& step) const noexcept;
};

class UidAllocator {
 public:
  UidAllocator(std::filesystem::path file, uint32_t first, uint32_t count)
      : file_(std::move(file)), first_(first), count_(count) {}
  Result<uint32_t> Acquire(const std::string& owner);
  Status Release(const std::string& owner);
  Result<std::optional<uint32_t>> Find(const std::string& owner) const;

 private:
  std::filesystem::path file_;
  uint32_t first_, count_;
};

}  // namespace mvm::runtime
