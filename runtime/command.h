#pragma once
// RunCommand: runs a short-lived helper program (resize2fs, e2fsck) to completion and captures
// what it printed. For tools a driver needs for a moment, not for VMMs (process.h detaches those).
//
// Promises:
//  - argv[0] is found like SpawnDetached finds it (a path, or a name in $PATH). The program gets
//    stdin on /dev/null, stdout and stderr into one captured buffer (its last 64 KiB kept), no
//    other inherited descriptor, an empty signal mask and default signal dispositions.
//  - It returns only after the child has been reaped: never a zombie, never a process left
//    running. A child still running at `timeout` is killed (SIGKILL) and reported as timed out.
//  - Error only when the program could not be started; how it ended is in the result.

#include <chrono>
#include <string>
#include <vector>

#include "common/result.h"

namespace mvm::runtime {

struct CommandResult {
  int exitCode = -1;      // when it exited; -1 when a signal ended it
  int signal = 0;         // the signal that ended it, or 0
  bool timedOut = false;  // killed at the timeout
  std::string output;     // stdout and stderr, interleaved as written
  bool ok() const { return exitCode == 0; }
  // "exit status 1: <last line of output>", "killed by signal 9 after the 30s timeout", ...
  std::string Describe() const;
};

Result<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout);

}  // namespace mvm::runtime
