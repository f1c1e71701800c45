#include "controller/model.h"

#include <array>
#include <chrono>
#include <utility>

namespace mvm::controller {
namespace {

// Indexed by the enum's value; the names are what the store, the API and mvmctl show.
constexpr std::array<std::pair<InstanceState, std::string_view>, 7> kStateNames = {{
    {InstanceState::kCreated, "Created"},
    {InstanceState::kReady, "Ready"},
    {InstanceState::kRunning, "Running"},
    {InstanceState::kWarm, "Warm"},
    {InstanceState::kSleeping, "Sleeping"},
    {InstanceState::kStopped, "Stopped"},
    {InstanceState::kDestroyed, "Destroyed"},
}};

constexpr std::array<std::pair<Action, std::string_view>, 9> kActionNames = {{
    {Action::kPrepare, "prepare"},
    {Action::kStart, "start"},
    {Action::kPause, "pause"},
    {Action::kResume, "resume"},
    {Action::kSleep, "sleep"},
    {Action::kWake, "wake"},
    {Action::kStop, "stop"},
    {Action::kRebuild, "rebuild"},
    {Action::kDestroy, "destroy"},
}};

template <typename Enum, std::size_t N>
std::string_view NameOf(const std::array<std::pair<Enum, std::string_view>, N>& names, Enum value) {
  for (const auto& [e, name] : names) {
    if (e == value) return name;
  }
  return "Unknown";
}

template <typename Enum, std::size_t N>
std::optional<Enum> Parse(const std::array<std::pair<Enum, std::string_view>, N>& names,
                          std::string_view text) {
  for (const auto& [e, name] : names) {
    if (name == text) return e;
  }
  return std::nullopt;
}

}  // namespace

std::string_view StateName(InstanceState state) {
  return NameOf(kStateNames, state);
}
std::optional<InstanceState> ParseState(std::string_view name) {
  return Parse(kStateNames, name);
}
std::string_view ActionName(Action action) {
  return NameOf(kActionNames, action);
}
std::optional<Action> ParseAction(std::string_view name) {
  return Parse(kActionNames, name);
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace mvm::controller
