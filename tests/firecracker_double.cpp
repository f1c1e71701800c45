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
//  - snapshots are real files: the state file records the VM configuration and boot id, the
//    memory file has the guest's size and holds the boot id, and a load checks both, prints
//    `MVM-RESTORED <boot id>` and honours resume_vm and network_overrides;
//  - FlushMetrics appends one JSON line to the metrics file.
// Environment: MVM_FCDOUBLE_LOG (append one JSON line per request: method, path, body),
// MVM_FCDOUBLE_ROOT (a chroot prefix for the absolute paths in bodies, as the fake jailer
// sets), MVM_FCDOUBLE_MODE (comma-separated: hang, no-ready, ignore-ctrl-alt-del,
// ignore-sigterm, fail-load, hang-vm: PATCH /vm never answered). `--seccomp-filter FILE` must
// name a readable file (the filter itself is not installed).

#include <json/reader.h>
#include <json/value.h>
#include <json/writer.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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
  uint64_t resumes = 0;  // "guest memory": counts resumes, saved in the memory file at 4096
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
  if (path == "/vsock" || path == "/mmds/config") {
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
      ++vm.resumes;
    } else
      return Fault("unknown state " + state);
    return {};
  }
  if (path == "/snapshot/create" && method == "PUT") {
    if (!Need(body, {"snapshot_path", "mem_file_path"}, bad)) return bad;
    if (!vm.started) return Fault("Operation not supported pre-boot.");
    if (!vm.paused) return Fault("Cannot save the microVM state: the microVM must be paused.");
    if (body["snapshot_type"].asString() == "Diff" && !vm.machine["track_dirty_pages"].asBool()) {
      return Fault("Diff snapshots are not allowed on uVMs with dirty page tracking disabled.");
    }
    Json::Value state;
    state["magic"] = "mvm-fcdouble-snapshot";
    state["bootId"] = vm.bootId;
    state["machine"] = vm.machine;
    state["ifaces"] = vm.ifaces;
    state["drives"] = vm.drives;
    {
      std::ofstream out(Host(body["snapshot_path"].asString()), std::ios::trunc);
      if (!out) return Fault("Cannot create the snapshot file");
      out << Compact(state);
    }
    const std::string mem = Host(body["mem_file_path"].asString());
    {
      // Full: the boot id at 0 and the resume counter at 4096. Diff: only the page that
      // changed since the load (the counter), the rest a hole, as Firecracker writes it.
      std::ofstream out(mem, std::ios::trunc | std::ios::binary);
      if (!out) return Fault("Cannot create the memory file");
      if (body["snapshot_type"].asString() != "Diff") out << vm.bootId;
      out.seekp(4096);
      out << "resumes=" << vm.resumes << ";";
    }
    if (truncate(mem.c_str(), vm.machine["mem_size_mib"].asInt64() << 20) != 0) {
      return Fault("Cannot size the memory file");
    }
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
    mem.seekg(0);
    std::string boot_id(state["bootId"].asString().size(), '\0');
    mem.read(boot_id.data(), static_cast<std::streamsize>(boot_id.size()));
    if (boot_id != state["bootId"].asString()) return fatal("memory file content mismatch");
    mem.seekg(4096);
    std::string counter;
    std::getline(mem, counter, ';');
    if (counter.rfind("resumes=", 0) != 0) return fatal("memory file has no resume counter");
    vm.resumes = std::stoull(counter.substr(8));
    if (body["track_dirty_pages"].asBool()) state["machine"]["track_dirty_pages"] = true;
    for (const auto& d : state["drives"]) {
      if (!FileExists(d["path_on_host"].asString())) {
        return fatal("drive " + d["path_on_host"].asString() + " is missing");
      }
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
    vm.started = true;
    vm.paused = !body["resume_vm"].asBool();
    std::string taps;
    for (const auto& name : vm.ifaces.getMemberNames()) {
      taps += " " + name + "=" + vm.ifaces[name]["host_dev_name"].asString();
    }
    Console(vm, "MVM-RESTORED " + vm.bootId + " resumes=" + std::to_string(vm.resumes) + taps);
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
