#include "runtime/firecracker_vmm.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include "common/unique_fd.h"
#include "runtime/cgroup.h"
#include "runtime/driver_util.h"
#include "runtime/files.h"
#include "runtime/firecracker_base.h"
#include "runtime/process.h"

namespace mvm::runtime {
namespace {

using namespace driver;  // NOLINT(google-build-using-namespace): runtime/driver_util.h
using Clock = std::chrono::steady_clock;

constexpr milliseconds kTermWait{2000};
constexpr const char* kJailSeccompFilter = "/seccomp-filter.bpf";  // in the jailer's chroot

// Paths as Firecracker sees them: inside the chroot under the jailer, host paths without.
struct VmPaths {
  std::string kernel, initrd, disk, log, metrics, console, vsock, vmstate, mem;
};

// What the driver knows of an instance's VMM: firecracker.json when present (the truth on this
// host), else the handle the controller recorded.
struct Record {
  ProcessIdentity id;
  std::string socket;
  std::string jailId, tenant;
  fs::path console, metrics;
  std::string data;
};

Record LoadRecord(const VmmTarget& target, const FirecrackerVmm::Paths& paths) {
  Record r;
  r.console = paths.console;
  r.metrics = paths.metrics;
  std::optional<Json::Value> json;
  if (Result<std::string> text = ReadSmallFile(paths.record); text.ok()) {
    json = ParseJsonObject(*text);
    if (json) r.data = *text;
  }
  if (!json && !target.handle.empty()) {
    json = ParseJsonObject(target.handle.data);
    if (json) r.data = target.handle.data;
    r.id = {target.handle.pid, target.handle.startTime};
    r.socket = target.handle.socket;
  }
  if (json) {
    const Json::Value& j = *json;
    r.id = {j["pid"].asInt64(), j["startTime"].asUInt64()};
    r.socket = j["socket"].asString();
    r.jailId = j["jailId"].asString();
    r.tenant = j["tenant"].asString();
    if (j["console"].isString()) r.console = j["console"].asString();
    if (j["metrics"].isString()) r.metrics = j["metrics"].asString();
  }
  return r;
}

std::string Tails(const FirecrackerVmm::Paths& paths, const fs::path& console) {
  std::string out;
  for (const fs::path& log : {paths.vmmLog, paths.fcLog}) {
    std::string tail = TailLines(log, 5);
    if (!tail.empty()) out += "\n--- " + log.filename().string() + " (tail) ---\n" + tail;
  }
  std::string con = TailLines(console, kTailLines);
  out += "\n--- console (last " + std::to_string(kTailLines) + " lines) ---\n" +
         (con.empty() ? std::string("(empty)") : con);
  return out;
}

// A persistent TAP device (IFF_TAP, no packet info), owned by `uid` so that a jailed
// Firecracker may open it, and brought up.
Status CreateTap(const std::string& name, uid_t uid) {
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun.valid()) return Error{"open /dev/net/tun: " + std::string(std::strerror(errno))};
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (::ioctl(tun.get(), TUNSETIFF, &ifr) != 0) {
    return Error{"create TAP " + name + ": " + std::strerror(errno)};
  }
  if (::ioctl(tun.get(), TUNSETOWNER, static_cast<unsigned long>(uid)) != 0 ||
      ::ioctl(tun.get(), TUNSETPERSIST, 1L) != 0) {
    return Error{"configure TAP " + name + ": " + std::strerror(errno)};
  }
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  struct ifreq up {};
  std::strncpy(up.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (!sock.valid() || ::ioctl(sock.get(), SIOCGIFFLAGS, &up) != 0) {
    return Error{"read TAP " + name + " flags: " + std::strerror(errno)};
  }
  up.ifr_flags = static_cast<short>(up.ifr_flags | IFF_UP);
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &up) != 0) {
    return Error{"bring TAP " + name + " up: " + std::strerror(errno)};
  }
  return {};
}

// Removes a persistent TAP; a TAP that is not there is fine.
void DeleteTap(const std::string& name) {
  if (name.empty() || ::if_nametoindex(name.c_str()) == 0) return;
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun.valid()) return;
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (::ioctl(tun.get(), TUNSETIFF, &ifr) == 0) (void)::ioctl(tun.get(), TUNSETPERSIST, 0L);
}

// Runs `fn` in the network namespace at `netns` ("": this thread's own) on a short-lived
// thread: setns(CLONE_NEWNET) changes only the calling thread, and that thread ends with it, so
// no worker of mvmd ever runs in a tenant's namespace. A TAP opened there belongs there.
Status InNetns(const std::string& netns, const std::function<Status()>& fn) {
  if (netns.empty()) return fn();
  Status result = Error{"not run"};
  std::thread worker([&] {
    UniqueFd fd(::open(netns.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      result = Error{"open network namespace " + netns + ": " + std::strerror(errno)};
    } else if (::setns(fd.get(), CLONE_NEWNET) != 0) {
      result = Error{"enter network namespace " + netns + ": " + std::strerror(errno)};
    } else {
      result = fn();
    }
  });
  worker.join();
  return result;
}

std::string GuestMac(const std::string& hash) {
  // Locally administered unicast: 06:00 then four bytes of the instance's hash.
  return "06:00:" + hash.substr(0, 2) + ":" + hash.substr(2, 2) + ":" + hash.substr(4, 2) + ":" +
         hash.substr(6, 2);
}

bool SameFile(const fs::path& a, const fs::path& b) {
  struct stat sa {
  }, sb{};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

Status Touch(const fs::path& path) {
  std::ofstream out(path, std::ios::app);
  if (!out) return Error{"create " + path.string() + ": " + std::strerror(errno)};
  return {};
}

// Moves a file, copying where a rename cannot (another file system).
Status MoveFile(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (!ec) return {};
  if (ec != std::errc::cross_device_link) {
    return Error{"move " + from.string() + " to " + to.string() + ": " + ec.message()};
  }
  if (Status s = SparseCopy(from, to); !s.ok()) return s;
  fs::remove(from, ec);
  return {};
}

uintmax_t FileSize(const fs::path& path) {
  std::error_code ec;
  uintmax_t n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

// Waits for `needle` in `file` after byte `from`; returns the rest of that line. Error when
// `stop()` says to give up, `bad` appears first, or the deadline passes.
Result<std::string> WaitForConsole(const fs::path& file, uintmax_t from, const std::string& needle,
                                   const std::string& bad, Clock::time_point deadline,
                                   const std::function<bool()>& alive) {
  for (;;) {
    std::ifstream in(file, std::ios::binary);
    if (in) {
      in.seekg(static_cast<std::streamoff>(from));
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      size_t at = text.find(needle);
      size_t bad_at = bad.empty() ? std::string::npos : text.find(bad);
      if (bad_at != std::string::npos && (at == std::string::npos || bad_at < at)) {
        size_t eol = text.find('\n', bad_at);
        return Error{"the guest printed " + text.substr(bad_at, eol - bad_at)};
      }
      if (at != std::string::npos) {
        size_t eol = text.find('\n', at);
        if (eol != std::string::npos) {
          std::string rest = text.substr(at + needle.size(), eol - at - needle.size());
          while (!rest.empty() && (rest.back() == '\r' || rest.back() == ' ')) rest.pop_back();
          return rest;
        }
      }
    }
    if (!alive()) return Error{"the VMM exited"};
    if (Clock::now() >= deadline) return Error{"no " + needle + "on the console in time"};
    std::this_thread::sleep_for(milliseconds(50));
  }
}

milliseconds Left(Clock::time_point deadline, milliseconds most) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
  return std::max(milliseconds(1), std::min(left, most));
}

}  // namespace

Result<FirecrackerOptions> FirecrackerOptionsFromEnv(FirecrackerOptions o) {
  auto env = [](const char* name) { return std::string(std::getenv(name)); };
  auto flag = [&env](const char* name) -> Result<bool> {
    std::string v = env(name);
    if (v == "1" || v == "true" || v == "on") return true;
    if (v == "0" || v == "false" || v == "off") return false;
    return Error{std::string(name) + ": expected 0 or 1 (got \"" + v + "\")"};
  };
  if (EnvSet("MVM_FC_BINARY")) o.binary = env("MVM_FC_BINARY");
  if (EnvSet("MVM_FC_JAILER")) {
    std::string v = env("MVM_FC_JAILER");
    if (v == "0" || v == "off") {
      o.useJailer = false;
    } else if (v == "1" || v == "on") {
      o.useJailer = true;
    } else {
      o.useJailer = true;
      o.jailerBinary = v;
    }
  }
  if (EnvSet("MVM_FC_CHROOT_BASE")) o.jailer.chrootBase = env("MVM_FC_CHROOT_BASE");
  if (EnvSet("MVM_FC_UID_BASE")) {
    Result<int64_t> n = EnvInt("MVM_FC_UID_BASE", 1, 4000000000LL);
    if (!n.ok()) return n.error();
    o.jailer.idBase = static_cast<uint32_t>(*n);
  }
  if (EnvSet("MVM_FC_UID_COUNT")) {
    Result<int64_t> n = EnvInt("MVM_FC_UID_COUNT", 1, 1 << 24);
    if (!n.ok()) return n.error();
    o.jailer.idCount = static_cast<uint32_t>(*n);
  }
  if (EnvSet("MVM_FC_PARENT_CGROUP")) o.jailer.parentCgroup = env("MVM_FC_PARENT_CGROUP");
  if (EnvSet("MVM_FC_NETNS")) o.jailer.netns = env("MVM_FC_NETNS");
  for (const auto& [name, field] : {std::pair{"MVM_FC_NEW_PID_NS", &o.jailer.newPidNs},
                                    std::pair{"MVM_FC_DAEMONIZE", &o.jailer.daemonize},
                                    std::pair{"MVM_FC_NETWORK", &o.network}}) {
    if (!EnvSet(name)) continue;
    Result<bool> b = flag(name);
    if (!b.ok()) return b.error();
    *field = *b;
  }
  if (EnvSet("MVM_FC_RUNTIME_DIR")) o.runtimeDir = env("MVM_FC_RUNTIME_DIR");
  if (EnvSet("MVM_FC_SECCOMP_FILTER")) o.seccompFilter = env("MVM_FC_SECCOMP_FILTER");
  Result<ConfinementOptions> confinement = ConfinementOptionsFromEnv("FC_", o.confinement);
  if (!confinement.ok()) return confinement.error();
  o.confinement = std::move(*confinement);
  if (EnvSet("MVM_FC_BOOT_TIMEOUT")) {
    Result<int64_t> s = EnvInt("MVM_FC_BOOT_TIMEOUT", 1, 3600);
    if (!s.ok()) return s.error();
    o.bootTimeout = std::chrono::seconds(*s);
  }
  if (EnvSet("MVM_FC_API_TIMEOUT_MS")) {
    Result<int64_t> s = EnvInt("MVM_FC_API_TIMEOUT_MS", 10, 600000);
    if (!s.ok()) return s.error();
    o.apiTimeout = milliseconds(*s);
  }
  return o;
}

Result<std::unique_ptr<FirecrackerVmm>> FirecrackerVmm::Create(FirecrackerOptions options) {
  Result<fs::path> binary = FindExecutable(options.binary);
  if (!binary.ok()) return Error{"firecracker runtime: " + binary.error().message};
  options.binary = binary->string();
  if (options.useJailer) {
    Result<fs::path> jailer = FindExecutable(options.jailerBinary);
    if (!jailer.ok()) return Error{"firecracker runtime: jailer: " + jailer.error().message};
    options.jailer.jailer = *jailer;
    options.jailer.execFile = *binary;
    if (binary->filename().string().find("firecracker") == std::string::npos) {
      return Error{
          "firecracker runtime: the jailer only executes a file whose name contains "
          "\"firecracker\" (got " +
          binary->string() + ")"};
    }
    if (!options.jailer.chrootBase.is_absolute()) {
      return Error{"firecracker runtime: the chroot base must be an absolute path"};
    }
    if (options.jailer.cgroupRoot.empty()) {
      if (Result<fs::path> mount = FindCgroup2Mount(); mount.ok()) {
        options.jailer.cgroupRoot = *mount;
      }
    }
    if (options.jailer.cgroupControllers.empty() && !options.jailer.cgroupRoot.empty()) {
      options.jailer.cgroupControllers = ReadControllers(options.jailer.cgroupRoot);
    }
    size_t longest =
        options.jailer.chrootBase.string().size() +
        std::string("/firecracker/mvm-012345678901/root/run/firecracker.socket").size();
    if (longest > kSocketPathLimit) {
      return Error{"firecracker runtime: chroot base " + options.jailer.chrootBase.string() +
                   " is too long for the API socket path (" + std::to_string(longest) + " > " +
                   std::to_string(kSocketPathLimit) + " bytes)"};
    }
  }
  if (options.runtimeDir.empty() || !options.runtimeDir.is_absolute()) {
    return Error{"firecracker runtime: the runtime directory must be an absolute path"};
  }
  if (!options.seccompFilter.empty()) {
    std::error_code fec;
    if (!options.seccompFilter.is_absolute() || !fs::is_regular_file(options.seccompFilter, fec)) {
      return Error{"firecracker runtime: the seccomp filter " + options.seccompFilter.string() +
                   " is not an absolute path to a file (MVM_FC_SECCOMP_FILTER)"};
    }
  }
  if (options.useJailer) options.confinement.enabled = false;  // the jailer confines
  if (options.confinement.enabled && ::geteuid() != 0) {
    return Error{
        "firecracker runtime: confinement (jail, cgroup) needs root; run mvmd as root, "
        "configure the jailer (MVM_FC_JAILER) or set MVM_FC_JAIL=off"};
  }
  options.runtimeDir = options.runtimeDir.lexically_normal();
  size_t longest = options.runtimeDir.string().size() + 1 + 12 + 1 + 8;
  if (longest > kSocketPathLimit) {
    return Error{"firecracker runtime: runtime directory " + options.runtimeDir.string() +
                 " is too long for Unix socket paths"};
  }
  std::error_code ec;
  fs::create_directories(options.runtimeDir, ec);
  if (ec) {
    return Error{"firecracker runtime: cannot create " + options.runtimeDir.string() + ": " +
                 ec.message()};
  }
  return std::unique_ptr<FirecrackerVmm>(new FirecrackerVmm(std::move(options)));
}

FirecrackerVmm::Paths FirecrackerVmm::PathsFor(const fs::path& instanceDir) const {
  Paths p;
  std::error_code ec;
  p.dir = fs::absolute(instanceDir, ec).lexically_normal();
  if (ec) p.dir = instanceDir.lexically_normal();
  if (!p.dir.has_filename()) p.dir = p.dir.parent_path();
  p.runtime = p.dir / "runtime";
  p.volumes = p.dir / "volumes";
  p.snapshots = p.dir / "snapshots";
  p.record = p.runtime / "firecracker.json";
  p.fcLog = p.runtime / "firecracker.log";
  p.metrics = p.runtime / "metrics.json";
  p.metricsSummary = p.runtime / "metrics-summary.json";
  p.vmmLog = p.runtime / "vmm.log";
  p.console = p.dir / "console.log";
  p.disk = p.volumes / "rootfs.ext4";
  p.vmstate = p.snapshots / "vmstate";
  p.mem = p.snapshots / "mem";
  p.memDiff = p.snapshots / "mem.diff";
  p.baseKey = p.snapshots / "base-key";
  p.diffOk = p.snapshots / "diff-ok";
  p.jailId = JailId(p.dir);
  const std::string hash = p.jailId.substr(4);
  p.sockets = options_.runtimeDir / hash;
  p.tap = "mvm" + hash.substr(0, 8);
  return p;
}

namespace {

// The jailer's uids: allocated per instance from its range and persisted (like the uids of
// mvm's own jail, in a table of their own), so that two live jails never share one.
UidAllocator JailerUids(const FirecrackerOptions& o) {
  return UidAllocator(o.confinement.stateDir / "jailer-uids", o.jailer.idBase,
                      std::max<uint32_t>(1, o.jailer.idCount));
}

// The jail of an instance: paths from its id, uid/gid from the table (AcquireJailerUid puts it
// there before a launch; without an entry, e.g. a record from before the table, the slot hashed
// from the id).
Jail JailOf(const FirecrackerOptions& o, const std::string& id, const VmmTarget& target) {
  int vcpus = target.spec ? target.spec->resources.vcpus : 1;
  int64_t mem = target.spec ? target.spec->resources.memoryMiB : 128;
  Jail j = JailFor(o.jailer, id, target.key.tenant, vcpus, mem);
  if (Result<std::optional<uint32_t>> uid = JailerUids(o).Find(target.dir.string());
      uid.ok() && uid->has_value()) {
    j.uid = j.gid = **uid;
  }
  return j;
}

Status AcquireJailerUid(const FirecrackerOptions& o, const VmmTarget& target) {
  Result<uint32_t> uid = JailerUids(o).Acquire(target.dir.string());
  if (!uid.ok()) return Error{"jailer uid: " + uid.error().message};
  return {};
}

// Ends whatever process the record names and removes what belongs to it: the socket directory,
// the jail and its cgroup, the record. Error only when something survives.
Status EndProcess(const FirecrackerOptions& o, const Record& record,
                  const FirecrackerVmm::Paths& paths, const VmmTarget& target) {
  if (IsAlive(record.id) && !KillAndWait(record.id, kKillWait)) {
    return Error{"firecracker pid " + std::to_string(record.id.pid) + " survived SIGKILL"};
  }
  std::error_code ec;
  fs::remove(paths.sockets / "api.sock", ec);
  fs::remove(paths.sockets / "v.sock", ec);
  fs::remove(paths.sockets, ec);
  if (o.useJailer) {
    // The recorded jail, and the one this instance's directory names (a crash before the
    // record was written leaves only the latter).
    Jail named = JailOf(o, paths.jailId, target);
    if (!record.jailId.empty() && record.jailId != paths.jailId) {
      VmmTarget other = target;
      other.key.tenant = record.tenant.empty() ? target.key.tenant : record.tenant;
      if (Status s = RemoveJail(o.jailer, JailOf(o, record.jailId, other)); !s.ok()) return s;
    }
    if (Status s = RemoveJail(o.jailer, named); !s.ok()) return s;
  }
  if (o.confinement.enabled) {
    // Whatever is left in the instance's cgroup (a child the VMM forked) goes with it.
    if (Status s = Confiner(o.confinement).Release(target, paths.dir, false); !s.ok()) return s;
  }
  fs::remove(paths.record, ec);
  return {};
}

// The confinement of a directly launched firecracker (FirecrackerVmm's header).
// `shared`: files of the pool's base snapshot it loads (read-only, outside its directory).
Result<Confinement> ConfineDirect(const Confiner& confiner, const FirecrackerOptions& o,
                                  const VmmTarget& target, const FirecrackerVmm::Paths& paths,
                                  const std::optional<std::string>& initrd,
                                  const std::vector<fs::path>& shared) {
  ConfineRequest r = VmmConfineRequest(target, paths.dir, paths.disk);
  if (o.binary.rfind("/usr/", 0) != 0) r.readOnly.emplace_back(o.binary);
  r.readOnly.emplace_back(target.spec->image.kernel);
  if (initrd) r.readOnly.emplace_back(*initrd);
  for (const fs::path& f : shared) r.readOnly.push_back(f);
  if (!o.seccompFilter.empty()) r.readOnly.push_back(o.seccompFilter);
  std::error_code ec;
  fs::create_directories(paths.snapshots, ec);
  r.writable = {paths.volumes, paths.snapshots, paths.sockets, paths.fcLog, paths.metrics};
  if (PathExists("/dev/kvm")) r.ownedDevices.emplace_back("/dev/kvm");
  // With a network the TAP lives in mvmd's namespace, where Firecracker must open it.
  if (o.network) r.ownedDevices.emplace_back("/dev/net/tun");
  r.newNetwork = !o.network;
  r.ownSeccomp = o.seccompFilter.empty()
                     ? "firecracker built-in"
                     : "firecracker --seccomp-filter " + o.seccompFilter.string();
  return confiner.Confine(r);
}

// What the jailer puts in force, for the record's "confinement" (describe shows it).
Json::Value JailerDescribe(const FirecrackerOptions& o, const Jail& jail) {
  Json::Value d;
  d["uid"] = jail.uid;
  d["gid"] = jail.gid;
  d["cgroup"] = jail.cgroup.string();
  d["seccomp"] = o.seccompFilter.empty()
                     ? "firecracker built-in"
                     : "firecracker --seccomp-filter " + o.seccompFilter.string();
  d["namespaces"] = Json::Value(Json::arrayValue);
  d["namespaces"].append("mnt");
  if (o.jailer.newPidNs) d["namespaces"].append("pid");
  if (!o.jailer.netns.empty()) d["namespaces"].append("net");
  d["root"] = "the jailer's chroot " + jail.root.string();
  d["capabilities"] = "none (jailer)";
  return d;
}

// Kills the process and removes its sockets, jail and record unless Commit() was called: every
// failure path of Launch leaves nothing running.
class LaunchGuard {
 public:
  LaunchGuard(const FirecrackerOptions& o, const FirecrackerVmm::Paths& paths,
              const VmmTarget& target)
      : o_(o), paths_(paths), target_(target) {}
  LaunchGuard(const LaunchGuard&) = delete;
  LaunchGuard& operator=(const LaunchGuard&) = delete;
  ~LaunchGuard() {
    if (committed_) return;
    for (const ProcessIdentity& id : ids_) {
      if (IsAlive(id)) KillAndWait(id, kKillWait);
    }
    Record none;
    (void)EndProcess(o_, none, paths_, target_);
  }
  void Track(ProcessIdentity id) { ids_.push_back(id); }
  void Commit() { committed_ = true; }

 private:
  const FirecrackerOptions& o_;
  const FirecrackerVmm::Paths& paths_;
  const VmmTarget& target_;
  std::vector<ProcessIdentity> ids_;
  bool committed_ = false;
};

// Reads the pid the jailer wrote into the jail and identifies that process.
Result<ProcessIdentity> WaitForPidFile(const fs::path& pidFile, const ProcessIdentity& jailer,
                                       Clock::time_point deadline) {
  for (;;) {
    if (Result<std::string> text = ReadSmallFile(pidFile); text.ok() && !text->empty()) {
      char* end = nullptr;
      long long pid = std::strtoll(text->c_str(), &end, 10);
      if (pid > 0) {
        Result<ProcessStat> stat = ReadProcessStat(pid);
        if (!stat.ok())
          return Error{"the jailer's pid file names pid " + *text + ", which is gone"};
        return ProcessIdentity{pid, stat->startTime};
      }
    }
    // A jailer that exec'd firecracker in place keeps its pid; one that daemonized has exited.
    if (!IsAlive(jailer) && !PathExists(pidFile)) {
      return Error{"the jailer exited without writing " + pidFile.string()};
    }
    if (Clock::now() >= deadline) return Error{"no " + pidFile.string() + " in time"};
    std::this_thread::sleep_for(milliseconds(20));
  }
}

Json::Value Body(std::initializer_list<std::pair<const char*, Json::Value>> members) {
  Json::Value v(Json::objectValue);
  for (const auto& [k, value] : members) v[k] = value;
  return v;
}

}  // namespace

std::string FirecrackerVmm::TapNetns(const VmmTarget& target) const {
  return options_.useJailer ? NetnsFor(options_.jailer, target.key.tenant) : std::string();
}

Status FirecrackerVmm::CheckSpec(const VmmTarget& target) const {
  const std::string who = "instance " + target.key.ToString();
  if (target.spec == nullptr) return Error{who + ": no pool spec"};
  const manifests::PoolSpec& spec = *target.spec;
  if (spec.runtime != manifests::Runtime::kFirecracker) {
    return Error{"pool " + target.key.tenant + "/" + target.pool + " asks for runtime " +
                 std::string(manifests::RuntimeName(spec.runtime)) +
                 ", but it was sent to the firecracker driver"};
  }
  std::error_code ec;
  if (!fs::is_regular_file(spec.image.kernel, ec)) {
    return Error{"kernel " + spec.image.kernel + " does not exist"};
  }
  if (spec.image.initrd && !fs::is_regular_file(*spec.image.initrd, ec)) {
    return Error{"initrd " + *spec.image.initrd + " does not exist"};
  }
  Result<std::string> cmdline = GuestCmdline(target, {{}, "reboot"});
  if (!cmdline.ok()) return cmdline.error();
  return {};
}

std::vector<std::string> FirecrackerVmm::CommandLine(const VmmTarget& target) const {
  const Paths paths = PathsFor(target.dir);
  if (!options_.useJailer) {
    std::vector<std::string> argv = {options_.binary, "--api-sock",
                                     (paths.sockets / "api.sock").string(), "--id", paths.jailId};
    if (!options_.seccompFilter.empty()) {
      argv.insert(argv.end(), {"--seccomp-filter", options_.seccompFilter.string()});
    }
    return argv;
  }
  // The jailer passes --id (and the start time arguments) to Firecracker itself.
  std::vector<std::string> args;
  if (!options_.seccompFilter.empty()) args = {"--seccomp-filter", kJailSeccompFilter};
  args.insert(args.end(), {"--api-sock", "/run/firecracker.socket"});
  Jail jail = JailOf(options_, paths.jailId, target);
  if (target.spec && target.spec->resources.io.Any()) {
    Result<std::string> io = IoMaxLine(target.spec->resources.io, paths.dir);
    if (io.ok()) {
      jail.ioMax.push_back(*io);
    } else {
      spdlog::warn("firecracker: {}: {}: not enforced", target.key.ToString(), io.error().message);
    }
  }
  return JailerArgv(options_.jailer, jail, args);
}

Status FirecrackerVmm::Prepare(const VmmTarget& target) {
  if (Status s = CheckSpec(target); !s.ok()) return s;
  const Paths paths = PathsFor(target.dir);
  const std::string& rootfs = target.spec->image.rootfs;
  std::error_code ec;
  if (!fs::is_regular_file(rootfs, ec)) return Error{"rootfs " + rootfs + " does not exist"};
  for (const fs::path& d : {paths.dir, paths.runtime, paths.volumes, paths.snapshots}) {
    fs::create_directories(d, ec);
    if (ec) return Error{"create " + d.string() + ": " + ec.message()};
  }
  // Created and Ready hold no VMM: anything recorded is an orphan of an interrupted call.
  if (Status s = EndProcess(options_, LoadRecord(target, paths), paths, target); !s.ok()) return s;
  for (const fs::path& f :
       {paths.vmstate, paths.mem, SpentPath(paths.mem), paths.memDiff, paths.diffOk}) {
    RemovePath(f);
  }
  if (options_.network) {
    uid_t owner = ::geteuid();
    if (options_.useJailer) {
      if (Status s = AcquireJailerUid(options_, target); !s.ok()) return s;
      owner = JailOf(options_, paths.jailId, target).uid;
    } else if (options_.confinement.enabled) {
      Result<uint32_t> uid = confiner_.Uid(paths.dir);
      if (!uid.ok()) return uid.error();
      owner = *uid;
    }
    // Where Firecracker will run: the jailer's --netns for this tenant, else mvmd's own.
    Status tap = InNetns(TapNetns(target), [&]() -> Status {
      if (::if_nametoindex(paths.tap.c_str()) != 0) return {};  // that namespace's view
      return CreateTap(paths.tap, owner);
    });
    if (!tap.ok()) return tap;
  }
  // A fresh copy each time: Prepare also serves Rebuild (a new image revision).
  return SparseCopy(rootfs, paths.disk);
}

Result<VmmHandle> FirecrackerVmm::Launch(const VmmTarget& target, bool restore,
                                         const LoadSource* base) {
  const char* verb = restore && base == nullptr ? "wake" : "start";
  if (Status s = CheckSpec(target); !s.ok()) return s.error();
  const manifests::PoolSpec& spec = *target.spec;
  const Paths paths = PathsFor(target.dir);
  if (!PathExists(paths.disk)) {
    return Error{"instance not prepared: its disk " + paths.disk.string() + " is missing"};
  }
  // A restore loads the instance's own snapshot, or the pool's base (shared, never written).
  const fs::path load_vmstate = base ? base->vmstate : paths.vmstate;
  const fs::path load_mem = base ? base->mem : paths.mem;
  if (restore && !base && !(PathExists(paths.vmstate) && PathExists(paths.mem))) {
    return Error{"no snapshot to wake from (" + paths.vmstate.string() + " is missing)"};
  }
  if (Status s = EndProcess(options_, LoadRecord(target, paths), paths, target); !s.ok()) {
    return s.error();
  }
  std::error_code ec;
  fs::create_directories(paths.runtime, ec);
  RotateLog(paths.console, options_.logRotateBytes);
  RotateLog(paths.vmmLog, options_.logRotateBytes);
  RotateLog(paths.fcLog, options_.logRotateBytes);
  RotateLog(paths.metrics, options_.logRotateBytes);
  for (const fs::path& f : {paths.console, paths.fcLog, paths.metrics}) {
    if (Status s = Touch(f); !s.ok()) return s.error();
  }
  const std::optional<std::string> initrd = GuestInitrd(spec);

  if (options_.useJailer) {
    if (Status s = AcquireJailerUid(options_, target); !s.ok()) return s.error();
  }
  LaunchGuard guard(options_, paths, target);
  VmPaths vm;
  fs::path socket, console = paths.console, metrics = paths.metrics;
  const Jail jail = JailOf(options_, paths.jailId, target);
  if (options_.useJailer) {
    std::vector<JailFile> files = {{spec.image.kernel, "/vmlinux", false},
                                   {paths.disk, "/rootfs.ext4", true},
                                   {paths.console, "/console.log", true},
                                   {paths.fcLog, "/firecracker.log", true},
                                   {paths.metrics, "/metrics.json", true}};
    if (initrd) files.push_back({*initrd, "/initrd", false});
    if (!options_.seccompFilter.empty()) {
      files.push_back({options_.seccompFilter, kJailSeccompFilter, false});
    }
    if (restore) {
      // The base is linked into every jail of the pool: readable, never chowned.
      files.push_back({load_vmstate, "/snapshot/vmstate", base == nullptr});
      files.push_back({load_mem, "/snapshot/mem", base == nullptr});
    }
    if (Status s = LayoutJail(jail, files); !s.ok())
      return Error{std::string(verb) + ": " + s.error().message};
    if (!options_.jailer.cgroupRoot.empty()) {
      // The jailer makes its leaf in --parent-cgroup; the tenant's level, with the tenant's
      // quota, is mvm's to provide (docs/security.md).
      ConfinementOptions tenant_level = options_.confinement;
      tenant_level.cgroupHierarchy = options_.jailer.cgroupRoot;
      tenant_level.cgroupSlice = options_.jailer.parentCgroup;
      tenant_level.memoryOverheadMiB = kMemoryOverheadMiB;
      tenant_level.pidsMax = kPidsMax;
      Result<runtime::CgroupLeaf> parent = Confiner(tenant_level).PrepareTenant(target);
      if (!parent.ok()) return Error{std::string(verb) + ": " + parent.error().message};
    }
    vm = {"/vmlinux",         initrd ? "/initrd" : "", "/rootfs.ext4",
          "/firecracker.log", "/metrics.json",         "/console.log",
          "/v.sock",          "/snapshot/vmstate",     "/snapshot/mem"};
    socket = jail.socket;
    // A copy instead of a link (another file system): watch the jail's own file.
    if (!SameFile(paths.console, jail.root / "console.log")) console = jail.root / "console.log";
    if (!SameFile(paths.metrics, jail.root / "metrics.json")) metrics = jail.root / "metrics.json";
  } else {
    RemovePath(paths.sockets);
    fs::create_directories(paths.sockets, ec);
    if (ec) return Error{"create " + paths.sockets.string() + ": " + ec.message()};
    fs::permissions(paths.sockets, fs::perms::owner_all, ec);
    // A pool base's drive is relative to the VMM's working directory (the instance's own
    // directory): the one snapshot then names each instance's own disk (snapshot/load cannot
    // override drive paths).
    vm = {spec.image.kernel,
          initrd.value_or(""),
          spec.snapshot.base ? paths.disk.lexically_relative(paths.dir).string()
                             : paths.disk.string(),
          paths.fcLog.string(),
          paths.metrics.string(),
          paths.console.string(),
          (paths.sockets / "v.sock").string(),
          load_vmstate.string(),
          load_mem.string()};
    socket = paths.sockets / "api.sock";
  }

  const auto t0 = Clock::now();
  const auto deadline = t0 + options_.bootTimeout;
  const uintmax_t console_from = FileSize(console);
  // Firecracker's stdout is the serial console, except under a jailer that daemonizes (stdio on
  // /dev/null): that one gets PUT /serial, and its own output goes to vmm.log.
  const bool serial_api = options_.useJailer && options_.jailer.daemonize;
  const fs::path out = serial_api ? paths.vmmLog : paths.console;
  std::optional<Confinement> confined;
  if (!options_.useJailer && options_.confinement.enabled) {
    std::vector<fs::path> shared;
    if (restore && base) shared = {load_vmstate, load_mem};
    Result<Confinement> c = ConfineDirect(confiner_, options_, target, paths, initrd, shared);
    if (!c.ok()) return Error{std::string(verb) + ": " + c.error().message};
    // Its directory is at its host path in the jail too: a pool base's relative drive path
    // (volumes/rootfs.ext4) resolves there as without the jail.
    c->jail.workDir = paths.dir;
    confined.emplace(std::move(*c));
  }
  Result<ProcessIdentity> spawned =
      SpawnDetached({CommandLine(target), out, paths.dir,
                     confined ? std::optional<JailSpec>(confined->jail) : std::nullopt});
  if (!spawned.ok()) return Error{std::string(verb) + ": " + spawned.error().message};
  guard.Track(*spawned);
  ProcessIdentity id = *spawned;
  auto fail = [&](const std::string& why) -> Error {
    bool exited = WaitForExit(id, milliseconds(300));
    return Error{std::string(restore ? "restore failed: " : "guest never reported ready: ") + why +
                 (exited ? " (firecracker exited)" : "") + " after " +
                 SecondsText(Clock::now() - t0) + Tails(paths, console)};
  };
  if (options_.useJailer) {
    Result<ProcessIdentity> fc = WaitForPidFile(jail.pidFile, id, deadline);
    if (!fc.ok()) return fail(fc.error().message);
    id = *fc;
    guard.Track(id);
  }

  Json::Value record;
  record["pid"] = Json::Int64(id.pid);
  record["startTime"] = Json::UInt64(id.startTime);
  record["socket"] = socket.string();
  record["id"] = paths.jailId;
  record["tenant"] = target.key.tenant;
  if (options_.useJailer) {
    record["jailId"] = paths.jailId;
    record["jail"] = jail.root.string();
    record["uid"] = jail.uid;
  }
  record["confinement"] = confined             ? confined->describe
                          : options_.useJailer ? JailerDescribe(options_, jail)
                                               : Json::Value("off");
  record["console"] = console.string();
  record["metrics"] = metrics.string();
  if (options_.network) record["tap"] = paths.tap;
  // Written before waiting, so that a crash of mvmd during the boot leaves a findable process.
  if (Status s = WriteFileAtomic(paths.record, JsonLine(record)); !s.ok()) return s.error();

  auto alive = [&id] { return IsAlive(id); };
  // The API socket answers once Firecracker is up.
  FirecrackerApi api(socket.string(), options_.apiTimeout);
  for (;;) {
    FirecrackerApi probe(socket.string(), Left(deadline, milliseconds(500)));
    if (PathExists(socket) && probe.Call("GET", "/", "").ok()) break;
    if (!alive()) return fail("the API socket never answered");
    if (Clock::now() >= deadline)
      return fail("the API socket " + socket.string() + " never answered");
    std::this_thread::sleep_for(milliseconds(20));
  }
  auto put = [&](const std::string& path, const Json::Value& body) {
    return api.Call("PUT", path, JsonLine(body));
  };
  auto step = [&](Result<FirecrackerReply> r) -> Status {
    if (!r.ok()) return r.error();
    return {};
  };
  if (Status s = step(put("/logger", Body({{"log_path", vm.log},
                                           {"level", "Info"},
                                           {"show_level", true},
                                           {"show_log_origin", false}})));
      !s.ok()) {
    return fail(s.error().message);
  }
  if (Status s = step(put("/metrics", Body({{"metrics_path", vm.metrics}}))); !s.ok()) {
    return fail(s.error().message);
  }

  std::string boot_id;
  if (!restore) {
    Result<std::string> cmdline = GuestCmdline(target, {{}, "reboot"});
    if (!cmdline.ok()) return cmdline.error();
    Json::Value boot = Body({{"kernel_image_path", vm.kernel}, {"boot_args", *cmdline}});
    if (!vm.initrd.empty()) boot["initrd_path"] = vm.initrd;
    std::vector<std::pair<std::string, Json::Value>> steps;
    if (serial_api) steps.push_back({"/serial", Body({{"serial_out_path", vm.console}})});
    steps.push_back({"/boot-source", boot});
    steps.push_back(
        {"/machine-config", Body({{"vcpu_count", spec.resources.vcpus},
                                  {"mem_size_mib", Json::Int64(spec.resources.memoryMiB)},
                                  {"smt", false},
                                  {"track_dirty_pages", false}})});
    steps.push_back({"/drives/rootfs", Body({{"drive_id", "rootfs"},
                                             {"path_on_host", vm.disk},
                                             {"is_root_device", true},
                                             {"is_read_only", false}})});
    if (options_.network) {
      const std::string hash = paths.jailId.substr(4);
      steps.push_back({"/network-interfaces/eth0", Body({{"iface_id", "eth0"},
                                                         {"host_dev_name", paths.tap},
                                                         {"guest_mac", GuestMac(hash)}})});
      Json::Value ifaces(Json::arrayValue);
      ifaces.append("eth0");
      steps.push_back({"/mmds/config", Body({{"version", "V2"}, {"network_interfaces", ifaces}})});
      Json::Value meta;
      meta["mvm"]["tenant"] = target.key.tenant;
      meta["mvm"]["pool"] = target.pool;
      meta["mvm"]["instance"] = target.key.name;
      steps.push_back({"/mmds", meta});
    }
    steps.push_back({"/vsock", Body({{"guest_cid", 3}, {"uds_path", vm.vsock}})});
    steps.push_back({"/actions", Body({{"action_type", "InstanceStart"}})});
    for (const auto& [path, body] : steps) {
      if (Status s = step(put(path, body)); !s.ok()) return fail(s.error().message);
    }
    Result<std::string> ready = WaitForConsole(
        console, console_from, "MVM-READY ",
        spec.lifecycle == manifests::Lifecycle::kJob ? "" : "MVM-EXIT ", deadline, alive);
    if (!ready.ok()) return fail(ready.error().message);
    boot_id = *ready;
  } else {
    Json::Value load =
        Body({{"snapshot_path", vm.vmstate},
              {"mem_backend", Body({{"backend_type", "File"}, {"backend_path", vm.mem}})},
              {"resume_vm", true},
              // A pool base's instances sleep as Diffs: pages written from here on.
              {"track_dirty_pages", spec.snapshot.base}});
    if (options_.network) {
      Json::Value overrides(Json::arrayValue);
      overrides.append(Body({{"iface_id", "eth0"}, {"host_dev_name", paths.tap}}));
      load["network_overrides"] = overrides;
    }
    // The base names the template's vsock socket; without the jailer each instance has its own.
    if (base && !options_.useJailer) load["vsock_override"] = Body({{"uds_path", vm.vsock}});
    Result<FirecrackerReply> loaded =
        api.Call("PUT", "/snapshot/load", JsonLine(load), Left(deadline, options_.snapshotTimeout));
    if (!loaded.ok()) return fail(loaded.error().message);
    Result<std::string> state = api.State();
    if (!state.ok()) return fail(state.error().message);
    if (*state != "Running") return fail("the VM is \"" + *state + "\" after loading the snapshot");
    if (base) {
      boot_id = base->bootId;
      if (options_.network) {
        // The MMDS data store is not part of a snapshot: this instance's own metadata.
        Json::Value meta;
        meta["mvm"]["tenant"] = target.key.tenant;
        meta["mvm"]["pool"] = target.pool;
        meta["mvm"]["instance"] = target.key.name;
        if (Status s = step(put("/mmds", meta)); !s.ok()) return fail(s.error().message);
      }
    } else if (std::optional<Json::Value> old = ParseJsonObject(target.handle.data)) {
      boot_id = (*old)["bootId"].asString();
    }
  }

  const auto took = Clock::now() - t0;
  record["bootId"] = boot_id;
  record[restore ? "wakeMs" : "bootMs"] =
      Json::Int64(std::chrono::duration_cast<milliseconds>(took).count());
  const std::string data = JsonLine(record);
  if (Status s = WriteFileAtomic(paths.record, data); !s.ok()) return s.error();
  guard.Commit();
  spdlog::info("firecracker: {} {} in {} (pid {})", target.key.ToString(),
               base      ? "started from the pool base"
               : restore ? "woke"
                         : "ready",
               SecondsText(took), id.pid);
  VmmHandle handle;
  handle.pid = id.pid;
  handle.startTime = id.startTime;
  handle.socket = socket.string();
  handle.data = data;
  return handle;
}

namespace {

// Every file of an instance's snapshot, complete or not (the base-key reference excepted).
std::vector<fs::path> SnapshotFiles(const FirecrackerVmm::Paths& paths) {
  std::vector<fs::path> out;
  for (const fs::path& f : {paths.vmstate, paths.mem, paths.memDiff}) {
    out.push_back(f);
    out.push_back(f.string() + ".partial");
  }
  out.push_back(paths.diffOk);
  out.push_back(paths.mem.string() + ".rebase");
  out.push_back(paths.snapshots / "diff.new");
  out.push_back(paths.vmstate.string() + ".pending");
  return out;
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// The template instance that builds a pool's base: its own directory, the pool's spec, named
// after the pool (its hostname is what every instance restored from the base has).
VmmTarget TemplateOf(const VmmTarget& target, const fs::path& dir) {
  VmmTarget t{{target.key.tenant, target.pool}, target.pool, target.spec, dir, {}};
  t.tenantQuota = target.tenantQuota;
  return t;
}

}  // namespace

Result<VmmHandle> FirecrackerVmm::Start(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  // A fresh boot: a snapshot left by an interrupted Sleep is stale.
  for (const fs::path& f : SnapshotFiles(paths)) RemovePath(f);
  if (target.spec == nullptr || !target.spec->snapshot.base) return Launch(target, false);
  Result<LoadSource> base = AcquireBase(target);
  if (!base.ok()) return Error{"pool base snapshot: " + base.error().message};
  // The guest's memory (page cache, file system state) belongs to the template's disk as it
  // was at the snapshot: the instance starts on a copy of that disk, never on another.
  if (Status s = CloneFile(base->disk, paths.disk); !s.ok()) {
    return Error{"pool base snapshot: " + s.error().message};
  }
  Result<VmmHandle> handle = Launch(target, true, &*base);
  if (!handle.ok()) return handle;
  // Dirty pages are tracked from the base: the first Sleep may be a Diff.
  if (Status s = WriteFileAtomic(paths.diffOk, "base\n"); !s.ok()) {
    spdlog::warn("firecracker: {}: {}; its next Sleep takes a Full snapshot", target.key.ToString(),
                 s.error().message);
  }
  return handle;
}

Result<FirecrackerVmm::LoadSource> FirecrackerVmm::AcquireBase(const VmmTarget& target) {
  if (Status s = CheckSpec(target); !s.ok()) return s.error();
  const Paths paths = PathsFor(target.dir);
  const VmmTarget tmpl = TemplateOf(target, paths.dir);
  Result<std::string> cmdline = GuestCmdline(tmpl, {{}, "reboot"});
  if (!cmdline.ok()) return cmdline.error();
  const manifests::PoolSpec& spec = *target.spec;
  std::vector<fs::path> files = {spec.image.kernel, spec.image.rootfs, options_.binary};
  if (std::optional<std::string> initrd = GuestInitrd(spec)) files.push_back(*initrd);
  const std::string key = BaseKey({files, *cmdline, spec.resources.vcpus, spec.resources.memoryMiB,
                                   options_.useJailer, options_.network});
  const fs::path root = PoolBaseRoot(paths.dir);
  Result<BaseLock> lock = BaseLock::Acquire(root);
  if (!lock.ok()) return lock.error();
  const fs::path dir = root / key;
  if (!PathExists(dir / "template.json")) {
    if (Status s = CreateBase(target, key, root); !s.ok()) return s.error();
  }
  Result<std::string> info = ReadSmallFile(dir / "template.json");
  std::optional<Json::Value> json = info.ok() ? ParseJsonObject(*info) : std::nullopt;
  if (!json) return Error{"base " + dir.string() + " has no readable template.json"};
  // Recorded under the lock, so that no collection removes the base from under this instance.
  std::error_code ec;
  fs::create_directories(paths.snapshots, ec);
  if (Status s = WriteFileAtomic(paths.baseKey, key + "\n"); !s.ok()) return s.error();
  CollectBases(target, key);
  return LoadSource{dir / "vmstate", dir / "mem", dir / "disk", (*json)["bootId"].asString()};
}

Status FirecrackerVmm::CreateBase(const VmmTarget& target, const std::string& key,
                                  const fs::path& root) {
  const auto t0 = Clock::now();
  const fs::path dir = root / key;
  const VmmTarget tmpl = TemplateOf(target, root / ("build-" + key));
  const Paths tp = PathsFor(tmpl.dir);
  // Whatever happens, the template instance (process, jail, TAP, directory) goes.
  auto discard = [&] {
    if (Status s = Destroy(tmpl); !s.ok())
      spdlog::warn("firecracker: base {}: {}", key, s.error().message);
  };
  discard();  // the leftovers of an interrupted creation
  RemovePath(dir);
  auto failed = [&](const std::string& step, const Error& e) -> Status {
    discard();
    RemovePath(dir);
    return Error{"creating the pool's base (template VM " + tp.jailId + ") failed at " + step +
                 ": " + e.message};
  };
  if (Status s = Prepare(tmpl); !s.ok()) return failed("prepare", s.error());
  Result<VmmHandle> booted = Launch(tmpl, false);
  if (!booted.ok()) return failed("boot", booted.error());
  VmmTarget live = tmpl;
  live.handle = *booted;
  if (Status s = Pause(live); !s.ok()) return failed("pause", s.error());
  // A Full snapshot (the template never has diff-ok), then the process ends.
  if (Status s = Sleep(live); !s.ok()) return failed("snapshot", s.error());
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return failed("store", Error{"create " + dir.string() + ": " + ec.message()});
  for (const auto& [from, to] :
       {std::pair{tp.mem, dir / "mem"}, {tp.disk, dir / "disk"}, {tp.vmstate, dir / "vmstate"}}) {
    if (Status s = MoveFile(from, to); !s.ok()) return failed("store", s.error());
    // Never written again: every jail of the pool links vmstate and mem (Firecracker maps the
    // memory privately), each instance starts on its own copy of the disk.
    fs::permissions(to, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read, ec);
  }
  Json::Value info;
  info["bootId"] = (*ParseJsonObject(booted->data))["bootId"];
  info["key"] = key;
  info["pool"] = target.key.tenant + "/" + target.pool;
  info["createdMs"] =
      Json::Int64(std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count());
  if (Status s = WriteFileAtomic(dir / "template.json", JsonLine(info)); !s.ok()) {
    return failed("store", s.error());
  }
  discard();
  spdlog::info("firecracker: pool {}/{} base snapshot {} created in {} ({} bytes of memory)",
               target.key.tenant, target.pool, key, SecondsText(Clock::now() - t0),
               FileSize(dir / "mem"));
  return {};
}

void FirecrackerVmm::CollectBases(const VmmTarget& target, const std::string& keep) {
  const fs::path root = PoolBaseRoot(PathsFor(target.dir).dir);
  const std::set<std::string> used = BasesInUse(PathsFor(target.dir).dir.parent_path());
  std::error_code ec;
  std::vector<fs::path> entries;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    entries.push_back(it->path());
  }
  for (const fs::path& e : entries) {
    const std::string name = e.filename().string();
    if (name == "lock" || name == keep) continue;
    if (name.rfind("build-", 0) == 0) {
      (void)Destroy(TemplateOf(target, e));  // no creation runs: this thread holds the lock
    } else if (used.count(name) == 0) {
      spdlog::info("firecracker: pool {}/{}: base snapshot {} is no longer used, removed",
                   target.key.tenant, target.pool, name);
      RemovePath(e);
    }
  }
}

Result<VmmHandle> FirecrackerVmm::Wake(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  // Asleep as a Diff of the pool's base: rebuild the memory file from both.
  const bool rebase = PathExists(paths.memDiff) && PathExists(paths.vmstate);
  if (rebase) {
    Result<std::string> key = ReadSmallFile(paths.baseKey);
    const fs::path base =
        PoolBaseRoot(paths.dir) / (key.ok() ? Trimmed(*key) : std::string("?")) / "mem";
    if (!key.ok() || !PathExists(base)) {
      return Error{"wake: the pool base snapshot this instance sleeps on (" + base.string() +
                   ") is gone: stop the instance (discarding its snapshot) and start it"};
    }
    if (Status s = RebaseMemory(base, paths.memDiff, paths.mem); !s.ok()) {
      return Error{"wake: " + s.error().message};
    }
  }
  Result<VmmHandle> handle = Launch(target, true);
  // The rebased file can be made again; the running VM maps its own (private) copy. Unlinking
  // a whole guest's memory takes tens of ms: set aside at once, removed off the wake's path.
  if (rebase || handle.ok()) RemoveAside(paths.mem);
  if (handle.ok()) {
    RemovePath(paths.vmstate);
    // Dirty pages are tracked from base + mem.diff: the next Sleep may be a Diff.
    if (rebase) (void)WriteFileAtomic(paths.diffOk, "rebased\n");
  }
  return handle;
}

namespace {

Result<FirecrackerApi> ConnectLive(const Record& record, milliseconds timeout) {
  if (record.id.empty()) return Error{"no VMM process recorded"};
  if (!IsAlive(record.id)) {
    return Error{"firecracker pid " + std::to_string(record.id.pid) + " is gone"};
  }
  return FirecrackerApi(record.socket, timeout);
}

Status SetVmState(const FirecrackerApi& api, const std::string& want, const std::string& expect) {
  if (Result<FirecrackerReply> r = api.Call("PATCH", "/vm", JsonLine(Body({{"state", want}})));
      !r.ok()) {
    return r.error();
  }
  Result<std::string> state = api.State();
  if (!state.ok()) return state.error();
  if (*state != expect) {
    return Error{"after PATCH /vm " + want + " the VM is \"" + *state + "\", not \"" + expect +
                 "\""};
  }
  return {};
}

}  // namespace

Status FirecrackerVmm::SetState(const VmmTarget& target, const std::string& verb,
                                const std::string& want, const std::string& expect) {
  Result<FirecrackerApi> api =
      ConnectLive(LoadRecord(target, PathsFor(target.dir)), options_.apiTimeout);
  if (!api.ok()) return Error{verb + ": " + api.error().message};
  if (Status s = SetVmState(*api, want, expect); !s.ok()) {
    return Error{verb + ": " + s.error().message};
  }
  return {};
}

Status FirecrackerVmm::Pause(const VmmTarget& target) {
  return SetState(target, "pause", "Paused", "Paused");
}

Status FirecrackerVmm::Resume(const VmmTarget& target) {
  return SetState(target, "resume", "Resumed", "Running");
}

Status FirecrackerVmm::Sleep(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  const Record record = LoadRecord(target, paths);
  auto complete = [&paths] {
    return PathExists(paths.vmstate) && (PathExists(paths.mem) || PathExists(paths.memDiff));
  };
  // A Diff lands as diff.new + vmstate.pending, is merged into mem.diff (the pages written
  // since the pool's base), then vmstate.pending becomes vmstate.
  const fs::path diff = paths.snapshots / "diff.new";
  const fs::path vmstate_pending = paths.vmstate.string() + ".pending";
  // A complete Diff snapshot not yet merged (a crash in between).
  const bool diff_pending =
      PathExists(vmstate_pending) && (PathExists(diff) || PathExists(paths.memDiff));
  // Merges the Diff (idempotent) and completes the snapshot.
  auto apply_diff = [&]() -> Status {
    if (PathExists(diff)) {
      if (PathExists(paths.memDiff)) {
        if (Status s = MergeDiff(diff, paths.memDiff); !s.ok()) return s;
        RemovePath(diff);
      } else if (Status s = MoveFile(diff, paths.memDiff); !s.ok()) {
        return s;
      }
    }
    std::error_code rename_ec;
    fs::rename(vmstate_pending, paths.vmstate, rename_ec);
    if (rename_ec) return Error{"rename " + vmstate_pending.string() + ": " + rename_ec.message()};
    return {};
  };
  if (!IsAlive(record.id)) {
    // Repeated after a crash that came after the snapshot: done already, or nearly.
    if (diff_pending) {
      if (Status s = apply_diff(); !s.ok()) return Error{"sleep: " + s.error().message};
    }
    if (complete()) return EndProcess(options_, record, paths, target);
    return Error{"sleep: no VMM process and no snapshot"};
  }
  const auto t0 = Clock::now();
  Result<FirecrackerApi> api = ConnectLive(record, options_.apiTimeout);
  if (!api.ok()) return Error{"sleep: " + api.error().message};
  Result<std::string> state = api->State();
  if (!state.ok()) return Error{"sleep: " + state.error().message};
  if (*state == "Running") {
    if (Status s = SetVmState(*api, "Paused", "Paused"); !s.ok()) {
      return Error{"sleep: " + s.error().message};
    }
  }
  std::error_code ec;
  fs::create_directories(paths.snapshots, ec);
  const fs::path vmstate_partial = paths.vmstate.string() + ".partial";
  const fs::path mem_partial = paths.mem.string() + ".partial";
  std::string type = "Full";
  if (diff_pending) {
    type = "Diff";
  } else {
    // A Diff only while this process tracks dirty pages from the pool's base + mem.diff
    // (diff-ok, written by Start and Wake); any earlier attempt consumed it, since Firecracker
    // resets dirty tracking per snapshot. Otherwise Full, which leaves the base.
    const bool diff_ok = PathExists(paths.diffOk) && PathExists(paths.baseKey);
    RemovePath(paths.diffOk);
    if (diff_ok) type = "Diff";
    for (const fs::path& f : {paths.vmstate, vmstate_partial, mem_partial, diff, vmstate_pending}) {
      RemovePath(f);
    }
    if (!diff_ok) {
      RemovePath(paths.mem);
      RemovePath(paths.memDiff);
    }
    fs::path written_vmstate = vmstate_partial, written_mem = mem_partial;
    std::string vm_vmstate = vmstate_partial.string(), vm_mem = mem_partial.string();
    if (!record.jailId.empty()) {
      const fs::path root = JailOf(options_, record.jailId, target).root;
      written_vmstate = root / "snapshot" / "vmstate.new";
      written_mem = root / "snapshot" / "mem.new";
      RemovePath(written_vmstate);
      RemovePath(written_mem);
      vm_vmstate = "/snapshot/vmstate.new";
      vm_mem = "/snapshot/mem.new";
    }
    Json::Value body =
        Body({{"snapshot_type", type}, {"snapshot_path", vm_vmstate}, {"mem_file_path", vm_mem}});
    Result<FirecrackerReply> created =
        api->Call("PUT", "/snapshot/create", JsonLine(body), options_.snapshotTimeout);
    auto discard = [&] {
      for (const fs::path& f :
           {written_vmstate, written_mem, vmstate_partial, mem_partial, diff, vmstate_pending}) {
        RemovePath(f);
      }
      if (type == "Full") RemovePath(paths.mem);
    };
    if (!created.ok()) {
      discard();
      return Error{"sleep: " + created.error().message};
    }
    // Full: mem, then vmstate; Diff: the diff and the state aside, applied below. vmstate
    // present means the snapshot is complete.
    const std::vector<std::pair<fs::path, fs::path>> moves =
        type == "Full"
            ? std::vector<std::pair<fs::path, fs::path>>{{written_mem, paths.mem},
                                                         {written_vmstate, paths.vmstate}}
            : std::vector<std::pair<fs::path, fs::path>>{{written_mem, diff},
                                                         {written_vmstate, vmstate_pending}};
    for (const auto& [from, to] : moves) {
      if (Status s = MoveFile(from, to); !s.ok()) {
        discard();
        return Error{"sleep: " + s.error().message};
      }
    }
  }
  if (type == "Diff") {
    if (Status s = apply_diff(); !s.ok()) return Error{"sleep: " + s.error().message};
  }
  const auto saved = Clock::now() - t0;
  if (Status s = EndProcess(options_, record, paths, target); !s.ok()) {
    return Error{"sleep: " + s.error().message};
  }
  spdlog::info("firecracker: {} asleep: {} snapshot in {} ({} + {} bytes), process ended after {}",
               target.key.ToString(), type, SecondsText(saved), FileSize(paths.vmstate),
               FileSize(type == "Diff" ? paths.memDiff : paths.mem),
               SecondsText(Clock::now() - t0));
  return {};
}

Status FirecrackerVmm::Stop(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  const Record record = LoadRecord(target, paths);
  const int64_t graceful = target.spec ? target.spec->policy.gracefulStopSeconds : 15;
  if (IsAlive(record.id)) {
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::seconds(graceful);
    std::string how = "SIGKILL";
    bool exited = false;
    if (graceful > 0) {
      FirecrackerApi api(record.socket, Left(deadline, options_.apiTimeout));
      // A paused guest cannot hear Ctrl-Alt-Del: let it run to shut down cleanly.
      Result<std::string> state = api.State();
      if (state.ok() && *state == "Paused") {
        (void)api.Call("PATCH", "/vm", JsonLine(Body({{"state", "Resumed"}})));
      }
      if (api.Call("PUT", "/actions", JsonLine(Body({{"action_type", "SendCtrlAltDel"}}))).ok()) {
        how = "SendCtrlAltDel";
        exited = WaitForExit(record.id, Left(deadline, std::chrono::hours(24)));
      }
      if (!exited) {
        SignalProcess(record.id, SIGTERM);
        exited = WaitForExit(record.id, kTermWait);
        how += exited ? ", then SIGTERM" : "";
      }
    }
    if (!exited) {
      if (!KillAndWait(record.id, kKillWait)) {
        return Error{"stop: firecracker pid " + std::to_string(record.id.pid) +
                     " survived SIGKILL"};
      }
      if (graceful > 0)
        how += ", then SIGTERM, then SIGKILL after " + std::to_string(graceful) + "s";
    }
    spdlog::info("firecracker: {} stopped in {} ({})", target.key.ToString(),
                 SecondsText(Clock::now() - t0), how);
  }
  if (Status s = EndProcess(options_, record, paths, target); !s.ok()) {
    return Error{"stop: " + s.error().message};
  }
  // The snapshot goes; base-key stays (this instance's claim on the pool's base until Destroy).
  for (const fs::path& f : SnapshotFiles(paths)) RemovePath(f);
  return {};
}

Status FirecrackerVmm::Destroy(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  if (Status s = EndProcess(options_, LoadRecord(target, paths), paths, target); !s.ok()) {
    return Error{"destroy: " + s.error().message};
  }
  if (options_.network) {
    Status gone = InNetns(TapNetns(target), [&] {
      DeleteTap(paths.tap);
      return Status{};
    });
    if (!gone.ok())
      spdlog::warn("firecracker: {}: {}", target.key.ToString(), gone.error().message);
  }
  if (options_.confinement.enabled) {
    if (Status s = confiner_.Release(target, paths.dir, true); !s.ok()) {
      return Error{"destroy: " + s.error().message};
    }
  }
  if (options_.useJailer) {
    if (Status s = JailerUids(options_).Release(paths.dir.string()); !s.ok()) {
      return Error{"destroy: jailer uid: " + s.error().message};
    }
  }
  const bool used_base = PathExists(paths.baseKey);
  if (Status s = RemoveInstanceDir(paths.dir); !s.ok()) return s;
  // The last instance to use a base takes it along.
  if (used_base && target.spec != nullptr) {
    Result<BaseLock> lock = BaseLock::Acquire(PoolBaseRoot(paths.dir));
    if (lock.ok()) CollectBases(target, "");
  }
  return {};
}

namespace {

// FlushMetrics, then the newest line of the metrics file, also written to metrics-summary.json.
Result<FirecrackerMetrics> FlushAndSummarise(const FirecrackerApi& api, const Record& record,
                                             const FirecrackerVmm::Paths& paths) {
  if (Result<FirecrackerReply> r =
          api.Call("PUT", "/actions", JsonLine(Body({{"action_type", "FlushMetrics"}})));
      !r.ok()) {
    return Error{"metrics: " + r.error().message};
  }
  Result<FirecrackerMetrics> m = ReadLatestMetrics(record.metrics);
  if (!m.ok()) return Error{"metrics: " + m.error().message};
  (void)WriteFileAtomic(paths.metricsSummary, JsonLine(MetricsSummaryJson(*m)));
  return m;
}

}  // namespace

ProbeResult FirecrackerVmm::Probe(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  const Record record = LoadRecord(target, paths);
  ProbeResult result;
  result.snapshot =
      PathExists(paths.vmstate) && (PathExists(paths.mem) || PathExists(paths.memDiff));
  Result<FirecrackerApi> api = ConnectLive(record, options_.apiTimeout);
  if (!api.ok()) {
    result.detail = api.error().message;
    return result;
  }
  Result<std::string> state = api->State();
  if (!state.ok()) {
    result.detail = "firecracker pid " + std::to_string(record.id.pid) +
                    " does not answer: " + state.error().message;
    return result;
  }
  result.alive = true;
  if (*state == "Running") result.observed = InstanceState::kRunning;
  if (*state == "Paused") result.observed = InstanceState::kWarm;
  result.handle.pid = record.id.pid;
  result.handle.startTime = record.id.startTime;
  result.handle.socket = record.socket;
  result.handle.data = record.data;
  result.detail = "firecracker pid " + std::to_string(record.id.pid) + " is " + *state;
  // Each probe also refreshes the metrics summary that describe shows (best effort: a VMM
  // without metrics is still alive).
  if (Result<FirecrackerMetrics> m = FlushAndSummarise(*api, record, paths); m.ok()) {
    result.detail += "; vcpu exits " + std::to_string(m->vcpuExits) + ", block " +
                     std::to_string(m->blockReadBytes) + "/" + std::to_string(m->blockWriteBytes) +
                     " bytes read/written";
  }
  return result;
}

Result<FirecrackerMetrics> FirecrackerVmm::Metrics(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  const Record record = LoadRecord(target, paths);
  Result<FirecrackerApi> api = ConnectLive(record, options_.apiTimeout);
  if (!api.ok()) return Error{"metrics: " + api.error().message};
  return FlushAndSummarise(*api, record, paths);
}

}  // namespace mvm::runtime
