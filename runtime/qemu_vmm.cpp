#include "runtime/qemu_vmm.h"

#include <json/reader.h>
#include <json/writer.h>
#include <spdlog/spdlog.h>

#include <unistd.h>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <optional>
#include <thread>

#include "runtime/disk.h"
#include "runtime/driver_util.h"
#include "runtime/files.h"
#include "runtime/guest_ctl.h"
#include "runtime/qmp_client.h"
#include "runtime/seccomp_profile.h"

namespace mvm::runtime {
namespace {

using namespace driver;  // NOLINT(google-build-using-namespace): runtime/driver_util.h

int64_t Millis(Clock::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

// qemu option lists split on ',': a literal comma is written twice.
std::string OptEscape(const std::string& value) {
  std::string out;
  for (char c : value) {
    out.push_back(c);
    if (c == ',') out.push_back(',');
  }
  return out;
}

uint64_t HostTscKhz() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("cpu MHz", 0) != 0) continue;
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    double mhz = std::strtod(line.c_str() + colon + 1, nullptr);
    if (mhz > 0) return static_cast<uint64_t>(std::llround(mhz * 1000));
  }
  return 0;
}

// A woken instance's snapshot is spent: RemoveAside (driver_util) renames it aside at once, so
// Probe no longer sees a snapshot, and unlinks it off the action's path. A copy left by a
// restart in between goes with the next Sleep, Stop, Start, Prepare or Destroy (SpentPath).

// What the driver knows of an instance's VMM process: qemu.json when present (the truth on this
// host), else the handle the controller recorded.
struct Record {
  ProcessIdentity id;
  fs::path sockets, qmp, ctl;
  std::string bootId;
  std::string data;  // the record's JSON line, as VmmHandle::data holds it
};

Record LoadRecord(const VmmTarget& target, const QemuVmm::Paths& paths) {
  Record r;
  r.sockets = paths.sockets;
  r.qmp = paths.qmp;
  r.ctl = paths.ctl;
  std::optional<Json::Value> json;
  if (Result<std::string> text = ReadSmallFile(paths.record); text.ok()) {
    json = ParseJsonObject(*text);
    if (json) r.data = *text;
  }
  if (json) {
    r.id = {(*json)["pid"].asInt64(), (*json)["startTime"].asUInt64()};
  } else if (!target.handle.empty()) {
    r.id = {target.handle.pid, target.handle.startTime};
    json = ParseJsonObject(target.handle.data);
    if (json) r.data = target.handle.data;
    if (!target.handle.socket.empty()) r.qmp = target.handle.socket;
  }
  if (json) {
    if ((*json)["sockets"].isString()) r.sockets = (*json)["sockets"].asString();
    if ((*json)["qmp"].isString()) r.qmp = (*json)["qmp"].asString();
    if ((*json)["ctl"].isString()) r.ctl = (*json)["ctl"].asString();
    r.bootId = (*json)["bootId"].asString();
  }
  return r;
}

// Removes a socket directory named in a record: only what the driver puts there, and only in a
// directory with the driver's naming, so a damaged record can never widen the removal.
void RemoveSocketDir(const fs::path& dir) {
  const std::string name = dir.filename().string();
  if (name.size() != 12 || name.find_first_not_of("0123456789abcdef") != std::string::npos) return;
  std::error_code ec;
  fs::remove(dir / "qmp.sock", ec);
  fs::remove(dir / "ctl.sock", ec);
  fs::remove(dir, ec);  // fails, harmlessly, if anything else is in it
}

// Ends whatever process the record names (SIGKILL, verified by start time) and removes the
// record and the socket directories. Error only when the process survives SIGKILL.
Status EndProcess(const Record& record, const QemuVmm::Paths& paths) {
  if (IsAlive(record.id) && !KillAndWait(record.id, kKillWait)) {
    return Error{"qemu pid " + std::to_string(record.id.pid) + " survived SIGKILL"};
  }
  RemoveSocketDir(record.sockets);
  RemovePath(paths.sockets);
  RemovePath(paths.record);
  return {};
}

std::string Tails(const QemuVmm::Paths& paths) {
  std::string out;
  std::string qemu = TailLines(paths.qemuLog, 5);
  if (!qemu.empty()) out += "\n--- qemu log (tail) ---\n" + qemu;
  std::string console = TailLines(paths.console, kTailLines);
  out += "\n--- console (last " + std::to_string(kTailLines) + " lines) ---\n" +
         (console.empty() ? std::string("(empty)") : console);
  return out;
}

// "; killed by seccomp (profile forbids SYSCALL)" when the kernel log says so (docs/security.md:
// it does while auditing is on), else nothing.
std::string SeccompNote(int64_t pid) {
  if (pid <= 0) return {};
  std::optional<std::string> call = FindSeccompKill(pid);
  if (!call) return {};
  return "; killed by seccomp: the pool's profile forbids " + *call;
}

// Kills the process and removes its sockets and record unless Commit() was called: every failure
// path of Launch leaves nothing running.
class LaunchGuard {
 public:
  LaunchGuard(const QemuVmm::Paths& paths, fs::path sockets)
      : paths_(paths), sockets_(std::move(sockets)) {}
  LaunchGuard(const LaunchGuard&) = delete;
  LaunchGuard& operator=(const LaunchGuard&) = delete;
  ~LaunchGuard() {
    if (committed_) return;
    if (!id_.empty()) KillAndWait(id_, kKillWait);
    if (release_) release_();
    RemovePath(sockets_);
    RemovePath(paths_.record);
  }
  void Track(ProcessIdentity id) { id_ = id; }
  void OnFailure(std::function<void()> release) { release_ = std::move(release); }
  void Commit() { committed_ = true; }

 private:
  const QemuVmm::Paths& paths_;
  fs::path sockets_;
  ProcessIdentity id_;
  std::function<void()> release_;
  bool committed_ = false;
};

}  // namespace

Result<QemuOptions> QemuOptionsFromEnv(QemuOptions o) {
  if (EnvSet("MVM_QEMU_BINARY")) o.binary = std::getenv("MVM_QEMU_BINARY");
  if (EnvSet("MVM_QEMU_ACCEL")) o.accel = std::getenv("MVM_QEMU_ACCEL");
  if (EnvSet("MVM_QEMU_MACHINE")) o.machine = std::getenv("MVM_QEMU_MACHINE");
  if (EnvSet("MVM_QEMU_RUNTIME_DIR")) o.runtimeDir = std::getenv("MVM_QEMU_RUNTIME_DIR");
  if (EnvSet("MVM_QEMU_BOOT_TIMEOUT")) {
    Result<int64_t> s = EnvInt("MVM_QEMU_BOOT_TIMEOUT", 1, 3600);
    if (!s.ok()) return s.error();
    o.bootTimeout = std::chrono::seconds(*s);
  }
  if (EnvSet("MVM_QEMU_TSC_KHZ")) {
    Result<int64_t> k = EnvInt("MVM_QEMU_TSC_KHZ", 1, 100000000);
    if (!k.ok()) return k.error();
    o.tscKhz = static_cast<uint64_t>(*k);
  }
  Result<ConfinementOptions> confinement = ConfinementOptionsFromEnv("QEMU_", o.confinement);
  if (!confinement.ok()) return confinement.error();
  o.confinement = std::move(*confinement);
  return o;
}

Result<std::unique_ptr<QemuVmm>> QemuVmm::Create(QemuOptions options) {
  Result<fs::path> binary = FindExecutable(options.binary);
  if (!binary.ok()) return Error{"qemu runtime: " + binary.error().message};
  options.binary = binary->string();
  if (options.accel != "tcg" && options.accel != "kvm") {
    return Error{"qemu runtime: accel must be tcg or kvm (got \"" + options.accel + "\")"};
  }
  if (options.runtimeDir.empty() || !options.runtimeDir.is_absolute()) {
    return Error{"qemu runtime: the runtime directory must be an absolute path (got \"" +
                 options.runtimeDir.string() + "\")"};
  }
  options.runtimeDir = options.runtimeDir.lexically_normal();
  // <runtimeDir>/<12 hex>/qmp.sock must fit in sockaddr_un.
  size_t longest = options.runtimeDir.string().size() + 1 + 12 + 1 + 8;
  if (longest > kSocketPathLimit) {
    return Error{"qemu runtime: runtime directory " + options.runtimeDir.string() +
                 " is too long for Unix socket paths (" + std::to_string(longest) + " > " +
                 std::to_string(kSocketPathLimit) + " bytes)"};
  }
  std::error_code ec;
  fs::create_directories(options.runtimeDir, ec);
  if (ec) {
    return Error{"qemu runtime: cannot create " + options.runtimeDir.string() + ": " +
                 ec.message()};
  }
  if (options.tscKhz == 0) options.tscKhz = HostTscKhz();
  if (options.confinement.enabled && ::geteuid() != 0) {
    return Error{
        "qemu runtime: confinement (jail, cgroup, seccomp) needs root; run mvmd as root "
        "or set MVM_QEMU_JAIL=off"};
  }
  return std::unique_ptr<QemuVmm>(new QemuVmm(std::move(options)));
}

QemuVmm::Paths QemuVmm::PathsFor(const fs::path& instanceDir) const {
  Paths p;
  std::error_code ec;  // absolute() fails only without a working directory: keep the path as is
  p.dir = fs::absolute(instanceDir, ec).lexically_normal();
  if (ec) p.dir = instanceDir.lexically_normal();
  p.runtime = p.dir / "runtime";
  p.volumes = p.dir / "volumes";
  p.snapshots = p.dir / "snapshots";
  p.record = p.runtime / "qemu.json";
  p.qemuLog = p.runtime / "qemu.log";
  p.console = p.dir / "console.log";
  p.disk = p.volumes / "rootfs.ext4";
  p.snapshot = p.snapshots / "state.bin";
  p.sockets = options_.runtimeDir / Hash12(p.dir.string());
  p.qmp = p.sockets / "qmp.sock";
  p.ctl = p.sockets / "ctl.sock";
  return p;
}

Status QemuVmm::CheckSpec(const VmmTarget& target) const {
  const std::string who = "instance " + target.key.ToString();
  if (target.spec == nullptr) return Error{who + ": no pool spec"};
  const manifests::PoolSpec& spec = *target.spec;
  if (spec.runtime != manifests::Runtime::kQemu) {
    return Error{"pool " + target.key.tenant + "/" + target.pool + " asks for runtime " +
                 std::string(manifests::RuntimeName(spec.runtime)) +
                 ", but this mvmd runs the qemu driver"};
  }
  auto need = [&](const std::string& what, const std::string& path) -> Status {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) return Error{what + " " + path + " does not exist"};
    return {};
  };
  if (Status s = need("kernel", spec.image.kernel); !s.ok()) return s;
  if (spec.image.initrd) {
    if (Status s = need("initrd", *spec.image.initrd); !s.ok()) return s;
  }
  Result<std::vector<std::string>> argv = CommandLine(target, false);
  if (!argv.ok()) return argv.error();
  return {};
}

Result<std::vector<std::string>> QemuVmm::CommandLine(const VmmTarget& target, bool restore) const {
  if (target.spec == nullptr) return Error{"no pool spec"};
  const manifests::PoolSpec& spec = *target.spec;
  const Paths paths = PathsFor(target.dir);

  // The initrd: the Debian cloud kernel needs one for virtio_blk.
  const std::optional<std::string> initrd = GuestInitrd(spec);
  GuestCmdlineOptions cmdline;
  if (options_.tscKhz > 0)
    cmdline.driverWords.push_back("tsc_early_khz=" + std::to_string(options_.tscKhz));
  cmdline.driverWords.push_back("tsc=reliable");
  cmdline.driverWords.push_back("root=/dev/vda rw");
  cmdline.halt = "poweroff";
  Result<std::string> append = GuestCmdline(target, cmdline);
  if (!append.ok()) return append.error();
  const std::string& name = target.key.name;

  std::vector<std::string> argv = {options_.binary};
  auto args = [&argv](std::initializer_list<std::string> words) { argv.insert(argv.end(), words); };
  args({"-name", OptEscape("mvm-" + target.key.tenant + "-" + name)});
  args({"-M", options_.machine, "-accel", options_.accel});
  args({"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none"});
  args({"-m", std::to_string(spec.resources.memoryMiB)});
  args({"-smp", std::to_string(spec.resources.vcpus)});
  args({"-kernel", spec.image.kernel});
  if (initrd) args({"-initrd", *initrd});
  args({"-append", *append});
  args({"-chardev", "file,id=con,append=on,path=" + OptEscape(paths.console.string())});
  args({"-serial", "chardev:con"});
  args({"-device", "virtio-serial-device,max_ports=2"});
  args({"-chardev", "socket,id=ctl,server=on,wait=off,path=" + OptEscape(paths.ctl.string())});
  args({"-device", "virtserialport,chardev=ctl,name=mvm.ctl"});
  args({"-qmp", "unix:" + OptEscape(paths.qmp.string()) + ",server=on,wait=off"});
  args({"-drive", "format=raw,if=none,id=root,file=" + OptEscape(paths.disk.string())});
  args({"-device", "virtio-blk-device,drive=root"});
  if (restore) args({"-incoming", "exec:cat " + ShellQuote(paths.snapshot.string())});
  return argv;
}

Status QemuVmm::Prepare(const VmmTarget& target) {
  if (Status s = CheckSpec(target); !s.ok()) return s;
  if (target.spec->snapshot.base) {
    // A speed and disk optimisation of the firecracker driver: instances here boot and sleep
    // as usual (full snapshots), so the pool still runs; say so once per pool.
    std::lock_guard lock(warned_mu_);
    if (warned_base_.insert(target.key.tenant + "/" + target.pool).second) {
      spdlog::warn(
          "qemu: pool {}/{} asks for spec.snapshot.base, which only the firecracker driver "
          "implements: its instances boot and sleep with full snapshots",
          target.key.tenant, target.pool);
    }
  }
  const Paths paths = PathsFor(target.dir);
  const std::string& rootfs = target.spec->image.rootfs;
  std::error_code ec;
  if (!fs::is_regular_file(rootfs, ec)) return Error{"rootfs " + rootfs + " does not exist"};
  for (const fs::path& d : {paths.dir, paths.runtime, paths.volumes, paths.snapshots}) {
    fs::create_directories(d, ec);
    if (ec) return Error{"create " + d.string() + ": " + ec.message()};
  }
  // Created and Ready hold no VMM: anything recorded is an orphan of an interrupted call.
  if (Status s = EndProcess(LoadRecord(target, paths), paths); !s.ok()) return s;
  if (Status s = ReleaseConfinement(target, false); !s.ok()) return s;
  RemovePath(paths.snapshot);
  RemovePath(paths.snapshot.string() + ".partial");
  RemovePath(SpentPath(paths.snapshot));
  // A fresh copy each time: Prepare also serves Rebuild (a new image revision). Sized to
  // resources.diskMiB (0: the image's size); a failure keeps the previous disk.
  const auto disk_mib = static_cast<uint64_t>(std::max<int64_t>(0, target.spec->resources.diskMiB));
  if (Status s = MakeInstanceDisk(rootfs, paths.disk, disk_mib << 20); !s.ok()) return s;
  return {};
}

namespace {

// The jail of one qemu: its kernel and initrd read-only; its disk, snapshots, console and sockets
// read-write; /dev/kvm only with -accel kvm.
Result<Confinement> Confine(const Confiner& confiner, const VmmTarget& target,
                            const QemuVmm::Paths& paths, const std::vector<std::string>& argv,
                            const std::string& accel) {
  ConfineRequest r = VmmConfineRequest(target, paths.dir, paths.disk);
  // A qemu outside /usr (e.g. /opt) is bound too; its libraries must still be in /usr.
  if (argv.at(0).rfind("/usr/", 0) != 0) r.readOnly.emplace_back(argv[0]);
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == "-kernel" || argv[i] == "-initrd") r.readOnly.emplace_back(argv[i + 1]);
  }
  if (!PathExists(paths.console)) {
    if (Status s = WriteFileAtomic(paths.console, ""); !s.ok()) return s.error();
  }
  std::error_code ec;
  fs::create_directories(paths.snapshots, ec);
  r.writable = {paths.volumes, paths.snapshots, paths.console, paths.sockets};
  if (accel == "kvm") r.ownedDevices.emplace_back("/dev/kvm");
  return confiner.Confine(r);
}

}  // namespace

Status QemuVmm::ReleaseConfinement(const VmmTarget& target, bool destroy) const {
  if (!options_.confinement.enabled) return {};
  return confiner_.Release(target, PathsFor(target.dir).dir, destroy);
}

Result<VmmHandle> QemuVmm::Launch(const VmmTarget& target, bool restore) {
  const char* verb = restore ? "wake" : "start";
  if (Status s = CheckSpec(target); !s.ok()) return s.error();
  const Paths paths = PathsFor(target.dir);
  if (!PathExists(paths.disk)) {
    return Error{"instance not prepared: its disk " + paths.disk.string() + " is missing"};
  }
  if (restore && !PathExists(paths.snapshot)) {
    return Error{"no snapshot to wake from (" + paths.snapshot.string() + " is missing)"};
  }
  // Start and Wake run when the instance holds no VMM: a recorded process is an orphan.
  if (Status s = EndProcess(LoadRecord(target, paths), paths); !s.ok()) return s.error();
  if (Status s = ReleaseConfinement(target, false); !s.ok()) return s.error();
  Result<std::vector<std::string>> argv = CommandLine(target, restore);
  if (!argv.ok()) return argv.error();

  std::error_code ec;
  fs::create_directories(paths.runtime, ec);
  RemovePath(paths.sockets);
  fs::create_directories(paths.sockets, ec);
  if (ec) return Error{"create " + paths.sockets.string() + ": " + ec.message()};
  fs::permissions(paths.sockets, fs::perms::owner_all, ec);
  RotateLog(paths.console, options_.logRotateBytes);
  RotateLog(paths.qemuLog, options_.logRotateBytes);

  LaunchGuard guard(paths, paths.sockets);
  std::optional<Confinement> confined;
  if (options_.confinement.enabled) {
    guard.OnFailure([this, &target] { (void)ReleaseConfinement(target, false); });
    Result<Confinement> c = Confine(confiner_, target, paths, *argv, options_.accel);
    if (!c.ok()) return Error{verb + std::string(": ") + c.error().message};
    confined.emplace(std::move(*c));
  }
  const auto t0 = Clock::now();
  const auto deadline = t0 + options_.bootTimeout;
  Result<ProcessIdentity> spawned =
      SpawnDetached({*argv, paths.qemuLog, paths.dir,
                     confined ? std::optional<JailSpec>(confined->jail) : std::nullopt});
  if (!spawned.ok()) return Error{verb + std::string(": ") + spawned.error().message};
  const ProcessIdentity id = *spawned;
  guard.Track(id);

  Json::Value record;
  record["pid"] = Json::Int64(id.pid);
  record["startTime"] = Json::UInt64(id.startTime);
  record["sockets"] = paths.sockets.string();
  record["qmp"] = paths.qmp.string();
  record["ctl"] = paths.ctl.string();
  record["console"] = paths.console.string();
  record["qemuLog"] = paths.qemuLog.string();
  record["accel"] = options_.accel;
  record["confinement"] = confined ? confined->describe : Json::Value("off");
  // Written before waiting, so that a crash of mvmd during the boot leaves a findable process.
  if (Status s = WriteFileAtomic(paths.record, JsonLine(record)); !s.ok()) return s.error();

  auto alive = [&id] { return IsAlive(id); };
  auto fail = [&](const std::string& why) -> Error {
    // A qemu on its way out gets a moment to exit and finish its log before we look.
    bool exited = WaitForExit(id, milliseconds(500));
    const std::string after = SecondsText(Clock::now() - t0);
    return Error{
        (restore ? "restore failed: " : "guest never reported ready: ") +
        (exited ? "qemu exited after " + after + " (" + why + ")" : why + " after " + after) +
        (exited ? SeccompNote(id.pid) : std::string()) + Tails(paths)};
  };

  Result<QmpClient> qmp = QmpClient::Connect(paths.qmp.string(), deadline, alive);
  if (!qmp.ok()) return fail(qmp.error().message);

  std::string boot_id;
  if (!restore) {
    Result<GuestCtl> ctl = GuestCtl::Connect(paths.ctl.string(), deadline, alive);
    if (!ctl.ok()) return fail(ctl.error().message);
    std::string exit_line;
    while (boot_id.empty()) {
      auto slice = std::min(deadline, Clock::now() + milliseconds(250));
      Result<std::string> line = ctl->ReadLine(slice);
      if (line.ok()) {
        if (line->rfind("READY ", 0) == 0) boot_id = line->substr(6);
        if (line->rfind("EXIT ", 0) == 0) exit_line = line->substr(5);
        continue;
      }
      std::string why = exit_line.empty() ? "" : "the workload exited (status " + exit_line + "); ";
      if (ctl->closed() || !alive()) return fail(why + "control channel closed");
      if (Clock::now() >= deadline) {
        return fail(why + "no READY on the control channel within " +
                    SecondsText(options_.bootTimeout));
      }
    }
    // READY means the workload was started; a service that is gone already is not ready.
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    Result<std::string> workload = ctl->Request("status", std::max(left, milliseconds(1)));
    if (!workload.ok()) return fail("after READY: " + workload.error().message);
    if (workload->rfind("exited ", 0) == 0 &&
        target.spec->lifecycle != manifests::Lifecycle::kJob) {
      return fail("the workload exited (status " + workload->substr(7) + ")");
    }
  } else {
    std::string status;
    for (;;) {
      Result<std::string> s = qmp->QueryStatus(options_.qmpTimeout);
      if (!s.ok()) return fail(s.error().message);
      status = *s;
      if (status != "inmigrate") break;
      if (Clock::now() >= deadline) return fail("state still loading");
      if (!alive()) return fail("qemu exited while loading the state");
      std::this_thread::sleep_for(milliseconds(20));
    }
    if (status != "paused" && status != "running") {
      return fail("VM is \"" + status + "\" after loading the state");
    }
    if (status == "paused") {
      if (Result<Json::Value> c = qmp->Execute("cont", Json::Value(), options_.qmpTimeout);
          !c.ok()) {
        return fail(c.error().message);
      }
    }
    Result<GuestCtl> ctl = GuestCtl::Connect(paths.ctl.string(), deadline, alive);
    if (!ctl.ok()) return fail(ctl.error().message);
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    Result<std::string> pong = ctl->Request("ping", std::max(left, milliseconds(1)));
    if (!pong.ok()) return fail(pong.error().message);
    if (pong->rfind("pong ", 0) == 0) boot_id = pong->substr(5);
  }

  const auto took = Clock::now() - t0;
  record["bootId"] = boot_id;
  record[restore ? "wakeMs" : "bootMs"] = Json::Int64(Millis(took));
  const std::string data = JsonLine(record);
  if (Status s = WriteFileAtomic(paths.record, data); !s.ok()) return s.error();
  guard.Commit();
  spdlog::info("qemu: {} {} in {} (pid {}, boot id {})", target.key.ToString(),
               restore ? "woke" : "ready", SecondsText(took), id.pid, boot_id);
  VmmHandle handle;
  handle.pid = id.pid;
  handle.startTime = id.startTime;
  handle.socket = paths.qmp.string();
  handle.data = data;
  return handle;
}

Result<VmmHandle> QemuVmm::Start(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  // A fresh boot: a snapshot left by an interrupted Sleep is stale.
  RemovePath(paths.snapshot);
  RemovePath(paths.snapshot.string() + ".partial");
  RemovePath(SpentPath(paths.snapshot));
  return Launch(target, false);
}

Result<VmmHandle> QemuVmm::Wake(const VmmTarget& target) {
  Result<VmmHandle> handle = Launch(target, true);
  if (handle.ok()) RemoveAside(PathsFor(target.dir).snapshot);
  return handle;
}

namespace {

// A QMP connection to the live VMM of an instance, or why there is none.
Result<QmpClient> ConnectLive(const Record& record, milliseconds timeout) {
  if (record.id.empty()) return Error{"no VMM process recorded"};
  if (!IsAlive(record.id)) return Error{"qemu pid " + std::to_string(record.id.pid) + " is gone"};
  ProcessIdentity id = record.id;
  return QmpClient::Connect(record.qmp.string(), Clock::now() + timeout,
                            [id] { return IsAlive(id); });
}

Status ExpectStatus(QmpClient& qmp, const std::string& command, const std::string& want,
                    milliseconds timeout) {
  if (Result<Json::Value> r = qmp.Execute(command, Json::Value(), timeout); !r.ok()) {
    return r.error();
  }
  Result<std::string> status = qmp.QueryStatus(timeout);
  if (!status.ok()) return status.error();
  if (*status != want) {
    return Error{"after " + command + " the VM is \"" + *status + "\", not \"" + want + "\""};
  }
  return {};
}

}  // namespace

Status QemuVmm::Pause(const VmmTarget& target) {
  Result<QmpClient> qmp =
      ConnectLive(LoadRecord(target, PathsFor(target.dir)), options_.qmpTimeout);
  if (!qmp.ok()) return Error{"pause: " + qmp.error().message};
  if (Status s = ExpectStatus(*qmp, "stop", "paused", options_.qmpTimeout); !s.ok()) {
    return Error{"pause: " + s.error().message};
  }
  return {};
}

Status QemuVmm::Resume(const VmmTarget& target) {
  Result<QmpClient> qmp =
      ConnectLive(LoadRecord(target, PathsFor(target.dir)), options_.qmpTimeout);
  if (!qmp.ok()) return Error{"resume: " + qmp.error().message};
  if (Status s = ExpectStatus(*qmp, "cont", "running", options_.qmpTimeout); !s.ok()) {
    return Error{"resume: " + s.error().message};
  }
  return {};
}

Status QemuVmm::Sleep(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  const Record record = LoadRecord(target, paths);
  if (!IsAlive(record.id)) {
    // Repeated after a crash that came after the snapshot: done already.
    if (PathExists(paths.snapshot)) {
      if (Status s = EndProcess(record, paths); !s.ok()) return s;
      return ReleaseConfinement(target, false);
    }
    return Error{"sleep: no VMM process and no snapshot"};
  }
  const auto t0 = Clock::now();
  Result<QmpClient> qmp = ConnectLive(record, options_.qmpTimeout);
  if (!qmp.ok()) return Error{"sleep: " + qmp.error().message};
  Result<std::string> status = qmp->QueryStatus(options_.qmpTimeout);
  if (!status.ok()) return Error{"sleep: " + status.error().message};
  if (*status == "running") {
    if (Status s = ExpectStatus(*qmp, "stop", "paused", options_.qmpTimeout); !s.ok()) {
      return Error{"sleep: " + s.error().message};
    }
  }
  std::error_code ec;
  fs::create_directories(paths.snapshots, ec);
  const fs::path partial = paths.snapshot.string() + ".partial";
  RemovePath(paths.snapshot);
  RemovePath(partial);
  RemovePath(SpentPath(paths.snapshot));
  // The shell renames only after cat has written everything: state.bin is complete or absent.
  Json::Value args;
  args["uri"] = "exec:cat > " + ShellQuote(partial.string()) + " && mv -f " +
                ShellQuote(partial.string()) + " " + ShellQuote(paths.snapshot.string());
  if (Result<Json::Value> r = qmp->Execute("migrate", args, options_.qmpTimeout); !r.ok()) {
    return Error{"sleep: " + r.error().message};
  }
  const auto deadline = t0 + options_.snapshotTimeout;
  for (;;) {
    Result<Json::Value> m = qmp->Execute("query-migrate", Json::Value(), options_.qmpTimeout);
    if (!m.ok()) return Error{"sleep: " + m.error().message};
    std::string state = (*m)["status"].asString();
    if (state == "completed") break;
    if (state == "failed" || state == "cancelled") {
      RemovePath(partial);
      return Error{"sleep: saving the VM state " + state + ": " + (*m)["error-desc"].asString()};
    }
    if (Clock::now() >= deadline) {
      (void)qmp->Execute("migrate_cancel", Json::Value(), options_.qmpTimeout);
      RemovePath(partial);
      return Error{"sleep: saving the VM state took longer than " +
                   SecondsText(options_.snapshotTimeout)};
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  const auto file_deadline = Clock::now() + milliseconds(10000);
  while (!PathExists(paths.snapshot) && Clock::now() < file_deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  if (!PathExists(paths.snapshot)) {
    RemovePath(partial);
    return Error{"sleep: the state writer did not finish " + paths.snapshot.string()};
  }
  const auto saved = Clock::now() - t0;
  (void)qmp->Execute("quit", Json::Value(), milliseconds(2000));
  if (!WaitForExit(record.id, milliseconds(5000)) && !KillAndWait(record.id, kKillWait)) {
    return Error{"sleep: qemu pid " + std::to_string(record.id.pid) + " survived SIGKILL"};
  }
  if (Status s = EndProcess(record, paths); !s.ok()) return Error{"sleep: " + s.error().message};
  if (Status s = ReleaseConfinement(target, false); !s.ok()) {
    return Error{"sleep: " + s.error().message};
  }
  spdlog::info("qemu: {} asleep: state saved in {} ({} bytes), process ended after {}",
               target.key.ToString(), SecondsText(saved), fs::file_size(paths.snapshot, ec),
               SecondsText(Clock::now() - t0));
  return {};
}

Status QemuVmm::Stop(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  const Record record = LoadRecord(target, paths);
  int64_t graceful = target.spec ? target.spec->policy.gracefulStopSeconds : 15;
  if (IsAlive(record.id)) {
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::seconds(graceful);
    auto until = [&deadline](milliseconds most) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      return std::max(milliseconds(1), std::min(left, most));
    };
    bool asked = false;
    std::string how;
    if (graceful > 0) {
      Result<QmpClient> qmp = ConnectLive(record, until(milliseconds(5000)));
      if (qmp.ok()) {
        // A paused guest cannot hear the request: let it run to shut down cleanly.
        Result<std::string> status = qmp->QueryStatus(until(milliseconds(5000)));
        if (status.ok() && *status != "running") {
          (void)qmp->Execute("cont", Json::Value(), until(milliseconds(5000)));
        }
      }
      ProcessIdentity id = record.id;
      Result<GuestCtl> ctl =
          GuestCtl::Connect(record.ctl.string(), Clock::now() + until(milliseconds(3000)),
                            [id] { return IsAlive(id); });
      if (ctl.ok()) {
        Result<std::string> r = ctl->Request("stop", until(milliseconds(5000)));
        if (r.ok() && *r == "stopping") {
          asked = true;
          how = "stop on the control channel";
          // Read the last words (EXIT, BYE) so the guest does not wait on a closed port.
          while (ctl->ReadLine(Clock::now() + until(milliseconds(60000))).ok()) {
          }
        }
      }
      if (!asked && qmp.ok()) {
        asked = qmp->Execute("system_powerdown", Json::Value(), until(milliseconds(5000))).ok();
        how = "ACPI power button";
      }
    }
    bool exited = asked && WaitForExit(record.id, until(std::chrono::hours(24)));
    if (!exited) {
      if (!KillAndWait(record.id, kKillWait)) {
        return Error{"stop: qemu pid " + std::to_string(record.id.pid) + " survived SIGKILL"};
      }
      how = asked ? how + ", then SIGKILL after " + std::to_string(graceful) + "s" : "SIGKILL";
    }
    spdlog::info("qemu: {} stopped in {} ({})", target.key.ToString(),
                 SecondsText(Clock::now() - t0), how);
  }
  if (Status s = EndProcess(record, paths); !s.ok()) return Error{"stop: " + s.error().message};
  if (Status s = ReleaseConfinement(target, false); !s.ok()) {
    return Error{"stop: " + s.error().message};
  }
  RemovePath(paths.snapshot);
  RemovePath(paths.snapshot.string() + ".partial");
  RemovePath(SpentPath(paths.snapshot));
  return {};
}

Status QemuVmm::Destroy(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  if (Status s = EndProcess(LoadRecord(target, paths), paths); !s.ok()) {
    return Error{"destroy: " + s.error().message};
  }
  if (Status s = ReleaseConfinement(target, true); !s.ok()) {
    return Error{"destroy: " + s.error().message};
  }
  return RemoveInstanceDir(paths.dir);
}

ProbeResult QemuVmm::Probe(const VmmTarget& target) {
  const Paths paths = PathsFor(target.dir);
  const Record record = LoadRecord(target, paths);
  ProbeResult result;
  result.snapshot = PathExists(paths.snapshot);
  Result<QmpClient> qmp = ConnectLive(record, options_.qmpTimeout);
  if (!qmp.ok()) {
    result.detail = qmp.error().message + SeccompNote(record.id.pid);
    return result;
  }
  Result<std::string> status = qmp->QueryStatus(options_.qmpTimeout);
  if (!status.ok()) {
    result.detail =
        "qemu pid " + std::to_string(record.id.pid) + " does not answer: " + status.error().message;
    return result;
  }
  const std::string& s = *status;
  if (s == "running") {
    result.alive = true;
    result.observed = InstanceState::kRunning;
  } else if (s == "paused" || s == "inmigrate" || s == "postmigrate" || s == "finish-migrate" ||
             s == "prelaunch" || s == "save-vm" || s == "restore-vm" || s == "suspended") {
    result.alive = true;
    result.observed = InstanceState::kWarm;
  }
  if (result.alive) {
    result.handle.pid = record.id.pid;
    result.handle.startTime = record.id.startTime;
    result.handle.socket = record.qmp.string();
    result.handle.data = record.data;
  }
  result.detail = "qemu pid " + std::to_string(record.id.pid) + " is " + s;
  return result;
}

}  // namespace mvm::runtime
