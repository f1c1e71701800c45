#pragma once
// Small helpers shared by the VMM drivers (qemu, firecracker): stable short names, one-line JSON
// records, environment integers, the guest's kernel command line (docs/guest-image.md).
//
// Promises:
//  - Hash12 is stable across processes, builds and restarts (FNV-1a 64, 12 hex digits).
//  - GuestCmdline returns the pool's bootArgs followed by the driver's words and the guest
//    contract's mvm.* words (later words win), or an Error when the result would exceed the
//    x86 limit of 2047 bytes or an env value cannot be passed (a newline).

#include <json/value.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "controller/vmm.h"

namespace mvm::runtime {

// Names and limits both drivers' implementations share (`using namespace driver;` there).
namespace driver {
namespace fs = std::filesystem;
using controller::InstanceState;
using controller::ProbeResult;
using controller::VmmHandle;
using controller::VmmTarget;
using std::chrono::milliseconds;
inline constexpr size_t kSocketPathLimit = 107;  // sizeof(sockaddr_un::sun_path) - 1
inline constexpr milliseconds kKillWait{10000};  // how long a SIGKILLed VMM may take to go
inline constexpr int kTailLines = 20;            // console lines in a failed start's error
}  // namespace driver

std::string Hash12(const std::string& text);
// One POSIX sh word: 'text' with every ' written as '\\''.
std::string ShellQuote(const std::string& word);
std::string JsonLine(const Json::Value& value);
// A JSON object parsed from text; nullopt for empty text, bad JSON or a non-object.
std::optional<Json::Value> ParseJsonObject(const std::string& text);
// "1.23s"
std::string SecondsText(std::chrono::steady_clock::duration d);
// The integer in environment variable `name`, or an Error naming it and the accepted range.
Result<int64_t> EnvInt(const char* name, int64_t min, int64_t max);
// True when the variable is set and not empty.
bool EnvSet(const char* name);
// remove_all that never throws; true when nothing is left.
bool RemovePath(const std::filesystem::path& path);
bool PathExists(const std::filesystem::path& path);
// Where RemoveAside puts `path`: `path`.spent. One left by a crash before its unlink is removed
// (RemovePath) by the driver's next lifecycle step.
std::filesystem::path SpentPath(const std::filesystem::path& path);
// Renames `path` to SpentPath(path) at once (so nobody sees it any more) and unlinks it on one
// background thread the process shares: unlinking a 64+ MiB snapshot takes tens of ms on this
// kind of disk, which no action should wait for. Removes in place when the rename fails.
void RemoveAside(const std::filesystem::path& path);
// Returns once every RemoveAside called before it has finished (tests, orderly shutdown).
void WaitForBackgroundRemovals();
// Destroy's last step: the instance directory and everything in it.
Status RemoveInstanceDir(const std::filesystem::path& dir);

// The initrd to boot with: the pool's, else initramfs.cpio.gz next to the kernel when present
// (the layout hack/build-guest-image.sh produces).
std::optional<std::string> GuestInitrd(const manifests::PoolSpec& spec);

struct GuestCmdlineOptions {
  std::vector<std::string> driverWords;  // e.g. root=, tsc_early_khz=
  std::string halt = "poweroff";         // mvm.halt
};
Result<std::string> GuestCmdline(const controller::VmmTarget& target,
                                 const GuestCmdlineOptions& options);

}  // namespace mvm::runtime
