// The instance state machine: every (state, action) pair against DESIGN.md's table, and the
// path-finding that drives an instance to any target.

#include "controller/state_machine.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace mvm::controller {
namespace {

using S = InstanceState;
using A = Action;

const std::vector<S> kStates = {S::kCreated,  S::kReady,   S::kRunning,  S::kWarm,
                                S::kSleeping, S::kStopped, S::kDestroyed};
const std::vector<A> kActions = {A::kPrepare, A::kStart, A::kPause,   A::kResume, A::kSleep,
                                 A::kWake,    A::kStop,  A::kRebuild, A::kDestroy};

// DESIGN.md "Instance state machine", row by row.
const std::map<std::pair<S, A>, S> kTable = {
    {{S::kCreated, A::kPrepare}, S::kReady},     {{S::kReady, A::kStart}, S::kRunning},
    {{S::kStopped, A::kStart}, S::kRunning},     {{S::kRunning, A::kPause}, S::kWarm},
    {{S::kWarm, A::kResume}, S::kRunning},       {{S::kWarm, A::kSleep}, S::kSleeping},
    {{S::kSleeping, A::kWake}, S::kRunning},     {{S::kRunning, A::kStop}, S::kStopped},
    {{S::kWarm, A::kStop}, S::kStopped},         {{S::kSleeping, A::kStop}, S::kStopped},
    {{S::kReady, A::kRebuild}, S::kReady},       {{S::kCreated, A::kDestroy}, S::kDestroyed},
    {{S::kReady, A::kDestroy}, S::kDestroyed},   {{S::kRunning, A::kDestroy}, S::kDestroyed},
    {{S::kWarm, A::kDestroy}, S::kDestroyed},    {{S::kSleeping, A::kDestroy}, S::kDestroyed},
    {{S::kStopped, A::kDestroy}, S::kDestroyed},
};

TEST(StateMachine, EveryValidAndInvalidTransitionMatchesTheDesignTable) {
  int valid = 0, invalid = 0;
  for (S from : kStates) {
    for (A action : kActions) {
      auto it = kTable.find({from, action});
      auto got = Transition(from, action);
      if (it == kTable.end()) {
        EXPECT_FALSE(got.has_value()) << StateName(from) << " --" << ActionName(action) << "-->";
        ++invalid;
      } else {
        ASSERT_TRUE(got.has_value()) << StateName(from) << " --" << ActionName(action) << "-->";
        EXPECT_EQ(*got, it->second);
        ++valid;
      }
    }
  }
  EXPECT_EQ(valid, 17);
  EXPECT_EQ(invalid, 7 * 9 - 17);
}

TEST(StateMachine, NextActionReachesEveryTargetFromEveryStateInValidSteps) {
  for (S from : kStates) {
    for (S target : kStates) {
      if (from == S::kDestroyed) continue;  // terminal
      S state = from;
      int steps = 0;
      while (auto action = NextAction(state, target)) {
        auto next = Transition(state, *action);
        ASSERT_TRUE(next.has_value()) << "NextAction proposed an invalid transition";
        state = *next;
        ASSERT_LE(++steps, 4) << StateName(from) << " -> " << StateName(target);
      }
      EXPECT_TRUE(Satisfies(state, target)) << StateName(from) << " -> " << StateName(target);
    }
  }
}

TEST(StateMachine, FastestPathsAreChosen) {
  EXPECT_EQ(NextAction(S::kWarm, S::kRunning), A::kResume);
  EXPECT_EQ(NextAction(S::kSleeping, S::kRunning), A::kWake);
  EXPECT_EQ(NextAction(S::kRunning, S::kSleeping), A::kPause);
  EXPECT_EQ(NextAction(S::kWarm, S::kSleeping), A::kSleep);
  EXPECT_EQ(NextAction(S::kSleeping, S::kStopped), A::kStop);
  EXPECT_EQ(NextAction(S::kReady, S::kStopped), std::nullopt);  // no process either way
  EXPECT_EQ(NextAction(S::kRunning, S::kDestroyed), A::kStop);  // graceful first
  EXPECT_EQ(NextAction(S::kStopped, S::kDestroyed), A::kDestroy);
}

// Quick steps (SetDesired's own thread may make them) keep the VMM process and write no image:
// exactly the transitions between Running and Warm.
TEST(StateMachine, OnlyPauseAndResumeAreQuick) {
  for (A action : kActions) {
    bool between_running_and_warm = false;
    for (S from : {S::kRunning, S::kWarm}) {
      auto to = Transition(from, action);
      if (to && HasProcess(*to) && *to != from) between_running_and_warm = true;
    }
    EXPECT_EQ(IsQuick(action), between_running_and_warm) << ActionName(action);
  }
}

TEST(StateMachine, NamesRoundTrip) {
  for (S s : kStates) EXPECT_EQ(ParseState(StateName(s)), s);
  for (A a : kActions) EXPECT_EQ(ParseAction(ActionName(a)), a);
}

}  // namespace
}  // namespace mvm::controller
