#include "runtime/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"
#include "runtime/process.h"

extern char** environ;

namespace mvm::runtime {
namespace {

constexpr size_t kKeepOutput = size_t{64} << 10;

// posix_spawn's file actions and attributes, released however RunCommand returns.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

}  // namespace

std::string CommandResult::Describe() const {
  std::string how;
  if (timedOut) {
    how = "killed at its timeout";
  } else if (signal != 0) {
    how =
        std::string("killed by signal ") + std::to_string(signal) + " (" + strsignal(signal) + ")";
  } else {
    how = "exit status " + std::to_string(exitCode);
  }
  std::string text = output;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  size_t from = text.rfind('\n');
  std::string last = from == std::string::npos ? text : text.substr(from + 1);
  return last.empty() ? how : how + ": " + last;
}

Result<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout) {
  if (argv.empty()) return Error{"run: empty argv"};
  Result<std::filesystem::path> program = FindExecutable(argv[0]);
  if (!program.ok()) return program.error();

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Error{std::string("pipe: ") + std::strerror(errno)};
  UniqueFd read_end(fds[0]), write_end(fds[1]);

  SpawnSetup setup;
  posix_spawn_file_actions_addopen(&setup.actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&setup.actions, write_end.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&setup.actions, write_end.get(), STDERR_FILENO);
  // Descriptors other threads opened without O_CLOEXEC stay out of the child too.
  posix_spawn_file_actions_addclosefrom_np(&setup.actions, STDERR_FILENO + 1);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&setup.attr, &none);
  posix_spawnattr_setsigdefault(&setup.attr, &all);
  posix_spawnattr_setflags(&setup.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> args = argv;
  std::vector<char*> cargs(args.size() + 1, nullptr);
  std::transform(args.begin(), args.end(), cargs.begin(), [](std::string& a) { return a.data(); });
  pid_t pid = 0;
  int rc = posix_spawn(&pid, program->c_str(), &setup.actions, &setup.attr, cargs.data(), environ);
  if (rc != 0) return Error{"run " + program->string() + ": " + std::strerror(rc)};
  write_end.Reset();  // EOF on read_end once the child (and anything it forked) is done

  CommandResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buffer[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timedOut = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd p{read_end.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (n < 0 && errno != EINTR) {
      ::kill(pid, SIGKILL);  // cannot watch it any more: do not wait on it blindly
      break;
    }
    if (n <= 0) continue;
    ssize_t got = ::read(read_end.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    result.output.append(buffer, static_cast<size_t>(got));
    if (result.output.size() > kKeepOutput) {
      result.output.erase(0, result.output.size() - kKeepOutput);
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) result.exitCode = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

}  // namespace mvm::runtime
