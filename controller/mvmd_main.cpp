#include "controller/mvmd_main.h"

#include <grp.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "controller/api_server.h"
#include "controller/controller.h"
#include "controller/store.h"
#include "manifests/source.h"

namespace mvm::controller {
namespace {

struct Flags {
  std::vector<std::string> manifests;
  std::string stateDir = "/var/lib/mvm";
  std::string runtime = "firecracker";
  std::vector<std::string> imageRoots;
  int workers = 2;
  int resyncSeconds = 30;
  int probeSeconds = 10;
  int debounceMs = 50;
  bool prune = true;
  std::string socket = "/run/mvm/api.sock";
  std::string socketMode = "0660";
  std::string socketGroup;
  std::string logLevel = "info";
  std::string logFormat = "text";
};

}  // namespace

int RunMvmd(int argc, char** argv, const VmmFactory& factory) {
  Flags f;
  CLI::App app{"mvmd: keeps microVM fleets in the state their manifests declare"};
  app.add_option("-m,--manifests", f.manifests, "Manifest directory to watch (repeatable)")
      ->required();
  app.add_option("--state-dir", f.stateDir, "State: state.db and instance directories")
      ->capture_default_str();
  app.add_option("--runtime", f.runtime, "Default VMM runtime for pools that name none")
      ->check(CLI::IsMember({"firecracker", "qemu"}))
      ->capture_default_str();
  app.add_option("--image-root", f.imageRoots,
                 "Directory image paths must stay inside (repeatable; default <state-dir>/images)");
  app.add_option("--workers", f.workers, "Reconcile workers")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--resync-period", f.resyncSeconds, "Seconds between full resyncs")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  app.add_option("--probe-period", f.probeSeconds, "Seconds between liveness probes of VMMs")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  app.add_option("--debounce-ms", f.debounceMs, "Quiet time that ends a burst of file changes")
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  app.add_option("--prune", f.prune, "Destroy the instances of pools removed from the manifests")
      ->capture_default_str();
  app.add_option("--socket", f.socket, "Status API Unix socket")->capture_default_str();
  app.add_option("--socket-mode", f.socketMode, "Socket permissions (0660 or 0600)")
      ->capture_default_str();
  app.add_option("--socket-group", f.socketGroup, "Group owning the socket");
  app.add_option("--log-level", f.logLevel, "trace, debug, info, warn, error")
      ->capture_default_str();
  app.add_option("--log-format", f.logFormat, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("mvmd");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(f.logLevel));
  if (f.logFormat == "json") {
    spdlog::set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","thread":%t,"msg":"%v"})");
  }

  // Signals go to one thread that waits for them; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto fail = [](const std::string& what) {
    spdlog::critical("{}", what);
    std::cerr << "mvmd: " << what << '\n';
    return 1;
  };

  std::filesystem::path state_dir = f.stateDir;
  auto store = Store::Open({state_dir, 64});
  if (!store) return fail(store.error().message);

  MvmdConfig config{f.runtime, f.stateDir};
  auto vmm = factory(config);
  if (!vmm) return fail(vmm.error().message);

  Controller::Options options;
  options.workers = f.workers;
  options.prune = f.prune;
  options.resyncPeriod = std::chrono::seconds(f.resyncSeconds);
  options.probePeriod = std::chrono::seconds(f.probeSeconds);
  options.instancesDir = state_dir / "tenants";
  Controller controller(options, **store, **vmm);
  if (Status s = controller.Start(); !s.ok()) return fail(s.error().message);

  manifests::ManifestSource::Options source_options;
  for (const auto& m : f.manifests) source_options.roots.emplace_back(m);
  if (f.imageRoots.empty()) f.imageRoots.push_back((state_dir / "images").string());
  source_options.parse.imageRoots.assign(f.imageRoots.begin(), f.imageRoots.end());
  source_options.parse.defaultRuntime =
      manifests::ParseRuntime(f.runtime).value_or(manifests::Runtime::kFirecracker);
  source_options.debounce = std::chrono::milliseconds(f.debounceMs);
  source_options.staged = [&controller](std::shared_ptr<const manifests::DesiredState> state) {
    controller.Stage(std::move(state));
  };
  auto source = manifests::ManifestSource::Start(
      source_options, [&controller](std::shared_ptr<const manifests::DesiredState> state,
                                    const manifests::Diff& diff) {
        controller.SetDesired(state);  // first: the log line is not on the way to the workers
        spdlog::info("manifests revision {}: {} objects (+{} ~{} -{}), {} errors", state->revision,
                     state->objects.size(), diff.added.size(), diff.changed.size(),
                     diff.removed.size(), state->diagnostics.size());
        for (const auto& d : state->diagnostics) spdlog::warn("{}", d.ToString());
      });
  if (!source) return fail(source.error().message);

  ApiServerOptions api_options;
  api_options.socketPath = f.socket;
  api_options.instancesDir = options.instancesDir;
  api_options.socketMode = static_cast<mode_t>(std::stoul(f.socketMode, nullptr, 8));
  if (!f.socketGroup.empty()) {
    struct group* g = getgrnam(f.socketGroup.c_str());
    if (!g) return fail("--socket-group: no group named " + f.socketGroup);
    api_options.socketGroup = g->gr_gid;
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(f.socket).parent_path(), ec);
  ApiServer api(controller, api_options);
  if (Status s = api.Start(); !s.ok()) return fail(s.error().message);
  spdlog::info("mvmd ready: runtime {}, state {}, api {}", (*vmm)->Name(), f.stateDir, f.socket);

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: resyncing every pool");
      controller.Resync();
    } else if (sig == SIGUSR1) {
      spdlog::info("SIGUSR1: confirming the held-back removal");
      controller.ConfirmPrune();
    } else {
      spdlog::info("{}: draining; VMs keep running", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      break;
    }
  }
  source->reset();  // no new snapshots
  api.Stop();
  controller.Stop();
  spdlog::info("mvmd stopped");
  return 0;
}

}  // namespace mvm::controller
