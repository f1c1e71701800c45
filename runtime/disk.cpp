#include "runtime/disk.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/unique_fd.h"
#include "runtime/command.h"
#include "runtime/files.h"
#include "runtime/process.h"

namespace mvm::runtime {
namespace {

namespace fs = std::filesystem;

constexpr std::chrono::minutes kToolTimeout{5};
constexpr uint64_t kMiB = uint64_t{1} << 20;

std::string MiB(uint64_t bytes) {
  return std::to_string((bytes + kMiB - 1) / kMiB) + " MiB";
}

// e2fsprogs live in /usr/sbin, which a non-login $PATH may lack.
std::string SbinTool(const std::string& name) {
  if (FindExecutable(name).ok()) return name;
  for (const char* dir : {"/usr/sbin/", "/sbin/"}) {
    if (::access((dir + name).c_str(), X_OK) == 0) return dir + name;
  }
  return name;  // RunCommand's error then says it is not found
}

Result<CommandResult> Run(const std::vector<std::string>& argv) {
  return RunCommand(argv, kToolTimeout);
}

Status GrowExt(const fs::path& file) {
  const std::string resize2fs = SbinTool("resize2fs");
  Result<CommandResult> resized = Run({resize2fs, file.string()});
  if (!resized.ok()) return Error{"grow the disk's filesystem: " + resized.error().message};
  if (resized->ok()) return {};
  // resize2fs refuses a filesystem mounted since its last check (an image someone booted).
  if (resized->output.find("e2fsck") == std::string::npos) {
    return Error{"grow the disk's filesystem: resize2fs " + resized->Describe()};
  }
  Result<CommandResult> checked = Run({SbinTool("e2fsck"), "-f", "-p", file.string()});
  if (!checked.ok()) return Error{"check the disk's filesystem: " + checked.error().message};
  // e2fsck: 0 clean, 1 errors corrected; anything else needs a person.
  if (checked->exitCode != 0 && checked->exitCode != 1) {
    return Error{"check the disk's filesystem before growing it: e2fsck " + checked->Describe()};
  }
  resized = Run({resize2fs, file.string()});
  if (!resized.ok()) return Error{"grow the disk's filesystem: " + resized.error().message};
  if (!resized->ok()) return Error{"grow the disk's filesystem: resize2fs " + resized->Describe()};
  return {};
}

}  // namespace

bool IsExtFilesystem(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  unsigned char magic[2] = {0, 0};
  // The superblock starts at byte 1024; s_magic (0xEF53, little-endian) is at offset 56 in it.
  if (::pread(fd.get(), magic, sizeof magic, 1024 + 56) != static_cast<ssize_t>(sizeof magic)) {
    return false;
  }
  return magic[0] == 0x53 && magic[1] == 0xEF;
}

Status MakeInstanceDisk(const fs::path& image, const fs::path& disk, uint64_t sizeBytes) {
  std::error_code ec;
  const uintmax_t image_bytes = fs::file_size(image, ec);
  if (ec) return Error{"rootfs " + image.string() + ": " + ec.message()};
  if (sizeBytes != 0 && sizeBytes < image_bytes) {
    return Error{"resources.diskMiB is " + MiB(sizeBytes) + " but the rootfs image " +
                 image.string() + " is " + MiB(image_bytes) +
                 ": a disk cannot be smaller than its image (set diskMiB to at least " +
                 std::to_string((image_bytes + kMiB - 1) / kMiB) + ", or 0 for the image's size)"};
  }
  const fs::path building = disk.string() + ".new";
  struct Cleanup {
    const fs::path& path;
    bool keep = false;
    ~Cleanup() {
      std::error_code ignored;
      if (!keep) fs::remove(path, ignored);
    }
  } cleanup{building};

  if (Status s = SparseCopy(image, building); !s.ok()) return s;
  if (sizeBytes > image_bytes) {
    if (::truncate(building.c_str(), static_cast<off_t>(sizeBytes)) != 0) {
      return Error{"extend " + building.string() + " to " + MiB(sizeBytes) + ": " +
                   std::strerror(errno)};
    }
    if (IsExtFilesystem(building)) {
      if (Status s = GrowExt(building); !s.ok()) {
        return Error{s.error().message + " (" + image.string() + " to " + MiB(sizeBytes) + ")"};
      }
    }
  }
  fs::rename(building, disk, ec);
  if (ec)
    return Error{"rename " + building.string() + " to " + disk.string() + ": " + ec.message()};
  cleanup.keep = true;
  return {};
}

}  // namespace mvm::runtime
