#pragma once
// Clock: the time source of everything in the controller that waits (work queue delays and
// backoff, policy timers), so that tests can move time instead of sleeping.
//
// Promises:
//  - Now() never goes backwards.
//  - WaitUntil(cv, lock, deadline) blocks on `cv` (guarded by `lock`) until notified or until
//    `deadline` has passed on this clock. Like any condition-variable wait it may return early
//    or spuriously; callers re-check their condition in a loop.
//  - A clock whose time jumps instead of flowing (a test's fake clock) calls
//    ClockAdvanced() on every registered Listener after each jump, from the thread that moved
//    it; listeners use it to wake their waits. SteadyClock never calls listeners.
//  - Clocks are safe from any thread. A listener is never called after RemoveListener returns.

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace mvm::controller {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Duration = std::chrono::steady_clock::duration;

  class Listener {
   public:
    virtual ~Listener() = default;
    // Time moved. Called without any clock lock held that Now() needs.
    virtual void ClockAdvanced() = 0;
  };

  virtual ~Clock() = default;

  virtual TimePoint Now() const = 0;
  virtual void WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                         TimePoint deadline) const = 0;

  // The listener must stay alive until RemoveListener. Default: time flows, nobody to tell.
  virtual void AddListener(Listener* /*listener*/) {}
  virtual void RemoveListener(Listener* /*listener*/) {}
};

// Real time: std::chrono::steady_clock.
class SteadyClock final : public Clock {
 public:
  static SteadyClock& Instance() {
    static SteadyClock clock;
    return clock;
  }

  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  void WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                 TimePoint deadline) const override {
    cv.wait_until(lock, deadline);
  }
};

}  // namespace mvm::controller
