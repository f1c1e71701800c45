#include "runtime/confinement.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "runtime/cgroup.h"
#include "runtime/seccomp_profile.h"

namespace mvm::runtime {
namespace {

namespace fs = std::filesystem;

// The cgroup tree in use, or why there is none.
Result<CgroupTree> Tree(const ConfinementOptions& o) {
  if (!o.cgroupHierarchy.empty()) return CgroupTree(o.cgroupHierarchy, o.cgroupSlice);
  Result<fs::path> mount = FindCgroup2Mount();
  if (!mount.ok()) return mount.error();
  return CgroupTree(*mount, o.cgroupSlice);
}

Status Own(const fs::path& path, uint32_t uid, mode_t dirMode, mode_t fileMode) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return Error{"confine: " + path.string() + ": " + std::strerror(errno)};
  }
  if (S_ISLNK(st.st_mode)) return Error{"confine: " + path.string() + " is a symlink"};
  if (::lchown(path.c_str(), uid, uid) != 0 ||
      ::chmod(path.c_str(), S_ISDIR(st.st_mode) ? dirMode : fileMode) != 0) {
    return Error{"confine: chown " + path.string() + ": " + std::strerror(errno)};
  }
  return {};
}

// `path` and, for a directory, everything under it.
// The tenant directory's limits from its quota: cpu.max from quota.vcpus; memory.max (guest
// memory plus every VMM's overhead) and pids.max only when the quota bounds the number of VMM
// processes (running and warm both set), since the overhead is per process.
CgroupLimits TenantLimits(const controller::VmmTarget& target, const ConfinementOptions& o) {
  CgroupLimits t;
  const manifests::TenantQuota* q = target.tenantQuota;
  if (!q) return t;
  if (q->vcpus) t.cpuQuotaUs = *q->vcpus * t.cpuPeriodUs;
  if (q->running && q->warm) {
    const int64_t vmms = *q->running + *q->warm;
    if (q->memoryMiB) t.memoryMaxBytes = (*q->memoryMiB + vmms * o.memoryOverheadMiB) << 20;
    t.pidsMax = std::max<int64_t>(1, vmms) * o.pidsMax;
  }
  return t;
}

Status OwnTree(const fs::path& path, uint32_t uid) {
  if (Status s = Own(path, uid, 0700, 0600); !s.ok()) return s;
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(path, ec))) return {};
  for (auto it = fs::recursive_directory_iterator(path, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (Status s = Own(it->path(), uid, 0700, 0600); !s.ok()) return s;
  }
  return {};
}

// A node of the instance's own for a root-only device: same type and major:minor as `device`,
// owned by `uid`, mode 0600, at `node` (re-created when it names another device).
Status OwnDeviceNode(const fs::path& device, const fs::path& node, uint32_t uid) {
  struct stat host {};
  if (::stat(device.c_str(), &host) != 0 || !(S_ISCHR(host.st_mode) || S_ISBLK(host.st_mode))) {
    return Error{"confine: " + device.string() + " is not a device node"};
  }
  struct stat mine {};
  if (::lstat(node.c_str(), &mine) == 0 &&
      ((mine.st_mode & S_IFMT) != (host.st_mode & S_IFMT) || mine.st_rdev != host.st_rdev)) {
    ::unlink(node.c_str());
  }
  std::error_code ec;
  fs::create_directories(node.parent_path(), ec);
  if (::mknod(node.c_str(), (host.st_mode & S_IFMT) | 0600, host.st_rdev) != 0 && errno != EEXIST) {
    return Error{"confine: mknod " + node.string() + ": " + std::strerror(errno)};
  }
  return Own(node, uid, 0700, 0600);
}

void WarnOnce(const std::string& what) {
  static std::once_flag once;
  std::call_once(once, [&] { spdlog::warn("confine: {}: VMMs run without a cgroup", what); });
}

}  // namespace

ConfinementOptions DefaultConfinement() {
  ConfinementOptions o;
  o.enabled = ::geteuid() == 0;
  return o;
}

Result<ConfinementOptions> ConfinementOptionsFromEnv(const std::string& prefix,
                                                     ConfinementOptions o) {
  auto get = [&prefix](const std::string& name) -> std::string {
    const char* v = std::getenv(("MVM_" + prefix + name).c_str());
    return v ? v : "";
  };
  if (std::string v = get("JAIL"); !v.empty()) {
    if (v != "on" && v != "off") {
      return Error{"MVM_" + prefix + "JAIL: expected on or off (got \"" + v + "\")"};
    }
    o.enabled = v == "on";
  }
  if (std::string v = get("JAIL_UIDS"); !v.empty()) {
    char* end = nullptr;
    unsigned long first = std::strtoul(v.c_str(), &end, 10);
    unsigned long last = *end == '-' ? std::strtoul(end + 1, &end, 10) : 0;
    if (*end != '\0' || first == 0 || last < first || last > 0xfffffffeUL) {
      return Error{"MVM_" + prefix + "JAIL_UIDS: expected FIRST-LAST, e.g. 200000-265535 (got \"" +
                   v + "\")"};
    }
    o.uidFirst = static_cast<uint32_t>(first);
    o.uidCount = static_cast<uint32_t>(last - first + 1);
  }
  if (std::string v = get("JAIL_STATE_DIR"); !v.empty()) o.stateDir = v;
  if (std::string v = get("CGROUP_ROOT"); !v.empty()) o.cgroupHierarchy = v;
  if (std::string v = get("CGROUP_SLICE"); !v.empty()) o.cgroupSlice = v;
  return o;
}

Result<std::string> IoMaxLine(const manifests::IoLimits& io, const fs::path& dir) {
  Result<std::string> disk = WholeDiskOf(dir);
  if (!disk.ok()) return disk.error();
  std::string line = *disk;
  for (const auto& [key, value] :
       {std::pair{"rbps", io.readBps}, std::pair{"wbps", io.writeBps},
        std::pair{"riops", io.readIops}, std::pair{"wiops", io.writeIops}}) {
    if (value > 0) line += std::string(" ") + key + "=" + std::to_string(value);
  }
  return line;
}

ConfineRequest VmmConfineRequest(const controller::VmmTarget& target, const fs::path& instanceDir,
                                 const fs::path& disk) {
  ConfineRequest r;
  r.target = &target;
  r.instanceDir = instanceDir;
  r.jailRoot = instanceDir / "runtime" / "jail";
  std::error_code ec;
  fs::create_directories(r.jailRoot, ec);
  fs::permissions(r.jailRoot, fs::perms::owner_all, ec);
  r.devices = {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"};
  const uintmax_t size = fs::file_size(disk, ec);
  const int64_t memory = target.spec ? target.spec->resources.memoryMiB : 0;
  r.maxFileBytes = (ec ? 0 : size) + (static_cast<uint64_t>(memory) << 20) + (1ULL << 30);
  return r;
}

Result<runtime::CgroupLeaf> Confiner::PrepareTenant(const controller::VmmTarget& target) const {
  Result<CgroupTree> tree = Tree(options_);
  if (!tree.ok()) return tree.error();
  return tree->CreateTenant(target.key.tenant, TenantLimits(target, options_));
}

Result<uint32_t> Confiner::Uid(const fs::path& instanceDir) const {
  UidAllocator uids(options_.stateDir / "uids", options_.uidFirst, options_.uidCount);
  return uids.Acquire(instanceDir.string());
}

fs::path Confiner::CgroupLeaf(const controller::VmmTarget& target) const {
  Result<CgroupTree> tree = Tree(options_);
  if (!tree.ok()) return {};
  return tree->LeafPath(target.key.tenant, target.key.name);
}

Result<Confinement> Confiner::Confine(const ConfineRequest& r) const {
  const controller::VmmTarget& target = *r.target;
  const std::string who = "confine " + target.key.ToString() + ": ";
  if (target.spec == nullptr) return Error{who + "no pool spec"};
  const manifests::PoolSpec& spec = *target.spec;
  std::optional<SeccompProfile> profile = ParseSeccompProfile(spec.security.seccomp);
  if (!profile) {
    return Error{who + "spec.security.seccomp: unknown profile \"" + spec.security.seccomp +
                 "\" (baseline or strict)"};
  }
  std::vector<struct sock_filter> filter;
  if (r.ownSeccomp.empty()) {
    Result<std::vector<struct sock_filter>> built = BuildSeccompFilter(*profile);
    if (!built.ok()) return Error{who + built.error().message};
    filter = std::move(*built);
  }

  Result<uint32_t> uid = Uid(r.instanceDir);
  if (!uid.ok()) return Error{who + uid.error().message};
  if (Status s = Own(r.instanceDir, *uid, 0700, 0600); !s.ok())
    return Error{who + s.error().message};
  for (const auto& w : r.writable) {
    if (Status s = OwnTree(w, *uid); !s.ok()) return Error{who + s.error().message};
  }

  Confinement c;
  JailSpec& j = c.jail;
  j.root = r.jailRoot;
  AddUsrSystem(j);
  for (const auto& f : r.readOnly) j.binds.push_back({f, f, false});
  for (const auto& w : r.writable) j.binds.push_back({w, w, true});
  j.devices = r.devices;
  for (const auto& d : r.ownedDevices) {
    const fs::path node = r.jailRoot.parent_path() / "dev" / d.filename();
    if (Status s = OwnDeviceNode(d, node, *uid); !s.ok()) return Error{who + s.error().message};
    j.binds.push_back({node, d, true, true});
  }
  j.newNetwork = r.newNetwork;
  j.hostname = target.key.name.empty() ? "mvm" : target.key.name;
  j.uid = j.gid = *uid;
  j.maxOpenFiles = options_.maxOpenFiles;
  j.maxFileBytes = r.maxFileBytes;
  j.maxProcesses = static_cast<uint64_t>(options_.pidsMax);
  j.seccomp = std::move(filter);

  Json::Value& d = c.describe;
  d["uid"] = *uid;
  d["gid"] = *uid;
  d["seccomp"] = r.ownSeccomp.empty() ? std::string(SeccompProfileName(*profile)) : r.ownSeccomp;
  d["namespaces"] = Json::Value(Json::arrayValue);
  for (const char* ns : {"mnt", "pid", "ipc", "uts", "cgroup"}) d["namespaces"].append(ns);
  d["namespaces"].append(r.newNetwork ? "net" : "net (mvmd's: the instance's TAP)");
  d["root"] = "pivot_root into a read-only tmpfs (/usr read-only, " +
              std::to_string(r.readOnly.size()) + " image file(s), " +
              std::to_string(r.writable.size()) + " instance path(s), " +
              std::to_string(r.devices.size() + r.ownedDevices.size()) + " device(s))";
  d["capabilities"] = "none";
  d["noNewPrivs"] = true;

  Result<CgroupTree> tree = Tree(options_);
  if (!tree.ok()) {
    WarnOnce(tree.error().message);
    d["cgroup"] = "";
    d["cgroupError"] = tree.error().message;
    return c;
  }
  CgroupLimits limits;
  limits.cpuQuotaUs = static_cast<int64_t>(spec.resources.vcpus) * limits.cpuPeriodUs;
  limits.memoryMaxBytes = (spec.resources.memoryMiB + options_.memoryOverheadMiB) << 20;
  limits.pidsMax = options_.pidsMax;
  std::vector<std::string> ioMissing;
  if (spec.resources.io.Any()) {
    Result<std::string> line = IoMaxLine(spec.resources.io, r.instanceDir);
    if (line.ok()) {
      limits.ioMax.push_back(*line);
    } else {
      ioMissing.push_back(line.error().message);
      spdlog::warn("confine {}: {}: not enforced", target.key.ToString(), line.error().message);
    }
  }
  Result<runtime::CgroupLeaf> leaf =
      tree->Create(target.key.tenant, target.key.name, limits, TenantLimits(target, options_));
  if (!leaf.ok()) return Error{who + leaf.error().message};
  leaf->missing.insert(leaf->missing.end(), ioMissing.begin(), ioMissing.end());
  j.cgroup = leaf->path;
  d["cgroup"] = leaf->path.string();
  d["cgroupLimits"] = Json::Value(Json::arrayValue);
  for (const auto& w : leaf->written) d["cgroupLimits"].append(w);
  d["cgroupMissing"] = Json::Value(Json::arrayValue);
  for (const auto& m : leaf->missing) d["cgroupMissing"].append(m);
  return c;
}

Status Confiner::Release(const controller::VmmTarget& target, const fs::path& instanceDir,
                         bool destroy) const {
  if (fs::path leaf = CgroupLeaf(target); !leaf.empty()) {
    if (Status s = CgroupTree::Kill(leaf); !s.ok()) return s;
  }
  if (destroy) {
    UidAllocator uids(options_.stateDir / "uids", options_.uidFirst, options_.uidCount);
    if (Status s = uids.Release(instanceDir.string()); !s.ok()) return s;
  }
  return {};
}

}  // namespace mvm::runtime
