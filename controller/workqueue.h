#pragma once
// WorkQueue: the queue of keys ("pool/acme/workers", "instance/acme/workers/3") that the
// controller's workers reconcile. Same promises as client-go's rate-limiting, delaying
// util/workqueue, keyed by string:
//
//  - Fair: keys are handed out in the order they became ready (FIFO). Adding a key that is
//    already waiting keeps its place in line.
//  - Stingy: a key waiting is queued once, however often it is added. A key being processed
//    (between Get, or a Claim that took it, and Done) is never handed to a second worker. A key
//    added while it is being processed is queued again, once, when Done is called for it.
//  - AddAfter(key, delay): the key becomes ready `delay` from now on the queue's clock. While a
//    key waits for a deadline, the earliest deadline asked for wins (a later one never
//    postpones it). A key may wait for a deadline and be ready at the same time; when the
//    deadline comes, the usual dedup applies. Delayed keys are not counted by Len().
//  - AddRateLimited(key): AddAfter(key, base * 2^n) capped at max, where n counts the
//    AddRateLimited calls for the key since the last Forget(key). Call Forget on success.
//  - Get blocks, without spinning, until a key is ready or the queue shuts down; it returns
//    nullopt only after shutdown, once nothing is left for it to hand out.
//  - ShutDown(): later adds are ignored, ready and delayed keys are dropped, Get returns
//    nullopt at once; keys in flight finish (Done still works, but requeues nothing). Unlike
//    client-go, whose ShutDown still hands out keys already queued: use ShutDownWithDrain.
//  - ShutDownWithDrain(): later adds are ignored and keys whose delay has not expired are
//    dropped, but keys already ready (or re-added during processing before the call) are still
//    handed out; returns once every handed-out key is Done. Never call it from a worker
//    that holds a key: it would wait for itself.
//  - Every method is safe from any thread. Add, Get and Done are O(1) amortized; AddAfter and
//    AddRateLimited O(log n). One mutex; waiting threads sleep on condition variables.
//
// A worker loop:
//   while (auto key = queue.Get()) {
//     if (Reconcile(*key).ok()) queue.Forget(*key); else queue.AddRateLimited(*key);
//     queue.Done(*key);
//   }

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "controller/clock.h"

namespace mvm::controller {

struct WorkQueueOptions {
  // Backoff of AddRateLimited: base * 2^failures, never more than max_delay.
  Clock::Duration base_delay = std::chrono::milliseconds(5);
  Clock::Duration max_delay = std::chrono::minutes(5);
  // Time source for delays, backoff and metrics; nullptr means SteadyClock. Must outlive the
  // queue.
  Clock* clock = nullptr;
};

// A snapshot for operators (status dump, metrics endpoint).
struct WorkQueueMetrics {
  std::size_t depth = 0;               // keys ready and waiting for a worker (Len())
  std::size_t delayed = 0;             // keys waiting for an AddAfter / backoff deadline
  std::size_t in_flight = 0;           // keys handed out by Get, Done not yet called
  std::uint64_t adds = 0;              // adds that queued a key, marked it to run again, or
                                       // handed it to its claimer
  std::uint64_t deduplicated = 0;      // adds absorbed because the key was already waiting
  std::uint64_t retries = 0;           // AddRateLimited calls
  std::uint64_t completed = 0;         // Done calls for keys in flight
  Clock::Duration longest_running{0};  // how long the oldest in-flight key has been processed
};

class WorkQueue final : private Clock::Listener {
 public:
  using Options = WorkQueueOptions;

  WorkQueue();
  explicit WorkQueue(Options options);
  // All threads must have left Get, and ShutDownWithDrain, before the queue is destroyed.
  ~WorkQueue() override;
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Makes the key ready now (see Fair and Stingy above). Ignored after shutdown.
  void Add(std::string_view key);
  // Makes the key ready after `delay` (<= 0: now). Ignored after shutdown.
  void AddAfter(std::string_view key, Clock::Duration delay);
  // Adds the key after its next backoff delay and counts one more failure for it.
  void AddRateLimited(std::string_view key);
  // Resets the key's failure count, so the next AddRateLimited waits base_delay again.
  void Forget(std::string_view key);
  // Failures counted for the key since the last Forget.
  int NumRequeues(std::string_view key) const;

  // The next ready key, marked as being processed; blocks until there is one. nullopt: the
  // queue is shut down and has nothing left to hand out; the worker should return.
  std::optional<std::string> Get();
  // Add, for a caller that would rather process the key itself, at once, than hand it to a
  // worker (saving a thread wake-up). When the key is neither waiting nor being processed it is
  // marked as being processed by the caller, no worker is woken, and true is returned: the caller
  // then does what a worker does with a key from Get (Forget or AddRateLimited, then Done).
  // Otherwise it is added as Add would (a waiting key keeps its place, a key in flight runs again
  // after its Done) and false is returned; also false, ignoring the key, after shutdown. A key
  // waiting only for an AddAfter deadline is free: it is taken, and its deadline still comes.
  bool Claim(std::string_view key);
  // Ends processing of a key returned by Get (or taken by Claim); requeues it if it was added
  // meanwhile. Call it exactly once per key handed out, also after shutdown. A key not in flight
  // is ignored.
  void Done(std::string_view key);

  void ShutDown();
  void ShutDownWithDrain();
  bool ShuttingDown() const;

  // Ready keys (not delayed, not in flight). Not const: like Get, it first moves keys whose delay
  // has expired into the ready queue, as client-go's timer goroutine would have.
  std::size_t Len();
  WorkQueueMetrics Metrics();

 private:
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // A key that is waiting (dirty), in flight (processing), or both (re-added while in flight).
  struct Entry {
    bool dirty = false;
    bool processing = false;
    Clock::TimePoint since{};  // when Get handed it out
    // In-flight keys, oldest first, so longest_running is O(1) without a scan.
    Entry* older = nullptr;
    Entry* newer = nullptr;
  };
  using Entries = std::unordered_map<std::string, Entry, StringHash, std::equal_to<>>;
  using Node = Entries::value_type;

  struct Delayed {
    Clock::TimePoint deadline;
    std::uint64_t seq;  // tie-break (FIFO among equal deadlines) and validity, see waiting_
    std::string key;
  };
  struct Waiting {
    Clock::TimePoint deadline;
    std::uint64_t seq;
  };

  void ClockAdvanced() override;

  bool AddLocked(std::string_view key);
  void StartProcessingLocked(Node& node);
  void AddAfterLocked(std::string_view key, Clock::Duration delay);
  bool PromoteDueLocked();
  void CompactDelayedLocked();
  Clock::Duration BackoffLocked(std::string_view key);
  void WakeGetterLocked();
  void NotifyIfDrainedLocked();

  const Options options_;
  Clock* const clock_;

  mutable std::mutex mu_;
  std::condition_variable ready_cv_;    // Get waits here
  std::condition_variable drained_cv_;  // ShutDownWithDrain waits here
  std::size_t idle_getters_ = 0;
  bool shutting_down_ = false;

  // Ready keys point into entries_ (unordered_map nodes are stable); Len() is queue_.size().
  Entries entries_;
  std::deque<Node*> queue_;
  Entry* oldest_in_flight_ = nullptr;
  Entry* newest_in_flight_ = nullptr;
  std::size_t in_flight_ = 0;

  // Delayed keys: a min-heap by (deadline, seq). Moving a key to an earlier deadline pushes a new
  // entry; the old one is stale (its seq no longer matches waiting_) and is skipped when popped
  // or compacted away.
  std::vector<Delayed> delayed_;
  std::unordered_map<std::string, Waiting, StringHash, std::equal_to<>> waiting_;
  std::uint64_t next_seq_ = 0;

  std::unordered_map<std::string, std::uint32_t, StringHash, std::equal_to<>> failures_;

  std::uint64_t adds_ = 0;
  std::uint64_t deduplicated_ = 0;
  std::uint64_t retries_ = 0;
  std::uint64_t completed_ = 0;
};

}  // namespace mvm::controller
