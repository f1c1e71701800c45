#include "runtime/unix_stream.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace mvm::runtime {
namespace {

int MillisLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  // Round up so that a wait never ends just before the deadline and spins.
  return static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
}

}  // namespace

Result<UnixLineStream> UnixLineStream::Connect(const std::string& path, Clock::time_point deadline,
                                               const std::function<bool()>& keepTrying) {
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return Error{"socket path too long (" + std::to_string(path.size()) + " bytes, limit " +
                 std::to_string(sizeof addr.sun_path - 1) + "): " + path};
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  for (;;) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) return Error{std::string("socket: ") + std::strerror(errno)};
    if (::connect(fd.get(), reinterpret_cast<const struct sockaddr*>(&addr), sizeof addr) == 0) {
      return UnixLineStream(std::move(fd));
    }
    int e = errno;
    std::string last = std::strerror(e);
    // ENOENT/ECONNREFUSED: not listening yet. EAGAIN: the listen backlog is full.
    bool retry = e == ENOENT || e == ECONNREFUSED || e == EAGAIN || e == EINTR;
    if (!retry) return Error{"connect " + path + ": " + last};
    if (Clock::now() >= deadline) return Error{"connect " + path + ": " + last + " (timed out)"};
    if (keepTrying && !keepTrying()) return Error{"connect " + path + ": " + last};
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Status UnixLineStream::WriteAll(std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return Error{std::string("send: ") + std::strerror(errno)};
    struct pollfd p = {fd_.get(), POLLOUT, 0};
    int r = ::poll(&p, 1, MillisLeft(deadline));
    if (r == 0) return Error{"send: timed out"};
  }
  return {};
}

Result<std::string> UnixLineStream::ReadLine(Clock::time_point deadline) {
  timed_out_ = false;
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (closed_) return Error{"connection closed"};
    char chunk[4096];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      closed_ = true;
      return Error{"connection closed"};
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      closed_ = true;
      return Error{std::string("recv: ") + std::strerror(errno)};
    }
    int wait = MillisLeft(deadline);
    if (wait == 0) {
      timed_out_ = true;
      return Error{"timed out"};
    }
    struct pollfd p = {fd_.get(), POLLIN, 0};
    ::poll(&p, 1, wait);
  }
}

}  // namespace mvm::runtime
