// jail_attacker: what a compromised VMM would try, one probe per argument, each answered on
// one line of stdout (tests/jail_test.cpp reads them). Probes:
//   open:PATH       open(PATH, O_RDONLY)             -> "open PATH ok" | "open PATH EACCES"
//   create:PATH     open(PATH, O_WRONLY|O_CREAT)     -> same form
//   ls:DIR          the names in DIR                 -> "ls DIR a b c" | "ls DIR ENOENT"
//   status          Uid, Gid, Cap*, NoNewPrivs, Seccomp lines of /proc/self/status
//   hostname        "hostname NAME"
//   syscall:NAME    "before NAME", the call (ptrace, mount, unshare, bpf, kexec, userns: clone
//                   with CLONE_NEWUSER, thread: plain clone, getpid, unix / inet / netlink:
//                   socket of that family), "after NAME"
//   fork:N          N children that sleep forever    -> "forked N"
//   tick            prints "tick N" every 10 ms forever
//   sleep           sleeps forever
// Started with arguments that look like a VMM's ("-name ..."), it tries ptrace at once.
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <dirent.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>

namespace {

const char* ErrName(int e) {
  switch (e) {
    case ENOENT:
      return "ENOENT";
    case EACCES:
      return "EACCES";
    case EPERM:
      return "EPERM";
    case EROFS:
      return "EROFS";
    default:
      return strerrorname_np(e) ? strerrorname_np(e) : "E?";
  }
}

void Open(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
  std::cout << (flags & O_CREAT ? "create " : "open ") << path << " "
            << (fd >= 0 ? "ok" : ErrName(errno)) << std::endl;
  if (fd >= 0) ::close(fd);
}

void List(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    std::cout << "ls " << dir << " " << ErrName(errno) << std::endl;
    return;
  }
  std::string names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names += " " + n;
  }
  ::closedir(d);
  std::cout << "ls " << dir << names << std::endl;
}

void Status() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    for (const char* key : {"Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:",
                            "CapAmb:", "NoNewPrivs:", "Seccomp:"}) {
      if (line.rfind(key, 0) == 0) std::cout << line << std::endl;
    }
  }
}

void Syscall(const std::string& name) {
  std::cout << "before " << name << std::endl;
  long r = -1;
  if (name == "ptrace") r = ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
  if (name == "mount") r = ::mount("none", "/", "tmpfs", 0, nullptr);
  if (name == "unshare") r = ::unshare(CLONE_NEWNS);
  if (name == "bpf") r = ::syscall(SYS_bpf, 0, nullptr, 0);
  if (name == "kexec") r = ::syscall(SYS_kexec_load, 0, 0, nullptr, 0);
  if (name == "getpid") r = ::getpid();
  if (name == "unix") r = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (name == "inet") r = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (name == "netlink") r = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (name == "userns" || name == "thread") {
    // Raw clone, fork-like (no new stack): the child leaves at once.
    long flags = SIGCHLD | (name == "userns" ? CLONE_NEWUSER : 0);
    r = ::syscall(SYS_clone, flags, nullptr, nullptr, nullptr, 0);
    if (r == 0) ::_exit(0);
  }
  std::cout << "after " << name << " " << (r < 0 ? ErrName(errno) : "ok") << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  // Started with a VMM's command line (tests/qemu_vmm_test.cpp uses it as the qemu binary): a
  // VMM compromised at once, trying ptrace, which every profile forbids.
  if (argc > 1 && argv[1][0] == '-') {
    Syscall("ptrace");
    return 3;
  }
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string arg = a.find(':') == std::string::npos ? "" : a.substr(a.find(':') + 1);
    if (a.rfind("open:", 0) == 0) Open(arg, O_RDONLY);
    if (a.rfind("create:", 0) == 0) Open(arg, O_WRONLY | O_CREAT);
    if (a.rfind("ls:", 0) == 0) List(arg);
    if (a == "status") Status();
    if (a == "hostname") {
      char name[256] = {};
      ::gethostname(name, sizeof name - 1);
      std::cout << "hostname " << name << std::endl;
    }
    if (a.rfind("syscall:", 0) == 0) Syscall(arg);
    if (a.rfind("fork:", 0) == 0) {
      int n = std::atoi(arg.c_str());
      for (int k = 0; k < n; ++k) {
        if (::fork() == 0) {
          for (;;) ::pause();
        }
      }
      std::cout << "forked " << n << std::endl;
    }
    if (a == "tick") {
      for (long n = 0;; ++n) {
        std::cout << "tick " << n << std::endl;
        ::usleep(10000);
      }
    }
    if (a == "sleep") {
      std::cout << "sleeping" << std::endl;
      for (;;) ::pause();
    }
  }
  return 0;
}
