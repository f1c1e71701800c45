#pragma once
// ControllerHarness: a Controller on a real SQLite store in a temp dir, driving a FakeVmm, with
// desired state built from manifest text. Restart() drops the controller and store and opens
// them again on the same directory, the way a restarted mvmd would; the FakeVmm (the "host")
// carries over. A StoreWrapper, when set, wraps each store Open() makes before the controller
// sees it (e.g. a decorator that injects a crash); SetStoreWrapper changes it for the next Open().

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "controller/controller.h"
#include "controller/store.h"
#include "manifests/loader.h"
#include "manifests/parser.h"
#include "tests/fake_vmm.h"
#include "tests/test_util.h"

namespace mvm::testing {

inline std::string TenantYaml(const std::string& name, const std::string& quota = "{}") {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Tenant\nmetadata: {name: " + name +
         "}\nspec: {quota: " + quota + "}\n";
}

inline std::string PoolYaml(const std::string& tenant, const std::string& name, int running,
                            int warm, int sleeping, const std::string& extra = "") {
  return "apiVersion: mvm.dev/v1alpha1\nkind: Pool\nmetadata: {name: " + name +
         ", tenant: " + tenant +
         "}\nspec:\n  image: {kernel: vmlinux, rootfs: rootfs.ext4}\n  resources: {vcpus: 1, "
         "memoryMiB: 128, diskMiB: 64}\n  replicas: {running: " +
         std::to_string(running) + ", warm: " + std::to_string(warm) +
         ", sleeping: " + std::to_string(sleeping) + "}\n" + extra;
}

class ControllerHarness {
 public:
  using StoreWrapper =
      std::function<std::unique_ptr<controller::Store>(std::unique_ptr<controller::Store>)>;

  explicit ControllerHarness(controller::Controller::Options options = {},
                             StoreWrapper wrap_store = nullptr)
      : options_(options), wrap_store_(std::move(wrap_store)) {
    options_.instancesDir = dir_ / "tenants";
    if (options_.queue.base_delay == controller::WorkQueueOptions{}.base_delay) {
      options_.queue.base_delay = std::chrono::milliseconds(1);
      options_.queue.max_delay = std::chrono::milliseconds(50);
    }
    Open();
  }
  ~ControllerHarness() { Close(); }

  // With give_desired false the controller starts without a snapshot (as mvmd does until its
  // manifests are loaded) until the next Apply().
  void Open(bool give_desired = true) {
    auto store = controller::Store::Open({dir_ / "state", 64});
    if (!store.ok()) throw std::runtime_error(store.error().message);
    store_ = wrap_store_ ? wrap_store_(std::move(*store)) : std::move(*store);
    controller_ = std::make_unique<controller::Controller>(options_, *store_, vmm_);
    Status s = controller_->Start();
    if (!s.ok()) throw std::runtime_error(s.error().message);
    if (give_desired && last_desired_) controller_->SetDesired(last_desired_);
  }
  void Close() {
    if (controller_) controller_->Stop();
    controller_.reset();
    store_.reset();
  }
  void Restart() {
    Close();
    Open();
  }
  void SetStoreWrapper(StoreWrapper wrap_store) { wrap_store_ = std::move(wrap_store); }

  // Parses the documents (all must be valid) into a snapshot and hands it to the controller.
  void Apply(const std::vector<std::string>& documents) {
    last_desired_ = Snapshot(documents);
    controller_->SetDesired(last_desired_);
  }

  // The snapshot Apply would hand over, built on top of the last one applied (unchanged objects
  // stay the same instances, as the loader keeps them), without handing it over.
  std::shared_ptr<const manifests::DesiredState> Snapshot(
      const std::vector<std::string>& documents) const {
    std::vector<manifests::FileObjects> files;
    manifests::Diagnostics diagnostics;
    manifests::ParseOptions parse;
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
    return state;
  }
  // Hands over a snapshot built by Snapshot().
  void ApplySnapshot(std::shared_ptr<const manifests::DesiredState> state) {
    last_desired_ = state;
    controller_->SetDesired(std::move(state));
  }

  bool WaitConverged(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int stable = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      // Converged twice in a row, a little apart: no reconcile was about to start.
      stable = controller_->Converged() ? stable + 1 : 0;
      if (stable >= 3) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
  }

  // Instances of a pool by state.
  controller::Counts Count(const std::string& tenant, const std::string& pool) const {
    controller::Counts c;
    for (const auto& i : store_->ListPool(tenant, pool)) {
      if (i.state == controller::InstanceState::kRunning) ++c.running;
      if (i.state == controller::InstanceState::kWarm) ++c.warm;
      if (i.state == controller::InstanceState::kSleeping) ++c.sleeping;
    }
    return c;
  }

  // Fake resources whose instance is not recorded: leaks. Empty is good.
  std::vector<std::string> Leaks() const {
    std::vector<std::string> out;
    for (const auto& [key, r] : vmm_.resources()) {
      if (!store_->GetInstance(key)) out.push_back(key.ToString());
    }
    return out;
  }

  controller::Controller& controller() { return *controller_; }
  controller::Store& store() { return *store_; }
  FakeVmm& vmm() { return vmm_; }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_{"mvm-controller"};
  controller::Controller::Options options_;
  StoreWrapper wrap_store_;
  FakeVmm vmm_;
  std::unique_ptr<controller::Store> store_;
  std::unique_ptr<controller::Controller> controller_;
  std::shared_ptr<const manifests::DesiredState> last_desired_;
};

}  // namespace mvm::testing
