#pragma once
// FakeVmm: an in-memory Vmm for controller tests (tests/ only, never in the product).
//
// It models what a real driver leaves on a host — a prepared instance directory, a VMM process
// (running or paused), a snapshot — as "resources" per instance, so tests can check that every
// resource belongs to a recorded instance (no leaks). It outlives Controller objects, the way
// VMM processes outlive mvmd. Injectable: per-call latency, failures (a predicate over
// instance and action, or the next N calls), a "crashed" switch under which every call fails
// without effect, and Kill() to make a VMM vanish. It records any overlap of two calls on one
// instance (a violation of the one-transition-at-a-time promise).
//
// Optionally persistent (UseStateFile): the resources then live in a file as well, loaded once
// and rewritten atomically (temp file + rename) after every successful action, so a host
// survives the death of the process that drives it — the way VMM processes outlive a killed
// mvmd (tests/mvmd_fake.cpp). No fsync: that models a crash of mvmd, not of the machine.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "controller/vmm.h"

namespace mvm::testing {

class FakeVmm final : public controller::Vmm {
 public:
  using Action = controller::Action;
  using InstanceKey = controller::InstanceKey;

  struct Resources {
    bool prepared = false;
    bool process = false;
    bool paused = false;
    bool snapshot = false;
    int64_t pid = 0;
    bool any() const { return prepared || process || snapshot; }
  };

  std::string_view Name() const override { return "fake"; }

  Status Prepare(const controller::VmmTarget& t) override {
    return Act(t, Action::kPrepare, [&](Resources& r) -> Status {
      r.prepared = true;
      return {};
    });
  }
  Result<controller::VmmHandle> Start(const controller::VmmTarget& t) override {
    controller::VmmHandle handle;
    Status s = Act(t, Action::kStart, [&](Resources& r) -> Status {
      if (!r.prepared) return Error{"start: not prepared"};
      r.process = true;
      r.paused = false;
      r.pid = ++next_pid_;
      handle.pid = r.pid;
      handle.socket = "fake:" + t.key.ToString();
      return {};
    });
    if (!s.ok()) return s.error();
    return handle;
  }
  Status Pause(const controller::VmmTarget& t) override {
    return Act(t, Action::kPause, [&](Resources& r) -> Status {
      if (!r.process) return Error{"pause: no VMM process"};
      r.paused = true;
      return {};
    });
  }
  Status Resume(const controller::VmmTarget& t) override {
    return Act(t, Action::kResume, [&](Resources& r) -> Status {
      if (!r.process) return Error{"resume: no VMM process"};
      r.paused = false;
      return {};
    });
  }
  Status Sleep(const controller::VmmTarget& t) override {
    return Act(t, Action::kSleep, [&](Resources& r) -> Status {
      if (!r.process || !r.paused) return Error{"sleep: VMM not paused"};
      r.snapshot = true;
      r.process = false;
      r.paused = false;
      return {};
    });
  }
  Result<controller::VmmHandle> Wake(const controller::VmmTarget& t) override {
    controller::VmmHandle handle;
    Status s = Act(t, Action::kWake, [&](Resources& r) -> Status {
      if (!r.snapshot) return Error{"wake: no snapshot"};
      r.snapshot = false;
      r.process = true;
      r.paused = false;
      r.pid = ++next_pid_;
      handle.pid = r.pid;
      handle.socket = "fake:" + t.key.ToString();
      return {};
    });
    if (!s.ok()) return s.error();
    return handle;
  }
  Status Stop(const controller::VmmTarget& t) override {
    return Act(t, Action::kStop, [&](Resources& r) -> Status {
      r.process = false;
      r.paused = false;
      r.snapshot = false;
      return {};
    });
  }
  Status Destroy(const controller::VmmTarget& t) override {
    return Act(t, Action::kDestroy, [&](Resources& r) -> Status {
      r = Resources{};
      return {};
    });
  }
  controller::ProbeResult Probe(const controller::VmmTarget& t) override {
    std::lock_guard lock(mu_);
    ++probes_;
    controller::ProbeResult p;
    if (crashed_) return p;
    auto it = resources_.find(t.key);
    if (it == resources_.end()) {
      p.detail = "no such VMM";
      return p;
    }
    const Resources& r = it->second;
    p.alive = r.process && (t.handle.pid == 0 || t.handle.pid == r.pid);
    if (p.alive) {
      p.handle.pid = r.pid;
      p.handle.socket = "fake:" + t.key.ToString();
      p.observed =
          r.paused ? controller::InstanceState::kWarm : controller::InstanceState::kRunning;
    } else {
      p.detail = r.process ? "pid mismatch" : "process not found";
    }
    p.snapshot = r.snapshot;
    return p;
  }

  // --- persistence ---

  // From now on the resources live in `file` too: if it exists its contents replace the
  // resources held in memory; after every successful action the file is rewritten atomically.
  // Fails, changing nothing, when the file exists but cannot be read or parsed.
  // Format: a line "mvm-fake-vmm 1 <next pid>", then one line per instance holding anything:
  // "<tenant> <name> <prepared> <process> <paused> <snapshot> <pid>" (flags 0/1).
  Status UseStateFile(const std::filesystem::path& file) {
    std::lock_guard lock(mu_);
    std::error_code ec;
    if (std::filesystem::exists(file, ec)) {
      std::ifstream in(file);
      std::string magic;
      int version = 0;
      int64_t next_pid = 0;
      if (!(in >> magic >> version >> next_pid) || magic != "mvm-fake-vmm" || version != 1) {
        return Error{"fake VMM state " + file.string() + ": not a version 1 state file"};
      }
      std::map<InstanceKey, Resources> loaded;
      InstanceKey key;
      int prepared = 0, process = 0, paused = 0, snapshot = 0;
      int64_t pid = 0;
      while (in >> key.tenant >> key.name >> prepared >> process >> paused >> snapshot >> pid) {
        loaded[key] = Resources{prepared != 0, process != 0, paused != 0, snapshot != 0, pid};
      }
      if (!in.eof()) return Error{"fake VMM state " + file.string() + ": malformed line"};
      resources_ = std::move(loaded);
      next_pid_ = next_pid;
    }
    state_file_ = file;
    return SaveLocked();
  }

  // Puts resources in place for an instance as if earlier actions had made them (benchmarks
  // seed a converged fleet this way); a pid at or above the next one moves the next one past it.
  void Seed(const InstanceKey& key, const Resources& resources) {
    std::lock_guard lock(mu_);
    resources_[key] = resources;
    next_pid_ = std::max(next_pid_, resources.pid);
  }

  // --- test controls ---
  void SetLatency(std::chrono::microseconds latency) { latency_us_ = latency.count(); }
  void FailWhen(std::function<bool(const InstanceKey&, Action)> predicate) {
    std::lock_guard lock(mu_);
    fail_when_ = std::move(predicate);
  }
  void FailNext(int calls) { fail_next_ = calls; }
  void SetCrashed(bool crashed) {
    std::lock_guard lock(mu_);
    crashed_ = crashed;
  }
  // Called (under the fake's lock) after every successful action, with all resources.
  void OnAction(
      std::function<void(const InstanceKey&, Action, const std::map<InstanceKey, Resources>&)>
          hook) {
    std::lock_guard lock(mu_);
    on_action_ = std::move(hook);
  }
  // Calls the predicate matches wait (counted in in_flight) until ReleaseHeld(), or 60 s at most
  // (a test that fails to release them still ends).
  void HoldWhen(std::function<bool(const controller::VmmTarget&, Action)> predicate) {
    std::lock_guard lock(mu_);
    hold_when_ = std::move(predicate);
  }
  void ReleaseHeld() {
    {
      std::lock_guard lock(mu_);
      hold_when_ = nullptr;
    }
    held_cv_.notify_all();
  }
  // The VMM process vanishes (kill -9).
  void Kill(const InstanceKey& key) {
    std::lock_guard lock(mu_);
    auto it = resources_.find(key);
    if (it != resources_.end()) it->second.process = it->second.paused = false;
    [[maybe_unused]] Status saved = SaveLocked();
  }

  std::map<InstanceKey, Resources> resources() const {
    std::lock_guard lock(mu_);
    std::map<InstanceKey, Resources> out;
    for (const auto& [k, r] : resources_) {
      if (r.any()) out[k] = r;
    }
    return out;
  }
  int calls(Action action) const {
    std::lock_guard lock(mu_);
    auto it = calls_.find(action);
    return it == calls_.end() ? 0 : it->second;
  }
  int total_calls() const {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& [a, c] : calls_) n += c;
    return n;
  }
  int probes() const {
    std::lock_guard lock(mu_);
    return probes_;
  }
  // Calls that overlapped another call on the same instance: must stay 0.
  int overlaps() const { return overlaps_; }
  // Actions under way right now (begun, not yet returned).
  int in_flight() const {
    std::lock_guard lock(mu_);
    return static_cast<int>(busy_.size());
  }
  std::chrono::steady_clock::time_point first_call_time() const {
    std::lock_guard lock(mu_);
    return first_call_;
  }

 private:
  Status Act(const controller::VmmTarget& t, Action action,
             const std::function<Status(Resources&)>& effect) {
    {
      std::unique_lock lock(mu_);
      if (first_call_ == std::chrono::steady_clock::time_point{}) {
        first_call_ = std::chrono::steady_clock::now();
      }
      if (!busy_.insert(t.key).second) ++overlaps_;
      held_cv_.wait_for(lock, std::chrono::seconds(60),
                        [&] { return !hold_when_ || !hold_when_(t, action); });
    }
    if (int64_t us = latency_us_.load(); us > 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(us));
    }
    std::lock_guard lock(mu_);
    busy_.erase(t.key);
    ++calls_[action];
    if (crashed_) return Error{"fake VMM host is down"};
    if (fail_next_ > 0) {
      --fail_next_;
      return Error{"injected failure"};
    }
    if (fail_when_ && fail_when_(t.key, action)) return Error{"injected failure"};
    Status s = effect(resources_[t.key]);
    if (s.ok() && !state_file_.empty()) s = SaveLocked();
    if (s.ok() && on_action_) on_action_(t.key, action, resources_);
    return s;
  }

  // Writes every instance holding anything to state_file_.tmp, then renames it over state_file_.
  Status SaveLocked() {
    if (state_file_.empty()) return {};
    std::ostringstream text;
    text << "mvm-fake-vmm 1 " << next_pid_ << "\n";
    for (const auto& [k, r] : resources_) {
      if (!r.any()) continue;
      text << k.tenant << ' ' << k.name << ' ' << r.prepared << ' ' << r.process << ' ' << r.paused
           << ' ' << r.snapshot << ' ' << r.pid << "\n";
    }
    std::filesystem::path tmp = state_file_;
    tmp += ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << text.str();
      if (!out.flush()) return Error{"fake VMM: cannot write " + tmp.string()};
    }
    std::error_code ec;
    std::filesystem::rename(tmp, state_file_, ec);
    if (ec) return Error{"fake VMM: cannot rename " + tmp.string() + ": " + ec.message()};
    return {};
  }

  mutable std::mutex mu_;
  std::condition_variable held_cv_;
  std::function<bool(const controller::VmmTarget&, Action)> hold_when_;
  std::map<InstanceKey, Resources> resources_;
  std::map<Action, int> calls_;
  std::set<InstanceKey> busy_;
  std::atomic<int> overlaps_{0};
  std::atomic<int> fail_next_{0};
  std::function<bool(const InstanceKey&, Action)> fail_when_;
  std::function<void(const InstanceKey&, Action, const std::map<InstanceKey, Resources>&)>
      on_action_;
  std::atomic<int64_t> latency_us_{0};
  bool crashed_ = false;
  int64_t next_pid_ = 1000;
  int probes_ = 0;
  std::chrono::steady_clock::time_point first_call_{};
  std::filesystem::path state_file_;  // empty: not persistent
};

}  // namespace mvm::testing
