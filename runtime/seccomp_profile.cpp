#include "runtime/seccomp_profile.h"

#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "common/unique_fd.h"

namespace mvm::runtime {
namespace {

using Ctx = std::unique_ptr<void, decltype(&seccomp_release)>;

}  // namespace

std::optional<SeccompProfile> ParseSeccompProfile(std::string_view name) {
  if (name == "baseline") return SeccompProfile::kBaseline;
  if (name == "strict") return SeccompProfile::kStrict;
  return std::nullopt;
}

std::string_view SeccompProfileName(SeccompProfile profile) {
  return profile == SeccompProfile::kStrict ? "strict" : "baseline";
}

const std::vector<std::string>& BaselineDenied() {
  static const std::vector<std::string> kDenied = {
      // the filesystem view and namespaces the jail set up
      "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsconfig",
      "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
      // other processes' memory and descriptors
      "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
      // kernel code, kernel state and rare kernel surfaces
      "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
      "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "lookup_dcookie",
      "open_by_handle_at", "name_to_handle_at", "fanotify_init", "quotactl", "uselib",
      "personality",
      // the host itself
      "reboot", "swapon", "swapoff", "syslog", "acct", "settimeofday", "clock_settime",
      "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "iopl", "ioperm", "vhangup",
      "mknod", "mknodat"};
  return kDenied;
}

const std::vector<std::string>& StrictAllowed() {
  // strace -f -c of hack/qemu-smoke.sh --disk --kernel vmlinux (boot, pause, resume, migrate to
  // exec:, restore from exec:, stop) with qemu 7.2 TCG on Debian 12, then the calls of the same
  // families that those paths reach on error or under other timing (stat variants, exits, thread
  // signalling, sleeping, renames), and ioctl for -accel kvm. docs/security.md.
  static const std::vector<std::string> kAllowed = {
      // traced
      "accept4", "access", "arch_prctl", "bind", "brk", "clock_nanosleep", "close", "close_range",
      "dup2", "eventfd2", "execve", "fadvise64", "fchdir", "fcntl", "fdatasync", "futex",
      "get_mempolicy", "getdents64", "getegid", "geteuid", "getgid", "getpeername", "getpid",
      "getppid", "getrandom", "getsockname", "gettid", "getuid", "io_uring_setup", "listen",
      "lseek", "madvise", "memfd_create", "mmap", "mprotect", "munmap", "newfstatat", "openat",
      "pipe2", "poll", "ppoll", "prctl", "pread64", "preadv", "prlimit64", "pwrite64", "pwritev",
      "read", "readlink", "readv", "recvmsg", "rseq", "rt_sigaction", "rt_sigprocmask",
      "rt_sigreturn", "sched_getaffinity", "seccomp", "sendmsg", "set_mempolicy", "set_robust_list",
      "set_tid_address", "signalfd4", "statfs", "sysinfo", "unlink", "vfork", "wait4", "write",
      "writev",
      // the same paths, not reached in the trace: exits, stat and open variants, time, threads
      "exit", "exit_group", "restart_syscall", "open", "stat", "fstat", "lstat", "statx", "fstatfs",
      "readlinkat", "faccessat", "faccessat2", "dup", "dup3", "pipe", "eventfd", "epoll_create1",
      "epoll_ctl", "epoll_wait", "epoll_pwait", "select", "pselect6", "nanosleep", "clock_gettime",
      "clock_getres", "gettimeofday", "time", "sched_yield", "sched_setaffinity", "sched_getparam",
      "sched_getscheduler", "getpriority", "setpriority", "mremap", "mbind", "membarrier", "tgkill",
      "tkill", "kill", "rt_sigtimedwait", "rt_sigpending", "rt_sigsuspend", "sigaltstack", "uname",
      "getcwd", "getrusage", "times", "umask", "getpgrp", "getpgid", "getsid", "setsid",
      "getgroups", "getresuid", "getresgid", "capget", "timerfd_create", "timerfd_settime",
      "timerfd_gettime", "timer_create", "timer_settime", "timer_delete", "alarm", "setitimer",
      "getitimer", "waitid",
      // disk images and the snapshot file
      "ftruncate", "fallocate", "fsync", "sync_file_range", "preadv2", "pwritev2",
      "copy_file_range", "sendfile", "splice", "flock", "rename", "renameat", "renameat2",
      "unlinkat", "chdir", "fchmod", "io_uring_enter", "io_uring_register", "io_setup",
      "io_destroy", "io_submit", "io_getevents", "io_cancel",
      // sockets (QMP, control channel)
      "accept", "connect", "shutdown", "sendto", "recvfrom", "getsockopt", "setsockopt", "sendmmsg",
      "recvmmsg",
      // devices: /dev/kvm and terminals
      "ioctl"};
  // socket and socketpair: only for the families of StrictSocketFamilies (BuildSeccompFilter).
  return kAllowed;
}

const std::vector<int>& StrictSocketFamilies() {
  // strace -f -e trace=socket,socketpair around the same smoke run (boot, migrate to exec:,
  // restore): qemu opened AF_UNIX stream sockets only (QMP, the mvm.ctl chardev), and the sh
  // and cat of exec: migration none. docs/security.md.
  static const std::vector<int> kFamilies = {AF_UNIX};
  return kFamilies;
}

Result<std::vector<struct sock_filter>> BuildSeccompFilter(
    SeccompProfile profile, const std::vector<std::string>& extraAllowed) {
  const bool strict = profile == SeccompProfile::kStrict;
  Ctx ctx(seccomp_init(strict ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_ALLOW), &seccomp_release);
  if (!ctx) return Error{"seccomp: seccomp_init failed"};
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
      rc != 0) {
    return Error{std::string("seccomp: set the foreign-architecture action: ") +
                 std::strerror(-rc)};
  }
  // A binary search over syscall numbers instead of a linear list: every call qemu makes (ppoll,
  // read, write... thousands a second) walks the filter.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2); rc != 0) {
    return Error{std::string("seccomp: ask for a binary-tree filter: ") + std::strerror(-rc)};
  }
  auto add = [&](const std::string& name, uint32_t action) -> Status {
    int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr == __NR_SCMP_ERROR) return Error{"seccomp: unknown system call \"" + name + "\""};
    if (int rc = seccomp_rule_add(ctx.get(), action, nr, 0); rc != 0 && rc != -EEXIST) {
      return Error{"seccomp: rule for " + name + ": " + std::strerror(-rc)};
    }
    return {};
  };
  if (strict) {
    for (const auto& name : StrictAllowed()) {
      if (Status s = add(name, SCMP_ACT_ALLOW); !s.ok()) return s.error();
    }
    for (const auto& name : extraAllowed) {
      if (Status s = add(name, SCMP_ACT_ALLOW); !s.ok()) return s.error();
    }
    // A socket of another family (AF_INET, AF_NETLINK, AF_PACKET, AF_ALG...) reaches kernel
    // code qemu never needs here: socket() and socketpair() pass only the traced families.
    for (int family : StrictSocketFamilies()) {
      struct scmp_arg_cmp domain = {0, SCMP_CMP_EQ, static_cast<uint64_t>(family), 0};
      for (int nr : {SCMP_SYS(socket), SCMP_SYS(socketpair)}) {
        if (int rc = seccomp_rule_add_array(ctx.get(), SCMP_ACT_ALLOW, nr, 1, &domain); rc != 0) {
          return Error{std::string("seccomp: socket family rule: ") + std::strerror(-rc)};
        }
      }
    }
  } else {
    for (const auto& name : BaselineDenied()) {
      if (Status s = add(name, SCMP_ACT_KILL_PROCESS); !s.ok()) return s.error();
    }
  }
  // clone creates threads and children, never namespaces (a user namespace would hand the VMM
  // capabilities over a fresh set of kernel objects). clone3 passes its flags in memory, out of a
  // filter's reach: it fails with ENOSYS, and glibc falls back to clone.
  constexpr uint64_t kNamespaces = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                   CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;
  auto clone_rule = [&](uint32_t action, uint64_t mask, uint64_t value) -> Status {
    struct scmp_arg_cmp flags = {0, SCMP_CMP_MASKED_EQ, mask, value};
    if (int rc = seccomp_rule_add_array(ctx.get(), action, SCMP_SYS(clone), 1, &flags); rc != 0) {
      return Error{std::string("seccomp: clone rule: ") + std::strerror(-rc)};
    }
    return {};
  };
  if (strict) {
    if (Status s = clone_rule(SCMP_ACT_ALLOW, kNamespaces, 0); !s.ok()) return s.error();
  } else {
    for (uint64_t bit = 1; bit != 0; bit <<= 1) {
      if ((kNamespaces & bit) == 0) continue;
      if (Status s = clone_rule(SCMP_ACT_KILL_PROCESS, bit, bit); !s.ok()) return s.error();
    }
  }
  if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0); rc != 0) {
    return Error{std::string("seccomp: clone3 rule: ") + std::strerror(-rc)};
  }
  // libseccomp 2.5 exports to a descriptor only: a memfd, read back into memory.
  UniqueFd fd(::memfd_create("mvm-seccomp", MFD_CLOEXEC));
  if (!fd.valid()) return Error{std::string("seccomp: memfd_create: ") + std::strerror(errno)};
  if (int rc = seccomp_export_bpf(ctx.get(), fd.get()); rc != 0) {
    return Error{std::string("seccomp: export the filter: ") + std::strerror(-rc)};
  }
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size <= 0 || size % sizeof(struct sock_filter) != 0) {
    return Error{"seccomp: the exported filter has an odd size (" + std::to_string(size) + ")"};
  }
  std::vector<struct sock_filter> program(static_cast<size_t>(size) / sizeof(struct sock_filter));
  if (::pread(fd.get(), program.data(), static_cast<size_t>(size), 0) != size) {
    return Error{std::string("seccomp: read the exported filter: ") + std::strerror(errno)};
  }
  return program;
}

std::string SyscallName(int nr) {
  std::unique_ptr<char, decltype(&std::free)> name(
      seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr), &std::free);
  return name ? std::string(name.get()) : "nr " + std::to_string(nr);
}

std::optional<std::string> FindSeccompKill(int64_t pid) {
  // /dev/kmsg gives one record per read(2), oldest first, until EAGAIN.
  UniqueFd fd(::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  const std::string want = " pid=" + std::to_string(pid) + " ";
  std::optional<std::string> found;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
    if (n < 0 && errno == EPIPE) continue;  // overwritten records: skip on
    if (n <= 0) break;
    std::string record(buf, static_cast<size_t>(n));
    if (record.find("type=1326") == std::string::npos || record.find(want) == std::string::npos) {
      continue;
    }
    size_t at = record.find(" syscall=");
    if (at == std::string::npos) continue;
    found = SyscallName(std::atoi(record.c_str() + at + 9));
  }
  return found;
}

}  // namespace mvm::runtime
