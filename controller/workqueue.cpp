#include "controller/workqueue.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace mvm::controller {
namespace {

// Min-heap order on (deadline, seq): std::*_heap keep the largest first, so compare reversed.
constexpr auto kLaterThan = [](const auto& a, const auto& b) {
  if (a.deadline != b.deadline) return a.deadline > b.deadline;
  return a.seq > b.seq;
};

}  // namespace

WorkQueue::WorkQueue() : WorkQueue(Options{}) {}

WorkQueue::WorkQueue(Options options)
    : options_(options),
      clock_(options.clock != nullptr ? options.clock : &SteadyClock::Instance()) {
  // Last: from here on the clock may call ClockAdvanced from another thread.
  clock_->AddListener(this);
}

WorkQueue::~WorkQueue() {
  clock_->RemoveListener(this);
}

void WorkQueue::Add(std::string_view key) {
  std::lock_guard lock(mu_);
  if (shutting_down_) return;
  // Keys whose delay expired before this add go first, as if their timer had already fired.
  const bool promoted = PromoteDueLocked();
  if (AddLocked(key) || promoted) WakeGetterLocked();
}

void WorkQueue::AddAfter(std::string_view key, Clock::Duration delay) {
  std::lock_guard lock(mu_);
  if (shutting_down_) return;
  AddAfterLocked(key, delay);
}

void WorkQueue::AddRateLimited(std::string_view key) {
  std::lock_guard lock(mu_);
  if (shutting_down_) return;
  ++retries_;
  AddAfterLocked(key, BackoffLocked(key));
}

void WorkQueue::Forget(std::string_view key) {
  std::lock_guard lock(mu_);
  if (auto it = failures_.find(key); it != failures_.end()) failures_.erase(it);
}

int WorkQueue::NumRequeues(std::string_view key) const {
  std::lock_guard lock(mu_);
  auto it = failures_.find(key);
  if (it == failures_.end()) return 0;
  return static_cast<int>(std::min<std::uint32_t>(it->second, std::numeric_limits<int>::max()));
}

std::optional<std::string> WorkQueue::Get() {
  std::unique_lock lock(mu_);
  for (;;) {
    PromoteDueLocked();  // no wake here: this thread takes one, then passes the baton below
    if (!queue_.empty()) break;
    if (shutting_down_) return std::nullopt;
    ++idle_getters_;
    if (delayed_.empty()) {
      ready_cv_.wait(lock);
    } else {
      // No timer thread: the sleeping getters wake at the earliest deadline themselves.
      clock_->WaitUntil(ready_cv_, lock, delayed_.front().deadline);
    }
    --idle_getters_;
  }

  Node* node = queue_.front();
  queue_.pop_front();
  StartProcessingLocked(*node);

  // Pass the baton: another idle getter takes the next ready key, or takes over waiting for the
  // next deadline (it may be sleeping toward a later one, or without any).
  if (!queue_.empty() || !delayed_.empty()) WakeGetterLocked();
  return node->first;
}

bool WorkQueue::Claim(std::string_view key) {
  std::lock_guard lock(mu_);
  if (shutting_down_) return false;
  if (PromoteDueLocked()) WakeGetterLocked();
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    if (AddLocked(key)) WakeGetterLocked();  // waiting already, or in flight: as Add
    return false;
  }
  it = entries_.emplace(std::string(key), Entry{}).first;
  ++adds_;
  StartProcessingLocked(*it);
  return true;
}

// Marks a key that is not in the ready queue as being processed (by Get's or Claim's caller).
void WorkQueue::StartProcessingLocked(Node& node) {
  Entry& entry = node.second;
  entry.dirty = false;
  entry.processing = true;
  entry.since = clock_->Now();
  entry.older = newest_in_flight_;
  entry.newer = nullptr;
  (newest_in_flight_ != nullptr ? newest_in_flight_->newer : oldest_in_flight_) = &entry;
  newest_in_flight_ = &entry;
  ++in_flight_;
}

void WorkQueue::Done(std::string_view key) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || !it->second.processing) return;
  Entry& entry = it->second;
  (entry.older != nullptr ? entry.older->newer : oldest_in_flight_) = entry.newer;
  (entry.newer != nullptr ? entry.newer->older : newest_in_flight_) = entry.older;
  entry.older = entry.newer = nullptr;
  entry.processing = false;
  --in_flight_;
  ++completed_;

  if (entry.dirty) {
    // Added while it was processed: now it may run again, behind keys that became ready first.
    PromoteDueLocked();
    queue_.push_back(&*it);
    WakeGetterLocked();
  } else {
    entries_.erase(it);
  }
  NotifyIfDrainedLocked();
}

void WorkQueue::ShutDown() {
  std::lock_guard lock(mu_);
  shutting_down_ = true;
  queue_.clear();
  delayed_.clear();
  waiting_.clear();
  // Keys in flight stay known so Done works, but nothing runs again.
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.processing) {
      it->second.dirty = false;
      ++it;
    } else {
      it = entries_.erase(it);
    }
  }
  ready_cv_.notify_all();
  NotifyIfDrainedLocked();
}

void WorkQueue::ShutDownWithDrain() {
  std::unique_lock lock(mu_);
  PromoteDueLocked();  // due keys count as queued; the rest are dropped
  shutting_down_ = true;
  delayed_.clear();
  waiting_.clear();
  ready_cv_.notify_all();
  drained_cv_.wait(lock, [this] { return queue_.empty() && in_flight_ == 0; });
}

bool WorkQueue::ShuttingDown() const {
  std::lock_guard lock(mu_);
  return shutting_down_;
}

std::size_t WorkQueue::Len() {
  std::lock_guard lock(mu_);
  if (PromoteDueLocked()) WakeGetterLocked();
  return queue_.size();
}

WorkQueueMetrics WorkQueue::Metrics() {
  std::lock_guard lock(mu_);
  if (PromoteDueLocked()) WakeGetterLocked();
  WorkQueueMetrics m;
  m.depth = queue_.size();
  m.delayed = waiting_.size();
  m.in_flight = in_flight_;
  m.adds = adds_;
  m.deduplicated = deduplicated_;
  m.retries = retries_;
  m.completed = completed_;
  if (oldest_in_flight_ != nullptr) m.longest_running = clock_->Now() - oldest_in_flight_->since;
  return m;
}

void WorkQueue::ClockAdvanced() {
  std::lock_guard lock(mu_);
  PromoteDueLocked();
  // Getters wait without a timeout on clocks that jump; let all of them look again.
  ready_cv_.notify_all();
}

// Marks the key dirty; returns true when it joined the ready queue (a getter should wake).
bool WorkQueue::AddLocked(std::string_view key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    it = entries_.emplace(std::string(key), Entry{}).first;
  } else if (it->second.dirty) {
    ++deduplicated_;
    return false;
  }
  ++adds_;
  it->second.dirty = true;
  if (it->second.processing) return false;  // Done will queue it
  queue_.push_back(&*it);
  return true;
}

void WorkQueue::AddAfterLocked(std::string_view key, Clock::Duration delay) {
  if (delay <= Clock::Duration::zero()) {
    const bool promoted = PromoteDueLocked();
    if (AddLocked(key) || promoted) WakeGetterLocked();
    return;
  }
  const Clock::TimePoint deadline = clock_->Now() + delay;
  const std::uint64_t seq = next_seq_++;
  if (auto it = waiting_.find(key); it != waiting_.end()) {
    if (it->second.deadline <= deadline) return;  // the earlier deadline wins
    it->second = Waiting{deadline, seq};          // the old heap entry is now stale
  } else {
    waiting_.emplace(std::string(key), Waiting{deadline, seq});
  }
  delayed_.push_back(Delayed{deadline, seq, std::string(key)});
  std::push_heap(delayed_.begin(), delayed_.end(), kLaterThan);
  CompactDelayedLocked();
  // A getter sleeping toward a later deadline (or none) must re-aim.
  if (delayed_.front().seq == seq) WakeGetterLocked();
}

// Moves every key whose deadline has passed into the ready queue, earliest deadline first.
// Returns whether the ready queue grew; waking a getter is the caller's call.
bool WorkQueue::PromoteDueLocked() {
  if (delayed_.empty()) return false;
  const Clock::TimePoint now = clock_->Now();
  bool queued = false;
  while (!delayed_.empty() && delayed_.front().deadline <= now) {
    std::pop_heap(delayed_.begin(), delayed_.end(), kLaterThan);
    Delayed due = std::move(delayed_.back());
    delayed_.pop_back();
    auto it = waiting_.find(due.key);
    if (it == waiting_.end() || it->second.seq != due.seq) continue;  // stale
    waiting_.erase(it);
    queued = AddLocked(due.key) || queued;
  }
  return queued;
}

// Stale heap entries (keys moved to an earlier deadline) are dropped when popped; this bounds
// how many can pile up when a key keeps being re-delayed earlier and earlier.
void WorkQueue::CompactDelayedLocked() {
  if (delayed_.size() <= 2 * waiting_.size() + 64) return;
  std::erase_if(delayed_, [this](const Delayed& d) {
    auto it = waiting_.find(d.key);
    return it == waiting_.end() || it->second.seq != d.seq;
  });
  std::make_heap(delayed_.begin(), delayed_.end(), kLaterThan);
}

Clock::Duration WorkQueue::BackoffLocked(std::string_view key) {
  auto it = failures_.find(key);
  if (it == failures_.end()) it = failures_.emplace(std::string(key), 0).first;
  const std::uint32_t exponent = it->second;
  if (it->second < std::numeric_limits<std::uint32_t>::max()) ++it->second;

  const Clock::Duration base = options_.base_delay;
  const Clock::Duration cap = options_.max_delay;
  if (base <= Clock::Duration::zero()) return Clock::Duration::zero();
  // base * 2^exponent without overflow: anything past the cap is the cap.
  if (exponent >= 62) return cap;
  const auto factor = Clock::Duration::rep{1} << exponent;
  if (base.count() > cap.count() / factor) return cap;
  return std::min(base * factor, cap);
}

void WorkQueue::WakeGetterLocked() {
  if (idle_getters_ > 0) ready_cv_.notify_one();
}

void WorkQueue::NotifyIfDrainedLocked() {
  if (shutting_down_ && queue_.empty() && in_flight_ == 0) drained_cv_.notify_all();
}

}  // namespace mvm::controller
