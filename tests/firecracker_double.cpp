// firecracker_double: a stand-in for the `firecracker` binary in tests (never in the product).
// It serves Firecracker's HTTP API on --api-sock with the rules its API description and docs
// give, so the driver can be tested where no Firecracker exists:
//  - pre-boot-only calls (boot-source, drives, machine-config, network-interfaces, vsock,
//    logger, metrics, mmds/config, serial) are refused with 400 after InstanceStart;
//  - PATCH /vm only after InstanceStart; PUT /snapshot/create only while Paused;
//  - PUT /snapshot/load only on a fresh process (nothing but logger/metrics configured), and the
//    process exits after a failed load, as Firecracker's does;
//  - bad input (bad JSON, missing required fields, missing files, unknown path) → 400 with a
//    `fault_message`;
//  - InstanceStart "boots": the guest's `MVM-READY <boot id>` is written to the serial output
//    (the file PUT /serial named, else stdout); SendCtrlAltDel makes the guest halt and the
//    process exit;
//  - guest memory is modelled by pages: InstanceStart writes the boot id (page 0), a resume
//    counter (page 1) and a boot working set (MVM_FCDOUBLE_BOOT_PAGES, default 64 pages); every
//    resume rewrites the counter and MVM_FCDOUBLE_DIRTY_PAGES (default 8) pages of its own;
//  - snapshots are real files: the state file records the VM configuration, boot id and the
//    content of every page the guest wrote; a Full memory file is the guest's whole size,
//    allocated (dense, as Firecracker writes it), a Diff memory file has the guest's size but
//    data only in the pages written since the load or the last snapshot (holes elsewhere), and
//    is refused unless dirty page tracking is on (machine-config `track_dirty_pages` before
//    boot, or snapshot/load's `track_dirty_pages`/`enable_diff_snapshots`: the load's flag
//    decides, as in Firecracker). A load checks every recorded page in the memory file (a bad
//    rebase fails it), prints `MVM-RESTORED <boot id> resumes=<n> [<iface>=<tap>] [vsock=<uds>]`
//    and honours resume_vm (a resume), network_overrides and vsock_override;
//  - InstanceStart writes `mvm-fcdouble boot <boot id>` at the start of every writable drive (a
//    guest writing its disk), and a load refuses a drive that does not hold the snapshot's;
//  - FlushMetrics appends one JSON line to the metrics file.
// Environment: MVM_FCDOUBLE_LOG (append one JSON line per request: method, path, body),
// MVM_FCDOUBLE_ROOT (a chroot prefix for the absolute paths in bodies, as the fake jailer
// sets), MVM_FCDOUBLE_MODE (comma-separated: hang, no-ready, ignore-ctrl-alt-del,
// ignore-sigterm, fail-load, fail-create: PUT /snapshot/create refused, fail-create-once: only
// the first one, hang-vm: PATCH /vm never answered), MVM_FCDOUBLE_BOOT_PAGES,
// MVM_FCDOUBLE_DIRTY_PAGES. `--seccomp-filter FILE` must name a readable file (the filter itself
// is not installed).

#include <fcntl.h>
#include <json/reader.h>
#include <json/value.h>
#include <json/writer.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>

namespace {

std::set<std::string> g_modes;
std::string g_root;  // chroot prefix

bool Mode(const std::string& m) {
  return g_modes.count(m) > 0;
}

std::string Host(const std::string& path) {
  if (g_root.empty() || path.empty() || path[0] != '/') return path;
  return g_root + path;
}

bool FileExists(const std::string& path) {
  return access(Host(path).c_str(), F_OK) == 0;
}

std::string Compact(const Json::Value& v) {
  Json::StreamWriterBuilder b;
  b["indentation"] = "";
  return Json::writeString(b, v);
}

struct Reply {
  int status = 204;
  std::string body;
};

Reply Fault(const std::string& message) {
  Json::Value v;
  v["fault_message"] = message;
  return {400, Compact(v)};
}

struct Vm {
  std::string id;
  bool started = false, paused = false, bootConfigured = false;
  bool loggerSet = false, metricsSet = false;
  std::string metricsPath, serialPath;
  Json::Value bootSource, machine, drives{Json::objectValue}, ifaces{Json::objectValue};
  std::string bootId;
  uint64_t resumes = 0;                   // saved in page 1 of guest memory
  bool tracking = false;                  // dirty page tracking
  std::map<uint64_t, std::string> pages;  // every page the guest wrote: its content
  std::set<uint64_t> dirty;               // pages written since the load or last snapshot
  Json::Value vsock;
  std::map<std::string, uint64_t> counts;
  bool exitAfterReply = false;
  int exitCode = 0;
};

void Console(const Vm& vm, const std::string& line) {
  if (!vm.serialPath.empty()) {
    std::ofstream out(Host(vm.serialPath), std::ios::app);
    out << line << "\n";
  } else {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
}

std::string RandomHex() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

bool Need(const Json::Value& body, std::initializer_list<const char*> fields, Reply& bad) {
  for (const char* f : fields) {
    if (!body.isMember(f)) {
      bad = Fault(std::string("missing field `") + f + "`");
      return false;
    }
  }
  return true;
}

constexpr uint64_t kPage = 4096;

uint64_t EnvCount(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v == nullptr ? fallback : std::strtoull(v, nullptr, 10);
}

uint64_t GuestPages(const Vm& vm) {
  return std::max<uint64_t>(4, (vm.machine["mem_size_mib"].asUInt64() << 20) / kPage);
}

void WritePage(Vm& vm, uint64_t page, const std::string& content) {
  vm.pages[page % GuestPages(vm)] = content;
  vm.dirty.insert(page % GuestPages(vm));
}

// The guest runs on: its counter page and a few pages of its own (spread by the VM's id).
void Resumed(Vm& vm) {
  ++vm.resumes;
  WritePage(vm, 1, "resumes=" + std::to_string(vm.resumes) + ";");
  const uint64_t n = EnvCount("MVM_FCDOUBLE_DIRTY_PAGES", 8);
  const uint64_t seed = std::hash<std::string>{}(vm.id) + vm.resumes * 7919;
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t page = 2 + (seed + i * 104729) % (GuestPages(vm) - 2);
    WritePage(vm, page, "id " + vm.id + " resumes " + std::to_string(vm.resumes));
  }
}

// Writes the memory file: every page (Full, allocated for the guest's whole size) or only the
// dirty ones (Diff, holes elsewhere).
bool WriteMemory(const Vm& vm, const std::string& path, bool full) {
  const off_t size = static_cast<off_t>(GuestPages(vm) * kPage);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = ftruncate(fd, size) == 0;
  if (ok && full && posix_fallocate(fd, 0, size) != 0) {
    // No fallocate here: write the zeros.
    std::string zeros(1 << 20, '\0');
    for (off_t at = 0; ok && at < size; at += static_cast<off_t>(zeros.size())) {
      ok = pwrite(fd, zeros.data(), std::min<size_t>(zeros.size(), size - at), at) >= 0;
    }
  }
  for (const auto& [page, content] : vm.pages) {
    if (!full && vm.dirty.count(page) == 0) continue;
    std::string block(kPage, '\0');
    block.replace(0, std::min<size_t>(content.size(), kPage), content);
    ok = ok && pwrite(fd, block.data(), block.size(), static_cast<off_t>(page * kPage)) ==
                   static_cast<ssize_t>(block.size());
  }
  close(fd);
  return ok;
}

const std::set<std::string> kPreBoot = {"/boot-source", "/machine-config", "/logger", "/metrics",
                                        "/vsock",       "/mmds/config",    "/serial"};

Reply Handle(Vm& vm, const std::string& method, const std::string& path, const std::string& text) {
  Json::Value body;
  if (!text.empty()) {
    Json::CharReaderBuilder b;
    std::unique_ptr<Json::CharReader> r(b.newCharReader());
    std::string errors;
    if (!r->parse(text.data(), text.data() + text.size(), &body, &errors) || !body.isObject()) {
      return Fault("invalid JSON body: " + errors);
    }
  }
  const bool pre_boot = kPreBoot.count(path) || path.rfind("/drives/", 0) == 0 ||
                        path.rfind("/network-interfaces/", 0) == 0;
  if (method == "PUT" && pre_boot && vm.started) {
    return Fault("The requested operation is not supported after starting the microVM.");
  }
  Reply bad;
  if (method == "GET" && path == "/") {
    Json::Value info;
    info["app_name"] = "Firecracker";
    info["id"] = vm.id;
    info["state"] = !vm.started ? "Not started" : vm.paused ? "Paused" : "Running";
    info["vmm_version"] = "1.17.0-dev";
    return {200, Compact(info)};
  }
  if (method != "PUT" && method != "PATCH") return Fault("Invalid request method and/or path.");
  if (path == "/logger") {
    if (body.isMember("log_path") && !FileExists(body["log_path"].asString())) {
      return Fault("Failed to open the log file: No such file or directory");
    }
    vm.loggerSet = true;
    return {};
  }
  if (path == "/metrics") {
    if (!Need(body, {"metrics_path"}, bad)) return bad;
    if (vm.metricsSet) return Fault("Reinitialization of metrics not allowed.");
    vm.metricsSet = true;
    vm.metricsPath = body["metrics_path"].asString();
    return {};
  }
  if (path == "/serial") {
    vm.serialPath = body["serial_out_path"].asString();
    vm.bootConfigured = true;
    return {};
  }
  if (path == "/boot-source") {
    if (!Need(body, {"kernel_image_path"}, bad)) return bad;
    if (!FileExists(body["kernel_image_path"].asString())) {
      return Fault("The kernel file cannot be opened: No such file or directory (os error 2)");
    }
    if (body.isMember("initrd_path") && !FileExists(body["initrd_path"].asString())) {
      return Fault("The initrd file cannot be opened: No such file or directory (os error 2)");
    }
    vm.bootSource = body;
    vm.bootConfigured = true;
    return {};
  }
  if (path == "/machine-config") {
    if (!Need(body, {"vcpu_count", "mem_size_mib"}, bad)) return bad;
    int vcpus = body["vcpu_count"].asInt();
    if (vcpus < 1 || vcpus > 32) return Fault("The vCPU number is invalid!");
    vm.machine = body;
    vm.tracking = body["track_dirty_pages"].asBool();
    vm.bootConfigured = true;
    return {};
  }
  if (path.rfind("/drives/", 0) == 0) {
    if (!Need(body, {"drive_id", "is_root_device"}, bad)) return bad;
    if (body["drive_id"].asString() != path.substr(8)) {
      return Fault("The id from the path does not match the id from the body!");
    }
    if (!FileExists(body["path_on_host"].asString())) {
      return Fault("Unable to create the block device: No such file or directory (os error 2)");
    }
    vm.drives[body["drive_id"].asString()] = body;
    vm.bootConfigured = true;
    return {};
  }
  if (path.rfind("/network-interfaces/", 0) == 0) {
    if (!Need(body, {"iface_id", "host_dev_name"}, bad)) return bad;
    if (body["iface_id"].asString() != path.substr(20)) {
      return Fault("The id from the path does not match the id from the body!");
    }
    vm.ifaces[body["iface_id"].asString()] = body;
    vm.bootConfigured = true;
    return {};
  }
  if (path == "/vsock") {
    if (!Need(body, {"guest_cid", "uds_path"}, bad)) return bad;
    vm.vsock = body;
    vm.bootConfigured = true;
    return {};
  }
  if (path == "/mmds/config") {
    vm.bootConfigured = true;
    return {};
  }
  if (path == "/mmds") {
    vm.bootConfigured = true;
    return {};
  }
  if (path == "/actions" && method == "PUT") {
    if (!Need(body, {"action_type"}, bad)) return bad;
    const std::string action = body["action_type"].asString();
    if (action == "InstanceStart") {
      if (vm.started) return Fault("The microVM is already running.");
      if (vm.bootSource.isNull())
        return Fault("Cannot start microvm without kernel configuration.");
      vm.started = true;
      vm.bootId = RandomHex();
      if (vm.machine.isNull()) vm.machine = Json::Value(Json::objectValue);
      if (!vm.machine.isMember("mem_size_mib")) vm.machine["mem_size_mib"] = 128;
      WritePage(vm, 0, vm.bootId);
      // The guest writes its disk as it boots: what its memory knows of the disk from now on.
      for (const auto& d : vm.drives) {
        if (d["is_read_only"].asBool()) continue;
        std::fstream disk(Host(d["path_on_host"].asString()),
                          std::ios::in | std::ios::out | std::ios::binary);
        disk << "mvm-fcdouble boot " << vm.bootId << "\n";
      }
      WritePage(vm, 1, "resumes=0;");
      const uint64_t boot_pages = EnvCount("MVM_FCDOUBLE_BOOT_PAGES", 64);
      for (uint64_t i = 0; i < boot_pages; ++i) {
        WritePage(vm, 2 + i * 3, "boot " + vm.bootId + " page " + std::to_string(i));
      }
      if (!Mode("no-ready")) Console(vm, "MVM-READY " + vm.bootId);
      return {};
    }
    if (action == "SendCtrlAltDel") {
      if (!vm.started) return Fault("The microVM is not running.");
      if (!Mode("ignore-ctrl-alt-del")) {
        Console(vm, "MVM-STOPPING ctrl-alt-del");
        Console(vm, "MVM-HALT reboot");
        vm.exitAfterReply = true;
      }
      return {};
    }
    if (action == "FlushMetrics") {
      if (!vm.metricsSet) return Fault("The metrics system is not initialized.");
      Json::Value line;
      line["utc_timestamp_ms"] =
          Json::UInt64(std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
      for (const auto& [name, n] : vm.counts)
        line["put_api_requests"][name + "_count"] = Json::UInt64(n);
      line["vcpu"]["exit_io_in"] = 7;
      line["vcpu"]["exit_mmio_write"] = 5;
      line["block"]["read_bytes"] = 4096;
      line["block"]["write_bytes"] = 512;
      line["vmm"]["panic_count"] = 0;
      std::ofstream out(Host(vm.metricsPath), std::ios::app);
      out << Compact(line) << "\n";
      return {};
    }
    return Fault("unknown action_type " + action);
  }
  if (path == "/vm" && method == "PATCH") {
    if (Mode("hang-vm")) {
      for (;;) pause();  // the VMM stops answering mid-life
    }
    if (!Need(body, {"state"}, bad)) return bad;
    if (!vm.started) return Fault("Operation not supported pre-boot.");
    const std::string state = body["state"].asString();
    if (state == "Paused") {
      vm.paused = true;
    } else if (state == "Resumed") {
      vm.paused = false;
      Resumed(vm);
    } else
      return Fault("unknown state " + state);
    return {};
  }
  if (path == "/snapshot/create" && method == "PUT") {
    if (!Need(body, {"snapshot_path", "mem_file_path"}, bad)) return bad;
    if (!vm.started) return Fault("Operation not supported pre-boot.");
    if (!vm.paused) return Fault("Cannot save the microVM state: the microVM must be paused.");
    const bool diff = body["snapshot_type"].asString() == "Diff";
    if (diff && !vm.tracking) {
      return Fault("Diff snapshots are not allowed on uVMs with dirty page tracking disabled.");
    }
    static bool failed_once = false;
    if (Mode("fail-create") || (Mode("fail-create-once") && !failed_once)) {
      // Firecracker may have reset its dirty bitmap before failing: the pages are forgotten.
      failed_once = true;
      vm.dirty.clear();
      return Fault("Cannot save the microVM state: injected failure");
    }
    Json::Value state;
    state["magic"] = "mvm-fcdouble-snapshot";
    state["bootId"] = vm.bootId;
    state["machine"] = vm.machine;
    state["ifaces"] = vm.ifaces;
    state["drives"] = vm.drives;
    state["vsock"] = vm.vsock;
    for (const auto& [page, content] : vm.pages) state["pages"][std::to_string(page)] = content;
    {
      std::ofstream out(Host(body["snapshot_path"].asString()), std::ios::trunc);
      if (!out) return Fault("Cannot create the snapshot file");
      out << Compact(state);
    }
    if (!WriteMemory(vm, Host(body["mem_file_path"].asString()), !diff)) {
      return Fault("Cannot write the memory file");
    }
    vm.dirty.clear();  // Firecracker resets dirty tracking with each snapshot
    return {};
  }
  if (path == "/snapshot/load" && method == "PUT") {
    if (!Need(body, {"snapshot_path"}, bad)) return bad;
    if (vm.started || vm.bootConfigured) {
      return Fault(
          "Loading a microVM snapshot not allowed after configuring boot-specific resources.");
    }
    // From here on, a failed load leaves the process unusable: it exits after the reply.
    auto fatal = [&vm](const std::string& why) {
      vm.exitAfterReply = true;
      vm.exitCode = 1;
      return Fault("Load snapshot error: " + why);
    };
    if (Mode("fail-load")) return fatal("injected failure");
    std::string mem_path = body.get("mem_file_path", "").asString();
    if (body.isMember("mem_backend")) {
      if (body.isMember("mem_file_path")) return fatal("both mem_file_path and mem_backend given");
      if (body["mem_backend"]["backend_type"].asString() != "File") return fatal("only File here");
      mem_path = body["mem_backend"]["backend_path"].asString();
    }
    std::ifstream in(Host(body["snapshot_path"].asString()));
    if (!in) return fatal("cannot open the snapshot file");
    std::stringstream file;
    file << in.rdbuf();
    Json::Value state;
    Json::CharReaderBuilder b;
    std::unique_ptr<Json::CharReader> r(b.newCharReader());
    std::string errors, s = file.str();
    if (!r->parse(s.data(), s.data() + s.size(), &state, &errors) ||
        state["magic"].asString() != "mvm-fcdouble-snapshot") {
      return fatal("the snapshot file is not a snapshot");
    }
    std::ifstream mem(Host(mem_path), std::ios::binary);
    if (!mem) return fatal("cannot open the memory file");
    mem.seekg(0, std::ios::end);
    if (static_cast<int64_t>(mem.tellg()) != (state["machine"]["mem_size_mib"].asInt64() << 20)) {
      return fatal("the memory file does not match the snapshot's memory size");
    }
    // The guest's memory must be what it wrote: every recorded page, at its offset.
    for (const auto& key : state["pages"].getMemberNames()) {
      const std::string want = state["pages"][key].asString();
      std::string got(want.size(), '\0');
      mem.seekg(static_cast<std::streamoff>(std::stoull(key) * kPage));
      mem.read(got.data(), static_cast<std::streamsize>(got.size()));
      if (got != want) return fatal("memory file content mismatch at page " + key);
    }
    const std::string boot_id = state["bootId"].asString();
    mem.clear();
    mem.seekg(static_cast<std::streamoff>(kPage));
    std::string counter;
    std::getline(mem, counter, ';');
    if (counter.rfind("resumes=", 0) != 0) return fatal("memory file has no resume counter");
    vm.resumes = std::stoull(counter.substr(8));
    for (const auto& d : state["drives"]) {
      const std::string drive = d["path_on_host"].asString();
      if (!FileExists(drive)) return fatal("drive " + drive + " is missing");
      // A guest restored onto another disk than the one its memory knows corrupts it.
      std::ifstream disk(Host(drive), std::ios::binary);
      std::string head;
      std::getline(disk, head);
      if (!d["is_read_only"].asBool() &&
          head != "mvm-fcdouble boot " + state["bootId"].asString()) {
        return fatal("drive " + drive + " is not the disk the snapshot was taken with");
      }
    }
    vm.vsock = state["vsock"];
    if (body.isMember("vsock_override")) {
      if (vm.vsock.isNull()) return fatal("vsock override for a VM without vsock");
      vm.vsock["uds_path"] = body["vsock_override"]["uds_path"];
    }
    vm.ifaces = state["ifaces"];
    for (const auto& o : body["network_overrides"]) {
      const std::string iface = o["iface_id"].asString();
      if (!vm.ifaces.isMember(iface)) return fatal("network override for unknown iface " + iface);
      vm.ifaces[iface]["host_dev_name"] = o["host_dev_name"];
    }
    vm.machine = state["machine"];
    vm.drives = state["drives"];
    vm.bootId = boot_id;
    vm.pages.clear();
    for (const auto& key : state["pages"].getMemberNames()) {
      vm.pages[std::stoull(key)] = state["pages"][key].asString();
    }
    vm.dirty.clear();
    // The load's flag decides, whatever the snapshotted VM had.
    vm.tracking = body["track_dirty_pages"].asBool() || body["enable_diff_snapshots"].asBool();
    vm.started = true;
    vm.paused = true;
    std::string taps;
    for (const auto& name : vm.ifaces.getMemberNames()) {
      taps += " " + name + "=" + vm.ifaces[name]["host_dev_name"].asString();
    }
    if (!vm.vsock.isNull()) taps += " vsock=" + vm.vsock["uds_path"].asString();
    Console(vm, "MVM-RESTORED " + vm.bootId + " resumes=" + std::to_string(vm.resumes) + taps);
    if (body["resume_vm"].asBool()) {
      vm.paused = false;
      Resumed(vm);
    }
    return {};
  }
  return Fault("Invalid request method and/or path: " + method + " " + path);
}

// Reads one HTTP/1.1 request; false on EOF or garbage.
bool ReadRequest(int fd, std::string& method, std::string& path, std::string& body) {
  std::string data;
  char buf[4096];
  size_t header_end;
  while ((header_end = data.find("\r\n\r\n")) == std::string::npos) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    data.append(buf, static_cast<size_t>(n));
  }
  std::istringstream head(data.substr(0, header_end));
  std::string version;
  head >> method >> path >> version;
  size_t length = 0;
  for (std::string line; std::getline(head, line);) {
    for (auto& c : line) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (line.rfind("content-length:", 0) == 0) length = std::stoul(line.substr(15));
  }
  body = data.substr(header_end + 4);
  while (body.size() < length) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    body.append(buf, static_cast<size_t>(n));
  }
  return true;
}

void Log(const std::string& method, const std::string& path, const std::string& body, int status) {
  const char* file = std::getenv("MVM_FCDOUBLE_LOG");
  if (file == nullptr) return;
  Json::Value line;
  line["method"] = method;
  line["path"] = path;
  line["body"] = body;
  line["status"] = status;
  std::ofstream out(file, std::ios::app);
  out << Compact(line) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path, id = "anonymous-instance", seccomp_filter;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--api-sock") == 0)
      socket_path = argv[++i];
    else if (std::strcmp(argv[i], "--id") == 0)
      id = argv[++i];
    else if (std::strcmp(argv[i], "--seccomp-filter") == 0)
      seccomp_filter = argv[++i];
  }
  if (socket_path.empty()) socket_path = "/run/firecracker.socket";
  if (const char* m = std::getenv("MVM_FCDOUBLE_MODE")) {
    std::stringstream modes(m);
    for (std::string w; std::getline(modes, w, ',');) g_modes.insert(w);
  }
  if (const char* r = std::getenv("MVM_FCDOUBLE_ROOT")) g_root = r;
  // Firecracker reads its filter file before anything else and exits when it cannot.
  if (!seccomp_filter.empty() && !std::ifstream(Host(seccomp_filter))) {
    std::fprintf(stderr, "firecracker_double: cannot read the seccomp filter %s\n",
                 seccomp_filter.c_str());
    return 1;
  }
  socket_path = Host(socket_path);
  if (Mode("ignore-sigterm")) signal(SIGTERM, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);

  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    std::fprintf(stderr, "firecracker_double: socket path too long\n");
    return 1;
  }
  std::strcpy(addr.sun_path, socket_path.c_str());
  unlink(socket_path.c_str());
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener, 16) != 0) {
    std::perror("firecracker_double: bind");
    return 1;
  }
  std::fprintf(stderr, "firecracker_double: id %s serving %s\n", id.c_str(), socket_path.c_str());
  Vm vm;
  vm.id = id;
  for (;;) {
    int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::string method, path, body;
    if (!ReadRequest(fd, method, path, body)) {
      close(fd);
      continue;
    }
    if (Mode("hang")) {
      Log(method, path, body, 0);
      for (;;) pause();  // accepted, never answered
    }
    Reply reply = Handle(vm, method, path, body);
    const std::string endpoint = path.substr(1, path.find('/', 1) - 1);
    if ((reply.status == 204 || reply.status == 200) && !endpoint.empty()) vm.counts[endpoint]++;
    Log(method, path, body, reply.status);
    std::string status_line = reply.status == 200   ? "200 OK"
                              : reply.status == 204 ? "204 No Content"
                                                    : "400 Bad Request";
    std::string response = "HTTP/1.1 " + status_line + "\r\nServer: Firecracker API\r\n" +
                           "Connection: keep-alive\r\n";
    if (!reply.body.empty()) response += "Content-Type: application/json\r\n";
    response += "Content-Length: " + std::to_string(reply.body.size()) + "\r\n\r\n" + reply.body;
    (void)!write(fd, response.data(), response.size());
    close(fd);
    if (vm.exitAfterReply) {
      unlink(socket_path.c_str());
      return vm.exitCode;
    }
  }
}
