#include "runtime/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "common/unique_fd.h"

namespace mvm::runtime {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One write(2) of `value`: cgroupfs takes each write as one command.
Status WriteValue(const fs::path& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return Error{"open " + path.string() + ": " + std::strerror(errno)};
  ssize_t n = ::write(fd.get(), value.data(), value.size());
  if (n != static_cast<ssize_t>(value.size())) {
    return Error{"write \"" + value + "\" to " + path.string() + ": " +
                 (n < 0 ? std::strerror(errno) : "short write")};
  }
  return {};
}

std::vector<std::string> Words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool Has(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// The value of `key` in a flat-keyed file like cgroup.events ("populated 1\nfrozen 0\n").
std::string KeyValue(const fs::path& file, const std::string& key) {
  std::istringstream in(ReadText(file));
  for (std::string k, v; in >> k >> v;) {
    if (k == key) return v;
  }
  return {};
}

bool ValidName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

// Each controller missing from the hierarchy is logged once per process, not at every start.
void LogMissingOnce(const std::string& controller, const fs::path& hierarchy) {
  static std::mutex mu;
  static std::set<std::string> logged;
  std::lock_guard lock(mu);
  if (logged.insert(controller).second) {
    spdlog::warn(
        "cgroup: controller \"{}\" is not available in {}: its limits are not enforced "
        "(shown as missing in the instance's confinement)",
        controller, hierarchy.string());
  }
}

// Enables in `dir`'s subtree_control each of `wanted` that `dir` offers; returns those enabled.
std::vector<std::string> EnableControllers(const fs::path& dir,
                                           const std::vector<std::string>& wanted) {
  std::error_code ec;
  // A stand-in directory (tests) has no cgroup.controllers below its root: it offers what the
  // level above enabled.
  std::vector<std::string> offered = fs::exists(dir / "cgroup.controllers", ec)
                                         ? Words(ReadText(dir / "cgroup.controllers"))
                                         : wanted;
  std::vector<std::string> on = Words(ReadText(dir / "cgroup.subtree_control"));
  std::vector<std::string> enabled;
  for (const auto& c : wanted) {
    if (!Has(offered, c)) continue;
    if (Has(on, c) || WriteValue(dir / "cgroup.subtree_control", "+" + c).ok()) {
      enabled.push_back(c);
    }
  }
  return enabled;
}

// Writes the limits of `limits` into `dir`, those whose controller is in `enabled`; the others
// are added to `missing`.
Status WriteLimits(const fs::path& dir, const CgroupLimits& limits,
                   const std::vector<std::string>& enabled, CgroupLeaf& leaf) {
  auto put = [&](const std::string& controller, const std::string& file,
                 const std::string& value) -> Status {
    if (!Has(enabled, controller)) {
      if (!Has(leaf.missing, controller)) leaf.missing.push_back(controller);
      return {};
    }
    if (Status s = WriteValue(dir / file, value); !s.ok()) return s;
    leaf.written.push_back((dir.filename() / file).string() + "=" + value);
    return {};
  };
  if (limits.cpuQuotaUs > 0) {
    if (Status s =
            put("cpu", "cpu.max",
                std::to_string(limits.cpuQuotaUs) + " " + std::to_string(limits.cpuPeriodUs));
        !s.ok()) {
      return s;
    }
  }
  if (limits.memoryMaxBytes > 0) {
    if (Status s = put("memory", "memory.max", std::to_string(limits.memoryMaxBytes)); !s.ok()) {
      return s;
    }
    if (Status s = put("memory", "memory.swap.max", "0"); !s.ok()) return s;
  }
  if (limits.pidsMax > 0) {
    if (Status s = put("pids", "pids.max", std::to_string(limits.pidsMax)); !s.ok()) return s;
  }
  for (const auto& line : limits.ioMax) {
    if (Status s = put("io", "io.max", line); !s.ok()) {
      // The device cannot be throttled (e.g. a stacked device without a request queue): the
      // limit is not in force, reported like a missing controller.
      leaf.missing.push_back("io.max " + line.substr(0, line.find(' ')) + " (" + s.error().message +
                             ")");
    }
  }
  return {};
}

}  // namespace

Result<std::string> WholeDiskOf(const fs::path& path, const fs::path& sysDevBlock) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Error{"io.max: stat " + path.string() + ": " + std::strerror(errno)};
  }
  const std::string device =
      std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  if (major(st.st_dev) == 0) {
    return Error{"io.max: " + path.string() + " is on no block device (device " + device +
                 ": tmpfs, overlayfs or a network file system)"};
  }
  const fs::path entry = sysDevBlock / device;
  std::error_code ec;
  if (!fs::exists(entry, ec)) {
    return Error{"io.max: block device " + device + " of " + path.string() + " is not in " +
                 sysDevBlock.string()};
  }
  if (!fs::exists(entry / "partition", ec)) return device;
  // A partition's sysfs directory sits inside its disk's: .../block/vda/vda1.
  const fs::path disk = fs::canonical(entry, ec).parent_path();
  std::vector<std::string> dev = Words(ReadText(disk / "dev"));
  if (ec || dev.empty()) {
    return Error{"io.max: cannot find the disk of partition " + device + " in " +
                 sysDevBlock.string()};
  }
  return dev[0];
}

Result<fs::path> FindCgroup2Mount(const fs::path& mountinfo) {
  std::ifstream in(mountinfo);
  if (!in) return Error{"cannot read " + mountinfo.string()};
  // Fields: id parent major:minor root mountpoint options [optional...] - fstype source super.
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f = Words(line);
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || dash + 1 == f.end()) continue;
    if (*(dash + 1) == "cgroup2") {
      // Mount points escape spaces etc. as \040: cgroup mounts do not have them in practice.
      return fs::path(f[4]);
    }
  }
  return Error{"no cgroup2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)"};
}

CgroupTree::CgroupTree(fs::path hierarchy, std::string slice)
    : hierarchy_(std::move(hierarchy)), slice_(std::move(slice)) {}

Result<CgroupTree> CgroupTree::OnHost() {
  Result<fs::path> mount = FindCgroup2Mount();
  if (!mount.ok()) return mount.error();
  return CgroupTree(*mount);
}

fs::path CgroupTree::TenantPath(const std::string& tenant) const {
  return hierarchy_ / slice_ / tenant;
}

fs::path CgroupTree::LeafPath(const std::string& tenant, const std::string& instance) const {
  return TenantPath(tenant) / instance;
}

std::vector<std::string> CgroupTree::Controllers() const {
  return Words(ReadText(hierarchy_ / "cgroup.controllers"));
}

namespace {

// Creates the directories of `levels` below `hierarchy`, each enabling for its children what its
// parent enabled for it (the root offers what exists); returns what the last one's parent enabled.
Result<std::vector<std::string>> MakeLevels(const fs::path& hierarchy,
                                            const std::vector<fs::path>& levels) {
  std::vector<std::string> enabled = {"cpu", "memory", "pids", "io"};
  fs::path dir = hierarchy;
  for (const fs::path& next : levels) {
    enabled = EnableControllers(dir, enabled);
    std::error_code ec;
    fs::create_directory(next, ec);
    if (ec) return Error{"cgroup: create " + next.string() + ": " + ec.message()};
    dir = next;
  }
  return enabled;
}

}  // namespace

Result<CgroupLeaf> CgroupTree::Create(const std::string& tenant, const std::string& instance,
                                      const CgroupLimits& limits,
                                      const CgroupLimits& tenantLimits) {
  if (!ValidName(tenant) || !ValidName(instance)) {
    return Error{"cgroup: invalid tenant or instance name \"" + tenant + "/" + instance + "\""};
  }
  CgroupLeaf leaf;
  leaf.path = LeafPath(tenant, instance);
  Result<std::vector<std::string>> enabled =
      MakeLevels(hierarchy_, {hierarchy_ / slice_, TenantPath(tenant), leaf.path});
  if (!enabled.ok()) return enabled.error();
  // `enabled` now holds what the tenant level enabled for the leaf; the tenant directory's own
  // limits need what the slice enabled, which contains it.
  if (Status s = WriteLimits(TenantPath(tenant), tenantLimits, *enabled, leaf); !s.ok()) {
    return Error{"cgroup: tenant " + tenant + ": " + s.error().message};
  }
  if (Status s = WriteLimits(leaf.path, limits, *enabled, leaf); !s.ok()) {
    return Error{"cgroup: " + s.error().message};
  }
  for (const auto& c : leaf.missing) LogMissingOnce(c, hierarchy_);
  return leaf;
}

Result<CgroupLeaf> CgroupTree::CreateTenant(const std::string& tenant,
                                            const CgroupLimits& tenantLimits) {
  if (!ValidName(tenant)) return Error{"cgroup: invalid tenant name \"" + tenant + "\""};
  CgroupLeaf leaf;
  leaf.path = TenantPath(tenant);
  Result<std::vector<std::string>> enabled =
      MakeLevels(hierarchy_, {hierarchy_ / slice_, leaf.path});
  if (!enabled.ok()) return enabled.error();
  // The tenant's children (the jailer's leaves) get what the tenant can enable.
  EnableControllers(leaf.path, *enabled);
  if (Status s = WriteLimits(leaf.path, tenantLimits, *enabled, leaf); !s.ok()) {
    return Error{"cgroup: tenant " + tenant + ": " + s.error().message};
  }
  for (const auto& c : leaf.missing) LogMissingOnce(c, hierarchy_);
  return leaf;
}

std::vector<int64_t> CgroupTree::Procs(const fs::path& leaf) {
  std::vector<int64_t> out;
  std::istringstream in(ReadText(leaf / "cgroup.procs"));
  for (int64_t pid; in >> pid;) out.push_back(pid);
  return out;
}

Status CgroupTree::Freeze(const fs::path& leaf, bool frozen, milliseconds timeout) {
  if (Status s = WriteValue(leaf / "cgroup.freeze", frozen ? "1" : "0"); !s.ok()) {
    return Error{"cgroup: " + s.error().message};
  }
  const std::string want = frozen ? "1" : "0";
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (KeyValue(leaf / "cgroup.events", "frozen") != want) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return Error{"cgroup: " + leaf.string() + " is not " + (frozen ? "frozen" : "thawed") +
                   " after " + std::to_string(timeout.count()) + " ms"};
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  return {};
}

Status CgroupTree::Kill(const fs::path& leaf, milliseconds timeout) {
  std::error_code ec;
  if (!fs::exists(leaf, ec)) return {};
  const bool has_kill = fs::exists(leaf / "cgroup.kill", ec);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::vector<int64_t> procs = Procs(leaf);
    if (procs.empty()) break;
    if (has_kill) {
      (void)WriteValue(leaf / "cgroup.kill", "1");
    } else {
      for (int64_t pid : procs) ::kill(static_cast<pid_t>(pid), SIGKILL);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return Error{"cgroup: " + std::to_string(procs.size()) + " process(es) still in " +
                   leaf.string() + " after SIGKILL"};
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  // A frozen cgroup's killed tasks still leave; rmdir fails with EBUSY until they are reaped.
  while (::rmdir(leaf.c_str()) != 0 && errno != ENOENT) {
    if (errno != EBUSY || std::chrono::steady_clock::now() >= deadline) {
      return Error{"cgroup: rmdir " + leaf.string() + ": " + std::strerror(errno)};
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  ::rmdir(leaf.parent_path().c_str());  // the tenant's, when this was its last instance
  return {};
}

}  // namespace mvm::runtime
