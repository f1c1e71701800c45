#pragma once
// Instance disks: each instance boots its own copy of the pool's root filesystem image, sized as
// the pool's `resources.diskMiB` asks (docs/runtime-qemu.md, "Disk").
//
// Promises:
//  - MakeInstanceDisk writes `disk` completely or not at all: it builds `disk`.new (a sparse copy
//    of `image`, SparseCopy), sizes it, then renames it over `disk`. On failure `disk` is as it
//    was before the call (a Rebuild that fails keeps the previous disk) and `disk`.new is gone.
//  - `sizeBytes` 0 keeps the image's size. A size below the image's is an Error that names both
//    sizes, returned before anything is written.
//  - A larger size extends the file with a hole (no space used until the guest writes) and grows
//    an ext2/3/4 filesystem on it to fill the disk with resize2fs (after `e2fsck -fp` when
//    resize2fs asks for a check). Other contents (another filesystem, a partition table) are
//    only extended: the guest has to grow them itself.

#include <cstdint>
#include <filesystem>

#include "common/result.h"

namespace mvm::runtime {

Status MakeInstanceDisk(const std::filesystem::path& image, const std::filesystem::path& disk,
                        uint64_t sizeBytes);

// True when `path` holds an ext2/3/4 filesystem (the superblock's magic number).
bool IsExtFilesystem(const std::filesystem::path& path);

}  // namespace mvm::runtime
