#pragma once
// The instance state machine (DESIGN.md "Instance state machine"), as data.
//
// Promises:
//  - Transition(from, action) gives the state an action leads to, or nullopt when the action is
//    not allowed from `from` (invalid transitions fail loudly: callers turn nullopt into an
//    error, never into a guess).
//  - NextAction(state, target) gives the single next action on the shortest path from `state`
//    towards `target`, or nullopt when the instance is already there. Following NextAction
//    repeatedly reaches any target from any state in at most four steps.
//  - Target Destroyed drains: an instance with a VMM process is stopped gracefully first.
//  - "Not running" targets are satisfied by the cheapest equivalent: target Stopped is met by
//    Ready or Stopped, and target Ready by Ready or Stopped (both hold no VMM process).

#include <optional>

#include "controller/model.h"

namespace mvm::controller {

std::optional<InstanceState> Transition(InstanceState from, Action action);
std::optional<Action> NextAction(InstanceState state, InstanceState target);
// True when `state` satisfies `target` (see above).
bool Satisfies(InstanceState state, InstanceState target);
// True when an instance in `state` has a VMM process (Running, Warm).
bool HasProcess(InstanceState state);
// True for the actions that neither start nor end a VMM process nor write a disk or memory image:
// pause and resume (warm capacity released or claimed), a few milliseconds with any driver.
bool IsQuick(Action action);

}  // namespace mvm::controller
