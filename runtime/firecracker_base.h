#pragma once
// Pool base snapshots for the firecracker driver (docs/firecracker.md, "Pool base snapshot"):
// the file-level pieces, kept apart from the driver so they can be tested on plain files.
//
// Promises:
//  - RebaseMemory(base, diff, out): `out` becomes a copy of `base` with every data extent of the
//    sparse `diff` (found with SEEK_DATA/SEEK_HOLE) written over the same offsets, which is what
//    Firecracker's `snapshot-editor edit-memory rebase` does. Holes of `diff` keep the base's
//    bytes; holes of `base` stay holes where `diff` has none. The two sizes must match (Error
//    naming both files and sizes). `out` is complete or absent: it is built as `out`.rebase and
//    renamed. The copy of the base is a reflink where the file system can (btrfs, XFS), so
//    only the Diff's pages are written; elsewhere a sparse copy.
//  - MergeDiff(newer, cumulative): the data extents of `newer` written over `cumulative` (same
//    size): after it, rebasing `cumulative` gives what rebasing both in turn would. Idempotent.
//  - BaseKey is 16 hex digits over what decides a template VM's memory contents: the identities
//    (path, size, mtime, inode) of kernel, initrd, rootfs and the firecracker binary, the kernel
//    command line, vCPUs, memory, and the driver's shape (jailer, network). Equal inputs give
//    equal keys; a change of any of them gives another key (and so another base).
//  - BaseLock holds an exclusive flock on <root>/lock until destroyed: two threads or two
//    processes creating or collecting a pool's bases take turns.
//  - BasesInUse lists the keys named by <instancesDir>/*/snapshots/base-key (an instance that
//    started from, or sleeps as a Diff of, that base).
//
// Layout, with <pool> = an instance directory's grandparent (<tenant>/pools/<pool>):
//   <pool>/fc-base/lock                                   the flock
//   <pool>/fc-base/<key>/{vmstate,mem,disk,template.json} a base; template.json written last
//   <pool>/fc-base/build-<key>/                           the template instance being built

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace mvm::runtime {

Status RebaseMemory(const std::filesystem::path& base, const std::filesystem::path& diff,
                    const std::filesystem::path& out);
Status MergeDiff(const std::filesystem::path& newer, const std::filesystem::path& cumulative);
// `to` becomes a copy of `from`: a reflink where the file system can, else a sparse copy;
// complete or absent.
Status CloneFile(const std::filesystem::path& from, const std::filesystem::path& to);

// "path size mtime-ns inode" of a file, or "path missing".
std::string FileIdentity(const std::filesystem::path& path);

struct BaseKeyInputs {
  std::vector<std::filesystem::path> files;  // kernel, initrd, rootfs, firecracker binary
  std::string cmdline;
  int vcpus = 1;
  int64_t memoryMiB = 0;
  bool jailer = false, network = false;
};
std::string BaseKey(const BaseKeyInputs& inputs);

// <instanceDir>/../../fc-base
std::filesystem::path PoolBaseRoot(const std::filesystem::path& instanceDir);

class BaseLock {
 public:
  // Creates <root> when needed; blocks until the lock is held.
  static Result<BaseLock> Acquire(const std::filesystem::path& root);

 private:
  explicit BaseLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // closing it releases the flock
};

std::set<std::string> BasesInUse(const std::filesystem::path& instancesDir);

}  // namespace mvm::runtime
