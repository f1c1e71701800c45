#include "runtime/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "common/unique_fd.h"

extern char** environ;

namespace mvm::runtime {
namespace {

using Clock = std::chrono::steady_clock;

// What a child reports on the error pipe when it cannot go on: errno and where it failed (a jail
// step index, or one of the two below).
struct ChildError {
  int err;
  int step;
};
constexpr int kStepFork = -100;
constexpr int kStepExec = -101;

std::string Errno(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

// A pidfd for `id`, or an invalid fd when the pid is gone or is another process now. The pidfd
// is opened first and the start time checked after: from then on the fd names that process even
// if the pid is reused.
UniqueFd OpenVerified(const ProcessIdentity& id) {
  if (id.empty()) return {};
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(id.pid), 0)));
  if (!fd.valid()) return {};
  Result<ProcessStat> stat = ReadProcessStat(id.pid);
  if (!stat.ok() || stat->startTime != id.startTime) return {};
  return fd;
}

}  // namespace

Result<ProcessStat> ReadProcessStat(int64_t pid) {
  if (pid <= 0) return Error{"no pid"};
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) return Error{"no process " + std::to_string(pid)};
  // Field 2 (comm) is in parentheses and may contain spaces or ')': the fields after it start
  // after the last ')'.
  size_t close = text.rfind(')');
  if (close == std::string::npos) return Error{"unreadable /proc/" + std::to_string(pid) + "/stat"};
  std::istringstream fields(text.substr(close + 1));
  std::vector<std::string> f;
  for (std::string word; fields >> word && f.size() < 20;) f.push_back(word);
  if (f.size() < 20) return Error{"short /proc/" + std::to_string(pid) + "/stat"};
  ProcessStat stat;
  stat.state = f[0].empty() ? '?' : f[0][0];                   // field 3
  stat.startTime = std::strtoull(f[19].c_str(), nullptr, 10);  // field 22
  return stat;
}

bool IsAlive(const ProcessIdentity& id) {
  if (id.empty()) return false;
  Result<ProcessStat> stat = ReadProcessStat(id.pid);
  return stat.ok() && stat->startTime == id.startTime && stat->state != 'Z' && stat->state != 'X';
}

bool SignalProcess(const ProcessIdentity& id, int signal) {
  UniqueFd fd = OpenVerified(id);
  if (!fd.valid()) return false;
  return ::syscall(SYS_pidfd_send_signal, fd.get(), signal, nullptr, 0) == 0;
}

bool WaitForExit(const ProcessIdentity& id, std::chrono::milliseconds timeout) {
  UniqueFd fd = OpenVerified(id);
  if (!fd.valid()) return true;
  // A pidfd polls readable once the process has exited (zombie or reaped), child or not.
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    struct pollfd p = {fd.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
    if (n > 0) return true;
    if (n == 0) return !IsAlive(id);
    if (errno != EINTR) return !IsAlive(id);
  }
}

bool KillAndWait(const ProcessIdentity& id, std::chrono::milliseconds timeout) {
  if (!IsAlive(id)) return true;
  SignalProcess(id, SIGKILL);
  return WaitForExit(id, timeout);
}

Result<std::filesystem::path> FindExecutable(const std::string& name) {
  if (name.empty()) return Error{"empty program name"};
  if (name.find('/') != std::string::npos) {
    std::error_code ec;
    std::filesystem::path path = std::filesystem::absolute(name, ec);
    if (ec) path = name;
    if (::access(path.c_str(), X_OK) == 0) return path;
    return Error{Errno(name)};
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::istringstream in(dirs);
  for (std::string dir; std::getline(in, dir, ':');) {
    if (dir.empty()) continue;
    std::filesystem::path candidate = std::filesystem::path(dir) / name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return Error{name + ": not found in $PATH (" + dirs + ")"};
}

Result<ProcessIdentity> SpawnDetached(const SpawnOptions& options) {
  if (options.argv.empty()) return Error{"spawn: empty argv"};
  Result<std::filesystem::path> program = FindExecutable(options.argv[0]);
  if (!program.ok()) return program.error();

  // Everything the children need is prepared here: between fork and exec only
  // async-signal-safe calls are allowed (other threads may hold malloc's locks).
  const std::string program_path = program->string();
  const std::string work_dir = options.workDir.string();
  std::vector<std::string> args = options.argv;
  std::vector<char*> argv(args.size() + 1, nullptr);
  std::transform(args.begin(), args.end(), argv.begin(), [](std::string& a) { return a.data(); });

  std::optional<PreparedJail> jail;
  if (options.jail) {
    Result<PreparedJail> prepared = PreparedJail::Prepare(*options.jail);
    if (!prepared.ok()) return prepared.error();
    jail.emplace(std::move(*prepared));
  }
  char* const* envp = jail ? jail->envp() : environ;

  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull.valid()) return Error{Errno("open /dev/null")};
  UniqueFd log(::open(options.logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (!log.valid()) return Error{Errno("open " + options.logPath.string())};
  int pid_pipe[2];
  int err_pipe[2];
  if (::pipe2(pid_pipe, O_CLOEXEC) != 0) return Error{Errno("pipe")};
  UniqueFd pid_read(pid_pipe[0]), pid_write(pid_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return Error{Errno("pipe")};
  UniqueFd err_read(err_pipe[0]), err_write(err_pipe[1]);

  pid_t child = ::fork();
  if (child < 0) return Error{Errno("fork")};
  if (child == 0) {
    // Intermediate child: new session, fork the real process, report its pid, exit. The
    // grandchild is reparented to init (or a subreaper), never to mvmd.
    ::setsid();
    if (jail) {
      // Joins the cgroup and unshares the namespaces: the grandchild is PID 1 of the new pid
      // namespace, and the pid it reports below is the one the caller's namespace sees.
      ChildError failed{0, 0};
      failed.err = jail->EnterBeforeFork(&failed.step);
      if (failed.err != 0) {
        [[maybe_unused]] ssize_t w = ::write(err_pipe[1], &failed, sizeof failed);
        ::_exit(1);
      }
    }
    pid_t grandchild = ::fork();
    if (grandchild < 0) {
      ChildError failed{errno, kStepFork};
      [[maybe_unused]] ssize_t w = ::write(err_pipe[1], &failed, sizeof failed);
      ::_exit(1);
    }
    if (grandchild > 0) {
      [[maybe_unused]] ssize_t w = ::write(pid_pipe[1], &grandchild, sizeof grandchild);
      ::_exit(0);
    }
    // Grandchild.
    ::dup2(devnull.get(), STDIN_FILENO);
    ::dup2(log.get(), STDOUT_FILENO);
    ::dup2(log.get(), STDERR_FILENO);
    // Every other descriptor (including ones other threads opened without O_CLOEXEC) closes at
    // exec; err_pipe's write end with it, which tells the parent that exec succeeded.
    ::syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s) ::sigaction(s, &dfl, nullptr);
    if (jail) {
      ChildError failed{0, 0};
      failed.err = jail->EnterAfterFork(&failed.step);
      if (failed.err != 0) {
        [[maybe_unused]] ssize_t w = ::write(err_pipe[1], &failed, sizeof failed);
        ::_exit(126);
      }
    } else if (::chdir(work_dir.c_str()) != 0) {
      // Not fatal: the VMM gets absolute paths.
    }
    ::execve(program_path.c_str(), argv.data(), envp);
    ChildError failed{errno, kStepExec};
    [[maybe_unused]] ssize_t w = ::write(err_pipe[1], &failed, sizeof failed);
    ::_exit(127);
  }

  pid_write.Reset();
  err_write.Reset();
  pid_t grandchild = 0;
  ssize_t got = 0;
  do {
    got = ::read(pid_read.get(), &grandchild, sizeof grandchild);
  } while (got < 0 && errno == EINTR);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  ChildError failed{0, 0};
  ssize_t e = 0;
  do {
    e = ::read(err_read.get(), &failed, sizeof failed);
  } while (e < 0 && errno == EINTR);
  const bool reported = e == static_cast<ssize_t>(sizeof failed);
  if (reported && failed.step != kStepExec && failed.step != kStepFork && jail) {
    return Error{"spawn " + program_path + ": jail: " + jail->Describe(failed.step) + ": " +
                 std::strerror(failed.err)};
  }
  if (got != static_cast<ssize_t>(sizeof grandchild) || grandchild <= 0) {
    return Error{"spawn " + program_path +
                 ": fork failed: " + (reported ? std::strerror(failed.err) : "unknown error")};
  }
  if (reported) return Error{"exec " + program_path + ": " + std::strerror(failed.err)};
  Result<ProcessStat> stat = ReadProcessStat(grandchild);
  if (!stat.ok()) {
    return Error{program_path + " (pid " + std::to_string(grandchild) + ") exited at once"};
  }
  return ProcessIdentity{grandchild, stat->startTime};
}

}  // namespace mvm::runtime
