#include "runtime/firecracker_base.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <json/value.h>

#include "manifests/object.h"
#include "runtime/files.h"

namespace mvm::runtime {

namespace fs = std::filesystem;

namespace {

// A reflink (FICLONE: btrfs, XFS with reflink): `to` shares the blocks of `from` until written,
// so the copy of a large base costs nothing. False where the file system cannot.
bool Reflink(const fs::path& from, const fs::path& to) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return false;
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!out.valid()) return false;
  if (::ioctl(out.get(), FICLONE, in.get()) == 0) return true;
  out.Reset();
  std::error_code ec;
  fs::remove(to, ec);
  return false;
}

}  // namespace

Status RebaseMemory(const fs::path& base, const fs::path& diff, const fs::path& out) {
  std::error_code ec;
  const uintmax_t base_size = fs::file_size(base, ec);
  if (ec) return Error{"rebase: " + base.string() + ": " + ec.message()};
  const uintmax_t diff_size = fs::file_size(diff, ec);
  if (ec) return Error{"rebase: " + diff.string() + ": " + ec.message()};
  if (base_size != diff_size) {
    return Error{"rebase " + diff.string() + " onto " + base.string() + ": sizes differ (" +
                 std::to_string(diff_size) + " and " + std::to_string(base_size) +
                 " bytes): the Diff was not taken from a VM loaded from this base"};
  }
  const fs::path building = out.string() + ".rebase";
  auto fail = [&](const Error& e) -> Status {
    std::error_code ignored;
    fs::remove(building, ignored);
    return Error{"rebase: " + e.message};
  };
  if (Status s = CloneFile(base, building); !s.ok()) return fail(s.error());
  if (Status s = OverlayData(diff, building); !s.ok()) return fail(s.error());
  fs::rename(building, out, ec);
  if (ec) return fail(Error{"rename " + building.string() + ": " + ec.message()});
  return {};
}

Status CloneFile(const fs::path& from, const fs::path& to) {
  const fs::path partial = to.string() + ".clone";
  if (Reflink(from, partial)) {
    std::error_code ec;
    fs::rename(partial, to, ec);
    if (!ec) return {};
    fs::remove(partial, ec);
    return Error{"rename " + partial.string() + ": " + ec.message()};
  }
  return SparseCopy(from, to);
}

Status MergeDiff(const fs::path& newer, const fs::path& cumulative) {
  return OverlayData(newer, cumulative);
}

std::string FileIdentity(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return path.string() + " missing";
  return path.string() + " " + std::to_string(st.st_size) + " " +
         std::to_string(static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec) +
         " " + std::to_string(st.st_ino);
}

std::string BaseKey(const BaseKeyInputs& in) {
  Json::Value v(Json::objectValue);
  Json::Value files(Json::arrayValue);
  for (const fs::path& f : in.files) files.append(FileIdentity(f));
  v["files"] = files;
  v["cmdline"] = in.cmdline;
  v["vcpus"] = in.vcpus;
  v["memoryMiB"] = Json::Int64(in.memoryMiB);
  v["jailer"] = in.jailer;
  v["network"] = in.network;
  return manifests::CanonicalHash(v);
}

fs::path PoolBaseRoot(const fs::path& instanceDir) {
  return instanceDir.parent_path().parent_path() / "fc-base";
}

Result<BaseLock> BaseLock::Acquire(const fs::path& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return Error{"create " + root.string() + ": " + ec.message()};
  const fs::path file = root / "lock";
  UniqueFd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error{"open " + file.string() + ": " + std::strerror(errno)};
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return Error{"lock " + file.string() + ": " + std::strerror(errno)};
  }
  return BaseLock(std::move(fd));
}

std::set<std::string> BasesInUse(const fs::path& instancesDir) {
  std::set<std::string> keys;
  std::error_code ec;
  for (fs::directory_iterator it(instancesDir, ec), end; !ec && it != end; it.increment(ec)) {
    Result<std::string> key = ReadSmallFile(it->path() / "snapshots" / "base-key");
    if (!key.ok()) continue;
    std::string k = *key;
    while (!k.empty() && (k.back() == '\n' || k.back() == ' ')) k.pop_back();
    if (!k.empty()) keys.insert(k);
  }
  return keys;
}

}  // namespace mvm::runtime
