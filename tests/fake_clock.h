#pragma once
// FakeClock: a controller Clock that only moves when a test calls Advance, so that backoff,
// AddAfter and policy timers can be tested without sleeping.
//
// Promises:
//  - Now() starts at an arbitrary fixed point and changes only through Advance / AdvanceTo.
//  - Advance returns after every listener has seen ClockAdvanced(), so whatever became due is
//    visible to the test when Advance returns (e.g. a WorkQueue's Len()).
//  - WaitUntil does not time out by itself: waiters wake on notification only, which their
//    listener provides on every Advance.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "controller/clock.h"

namespace mvm::testutil {

class FakeClock final : public controller::Clock {
 public:
  FakeClock() = default;
  explicit FakeClock(TimePoint start) : now_(start) {}

  TimePoint Now() const override {
    std::lock_guard lock(now_mu_);
    return now_;
  }

  void WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                 TimePoint deadline) const override {
    if (Now() >= deadline) return;
    cv.wait(lock);
  }

  void AddListener(Listener* listener) override {
    std::lock_guard lock(listeners_mu_);
    listeners_.push_back(listener);
  }
  void RemoveListener(Listener* listener) override {
    std::lock_guard lock(listeners_mu_);
    std::erase(listeners_, listener);
  }

  void Advance(Duration d) {
    {
      std::lock_guard lock(now_mu_);
      now_ += d;
    }
    NotifyListeners();
  }
  void AdvanceTo(TimePoint t) {
    {
      std::lock_guard lock(now_mu_);
      now_ = std::max(now_, t);
    }
    NotifyListeners();
  }

 private:
  void NotifyListeners() {
    // Held while calling out so RemoveListener cannot return while a listener is being called.
    // Listeners lock their own mutex inside; they never call back into AddListener/Remove.
    std::lock_guard lock(listeners_mu_);
    for (Listener* l : listeners_) l->ClockAdvanced();
  }

  mutable std::mutex now_mu_;
  TimePoint now_ = TimePoint{} + std::chrono::hours(1000);
  std::mutex listeners_mu_;
  std::vector<Listener*> listeners_;
};

}  // namespace mvm::testutil
