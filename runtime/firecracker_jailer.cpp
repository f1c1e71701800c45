#include "runtime/firecracker_jailer.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "runtime/driver_util.h"
#include "runtime/files.h"

namespace mvm::runtime {
namespace {

namespace fs = std::filesystem;

bool ValidId(const std::string& id) {
  return !id.empty() && id.size() <= 64 &&
         id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") ==
             std::string::npos;
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

Status Own(const fs::path& path, const Jail& jail) {
  if (::chown(path.c_str(), jail.uid, jail.gid) != 0) {
    return Error{"chown " + path.string() + " to " + std::to_string(jail.uid) + ":" +
                 std::to_string(jail.gid) + ": " + std::strerror(errno)};
  }
  return {};
}

}  // namespace

std::string JailId(const fs::path& instanceDir) {
  fs::path dir = instanceDir.lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "x/" and "x" are one directory
  return "mvm-" + Hash12(dir.string());
}

Jail JailFor(const JailerConfig& config, const std::string& id, const std::string& tenant,
             int vcpus, int64_t memoryMiB) {
  Jail j;
  j.id = id;
  j.tenant = tenant;
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over the id: the uid slot
  for (unsigned char c : id) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  j.uid = j.gid = config.idBase + static_cast<uint32_t>(h % std::max<uint32_t>(1, config.idCount));
  j.vcpus = vcpus;
  j.memoryMiB = memoryMiB;
  const std::string exec = config.execFile.filename().string();
  j.dir = config.chrootBase / exec / id;
  j.root = j.dir / "root";
  j.socket = j.root / "run" / "firecracker.socket";
  j.pidFile = j.root / (exec + ".pid");
  if (!config.cgroupRoot.empty()) j.cgroup = config.cgroupRoot / config.parentCgroup / tenant / id;
  return j;
}

std::vector<std::string> JailerArgv(const JailerConfig& config, const Jail& jail,
                                    const std::vector<std::string>& firecrackerArgs) {
  std::vector<std::string> argv = {config.jailer.string(),
                                   "--id",
                                   jail.id,
                                   "--exec-file",
                                   config.execFile.string(),
                                   "--uid",
                                   std::to_string(jail.uid),
                                   "--gid",
                                   std::to_string(jail.gid),
                                   "--chroot-base-dir",
                                   config.chrootBase.string(),
                                   "--cgroup-version",
                                   "2",
                                   "--parent-cgroup",
                                   config.parentCgroup + "/" + jail.tenant};
  auto cgroup = [&argv](const std::string& setting) {
    argv.push_back("--cgroup");
    argv.push_back(setting);
  };
  if (config.cgroupControllers.count("cpu")) {
    cgroup("cpu.max=" + std::to_string(100000LL * jail.vcpus) + " 100000");
  }
  if (config.cgroupControllers.count("memory")) {
    cgroup("memory.max=" + std::to_string((jail.memoryMiB + kMemoryOverheadMiB) << 20));
  }
  if (config.cgroupControllers.count("pids")) cgroup("pids.max=" + std::to_string(kPidsMax));
  if (config.cgroupControllers.count("io")) {
    for (const auto& line : jail.ioMax) cgroup("io.max=" + line);
  }
  if (config.fsizeLimit > 0) {
    argv.insert(argv.end(), {"--resource-limit", "fsize=" + std::to_string(config.fsizeLimit)});
  }
  if (config.noFileLimit > 0) {
    argv.insert(argv.end(), {"--resource-limit", "no-file=" + std::to_string(config.noFileLimit)});
  }
  if (!config.netns.empty()) {
    argv.insert(argv.end(), {"--netns", NetnsFor(config, jail.tenant)});
  }
  if (config.newPidNs) argv.push_back("--new-pid-ns");
  if (config.daemonize) argv.push_back("--daemonize");
  argv.push_back("--");
  argv.insert(argv.end(), firecrackerArgs.begin(), firecrackerArgs.end());
  return argv;
}

Status LayoutJail(const Jail& jail, const std::vector<JailFile>& files) {
  if (!ValidId(jail.id)) return Error{"jail id \"" + jail.id + "\" is not [a-zA-Z0-9-]{1,64}"};
  std::error_code ec;
  for (const fs::path& d : {jail.root, jail.root / "run", jail.root / "snapshot"}) {
    fs::create_directories(d, ec);
    if (ec) return Error{"create " + d.string() + ": " + ec.message()};
  }
  for (const fs::path& d : {jail.root / "run", jail.root / "snapshot"}) {
    if (Status s = Own(d, jail); !s.ok()) return s;
  }
  for (const JailFile& f : files) {
    const fs::path to = jail.root / fs::path(f.inJail).relative_path();
    if (to.parent_path() != jail.root) fs::create_directories(to.parent_path(), ec);
    fs::remove(to, ec);
    if (::link(f.host.c_str(), to.c_str()) != 0) {
      if (errno != EXDEV) {
        return Error{"link " + f.host.string() + " into the jail as " + to.string() + ": " +
                     std::strerror(errno)};
      }
      // Another file system: a (sparse) copy, which the jail owns alone.
      if (Status s = SparseCopy(f.host, to); !s.ok()) return s;
    }
    if (f.writable) {
      if (Status s = Own(to, jail); !s.ok()) return s;
    }
  }
  return {};
}

Status RemoveJail(const JailerConfig& config, const Jail& jail) {
  if (!ValidId(jail.id)) return Error{"jail id \"" + jail.id + "\" is not [a-zA-Z0-9-]{1,64}"};
  const fs::path dir = config.chrootBase / config.execFile.filename() / jail.id;
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) return Error{"remove the jail " + dir.string() + ": " + ec.message()};
  if (!jail.cgroup.empty() && PathExists(jail.cgroup)) {
    // A cgroup directory is removed with rmdir; it fails while a process is still inside.
    if (::rmdir(jail.cgroup.c_str()) != 0 && errno != ENOENT) {
      return Error{"remove the cgroup " + jail.cgroup.string() + ": " + std::strerror(errno)};
    }
    ::rmdir(jail.cgroup.parent_path().c_str());  // the tenant's, when this was its last VMM
  }
  return {};
}

std::set<std::string> ReadControllers(const fs::path& cgroupDir) {
  std::set<std::string> out;
  std::ifstream in(cgroupDir / "cgroup.controllers");
  for (std::string word; in >> word;) out.insert(word);
  return out;
}

std::string NetnsFor(const JailerConfig& config, const std::string& tenant) {
  return config.netns.empty() ? std::string() : Replace(config.netns, "{tenant}", tenant);
}

}  // namespace mvm::runtime
