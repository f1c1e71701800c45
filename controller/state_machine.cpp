#include "controller/state_machine.h"

namespace mvm::controller {

using S = InstanceState;

std::optional<InstanceState> Transition(InstanceState from, Action action) {
  switch (action) {
    case Action::kPrepare:
      if (from == S::kCreated) return S::kReady;
      break;
    case Action::kRebuild:
      if (from == S::kReady) return S::kReady;
      break;
    case Action::kStart:
      if (from == S::kReady || from == S::kStopped) return S::kRunning;
      break;
    case Action::kPause:
      if (from == S::kRunning) return S::kWarm;
      break;
    case Action::kResume:
      if (from == S::kWarm) return S::kRunning;
      break;
    case Action::kSleep:
      if (from == S::kWarm) return S::kSleeping;
      break;
    case Action::kWake:
      if (from == S::kSleeping) return S::kRunning;
      break;
    case Action::kStop:
      if (from == S::kRunning || from == S::kWarm || from == S::kSleeping) return S::kStopped;
      break;
    case Action::kDestroy:
      if (from != S::kDestroyed) return S::kDestroyed;
      break;
  }
  return std::nullopt;
}

bool Satisfies(InstanceState state, InstanceState target) {
  if (target == S::kStopped || target == S::kReady || target == S::kCreated) {
    return state == S::kReady || state == S::kStopped;
  }
  return state == target;
}

bool HasProcess(InstanceState state) {
  return state == S::kRunning || state == S::kWarm;
}

bool IsQuick(Action action) {
  return action == Action::kPause || action == Action::kResume;
}

std::optional<Action> NextAction(InstanceState state, InstanceState target) {
  if (Satisfies(state, target)) return std::nullopt;
  // Destroy drains: a live VMM gets a graceful stop (gracefulStopSeconds) before it is removed.
  if (target == S::kDestroyed) return HasProcess(state) ? Action::kStop : Action::kDestroy;
  if (state == S::kDestroyed) return std::nullopt;  // terminal
  if (state == S::kCreated) return Action::kPrepare;
  switch (target) {
    case S::kRunning:
      if (state == S::kWarm) return Action::kResume;
      if (state == S::kSleeping) return Action::kWake;
      return Action::kStart;  // Ready, Stopped
    case S::kWarm:
      if (state == S::kRunning) return Action::kPause;
      if (state == S::kSleeping) return Action::kWake;
      return Action::kStart;
    case S::kSleeping:
      if (state == S::kRunning) return Action::kPause;
      if (state == S::kWarm) return Action::kSleep;
      return Action::kStart;
    default:  // Stopped, Ready, Created: hold no process
      return Action::kStop;
  }
}

}  // namespace mvm::controller
