#pragma once
// Shared pieces of the end-to-end tests that boot real guests with the qemu driver
// (tests/qemu_vmm_test.cpp, tests/e2e_test.cpp; docs/runtime-qemu.md).
//
//  - FindGuestImage(): the test guest of hack/build-guest-image.sh, from $MVM_IMAGE_DIR, else the
//    build tree's images/, else /var/lib/mvm/images. MVM_REQUIRE_QEMU() skips a test (and says
//    why) only when qemu-system-x86_64 or that image is missing.
//  - LiveQemu(needle): pids of live (non-zombie) qemu processes whose command line contains
//    `needle` (a test's temp dir): the leak check.
//  - CtlRequest(): one request on a guest's control channel.
//  - RecordingVmm: forwards to a real Vmm and records every call, for order assertions.
//  - QemuControllerHarness: a Controller on a real store in a temp dir driving a QemuVmm, with
//    desired state built from manifest text, like tests/controller_harness.h does for the fake.

#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "controller/controller.h"
#include "controller/store.h"
#include "manifests/loader.h"
#include "manifests/parser.h"
#include "runtime/guest_ctl.h"
#include "runtime/process.h"
#include "runtime/qemu_vmm.h"
#include "tests/test_util.h"

#ifndef MVM_TEST_IMAGE_DIRS
#define MVM_TEST_IMAGE_DIRS "/var/lib/mvm/images"
#endif

namespace mvm::testing {

inline bool IsGuestImage(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const char* f : {"vmlinux", "initramfs.cpio.gz", "rootfs.ext4"}) {
    if (!std::filesystem::is_regular_file(dir / f, ec)) return false;
  }
  return true;
}

inline std::optional<std::filesystem::path> FindGuestImage() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("MVM_IMAGE_DIR"); env && *env) candidates.emplace_back(env);
  std::string list = MVM_TEST_IMAGE_DIRS;
  for (size_t start = 0; start <= list.size();) {
    size_t end = list.find(':', start);
    if (end == std::string::npos) end = list.size();
    if (end > start) candidates.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  for (const auto& c : candidates) {
    if (IsGuestImage(c)) return std::filesystem::absolute(c);
  }
  return std::nullopt;
}

// Skips the test, saying what is missing, unless qemu and the guest image are there.
#define MVM_REQUIRE_QEMU(image_var)                                                        \
  std::filesystem::path image_var;                                                         \
  do {                                                                                     \
    if (!::mvm::runtime::FindExecutable("qemu-system-x86_64").ok()) {                      \
      GTEST_SKIP() << "qemu-system-x86_64 is not installed";                               \
    }                                                                                      \
    auto found_image = ::mvm::testing::FindGuestImage();                                   \
    if (!found_image) {                                                                    \
      GTEST_SKIP() << "no guest image (build it: bash hack/build-guest-image.sh --out "    \
                      "build/images, or set MVM_IMAGE_DIR); looked in $MVM_IMAGE_DIR and " \
                   << MVM_TEST_IMAGE_DIRS;                                                 \
    }                                                                                      \
    image_var = *found_image;                                                              \
  } while (0)

inline std::vector<int64_t> LiveQemu(const std::string& needle) {
  std::vector<int64_t> out;
  DIR* proc = ::opendir("/proc");
  if (!proc) return out;
  while (struct dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    std::ifstream in("/proc/" + std::string(e->d_name) + "/cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.rfind("qemu-system", 0) != 0 && cmdline.find("/qemu-system") == std::string::npos) {
      continue;
    }
    if (cmdline.find(needle) == std::string::npos) continue;
    auto stat = runtime::ReadProcessStat(pid);
    if (stat.ok() && stat->state != 'Z' && stat->state != 'X') out.push_back(pid);
  }
  ::closedir(proc);
  return out;
}

// Regular files and sockets under `dir` (empty directories do not count).
inline std::vector<std::string> FilesUnder(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return out;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory(ec)) out.push_back(it->path().string());
  }
  return out;
}

inline Result<std::string> CtlRequest(
    const std::string& socket, const std::string& line,
    std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  auto ctl = runtime::GuestCtl::Connect(socket, runtime::Clock::now() + timeout);
  if (!ctl.ok()) return ctl.error();
  return ctl->Request(line, timeout);
}

// The ctl socket of a live VMM, from the handle's driver data.
inline std::string CtlSocket(const controller::VmmHandle& handle) {
  auto pos = handle.data.find("\"ctl\":\"");
  if (pos == std::string::npos) return {};
  pos += 7;
  return handle.data.substr(pos, handle.data.find('"', pos) - pos);
}

inline double Secs(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// A guest workload that runs until stopped.
inline constexpr const char* kSleepForever = "[\"/bin/sh\", \"-c\", \"exec sleep 2147483647\"]";

inline std::string QemuPoolYaml(const std::string& tenant, const std::string& name, int running,
                                int warm, int sleeping, const std::string& policy = "{}") {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata: {name: " + name +
         ", tenant: " + tenant +
         "}\nspec:\n  runtime: qemu\n"
         "  image: {kernel: vmlinux, rootfs: rootfs.ext4, bootArgs: \"console=ttyS0 panic=-1 "
         "quiet\"}\n"
         "  cmd: " +
         std::string(kSleepForever) +
         "\n  resources: {vcpus: 1, memoryMiB: 128, diskMiB: 64}\n  replicas: {running: " +
         std::to_string(running) + ", warm: " + std::to_string(warm) +
         ", sleeping: " + std::to_string(sleeping) + "}\n  policy: " + policy + "\n";
}

class RecordingVmm final : public controller::Vmm {
 public:
  struct Call {
    controller::InstanceKey key;
    controller::Action action;
    bool ok = false;
    std::chrono::steady_clock::time_point begin, end;
  };
  explicit RecordingVmm(controller::Vmm& inner) : inner_(inner) {}

  std::string_view Name() const override { return inner_.Name(); }
  Status Prepare(const controller::VmmTarget& t) override {
    return Record(t, controller::Action::kPrepare, [&] { return inner_.Prepare(t); });
  }
  Result<controller::VmmHandle> Start(const controller::VmmTarget& t) override {
    return RecordResult(t, controller::Action::kStart, [&] { return inner_.Start(t); });
  }
  Status Pause(const controller::VmmTarget& t) override {
    return Record(t, controller::Action::kPause, [&] { return inner_.Pause(t); });
  }
  Status Resume(const controller::VmmTarget& t) override {
    return Record(t, controller::Action::kResume, [&] { return inner_.Resume(t); });
  }
  Status Sleep(const controller::VmmTarget& t) override {
    return Record(t, controller::Action::kSleep, [&] { return inner_.Sleep(t); });
  }
  Result<controller::VmmHandle> Wake(const controller::VmmTarget& t) override {
    return RecordResult(t, controller::Action::kWake, [&] { return inner_.Wake(t); });
  }
  Status Stop(const controller::VmmTarget& t) override {
    return Record(t, controller::Action::kStop, [&] { return inner_.Stop(t); });
  }
  Status Destroy(const controller::VmmTarget& t) override {
    return Record(t, controller::Action::kDestroy, [&] { return inner_.Destroy(t); });
  }
  controller::ProbeResult Probe(const controller::VmmTarget& t) override { return inner_.Probe(t); }

  std::vector<Call> calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  void Clear() {
    std::lock_guard lock(mu_);
    calls_.clear();
  }
  int Count(controller::Action action) const {
    int n = 0;
    for (const auto& c : calls()) n += c.action == action && c.ok ? 1 : 0;
    return n;
  }

 private:
  template <typename F>
  Status Record(const controller::VmmTarget& t, controller::Action a, F&& f) {
    auto begin = std::chrono::steady_clock::now();
    Status s = f();
    Add({t.key, a, s.ok(), begin, std::chrono::steady_clock::now()});
    if (!s.ok()) std::cerr << "[vmm] " << t.key.ToString() << ": " << s.error().message << "\n";
    return s;
  }
  template <typename F>
  Result<controller::VmmHandle> RecordResult(const controller::VmmTarget& t, controller::Action a,
                                             F&& f) {
    auto begin = std::chrono::steady_clock::now();
    Result<controller::VmmHandle> r = f();
    Add({t.key, a, r.ok(), begin, std::chrono::steady_clock::now()});
    if (!r.ok()) std::cerr << "[vmm] " << t.key.ToString() << ": " << r.error().message << "\n";
    return r;
  }
  void Add(Call call) {
    std::lock_guard lock(mu_);
    calls_.push_back(std::move(call));
  }
  controller::Vmm& inner_;
  mutable std::mutex mu_;
  std::vector<Call> calls_;
};

class QemuControllerHarness {
 public:
  QemuControllerHarness(std::filesystem::path image, controller::Controller::Options options)
      : image_(std::move(image)), options_(std::move(options)) {
    options_.instancesDir = dir_ / "tenants";
    runtime::QemuOptions q;
    q.runtimeDir = run_.path();
    q.bootTimeout = std::chrono::seconds(120);
    q.confinement.stateDir = dir_ / "jail";  // this test's own uid table
    auto vmm = runtime::QemuVmm::Create(q);
    if (!vmm.ok()) throw std::runtime_error(vmm.error().message);
    qemu_ = std::move(*vmm);
    recording_ = std::make_unique<RecordingVmm>(*qemu_);
    auto store = controller::Store::Open({dir_ / "state", 64});
    if (!store.ok()) throw std::runtime_error(store.error().message);
    store_ = std::move(*store);
    controller_ = std::make_unique<controller::Controller>(options_, *store_, *recording_);
    Status s = controller_->Start();
    if (!s.ok()) throw std::runtime_error(s.error().message);
  }
  ~QemuControllerHarness() {
    if (controller_) controller_->Stop();
    controller_.reset();
    // Whatever a failed test left running dies with it.
    for (int64_t pid : LiveQemu(dir_.path().string())) ::kill(static_cast<pid_t>(pid), SIGKILL);
  }

  void Apply(const std::vector<std::string>& documents) {
    std::vector<manifests::FileObjects> files;
    manifests::Diagnostics diagnostics;
    manifests::ParseOptions parse;
    parse.imageRoots = {image_};
    parse.defaultRuntime = manifests::Runtime::kQemu;
    int n = 0;
    for (const auto& doc : documents) {
      std::string file = "m" + std::to_string(n++) + ".yaml";
      auto result = manifests::ParseManifest(file, doc, parse);
      if (!result.ok()) throw std::runtime_error(result.diagnostics[0].ToString());
      files.push_back({file, result.objects});
    }
    auto state = std::make_shared<manifests::DesiredState>(
        manifests::Assemble(files, last_desired_.get(), diagnostics));
    if (!diagnostics.empty()) throw std::runtime_error(diagnostics[0].ToString());
    state->revision = last_desired_ ? last_desired_->revision + 1 : 1;
    last_desired_ = state;
    controller_->SetDesired(state);
  }

  bool WaitConverged(std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int stable = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      stable = controller_->Converged() ? stable + 1 : 0;
      if (stable >= 3) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::vector<controller::Instance> Instances(const std::string& tenant,
                                              const std::string& pool) const {
    return store_->ListPool(tenant, pool);
  }
  std::vector<controller::Instance> InState(const std::string& tenant, const std::string& pool,
                                            controller::InstanceState state) const {
    std::vector<controller::Instance> out;
    for (auto& i : Instances(tenant, pool)) {
      if (i.state == state) out.push_back(i);
    }
    return out;
  }
  controller::ProbeResult Probe(const controller::Instance& i) {
    controller::VmmTarget t{
        i.key, i.pool, i.spec.get(),
        options_.instancesDir / i.key.tenant / "pools" / i.pool / "instances" / i.key.name,
        i.handle};
    return qemu_->Probe(t);
  }

  controller::Controller& controller() { return *controller_; }
  RecordingVmm& vmm() { return *recording_; }
  runtime::QemuVmm& qemu() { return *qemu_; }
  const TempDir& dir() const { return dir_; }
  const TempDir& run() const { return run_; }

 private:
  std::filesystem::path image_;
  TempDir dir_{"mvm-e2e"};
  TempDir run_{"mq"};  // short: socket paths are limited to 107 bytes
  controller::Controller::Options options_;
  std::unique_ptr<runtime::QemuVmm> qemu_;
  std::unique_ptr<RecordingVmm> recording_;
  std::unique_ptr<controller::Store> store_;
  std::unique_ptr<controller::Controller> controller_;
  std::shared_ptr<const manifests::DesiredState> last_desired_;
};

}  // namespace mvm::testing
