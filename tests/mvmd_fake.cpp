// mvmd_fake: mvmd with the fake VMM driver (tests only): the whole daemon of
// controller/mvmd_main.h — flags, store, controller, manifest watcher, status API, signals —
// driving tests/fake_vmm.h instead of real VMMs.
//
// The fake "host" can outlive the daemon, as real VMM processes outlive mvmd: with a state file
// the fake's resources (prepared directories, VMM processes with their pids, snapshots) are
// loaded at start and rewritten atomically after every action, so a test can kill -9 mvmd_fake,
// start it again and check that live VMMs were adopted rather than booted again.
//
// Settings (environment, so they never clash with mvmd's own flags):
//   MVM_FAKE_STATE=FILE        persist the fake host in FILE (also: --fake-state FILE, which is
//                              taken out of the arguments before mvmd parses them)
//   MVM_FAKE_LATENCY_MS=N      every driver call takes N ms (default 0), so that churn is slow
//                              enough to interrupt
//   MVM_FAKE_REPLY_DELAY_MS=N  every successful call returns N ms after its effect was done and
//                              persisted (default 0): widens the window in which a VMM acted but
//                              mvmd has not recorded it yet, so a kill lands there at will
// Everything else is mvmd's: see `mvmd_fake --help`.

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "controller/mvmd_main.h"
#include "tests/fake_vmm.h"

namespace {

using mvm::controller::MvmdConfig;
using mvm::controller::ProbeResult;
using mvm::controller::Vmm;
using mvm::controller::VmmHandle;
using mvm::controller::VmmTarget;

struct FakeSettings {
  std::string stateFile;
  long latencyMs = 0;
  long replyDelayMs = 0;
};

// The fake, with every successful call's reply held back for a while after the effect.
class DelayedReply final : public Vmm {
 public:
  DelayedReply(std::unique_ptr<mvm::testing::FakeVmm> fake, std::chrono::milliseconds delay)
      : fake_(std::move(fake)), delay_(delay) {}

  std::string_view Name() const override { return fake_->Name(); }
  mvm::Status Prepare(const VmmTarget& t) override { return Held(fake_->Prepare(t)); }
  mvm::Result<VmmHandle> Start(const VmmTarget& t) override { return Held(fake_->Start(t)); }
  mvm::Status Pause(const VmmTarget& t) override { return Held(fake_->Pause(t)); }
  mvm::Status Resume(const VmmTarget& t) override { return Held(fake_->Resume(t)); }
  mvm::Status Sleep(const VmmTarget& t) override { return Held(fake_->Sleep(t)); }
  mvm::Result<VmmHandle> Wake(const VmmTarget& t) override { return Held(fake_->Wake(t)); }
  mvm::Status Stop(const VmmTarget& t) override { return Held(fake_->Stop(t)); }
  mvm::Status Destroy(const VmmTarget& t) override { return Held(fake_->Destroy(t)); }
  ProbeResult Probe(const VmmTarget& t) override { return fake_->Probe(t); }

 private:
  template <typename T>
  T Held(T outcome) {
    if (outcome) std::this_thread::sleep_for(delay_);
    return outcome;
  }

  std::unique_ptr<mvm::testing::FakeVmm> fake_;
  std::chrono::milliseconds delay_;
};

// A non-negative number of milliseconds from the environment; false when malformed.
bool MillisFromEnv(const char* name, long& out) {
  const char* text = std::getenv(name);
  if (text == nullptr) return true;
  char* end = nullptr;
  out = std::strtol(text, &end, 10);
  if (*text != '\0' && *end == '\0' && out >= 0) return true;
  std::cerr << "mvmd_fake: " << name << " must be a number of milliseconds\n";
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  FakeSettings settings;
  if (const char* file = std::getenv("MVM_FAKE_STATE")) settings.stateFile = file;
  if (!MillisFromEnv("MVM_FAKE_LATENCY_MS", settings.latencyMs) ||
      !MillisFromEnv("MVM_FAKE_REPLY_DELAY_MS", settings.replyDelayMs)) {
    return 2;
  }
  // --fake-state FILE / --fake-state=FILE: ours, removed before mvmd's flag parser sees them.
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--fake-state" && i + 1 < argc) {
      settings.stateFile = argv[++i];
    } else if (arg.starts_with("--fake-state=")) {
      settings.stateFile = std::string(arg.substr(std::string_view("--fake-state=").size()));
    } else {
      args.push_back(argv[i]);
    }
  }
  args.push_back(nullptr);

  return mvm::controller::RunMvmd(
      static_cast<int>(args.size()) - 1, args.data(),
      [&settings](const MvmdConfig&) -> mvm::Result<std::unique_ptr<Vmm>> {
        auto vmm = std::make_unique<mvm::testing::FakeVmm>();
        vmm->SetLatency(std::chrono::milliseconds(settings.latencyMs));
        if (!settings.stateFile.empty()) {
          if (mvm::Status s = vmm->UseStateFile(settings.stateFile); !s.ok()) return s.error();
        }
        if (settings.replyDelayMs > 0) {
          return std::unique_ptr<Vmm>(std::make_unique<DelayedReply>(
              std::move(vmm), std::chrono::milliseconds(settings.replyDelayMs)));
        }
        return std::unique_ptr<Vmm>(std::move(vmm));
      });
}
