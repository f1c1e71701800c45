#pragma once
// Detached VMM processes: start one that outlives its parent, and find it again later by
// identity (pid + start time), from any process.
//
// Promises:
//  - SpawnDetached starts the program as a grandchild in a session of its own (fork, setsid,
//    fork), so it is never a child of the caller and survives the caller's death, SIGKILL
//    included. The program gets stdin on /dev/null, stdout and stderr appended to `logPath`, no
//    other inherited descriptor, an empty signal mask and default signal dispositions (mvmd
//    blocks and ignores signals; a VMM must not inherit that). It returns once exec succeeded,
//    with the process's identity, or with the reason exec failed. Safe in a threaded process.
//  - With SpawnOptions::jail, the process runs confined as runtime/jail.h promises; a step that
//    fails is reported by name ("jail: pivot_root into ...: Operation not permitted").
//  - A ProcessIdentity names one process for its whole life: a pid that the kernel reused for
//    another process never matches, because the start time (/proc/PID/stat field 22) differs.
//  - IsAlive is false for a process that has exited, including one left as a zombie by a parent
//    that does not reap (reparented VMMs belong to PID 1, which may be slow to reap).
//  - SignalProcess and WaitForExit act only on the identified process: they hold a pidfd opened
//    before the identity check, so a reused pid is never signalled.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "runtime/jail.h"

namespace mvm::runtime {

struct ProcessIdentity {
  int64_t pid = 0;
  uint64_t startTime = 0;  // clock ticks since boot, /proc/PID/stat field 22
  bool empty() const { return pid <= 0; }
  bool operator==(const ProcessIdentity&) const = default;
};

// State and start time of a process from /proc/PID/stat; an Error when there is no such pid.
struct ProcessStat {
  char state = '?';  // R, S, D, Z, X, ...
  uint64_t startTime = 0;
};
Result<ProcessStat> ReadProcessStat(int64_t pid);

// True while the identified process exists, has the recorded start time and has not exited.
bool IsAlive(const ProcessIdentity& id);

// Sends `signal` to the identified process. True when it was delivered; false when the process
// is gone or is another one now.
bool SignalProcess(const ProcessIdentity& id, int signal);

// Waits up to `timeout` for the identified process to exit. True when it is gone (or was never
// there); false when it still runs at the deadline.
bool WaitForExit(const ProcessIdentity& id, std::chrono::milliseconds timeout);

// SIGKILL, then waits up to `timeout`. True when the process is gone.
bool KillAndWait(const ProcessIdentity& id, std::chrono::milliseconds timeout);

struct SpawnOptions {
  std::vector<std::string> argv;        // argv[0]: an absolute path or a name looked up in $PATH
  std::filesystem::path logPath;        // stdout + stderr, opened for append (created 0640)
  std::filesystem::path workDir = "/";  // ignored with a jail (JailSpec::workDir applies)
  // Confinement entered between fork and exec (runtime/jail.h); none when empty. With a jail
  // the program gets JailSpec::env instead of the caller's environment, and argv[0] must be
  // reachable inside the jail at the same path.
  std::optional<JailSpec> jail;
};

Result<ProcessIdentity> SpawnDetached(const SpawnOptions& options);

// The absolute path of an executable: `name` itself when it contains a '/', else the first match
// in $PATH. Error when nothing executable is found.
Result<std::filesystem::path> FindExecutable(const std::string& name);

}  // namespace mvm::runtime
