#pragma once
// UnixLineStream: a client connection to an AF_UNIX stream socket, read and written as text
// lines, every operation bounded by a deadline. The transport under the QMP client and the guest
// control channel.
//
// Promises:
//  - Connect retries while the socket file is missing or refuses (the VMM is still starting), at
//    most until the deadline and only while `keepTrying` (e.g. "the process is alive") holds.
//  - ReadLine returns one line without its "\n" (or "\r\n"); it never blocks past the deadline.
//    On failure `closed()` says the peer closed the connection and `timedOut()` says the
//    deadline passed; bytes already received stay buffered for the next call.
//  - The socket is non-blocking and closed exactly once (UniqueFd); never raises SIGPIPE.

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "common/unique_fd.h"

namespace mvm::runtime {

using Clock = std::chrono::steady_clock;

class UnixLineStream {
 public:
  static Result<UnixLineStream> Connect(const std::string& path, Clock::time_point deadline,
                                        const std::function<bool()>& keepTrying = {});

  Status WriteAll(std::string_view data, Clock::time_point deadline);
  Result<std::string> ReadLine(Clock::time_point deadline);
  bool closed() const { return closed_; }
  bool timedOut() const { return timed_out_; }

 private:
  explicit UnixLineStream(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
  std::string buffer_;
  bool closed_ = false;
  bool timed_out_ = false;
};

}  // namespace mvm::runtime
