#include "manifests/watcher.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/unique_fd.h"

// Why raw inotify(7) and not libinotifytools: that library keeps one process-global inotify
// instance and watch table, so two Watchers (or a Watcher and anything else in the process using
// it) would see each other's events; its read timeout is in whole seconds, too coarse for a
// debounce measured in milliseconds; and a blocked reader cannot be woken, so a destructor could
// neither stop nor join it promptly. Here each Watcher owns its inotify fd, an eventfd to wake
// it, and ppoll() with a nanosecond timeout against the monotonic clock.

namespace mvm::manifests {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Content of watched directories. IN_EXCL_UNLINK: a file unlinked (or renamed over) while still
// open must not report later writes under a name that now belongs to another file. IN_OPEN: tells
// open(O_CREAT) (IN_CREATE then IN_OPEN, in the same syscall) from link(2) or linkat() of an
// O_TMPFILE (IN_CREATE alone; no IN_CLOSE_WRITE ever arrives under the new name).
constexpr uint32_t kDirMask = IN_CLOSE_WRITE | IN_MODIFY | IN_OPEN | IN_CREATE | IN_DELETE |
                              IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
                              IN_EXCL_UNLINK | IN_ONLYDIR;
// A root's parent: only names appearing and disappearing matter (the root's own name). Added
// with IN_MASK_ADD so that a parent that is also a watched directory keeps kDirMask.
constexpr uint32_t kParentMask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                                 IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
// Real directory trees are finite; this only bounds pathological mount setups.
constexpr int kMaxDepth = 64;

std::string ErrnoMessage(int err) {
  return std::generic_category().message(err);
}

std::string WatchError(const std::string& what, int err) {
  std::string msg = "cannot watch " + what + ": " + ErrnoMessage(err);
  if (err == ENOSPC) msg += " (inotify watch limit reached: raise fs.inotify.max_user_watches)";
  return msg;
}

bool IsHidden(std::string_view name) {
  return !name.empty() && name.front() == '.';
}

fs::path NormaliseRoot(const fs::path& root) {
  std::error_code ec;
  fs::path abs = fs::absolute(root, ec);
  if (ec) abs = root;
  abs = abs.lexically_normal();
  // "/a/b/" has an empty filename; its parent watch must look for "b".
  if (!abs.has_filename() && abs != abs.root_path()) abs = abs.parent_path();
  return abs;
}

timespec ToTimespec(Clock::duration d) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return ts;
}

}  // namespace

class Watcher::Impl {
 public:
  Impl(Options options, Callback callback, UniqueFd inotify, UniqueFd wake)
      : options_(std::move(options)),
        callback_(std::move(callback)),
        inotify_(std::move(inotify)),
        wake_(std::move(wake)) {}

  ~Impl() { Stop(); }

  // Brings the watch set in line with the tree as it is now: every root, its parent and its
  // non-hidden subdirectories watched, nothing else. Returns the first root-level failure;
  // everything that can be watched is watched regardless.
  Status Resync() {
    std::unordered_map<int, Watch> next;
    std::set<fs::path> links;
    std::optional<Error> first;
    auto fail = [&first](std::string msg) {
      if (!first) first = Error{std::move(msg)};
    };
    for (const fs::path& root : options_.roots) {
      const int wd = inotify_add_watch(inotify_.get(), root.c_str(), kDirMask);
      if (wd < 0) {
        const int err = errno;
        fail(WatchError("manifest root " + root.string(), err));
        continue;
      }
      next[wd].dirs.push_back(root);
      if (int err = Walk(root, 0, next, links); err != 0) {
        fail(WatchError("subdirectories of manifest root " + root.string(), err));
      }
    }
    // Parents after contents: IN_MASK_ADD widens a shared directory's mask, never narrows it.
    for (size_t i = 0; i < options_.roots.size(); ++i) {
      const fs::path& root = options_.roots[i];
      if (root == root.root_path()) continue;
      const fs::path parent = root.parent_path();
      const int wd = inotify_add_watch(inotify_.get(), parent.c_str(), kParentMask | IN_MASK_ADD);
      if (wd < 0) {
        const int err = errno;
        fail(WatchError(parent.string() + ", the parent of manifest root " + root.string() +
                            " (needed to follow the root being replaced)",
                        err));
        continue;
      }
      next[wd].parentOf.push_back(i);
    }
    for (const auto& [wd, watch] : watches_) {
      if (!next.contains(wd)) inotify_rm_watch(inotify_.get(), wd);
    }
    watches_ = std::move(next);
    symlinks_ = std::move(links);
    // A writer whose file vanished with a replaced directory will never send its close.
    auto gone = [](const fs::path& p) {
      struct stat st {};
      return ::lstat(p.c_str(), &st) != 0;
    };
    std::erase_if(open_, gone);
    std::erase_if(created_, gone);
    if (first) return *first;
    return Status::Ok();
  }

  void StartThread() {
    thread_ = std::thread([this] { Run(); });
  }

  void Stop() {
    if (!thread_.joinable()) return;
    stopping_.store(true);
    const uint64_t one = 1;
    // Cannot fail: an eventfd write only blocks (here: EAGAIN) near a counter of 2^64 - 1.
    [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);
    thread_.join();
  }

 private:
  struct Watch {
    std::vector<fs::path> dirs;    // events name a child of each of these paths
    std::vector<size_t> parentOf;  // roots whose name lives in this directory
  };

  // Adds watches for the non-hidden real subdirectories of `dir`, recursively, and records the
  // symlinks found. Returns ENOSPC if the watch limit was hit (other failures are races with
  // the tree changing, which the next event's resync repairs).
  int Walk(const fs::path& dir, int depth, std::unordered_map<int, Watch>& next,
           std::set<fs::path>& links) {
    if (depth >= kMaxDepth) return 0;
    int result = 0;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const fs::path& path = it->path();
      std::error_code sec;
      const fs::file_status st = it->symlink_status(sec);
      if (sec) continue;
      if (fs::is_symlink(st)) {
        links.insert(path);
        continue;
      }
      if (!fs::is_directory(st) || IsHidden(path.filename().native())) continue;
      const int wd = inotify_add_watch(inotify_.get(), path.c_str(), kDirMask | IN_DONT_FOLLOW);
      if (wd < 0) {
        if (errno == ENOSPC) result = ENOSPC;
        continue;
      }
      next[wd].dirs.push_back(path);
      if (int err = Walk(path, depth + 1, next, links); err != 0) result = err;
    }
    return result;
  }

  void Run() {
    ::pthread_setname_np(::pthread_self(), "mvm-watcher");  // shows in top -H, gdb, /proc
    // The quiet time ends a batch on time, not up to the default 50 us timer slack later.
    ::prctl(PR_SET_TIMERSLACK, 1UL);
    alignas(inotify_event) char buf[64 * 1024];
    while (!stopping_.load()) {
      timespec timeout{};
      timespec* timeoutPtr = nullptr;
      if (due_) {
        const Clock::time_point deadline =
            std::min(last_ + options_.debounce, first_ + options_.maxDelay);
        const Clock::time_point now = Clock::now();
        if (now >= deadline) {
          Flush();
          continue;
        }
        // Sleep until `spin` before the deadline, then poll without sleeping until it.
        const Clock::duration left = deadline - now;
        timeout = left > options_.spin ? ToTimespec(left - options_.spin) : timespec{};
        timeoutPtr = &timeout;
      }
      pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
      const int n = ::ppoll(fds, 2, timeoutPtr, nullptr);
      if (n < 0) {
        // EINTR: a signal. ENOMEM: transient; back off rather than end the thread, which would
        // silently stop all reloads. (EFAULT/EINVAL cannot happen with these arguments.)
        if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      if (fds[1].revents != 0) return;
      // One read per wake-up, so a never-ending stream still meets the maxDelay deadline.
      if ((fds[0].revents & POLLIN) != 0) {
        ReadOnce(buf, sizeof buf);
        Preview();
      }
    }
  }

  void ReadOnce(char* buf, size_t size) {
    const ssize_t n = ::read(inotify_.get(), buf, size);
    if (n <= 0) return;  // EAGAIN/EINTR: poll again
    now_ = Clock::now();
    resync_ = false;
    for (size_t off = 0; off + sizeof(inotify_event) <= static_cast<size_t>(n);) {
      inotify_event ev{};
      std::memcpy(&ev, buf + off, sizeof ev);
      const char* namePtr = buf + off + sizeof(inotify_event);
      const std::string_view name(namePtr, ::strnlen(namePtr, ev.len));
      Handle(ev, name);
      off += sizeof(inotify_event) + ev.len;
    }
    // Once per buffer: events still queued for a watch that this removes are dropped, and they
    // can only sit in this same buffer, so they share a batch with the rescan.
    if (resync_) {
      (void)Resync();
      Structural();
    }
  }

  void Handle(const inotify_event& ev, std::string_view name) {
    if ((ev.mask & IN_Q_OVERFLOW) != 0) {
      resync_ = true;
      Structural();
      return;
    }
    const auto it = watches_.find(ev.wd);
    if (it == watches_.end()) return;  // a watch already removed
    const Watch& watch = it->second;
    if ((ev.mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) != 0) {
      // A watched directory itself went away or moved (a root replaced or a subdirectory gone).
      resync_ = true;
      Structural();
      if ((ev.mask & IN_IGNORED) != 0) watches_.erase(it);
      return;
    }
    if (name.empty()) return;
    for (size_t root : watch.parentOf) {
      if (name == options_.roots[root].filename().native()) {
        resync_ = true;
        Structural();
      }
    }
    for (const fs::path& dir : watch.dirs) HandleChild(ev, dir / name, IsHidden(name));
  }

  void HandleChild(const inotify_event& ev, const fs::path& path, bool hidden) {
    const uint32_t m = ev.mask;
    if ((m & IN_ISDIR) != 0) {
      if ((m & (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)) != 0) {
        resync_ = true;
        Structural();
      }
      return;
    }
    if ((m & (IN_CREATE | IN_MOVED_TO)) != 0) {
      struct stat st {};
      if (::lstat(path.c_str(), &st) != 0) {
        if (!hidden) Changed(path);  // already gone again; say so
        return;
      }
      if (S_ISLNK(st.st_mode)) {  // e.g. ConfigMap ..data swapped, or a.yaml -> ..data/a.yaml
        symlinks_.insert(path);
        Structural();
        return;
      }
      if (S_ISDIR(st.st_mode)) {  // replaced by a directory since the event
        resync_ = true;
        Structural();
        return;
      }
      if (hidden) return;
      if ((m & IN_MOVED_TO) != 0) {
        if (movedWhileOpen_.erase(ev.cookie) != 0) {
          Writing(path);
        } else {
          open_.erase(path);
          Changed(path);
        }
      } else if (st.st_nlink > 1) {
        Changed(path);  // link(2) of an existing file: complete, no close will follow
      } else {
        // open(O_CREAT), complete at IN_CLOSE_WRITE; or linkat() of an O_TMPFILE, complete now.
        // Its IN_OPEN, if any, is queued by the same syscall: Flush() decides. Arms the timer
        // so that a linked file alone still gets delivered.
        Writing(path);
        created_.insert(path);
        Trigger();
      }
      return;
    }
    if ((m & (IN_DELETE | IN_MOVED_FROM)) != 0) {
      created_.erase(path);
      if (open_.erase(path) != 0 && (m & IN_MOVED_FROM) != 0) movedWhileOpen_.insert(ev.cookie);
      if (symlinks_.erase(path) != 0) Structural();
      if (!hidden) Changed(path);
      return;
    }
    if (hidden) return;
    if ((m & IN_OPEN) != 0) {
      created_.erase(path);  // the creator's own open: a writer, complete at IN_CLOSE_WRITE
    } else if ((m & IN_MODIFY) != 0) {
      Writing(path);
    } else if ((m & IN_CLOSE_WRITE) != 0) {
      open_.erase(path);
      Changed(path);
    }
  }

  // A file open for writing: reported in `writing`, never in `paths`, until closed. Not a
  // trigger by itself.
  void Writing(const fs::path& path) {
    open_.insert(path);
    pending_.paths.erase(path);
  }

  void Changed(const fs::path& path) {
    pending_.paths.insert(path);
    Trigger();
  }

  void Structural() {
    pending_.rescan = true;
    Trigger();
  }

  void Trigger() {
    if (!due_) first_ = now_;
    last_ = now_;
    due_ = true;
    previewed_ = false;
  }

  // The batch so far, as Flush would deliver it, to the preview callback: once per change of it.
  void Preview() {
    if (!options_.preview || !due_ || previewed_ || !created_.empty()) return;
    previewed_ = true;
    ChangeSet batch = pending_;
    batch.writing = open_;
    for (const fs::path& w : batch.writing) batch.paths.erase(w);
    if (batch.paths.empty() && !batch.rescan) return;
    options_.preview(batch);
  }

  void Flush() {
    ChangeSet batch = std::exchange(pending_, ChangeSet{});
    due_ = false;
    movedWhileOpen_.clear();
    if (!created_.empty()) {
      // Created at least `debounce` ago and still no IN_OPEN: linked into place, complete. Only
      // decidable once every queued event was read; otherwise decide at the next flush.
      if (QueueEmpty()) {
        for (const fs::path& p : created_) {
          open_.erase(p);
          batch.paths.insert(p);
        }
        created_.clear();
      } else {
        now_ = Clock::now();
        Trigger();
      }
    }
    batch.writing = open_;
    for (const fs::path& w : batch.writing) batch.paths.erase(w);
    // Nothing to look at (e.g. a file closed, then reopened for writing): no callback.
    if (batch.paths.empty() && !batch.rescan) return;
    callback_(batch);
  }

  bool QueueEmpty() const {
    int bytes = 0;
    return ::ioctl(inotify_.get(), FIONREAD, &bytes) == 0 && bytes == 0;
  }

  const Options options_;
  const Callback callback_;
  const UniqueFd inotify_;
  const UniqueFd wake_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  // Owned by the watcher thread (and by Start() before the thread exists).
  std::unordered_map<int, Watch> watches_;
  std::set<fs::path> symlinks_;  // symlinks in watched directories (deleting one is structural)
  std::set<fs::path> open_;      // files open for writing, as far as the events tell
  std::set<fs::path> created_;   // in open_: IN_CREATE seen, no IN_OPEN yet (link or O_CREAT?)
  std::unordered_set<uint32_t> movedWhileOpen_;  // rename cookies of files still being written
  ChangeSet pending_;
  bool due_ = false;
  bool previewed_ = false;  // the pending batch was previewed as it is now
  bool resync_ = false;
  Clock::time_point now_;    // when the buffer being handled was read
  Clock::time_point first_;  // first trigger of the pending batch
  Clock::time_point last_;   // latest trigger of the pending batch
};

Result<std::unique_ptr<Watcher>> Watcher::Start(Options options, Callback callback) {
  if (options.roots.empty()) return Error{"manifest watcher: no roots to watch"};
  if (!callback) return Error{"manifest watcher: no callback"};
  std::vector<fs::path> roots;
  for (const fs::path& root : options.roots) {
    fs::path norm = NormaliseRoot(root);
    if (std::find(roots.begin(), roots.end(), norm) == roots.end()) roots.push_back(norm);
  }
  options.roots = std::move(roots);
  options.spin = std::max(options.spin, std::chrono::microseconds(0));  // never past the deadline
  if (options.maxDelay < options.debounce) options.maxDelay = options.debounce;

  UniqueFd inotify(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify.valid()) {
    const int err = errno;
    std::string msg = "manifest watcher: inotify_init1: " + ErrnoMessage(err);
    if (err == EMFILE) msg += " (raise fs.inotify.max_user_instances)";
    return Error{msg};
  }
  UniqueFd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake.valid()) return Error{"manifest watcher: eventfd: " + ErrnoMessage(errno)};

  auto impl = std::make_unique<Impl>(std::move(options), std::move(callback), std::move(inotify),
                                     std::move(wake));
  if (Status st = impl->Resync(); !st) return Error{"manifest watcher: " + st.error().message};
  impl->StartThread();
  return std::make_unique<Watcher>(Token{}, std::move(impl));
}

Watcher::Watcher(Token, std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Watcher::~Watcher() = default;  // Impl's destructor stops and joins the thread

}  // namespace mvm::manifests
