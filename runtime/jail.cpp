#include "runtime/jail.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "runtime/files.h"

namespace mvm::runtime {
namespace {

namespace fs = std::filesystem;

int LastCap() {
  std::ifstream in("/proc/sys/kernel/cap_last_cap");
  int n = 0;
  if (in >> n && n > 0 && n < 64) return n;
  return CAP_LAST_CAP;
}

}  // namespace

void AddUsrSystem(JailSpec& spec) {
  spec.binds.push_back({"/usr", "/usr", false});
  for (const char* dir : {"bin", "sbin", "lib", "lib64"}) {
    std::error_code ec;
    fs::path host = fs::path("/") / dir;
    if (fs::is_symlink(host, ec)) {
      spec.symlinks.emplace_back(host.string(), fs::read_symlink(host, ec).string());
    } else if (fs::is_directory(host, ec)) {
      spec.binds.push_back({host, host, false});
    }
  }
}

Result<PreparedJail> PreparedJail::Prepare(const JailSpec& spec) {
  if (spec.uid == 0 || spec.gid == 0) return Error{"jail: uid and gid must not be 0"};
  if (spec.root.empty() || !spec.root.is_absolute()) {
    return Error{"jail: the root must be an absolute path (got \"" + spec.root.string() + "\")"};
  }
  std::error_code ec;
  if (!fs::is_directory(spec.root, ec)) {
    return Error{"jail: root " + spec.root.string() + " is not a directory"};
  }
  PreparedJail j;
  j.uid_ = spec.uid;
  j.gid_ = spec.gid;
  j.lastCap_ = LastCap();
  j.filter_ = spec.seccomp;
  j.unshareFlags_ = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;
  if (spec.newNetwork) j.unshareFlags_ |= CLONE_NEWNET;
  if (!spec.cgroup.empty()) {
    fs::path procs = spec.cgroup / "cgroup.procs";
    j.cgroupProcs_.Reset(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
    if (!j.cgroupProcs_.valid()) {
      return Error{"jail: open " + procs.string() + ": " + std::strerror(errno)};
    }
  }
  const std::string root = spec.root.lexically_normal().string();
  auto in_root = [&root](const fs::path& p) { return root + p.lexically_normal().string(); };
  using Op = Step::Op;
  auto add = [&j](Step s) { j.steps_.push_back(std::move(s)); };
  std::set<std::string> made;
  // Directories from the root down to `dir` (inside the jail), each once.
  auto mkdirs = [&](const fs::path& dir) {
    fs::path walk = "/";
    for (const auto& part : dir.relative_path()) {
      walk /= part;
      if (made.insert(walk.string()).second) {
        add({Op::kMkdir, in_root(walk), {}, {}, {}, 0755, 0, "mkdir " + walk.string()});
      }
    }
  };

  add({Op::kMount, "", "/", "", "", MS_REC | MS_PRIVATE, 0, "make every mount private"});
  add({Op::kMount, "tmpfs", root, "tmpfs", "mode=0755,size=1m", MS_NOSUID | MS_NODEV, 0,
       "mount the jail's tmpfs root on " + root});
  auto bind = [&](const fs::path& source, const fs::path& target, unsigned long remount,
                  const std::string& what) -> Status {
    if (!target.is_absolute())
      return Error{"jail: bind target " + target.string() + " is relative"};
    std::error_code ec2;
    fs::file_status st = fs::status(source, ec2);
    if (ec2 || !fs::exists(st)) return Error{"jail: " + source.string() + " does not exist"};
    if (fs::is_directory(st)) {
      mkdirs(target);
    } else {
      mkdirs(target.parent_path());
      add({Op::kTouch, in_root(target), {}, {}, {}, 0, 0, "create " + target.string()});
    }
    add({Op::kMount, source.string(), in_root(target), "", "", MS_BIND, 0,
         "bind " + source.string() + " to " + target.string()});
    add({Op::kMount, "", in_root(target), "", "", MS_BIND | MS_REMOUNT | remount, 0,
         "remount " + target.string() + " " + what});
    return {};
  };
  for (const auto& b : spec.binds) {
    unsigned long flags =
        (b.device ? MS_NOEXEC : MS_NODEV) | MS_NOSUID | (b.writable || b.device ? 0 : MS_RDONLY);
    const char* what = b.device ? "nosuid,noexec" : b.writable ? "nosuid,nodev" : "read-only";
    if (Status s = bind(b.source, b.target, flags, what); !s.ok()) return s.error();
  }
  for (const auto& d : spec.devices) {
    if (Status s = bind(d, d, MS_NOSUID | MS_NOEXEC, "nosuid,noexec"); !s.ok()) return s.error();
  }
  mkdirs("/proc");
  add({Op::kMount, "proc", in_root("/proc"), "proc", "", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0,
       "mount /proc"});
  for (const auto& [path, text] : spec.symlinks) {
    mkdirs(fs::path(path).parent_path());
    add({Op::kSymlink, in_root(path), text, "", "", 0, 0, "symlink " + path + " -> " + text});
  }
  add({Op::kMount, "", root, "", "", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, 0,
       "remount the jail root read-only"});
  add({Op::kChdir, root, {}, {}, {}, 0, 0, "chdir " + root});
  add({Op::kPivot, ".", ".", {}, {}, 0, 0, "pivot_root into " + root});
  add({Op::kUmountOld, ".", {}, {}, {}, MNT_DETACH, 0, "detach the host's root"});
  add({Op::kChdir, spec.workDir.string(), {}, {}, {}, 0, 0, "chdir " + spec.workDir.string()});
  add({Op::kHostname, spec.hostname, {}, {}, {}, 0, 0, "set the hostname"});
  // 0 leaves a limit as inherited; a value above the current hard limit is lowered to it (raising
  // it needs CAP_SYS_RESOURCE, which mvmd may lack in a container).
  auto rlimit = [&](int resource, uint64_t value, const std::string& what) {
    struct rlimit now {};
    if (::getrlimit(resource, &now) == 0 && now.rlim_max != RLIM_INFINITY && value > now.rlim_max) {
      value = now.rlim_max;
    }
    add({Op::kRlimit,
         {},
         {},
         {},
         {},
         static_cast<unsigned long>(resource),
         value,
         what + "=" + std::to_string(value)});
  };
  if (spec.maxOpenFiles > 0) rlimit(RLIMIT_NOFILE, spec.maxOpenFiles, "RLIMIT_NOFILE");
  if (spec.maxFileBytes > 0) rlimit(RLIMIT_FSIZE, spec.maxFileBytes, "RLIMIT_FSIZE");
  if (spec.maxProcesses > 0) rlimit(RLIMIT_NPROC, spec.maxProcesses, "RLIMIT_NPROC");
  rlimit(RLIMIT_CORE, 0, "RLIMIT_CORE");
  add({Op::kDropCaps, {}, {}, {}, {}, 0, 0, "drop the capability bounding and ambient sets"});
  add({Op::kSetIds,
       {},
       {},
       {},
       {},
       0,
       0,
       "set uid " + std::to_string(spec.uid) + " gid " + std::to_string(spec.gid)});
  add({Op::kNoNewPrivs, {}, {}, {}, {}, 0, 0, "set no_new_privs"});
  if (!j.filter_.empty()) add({Op::kSeccomp, {}, {}, {}, {}, 0, 0, "install the seccomp filter"});

  j.env_ = spec.env;
  for (auto& e : j.env_) j.envp_.push_back(e.data());
  j.envp_.push_back(nullptr);
  return j;
}

std::string PreparedJail::Describe(int index) const {
  if (index == -2) return "join the cgroup";
  if (index == -3) return "unshare namespaces";
  if (index >= 0 && index < static_cast<int>(steps_.size())) return steps_[index].what;
  return "jail step " + std::to_string(index);
}

int PreparedJail::EnterBeforeFork(int* step) const noexcept {
  if (cgroupProcs_.valid()) {
    // "0": the writing process itself, whatever pid namespace it is in.
    if (::write(cgroupProcs_.get(), "0", 1) != 1) {
      *step = -2;
      return errno;
    }
  }
  if (::unshare(unshareFlags_) != 0) {
    *step = -3;
    return errno;
  }
  return 0;
}

int PreparedJail::EnterAfterFork(int* step) const noexcept {
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (int e = Run(steps_[i]); e != 0) {
      *step = static_cast<int>(i);
      return e;
    }
  }
  return 0;
}

int PreparedJail::Run(const Step& s) const noexcept {
  using Op = Step::Op;
  auto ok = [](long r) { return r == 0 ? 0 : errno; };
  switch (s.op) {
    case Op::kMount:
      return ok(::mount(s.a.empty() ? nullptr : s.a.c_str(), s.b.c_str(),
                        s.fstype.empty() ? nullptr : s.fstype.c_str(), s.flags,
                        s.data.empty() ? nullptr : s.data.c_str()));
    case Op::kMkdir:
      return (::mkdir(s.a.c_str(), static_cast<mode_t>(s.flags)) == 0 || errno == EEXIST) ? 0
                                                                                          : errno;
    case Op::kTouch: {
      int fd = ::open(s.a.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) return errno;
      ::close(fd);
      return 0;
    }
    case Op::kSymlink:
      return ok(::symlink(s.b.c_str(), s.a.c_str()));
    case Op::kChdir:
      return ok(::chdir(s.a.c_str()));
    case Op::kPivot:
      return ok(::syscall(SYS_pivot_root, s.a.c_str(), s.b.c_str()));
    case Op::kUmountOld:
      return ok(::umount2(s.a.c_str(), static_cast<int>(s.flags)));
    case Op::kHostname:
      return ok(::sethostname(s.a.data(), s.a.size()));
    case Op::kRlimit: {
      struct rlimit r = {s.number, s.number};
      return ok(::setrlimit(static_cast<int>(s.flags), &r));
    }
    case Op::kDropCaps:
      for (int cap = 0; cap <= lastCap_; ++cap) {
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return errno;
      }
      return ok(::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0));
    case Op::kSetIds: {
      // Raw system calls: glibc's wrappers signal the other threads of the process, and after
      // fork there are none to answer. Changing every uid away from 0 clears the effective and
      // permitted capability sets; capset clears the inheritable one too.
      if (::syscall(SYS_setgroups, 0, nullptr) != 0) return errno;
      if (::syscall(SYS_setresgid, gid_, gid_, gid_) != 0) return errno;
      if (::syscall(SYS_setresuid, uid_, uid_, uid_) != 0) return errno;
      struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
      struct __user_cap_data_struct data[2] = {};
      return ok(::syscall(SYS_capset, &header, data));
    }
    case Op::kNoNewPrivs:
      return ok(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    case Op::kSeccomp: {
      struct sock_fprog prog = {static_cast<unsigned short>(filter_.size()),
                                const_cast<struct sock_filter*>(filter_.data())};
      return ok(::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog));
    }
  }
  return EINVAL;
}

namespace {

// The allocation table: "<uid>\t<owner>" per line.
std::map<uint32_t, std::string> ReadTable(const fs::path& file) {
  std::map<uint32_t, std::string> table;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    size_t tab = line.find('\t');
    if (tab == std::string::npos) continue;
    uint32_t uid = static_cast<uint32_t>(std::strtoul(line.substr(0, tab).c_str(), nullptr, 10));
    if (uid != 0) table[uid] = line.substr(tab + 1);
  }
  return table;
}

Status WriteTable(const fs::path& file, const std::map<uint32_t, std::string>& table) {
  std::string text;
  for (const auto& [uid, owner] : table) text += std::to_string(uid) + "\t" + owner + "\n";
  return WriteFileAtomic(file, text);
}

// An exclusive flock on <file>.lock for the life of the object.
class TableLock {
 public:
  static Result<TableLock> Take(const fs::path& file) {
    std::error_code ec;
    fs::create_directories(file.parent_path(), ec);
    fs::path lock = file.string() + ".lock";
    UniqueFd fd(::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd.valid()) return Error{"uid table: open " + lock.string() + ": " + std::strerror(errno)};
    while (::flock(fd.get(), LOCK_EX) != 0) {
      if (errno != EINTR)
        return Error{"uid table: flock " + lock.string() + ": " + std::strerror(errno)};
    }
    TableLock l;
    l.fd_ = std::move(fd);
    return l;
  }

 private:
  UniqueFd fd_;  // closing it releases the lock
};

}  // namespace

Result<std::optional<uint32_t>> UidAllocator::Find(const std::string& owner) const {
  Result<TableLock> lock = TableLock::Take(file_);
  if (!lock.ok()) return lock.error();
  for (const auto& [uid, o] : ReadTable(file_)) {
    if (o == owner) return std::optional<uint32_t>(uid);
  }
  return std::optional<uint32_t>();
}

Result<uint32_t> UidAllocator::Acquire(const std::string& owner) {
  if (owner.empty() || owner.find('\n') != std::string::npos) {
    return Error{"uid table: invalid owner \"" + owner + "\""};
  }
  Result<TableLock> lock = TableLock::Take(file_);
  if (!lock.ok()) return lock.error();
  std::map<uint32_t, std::string> table = ReadTable(file_);
  for (const auto& [uid, o] : table) {
    if (o == owner) return uid;
  }
  for (uint64_t uid = first_; uid < static_cast<uint64_t>(first_) + count_; ++uid) {
    if (table.count(static_cast<uint32_t>(uid))) continue;
    table[static_cast<uint32_t>(uid)] = owner;
    if (Status s = WriteTable(file_, table); !s.ok())
      return Error{"uid table: " + s.error().message};
    return static_cast<uint32_t>(uid);
  }
  return Error{"uid table " + file_.string() + ": all " + std::to_string(count_) + " uids from " +
               std::to_string(first_) + " are in use (widen MVM_JAIL_UID_RANGE)"};
}

Status UidAllocator::Release(const std::string& owner) {
  Result<TableLock> lock = TableLock::Take(file_);
  if (!lock.ok()) return lock.error();
  std::map<uint32_t, std::string> table = ReadTable(file_);
  bool changed = false;
  for (auto it = table.begin(); it != table.end();) {
    if (it->second == owner) {
      it = table.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  if (!changed) return {};
  if (Status s = WriteTable(file_, table); !s.ok()) return Error{"uid table: " + s.error().message};
  return {};
}

}  // namespace mvm::runtime
