#include "controller/workqueue.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/fake_clock.h"

namespace mvm::controller {
namespace {

using namespace std::chrono_literals;
using testutil::FakeClock;

WorkQueue::Options WithClock(Clock& clock) {
  WorkQueue::Options options;
  options.clock = &clock;
  return options;
}

// Polls a condition that another thread will make true (test scaffolding only).
void WaitFor(const std::function<bool()>& condition) {
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (!condition()) {
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "condition never became true";
    std::this_thread::sleep_for(1ms);
  }
}

// The result of a Get running in `getter`; if it does not come within 5 s, fails the test and
// shuts the queue down so that the getter returns instead of hanging the test binary.
std::optional<std::string> Await(std::future<std::optional<std::string>>& getter, WorkQueue& q) {
  if (getter.wait_for(5s) != std::future_status::ready) {
    ADD_FAILURE() << "Get did not return within 5 s";
    q.ShutDown();
  }
  return getter.get();
}

// Gets a key, asserting one is ready (so a broken queue fails the test instead of blocking it),
// and marks it Done.
std::string GetAndDone(WorkQueue& q) {
  if (q.Len() == 0) {
    ADD_FAILURE() << "no key ready";
    return "";
  }
  std::optional<std::string> key = q.Get();
  EXPECT_TRUE(key.has_value());
  if (!key) return "";
  q.Done(*key);
  return *key;
}

// --- Fair --------------------------------------------------------------------------------------

TEST(WorkQueue, HandsOutKeysInTheOrderTheyWereAdded) {
  WorkQueue q;
  for (const char* key : {"c", "a", "b", "d"}) q.Add(key);
  EXPECT_EQ(q.Len(), 4u);
  EXPECT_EQ(GetAndDone(q), "c");
  EXPECT_EQ(GetAndDone(q), "a");
  EXPECT_EQ(GetAndDone(q), "b");
  EXPECT_EQ(GetAndDone(q), "d");
  EXPECT_EQ(q.Len(), 0u);
}

TEST(WorkQueue, KeyAddedAgainWhileWaitingKeepsItsPlace) {
  WorkQueue q;
  q.Add("a");
  q.Add("b");
  q.Add("a");
  q.Add("c");
  EXPECT_EQ(GetAndDone(q), "a");
  EXPECT_EQ(GetAndDone(q), "b");
  EXPECT_EQ(GetAndDone(q), "c");
}

// --- Stingy ------------------------------------------------------------------------------------

TEST(WorkQueue, KeyAddedManyTimesWhileWaitingIsQueuedOnce) {
  WorkQueue q;
  for (int i = 0; i < 100; ++i) q.Add("a");
  EXPECT_EQ(q.Len(), 1u);
  EXPECT_EQ(GetAndDone(q), "a");
  EXPECT_EQ(q.Len(), 0u);
  const WorkQueueMetrics m = q.Metrics();
  EXPECT_EQ(m.adds, 1u);
  EXPECT_EQ(m.deduplicated, 99u);
}

TEST(WorkQueue, KeyAddedWhileProcessingRunsAgainAfterDone) {
  WorkQueue q;
  q.Add("a");
  ASSERT_EQ(q.Get(), "a");
  q.Add("a");
  q.Add("a");
  EXPECT_EQ(q.Len(), 0u) << "a key in flight must not be handed to a second worker";
  q.Done("a");
  EXPECT_EQ(q.Len(), 1u) << "re-added while processing: queued again, once";
  EXPECT_EQ(GetAndDone(q), "a");
  EXPECT_EQ(q.Len(), 0u);
}

TEST(WorkQueue, KeyRequeuedByDoneGoesBehindKeysAlreadyReady) {
  WorkQueue q;
  q.Add("a");
  ASSERT_EQ(q.Get(), "a");
  q.Add("a");
  q.Add("b");
  q.Done("a");
  EXPECT_EQ(GetAndDone(q), "b");
  EXPECT_EQ(GetAndDone(q), "a");
}

TEST(WorkQueue, KeyInFlightIsNotHandedToASecondGetter) {
  WorkQueue q;
  q.Add("a");
  ASSERT_EQ(q.Get(), "a");
  q.Add("a");
  auto second = std::async(std::launch::async, [&] { return q.Get(); });
  EXPECT_EQ(second.wait_for(50ms), std::future_status::timeout);
  q.Done("a");
  EXPECT_EQ(Await(second, q), "a");
  q.Done("a");
}

TEST(WorkQueue, DoneForAKeyNotInFlightIsIgnored) {
  WorkQueue q;
  q.Done("nobody");
  q.Add("a");
  q.Done("a");  // waiting, not in flight
  EXPECT_EQ(q.Len(), 1u);
  EXPECT_EQ(GetAndDone(q), "a");
  q.Done("a");  // twice
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.Metrics().completed, 1u);
}

TEST(WorkQueue, ClaimedKeyIsProcessedByTheCallerAndNotHandedOut) {
  WorkQueue q;
  ASSERT_TRUE(q.Claim("a"));
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.Metrics().in_flight, 1u);
  auto getter = std::async(std::launch::async, [&] { return q.Get(); });
  EXPECT_EQ(getter.wait_for(50ms), std::future_status::timeout) << "a claimed key was handed out";
  q.Add("a");  // while the claimer processes it: runs again after Done, in a worker
  EXPECT_EQ(getter.wait_for(20ms), std::future_status::timeout);
  q.Done("a");
  EXPECT_EQ(Await(getter, q), "a");
  q.Done("a");
  EXPECT_EQ(q.Metrics().completed, 2u);
  EXPECT_EQ(q.Metrics().in_flight, 0u);
}

TEST(WorkQueue, ClaimOfAKeyWaitingOrInFlightAddsItInstead) {
  WorkQueue q;
  q.Add("a");
  q.Add("b");
  EXPECT_FALSE(q.Claim("b")) << "a waiting key is the workers'";
  EXPECT_EQ(q.Len(), 2u) << "and keeps its one place in line";
  ASSERT_EQ(q.Get(), "a");
  EXPECT_FALSE(q.Claim("a")) << "a key in flight is never processed twice at once";
  EXPECT_EQ(q.Len(), 1u);
  q.Done("a");
  EXPECT_EQ(GetAndDone(q), "b");
  EXPECT_EQ(GetAndDone(q), "a") << "claimed while in flight: runs again after Done";
  EXPECT_EQ(q.Len(), 0u);
}

TEST(WorkQueue, ClaimAfterShutDownIsIgnored) {
  WorkQueue q;
  q.ShutDown();
  EXPECT_FALSE(q.Claim("a"));
  EXPECT_EQ(q.Metrics().in_flight, 0u);
  EXPECT_EQ(q.Len(), 0u);
}

// Many producers and workers on few keys: a key is never processed by two workers at once, and
// every Add is followed by a processing that started after it (no lost wake-up). Producers also
// claim keys now and then and process them themselves, as Controller::SetDesired does.
TEST(WorkQueue, NeverProcessesOneKeyConcurrentlyAndLosesNoAdd) {
  constexpr int kKeys = 16;
  constexpr int kProducers = 3;
  constexpr int kWorkers = 4;
  constexpr int kAddsPerProducer = 20000;

  WorkQueue q;
  std::array<std::string, kKeys> keys;
  for (int i = 0; i < kKeys; ++i) keys[i] = "pool/acme/k" + std::to_string(i);
  auto index_of = [&](const std::string& key) { return std::stoi(key.substr(11)); };

  std::array<std::atomic<bool>, kKeys> in_flight{};
  std::array<std::atomic<std::uint64_t>, kKeys> last_add{};
  std::array<std::atomic<std::uint64_t>, kKeys> last_start{};
  std::atomic<std::uint64_t> ticks{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> processed{0};
  auto raise = [](std::atomic<std::uint64_t>& slot, std::uint64_t value) {
    std::uint64_t seen = slot.load();
    while (seen < value && !slot.compare_exchange_weak(seen, value)) {
    }
  };

  auto process = [&](const std::string& key) {
    const int i = index_of(key);
    raise(last_start[i], ++ticks);
    if (in_flight[i].exchange(true)) ++overlaps;
    std::this_thread::yield();  // widen the window a second worker would need
    in_flight[i].store(false);
    ++processed;
    q.Done(key);
  };
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&] {
      while (std::optional<std::string> key = q.Get()) process(*key);
    });
  }
  std::atomic<int> claimed{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      std::mt19937 rng(static_cast<unsigned>(p));
      std::uniform_int_distribution<int> pick(0, kKeys - 1);
      for (int n = 0; n < kAddsPerProducer; ++n) {
        const int i = pick(rng);
        raise(last_add[i], ++ticks);
        if (n % 8 == 0) {
          if (q.Claim(keys[i])) {
            ++claimed;
            process(keys[i]);
          }
        } else {
          q.Add(keys[i]);
        }
      }
    });
  }
  for (std::thread& t : producers) t.join();
  q.ShutDownWithDrain();
  for (std::thread& t : workers) t.join();

  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_GT(processed.load(), 0);
  EXPECT_GT(claimed.load(), 0);
  EXPECT_LE(processed.load(), kProducers * kAddsPerProducer);
  for (int i = 0; i < kKeys; ++i) {
    if (last_add[i].load() == 0) continue;
    EXPECT_GT(last_start[i].load(), last_add[i].load()) << keys[i] << ": an Add was lost";
  }
  const WorkQueueMetrics m = q.Metrics();
  EXPECT_EQ(m.adds + m.deduplicated, std::uint64_t{kProducers} * kAddsPerProducer);
  EXPECT_EQ(m.completed, static_cast<std::uint64_t>(processed.load()));
  EXPECT_EQ(m.in_flight, 0u);
}

// --- AddAfter ----------------------------------------------------------------------------------

TEST(WorkQueue, AddAfterMakesKeyReadyAtItsDeadline) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.AddAfter("a", 10s);
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.Metrics().delayed, 1u);
  clock.Advance(10s - 1ns);
  EXPECT_EQ(q.Len(), 0u);
  clock.Advance(1ns);
  EXPECT_EQ(q.Len(), 1u);
  EXPECT_EQ(q.Metrics().delayed, 0u);
  EXPECT_EQ(GetAndDone(q), "a");
}

TEST(WorkQueue, AddAfterOrdersKeysByDeadlineThenByAddOrder) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.AddAfter("c", 30ms);
  q.AddAfter("a", 10ms);
  q.AddAfter("b", 20ms);
  q.AddAfter("b2", 20ms);
  q.Add("now");
  clock.Advance(1h);
  EXPECT_EQ(q.Len(), 5u);
  EXPECT_EQ(GetAndDone(q), "now");
  EXPECT_EQ(GetAndDone(q), "a");
  EXPECT_EQ(GetAndDone(q), "b");
  EXPECT_EQ(GetAndDone(q), "b2");
  EXPECT_EQ(GetAndDone(q), "c");
}

TEST(WorkQueue, AddAfterKeepsTheEarliestDeadlineForAKey) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.AddAfter("later-first", 50ms);
  q.AddAfter("later-first", 10ms);  // moves it earlier
  q.AddAfter("earlier-first", 10ms);
  q.AddAfter("earlier-first", 50ms);  // does not postpone it
  EXPECT_EQ(q.Metrics().delayed, 2u);
  clock.Advance(10ms);
  EXPECT_EQ(q.Len(), 2u);
  EXPECT_EQ(GetAndDone(q), "later-first");
  EXPECT_EQ(GetAndDone(q), "earlier-first");
  clock.Advance(1h);
  EXPECT_EQ(q.Len(), 0u) << "the superseded deadline must not add the key a second time";
}

TEST(WorkQueue, AddAfterOfAKeyAlreadyReadyIsDeduplicatedWhenDue) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.Add("a");
  q.AddAfter("a", 1s);
  clock.Advance(1s);
  EXPECT_EQ(q.Len(), 1u);
  EXPECT_EQ(GetAndDone(q), "a");
  EXPECT_EQ(q.Len(), 0u);
}

TEST(WorkQueue, AddAfterWithoutPositiveDelayAddsAtOnce) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.AddAfter("zero", 0s);
  q.AddAfter("negative", -5s);
  EXPECT_EQ(q.Len(), 2u);
  EXPECT_EQ(GetAndDone(q), "zero");
  EXPECT_EQ(GetAndDone(q), "negative");
}

TEST(WorkQueue, KeysDueBeforeAnAddAreHandedOutBeforeIt) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.AddAfter("timer", 5ms);
  clock.Advance(5ms);
  q.Add("event");
  EXPECT_EQ(GetAndDone(q), "timer");
  EXPECT_EQ(GetAndDone(q), "event");
}

TEST(WorkQueue, RedelayingAKeyEarlierManyTimesAddsItOnce) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  for (int i = 100000; i > 0; --i) q.AddAfter("a", std::chrono::milliseconds(i));
  EXPECT_EQ(q.Metrics().delayed, 1u);
  clock.Advance(1ms);
  EXPECT_EQ(q.Len(), 1u);
  EXPECT_EQ(GetAndDone(q), "a");
  clock.Advance(1h);
  EXPECT_EQ(q.Len(), 0u);
}

TEST(WorkQueue, GetWakesWhenADelayExpires) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.AddAfter("a", 10s);
  auto got = std::async(std::launch::async, [&] { return q.Get(); });
  clock.Advance(9s);
  EXPECT_EQ(got.wait_for(20ms), std::future_status::timeout);
  clock.Advance(1s);
  EXPECT_EQ(Await(got, q), "a");
  q.Done("a");
}

// Both getters sleep toward a far deadline. A nearer one must wake one of them; when that one
// takes its key, the other must take over the wait for the next deadline.
TEST(WorkQueue, IdleGettersWakeForEachDelayedKeyOnTheSteadyClock) {
  WorkQueue q;
  q.AddAfter("late", 1h);
  auto first = std::async(std::launch::async, [&] { return q.Get(); });
  auto second = std::async(std::launch::async, [&] { return q.Get(); });
  std::this_thread::sleep_for(20ms);  // let both getters fall asleep toward the 1h deadline
  const auto start = std::chrono::steady_clock::now();
  q.AddAfter("sooner", 10ms);
  q.AddAfter("soon", 30ms);
  std::vector<std::optional<std::string>> got = {Await(first, q), Await(second, q)};
  const auto waited = std::chrono::steady_clock::now() - start;
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::optional<std::string>>{"soon", "sooner"}));
  EXPECT_GE(waited, 30ms);
  q.Done("soon");
  q.Done("sooner");
  q.ShutDown();
}

// --- AddRateLimited ----------------------------------------------------------------------------

// Asserts the key becomes ready exactly `delay` after now, then processes it.
void ExpectReadyAfter(WorkQueue& q, FakeClock& clock, std::string_view key, Clock::Duration delay) {
  clock.Advance(delay - 1ns);
  EXPECT_EQ(q.Len(), 0u) << key << " ready before " << delay.count() << "ns";
  clock.Advance(1ns);
  ASSERT_EQ(q.Len(), 1u) << key << " not ready after " << delay.count() << "ns";
  EXPECT_EQ(GetAndDone(q), key);
}

TEST(WorkQueue, RateLimitedBackoffDoublesPerFailureUpToTheCap) {
  FakeClock clock;
  WorkQueue::Options options = WithClock(clock);
  options.base_delay = 5ms;
  options.max_delay = 40ms;
  WorkQueue q(options);
  const std::vector<Clock::Duration> expected = {5ms, 10ms, 20ms, 40ms, 40ms, 40ms};
  for (std::size_t n = 0; n < expected.size(); ++n) {
    q.AddRateLimited("a");
    EXPECT_EQ(q.NumRequeues("a"), static_cast<int>(n + 1));
    ExpectReadyAfter(q, clock, "a", expected[n]);
  }
  EXPECT_EQ(q.Metrics().retries, expected.size());
}

TEST(WorkQueue, ForgetResetsTheBackoffOfOneKeyOnly) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.AddRateLimited("a");
  ExpectReadyAfter(q, clock, "a", 5ms);
  q.AddRateLimited("a");
  ExpectReadyAfter(q, clock, "a", 10ms);
  q.AddRateLimited("b");
  ExpectReadyAfter(q, clock, "b", 5ms);

  q.Forget("a");
  EXPECT_EQ(q.NumRequeues("a"), 0);
  EXPECT_EQ(q.NumRequeues("b"), 1);
  q.AddRateLimited("a");
  ExpectReadyAfter(q, clock, "a", 5ms);
  q.AddRateLimited("b");
  ExpectReadyAfter(q, clock, "b", 10ms);
  q.Forget("never-seen");
}

TEST(WorkQueue, DefaultBackoffStartsAt5msAndStopsAt5Minutes) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.AddRateLimited("a");
  ExpectReadyAfter(q, clock, "a", 5ms);
  for (int n = 1; n < 200; ++n) {  // far past where base * 2^n overflows
    q.AddRateLimited("a");
    clock.Advance(5min);
    ASSERT_EQ(q.Len(), 1u) << "failure " << n;
    GetAndDone(q);
  }
  q.AddRateLimited("a");
  ExpectReadyAfter(q, clock, "a", 5min);
  EXPECT_EQ(q.NumRequeues("a"), 201);
}

TEST(WorkQueue, RateLimitedKeyAlreadyWaitingIsQueuedOnce) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.Add("a");
  q.AddRateLimited("a");
  q.AddRateLimited("a");  // 10ms, loses to the 5ms deadline already waiting
  EXPECT_EQ(q.Metrics().delayed, 1u);
  clock.Advance(1h);
  EXPECT_EQ(q.Len(), 1u);
  EXPECT_EQ(GetAndDone(q), "a");
  EXPECT_EQ(q.Len(), 0u);
}

// --- Shutdown ----------------------------------------------------------------------------------

TEST(WorkQueue, ShutDownWithDrainFinishesQueuedAndInFlightKeys) {
  WorkQueue q;
  q.Add("a");
  q.Add("b");
  q.Add("c");
  ASSERT_EQ(q.Get(), "a");
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    q.ShutDownWithDrain();
    drained = true;
  });
  WaitFor([&] { return q.ShuttingDown(); });
  q.Add("late");  // refused
  q.AddAfter("late", 0s);
  EXPECT_EQ(q.Get(), "b");
  EXPECT_EQ(q.Get(), "c");
  q.Done("b");
  q.Done("c");
  EXPECT_FALSE(drained.load()) << "returned while a was still in flight";
  EXPECT_EQ(q.Get(), std::nullopt);
  q.Done("a");
  drainer.join();
  EXPECT_TRUE(drained.load());
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.Get(), std::nullopt);
}

TEST(WorkQueue, ShutDownWithDrainRunsAKeyReAddedBeforeShutdownOnceMore) {
  WorkQueue q;
  q.Add("a");
  ASSERT_EQ(q.Get(), "a");
  q.Add("a");
  std::thread drainer([&] { q.ShutDownWithDrain(); });
  WaitFor([&] { return q.ShuttingDown(); });
  q.Add("b");  // refused
  q.Done("a");
  EXPECT_EQ(q.Get(), "a");
  q.Done("a");
  drainer.join();
  EXPECT_EQ(q.Get(), std::nullopt);
}

TEST(WorkQueue, ShutDownWithDrainKeepsDueKeysAndDropsDelayedOnes) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.AddAfter("due", 1s);
  q.AddAfter("not-due", 2s);
  clock.AdvanceTo(clock.Now() + 1s);
  std::thread worker([&] {
    while (auto key = q.Get()) q.Done(*key);
  });
  q.ShutDownWithDrain();
  worker.join();
  EXPECT_EQ(q.Metrics().completed, 1u);
  clock.Advance(1h);
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.Get(), std::nullopt);
}

TEST(WorkQueue, ShutDownDropsQueuedAndDelayedKeysAndIgnoresAdds) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.Add("a");
  q.Add("b");
  q.AddAfter("timer", 1s);
  q.ShutDown();
  EXPECT_TRUE(q.ShuttingDown());
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.Get(), std::nullopt);
  q.Add("c");
  q.AddAfter("d", 0s);
  q.AddRateLimited("e");
  clock.Advance(1h);
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.Get(), std::nullopt);
  const WorkQueueMetrics m = q.Metrics();
  EXPECT_EQ(m.delayed, 0u);
  EXPECT_EQ(m.adds, 2u);
}

TEST(WorkQueue, ShutDownLetsKeysInFlightFinishWithoutRequeue) {
  WorkQueue q;
  q.Add("a");
  ASSERT_EQ(q.Get(), "a");
  q.Add("a");  // would run again after Done, but the queue shuts down first
  q.ShutDown();
  EXPECT_EQ(q.Metrics().in_flight, 1u);
  q.Done("a");
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.Get(), std::nullopt);
  EXPECT_EQ(q.Metrics().in_flight, 0u);
}

TEST(WorkQueue, GetUnblocksOnShutDown) {
  WorkQueue q;
  q.AddAfter("far", 1h);  // one getter waits toward a deadline...
  auto first = std::async(std::launch::async, [&] { return q.Get(); });
  auto second = std::async(std::launch::async, [&] { return q.Get(); });
  std::this_thread::sleep_for(20ms);
  q.ShutDown();
  EXPECT_EQ(first.get(), std::nullopt);
  EXPECT_EQ(second.get(), std::nullopt);
}

TEST(WorkQueue, GetUnblocksOnShutDownWithDrain) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  auto idle = std::async(std::launch::async, [&] { return q.Get(); });
  std::this_thread::sleep_for(20ms);
  q.ShutDownWithDrain();
  EXPECT_EQ(idle.get(), std::nullopt);
}

// --- Metrics -----------------------------------------------------------------------------------

TEST(WorkQueue, MetricsReportDepthInFlightAndLongestRunningProcessor) {
  FakeClock clock;
  WorkQueue q(WithClock(clock));
  q.Add("a");
  q.Add("b");
  q.Add("c");
  q.AddAfter("d", 1min);
  q.AddRateLimited("e");
  ASSERT_EQ(q.Get(), "a");
  clock.Advance(3s);  // e (5ms) becomes ready
  ASSERT_EQ(q.Get(), "b");
  clock.Advance(2s);

  WorkQueueMetrics m = q.Metrics();
  EXPECT_EQ(m.depth, 2u);  // c, e
  EXPECT_EQ(m.delayed, 1u);
  EXPECT_EQ(m.in_flight, 2u);
  EXPECT_EQ(m.adds, 4u);
  EXPECT_EQ(m.retries, 1u);
  EXPECT_EQ(m.longest_running, 5s);

  q.Done("a");
  EXPECT_EQ(q.Metrics().longest_running, 2s);
  q.Done("b");
  m = q.Metrics();
  EXPECT_EQ(m.longest_running, 0s);
  EXPECT_EQ(m.completed, 2u);
}

}  // namespace
}  // namespace mvm::controller
