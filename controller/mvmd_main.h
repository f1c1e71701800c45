#pragma once
// RunMvmd: the whole of mvmd — flags, logging, store, controller, manifest watcher, status API
// and signals — with the VMM driver supplied by the caller. controller/mvmd.cpp passes the real
// drivers; tests/ builds an mvmd with the fake driver from the same code.
//
// Signals: SIGTERM/SIGINT drain (in-flight actions finish, queued work is dropped) and exit 0
// leaving every VM running; SIGHUP re-plans every pool now; SIGUSR1 confirms a held-back mass
// removal. Exit codes: 0 clean shutdown, 1 start-up failure (message on stderr), 2 bad flags.

#include <functional>
#include <memory>
#include <string>

#include "common/result.h"
#include "controller/vmm.h"

namespace mvm::controller {

struct MvmdConfig {
  std::string runtime;   // --runtime
  std::string stateDir;  // --state-dir
};

using VmmFactory = std::function<Result<std::unique_ptr<Vmm>>(const MvmdConfig& config)>;

int RunMvmd(int argc, char** argv, const VmmFactory& factory);

}  // namespace mvm::controller
